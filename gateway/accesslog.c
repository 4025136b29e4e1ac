/*
 * accesslog.c - buffered access log output.
 *
 * Lines accumulate in an evbuffer; the first commit in a loop iteration
 * activates a flush event, so a burst of requests costs one write(2).
 * A log file that cannot be written loses lines (counted) rather than
 * stalling the loop.
 */
#include "gateway/accesslog.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_PENDING (4u << 20)

struct gw_accesslog {
    int fd;           /* owned unless it is stderr */
    int own_fd;
    struct evbuffer *buf; /* owned */
    struct event *flush;  /* owned */
    int scheduled;
    unsigned long dropped;
};

static void flush_cb(evutil_socket_t fd, short what, void *arg)
{
    struct gw_accesslog *al = arg;

    (void)fd, (void)what;
    al->scheduled = 0;
    gw_accesslog_flush(al);
}

struct gw_accesslog *gw_accesslog_open(struct event_base *base,
                                       const char *spec, char *err,
                                       size_t errlen)
{
    struct gw_accesslog *al = calloc(1, sizeof(*al));

    if (al == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    al->fd = -1;
    if (strcmp(spec, "off") == 0)
        return al;
    if (strcmp(spec, "stderr") == 0) {
        al->fd = STDERR_FILENO;
    } else {
        al->fd = open(spec, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
        if (al->fd < 0) {
            snprintf(err, errlen, "cannot open access log '%s': %s", spec,
                     strerror(errno));
            free(al);
            return NULL;
        }
        al->own_fd = 1;
    }
    al->buf = evbuffer_new();
    al->flush = event_new(base, -1, 0, flush_cb, al);
    if (al->buf == NULL || al->flush == NULL) {
        snprintf(err, errlen, "out of memory");
        gw_accesslog_free(al);
        return NULL;
    }
    return al;
}

struct evbuffer *gw_accesslog_buffer(struct gw_accesslog *al)
{
    if (al == NULL || al->fd < 0)
        return NULL;
    return al->buf;
}

void gw_accesslog_commit(struct gw_accesslog *al)
{
    if (evbuffer_get_length(al->buf) > MAX_PENDING) {
        al->dropped++;
        evbuffer_drain(al->buf, evbuffer_get_length(al->buf));
        return;
    }
    if (!al->scheduled) {
        al->scheduled = 1;
        event_active(al->flush, EV_TIMEOUT, 0);
    }
}

void gw_accesslog_flush(struct gw_accesslog *al)
{
    if (al == NULL || al->buf == NULL)
        return;
    while (evbuffer_get_length(al->buf) > 0) {
        int n = evbuffer_write(al->buf, al->fd);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            al->dropped++;
            evbuffer_drain(al->buf, evbuffer_get_length(al->buf));
            break;
        }
    }
}

void gw_accesslog_free(struct gw_accesslog *al)
{
    if (al == NULL)
        return;
    gw_accesslog_flush(al);
    if (al->flush)
        event_free(al->flush);
    if (al->buf)
        evbuffer_free(al->buf);
    if (al->own_fd)
        close(al->fd);
    free(al);
}
