/*
 * http.c - HTTP/1.1 server connections.
 *
 * One connection at a time holds at most one request. States:
 *
 *              first byte              head complete
 *    IDLE ------------------> HEAD ------------------> BODY
 *     ^  (idle deadline)       | (header deadline,       | body read,
 *     |                        |  431, 400: close)       | (413, 400, 408)
 *     |                        v                         v
 *     |                      CLOSE <--------------- HANDLING (handler owns
 *     |                        ^   client gone:           |  the answer)
 *     |   flushed, keep-alive  |   on_close()             | answer complete
 *     +---------------------- FLUSH <---------------------+
 *
 * Transitions, each made in conn_state() only:
 *   IDLE -> HEAD         read_cb, bytes arrived
 *   HEAD -> BODY         parse_head
 *   BODY -> HANDLING     dispatch
 *   HANDLING -> FLUSH    answer_done
 *   FLUSH -> IDLE        write_cb, output empty and keep-alive
 *   FLUSH -> LINGER      write_cb, after an error answer to a request
 *                        whose body was not read: our side is shut, the
 *                        rest of the body is read and dropped for a while,
 *                        so the client sees the answer, not a reset
 *   any -> CLOSE         conn_close
 *
 * Invariants:
 *  1. Input after a request's end is not parsed until that request's
 *     answer is flushed (pipelined requests are answered in order).
 *  2. The handler hears of a request's end exactly once: by finishing the
 *     answer itself, or through on_close. After either, http.c owns it.
 *  3. A connection is freed only from a libevent callback of its own
 *     events or timer, after every user callback has returned, or from
 *     gw_http_server_free. Whatever the handler calls (reply, chunk, end)
 *     never frees the connection nor calls back into the handler: the
 *     steps after a write (next request, close, on_writable, on_close after
 *     a write error) run from the write event, made active by hand.
 *  4. Output is written at once (one writev per answer or chunk); the
 *     write event is armed only while bytes remain, with the idle timeout
 *     as the deadline for a client that takes nothing. Reads go straight
 *     into the input buffer, with no FIONREAD per read.
 *  5. TLS (a server with gw_http_server_set_tls) changes only the byte
 *     transport: a connection's SSL (c->ssl, NULL on a plain one, the one
 *     test the plain path pays) replaces readv with SSL_read and writev
 *     with SSL_write on the same events and states. The handshake is
 *     driven by the first SSL_read (accept state) inside the deadline that
 *     accept arms, limits.header_timeout_ms. SSL_read wanting to write
 *     waits on the write event, SSL_write wanting to read on the read
 *     event. Bytes OpenSSL holds decrypted or read ahead are drained
 *     before the connection waits on its socket again (SSL_has_pending),
 *     since epoll cannot see them. gw_http_req_pending counts plaintext
 *     not yet taken by SSL_write, so backpressure is unchanged.
 */
#include "gateway/http.h"
#include "gateway/asan.h"
#include "gateway/error.h"
#include "gateway/chunked.h"
#include "gateway/clock.h"
#include "gateway/log.h"
#include "gateway/tls.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define MAX_HEADERS 128
#define LOWMARK (32 * 1024)

enum conn_state {
    C_IDLE, C_HEAD, C_BODY, C_HANDLING, C_FLUSH, C_LINGER, C_CLOSE
};
static const char *const state_names[] = {"idle",  "head",   "body",
                                          "handling", "flush", "linger",
                                          "close"};
#define LINGER_MS 2000
#define ACCEPT_PAUSE_MS 100      /* out of descriptors: accept again after */
#define ACCEPT_WARN_US 10000000  /* at most one warning about it per 10 s */
#define LINGER_MAX_BYTES (4u << 20)
#define SPARE_HEAD_MAX (32 * 1024) /* a bigger head buffer is not kept */
#define SPARE_RH_MAX 4096          /* nor bigger added answer headers */
#define RH_MAX (64 * 1024)         /* answer headers the gateway may add */
#define HEAD_BUF 1024              /* bytes of a head gathered on the stack */

struct gw_http_server {
    struct event_base *base; /* borrowed */
    struct evconnlistener *listener; /* owned */
    gw_http_handler handler;
    gw_http_error_handler error_handler;
    void *handler_arg;
    struct gw_http_limits limits;
    struct gw_http_conn *conns; /* owned: doubly linked list */
    size_t busy;
    int shutting_down;
    struct event *accept_timer; /* owned: ends a pause of accepting */
    int64_t accept_warned_us;   /* when that was last logged */
    int reuseport;              /* listen with SO_REUSEPORT (workers) */
    struct gw_tls *tls; /* owned reference: new connections speak TLS with
                           it; NULL: plain */
};

struct gw_http_conn {
    struct gw_http_server *srv; /* borrowed */
    struct gw_http_conn *cork_next; /* on this thread's corked list */
    int corked;                 /* output held until gw_http_uncork */
    evutil_socket_t fd;         /* owned */
    struct event *rev, *wev;    /* owned: read (persistent), write */
    struct evbuffer *in, *out;  /* owned */
    struct event *timer;        /* owned: header / body / idle deadline */
    int reading;                /* rev is added */
    int broken;                 /* a write failed: close from wev */
    int read_eof;               /* the client shut its side */
    struct gw_http_req *req;    /* owned: the request in progress */
    struct gw_http_req *spare;  /* owned: the last one, for the next */
    struct gw_http_limits limits;
    enum conn_state state;
    /* body framing */
    int chunked;
    struct gw_chunked ck;
    size_t body_left;
    size_t framing;        /* chunked: bytes of sizes, extensions, trailers */
    size_t scanned;        /* head: input searched for its end so far */
    int linger;            /* unread input may follow: linger on close */
    size_t lingered;       /* bytes dropped while lingering */
    SSL *ssl;              /* owned: NULL on a plain connection; holds its
                              SSL_CTX, so a reload does not change it */
    int tls_read_wants_write; /* SSL_read waits for the socket writable */
    int tls_write_wants_read; /* SSL_write waits for it readable */
    int tls_dead;          /* a fatal TLS error: no close_notify */
    struct gw_http_conn *prev, *next;
};

static void conn_close(struct gw_http_conn *c);
static int value_ok(const char *v);
static void tls_flush(struct gw_http_conn *c);
static void tls_end(struct gw_http_conn *c);

static void conn_state(struct gw_http_conn *c, enum conn_state to)
{
    int was_busy = c->state >= C_HEAD && c->state <= C_FLUSH;
    int is_busy = to >= C_HEAD && to <= C_FLUSH;

    (void)state_names;
    if (was_busy && !is_busy)
        c->srv->busy--;
    else if (!was_busy && is_busy)
        c->srv->busy++;
    c->state = to;
}

static void arm_timer(struct gw_http_conn *c, long ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(c->timer, &tv);
}

static void req_free(struct gw_http_req *r)
{
    if (r == NULL)
        return;
    free(r->head);
    free(r->headers);
    if (r->body)
        evbuffer_free(r->body);
    free(r->rh);
    free(r);
}

/* A request for connection c: the one its last request left (its head
 * and header buffers and its two evbuffers kept, empty), else a new one.
 * A keep-alive connection so allocates nothing of its own per request. */
static struct gw_http_req *req_new(struct gw_http_conn *c)
{
    struct gw_http_req *r = c->spare, keep;

    if (r == NULL)
        return calloc(1, sizeof(*r));
    c->spare = NULL;
    ASAN_UNPOISON_MEMORY_REGION(r, sizeof(*r));
    keep = *r;
    memset(r, 0, sizeof(*r));
    r->head = keep.head, r->head_cap = keep.head_cap;
    r->headers = keep.headers, r->headers_cap = keep.headers_cap;
    r->body = keep.body;
    r->rh = keep.rh, r->rh_cap = keep.rh_cap;
    if (r->body)
        evbuffer_drain(r->body, evbuffer_get_length(r->body));
    return r;
}

/* The end of c's request r: kept for its next one (one at most). */
static void req_done(struct gw_http_conn *c, struct gw_http_req *r)
{
    if (c->spare == NULL && r->head_cap <= SPARE_HEAD_MAX &&
        r->rh_cap <= SPARE_RH_MAX) {
        c->spare = r;
        ASAN_POISON_MEMORY_REGION(r, sizeof(*r));
    } else {
        req_free(r);
    }
}

/* Output held by gw_http_cork: each worker thread runs one loop, so the
 * list is the thread's. */
static __thread struct gw_http_conn *corked_list;
static __thread int cork_depth;

static void cork_unlink(struct gw_http_conn *c)
{
    struct gw_http_conn **pp;

    for (pp = &corked_list; *pp; pp = &(*pp)->cork_next)
        if (*pp == c) {
            *pp = c->cork_next;
            break;
        }
    c->corked = 0;
}

static void conn_free(struct gw_http_conn *c)
{
    struct gw_http_server *srv = c->srv;

    if (c->corked)
        cork_unlink(c);

    conn_state(c, C_CLOSE);
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    req_free(c->req);
    if (c->spare) {
        ASAN_UNPOISON_MEMORY_REGION(c->spare, sizeof(*c->spare));
        req_free(c->spare);
    }
    event_free(c->timer);
    event_free(c->rev);
    event_free(c->wev);
    evbuffer_free(c->in);
    evbuffer_free(c->out);
    if (c->ssl)
        tls_end(c);
    evutil_closesocket(c->fd);
    free(c);
}

/* Tells the handler its request is gone, then frees the connection. */
static void conn_close(struct gw_http_conn *c)
{
    struct gw_http_req *r = c->req;

    if (c->state == C_HANDLING && r && !r->done && r->on_close) {
        gw_http_req_cb cb = r->on_close;
        r->on_close = NULL;
        r->on_writable = NULL;
        cb(r, r->cb_arg);
    }
    conn_free(c);
}

static void read_on(struct gw_http_conn *c, int on)
{
    if (on && !c->reading && !c->read_eof)
        event_add(c->rev, NULL);
    else if (!on && c->reading)
        event_del(c->rev);
    /* input OpenSSL already holds would not wake the socket's event */
    if (on && !c->reading && !c->read_eof && c->ssl &&
        SSL_has_pending(c->ssl))
        event_active(c->rev, EV_READ, 0);
    c->reading = on && !c->read_eof;
}

/* Runs the after-write steps from the loop, not from the caller's stack. */
static void schedule_write_cb(struct gw_http_conn *c)
{
    event_active(c->wev, EV_WRITE, 0);
}

/* Writes what it can now; arms the write event for the rest. Under
 * gw_http_cork, only notes that the connection has output to write. */
static void flush_out(struct gw_http_conn *c)
{
    if (cork_depth > 0) {
        if (!c->corked) {
            c->corked = 1;
            c->cork_next = corked_list;
            corked_list = c;
        }
        return;
    }
    if (c->ssl) {
        tls_flush(c);
        return;
    }
    while (evbuffer_get_length(c->out) > 0) {
        int n = evbuffer_write(c->out, c->fd);
        if (n > 0)
            continue;
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct timeval tv = {c->limits.idle_timeout_ms / 1000,
                                 (c->limits.idle_timeout_ms % 1000) * 1000};
            event_add(c->wev, &tv);
            return;
        }
        c->broken = 1;
        evbuffer_drain(c->out, evbuffer_get_length(c->out));
        schedule_write_cb(c);
        return;
    }
}

/* ------------------------------------------------------------------ tls */

#define TLS_WRITE_MAX 16384 /* one record's plaintext */

static void tls_wait_writable(struct gw_http_conn *c)
{
    struct timeval tv = {c->limits.idle_timeout_ms / 1000,
                         (c->limits.idle_timeout_ms % 1000) * 1000};
    event_add(c->wev, &tv);
}

/* A fatal TLS error (or the peer's reset): OpenSSL must not be asked to
 * send anything more on this connection. Returns 1 when the client spoke
 * plain HTTP ("GET /..." where a ClientHello belongs), else 0. */
static int tls_fatal(struct gw_http_conn *c, int ret, int e)
{
    char buf[160];
    unsigned long le = ERR_peek_last_error();

    c->tls_dead = 1;
    if (le) {
        ERR_error_string_n(le, buf, sizeof(buf));
        gw_log_debug("tls: connection closed: %s", buf);
    } else {
        gw_log_debug("tls: connection closed: ssl error %d (ret %d)", e, ret);
    }
    ERR_clear_error(); /* the queue is the thread's: libcurl reads it too */
    return le && ERR_GET_LIB(le) == ERR_LIB_SSL &&
           ERR_GET_REASON(le) == SSL_R_HTTP_REQUEST;
}

/* A plain-HTTP request on the TLS port: the client cannot read a TLS
 * alert, so it is told in plain HTTP, once, best-effort (one write, no
 * waiting), before the close; curl would otherwise say only "empty reply
 * from server". OpenSSL sent nothing on the socket for it. */
static void tls_plain_http_answer(struct gw_http_conn *c)
{
    struct evbuffer *body = evbuffer_new(), *out = evbuffer_new();

    if (body && out &&
        gw_error_json(body, 400, "plain_http_to_https_port",
                      "this port speaks HTTPS: the request was sent in "
                      "plain HTTP; use an https:// URL") == 0 &&
        evbuffer_add_printf(out, "HTTP/1.1 400 Bad Request\r\n"
                            "Content-Type: application/json\r\n"
                            "Content-Length: %zu\r\n"
                            "Connection: close\r\n\r\n",
                            evbuffer_get_length(body)) > 0 &&
        evbuffer_add_buffer(out, body) == 0)
        (void)evbuffer_write(out, c->fd);
    if (body)
        evbuffer_free(body);
    if (out)
        evbuffer_free(out);
}

/* gw_read_some for a TLS connection, with the same results: bytes read,
 * 0 at the end of the input (close_notify or, ignored as a truncation
 * that framing catches, a bare EOF), -1 on an error, -2 when nothing could
 * be read (the handshake in progress counts as nothing). When it returns
 * bytes and stops short of the end of what OpenSSL holds, or before an
 * end or an error it met, the read event is made active again, so that
 * is seen without waiting on the socket. */
static int tls_read_some(struct gw_http_conn *c, size_t max)
{
    struct evbuffer_iovec v;
    size_t total = 0;
    int n, e;

    if (c->tls_write_wants_read) {
        c->tls_write_wants_read = 0;
        schedule_write_cb(c); /* retry the write from its own event */
    }
    /* SSL_get_error reads the thread's error queue: what another user of
     * OpenSSL left there (libcurl, a config load) would read as ours */
    ERR_clear_error();
    while (total < max) {
        if (evbuffer_reserve_space(c->in, (ev_ssize_t)(max - total), &v,
                                   1) < 1)
            return -1;
        n = SSL_read(c->ssl, v.iov_base,
                     v.iov_len < max - total ? (int)v.iov_len
                                             : (int)(max - total));
        if (n > 0) {
            v.iov_len = (size_t)n;
            evbuffer_commit_space(c->in, &v, 1);
            total += (size_t)n;
            continue;
        }
        evbuffer_commit_space(c->in, &v, 0);
        e = SSL_get_error(c->ssl, n);
        if (e == SSL_ERROR_WANT_READ)
            return total ? (int)total : -2;
        if (e == SSL_ERROR_WANT_WRITE) {
            c->tls_read_wants_write = 1;
            tls_wait_writable(c);
            return total ? (int)total : -2;
        }
        if (e != SSL_ERROR_ZERO_RETURN && tls_fatal(c, n, e) && total == 0)
            tls_plain_http_answer(c);
        if (total == 0)
            return e == SSL_ERROR_ZERO_RETURN ? 0 : -1;
        /* the bytes first; the end or error on the next turn */
        if (c->reading)
            event_active(c->rev, EV_READ, 0);
        return (int)total;
    }
    if (c->reading && SSL_has_pending(c->ssl))
        event_active(c->rev, EV_READ, 0);
    return (int)total;
}

/* flush_out for a TLS connection: up to a record's worth of the output at
 * a time, contiguous (a pullup moves little: answers are mostly one
 * chain). A write that must wait is retried with the same bytes first,
 * as OpenSSL requires; they are still at the front of c->out. */
static void tls_flush(struct gw_http_conn *c)
{
    size_t len;

    ERR_clear_error(); /* as in tls_read_some */
    while ((len = evbuffer_get_length(c->out)) > 0) {
        size_t n = len < TLS_WRITE_MAX ? len : TLS_WRITE_MAX;
        unsigned char *p = evbuffer_pullup(c->out, (ev_ssize_t)n);
        int w, e;

        if (p == NULL)
            break;
        w = SSL_write(c->ssl, p, (int)n);
        if (w > 0) {
            evbuffer_drain(c->out, (size_t)w);
            continue;
        }
        e = SSL_get_error(c->ssl, w);
        if (e == SSL_ERROR_WANT_WRITE) {
            tls_wait_writable(c);
            return;
        }
        if (e == SSL_ERROR_WANT_READ) {
            /* renegotiation is off, so only a misbehaving peer gets
             * here; the next read (tls_read_some) retries the write */
            c->tls_write_wants_read = 1;
            return;
        }
        tls_fatal(c, w, e);
        break;
    }
    if (evbuffer_get_length(c->out) == 0)
        return;
    /* as a failed writev: the client is gone, close from the write event */
    c->broken = 1;
    evbuffer_drain(c->out, evbuffer_get_length(c->out));
    schedule_write_cb(c);
}

/* Our side of the close: close_notify when the handshake is over and no
 * fatal error happened, never waiting for the peer's (non-blocking: it
 * goes if the socket takes it). */
static void tls_close_notify(struct gw_http_conn *c)
{
    ERR_clear_error();
    if (!c->tls_dead && SSL_is_init_finished(c->ssl))
        (void)SSL_shutdown(c->ssl);
    ERR_clear_error();
}

static void tls_end(struct gw_http_conn *c)
{
    tls_close_notify(c);
    SSL_free(c->ssl);
    c->ssl = NULL;
}

/* ------------------------------------------------------------ answering */

/* A head being built: bytes gather in buf and reach out in one
 * evbuffer_add (each costs about a hundred instructions); a head bigger
 * than buf leaves in a few. */
struct head_buf {
    struct evbuffer *out; /* borrowed */
    size_t len;
    char buf[HEAD_BUF];
};

static void hb_put(struct head_buf *h, const char *s, size_t n)
{
    if (n > sizeof(h->buf) - h->len) {
        evbuffer_add(h->out, h->buf, h->len);
        h->len = 0;
        if (n > sizeof(h->buf)) {
            evbuffer_add(h->out, s, n);
            return;
        }
    }
    memcpy(h->buf + h->len, s, n);
    h->len += n;
}

/* v in decimal: printf costs more than the rest of a head */
static void hb_num(struct head_buf *h, unsigned long v)
{
    char d[24], *p = d + sizeof(d);

    do
        *--p = (char)('0' + v % 10);
    while ((v /= 10) > 0);
    hb_put(h, p, (size_t)(d + sizeof(d) - p));
}

#define HB_LIT(h, s) hb_put(h, s, sizeof(s) - 1)

static void write_head(struct gw_http_req *r, int status,
                       const char *content_type, long content_length)
{
    const char *reason = gw_error_reason(status);
    struct head_buf h;

    h.out = r->conn->out;
    h.len = 0;
    r->status = status;
    if (r->conn->srv->shutting_down)
        r->keepalive = 0;
    HB_LIT(&h, "HTTP/1.1 ");
    hb_num(&h, (unsigned long)status);
    HB_LIT(&h, " ");
    hb_put(&h, reason, strlen(reason));
    HB_LIT(&h, "\r\n");
    /* the type may be an upstream's: dropped when it could split the head */
    if (content_type && value_ok(content_type)) {
        HB_LIT(&h, "Content-Type: ");
        hb_put(&h, content_type, strlen(content_type));
        HB_LIT(&h, "\r\n");
    }
    if (content_length >= 0) {
        HB_LIT(&h, "Content-Length: ");
        hb_num(&h, (unsigned long)content_length);
        HB_LIT(&h, "\r\n");
    } else if (r->http_minor >= 1)
        HB_LIT(&h, "Transfer-Encoding: chunked\r\n");
    else
        r->keepalive = 0;
    if (r->rh_len)
        hb_put(&h, r->rh, r->rh_len);
    if (!r->keepalive)
        HB_LIT(&h, "Connection: close\r\n\r\n");
    else if (r->http_minor == 0)
        HB_LIT(&h, "Connection: keep-alive\r\n\r\n");
    else
        HB_LIT(&h, "\r\n");
    evbuffer_add(h.out, h.buf, h.len);
}

static void answer_done(struct gw_http_req *r)
{
    struct gw_http_conn *c = r->conn;

    r->done = 1;
    r->on_close = NULL;
    r->on_writable = NULL;
    r->want_writable = 0;
    conn_state(c, C_FLUSH);
    flush_out(c);
    if (evbuffer_get_length(c->out) == 0)
        schedule_write_cb(c); /* the next request, or the close */
}

/* 1 when v may stand as a header value: no control byte but HTAB (a
 * bare CR or LF would split the answer, and some clients treat other
 * controls as line ends or cut the value there). */
static int value_ok(const char *v)
{
    for (; *v; v++)
        if (((unsigned char)*v < 0x20 && *v != '\t') || *v == 0x7f)
            return 0;
    return 1;
}

/* room for n more bytes in r->rh; -1 past RH_MAX or out of memory */
static int rh_room(struct gw_http_req *r, size_t need)
{
    if (need > RH_MAX - r->rh_len)
        return -1;
    if (r->rh_len + need > r->rh_cap) {
        size_t cap = r->rh_cap ? r->rh_cap : 256;
        char *nb;
        while (cap < r->rh_len + need)
            cap *= 2;
        if ((nb = realloc(r->rh, cap)) == NULL)
            return -1;
        r->rh = nb, r->rh_cap = cap;
    }
    return 0;
}

int gw_http_add_header(struct gw_http_req *r, const char *name,
                       const char *value)
{
    size_t nl = strlen(name), vl = strlen(value), need = nl + vl + 4;

    if (strpbrk(name, "\r\n:") || !value_ok(value) || rh_room(r, need) < 0)
        return -1;
    memcpy(r->rh + r->rh_len, name, nl);
    memcpy(r->rh + r->rh_len + nl, ": ", 2);
    memcpy(r->rh + r->rh_len + nl + 2, value, vl);
    memcpy(r->rh + r->rh_len + nl + 2 + vl, "\r\n", 2);
    r->rh_len += need;
    return 0;
}

int gw_http_add_header_line(struct gw_http_req *r, const char *line,
                            size_t len)
{
    if (len < 4 || memcmp(line + len - 2, "\r\n", 2) != 0 ||
        rh_room(r, len) < 0)
        return -1;
    memcpy(r->rh + r->rh_len, line, len);
    r->rh_len += len;
    return 0;
}

int gw_http_resp_has_header(const struct gw_http_req *r, const char *name)
{
    size_t n = strlen(name), len;
    const char *p, *end;

    if (r->rh_len == 0)
        return 0;
    len = r->rh_len;
    p = r->rh;
    end = p + len;
    while (p < end) {
        if ((size_t)(end - p) > n && p[n] == ':' && strncasecmp(p, name, n) == 0)
            return 1;
        p = memchr(p, '\n', (size_t)(end - p));
        if (p == NULL)
            break;
        p++;
    }
    return 0;
}

int gw_http_resp_header_get(const struct gw_http_req *r, const char *name,
                            char *out, size_t cap)
{
    size_t n = strlen(name), len;
    const char *p, *end, *eol;

    if (r->rh_len == 0 || cap == 0)
        return -1;
    len = r->rh_len;
    p = r->rh;
    end = p + len;
    while (p < end) {
        eol = memchr(p, '\r', (size_t)(end - p));
        if (eol == NULL)
            break;
        if ((size_t)(eol - p) > n + 1 && p[n] == ':' &&
            strncasecmp(p, name, n) == 0) {
            const char *v = p + n + 1;
            while (v < eol && *v == ' ')
                v++;
            if ((size_t)(eol - v) >= cap)
                return -1;
            memcpy(out, v, (size_t)(eol - v));
            out[eol - v] = '\0';
            return 0;
        }
        p = eol + 2;
    }
    return -1;
}

void gw_http_reply(struct gw_http_req *r, int status,
                   const char *content_type, const void *body, size_t len)
{
    struct evbuffer *out = r->conn->out;

    write_head(r, status, content_type, (long)len);
    if (len && !(r->method && strcmp(r->method, "HEAD") == 0))
        evbuffer_add(out, body, len);
    r->bytes_out += len;
    answer_done(r);
}

void gw_http_reply_buffer(struct gw_http_req *r, int status,
                          const char *content_type, struct evbuffer *body)
{
    struct evbuffer *out = r->conn->out;
    size_t len = evbuffer_get_length(body);

    write_head(r, status, content_type, (long)len);
    evbuffer_add_buffer(out, body);
    r->bytes_out += len;
    answer_done(r);
}

void gw_http_reply_start(struct gw_http_req *r, int status,
                         const char *content_type)
{
    write_head(r, status, content_type, -1);
    r->streaming = 1;
    flush_out(r->conn);
}

/* "<len in hex>\r\n", a chunk's size line, into buf (24 bytes); returns
 * its length. By hand: snprintf was a visible share of a relayed event. */
static size_t chunk_size_line(char *buf, size_t len)
{
    char tmp[16];
    size_t n = 0, i = 0;

    do
        tmp[n++] = "0123456789abcdef"[len & 15];
    while ((len >>= 4) > 0);
    while (n > 0)
        buf[i++] = tmp[--n];
    buf[i++] = '\r';
    buf[i++] = '\n';
    return i;
}

void gw_http_reply_chunk(struct gw_http_req *r, const void *data, size_t len)
{
    struct evbuffer *out = r->conn->out;
    char size[24];

    if (len == 0 || r->conn->broken)
        return;
    if (r->http_minor >= 1 && len <= 2048) {
        /* a stream event: one append (each costs a hundred instructions) */
        char buf[24 + 2048 + 2];
        size_t n = chunk_size_line(buf, len);
        memcpy(buf + n, data, len);
        memcpy(buf + n + len, "\r\n", 2);
        evbuffer_add(out, buf, n + len + 2);
    } else if (r->http_minor >= 1) {
        evbuffer_add(out, size, chunk_size_line(size, len));
        evbuffer_add(out, data, len);
        evbuffer_add(out, "\r\n", 2);
    } else {
        evbuffer_add(out, data, len);
    }
    r->bytes_out += len;
    flush_out(r->conn);
}

void gw_http_cork(void)
{
    cork_depth++;
}

void gw_http_uncork(void)
{
    struct gw_http_conn *c;

    if (--cork_depth > 0)
        return;
    while ((c = corked_list) != NULL) {
        size_t left;

        corked_list = c->cork_next;
        c->corked = 0;
        flush_out(c);
        if (c->broken)
            continue; /* flush_out scheduled the close */
        /* what answer_done and a paused stream wait for, had the writes
         * happened at once: the end of the answer, or room again */
        left = evbuffer_get_length(c->out);
        if ((c->state == C_FLUSH && left == 0) ||
            (c->state == C_HANDLING && c->req && c->req->want_writable &&
             left <= LOWMARK))
            schedule_write_cb(c);
    }
}

void gw_http_reply_end(struct gw_http_req *r)
{
    if (r->http_minor >= 1)
        evbuffer_add(r->conn->out, "0\r\n\r\n", 5);
    answer_done(r);
}

size_t gw_http_req_pending(const struct gw_http_req *r)
{
    return evbuffer_get_length(r->conn->out);
}

void gw_http_req_set_callbacks(struct gw_http_req *r, gw_http_req_cb on_close,
                               gw_http_req_cb on_writable, void *arg)
{
    r->on_close = on_close;
    r->on_writable = on_writable;
    r->cb_arg = arg;
}

void gw_http_req_wait_writable(struct gw_http_req *r)
{
    r->want_writable = 1;
}

const char *gw_http_req_header(const struct gw_http_req *r, const char *name)
{
    size_t i;

    for (i = 0; i < r->n_headers; i++)
        if (strcasecmp(r->headers[i].name, name) == 0)
            return r->headers[i].value;
    return NULL;
}

/* An error answer that ends the connection: the input can no longer be
 * trusted to be framed. */
static void fail(struct gw_http_conn *c, int status, const char *code,
                 const char *message)
{
    struct evbuffer *body = evbuffer_new();

    if (c->req == NULL)
        c->req = req_new(c);
    if (body == NULL || c->req == NULL) {
        if (body)
            evbuffer_free(body);
        conn_close(c);
        return;
    }
    c->req->conn = c;
    c->req->http_minor = 1;
    c->req->keepalive = 0;
    c->linger = 1;
    evtimer_del(c->timer);
    read_on(c, 0);
    if (c->state == C_IDLE)
        conn_state(c, C_HEAD);
    conn_state(c, C_HANDLING);
    if (c->srv->error_handler) {
        evbuffer_free(body);
        c->srv->error_handler(c->req, status, code, message,
                              c->srv->handler_arg);
        return;
    }
    gw_error_json(body, status, code, message);
    gw_http_reply_buffer(c->req, status, "application/json", body);
    evbuffer_free(body);
}

/* -------------------------------------------------------------- reading */

static int is_tchar(int ch)
{
    return isalnum(ch) || (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

static int has_token(const char *value, const char *token)
{
    size_t n = strlen(token);
    const char *p = value;

    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        if (strncasecmp(p, token, n) == 0 &&
            (p[n] == '\0' || p[n] == ',' || p[n] == ' ' || p[n] == '\t'))
            return 1;
        while (*p && *p != ',')
            p++;
    }
    return 0;
}

/* A Transfer-Encoding value: 0 when it is chunked alone; 400 when
 * chunked is not its last coding or comes twice (the body cannot be
 * framed, RFC 9112 6.3 and 7.1); 501 for a chunked body under another
 * coding (gzip, chunked), which this server does not decode. Empty list
 * elements are skipped (RFC 9110 5.6.1). */
static int te_status(const char *te)
{
    int n_chunked = 0, other = 0, last_chunked = 0;
    const char *p = te;

    while (*p) {
        size_t n;
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        if (*p == '\0')
            break;
        n = strcspn(p, ",");
        while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
            n--;
        last_chunked = n == 7 && strncasecmp(p, "chunked", 7) == 0;
        if (last_chunked)
            n_chunked++;
        else
            other = 1;
        p += strcspn(p, ",");
    }
    if (!last_chunked || n_chunked != 1)
        return 400;
    return other ? 501 : 0;
}

static void dispatch(struct gw_http_conn *c);
static void read_body(struct gw_http_conn *c);

/* Slots for the header fields of a head whose field lines start at p: one
 * per line, at most MAX_HEADERS (one more field is refused with 431). The
 * array lives as long as the request, through a whole stream: sized to
 * MAX_HEADERS it was 3 KB a request, most of a stream's memory. */
static size_t header_slots(const char *p)
{
    size_t n = 1;

    while (n < MAX_HEADERS && (p = strstr(p, "\r\n")) != NULL) {
        n++;
        p += 2;
    }
    return n;
}

/* Parses the head in r->head (NUL-terminated, CRLF lines). Returns 0 or
 * the status of the error, with *msg set. */
static int parse_head(struct gw_http_conn *c, struct gw_http_req *r,
                      const char **msg, const char **code)
{
    char *p = r->head, *line_end, *sp, *path;
    const char *cl = NULL, *te = NULL, *conn_hdr = NULL;
    size_t n, slots;

    *code = "bad_request";
    /* request line */
    line_end = strstr(p, "\r\n");
    *line_end = '\0';
    sp = strchr(p, ' ');
    if (sp == NULL || sp == p) {
        *msg = "malformed request line";
        return 400;
    }
    *sp = '\0';
    r->method = p;
    for (; *p; p++)
        if (!isupper((unsigned char)*p)) {
            *msg = "malformed request method";
            return 400;
        }
    p = sp + 1;
    sp = strchr(p, ' ');
    if (sp == NULL || *p != '/') {
        *msg = "malformed request target";
        return 400;
    }
    *sp = '\0';
    r->target = p;
    for (; *p; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f) {
            *msg = "malformed request target";
            return 400;
        }
    p = sp + 1;
    if (strcmp(p, "HTTP/1.1") == 0)
        r->http_minor = 1;
    else if (strcmp(p, "HTTP/1.0") == 0)
        r->http_minor = 0;
    else if (!(strncmp(p, "HTTP/", 5) == 0 && isdigit((unsigned char)p[5]) &&
               p[6] == '.' && isdigit((unsigned char)p[7]) && p[8] == '\0')) {
        /* not a version at all (a bare LF or CR in the line lands here) */
        *msg = "malformed request line";
        return 400;
    } else {
        *msg = "unsupported HTTP version (HTTP/1.0 or HTTP/1.1 only)";
        *code = "http_version_not_supported";
        return 505;
    }
    n = strcspn(r->target, "?");
    path = r->head + r->head_cap / 2; /* past the head (read_head) */
    memcpy(path, r->target, n);
    path[n] = '\0';
    r->path = path;

    /* header fields */
    slots = header_slots(line_end + 2);
    if (r->headers_cap < slots) {
        free(r->headers);
        r->headers_cap = 0;
        if ((r->headers = malloc(slots * sizeof(*r->headers))) != NULL)
            r->headers_cap = slots;
    }
    if (r->headers == NULL) {
        *msg = "out of memory";
        return 500;
    }
    p = line_end + 2;
    while (*p) {
        char *colon, *v, *e;
        line_end = strstr(p, "\r\n");
        *line_end = '\0';
        if (*p == ' ' || *p == '\t') {
            *msg = "obsolete header line folding is not accepted";
            return 400;
        }
        colon = strchr(p, ':');
        if (colon == NULL || colon == p) {
            *msg = "malformed header line";
            return 400;
        }
        *colon = '\0';
        for (char *q = p; *q; q++)
            if (!is_tchar((unsigned char)*q)) {
                *msg = "malformed header name";
                return 400;
            }
        v = colon + 1;
        while (*v == ' ' || *v == '\t')
            v++;
        e = v + strlen(v);
        while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
            *--e = '\0';
        for (char *q = v; *q; q++)
            if (((unsigned char)*q < 0x20 && *q != '\t') || *q == 0x7f) {
                *msg = "control character in header value";
                return 400;
            }
        if (r->n_headers == MAX_HEADERS) {
            *msg = "too many header fields";
            *code = "headers_too_large";
            return 431;
        }
        r->headers[r->n_headers].name = p;
        r->headers[r->n_headers].value = v;
        r->headers[r->n_headers].value_len = (size_t)(e - v);
        r->n_headers++;
        if (strcasecmp(p, "content-length") == 0) {
            if (cl) {
                *msg = "more than one Content-Length";
                return 400;
            }
            cl = v;
        } else if (strcasecmp(p, "transfer-encoding") == 0) {
            if (te) {
                *msg = "more than one Transfer-Encoding";
                return 400;
            }
            te = v;
        } else if (strcasecmp(p, "connection") == 0) {
            conn_hdr = v;
        }
        p = line_end + 2;
    }

    r->keepalive = r->http_minor >= 1;
    if (conn_hdr && has_token(conn_hdr, "close"))
        r->keepalive = 0;
    else if (conn_hdr && has_token(conn_hdr, "keep-alive"))
        r->keepalive = 1;

    c->chunked = 0;
    c->body_left = 0;
    if (te && cl) {
        *msg = "both Transfer-Encoding and Content-Length";
        return 400;
    }
    if (te) {
        int bad = te_status(te);
        if (bad == 400) {
            /* RFC 9112 6.3: the length cannot be known, so the client's
             * next bytes cannot be framed either */
            *msg = "Transfer-Encoding must end with chunked, once";
            return 400;
        }
        if (bad) {
            *msg = "unsupported Transfer-Encoding (only chunked)";
            *code = "unsupported_transfer_encoding";
            return 501;
        }
        if (r->http_minor == 0) {
            *msg = "Transfer-Encoding in an HTTP/1.0 request";
            return 400;
        }
        c->chunked = 1;
        gw_chunked_init(&c->ck);
        c->framing = 0;
    } else if (cl) {
        unsigned long long len = 0;
        const char *q = cl;
        if (*q == '\0') {
            *msg = "malformed Content-Length";
            return 400;
        }
        for (; *q; q++) {
            if (!isdigit((unsigned char)*q) || len > (1ULL << 40)) {
                *msg = "malformed Content-Length";
                return 400;
            }
            len = len * 10 + (unsigned)(*q - '0');
        }
        if (len > c->limits.max_body_bytes) {
            *msg = "request body is larger than the configured "
                   "limits.max_body_bytes";
            *code = "body_too_large";
            return 413;
        }
        c->body_left = (size_t)len;
    }
    return 0;
}

/* A head over limits.max_header_bytes: 431, saying whether the request
 * line alone is too long (a long target) or the head as a whole. */
static void head_too_large(struct gw_http_conn *c)
{
    struct evbuffer_ptr eol = evbuffer_search(c->in, "\r\n", 2, NULL);

    if (eol.pos < 0 || (size_t)eol.pos >= c->limits.max_header_bytes)
        fail(c, 431, "headers_too_large",
             "request line is longer than the configured "
             "limits.max_header_bytes");
    else
        fail(c, 431, "headers_too_large",
             "request head is larger than the configured "
             "limits.max_header_bytes");
}

static void read_head(struct gw_http_conn *c)
{
    struct evbuffer *in = c->in;
    struct evbuffer_ptr end;
    struct gw_http_req *r;
    const char *msg, *code;
    size_t head_len;
    int status;

    /* search only the new bytes (and the 3 before them): a head that
     * trickles in a few bytes at a time must not be rescanned from its
     * start on every read, which made it cost quadratic CPU */
    evbuffer_ptr_set(in, &end, c->scanned, EVBUFFER_PTR_SET);
    end = evbuffer_search(in, "\r\n\r\n", 4, &end);
    if (end.pos < 0) {
        size_t len = evbuffer_get_length(in);
        if (len > c->limits.max_header_bytes)
            head_too_large(c);
        c->scanned = len > 3 ? len - 3 : 0;
        return;
    }
    head_len = (size_t)end.pos + 4;
    if (head_len > c->limits.max_header_bytes) {
        head_too_large(c);
        return;
    }
    r = c->req;
    /* the head, and after it the path (at most as long) */
    if (r->head_cap < 2 * head_len) {
        free(r->head);
        r->head_cap = 0;
        if ((r->head = malloc(2 * head_len)) == NULL) {
            conn_close(c);
            return;
        }
        r->head_cap = 2 * head_len;
    }
    /* keep the final CRLF of the last line, drop the blank line */
    evbuffer_remove(in, r->head, head_len - 2);
    evbuffer_drain(in, 2);
    r->head[head_len - 2] = '\0';
    if (memchr(r->head, '\0', head_len - 2)) {
        fail(c, 400, "bad_request", "NUL byte in request head");
        return;
    }
    status = parse_head(c, r, &msg, &code);
    if (status) {
        fail(c, status, code, msg);
        return;
    }
    evtimer_del(c->timer);
    conn_state(c, C_BODY);
    if (c->body_left > 0 || c->chunked) {
        const char *expect = gw_http_req_header(r, "expect");
        if (expect && strcasecmp(expect, "100-continue") == 0 &&
            r->http_minor >= 1) {
            evbuffer_add(c->out, "HTTP/1.1 100 Continue\r\n\r\n", 25);
            flush_out(c);
        }
        arm_timer(c, c->limits.body_timeout_ms);
    }
    read_body(c);
}

/* Moves n bytes of body from the connection's input to the request's.
 * Up to SMALL_BODY bytes are copied into a chain of their size rather than
 * moved: the moved chain would be the read buffer (16 KB reserved, a 32 KB
 * allocation) and the request keeps its body until it ends, so each open
 * stream held 32 KB for a body of a few hundred bytes. A copy that small
 * costs less than the allocation it saves; larger bodies fill their chains
 * and move without a copy. */
#define SMALL_BODY 4096
static void body_take(struct evbuffer *in, struct evbuffer *body, size_t n)
{
    if (n <= SMALL_BODY) {
        unsigned char *p = evbuffer_pullup(in, (ev_ssize_t)n);
        if (p != NULL && evbuffer_add(body, p, n) == 0) {
            evbuffer_drain(in, n);
            return;
        }
    }
    evbuffer_remove_buffer(in, body, n);
}

/* Reads chunked framing from in; returns 1 when the body is complete, 0
 * when more input is needed, -1 after answering an error. */
static int read_chunked(struct gw_http_conn *c, struct evbuffer *in)
{
    size_t n;

    for (;;) {
        size_t before = evbuffer_get_length(in);
        enum gw_chunked_step step = gw_chunked_next(&c->ck, in, &n);

        /* The framing is bounded too: endless trailers or a long
         * extension on every 1-byte chunk would otherwise hold the
         * connection, reading, for ever. */
        c->framing += before - evbuffer_get_length(in);
        if (c->framing > c->limits.max_body_bytes) {
            fail(c, 413, "body_too_large",
                 "chunked framing (sizes, extensions, trailers) is larger "
                 "than the configured limits.max_body_bytes");
            return -1;
        }
        switch (step) {
        case GW_CHUNKED_NEED:
            return 0;
        case GW_CHUNKED_DONE:
            return 1;
        case GW_CHUNKED_ERROR:
            fail(c, 400, "bad_request", "malformed chunked body");
            return -1;
        case GW_CHUNKED_DATA:
            /* total <= max always holds here; comparing left with what
             * is still allowed cannot wrap, as total + left did for a
             * chunk size near 2^64 after a first chunk (the body then
             * grew without bound) */
            if (c->ck.left > c->limits.max_body_bytes - c->ck.total) {
                fail(c, 413, "body_too_large",
                     "request body is larger than the configured "
                     "limits.max_body_bytes");
                return -1;
            }
            body_take(in, c->req->body, n);
            gw_chunked_took(&c->ck, n);
            break;
        }
    }
}

static void read_body(struct gw_http_conn *c)
{
    struct evbuffer *in = c->in;
    struct gw_http_req *r = c->req;

    if (r->body == NULL && (r->body = evbuffer_new()) == NULL) {
        conn_close(c);
        return;
    }
    if (c->chunked) {
        int rc = read_chunked(c, in);
        if (rc <= 0)
            return;
    } else if (c->body_left > 0) {
        size_t avail = evbuffer_get_length(in);
        size_t take = avail < c->body_left ? avail : c->body_left;
        if (take)
            body_take(in, r->body, take);
        c->body_left -= take;
        if (c->body_left > 0)
            return;
    }
    dispatch(c);
}

static void dispatch(struct gw_http_conn *c)
{
    evtimer_del(c->timer);
    conn_state(c, C_HANDLING);
    c->srv->handler(c->req, c->srv->handler_arg);
}

static void start_request(struct gw_http_conn *c)
{
    c->req = req_new(c);
    if (c->req == NULL) {
        conn_close(c);
        return;
    }
    c->req->conn = c;
    c->req->start_us = gw_now_us();
    c->scanned = 0;
    conn_state(c, C_HEAD);
    arm_timer(c, c->limits.header_timeout_ms);
}

static void process_input(struct gw_http_conn *c)
{
    struct evbuffer *in = c->in;

    if (c->state == C_IDLE) {
        if (evbuffer_get_length(in) == 0)
            return;
        start_request(c);
        if (c->state != C_HEAD)
            return;
    }
    if (c->state == C_HEAD)
        read_head(c);
    else if (c->state == C_BODY)
        read_body(c);
}


static void on_read(evutil_socket_t fd, short what, void *arg)
{
    struct gw_http_conn *c = arg;
    int n;

    (void)fd, (void)what;
    n = c->ssl ? tls_read_some(c, 16384) : gw_read_some(c->in, c->fd, 16384);
    if (n == -2)
        return;
    if (n > 0) {
        switch (c->state) {
        case C_IDLE:
        case C_HEAD:
            process_input(c);
            return;
        case C_BODY:
            arm_timer(c, c->limits.body_timeout_ms);
            process_input(c);
            return;
        case C_LINGER:
            c->lingered += evbuffer_get_length(c->in);
            evbuffer_drain(c->in, evbuffer_get_length(c->in));
            if (c->lingered > LINGER_MAX_BYTES)
                conn_free(c);
            return;
        default:
            /* a pipelined request waits its turn; read no further ahead
             * than one more head */
            if (evbuffer_get_length(c->in) > c->limits.max_header_bytes)
                read_on(c, 0);
            return;
        }
    }
    /* EOF or error */
    if (n == 0 && c->state == C_FLUSH && !c->linger) {
        c->read_eof = 1; /* half-close after the request: finish the answer */
        read_on(c, 0);
        return;
    }
    conn_close(c);
}

/* After a write: output drained, or a deferred step (invariant 3). */
static void on_write(evutil_socket_t fd, short what, void *arg)
{
    struct gw_http_conn *c = arg;
    struct gw_http_req *r = c->req;

    (void)fd;
    if (c->broken || (what & EV_TIMEOUT)) {
        conn_close(c); /* client gone, or it takes nothing */
        return;
    }
    if (c->ssl && c->tls_read_wants_write) {
        c->tls_read_wants_write = 0; /* retry the read from its own event */
        if (c->reading)
            event_active(c->rev, EV_READ, 0);
    }
    flush_out(c);
    if (c->broken || evbuffer_get_length(c->out) > LOWMARK)
        return;
    if (c->state == C_HANDLING && r && r->want_writable) {
        r->want_writable = 0;
        if (r->on_writable)
            r->on_writable(r, r->cb_arg);
        return;
    }
    if (c->state != C_FLUSH || evbuffer_get_length(c->out) > 0)
        return;
    if (c->linger) {
        conn_state(c, C_LINGER);
        if (c->ssl)
            tls_close_notify(c);
        shutdown(c->fd, SHUT_WR);
        read_on(c, 1);
        arm_timer(c, LINGER_MS);
        return;
    }
    if (!r->keepalive || c->srv->shutting_down || c->read_eof) {
        conn_free(c);
        return;
    }
    req_done(c, r);
    c->req = NULL;
    conn_state(c, C_IDLE);
    read_on(c, 1);
    arm_timer(c, c->limits.idle_timeout_ms);
    process_input(c); /* a pipelined request may be waiting */
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct gw_http_conn *c = arg;

    (void)fd, (void)what;
    if (c->state == C_HEAD) {
        fail(c, 408, "header_timeout",
             "request head not received within limits.header_timeout_ms");
        return;
    }
    if (c->state == C_BODY) {
        fail(c, 408, "body_timeout",
             "request body stalled longer than limits.body_timeout_ms");
        return;
    }
    conn_close(c); /* idle keep-alive connection, or lingering done */
}

static void accept_cb(struct evconnlistener *l, evutil_socket_t fd,
                      struct sockaddr *sa, int socklen, void *arg)
{
    struct gw_http_server *srv = arg;
    struct gw_http_conn *c;
    int one = 1;

    (void)l, (void)sa, (void)socklen;
    if (srv->shutting_down || (c = calloc(1, sizeof(*c))) == NULL) {
        evutil_closesocket(fd);
        return;
    }
    evutil_make_socket_nonblocking(fd);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->srv = srv;
    c->fd = fd;
    c->limits = srv->limits;
    c->in = evbuffer_new();
    c->out = evbuffer_new();
    c->rev = event_new(srv->base, fd, EV_READ | EV_PERSIST, on_read, c);
    c->wev = event_new(srv->base, fd, EV_WRITE, on_write, c);
    c->timer = evtimer_new(srv->base, timer_cb, c);
    if (srv->tls && (c->ssl = SSL_new(gw_tls_ctx(srv->tls))) != NULL) {
        if (SSL_set_fd(c->ssl, fd) == 1) {
            SSL_set_accept_state(c->ssl); /* the first read shakes hands */
        } else {
            SSL_free(c->ssl);
            c->ssl = NULL;
        }
    }
    if (!c->in || !c->out || !c->rev || !c->wev || !c->timer ||
        (srv->tls && !c->ssl)) {
        if (srv->tls)
            ERR_clear_error();
        if (c->ssl)
            SSL_free(c->ssl);
        if (c->in)
            evbuffer_free(c->in);
        if (c->out)
            evbuffer_free(c->out);
        if (c->rev)
            event_free(c->rev);
        if (c->wev)
            event_free(c->wev);
        if (c->timer)
            event_free(c->timer);
        evutil_closesocket(fd);
        free(c);
        return;
    }
    c->next = srv->conns;
    if (srv->conns)
        srv->conns->prev = c;
    srv->conns = c;
    c->state = C_IDLE;
    read_on(c, 1);
    arm_timer(c, c->limits.header_timeout_ms);
    /* A client writes its request as soon as its connect() completes,
     * before we accept, so the request is mostly here already: read it in
     * this loop turn rather than after the next epoll_wait. Under load a
     * turn lasts milliseconds, and a new stream waits ~4 of them (accept,
     * request, upstream connect, upstream head) before its first event.
     * The read runs from the connection's own event (invariant 3); when
     * nothing is there yet it costs one readv that says EAGAIN. */
    event_active(c->rev, EV_READ, 1);
}

/* accept(2) failed for a reason other than a retriable one: mostly the
 * descriptors ran out (EMFILE, ENFILE). The pending connection stays in
 * the backlog and the listening socket readable, so accepting again at
 * once spins the loop (and libevent logged a line per try): stop
 * accepting for a while instead, as nginx does. Queued clients are taken
 * once descriptors are free again. */
static void accept_error_cb(struct evconnlistener *l, void *arg)
{
    struct gw_http_server *srv = arg;
    int e = EVUTIL_SOCKET_ERROR();
    struct timeval tv = {0, ACCEPT_PAUSE_MS * 1000};
    int64_t now = gw_now_us();

    evconnlistener_disable(l);
    evtimer_add(srv->accept_timer, &tv);
    if (now - srv->accept_warned_us >= ACCEPT_WARN_US) {
        srv->accept_warned_us = now;
        gw_log_warn("cannot accept connections: %s; pausing accept for %d "
                    "ms at a time (raise the open files limit, ulimit -n)",
                    evutil_socket_error_to_string(e), ACCEPT_PAUSE_MS);
    }
}

static void accept_resume_cb(evutil_socket_t fd, short what, void *arg)
{
    struct gw_http_server *srv = arg;

    (void)fd, (void)what;
    if (srv->listener && !srv->shutting_down)
        evconnlistener_enable(srv->listener);
}

/* ---------------------------------------------------------------- server */

struct gw_http_server *gw_http_server_new(struct event_base *base,
                                          gw_http_handler handler, void *arg)
{
    struct gw_http_server *srv = calloc(1, sizeof(*srv));

    if (srv == NULL)
        return NULL;
    srv->base = base;
    srv->handler = handler;
    srv->handler_arg = arg;
    srv->limits.max_header_bytes = 32 * 1024;
    srv->limits.max_body_bytes = 8 << 20;
    srv->limits.header_timeout_ms = 10000;
    srv->limits.body_timeout_ms = 30000;
    srv->limits.idle_timeout_ms = 60000;
    srv->accept_warned_us = INT64_MIN / 2;
    srv->accept_timer = evtimer_new(base, accept_resume_cb, srv);
    if (srv->accept_timer == NULL) {
        free(srv);
        return NULL;
    }
    return srv;
}

void gw_http_server_set_error_handler(struct gw_http_server *srv,
                                      gw_http_error_handler handler)
{
    srv->error_handler = handler;
}

void gw_http_server_set_limits(struct gw_http_server *srv,
                               const struct gw_http_limits *limits)
{
    srv->limits = *limits;
}

void gw_http_server_set_tls(struct gw_http_server *srv, struct gw_tls *tls)
{
    if (tls)
        gw_tls_ref(tls);
    gw_tls_unref(srv->tls);
    srv->tls = tls;
}

struct gw_tls *gw_http_server_tls(const struct gw_http_server *srv)
{
    return srv->tls;
}

int gw_http_server_listen(struct gw_http_server *srv, const char *host,
                          int port, char *err, size_t errlen)
{
    struct addrinfo hints, *res = NULL;
    char portstr[16];
    int rc;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    snprintf(portstr, sizeof(portstr), "%d", port);
    rc = getaddrinfo(host, portstr, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "cannot resolve '%s': %s", host,
                 gai_strerror(rc));
        return -1;
    }
    /* The listen backlog is as deep as the kernel allows (it caps the
     * value at net.core.somaxconn, 4096 by default): while the loop is
     * busy, a burst of connects waits in the queue. With 1024, 5,000
     * streams opening over 2 s on a loaded core filled it and 869 SYNs
     * were dropped, each costing its client a 1 s retransmit. */
    srv->listener = evconnlistener_new_bind(
        srv->base, accept_cb, srv,
        LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC |
            (srv->reuseport ? LEV_OPT_REUSEABLE_PORT : 0),
        65535, res->ai_addr, (int)res->ai_addrlen);
    freeaddrinfo(res);
    if (srv->listener == NULL) {
        snprintf(err, errlen, "cannot listen on '%s:%d': %s", host, port,
                 strerror(errno));
        return -1;
    }
    evconnlistener_set_error_cb(srv->listener, accept_error_cb);
    return 0;
}

void gw_http_server_set_reuseport(struct gw_http_server *srv, int on)
{
    srv->reuseport = on;
}

void gw_http_server_shutdown(struct gw_http_server *srv)
{
    struct gw_http_conn *c, *next;

    srv->shutting_down = 1;
    evtimer_del(srv->accept_timer);
    if (srv->listener) {
        evconnlistener_free(srv->listener);
        srv->listener = NULL;
    }
    for (c = srv->conns; c; c = next) {
        next = c->next;
        if (c->state == C_IDLE)
            conn_free(c);
    }
}

size_t gw_http_server_busy(const struct gw_http_server *srv)
{
    return srv->busy;
}

void gw_http_server_free(struct gw_http_server *srv)
{
    if (srv == NULL)
        return;
    if (srv->listener)
        evconnlistener_free(srv->listener);
    while (srv->conns)
        conn_close(srv->conns);
    event_free(srv->accept_timer);
    gw_tls_unref(srv->tls);
    free(srv);
}
