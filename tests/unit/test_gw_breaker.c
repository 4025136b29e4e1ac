/* Unit tests of gateway/breaker.c: every transition of the state machine,
 * driven by a fake clock. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "gateway/breaker.h"
#include "gateway/log.h"

#define MS 1000LL
#define S 1000000LL
#define T0 (1000 * S)

static struct gw_breaker_conf conf(void)
{
    struct gw_breaker_conf k;

    gw_breaker_conf_default(&k);
    k.failures = 3;
    k.error_rate_pct = 0;
    k.cooldown_ms = 1000;
    k.max_cooldown_ms = 3500;
    k.probes = 1;
    return k;
}

static void fail_n(struct gw_breaker *b, const struct gw_breaker_conf *k,
                 int64_t now, int n)
{
    for (int i = 0; i < n; i++) {
        assert_true(gw_breaker_usable(b, k, now));
        int probe = gw_breaker_acquire(b, k, now);
        gw_breaker_record(b, k, now, probe, GW_BREAKER_FAIL, 0);
    }
}

static void test_consecutive_failures_open(void **state)
{
    struct gw_breaker_conf k = conf();
    struct gw_breaker b;

    (void)state;
    gw_breaker_init(&b, "x");
    fail_n(&b, &k, T0, 2);
    gw_breaker_record(&b, &k, T0, 0, GW_BREAKER_OK, 0); /* resets the run */
    fail_n(&b, &k, T0, 2);
    assert_int_equal(b.state, GW_BREAKER_CLOSED);
    fail_n(&b, &k, T0, 1);
    assert_int_equal(b.state, GW_BREAKER_OPEN);
    assert_int_equal(b.opens, 1);
    assert_false(gw_breaker_usable(&b, &k, T0 + 999 * MS));
    assert_true(gw_breaker_usable(&b, &k, T0 + 1000 * MS));
}

static void test_half_open_probe_closes_or_doubles(void **state)
{
    struct gw_breaker_conf k = conf();
    struct gw_breaker b;
    int64_t t = T0;

    (void)state;
    gw_breaker_init(&b, "x");
    fail_n(&b, &k, t, 3);
    /* probe fails: open again for 2 s, then 3.5 s (capped) */
    t += 1000 * MS;
    assert_int_equal(gw_breaker_acquire(&b, &k, t), 1);
    assert_int_equal(b.state, GW_BREAKER_HALF_OPEN);
    assert_false(gw_breaker_usable(&b, &k, t)); /* one probe at a time */
    gw_breaker_record(&b, &k, t, 1, GW_BREAKER_FAIL, 0);
    assert_int_equal(b.state, GW_BREAKER_OPEN);
    assert_int_equal(b.open_until_us, t + 2000 * MS);
    t += 2000 * MS;
    assert_int_equal(gw_breaker_acquire(&b, &k, t), 1);
    gw_breaker_record(&b, &k, t, 1, GW_BREAKER_DOWN, 0);
    assert_int_equal(b.open_until_us, t + 3500 * MS);
    assert_true(b.down);
    assert_false(gw_breaker_can_force(&b));
    /* probe succeeds: closed, the cool-down starts over */
    t += 3500 * MS;
    assert_int_equal(gw_breaker_acquire(&b, &k, t), 1);
    gw_breaker_record(&b, &k, t, 1, GW_BREAKER_OK, 0);
    assert_int_equal(b.state, GW_BREAKER_CLOSED);
    assert_int_equal(b.probes_inflight, 0);
    fail_n(&b, &k, t, 3);
    assert_int_equal(b.open_until_us, t + 1000 * MS);
}

static void test_neutral_gives_the_probe_back(void **state)
{
    struct gw_breaker_conf k = conf();
    struct gw_breaker b;
    int64_t t = T0;

    (void)state;
    gw_breaker_init(&b, "x");
    fail_n(&b, &k, t, 3);
    t += 1000 * MS;
    assert_int_equal(gw_breaker_acquire(&b, &k, t), 1);
    gw_breaker_record(&b, &k, t, 1, GW_BREAKER_NEUTRAL, 0);
    assert_int_equal(b.state, GW_BREAKER_HALF_OPEN);
    assert_true(gw_breaker_usable(&b, &k, t));
}

static void test_error_rate_window(void **state)
{
    struct gw_breaker_conf k = conf();
    struct gw_breaker b;
    unsigned long n, nf;
    int64_t t = T0;

    (void)state;
    k.failures = 0;
    k.error_rate_pct = 50;
    k.min_requests = 10;
    k.window_s = 5;
    gw_breaker_init(&b, "x");
    /* alternate ok/fail: 50% but fewer than 10 attempts: stays closed */
    for (int i = 0; i < 4; i++) {
        gw_breaker_record(&b, &k, t, 0, GW_BREAKER_OK, 0);
        gw_breaker_record(&b, &k, t, 0, GW_BREAKER_FAIL, 0);
    }
    assert_int_equal(b.state, GW_BREAKER_CLOSED);
    /* old seconds leave the window */
    t += 6 * S;
    gw_breaker_window(&b, &k, t, &n, &nf);
    assert_int_equal(n, 0);
    for (int i = 0; i < 6; i++)
        gw_breaker_record(&b, &k, t + i * 100 * MS, 0, GW_BREAKER_OK, 0);
    for (int i = 0; i < 5; i++)
        gw_breaker_record(&b, &k, t + S, 0, GW_BREAKER_FAIL, 0);
    assert_int_equal(b.state, GW_BREAKER_CLOSED); /* 5 of 11 */
    gw_breaker_record(&b, &k, t + S, 0, GW_BREAKER_FAIL, 0);
    assert_int_equal(b.state, GW_BREAKER_OPEN); /* 6 of 12 */
    gw_breaker_window(&b, &k, t + S, &n, &nf);
    assert_int_equal(n, 12);
    assert_int_equal(nf, 6);
}

static void test_retry_after_opens_for_that_long(void **state)
{
    struct gw_breaker_conf k = conf();
    struct gw_breaker b;

    (void)state;
    gw_breaker_init(&b, "x");
    gw_breaker_record(&b, &k, T0, 0, GW_BREAKER_FAIL, 7000);
    assert_int_equal(b.state, GW_BREAKER_OPEN);
    assert_int_equal(b.open_until_us, T0 + 7 * S);
    assert_true(b.told);
    /* never cut short: no forced probe, no health check */
    assert_false(gw_breaker_can_force(&b));
    gw_breaker_health(&b, &k, T0 + S, 1);
    assert_int_equal(b.state, GW_BREAKER_OPEN);
    gw_breaker_health(&b, &k, T0 + 7 * S, 1);
    assert_int_equal(b.state, GW_BREAKER_CLOSED);
}

static void test_force_probe_on_answered_errors_only(void **state)
{
    struct gw_breaker_conf k = conf();
    struct gw_breaker b;

    (void)state;
    gw_breaker_init(&b, "x");
    fail_n(&b, &k, T0, 3);
    assert_true(gw_breaker_can_force(&b));
    gw_breaker_force_probe(&b, T0);
    assert_int_equal(b.state, GW_BREAKER_HALF_OPEN);
    assert_true(gw_breaker_usable(&b, &k, T0));
}

static void test_health_checks(void **state)
{
    struct gw_breaker_conf k = conf();
    struct gw_breaker b;

    (void)state;
    gw_breaker_init(&b, "x");
    gw_breaker_health(&b, &k, T0, 0);
    assert_int_equal(b.state, GW_BREAKER_OPEN);
    assert_true(b.down);
    gw_breaker_health(&b, &k, T0 + 100 * MS, 1);
    assert_int_equal(b.state, GW_BREAKER_CLOSED);
}

/* A probe still in flight keeps its slot through a close and a new trip:
 * the next cool-down must not let one more through on top of it. */
static void test_probe_slots_survive_a_reopen(void **state)
{
    struct gw_breaker_conf k = conf();
    struct gw_breaker b;
    int probe;

    (void)state;
    gw_breaker_init(&b, "x");
    fail_n(&b, &k, T0, 3);
    assert_true(gw_breaker_usable(&b, &k, T0 + 1000 * MS));
    probe = gw_breaker_acquire(&b, &k, T0 + 1000 * MS);
    assert_int_equal(probe, 1); /* the only slot, still in flight */
    gw_breaker_health(&b, &k, T0 + 1001 * MS, 1);
    assert_int_equal(b.state, GW_BREAKER_CLOSED);
    gw_breaker_health(&b, &k, T0 + 1002 * MS, 0);
    assert_int_equal(b.state, GW_BREAKER_OPEN);
    /* cool-down over, but the slot is taken */
    assert_false(gw_breaker_usable(&b, &k, T0 + 3000 * MS));
    gw_breaker_record(&b, &k, T0 + 3000 * MS, probe, GW_BREAKER_FAIL, 0);
    assert_true(gw_breaker_usable(&b, &k, T0 + 3000 * MS));
    assert_int_equal(gw_breaker_acquire(&b, &k, T0 + 3000 * MS), 1);
    assert_int_equal(b.probes_inflight, 1);

    /* the same after a Retry-After from an attempt let through before the
     * trip (not a probe) */
    gw_breaker_init(&b, "y");
    fail_n(&b, &k, T0, 3);
    probe = gw_breaker_acquire(&b, &k, T0 + 1000 * MS);
    assert_int_equal(probe, 1);
    gw_breaker_record(&b, &k, T0 + 1000 * MS, 0, GW_BREAKER_FAIL, 50);
    assert_int_equal(b.state, GW_BREAKER_OPEN);
    assert_false(gw_breaker_usable(&b, &k, T0 + 1100 * MS));
    gw_breaker_record(&b, &k, T0 + 1100 * MS, probe, GW_BREAKER_NEUTRAL, 0);
    assert_true(gw_breaker_usable(&b, &k, T0 + 1100 * MS));
}

static void test_parse_retry_after(void **state)
{
    (void)state;
    assert_int_equal(gw_breaker_parse_retry_after("2"), 2000);
    assert_int_equal(gw_breaker_parse_retry_after(" 30 "), 30000);
    assert_int_equal(gw_breaker_parse_retry_after("0"), 0);
    assert_int_equal(gw_breaker_parse_retry_after("99999999999"), 3600000);
    assert_int_equal(gw_breaker_parse_retry_after(""), 0);
    assert_int_equal(gw_breaker_parse_retry_after("-1"), 0);
    assert_int_equal(gw_breaker_parse_retry_after("1.5"), 0);
    assert_int_equal(
        gw_breaker_parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), 0);
    assert_int_equal(gw_breaker_parse_retry_after(NULL), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_consecutive_failures_open),
        cmocka_unit_test(test_half_open_probe_closes_or_doubles),
        cmocka_unit_test(test_neutral_gives_the_probe_back),
        cmocka_unit_test(test_error_rate_window),
        cmocka_unit_test(test_retry_after_opens_for_that_long),
        cmocka_unit_test(test_force_probe_on_answered_errors_only),
        cmocka_unit_test(test_health_checks),
        cmocka_unit_test(test_probe_slots_survive_a_reopen),
        cmocka_unit_test(test_parse_retry_after),
    };
    gw_log_set_level(GW_LOG_ERROR);
    return cmocka_run_group_tests_name("gw_breaker", tests, NULL, NULL);
}
