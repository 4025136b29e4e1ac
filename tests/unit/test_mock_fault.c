/*
 * test_mock_fault.c: unit tests of mockllm's fault SPEC parser
 * (contrib/mockllm/fault.c): every item, ranges, errors naming the item,
 * the count rule and the canonical form.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "contrib/mockllm/fault.h"

static int
parse(struct mock_fault *f, const char *spec, int allow_count, char *err)
{
    return mock_fault_parse(f, spec, strlen(spec), allow_count, err, 256);
}

static void
test_empty_is_no_fault(void **state)
{
    struct mock_fault f;
    char err[256];

    (void)state;
    assert_int_equal(parse(&f, "", 0, err), 0);
    assert_false(mock_fault_active(&f));
    assert_int_equal(parse(&f, " , ,", 0, err), 0);
    assert_false(mock_fault_active(&f));
}

static void
test_every_item(void **state)
{
    struct mock_fault f;
    char err[256], out[256];

    (void)state;
    assert_int_equal(parse(&f, "status=429, retry-after=2,delay-ms=500,"
                               "close-after-chunks=3,hang,reset,tokens=5,"
                               "token-delay-ms=7", 0, err), 0);
    assert_int_equal(f.status, 429);
    assert_int_equal(f.retry_after, 2);
    assert_int_equal(f.delay_ms, 500);
    assert_int_equal(f.close_after_chunks, 3);
    assert_true(f.hang);
    assert_true(f.reset);
    assert_int_equal(f.tokens, 5);
    assert_int_equal(f.token_delay_ms, 7);
    assert_int_equal(f.count, -1);
    mock_fault_format(&f, out, sizeof(out));
    assert_string_equal(out, "status=429,retry-after=2,delay-ms=500,"
                             "close-after-chunks=3,hang,reset,tokens=5,token-delay-ms=7");
}

static void
test_zero_values_are_kept(void **state)
{
    struct mock_fault f;
    char err[256];

    (void)state;
    assert_int_equal(parse(&f, "close-after-chunks=0,tokens=0,retry-after=0", 0, err), 0);
    assert_int_equal(f.close_after_chunks, 0);
    assert_int_equal(f.tokens, 0);
    assert_int_equal(f.retry_after, 0);
    assert_true(mock_fault_active(&f));
}

static void
test_errors_name_the_item(void **state)
{
    static const char *bad[] = {
        "status=200", "status=600", "status=abc", "status=", "status",
        "delay-ms=-1", "delay-ms=600001", "tokens=1x", "bogus=1", "hang=1",
        "retry-after=99999999999999999999", "status=+429", "reset,status=5000",
    };
    struct mock_fault f;
    char err[256];
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        assert_int_equal(parse(&f, bad[i], 1, err), -1);
        assert_non_null(strstr(err, "bad fault item '"));
        /* the struct is left as no fault */
        assert_false(mock_fault_active(&f));
    }
    assert_int_equal(parse(&f, "status=503,bogus", 0, err), -1);
    assert_string_equal(err, "bad fault item 'bogus': unknown name (known: status, "
                             "retry-after, delay-ms, close-after-chunks, hang, reset, "
                             "tokens, token-delay-ms, count, error-after-chunks)");
}

static void
test_count_only_when_allowed(void **state)
{
    struct mock_fault f;
    char err[256];

    (void)state;
    assert_int_equal(parse(&f, "status=503,count=2", 0, err), -1);
    assert_non_null(strstr(err, "count is only accepted by POST /_mock/fault"));
    assert_int_equal(parse(&f, "status=503,count=2", 1, err), 0);
    assert_int_equal(f.count, 2);
    assert_int_equal(parse(&f, "count=0", 1, err), -1);
}

static void
test_too_long(void **state)
{
    struct mock_fault f;
    char err[256], spec[MOCK_FAULT_SPEC_MAX + 2];

    (void)state;
    memset(spec, ',', sizeof(spec) - 1);
    spec[sizeof(spec) - 1] = '\0';
    assert_int_equal(parse(&f, spec, 0, err), -1);
    assert_non_null(strstr(err, "too long"));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_is_no_fault),
        cmocka_unit_test(test_every_item),
        cmocka_unit_test(test_zero_values_are_kept),
        cmocka_unit_test(test_errors_name_the_item),
        cmocka_unit_test(test_count_only_when_allowed),
        cmocka_unit_test(test_too_long),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
