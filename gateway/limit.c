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
 * Invariants:
 *  1. A request is admitted by all of its limits or by none: nothing is
 *     charged until every check has passed.
 *  2. Every admission is released exactly once (gw_admit.active).
 */
#include "gateway/limit.h"
#include "gateway/rlredis.h"
#include "gateway/fmt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOLERANCE_MS 1000.0
#define DAY_MS 86400000LL

struct gw_lstate {
    char *name; /* owned: key name, or key name '\x1f' model */
    double tat_req, tat_tok;
    long inflight;
    long day;
    long day_tokens;
    struct gw_lstate *next; /* owned: hash chain */
};

#define NBUCKETS 1024

struct gw_limiter {
    struct gw_lstate *buckets[NBUCKETS]; /* owned */
};

struct gw_limiter *gw_limiter_new(void)
{
    return calloc(1, sizeof(struct gw_limiter));
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
    free(l);
}

static struct gw_lstate *state(struct gw_limiter *l, const char *a,
                               const char *b)
{
    char name[600];
    uint32_t h = 2166136261u;
    struct gw_lstate *s;
    size_t na = strlen(a), nb = b ? strlen(b) : 0;

    if (na + 1 + nb >= sizeof(name))
        return NULL;
    memcpy(name, a, na);
    if (b) {
        name[na] = '\x1f';
        memcpy(name + na + 1, b, nb);
        na += 1 + nb;
    }
    name[na] = '\0';
    for (const char *p = name; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    for (s = l->buckets[h % NBUCKETS]; s; s = s->next)
        if (strcmp(s->name, name) == 0)
            return s;
    s = calloc(1, sizeof(*s));
    if (s == NULL || (s->name = strdup(name)) == NULL) {
        free(s);
        return NULL;
    }
    s->next = l->buckets[h % NBUCKETS];
    l->buckets[h % NBUCKETS] = s;
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

static void deny(struct gw_limit_result *r, const char *code, double wait,
                 const char *fmt, const char *name, long limit)
{
    r->allowed = 0;
    r->code = code;
    r->retry_after_ms = wait < 1 ? 1 : (long)(wait + 0.999);
    snprintf(r->message, sizeof(r->message), fmt, name, limit);
}

int gw_limit_admit(struct gw_limiter *l, const struct gw_key *key,
                   const char *model, long est, int64_t now_ms,
                   struct gw_admit *admit, struct gw_limit_result *r)
{
    const struct gw_rate *mrate = NULL;
    struct gw_lstate *ks, *ms = NULL;
    double now = (double)now_ms, tat_k = 0, tat_m = 0, w;
    long today = (long)(now_ms / DAY_MS);
    size_t i;

    memset(admit, 0, sizeof(*admit));
    memset(r, 0, sizeof(*r));
    r->limit_req = r->remaining_req = r->reset_req_ms = -1;
    r->limit_tok = r->remaining_tok = r->reset_tok_ms = -1;
    r->allowed = 1;
    for (i = 0; i < key->n_model_rates; i++)
        if (strcmp(key->model_rates[i].model, model) == 0)
            mrate = &key->model_rates[i].rate;
    ks = state(l, key->name, NULL);
    if (ks == NULL || (mrate && (ms = state(l, key->name, model)) == NULL))
        return -1;
    if (ks->day != today) {
        ks->day = today;
        ks->day_tokens = 0;
    }

    /* every check first (invariant 1) */
    if (key->max_concurrent && ks->inflight >= key->max_concurrent) {
        deny(r, "concurrency_limit_exceeded", 1000,
             "key '%s' has %ld requests in flight, its max_concurrent", key->name,
             key->max_concurrent);
        return 0;
    }
    if (key->daily_tokens && ks->day_tokens >= key->daily_tokens) {
        deny(r, "daily_budget_exceeded", (double)((today + 1) * DAY_MS - now_ms),
             "key '%s' has used its daily budget of %ld tokens", key->name,
             key->daily_tokens);
        return 0;
    }
    if (key->rate.rpm &&
        (w = check_req(ks->tat_req, key->rate.rpm, now, &tat_k)) > 0) {
        deny(r, "rate_limit_exceeded", w,
             "rate limit reached for key '%s': %ld requests per minute",
             key->name, key->rate.rpm);
        fill_req(r, key->rate.rpm, ks->tat_req, now);
        r->remaining_req = 0; /* none without waiting */
        return 0;
    }
    if (mrate && mrate->rpm &&
        (w = check_req(ms->tat_req, mrate->rpm, now, &tat_m)) > 0) {
        deny(r, "rate_limit_exceeded", w,
             "rate limit reached for key '%s' on this model: %ld requests "
             "per minute", key->name, mrate->rpm);
        fill_req(r, mrate->rpm, ms->tat_req, now);
        return 0;
    }
    if (key->rate.tpm && (w = check_tok(ks->tat_tok, now)) > 0) {
        deny(r, "rate_limit_exceeded", w,
             "rate limit reached for key '%s': %ld tokens per minute",
             key->name, key->rate.tpm);
        fill_tok(r, key->rate.tpm, ks->tat_tok, now);
        r->remaining_tok = 0;
        return 0;
    }
    if (mrate && mrate->tpm &&
        (w = check_tok(ms->tat_tok, now)) > 0) {
        deny(r, "rate_limit_exceeded", w,
             "rate limit reached for key '%s' on this model: %ld tokens "
             "per minute", key->name, mrate->tpm);
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
    admit->ks = ks;
    admit->ms = ms;
    admit->key = key;
    admit->mrate = mrate;
    admit->reserved = est;
    admit->day = today;
    admit->active = 1;
    return 0;
}

int gw_limit_take_slot(struct gw_limiter *l, const struct gw_key *key,
                       const char *model, long est, struct gw_rlredis *remote,
                       struct gw_admit *admit, struct gw_limit_result *r)
{
    struct gw_lstate *ks;
    size_t i;

    memset(admit, 0, sizeof(*admit));
    memset(r, 0, sizeof(*r));
    r->limit_req = r->remaining_req = r->reset_req_ms = -1;
    r->limit_tok = r->remaining_tok = r->reset_tok_ms = -1;
    r->allowed = 1;
    if ((ks = state(l, key->name, NULL)) == NULL)
        return -1;
    if (key->max_concurrent && ks->inflight >= key->max_concurrent) {
        deny(r, "concurrency_limit_exceeded", 1000,
             "key '%s' has %ld requests in flight, its max_concurrent",
             key->name, key->max_concurrent);
        return 0;
    }
    ks->inflight++;
    admit->ks = ks;
    admit->key = key;
    for (i = 0; i < key->n_model_rates; i++)
        if (strcmp(key->model_rates[i].model, model) == 0)
            admit->mrate = &key->model_rates[i].rate;
    admit->reserved = est;
    admit->active = 1;
    admit->remote = remote;
    gw_rlredis_hold(remote);
    gw_copy(admit->model, sizeof(admit->model), model);
    return 0;
}

void gw_limit_release(struct gw_limiter *l, struct gw_admit *a, long actual,
                      int64_t now_ms)
{
    long delta;

    (void)l;
    if (!a->active)
        return;
    a->active = 0;
    a->ks->inflight--;
    if (a->remote) {
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
    if (actual < 0)
        return;
    delta = actual - a->reserved;
    (void)now_ms;
    /* a reservation from before midnight settles yesterday, not today */
    if (a->ks->day == a->day)
        a->ks->day_tokens += delta;
    if (a->key->rate.tpm)
        a->ks->tat_tok += (double)delta * 60000.0 / (double)a->key->rate.tpm;
    if (a->mrate && a->mrate->tpm)
        a->ms->tat_tok += (double)delta * 60000.0 / (double)a->mrate->tpm;
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
