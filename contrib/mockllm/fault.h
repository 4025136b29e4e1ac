/*
 * fault.h: the fault specifications of mockllm.
 *
 * A SPEC is a comma-separated list of items, e.g. "status=429,retry-after=2"
 * or "delay-ms=500,close-after-chunks=3".  See mock_fault_parse().
 */
#ifndef MOCK_FAULT_H
#define MOCK_FAULT_H

#include <stddef.h>

#define MOCK_FAULT_SPEC_MAX 1024

struct mock_fault {
    int status;             /* 0: answer normally; else 400..599 */
    int retry_after;        /* -1: no Retry-After header */
    int delay_ms;           /* wait before the response headers */
    int close_after_chunks; /* -1: off */
    int hang;               /* accept, never answer */
    int reset;              /* close with TCP RST */
    int tokens;             /* -1: the server's --tokens */
    int token_delay_ms;     /* -1: the server's --token-delay-ms */
    int error_after_chunks; /* -1: off; stream: an error event after K */
    long count;             /* -1: unlimited (only from POST /_mock/fault) */
};

/* Set f to "no fault". */
void mock_fault_init(struct mock_fault *f);

/*
 * Parse spec (len bytes, need not be NUL-terminated) into f.  An empty or
 * blank spec is "no fault".  allow_count: whether the count=K item is
 * accepted.  Returns 0, or -1 with a message naming the bad item in err
 * (f is then left as "no fault").
 */
int mock_fault_parse(struct mock_fault *f, const char *spec, size_t len,
                     int allow_count, char *err, size_t errlen);

/* 1 if f changes anything about an answer. */
int mock_fault_active(const struct mock_fault *f);

/* Write f back as a canonical SPEC (count left out) into buf. */
void mock_fault_format(const struct mock_fault *f, char *buf, size_t len);

#endif
