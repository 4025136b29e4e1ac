/*
 * upconn.c - HTTP/1.1 client connections with keep-alive pools.
 *
 *              connected          head complete         answer complete
 *  CONNECTING ----------> WAITING -------------> BODY -----------------> IDLE
 *      |                    |   (1xx: stay)       |  (keep-alive: back     |
 *      | error, timeout     | error, EOF          |   into the pool)       |
 *      v                    v                     v                        |
 *    CLOSED <-------------------------------------+---- peer closed, ------+
 *                                                        idle timeout
 *
 * Transitions, each made in set_state() only:
 *   CONNECTING -> WAITING   on_write, the connect finished
 *   WAITING -> BODY         parse_head
 *   BODY -> IDLE            finish (keep-alive) / CLOSED (otherwise)
 *   IDLE -> WAITING         gw_upconn_send reuses the connection
 *   any -> CLOSED           conn_close
 *
 * Invariants:
 *  1. No user callback runs inside gw_upconn_send or gw_upconn_resume.
 *  2. A connection taken from the pool that fails before the first byte of
 *     an answer (the peer closed it while idle) is replaced by a new one and
 *     the request sent again, once: nothing of it was processed.
 *  3. A connection is freed only when no user callback is on the stack
 *     (in_cb), so a callback may abort its own exchange.
 *  4. Writes go out at once; the write event is armed only while bytes
 *     remain, so a request costs no epoll_ctl churn.
 */
#include "gateway/upconn.h"

#include "gateway/chunked.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/util.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/uio.h>
#include <unistd.h>

#define MAX_HEAD (64 * 1024)
#define READ_CHUNK (64 * 1024)

enum up_state { U_CONNECTING, U_WAITING, U_BODY, U_IDLE, U_CLOSED };

struct gw_uppool {
    struct event_base *base; /* borrowed */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    struct gw_upconn *idle; /* owned: idle connections, a list */
    int n_idle, max_idle;
    long idle_timeout_ms;
    long connect_ms;        /* of the send that opens a connection */
};

struct gw_upconn {
    struct gw_uppool *pool; /* borrowed: outlives its connections' use */
    evutil_socket_t fd;
    struct event *rev, *wev, *timer; /* owned */
    struct evbuffer *in, *out;       /* owned */
    struct evbuffer *resend;         /* owned: request copy on reuse */
    enum up_state state;
    const struct gw_upconn_cbs *cbs; /* borrowed */
    void *arg;
    const char *pending_err; /* static text: fail from the timer */
    int reused, got_bytes, paused, in_cb, dead;
    /* answer framing */
    int status, keepalive, chunked, until_close;
    struct gw_chunked ck;
    long long left;
    struct gw_upconn *next; /* in the pool's idle list */
};

static int process(struct gw_upconn *c);

static void set_state(struct gw_upconn *c, enum up_state to)
{
    c->state = to;
}

static void conn_free(struct gw_upconn *c)
{
    if (c->rev)
        event_free(c->rev);
    if (c->wev)
        event_free(c->wev);
    if (c->timer)
        event_free(c->timer);
    if (c->fd >= 0)
        evutil_closesocket(c->fd);
    if (c->in)
        evbuffer_free(c->in);
    if (c->out)
        evbuffer_free(c->out);
    if (c->resend)
        evbuffer_free(c->resend);
    free(c);
}

static void conn_close(struct gw_upconn *c)
{
    set_state(c, U_CLOSED);
    if (c->in_cb) {
        c->dead = 1; /* freed when the callback returns */
        return;
    }
    conn_free(c);
}

static void pool_remove(struct gw_uppool *p, struct gw_upconn *c)
{
    struct gw_upconn **pp;

    for (pp = &p->idle; *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            p->n_idle--;
            return;
        }
}

/* Ends the exchange: the connection goes back to the pool or closes,
 * then the caller hears of it. */
static void finish(struct gw_upconn *c, const char *err)
{
    const struct gw_upconn_cbs *cbs = c->cbs;
    void *arg = c->arg;
    struct gw_uppool *p = c->pool;

    c->cbs = NULL;
    event_del(c->timer);
    if (err == NULL && c->keepalive && !c->until_close &&
        evbuffer_get_length(c->in) == 0 && p->n_idle < p->max_idle) {
        struct timeval tv = {p->idle_timeout_ms / 1000,
                             (p->idle_timeout_ms % 1000) * 1000};
        set_state(c, U_IDLE);
        c->next = p->idle;
        p->idle = c;
        p->n_idle++;
        evtimer_add(c->timer, &tv);
        if (c->paused) {
            c->paused = 0;
            event_add(c->rev, NULL);
        }
    } else {
        conn_close(c);
    }
    if (cbs)
        cbs->on_done(arg, err);
}

static int try_write(struct gw_upconn *c)
{
    while (evbuffer_get_length(c->out) > 0) {
        int n = evbuffer_write(c->out, c->fd);
        if (n > 0)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            event_add(c->wev, NULL);
            return 0;
        }
        if (n < 0 && errno == EINTR)
            continue;
        return -1;
    }
    return 0;
}

static int open_socket(struct gw_upconn *c);

/* A reused connection failed before any answer byte: send again on a new
 * one (invariant 2). Returns 0 when the resend is under way. */
static int resend_fresh(struct gw_upconn *c)
{
    if (!c->reused || c->got_bytes || c->resend == NULL)
        return -1;
    event_del(c->rev);
    event_del(c->wev);
    event_free(c->rev);
    event_free(c->wev);
    c->rev = c->wev = NULL;
    evutil_closesocket(c->fd);
    c->fd = -1;
    c->reused = 0;
    evbuffer_drain(c->in, evbuffer_get_length(c->in));
    evbuffer_drain(c->out, evbuffer_get_length(c->out));
    evbuffer_add_buffer(c->out, c->resend);
    return open_socket(c);
}

static void fail(struct gw_upconn *c, const char *err)
{
    if (resend_fresh(c) == 0)
        return;
    finish(c, err);
}

/* ------------------------------------------------------------- parsing */

static int head_value(const char *h, size_t n, const char *name, char *out,
                      size_t outcap)
{
    size_t nl = strlen(name);
    const char *p = h, *end = h + n;

    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *le = eol ? eol : end;
        if ((size_t)(le - p) > nl && strncasecmp(p, name, nl) == 0 &&
            p[nl] == ':') {
            const char *v = p + nl + 1;
            while (v < le && (*v == ' ' || *v == '\t'))
                v++;
            const char *ve = le;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' '))
                ve--;
            size_t vl = (size_t)(ve - v);
            if (vl >= outcap)
                vl = outcap - 1;
            memcpy(out, v, vl);
            out[vl] = '\0';
            return 1;
        }
        p = le + 1;
    }
    out[0] = '\0';
    return 0;
}

/* Returns 1 when a head was parsed, 0 when more input is needed, -1 on a
 * malformed answer. */
static int parse_head(struct gw_upconn *c)
{
    struct evbuffer_ptr end = evbuffer_search(c->in, "\r\n\r\n", 4, NULL);
    char ctype[128], retry[32], buf[64];
    const char *h;
    size_t n;
    int minor;

    if (end.pos < 0)
        return evbuffer_get_length(c->in) > MAX_HEAD ? -1 : 0;
    n = (size_t)end.pos + 4;
    h = (const char *)evbuffer_pullup(c->in, (ev_ssize_t)n);
    if (n < 12 || memcmp(h, "HTTP/1.", 7) != 0 || (h[7] != '0' && h[7] != '1') ||
        h[8] != ' ')
        return -1;
    minor = h[7] - '0';
    c->status = 0;
    for (int i = 9; i < 12; i++) {
        if (h[i] < '0' || h[i] > '9')
            return -1;
        c->status = c->status * 10 + (h[i] - '0');
    }
    if (c->status >= 100 && c->status < 200) {
        evbuffer_drain(c->in, n); /* 100 Continue and friends */
        return parse_head(c);
    }
    c->keepalive = minor >= 1;
    if (head_value(h, n, "connection", buf, sizeof(buf))) {
        if (strcasestr(buf, "close"))
            c->keepalive = 0;
        else if (strcasestr(buf, "keep-alive"))
            c->keepalive = 1;
    }
    c->chunked = c->until_close = 0;
    c->left = 0;
    if (head_value(h, n, "transfer-encoding", buf, sizeof(buf))) {
        if (strcasecmp(buf, "chunked") != 0)
            return -1;
        c->chunked = 1;
        gw_chunked_init(&c->ck);
    } else if (head_value(h, n, "content-length", buf, sizeof(buf))) {
        char *e;
        errno = 0;
        c->left = strtoll(buf, &e, 10);
        if (errno || *e || e == buf || c->left < 0)
            return -1;
    } else if (c->status != 204 && c->status != 304) {
        c->until_close = 1;
    }
    head_value(h, n, "content-type", ctype, sizeof(ctype));
    head_value(h, n, "retry-after", retry, sizeof(retry));
    evbuffer_drain(c->in, n);
    set_state(c, U_BODY);
    c->in_cb++;
    c->cbs->on_head(c->arg, c->status, ctype, retry);
    c->in_cb--;
    return 1;
}

/* Hands n bytes from the front of in to on_body. Returns 0, or 1 when
 * the caller asked to pause or went away. */
static int deliver(struct gw_upconn *c, size_t n)
{
    int pause;

    if (n == 0)
        return 0;
    const char *p = (const char *)evbuffer_pullup(c->in, (ev_ssize_t)n);
    c->in_cb++;
    pause = c->cbs->on_body(c->arg, p, n);
    c->in_cb--;
    evbuffer_drain(c->in, n);
    if (c->dead || c->cbs == NULL)
        return 1;
    if (pause) {
        c->paused = 1;
        event_del(c->rev);
        return 1;
    }
    return 0;
}

/* Body framing. Returns 1 when the answer is complete, 0 when more input
 * is needed or paused, -1 when malformed. */
static int parse_body(struct gw_upconn *c)
{
    size_t avail, len;

    for (;;) {
        if (c->paused || c->dead)
            return 0;
        avail = evbuffer_get_length(c->in);
        if (c->until_close) {
            if (avail && deliver(c, avail))
                return 0;
            return 0; /* ends at EOF */
        }
        if (!c->chunked) {
            size_t take = (long long)avail < c->left ? avail : (size_t)c->left;
            c->left -= (long long)take;
            if (take && deliver(c, take))
                return c->left == 0 && !c->dead && c->cbs ? 1 : 0;
            return c->left == 0 ? 1 : 0;
        }
        switch (gw_chunked_next(&c->ck, c->in, &len)) {
        case GW_CHUNKED_NEED:
            return 0;
        case GW_CHUNKED_DONE:
            return 1;
        case GW_CHUNKED_ERROR:
            return -1;
        case GW_CHUNKED_DATA:
            gw_chunked_took(&c->ck, len);
            if (deliver(c, len))
                return 0;
            break;
        }
    }
}

/* Parses what is buffered. Returns 1 when the exchange ended (c may be
 * freed or back in the pool: the caller must not touch it), else 0. */
static int process(struct gw_upconn *c)
{
    int rc;

    if (c->state == U_WAITING) {
        rc = parse_head(c);
        if (c->dead) {
            conn_free(c);
            return 1;
        }
        if (rc < 0) {
            finish(c, "malformed answer head from backend");
            return 1;
        }
        if (rc == 0)
            return 0;
    }
    if (c->state != U_BODY || c->cbs == NULL)
        return 0;
    rc = parse_body(c);
    if (c->dead) {
        conn_free(c);
        return 1;
    }
    if (rc < 0) {
        finish(c, "malformed answer body from backend");
        return 1;
    }
    if (rc == 1) {
        finish(c, NULL);
        return 1;
    }
    return 0;
}


/* process() with the caller told of the batch (on_batch), so the events
 * of one read leave for the client in one write; process()'s result. */
static int process_batch(struct gw_upconn *c)
{
    void (*batch)(int) = c->cbs ? c->cbs->on_batch : NULL;
    int rc;

    if (batch)
        batch(1);
    rc = process(c);
    if (batch)
        batch(0);
    return rc;
}

static void on_read(evutil_socket_t fd, short what, void *arg)
{
    struct gw_upconn *c = arg;
    int n;

    (void)what;
    if (c->state == U_IDLE) {
        /* the peer closed (or babbled): either way it is gone */
        pool_remove(c->pool, c);
        conn_close(c);
        return;
    }
    if (c->paused)
        return;
    /* after a resume, what was buffered goes first */
    if (c->state == U_BODY && evbuffer_get_length(c->in) > 0 &&
        (process_batch(c) || c->paused))
        return;
    n = gw_read_some(c->in, fd, READ_CHUNK);
    if (n > 0) {
        c->got_bytes = 1;
        process_batch(c);
        return;
    }
    if (n == -2)
        return;
    /* EOF or error */
    if (n == 0 && c->state == U_BODY && c->until_close) {
        c->keepalive = 0;
        finish(c, NULL);
        return;
    }
    if (c->cbs == NULL)
        return;
    fail(c, n == 0 ? "backend closed the connection before the answer "
                     "was complete"
                   : "connection to backend failed while reading");
}

static void on_write(evutil_socket_t fd, short what, void *arg)
{
    struct gw_upconn *c = arg;

    (void)what;
    if (c->state == U_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof(err);
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            finish(c, err == ECONNREFUSED ? "cannot connect to backend: "
                                            "connection refused"
                                          : "cannot connect to backend");
            return;
        }
        event_del(c->timer);
        set_state(c, U_WAITING);
    }
    if (try_write(c) < 0)
        fail(c, "connection to backend failed while writing");
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct gw_upconn *c = arg;

    (void)fd, (void)what;
    if (c->state == U_IDLE) {
        pool_remove(c->pool, c);
        conn_close(c);
        return;
    }
    if (c->pending_err) {
        const char *e = c->pending_err;
        c->pending_err = NULL;
        finish(c, e);
        return;
    }
    if (c->state == U_CONNECTING)
        finish(c, "cannot connect to backend: connect timed out");
}

static void fail_later(struct gw_upconn *c, const char *err)
{
    c->pending_err = err;
    event_active(c->timer, EV_TIMEOUT, 0);
}

static int open_socket(struct gw_upconn *c)
{
    struct gw_uppool *p = c->pool;
    int one = 1, n;
    struct timeval tv;

    c->fd = socket(p->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK |
                                          SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        return -1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->rev = event_new(p->base, c->fd, EV_READ | EV_PERSIST, on_read, c);
    c->wev = event_new(p->base, c->fd, EV_WRITE, on_write, c);
    if (c->rev == NULL || c->wev == NULL)
        return -1;
    event_add(c->rev, NULL);
    set_state(c, U_CONNECTING);
    if (connect(c->fd, (struct sockaddr *)&p->addr, p->addrlen) == 0) {
        set_state(c, U_WAITING);
        if (try_write(c) < 0)
            fail_later(c, "connection to backend failed while writing");
        return 0;
    }
    if (errno != EINPROGRESS) {
        fail_later(c, errno == ECONNREFUSED
                          ? "cannot connect to backend: connection refused"
                          : "cannot connect to backend");
        return 0;
    }
    /* On loopback (and often on a LAN) the handshake is over by the time
     * connect() returns: send at once, which saves arming the write event,
     * a loop turn and SO_ERROR. Not connected yet (EAGAIN): wait for
     * writability. A write consumes the socket's pending error, so one
     * that fails otherwise reports it here. */
    n = evbuffer_get_length(c->out) ? evbuffer_write(c->out, c->fd) : 0;
    if (n > 0) {
        set_state(c, U_WAITING);
        if (try_write(c) < 0)
            fail_later(c, "connection to backend failed while writing");
        return 0;
    }
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK &&
        errno != ENOTCONN && errno != EINTR) {
        fail_later(c, errno == ECONNREFUSED
                          ? "cannot connect to backend: connection refused"
                          : "cannot connect to backend");
        return 0;
    }
    tv.tv_sec = p->connect_ms / 1000;
    tv.tv_usec = (p->connect_ms % 1000) * 1000;
    evtimer_add(c->timer, &tv);
    event_add(c->wev, NULL);
    return 0;
}

struct gw_upconn *gw_upconn_send(struct gw_uppool *p, struct evbuffer *request,
                                 long connect_ms,
                                 const struct gw_upconn_cbs *cbs, void *arg)
{
    struct gw_upconn *c = p->idle;

    p->connect_ms = connect_ms;
    if (c) {
        p->idle = c->next;
        p->n_idle--;
        c->next = NULL;
        event_del(c->timer);
        c->reused = 1;
        if (c->resend == NULL && (c->resend = evbuffer_new()) == NULL) {
            conn_free(c);
            return NULL;
        }
        evbuffer_drain(c->resend, evbuffer_get_length(c->resend));
        /* keep a copy: the peer may have closed this one while idle */
        size_t n = evbuffer_get_length(request);
        evbuffer_add(c->resend, evbuffer_pullup(request, -1), n);
    } else {
        c = calloc(1, sizeof(*c));
        if (c == NULL)
            return NULL;
        c->fd = -1;
        c->pool = p;
        c->in = evbuffer_new();
        c->out = evbuffer_new();
        c->timer = evtimer_new(p->base, on_timer, c);
        if (c->in == NULL || c->out == NULL || c->timer == NULL) {
            conn_free(c);
            return NULL;
        }
    }
    c->cbs = cbs;
    c->arg = arg;
    c->got_bytes = c->paused = 0;
    c->status = 0;
    evbuffer_add_buffer(c->out, request);
    if (c->reused) {
        set_state(c, U_WAITING);
        if (try_write(c) < 0 && resend_fresh(c) < 0)
            fail_later(c, "connection to backend failed while writing");
        return c;
    }
    if (open_socket(c) < 0) {
        conn_free(c);
        return NULL;
    }
    return c;
}

void gw_upconn_resume(struct gw_upconn *c)
{
    if (!c->paused)
        return;
    c->paused = 0;
    event_add(c->rev, NULL);
    /* bytes already buffered are handed on from the loop (invariant 1) */
    if (evbuffer_get_length(c->in) > 0)
        event_active(c->rev, EV_READ, 0);
}

void gw_upconn_abort(struct gw_upconn *c)
{
    c->cbs = NULL;
    conn_close(c);
}

struct gw_uppool *gw_uppool_new(struct event_base *base,
                                const struct sockaddr *addr, socklen_t len,
                                int max_idle, long idle_timeout_ms)
{
    struct gw_uppool *p = calloc(1, sizeof(*p));

    if (p == NULL || len > sizeof(p->addr)) {
        free(p);
        return NULL;
    }
    p->base = base;
    memcpy(&p->addr, addr, len);
    p->addrlen = len;
    p->max_idle = max_idle;
    p->idle_timeout_ms = idle_timeout_ms;
    return p;
}

void gw_uppool_free(struct gw_uppool *p)
{
    if (p == NULL)
        return;
    while (p->idle) {
        struct gw_upconn *c = p->idle;
        p->idle = c->next;
        conn_free(c);
    }
    free(p);
}
