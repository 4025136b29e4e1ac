/* Unit tests of gateway/canon.c: the canonical form of request bodies
 * that cache keys hash, and the facts read from their top level. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/canon.h"

static const char *const skip[] = {"user", "stream", "stream_options",
                                   "metadata", NULL};

/* The canonical text of s (static buffer), or "ERROR". */
static const char *canon(const char *s, struct gw_canon_info *info)
{
    static char out[65536];
    struct gw_canon c;
    struct gw_canon_info dummy;

    gw_canon_init(&c);
    if (gw_canon_body(&c, s, strlen(s), skip, info ? info : &dummy) < 0) {
        gw_canon_release(&c);
        return "ERROR";
    }
    snprintf(out, sizeof(out), "%.*s", (int)c.len, c.buf);
    gw_canon_release(&c);
    return out;
}

static void test_sorted_and_compact(void **state)
{
    (void)state;
    assert_string_equal(canon(" { \"b\" : 1,\n \"a\" : [ 1 , {\"d\":2, \"c\": \"x y\"} ] } ", NULL),
                        "{\"a\":[1,{\"c\":\"x y\",\"d\":2}],\"b\":1}");
    assert_string_equal(canon("{}", NULL), "{}");
    assert_string_equal(canon("{\"a\":{},\"b\":[],\"c\":[{}]}", NULL),
                        "{\"a\":{},\"b\":[],\"c\":[{}]}");
    /* a key that is a prefix of another sorts first */
    assert_string_equal(canon("{\"ab\":1,\"a\":2}", NULL), "{\"a\":2,\"ab\":1}");
    /* literals and numbers kept as written */
    assert_string_equal(canon("{\"x\":[true,false,null,-1.5e3,0.0]}", NULL),
                        "{\"x\":[true,false,null,-1.5e3,0.0]}");
}

static void test_same_request_same_form(void **state)
{
    char a[256];

    (void)state;
    snprintf(a, sizeof(a), "%s", canon("{\"model\":\"m\",\"messages\":[{\"role\":"
                                       "\"user\",\"content\":\"hi\"}],\"temperature\":0}", NULL));
    assert_string_equal(canon("{\n  \"temperature\": 0,\n  \"messages\": [ { \"content\""
                              ": \"hi\", \"role\": \"user\" } ],\n  \"model\": \"m\"\n}",
                              NULL), a);
    assert_string_equal(canon("{\"user\":\"u1\",\"model\":\"m\",\"stream\":true,\"messages\":"
                              "[{\"role\":\"user\",\"content\":\"hi\"}],\"metadata\":{\"a\":"
                              "[1,{\"b\":2}]},\"temperature\":0,\"stream_options\":{}}", NULL),
                        a);
    /* a different content is a different form */
    assert_string_not_equal(canon("{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
                                  "\"content\":\"hi!\"}],\"temperature\":0}", NULL), a);
}

static void test_skipped_members(void **state)
{
    struct gw_canon_info info;

    (void)state;
    assert_string_equal(canon("{\"stream\":true,\"model\":\"m\",\"user\":\"u\"}", &info),
                        "{\"model\":\"m\"}");
    assert_int_equal(info.has_stream_options, 0);
    assert_string_equal(canon("{\"user\":\"u\",\"stream\":false}", NULL), "{}");
    /* only at the top level */
    assert_string_equal(canon("{\"x\":{\"user\":1}}", NULL), "{\"x\":{\"user\":1}}");
    assert_string_equal(canon("{\"model\":\"m\",\"stream_options\":{\"include_usage\":"
                              " true}}", &info), "{\"model\":\"m\"}");
    assert_int_equal(info.has_stream_options, 1);
    assert_int_equal(info.include_usage, 1);
    canon("{\"stream_options\":{\"include_usage\":false}}", &info);
    assert_int_equal(info.has_stream_options, 1);
    assert_int_equal(info.include_usage, 0);
}

static void test_strings_with_delimiters(void **state)
{
    (void)state;
    assert_string_equal(canon("{\"b\":\"}{,:[] \\\" \\\\\",\"a\":\"\\u00e9\"}", NULL),
                        "{\"a\":\"\\u00e9\",\"b\":\"}{,:[] \\\" \\\\\"}");
    assert_string_equal(canon("{\"k\\\"ey\":1,\"a\":2}", NULL),
                        "{\"a\":2,\"k\\\"ey\":1}");
}

static int det(const char *s)
{
    struct gw_canon_info info;

    assert_string_not_equal(canon(s, &info), "ERROR");
    return info.deterministic;
}

static void test_deterministic(void **state)
{
    (void)state;
    assert_true(det("{\"model\":\"m\"}"));
    assert_true(det("{\"temperature\":0}"));
    assert_true(det("{\"temperature\":0.0,\"top_p\":0.9}"));
    assert_true(det("{\"temperature\":-0}"));
    assert_false(det("{\"temperature\":0.7}"));
    assert_false(det("{\"top_p\":0.5}"));
    assert_true(det("{\"temperature\":0.7,\"seed\":3}"));
    assert_true(det("{\"temperature\":0.7,\"seed\":3,\"n\":1}"));
    assert_false(det("{\"temperature\":0.7,\"seed\":3,\"n\":2}"));
    assert_false(det("{\"temperature\":0.7,\"seed\":3.5}"));
    assert_true(det("{\"n\":1}"));
    assert_false(det("{\"n\":2}"));
    /* nested fields of the same names do not count */
    assert_true(det("{\"x\":{\"temperature\":1}}"));
    assert_false(det("{\"x\":{\"seed\":1},\"temperature\":1}"));
}

static void test_many_members_and_bad_input(void **state)
{
    char in[8192], want[8192];
    size_t a = 0, b = 0;
    int i;

    (void)state;
    /* 100 members in reverse order: more than the stack array holds */
    a += (size_t)snprintf(in + a, sizeof(in) - a, "{");
    for (i = 99; i >= 0; i--)
        a += (size_t)snprintf(in + a, sizeof(in) - a, "%s\"k%03d\": %d",
                              i == 99 ? "" : ", ", i, i);
    snprintf(in + a, sizeof(in) - a, "}");
    b += (size_t)snprintf(want + b, sizeof(want) - b, "{");
    for (i = 0; i < 100; i++)
        b += (size_t)snprintf(want + b, sizeof(want) - b, "%s\"k%03d\":%d",
                              i ? "," : "", i, i);
    snprintf(want + b, sizeof(want) - b, "}");
    assert_string_equal(canon(in, NULL), want);

    assert_string_equal(canon("[1,2]", NULL), "ERROR");
    assert_string_equal(canon("", NULL), "ERROR");
    assert_string_equal(canon("{\"a\":\"unterminated", NULL), "ERROR");
    /* deeper than 128 */
    a = 0;
    a += (size_t)snprintf(in + a, sizeof(in) - a, "{\"a\":");
    for (i = 0; i < 200; i++)
        in[a++] = '[';
    for (i = 0; i < 200; i++)
        in[a++] = ']';
    snprintf(in + a, sizeof(in) - a, "}");
    assert_string_equal(canon(in, NULL), "ERROR");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sorted_and_compact),
        cmocka_unit_test(test_same_request_same_form),
        cmocka_unit_test(test_skipped_members),
        cmocka_unit_test(test_strings_with_delimiters),
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_many_members_and_bad_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
