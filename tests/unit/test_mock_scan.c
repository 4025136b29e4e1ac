/*
 * test_mock_scan.c: the fast request scanner of mockllm
 * (contrib/mockllm/scan.c) against jansson, the reference: fields equal on
 * accepted bodies, and every body the scanner accepts jansson accepts too,
 * also for thousands of truncated and corrupted variants.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "contrib/mockllm/scan.h"

static const char *corpus[] = {
    "{\"model\":\"qwen2.5-7b\",\"messages\":[{\"role\":\"user\",\"content\":\"hello\"}]}",
    " {\"model\" : \"m\", \"messages\" : [ {\"content\": \"a\\nb\\u00e9\\ud83d\\ude00\"} ],"
    " \"max_tokens\": 7, \"stream\": true, \"stream_options\": {\"include_usage\": true} } ",
    "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\","
    "\"text\":\"\xe4\xbd\xa0\xe5\xa5\xbd\"},{\"type\":\"image_url\",\"image_url\":{\"url\":\"x\"}},"
    "{\"text\":5}]}],\"max_completion_tokens\":3,\"max_tokens\":9,\"temperature\":0.7,"
    "\"n\":1,\"stop\":null,\"user\":\"u\",\"tools\":[{\"a\":[1,2,{\"b\":-1.5e3}]}]}",
    "{\"model\":\"m\",\"prompt\":\"abcdefgh\",\"stream\":false}",
    "{\"model\":\"m\",\"prompt\":[\"abcd\",[1,2],\"efgh\"],\"max_tokens\":null}",
    "{\"model\":\"a\",\"model\":\"b\",\"messages\":[1,{\"content\":\"xx\",\"content\":\"yyyy\"}]}",
    "{\"model\":\"m\",\"messages\":[{\"content\":null}],\"stream_options\":{\"include_usage\":1}}",
    "{\"model\":\"m\",\"messages\":[{}],\"stream\":null,\"stream_options\":[]}",
    "{\"model\":\"m\",\"messages\":[]}",
    "{\"model\":\"m\"}",
    /* rejected by the scanner (jansson decides) */
    "{\"mod\\u0065l\":\"m\",\"messages\":[{}]}",
    "{\"model\":\"m\",\"messages\":[{}],\"max_tokens\":0}",
    "{\"model\":\"m\",\"messages\":[{}],\"max_tokens\":1.5}",
    "{\"model\":\"m\",\"messages\":[{}],\"stream\":\"yes\"}",
    "{\"model\":\"m\",\"messages\":[{}],\"x\":12345678901234567890}",
    "{\"model\":\"m\",\"messages\":[{\"content\":\"\\u0000\"}]}",
    "{\"model\":\"m\",\"messages\":[{\"content\":\"\\ud800\"}]}",
    "{\"model\":\"m\",\"messages\":[{\"content\":\"\xc0\xaf\"}]}",
    "{\"model\":\"m\",\"messages\":[{\"content\":\"\xed\xa0\x80\"}]}",
    "{\"model\":\"m\",\"messages\":[{}]} x",
    "{\"model\":\"m\",\"messages\":[{}],}",
    "[1,2]",
    "",
};

/* The fields as the jansson path of api.c computes them. */
static int
reference(const char *body, size_t len, struct mock_scan *r, int *ok_json)
{
    json_t *root = json_loadb(body, len, 0, NULL), *v, *m, *p;
    size_t i, bytes = 0;

    *ok_json = root != NULL;
    memset(r, 0, sizeof(*r));
    if (!json_is_object(root)) {
        json_decref(root);
        return -1;
    }
    v = json_object_get(root, "model");
    r->model = json_string_value(v);
    r->model_len = r->model ? json_string_length(v) : 0;
    v = json_object_get(root, "messages");
    r->has_messages = json_is_array(v) && json_array_size(v) > 0;
    json_array_foreach(v, i, m) {
        json_t *c = json_object_get(m, "content"), *part;
        size_t k;

        if (json_is_string(c))
            bytes += json_string_length(c);
        else
            json_array_foreach(c, k, part) {
                json_t *t = json_object_get(part, "text");
                if (json_is_string(t))
                    bytes += json_string_length(t);
            }
    }
    r->content_bytes = bytes;
    v = json_object_get(root, "prompt");
    r->has_prompt = json_is_string(v) || json_is_array(v);
    bytes = json_is_string(v) ? json_string_length(v) : 0;
    json_array_foreach(v, i, p)
        bytes += json_is_string(p) ? json_string_length(p) : 4;
    r->prompt_bytes = bytes;
    r->max_tokens = -1;
    v = json_object_get(root, "max_tokens");
    if (json_is_integer(v))
        r->max_tokens = json_integer_value(v);
    v = json_object_get(root, "max_completion_tokens");
    if (json_is_integer(v) && (r->max_tokens < 0 || json_integer_value(v) < r->max_tokens))
        r->max_tokens = json_integer_value(v);
    r->stream = json_is_true(json_object_get(root, "stream"));
    v = json_object_get(root, "stream_options");
    r->include_usage = json_is_object(v) && json_is_true(json_object_get(v, "include_usage"));
    /* keep root alive for r->model: leaked into a static slot */
    {
        static json_t *keep;
        json_decref(keep);
        keep = root;
    }
    return 0;
}

static void
check(const char *body, size_t len)
{
    struct mock_scan s, r;
    int ok_json;

    if (mock_scan_request(body, len, &s) < 0)
        return;
    assert_int_equal(reference(body, len, &r, &ok_json), 0);
    assert_true(ok_json);
    assert_int_equal(s.model_len, r.model_len);
    assert_memory_equal(s.model, r.model, s.model_len);
    assert_int_equal(s.has_messages, r.has_messages);
    if (s.has_messages)
        assert_int_equal(s.content_bytes, r.content_bytes);
    assert_int_equal(s.has_prompt, r.has_prompt);
    if (s.has_prompt)
        assert_int_equal(s.prompt_bytes, r.prompt_bytes);
    assert_int_equal(s.max_tokens, r.max_tokens);
    assert_int_equal(s.stream, r.stream);
    assert_int_equal(s.include_usage, r.include_usage);
}

static void
test_corpus_matches_jansson(void **state)
{
    size_t i;
    int accepted = 0;
    struct mock_scan s;

    (void)state;
    for (i = 0; i < sizeof(corpus) / sizeof(corpus[0]); i++) {
        check(corpus[i], strlen(corpus[i]));
        accepted += mock_scan_request(corpus[i], strlen(corpus[i]), &s) == 0;
    }
    /* the first 10 are read (the API needs has_messages or has_prompt on
     * top), the rest are left to jansson */
    assert_int_equal(accepted, 10);
    assert_int_equal(mock_scan_request(corpus[8], strlen(corpus[8]), &s), 0);
    assert_false(s.has_messages);
    assert_int_equal(mock_scan_request(corpus[1], strlen(corpus[1]), &s), 0);
    assert_int_equal(s.max_tokens, 7);
    assert_true(s.stream && s.include_usage);
    assert_int_equal(s.content_bytes, 1 + 1 + 1 + 2 + 4);
}

static void
test_mutations_never_accept_bad_json(void **state)
{
    char buf[1024];
    size_t i, len, pos;
    unsigned seed = 12345;
    static const char bytes[] = "{}[]\",:\\u0 \x80\xff\xc3\x00e-.1tfn";

    (void)state;
    for (i = 0; i < sizeof(corpus) / sizeof(corpus[0]); i++) {
        len = strlen(corpus[i]);
        /* every truncation */
        for (pos = 0; pos < len; pos++)
            check(corpus[i], pos);
        /* random single-byte corruptions */
        for (pos = 0; pos < 3000 && len > 0; pos++) {
            size_t at;

            memcpy(buf, corpus[i], len);
            seed = seed * 1103515245 + 12345;
            at = (seed >> 8) % len;
            seed = seed * 1103515245 + 12345;
            buf[at] = bytes[(seed >> 8) % (sizeof(bytes) - 1)];
            check(buf, len);
        }
    }
}

static void
test_deep_nesting_left_to_jansson(void **state)
{
    char buf[4096];
    struct mock_scan s;
    size_t n = 0;
    int i;

    (void)state;
    n += (size_t)snprintf(buf, sizeof(buf), "{\"model\":\"m\",\"messages\":[{}],\"x\":");
    for (i = 0; i < 100; i++)
        buf[n++] = '[';
    for (i = 0; i < 100; i++)
        buf[n++] = ']';
    buf[n++] = '}';
    assert_int_equal(mock_scan_request(buf, n, &s), -1);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_corpus_matches_jansson),
        cmocka_unit_test(test_mutations_never_accept_bad_json),
        cmocka_unit_test(test_deep_nesting_left_to_jansson),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
