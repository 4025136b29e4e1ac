/*
 * pool.h - model pools and the strategies that pick a backend in them,
 * and the runtime state of every backend (breaker, in-flight, latency)
 * that outlives config reloads.
 *
 * A pool is part of a config snapshot (built by gw_pools_build when the
 * config is parsed). Backend state lives in a table owned by the gateway
 * and keyed by backend name, so a SIGHUP keeps breakers and counters; each
 * loaded config is attached to it (gw_states_attach) before it serves.
 */
#ifndef GW_POOL_H
#define GW_POOL_H

#include <stddef.h>
#include <stdint.h>

#include "gateway/breaker.h"
#include "gateway/config.h"
#include "gateway/metrics.h"

struct evbuffer;
struct gw_hcheck;

#define GW_POOL_MAX_FALLBACKS 8

struct gw_backend_state {
    char name[72];
    struct gw_breaker breaker; /* breaker.name points at name above */
    int inflight;              /* attempts in flight, across reloads */
    int64_t ewma_us;           /* time to answer head; -1: no sample yet */
    unsigned long attempts, failures, retries_to; /* since start */
    int in_config;             /* named by the current config */
    struct gw_hcheck *health;  /* owned by health.c (gw_health_free) */
    struct gw_metrics_hist head; /* answered attempts' time to head */
};

struct gw_backend_states {
    struct gw_backend_state **v; /* owned: n entries, each owned */
    size_t n;
};

struct gw_pool {
    const char *model;            /* borrowed from the config */
    struct gw_backend **backends; /* owned array; backends borrowed from
                                     the same config */
    int *current;                 /* owned: smooth round robin weights */
    size_t n;
    enum gw_strategy strategy;
    struct gw_pool *fallbacks[GW_POOL_MAX_FALLBACKS]; /* borrowed: same
                                                         config */
    size_t n_fallbacks;
    unsigned rr; /* rotating start for ties */
};

/* Builds c->pools from c's backends and model_confs. Returns 0, or -1
 * with a message in err (a model conf naming an unknown model). */
int gw_pools_build(struct gw_config *c, char *err, size_t errlen);
void gw_pools_free(struct gw_config *c);

/* The pool of model in c, or NULL when no backend serves it. */
struct gw_pool *gw_pool_find(struct gw_config *c, const char *model);

/* Why gw_pool_pick found nothing. */
struct gw_pick_why {
    int busy;          /* some backend was left out for max_inflight */
    int open;          /* some backend was left out by its breaker */
    int64_t reopen_us; /* earliest time an open breaker lets one through */
};

/* Picks a backend of pool for one attempt, by the pool's strategy, among
 * those not in tried[0..n_tried), whose breaker lets an attempt through
 * and that are under max_inflight; lowest priority tier first. When every
 * backend is out by answered-error breakers only, probes one early (the
 * pool never ejects all on a blip). Acquires the breaker (*probe says
 * whether the attempt is a half-open probe). NULL when none is usable
 * (why says what kept them out). rng: xorshift state for `latency`. */
struct gw_backend *gw_pool_pick(struct gw_pool *pool, int64_t now_us,
                                uint64_t *rng, struct gw_backend *const *tried,
                                size_t n_tried, int *probe,
                                struct gw_pick_why *why);

/* The end of an attempt on b: updates the breaker, the latency EWMA (on
 * success, with ttfb_us) and the counters. */
void gw_pool_record(struct gw_backend *b, int64_t now_us, int probe,
                    enum gw_breaker_outcome outcome, long ttfb_us,
                    long retry_after_ms);

struct gw_backend_states *gw_states_new(void);
void gw_states_free(struct gw_backend_states *s); /* NULL is a no-op */

/* Points every backend of c at its state (created on first sight), and
 * marks which states the config names. Returns 0 or -1 (out of memory;
 * c is then not usable). */
int gw_states_attach(struct gw_backend_states *s, struct gw_config *c);

/* Backends of c whose breaker lets an attempt through now (/readyz). */
size_t gw_states_usable(const struct gw_config *c, int64_t now_us);

/* GET /admin/backends: the JSON document of every backend of c. */
void gw_states_json(struct gw_config *c, int64_t now_us, struct evbuffer *out);

/* 1 when given equals key, compared in constant time (for the length of
 * given). */
int gw_admin_key_ok(const char *key, const char *given);

#endif
