/*
 * http.c: a lean HTTP/1.1 server on libevent events and evbuffers, for mockllm.
 *
 * mockllm is the baseline of the benchmarks, so the per-request path is
 * short: find the end of the head in the input buffer, copy it once into a
 * buffer owned by the connection, parse it in place (header names are
 * lower-cased and values NUL-terminated there), read the body
 * (Content-Length or chunked) and hand the request to the handler.  No
 * allocation per request once a connection's buffers have grown.  I/O is
 * done by hand rather than with bufferevents: answers are written straight
 * after the requests are processed, so a request costs one read and one
 * writev and no epoll_ctl (the write event is only armed when the socket
 * is full, or while a stream waits to be drained).
 *
 * Connection states:
 *
 *     HEAD --head parsed--> BODY --body complete--> BUSY (handler owns it)
 *      ^                                              |
 *      +------------- exchange finished --------------+
 *     BUSY --abort / bad request / Connection: close--> CLOSING
 *     CLOSING --output flushed: shutdown(SHUT_WR)--> LINGER
 *     LINGER --client EOF, or 2 s--> freed (input read and dropped meanwhile,
 *             so that unread request bytes do not turn the close into a RST)
 *     BUSY --reset--> DEAD --> freed (RST)
 *     any --EOF or error from the client--> freed (job's on_close runs)
 *
 * Invariants:
 *  1. A connection is freed only from conn_process() after the handler has
 *     returned, or from a libevent callback of its own events or from a
 *     finishing call made outside the handler (a job's timer); never while
 *     the handler is on the stack.  A failed write only marks the
 *     connection (failed) and wakes its read callback, which frees it.
 *  2. Pipelined requests stay in the input buffer until the exchange before
 *     them is finished, so answers keep the order of the requests.
 *  3. The request (head and body buffers) stays valid and unchanged while
 *     the exchange is BUSY.
 */
#include "contrib/mockllm/http.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <event2/listener.h>

enum conn_state { ST_HEAD, ST_BODY, ST_CHUNKED, ST_BUSY, ST_CLOSING, ST_LINGER, ST_DEAD };

struct mock_http_conn {
    struct mock_http *h;        /* borrowed from the server */
    evutil_socket_t fd;         /* owned */
    struct event rev;           /* read; in LINGER with a timeout */
    struct event wev;           /* write, armed only while output waits */
    struct evbuffer *in;        /* owned */
    struct evbuffer *out;       /* owned */
    int failed;                 /* a write failed: freed by the read callback */
    int read_off;               /* reading paused: too much pipelined input */
    enum conn_state state;
    int keep_alive;
    int http10;
    int streaming;              /* chunked answer in progress */
    int chunked_raw;            /* HTTP/1.0 stream: no chunk framing */
    int in_process;             /* conn_process() is on the stack */
    char *head;                 /* owned: copy of the request head */
    size_t head_cap;
    char *body;                 /* owned: the request body */
    size_t body_len, body_cap, body_want;
    int chunk_phase;            /* ST_CHUNKED: 0 size line, 1 data, 2 trailers */
    struct mock_http_req req;
    mock_http_job_cb on_drain;
    int drain_wanted;           /* on_drain runs once the output is out */
    mock_http_job_cb on_close;
    void *job;                  /* borrowed: owned by the handler */
    struct mock_http_conn *prev, *next;
};

struct mock_http {
    struct event_base *base;        /* borrowed */
    struct evconnlistener *lis;     /* owned */
    struct event *accept_retry;     /* owned */
    mock_http_handler handler;
    void *arg;                      /* borrowed */
    struct mock_http_conn *conns;   /* owned: every open connection */
    long n_conns;
};

static void conn_process(struct mock_http_conn *c);

static int
retriable(int e)
{
    return e == EAGAIN || e == EWOULDBLOCK || e == EINTR;
}

static const char *
reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 413: return "Payload Too Large";
    case 422: return "Unprocessable Entity";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return status < 500 ? "Client Error" : "Server Error";
    }
}

/* ------------------------------------------------------------ lifecycle */

static void
conn_free(struct mock_http_conn *c)
{
    mock_http_job_cb on_close = c->on_close;
    void *job = c->job;

    c->on_close = NULL;
    c->on_drain = NULL;
    c->job = NULL;
    if (on_close)
        on_close(c, job);
    if (c->prev)
        c->prev->next = c->next;
    else
        c->h->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->h->n_conns--;
    event_del(&c->rev);
    event_del(&c->wev);
    evbuffer_free(c->in);
    evbuffer_free(c->out);
    evutil_closesocket(c->fd);
    free(c->head);
    free(c->body);
    free(c);
}

/*
 * Write what is pending; arm the write event if some is left, or if a job
 * asked to hear when the output drained (mock_http_want_drain: its
 * on_drain then runs from write_cb). A job sleeping on its own timer does
 * not ask, so a streamed event costs one write and no epoll_ctl.
 * Never frees: a failed write marks the connection and wakes read_cb.
 */
static void
conn_flush(struct mock_http_conn *c)
{
    if (c->failed || c->state == ST_DEAD || c->state == ST_LINGER)
        return;
    if (evbuffer_get_length(c->out) > 0 && evbuffer_write(c->out, c->fd) < 0 &&
        !retriable(errno)) {
        c->failed = 1;
        evbuffer_drain(c->out, evbuffer_get_length(c->out));
        event_del(&c->wev);
        event_active(&c->rev, EV_READ, 0);
        return;
    }
    if (evbuffer_get_length(c->out) > 0 ||
        (c->on_drain && c->drain_wanted && c->state == ST_BUSY)) {
        if (!event_pending(&c->wev, EV_WRITE, NULL))
            event_add(&c->wev, NULL);
    }
}

/* Output flushed on a closing connection: half-close, then wait for EOF. */
static void
conn_linger(struct mock_http_conn *c)
{
    struct timeval tv = {2, 0};

    c->state = ST_LINGER;
    shutdown(c->fd, SHUT_WR);
    event_del(&c->wev);
    event_del(&c->rev);
    event_add(&c->rev, &tv);
    evbuffer_drain(c->in, evbuffer_get_length(c->in));
}

/* Free or half-close a connection that is done; 1 if it is done. */
static int
conn_release(struct mock_http_conn *c)
{
    if (c->state == ST_DEAD || c->failed) {
        conn_free(c);
        return 1;
    }
    if (c->state == ST_LINGER)
        return 1;
    if (c->state == ST_CLOSING &&
        evbuffer_get_length(c->out) == 0) {
        conn_linger(c);
        return 1;
    }
    return 0;
}

/*
 * After a finishing call: send, free or go on reading, unless
 * conn_process() is on the stack (it does the same when the handler
 * returns).
 */
static void
conn_after(struct mock_http_conn *c)
{
    if (c->in_process)
        return;
    conn_flush(c);
    if (conn_release(c))
        return;
    if (c->state == ST_HEAD)
        conn_process(c);
}

static void
exchange_done(struct mock_http_conn *c)
{
    c->on_drain = NULL;
    c->drain_wanted = 0;
    c->on_close = NULL;
    c->job = NULL;
    c->streaming = 0;
    c->state = c->keep_alive ? ST_HEAD : ST_CLOSING;
}

/* ------------------------------------------------------------ answers */

static void
write_head(struct mock_http_conn *c, int status, const char *ctype,
           const char *extra, const char *framing)
{
    evbuffer_add_printf(c->out,
                        "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n%s%s%s\r\n",
                        status, reason(status), ctype, framing,
                        c->keep_alive ? (c->http10 ? "Connection: keep-alive\r\n" : "")
                                      : "Connection: close\r\n",
                        extra ? extra : "");
}

void
mock_http_respond(struct mock_http_conn *c, int status, const char *ctype,
                  const char *extra, struct evbuffer *body, int truncate)
{
    struct evbuffer *out = c->out;
    size_t len = body ? evbuffer_get_length(body) : 0;
    char framing[48];

    if (truncate)
        c->keep_alive = 0;
    snprintf(framing, sizeof(framing), "Content-Length: %zu\r\n", len);
    write_head(c, status, ctype, extra, framing);
    if (body) {
        if (truncate)
            evbuffer_remove_buffer(body, out, len / 2);
        else
            evbuffer_add_buffer(out, body);
    }
    exchange_done(c);
    conn_after(c);
}

void
mock_http_respond_iov(struct mock_http_conn *c, int status, const char *ctype,
                      const char *extra, const struct mock_http_iov *iov, int n,
                      int truncate)
{
    struct evbuffer *out = c->out;
    size_t len = 0, send;
    char framing[48];
    int i;

    for (i = 0; i < n; i++)
        len += iov[i].len;
    if (truncate)
        c->keep_alive = 0;
    snprintf(framing, sizeof(framing), "Content-Length: %zu\r\n", len);
    write_head(c, status, ctype, extra, framing);
    send = truncate ? len / 2 : len;
    for (i = 0; i < n && send > 0; i++) {
        size_t k = iov[i].len < send ? iov[i].len : send;

        evbuffer_add(out, iov[i].base, k);
        send -= k;
    }
    exchange_done(c);
    conn_after(c);
}

void
mock_http_stream_start(struct mock_http_conn *c, int status, const char *ctype,
                       const char *extra)
{
    c->streaming = 1;
    if (c->http10) {
        /* HTTP/1.0 has no chunked encoding: the close ends the body */
        c->keep_alive = 0;
        c->chunked_raw = 1;
        write_head(c, status, ctype, extra, "Cache-Control: no-cache\r\n");
    } else {
        c->chunked_raw = 0;
        write_head(c, status, ctype, extra,
                   "Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n");
    }
    if (!c->in_process)
        conn_flush(c);
}

void
mock_http_stream_write(struct mock_http_conn *c, const char *data, size_t len)
{
    struct evbuffer *out = c->out;

    if (len == 0 || c->failed)
        return;
    if (c->chunked_raw) {
        evbuffer_add(out, data, len);
    } else {
        evbuffer_add_printf(out, "%zx\r\n", len);
        evbuffer_add(out, data, len);
        evbuffer_add(out, "\r\n", 2);
    }
    if (!c->in_process)
        conn_flush(c);
}

void
mock_http_stream_end(struct mock_http_conn *c)
{
    if (!c->chunked_raw)
        evbuffer_add(c->out, "0\r\n\r\n", 5);
    exchange_done(c);
    conn_after(c);
}

void
mock_http_abort(struct mock_http_conn *c)
{
    c->keep_alive = 0;
    exchange_done(c);
    conn_after(c);
}

void
mock_http_reset(struct mock_http_conn *c)
{
    struct linger lg = {1, 0};
    setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    c->on_drain = NULL;
    c->on_close = NULL;
    c->job = NULL;
    c->state = ST_DEAD;
    conn_after(c);
}

size_t
mock_http_pending(const struct mock_http_conn *c)
{
    /* a dead peer looks like a full socket: writers wait for on_drain,
     * which never comes; the connection is freed instead */
    return c->failed ? (size_t)-1 : evbuffer_get_length(c->out);
}

void
mock_http_set_job(struct mock_http_conn *c, mock_http_job_cb on_drain,
                  mock_http_job_cb on_close, void *job)
{
    c->on_drain = on_drain;
    c->on_close = on_close;
    c->job = job;
    c->drain_wanted = 0;
}

void
mock_http_want_drain(struct mock_http_conn *c)
{
    c->drain_wanted = 1;
    if (!c->in_process)
        conn_flush(c);
}

const char *
mock_http_header(const struct mock_http_req *req, const char *name)
{
    size_t i;

    for (i = 0; i < req->n_headers; i++)
        if (strcmp(req->headers[i].name, name) == 0)
            return req->headers[i].value;
    return NULL;
}

long
mock_http_open_connections(const struct mock_http *h)
{
    return h->n_conns;
}

/* A protocol error: answer status with a small JSON error and close. */
static void
bad_request(struct mock_http_conn *c, int status, const char *msg)
{
    struct evbuffer *body = evbuffer_new();

    c->keep_alive = 0;
    c->state = ST_BUSY;
    if (body)
        evbuffer_add_printf(body, "{\"error\":{\"message\":\"%s\",\"type\":"
                            "\"invalid_request_error\",\"code\":null}}", msg);
    mock_http_respond(c, status, "application/json", NULL, body, 0);
    evbuffer_free(body);
}

/* ------------------------------------------------------------ parsing */

static int
grow(char **buf, size_t *cap, size_t need)
{
    size_t n = *cap ? *cap : 1024;
    char *p;

    if (need <= *cap)
        return 0;
    while (n < need)
        n *= 2;
    p = realloc(*buf, n);
    if (!p)
        return -1;
    *buf = p;
    *cap = n;
    return 0;
}

static int
has_token(const char *value, const char *token)
{
    size_t tl = strlen(token);
    const char *p = value;

    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        if (strncasecmp(p, token, tl) == 0 &&
            (p[tl] == '\0' || p[tl] == ',' || p[tl] == ' ' || p[tl] == '\t'))
            return 1;
        while (*p && *p != ',')
            p++;
    }
    return 0;
}

/*
 * Parse the head in c->head (hl bytes ending with CRLFCRLF, then a NUL).
 * Returns 0, or an HTTP status for the error with *msg set.
 */
static int
parse_head(struct mock_http_conn *c, size_t hl, const char **msg)
{
    struct mock_http_req *r = &c->req;
    char *p = c->head, *eol, *sp;
    const char *cl = NULL, *te = NULL, *conn_hdr = NULL;

    memset(r, 0, sizeof(*r));
    /* the line parsing below relies on: no NUL, every CR and LF paired */
    for (size_t i = 0; i < hl; i++) {
        char ch = c->head[i];

        if (ch == '\0' || (ch == '\r' && c->head[i + 1] != '\n') ||
            (ch == '\n' && (i == 0 || c->head[i - 1] != '\r')))
            return *msg = "malformed request head (NUL, bare CR or bare LF)", 400;
    }
    /* request line */
    eol = strstr(p, "\r\n");
    *eol = '\0';
    r->method = p;
    sp = strchr(p, ' ');
    if (!sp || sp == p)
        return *msg = "malformed request line", 400;
    *sp = '\0';
    for (char *m = p; *m; m++)
        if (!isupper((unsigned char)*m))
            return *msg = "malformed request method", 400;
    r->path = sp + 1;
    sp = strchr(sp + 1, ' ');
    if (!sp || r->path[0] != '/')
        return *msg = "malformed request target", 400;
    *sp = '\0';
    if (strcmp(sp + 1, "HTTP/1.1") == 0)
        c->http10 = 0;
    else if (strcmp(sp + 1, "HTTP/1.0") == 0)
        c->http10 = 1;
    else
        return *msg = "unsupported HTTP version", 505;
    {
        char *q = strchr(r->path, '?');

        if (q) {
            *q = '\0';
            r->query = q + 1;
        }
    }
    p = eol + 2;

    /* header fields */
    while (*p != '\r') {
        char *colon, *v, *ve;

        eol = strstr(p, "\r\n");
        *eol = '\0';
        if (*p == ' ' || *p == '\t')
            return *msg = "obsolete header line folding", 400;
        colon = strchr(p, ':');
        if (!colon || colon == p)
            return *msg = "malformed header line", 400;
        for (char *n = p; n < colon; n++) {
            if (*n <= ' ' || *n >= 127)
                return *msg = "malformed header name", 400;
            *n = (char)tolower((unsigned char)*n);
        }
        *colon = '\0';
        v = colon + 1;
        while (*v == ' ' || *v == '\t')
            v++;
        ve = eol;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        *ve = '\0';
        if (r->n_headers == MOCK_HTTP_MAX_HEADERS)
            return *msg = "too many header fields", 431;
        r->headers[r->n_headers].name = p;
        r->headers[r->n_headers].value = v;
        r->n_headers++;
        if (strcmp(p, "content-length") == 0) {
            if (cl && strcmp(cl, v) != 0)
                return *msg = "conflicting content-length", 400;
            cl = v;
        } else if (strcmp(p, "transfer-encoding") == 0) {
            te = v;
        } else if (strcmp(p, "connection") == 0) {
            conn_hdr = v;
        }
        p = eol + 2;
    }

    if (c->http10)
        c->keep_alive = conn_hdr && has_token(conn_hdr, "keep-alive");
    else
        c->keep_alive = !(conn_hdr && has_token(conn_hdr, "close"));
    c->body_len = 0;
    c->body_want = 0;
    if (te) {
        if (cl)
            return *msg = "both content-length and transfer-encoding", 400;
        if (strcasecmp(te, "chunked") != 0)
            return *msg = "unsupported transfer-encoding", 501;
        c->state = ST_CHUNKED;
        c->chunk_phase = 0;
        return 0;
    }
    if (cl) {
        unsigned long long n = 0;
        const char *d = cl;

        if (!*d)
            return *msg = "malformed content-length", 400;
        for (; *d; d++) {
            if (!isdigit((unsigned char)*d))
                return *msg = "malformed content-length", 400;
            n = n * 10 + (unsigned)(*d - '0');
            if (n > MOCK_HTTP_MAX_BODY)
                return *msg = "request body too large", 413;
        }
        c->body_want = (size_t)n;
    }
    c->state = ST_BODY;
    return 0;
}

/* Returns 1 when a head was read, 0 when more input is needed. */
static int
read_head(struct mock_http_conn *c, struct evbuffer *in)
{
    struct evbuffer_ptr pos;
    size_t hl;
    const char *msg = NULL;
    int status;

    /* RFC 9112 2.2: ignore empty lines before a request line */
    while (evbuffer_get_length(in) >= 2) {
        unsigned char *b = evbuffer_pullup(in, 2);
        if (b[0] != '\r' || b[1] != '\n')
            break;
        evbuffer_drain(in, 2);
    }
    pos = evbuffer_search(in, "\r\n\r\n", 4, NULL);
    if (pos.pos < 0) {
        if (evbuffer_get_length(in) > MOCK_HTTP_MAX_HEAD) {
            bad_request(c, 431, "request head too large");
            return 1;
        }
        return 0;
    }
    hl = (size_t)pos.pos + 4;
    if (hl > MOCK_HTTP_MAX_HEAD) {
        bad_request(c, 431, "request head too large");
        return 1;
    }
    if (grow(&c->head, &c->head_cap, hl + 1) < 0) {
        bad_request(c, 500, "out of memory");
        return 1;
    }
    evbuffer_remove(in, c->head, hl);
    c->head[hl] = '\0';
    status = parse_head(c, hl, &msg);
    if (status) {
        bad_request(c, status, msg);
        return 1;
    }
    if (c->state == ST_CHUNKED || c->body_want > 0) {
        const char *expect = mock_http_header(&c->req, "expect");
        if (expect && strcasecmp(expect, "100-continue") == 0)
            evbuffer_add(c->out,
                         "HTTP/1.1 100 Continue\r\n\r\n", 25);
    }
    return 1;
}

/* Chunked request body.  Returns 1 when complete, 0 for more input, -1 bad. */
static int
read_chunked(struct mock_http_conn *c, struct evbuffer *in, const char **msg)
{
    for (;;) {
        if (c->chunk_phase == 1) {
            if (evbuffer_get_length(in) < c->body_want + 2)
                return 0;
            evbuffer_remove(in, c->body + c->body_len, c->body_want);
            c->body_len += c->body_want;
            evbuffer_drain(in, 2);
            c->chunk_phase = 0;
            continue;
        }
        {
            size_t n = 0;
            char *line = evbuffer_readln(in, &n, EVBUFFER_EOL_CRLF_STRICT);
            unsigned long long size = 0;
            char *d;

            if (!line) {
                if (evbuffer_get_length(in) > 4096)
                    return *msg = "malformed chunk", -1;
                return 0;
            }
            if (c->chunk_phase == 2) {
                free(line);
                if (n == 0)
                    return 1;
                continue;
            }
            for (d = line; isxdigit((unsigned char)*d); d++) {
                size = size * 16 + (unsigned)(isdigit((unsigned char)*d) ? *d - '0'
                                              : (tolower((unsigned char)*d) - 'a' + 10));
                if (size > MOCK_HTTP_MAX_BODY)
                    break;
            }
            if (d == line || (*d && *d != ';' && *d != ' ')) {
                free(line);
                return *msg = "malformed chunk size", -1;
            }
            free(line);
            if (size == 0) {
                c->chunk_phase = 2;
                continue;
            }
            if (c->body_len + size > MOCK_HTTP_MAX_BODY)
                return *msg = "request body too large", -2;
            if (grow(&c->body, &c->body_cap, c->body_len + size + 1) < 0)
                return *msg = "out of memory", -1;
            c->body_want = (size_t)size;
            c->chunk_phase = 1;
        }
    }
}

static void
conn_process(struct mock_http_conn *c)
{
    struct evbuffer *in = c->in;
    struct mock_http *h = c->h;

    if (c->read_off) {
        c->read_off = 0;
        event_add(&c->rev, NULL);
    }
    c->in_process = 1;
    for (;;) {
        if (c->state == ST_HEAD) {
            if (!read_head(c, in))
                break;
            continue;
        }
        if (c->state == ST_BODY || c->state == ST_CHUNKED) {
            if (c->state == ST_BODY) {
                if (evbuffer_get_length(in) < c->body_want)
                    break;
                if (grow(&c->body, &c->body_cap, c->body_want + 1) < 0) {
                    bad_request(c, 500, "out of memory");
                    continue;
                }
                evbuffer_remove(in, c->body, c->body_want);
                c->body_len = c->body_want;
            } else {
                const char *msg = NULL;
                int r = read_chunked(c, in, &msg);

                if (r == 0)
                    break;
                if (r < 0) {
                    bad_request(c, r == -2 ? 413 : 400, msg);
                    continue;
                }
                if (grow(&c->body, &c->body_cap, c->body_len + 1) < 0) {
                    bad_request(c, 500, "out of memory");
                    continue;
                }
            }
            c->body[c->body_len] = '\0';
            c->req.body = c->body;
            c->req.body_len = c->body_len;
            c->state = ST_BUSY;
            h->handler(c, &c->req, h->arg);
            continue;
        }
        if (c->state == ST_CLOSING)
            evbuffer_drain(in, evbuffer_get_length(in));
        break;
    }
    c->in_process = 0;
    conn_flush(c);
    conn_release(c);
}

/* ------------------------------------------------------------ callbacks */

/* Read what the socket has: >0 bytes, 0 at EOF, -1 on error or EAGAIN. */
static ev_ssize_t
conn_read(struct mock_http_conn *c)
{
    struct evbuffer_iovec v;
    ev_ssize_t n;

    if (evbuffer_reserve_space(c->in, 16384, &v, 1) < 1)
        return -1;
    n = read(c->fd, v.iov_base, v.iov_len);
    if (n > 0) {
        v.iov_len = (size_t)n;
        evbuffer_commit_space(c->in, &v, 1);
    }
    return n;
}

static void
read_cb(evutil_socket_t fd, short what, void *arg)
{
    struct mock_http_conn *c = arg;
    ev_ssize_t n;

    (void)fd;
    if ((what & EV_TIMEOUT) || c->failed) {
        conn_free(c); /* end of LINGER, or a write failed */
        return;
    }
    n = conn_read(c);
    if (n == 0 || (n < 0 && !retriable(errno))) {
        conn_free(c);
        return;
    }
    if (n < 0)
        return;
    if (c->state == ST_LINGER) {
        evbuffer_drain(c->in, evbuffer_get_length(c->in));
        return;
    }
    if (c->state == ST_BUSY) {
        /* pipelined input waits until the current exchange is done */
        if (evbuffer_get_length(c->in) > 2 * MOCK_HTTP_MAX_BODY) {
            event_del(&c->rev);
            c->read_off = 1;
        }
        return;
    }
    conn_process(c);
}

static void
write_cb(evutil_socket_t fd, short what, void *arg)
{
    struct mock_http_conn *c = arg;

    (void)what;
    if (evbuffer_get_length(c->out) > 0) {
        if (evbuffer_write(c->out, fd) < 0 &&
            !retriable(errno)) {
            conn_free(c);
            return;
        }
        if (evbuffer_get_length(c->out) > 0)
            return;
    }
    event_del(&c->wev);
    if (c->state == ST_CLOSING) {
        conn_linger(c);
        return;
    }
    c->drain_wanted = 0;
    if (c->on_drain)
        c->on_drain(c, c->job); /* may finish the exchange and free c */
}

static void
accept_cb(struct evconnlistener *lis, evutil_socket_t fd, struct sockaddr *sa,
          int salen, void *arg)
{
    struct mock_http *h = arg;
    struct mock_http_conn *c;
    int one = 1;

    (void)lis;
    (void)sa;
    (void)salen;
    if (sa->sa_family == AF_INET || sa->sa_family == AF_INET6)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c = calloc(1, sizeof(*c));
    if (!c) {
        evutil_closesocket(fd);
        return;
    }
    c->fd = fd;
    c->in = evbuffer_new();
    c->out = evbuffer_new();
    if (!c->in || !c->out) {
        if (c->in)
            evbuffer_free(c->in);
        if (c->out)
            evbuffer_free(c->out);
        evutil_closesocket(fd);
        free(c);
        return;
    }
    event_assign(&c->rev, h->base, fd, EV_READ | EV_PERSIST, read_cb, c);
    event_assign(&c->wev, h->base, fd, EV_WRITE | EV_PERSIST, write_cb, c);
    c->h = h;
    c->state = ST_HEAD;
    c->keep_alive = 1;
    c->next = h->conns;
    if (h->conns)
        h->conns->prev = c;
    h->conns = c;
    h->n_conns++;
    event_add(&c->rev, NULL);
}

static void
accept_retry_cb(evutil_socket_t fd, short what, void *arg)
{
    struct mock_http *h = arg;

    (void)fd;
    (void)what;
    evconnlistener_enable(h->lis);
}

static void
accept_error_cb(struct evconnlistener *lis, void *arg)
{
    struct mock_http *h = arg;
    struct timeval tv = {0, 100000};
    int e = EVUTIL_SOCKET_ERROR();

    /* out of descriptors: pause accepting instead of spinning */
    fprintf(stderr, "mockllm: cannot accept a connection: %s\n",
            evutil_socket_error_to_string(e));
    evconnlistener_disable(lis);
    evtimer_add(h->accept_retry, &tv);
}

/* ------------------------------------------------------------ server */

static int
is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
        return (ntohl(s4->sin_addr.s_addr) >> 24) == 127;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
        return IN6_IS_ADDR_LOOPBACK(&s6->sin6_addr);
    }
    return 0;
}

struct mock_http *
mock_http_new(struct event_base *base, const char *addr, int any_address,
              mock_http_handler handler, void *arg, char *err, size_t errlen)
{
    struct mock_http *h = NULL;
    struct addrinfo hints, *ai = NULL;
    char host[256];
    const char *colon, *port, *hs = addr;
    size_t hl;
    int rc;

    colon = strrchr(addr, ':');
    if (!colon || colon == addr || !colon[1]) {
        snprintf(err, errlen, "cannot listen on '%s': expected HOST:PORT", addr);
        return NULL;
    }
    port = colon + 1;
    hl = (size_t)(colon - addr);
    if (addr[0] == '[' && colon[-1] == ']') {
        hs = addr + 1;
        hl -= 2;
    }
    if (hl == 0 || hl >= sizeof(host)) {
        snprintf(err, errlen, "cannot listen on '%s': bad host", addr);
        return NULL;
    }
    memcpy(host, hs, hl);
    host[hl] = '\0';
    for (const char *d = port; *d; d++)
        if (!isdigit((unsigned char)*d) || d - port > 5) {
            snprintf(err, errlen, "cannot listen on '%s': bad port", addr);
            return NULL;
        }
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    rc = getaddrinfo(host, port, &hints, &ai);
    if (rc != 0) {
        snprintf(err, errlen, "cannot listen on '%s': %s", addr, gai_strerror(rc));
        return NULL;
    }
    if (!any_address && !is_loopback(ai->ai_addr)) {
        snprintf(err, errlen, "cannot listen on '%s': not a loopback address "
                 "(pass --any-address to serve other hosts)", addr);
        goto fail;
    }
    h = calloc(1, sizeof(*h));
    if (!h) {
        snprintf(err, errlen, "cannot listen on '%s': out of memory", addr);
        goto fail;
    }
    h->base = base;
    h->handler = handler;
    h->arg = arg;
    h->accept_retry = evtimer_new(base, accept_retry_cb, h);
    h->lis = evconnlistener_new_bind(base, accept_cb, h,
                                     LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE |
                                     LEV_OPT_CLOSE_ON_EXEC, 1024,
                                     ai->ai_addr, (int)ai->ai_addrlen);
    if (!h->lis || !h->accept_retry) {
        snprintf(err, errlen, "cannot listen on '%s': %s", addr, strerror(errno));
        goto fail;
    }
    evconnlistener_set_error_cb(h->lis, accept_error_cb);
    freeaddrinfo(ai);
    return h;
fail:
    if (h) {
        if (h->accept_retry)
            event_free(h->accept_retry);
        free(h);
    }
    freeaddrinfo(ai);
    return NULL;
}

void
mock_http_free(struct mock_http *h)
{
    if (!h)
        return;
    while (h->conns)
        conn_free(h->conns);
    evconnlistener_free(h->lis);
    event_free(h->accept_retry);
    free(h);
}
