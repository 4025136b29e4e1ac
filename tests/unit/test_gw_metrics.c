/* Unit tests of gateway/metrics.c: the text exposition format, histogram
 * buckets, label escaping, bounded labels and counters across reloads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <event2/buffer.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/clock.h"
#include "gateway/config.h"
#include "gateway/gateway.h"
#include "gateway/http.h"
#include "gateway/metrics.h"
#include "gateway/pool.h"

/* Two backends, a model whose name needs escaping, two keys. */
static const char config_a[] =
    "{\"backends\":["
    "{\"name\":\"b1\",\"url\":\"http://127.0.0.1:9/v1\","
    " \"models\":[\"m1\",\"we\\\"ird\\\\mo\\ndel\"]},"
    "{\"name\":\"b2\",\"url\":\"http://127.0.0.1:10/v1\",\"models\":[\"m2\"]}],"
    "\"keys\":[{\"name\":\"shop\",\"key_sha256\":"
    "\"0000000000000000000000000000000000000000000000000000000000000000\",\"models\":[\"*\"]},"
    "{\"name\":\"ads\",\"key_sha256\":"
    "\"1111111111111111111111111111111111111111111111111111111111111111\",\"models\":[\"*\"]}]}";

/* After a reload: b2 and m2 are gone, b3 is new. */
static const char config_b[] =
    "{\"backends\":["
    "{\"name\":\"b1\",\"url\":\"http://127.0.0.1:9/v1\",\"models\":[\"m1\"]},"
    "{\"name\":\"b3\",\"url\":\"http://127.0.0.1:11/v1\",\"models\":[\"m3\"]}],"
    "\"keys\":[{\"name\":\"shop\",\"key_sha256\":"
    "\"0000000000000000000000000000000000000000000000000000000000000000\",\"models\":[\"*\"]}]}";

struct fixture {
    struct gw_metrics *m;
    struct gw_backend_states *states;
    struct gw_config *c;
    struct evbuffer *out;
    char *text; /* the last scrape, NUL-terminated */
};

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

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));

    assert_non_null(f);
    f->m = gw_metrics_new();
    f->states = gw_states_new();
    f->c = load(config_a);
    f->out = evbuffer_new();
    assert_non_null(f->m);
    assert_int_equal(gw_states_attach(f->states, f->c), 0);
    assert_int_equal(gw_metrics_attach(f->m, f->c), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    gw_metrics_free(f->m);
    gw_config_unref(f->c);
    gw_states_free(f->states);
    evbuffer_free(f->out);
    free(f->text);
    free(f);
    return 0;
}

static void reattach(struct fixture *f, const char *text)
{
    gw_config_unref(f->c);
    f->c = load(text);
    assert_int_equal(gw_states_attach(f->states, f->c), 0);
    assert_int_equal(gw_metrics_attach(f->m, f->c), 0);
}

static const char *scrape(struct fixture *f)
{
    size_t n;

    evbuffer_drain(f->out, evbuffer_get_length(f->out));
    assert_int_equal(gw_metrics_write(f->m, f->c, gw_now_us(), NULL, f->out),
                     0);
    n = evbuffer_get_length(f->out);
    free(f->text);
    f->text = malloc(n + 1);
    assert_non_null(f->text);
    evbuffer_copyout(f->out, f->text, n);
    f->text[n] = '\0';
    return f->text;
}

/* The value of the series written exactly as `series` (name and labels),
 * or -1 when it is absent. */
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

static size_t count_lines_starting(const char *text, const char *prefix)
{
    size_t n = 0, len = strlen(prefix);
    const char *p = text;

    while (p && *p) {
        if (strncmp(p, prefix, len) == 0)
            n++;
        p = strchr(p, '\n');
        if (p)
            p++;
    }
    return n;
}

/* One finished request as gw_proxy_log sees it. */
static void request(struct fixture *f, const char *path, const char *model,
                    const char *backend, const char *key, int status,
                    int stream, long ttfb_us, long ptok, long ctok,
                    const char *cache, const char *error, long took_us)
{
    struct gw_http_req req;
    struct gw_reqlog rl;

    memset(&req, 0, sizeof(req));
    memset(&rl, 0, sizeof(rl));
    req.path = path;
    req.start_us = gw_now_us() - took_us;
    req.cache = cache;
    rl.request_id = "req-0123456789";
    rl.model = model;
    rl.backend = backend;
    rl.key = key;
    rl.status = status;
    rl.stream = stream;
    rl.ttfb_us = ttfb_us;
    rl.usage.prompt_tokens = ptok;
    rl.usage.completion_tokens = ctok;
    rl.usage.total_tokens = ptok + ctok;
    rl.error = error;
    gw_metrics_begin(f->m);
    gw_metrics_request(f->m, &req, &rl, gw_now_us());
}

static void test_format_and_counters(void **state)
{
    struct fixture *f = *state;
    const char *t;

    request(f, "/v1/chat/completions", "m1", "b1", "shop", 200, 0, 1000, 10,
            20, "miss", NULL, 1000);
    request(f, "/v1/chat/completions", "m1", "b1", "shop", 200, 0, 1000, 10,
            20, "hit", NULL, 1000);
    request(f, "/v1/chat/completions", "m1", "b1", "shop", 503, 0, -1, -1,
            -1, "bypass", "upstream_error", 1000);
    request(f, "/v1/chat/completions", "m1", NULL, "ads", 429, 0, -1, -1, -1,
            "bypass", "rate_limit_exceeded", 10);
    request(f, "/v1/chat/completions", "m1", NULL, "ads", 429, 0, -1, -1, -1,
            NULL, "concurrency_limit_exceeded", 10);
    request(f, "/v1/embeddings", "m2", "b2", NULL, 200, 0, 500, 7, 0, NULL,
            NULL, 10);
    request(f, "/nowhere", NULL, NULL, NULL, 404, 0, -1, -1, -1, NULL,
            "unknown_route", 10);
    t = scrape(f);

    /* every family has HELP and TYPE, in that order */
    assert_non_null(strstr(t, "# HELP promptgate_requests_total "));
    assert_non_null(strstr(t, "\n# TYPE promptgate_requests_total counter\n"));
    assert_non_null(strstr(
        t, "# TYPE promptgate_request_duration_seconds histogram\n"));
    assert_non_null(strstr(t, "# TYPE promptgate_inflight_requests gauge\n"));
    assert_int_equal(value_of(t, "promptgate_requests_total{route=\"/v1/chat/"
                                 "completions\",model=\"m1\",backend=\"b1\","
                                 "status_class=\"2xx\"}"), 2);
    assert_int_equal(value_of(t, "promptgate_requests_total{route=\"/v1/chat/"
                                 "completions\",model=\"m1\",backend=\"b1\","
                                 "status_class=\"5xx\"}"), 1);
    assert_int_equal(value_of(t, "promptgate_requests_total{route=\"/v1/chat/"
                                 "completions\",model=\"m1\",backend=\"\","
                                 "status_class=\"4xx\"}"), 2);
    assert_int_equal(value_of(t, "promptgate_requests_total{route=\"/v1/"
                                 "embeddings\",model=\"m2\",backend=\"b2\","
                                 "status_class=\"2xx\"}"), 1);
    assert_int_equal(value_of(t, "promptgate_requests_total{route=\"other\","
                                 "model=\"\",backend=\"\",status_class="
                                 "\"4xx\"}"), 1);
    assert_int_equal(count_lines_starting(t, "promptgate_requests_total{"), 5);
    /* tokens: the cache hit's are not counted; a key without any: 0 */
    assert_int_equal(value_of(t, "promptgate_tokens_total{kind=\"prompt\","
                                 "key=\"shop\"}"), 10);
    assert_int_equal(value_of(t, "promptgate_tokens_total{kind="
                                 "\"completion\",key=\"shop\"}"), 20);
    assert_int_equal(value_of(t, "promptgate_tokens_total{kind=\"prompt\","
                                 "key=\"ads\"}"), 0);
    assert_int_equal(value_of(t, "promptgate_tokens_total{kind=\"prompt\","
                                 "key=\"\"}"), 7);
    assert_int_equal(value_of(t, "promptgate_ratelimit_rejections_total{key="
                                 "\"ads\",reason=\"rate\"}"), 1);
    assert_int_equal(value_of(t, "promptgate_ratelimit_rejections_total{key="
                                 "\"ads\",reason=\"concurrency\"}"), 1);
    assert_int_equal(value_of(t, "promptgate_cache_requests_total{result="
                                 "\"hit\"}"), 1);
    assert_int_equal(value_of(t, "promptgate_cache_requests_total{result="
                                 "\"miss\"}"), 1);
    assert_int_equal(value_of(t, "promptgate_cache_requests_total{result="
                                 "\"bypass\"}"), 2);
    assert_int_equal(value_of(t, "promptgate_inflight_requests"), 0);
    assert_int_equal(value_of(t, "promptgate_build_info{version=\""
                                 GW_VERSION "\"}"), 1);
    /* per backend, from its state */
    assert_int_equal(value_of(t, "promptgate_backend_up{backend=\"b1\"}"), 1);
    assert_int_equal(value_of(t, "promptgate_breaker_state{backend=\"b2\","
                                 "state=\"closed\"}"), 1);
    assert_int_equal(value_of(t, "promptgate_breaker_state{backend=\"b2\","
                                 "state=\"open\"}"), 0);
    assert_true(value_of(t, "process_open_fds") > 0);
    assert_true(value_of(t, "process_resident_memory_bytes") > 0);
    /* nothing of the request but its fixed labels */
    assert_null(strstr(t, "req-0123456789"));
    /* every line ends with a newline, no empty line */
    assert_int_equal(t[strlen(t) - 1], '\n');
    assert_null(strstr(t, "\n\n"));
}

static void test_histogram_buckets(void **state)
{
    struct fixture *f = *state;
    const char *t;
    static const char h[] = "promptgate_time_to_first_token_seconds";
    char s[256];

    /* bounds are inclusive (le): 5000 us is in le="0.005" */
    request(f, "/v1/chat/completions", "m1", "b1", NULL, 200, 1, 0, -1, -1,
            NULL, NULL, 10);
    request(f, "/v1/chat/completions", "m1", "b1", NULL, 200, 1, 5000, -1, -1,
            NULL, NULL, 10);
    request(f, "/v1/chat/completions", "m1", "b1", NULL, 200, 1, 5001, -1, -1,
            NULL, NULL, 10);
    request(f, "/v1/chat/completions", "m1", "b1", NULL, 200, 1, 1500000, -1,
            -1, NULL, NULL, 10);
    request(f, "/v1/chat/completions", "m1", "b1", NULL, 200, 1, 200000000,
            -1, -1, NULL, NULL, 10);
    /* not streams, or no byte from upstream: not observed */
    request(f, "/v1/chat/completions", "m1", "b1", NULL, 200, 0, 7000, -1, -1,
            NULL, NULL, 10);
    request(f, "/v1/chat/completions", "m1", "b1", NULL, 502, 1, -1, -1, -1,
            NULL, NULL, 10);
    t = scrape(f);
#define BUCKET(le, v)                                                      \
    do {                                                                   \
        snprintf(s, sizeof(s), "%s_bucket{model=\"m1\",le=\"%s\"}", h, le); \
        assert_int_equal(value_of(t, s), v);                               \
    } while (0)
    BUCKET("0.005", 2);
    BUCKET("0.01", 3);
    BUCKET("1", 3);
    BUCKET("2.5", 4);
    BUCKET("120", 4);
    BUCKET("+Inf", 5);
#undef BUCKET
    snprintf(s, sizeof(s), "%s_count{model=\"m1\"}", h);
    assert_int_equal(value_of(t, s), 5);
    snprintf(s, sizeof(s), "%s_sum{model=\"m1\"} 201.510001\n", h);
    assert_non_null(strstr(t, s));
    /* buckets are written in order, each family's series once */
    assert_int_equal(count_lines_starting(t, "promptgate_time_to_first_token_"
                                             "seconds_bucket{"),
                     GW_METRICS_BUCKETS + 1);
    /* the request duration has a series for the route used only */
    assert_int_equal(value_of(t, "promptgate_request_duration_seconds_count{"
                                 "route=\"/v1/chat/completions\"}"), 7);
    assert_int_equal(count_lines_starting(t, "promptgate_request_duration_"
                                             "seconds_count{"), 1);
}

static void test_escaping(void **state)
{
    struct fixture *f = *state;
    struct evbuffer *b = evbuffer_new();
    char out[64];
    size_t n;
    const char *t;

    gw_metrics_escape(b, "a\"b\\c\nd");
    n = evbuffer_get_length(b);
    evbuffer_copyout(b, out, n);
    out[n] = '\0';
    assert_string_equal(out, "a\\\"b\\\\c\\nd");
    evbuffer_free(b);

    request(f, "/v1/chat/completions", "we\"ird\\mo\ndel", "b1", NULL, 200, 1,
            1000, -1, -1, NULL, NULL, 10);
    t = scrape(f);
    assert_int_equal(value_of(t, "promptgate_requests_total{route=\"/v1/chat/"
                                 "completions\",model=\"we\\\"ird\\\\mo\\n"
                                 "del\",backend=\"b1\",status_class="
                                 "\"2xx\"}"), 1);
    assert_int_equal(value_of(t, "promptgate_time_to_first_token_seconds_"
                                 "count{model=\"we\\\"ird\\\\mo\\ndel\"}"), 1);
}

static void test_unknown_names_bounded(void **state)
{
    struct fixture *f = *state;
    char model[32];
    const char *t;

    for (int i = 0; i < 1000; i++) {
        snprintf(model, sizeof(model), "no-such-model-%d", i);
        request(f, "/v1/chat/completions", model, NULL, "nokey", 404, 0, -1,
                -1, -1, NULL, "model_not_found", 10);
    }
    request(f, "/v1/chat/completions", "other", NULL, NULL, 404, 0, -1, -1, -1,
            NULL, "model_not_found", 10);
    t = scrape(f);
    assert_int_equal(value_of(t, "promptgate_requests_total{route=\"/v1/chat/"
                                 "completions\",model=\"other\",backend=\"\","
                                 "status_class=\"4xx\"}"), 1001);
    assert_int_equal(count_lines_starting(t, "promptgate_requests_total{"), 1);
    assert_null(strstr(t, "no-such-model"));
    assert_null(strstr(t, "nokey"));
}

static void test_reload_keeps_counts(void **state)
{
    struct fixture *f = *state;
    const char *t;

    request(f, "/v1/chat/completions", "m2", "b2", "ads", 200, 0, 10, 3, 4,
            NULL, NULL, 10);
    request(f, "/v1/chat/completions", "m1", "b1", "shop", 200, 0, 10, 1, 1,
            NULL, NULL, 10);
    reattach(f, config_b);
    /* a request of the old config ends after the reload */
    request(f, "/v1/chat/completions", "m2", "b2", "ads", 200, 0, 10, 3, 4,
            NULL, NULL, 10);
    request(f, "/v1/chat/completions", "m3", "b3", "shop", 200, 0, 10, 1, 1,
            NULL, NULL, 10);
    t = scrape(f);
    /* names the config dropped are left out, the others kept counting */
    assert_null(strstr(t, "\"b2\""));
    assert_null(strstr(t, "\"m2\""));
    assert_null(strstr(t, "\"ads\""));
    assert_int_equal(value_of(t, "promptgate_requests_total{route=\"/v1/chat/"
                                 "completions\",model=\"m1\",backend=\"b1\","
                                 "status_class=\"2xx\"}"), 1);
    assert_int_equal(value_of(t, "promptgate_requests_total{route=\"/v1/chat/"
                                 "completions\",model=\"m3\",backend=\"b3\","
                                 "status_class=\"2xx\"}"), 1);
    assert_int_equal(value_of(t, "promptgate_tokens_total{kind=\"prompt\","
                                 "key=\"shop\"}"), 2);
    assert_int_equal(value_of(t, "promptgate_backend_up{backend=\"b3\"}"), 1);
    /* back to the first config: b2's counts are still there */
    reattach(f, config_a);
    t = scrape(f);
    assert_int_equal(value_of(t, "promptgate_requests_total{route=\"/v1/chat/"
                                 "completions\",model=\"m2\",backend=\"b2\","
                                 "status_class=\"2xx\"}"), 2);
    assert_int_equal(value_of(t, "promptgate_tokens_total{kind=\"completion\","
                                 "key=\"ads\"}"), 8);
    assert_null(strstr(t, "\"b3\""));
}

static void test_breaker_series(void **state)
{
    struct fixture *f = *state;
    struct gw_backend *b = &f->c->backends[0];
    int64_t now = gw_now_us();
    const char *t;
    int probe;

    /* five failures in a row open b1's breaker (the default) */
    for (int i = 0; i < 5; i++) {
        probe = gw_breaker_acquire(&b->state->breaker, &b->breaker, now);
        b->state->inflight++;
        gw_pool_record(b, now, probe, GW_BREAKER_FAIL, -1, 0);
    }
    probe = gw_breaker_acquire(&b->state->breaker, &b->breaker, now);
    b->state->inflight++;
    gw_pool_record(b, now, probe, GW_BREAKER_OK, 30000, 0);
    t = scrape(f);
    assert_int_equal(value_of(t, "promptgate_breaker_state{backend=\"b1\","
                                 "state=\"open\"}"), 1);
    assert_int_equal(value_of(t, "promptgate_breaker_state{backend=\"b1\","
                                 "state=\"closed\"}"), 0);
    assert_int_equal(value_of(t, "promptgate_backend_up{backend=\"b1\"}"), 0);
    assert_int_equal(value_of(t, "promptgate_breaker_transitions_total{"
                                 "backend=\"b1\",to=\"open\"}"), 1);
    assert_int_equal(value_of(t, "promptgate_upstream_attempts_total{"
                                 "backend=\"b1\",result=\"error\"}"), 5);
    assert_int_equal(value_of(t, "promptgate_upstream_attempts_total{"
                                 "backend=\"b1\",result=\"ok\"}"), 1);
    assert_int_equal(value_of(t, "promptgate_upstream_head_duration_seconds_"
                                 "bucket{backend=\"b1\",le=\"0.025\"}"), 0);
    assert_int_equal(value_of(t, "promptgate_upstream_head_duration_seconds_"
                                 "bucket{backend=\"b1\",le=\"0.05\"}"), 1);
    /* the health check closes it: one transition to closed */
    gw_breaker_health(&b->state->breaker, &b->breaker, now, 1);
    t = scrape(f);
    assert_int_equal(value_of(t, "promptgate_breaker_transitions_total{"
                                 "backend=\"b1\",to=\"closed\"}"), 1);
    assert_int_equal(value_of(t, "promptgate_backend_up{backend=\"b1\"}"), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_format_and_counters, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_histogram_buckets, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_escaping, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_names_bounded, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_reload_keeps_counts, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_breaker_series, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
