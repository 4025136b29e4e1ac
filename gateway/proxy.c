/*
 * proxy.c - routes: what each request is, and who answers it.
 *
 * Reads just enough of the request body to route it (the model, whether
 * it streams) and hands it to upstream.c unchanged. Answers the gateway's
 * own endpoints (/v1/models, /healthz, /readyz) and every error in
 * OpenAI's shape, and writes the access log line of each request.
 */
#include "gateway/gateway.h"
#include "gateway/digest.h"
#include "gateway/accesslog.h"
#include "gateway/cache.h"
#include "gateway/clock.h"
#include "gateway/error.h"
#include "gateway/fmt.h"
#include "gateway/http.h"
#include "gateway/jscan.h"
#include "gateway/limit.h"
#include "gateway/rlredis.h"
#include "gateway/log.h"
#include "gateway/metrics.h"
#include "gateway/pool.h"
#include "gateway/prompt.h"

#include <event2/buffer.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#define MAX_MODEL_LEN 256
#define MAX_JSON_DEPTH 128


/* An access log line is built on the stack and added to the log's buffer
 * in one piece: no printf per field (it was a tenth of a request's CPU). */
struct logline {
    struct evbuffer *b; /* borrowed: the log's buffer */
    size_t n;
    char buf[1024];
};

static void ll_flush(struct logline *l)
{
    evbuffer_add(l->b, l->buf, l->n);
    l->n = 0;
}

static void ll_add(struct logline *l, const char *s, size_t n)
{
    if (l->n + n > sizeof(l->buf)) {
        ll_flush(l);
        if (n > sizeof(l->buf)) {
            evbuffer_add(l->b, s, n);
            return;
        }
    }
    memcpy(l->buf + l->n, s, n);
    l->n += n;
}

#define ll_lit(l, s) ll_add((l), (s), sizeof(s) - 1)

/* v >= 0 in decimal, at least width digits (zero-padded). */
static void ll_uint(struct logline *l, unsigned long v, int width)
{
    char d[24];
    int i = sizeof(d);

    do {
        d[--i] = (char)('0' + v % 10);
        v /= 10;
    } while ((v || (int)sizeof(d) - i < width) && i > 0);
    ll_add(l, d + i, sizeof(d) - i);
}

static void ll_key(struct logline *l, const char *key)
{
    ll_lit(l, ",\"");
    ll_add(l, key, strlen(key));
    ll_lit(l, "\":");
}

static void log_str(struct logline *l, const char *key, const char *v)
{
    size_t n, i;

    ll_key(l, key);
    if (v == NULL) {
        ll_lit(l, "null");
        return;
    }
    n = strnlen(v, 512);
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)v[i];
        if (c < 0x20 || c >= 0x80 || c == '"' || c == '\\')
            break;
    }
    ll_lit(l, "\"");
    if (i == n) {
        ll_add(l, v, n);
    } else { /* needs escaping: rare */
        ll_flush(l);
        gw_json_escape(l->b, v, n);
    }
    ll_lit(l, "\"");
}

static void log_num(struct logline *l, const char *key, long v)
{
    ll_key(l, key);
    if (v < 0)
        ll_lit(l, "null");
    else
        ll_uint(l, (unsigned long)v, 1);
}

/* v in tenths as "12.3" */
static void log_tenths(struct logline *l, const char *key, long v)
{
    ll_key(l, key);
    ll_uint(l, (unsigned long)(v / 10), 1);
    ll_lit(l, ".");
    ll_uint(l, (unsigned long)(v % 10), 1);
}

void gw_proxy_log(struct gw_gateway *gw, struct gw_http_req *req,
                  const struct gw_reqlog *rl)
{
    struct logline l;
    struct timeval now;
    long lat;
    int64_t end_us = gw_now_us();

    gw_metrics_request(gw->metrics, req, rl, end_us);
    if (gw->prompts)
        gw_prompt_finish(gw->prompts, req, rl, end_us);
    if ((l.b = gw_accesslog_buffer(gw->alog)) == NULL)
        return;
    l.n = 0;
    gettimeofday(&now, NULL);
    lat = (long)((end_us - req->start_us) / 100);
    if (lat < 0)
        lat = 0;
    ll_lit(&l, "{\"ts\":");
    ll_uint(&l, (unsigned long)now.tv_sec, 1);
    ll_lit(&l, ".");
    ll_uint(&l, (unsigned long)now.tv_usec / 1000, 3);
    log_str(&l, "request_id", rl->request_id);
    log_str(&l, "method", req->method);
    log_str(&l, "path", req->path);
    log_str(&l, "model", rl->model);
    log_str(&l, "backend", rl->backend);
    log_str(&l, "key", rl->key);
    if (rl->attempts > 0) /* routing: more than 1 means retried */
        log_num(&l, "attempts", rl->attempts);
    log_num(&l, "status", rl->status);
    if (rl->stream)
        ll_lit(&l, ",\"stream\":true");
    else
        ll_lit(&l, ",\"stream\":false");
    log_tenths(&l, "latency_ms", lat);
    if (rl->ttfb_us < 0)
        ll_lit(&l, ",\"ttfb_ms\":null");
    else
        log_tenths(&l, "ttfb_ms", rl->ttfb_us / 100);
    log_num(&l, "prompt_tokens", rl->usage.prompt_tokens);
    log_num(&l, "completion_tokens", rl->usage.completion_tokens);
    log_num(&l, "total_tokens", rl->usage.total_tokens);
    log_num(&l, "bytes_out", (long)req->bytes_out);
    log_str(&l, "cache", req->cache);
    log_str(&l, "error", rl->error);
    ll_lit(&l, "}\n");
    ll_flush(&l);
    gw_accesslog_commit(gw->alog);
}

void gw_proxy_error(struct gw_gateway *gw, struct gw_http_req *req,
                    struct gw_reqlog *rl, int status, const char *code,
                    const char *message)
{
    struct evbuffer *body = evbuffer_new();

    gw_cache_error_header(req);
    if (body == NULL || gw_error_json(body, status, code, message) < 0) {
        gw_http_reply(req, 500, NULL, NULL, 0);
    } else {
        if ((status == 503 || status == 429) &&
            !gw_http_resp_has_header(req, "retry-after"))
            gw_http_add_header(req, "Retry-After", "1");
        gw_http_reply_buffer(req, status, "application/json", body);
    }
    if (body)
        evbuffer_free(body);
    rl->status = status;
    rl->error = code;
    gw_proxy_log(gw, req, rl);
}

/* The request's own id when it is short and plain, else a new one. */
static void request_id(struct gw_gateway *gw, struct gw_http_req *req,
                       char *out, size_t outlen)
{
    const char *given = gw_http_req_header(req, "x-request-id");

    if (given) {
        size_t n = strspn(given, "abcdefghijklmnopqrstuvwxyz"
                                 "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-");
        if (n > 0 && given[n] == '\0' && n < outlen && n <= 128) {
            memcpy(out, given, n + 1);
            return;
        }
    }
    /* xorshift64*: ids need to be unique, not secret */
    uint64_t x = gw->rng;
    x ^= x >> 12, x ^= x << 25, x ^= x >> 27;
    gw->rng = x;
    if (outlen > 16)
        gw_fmt_hex64(out, x * 0x2545F4914F6CDD1DULL);
}

static void reply_json(struct gw_gateway *gw, struct gw_http_req *req,
                       struct gw_reqlog *rl, int status, struct evbuffer *b)
{
    gw_http_reply_buffer(req, status, "application/json", b);
    rl->status = status;
    gw_proxy_log(gw, req, rl);
}

static void handle_models(struct gw_gateway *gw, struct gw_http_req *req,
                          struct gw_reqlog *rl)
{
    struct gw_config *c = gw->config;
    struct evbuffer *b = evbuffer_new();
    size_t i;

    if (b == NULL) {
        gw_proxy_error(gw, req, rl, 500, "out_of_memory", "out of memory");
        return;
    }
    evbuffer_add(b, "{\"object\":\"list\",\"data\":[", 25);
    for (i = 0; i < c->n_model_names; i++) {
        evbuffer_add_printf(b, "%s{\"id\":\"", i ? "," : "");
        gw_json_escape(b, c->model_names[i], strlen(c->model_names[i]));
        evbuffer_add_printf(b, "\",\"object\":\"model\",\"created\":0,"
                               "\"owned_by\":\"promptgate\"}");
    }
    evbuffer_add(b, "]}", 2);
    reply_json(gw, req, rl, 200, b);
    evbuffer_free(b);
}

static void handle_simple(struct gw_gateway *gw, struct gw_http_req *req,
                          struct gw_reqlog *rl, int ready)
{
    struct evbuffer *b = evbuffer_new();

    if (b == NULL) {
        gw_proxy_error(gw, req, rl, 500, "out_of_memory", "out of memory");
        return;
    }
    if (!ready) {
        evbuffer_add_printf(b, "{\"status\":\"ok\",\"version\":\"%s\"}",
                            GW_VERSION);
        reply_json(gw, req, rl, 200, b);
    } else if (gw->config &&
               gw_states_usable(gw->config, gw_now_us()) > 0) {
        /* routing: ready while some backend's breaker lets requests in */
        evbuffer_add_printf(b, "{\"status\":\"ready\",\"backends\":%zu,"
                               "\"usable_backends\":%zu,\"models\":%zu}",
                            gw->config->n_backends,
                            gw_states_usable(gw->config, gw_now_us()),
                            gw->config->n_model_names);
        reply_json(gw, req, rl, 200, b);
    } else {
        evbuffer_add(b, "{\"status\":\"not ready\"}", 22);
        gw_http_add_header(req, "Retry-After", "1");
        reply_json(gw, req, rl, 503, b);
    }
    evbuffer_free(b);
}

/* The virtual key the request presents (Authorization: Bearer, or the
 * api-key / x-api-key headers some clients use), or NULL after answering
 * 401. The key is hashed and compared in constant time; it is never
 * logged. */
static const struct gw_key *authenticate(struct gw_gateway *gw,
                                         struct gw_http_req *req,
                                         struct gw_reqlog *rl)
{
    const char *h = gw_http_req_header(req, "authorization");
    unsigned char digest[32];
    unsigned int n = 0;
    const struct gw_key *key;

    if (h && strncasecmp(h, "Bearer ", 7) == 0)
        h += 7;
    else if (h)
        h = NULL;
    if (h == NULL)
        h = gw_http_req_header(req, "api-key");
    if (h == NULL)
        h = gw_http_req_header(req, "x-api-key");
    if (h == NULL || *h == '\0') {
        gw_proxy_error(gw, req, rl, 401, "missing_api_key",
                       "no API key: send it as 'Authorization: Bearer KEY'");
        return NULL;
    }
    while (*h == ' ')
        h++;
    if (EVP_Digest(h, strlen(h), digest, &n, gw_sha256(), NULL) != 1 ||
        (key = gw_config_key_by_digest(gw->config, digest)) == NULL) {
        gw_proxy_error(gw, req, rl, 401, "invalid_api_key",
                       "the API key is not valid for this gateway");
        return NULL;
    }
    return key;
}

static long number_field(const struct gw_jscan_field *f)
{
    long v = 0;
    size_t i;

    if (f->type != GW_JSON_NUMBER)
        return -1;
    for (i = 0; i < f->len && f->val[i] >= '0' && f->val[i] <= '9'; i++)
        if (v < 100000000L)
            v = v * 10 + (f->val[i] - '0');
    return i == f->len ? v : -1; /* negative or fractional: not a count */
}

static void add_num_header(struct gw_http_req *req, const char *name, long v)
{
    char buf[GW_FMT_NUM];

    gw_fmt_long(buf, v);
    gw_http_add_header(req, name, buf);
}

/* The x-ratelimit-* headers, named and formatted as OpenAI does. */
static void limit_headers(struct gw_http_req *req,
                          const struct gw_limit_result *r)
{
    char buf[32];

    if (r->limit_req >= 0) {
        add_num_header(req, "x-ratelimit-limit-requests", r->limit_req);
        add_num_header(req, "x-ratelimit-remaining-requests",
                       r->remaining_req);
        gw_limit_fmt_reset(r->reset_req_ms, buf, sizeof(buf));
        gw_http_add_header(req, "x-ratelimit-reset-requests", buf);
    }
    if (r->limit_tok >= 0) {
        add_num_header(req, "x-ratelimit-limit-tokens", r->limit_tok);
        add_num_header(req, "x-ratelimit-remaining-tokens", r->remaining_tok);
        gw_limit_fmt_reset(r->reset_tok_ms, buf, sizeof(buf));
        gw_http_add_header(req, "x-ratelimit-reset-tokens", buf);
    }
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#define DEFAULT_MAX_TOKENS 256

/* What the stages before routing decided, handed to the rest. */
struct gw_fwd {
    struct gw_config *config; /* borrowed, or owned by a pending decision */
    char model[MAX_MODEL_LEN + 1];
    int stream;
    const char *suffix;        /* static: the upstream path */
    const struct gw_key *key;  /* borrowed from config, or NULL */
    struct gw_admit admit;     /* the rate-limit reservation */
};

static int cache_stage(struct gw_gateway *gw, struct gw_http_req *req,
                       struct gw_reqlog *rl, struct gw_fwd *f,
                       struct gw_cache_fill **fill);
static int ask_for_usage(struct gw_http_req *req);

/* The route stage and the upstream call; fill (owned, may be NULL) is the
 * cache entry the answer fills. */
static void route(struct gw_gateway *gw, struct gw_http_req *req,
                  struct gw_reqlog *rl, struct gw_fwd *f,
                  struct gw_cache_fill *fill)
{
    struct gw_config *c = f->config;
    const char *model = f->model;
    struct gw_backend *b;
    char msg[512];

    b = gw_config_backend_for(c, model);
    if (b == NULL) {
        snprintf(msg, sizeof(msg),
                 "the model '%s' does not exist or is not served by this "
                 "gateway (GET /v1/models lists them)", model);
        gw_cache_fill_free(fill);
        gw_limit_release(gw->limiter, &f->admit, 0, wall_ms());
        gw_proxy_error(gw, req, rl, 404, "model_not_found", msg);
        return;
    }
    /* a stream stored for the cache keeps its usage (stripped live) */
    if (fill && !f->admit.injected_usage && gw_cache_fill_wants_usage(fill))
        f->admit.injected_usage = ask_for_usage(req);
    /* the model's pool picks the backend (pool.c, strategies, breakers,
     * max_inflight) in upstream.c, which retries and answers 503 itself */
    gw_upstream_start(gw, req, c, NULL, model, f->stream, f->suffix,
                      rl->request_id, f->key ? f->key->name : NULL,
                      &f->admit, fill);
}

/* The stages after the rate limit: cache lookup, route, upstream. Runs at
 * once, or later when a rate-limit decision came from Redis. */
static void forward(struct gw_gateway *gw, struct gw_http_req *req,
                    struct gw_reqlog *rl, struct gw_fwd *f)
{
    struct gw_cache_fill *fill = NULL;

    rl->model = f->model;
    /* stage: cache lookup */
    if (f->config->cache.enabled && cache_stage(gw, req, rl, f, &fill))
        return;
    /* stage: route */
    route(gw, req, rl, f, fill);
}

/* A stream is settled from its final usage chunk: when the client did not
 * ask for one, ask upstream for it (the relay strips it again). Returns 1
 * when the body was changed. */
static int ask_for_usage(struct gw_http_req *req)
{
    static const char opt[] = "{\"stream_options\":{\"include_usage\":true},";
    struct evbuffer_ptr brace = evbuffer_search(req->body, "{", 1, NULL);

    if (brace.pos < 0)
        return 0;
    evbuffer_drain(req->body, (size_t)brace.pos + 1);
    return evbuffer_prepend(req->body, opt, sizeof(opt) - 1) == 0;
}

/* A request waiting for its rate-limit decision from Redis. */
struct pending {
    struct gw_gateway *gw;   /* borrowed */
    struct gw_http_req *req; /* borrowed until resumed or the client left */
    struct gw_fwd fwd;       /* fwd.config: owned reference */
    struct gw_reqlog rl;
    char request_id[136];
    struct gw_rlop *op; /* borrowed from rlredis until answered */
    struct gw_cache_op *cop; /* borrowed from cache.c until answered */
};

static void pending_free(struct pending *p)
{
    gw_config_unref(p->fwd.config);
    free(p);
}

static void deny_429(struct gw_gateway *gw, struct gw_http_req *req,
                     struct gw_reqlog *rl, const struct gw_limit_result *lr)
{
    char ra[24], ra_ms[24];

    snprintf(ra, sizeof(ra), "%ld", (lr->retry_after_ms + 999) / 1000);
    snprintf(ra_ms, sizeof(ra_ms), "%ld", lr->retry_after_ms);
    gw_http_add_header(req, "retry-after-ms", ra_ms);
    gw_http_add_header(req, "retry-after", ra);
    gw_proxy_error(gw, req, rl, 429, lr->code, lr->message);
}

static void pending_client_gone(struct gw_http_req *req, void *arg)
{
    struct pending *p = arg;

    (void)req;
    gw_rlredis_cancel(p->op);
    gw_limit_release(p->gw->limiter, &p->fwd.admit, -1, wall_ms());
    p->rl.status = 499;
    p->rl.error = "client_closed";
    gw_proxy_log(p->gw, p->req, &p->rl);
    pending_free(p);
}

static void pending_decided(void *arg, int ok, const struct gw_limit_result *lr)
{
    struct pending *p = arg;
    struct gw_gateway *gw = p->gw;
    struct gw_http_req *req = p->req;

    gw_http_req_set_callbacks(req, NULL, NULL, NULL);
    if (!ok) {
        /* Redis did not answer within its timeout: on_error decides */
        if (p->fwd.config->rl_fail_closed) {
            struct gw_limit_result r = {0};
            r.retry_after_ms = 1000;
            r.code = "rate_limit_unavailable";
            snprintf(r.message, sizeof(r.message),
                     "the rate limiter (redis) is unavailable and "
                     "rate_limit.on_error is \"closed\"; retry shortly");
            gw_limit_release(gw->limiter, &p->fwd.admit, -1, wall_ms());
            deny_429(gw, req, &p->rl, &r);
            pending_free(p);
            return;
        }
        p->fwd.admit.remote = NULL; /* nothing to settle in Redis */
        forward(gw, req, &p->rl, &p->fwd);
        pending_free(p);
        return;
    }
    limit_headers(req, lr);
    if (!lr->allowed) {
        gw_limit_release(gw->limiter, &p->fwd.admit, -1, wall_ms());
        p->fwd.admit.active = 0;
        deny_429(gw, req, &p->rl, lr);
        pending_free(p);
        return;
    }
    forward(gw, req, &p->rl, &p->fwd);
    pending_free(p);
}

static void cache_client_gone(struct gw_http_req *req, void *arg)
{
    struct pending *p = arg;

    (void)req;
    gw_cache_op_cancel(p->cop);
    gw_limit_release(p->gw->limiter, &p->fwd.admit, 0, wall_ms());
    p->rl.status = 499;
    p->rl.error = "client_closed";
    gw_proxy_log(p->gw, p->req, &p->rl);
    pending_free(p);
}

static void cache_resumed(void *arg, int answered, struct gw_cache_fill *fill)
{
    struct pending *p = arg;

    gw_http_req_set_callbacks(p->req, NULL, NULL, NULL);
    if (answered)
        gw_limit_release(p->gw->limiter, &p->fwd.admit, 0, wall_ms());
    else
        route(p->gw, p->req, &p->rl, &p->fwd, fill);
    pending_free(p);
}

/* The cache stage (cache.c decides and answers hits). Returns 0 to route
 * the request with *fill, 1 when it was answered or waits for the cache
 * (Redis, or an identical request upstream) and resumes later. */
static int cache_stage(struct gw_gateway *gw, struct gw_http_req *req,
                       struct gw_reqlog *rl, struct gw_fwd *f,
                       struct gw_cache_fill **fill)
{
    struct gw_cache_op *op;
    struct pending *p;

    switch (gw_cache_lookup(gw, req, rl, f->config, f->key, f->model,
                            f->suffix, f->stream, f->admit.injected_usage,
                            fill, &op)) {
    case GW_CACHE_GO:
        return 0;
    case GW_CACHE_ANSWERED:
        gw_limit_release(gw->limiter, &f->admit, 0, wall_ms());
        return 1;
    case GW_CACHE_WAIT:
        break;
    }
    if ((p = calloc(1, sizeof(*p))) == NULL) {
        gw_cache_op_cancel(op);
        gw_cache_error_header(req); /* bypass */
        return 0;
    }
    p->gw = gw;
    p->req = req;
    p->fwd = *f;
    p->fwd.config = gw_config_ref(f->config);
    p->rl = *rl;
    gw_copy(p->request_id, sizeof(p->request_id), rl->request_id);
    p->rl.request_id = p->request_id;
    p->rl.model = p->fwd.model;
    p->cop = op;
    gw_cache_op_wait(op, &p->rl, cache_resumed, p);
    gw_http_req_set_callbacks(req, cache_client_gone, NULL, p);
    return 1;
}

/* A count field of the body (n, max_tokens) against its limits.* bound:
 * a JSON number must be a plain integer from 0 to bound, else 400 naming
 * the field and the bound (a huge "n" multiplies the upstream work and
 * "max_tokens" drives the token reservation). Other types (null, a
 * string) are the backend's to judge. Returns 1 after answering. */
static int over_bound(struct gw_gateway *gw, struct gw_http_req *req,
                      struct gw_reqlog *rl, const struct gw_jscan_field *f,
                      const char *field, long bound, const char *limit)
{
    char msg[256];
    long v = 0;
    size_t i;

    if (f->type != GW_JSON_NUMBER)
        return 0;
    for (i = 0; i < f->len && f->val[i] >= '0' && f->val[i] <= '9'; i++)
        if ((v = v * 10 + (f->val[i] - '0')) > bound)
            break;
    if (i == f->len && v <= bound)
        return 0;
    /* OpenAI's words and code for its own bounds */
    snprintf(msg, sizeof(msg), "Invalid '%s': expected an integer from 0 "
             "to %ld (limits.%s of this gateway), but got %.*s%s instead",
             field, bound, limit, (int)(f->len > 40 ? 40 : f->len), f->val,
             f->len > 40 ? "..." : "");
    gw_proxy_error(gw, req, rl, 400, "integer_above_max_value", msg);
    return 1;
}

/* POST /v1/{chat/completions,completions,embeddings}. */
static void handle_inference(struct gw_gateway *gw, struct gw_http_req *req,
                             struct gw_reqlog *rl, const char *suffix)
{
    struct gw_config *c = gw->config;
    size_t len = evbuffer_get_length(req->body);
    struct gw_jscan_field f[8] = {{.key = "model"},
                                  {.key = "stream"},
                                  {.key = "max_tokens"},
                                  {.key = "max_completion_tokens"},
                                  {.key = "prompt"},
                                  {.key = "user"},
                                  {.key = "stream_options"},
                                  {.key = "n"}};
    struct gw_prompt_scan ps;
    const struct gw_key *key = NULL;
    struct gw_admit admit = {0};
    struct gw_fwd fwd;
    char msg[512], err[256], model[MAX_MODEL_LEN + 1];
    size_t n_members = 0;
    int stream;

    if (len == 0) {
        gw_proxy_error(gw, req, rl, 400, "invalid_json",
                       "request body is empty: send a JSON object with "
                       "\"model\"");
        return;
    }
    /* validate the whole body, read only what routing needs (and what a
     * registry prompt holds): no tree */
    gw_prompt_scan_init(&ps, &f[4]);
    if (gw_jscan_count((const char *)evbuffer_pullup(req->body, -1), len,
                       MAX_JSON_DEPTH, f, 8, &n_members, err,
                       sizeof(err)) < 0) {
        snprintf(msg, sizeof(msg), "request body is not valid JSON: %s", err);
        gw_proxy_error(gw, req, rl, 400, "invalid_json", msg);
        return;
    }
    /* a registry prompt may supply the model (resolve prompt stage) */
    model[0] = '\0';
    if ((f[0].type != GW_JSON_STRING || f[0].len == 0) &&
        !(f[0].type == GW_JSON_NONE && f[4].type == GW_JSON_OBJECT)) {
        gw_proxy_error(gw, req, rl, 400, "missing_model",
                       "\"model\" must be a non-empty string naming a "
                       "model (GET /v1/models lists them)");
        return;
    }
    if (f[0].type == GW_JSON_STRING &&
        (f[0].len > MAX_MODEL_LEN ||
         gw_jscan_string(&f[0], model, sizeof(model)) < 0)) {
        gw_proxy_error(gw, req, rl, 404, "model_not_found",
                       "the model name is longer than 256 bytes or holds a "
                       "NUL; no such model is served here");
        return;
    }
    if (f[1].type != GW_JSON_NONE && f[1].type != GW_JSON_TRUE &&
        f[1].type != GW_JSON_FALSE && f[1].type != GW_JSON_NULL) {
        gw_proxy_error(gw, req, rl, 400, "invalid_stream",
                       "\"stream\" must be true or false");
        return;
    }
    stream = f[1].type == GW_JSON_TRUE;
    rl->model = model;
    rl->stream = stream;

    /* Stages of the request path, in this order (DESIGN.md); each feature
     * adds its step at its marker and nowhere else in this function:
     *   authenticate the virtual key           (keys: 401/403)
     *   resolve the registry prompt            (prompt: 400/404)
     *   rate limit                             (limits: 429)
     *   cache lookup                           (cache)
     *   route: model -> pool -> backend        (routing)
     */
    /* stage: authenticate */
    if (c->n_keys > 0) {
        if ((key = authenticate(gw, req, rl)) == NULL)
            return;
        rl->key = key->name;
    }
    /* stage: resolve prompt */
    if (f[4].type == GW_JSON_OBJECT &&
        gw_prompt_resolve(gw, req, rl, f, sizeof(f) / sizeof(f[0]),
                          n_members, 4, 5, rl->key, model,
                          sizeof(model)) < 0)
        return;
    /* the model is known now, also when a registry prompt supplied it */
    if (key && !gw_key_allows(key, model)) {
        snprintf(msg, sizeof(msg), "key '%s' may not use the model '%s'",
                 key->name, model);
        gw_proxy_error(gw, req, rl, 403, "model_not_allowed", msg);
        return;
    }
    /* n and max_tokens within limits (after the prompt stage, so that a
     * version's params are held to them too) */
    if (over_bound(gw, req, rl, &f[7], "n", c->limits.max_n, "max_n") ||
        over_bound(gw, req, rl, &f[2], "max_tokens", c->limits.max_tokens,
                   "max_tokens") ||
        over_bound(gw, req, rl, &f[3], "max_completion_tokens",
                   c->limits.max_tokens, "max_tokens"))
        return;
    /* stage: rate limit */
    if (key) {
        struct gw_limit_result lr;
        long max_tokens = number_field(&f[2]);
        if (max_tokens < 0)
            max_tokens = number_field(&f[3]);
        if (max_tokens < 0)
            max_tokens = DEFAULT_MAX_TOKENS;
        /* about four bytes a token; settled from usage when it ends */
        long est = (long)(len / 4) + max_tokens;
        int inject = stream && f[6].type == GW_JSON_NONE &&
                     (key->rate.tpm || key->daily_tokens ||
                      key->n_model_rates);
        if (c->rl_mode == GW_RL_REDIS && gw->rlredis) {
            struct pending *p;
            if (gw_limit_take_slot(gw->limiter, key, model, est, gw->rlredis,
                                   &admit, &lr) < 0 ||
                (lr.allowed && (p = calloc(1, sizeof(*p))) == NULL)) {
                gw_limit_release(gw->limiter, &admit, 0, wall_ms());
                gw_proxy_error(gw, req, rl, 500, "out_of_memory",
                               "out of memory");
                return;
            }
            if (!lr.allowed) {
                deny_429(gw, req, rl, &lr);
                return;
            }
            p->gw = gw;
            p->req = req;
            p->fwd.config = gw_config_ref(c);
            gw_copy(p->fwd.model, sizeof(p->fwd.model), model);
            p->fwd.stream = stream;
            p->fwd.suffix = suffix;
            p->fwd.key = key;
            p->fwd.admit = admit;
            if (inject)
                p->fwd.admit.injected_usage = ask_for_usage(req);
            p->rl = *rl;
            snprintf(p->request_id, sizeof(p->request_id), "%s",
                     rl->request_id);
            p->rl.request_id = p->request_id;
            p->rl.model = p->fwd.model;
            p->rl.key = key->name;
            p->op = gw_rlredis_admit(gw->rlredis, key, model,
                                     p->fwd.admit.mrate, est,
                                     pending_decided, p);
            if (p->op == NULL) {
                pending_decided(p, 0, NULL); /* not connected: on_error */
                return;
            }
            gw_http_req_set_callbacks(req, pending_client_gone, NULL, p);
            return;
        }
        if (gw_limit_admit(gw->limiter, key, model, est, wall_ms(), &admit,
                           &lr) < 0) {
            gw_proxy_error(gw, req, rl, 500, "out_of_memory", "out of memory");
            return;
        }
        limit_headers(req, &lr);
        if (!lr.allowed) {
            deny_429(gw, req, rl, &lr);
            return;
        }
        if (inject)
            admit.injected_usage = ask_for_usage(req);
    }
    fwd.config = c;
    gw_copy(fwd.model, sizeof(fwd.model), model);
    fwd.stream = stream;
    fwd.suffix = suffix;
    fwd.key = key;
    fwd.admit = admit;
    forward(gw, req, rl, &fwd);
}

static const struct route {
    const char *path;
    const char *method;
    int kind;
    const char *suffix;
} routes[] = {
    {"/v1/chat/completions", "POST", 0, "/chat/completions"},
    {"/v1/completions", "POST", 0, "/completions"},
    {"/v1/embeddings", "POST", 0, "/embeddings"},
    {"/v1/models", "GET", 1, NULL},
    {"/healthz", "GET", 2, NULL},
    {"/readyz", "GET", 3, NULL},
    {"/admin/backends", "GET", 5, NULL},
    {"/admin/cache/purge", "POST", 6, NULL},
    {"/admin/cache", "GET", 7, NULL},
    {"/v1/feedback", "POST", 4, NULL},
    {NULL, NULL, 0, NULL},
};

void gw_proxy_reject(struct gw_http_req *req, int status, const char *code,
                     const char *message, void *arg)
{
    struct gw_gateway *gw = arg;
    struct gw_reqlog rl;
    char id[136];

    gw_metrics_begin(gw->metrics);
    request_id(gw, req, id, sizeof(id));
    memset(&rl, 0, sizeof(rl));
    rl.request_id = id;
    rl.ttfb_us = -1;
    gw_usage_init(&rl.usage);
    gw_http_add_header(req, "x-request-id", id);
    gw_proxy_error(gw, req, &rl, status, code, message);
}

void gw_proxy_handle(struct gw_http_req *req, void *arg)
{
    struct gw_gateway *gw = arg;
    struct gw_reqlog rl;
    const struct route *r;
    char id[136], msg[256];

    gw_metrics_begin(gw->metrics);
    request_id(gw, req, id, sizeof(id));
    memset(&rl, 0, sizeof(rl));
    rl.request_id = id;
    rl.ttfb_us = -1;
    gw_usage_init(&rl.usage);
    gw_http_add_header(req, "x-request-id", id);

    if (gw_metrics_serves(gw->metrics, gw->config, req->path)) {
        gw_metrics_handle(gw, req, &rl);
        return;
    }
    for (r = routes; r->path; r++)
        if (strcmp(req->path, r->path) == 0)
            break;
    if (r->path == NULL) {
        snprintf(msg, sizeof(msg), "unknown route '%.200s'", req->path);
        gw_proxy_error(gw, req, &rl, 404, "unknown_route", msg);
        return;
    }
    if (strcmp(req->method, r->method) != 0 &&
        !(strcmp(req->method, "HEAD") == 0 && strcmp(r->method, "GET") == 0)) {
        snprintf(msg, sizeof(msg), "method %.16s is not allowed on '%s'; "
                 "use %s", req->method, r->path, r->method);
        gw_http_add_header(req, "Allow", r->method);
        gw_proxy_error(gw, req, &rl, 405, "method_not_allowed", msg);
        return;
    }
    switch (r->kind) {
    case 0:
        handle_inference(gw, req, &rl, r->suffix);
        break;
    case 1:
        handle_models(gw, req, &rl);
        break;
    case 4:
        /* outcomes are posted with the same keys as requests */
        if (gw->config->n_keys > 0) {
            const struct gw_key *k = authenticate(gw, req, &rl);
            if (k == NULL)
                break;
            rl.key = k->name;
        }
        gw_prompt_feedback(gw, req, &rl);
        break;
    case 5:
        gw_admin_backends(gw, req, &rl);
        break;
    case 6:
        gw_cache_purge(gw, req, &rl);
        break;
    case 7:
        gw_cache_stats(gw, req, &rl);
        break;
    default:
        handle_simple(gw, req, &rl, r->kind == 3);
        break;
    }
}
