/*
 * test_reg_message.c - the fast decoder of stored messages agrees with
 * jansson on every string escape, and refuses anything off its shape.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>
#include "registry/internal.h"

/* decode `json` with reg_message_decode and compare with jansson's view */
static void agree(const char *json)
{
    json_t *ref = json_loads(json, JSON_ALLOW_NUL, NULL), *back;
    struct reg_message *m;
    size_t n = 0;
    char *err = NULL;

    assert_non_null(ref);
    m = reg_message_decode(json, strlen(json), &n, &err);
    if (m == NULL)
        fail_msg("decode '%s': %s", json, err);
    assert_int_equal(n, json_array_size(ref));
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_array_get(ref, i), *c = json_object_get(o, "content");
        assert_string_equal(m[i].role, json_string_value(json_object_get(o, "role")));
        assert_int_equal(m[i].content_len, json_string_length(c));
        assert_memory_equal(m[i].content, json_string_value(c), m[i].content_len);
        if (json_object_get(o, "name"))
            assert_string_equal(m[i].name, json_string_value(json_object_get(o, "name")));
        else
            assert_null(m[i].name);
    }
    back = reg_message_json(m, n);
    assert_true(json_equal(back, ref));
    json_decref(back);
    json_decref(ref);
    free(m);
}

static void test_agrees_with_jansson(void **state)
{
    (void)state;
    agree("[]");
    agree(" [ ] ");
    agree("[{\"role\":\"user\",\"content\":\"hi {{x}}\"}]");
    agree("[{\"content\":\"c\",\"role\":\"system\"},{\"role\":\"user\",\"name\":\"bob\",\"content\":\"\"}]");
    agree("[\n {\n  \"role\" : \"user\" ,\n  \"content\" : \"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\"\n }\n]");
    agree("[{\"role\":\"user\",\"content\":\"\\u00e9\\u4e2d\\ud83e\\uddc0 caf\xc3\xa9 \xf0\x9f\xa7\x80\"}]");
    agree("[{\"role\":\"user\",\"content\":\"nul \\u0000 inside\"}]");
    agree("[{\"role\":\"user\",\"content\":\"{ \\\"json\\\": [1, 2] } }} {{\"}]");
}

static void test_round_trip_of_dumps(void **state)
{
    /* what publish stores is json_dumps(messages, JSON_COMPACT) */
    json_t *m = json_pack("[{ssss}{ssssss}]", "role", "system", "content",
                          "line1\nline2\t\"quoted\" \\ back \x01 ctl \xe2\x80\xa8",
                          "role", "user", "name", "n", "content", "K\xc3\xa4se");
    char *s = json_dumps(m, JSON_COMPACT);

    (void)state;
    agree(s);
    free(s);
    s = json_dumps(m, JSON_COMPACT | JSON_ENSURE_ASCII);
    agree(s);
    free(s);
    json_decref(m);
}

static void refuse(const char *json)
{
    size_t n = 7;
    char *err = NULL;
    struct reg_message *m = reg_message_decode(json, strlen(json), &n, &err);

    if (m != NULL)
        fail_msg("decoded '%s'", json);
    assert_non_null(strstr(err, "invalid stored messages"));
    assert_int_equal(n, 0);
    free(err);
}

static void test_refuses_off_shape(void **state)
{
    (void)state;
    refuse("");
    refuse("{}");
    refuse("[{}]");
    refuse("[{\"role\":\"user\"}]");
    refuse("[{\"role\":\"user\",\"content\":3}]");
    refuse("[{\"role\":\"user\",\"content\":\"x\",\"extra\":\"y\"}]");
    refuse("[{\"role\":\"user\",\"content\":\"x\"},]");
    refuse("[{\"role\":\"user\",\"content\":\"x\"}] trailing");
    refuse("[{\"role\":\"user\",\"content\":\"unterminated}]");
    refuse("[{\"role\":\"user\",\"content\":\"bad \\x escape\"}]");
    refuse("[{\"role\":\"user\",\"content\":\"lone \\udc00 surrogate\"}]");
    refuse("[{\"role\":\"user\",\"content\":\"half \\ud83e pair\"}]");
    refuse("[{\"role\":\"user\",\"content\":\"raw\ncontrol\"}]");
    refuse("[{\"role\":\"user\",\"content\":\"\\u12\"}]");
    refuse("[{\"role\":\"user\" \"content\":\"x\"}]");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_agrees_with_jansson),
        cmocka_unit_test(test_round_trip_of_dumps),
        cmocka_unit_test(test_refuses_off_shape),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
