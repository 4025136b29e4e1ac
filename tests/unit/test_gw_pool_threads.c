/* Threaded unit tests of gateway/pool.c (issue 9, workers): several
 * threads pick and record on the same pools and backend states at once,
 * as the gateway's workers do, and the exact invariants hold at the end:
 * every in-flight count back to 0, attempt / failure / retry counters
 * equal to what the threads did, max_inflight and half-open probe slots
 * never passed, round robin's spread exact over the total. Run it under
 * ThreadSanitizer too (gateway/module.mk: make tsan-unit). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "gateway/config.h"
#include "gateway/log.h"
#include "gateway/pool.h"

#define T0 (1000LL * 1000000LL)
#define THREADS 4
#define PICKS 105000 /* per thread: 4 x 105,000 = 60,000 rounds of 7 */

static struct gw_config *load(const char *text)
{
    char *err = NULL;
    struct gw_config *c = gw_config_parse(text, strlen(text), &err);

    if (c == NULL)
        fail_msg("config: %s", err);
    return c;
}

static void run_threads(void *(*fn)(void *), void *args, size_t argsize)
{
    pthread_t t[THREADS];

    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, fn,
                                        (char *)args + i * argsize), 0);
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);
}

static uint64_t hist_count(const struct gw_metrics_hist *h)
{
    uint64_t n = 0;

    for (int i = 0; i <= GW_METRICS_BUCKETS; i++)
        n += h->b[i];
    return n;
}

/* ------------------------------------------------ round robin, exact */

/* a, b, c serve m with weights 5, 1, 1 */
static const char three[] =
    "{\"backends\":["
    "{\"name\":\"a\",\"url\":\"http://127.0.0.1:1/v1\",\"models\":[\"m\"],"
    "\"weight\":5},"
    "{\"name\":\"b\",\"url\":\"http://127.0.0.1:2/v1\",\"models\":[\"m\"]},"
    "{\"name\":\"c\",\"url\":\"http://127.0.0.1:3/v1\",\"models\":[\"m\"]}]}";

struct rr_arg {
    struct gw_config *c;
    struct gw_pool *p;
    unsigned long n[3]; /* picks by backend */
    int failed;         /* a pick that found nothing */
};

static void *rr_thread(void *arg)
{
    struct rr_arg *a = arg;
    uint64_t rng = 7;

    for (int i = 0; i < PICKS; i++) {
        struct gw_pick_why why;
        int probe;
        struct gw_backend *b = gw_pool_pick(a->p, T0, &rng, NULL, 0, &probe,
                                            &why);
        if (b == NULL) {
            a->failed++;
            continue;
        }
        a->n[b - a->c->backends]++;
        gw_pool_record(b, T0, probe, GW_BREAKER_OK, 1000 + i % 5000, 0);
    }
    return NULL;
}

static void test_round_robin_spread_exact(void **state)
{
    struct gw_backend_states *st = gw_states_new();
    struct gw_config *c = load(three);
    struct rr_arg args[THREADS];
    unsigned long n[3] = {0, 0, 0};
    const unsigned long total = (unsigned long)THREADS * PICKS;

    (void)state;
    assert_int_equal(gw_states_attach(st, c), 0);
    memset(args, 0, sizeof(args));
    for (int i = 0; i < THREADS; i++) {
        args[i].c = c;
        args[i].p = gw_pool_find(c, "m");
    }
    run_threads(rr_thread, args, sizeof(args[0]));
    for (int i = 0; i < THREADS; i++) {
        assert_int_equal(args[i].failed, 0);
        for (int j = 0; j < 3; j++)
            n[j] += args[i].n[j];
    }
    /* each pick is one round of smooth weighted round robin: 5/7, 1/7,
     * 1/7 of the total exactly, whatever thread made it */
    assert_int_equal(n[0], total / 7 * 5);
    assert_int_equal(n[1], total / 7);
    assert_int_equal(n[2], total / 7);
    /* each round adds the total weight and takes it back: a lost update
     * would leave the sum off 0 */
    assert_int_equal(args[0].p->current[0] + args[0].p->current[1] +
                         args[0].p->current[2], 0);
    for (int j = 0; j < 3; j++) {
        struct gw_backend_snap sn;
        gw_states_snap(&c->backends[j], T0, &sn);
        assert_int_equal(sn.inflight, 0);
        assert_int_equal(sn.attempts, n[j]);
        assert_int_equal(sn.failures, 0);
        assert_int_equal(hist_count(&sn.head), n[j]);
        assert_true(sn.ewma_us >= 1000 && sn.ewma_us < 6000);
    }
    gw_config_unref(c);
    gw_states_free(st);
}

/* ------------------------------------- every strategy, with failures */

/* a: always answers; b: half its answers fail, sometimes Retry-After, at
 * most 3 in flight; c: unreachable one attempt in three. Breakers trip
 * fast and cool down in milliseconds of the shared fake clock, so they go
 * round closed -> open -> half_open many times; 2 probes at once. */
static const char *const hammer_fmt =
    "{\"backends\":["
    "{\"name\":\"a\",\"url\":\"http://127.0.0.1:1/v1\",\"models\":[\"m\"],"
    "\"weight\":3,\"breaker\":%s},"
    "{\"name\":\"b\",\"url\":\"http://127.0.0.1:2/v1\",\"models\":[\"m\"],"
    "\"max_inflight\":3,\"breaker\":%s},"
    "{\"name\":\"c\",\"url\":\"http://127.0.0.1:3/v1\",\"models\":[\"m\"],"
    "\"breaker\":%s}],"
    "\"models\":{\"m\":{\"strategy\":\"%s\"}}}";
static const char hammer_breaker[] =
    "{\"failures\":3,\"error_rate_pct\":40,\"min_requests\":20,"
    "\"window_s\":1,\"cooldown_ms\":1,\"max_cooldown_ms\":8,\"probes\":2}";
#define PROBES 2
#define B_MAX 3
#define OVER_INFLIGHT 1 /* b had more than B_MAX in flight */
#define OVER_PROBES 2   /* a backend had more than PROBES probes out */
#define OVER_READER 4   /* the reader could not start */
#define OVER_RELOAD 8   /* a reload could not be attached */

struct hammer {
    struct gw_config *c;
    struct gw_pool *p;
    int64_t clock_us;   /* atomic: the fake clock every thread moves */
    int inflight[3];    /* atomic: the test's own count, by backend */
    int probes[3];      /* atomic: attempts in flight that are probes */
    int max_inflight_b; /* atomic: the most seen on b */
    int max_probes;     /* atomic: the most probes seen on one backend */
    int over;           /* atomic: what broke, OVER_* bits */
    int stop;           /* atomic: the reader thread stops */
};

struct hammer_arg {
    struct hammer *h;
    uint64_t rng;
    unsigned long attempts[3], failures[3], retries[3], answered[3];
    unsigned long picks, none;
};

static void broke(struct hammer *h, int what)
{
    __atomic_or_fetch(&h->over, what, __ATOMIC_RELAXED);
}

static int64_t tick(struct hammer *h)
{
    return T0 + __atomic_add_fetch(&h->clock_us, 7, __ATOMIC_RELAXED);
}

static void note_max(int *max, int v)
{
    int cur = __atomic_load_n(max, __ATOMIC_RELAXED);

    while (v > cur && !__atomic_compare_exchange_n(max, &cur, v, 0,
                                                   __ATOMIC_RELAXED,
                                                   __ATOMIC_RELAXED))
        ;
}

static uint64_t rnd(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12, x ^= x << 25, x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static enum gw_breaker_outcome outcome_of(size_t j, uint64_t r, long *ra)
{
    *ra = 0;
    if (r % 20 == 0)
        return GW_BREAKER_NEUTRAL; /* the client left */
    switch (j) {
    case 0:
        return GW_BREAKER_OK;
    case 1:
        if (r % 97 == 1)
            *ra = 2; /* Retry-After: 2 ms */
        return r % 2 ? GW_BREAKER_FAIL : GW_BREAKER_OK;
    default:
        return r % 3 == 0 ? GW_BREAKER_DOWN : GW_BREAKER_OK;
    }
}

static void *hammer_thread(void *arg)
{
    struct hammer_arg *a = arg;
    struct hammer *h = a->h;

    for (int i = 0; i < PICKS; i++) {
        struct gw_backend *tried[3];
        size_t n_tried = 0;
        /* one request: up to three attempts, each on an untried backend */
        while (n_tried < 3) {
            struct gw_pick_why why;
            int probe, n;
            int64_t now = tick(h);
            long ra;
            struct gw_backend *b = gw_pool_pick(h->p, now, &a->rng, tried,
                                                n_tried, &probe, &why);
            a->picks++;
            if (b == NULL) {
                a->none++;
                break;
            }
            size_t j = (size_t)(b - h->c->backends);
            tried[n_tried++] = b;
            if (n_tried > 1) {
                gw_pool_retried(b);
                a->retries[j]++;
            }
            n = __atomic_add_fetch(&h->inflight[j], 1, __ATOMIC_RELAXED);
            if (j == 1) {
                note_max(&h->max_inflight_b, n);
                if (n > B_MAX)
                    broke(h, OVER_INFLIGHT);
            }
            if (probe) {
                n = __atomic_add_fetch(&h->probes[j], 1, __ATOMIC_RELAXED);
                note_max(&h->max_probes, n);
                if (n > PROBES)
                    broke(h, OVER_PROBES);
            }
            uint64_t r = rnd(&a->rng);
            if (r % 8 == 0)
                sched_yield(); /* hold it a while: others pick meanwhile */
            enum gw_breaker_outcome o = outcome_of(j, r >> 8, &ra);
            if (probe)
                __atomic_sub_fetch(&h->probes[j], 1, __ATOMIC_RELAXED);
            __atomic_sub_fetch(&h->inflight[j], 1, __ATOMIC_RELAXED);
            gw_pool_record(b, tick(h), probe, o,
                           o == GW_BREAKER_OK ? (long)(r % 90000) : -1, ra);
            if (o != GW_BREAKER_NEUTRAL)
                a->attempts[j]++;
            if (o == GW_BREAKER_FAIL || o == GW_BREAKER_DOWN)
                a->failures[j]++;
            if (o == GW_BREAKER_OK)
                a->answered[j]++;
            if (o == GW_BREAKER_OK)
                break;
        }
    }
    return NULL;
}

/* Worker 0 meanwhile: scrapes, /admin/backends, /readyz, health verdicts
 * on a, and reloads (configs attached to the same table, with new
 * backends: the table grows while the others pick on the old config). */
static void *reader_thread(void *arg)
{
    struct hammer *h = arg;
    struct evbuffer *out = evbuffer_new();
    int k = 0;

    /* no cmocka assertion off the main thread: it would longjmp across
     * threads; h->over tells */
    if (out == NULL) {
        broke(h, OVER_READER);
        return NULL;
    }
    while (!__atomic_load_n(&h->stop, __ATOMIC_RELAXED)) {
        struct gw_backend_snap sn;
        int64_t now = tick(h);
        for (size_t j = 0; j < 3; j++)
            gw_states_snap(&h->c->backends[j], now, &sn);
        gw_states_json(h->c, now, out);
        evbuffer_drain(out, evbuffer_get_length(out));
        (void)gw_states_usable(h->c, now);
        gw_states_health(&h->c->backends[0], now, k++ % 3 != 0);
        sched_yield();
    }
    evbuffer_free(out);
    return NULL;
}

struct reload_arg {
    struct hammer *h;
    struct gw_backend_states *st;
    int n;
};

static void *reload_thread(void *arg)
{
    struct reload_arg *r = arg;
    char text[1024];

    while (!__atomic_load_n(&r->h->stop, __ATOMIC_RELAXED)) {
        snprintf(text, sizeof(text),
                 "{\"backends\":["
                 "{\"name\":\"a\",\"url\":\"http://127.0.0.1:1/v1\","
                 "\"models\":[\"m\"]},"
                 "{\"name\":\"new%d\",\"url\":\"http://127.0.0.1:9/v1\","
                 "\"models\":[\"m\"]}]}", r->n);
        char *err = NULL;
        struct gw_config *c = gw_config_parse(text, strlen(text), &err);
        if (c == NULL || gw_states_attach(r->st, c) < 0) {
            broke(r->h, OVER_RELOAD);
            free(err);
            if (c)
                gw_config_unref(c);
            break;
        }
        gw_config_unref(c);
        r->n++;
        sched_yield();
    }
    return NULL;
}

static void hammer_strategy(const char *strategy)
{
    char text[2048];
    struct gw_backend_states *st = gw_states_new();
    struct hammer h;
    struct hammer_arg args[THREADS];
    struct reload_arg ra;
    pthread_t reader, reloader;
    unsigned long want[4][3];

    memset(&h, 0, sizeof(h));
    memset(args, 0, sizeof(args));
    memset(want, 0, sizeof(want));
    snprintf(text, sizeof(text), hammer_fmt, hammer_breaker, hammer_breaker,
             hammer_breaker, strategy);
    h.c = load(text);
    assert_non_null(st);
    assert_int_equal(gw_states_attach(st, h.c), 0);
    h.p = gw_pool_find(h.c, "m");
    ra.h = &h;
    ra.st = st;
    ra.n = 0;
    for (int i = 0; i < THREADS; i++) {
        args[i].h = &h;
        args[i].rng = 0x9E3779B97F4A7C15ULL * (uint64_t)(i + 1);
    }
    assert_int_equal(pthread_create(&reader, NULL, reader_thread, &h), 0);
    assert_int_equal(pthread_create(&reloader, NULL, reload_thread, &ra), 0);
    run_threads(hammer_thread, args, sizeof(args[0]));
    __atomic_store_n(&h.stop, 1, __ATOMIC_RELAXED);
    assert_int_equal(pthread_join(reader, NULL), 0);
    assert_int_equal(pthread_join(reloader, NULL), 0);

    unsigned long picks = 0, none = 0;
    for (int i = 0; i < THREADS; i++)
        picks += args[i].picks, none += args[i].none;
    print_message("%s: %lu picks (%lu found nothing), %d reloads, most "
                  "probes %d, most on b %d, opens a %lu b %lu c %lu\n",
                  strategy, picks, none, ra.n, h.max_probes,
                  h.max_inflight_b, h.c->backends[0].state->breaker.opens,
                  h.c->backends[1].state->breaker.opens,
                  h.c->backends[2].state->breaker.opens);
    assert_int_equal(h.over, 0);
    assert_true(h.max_probes >= 1 && h.max_probes <= PROBES);
    assert_true(h.max_inflight_b >= 1 && h.max_inflight_b <= B_MAX);
    assert_true(ra.n > 0);
    assert_int_equal(st->n, 3 + (size_t)ra.n); /* each new name once */
    for (int i = 0; i < THREADS; i++)
        for (int j = 0; j < 3; j++) {
            want[0][j] += args[i].attempts[j];
            want[1][j] += args[i].failures[j];
            want[2][j] += args[i].retries[j];
            want[3][j] += args[i].answered[j];
        }
    for (int j = 0; j < 3; j++) {
        struct gw_backend_snap sn;
        gw_states_snap(&h.c->backends[j], tick(&h), &sn);
        assert_int_equal(sn.inflight, 0);
        assert_int_equal(h.c->backends[j].state->breaker.probes_inflight, 0);
        assert_int_equal(sn.attempts, want[0][j]);
        assert_int_equal(sn.failures, want[1][j]);
        assert_int_equal(sn.retries_to, want[2][j]);
        assert_int_equal(hist_count(&sn.head), want[3][j]);
        assert_true(want[0][j] > 1000); /* every backend took its share */
    }
    /* b and c were out at times; the breakers went round */
    assert_true(h.c->backends[1].state->breaker.opens > 0);
    assert_true(h.c->backends[2].state->breaker.opens > 0);
    assert_true(h.c->backends[2].state->breaker.transitions
                    [GW_BREAKER_HALF_OPEN] > 0);
    gw_config_unref(h.c);
    gw_states_free(st);
}

static void test_hammer_round_robin(void **state)
{
    (void)state;
    hammer_strategy("round_robin");
}

static void test_hammer_least_inflight(void **state)
{
    (void)state;
    hammer_strategy("least_inflight");
}

static void test_hammer_latency(void **state)
{
    (void)state;
    hammer_strategy("latency");
}

/* ------------------------------------- half-open: exactly `probes` */

/* One backend, 2 probes: after each trip and cool-down, 4 threads pick at
 * the same instant; exactly 2 get it (both probes), 2 get nothing. */
static const char solo[] =
    "{\"backends\":[{\"name\":\"s\",\"url\":\"http://127.0.0.1:1/v1\","
    "\"models\":[\"m\"],\"breaker\":{\"failures\":1,\"cooldown_ms\":1000,"
    "\"probes\":2}}]}";
#define ROUNDS 300

struct solo_arg {
    struct gw_pool *p;
    pthread_barrier_t *go, *done;
    int64_t *now;          /* written by the main thread between barriers */
    struct gw_backend *got[ROUNDS];
    int probe[ROUNDS];
};

static void *solo_thread(void *arg)
{
    struct solo_arg *a = arg;
    uint64_t rng = 1;

    for (int r = 0; r < ROUNDS; r++) {
        struct gw_pick_why why;
        pthread_barrier_wait(a->go);
        a->got[r] = gw_pool_pick(a->p, *a->now, &rng, NULL, 0, &a->probe[r],
                                 &why);
        pthread_barrier_wait(a->done);
    }
    return NULL;
}

static void test_half_open_lets_exactly_probes_through(void **state)
{
    struct gw_backend_states *st = gw_states_new();
    struct gw_config *c = load(solo);
    struct gw_backend *s = &c->backends[0];
    struct solo_arg args[THREADS];
    pthread_barrier_t go, done;
    pthread_t t[THREADS];
    int64_t now = T0;

    (void)state;
    assert_int_equal(gw_states_attach(st, c), 0);
    pthread_barrier_init(&go, NULL, THREADS + 1);
    pthread_barrier_init(&done, NULL, THREADS + 1);
    for (int i = 0; i < THREADS; i++) {
        args[i].p = gw_pool_find(c, "m");
        args[i].go = &go;
        args[i].done = &done;
        args[i].now = &now;
        assert_int_equal(pthread_create(&t[i], NULL, solo_thread, &args[i]),
                         0);
    }
    for (int r = 0; r < ROUNDS; r++) {
        int got = 0, probes = 0;
        /* one failure trips it; the cool-down is over at the picks */
        int probe = gw_pool_acquire(s, now);
        gw_pool_record(s, now, probe, GW_BREAKER_FAIL, -1, 0);
        now += 1000 * 1000;
        pthread_barrier_wait(&go);
        pthread_barrier_wait(&done);
        for (int i = 0; i < THREADS; i++)
            if (args[i].got[r]) {
                got++;
                probes += args[i].probe[r];
            }
        assert_int_equal(got, 2);
        assert_int_equal(probes, 2);
        assert_int_equal(s->state->breaker.state, GW_BREAKER_HALF_OPEN);
        /* the probes succeed: closed again for the next round */
        for (int i = 0; i < THREADS; i++)
            if (args[i].got[r])
                gw_pool_record(s, now, args[i].probe[r], GW_BREAKER_OK, 100,
                               0);
        assert_int_equal(s->state->breaker.state, GW_BREAKER_CLOSED);
        assert_int_equal(s->state->inflight, 0);
        now += 1000;
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&go);
    pthread_barrier_destroy(&done);
    assert_int_equal(s->state->breaker.transitions[GW_BREAKER_HALF_OPEN],
                     ROUNDS);
    gw_config_unref(c);
    gw_states_free(st);
}

/* ----------------------------- max_inflight under a crowd of pickers */

/* One backend with max_inflight 2: 4 threads each pick and hold; exactly
 * 2 get it at once, the others are told busy. */
static const char capped[] =
    "{\"backends\":[{\"name\":\"k\",\"url\":\"http://127.0.0.1:1/v1\","
    "\"models\":[\"m\"],\"max_inflight\":2}],"
    "\"models\":{\"m\":{\"strategy\":\"least_inflight\"}}}";

struct capped_arg {
    struct gw_pool *p;
    pthread_barrier_t *go, *done;
    struct gw_backend *got[ROUNDS];
    int busy[ROUNDS];
};

static void *capped_thread(void *arg)
{
    struct capped_arg *a = arg;
    uint64_t rng = 1;

    for (int r = 0; r < ROUNDS; r++) {
        struct gw_pick_why why;
        int probe;
        pthread_barrier_wait(a->go);
        a->got[r] = gw_pool_pick(a->p, T0, &rng, NULL, 0, &probe, &why);
        a->busy[r] = why.busy;
        pthread_barrier_wait(a->done);
    }
    return NULL;
}

static void test_max_inflight_exact_under_a_crowd(void **state)
{
    struct gw_backend_states *st = gw_states_new();
    struct gw_config *c = load(capped);
    struct capped_arg args[THREADS];
    pthread_barrier_t go, done;
    pthread_t t[THREADS];

    (void)state;
    assert_int_equal(gw_states_attach(st, c), 0);
    pthread_barrier_init(&go, NULL, THREADS + 1);
    pthread_barrier_init(&done, NULL, THREADS + 1);
    for (int i = 0; i < THREADS; i++) {
        args[i].p = gw_pool_find(c, "m");
        args[i].go = &go;
        args[i].done = &done;
        assert_int_equal(
            pthread_create(&t[i], NULL, capped_thread, &args[i]), 0);
    }
    for (int r = 0; r < ROUNDS; r++) {
        int got = 0;
        pthread_barrier_wait(&go);
        pthread_barrier_wait(&done);
        for (int i = 0; i < THREADS; i++) {
            if (args[i].got[r]) {
                got++;
                gw_pool_record(args[i].got[r], T0, 0, GW_BREAKER_OK, 100, 0);
            } else {
                assert_true(args[i].busy[r]);
            }
        }
        assert_int_equal(got, 2);
        assert_int_equal(c->backends[0].state->inflight, 0);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&go);
    pthread_barrier_destroy(&done);
    gw_config_unref(c);
    gw_states_free(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_robin_spread_exact),
        cmocka_unit_test(test_hammer_round_robin),
        cmocka_unit_test(test_hammer_least_inflight),
        cmocka_unit_test(test_hammer_latency),
        cmocka_unit_test(test_half_open_lets_exactly_probes_through),
        cmocka_unit_test(test_max_inflight_exact_under_a_crowd),
    };

    gw_log_set_level(GW_LOG_ERROR); /* breakers trip thousands of times */
    return cmocka_run_group_tests(tests, NULL, NULL);
}
