/* Unit tests of gateway/error.c: status mapping and JSON escaping. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <event2/buffer.h>
#include <jansson.h>
#include <string.h>

#include "gateway/error.h"

static char *drain(struct evbuffer *b)
{
    size_t n = evbuffer_get_length(b);
    char *s = test_malloc(n + 1);
    evbuffer_remove(b, s, n);
    s[n] = '\0';
    return s;
}

static void test_types(void **state)
{
    (void)state;
    assert_string_equal(gw_error_type(400), "invalid_request_error");
    assert_string_equal(gw_error_type(404), "invalid_request_error");
    assert_string_equal(gw_error_type(413), "invalid_request_error");
    assert_string_equal(gw_error_type(401), "authentication_error");
    assert_string_equal(gw_error_type(403), "permission_error");
    assert_string_equal(gw_error_type(429), "rate_limit_error");
    assert_string_equal(gw_error_type(502), "upstream_error");
    assert_string_equal(gw_error_type(504), "upstream_error");
    assert_string_equal(gw_error_type(500), "server_error");
    assert_string_equal(gw_error_reason(413), "Payload Too Large");
    assert_string_equal(gw_error_reason(431),
                        "Request Header Fields Too Large");
}

static void test_shape(void **state)
{
    struct evbuffer *b = evbuffer_new();
    json_t *j, *e;
    char *s;

    (void)state;
    assert_int_equal(gw_error_json(b, 404, "model_not_found",
                                   "the model 'x\"y' does not exist"), 0);
    s = drain(b);
    j = json_loads(s, 0, NULL);
    assert_non_null(j);
    e = json_object_get(j, "error");
    assert_string_equal(json_string_value(json_object_get(e, "message")),
                        "the model 'x\"y' does not exist");
    assert_string_equal(json_string_value(json_object_get(e, "type")),
                        "invalid_request_error");
    assert_string_equal(json_string_value(json_object_get(e, "code")),
                        "model_not_found");
    json_decref(j);
    test_free(s);

    gw_error_json(b, 500, NULL, "boom");
    s = drain(b);
    assert_string_equal(s, "{\"error\":{\"message\":\"boom\",\"type\":"
                           "\"server_error\",\"code\":null}}");
    test_free(s);
    evbuffer_free(b);
}

static void test_escape(void **state)
{
    struct evbuffer *b = evbuffer_new();
    /* control bytes, invalid UTF-8, a surrogate, valid Chinese text */
    const char in[] = "a\n\t\x01\xff\xed\xa0\x80\xe4\xbd\xa0\"\\";
    char *s;

    (void)state;
    gw_json_escape(b, in, sizeof(in) - 1);
    s = drain(b);
    assert_string_equal(s, "a\\n\\u0009\\u0001\\ufffd\\ufffd\\ufffd\\ufffd"
                           "\xe4\xbd\xa0\\\"\\\\");
    test_free(s);
    evbuffer_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_types),
        cmocka_unit_test(test_shape),
        cmocka_unit_test(test_escape),
    };
    return cmocka_run_group_tests_name("gw_error", tests, NULL, NULL);
}
