/*
 * http.h - a lean HTTP/1.1 server on libevent bufferevents.
 *
 * Why not evhttp: evhttp answers its own errors (413, 400, timeouts) with
 * HTML pages and closes without telling the handler, gives no hook for a
 * header deadline separate from the idle one, and costs more per request
 * than the whole budget of this gateway. This front does only what a
 * reverse proxy needs: request head and body (Content-Length or chunked)
 * within limits and deadlines, fixed-length or chunked answers, pipelining,
 * keep-alive, backpressure and disconnect notification, over plain TCP or
 * TLS (OpenSSL on the same events). It knows nothing of JSON, routes or
 * config.
 *
 * Lifecycle of a request: the server reads it whole, then calls the
 * handler. The handler answers exactly once, with gw_http_reply(), or with
 * gw_http_reply_start() + gw_http_reply_chunk()* + gw_http_reply_end(),
 * now or later from other events. If the client goes away first, the
 * on_close callback fires once; the handler must then drop every pointer
 * to the request, which is freed when the callback returns. After the
 * answer is complete the request is no longer the handler's.
 */
#ifndef GW_HTTP_H
#define GW_HTTP_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct evbuffer;
struct gw_http_server;
struct gw_http_conn;
struct gw_http_req;
struct gw_tls;

struct gw_http_limits {
    size_t max_header_bytes; /* whole request head; over it: 431 */
    size_t max_body_bytes;   /* over it: 413 */
    long header_timeout_ms;  /* first byte to end of head */
    long body_timeout_ms;    /* longest pause while reading a body */
    long idle_timeout_ms;    /* keep-alive wait, and a stalled writer */
};

struct gw_http_header {
    const char *name; /* borrowed from the request head, NUL-terminated */
    const char *value;
    size_t value_len;
};

typedef void (*gw_http_handler)(struct gw_http_req *req, void *arg);
/* Answers an error found while reading a request (bad head, 413, 431,
 * timeouts). The connection closes after the answer. req->path and
 * req->method may be NULL when the head could not be parsed. */
typedef void (*gw_http_error_handler)(struct gw_http_req *req, int status,
                                      const char *code, const char *message,
                                      void *arg);
typedef void (*gw_http_req_cb)(struct gw_http_req *req, void *arg);

struct gw_http_req {
    struct gw_http_conn *conn; /* borrowed: the connection it came on */
    const char *method;        /* borrowed from head: "GET", "POST", ... */
    const char *target;        /* borrowed from head: path and query */
    const char *path;          /* target without the query (in head) */
    struct gw_http_header *headers; /* owned array, n_headers entries */
    size_t n_headers;
    struct evbuffer *body; /* owned: the request body, whole */
    int64_t start_us;      /* gw_now_us() when the head began */
    int http_minor;
    int keepalive;
    const char *cache; /* static: the response cache's verdict, "hit",
                          "miss" or "bypass"; NULL when not asked (cache.c) */

    /* answer state, private to http.c */
    char *head;                    /* owned: the head, split in place,
                                      then the path; head_cap bytes */
    size_t head_cap, headers_cap;  /* bytes of head, slots of headers */
    char *rh;                      /* owned: "Name: value\r\n" lines the
                                      answer adds; rh_len of rh_cap bytes */
    size_t rh_len, rh_cap;
    int status;
    int streaming; /* started with gw_http_reply_start */
    int done;      /* the answer is complete */
    size_t bytes_out;
    gw_http_req_cb on_close;
    gw_http_req_cb on_writable;
    void *cb_arg;
    int want_writable;
};

/*
 * Holding the answers' writes: between gw_http_cork and gw_http_uncork,
 * output queued on any connection of this thread is not written; uncork
 * writes each such connection's output with one call. A caller that may
 * queue several pieces for the same client in one go (an upstream read
 * that carries several stream events) brackets it so that they leave in
 * one writev, not one each. Nests; the connections stay valid (one closed
 * meanwhile is dropped from the list).
 */
void gw_http_cork(void);
void gw_http_uncork(void);

/* Returns NULL on failure. handler is called for every complete request. */
struct gw_http_server *gw_http_server_new(struct event_base *base,
                                          gw_http_handler handler,
                                          void *arg);

/* Without one, errors are answered as {"error": ...} bodies directly. */
void gw_http_server_set_error_handler(struct gw_http_server *srv,
                                      gw_http_error_handler handler);

/* Limits apply to connections accepted from then on. */
void gw_http_server_set_limits(struct gw_http_server *srv,
                               const struct gw_http_limits *limits);

/* Worker threads: each listens on its own socket bound to the same
 * address with SO_REUSEPORT, and the kernel spreads new connections over
 * them. Set before gw_http_server_listen. */
void gw_http_server_set_reuseport(struct gw_http_server *srv, int on);

/* Connections accepted from now on speak TLS with tls (a reference is
 * taken, the previous one dropped); NULL: plain HTTP. Connections already
 * open keep what they started with, so a reload with a new certificate
 * serves it to new connections while old ones (streams in flight) finish
 * on the old. */
void gw_http_server_set_tls(struct gw_http_server *srv, struct gw_tls *tls);

/* The TLS of new connections (borrowed), or NULL when plain. */
struct gw_tls *gw_http_server_tls(const struct gw_http_server *srv);

/* Binds and listens. host may be an IPv4 or IPv6 literal or a name.
 * Returns 0, or -1 with a message in err. */
int gw_http_server_listen(struct gw_http_server *srv, const char *host,
                          int port, char *err, size_t errlen);

/* Stops accepting, closes idle connections and makes every answer from
 * now on close its connection. */
void gw_http_server_shutdown(struct gw_http_server *srv);

/* Connections that are reading a request or answering one. */
size_t gw_http_server_busy(const struct gw_http_server *srv);

/* Closes every connection (their on_close callbacks fire) and frees. */
void gw_http_server_free(struct gw_http_server *srv);

/* The value of a request header (case-insensitive name), or NULL. */
const char *gw_http_req_header(const struct gw_http_req *req,
                               const char *name);

/* Adds a response header. Values with a control byte other than HTAB
 * (CR, LF, ...) are refused (-1), so nothing copied from a request or an
 * upstream can split the answer. */
int gw_http_add_header(struct gw_http_req *req, const char *name,
                       const char *value);
/* Adds a whole header line, "Name: value\r\n" (len bytes), made by the
 * caller from text that may stand in a header (checked once, not per
 * request). -1 when it does not end in CRLF or would not fit. */
int gw_http_add_header_line(struct gw_http_req *req, const char *line,
                            size_t len);

/* 1 when a response header of that name was added already. */
int gw_http_resp_has_header(const struct gw_http_req *req, const char *name);

/* Copies the value of the first response header of that name into out
 * (cap bytes with the NUL). Returns 0, or -1 when absent or too long. */
int gw_http_resp_header_get(const struct gw_http_req *req, const char *name,
                            char *out, size_t cap);

/* A whole answer with Content-Length. content_type may be NULL; one
 * holding a control byte is left out. */
void gw_http_reply(struct gw_http_req *req, int status,
                   const char *content_type, const void *body, size_t len);

/* The same, taking the bytes from an evbuffer (drained, not freed). */
void gw_http_reply_buffer(struct gw_http_req *req, int status,
                          const char *content_type, struct evbuffer *body);

/* A streamed answer: chunked on HTTP/1.1, close-delimited on HTTP/1.0. */
void gw_http_reply_start(struct gw_http_req *req, int status,
                         const char *content_type);
void gw_http_reply_chunk(struct gw_http_req *req, const void *data,
                         size_t len);
void gw_http_reply_end(struct gw_http_req *req);

/* Bytes written by the handler but not yet taken by the client's socket:
 * the measure for backpressure. */
size_t gw_http_req_pending(const struct gw_http_req *req);

/* on_close: the client went away before the answer was complete.
 * on_writable: after gw_http_req_wait_writable(), the client has taken
 * enough of the pending bytes to go on. */
void gw_http_req_set_callbacks(struct gw_http_req *req,
                               gw_http_req_cb on_close,
                               gw_http_req_cb on_writable, void *arg);
void gw_http_req_wait_writable(struct gw_http_req *req);

#endif
