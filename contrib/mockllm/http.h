/*
 * http.h: the small HTTP/1.1 server under mockllm.
 *
 * One exchange at a time per connection (pipelined requests wait in the
 * input buffer).  The handler gets each complete request and either answers
 * at once (mock_http_respond) or keeps the exchange open: it may stream a
 * chunked body, answer later from a timer, or never answer (the connection
 * then lives until the client closes it).  Knows nothing of OpenAI.
 */
#ifndef MOCK_HTTP_H
#define MOCK_HTTP_H

#include <stddef.h>

struct event_base;
struct evbuffer;
struct mock_http;
struct mock_http_conn;

#define MOCK_HTTP_MAX_HEADERS 64
#define MOCK_HTTP_MAX_HEAD (64 * 1024)
#define MOCK_HTTP_MAX_BODY (16 * 1024 * 1024)

struct mock_http_header {
    const char *name;  /* borrowed from the conn: lower-case, NUL-ended */
    const char *value; /* borrowed from the conn: trimmed, NUL-ended */
};

/* A parsed request; valid until the exchange is finished. */
struct mock_http_req {
    const char *method; /* borrowed from the conn */
    const char *path;   /* borrowed from the conn: target up to '?' */
    const char *query;  /* borrowed from the conn: after '?', or NULL */
    size_t n_headers;
    struct mock_http_header headers[MOCK_HTTP_MAX_HEADERS];
    const char *body;   /* borrowed from the conn: NUL-ended */
    size_t body_len;
};

/*
 * Called with each complete request.  The handler must, now or later,
 * call exactly one of mock_http_respond(), mock_http_stream_end(),
 * mock_http_abort() or mock_http_reset(), or leave the exchange open for
 * ever.  It must not free the connection itself.
 */
typedef void (*mock_http_handler)(struct mock_http_conn *conn,
                                  const struct mock_http_req *req, void *arg);

/* Callback of an exchange kept open (see mock_http_set_job). */
typedef void (*mock_http_job_cb)(struct mock_http_conn *conn, void *job);

/*
 * Listen on addr ("HOST:PORT" or "[V6]:PORT"); unless any_address, only a
 * loopback address is accepted.  Returns NULL with a message in err on
 * failure (cannot listen on 'x': reason).
 */
struct mock_http *mock_http_new(struct event_base *base, const char *addr,
                                int any_address, mock_http_handler handler,
                                void *arg, char *err, size_t errlen);

/* Close the listener and every connection (their jobs' on_close run). */
void mock_http_free(struct mock_http *h);

long mock_http_open_connections(const struct mock_http *h);

/* The value of header name (lower-case) in req, or NULL. */
const char *mock_http_header(const struct mock_http_req *req, const char *name);

/*
 * Answer the current exchange: status line, Content-Type, Content-Length,
 * extra_headers (each "Name: value\r\n", may be NULL) and body (whose
 * content is moved out; NULL for none).  truncate: send only half the body
 * and then close the connection.
 */
void mock_http_respond(struct mock_http_conn *conn, int status,
                       const char *content_type, const char *extra_headers,
                       struct evbuffer *body, int truncate);

/* A piece of a body for mock_http_respond_iov (borrowed). */
struct mock_http_iov {
    const void *base;
    size_t len;
};

/* Like mock_http_respond, the body given as n pieces copied in order. */
void mock_http_respond_iov(struct mock_http_conn *conn, int status,
                           const char *content_type, const char *extra_headers,
                           const struct mock_http_iov *iov, int n, int truncate);

/* Start a chunked answer; then mock_http_stream_write() pieces and end. */
void mock_http_stream_start(struct mock_http_conn *conn, int status,
                            const char *content_type, const char *extra_headers);
void mock_http_stream_write(struct mock_http_conn *conn, const char *data, size_t len);
void mock_http_stream_end(struct mock_http_conn *conn);

/* Bytes waiting to be sent on conn. */
size_t mock_http_pending(const struct mock_http_conn *conn);

/*
 * Keep the exchange open with a job: on_drain runs when the output has been
 * sent (to write more), on_close when the connection goes away before the
 * exchange finished (free the job there; conn must not be used any more).
 * Both are forgotten when the exchange finishes.
 */
void mock_http_set_job(struct mock_http_conn *conn, mock_http_job_cb on_drain,
                       mock_http_job_cb on_close, void *job);

/* The job's on_drain runs once the output is written (now, if it already
 * is): a job that stopped at a high-water mark calls this; one sleeping on
 * its own timer does not, and costs no write-event churn. */
void mock_http_want_drain(struct mock_http_conn *c);

/* Flush what was written, then close without finishing the answer. */
void mock_http_abort(struct mock_http_conn *conn);

/* Close at once with a TCP RST (SO_LINGER 0), dropping unsent output. */
void mock_http_reset(struct mock_http_conn *conn);

#endif
