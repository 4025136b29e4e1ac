/*
 * gateway.h - the program-wide header of bin/promptgate.
 *
 * Lower layers (http, curlev, sse, accesslog, log, error, usage) never
 * include this file; it ties them together for the proxy.
 */
#ifndef GW_GATEWAY_H
#define GW_GATEWAY_H

#include <stdint.h>
#include <sys/time.h>
#include <curl/curl.h>
#include <sys/socket.h>

#include "gateway/config.h"
#include "gateway/usage.h"

struct event_base;
struct gw_curlev;
struct gw_http_server;
struct gw_http_req;
struct gw_accesslog;
struct gw_uppool;
struct gw_prompts;
struct gw_backend_states;
struct gw_health;
struct gw_prompts;
struct gw_limiter;
struct gw_rlredis;
struct gw_admit;

/* A redis limiter replaced by a reload: requests in flight may still
 * settle there. */
struct gw_rl_retired {
    struct gw_rlredis *r; /* owned */
    time_t since;         /* monotonic seconds */
};
struct gw_cache;
struct gw_cache_fill;
struct gw_metrics;

#define GW_VERSION "0.1.0"

/* One worker: an event loop thread with its own listener socket
 * (SO_REUSEPORT), curl multi, upstream pools, access-log buffer, Redis
 * clients and response cache. The limiter, backend states, registry
 * prompts, health checks and the config's reference count are shared by
 * every worker (each is safe across threads without a global lock); the
 * metrics are per worker and added up at scrape (metrics.c). Worker 0 runs
 * on the main thread and also owns signals, health checks and the metrics
 * listener. Fields below marked "shared" point at the same object in every
 * worker. */
struct gw_call;

struct gw_gateway {
    int worker_id;               /* 0 .. n_workers - 1 */
    size_t n_workers;
    struct gw_gateway *const *workers; /* borrowed: every worker, by id */
    struct event_base *base;     /* owned */
    struct gw_curlev *curl;      /* owned */
    struct gw_http_server *http; /* owned */
    struct gw_config *config;    /* owned reference: the current config */
    struct gw_accesslog *alog;   /* owned */
    struct gw_prompts *prompts;  /* shared: registry snapshot and exposure
                                    log; NULL without "registry" */
    struct gw_limiter *limiter;  /* shared: rate-limit state, across reloads */
    struct gw_rlredis *rlredis;  /* owned: redis-mode limiter, or NULL */
    struct gw_rl_retired *rl_retired; /* owned: clients replaced by a reload,
                                         freed once idle (main.c) */
    size_t n_rl_retired;
    unsigned long rl_errors;     /* errors of every redis limiter client of
                                    this worker (atomic: scrapes on other
                                    workers read it) */
    const char *config_path;     /* borrowed from argv */
    uint64_t rng;                /* request id generator state */
    struct gw_uppool **pools;    /* owned: keep-alive pools by address */
    struct sockaddr_storage *pool_addrs; /* owned: address of pools[i] */
    size_t n_pools;
    unsigned long calls;         /* upstream calls in flight */
    struct gw_call *spare_calls; /* owned: finished calls kept for reuse
                                    (their buffer and timer), a list */
    int n_spare_calls;
    unsigned long retries;       /* of which on a retry attempt (budget) */
    int64_t retry_warn_us;       /* last "retry budget spent" line */
    unsigned long retry_quiet;   /* refusals not logged since */
    unsigned long retries_refused; /* retries the budget refused (atomic:
                                      scrapes on other workers read it) */
    struct gw_backend_states *states; /* shared: backend state by name,
                                         across reloads (pool.c) */
    struct gw_health *health;    /* shared, run by worker 0: active health
                                    checks */
    struct gw_cache *cache;      /* owned: the response cache, NULL until a
                                    config has "cache" (cache.c) */
    struct gw_memstore *memstore; /* shared: the memory cache's entries */
    struct gw_metrics *metrics;  /* owned: this worker's counters across
                                    reloads (metrics.c) */
};

/* What the access log records of one request. */
struct gw_reqlog {
    const char *request_id; /* borrowed */
    const char *model;      /* borrowed, may be NULL */
    const char *backend;    /* borrowed, may be NULL */
    const char *key;        /* borrowed: the virtual key's name, or NULL */
    int status;
    int stream;
    long ttfb_us; /* -1 when no byte came from upstream */
    struct gw_usage usage;
    const char *error; /* borrowed: error code, or NULL */
    int attempts;      /* upstream attempts (routing); 0: none made */
};

/* proxy.c: the HTTP handler for every request. */
void gw_proxy_handle(struct gw_http_req *req, void *arg);

/* proxy.c: the HTTP error handler (errors found while reading). */
void gw_proxy_reject(struct gw_http_req *req, int status, const char *code,
                     const char *message, void *arg);

/* proxy.c: writes the access log line of a request that ends now. */
void gw_proxy_log(struct gw_gateway *gw, struct gw_http_req *req,
                  const struct gw_reqlog *rl);

/* proxy.c: answers with an OpenAI-shaped error (and logs it). */
void gw_proxy_error(struct gw_gateway *gw, struct gw_http_req *req,
                    struct gw_reqlog *rl, int status, const char *code,
                    const char *message);

/* upstream.c: starts relaying req for model. backend NULL lets the model's
 * pool pick (pool.c), with retries and fallbacks; a backend pins the first
 * attempt there. Takes a reference to config. On failure (nothing usable:
 * 503 with retry-after) answers the client itself. fill (owned from now
 * on, may be NULL) is the cache entry the answer fills (cache.c). */
void gw_upstream_start(struct gw_gateway *gw, struct gw_http_req *req,
                       struct gw_config *config, struct gw_backend *backend,
                       const char *model, int stream, const char *path_suffix,
                       const char *request_id, const char *key_name,
                       const struct gw_admit *admit,
                       struct gw_cache_fill *fill);

/* admin.c: 0 when req carries the admin key, else -1 after answering
 * (404 admin API off, 401, 403). */
int gw_admin_check(struct gw_gateway *gw, struct gw_http_req *req,
                   struct gw_reqlog *rl);

/* admin.c: GET /admin/backends (admin_key required). */
void gw_admin_backends(struct gw_gateway *gw, struct gw_http_req *req,
                       struct gw_reqlog *rl);

/* upstream.c: frees the keep-alive pools (at exit). */
void gw_upstream_free_pools(struct gw_gateway *gw);
/* The finished calls a worker kept for reuse, at its end. */
void gw_upstream_free_spares(struct gw_gateway *gw);

/* upstream.c: the curlev done callback. */
void gw_upstream_done(CURL *easy, CURLcode result, void *priv);

#endif
