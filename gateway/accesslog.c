/*
 * accesslog.c - buffered access log output.
 *
 * Lines accumulate in an evbuffer; the first commit in a loop iteration
 * activates a flush event, so a burst of requests costs one write(2).
 * A log file that cannot be written loses lines (counted) rather than
 * stalling the loop. A file is reopened on request (SIGUSR1, after
 * logrotate moved it). "syslog" sends each line as one message
 * (facility daemon, priority info, tag "promptgate").
 *
 * Several workers may write the same destination, each through its own
 * gw_accesslog: a regular file is opened O_APPEND (each write(2) lands
 * whole at the end); to a pipe or socket (stderr under systemd) a write
 * of up to PIPE_BUF bytes is never interleaved with another, so a batch
 * goes out in pieces of whole lines no bigger than that.
 */
#include "gateway/accesslog.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#define MAX_PENDING (4u << 20)

struct gw_accesslog {
    int fd;           /* owned unless it is stderr; -1 when off or syslog */
    int own_fd;
    int syslog;       /* lines go to syslog(3) */
    int pieces;       /* fd is a pipe or socket: whole-line writes of at
                         most PIPE_BUF bytes */
    char *path;       /* owned: the file, for reopening; NULL otherwise */
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
    } else if (strcmp(spec, "syslog") == 0) {
        al->syslog = 1;
        openlog("promptgate", LOG_PID | LOG_NDELAY, LOG_DAEMON);
    } else {
        al->fd = open(spec, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
        if (al->fd < 0) {
            snprintf(err, errlen, "cannot open access log '%s': %s", spec,
                     strerror(errno));
            free(al);
            return NULL;
        }
        al->own_fd = 1;
        if ((al->path = strdup(spec)) == NULL) {
            snprintf(err, errlen, "out of memory");
            gw_accesslog_free(al);
            return NULL;
        }
    }
    if (al->fd >= 0) {
        struct stat st;
        al->pieces = fstat(al->fd, &st) == 0 && !S_ISREG(st.st_mode);
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
    if (al == NULL || al->buf == NULL)
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

/* One syslog message per line; the buffer holds whole lines only. */
static void flush_syslog(struct gw_accesslog *al)
{
    struct evbuffer_ptr nl;
    size_t n;

    while ((n = evbuffer_get_length(al->buf)) > 0) {
        nl = evbuffer_search(al->buf, "\n", 1, NULL);
        size_t len = nl.pos < 0 ? n : (size_t)nl.pos;
        const char *line = (const char *)evbuffer_pullup(al->buf, (ssize_t)len);
        if (line != NULL && len > 0)
            syslog(LOG_INFO, "%.*s", (int)len, line);
        evbuffer_drain(al->buf, len + (nl.pos < 0 ? 0 : 1));
    }
}

/* One write(2) of the whole lines that fit in PIPE_BUF (or of one longer
 * line); drains what was written. */
static int write_piece(struct gw_accesslog *al)
{
    size_t len = evbuffer_get_length(al->buf), n = len;
    const unsigned char *p;
    const void *nl;
    ssize_t w;

    if (n > PIPE_BUF) {
        p = evbuffer_pullup(al->buf, PIPE_BUF);
        nl = memrchr(p, '\n', PIPE_BUF);
        if (nl) {
            n = (size_t)((const unsigned char *)nl - p) + 1;
        } else {
            struct evbuffer_ptr e = evbuffer_search(al->buf, "\n", 1, NULL);
            n = e.pos < 0 ? len : (size_t)e.pos + 1;
        }
    }
    p = evbuffer_pullup(al->buf, (ssize_t)n);
    if (p == NULL)
        return -1;
    w = write(al->fd, p, n);
    if (w > 0)
        evbuffer_drain(al->buf, (size_t)w);
    return (int)w;
}

void gw_accesslog_flush(struct gw_accesslog *al)
{
    if (al == NULL || al->buf == NULL)
        return;
    if (al->syslog) {
        flush_syslog(al);
        return;
    }
    while (evbuffer_get_length(al->buf) > 0) {
        int n = al->pieces ? write_piece(al)
                           : evbuffer_write(al->buf, al->fd);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            al->dropped++;
            evbuffer_drain(al->buf, evbuffer_get_length(al->buf));
            break;
        }
    }
}

int gw_accesslog_reopen(struct gw_accesslog *al, char *err, size_t errlen)
{
    int fd;

    if (al == NULL || al->path == NULL)
        return 0; /* stderr, syslog or off: nothing to reopen */
    gw_accesslog_flush(al); /* what was logged goes to the old file */
    fd = open(al->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0) {
        snprintf(err, errlen, "cannot reopen access log '%s': %s; still "
                 "writing to the old file", al->path, strerror(errno));
        return -1;
    }
    close(al->fd);
    al->fd = fd;
    return 0;
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
    if (al->syslog)
        closelog();
    free(al->path);
    free(al);
}
