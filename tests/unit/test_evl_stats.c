/*
 * test_evl_stats.c - evaluator statistics against reference values computed
 * independently with /usr/bin/python3 (statistics.NormalDist, closed-form
 * chi-square tails, and numeric integration of the Beta densities for the
 * chance to beat); the script is tests/data/eval/stats_reference.py.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <math.h>
#include <cmocka.h>
#include "evaluator/stats.h"

#define NEAR(a, b, tol) assert_true(fabs((a) - (b)) <= (tol))

static void test_wilson(void **state)
{
    struct evl_rate r;

    (void)state;
    evl_stats_wilson(0, 10, EVL_Z95, &r);
    NEAR(r.value, 0.0, 1e-12);
    NEAR(r.low, 0.0, 1e-12);
    NEAR(r.high, 0.277532799863, 1e-11);
    evl_stats_wilson(5, 10, EVL_Z95, &r);
    NEAR(r.low, 0.236593090513, 1e-11);
    NEAR(r.high, 0.763406909487, 1e-11);
    evl_stats_wilson(81, 263, EVL_Z95, &r);
    NEAR(r.value, 0.307984790875, 1e-11);
    NEAR(r.low, 0.255288519878, 1e-11);
    NEAR(r.high, 0.366209576983, 1e-11);
    evl_stats_wilson(1, 1000000, EVL_Z95, &r);
    NEAR(r.low, 1.76524576745e-07, 1e-15);
    NEAR(r.high, 5.66491180431e-06, 1e-15);
    assert_int_equal(r.trials, 1000000);
    evl_stats_wilson(0, 0, EVL_Z95, &r);
    assert_true(isnan(r.value) && isnan(r.low) && isnan(r.high));
}

static void check_compare(uint64_t sc, uint64_t nc, uint64_t st, uint64_t nt,
                          const double *want)
{
    struct evl_compare c;

    evl_stats_compare(sc, nc, st, nt, 1, EVL_Z95, &c);
    NEAR(c.diff, want[0], 1e-11);
    NEAR(c.diff_low, want[1], 1e-11);
    NEAR(c.diff_high, want[2], 1e-11);
    NEAR(c.rel_lift, want[3], 1e-11);
    NEAR(c.rel_low, want[4], 1e-11);
    NEAR(c.rel_high, want[5], 1e-11);
    NEAR(c.z, want[6], 1e-10);
    NEAR(c.p_value, want[7], 1e-11);
    NEAR(c.p_adjusted, want[7], 1e-11);
}

static void test_compare(void **state)
{
    static const double a[] = {0.0125, -0.000531288817017, 0.025531288817,
                               0.25, -0.0416029691274, 0.541602969127,
                               1.87936394294, 0.0601948161591};
    static const double b[] = {0.002, 0.000787025510887, 0.00321297448911,
                               0.0725, 0.0269619984146, 0.118038001585,
                               3.23160744328, 0.00123096036422};
    static const double c[] = {-0.012, -0.0254047781704, 0.00140477817037,
                               -0.4, -0.746642224651, -0.0533577753485,
                               -1.7532171833, 0.0795647345932};
    struct evl_compare r;

    (void)state;
    check_compare(120, 2400, 150, 2400, a);
    check_compare(4000, 145000, 4290, 145000, b);
    check_compare(30, 1000, 18, 1000, c);
    /* zero baseline: lift undefined, test still defined */
    evl_stats_compare(0, 100, 5, 100, 1, EVL_Z95, &r);
    assert_true(isnan(r.rel_lift));
    assert_false(isnan(r.p_value));
    /* identical all-zero arms: no evidence */
    evl_stats_compare(0, 100, 0, 100, 1, EVL_Z95, &r);
    NEAR(r.p_value, 1.0, 0);
    NEAR(r.chance_to_beat, 0.5, 1e-9);
    /* empty arm: everything undefined */
    evl_stats_compare(0, 0, 5, 100, 1, EVL_Z95, &r);
    assert_true(isnan(r.diff) && isnan(r.p_value));
}

static void test_beta_beats(void **state)
{
    struct evl_compare r;

    (void)state;
    NEAR(evl_stats_beta_beats(121, 2281, 151, 2251), 0.969766639653, 1e-9);
    NEAR(evl_stats_beta_beats(31, 971, 19, 983), 0.0408094912394, 1e-9);
    NEAR(evl_stats_beta_beats(3, 9, 5, 7), 0.81927244582, 1e-9);
    NEAR(evl_stats_beta_beats(4001, 141001, 4291, 140711), 0.999384735197,
         1e-9);
    /* symmetry and equal arms */
    NEAR(evl_stats_beta_beats(151, 2251, 121, 2281), 1 - 0.969766639653, 1e-9);
    NEAR(evl_stats_beta_beats(50, 60, 50, 60), 0.5, 1e-9);
    /* through compare: error rates, lower is better */
    evl_stats_compare(30, 1000, 18, 1000, 0, EVL_Z95, &r);
    NEAR(r.chance_to_beat, 1 - 0.0408094912394, 1e-9);
    evl_stats_compare(30, 1000, 18, 1000, 1, EVL_Z95, &r);
    NEAR(r.chance_to_beat, 0.0408094912394, 1e-9);
}

static void test_chi2(void **state)
{
    (void)state;
    NEAR(evl_stats_chi2_sf(0.5, 1), 0.479500122186953, 1e-12);
    NEAR(evl_stats_chi2_sf(3.84, 1), 0.0500435212487051, 1e-12);
    NEAR(evl_stats_chi2_sf(10.83, 1), 0.000998686379180259, 1e-14);
    NEAR(evl_stats_chi2_sf(13.8, 2), 0.00100778542904851, 1e-14);
    NEAR(evl_stats_chi2_sf(7.81, 3), 0.0501060563500059, 1e-12);
    NEAR(evl_stats_chi2_sf(20.0, 4), 0.000499399227387333, 1e-14);
    NEAR(evl_stats_chi2_sf(100.0, 3) / 1.5541594313896e-21, 1.0, 1e-9);
    NEAR(evl_stats_chi2_sf(0.0, 3), 1.0, 0);
    assert_true(isnan(evl_stats_gamma_q(-1, 2)));
}

static void test_srm(void **state)
{
    uint64_t o2[] = {145300, 144700}, o3[] = {1000, 1100, 900};
    double w2[] = {50, 50}, w3[] = {0.5, 0.3, 0.2}, bad[] = {1, 0};
    struct evl_srm s;

    (void)state;
    assert_int_equal(evl_stats_srm(o2, w2, 2, &s), 0);
    NEAR(s.chi2, 1.2413793103448276, 1e-12);
    assert_int_equal(s.df, 1);
    NEAR(s.p_value, 0.265205392591508, 1e-12);
    assert_false(s.flagged);
    assert_int_equal(evl_stats_srm(o3, w3, 3, &s), 0);
    NEAR(s.chi2, 361.1111111111111, 1e-9);
    NEAR(s.p_value / 3.85228620282298e-79, 1.0, 1e-9);
    assert_true(s.flagged);
    assert_int_equal(evl_stats_srm(o2, bad, 2, &s), -1);
    assert_int_equal(evl_stats_srm(o2, w2, 1, &s), -1);
}

static void test_holm(void **state)
{
    /* hand-computed: sorted 0.01,0.02,0.04,(NaN) with m=3 -> 0.03,0.04,0.04 */
    double p[] = {0.04, 0.01, NAN, 0.02}, adj[4];
    double q[] = {0.5, 0.001}, qa[2];

    (void)state;
    evl_stats_holm(p, adj, 4);
    NEAR(adj[1], 0.03, 1e-15);
    NEAR(adj[3], 0.04, 1e-15);
    NEAR(adj[0], 0.04, 1e-15);
    assert_true(isnan(adj[2]));
    evl_stats_holm(q, qa, 2);
    NEAR(qa[1], 0.002, 1e-15);
    NEAR(qa[0], 0.5, 1e-15);
    evl_stats_holm(q, q, 2);
    NEAR(q[0], 0.5, 1e-15);
    NEAR(q[1], 0.002, 1e-15);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wilson),     cmocka_unit_test(test_compare),
        cmocka_unit_test(test_beta_beats), cmocka_unit_test(test_chi2),
        cmocka_unit_test(test_srm),        cmocka_unit_test(test_holm),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
