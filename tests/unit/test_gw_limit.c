/*
 * Unit tests of gateway/limit.c: the GCRA arithmetic on a simulated
 * clock. Bursts of one second of the rate, then the rate exactly; no
 * double burst at any edge; retry_after_ms is the exact wait; refused
 * requests charge nothing (invariant 1); tokens reserved and settled;
 * concurrency slots; the daily budget's UTC day; OpenAI's reset format.
 * Then the limiter shared by worker threads: 4 threads hammering one key
 * are admitted exactly what one thread is, max_concurrent holds at every
 * moment, every token settled counts, and a state created by two threads
 * at once exists once. `make tsan-unit` runs it under ThreadSanitizer.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/limit.h"

#define DAY_MS 86400000LL
/* an arbitrary wall clock: 2026-11-28 10:00 UTC, not a day boundary */
#define T0 (1795860000000LL)

static struct gw_key make_key(const char *name, long rpm, long tpm)
{
    struct gw_key k;

    memset(&k, 0, sizeof(k));
    k.name = (char *)name;
    k.rate.rpm = rpm;
    k.rate.tpm = tpm;
    return k;
}

/* One decision; releases at once (with unknown usage) when release is
 * set, so only the rate limits matter. Returns 1 when admitted. */
static int try_at(struct gw_limiter *l, const struct gw_key *k,
                  const char *model, long est, int64_t now,
                  struct gw_limit_result *r, int release)
{
    struct gw_admit a;
    struct gw_limit_result tmp;

    if (r == NULL)
        r = &tmp;
    assert_int_equal(gw_limit_admit(l, k, model, est, now, &a, r), 0);
    assert_int_equal(a.active, r->allowed);
    if (r->allowed && release)
        gw_limit_release(l, &a, -1, now);
    return r->allowed;
}

static void test_burst_then_rate(void **state)
{
    struct gw_limiter *l = gw_limiter_new();
    struct gw_key k = make_key("k", 600, 0);
    struct gw_limit_result r;
    int i;

    (void)state;
    assert_non_null(l);
    /* 600 rpm: ten at once */
    for (i = 0; i < 10; i++)
        assert_true(try_at(l, &k, "m", 1, T0, &r, 1));
    assert_false(try_at(l, &k, "m", 1, T0, &r, 1));
    assert_string_equal(r.code, "rate_limit_exceeded");
    assert_int_equal(r.retry_after_ms, 100);
    assert_non_null(strstr(r.message, "600 requests per minute"));
    /* 99 ms later still not, at 100 ms one, then not again */
    assert_false(try_at(l, &k, "m", 1, T0 + 99, &r, 1));
    assert_int_equal(r.retry_after_ms, 1);
    assert_true(try_at(l, &k, "m", 1, T0 + 100, &r, 1));
    assert_false(try_at(l, &k, "m", 1, T0 + 100, &r, 1));
    assert_int_equal(r.retry_after_ms, 100);
    /* after a long rest the burst is back, and no more than it */
    for (i = 0; i < 10; i++)
        assert_true(try_at(l, &k, "m", 1, T0 + 60000, &r, 1));
    assert_false(try_at(l, &k, "m", 1, T0 + 60000, &r, 1));
    gw_limiter_free(l);
}

/* per requests every step ms for dur ms at rpm: admitted must be the
 * rate times the time from the first request to the last, plus one
 * second's burst (at least one), within one. */
static void check_accuracy(long rpm, int per, int64_t step, int64_t dur)
{
    struct gw_limiter *l = gw_limiter_new();
    struct gw_key k = make_key("acc", rpm, 0);
    double burst = rpm / 60.0 < 1 ? 1 : (double)(long)(rpm / 60.0);
    double expect, tol;
    long n = 0;
    int64_t t, last = 0;

    assert_non_null(l);
    for (t = 0; t < dur; t += step) {
        for (int i = 0; i < per; i++)
            n += try_at(l, &k, "m", 1, T0 + t, NULL, 1);
        last = t;
    }
    /* from the first request to the last; a wall clock in ms as a double
     * has a resolution of 2^-12 ms, so emission intervals that are not
     * multiples of it drift by up to 2^-13 ms each (0.02% at 100000 rpm) */
    expect = (double)rpm * (double)last / 60000.0 + burst;
    tol = 1.5 + expect * 0.0002;
    if ((double)n < expect - tol || (double)n > expect + tol)
        fail_msg("rpm %ld, every %lld ms for %lld ms: admitted %ld, expected "
                 "%.1f", rpm, (long long)step, (long long)dur, n, expect);
    gw_limiter_free(l);
}

static void test_accuracy(void **state)
{
    (void)state;
    check_accuracy(600, 1, 1, 120000);   /* the bar, one instance */
    check_accuracy(600, 1, 7, 300000);
    check_accuracy(600, 50, 1000, 120000); /* bursts of 50 a second */
    check_accuracy(60, 1, 1, 600000);
    check_accuracy(1, 1, 10, 600000);    /* one at once, then one a minute */
    check_accuracy(7, 1, 3, 600000);
    check_accuracy(6000, 1, 1, 60000);
    check_accuracy(100000, 3, 1, 60000); /* faster than the clock's ms */
}

/* In any window, admitted <= window * rate + burst: no window edges, so
 * no double burst. Requests every 10 ms at 600 rpm for a minute. */
static void test_no_double_burst(void **state)
{
    struct gw_limiter *l = gw_limiter_new();
    struct gw_key k = make_key("nd", 600, 0);
    static int64_t adm[2000];
    size_t n = 0, i, j;
    int64_t t;

    (void)state;
    assert_non_null(l);
    for (t = 0; t < 60000; t += 10)
        if (try_at(l, &k, "m", 1, T0 + t, NULL, 1))
            adm[n++] = t;
    for (i = 0; i < n; i++)
        for (j = i; j < n; j++) {
            double allowed = (double)(adm[j] - adm[i]) / 100.0 + 10 + 1e-9;
            if ((double)(j - i + 1) > allowed)
                fail_msg("%zu admitted in %lld ms", j - i + 1,
                         (long long)(adm[j] - adm[i]));
        }
    gw_limiter_free(l);
}

/* Whatever the pattern, a refused request's retry_after_ms is the exact
 * wait: one ms earlier is refused, at that moment it is admitted. */
static void test_retry_after_exact(void **state)
{
    static const long rates[] = {1, 6, 60, 600, 1000, 6000};
    struct gw_limit_result r, r2;
    size_t i;
    int j;

    (void)state;
    for (i = 0; i < sizeof(rates) / sizeof(rates[0]); i++) {
        struct gw_limiter *l = gw_limiter_new();
        struct gw_key k = make_key("ra", rates[i], 0);
        int64_t t = T0;

        assert_non_null(l);
        for (j = 0; j < 50; j++) {
            if (try_at(l, &k, "m", 1, t, &r, 1)) {
                t += 3;
                continue;
            }
            assert_true(r.retry_after_ms >= 1);
            if (r.retry_after_ms > 1)
                assert_false(try_at(l, &k, "m", 1,
                                    t + r.retry_after_ms - 1, &r2, 1));
            t += r.retry_after_ms;
            if (!try_at(l, &k, "m", 1, t, &r2, 1))
                fail_msg("rpm %ld: refused %ld ms after a retry_after_ms of "
                         "%ld (wait now %ld)", rates[i], r.retry_after_ms,
                         r.retry_after_ms, r2.retry_after_ms);
        }
        gw_limiter_free(l);
    }
}

/* Invariant 1: a refused request charges nothing, on any limit. */
static void test_refusal_charges_nothing(void **state)
{
    struct gw_limiter *l = gw_limiter_new();
    struct gw_key k = make_key("rc", 60, 0);
    struct gw_key kt = make_key("rt", 120, 60000);
    struct gw_model_rate mr = {.model = (char *)"small", .rate = {6, 0}};
    struct gw_key km = make_key("rm", 600, 0);
    struct gw_limit_result r;
    int i;

    (void)state;
    assert_non_null(l);
    assert_true(try_at(l, &k, "m", 1, T0, &r, 1));
    for (i = 0; i < 1000; i++)
        assert_false(try_at(l, &k, "m", 1, T0 + i, &r, 1));
    assert_true(try_at(l, &k, "m", 1, T0 + 1000, &r, 1));

    /* a token refusal does not take a request (120 rpm: two at once) */
    assert_true(try_at(l, &kt, "m", 3000, T0, &r, 0)); /* 3 s of tokens */
    for (i = 1; i <= 100; i++) {
        assert_false(try_at(l, &kt, "m", 10, T0 + i, &r, 0));
        assert_non_null(strstr(r.message, "tokens per minute"));
    }
    assert_int_equal(r.retry_after_ms, 3000 - 100 - 1000 + 1);
    assert_true(try_at(l, &kt, "m", 1, T0 + 2001, &r, 0));

    /* a per-model refusal does not take the key's requests */
    km.model_rates = &mr;
    km.n_model_rates = 1;
    assert_true(try_at(l, &km, "small", 1, T0, &r, 1));
    for (i = 1; i <= 20; i++) {
        assert_false(try_at(l, &km, "small", 1, T0 + i, &r, 1));
        assert_non_null(strstr(r.message, "on this model"));
    }
    assert_int_equal(r.retry_after_ms, 10000 - 20);
    /* the key has 600 rpm, ten at once: one went to "small" */
    for (i = 0; i < 9; i++)
        assert_true(try_at(l, &km, "big", 1, T0 + 30, &r, 1));
    assert_false(try_at(l, &km, "big", 1, T0 + 30, &r, 1));
    gw_limiter_free(l);
}

static void test_tokens_reserve_and_settle(void **state)
{
    struct gw_limiter *l = gw_limiter_new();
    struct gw_key k = make_key("tok", 0, 60000); /* one token a ms */
    struct gw_admit a, b;
    struct gw_limit_result r;
    int i;

    (void)state;
    assert_non_null(l);
    assert_int_equal(gw_limit_admit(l, &k, "m", 1000000, T0, &a, &r), 0);
    assert_true(r.allowed);
    assert_int_equal(r.limit_tok, 60000);
    assert_int_equal(r.remaining_tok, 0);
    assert_int_equal(r.reset_tok_ms, 1000000);
    assert_int_equal(r.limit_req, -1);
    /* while reserved: refused, with the wait of the debt */
    assert_int_equal(gw_limit_admit(l, &k, "m", 10, T0 + 5, &b, &r), 0);
    assert_false(r.allowed);
    assert_false(b.active);
    assert_true(r.retry_after_ms >= 1000000 - 5 - 1000 &&
                r.retry_after_ms <= 1000000 - 5 - 1000 + 2);
    /* settled at 30 tokens: the rest comes back */
    gw_limit_release(l, &a, 30, T0 + 10);
    assert_false(a.active);
    gw_limit_release(l, &a, 30, T0 + 10); /* twice: a no-op */
    for (i = 0; i < 20; i++) {
        assert_int_equal(gw_limit_admit(l, &k, "m", 1000000, T0 + 20 + i, &a,
                                        &r), 0);
        assert_true(r.allowed);
        gw_limit_release(l, &a, 30, T0 + 20 + i);
    }
    /* 21 x 30 tokens = 630 ms of debt at most: still under a second */
    assert_int_equal(gw_limit_admit(l, &k, "m", 100, T0 + 40, &a, &r), 0);
    assert_true(r.allowed);
    assert_true(r.remaining_tok < 60000 - 600 && r.remaining_tok > 60000 - 800);
    /* unknown usage (-1): the reservation stands */
    gw_limit_release(l, &a, -1, T0 + 41);
    assert_int_equal(gw_limit_admit(l, &k, "m", 1000, T0 + 42, &a, &r), 0);
    assert_true(r.allowed);
    gw_limit_release(l, &a, 1000, T0 + 42);
    assert_int_equal(gw_limit_admit(l, &k, "m", 1, T0 + 43, &a, &r), 0);
    assert_false(r.allowed);
    gw_limiter_free(l);
}

static void test_concurrency(void **state)
{
    struct gw_limiter *l = gw_limiter_new();
    struct gw_key k = make_key("conc", 0, 0);
    struct gw_admit a[3];
    struct gw_limit_result r;

    (void)state;
    assert_non_null(l);
    k.max_concurrent = 2;
    assert_int_equal(gw_limit_admit(l, &k, "m", 1, T0, &a[0], &r), 0);
    assert_true(r.allowed);
    assert_int_equal(gw_limit_admit(l, &k, "m", 1, T0, &a[1], &r), 0);
    assert_true(r.allowed);
    assert_int_equal(gw_limit_admit(l, &k, "m", 1, T0, &a[2], &r), 0);
    assert_false(r.allowed);
    assert_string_equal(r.code, "concurrency_limit_exceeded");
    assert_true(r.retry_after_ms > 0);
    gw_limit_release(l, &a[0], 5, T0 + 1);
    gw_limit_release(l, &a[0], 5, T0 + 1); /* no double free of a slot */
    assert_int_equal(gw_limit_admit(l, &k, "m", 1, T0 + 2, &a[2], &r), 0);
    assert_true(r.allowed);
    assert_int_equal(gw_limit_admit(l, &k, "m", 1, T0 + 2, &a[0], &r), 0);
    assert_false(r.allowed);
    gw_limit_release(l, &a[1], -1, T0 + 3);
    gw_limit_release(l, &a[2], -1, T0 + 3);
    gw_limiter_free(l);
}

static void test_daily_budget(void **state)
{
    struct gw_limiter *l = gw_limiter_new();
    struct gw_key k = make_key("day", 0, 0);
    int64_t midnight = (T0 / DAY_MS + 1) * DAY_MS;
    struct gw_admit a;
    struct gw_limit_result r;
    int n = 0;

    (void)state;
    assert_non_null(l);
    k.daily_tokens = 1000;
    /* reserve 500, use 100: the budget counts usage */
    for (;;) {
        assert_int_equal(gw_limit_admit(l, &k, "m", 500, T0 + n, &a, &r), 0);
        if (!r.allowed)
            break;
        gw_limit_release(l, &a, 100, T0 + n);
        n++;
        assert_true(n < 100);
    }
    assert_int_equal(n, 10);
    assert_string_equal(r.code, "daily_budget_exceeded");
    assert_int_equal(r.retry_after_ms, midnight - (T0 + n));
    /* just before the UTC midnight still refused, after it admitted */
    assert_int_equal(gw_limit_admit(l, &k, "m", 1, midnight - 1, &a, &r), 0);
    assert_false(r.allowed);
    assert_int_equal(r.retry_after_ms, 1);
    assert_int_equal(gw_limit_admit(l, &k, "m", 1, midnight, &a, &r), 0);
    assert_true(r.allowed);
    gw_limit_release(l, &a, 1, midnight);
    gw_limiter_free(l);
}

/* A request admitted before midnight and settled after it must not
 * change the new day's count. */
static void test_budget_settle_across_midnight(void **state)
{
    struct gw_limiter *l = gw_limiter_new();
    struct gw_key k = make_key("mid", 0, 0);
    int64_t midnight = (T0 / DAY_MS + 1) * DAY_MS;
    struct gw_admit a, b;
    struct gw_limit_result r;

    (void)state;
    assert_non_null(l);
    k.daily_tokens = 100;
    assert_int_equal(gw_limit_admit(l, &k, "m", 50, midnight - 10, &a, &r), 0);
    assert_true(r.allowed);
    assert_int_equal(gw_limit_admit(l, &k, "m", 99, midnight + 1, &b, &r), 0);
    assert_true(r.allowed);
    /* the old request used far less than reserved: no refund into today */
    gw_limit_release(l, &a, 0, midnight + 2);
    gw_limit_release(l, &b, 99, midnight + 3);
    assert_int_equal(gw_limit_admit(l, &k, "m", 1, midnight + 4, &a, &r), 0);
    assert_true(r.allowed); /* 99 used today */
    gw_limit_release(l, &a, 1, midnight + 4);
    assert_int_equal(gw_limit_admit(l, &k, "m", 1, midnight + 5, &a, &r), 0);
    if (r.allowed) /* 100 used today */
        fail_msg("a reservation made before midnight and settled after it "
                 "changed the new day's budget");
    gw_limiter_free(l);
}

static void test_request_headers(void **state)
{
    struct gw_limiter *l = gw_limiter_new();
    struct gw_key k = make_key("hdr", 600, 0);
    struct gw_limit_result r;
    int i;

    (void)state;
    assert_non_null(l);
    assert_true(try_at(l, &k, "m", 1, T0, &r, 1));
    assert_int_equal(r.limit_req, 600);
    assert_int_equal(r.remaining_req, 599);
    assert_int_equal(r.reset_req_ms, 100);
    assert_int_equal(r.limit_tok, -1);
    for (i = 1; i < 9; i++)
        assert_true(try_at(l, &k, "m", 1, T0, &r, 1));
    assert_int_equal(r.remaining_req, 591);
    assert_int_equal(r.reset_req_ms, 900);
    /* the tenth: the next one would wait, so 0 remain */
    assert_true(try_at(l, &k, "m", 1, T0, &r, 1));
    assert_int_equal(r.remaining_req, 0);
    assert_int_equal(r.reset_req_ms, 1000);
    assert_false(try_at(l, &k, "m", 1, T0 + 50, &r, 1));
    assert_int_equal(r.remaining_req, 0);
    assert_int_equal(r.reset_req_ms, 950);
    /* half-way back: remaining counts what is no longer owed */
    assert_true(try_at(l, &k, "m", 1, T0 + 600, &r, 1));
    assert_int_equal(r.reset_req_ms, 500);
    assert_int_equal(r.remaining_req, 595);
    gw_limiter_free(l);
}

static void check_fmt(long ms, const char *want)
{
    char buf[32];

    gw_limit_fmt_reset(ms, buf, sizeof(buf));
    if (strcmp(buf, want) != 0)
        fail_msg("gw_limit_fmt_reset(%ld) = \"%s\", want \"%s\"", ms, buf,
                 want);
}

/* Parses Go's time.Duration.String() form back into ms. */
static double parse_go(const char *s)
{
    double total = 0;
    char *end;

    while (*s) {
        double v = strtod(s, &end);
        if (end == s)
            return -1;
        if (strncmp(end, "ms", 2) == 0) {
            total += v;
            end += 2;
        } else if (*end == 'h') {
            total += v * 3600000;
            end++;
        } else if (*end == 'm') {
            total += v * 60000;
            end++;
        } else if (*end == 's') {
            total += v * 1000;
            end++;
        } else {
            return -1;
        }
        s = end;
    }
    return total;
}

static void test_fmt_reset(void **state)
{
    static const long samples[] = {0, 1, 20, 999, 1000, 1001, 1500, 12345,
                                   59999, 60000, 61000, 360000, 3599999,
                                   86399999};
    size_t i;

    (void)state;
    check_fmt(20, "20ms");
    check_fmt(0, "0ms");
    check_fmt(-5, "0ms");
    check_fmt(999, "999ms");
    check_fmt(1000, "1s");
    check_fmt(1500, "1.5s");
    check_fmt(360000, "6m0s");
    check_fmt(61000, "1m1s");
    for (i = 0; i < sizeof(samples) / sizeof(samples[0]); i++) {
        char buf[32];
        double v;

        gw_limit_fmt_reset(samples[i], buf, sizeof(buf));
        v = parse_go(buf);
        /* never later than the truth by more than a ms, never earlier by
         * more than a second's rounding */
        if (v < 0 || v > (double)samples[i] + 1 ||
            v < (double)samples[i] - 1000)
            fail_msg("gw_limit_fmt_reset(%ld) = \"%s\" reads as %.0f ms",
                     samples[i], buf, v);
    }
}

/* A budget reset can be hours away: Go writes hours ("23h59m59s"), and
 * so does OpenAI. */
static void test_fmt_reset_hours(void **state)
{
    (void)state;
    check_fmt(3600000, "1h0m0s");
    check_fmt(86399000, "23h59m59s");
}

/* Threads: the limiter is shared by every worker (issue 9 point 3). */
#define NTHREADS 4
#define OPS 100000 /* admissions a thread */

/* One key, its rate and a per-model rate on "m" (two states, checked and
 * charged together), admitted in PHASES phases of a frozen clock: within a phase
 * every admission sees the same now, so the outcome depends only on how
 * many ask, not on which thread or in what order. Phases are separated by
 * a barrier. */
#define PHASES 20
#define PHASE_MS 500

/* what a thread of the threaded tests counted: each run struct below
 * starts with one */
struct tally {
    long admitted, refused, other; /* other: a failure or a wrong code */
};

/* Runs fn on each of the NTHREADS run structs at runs (size bytes each,
 * a struct tally first), one thread each, and returns the sum of their
 * tallies once all have ended. */
static struct tally run_threads(void *(*fn)(void *), void *runs, size_t size)
{
    pthread_t th[NTHREADS];
    struct tally sum = {0, 0, 0};
    int i;

    for (i = 0; i < NTHREADS; i++)
        assert_int_equal(
            pthread_create(&th[i], NULL, fn, (char *)runs + i * size), 0);
    for (i = 0; i < NTHREADS; i++) {
        const struct tally *t = (const void *)((char *)runs + i * size);

        assert_int_equal(pthread_join(th[i], NULL), 0);
        sum.admitted += t->admitted;
        sum.refused += t->refused;
        sum.other += t->other;
    }
    return sum;
}

struct rate_run {
    struct tally t;
    struct gw_limiter *l;
    const struct gw_key *k;
    pthread_barrier_t *barrier; /* NULL: one thread */
    int per_phase;
};

static void *rate_thread(void *arg)
{
    struct rate_run *run = arg;
    struct gw_admit a;
    struct gw_limit_result r;
    int p, i;

    for (p = 0; p < PHASES; p++) {
        int64_t now = T0 + (int64_t)p * PHASE_MS;

        if (run->barrier)
            pthread_barrier_wait(run->barrier);
        for (i = 0; i < run->per_phase; i++) {
            if (gw_limit_admit(run->l, run->k, "m", 1, now, &a, &r) != 0) {
                run->t.other++;
                continue;
            }
            if (r.allowed) {
                run->t.admitted++;
                gw_limit_release(run->l, &a, -1, now);
            } else if (strcmp(r.code, "rate_limit_exceeded") == 0) {
                run->t.refused++;
            } else {
                run->t.other++;
            }
        }
    }
    return NULL;
}

static struct gw_key rate_key(struct gw_model_rate *mr)
{
    /* key: 10000 at once, then 5000 a phase; model "m": 8000 at once,
     * then 4000 a phase, so it refuses; 20000 ask a phase */
    struct gw_key k = make_key("thr", 600000, 0);

    mr->model = (char *)"m";
    mr->rate.rpm = 480000;
    mr->rate.tpm = 0;
    k.model_rates = mr;
    k.n_model_rates = 1;
    return k;
}

static void test_threads_rate_exact(void **state)
{
    struct gw_model_rate mr;
    struct gw_key k = rate_key(&mr);
    struct gw_key k1 = k;
    struct gw_limiter *l = gw_limiter_new(), *l1 = gw_limiter_new();
    struct rate_run one, runs[NTHREADS];
    pthread_barrier_t barrier;
    struct tally sum;
    int i;

    (void)state;
    assert_non_null(l);
    assert_non_null(l1);
    /* the reference: one thread asks as often as all of them */
    memset(&one, 0, sizeof(one));
    one.l = l1;
    one.k = &k1;
    one.per_phase = NTHREADS * (OPS / PHASES);
    rate_thread(&one);
    assert_int_equal(one.t.other, 0);
    assert_int_equal(one.t.admitted + one.t.refused, (long)NTHREADS * OPS);
    /* not a trivial run: both ways, and more than the first burst */
    assert_true(one.t.admitted > 80000 && one.t.refused > 200000);

    assert_int_equal(pthread_barrier_init(&barrier, NULL, NTHREADS), 0);
    for (i = 0; i < NTHREADS; i++) {
        memset(&runs[i], 0, sizeof(runs[i]));
        runs[i].l = l;
        runs[i].k = &k;
        runs[i].barrier = &barrier;
        runs[i].per_phase = OPS / PHASES;
    }
    sum = run_threads(rate_thread, runs, sizeof(runs[0]));
    pthread_barrier_destroy(&barrier);
    assert_int_equal(sum.other, 0);
    if (sum.admitted != one.t.admitted)
        fail_msg("%d threads were admitted %ld, one thread %ld", NTHREADS,
                 sum.admitted, one.t.admitted);
    assert_int_equal(sum.refused, one.t.refused);
    /* and the states end alike: the next request waits as long */
    {
        struct gw_limit_result r, r1;
        int64_t end = T0 + (int64_t)PHASES * PHASE_MS;

        try_at(l, &k, "m", 1, end, &r, 1);
        try_at(l1, &k1, "m", 1, end, &r1, 1);
        assert_int_equal(r.allowed, r1.allowed);
        assert_int_equal(r.retry_after_ms, r1.retry_after_ms);
        assert_int_equal(r.remaining_req, r1.remaining_req);
    }
    gw_limiter_free(l);
    gw_limiter_free(l1);
}

/* max_concurrent 3 for 4 threads, each on its own model (its own
 * key+model state with a token rate, settled on release): the slots held,
 * counted outside the limiter, never pass 3; at the end none is held,
 * and the daily count is exactly the usage settled. */
#define MAXC 3
#define EST 7
#define USED 2

struct conc_run {
    struct tally t;
    struct gw_limiter *l;
    const struct gw_key *k;
    const char *model;
    atomic_long *held; /* slots held right now, by every thread */
    atomic_long *over; /* times held was seen above MAXC */
    pthread_barrier_t *start; /* every thread starts at once */
};

static void *conc_thread(void *arg)
{
    struct conc_run *run = arg;
    struct gw_admit a;
    struct gw_limit_result r;
    int i;

    pthread_barrier_wait(run->start);
    for (i = 0; i < OPS; i++) {
        if (gw_limit_admit(run->l, run->k, run->model, EST, T0, &a, &r) != 0) {
            run->t.other++;
            continue;
        }
        if (!r.allowed) {
            if (strcmp(r.code, "concurrency_limit_exceeded") == 0)
                run->t.refused++;
            else
                run->t.other++;
            continue;
        }
        run->t.admitted++;
        if (atomic_fetch_add(run->held, 1) + 1 > MAXC)
            atomic_fetch_add(run->over, 1);
        if (i % 8 == 0)
            sched_yield(); /* hold the slot while others ask */
        atomic_fetch_sub(run->held, 1);
        gw_limit_release(run->l, &a, USED, T0);
    }
    return NULL;
}

static void test_threads_concurrency(void **state)
{
    static const char *models[NTHREADS] = {"m0", "m1", "m2", "m3"};
    struct gw_model_rate mr[NTHREADS];
    struct gw_key k = make_key("cc", 0, 0), probe;
    struct gw_limiter *l = gw_limiter_new();
    struct conc_run runs[NTHREADS];
    atomic_long held = 0, over = 0;
    pthread_barrier_t start;
    struct gw_admit a[MAXC + 1];
    struct gw_limit_result r;
    struct tally sum;
    int i;

    (void)state;
    assert_non_null(l);
    for (i = 0; i < NTHREADS; i++) {
        mr[i].model = (char *)models[i];
        mr[i].rate.rpm = 0;
        /* 1000 tokens a ms: 100000 x 2 tokens stay under a second */
        mr[i].rate.tpm = 60000000;
    }
    k.model_rates = mr;
    k.n_model_rates = NTHREADS;
    k.max_concurrent = MAXC;
    k.daily_tokens = 1000000000000L;
    assert_int_equal(pthread_barrier_init(&start, NULL, NTHREADS), 0);
    for (i = 0; i < NTHREADS; i++) {
        memset(&runs[i], 0, sizeof(runs[i]));
        runs[i].l = l;
        runs[i].k = &k;
        runs[i].model = models[i];
        runs[i].held = &held;
        runs[i].over = &over;
        runs[i].start = &start;
    }
    sum = run_threads(conc_thread, runs, sizeof(runs[0]));
    pthread_barrier_destroy(&start);
    assert_int_equal(sum.other, 0);
    assert_int_equal(sum.admitted + sum.refused, (long)NTHREADS * OPS);
    assert_true(sum.admitted > 0);
    if (atomic_load(&over) != 0)
        fail_msg("more than %d slots held at once, %ld times", MAXC,
                 (long)atomic_load(&over));
    assert_int_equal(atomic_load(&held), 0);

    /* every slot came back: MAXC more are admitted, not one more */
    for (i = 0; i < MAXC; i++) {
        assert_int_equal(gw_limit_admit(l, &k, "m0", 0, T0, &a[i], &r), 0);
        assert_true(r.allowed);
    }
    assert_int_equal(gw_limit_admit(l, &k, "m0", 0, T0, &a[MAXC], &r), 0);
    assert_false(r.allowed);
    assert_string_equal(r.code, "concurrency_limit_exceeded");
    for (i = 0; i < MAXC; i++)
        gw_limit_release(l, &a[i], -1, T0);

    /* the day's count is USED a request, none lost: a budget of exactly
     * that is spent, one token more is not */
    probe = k;
    probe.daily_tokens = sum.admitted * USED;
    assert_int_equal(gw_limit_admit(l, &probe, "m0", 0, T0, &a[0], &r), 0);
    if (r.allowed)
        fail_msg("the daily count is below %ld tokens settled",
                 sum.admitted * USED);
    assert_string_equal(r.code, "daily_budget_exceeded");
    probe.daily_tokens = sum.admitted * USED + 1;
    assert_int_equal(gw_limit_admit(l, &probe, "m0", 0, T0, &a[0], &r), 0);
    if (!r.allowed)
        fail_msg("the daily count is above %ld tokens settled",
                 sum.admitted * USED);
    gw_limit_release(l, &a[0], -1, T0);
    gw_limiter_free(l);
}

/* States created by several threads at once: NKEYS keys of one request
 * a minute (one at once), each with a per-model rate too, asked by every
 * thread from a different starting point; each key's state exists once,
 * so exactly one request a key is admitted. */
#define NKEYS 2000

struct create_run {
    struct tally t;
    struct gw_limiter *l;
    const struct gw_key *keys;
    int start;
    pthread_barrier_t *barrier; /* every thread starts at once */
};

static void *create_thread(void *arg)
{
    struct create_run *run = arg;
    struct gw_admit a;
    struct gw_limit_result r;
    int i;

    pthread_barrier_wait(run->barrier);
    for (i = 0; i < NKEYS; i++) {
        const struct gw_key *k = &run->keys[(run->start + i) % NKEYS];

        if (gw_limit_admit(run->l, k, "m", 1, T0, &a, &r) != 0) {
            run->t.other++;
            continue;
        }
        if (r.allowed) {
            run->t.admitted++;
            gw_limit_release(run->l, &a, 1, T0);
        }
    }
    return NULL;
}

static void test_threads_state_creation(void **state)
{
    static char names[NKEYS][16];
    static struct gw_key keys[NKEYS];
    struct gw_model_rate mr = {.model = (char *)"m", .rate = {60, 0}};
    struct gw_limiter *l = gw_limiter_new();
    struct create_run runs[NTHREADS];
    pthread_barrier_t barrier;
    struct tally sum;
    int i;

    (void)state;
    assert_non_null(l);
    for (i = 0; i < NKEYS; i++) {
        snprintf(names[i], sizeof(names[i]), "key%d", i);
        keys[i] = make_key(names[i], 60, 0);
        keys[i].model_rates = &mr;
        keys[i].n_model_rates = 1;
    }
    assert_int_equal(pthread_barrier_init(&barrier, NULL, NTHREADS), 0);
    for (i = 0; i < NTHREADS; i++) {
        memset(&runs[i], 0, sizeof(runs[i]));
        runs[i].l = l;
        runs[i].keys = keys;
        runs[i].start = i * (NKEYS / NTHREADS / 2);
        runs[i].barrier = &barrier;
    }
    sum = run_threads(create_thread, runs, sizeof(runs[0]));
    pthread_barrier_destroy(&barrier);
    assert_int_equal(sum.other, 0);
    if (sum.admitted != NKEYS)
        fail_msg("%ld admitted for %d keys of one request at once",
                 sum.admitted, NKEYS);
    gw_limiter_free(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_burst_then_rate),
        cmocka_unit_test(test_accuracy),
        cmocka_unit_test(test_no_double_burst),
        cmocka_unit_test(test_retry_after_exact),
        cmocka_unit_test(test_refusal_charges_nothing),
        cmocka_unit_test(test_tokens_reserve_and_settle),
        cmocka_unit_test(test_concurrency),
        cmocka_unit_test(test_daily_budget),
        cmocka_unit_test(test_budget_settle_across_midnight),
        cmocka_unit_test(test_request_headers),
        cmocka_unit_test(test_fmt_reset),
        cmocka_unit_test(test_fmt_reset_hours),
        cmocka_unit_test(test_threads_rate_exact),
        cmocka_unit_test(test_threads_concurrency),
        cmocka_unit_test(test_threads_state_creation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
