/*
 * upconn.h - lean HTTP/1.1 client connections to plain-http backends.
 *
 * Local model servers (vLLM, llama.cpp, Ollama, the mock) speak plain
 * HTTP/1.1 on a numeric address. For them the gateway keeps its own
 * keep-alive pools and parses answers itself: libcurl costs more per
 * request than the whole budget of the request path. TLS and named hosts
 * go through libcurl (curlev.c). Knows nothing of requests or config.
 */
#ifndef GW_UPCONN_H
#define GW_UPCONN_H

#include <stddef.h>
#include <sys/socket.h>

struct event_base;
struct evbuffer;
struct gw_uppool;
struct gw_upconn;

struct gw_upconn_cbs {
    /* End of the answer's head. content_type / retry_after are "" when
     * absent; valid during the call only. */
    void (*on_head)(void *arg, int status, const char *content_type,
                    const char *retry_after);
    /* Body bytes (de-chunked). Return 1 to pause until gw_upconn_resume. */
    int (*on_body)(void *arg, const char *data, size_t len);
    /* The exchange ended: err 0 when the answer was complete, else a
     * message. After this the connection is no longer the caller's. */
    void (*on_done)(void *arg, const char *err);
    /* 1 before the callbacks of one read (a read may carry several of a
     * stream's events), 0 after them: the caller may hold the output they
     * queue and send it in one go. No arg: the exchange may have ended in
     * between. NULL: not told. */
    void (*on_batch)(int begin);
};

/* A pool of keep-alive connections to one address. */
struct gw_uppool *gw_uppool_new(struct event_base *base,
                                const struct sockaddr *addr, socklen_t len,
                                int max_idle, long idle_timeout_ms);
void gw_uppool_free(struct gw_uppool *pool); /* closes idle connections */

/* Sends request (a whole HTTP/1.1 request, head and body; drained) on an
 * idle connection of the pool, or a new one. Callbacks come later, from
 * the loop, never from inside this call. Returns the connection (the
 * handle for resume/abort) or NULL on failure. */
struct gw_upconn *gw_upconn_send(struct gw_uppool *pool,
                                 struct evbuffer *request,
                                 long connect_timeout_ms,
                                 const struct gw_upconn_cbs *cbs, void *arg);

void gw_upconn_resume(struct gw_upconn *conn);

/* Drops the exchange and closes the connection; no callback follows. */
void gw_upconn_abort(struct gw_upconn *conn);

#endif
