/*
 * test_evl_unit.c - quantities in Chinese and English copy: scanning,
 * normalisation across spellings, comparison with tolerance.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <math.h>
#include <string.h>
#include <cmocka.h>
#include "evaluator/unit.h"

static void parse_ok(const char *s, enum evl_dim dim, double base)
{
    struct evl_quantity q;

    if (evl_unit_parse(s, strlen(s), &q) != 0)
        fail_msg("'%s' did not parse", s);
    if (q.dim != dim || fabs(q.value - base) > 1e-9 * fmax(1, base))
        fail_msg("'%s': dim %d value %g, want %d %g", s, q.dim, q.value, dim,
                 base);
}

static void test_parse_spellings(void **state)
{
    (void)state;
    parse_ok("1.2kg", EVL_DIM_MASS, 1200);
    parse_ok("1200g", EVL_DIM_MASS, 1200);
    parse_ok("1200克", EVL_DIM_MASS, 1200);
    parse_ok("1.2千克", EVL_DIM_MASS, 1200);
    parse_ok("1.2公斤", EVL_DIM_MASS, 1200);
    parse_ok("2.4斤", EVL_DIM_MASS, 1200);
    parse_ok(" 500 mg ", EVL_DIM_MASS, 0.5);
    parse_ok("500ml", EVL_DIM_VOLUME, 500);
    parse_ok("0.5L", EVL_DIM_VOLUME, 500);
    parse_ok("500毫升", EVL_DIM_VOLUME, 500);
    parse_ok("1.5升", EVL_DIM_VOLUME, 1500);
    parse_ok("65英寸", EVL_DIM_LENGTH, 65 * 25.4);
    parse_ok("65寸", EVL_DIM_LENGTH, 65 * 25.4);
    parse_ok("6.5 inch", EVL_DIM_LENGTH, 6.5 * 25.4);
    parse_ok("12cm", EVL_DIM_LENGTH, 120);
    parse_ok("12厘米", EVL_DIM_LENGTH, 120);
    parse_ok("1.2m", EVL_DIM_LENGTH, 1200);
    parse_ok("1.2米", EVL_DIM_LENGTH, 1200);
    parse_ok("5000mAh", EVL_DIM_CHARGE, 5000);
    parse_ok("5,000 毫安", EVL_DIM_CHARGE, 5000);
    parse_ok("5Ah", EVL_DIM_CHARGE, 5000);
    parse_ok("65W", EVL_DIM_POWER, 65);
    parse_ok("65瓦", EVL_DIM_POWER, 65);
    parse_ok("2kW", EVL_DIM_POWER, 2000);
    parse_ok("256GB", EVL_DIM_STORAGE, 256);
    parse_ok("1TB", EVL_DIM_STORAGE, 1024);
    parse_ok("199元", EVL_DIM_MONEY, 199);
    parse_ok("¥199", EVL_DIM_MONEY, 199);
    parse_ok("￥ 199.5", EVL_DIM_MONEY, 199.5);
    parse_ok("RMB 1,299", EVL_DIM_MONEY, 1299);
    parse_ok("199 RMB", EVL_DIM_MONEY, 199);
    parse_ok("8小时", EVL_DIM_TIME, 8 * 3600);
    parse_ok("8h", EVL_DIM_TIME, 8 * 3600);
    parse_ok("30分钟", EVL_DIM_TIME, 1800);
    parse_ok("30 min", EVL_DIM_TIME, 1800);
    parse_ok("95%", EVL_DIM_PERCENT, 95);
    parse_ok("95％", EVL_DIM_PERCENT, 95);
}

static void test_parse_rejects(void **state)
{
    struct evl_quantity q;
    static const char *const bad[] = {"", "白色", "1.2", "kg", "1.2 kg x",
                                      "5 miles", "12 minutes ago", "iPhone 14"};
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (evl_unit_parse(bad[i], strlen(bad[i]), &q) == 0)
            fail_msg("'%s' parsed as a quantity", bad[i]);
}

static void test_scan_chinese(void **state)
{
    const char *t = "这款充电宝容量5000毫安，重仅200克，售价¥99，支持18W快充。";
    struct evl_quantity q[8];
    size_t n;

    (void)state;
    n = evl_unit_scan(t, strlen(t), q, 8);
    assert_int_equal(n, 4);
    assert_int_equal(q[0].dim, EVL_DIM_CHARGE);
    assert_true(fabs(q[0].value - 5000) < 1e-9);
    assert_int_equal(q[1].dim, EVL_DIM_MASS);
    assert_true(fabs(q[1].value - 200) < 1e-9);
    assert_int_equal(q[2].dim, EVL_DIM_MONEY);
    assert_int_equal(q[3].dim, EVL_DIM_POWER);
    /* spans cover the text of each quantity */
    assert_int_equal(strncmp(t + q[1].start, "200克", q[1].end - q[1].start), 0);
}

static void test_scan_english(void **state)
{
    const char *t = "A 1.2 kg laptop with a 15.6 inch screen, 16GB RAM and a "
                    "1TB SSD; model X200 lasts 10 hours. 3 colours.";
    struct evl_quantity q[8];
    size_t n;

    (void)state;
    n = evl_unit_scan(t, strlen(t), q, 8);
    assert_int_equal(n, 5);
    assert_int_equal(q[0].dim, EVL_DIM_MASS);
    assert_int_equal(q[1].dim, EVL_DIM_LENGTH);
    assert_int_equal(q[2].dim, EVL_DIM_STORAGE);
    assert_true(fabs(q[3].value - 1024) < 1e-9);
    assert_int_equal(q[4].dim, EVL_DIM_TIME);
    /* more found than room: count them all, write max */
    assert_int_equal(evl_unit_scan(t, strlen(t), q, 2), 5);
}

static void test_equal_tolerance(void **state)
{
    struct evl_quantity a, b, c;

    (void)state;
    assert_int_equal(evl_unit_parse("1.2kg", 5, &a), 0);
    assert_int_equal(evl_unit_parse("1210g", 5, &b), 0);
    assert_int_equal(evl_unit_parse("1.2L", 4, &c), 0);
    assert_true(evl_unit_equal(&a, &b, 0.02));
    assert_false(evl_unit_equal(&a, &b, 0.001));
    assert_false(evl_unit_equal(&a, &c, 0.5)); /* mass is not volume */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_spellings),
        cmocka_unit_test(test_parse_rejects),
        cmocka_unit_test(test_scan_chinese),
        cmocka_unit_test(test_scan_english),
        cmocka_unit_test(test_equal_tolerance),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
