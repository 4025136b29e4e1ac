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
 *    WAITING | BUFFERING --attempt failed, retry allowed--> RETRYING
 *    RETRYING --next attempt sent (from the loop)--> WAITING
 *
 * Transitions, each made in call_state() only:
 *   WAITING -> STREAMING | BUFFERING   on_head (end of upstream headers)
 *   WAITING | BUFFERING -> RETRYING    retry (the attempt failed)
 *   STREAMING -> RETRYING              stream_failed_early (anthropic: the
 *                                      stream failed before its first event,
 *                                      so before the client's head)
 *   RETRYING -> WAITING                attempt_send (from the timer)
 *   * -> FINISHED                      finish
 *   * -> CANCELLED                     on_client_close
 *
 * Attempts, retries and fallbacks (routing, pool.c):
 *   The call owns the whole request; an attempt is one try on one backend
 *   that gw_pool_pick chose. An attempt that fails before anything went to
 *   the client (connect error, reset, first-byte timeout, a 5xx or 429
 *   answer, which BUFFERING holds back) is retried on another backend of
 *   the pool, then on the pools of the model's fallbacks (the body's
 *   "model" rewritten), as long as: fewer than MAX_ATTEMPTS were made, the
 *   request's deadline (start + timeout_ms of its first backend) leaves
 *   MIN_ATTEMPT_MS, and the retry budget holds: calls on a retry are at
 *   most 20% of the calls in flight, never fewer than 3 allowed, so a
 *   failing backend cannot multiply the load. A connect that was refused
 *   or timed out is retried outside the budget: the request reached no
 *   backend, so its retry adds no load, and a dead backend under a burst
 *   must not turn into client errors. When no retry is allowed
 *   the last failure is answered as it came. A STREAMING call has sent
 *   bytes: it is never retried. Every attempt ends with exactly one
 *   gw_pool_record (breaker, in-flight, latency).
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
 *     callback, from a timer, or from the http close callback. upconn
 *     callbacks may free it (upconn never touches a call after calling it
 *     once the exchange is aborted or done).
 *
 * Two transports carry a call: upconn.c (the gateway's own keep-alive
 * client, for plain http:// to numeric addresses, the common case of
 * local model servers) and libcurl (TLS, named hosts). Both feed the
 * same three steps: on_head, on_body, call_end.
 */
#include "gateway/gateway.h"
#include "gateway/anthropic.h"
#include "gateway/asan.h"
#include "gateway/cache.h"
#include "gateway/clock.h"
#include "gateway/curlev.h"
#include "gateway/error.h"
#include "gateway/fmt.h"
#include "gateway/http.h"
#include "gateway/limit.h"
#include "gateway/log.h"
#include "gateway/prompt.h"
#include "gateway/jscan.h"
#include "gateway/pool.h"
#include "gateway/sse.h"
#include "gateway/upconn.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define HIGH_WATER (256 * 1024)
#define MAX_BUFFERED (64u << 20) /* largest non-streamed answer */
#define MAX_EVENT (4u << 20)     /* largest single SSE event */
#define MAX_ATTEMPTS 5
#define SPARE_CALLS 64 /* finished calls a worker keeps for reuse */
#define MIN_ATTEMPT_MS 5

enum call_state { WAITING, STREAMING, BUFFERING, FINISHED, CANCELLED,
                  RETRYING };
static const char *const call_state_names[] = {
    "waiting", "streaming", "buffering", "finished", "cancelled",
    "retrying"};

struct gw_call {
    struct gw_gateway *gw;      /* borrowed */
    struct gw_http_req *req;    /* borrowed until FINISHED or CANCELLED */
    struct gw_config *config;   /* owned reference */
    struct gw_backend *backend; /* borrowed from config: the attempt's,
                                   NULL before the first */
    CURL *easy;                 /* owned: from the curlev pool (curl) */
    struct curl_slist *headers; /* owned (curl) */
    struct gw_upconn *up;       /* borrowed from its pool (native) */
    struct event *timer;        /* owned: first-byte, then total deadline */
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
    int64_t t_start;
    long ttfb_us;
    struct gw_usage usage;
    struct gw_admit admit; /* the rate-limit reservation, settled at free */
    char key_name[72];
    /* routing */
    struct gw_pool *first_pool; /* borrowed from config: the model's */
    struct gw_pool *pool;       /* borrowed from config: being tried */
    size_t next_fallback;       /* first_pool->fallbacks taken so far */
    struct gw_backend *tried[MAX_ATTEMPTS]; /* borrowed from config */
    int n_tried;
    int probe;        /* the attempt is a half-open probe */
    int attempt_live; /* picked and not yet recorded */
    int retrying;     /* counted in gw->retries */
    int64_t deadline_us, t_attempt;
    long head_us;               /* the attempt's time to head */
    const char *suffix;         /* static: the upstream path */
    struct evbuffer *alt_body;  /* owned: body naming a fallback model */
    struct gw_cache_fill *fill; /* owned: the cache entry the answer fills
                                   (a miss), or NULL (cache.c) */
    /* provider anthropic (anthropic.c): the attempt's Messages body and
     * its stream's translation; NULL until an anthropic attempt */
    struct evbuffer *anth_body;        /* owned */
    struct gw_anthropic_stream *anth;  /* owned */
    char stream_err[320]; /* why a translated stream was cut, or "" */
    int head_sent; /* the client's answer has started: no more retries */
    struct gw_call *spare_next; /* on gw->spare_calls; last member */
};

static void call_state(struct gw_call *c, enum call_state to)
{
    gw_log_debug("request %s: upstream %s -> %s", c->request_id,
                 call_state_names[c->state], call_state_names[to]);
    c->state = to;
}

static void on_timer(evutil_socket_t fd, short what, void *arg);

/* A finished call goes on its worker's spare list with its body buffer
 * (emptied) and its timer (stopped), up to SPARE_CALLS of them: a
 * request then allocates neither (call_new). Under AddressSanitizer a
 * spare is poisoned, so a use after the call's end is still reported. */
static void call_recycle(struct gw_call *c)
{
    struct gw_gateway *gw = c->gw;

    if (gw->n_spare_calls >= SPARE_CALLS || c->body == NULL ||
        c->timer == NULL) {
        if (c->timer)
            event_free(c->timer);
        if (c->body)
            evbuffer_free(c->body);
        free(c);
        return;
    }
    evtimer_del(c->timer);
    evbuffer_drain(c->body, evbuffer_get_length(c->body));
    c->spare_next = gw->spare_calls;
    gw->spare_calls = c;
    gw->n_spare_calls++;
    ASAN_POISON_MEMORY_REGION(c, offsetof(struct gw_call, spare_next));
}

/* A zeroed call for gw, with a body buffer and a timer: a spare if there
 * is one. NULL when out of memory. */
static struct gw_call *call_new(struct gw_gateway *gw)
{
    struct gw_call *c = gw->spare_calls;
    struct evbuffer *body;
    struct event *timer;

    if (c == NULL) {
        if ((c = calloc(1, sizeof(*c))) == NULL)
            return NULL;
        c->gw = gw;
        c->body = evbuffer_new();
        c->timer = evtimer_new(gw->base, on_timer, c);
        if (c->body == NULL || c->timer == NULL) {
            call_recycle(c); /* frees: a part is missing */
            return NULL;
        }
        return c;
    }
    ASAN_UNPOISON_MEMORY_REGION(c, offsetof(struct gw_call, spare_next));
    gw->spare_calls = c->spare_next;
    gw->n_spare_calls--;
    body = c->body, timer = c->timer;
    memset(c, 0, sizeof(*c));
    c->gw = gw;
    c->body = body, c->timer = timer;
    return c;
}

void gw_upstream_free_spares(struct gw_gateway *gw)
{
    struct gw_call *c;

    while ((c = gw->spare_calls) != NULL) {
        ASAN_UNPOISON_MEMORY_REGION(c, offsetof(struct gw_call, spare_next));
        gw->spare_calls = c->spare_next;
        event_free(c->timer);
        evbuffer_free(c->body);
        free(c);
    }
    gw->n_spare_calls = 0;
}

static void call_free(struct gw_call *c)
{
    if (c->admit.active) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        gw_limit_release(c->gw->limiter, &c->admit, c->usage.total_tokens,
                         (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
    }
    if (c->easy) {
        curl_easy_setopt(c->easy, CURLOPT_HTTPHEADER, NULL);
        gw_curlev_put(c->gw->curl, c->easy);
    }
    curl_slist_free_all(c->headers);
    if (c->alt_body)
        evbuffer_free(c->alt_body);
    gw_cache_fill_free(c->fill);
    gw_sse_release(&c->sse);
    if (c->anth_body)
        evbuffer_free(c->anth_body);
    if (c->anth) {
        gw_anthropic_stream_release(c->anth);
        free(c->anth);
    }
    if (c->attempt_live)
        gw_pool_record(c->backend, gw_now_us(), c->probe, GW_BREAKER_NEUTRAL,
                       -1, 0);
    /* per worker; atomic because a scrape on another worker reads them */
    if (c->retrying)
        __atomic_fetch_sub(&c->gw->retries, 1, __ATOMIC_RELAXED);
    __atomic_fetch_sub(&c->gw->calls, 1, __ATOMIC_RELAXED);
    gw_config_unref(c->config);
    call_recycle(c);
}

/* Stops the transfer, whichever transport carries it. */
static void transport_stop(struct gw_call *c)
{
    if (c->up) {
        gw_upconn_abort(c->up);
        c->up = NULL;
    } else if (c->easy) {
        gw_curlev_remove(c->gw->curl, c->easy);
    }
}

static void fill_log(struct gw_call *c, struct gw_reqlog *rl, int status,
                     const char *error)
{
    memset(rl, 0, sizeof(*rl));
    rl->request_id = c->request_id;
    rl->model = c->model;
    rl->backend = c->backend ? c->backend->name : NULL;
    rl->attempts = c->n_tried;
    rl->key = c->key_name[0] ? c->key_name : NULL;
    rl->status = status;
    rl->stream = c->client_stream;
    rl->ttfb_us = c->ttfb_us;
    rl->usage = c->usage;
    rl->error = error;
}

/* ------------------------------------------------------------ routing */

static int native_start(struct gw_call *c, struct gw_http_req *req,
                        const char *suffix);
static int curl_start(struct gw_call *c, struct gw_http_req *req,
                      const char *suffix);

/* The request target after the backend's base URL: the OpenAI path
 * suffix, for anthropic /messages, or for azure
 * /openai/deployments/NAME/SUFFIX?api-version=V with the deployment of the
 * model the attempt is for. */
static const char *target(const struct gw_call *c, const char *suffix,
                          char *buf, size_t len)
{
    const struct gw_backend *b = c->backend;
    const char *model = c->pool ? c->pool->model : c->model;
    size_t i;

    if (b->provider == GW_PROVIDER_ANTHROPIC)
        return "/messages";
    if (b->provider != GW_PROVIDER_AZURE)
        return suffix;
    for (i = 0; i < b->n_models && strcmp(b->models[i], model) != 0; i++)
        ;
    snprintf(buf, len, "/openai/deployments/%s%s?api-version=%s",
             i < b->n_models ? b->deployments[i] : model, suffix,
             b->api_version);
    return buf;
}

/* x-promptgate-backend and x-promptgate-attempts, before the answer. */
static void route_headers(struct gw_call *c)
{
    char n[GW_FMT_NUM];

    if (c->backend == NULL)
        return;
    gw_http_add_header(c->req, "x-promptgate-backend", c->backend->name);
    gw_fmt_long(n, c->n_tried);
    gw_http_add_header(c->req, "x-promptgate-attempts", n);
}

/* The end of the current attempt: what it tells about its backend. */
static void attempt_release(struct gw_call *c,
                            enum gw_breaker_outcome outcome,
                            long retry_after_ms)
{
    if (!c->attempt_live)
        return;
    c->attempt_live = 0;
    gw_pool_record(c->backend, gw_now_us(), c->probe, outcome,
                   outcome == GW_BREAKER_OK ? c->head_us : -1,
                   retry_after_ms);
    if (c->easy) {
        curl_easy_setopt(c->easy, CURLOPT_HTTPHEADER, NULL);
        gw_curlev_put(c->gw->curl, c->easy);
        c->easy = NULL;
    }
    curl_slist_free_all(c->headers);
    c->headers = NULL;
}

/* The request body with "model" set to the fallback model's name. */
static int rewrite_model(struct gw_call *c, const char *model)
{
    struct evbuffer *src = c->req->body;
    size_t len = evbuffer_get_length(src);
    const char *body = (const char *)evbuffer_pullup(src, -1);
    struct gw_jscan_field f = {.key = "model"};
    char err[64];

    if (c->alt_body == NULL && (c->alt_body = evbuffer_new()) == NULL)
        return -1;
    evbuffer_drain(c->alt_body, evbuffer_get_length(c->alt_body));
    if (gw_jscan(body, len, 128, &f, 1, err, sizeof(err)) < 0 ||
        f.type != GW_JSON_STRING)
        return -1;
    evbuffer_add(c->alt_body, body, (size_t)(f.val - body));
    gw_json_escape(c->alt_body, model, strlen(model));
    evbuffer_add(c->alt_body, f.val + f.len,
                 len - (size_t)(f.val + f.len - body));
    return 0;
}

/* Picks the backend of the next attempt: the current pool, then the
 * fallbacks' pools. Sets c->backend (acquired) or returns -1 with why. */
static int attempt_pick(struct gw_call *c, struct gw_pick_why *why)
{
    int64_t now = gw_now_us();
    struct gw_pick_why w;
    struct gw_backend *b;

    memset(why, 0, sizeof(*why));
    if (c->n_tried >= MAX_ATTEMPTS)
        return -1;
    for (;;) {
        b = gw_pool_pick(c->pool, now, &c->gw->rng, c->tried,
                         (size_t)c->n_tried, &c->probe, &w);
        why->busy |= w.busy;
        why->open |= w.open;
        if (w.reopen_us && (!why->reopen_us || w.reopen_us < why->reopen_us))
            why->reopen_us = w.reopen_us;
        if (b)
            break;
        if (c->next_fallback >= c->first_pool->n_fallbacks)
            return -1;
        c->pool = c->first_pool->fallbacks[c->next_fallback++];
        if (rewrite_model(c, c->pool->model) < 0)
            return -1;
    }
    c->backend = b;
    c->tried[c->n_tried++] = b;
    c->attempt_live = 1;
    if (c->deadline_us == 0)
        c->deadline_us = c->t_start + (int64_t)b->timeout_ms * 1000;
    return 0;
}

static void arm_timer(struct gw_call *c, long ms);
static void finish_error(struct gw_call *c, int status, const char *code,
                         const char *message);

/* ------------------------------------------- provider: anthropic hooks */

static int is_anthropic(const struct gw_call *c)
{
    return c->backend && c->backend->provider == GW_PROVIDER_ANTHROPIC;
}

/* The attempt's Messages body (and a fresh stream translation) from the
 * request, or the fallback's rewritten request. Returns 0, or -1 with the
 * client's error in err: a field or endpoint the adapter does not serve
 * is the request's problem, not the backend's. */
static int anthropic_prepare(struct gw_call *c, struct gw_anthropic_err *err)
{
    struct evbuffer *src = c->alt_body ? c->alt_body : c->req->body;
    int include_usage;

    if (strcmp(c->suffix, "/chat/completions") != 0) {
        snprintf(err->code, sizeof(err->code), "unsupported_endpoint");
        snprintf(err->message, sizeof(err->message), "the model '%s' is "
                 "served by backend '%s' (provider anthropic), which answers "
                 "only /v1/chat/completions, not /v1%s", c->model,
                 c->backend->name, c->suffix);
        return -1;
    }
    if (c->anth_body == NULL)
        c->anth_body = evbuffer_new();
    if (c->anth == NULL)
        c->anth = calloc(1, sizeof(*c->anth));
    if (c->anth_body == NULL || c->anth == NULL) {
        snprintf(err->code, sizeof(err->code), "out_of_memory");
        snprintf(err->message, sizeof(err->message), "out of memory");
        return -1;
    }
    evbuffer_drain(c->anth_body, evbuffer_get_length(c->anth_body));
    gw_anthropic_stream_release(c->anth);
    if (gw_anthropic_request((const char *)evbuffer_pullup(src, -1),
                             evbuffer_get_length(src),
                             c->pool ? c->pool->model : c->model,
                             c->backend->default_max_tokens, c->anth_body,
                             &include_usage, err) < 0)
        return -1;
    if (gw_anthropic_stream_init(c->anth, include_usage,
                                 (long)time(NULL)) < 0) {
        snprintf(err->code, sizeof(err->code), "out_of_memory");
        snprintf(err->message, sizeof(err->message), "out of memory");
        return -1;
    }
    return 0;
}

/* A whole anthropic answer in c->body becomes the OpenAI one (a
 * chat.completion, or the error with its status). */
static void anthropic_answer(struct gw_call *c)
{
    struct evbuffer *out = evbuffer_new();
    char msg[256];

    snprintf(c->content_type, sizeof(c->content_type), "application/json");
    if (out && gw_anthropic_response(
                   (int)c->status, (const char *)evbuffer_pullup(c->body, -1),
                   evbuffer_get_length(c->body), (long)time(NULL), out) == 0) {
        evbuffer_free(c->body);
        c->body = out;
        return;
    }
    if (out)
        evbuffer_free(out);
    snprintf(msg, sizeof(msg), "backend '%s' (provider anthropic) answered "
             "%ld with a body that is not a Messages response",
             c->backend->name, c->status);
    gw_log_warn("request %s: %s", c->request_id, msg);
    evbuffer_drain(c->body, evbuffer_get_length(c->body));
    c->status = 502;
    gw_error_json(c->body, 502, "backend_error", msg);
}

/* Sends the picked attempt. Returns 0; -1 when it could not start
 * (recorded as a failure of the backend); -2 when the request cannot go
 * to this backend at all (answered, the call is freed). */
static int attempt_send(struct gw_call *c)
{
    struct gw_http_req *req = c->req;
    long left = (long)((c->deadline_us - gw_now_us()) / 1000);
    long fb = c->backend->first_byte_timeout_ms;
    int rc;

    c->status = 0;
    c->content_type[0] = c->retry_after[0] = c->stream_err[0] = '\0';
    c->too_big = 0;
    c->head_us = -1;
    evbuffer_drain(c->body, evbuffer_get_length(c->body));
    c->t_attempt = gw_now_us();
    call_state(c, WAITING);
    if (is_anthropic(c)) {
        struct gw_anthropic_err err;
        if (anthropic_prepare(c, &err) < 0) {
            finish_error(c, strcmp(err.code, "out_of_memory") == 0 ? 500
                                                                   : 400,
                         err.code, err.message);
            return -2;
        }
    }
    if (c->backend->native)
        rc = native_start(c, req, c->suffix);
    else
        rc = curl_start(c, req, c->suffix);
    if (rc < 0) {
        transport_stop(c);
        attempt_release(c, GW_BREAKER_DOWN, 0);
        return -1;
    }
    arm_timer(c, fb < left ? fb : (left > 0 ? left : 1));
    return 0;
}

/* Starts the next attempt after a failed one, if the deadline, the attempt
 * count and the retry budget allow and a backend is left. The current
 * attempt must be released. Returns 0 when a retry is under way (the
 * call is no longer the caller's), -1 to answer the failure as it is. */
static int retry(struct gw_call *c, const char *why, int free_of_budget)
{
    struct gw_gateway *gw = c->gw;
    struct gw_pick_why w;
    unsigned long budget = gw->calls / 5 > 3 ? gw->calls / 5 : 3;
    const char *last = c->backend ? c->backend->name : "";
    struct timeval zero = {0, 0};

    if (c->head_sent || c->req == NULL || c->first_pool == NULL)
        return -1;
    if (c->n_tried >= MAX_ATTEMPTS ||
        gw_now_us() + MIN_ATTEMPT_MS * 1000 >= c->deadline_us)
        return -1;
    if (!c->retrying && !free_of_budget && gw->retries >= budget) {
        __atomic_fetch_add(&gw->retries_refused, 1, __ATOMIC_RELAXED);
        /* at most one line a second: a failing pool must not flood the
         * log; the access log has each request's attempts */
        int64_t now = gw_now_us();
        if (now - gw->retry_warn_us >= 1000000) {
            gw_log_warn("request %s: no retry after backend '%s' failed: "
                        "retry budget spent (%lu retries in flight of %lu "
                        "calls; %lu more refused since the last line)",
                        c->request_id, last, gw->retries, gw->calls,
                        gw->retry_quiet);
            gw->retry_warn_us = now;
            gw->retry_quiet = 0;
        } else {
            gw->retry_quiet++;
        }
        return -1;
    }
    if (attempt_pick(c, &w) < 0)
        return -1;
    if (!c->retrying) {
        c->retrying = 1;
        __atomic_fetch_add(&gw->retries, 1, __ATOMIC_RELAXED);
    }
    __atomic_fetch_add(&c->backend->state->retries_to, 1, __ATOMIC_RELAXED);
    gw_log_debug("request %s: attempt %d on backend '%s' after '%s' failed: "
                 "%s", c->request_id, c->n_tried, c->backend->name, last,
                 why);
    call_state(c, RETRYING);
    evtimer_del(c->timer);
    evtimer_add(c->timer, &zero); /* sent from the loop, not from inside
                                     the transport's callback */
    return 0;
}

/* Nothing in the pool (or its fallbacks) can take the request now: a
 * fast 503 with how long to wait. */
static void finish_unavailable(struct gw_call *c, const struct gw_pick_why *w)
{
    struct gw_reqlog rl;
    struct evbuffer *b = evbuffer_new();
    char msg[512], ra[24];
    long secs = 1;

    if (w->reopen_us) {
        int64_t d = w->reopen_us - gw_now_us();
        secs = d > 0 ? (long)((d + 999999) / 1000000) : 1;
    }
    if (w->busy && !w->open)
        snprintf(msg, sizeof(msg), "every backend serving '%s' is at its "
                 "max_inflight; retry shortly", c->model);
    else
        snprintf(msg, sizeof(msg), "no backend serving '%s' is usable now "
                 "(circuit breakers open%s); retry in %ld s", c->model,
                 w->busy ? " or at max_inflight" : "", secs);
    snprintf(ra, sizeof(ra), "%ld", secs);
    call_state(c, FINISHED);
    fill_log(c, &rl, 503, "no_backend_available");
    gw_http_add_header(c->req, "Retry-After", ra);
    if (b == NULL || gw_error_json(b, 503, "no_backend_available", msg) < 0)
        gw_http_reply(c->req, 503, NULL, NULL, 0);
    else
        gw_http_reply_buffer(c->req, 503, "application/json", b);
    if (b)
        evbuffer_free(b);
    gw_proxy_log(c->gw, c->req, &rl);
    call_free(c);
}

/* No backend could be connected to (each attempt failed to connect, and
 * nothing is left to try): like finish_unavailable, a 503 with
 * Retry-After, so a client backs off the same way whether the breakers
 * have opened yet or not. why names the last failure. */
static void finish_unreachable(struct gw_call *c, const char *why)
{
    char msg[1024];

    snprintf(msg, sizeof(msg), "no backend serving '%.256s' could be "
             "reached (%d tried; %.600s); retry in 1 s", c->model, c->n_tried,
             why);
    gw_log_warn("request %s: %s", c->request_id, msg);
    if (!gw_http_resp_has_header(c->req, "retry-after"))
        gw_http_add_header(c->req, "Retry-After", "1");
    finish_error(c, 503, "backend_unreachable", msg);
}

/* Ends the call with a gateway error before anything reached the client. */
static void finish_error(struct gw_call *c, int status, const char *code,
                         const char *message)
{
    struct gw_reqlog rl;

    route_headers(c);
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

    gw_log_warn("request %s: %s", c->request_id, message);
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

enum end_kind { END_OK, END_TIMEOUT, END_CONNECT, END_ERROR };

/* An anthropic stream that ended before its first event (an `error` event
 * such as overloaded_error, a cut, a timeout): nothing reached the client,
 * so it is a failed attempt like a 5xx answer, retried when allowed. */
static void stream_failed_early(struct gw_call *c, enum end_kind kind,
                                const char *why)
{
    const char *et = c->anth ? c->anth->error_type : "";
    int status = kind == END_TIMEOUT ? 504
                 : strcmp(et, "overloaded_error") == 0 ? 529
                 : strcmp(et, "rate_limit_error") == 0 ? 429
                 : strcmp(et, "api_error") == 0 ? 500 : 502;
    char msg[512];

    attempt_release(c, GW_BREAKER_FAIL, 0);
    snprintf(msg, sizeof(msg), "backend '%s' stream failed before its first "
             "event: %s", c->backend->name,
             c->stream_err[0] ? c->stream_err
             : why ? why : "closed before message_start");
    gw_sse_release(&c->sse); /* the next attempt's stream starts afresh */
    gw_sse_init(&c->sse, MAX_EVENT);
    if (retry(c, msg, 0) == 0)
        return;
    gw_log_warn("request %s: %s", c->request_id, msg);
    finish_error(c, status,
                 kind == END_TIMEOUT ? "backend_timeout"
                 : et[0] ? et : "backend_error", msg);
}

/* The transfer ended (the transport is done with it). */
static void call_end(struct gw_call *c, enum end_kind kind, const char *why)
{
    struct gw_reqlog rl;
    char msg[512];

    if (c->state == STREAMING && !c->head_sent) {
        stream_failed_early(c, kind, why);
        return;
    }
    if (c->state == STREAMING) {
        if (kind == END_OK && c->sse.done && gw_sse_pending(&c->sse) == 0) {
            attempt_release(c, GW_BREAKER_OK, 0);
            if (c->pool == c->first_pool) /* not a fallback's answer */
                gw_cache_fill_store(c->fill, NULL, 0);
            gw_http_reply_end(c->req);
            call_state(c, FINISHED);
            fill_log(c, &rl, 200, NULL);
            gw_proxy_log(c->gw, c->req, &rl);
            call_free(c);
            return;
        }
        /* bytes went out: never retried (invariant 1) */
        attempt_release(c, GW_BREAKER_FAIL, 0);
        snprintf(msg, sizeof(msg), "backend '%s' stream ended early: %s",
                 c->backend->name,
                 c->stream_err[0] ? c->stream_err
                 : kind != END_OK ? why
                 : is_anthropic(c) ? "closed before message_stop"
                                   : "closed before data: [DONE]");
        finish_stream_error(c, msg);
        return;
    }
    if (c->state == BUFFERING && kind == END_OK) {
        struct evbuffer *body = c->body;
        size_t len = evbuffer_get_length(body);
        if (c->status >= 500 || c->status == 429) {
            /* 529: anthropic's "overloaded", a 503 by another number */
            long ra = c->status == 429 || c->status == 503 ||
                              c->status == 529
                          ? gw_breaker_parse_retry_after(c->retry_after) : 0;
            attempt_release(c, GW_BREAKER_FAIL, ra);
            snprintf(msg, sizeof(msg), "it answered %ld", c->status);
            if (retry(c, msg, 0) == 0)
                return;
        } else {
            attempt_release(c, GW_BREAKER_OK, 0);
        }
        if (is_anthropic(c)) {
            anthropic_answer(c);
            body = c->body;
            len = evbuffer_get_length(body);
        }
        route_headers(c);
        if (c->status >= 200 && c->status < 300 && len > 0)
            gw_usage_find((const char *)evbuffer_pullup(body, -1), len,
                          &c->usage);
        if (c->gw->prompts && c->status >= 200 && c->status < 300)
            gw_prompt_output(c->gw->prompts, c->req,
                             (const char *)evbuffer_pullup(body, -1), len, 0);
        if (c->retry_after[0])
            gw_http_add_header(c->req, "Retry-After", c->retry_after);
        if (c->fill && c->status >= 200 && c->status < 300 &&
            c->pool == c->first_pool)
            gw_cache_fill_store(c->fill,
                                (const char *)evbuffer_pullup(body, -1), len);
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
        attempt_release(c, GW_BREAKER_FAIL, 0);
        snprintf(msg, sizeof(msg), "backend '%s' answer is larger than %u "
                 "bytes", c->backend->name, MAX_BUFFERED);
        finish_error(c, 502, "backend_error", msg);
        return;
    }
    /* nothing reached the client: a retry may go elsewhere */
    attempt_release(c, c->state == WAITING ? GW_BREAKER_DOWN
                                           : GW_BREAKER_FAIL, 0);
    if (kind == END_TIMEOUT) {
        snprintf(msg, sizeof(msg), "backend '%s' timed out: %s",
                 c->backend->name, why);
        if (retry(c, msg, 0) == 0)
            return;
        finish_error(c, 504, "backend_timeout", msg);
        return;
    }
    if (kind == END_CONNECT && c->state == WAITING) {
        snprintf(msg, sizeof(msg), "cannot connect to backend '%s': %s",
                 c->backend->name, why);
        if (retry(c, msg, 1) == 0)
            return;
        finish_unreachable(c, msg);
        return;
    }
    snprintf(msg, sizeof(msg), "backend '%s' failed: %s", c->backend->name,
             why ? why : "answer incomplete");
    if (retry(c, msg, 0) == 0)
        return;
    gw_log_warn("request %s: %s", c->request_id, msg);
    finish_error(c, 502, "backend_error", msg);
}

static void on_client_close(struct gw_http_req *req, void *arg)
{
    struct gw_call *c = arg;
    struct gw_reqlog rl;

    transport_stop(c);
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
    if (!c->paused)
        return;
    c->paused = 0;
    if (c->up)
        gw_upconn_resume(c->up);
    else
        curl_easy_pause(c->easy, CURLPAUSE_CONT);
}

static void arm_timer(struct gw_call *c, long ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(c->timer, &tv);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct gw_call *c = arg;
    char why[128];

    (void)fd, (void)what;
    if (c->state == RETRYING) {
        struct gw_pick_why w;
        int rc;
        while ((rc = attempt_send(c)) < 0) {
            if (rc == -2)
                return;
            if (attempt_pick(c, &w) < 0) {
                snprintf(why, sizeof(why), "cannot start the upstream "
                         "transfer to backend '%s'", c->backend->name);
                finish_error(c, 502, "backend_unreachable", why);
                return;
            }
        }
        return;
    }
    transport_stop(c);
    if (c->state == WAITING)
        snprintf(why, sizeof(why), "no answer within %ld ms "
                 "(first_byte_timeout_ms)", c->backend->first_byte_timeout_ms);
    else
        snprintf(why, sizeof(why), "not complete within %ld ms (timeout_ms)",
                 c->backend->timeout_ms);
    call_end(c, END_TIMEOUT, why);
}

/* Whether an event's data holds the key "usage": memchr for its 'u'
 * (rare in a chunk's JSON: "null" has one) is several times cheaper than
 * memmem on every relayed event. */
static int has_usage_key(const char *data, size_t len)
{
    const char *p = data, *end = data + len;

    while (end - p >= 6 && (p = memchr(p, 'u', (size_t)(end - p - 5)))) {
        if (p > data && p[-1] == '"' && memcmp(p, "usage\"", 6) == 0)
            return 1;
        p++;
    }
    return 0;
}

/* One OpenAI stream event (data, and raw: the whole event) to the cache,
 * the usage count, the exposure log and the client. */
static int relay_data(struct gw_call *c, const char *data, size_t data_len,
                      const char *raw, size_t raw_len)
{
    if (c->fill) /* before the usage chunk may be stripped: it is kept */
        gw_cache_fill_event(c->fill, data, data_len);
    if (data_len > 8 && has_usage_key(data, data_len)) {
        gw_usage_find(data, data_len, &c->usage);
        /* the usage-only chunk the gateway asked for, not the client */
        if (c->admit.injected_usage &&
            memmem(data, data_len, "\"choices\":[]", 12))
            return 0;
    }
    if (c->gw->prompts)
        gw_prompt_output(c->gw->prompts, c->req, data, data_len, 1);
    gw_http_reply_chunk(c->req, raw, raw_len);
    return 0;
}

static void stream_head(struct gw_call *c);

/* A translated anthropic chunk, framed as an SSE event. A streaming call's
 * body buffer is otherwise unused: it holds the frame. The client's head
 * goes out with the first chunk. */
static int anthropic_emit(void *arg, const char *data, size_t len)
{
    struct gw_call *c = arg;
    struct evbuffer *f = c->body;

    if (!c->head_sent)
        stream_head(c);
    evbuffer_drain(f, evbuffer_get_length(f));
    evbuffer_add(f, "data: ", 6);
    evbuffer_add(f, data, len);
    evbuffer_add(f, "\n\n", 2);
    if (len == 6 && memcmp(data, "[DONE]", 6) == 0)
        c->sse.done = 1; /* the end call_end looks for */
    relay_data(c, data, len, (const char *)evbuffer_pullup(f, -1),
               evbuffer_get_length(f));
    evbuffer_drain(f, evbuffer_get_length(f));
    return 0;
}

static int relay_event(void *arg, const struct gw_sse_event *ev)
{
    struct gw_call *c = arg;

    if (is_anthropic(c)) {
        if (ev->data_len == 0) /* a comment or an empty event */
            return 0;
        return gw_anthropic_stream_event(c->anth, ev->data, ev->data_len,
                                         anthropic_emit, c, c->stream_err,
                                         sizeof(c->stream_err));
    }
    return relay_data(c, ev->data, ev->data_len, ev->raw, ev->raw_len);
}

/* The client's head of a relayed stream. */
static void stream_head(struct gw_call *c)
{
    c->head_sent = 1;
    route_headers(c);
    gw_http_add_header(c->req, "Cache-Control", "no-cache");
    gw_http_reply_start(c->req, 200, "text/event-stream");
}

/* The end of the upstream's head: decides how to relay. */
static void on_head(struct gw_call *c)
{
    int64_t now = gw_now_us();
    long left;

    c->ttfb_us = (long)(now - c->t_start);
    c->head_us = (long)(now - c->t_attempt);
    left = (long)((c->deadline_us - now) / 1000);
    arm_timer(c, left > 0 ? left : 1);
    if (c->status == 200 &&
        strncasecmp(c->content_type, "text/event-stream", 17) == 0) {
        call_state(c, STREAMING);
        /* anthropic: with the first translated chunk, so that a stream
         * failing before its message_start can still be retried */
        if (!is_anthropic(c))
            stream_head(c);
    } else {
        call_state(c, BUFFERING);
    }
}

/* Body bytes from either transport. Returns 1 to pause the transfer (the
 * bytes were taken), -1 to abort it. */
static int on_body(struct gw_call *c, const char *buf, size_t len)
{
    if (c->state == BUFFERING) {
        if (evbuffer_get_length(c->body) + len > MAX_BUFFERED) {
            c->too_big = 1;
            return -1;
        }
        evbuffer_add(c->body, buf, len);
        return 0;
    }
    if (c->state != STREAMING)
        return -1;
    if (gw_sse_feed(&c->sse, buf, len, relay_event, c) < 0)
        return -1;
    if (gw_http_req_pending(c->req) > HIGH_WATER) {
        c->paused = 1;
        gw_http_req_wait_writable(c->req);
        return 1;
    }
    return 0;
}

/* --------------------------------------------------- native transport */

static void up_head(void *arg, int status, const char *ctype,
                    const char *retry)
{
    struct gw_call *c = arg;

    c->status = status;
    snprintf(c->content_type, sizeof(c->content_type), "%s", ctype);
    snprintf(c->retry_after, sizeof(c->retry_after), "%s", retry);
    on_head(c);
}

static int up_body(void *arg, const char *data, size_t len)
{
    struct gw_call *c = arg;
    int rc = on_body(c, data, len);

    if (rc < 0) {
        /* inside the upconn callback: abort marks it, it frees itself */
        transport_stop(c);
        if (c->too_big)
            call_end(c, END_ERROR, NULL);
        else
            call_end(c, END_ERROR, "malformed event stream");
        return 1;
    }
    return rc;
}

static void up_done(void *arg, const char *err)
{
    struct gw_call *c = arg;

    c->up = NULL;
    evtimer_del(c->timer);
    if (err == NULL)
        call_end(c, END_OK, NULL);
    else
        call_end(c, strncmp(err, "cannot connect", 14) == 0 ? END_CONNECT
                                                             : END_ERROR,
                 err);
}

/* the events of one upstream read leave for the client in one write */
static void up_batch(int begin)
{
    if (begin)
        gw_http_cork();
    else
        gw_http_uncork();
}

static const struct gw_upconn_cbs up_cbs = {up_head, up_body, up_done,
                                            up_batch};

static struct gw_uppool *pool_for(struct gw_gateway *gw,
                                  const struct gw_backend *b)
{
    size_t i;

    for (i = 0; i < gw->n_pools; i++)
        if (memcmp(&gw->pool_addrs[i], &b->addr, b->addrlen) == 0)
            return gw->pools[i];
    struct gw_uppool **p = realloc(gw->pools, (i + 1) * sizeof(*p));
    if (p == NULL)
        return NULL;
    gw->pools = p;
    struct sockaddr_storage *a =
        realloc(gw->pool_addrs, (i + 1) * sizeof(*a));
    if (a == NULL)
        return NULL;
    gw->pool_addrs = a;
    gw->pools[i] = gw_uppool_new(gw->base, (const struct sockaddr *)&b->addr,
                                 b->addrlen, 256, 60000);
    if (gw->pools[i] == NULL)
        return NULL;
    memcpy(&gw->pool_addrs[i], &b->addr, sizeof(b->addr));
    gw->n_pools++;
    return gw->pools[i];
}

void gw_upstream_free_pools(struct gw_gateway *gw)
{
    for (size_t i = 0; i < gw->n_pools; i++)
        gw_uppool_free(gw->pools[i]);
    free(gw->pools);
    free(gw->pool_addrs);
    gw->pools = NULL;
    gw->pool_addrs = NULL;
    gw->n_pools = 0;
}

/* Headers a proxy must not pass on, or that the gateway sets itself. */
static int skip_header(const char *name)
{
    static const struct {
        const char *name;
        size_t len;
    } skip[] = {
#define H(s) {s, sizeof(s) - 1}
        H("host"), H("content-length"), H("transfer-encoding"),
        H("connection"), H("keep-alive"), H("te"), H("trailer"),
        H("upgrade"), H("proxy-authorization"), H("proxy-connection"),
        H("authorization"), H("cookie"), H("x-api-key"), H("api-key"),
        H("expect"), H("accept-encoding"), H("x-request-id"),
#undef H
    };
    size_t n = strlen(name);

    for (size_t i = 0; i < sizeof(skip) / sizeof(skip[0]); i++)
        if (skip[i].len == n && strcasecmp(name, skip[i].name) == 0)
            return 1;
    return 0;
}

/* 1 when the request's Connection header names this header: such
 * headers are hop-by-hop too (RFC 9110 7.6.1). */
static int named_in_connection(const struct gw_http_req *req,
                               const char *name)
{
    const char *conn = gw_http_req_header(req, "connection");
    size_t n = strlen(name);

    while (conn && *conn) {
        while (*conn == ' ' || *conn == '\t' || *conn == ',')
            conn++;
        size_t t = strcspn(conn, ", \t");
        if (t == n && strncasecmp(conn, name, n) == 0)
            return 1;
        conn += t;
    }
    return 0;
}

static int forwardable(const struct gw_http_req *req, const char *name)
{
    return !skip_header(name) && !named_in_connection(req, name);
}

/* Headers the gateway sets itself towards an anthropic backend: the body
 * it sends is its own JSON, and the API version is the config's. */
static int anthropic_own(const char *name)
{
    return strcasecmp(name, "content-type") == 0 ||
           strcasecmp(name, "content-encoding") == 0 ||
           strcasecmp(name, "anthropic-version") == 0;
}

static int native_start(struct gw_call *c, struct gw_http_req *req,
                        const char *suffix)
{
    struct gw_backend *b = c->backend;
    struct gw_uppool *pool = pool_for(c->gw, b);
    struct evbuffer *out = evbuffer_new();
    int anth = is_anthropic(c);
    struct evbuffer *body = anth ? c->anth_body
                            : c->alt_body ? c->alt_body : req->body;
    size_t i, len = evbuffer_get_length(body);
    char tbuf[512];

    if (pool == NULL || out == NULL) {
        if (out)
            evbuffer_free(out);
        return -1;
    }
    char num[GW_FMT_NUM];
    size_t nl = gw_fmt_long(num, (long)len);

    /* pieces, not printf: this runs once per request */
    evbuffer_add(out, "POST ", 5);
    evbuffer_add(out, b->path, strlen(b->path));
    suffix = target(c, suffix, tbuf, sizeof(tbuf));
    evbuffer_add(out, suffix, strlen(suffix));
    evbuffer_add(out, " HTTP/1.1\r\nHost: ", 17);
    evbuffer_add(out, b->host_header, strlen(b->host_header));
    evbuffer_add(out, "\r\nContent-Length: ", 18);
    evbuffer_add(out, num, (size_t)nl);
    evbuffer_add(out, "\r\nX-Request-Id: ", 16);
    evbuffer_add(out, c->request_id, strlen(c->request_id));
    evbuffer_add(out, "\r\n", 2);
    if (anth || gw_http_req_header(req, "content-type") == NULL)
        evbuffer_add(out, "Content-Type: application/json\r\n", 32);
    for (i = 0; i < req->n_headers; i++) {
        const struct gw_http_header *h = &req->headers[i];
        if (!forwardable(req, h->name) || (anth && anthropic_own(h->name)))
            continue;
        evbuffer_add(out, h->name, strlen(h->name));
        evbuffer_add(out, ": ", 2);
        evbuffer_add(out, h->value, h->value_len);
        evbuffer_add(out, "\r\n", 2);
    }
    if (b->auth_header) {
        evbuffer_add(out, b->auth_header, strlen(b->auth_header));
        evbuffer_add(out, "\r\n", 2);
    }
    if (anth) {
        evbuffer_add(out, "anthropic-version: ", 19);
        evbuffer_add(out, b->anthropic_version, strlen(b->anthropic_version));
        evbuffer_add(out, "\r\n", 2);
    }
    evbuffer_add(out, "\r\n", 2);
    if (len)
        evbuffer_add(out, evbuffer_pullup(body, -1), len);
    c->up = gw_upconn_send(pool, out, b->connect_timeout_ms, &up_cbs, c);
    evbuffer_free(out);
    return c->up ? 0 : -1;
}

/* ----------------------------------------------------- curl transport */

static size_t curl_header_cb(char *buf, size_t size, size_t n, void *arg)
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
        if (code >= 200 && c->state == WAITING) {
            c->status = code;
            on_head(c);
        }
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

static size_t curl_write_cb(char *buf, size_t size, size_t n, void *arg)
{
    struct gw_call *c = arg;
    size_t len = size * n;

    if (c->state == WAITING) {
        curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &c->status);
        on_head(c);
    }
    /* curl keeps the bytes of a paused write and hands them again, so
     * pause before taking them */
    if (c->state == STREAMING && gw_http_req_pending(c->req) > HIGH_WATER) {
        c->paused = 1;
        gw_http_req_wait_writable(c->req);
        return CURL_WRITEFUNC_PAUSE;
    }
    if (on_body(c, buf, len) < 0)
        return 0; /* aborts the transfer */
    if (c->paused) {
        /* on_body asked to pause after taking the bytes; curl cannot
         * take them back, so the next write will pause instead */
        c->paused = 0;
    }
    return len;
}

void gw_upstream_done(CURL *easy, CURLcode result, void *priv)
{
    struct gw_call *c = priv;

    (void)easy;
    evtimer_del(c->timer);
    if (result == CURLE_OK)
        call_end(c, END_OK, NULL);
    else if (result == CURLE_OPERATION_TIMEDOUT)
        call_end(c, END_TIMEOUT, curl_easy_strerror(result));
    else if (result == CURLE_COULDNT_CONNECT ||
             result == CURLE_COULDNT_RESOLVE_HOST)
        call_end(c, END_CONNECT, curl_easy_strerror(result));
    else
        call_end(c, END_ERROR, curl_easy_strerror(result));
}

static struct curl_slist *build_headers(struct gw_call *c,
                                        struct gw_http_req *req)
{
    struct curl_slist *h = NULL, *t;
    char line[8192];
    size_t i;
    int anth = is_anthropic(c);

    if (anth || gw_http_req_header(req, "content-type") == NULL)
        h = curl_slist_append(h, "Content-Type: application/json");
    for (i = 0; i < req->n_headers; i++) {
        const struct gw_http_header *hd = &req->headers[i];
        if (!forwardable(req, hd->name) || (anth && anthropic_own(hd->name)))
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
    if (anth) {
        snprintf(line, sizeof(line), "anthropic-version: %s",
                 c->backend->anthropic_version);
        if ((t = curl_slist_append(h, line)) == NULL)
            goto fail;
        h = t;
    }
    return h;
fail:
    curl_slist_free_all(h);
    return NULL;
}

static int curl_start(struct gw_call *c, struct gw_http_req *req,
                      const char *suffix)
{
    struct gw_backend *b = c->backend;
    struct evbuffer *body = is_anthropic(c) ? c->anth_body
                            : c->alt_body ? c->alt_body : req->body;
    size_t body_len = evbuffer_get_length(body);
    char url[2048], tbuf[512];
    CURL *e;

    c->easy = e = gw_curlev_get(c->gw->curl);
    c->headers = build_headers(c, req);
    if (e == NULL || c->headers == NULL)
        return -1;
    snprintf(url, sizeof(url), "%s%s", b->url,
             target(c, suffix, tbuf, sizeof(tbuf)));
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, c);
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS,
                     body_len ? (char *)evbuffer_pullup(body, -1) : "");
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, c->headers);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, curl_write_cb);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, curl_header_cb);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, c);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, b->connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, b->timeout_ms);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    /* TLS: always verified, against the backend's ca_file or the system's
     * bundle (handles are reused: set it either way) */
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
    if (b->ca_file) {
        curl_easy_setopt(e, CURLOPT_CAINFO, b->ca_file);
    } else {
        char *def = NULL;
        curl_easy_getinfo(e, CURLINFO_CAINFO, &def);
        curl_easy_setopt(e, CURLOPT_CAINFO, def);
    }
    return gw_curlev_add(c->gw->curl, e);
}

void gw_upstream_start(struct gw_gateway *gw, struct gw_http_req *req,
                       struct gw_config *config, struct gw_backend *backend,
                       const char *model, int stream, const char *path_suffix,
                       const char *request_id, const char *key_name,
                       const struct gw_admit *admit,
                       struct gw_cache_fill *fill)
{
    struct gw_call *c = call_new(gw);
    struct gw_reqlog rl;
    struct gw_pick_why why;
    char msg[512];
    int rc;

    memset(&rl, 0, sizeof(rl));
    rl.request_id = request_id;
    rl.model = model;
    rl.backend = backend ? backend->name : NULL;
    rl.stream = stream;
    rl.ttfb_us = -1;
    gw_usage_init(&rl.usage);
    if (c == NULL) {
        gw_cache_fill_free(fill);
        if (admit) {
            struct gw_admit a = *admit;
            gw_limit_release(gw->limiter, &a, -1, 0);
        }
        gw_proxy_error(gw, req, &rl, 500, "out_of_memory", "out of memory");
        return;
    }
    if (admit)
        c->admit = *admit;
    c->fill = fill;
    if (key_name)
        gw_copy(c->key_name, sizeof(c->key_name), key_name);
    c->req = req; /* c->gw: call_new */
    c->config = gw_config_ref(config);
    c->client_stream = stream;
    c->ttfb_us = -1;
    c->t_start = req->start_us;
    c->suffix = path_suffix;
    __atomic_fetch_add(&gw->calls, 1, __ATOMIC_RELAXED);
    gw_usage_init(&c->usage);
    gw_sse_init(&c->sse, MAX_EVENT);
    gw_copy(c->request_id, sizeof(c->request_id), request_id);
    gw_copy(c->model, sizeof(c->model), model);
    c->first_pool = c->pool = gw_pool_find(config, model);
    if (c->first_pool == NULL) {
        call_free(c);
        gw_proxy_error(gw, req, &rl, 500, "internal_error",
                       "cannot start the upstream transfer");
        return;
    }
    gw_http_req_set_callbacks(req, on_client_close, on_client_writable, c);
    if (backend) {
        /* the caller chose: the first attempt goes there, retries follow
         * the pool */
        c->probe = gw_pool_acquire(backend, gw_now_us());
        c->backend = backend;
        c->tried[c->n_tried++] = backend;
        c->attempt_live = 1;
        c->deadline_us = c->t_start + (int64_t)backend->timeout_ms * 1000;
    } else if (attempt_pick(c, &why) < 0) {
        finish_unavailable(c, &why);
        return;
    }
    while ((rc = attempt_send(c)) < 0) {
        if (rc == -2)
            return;
        if (attempt_pick(c, &why) < 0) {
            snprintf(msg, sizeof(msg), "cannot start the upstream transfer "
                     "to backend '%s'", c->backend->name);
            finish_error(c, 502, "backend_unreachable", msg);
            return;
        }
    }
}
