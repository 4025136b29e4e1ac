/*
 * pool.c - model pools, the strategies that pick a backend, and the
 * runtime state of backends across reloads.
 *
 * Design:
 *  - A pool is the list of backends that serve one model, built once per
 *    config snapshot. Picking is a scan of that list (pools are small):
 *    no allocation up to 32 backends, no syscall besides the caller's
 *    clock read, and the few locks said below.
 *  - A backend is eligible for an attempt when it was not tried yet by
 *    this request, is under its max_inflight and its breaker lets one
 *    through. Among eligible backends only the lowest priority tier
 *    competes; the strategy then chooses:
 *      round_robin     smooth weighted round robin, as nginx's
 *                      ngx_http_upstream_get_peer: each eligible peer's
 *                      current weight grows by its weight, the largest
 *                      wins and gives back the total. The spread follows
 *                      the weights exactly over any window of sum(w)
 *                      picks, and is interleaved (5,1,1 gives a a b a c a a,
 *                      not a a a a a b c).
 *      least_inflight  fewest attempts in flight per unit of weight, ties
 *                      taken in rotating order.
 *      latency         power of two choices: two eligible backends at
 *                      random, the lower EWMA(time to head) x (in-flight +
 *                      1) wins; a backend without samples scores 0 so it
 *                      gets some.
 *  - Panic: when every backend of a pool is out only because its breaker
 *    opened on answered errors (not unreachable, not told Retry-After),
 *    one of them is probed at once instead of answering 503 for a whole
 *    cool-down: an error burst on every backend never ejects them all.
 *
 * Threads (every worker picks and records on the same pools and states;
 * no lock is global: two workers meet only on a pool or backend both use):
 *  - A backend state's mutex (lock) guards its breaker, its attempts and
 *    failures counters, its head histogram and the writes of its EWMA.
 *    inflight, retries_to, ewma_us and breaker_state (a copy of
 *    breaker.state, stored under the lock after each change) are read and
 *    written with __atomic ops, so the strategies of other picks read them
 *    without taking any lock.
 *  - A pool's mutex guards current[] (smooth round robin) and the panic
 *    probe. Only round_robin picks and the panic path take it;
 *    least_inflight and latency picks take no pool lock. rr (the
 *    least_inflight tie-break) is read and written with relaxed atomics:
 *    a step lost to a race only repeats a starting point.
 *  - Lock order: table -> pool -> state. No thread ever holds two state
 *    locks, or two pool locks, at once.
 *  - gw_pool_pick: the eligibility scan reads breaker_state and inflight
 *    without a lock (a closed breaker is decided there; any other state
 *    takes that backend's lock to ask the breaker). The strategy chooses,
 *    then acquire() makes it stick: reserve() raises inflight with a
 *    compare-and-swap that never passes max_inflight, and a breaker that
 *    is not closed is asked again and acquired under its lock, so
 *    half-open probes never exceed conf.probes. When another worker won
 *    the race (the backend is full, or its breaker changed), the backend
 *    leaves the candidates and the strategy chooses again; round robin
 *    first gives back the weights of the lost round, so the spread stays
 *    exact. A round robin pick holds the pool lock from choosing to
 *    acquiring.
 *  - An attempt let through on a closed breaker read without the lock is
 *    ordered before any trip made meanwhile: an attempt already on its way
 *    (as one loop could have had in flight), never a probe.
 *  - The table (v, n, in_config) is changed by gw_states_attach and read
 *    by health.c, both on worker 0, under the table's mutex. States are
 *    allocated one by one and never move, so every live config's backends
 *    point at valid states while v grows.
 *
 * Invariants:
 *  1. Every gw_pool_pick or gw_pool_acquire that returns a backend is
 *     matched by exactly one gw_pool_record on it (in-flight count and
 *     breaker probe slot).
 *  2. Backend state is keyed by name and never freed before the gateway
 *     exits, so configs still serving old requests point at live state.
 *  3. inflight never passes a backend's max_inflight through a pick (a
 *     pinned gw_pool_acquire may).
 */
#include "gateway/pool.h"
#include "gateway/error.h"

#include <event2/buffer.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const strategy_names[] = {"round_robin", "least_inflight",
                                             "latency"};

/* ------------------------------------------------------------- building */

int gw_pools_build(struct gw_config *c, char *err, size_t errlen)
{
    size_t i, j, k;

    c->pools = calloc(c->n_model_names ? c->n_model_names : 1,
                      sizeof(*c->pools));
    if (c->pools == NULL)
        goto oom;
    c->n_pools = c->n_model_names;
    for (i = 0; i < c->n_pools; i++) {
        struct gw_pool *p = &c->pools[i];
        p->model = c->model_names[i];
        if (pthread_mutex_init(&p->lock, NULL) != 0)
            goto oom;
        p->lock_made = 1;
        p->backends = calloc(c->n_backends, sizeof(*p->backends));
        p->current = calloc(c->n_backends, sizeof(*p->current));
        if (p->backends == NULL || p->current == NULL)
            goto oom;
        for (j = 0; j < c->n_backends; j++)
            for (k = 0; k < c->backends[j].n_models; k++)
                if (strcmp(c->backends[j].models[k], p->model) == 0) {
                    p->backends[p->n++] = &c->backends[j];
                    break;
                }
    }
    for (i = 0; i < c->n_model_confs; i++) {
        const struct gw_model_conf *mc = &c->model_confs[i];
        struct gw_pool *p = gw_pool_find(c, mc->name);
        if (p == NULL) {
            snprintf(err, errlen, "models.%s: no backend serves this model",
                     mc->name);
            return -1;
        }
        p->strategy = mc->strategy;
        for (j = 0; j < mc->n_fallbacks && j < GW_POOL_MAX_FALLBACKS; j++) {
            struct gw_pool *f = gw_pool_find(c, mc->fallbacks[j]);
            if (f == NULL || f == p) {
                snprintf(err, errlen, "models.%s.fallbacks[%zu]: '%s' is "
                         "not another model served by a backend", mc->name,
                         j, mc->fallbacks[j]);
                return -1;
            }
            p->fallbacks[p->n_fallbacks++] = f;
        }
    }
    return 0;
oom:
    snprintf(err, errlen, "(root): out of memory");
    return -1;
}

void gw_pools_free(struct gw_config *c)
{
    for (size_t i = 0; c->pools && i < c->n_pools; i++) {
        free(c->pools[i].backends);
        free(c->pools[i].current);
        if (c->pools[i].lock_made)
            pthread_mutex_destroy(&c->pools[i].lock);
    }
    free(c->pools);
    c->pools = NULL;
    c->n_pools = 0;
}

struct gw_pool *gw_pool_find(struct gw_config *c, const char *model)
{
    for (size_t i = 0; i < c->n_pools; i++)
        if (strcmp(c->pools[i].model, model) == 0)
            return &c->pools[i];
    return NULL;
}

/* ------------------------------------------------------ state, atomics */

static int load_int(const int *v)
{
    return __atomic_load_n(v, __ATOMIC_ACQUIRE);
}

static int64_t load_ewma(const struct gw_backend_state *s)
{
    return __atomic_load_n(&s->ewma_us, __ATOMIC_RELAXED);
}

/* After each breaker call that may change its state, under s->lock. */
static void publish(struct gw_backend_state *s)
{
    __atomic_store_n(&s->breaker_state, (int)s->breaker.state,
                     __ATOMIC_RELEASE);
}

/* Raises s->inflight by one unless that would pass max (> 0). */
static int reserve(struct gw_backend_state *s, int max)
{
    int cur = __atomic_load_n(&s->inflight, __ATOMIC_RELAXED);

    do {
        if (max > 0 && cur >= max)
            return 0;
    } while (!__atomic_compare_exchange_n(&s->inflight, &cur, cur + 1, 1,
                                          __ATOMIC_ACQ_REL,
                                          __ATOMIC_RELAXED));
    return 1;
}

static void release(struct gw_backend_state *s)
{
    __atomic_fetch_sub(&s->inflight, 1, __ATOMIC_ACQ_REL);
}

/* -------------------------------------------------------------- picking */

static int was_tried(const struct gw_backend *b,
                     struct gw_backend *const *tried, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (tried[i] == b)
            return 1;
    return 0;
}

/* Notes in why that b's breaker keeps it out; under b's state lock. */
static void why_open(const struct gw_backend_state *s,
                     struct gw_pick_why *why)
{
    why->open = 1;
    if (s->breaker.state == GW_BREAKER_OPEN &&
        (why->reopen_us == 0 || s->breaker.open_until_us < why->reopen_us))
        why->reopen_us = s->breaker.open_until_us;
}

/* 1 when b may take an attempt now; notes in why what kept it out. A
 * closed breaker is read without the lock; acquire() decides for good. */
static int eligible(const struct gw_backend *b, int64_t now_us,
                    struct gw_pick_why *why)
{
    struct gw_backend_state *s = b->state;
    int ok;

    if (b->max_inflight > 0 && load_int(&s->inflight) >= b->max_inflight) {
        why->busy = 1;
        return 0;
    }
    if (load_int(&s->breaker_state) == GW_BREAKER_CLOSED)
        return 1;
    pthread_mutex_lock(&s->lock);
    ok = gw_breaker_usable(&s->breaker, &b->breaker, now_us);
    if (!ok)
        why_open(s, why);
    pthread_mutex_unlock(&s->lock);
    return ok;
}

/* Takes b for one attempt if it is still eligible: 1 (and *probe), or 0
 * when another worker got there first (why says how). */
static int acquire(struct gw_backend *b, int64_t now_us, int *probe,
                   struct gw_pick_why *why)
{
    struct gw_backend_state *s = b->state;
    int ok;

    *probe = 0;
    if (!reserve(s, b->max_inflight)) {
        why->busy = 1;
        return 0;
    }
    if (load_int(&s->breaker_state) == GW_BREAKER_CLOSED)
        return 1;
    pthread_mutex_lock(&s->lock);
    ok = gw_breaker_usable(&s->breaker, &b->breaker, now_us);
    if (ok) {
        *probe = gw_breaker_acquire(&s->breaker, &b->breaker, now_us);
        publish(s);
    } else {
        why_open(s, why);
    }
    pthread_mutex_unlock(&s->lock);
    if (!ok)
        release(s);
    return ok;
}

static uint64_t xorshift(uint64_t *s)
{
    uint64_t x = *s ? *s : 0x9E3779B97F4A7C15ULL;
    x ^= x >> 12, x ^= x << 25, x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* ok[i]: backend i is eligible and in the chosen tier. Under p->lock.
 * *total: the weight handed back by the winner (rr_undo). */
static long pick_rr(struct gw_pool *p, const unsigned char *ok, int *total)
{
    long best = -1;

    *total = 0;
    for (size_t i = 0; i < p->n; i++) {
        if (!ok[i])
            continue;
        p->current[i] += p->backends[i]->weight;
        *total += p->backends[i]->weight;
        if (best < 0 || p->current[i] > p->current[best])
            best = (long)i;
    }
    if (best >= 0)
        p->current[best] -= *total;
    return best;
}

/* Takes back a pick_rr round whose winner could not be acquired. */
static void rr_undo(struct gw_pool *p, const unsigned char *ok, long best,
                    int total)
{
    p->current[best] += total;
    for (size_t i = 0; i < p->n; i++)
        if (ok[i])
            p->current[i] -= p->backends[i]->weight;
}

static long pick_least(struct gw_pool *p, const unsigned char *ok)
{
    long best = -1, best_n = 0;
    /* a plain load and store, no locked add: two workers that start at
     * the same place only share a tie-break */
    unsigned rr = __atomic_load_n(&p->rr, __ATOMIC_RELAXED);
    size_t start = p->n ? rr % p->n : 0;

    __atomic_store_n(&p->rr, rr + 1, __ATOMIC_RELAXED);
    for (size_t k = 0; k < p->n; k++) {
        size_t i = (start + k) % p->n;
        if (!ok[i])
            continue;
        long n = load_int(&p->backends[i]->state->inflight);
        /* read once: another worker moves it meanwhile */
        if (best < 0 || n * p->backends[best]->weight <
                            best_n * p->backends[i]->weight) {
            best = (long)i;
            best_n = n;
        }
    }
    return best;
}

static long score(const struct gw_backend *b)
{
    int64_t e = load_ewma(b->state);
    return e < 0 ? 0 : (long)(e * (load_int(&b->state->inflight) + 1));
}

static long pick_p2c(struct gw_pool *p, const unsigned char *ok, size_t n_ok,
                     uint64_t *rng)
{
    size_t r1, r2, k = 0;
    long a = -1, b = -1;

    if (n_ok == 0)
        return -1;
    r1 = (size_t)(xorshift(rng) % n_ok);
    r2 = n_ok > 1 ? (size_t)(xorshift(rng) % (n_ok - 1)) : r1;
    if (n_ok > 1 && r2 >= r1)
        r2++;
    for (size_t i = 0; i < p->n; i++) {
        if (!ok[i])
            continue;
        if (k == r1)
            a = (long)i;
        if (k == r2)
            b = (long)i;
        k++;
    }
    return score(p->backends[b]) < score(p->backends[a]) ? b : a;
}

/* ok[i] = elig[i] and backend i is in the lowest tier among elig. Returns
 * how many are ok. */
static size_t lowest_tier(const struct gw_pool *p, const unsigned char *elig,
                          unsigned char *ok)
{
    int tier = 0, have_tier = 0;
    size_t i, n_ok = 0;

    for (i = 0; i < p->n; i++)
        if (elig[i] && (!have_tier || p->backends[i]->priority < tier))
            tier = p->backends[i]->priority, have_tier = 1;
    for (i = 0; i < p->n; i++) {
        ok[i] = elig[i] && p->backends[i]->priority == tier;
        n_ok += ok[i];
    }
    return n_ok;
}

/* Panic (see the top): under p->lock, so that one probe at a time starts
 * for the pool. Returns the index acquired, or -1. */
static long panic_probe(struct gw_pool *p, int64_t now_us,
                        struct gw_backend *const *tried, size_t n_tried,
                        int *probe)
{
    long best = -1;
    int64_t best_until = 0;
    size_t i;
    struct gw_backend *b;
    struct gw_backend_state *s;
    int ok = 0;

    for (i = 0; i < p->n; i++)
        if (load_int(&p->backends[i]->state->breaker_state) ==
            GW_BREAKER_HALF_OPEN)
            return -1; /* a probe is on its way */
    for (i = 0; i < p->n; i++) {
        b = p->backends[i];
        s = b->state;
        if (was_tried(b, tried, n_tried))
            continue;
        pthread_mutex_lock(&s->lock);
        if (gw_breaker_can_force(&s->breaker) &&
            (best < 0 || s->breaker.open_until_us < best_until)) {
            best = (long)i;
            best_until = s->breaker.open_until_us;
        }
        pthread_mutex_unlock(&s->lock);
    }
    if (best < 0)
        return -1;
    b = p->backends[best];
    s = b->state;
    if (!reserve(s, b->max_inflight))
        return -1;
    pthread_mutex_lock(&s->lock);
    gw_breaker_force_probe(&s->breaker, now_us);
    if (gw_breaker_usable(&s->breaker, &b->breaker, now_us)) {
        *probe = gw_breaker_acquire(&s->breaker, &b->breaker, now_us);
        ok = 1;
    }
    publish(s);
    pthread_mutex_unlock(&s->lock);
    if (!ok) {
        release(s);
        return -1;
    }
    return best;
}

struct gw_backend *gw_pool_pick(struct gw_pool *p, int64_t now_us,
                                uint64_t *rng, struct gw_backend *const *tried,
                                size_t n_tried, int *probe,
                                struct gw_pick_why *why)
{
    unsigned char buf[64], *elig = buf, *ok;
    size_t i, n_ok;
    long best = -1;
    int rr = p->strategy == GW_STRATEGY_ROUND_ROBIN, total = 0;

    memset(why, 0, sizeof(*why));
    *probe = 0;
    if (2 * p->n > sizeof(buf)) {
        elig = malloc(2 * p->n);
        if (elig == NULL)
            return NULL;
    }
    ok = elig + p->n;
    for (i = 0; i < p->n; i++)
        elig[i] = !was_tried(p->backends[i], tried, n_tried) &&
                  eligible(p->backends[i], now_us, why);
    if (rr)
        pthread_mutex_lock(&p->lock);
    /* each round either acquires or drops one candidate */
    while ((n_ok = lowest_tier(p, elig, ok)) > 0) {
        switch (p->strategy) {
        case GW_STRATEGY_ROUND_ROBIN:
            best = pick_rr(p, ok, &total);
            break;
        case GW_STRATEGY_LEAST_INFLIGHT:
            best = n_ok == 1 ? -1 : pick_least(p, ok);
            break;
        case GW_STRATEGY_LATENCY:
            best = n_ok == 1 ? -1 : pick_p2c(p, ok, n_ok, rng);
            break;
        }
        if (best < 0) /* the only one */
            for (best = 0; !ok[best]; best++)
                ;
        if (acquire(p->backends[best], now_us, probe, why))
            break;
        if (rr)
            rr_undo(p, ok, best, total);
        elig[best] = 0;
        best = -1;
    }
    if (best < 0 && why->open && !why->busy) {
        if (!rr)
            pthread_mutex_lock(&p->lock);
        best = panic_probe(p, now_us, tried, n_tried, probe);
        if (!rr)
            pthread_mutex_unlock(&p->lock);
    }
    if (rr)
        pthread_mutex_unlock(&p->lock);
    if (elig != buf)
        free(elig);
    return best < 0 ? NULL : p->backends[best];
}

int gw_pool_acquire(struct gw_backend *b, int64_t now_us)
{
    struct gw_backend_state *s = b->state;
    int probe;

    reserve(s, 0);
    if (load_int(&s->breaker_state) == GW_BREAKER_CLOSED)
        return 0; /* as in acquire(): nothing to take but the count */
    pthread_mutex_lock(&s->lock);
    probe = gw_breaker_acquire(&s->breaker, &b->breaker, now_us);
    publish(s);
    pthread_mutex_unlock(&s->lock);
    return probe;
}

void gw_pool_retried(struct gw_backend *b)
{
    __atomic_fetch_add(&b->state->retries_to, 1, __ATOMIC_RELAXED);
}

void gw_pool_record(struct gw_backend *b, int64_t now_us, int probe,
                    enum gw_breaker_outcome outcome, long ttfb_us,
                    long retry_after_ms)
{
    struct gw_backend_state *s = b->state;

    pthread_mutex_lock(&s->lock);
    if (outcome != GW_BREAKER_NEUTRAL) {
        s->attempts++;
        if (outcome != GW_BREAKER_OK)
            s->failures++;
    }
    if (outcome == GW_BREAKER_OK && ttfb_us >= 0) {
        /* EWMA, alpha 1/5: a few answers move it, one outlier does not */
        int64_t e = s->ewma_us; /* only written under this lock */
        e = e < 0 ? ttfb_us : e + (ttfb_us - e) / 5;
        __atomic_store_n(&s->ewma_us, e, __ATOMIC_RELAXED);
        gw_metrics_observe(&s->head, ttfb_us);
    }
    gw_breaker_record(&s->breaker, &b->breaker, now_us, probe, outcome,
                      retry_after_ms);
    publish(s);
    pthread_mutex_unlock(&s->lock);
    /* after the breaker gave the probe slot back: a pick that sees the
     * room also sees the slot */
    release(s);
}

/* ---------------------------------------------------------------- state */

struct gw_backend_states *gw_states_new(void)
{
    struct gw_backend_states *s = calloc(1, sizeof(*s));

    if (s != NULL && pthread_mutex_init(&s->lock, NULL) != 0) {
        free(s);
        return NULL;
    }
    return s;
}

void gw_states_free(struct gw_backend_states *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->n; i++) {
        /* health checks are gone: gw_health_free first */
        pthread_mutex_destroy(&s->v[i]->lock);
        free(s->v[i]);
    }
    free(s->v);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

static struct gw_backend_state *state_new(const char *name)
{
    struct gw_backend_state *st = calloc(1, sizeof(*st));

    if (st == NULL)
        return NULL;
    if (pthread_mutex_init(&st->lock, NULL) != 0) {
        free(st);
        return NULL;
    }
    snprintf(st->name, sizeof(st->name), "%s", name);
    gw_breaker_init(&st->breaker, st->name);
    st->breaker_state = (int)st->breaker.state;
    st->ewma_us = -1;
    return st;
}

int gw_states_attach(struct gw_backend_states *s, struct gw_config *c)
{
    size_t i, j;
    int rc = 0;

    pthread_mutex_lock(&s->lock);
    for (j = 0; j < s->n; j++)
        s->v[j]->in_config = 0;
    for (i = 0; i < c->n_backends && rc == 0; i++) {
        struct gw_backend *b = &c->backends[i];
        for (j = 0; j < s->n; j++)
            if (strcmp(s->v[j]->name, b->name) == 0)
                break;
        if (j == s->n) {
            struct gw_backend_state **v =
                realloc(s->v, (s->n + 1) * sizeof(*v));
            struct gw_backend_state *st;
            if (v == NULL) {
                rc = -1;
                break;
            }
            s->v = v;
            if ((st = state_new(b->name)) == NULL) {
                rc = -1;
                break;
            }
            s->v[s->n++] = st;
        }
        s->v[j]->in_config = 1;
        b->state = s->v[j];
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

void gw_states_health(struct gw_backend *b, int64_t now_us, int healthy)
{
    struct gw_backend_state *s = b->state;

    pthread_mutex_lock(&s->lock);
    gw_breaker_health(&s->breaker, &b->breaker, now_us, healthy);
    publish(s);
    pthread_mutex_unlock(&s->lock);
}

void gw_states_snap(const struct gw_backend *b, int64_t now_us,
                    struct gw_backend_snap *out)
{
    struct gw_backend_state *s = b->state;
    const struct gw_breaker *br = &s->breaker;

    pthread_mutex_lock(&s->lock);
    out->state = br->state;
    out->usable = gw_breaker_usable(br, &b->breaker, now_us);
    out->open_for_ms = br->state == GW_BREAKER_OPEN && br->open_until_us >
                       now_us ? (long)((br->open_until_us - now_us) / 1000)
                              : 0;
    out->opens = br->opens;
    memcpy(out->transitions, br->transitions, sizeof(out->transitions));
    out->consecutive = br->consecutive;
    gw_breaker_window(br, &b->breaker, now_us, &out->window_attempts,
                      &out->window_failures);
    out->attempts = s->attempts;
    out->failures = s->failures;
    out->ewma_us = s->ewma_us;
    out->head = s->head;
    pthread_mutex_unlock(&s->lock);
    out->retries_to = __atomic_load_n(&s->retries_to, __ATOMIC_RELAXED);
    out->inflight = load_int(&s->inflight);
}

size_t gw_states_usable(const struct gw_config *c, int64_t now_us)
{
    size_t n = 0;

    for (size_t i = 0; i < c->n_backends; i++) {
        const struct gw_backend *b = &c->backends[i];
        struct gw_backend_state *s = b->state;
        if (s == NULL) {
            n++;
            continue;
        }
        pthread_mutex_lock(&s->lock);
        n += gw_breaker_usable(&s->breaker, &b->breaker, now_us);
        pthread_mutex_unlock(&s->lock);
    }
    return n;
}

/* ---------------------------------------------------------------- admin */

#define ADD(b, lit) evbuffer_add((b), (lit), sizeof(lit) - 1)

static void json_str(struct evbuffer *out, const char *s)
{
    ADD(out, "\"");
    gw_json_escape(out, s, strlen(s));
    ADD(out, "\"");
}

void gw_states_json(struct gw_config *c, int64_t now_us, struct evbuffer *out)
{
    size_t i, j;

    ADD(out, "{\"backends\":[");
    for (i = 0; i < c->n_backends; i++) {
        const struct gw_backend *b = &c->backends[i];
        struct gw_backend_snap sn;

        gw_states_snap(b, now_us, &sn);
        evbuffer_add_printf(out, "%s{\"name\":", i ? "," : "");
        json_str(out, b->name);
        ADD(out, ",\"url\":");
        json_str(out, b->url);
        ADD(out, ",\"models\":[");
        for (j = 0; j < b->n_models; j++) {
            if (j)
                ADD(out, ",");
            json_str(out, b->models[j]);
        }
        evbuffer_add_printf(
            out, "],\"state\":\"%s\",\"open_for_ms\":%ld,\"opens\":%lu,"
                 "\"inflight\":%d,\"max_inflight\":%d,\"weight\":%d,"
                 "\"priority\":%d,",
            gw_breaker_state_name(sn.state), sn.open_for_ms, sn.opens,
            sn.inflight, b->max_inflight, b->weight, b->priority);
        if (sn.ewma_us < 0)
            ADD(out, "\"ewma_latency_ms\":null,");
        else
            evbuffer_add_printf(out, "\"ewma_latency_ms\":%.3f,",
                                (double)sn.ewma_us / 1000.0);
        evbuffer_add_printf(
            out, "\"window_s\":%d,\"window_attempts\":%lu,"
                 "\"window_failures\":%lu,\"error_rate\":%.4f,"
                 "\"consecutive_failures\":%d,\"attempts\":%lu,"
                 "\"failures\":%lu,\"health_check\":%s}",
            b->breaker.window_s, sn.window_attempts, sn.window_failures,
            sn.window_attempts ? (double)sn.window_failures /
                                     (double)sn.window_attempts : 0.0,
            sn.consecutive, sn.attempts, sn.failures,
            b->health_path ? "true" : "false");
    }
    ADD(out, "],\"models\":[");
    for (i = 0; i < c->n_pools; i++) {
        const struct gw_pool *p = &c->pools[i];
        evbuffer_add_printf(out, "%s{\"model\":", i ? "," : "");
        json_str(out, p->model);
        evbuffer_add_printf(out, ",\"strategy\":\"%s\",\"backends\":[",
                            strategy_names[p->strategy]);
        for (j = 0; j < p->n; j++) {
            if (j)
                ADD(out, ",");
            json_str(out, p->backends[j]->name);
        }
        ADD(out, "],\"fallbacks\":[");
        for (j = 0; j < p->n_fallbacks; j++) {
            if (j)
                ADD(out, ",");
            json_str(out, p->fallbacks[j]->model);
        }
        ADD(out, "]}");
    }
    ADD(out, "]}");
}

int gw_admin_key_ok(const char *key, const char *given)
{
    size_t kl, gl, i;
    unsigned char d;

    if (key == NULL || given == NULL)
        return 0;
    kl = strlen(key);
    gl = strlen(given);
    /* the time depends on the length of what the caller sent, never on
     * how much of the key it got right */
    d = (unsigned char)(kl != gl);
    for (i = 0; i < gl; i++)
        d |= (unsigned char)(given[i] ^ key[i < kl ? i : 0]);
    return d == 0 && kl > 0;
}
