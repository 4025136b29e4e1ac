/*
 * pool.h - model pools and the strategies that pick a backend in them,
 * and the runtime state of every backend (breaker, in-flight, latency)
 * that outlives config reloads.
 *
 * A pool is part of a config snapshot (built by gw_pools_build when the
 * config is parsed). Backend state lives in a table owned by the gateway
 * and keyed by backend name, so a SIGHUP keeps breakers and counters; each
 * loaded config is attached to it (gw_states_attach) before it serves.
 *
 * Threads: every worker picks and records on the same pools and states at
 * once; pool.c's opening comment says which lock or atomic guards what.
 * Read a state only through the functions below (gw_states_snap), never
 * its fields directly.
 */
#ifndef GW_POOL_H
#define GW_POOL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "gateway/breaker.h"
#include "gateway/config.h"
#include "gateway/metrics.h"

struct evbuffer;
struct gw_hcheck;

#define GW_POOL_MAX_FALLBACKS 8

/* Guarded by: [lock] the state's mutex; [atomic] __atomic ops only;
 * [table] the table's mutex; [worker 0] the thread running health checks
 * and gw_states_attach. */
struct gw_backend_state {
    char name[72];             /* set once, then read-only */
    pthread_mutex_t lock;
    struct gw_breaker breaker; /* [lock] breaker.name points at name */
    int breaker_state;         /* [atomic] breaker.state, stored under lock
                                  after each change: the pick's fast path */
    int inflight;              /* [atomic] attempts in flight, across
                                  reloads; raised only by reserve (pool.c) */
    int64_t ewma_us;           /* [atomic, written under lock] time to
                                  answer head; -1: no sample yet */
    unsigned long attempts, failures; /* [lock] since start */
    unsigned long retries_to;  /* [atomic] since start */
    struct gw_metrics_hist head; /* [lock] answered attempts' time to head */
    int in_config;             /* [table] named by the current config */
    struct gw_hcheck *health;  /* [worker 0] owned by health.c
                                  (gw_health_free) */
};

struct gw_backend_states {
    pthread_mutex_t lock;        /* guards v, n and each in_config */
    struct gw_backend_state **v; /* owned: n entries, each owned; each
                                    entry keeps its address for good */
    size_t n;
};

/* A consistent copy of one backend's state (gw_states_snap). */
struct gw_backend_snap {
    enum gw_breaker_state state;
    int usable;              /* the breaker lets an attempt through now */
    long open_for_ms;        /* open: until the cool-down ends; else 0 */
    unsigned long opens;
    unsigned long transitions[3]; /* by state entered */
    int consecutive;         /* failures in a row */
    unsigned long window_attempts, window_failures;
    unsigned long attempts, failures, retries_to;
    int inflight;
    int64_t ewma_us;         /* -1: no sample yet */
    struct gw_metrics_hist head;
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
    pthread_mutex_t lock; /* guards current[] and the panic probe; taken
                             before a state's lock, never after */
    int lock_made;        /* lock was initialised (gw_pools_free) */
    unsigned rr;          /* [atomic] rotating start for ties */
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

/* Takes b for an attempt that the caller chose itself (a pinned first
 * attempt), whatever its breaker and max_inflight say: counts it in flight
 * and acquires the breaker. Returns probe (see gw_pool_pick), for the
 * matching gw_pool_record. */
int gw_pool_acquire(struct gw_backend *b, int64_t now_us);

/* Counts an attempt on b that retried a failed one (metrics). */
void gw_pool_retried(struct gw_backend *b);

/* The end of an attempt on b: updates the breaker, the latency EWMA (on
 * success, with ttfb_us) and the counters. */
void gw_pool_record(struct gw_backend *b, int64_t now_us, int probe,
                    enum gw_breaker_outcome outcome, long ttfb_us,
                    long retry_after_ms);

struct gw_backend_states *gw_states_new(void);
void gw_states_free(struct gw_backend_states *s); /* NULL is a no-op */

/* Points every backend of c at its state (created on first sight), and
 * marks which states the config names. c must not serve yet; workers may
 * pick and record on older configs meanwhile. Returns 0 or -1 (out of
 * memory; c is then not usable). */
int gw_states_attach(struct gw_backend_states *s, struct gw_config *c);

/* A health check's verdict on b (health.c), handed to its breaker. */
void gw_states_health(struct gw_backend *b, int64_t now_us, int healthy);

/* Copies b's state as of now_us into out, under its lock (for /metrics
 * and /admin/backends, from any worker). */
void gw_states_snap(const struct gw_backend *b, int64_t now_us,
                    struct gw_backend_snap *out);

/* Backends of c whose breaker lets an attempt through now (/readyz). */
size_t gw_states_usable(const struct gw_config *c, int64_t now_us);

/* GET /admin/backends: the JSON document of every backend of c. */
void gw_states_json(struct gw_config *c, int64_t now_us, struct evbuffer *out);

/* 1 when given equals key, compared in constant time (for the length of
 * given). */
int gw_admin_key_ok(const char *key, const char *given);

#endif
