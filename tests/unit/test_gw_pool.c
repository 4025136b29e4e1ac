/* Unit tests of gateway/pool.c: pools built from a config, the three
 * strategies, priority tiers, exclusion of tried / busy / open backends,
 * the panic probe, state kept across configs by name, the "models" key. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "gateway/config.h"
#include "gateway/log.h"
#include "gateway/pool.h"

#define T0 (1000LL * 1000000LL)

static struct gw_config *load(const char *text)
{
    char *err = NULL;
    struct gw_config *c = gw_config_parse(text, strlen(text), &err);

    if (c == NULL)
        fail_msg("config: %s", err);
    return c;
}

/* Three backends a, b, c serving m (weights 5, 1, 1) and one d serving f. */
static const char three[] =
    "{\"backends\":["
    "{\"name\":\"a\",\"url\":\"http://127.0.0.1:1/v1\",\"models\":[\"m\"],"
    "\"weight\":5},"
    "{\"name\":\"b\",\"url\":\"http://127.0.0.1:2/v1\",\"models\":[\"m\"]},"
    "{\"name\":\"c\",\"url\":\"http://127.0.0.1:3/v1\",\"models\":[\"m\"]},"
    "{\"name\":\"d\",\"url\":\"http://127.0.0.1:4/v1\",\"models\":[\"f\"]}],"
    "\"models\":{\"m\":{\"fallbacks\":[\"f\"]}}}";

struct fixture {
    struct gw_backend_states *st;
    struct gw_config *c;
    uint64_t rng;
};

static struct fixture fx(const char *text)
{
    struct fixture f = {gw_states_new(), load(text), 42};

    assert_non_null(f.st);
    assert_int_equal(gw_states_attach(f.st, f.c), 0);
    return f;
}

static void fx_free(struct fixture *f)
{
    gw_config_unref(f->c);
    gw_states_free(f->st);
}

/* Picks and records OK at once; returns the backend's name. */
static const char *pick_done(struct fixture *f, struct gw_pool *p)
{
    struct gw_pick_why why;
    int probe;
    struct gw_backend *b = gw_pool_pick(p, T0, &f->rng, NULL, 0, &probe, &why);

    if (b == NULL)
        return "-";
    gw_pool_record(b, T0, probe, GW_BREAKER_OK, 1000, 0);
    return b->name;
}

/* n attempts on b that end with outcome at t, through the pool's own
 * calls (which keep the breaker and its copy for the pick in step). */
static void attempts_end(struct gw_backend *b, int64_t t,
                         enum gw_breaker_outcome outcome, int n)
{
    for (int i = 0; i < n; i++) {
        int probe = gw_pool_acquire(b, t);
        gw_pool_record(b, t, probe, outcome, -1, 0);
    }
}

static void test_smooth_weighted_round_robin(void **state)
{
    struct fixture f = fx(three);
    struct gw_pool *p = gw_pool_find(f.c, "m");
    char seq[32] = "";

    (void)state;
    assert_non_null(p);
    assert_int_equal(p->n, 3);
    assert_int_equal(p->n_fallbacks, 1);
    assert_string_equal(p->fallbacks[0]->model, "f");
    for (int i = 0; i < 14; i++)
        strcat(seq, pick_done(&f, p));
    /* nginx's sequence for 5,1,1, twice */
    assert_string_equal(seq, "aabacaaaabacaa");
    fx_free(&f);
}

static void test_tried_busy_and_open_are_skipped(void **state)
{
    struct fixture f = fx(three);
    struct gw_pool *p = gw_pool_find(f.c, "m");
    struct gw_backend *tried[1] = {&f.c->backends[0]};
    struct gw_pick_why why;
    int probe;

    (void)state;
    for (int i = 0; i < 10; i++) {
        struct gw_backend *b =
            gw_pool_pick(p, T0, &f.rng, tried, 1, &probe, &why);
        assert_non_null(b);
        assert_string_not_equal(b->name, "a");
        gw_pool_record(b, T0, probe, GW_BREAKER_OK, 1000, 0);
    }
    /* b busy (max_inflight 1 with one in flight), c open: nothing */
    f.c->backends[1].max_inflight = 1;
    struct gw_backend *held = gw_pool_pick(p, T0, &f.rng, tried, 1, &probe,
                                           &why);
    assert_string_equal(held->name, "b");
    attempts_end(&f.c->backends[2], T0, GW_BREAKER_DOWN, 5);
    assert_null(gw_pool_pick(p, T0, &f.rng, tried, 1, &probe, &why));
    assert_true(why.busy);
    assert_true(why.open);
    assert_int_equal(why.reopen_us,
                     f.c->backends[2].state->breaker.open_until_us);
    gw_pool_record(held, T0, probe, GW_BREAKER_OK, 1000, 0);
    assert_int_equal(f.c->backends[1].state->inflight, 0);
    fx_free(&f);
}

static void test_panic_probes_one_on_answered_errors(void **state)
{
    struct fixture f = fx(three);
    struct gw_pool *p = gw_pool_find(f.c, "m");
    struct gw_pick_why why;
    int probe;

    (void)state;
    for (int j = 0; j < 3; j++)
        attempts_end(&f.c->backends[j], T0 + j, GW_BREAKER_FAIL, 5);
    struct gw_backend *b = gw_pool_pick(p, T0 + 10, &f.rng, NULL, 0, &probe,
                                        &why);
    assert_non_null(b);
    assert_string_equal(b->name, "a"); /* its cool-down ends first */
    assert_int_equal(probe, 1);
    /* only one probe at a time: the next request finds nothing */
    assert_null(gw_pool_pick(p, T0 + 10, &f.rng, NULL, 0, &probe, &why));
    gw_pool_record(b, T0 + 10, 1, GW_BREAKER_OK, 1000, 0);
    assert_int_equal(b->state->breaker.state, GW_BREAKER_CLOSED);
    fx_free(&f);
}

static void test_no_panic_when_truly_down(void **state)
{
    struct fixture f = fx(three);
    struct gw_pool *p = gw_pool_find(f.c, "m");
    struct gw_pick_why why;
    int probe;

    (void)state;
    for (int j = 0; j < 3; j++)
        attempts_end(&f.c->backends[j], T0, GW_BREAKER_DOWN, 5);
    assert_null(gw_pool_pick(p, T0, &f.rng, NULL, 0, &probe, &why));
    assert_true(why.open && !why.busy);
    fx_free(&f);
}

static void test_least_inflight(void **state)
{
    struct fixture f = fx(
        "{\"backends\":["
        "{\"name\":\"a\",\"url\":\"http://127.0.0.1:1/v1\",\"models\":[\"m\"]},"
        "{\"name\":\"b\",\"url\":\"http://127.0.0.1:2/v1\",\"models\":[\"m\"],"
        "\"weight\":2}],"
        "\"models\":{\"m\":{\"strategy\":\"least_inflight\"}}}");
    struct gw_pool *p = gw_pool_find(f.c, "m");
    struct gw_pick_why why;
    struct gw_backend *held[6];
    int probe, na = 0;

    (void)state;
    /* six held at once: b (weight 2) takes twice as many as a */
    for (int i = 0; i < 6; i++) {
        held[i] = gw_pool_pick(p, T0, &f.rng, NULL, 0, &probe, &why);
        na += strcmp(held[i]->name, "a") == 0;
    }
    assert_int_equal(na, 2);
    for (int i = 0; i < 6; i++)
        gw_pool_record(held[i], T0, 0, GW_BREAKER_OK, 1000, 0);
    fx_free(&f);
}

static void test_latency_power_of_two(void **state)
{
    struct fixture f = fx(
        "{\"backends\":["
        "{\"name\":\"slow\",\"url\":\"http://127.0.0.1:1/v1\",\"models\":[\"m\"]},"
        "{\"name\":\"fast\",\"url\":\"http://127.0.0.1:2/v1\",\"models\":[\"m\"]},"
        "{\"name\":\"mid\",\"url\":\"http://127.0.0.1:3/v1\",\"models\":[\"m\"]}],"
        "\"models\":{\"m\":{\"strategy\":\"latency\"}}}");
    struct gw_pool *p = gw_pool_find(f.c, "m");
    struct gw_pick_why why;
    int probe, n[3] = {0, 0, 0};

    (void)state;
    f.c->backends[0].state->ewma_us = 90000;
    f.c->backends[1].state->ewma_us = 1000;
    f.c->backends[2].state->ewma_us = 5000;
    for (int i = 0; i < 3000; i++) {
        struct gw_backend *b = gw_pool_pick(p, T0, &f.rng, NULL, 0, &probe,
                                            &why);
        n[b - f.c->backends]++;
        b->state->inflight--; /* no record: keep the EWMAs fixed */
    }
    /* the slowest only wins against nobody: never; the fastest wins every
     * pair it is in: two of three pairs */
    assert_int_equal(n[0], 0);
    assert_in_range(n[1], 1800, 2200);
    assert_in_range(n[2], 800, 1200);
    fx_free(&f);
}

static void test_priority_tiers(void **state)
{
    struct fixture f = fx(
        "{\"backends\":["
        "{\"name\":\"remote\",\"url\":\"http://127.0.0.1:1/v1\","
        "\"models\":[\"m\"],\"priority\":1},"
        "{\"name\":\"local\",\"url\":\"http://127.0.0.1:2/v1\","
        "\"models\":[\"m\"]}]}");
    struct gw_pool *p = gw_pool_find(f.c, "m");

    (void)state;
    for (int i = 0; i < 5; i++)
        assert_string_equal(pick_done(&f, p), "local");
    attempts_end(&f.c->backends[1], T0, GW_BREAKER_DOWN, 5);
    assert_string_equal(pick_done(&f, p), "remote");
    fx_free(&f);
}

static void test_state_survives_a_new_config(void **state)
{
    struct fixture f = fx(three);
    struct gw_config *c2 = load(
        "{\"backends\":["
        "{\"name\":\"c\",\"url\":\"http://127.0.0.1:3/v1\",\"models\":[\"m\"]},"
        "{\"name\":\"e\",\"url\":\"http://127.0.0.1:5/v1\",\"models\":[\"m\"]}"
        "]}");
    struct evbuffer *out = evbuffer_new();

    (void)state;
    attempts_end(&f.c->backends[2], T0, GW_BREAKER_FAIL, 5);
    assert_int_equal(gw_states_attach(f.st, c2), 0);
    assert_ptr_equal(c2->backends[0].state, f.c->backends[2].state);
    assert_int_equal(c2->backends[0].state->breaker.state, GW_BREAKER_OPEN);
    assert_int_equal(c2->backends[1].state->breaker.state, GW_BREAKER_CLOSED);
    assert_false(f.c->backends[0].state->in_config);
    gw_states_json(c2, T0, out);
    evbuffer_add(out, "", 1);
    const char *j = (const char *)evbuffer_pullup(out, -1);
    assert_non_null(strstr(j, "{\"backends\":[{\"name\":\"c\","));
    assert_non_null(strstr(j, "\"state\":\"open\""));
    assert_null(strstr(j, "\"name\":\"a\""));
    evbuffer_free(out);
    gw_config_unref(c2);
    fx_free(&f);
}

static void test_models_key_problems(void **state)
{
    static const struct {
        const char *models, *want;
    } cases[] = {
        {"[]", "models: must be an object"},
        {"{\"x\":{}}", "models.x: no backend serves this model"},
        {"{\"m\":{\"strategy\":\"fastest\"}}", "models.m.strategy: must be"},
        {"{\"m\":{\"strategy\":1}}", "models.m.strategy: must be"},
        {"{\"m\":{\"fallbacks\":\"f\"}}", "models.m.fallbacks: must be an array"},
        {"{\"m\":{\"fallbacks\":[\"m\"]}}", "models.m.fallbacks[0]: must name"},
        {"{\"m\":{\"fallbacks\":[\"f\",\"zz\"]}}", "models.m.fallbacks[1]"},
        {"{\"m\":{\"weight\":1}}", "models.m.weight: unknown key"},
    };
    char text[1024], *err;

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(text, sizeof(text),
                 "{\"backends\":[{\"name\":\"a\",\"url\":"
                 "\"http://127.0.0.1:1/v1\",\"models\":[\"m\",\"f\"]}],"
                 "\"models\":%s}", cases[i].models);
        err = NULL;
        assert_null(gw_config_parse(text, strlen(text), &err));
        if (strstr(err, cases[i].want) == NULL)
            fail_msg("case %zu: want '%s' in '%s'", i, cases[i].want, err);
        free(err);
    }
}

static void test_admin_key_compare(void **state)
{
    (void)state;
    assert_true(gw_admin_key_ok("secret", "secret"));
    assert_false(gw_admin_key_ok("secret", "secreT"));
    assert_false(gw_admin_key_ok("secret", "secret2"));
    assert_false(gw_admin_key_ok("secret", "secre"));
    assert_false(gw_admin_key_ok("secret", ""));
    assert_false(gw_admin_key_ok("", ""));
    assert_false(gw_admin_key_ok(NULL, "x"));
    assert_false(gw_admin_key_ok("x", NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_smooth_weighted_round_robin),
        cmocka_unit_test(test_tried_busy_and_open_are_skipped),
        cmocka_unit_test(test_panic_probes_one_on_answered_errors),
        cmocka_unit_test(test_no_panic_when_truly_down),
        cmocka_unit_test(test_least_inflight),
        cmocka_unit_test(test_latency_power_of_two),
        cmocka_unit_test(test_priority_tiers),
        cmocka_unit_test(test_state_survives_a_new_config),
        cmocka_unit_test(test_models_key_problems),
        cmocka_unit_test(test_admin_key_compare),
    };
    gw_log_set_level(GW_LOG_ERROR);
    return cmocka_run_group_tests_name("gw_pool", tests, NULL, NULL);
}
