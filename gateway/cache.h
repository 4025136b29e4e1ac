/*
 * cache.h - the response cache (issue 5): exact-match entries keyed by a
 * SHA-256 of the canonical request, kept in an in-process LRU bounded in
 * bytes ("memory") or in Redis ("redis"). One entry holds the answer as a
 * JSON body and as SSE events, so a streamed miss serves later non-stream
 * hits and the other way round.
 *
 * On the request path: gw_cache_lookup at the cache stage of proxy.c;
 * the fill it returns rides with the upstream call (upstream.c), which
 * feeds it the answer and stores it only when the call ended complete.
 */
#ifndef GW_CACHE_H
#define GW_CACHE_H

#include <stddef.h>

struct event_base;
struct gw_config;
struct gw_gateway;
struct gw_http_req;
struct gw_key;
struct gw_reqlog;
struct gw_cache;
struct gw_cache_fill;
struct gw_cache_op;

struct gw_memstore;

/* The memory store: shared by every worker (sharded, a mutex per shard),
 * made once at start; max_bytes follows cache.max_bytes on reload. NULL
 * on out of memory. */
struct gw_memstore *gw_memstore_new(size_t max_bytes, size_t max_entry);
void gw_memstore_free(struct gw_memstore *ms); /* NULL is a no-op */

/* One worker's cache of config c's "cache" section on base (its own
 * Redis client, coalescing flights and counters), using the memory store
 * shared (NULL: one of its own). The backend is fixed from then on; ttl
 * and entry size are read from each request's config. NULL on out of
 * memory. */
struct gw_cache *gw_cache_new(struct event_base *base,
                              const struct gw_config *c,
                              struct gw_memstore *shared);
/* SIGHUP: applies c's max_bytes (evicting at once) and redis.timeout_ms;
 * a new backend (warned) or Redis address takes a restart. NULL: no-op. */
void gw_cache_reload(struct gw_cache *cache, const struct gw_config *c);
/* Pending lookups are dropped (their requests must be gone). NULL: no-op */
void gw_cache_free(struct gw_cache *cache);

enum gw_cache_verdict {
    GW_CACHE_GO,       /* route it upstream now, with *fill (may be NULL) */
    GW_CACHE_ANSWERED, /* a hit was answered and logged */
    GW_CACHE_WAIT      /* *op answers later: call gw_cache_op_wait */
};

/* The cache stage of an inference request whose config has a cache:
 * decides hit, miss or bypass (adds x-promptgate-cache, and age on hits),
 * answers hits. suffix is the upstream path ("/chat/completions"). On GO,
 * *fill (owned by the caller, NULL when nothing is to be stored) goes to
 * gw_upstream_start. On WAIT (a Redis lookup, or an identical request
 * already upstream) the caller must call gw_cache_op_wait before going
 * back to the loop, or gw_cache_op_cancel. */
enum gw_cache_verdict gw_cache_lookup(struct gw_gateway *gw,
                                      struct gw_http_req *req,
                                      struct gw_reqlog *rl,
                                      struct gw_config *c,
                                      const struct gw_key *key,
                                      const char *model, const char *suffix,
                                      int stream, int usage_injected,
                                      struct gw_cache_fill **fill,
                                      struct gw_cache_op **op);

/* answered 1: the hit was answered and logged (fill is NULL); 0: go
 * upstream with fill (owned by the callee from now on, may be NULL). */
typedef void (*gw_cache_resume_cb)(void *arg, int answered,
                                   struct gw_cache_fill *fill);

/* Arms a pending lookup: cb runs once, from the loop, within
 * redis.timeout_ms (a timeout is a miss). rl is borrowed until then. */
void gw_cache_op_wait(struct gw_cache_op *op, struct gw_reqlog *rl,
                      gw_cache_resume_cb cb, void *arg);

/* The callback will not run (the client went away). */
void gw_cache_op_cancel(struct gw_cache_op *op);

/* The upstream side. An SSE event's data (each event of a 200 stream, in
 * order, before anything strips it). */
void gw_cache_fill_event(struct gw_cache_fill *f, const char *data,
                         size_t len);
/* The call ended complete: a 2xx JSON body, or (json NULL) the stream fed
 * so far ended with [DONE]. Stores it unless over max_entry_bytes. */
void gw_cache_fill_store(struct gw_cache_fill *f, const char *json,
                         size_t len);
/* 1 when the request streams without stream_options: the caller asks
 * upstream for the usage chunk (and strips it), so the entry has usage. */
int gw_cache_fill_wants_usage(const struct gw_cache_fill *f);

/* Drops the fill (whatever was not stored is not). NULL is a no-op. */
void gw_cache_fill_free(struct gw_cache_fill *f);

/* Errors of the inference routes answered before the cache stage carry
 * x-promptgate-cache: bypass too. */
void gw_cache_error_header(struct gw_http_req *req);

/* GET /admin/cache: the backend and its counters (admin key required):
 * hits, misses, bypasses, stores, errors (Redis timeouts and failures),
 * coalesced (requests that waited on an identical one), evictions. */
void gw_cache_stats(struct gw_gateway *gw, struct gw_http_req *req,
                    struct gw_reqlog *rl);

/* Metrics (metrics.c): lookups and stores that failed on the backend
 * (Redis errors and timeouts; such a lookup answered as a miss). */
unsigned long gw_cache_errors(const struct gw_cache *cache);

/* POST /admin/cache/purge {"namespace": "NAME"} (admin key required). */
void gw_cache_purge(struct gw_gateway *gw, struct gw_http_req *req,
                    struct gw_reqlog *rl);

#endif
