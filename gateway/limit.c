/*
 * limit.c - GCRA rate limits, in process.
 *
 * The generic cell rate algorithm keeps one number per limit, the
 * theoretical arrival time (tat): the moment the limit would be back at
 * rest if nothing else came. With emission interval T (60000 / rpm ms) and
 * tolerance tau, a request is admitted when max(tat, now) + T - now <= tau,
 * and then tat moves to that sum. tau is one second of the rate (at least
 * one request), so a key limited to 600 rpm gets 10 at once and then one
 * every 100 ms: over any stretch of time it is admitted the rate times the
 * stretch plus at most one second's worth. There are no windows, so no
 * double burst at a window's edge.
 *
 * Tokens use the same clock with T = 60000 / tpm ms per token, but a
 * request is admitted while the token limit is not in debt beyond tau, and
 * its whole estimate is then charged (it may push tat past tau: a request
 * larger than a second of tokens is not refused forever, it makes the next
 * ones wait). When the request ends the estimate is replaced by the
 * upstream's usage: unused tokens are given back.
 *
 * Threads. One gw_limiter is shared by every worker thread, so any of
 * its functions may run on several threads at once. There is no global
 * lock: the 1024 hash buckets are split over 64 stripes (bucket b is
 * under stripe b % 64), each a mutex on its own cache line, and a state
 * is read and changed only under the mutex of its bucket's stripe. The
 * states of one key (the key's, and one per model with a rate) all sit
 * in buckets of the same stripe: the key's bucket comes from the hash of
 * its name, and a key+model state's bucket takes its low bits (the
 * stripe) from that hash too and only its high bits from the whole name.
 * So an admission, which may need two states, takes one lock and holds
 * it from the first check to the last charge, and no two locks are ever
 * held at once (no order to respect, no deadlock). A new state is
 * inserted into its chain under its stripe, and no state is removed
 * before gw_limiter_free, so the pointers a gw_admit keeps stay valid.
 * Messages are formatted after the unlock, so a storm of refusals does
 * not hold a stripe for a printf.
 *
 * Invariants:
 *  1. A request is admitted by all of its limits or by none: nothing is
 *     charged until every check has passed, and no other thread changes
 *     the states in between (their one stripe is held throughout).
 *  2. Every admission is released exactly once (gw_admit.active).
 *  3. A state's fields are touched only under its stripe's mutex, and the
 *     states of one key share one stripe; a thread holds one stripe at
 *     most.
 *  4. Nothing in this file is global: all state hangs off a gw_limiter.
 */
#include "gateway/limit.h"
#include "gateway/rlredis.h"
#include "gateway/fmt.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOLERANCE_MS 1000.0
#define DAY_MS 86400000LL

struct gw_lstate {
    char *name; /* owned: key name, or key name '\x1f' model */
    unsigned bucket; /* its bucket, so its stripe; fixed */
    double tat_req, tat_tok;
    long inflight;
    long day;
    long day_tokens;
    struct gw_lstate *next; /* owned: hash chain */
};

#define NBUCKETS 1024
#define NSTRIPES 64 /* divides NBUCKETS; both powers of two */
_Static_assert(NBUCKETS % NSTRIPES == 0 && (NSTRIPES & (NSTRIPES - 1)) == 0,
               "stripes must split the buckets evenly");
#define CACHE_LINE 64

/* A mutex alone on its cache line: two workers that lock different
 * stripes do not bounce one line between their cores. */
struct stripe {
    _Alignas(CACHE_LINE) pthread_mutex_t mu;
};

struct gw_limiter {
    struct stripe stripes[NSTRIPES];
    struct gw_lstate *buckets[NBUCKETS]; /* owned; buckets[b] under
                                            stripes[b % NSTRIPES] */
};

struct gw_limiter *gw_limiter_new(void)
{
    struct gw_limiter *l;
    void *p;
    size_t i;

    if (posix_memalign(&p, CACHE_LINE, sizeof(*l)) != 0)
        return NULL;
    l = p;
    memset(l, 0, sizeof(*l));
    for (i = 0; i < NSTRIPES; i++)
        if (pthread_mutex_init(&l->stripes[i].mu, NULL) != 0) {
            while (i-- > 0)
                pthread_mutex_destroy(&l->stripes[i].mu);
            free(l);
            return NULL;
        }
    return l;
}

void gw_limiter_free(struct gw_limiter *l)
{
    size_t i;

    if (l == NULL)
        return;
    for (i = 0; i < NBUCKETS; i++) {
        struct gw_lstate *s = l->buckets[i], *n;
        for (; s; s = n) {
            n = s->next;
            free(s->name);
            free(s);
        }
    }
    for (i = 0; i < NSTRIPES; i++)
        pthread_mutex_destroy(&l->stripes[i].mu);
    free(l);
}

/* A state's name (a key's, or key '\x1f' model) and where it lives;
 * built before any lock is taken. */
struct lname {
    char s[600];
    size_t len;
    uint32_t hash;   /* FNV-1a of s */
    unsigned bucket; /* bucket % NSTRIPES depends on the key alone */
};

static uint32_t fnv(uint32_t h, const char *p, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        h = (h ^ (unsigned char)p[i]) * 16777619u;
    return h;
}

static int lname_key(struct lname *n, const char *key)
{
    size_t len = strlen(key);

    if (len >= sizeof(n->s))
        return -1;
    memcpy(n->s, key, len + 1);
    n->len = len;
    n->hash = fnv(2166136261u, key, len);
    n->bucket = n->hash % NBUCKETS;
    return 0;
}

/* The key+model name from the key's (whose hash it continues). Its
 * bucket is the one of its own hash with the stripe bits of the key's:
 * the states of one key share a stripe. */
static int lname_model(struct lname *n, const struct lname *k,
                       const char *model)
{
    size_t len = strlen(model);

    if (k->len + 1 + len >= sizeof(n->s))
        return -1;
    memcpy(n->s, k->s, k->len);
    n->s[k->len] = '\x1f';
    memcpy(n->s + k->len + 1, model, len + 1);
    n->len = k->len + 1 + len;
    n->hash = fnv((k->hash ^ 0x1fu) * 16777619u, model, len);
    n->bucket = (n->hash % NBUCKETS & ~(unsigned)(NSTRIPES - 1)) |
                k->bucket % NSTRIPES;
    return 0;
}

static pthread_mutex_t *stripe_of(struct gw_limiter *l, unsigned bucket)
{
    return &l->stripes[bucket % NSTRIPES].mu;
}

/* The state named n, created when new. The caller holds n's stripe. */
static struct gw_lstate *state(struct gw_limiter *l, const struct lname *n)
{
    struct gw_lstate **head = &l->buckets[n->bucket], *s;

    for (s = *head; s; s = s->next)
        if (strcmp(s->name, n->s) == 0)
            return s;
    s = calloc(1, sizeof(*s));
    if (s == NULL || (s->name = strdup(n->s)) == NULL) {
        free(s);
        return NULL;
    }
    s->bucket = n->bucket;
    s->next = *head;
    *head = s;
    return s;
}

/* Requests: the admission check of one GCRA. Returns the wait in ms
 * (0: admitted now) and the new tat through *tat_out. */
static double check_req(double tat, long rpm, double now, double *tat_out)
{
    double T = 60000.0 / (double)rpm;
    double tau = TOLERANCE_MS > T ? TOLERANCE_MS : T;
    double t = (tat > now ? tat : now) + T;

    *tat_out = t;
    return t - now <= tau + 1e-9 ? 0 : t - now - tau;
}

static double check_tok(double tat, double now)
{
    double base = tat > now ? tat : now;
    /* admitted while in debt by less than the tolerance */
    return base - now < TOLERANCE_MS ? 0 : base - now - TOLERANCE_MS + 1;
}

static void fill_req(struct gw_limit_result *r, long rpm, double tat,
                     double now)
{
    double T = 60000.0 / (double)rpm;
    double tau = TOLERANCE_MS > T ? TOLERANCE_MS : T;
    double used = tat > now ? tat - now : 0;
    /* what the whole minute allows, less what is still owed */
    long owed = (long)(used / T + 0.999999);

    r->limit_req = rpm;
    r->remaining_req = rpm - owed > 0 ? rpm - owed : 0;
    if ((double)(tau - used) < T && r->remaining_req > 0 && owed > 0)
        r->remaining_req = 0; /* the next one would wait */
    r->reset_req_ms = (long)used;
}

static void fill_tok(struct gw_limit_result *r, long tpm, double tat,
                     double now)
{
    double T = 60000.0 / (double)tpm;
    double used = tat > now ? tat - now : 0;
    long owed = (long)(used / T + 0.999999);

    r->limit_tok = tpm;
    r->remaining_tok = tpm - owed > 0 ? tpm - owed : 0;
    r->reset_tok_ms = (long)used;
}

/* Why a request was refused: its message is formatted from this once the
 * stripes are unlocked. */
struct refusal {
    const char *fmt; /* borrowed: a literal, "%s" the key, "%ld" limit */
    long limit;
};

static void deny(struct gw_limit_result *r, struct refusal *why,
                 const char *code, double wait, const char *fmt, long limit)
{
    r->allowed = 0;
    r->code = code;
    r->retry_after_ms = wait < 1 ? 1 : (long)(wait + 0.999);
    why->fmt = fmt;
    why->limit = limit;
}

static void result_init(struct gw_limit_result *r)
{
    memset(r, 0, sizeof(*r));
    r->limit_req = r->remaining_req = r->reset_req_ms = -1;
    r->limit_tok = r->remaining_tok = r->reset_tok_ms = -1;
    r->allowed = 1;
}

/* The checks and charges of gw_limit_admit, with the stripes of ks and ms
 * held. Returns 1 when admitted. */
static int decide(const struct gw_key *key, const struct gw_rate *mrate,
                  struct gw_lstate *ks, struct gw_lstate *ms, long est,
                  int64_t now_ms, long today, struct gw_limit_result *r,
                  struct refusal *why)
{
    double now = (double)now_ms, tat_k = 0, tat_m = 0, w;

    if (ks->day != today) {
        ks->day = today;
        ks->day_tokens = 0;
    }

    /* every check first (invariant 1) */
    if (key->max_concurrent && ks->inflight >= key->max_concurrent) {
        deny(r, why, "concurrency_limit_exceeded", 1000,
             "key '%s' has %ld requests in flight, its max_concurrent",
             key->max_concurrent);
        return 0;
    }
    if (key->daily_tokens && ks->day_tokens >= key->daily_tokens) {
        deny(r, why, "daily_budget_exceeded",
             (double)((today + 1) * DAY_MS - now_ms),
             "key '%s' has used its daily budget of %ld tokens",
             key->daily_tokens);
        return 0;
    }
    if (key->rate.rpm &&
        (w = check_req(ks->tat_req, key->rate.rpm, now, &tat_k)) > 0) {
        deny(r, why, "rate_limit_exceeded", w,
             "rate limit reached for key '%s': %ld requests per minute",
             key->rate.rpm);
        fill_req(r, key->rate.rpm, ks->tat_req, now);
        r->remaining_req = 0; /* none without waiting */
        return 0;
    }
    if (mrate && mrate->rpm &&
        (w = check_req(ms->tat_req, mrate->rpm, now, &tat_m)) > 0) {
        deny(r, why, "rate_limit_exceeded", w,
             "rate limit reached for key '%s' on this model: %ld requests "
             "per minute", mrate->rpm);
        fill_req(r, mrate->rpm, ms->tat_req, now);
        return 0;
    }
    if (key->rate.tpm && (w = check_tok(ks->tat_tok, now)) > 0) {
        deny(r, why, "rate_limit_exceeded", w,
             "rate limit reached for key '%s': %ld tokens per minute",
             key->rate.tpm);
        fill_tok(r, key->rate.tpm, ks->tat_tok, now);
        r->remaining_tok = 0;
        return 0;
    }
    if (mrate && mrate->tpm &&
        (w = check_tok(ms->tat_tok, now)) > 0) {
        deny(r, why, "rate_limit_exceeded", w,
             "rate limit reached for key '%s' on this model: %ld tokens "
             "per minute", mrate->tpm);
        fill_tok(r, mrate->tpm, ms->tat_tok, now);
        return 0;
    }

    /* admitted: charge everything */
    if (key->rate.rpm) {
        ks->tat_req = tat_k;
        fill_req(r, key->rate.rpm, tat_k, now);
    }
    if (mrate && mrate->rpm)
        ms->tat_req = tat_m;
    if (key->rate.tpm) {
        double base = ks->tat_tok > now ? ks->tat_tok : now;
        ks->tat_tok = base + (double)est * 60000.0 / (double)key->rate.tpm;
        fill_tok(r, key->rate.tpm, ks->tat_tok, now);
    }
    if (mrate && mrate->tpm) {
        double base = ms->tat_tok > now ? ms->tat_tok : now;
        ms->tat_tok = base + (double)est * 60000.0 / (double)mrate->tpm;
    }
    ks->inflight++;
    ks->day_tokens += est;
    return 1;
}

int gw_limit_admit(struct gw_limiter *l, const struct gw_key *key,
                   const char *model, long est, int64_t now_ms,
                   struct gw_admit *admit, struct gw_limit_result *r)
{
    const struct gw_rate *mrate = NULL;
    struct gw_lstate *ks, *ms = NULL;
    struct lname kn, mn;
    struct refusal why = {NULL, 0};
    long today = (long)(now_ms / DAY_MS);
    pthread_mutex_t *mu;
    size_t i;
    int ok = -1;

    memset(admit, 0, sizeof(*admit));
    result_init(r);
    for (i = 0; i < key->n_model_rates; i++)
        if (strcmp(key->model_rates[i].model, model) == 0)
            mrate = &key->model_rates[i].rate;
    if (lname_key(&kn, key->name) < 0 ||
        (mrate && lname_model(&mn, &kn, model) < 0))
        return -1;
    mu = stripe_of(l, kn.bucket); /* mn's too */

    pthread_mutex_lock(mu);
    ks = state(l, &kn);
    if (ks == NULL || (mrate && (ms = state(l, &mn)) == NULL))
        goto out;
    ok = 0;
    if (decide(key, mrate, ks, ms, est, now_ms, today, r, &why)) {
        admit->ks = ks;
        admit->ms = ms;
        admit->key = key;
        admit->mrate = mrate;
        admit->reserved = est;
        admit->day = today;
        admit->active = 1;
    }
out:
    pthread_mutex_unlock(mu);
    if (ok == 0 && !r->allowed)
        snprintf(r->message, sizeof(r->message), why.fmt, key->name,
                 why.limit);
    return ok;
}

int gw_limit_take_slot(struct gw_limiter *l, const struct gw_key *key,
                       const char *model, long est, struct gw_rlredis *remote,
                       struct gw_admit *admit, struct gw_limit_result *r)
{
    struct gw_lstate *ks;
    struct lname kn;
    pthread_mutex_t *mu;
    int full = 0;
    size_t i;

    memset(admit, 0, sizeof(*admit));
    result_init(r);
    if (lname_key(&kn, key->name) < 0)
        return -1;
    mu = stripe_of(l, kn.bucket);
    pthread_mutex_lock(mu);
    if ((ks = state(l, &kn)) == NULL) {
        pthread_mutex_unlock(mu);
        return -1;
    }
    if (key->max_concurrent && ks->inflight >= key->max_concurrent)
        full = 1;
    else
        ks->inflight++;
    pthread_mutex_unlock(mu);
    if (full) {
        struct refusal why;

        deny(r, &why, "concurrency_limit_exceeded", 1000,
             "key '%s' has %ld requests in flight, its max_concurrent",
             key->max_concurrent);
        snprintf(r->message, sizeof(r->message), why.fmt, key->name,
                 why.limit);
        return 0;
    }
    admit->ks = ks;
    admit->key = key;
    for (i = 0; i < key->n_model_rates; i++)
        if (strcmp(key->model_rates[i].model, model) == 0)
            admit->mrate = &key->model_rates[i].rate;
    admit->reserved = est;
    admit->active = 1;
    /* remote is this worker's own client, and the release runs on this
     * worker too: its holds count needs no lock */
    admit->remote = remote;
    gw_rlredis_hold(remote);
    gw_copy(admit->model, sizeof(admit->model), model);
    return 0;
}

void gw_limit_release(struct gw_limiter *l, struct gw_admit *a, long actual,
                      int64_t now_ms)
{
    struct gw_lstate *ks = a->ks, *ms = a->ms;
    pthread_mutex_t *mu;
    long delta;

    (void)now_ms;
    if (!a->active)
        return;
    a->active = 0;
    mu = stripe_of(l, ks->bucket); /* ms's too */
    if (a->remote) {
        pthread_mutex_lock(mu);
        ks->inflight--;
        pthread_mutex_unlock(mu);
        delta = actual - a->reserved; /* negative: tokens given back */
        /* only what a token limit or a budget counts is worth a call */
        if (actual >= 0 && (a->key->rate.tpm || a->key->daily_tokens))
            gw_rlredis_settle(a->remote, a->key, NULL, a->key->rate.tpm,
                              delta);
        if (actual >= 0 && a->mrate && a->mrate->tpm)
            gw_rlredis_settle(a->remote, a->key, a->model, a->mrate->tpm,
                              delta);
        gw_rlredis_unhold(a->remote);
        return;
    }
    delta = actual - a->reserved;
    pthread_mutex_lock(mu);
    ks->inflight--;
    if (actual >= 0) {
        /* a reservation from before midnight settles yesterday, not
         * today */
        if (ks->day == a->day)
            ks->day_tokens += delta;
        if (a->key->rate.tpm)
            ks->tat_tok += (double)delta * 60000.0 / (double)a->key->rate.tpm;
        if (a->mrate && a->mrate->tpm)
            ms->tat_tok += (double)delta * 60000.0 / (double)a->mrate->tpm;
    }
    pthread_mutex_unlock(mu);
}

void gw_limit_fmt_reset(long ms, char *out, size_t outlen)
{
    char n[GW_FMT_NUM];

    if (ms < 1000) {
        size_t l = gw_fmt_long(n, ms < 0 ? 0 : ms);
        if (outlen > l + 2) {
            memcpy(out, n, l);
            memcpy(out + l, "ms", 3);
        } else if (outlen) {
            out[0] = '\0';
        }
    }
    else if (ms < 60000)
        snprintf(out, outlen, "%.3gs", (double)ms / 1000.0);
    else if (ms < 3600000)
        snprintf(out, outlen, "%ldm%lds", ms / 60000, (ms % 60000) / 1000);
    else
        snprintf(out, outlen, "%ldh%ldm%lds", ms / 3600000,
                 (ms % 3600000) / 60000, (ms % 60000) / 1000);
}
