/*
 * pool.c - model pools, the strategies that pick a backend, and the
 * runtime state of backends across reloads.
 *
 * Design:
 *  - A pool is the list of backends that serve one model, built once per
 *    config snapshot. Picking is a scan of that list (pools are small):
 *    no allocation, no lock, no syscall besides the caller's clock read.
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
 * Invariants:
 *  1. Every gw_pool_pick that returns a backend is matched by exactly one
 *     gw_pool_record on it (in-flight count and breaker probe slot).
 *  2. Backend state is keyed by name and never freed before the gateway
 *     exits, so configs still serving old requests point at live state.
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

/* -------------------------------------------------------------- picking */

static int was_tried(const struct gw_backend *b,
                     struct gw_backend *const *tried, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (tried[i] == b)
            return 1;
    return 0;
}

/* 1 when b may take an attempt now; notes in why what kept it out. */
static int eligible(const struct gw_backend *b, int64_t now_us,
                    struct gw_pick_why *why)
{
    const struct gw_backend_state *s = b->state;

    if (b->max_inflight > 0 && s->inflight >= b->max_inflight) {
        why->busy = 1;
        return 0;
    }
    if (!gw_breaker_usable(&s->breaker, &b->breaker, now_us)) {
        why->open = 1;
        if (s->breaker.state == GW_BREAKER_OPEN &&
            (why->reopen_us == 0 ||
             s->breaker.open_until_us < why->reopen_us))
            why->reopen_us = s->breaker.open_until_us;
        return 0;
    }
    return 1;
}

static uint64_t xorshift(uint64_t *s)
{
    uint64_t x = *s ? *s : 0x9E3779B97F4A7C15ULL;
    x ^= x >> 12, x ^= x << 25, x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* ok[i]: backend i is eligible and in the chosen tier. */
static long pick_rr(struct gw_pool *p, const unsigned char *ok)
{
    long best = -1;
    int total = 0;

    for (size_t i = 0; i < p->n; i++) {
        if (!ok[i])
            continue;
        p->current[i] += p->backends[i]->weight;
        total += p->backends[i]->weight;
        if (best < 0 || p->current[i] > p->current[best])
            best = (long)i;
    }
    if (best >= 0)
        p->current[best] -= total;
    return best;
}

static long pick_least(struct gw_pool *p, const unsigned char *ok)
{
    long best = -1;
    size_t start = p->n ? p->rr++ % p->n : 0;

    for (size_t k = 0; k < p->n; k++) {
        size_t i = (start + k) % p->n;
        if (!ok[i])
            continue;
        if (best < 0) {
            best = (long)i;
            continue;
        }
        const struct gw_backend *a = p->backends[i], *b = p->backends[best];
        /* a.inflight / a.weight < b.inflight / b.weight */
        if ((long)a->state->inflight * b->weight <
            (long)b->state->inflight * a->weight)
            best = (long)i;
    }
    return best;
}

static long score(const struct gw_backend *b)
{
    int64_t e = b->state->ewma_us;
    return e < 0 ? 0 : (long)(e * (b->state->inflight + 1));
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

struct gw_backend *gw_pool_pick(struct gw_pool *p, int64_t now_us,
                                uint64_t *rng, struct gw_backend *const *tried,
                                size_t n_tried, int *probe,
                                struct gw_pick_why *why)
{
    unsigned char okbuf[64], *ok = okbuf;
    size_t i, n_ok = 0;
    int tier = 0, have_tier = 0;
    long best = -1;
    struct gw_backend *b;

    memset(why, 0, sizeof(*why));
    *probe = 0;
    if (p->n > sizeof(okbuf)) {
        ok = malloc(p->n);
        if (ok == NULL)
            return NULL;
    }
    for (i = 0; i < p->n; i++) {
        b = p->backends[i];
        ok[i] = !was_tried(b, tried, n_tried) && eligible(b, now_us, why);
        if (ok[i] && (!have_tier || b->priority < tier))
            tier = b->priority, have_tier = 1;
    }
    for (i = 0; i < p->n; i++) {
        if (ok[i] && p->backends[i]->priority != tier)
            ok[i] = 0;
        n_ok += ok[i];
    }
    if (n_ok == 1) {
        for (i = 0; !ok[i]; i++)
            ;
        best = (long)i;
        if (p->strategy == GW_STRATEGY_ROUND_ROBIN)
            pick_rr(p, ok); /* keeps the weights moving */
    } else if (n_ok > 1) {
        switch (p->strategy) {
        case GW_STRATEGY_ROUND_ROBIN:
            best = pick_rr(p, ok);
            break;
        case GW_STRATEGY_LEAST_INFLIGHT:
            best = pick_least(p, ok);
            break;
        case GW_STRATEGY_LATENCY:
            best = pick_p2c(p, ok, n_ok, rng);
            break;
        }
    } else if (why->open && !why->busy) {
        /* panic: everything is out on answered errors; probe the backend
         * whose cool-down ends first, one probe for the pool at a time */
        int probing = 0;
        for (i = 0; i < p->n; i++)
            if (p->backends[i]->state->breaker.state == GW_BREAKER_HALF_OPEN)
                probing = 1;
        for (i = 0; i < p->n && !probing; i++) {
            b = p->backends[i];
            if (was_tried(b, tried, n_tried) ||
                !gw_breaker_can_force(&b->state->breaker))
                continue;
            if (best < 0 || b->state->breaker.open_until_us <
                                p->backends[best]->state->breaker.open_until_us)
                best = (long)i;
        }
        if (best >= 0) {
            b = p->backends[best];
            gw_breaker_force_probe(&b->state->breaker, now_us);
            if (!gw_breaker_usable(&b->state->breaker, &b->breaker, now_us))
                best = -1;
        }
    }
    if (ok != okbuf)
        free(ok);
    if (best < 0)
        return NULL;
    b = p->backends[best];
    *probe = gw_breaker_acquire(&b->state->breaker, &b->breaker, now_us);
    b->state->inflight++;
    return b;
}

void gw_pool_record(struct gw_backend *b, int64_t now_us, int probe,
                    enum gw_breaker_outcome outcome, long ttfb_us,
                    long retry_after_ms)
{
    struct gw_backend_state *s = b->state;

    s->inflight--;
    if (outcome != GW_BREAKER_NEUTRAL) {
        s->attempts++;
        if (outcome != GW_BREAKER_OK)
            s->failures++;
    }
    if (outcome == GW_BREAKER_OK && ttfb_us >= 0) {
        /* EWMA, alpha 1/5: a few answers move it, one outlier does not */
        if (s->ewma_us < 0)
            s->ewma_us = ttfb_us;
        else
            s->ewma_us += (ttfb_us - s->ewma_us) / 5;
        gw_metrics_observe(&s->head, ttfb_us);
    }
    gw_breaker_record(&s->breaker, &b->breaker, now_us, probe, outcome,
                      retry_after_ms);
}

/* ---------------------------------------------------------------- state */

struct gw_backend_states *gw_states_new(void)
{
    return calloc(1, sizeof(struct gw_backend_states));
}

void gw_states_free(struct gw_backend_states *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->n; i++)
        free(s->v[i]); /* health checks are gone: gw_health_free first */
    free(s->v);
    free(s);
}

int gw_states_attach(struct gw_backend_states *s, struct gw_config *c)
{
    size_t i, j;

    for (j = 0; j < s->n; j++)
        s->v[j]->in_config = 0;
    for (i = 0; i < c->n_backends; i++) {
        struct gw_backend *b = &c->backends[i];
        for (j = 0; j < s->n; j++)
            if (strcmp(s->v[j]->name, b->name) == 0)
                break;
        if (j == s->n) {
            struct gw_backend_state **v =
                realloc(s->v, (s->n + 1) * sizeof(*v));
            if (v == NULL)
                return -1;
            s->v = v;
            struct gw_backend_state *st = calloc(1, sizeof(*st));
            if (st == NULL)
                return -1;
            snprintf(st->name, sizeof(st->name), "%s", b->name);
            gw_breaker_init(&st->breaker, st->name);
            st->ewma_us = -1;
            s->v[s->n++] = st;
        }
        s->v[j]->in_config = 1;
        b->state = s->v[j];
    }
    return 0;
}

size_t gw_states_usable(const struct gw_config *c, int64_t now_us)
{
    size_t n = 0;

    for (size_t i = 0; i < c->n_backends; i++) {
        const struct gw_backend *b = &c->backends[i];
        n += b->state == NULL ||
             gw_breaker_usable(&b->state->breaker, &b->breaker, now_us);
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
        const struct gw_backend_state *s = b->state;
        const struct gw_breaker *br = &s->breaker;
        unsigned long n, nf;
        long open_ms = 0;

        gw_breaker_window(br, &b->breaker, now_us, &n, &nf);
        if (br->state == GW_BREAKER_OPEN && br->open_until_us > now_us)
            open_ms = (long)((br->open_until_us - now_us) / 1000);
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
            gw_breaker_state_name(br->state), open_ms, br->opens,
            s->inflight, b->max_inflight, b->weight, b->priority);
        if (s->ewma_us < 0)
            ADD(out, "\"ewma_latency_ms\":null,");
        else
            evbuffer_add_printf(out, "\"ewma_latency_ms\":%.3f,",
                                (double)s->ewma_us / 1000.0);
        evbuffer_add_printf(
            out, "\"window_s\":%d,\"window_attempts\":%lu,"
                 "\"window_failures\":%lu,\"error_rate\":%.4f,"
                 "\"consecutive_failures\":%d,\"attempts\":%lu,"
                 "\"failures\":%lu,\"health_check\":%s}",
            b->breaker.window_s, n, nf, n ? (double)nf / (double)n : 0.0,
            br->consecutive, s->attempts, s->failures,
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
