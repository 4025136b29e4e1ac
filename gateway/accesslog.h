/*
 * accesslog.h - a buffered line writer for the JSON-lines access log.
 *
 * Lines are formatted by the caller into the buffer this returns and
 * written by the loop once per iteration, not once per request. Knows
 * nothing of what a line holds.
 */
#ifndef GW_ACCESSLOG_H
#define GW_ACCESSLOG_H

#include <stddef.h>

struct event_base;
struct evbuffer;
struct gw_accesslog;

/* spec: "stderr", "syslog", "off", or a file path opened for appending.
 * Returns NULL with a message in err on failure. */
struct gw_accesslog *gw_accesslog_open(struct event_base *base,
                                       const char *spec, char *err,
                                       size_t errlen);

/* The buffer to append one whole line to (ending in '\n'), or NULL when
 * the log is off. Call gw_accesslog_commit after appending. */
struct evbuffer *gw_accesslog_buffer(struct gw_accesslog *al);
void gw_accesslog_commit(struct gw_accesslog *al);

/* Writes what is buffered now (blocking), e.g. before exit. */
void gw_accesslog_flush(struct gw_accesslog *al);

/* Opens the file again by its path (logrotate moved it away): 0, or -1
 * with a message in err while the old file stays in use. A no-op for
 * stderr, syslog and off. */
int gw_accesslog_reopen(struct gw_accesslog *al, char *err, size_t errlen);

void gw_accesslog_free(struct gw_accesslog *al); /* flushes; NULL ok */

#endif
