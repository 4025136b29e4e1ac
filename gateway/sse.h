/*
 * sse.h - Server-Sent Events framing, for relaying upstream streams.
 *
 * The relay forwards only whole events, so that when an upstream dies
 * mid-stream the gateway can end the client's stream with an `error`
 * event instead of half an event followed by garbage.
 */
#ifndef GW_SSE_H
#define GW_SSE_H

#include <stddef.h>

struct gw_sse_event {
    const char *raw;  /* borrowed: the whole event with its terminator */
    size_t raw_len;
    const char *name; /* borrowed: value of the `event:` field, or NULL */
    size_t name_len;
    const char *data; /* borrowed: `data:` lines joined with '\n' */
    size_t data_len;
};

/* Called for every complete event. Pointers are valid only during the
 * call. Return 0 to go on, -1 to stop parsing (gw_sse_feed returns -1). */
typedef int (*gw_sse_event_cb)(void *arg, const struct gw_sse_event *ev);

struct gw_sse {
    char *buf; /* owned: bytes of the event not yet complete */
    size_t len, cap;
    size_t scanned;   /* bytes of buf already searched for a terminator */
    size_t max_event; /* an event longer than this is an error */
    char *data;       /* owned: scratch for joined data lines */
    size_t data_cap;
    int done;         /* saw `data: [DONE]` */
};

void gw_sse_init(struct gw_sse *p, size_t max_event);
void gw_sse_release(struct gw_sse *p);

/* Feeds bytes; calls cb for each event completed by them. Returns 0, or
 * -1 when an event exceeds max_event or cb returned -1. */
int gw_sse_feed(struct gw_sse *p, const char *bytes, size_t n,
                gw_sse_event_cb cb, void *arg);

/* Bytes of an incomplete event held back. */
static inline size_t gw_sse_pending(const struct gw_sse *p)
{
    return p->len;
}

#endif
