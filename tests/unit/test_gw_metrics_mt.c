/* Unit tests of gateway/metrics.c across worker threads (issue 9, point
 * 3): two workers' gw_metrics updated by their own threads while a third
 * thread scrapes the sum over and over and a fourth attaches configs to
 * both (a reload fanned out, growing their name tables). The final scrape
 * must hold the exact sums, added by name although the two objects hold
 * the names in different slots; every scrape in between must be well
 * formed and never see a counter go down. Also: the sum of one object is
 * byte for byte what that object alone writes. Run it under
 * ThreadSanitizer too (see gateway/module.mk). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <event2/buffer.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/clock.h"
#include "gateway/config.h"
#include "gateway/gateway.h"
#include "gateway/http.h"
#include "gateway/metrics.h"

#define ITERS 20000 /* requests per worker thread */

#define KEY(name, hex)                                                     \
    "{\"name\":\"" name "\",\"key_sha256\":\"" hex hex hex hex hex hex hex \
    hex "\",\"models\":[\"*\"]}"

/* Worker 0's names in one order... */
static const char config_a[] =
    "{\"backends\":["
    "{\"name\":\"b1\",\"url\":\"http://127.0.0.1:9/v1\","
    " \"models\":[\"m1\",\"m2\",\"m3\"]},"
    "{\"name\":\"b2\",\"url\":\"http://127.0.0.1:10/v1\","
    " \"models\":[\"m1\"]}],"
    "\"keys\":[" KEY("shop", "00000000") "," KEY("ads", "11111111") "]}";

/* ...worker 1's in another (so slots differ), with a name worker 0 lacks
 * ("m4": worker 0 counts it as "other"). */
static const char config_b[] =
    "{\"backends\":["
    "{\"name\":\"b2\",\"url\":\"http://127.0.0.1:10/v1\",\"models\":[\"m1\"]},"
    "{\"name\":\"b1\",\"url\":\"http://127.0.0.1:9/v1\","
    " \"models\":[\"m4\",\"m3\",\"m2\",\"m1\"]}],"
    "\"keys\":[" KEY("ads", "11111111") "," KEY("shop", "00000000") "]}";

static const char *const models[] = {"m1", "m2", "m3", "m4", "nope", NULL};
#define N_MODELS 6
static const char *const backends[] = {"b1", "b2", NULL};
#define N_BACKENDS 3
static const char *const keys[] = {"shop", "ads", NULL};
#define N_KEYS 3
static const char *const caches[] = {"hit", "miss", "bypass", NULL};

/* One request of the scripted mix: worker w's i-th. */
struct req_spec {
    const char *model, *backend, *key, *cache, *error;
    int status, stream;
    long ttfb_us, ptok, ctok;
};

static void spec_of(int w, long i, struct req_spec *s)
{
    long j = i * 7 + w * 3;

    s->model = models[j % N_MODELS];
    s->backend = backends[(j / 5) % N_BACKENDS];
    s->key = keys[(j / 3) % N_KEYS];
    s->cache = caches[(j / 2) % 4];
    s->status = j % 11 == 0 ? 503 : j % 13 == 0 ? 429 : 200;
    s->error = s->status == 429 ? (j % 2 ? "rate_limit_exceeded"
                                         : "daily_budget_exceeded")
               : s->status == 503 ? "upstream_error"
                                  : NULL;
    s->stream = (int)(j % 2);
    s->ttfb_us = j % 9 == 0 ? -1 : (j % 1000) * 997;
    s->ptok = j % 4 == 0 ? -1 : j % 17;
    s->ctok = j % 3 == 0 ? -1 : j % 29;
}

static void run_request(struct gw_metrics *m, const struct req_spec *s)
{
    struct gw_http_req req;
    struct gw_reqlog rl;

    memset(&req, 0, sizeof(req));
    memset(&rl, 0, sizeof(rl));
    req.path = "/v1/chat/completions";
    req.start_us = gw_now_us() - 1000;
    req.cache = s->cache;
    rl.request_id = "req-0";
    rl.model = s->model;
    rl.backend = s->backend;
    rl.key = s->key;
    rl.status = s->status;
    rl.stream = s->stream;
    rl.ttfb_us = s->ttfb_us;
    rl.usage.prompt_tokens = s->ptok;
    rl.usage.completion_tokens = s->ctok;
    rl.error = s->error;
    gw_metrics_begin(m);
    gw_metrics_request(m, &req, &rl, gw_now_us());
}

/* The label a name gets in the sum: worker 1 knows m4, so the sum has it;
 * "nope" is no config's. NULL is "". */
static const char *label_of(const char *name)
{
    return name == NULL ? "" : strcmp(name, "nope") == 0 ? "other" : name;
}

/* What the sum must hold, counted here by the same rules as metrics.c
 * for this mix (no lock: only the main thread computes it). */
struct expect {
    uint64_t series[N_MODELS][N_BACKENDS][5];
    uint64_t ttft_n[N_MODELS], ttft_us[N_MODELS];
    uint64_t tokens[N_KEYS][2], rejects[N_KEYS][2];
    uint64_t cache[3];
    uint64_t m4_as_other; /* worker 0's m4 requests: model "other" */
};

static size_t index_of(const char *const *names, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if ((names[i] == NULL) == (s == NULL) &&
            (s == NULL || strcmp(names[i], s) == 0))
            return i;
    fail_msg("no name %s", s);
    return 0;
}

static void expect_add(struct expect *e, int w, const struct req_spec *s)
{
    size_t mi = index_of(models, N_MODELS, s->model);
    size_t bi = index_of(backends, N_BACKENDS, s->backend);
    size_t ki = index_of(keys, N_KEYS, s->key);
    int hit = s->cache && strcmp(s->cache, "hit") == 0;

    /* worker 0 has no m4: its m4 requests are "other", like "nope" */
    if (w == 0 && s->model && strcmp(s->model, "m4") == 0)
        mi = index_of(models, N_MODELS, "nope");
    e->series[mi][bi][s->status / 100 - 1]++;
    if (s->stream && s->ttfb_us >= 0 && s->status < 400) {
        e->ttft_n[mi]++;
        e->ttft_us[mi] += (uint64_t)s->ttfb_us;
    }
    if (!hit && s->ptok > 0)
        e->tokens[ki][0] += (uint64_t)s->ptok;
    if (!hit && s->ctok > 0)
        e->tokens[ki][1] += (uint64_t)s->ctok;
    if (s->status == 429)
        e->rejects[ki][strcmp(s->error, "rate_limit_exceeded") == 0 ? 0
                                                                     : 1]++;
    for (size_t i = 0; s->cache && i < 3; i++)
        e->cache[i] += strcmp(s->cache, caches[i]) == 0;
}

/* The value of the series written exactly as `series`, or -1. */
static long long value_of(const char *text, const char *series)
{
    size_t n = strlen(series);
    const char *p = text;

    while ((p = strstr(p, series)) != NULL) {
        if ((p == text || p[-1] == '\n') && p[n] == ' ')
            return atoll(p + n + 1);
        p += n;
    }
    return -1;
}

static char *scrape(struct gw_metrics *const *ms, size_t n,
                    const struct gw_config *c)
{
    struct evbuffer *out = evbuffer_new();
    size_t len;
    char *text;

    assert_non_null(out);
    assert_int_equal(gw_metrics_write_sum(ms, n, c, gw_now_us(), NULL, out),
                     0);
    len = evbuffer_get_length(out);
    text = malloc(len + 1);
    assert_non_null(text);
    evbuffer_copyout(out, text, len);
    text[len] = '\0';
    evbuffer_free(out);
    return text;
}

/* The sum of every promptgate_requests_total sample. */
static uint64_t requests_total(const char *text)
{
    static const char name[] = "\npromptgate_requests_total{";
    uint64_t sum = 0;
    const char *p = text;

    while ((p = strstr(p, name)) != NULL) {
        const char *sp = strchr(p + 1, '\n');
        const char *v = sp ? sp : p + strlen(p);
        while (v > p && v[-1] != ' ')
            v--;
        sum += strtoull(v, NULL, 10);
        p += sizeof(name) - 1;
    }
    return sum;
}

/* --------------------------------------------------------- the threads */

struct shared {
    struct gw_metrics *ms[2];
    /* big_a, big_b: config_a, config_b and 300 more models, 40 more
     * backends */
    struct gw_config *ca, *cb, *big_a, *big_b;
    const struct gw_config *scrape_config;
    int done;         /* atomic: the workers finished */
    long scrapes;     /* by the scraper */
    long attaches;    /* by the reloader */
    const char *fail; /* the scraper's first failure, or NULL */
};

struct worker_arg {
    struct shared *sh;
    int w;
};

static void *worker_main(void *arg)
{
    struct worker_arg *a = arg;
    struct req_spec s;

    for (long i = 0; i < ITERS; i++) {
        spec_of(a->w, i, &s);
        run_request(a->sh->ms[a->w], &s);
    }
    return NULL;
}

static void *scraper_main(void *arg)
{
    struct shared *sh = arg;
    uint64_t last = 0;
    int done;

    do {
        done = __atomic_load_n(&sh->done, __ATOMIC_ACQUIRE);
        char *t = scrape(sh->ms, 2, sh->scrape_config);
        uint64_t total = requests_total(t);
        long long inflight = value_of(t, "promptgate_inflight_requests");
        if (sh->fail == NULL) {
            if (total < last)
                sh->fail = "promptgate_requests_total went down";
            else if (total > 2 * ITERS)
                sh->fail = "promptgate_requests_total above the requests";
            else if (inflight < 0 || inflight > 2)
                sh->fail = "promptgate_inflight_requests out of [0, 2]";
            else if (t[strlen(t) - 1] != '\n' || strstr(t, "\n\n"))
                sh->fail = "malformed output";
        }
        last = total;
        free(t);
        sh->scrapes++;
    } while (!done);
    return NULL;
}

/* A reload reaching both workers, over and over, as main.c does it
 * (counted on worker 0's object, attached to the others): names new to
 * them (the tables grow under the requests), a refused reload, then the
 * old set again. */
static void *reloader_main(void *arg)
{
    struct shared *sh = arg;

    while (!__atomic_load_n(&sh->done, __ATOMIC_ACQUIRE)) {
        gw_metrics_reload_begin(sh->ms[0]);
        gw_metrics_reload(sh->ms[0], sh->big_a);
        assert_int_equal(gw_metrics_attach(sh->ms[1], sh->big_b), 0);
        gw_metrics_reload_begin(sh->ms[0]); /* refused */
        gw_metrics_reload_begin(sh->ms[0]);
        gw_metrics_reload(sh->ms[0], sh->ca);
        assert_int_equal(gw_metrics_attach(sh->ms[1], sh->cb), 0);
        sh->attaches++;
    }
    return NULL;
}

static struct gw_config *load(const char *text)
{
    char *err = NULL;
    struct gw_config *c = gw_config_parse(text, strlen(text), &err);

    if (c == NULL)
        fprintf(stderr, "config: %s\n", err);
    free(err);
    assert_non_null(c);
    return c;
}

/* config_a (with_m4 0) or config_b (1), with 300 more models on b1 and
 * 40 more backends. */
static char *big_config(int with_m4)
{
    struct evbuffer *b = evbuffer_new();
    size_t n;
    char *text;

    evbuffer_add_printf(b, "{\"backends\":[{\"name\":\"b2\",\"url\":"
                           "\"http://127.0.0.1:10/v1\",\"models\":[\"m1\"]},"
                           "{\"name\":\"b1\",\"url\":\"http://127.0.0.1:9/v1"
                           "\",\"models\":[%s\"m3\",\"m2\",\"m1\"",
                        with_m4 ? "\"m4\"," : "");
    for (int i = 0; i < 300; i++)
        evbuffer_add_printf(b, ",\"extra-%d\"", i);
    evbuffer_add_printf(b, "]}");
    for (int i = 0; i < 40; i++)
        evbuffer_add_printf(b, ",{\"name\":\"bx%d\",\"url\":\"http://127.0.0."
                               "1:%d/v1\",\"models\":[\"m1\"]}", i, 2000 + i);
    evbuffer_add_printf(b, "],\"keys\":[" KEY("ads", "11111111") ","
                           KEY("shop", "00000000") "]}");
    n = evbuffer_get_length(b);
    text = malloc(n + 1);
    assert_non_null(text);
    evbuffer_copyout(b, text, n);
    text[n] = '\0';
    evbuffer_free(b);
    return text;
}

static void check_sums(const char *t, const struct expect *e)
{
    static const char *const classes[] = {"1xx", "2xx", "3xx", "4xx", "5xx"};
    static const char *const kinds[] = {"prompt", "completion"};
    static const char *const reasons[] = {"rate", "daily_budget"};
    char s[512];
    long long want;
    uint64_t total = 0;

    /* every series the mix makes, and no other (absent: -1) */
    for (size_t mi = 0; mi < N_MODELS; mi++) {
        for (size_t bi = 0; bi < N_BACKENDS; bi++)
            for (size_t c = 0; c < 5; c++) {
                want = (long long)e->series[mi][bi][c];
                snprintf(s, sizeof(s),
                         "promptgate_requests_total{route=\"/v1/chat/"
                         "completions\",model=\"%s\",backend=\"%s\","
                         "status_class=\"%s\"}",
                         label_of(models[mi]), label_of(backends[bi]),
                         classes[c]);
                assert_int_equal(value_of(t, s), want ? want : -1);
                total += (uint64_t)want;
            }
        want = (long long)e->ttft_n[mi];
        snprintf(s, sizeof(s), "promptgate_time_to_first_token_seconds_count"
                               "{model=\"%s\"}", label_of(models[mi]));
        assert_int_equal(value_of(t, s), want ? want : -1);
        if (want) {
            snprintf(s, sizeof(s), "\npromptgate_time_to_first_token_seconds"
                                   "_sum{model=\"%s\"} %" PRIu64 ".%06" PRIu64
                                   "\n", label_of(models[mi]),
                     e->ttft_us[mi] / 1000000, e->ttft_us[mi] % 1000000);
            assert_non_null(strstr(t, s));
        }
    }
    assert_int_equal(total, 2 * ITERS);
    assert_int_equal(requests_total(t), 2 * ITERS);
    for (size_t ki = 0; ki < N_KEYS; ki++) {
        for (size_t k = 0; k < 2; k++) {
            snprintf(s, sizeof(s), "promptgate_tokens_total{kind=\"%s\","
                                   "key=\"%s\"}", kinds[k],
                     label_of(keys[ki]));
            assert_int_equal(value_of(t, s), (long long)e->tokens[ki][k]);
            want = (long long)e->rejects[ki][k];
            snprintf(s, sizeof(s), "promptgate_ratelimit_rejections_total{"
                                   "key=\"%s\",reason=\"%s\"}",
                     label_of(keys[ki]), reasons[k]);
            assert_int_equal(value_of(t, s), want ? want : -1);
        }
    }
    for (size_t i = 0; i < 3; i++) {
        snprintf(s, sizeof(s), "promptgate_cache_requests_total{result="
                               "\"%s\"}", caches[i]);
        assert_int_equal(value_of(t, s), (long long)e->cache[i]);
    }
    assert_int_equal(value_of(t, "promptgate_request_duration_seconds_count{"
                                 "route=\"/v1/chat/completions\"}"),
                     2 * ITERS);
    assert_int_equal(value_of(t, "promptgate_inflight_requests"), 0);
    assert_null(strstr(t, "extra-")); /* names the last attach dropped */
    assert_null(strstr(t, "bx1"));
}

static void test_threads_sum_exactly(void **state)
{
    struct shared sh;
    struct worker_arg wa[2];
    pthread_t tw[2], ts, tr;
    struct expect *e = calloc(1, sizeof(*e));
    struct req_spec s;
    char *big_a = big_config(0), *big_b = big_config(1);
    char *t;

    (void)state;
    assert_non_null(e);
    memset(&sh, 0, sizeof(sh));
    sh.ca = load(config_a);
    sh.cb = load(config_b);
    sh.big_a = load(big_a);
    sh.big_b = load(big_b);
    sh.scrape_config = sh.ca;
    for (int w = 0; w < 2; w++) {
        assert_non_null(sh.ms[w] = gw_metrics_new());
        wa[w].sh = &sh;
        wa[w].w = w;
    }
    assert_int_equal(gw_metrics_attach(sh.ms[0], sh.ca), 0);
    assert_int_equal(gw_metrics_attach(sh.ms[1], sh.cb), 0);

    assert_int_equal(pthread_create(&ts, NULL, scraper_main, &sh), 0);
    assert_int_equal(pthread_create(&tr, NULL, reloader_main, &sh), 0);
    for (int w = 0; w < 2; w++)
        assert_int_equal(pthread_create(&tw[w], NULL, worker_main, &wa[w]),
                         0);
    for (int w = 0; w < 2; w++)
        pthread_join(tw[w], NULL);
    __atomic_store_n(&sh.done, 1, __ATOMIC_RELEASE);
    pthread_join(ts, NULL);
    pthread_join(tr, NULL);
    if (sh.fail)
        fail_msg("a scrape during the run: %s", sh.fail);
    fprintf(stderr, "%ld scrapes and %ld reload rounds during %d requests\n",
            sh.scrapes, sh.attaches, 2 * ITERS);
    assert_true(sh.scrapes >= 1);

    for (int w = 0; w < 2; w++)
        for (long i = 0; i < ITERS; i++) {
            spec_of(w, i, &s);
            expect_add(e, w, &s);
        }
    t = scrape(sh.ms, 2, sh.ca);
    check_sums(t, e);
    assert_int_equal(value_of(t, "promptgate_config_reloads_total{result="
                                 "\"ok\"}"), 2 * sh.attaches);
    assert_int_equal(value_of(t, "promptgate_config_reloads_total{result="
                                 "\"error\"}"), sh.attaches);
    assert_int_equal(value_of(t, "promptgate_config_last_reload_successful"),
                     1);
    /* the order of the objects changes nothing but the reload counts */
    free(t);
    struct gw_metrics *rev[2] = {sh.ms[1], sh.ms[0]};
    t = scrape(rev, 2, sh.ca);
    check_sums(t, e);
    free(t);

    for (int w = 0; w < 2; w++)
        gw_metrics_free(sh.ms[w]);
    gw_config_unref(sh.ca);
    gw_config_unref(sh.cb);
    gw_config_unref(sh.big_a);
    gw_config_unref(sh.big_b);
    free(big_a);
    free(big_b);
    free(e);
}

/* The text before the process metrics (they change between two calls). */
static char *counters_part(char *t)
{
    char *p = strstr(t, "# HELP process_");

    assert_non_null(p);
    *p = '\0';
    return t;
}

/* A sum of one object, or of it and idle workers, is that object's own
 * output, byte for byte; a busy second worker only adds. */
static void test_sum_of_one_is_identity(void **state)
{
    char *big = big_config(1);
    struct gw_config *ca = load(big), *cb = load(config_b);
    struct gw_metrics *m = gw_metrics_new(), *idle = gw_metrics_new();
    struct gw_metrics *both[2] = {m, idle}, *swapped[2] = {idle, m};
    struct req_spec s;
    char *one, *sum, *rev;

    (void)state;
    assert_non_null(m);
    assert_non_null(idle);
    assert_int_equal(gw_metrics_attach(m, ca), 0);
    assert_int_equal(gw_metrics_attach(idle, cb), 0);
    for (long i = 0; i < 3000; i++) {
        spec_of(0, i, &s);
        run_request(m, &s);
    }
    /* enough series to grow the table (at scrapes) past its first size,
     * so that some collide across its end */
    for (int r = 0; r < 4; r++) {
        for (int i = 0; i < 300; i++) {
            char model[32], backend[32];
            snprintf(model, sizeof(model), "extra-%d", i);
            snprintf(backend, sizeof(backend), "bx%d", r);
            memset(&s, 0, sizeof(s));
            s.model = model;
            s.backend = i % 2 ? "b1" : backend;
            s.status = 200 + (i % 4) * 100;
            s.ttfb_us = i * 1000;
            s.stream = 1;
            run_request(m, &s);
        }
        free(scrape(&m, 1, ca));
    }
    gw_metrics_reload_begin(m);
    one = scrape(&m, 1, ca);
    sum = scrape(both, 2, ca);
    assert_string_equal(counters_part(sum), counters_part(one));
    /* worker 0's reload counts and path: the idle one first differs only
     * there */
    rev = scrape(swapped, 2, ca);
    assert_int_equal(value_of(one, "promptgate_config_reloads_total{result="
                                   "\"error\"}"), 1);
    assert_int_equal(value_of(rev, "promptgate_config_reloads_total{result="
                                   "\"error\"}"), 0);
    free(one);
    free(sum);
    free(rev);
    gw_metrics_free(m);
    gw_metrics_free(idle);
    gw_config_unref(ca);
    gw_config_unref(cb);
    free(big);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_threads_sum_exactly),
        cmocka_unit_test(test_sum_of_one_is_identity),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
