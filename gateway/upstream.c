/*
 * upstream.c - one upstream call: a client request relayed to a backend
 * through libcurl, its answer relayed back.
 *
 *                 headers: 200 text/event-stream
 *    WAITING ----------------------------------------> STREAMING
 *       |  \                                              |
 *       |   \ headers: anything else                      | done
 *       |    +--------------------> BUFFERING             v
 *       |                              | done          FINISHED
 *       | error, first-byte timeout    v                  ^
 *       +----------------------------> FINISHED <---------+
 *
 *    any state --client gone--> CANCELLED
 *
 * Transitions, each made in call_state() only:
 *   WAITING -> STREAMING | BUFFERING   on_header (end of upstream headers)
 *   * -> FINISHED                      finish
 *   * -> CANCELLED                     on_client_close
 *
 * Invariants:
 *  1. Nothing is written to the client before the upstream's headers are
 *     complete; until then a failure is a clean 502/504 (and, later, a
 *     retry can go elsewhere).
 *  2. A stream is relayed in whole SSE events. When it ends without
 *     `data: [DONE]` the client gets an `event: error`, never a clean end.
 *  3. When the client holds more than HIGH_WATER unsent bytes the transfer
 *     is paused (CURL_WRITEFUNC_PAUSE) until the client drains below the
 *     http low mark: memory per stream stays bounded by a slow reader.
 *  4. The call is freed only outside curl callbacks: from the curlev done
 *     callback, from a timer, or from the http close callback.
 */
#include "gateway/gateway.h"
#include "gateway/clock.h"
#include "gateway/curlev.h"
#include "gateway/error.h"
#include "gateway/http.h"
#include "gateway/log.h"
#include "gateway/sse.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define HIGH_WATER (256 * 1024)
#define MAX_BUFFERED (64u << 20) /* largest non-streamed answer */
#define MAX_EVENT (4u << 20)     /* largest single SSE event */

enum call_state { WAITING, STREAMING, BUFFERING, FINISHED, CANCELLED };
static const char *const call_state_names[] = {
    "waiting", "streaming", "buffering", "finished", "cancelled"};

struct gw_call {
    struct gw_gateway *gw;      /* borrowed */
    struct gw_http_req *req;    /* borrowed until FINISHED or CANCELLED */
    struct gw_config *config;   /* owned reference */
    struct gw_backend *backend; /* borrowed from config */
    CURL *easy;                 /* owned: from the curlev pool */
    struct curl_slist *headers; /* owned */
    struct event *fb_timer;     /* owned: first-byte deadline */
    struct evbuffer *body;      /* owned: a buffered (non-SSE) answer */
    struct gw_sse sse;
    enum call_state state;
    int client_stream;
    int paused;
    int too_big;
    long status;
    char content_type[128];
    char retry_after[32];
    char request_id[80];
    char model[264];
    char url[2048];
    int64_t t_start;
    long ttfb_us;
    struct gw_usage usage;
};

static void call_state(struct gw_call *c, enum call_state to)
{
    gw_log_debug("request %s: upstream %s -> %s", c->request_id,
                 call_state_names[c->state], call_state_names[to]);
    c->state = to;
}


static void call_free(struct gw_call *c)
{
    if (c->easy) {
        curl_easy_setopt(c->easy, CURLOPT_HTTPHEADER, NULL);
        gw_curlev_put(c->gw->curl, c->easy);
    }
    curl_slist_free_all(c->headers);
    if (c->fb_timer)
        event_free(c->fb_timer);
    if (c->body)
        evbuffer_free(c->body);
    gw_sse_release(&c->sse);
    c->backend->inflight--;
    c->gw->calls--;
    gw_config_unref(c->config);
    free(c);
}

static void fill_log(struct gw_call *c, struct gw_reqlog *rl, int status,
                     const char *error)
{
    memset(rl, 0, sizeof(*rl));
    rl->request_id = c->request_id;
    rl->model = c->model;
    rl->backend = c->backend->name;
    rl->status = status;
    rl->stream = c->client_stream;
    rl->ttfb_us = c->ttfb_us;
    rl->usage = c->usage;
    rl->error = error;
}

/* Ends the call with a gateway error before anything reached the client. */
static void finish_error(struct gw_call *c, int status, const char *code,
                         const char *message)
{
    struct gw_reqlog rl;

    call_state(c, FINISHED);
    fill_log(c, &rl, status, code);
    gw_proxy_error(c->gw, c->req, &rl, status, code, message);
    call_free(c);
}

/* Ends a stream that broke: an SSE error event, then the end. */
static void finish_stream_error(struct gw_call *c, const char *message)
{
    struct evbuffer *ev = evbuffer_new();
    struct gw_reqlog rl;

    if (ev) {
        evbuffer_add(ev, "event: error\ndata: ", 19);
        gw_error_json(ev, 502, "stream_interrupted", message);
        evbuffer_add(ev, "\n\n", 2);
        gw_http_reply_chunk(c->req, evbuffer_pullup(ev, -1),
                            evbuffer_get_length(ev));
        evbuffer_free(ev);
    }
    gw_http_reply_end(c->req);
    call_state(c, FINISHED);
    fill_log(c, &rl, (int)c->status, "stream_interrupted");
    gw_proxy_log(c->gw, c->req, &rl);
    call_free(c);
}

static void on_client_close(struct gw_http_req *req, void *arg)
{
    struct gw_call *c = arg;
    struct gw_reqlog rl;

    gw_curlev_remove(c->gw->curl, c->easy);
    call_state(c, CANCELLED);
    fill_log(c, &rl, 499, "client_closed");
    gw_proxy_log(c->gw, req, &rl);
    c->req = NULL;
    call_free(c);
}

static void on_client_writable(struct gw_http_req *req, void *arg)
{
    struct gw_call *c = arg;

    (void)req;
    if (c->paused) {
        c->paused = 0;
        curl_easy_pause(c->easy, CURLPAUSE_CONT);
    }
}

static void first_byte_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct gw_call *c = arg;
    char msg[256];

    (void)fd, (void)what;
    gw_curlev_remove(c->gw->curl, c->easy);
    snprintf(msg, sizeof(msg),
             "backend '%s' sent no answer within %ld ms (first_byte_timeout_ms)",
             c->backend->name, c->backend->first_byte_timeout_ms);
    finish_error(c, 504, "backend_timeout", msg);
}

static int relay_event(void *arg, const struct gw_sse_event *ev)
{
    struct gw_call *c = arg;

    if (ev->data_len > 8 && memmem(ev->data, ev->data_len, "\"usage\"", 7))
        gw_usage_find(ev->data, ev->data_len, &c->usage);
    gw_http_reply_chunk(c->req, ev->raw, ev->raw_len);
    return 0;
}

/* Called at the end of the upstream headers: decides how to relay. */
static void on_headers_done(struct gw_call *c)
{
    curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &c->status);
    if (c->fb_timer)
        evtimer_del(c->fb_timer);
    c->ttfb_us = (long)(gw_now_us() - c->t_start);
    if (c->status == 200 &&
        strncasecmp(c->content_type, "text/event-stream", 17) == 0) {
        call_state(c, STREAMING);
        gw_http_add_header(c->req, "Cache-Control", "no-cache");
        gw_http_reply_start(c->req, 200, "text/event-stream");
    } else {
        call_state(c, BUFFERING);
    }
}

static size_t header_cb(char *buf, size_t size, size_t n, void *arg)
{
    struct gw_call *c = arg;
    size_t len = size * n, vlen;
    const char *v;

    if (len >= 5 && strncmp(buf, "HTTP/", 5) == 0) {
        /* a new status line (after a 100 Continue): forget earlier ones */
        c->content_type[0] = c->retry_after[0] = '\0';
        return len;
    }
    if (len <= 2 && (buf[0] == '\r' || buf[0] == '\n')) {
        long code = 0;
        curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &code);
        if (code >= 200 && c->state == WAITING)
            on_headers_done(c);
        return len;
    }
    v = memchr(buf, ':', len);
    if (v == NULL)
        return len;
    size_t nlen = (size_t)(v - buf);
    v++;
    while (v < buf + len && (*v == ' ' || *v == '\t'))
        v++;
    vlen = (size_t)(buf + len - v);
    while (vlen > 0 && (v[vlen - 1] == '\r' || v[vlen - 1] == '\n' ||
                        v[vlen - 1] == ' '))
        vlen--;
    if (nlen == 12 && strncasecmp(buf, "content-type", 12) == 0 &&
        vlen < sizeof(c->content_type)) {
        memcpy(c->content_type, v, vlen);
        c->content_type[vlen] = '\0';
    } else if (nlen == 11 && strncasecmp(buf, "retry-after", 11) == 0 &&
               vlen < sizeof(c->retry_after)) {
        memcpy(c->retry_after, v, vlen);
        c->retry_after[vlen] = '\0';
    }
    return len;
}

static size_t write_cb(char *buf, size_t size, size_t n, void *arg)
{
    struct gw_call *c = arg;
    size_t len = size * n;

    if (c->state == WAITING)
        on_headers_done(c); /* headers with no blank line seen: HTTP/0.9 */
    if (c->state == BUFFERING) {
        if (evbuffer_get_length(c->body) + len > MAX_BUFFERED) {
            c->too_big = 1;
            return 0; /* aborts the transfer */
        }
        evbuffer_add(c->body, buf, len);
        return len;
    }
    if (c->state != STREAMING)
        return 0;
    if (gw_http_req_pending(c->req) > HIGH_WATER) {
        c->paused = 1;
        gw_http_req_wait_writable(c->req);
        return CURL_WRITEFUNC_PAUSE;
    }
    if (gw_sse_feed(&c->sse, buf, len, relay_event, c) < 0)
        return 0;
    return len;
}

void gw_upstream_done(CURL *easy, CURLcode result, void *priv)
{
    struct gw_call *c = priv;
    struct gw_reqlog rl;
    char msg[512];

    (void)easy;
    if (c->state == STREAMING) {
        if (result == CURLE_OK && c->sse.done && gw_sse_pending(&c->sse) == 0) {
            gw_http_reply_end(c->req);
            call_state(c, FINISHED);
            fill_log(c, &rl, 200, NULL);
            gw_proxy_log(c->gw, c->req, &rl);
            call_free(c);
            return;
        }
        snprintf(msg, sizeof(msg), "backend '%s' stream ended early: %s",
                 c->backend->name,
                 result == CURLE_OK ? "closed before data: [DONE]"
                                    : curl_easy_strerror(result));
        gw_log_warn("request %s: %s", c->request_id, msg);
        finish_stream_error(c, msg);
        return;
    }
    if (c->state == BUFFERING && result == CURLE_OK) {
        struct evbuffer *body = c->body;
        size_t len = evbuffer_get_length(body);
        if (c->status >= 200 && c->status < 300 && len > 0)
            gw_usage_find((const char *)evbuffer_pullup(body, -1), len,
                          &c->usage);
        if (c->retry_after[0])
            gw_http_add_header(c->req, "Retry-After", c->retry_after);
        call_state(c, FINISHED);
        gw_http_reply_buffer(c->req, (int)c->status,
                             c->content_type[0] ? c->content_type
                                                : "application/json",
                             body);
        fill_log(c, &rl, (int)c->status, NULL);
        gw_proxy_log(c->gw, c->req, &rl);
        call_free(c);
        return;
    }
    if (c->too_big) {
        snprintf(msg, sizeof(msg), "backend '%s' answer is larger than %u "
                 "bytes", c->backend->name, MAX_BUFFERED);
        finish_error(c, 502, "backend_error", msg);
        return;
    }
    if (result == CURLE_OPERATION_TIMEDOUT) {
        snprintf(msg, sizeof(msg), "backend '%s' timed out: %s",
                 c->backend->name, curl_easy_strerror(result));
        finish_error(c, 504, "backend_timeout", msg);
        return;
    }
    if (c->state == WAITING &&
        (result == CURLE_COULDNT_CONNECT || result == CURLE_COULDNT_RESOLVE_HOST)) {
        snprintf(msg, sizeof(msg), "cannot connect to backend '%s': %s",
                 c->backend->name, curl_easy_strerror(result));
        gw_log_warn("request %s: %s", c->request_id, msg);
        finish_error(c, 502, "backend_unreachable", msg);
        return;
    }
    snprintf(msg, sizeof(msg), "backend '%s' failed: %s", c->backend->name,
             curl_easy_strerror(result));
    gw_log_warn("request %s: %s", c->request_id, msg);
    finish_error(c, 502, "backend_error", msg);
}

/* Headers a proxy must not pass on, or that the gateway sets itself. */
static int skip_header(const char *name)
{
    static const char *const skip[] = {
        "host", "content-length", "transfer-encoding", "connection",
        "keep-alive", "te", "trailer", "upgrade", "proxy-authorization",
        "proxy-connection", "authorization", "cookie", "x-api-key",
        "api-key", "expect", "accept-encoding", "x-request-id", NULL};
    for (const char *const *s = skip; *s; s++)
        if (strcasecmp(name, *s) == 0)
            return 1;
    return 0;
}

static struct curl_slist *build_headers(struct gw_call *c,
                                        struct gw_http_req *req)
{
    struct curl_slist *h = NULL, *t;
    char line[8192];
    size_t i;

    /* the client's Content-Type passes with the other headers */
    if (gw_http_req_header(req, "content-type") == NULL)
        h = curl_slist_append(h, "Content-Type: application/json");
    for (i = 0; i < req->n_headers; i++) {
        const struct gw_http_header *hd = &req->headers[i];
        if (skip_header(hd->name))
            continue;
        if (snprintf(line, sizeof(line), "%s: %s", hd->name, hd->value) >=
            (int)sizeof(line))
            continue;
        if ((t = curl_slist_append(h, line)) == NULL)
            goto fail;
        h = t;
    }
    snprintf(line, sizeof(line), "X-Request-Id: %s", c->request_id);
    if ((t = curl_slist_append(h, line)) == NULL)
        goto fail;
    h = t;
    if ((t = curl_slist_append(h, "Expect:")) == NULL)
        goto fail;
    h = t;
    if (c->backend->auth_header) {
        if ((t = curl_slist_append(h, c->backend->auth_header)) == NULL)
            goto fail;
        h = t;
    }
    return h;
fail:
    curl_slist_free_all(h);
    return NULL;
}

void gw_upstream_start(struct gw_gateway *gw, struct gw_http_req *req,
                       struct gw_config *config, struct gw_backend *backend,
                       const char *model, int stream, const char *path_suffix,
                       const char *request_id)
{
    struct gw_call *c = calloc(1, sizeof(*c));
    struct gw_reqlog rl;
    size_t body_len;
    CURL *e;

    memset(&rl, 0, sizeof(rl));
    rl.request_id = request_id;
    rl.model = model;
    rl.backend = backend->name;
    rl.stream = stream;
    rl.ttfb_us = -1;
    gw_usage_init(&rl.usage);
    if (c == NULL) {
        gw_proxy_error(gw, req, &rl, 500, "out_of_memory", "out of memory");
        return;
    }
    c->gw = gw;
    c->req = req;
    c->config = gw_config_ref(config);
    c->backend = backend;
    c->client_stream = stream;
    c->ttfb_us = -1;
    backend->inflight++;
    gw->calls++;
    gw_usage_init(&c->usage);
    gw_sse_init(&c->sse, MAX_EVENT);
    c->t_start = c->req->start_us;
    snprintf(c->request_id, sizeof(c->request_id), "%s", request_id);
    snprintf(c->model, sizeof(c->model), "%s", model);
    snprintf(c->url, sizeof(c->url), "%s%s", backend->url, path_suffix);
    c->body = evbuffer_new();
    c->easy = e = gw_curlev_get(gw->curl);
    c->headers = build_headers(c, req);
    c->fb_timer = evtimer_new(gw->base, first_byte_timeout, c);
    if (c->body == NULL || e == NULL || c->headers == NULL ||
        c->fb_timer == NULL) {
        call_free(c);
        gw_proxy_error(gw, req, &rl, 500, "out_of_memory", "out of memory");
        return;
    }
    body_len = evbuffer_get_length(req->body);
    curl_easy_setopt(e, CURLOPT_URL, c->url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, c);
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS,
                     body_len ? (char *)evbuffer_pullup(req->body, -1) : "");
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, c->headers);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, c);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, backend->connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, backend->timeout_ms);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_BUFFERSIZE, 64L * 1024);
    if (gw_curlev_add(gw->curl, e) < 0) {
        call_free(c);
        gw_proxy_error(gw, req, &rl, 500, "internal_error",
                       "cannot start the upstream transfer");
        return;
    }
    gw_http_req_set_callbacks(req, on_client_close, on_client_writable, c);
    if (backend->first_byte_timeout_ms < backend->timeout_ms) {
        struct timeval tv = {backend->first_byte_timeout_ms / 1000,
                             (backend->first_byte_timeout_ms % 1000) * 1000};
        evtimer_add(c->fb_timer, &tv);
    }
}
