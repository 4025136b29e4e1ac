/* Unit tests of gateway/anthropic.c: OpenAI chat completions translated to
 * Anthropic's Messages API and back, streams included. Bodies are compared
 * as parsed JSON (jansson's json_equal), not as text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <event2/buffer.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "gateway/anthropic.h"

static json_t *parse_buf(struct evbuffer *b)
{
    json_error_t e;
    json_t *j = json_loadb((const char *)evbuffer_pullup(b, -1),
                           evbuffer_get_length(b), 0, &e);
    if (j == NULL)
        fail_msg("not JSON: %s: %.*s", e.text,
                 (int)evbuffer_get_length(b), evbuffer_pullup(b, -1));
    return j;
}

static void assert_json(json_t *got, const char *want_text)
{
    json_t *want = json_loads(want_text, 0, NULL);
    assert_non_null(want);
    if (!json_equal(got, want)) {
        char *g = json_dumps(got, JSON_COMPACT | JSON_SORT_KEYS);
        char *w = json_dumps(want, JSON_COMPACT | JSON_SORT_KEYS);
        print_error("got  %s\nwant %s\n", g, w);
        free(g);
        free(w);
        json_decref(want);
        fail();
    }
    json_decref(want);
}

/* Translates req; asserts success and the body. */
static void request_ok(const char *req, const char *want, int want_usage)
{
    struct evbuffer *out = evbuffer_new();
    struct gw_anthropic_err err;
    int iu = -1;
    json_t *got;

    if (gw_anthropic_request(req, strlen(req), "claude-x", 4096, out, &iu,
                             &err) != 0)
        fail_msg("refused: %s: %s", err.code, err.message);
    got = parse_buf(out);
    assert_json(got, want);
    assert_int_equal(iu, want_usage);
    json_decref(got);
    evbuffer_free(out);
}

/* Translates req; asserts a refusal whose message holds needle. */
static void request_refused(const char *req, const char *code,
                            const char *needle)
{
    struct evbuffer *out = evbuffer_new();
    struct gw_anthropic_err err;
    int iu = -1;

    assert_int_equal(gw_anthropic_request(req, strlen(req), "claude-x", 4096,
                                          out, &iu, &err), -1);
    assert_string_equal(err.code, code);
    if (strstr(err.message, needle) == NULL)
        fail_msg("message '%s' lacks '%s'", err.message, needle);
    assert_int_equal(evbuffer_get_length(out), 0); /* left as it was */
    assert_int_equal(iu, 0);
    evbuffer_free(out);
}

static void test_request_basic(void **state)
{
    (void)state;
    request_ok("{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
               "\"content\":\"hi\"}]}",
               "{\"model\":\"claude-x\",\"max_tokens\":4096,\"messages\":"
               "[{\"role\":\"user\",\"content\":\"hi\"}]}", 0);
}

static void test_request_system_and_params(void **state)
{
    (void)state;
    request_ok(
        "{\"model\":\"m\",\"messages\":["
        "{\"role\":\"system\",\"content\":\"be brief\"},"
        "{\"role\":\"developer\",\"content\":[{\"type\":\"text\","
        "\"text\":\"use French\"}]},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},"
        "{\"type\":\"text\",\"text\":\"b\"}]},"
        "{\"role\":\"assistant\",\"content\":\"c\"},"
        "{\"role\":\"user\",\"content\":\"d\"}],"
        "\"max_completion_tokens\":50,\"max_tokens\":7,\"temperature\":0.5,"
        "\"top_p\":0.9,\"stop\":\"END\",\"user\":\"u-1\",\"seed\":3,"
        "\"n\":1,\"stream\":true,\"stream_options\":{\"include_usage\":true},"
        "\"presence_penalty\":0,\"logprobs\":false,"
        "\"response_format\":{\"type\":\"text\"}}",
        "{\"model\":\"claude-x\",\"max_tokens\":50,"
        "\"system\":\"be brief\\n\\nuse French\",\"messages\":["
        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},"
        "{\"type\":\"text\",\"text\":\"b\"}]},"
        "{\"role\":\"assistant\",\"content\":\"c\"},"
        "{\"role\":\"user\",\"content\":\"d\"}],"
        "\"stop_sequences\":[\"END\"],\"temperature\":0.5,\"top_p\":0.9,"
        "\"metadata\":{\"user_id\":\"u-1\"},\"stream\":true}", 1);
}

static void test_request_stop_array_images(void **state)
{
    (void)state;
    request_ok(
        "{\"model\":\"m\",\"stop\":[\"x\",\"y\"],\"stream\":false,"
        "\"max_tokens\":null,\"messages\":[{\"role\":\"user\",\"content\":["
        "{\"type\":\"image_url\",\"image_url\":{\"url\":"
        "\"data:image/png;base64,QUJD\"}},"
        "{\"type\":\"image_url\",\"image_url\":{\"url\":"
        "\"https://example.com/a.png\"}}]},"
        "{\"role\":\"assistant\",\"content\":null}]}",
        "{\"model\":\"claude-x\",\"max_tokens\":4096,\"messages\":[{\"role\":"
        "\"user\",\"content\":[{\"type\":\"image\",\"source\":{\"type\":"
        "\"base64\",\"media_type\":\"image/png\",\"data\":\"QUJD\"}},"
        "{\"type\":\"image\",\"source\":{\"type\":\"url\",\"url\":"
        "\"https://example.com/a.png\"}}]}],\"stop_sequences\":[\"x\",\"y\"]}",
        0);
}

static void test_request_refused(void **state)
{
    static const char msgs[] = "\"messages\":[{\"role\":\"user\","
                               "\"content\":\"hi\"}]";
    char req[512];

    (void)state;
    snprintf(req, sizeof(req), "{\"model\":\"m\",%s,\"tools\":[{\"type\":"
             "\"function\",\"function\":{\"name\":\"f\"}}]}", msgs);
    request_refused(req, "unsupported_parameter",
                    "this backend's provider (anthropic) does not support "
                    "'tools' through promptgate yet");
    snprintf(req, sizeof(req), "{\"model\":\"m\",%s,\"n\":2}", msgs);
    request_refused(req, "unsupported_parameter", "'n' other than 1");
    snprintf(req, sizeof(req), "{\"model\":\"m\",%s,\"logprobs\":true}", msgs);
    request_refused(req, "unsupported_parameter", "'logprobs'");
    snprintf(req, sizeof(req), "{\"model\":\"m\",%s,\"response_format\":"
             "{\"type\":\"json_object\"}}", msgs);
    request_refused(req, "unsupported_parameter", "response_format");
    snprintf(req, sizeof(req), "{\"model\":\"m\",%s,\"frobnicate\":1}", msgs);
    request_refused(req, "unknown_parameter", "unknown field 'frobnicate'");
    snprintf(req, sizeof(req), "{\"model\":\"m\",%s,\"max_tokens\":0}", msgs);
    request_refused(req, "invalid_value", "'max_tokens'");
    snprintf(req, sizeof(req), "{\"model\":\"m\",%s,\"stop\":[1]}", msgs);
    request_refused(req, "invalid_value", "'stop'");
    snprintf(req, sizeof(req), "{\"model\":\"m\",%s,\"temperature\":\"hot\"}",
             msgs);
    request_refused(req, "invalid_value", "'temperature'");
    request_refused("{\"model\":\"m\",\"messages\":[{\"role\":\"tool\","
                    "\"content\":\"x\",\"tool_call_id\":\"1\"}]}",
                    "unsupported_parameter", "role 'tool'");
    request_refused("{\"model\":\"m\",\"messages\":[{\"role\":\"assistant\","
                    "\"content\":null,\"tool_calls\":[{}]}]}",
                    "unsupported_parameter", "'tool_calls'");
    request_refused("{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
                    "\"content\":[{\"type\":\"input_audio\"}]}]}",
                    "unsupported_parameter", "'input_audio'");
    request_refused("{\"model\":\"m\",\"messages\":[{\"role\":\"wizard\","
                    "\"content\":\"x\"}]}", "invalid_value", "'wizard'");
    request_refused("{\"model\":\"m\",\"messages\":[]}", "invalid_value",
                    "non-empty array");
    request_refused("[1]", "invalid_json", "JSON object");
    request_refused("{\"model\":\"m\",\"messages\":[{\"role\":\"system\","
                    "\"content\":[{\"type\":\"image_url\"}]}]}",
                    "invalid_value", "text parts only");
    /* null values of refused fields are no request for them */
    request_ok("{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
               "\"content\":\"hi\"}],\"tools\":null,\"tool_choice\":null}",
               "{\"model\":\"claude-x\",\"max_tokens\":4096,\"messages\":"
               "[{\"role\":\"user\",\"content\":\"hi\"}]}", 0);
}

static void test_response(void **state)
{
    static const char *const cases[][2] = {
        {"end_turn", "stop"}, {"stop_sequence", "stop"},
        {"max_tokens", "length"}, {"tool_use", "tool_calls"},
        {"refusal", "content_filter"}};
    char body[1024], want[1024];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct evbuffer *out = evbuffer_new();
        snprintf(body, sizeof(body),
                 "{\"id\":\"msg_1\",\"type\":\"message\",\"role\":"
                 "\"assistant\",\"model\":\"claude-x\",\"content\":["
                 "{\"type\":\"thinking\",\"thinking\":\"hmm\"},"
                 "{\"type\":\"text\",\"text\":\"Hello \\\"you\\\"\"},"
                 "{\"type\":\"text\",\"text\":\" there\"}],\"stop_reason\":"
                 "\"%s\",\"stop_sequence\":null,\"usage\":{\"input_tokens\":"
                 "10,\"output_tokens\":4}}", cases[i][0]);
        snprintf(want, sizeof(want),
                 "{\"id\":\"msg_1\",\"object\":\"chat.completion\","
                 "\"created\":1700000000,\"model\":\"claude-x\",\"choices\":"
                 "[{\"index\":0,\"message\":{\"role\":\"assistant\","
                 "\"content\":\"Hello \\\"you\\\" there\"},\"logprobs\":null,"
                 "\"finish_reason\":\"%s\"}],\"usage\":{\"prompt_tokens\":10,"
                 "\"completion_tokens\":4,\"total_tokens\":14}}", cases[i][1]);
        assert_int_equal(gw_anthropic_response(200, body, strlen(body),
                                               1700000000, out), 0);
        json_t *got = parse_buf(out);
        assert_json(got, want);
        json_decref(got);
        evbuffer_free(out);
    }
}

static void test_response_cache_tokens(void **state)
{
    static const char body[] =
        "{\"id\":\"m\",\"type\":\"message\",\"model\":\"c\",\"content\":[],"
        "\"stop_reason\":\"end_turn\",\"usage\":{\"input_tokens\":5,"
        "\"cache_read_input_tokens\":100,\"cache_creation_input_tokens\":20,"
        "\"output_tokens\":1}}";
    struct evbuffer *out = evbuffer_new();
    json_t *got;

    (void)state;
    assert_int_equal(gw_anthropic_response(200, body, sizeof(body) - 1, 1,
                                           out), 0);
    got = parse_buf(out);
    assert_json(json_object_get(got, "usage"),
                "{\"prompt_tokens\":125,\"completion_tokens\":1,"
                "\"total_tokens\":126,\"prompt_tokens_details\":"
                "{\"cached_tokens\":100}}");
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(json_array_get(json_object_get(
                                got, "choices"), 0), "message"), "content")),
                        "");
    json_decref(got);
    evbuffer_free(out);
}

static void test_response_errors(void **state)
{
    static const char overloaded[] =
        "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\","
        "\"message\":\"Overloaded\"}}";
    struct evbuffer *out = evbuffer_new();
    json_t *got;

    (void)state;
    assert_int_equal(gw_anthropic_response(529, overloaded,
                                           sizeof(overloaded) - 1, 1, out), 0);
    got = parse_buf(out);
    assert_json(got, "{\"error\":{\"message\":\"Overloaded\",\"type\":"
                     "\"server_error\",\"code\":\"overloaded_error\"}}");
    json_decref(got);
    evbuffer_drain(out, evbuffer_get_length(out));
    /* not an Anthropic error body: the status is still said */
    assert_int_equal(gw_anthropic_response(401, "<html>", 6, 1, out), 0);
    got = parse_buf(out);
    assert_json(got, "{\"error\":{\"message\":\"the anthropic backend "
                     "answered 401 without an error message\",\"type\":"
                     "\"authentication_error\",\"code\":\"backend_error\"}}");
    json_decref(got);
    evbuffer_drain(out, evbuffer_get_length(out));
    /* a 200 that is not a message: refused, out untouched */
    assert_int_equal(gw_anthropic_response(200, "{\"type\":\"x\"}", 12, 1,
                                           out), -1);
    assert_int_equal(gw_anthropic_response(200, "{\"ty", 4, 1, out), -1);
    assert_int_equal(evbuffer_get_length(out), 0);
    evbuffer_free(out);
}

/* ------------------------------------------------------------ streams */

struct chunks {
    int n;
    char data[16][512];
    int fail_at; /* emit returns -1 at this chunk, or -1 */
};

static int collect(void *arg, const char *data, size_t len)
{
    struct chunks *c = arg;
    if (c->n == c->fail_at)
        return -1;
    if (c->n < 16)
        snprintf(c->data[c->n], sizeof(c->data[0]), "%.*s", (int)len, data);
    c->n++;
    return 0;
}

static int feed(struct gw_anthropic_stream *s, struct chunks *c,
                const char *ev, char *why, size_t whylen)
{
    return gw_anthropic_stream_event(s, ev, strlen(ev), collect, c, why,
                                     whylen);
}

static const char *const happy[] = {
    "{\"type\":\"message_start\",\"message\":{\"id\":\"msg_9\",\"type\":"
    "\"message\",\"role\":\"assistant\",\"model\":\"claude-x\",\"content\":"
    "[],\"stop_reason\":null,\"usage\":{\"input_tokens\":12,"
    "\"output_tokens\":1}}}",
    "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":"
    "{\"type\":\"text\",\"text\":\"\"}}",
    "{\"type\":\"ping\"}",
    "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":"
    "\"text_delta\",\"text\":\"Hel\"}}",
    "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":"
    "\"text_delta\",\"text\":\"lo \\\"x\\\"\"}}",
    "{\"type\":\"content_block_stop\",\"index\":0}",
    "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"max_tokens\","
    "\"stop_sequence\":null},\"usage\":{\"output_tokens\":3}}",
    "{\"type\":\"message_stop\"}",
};

static void test_stream(void **state)
{
    struct gw_anthropic_stream s;
    struct chunks c = {.fail_at = -1};
    char why[256];
    json_t *j;

    (void)state;
    for (int usage = 0; usage < 2; usage++) {
        memset(&c, 0, sizeof(c));
        c.fail_at = -1;
        assert_int_equal(gw_anthropic_stream_init(&s, usage, 42), 0);
        for (size_t i = 0; i < sizeof(happy) / sizeof(happy[0]); i++)
            assert_int_equal(feed(&s, &c, happy[i], why, sizeof(why)), 0);
        assert_int_equal(c.n, usage ? 6 : 5);
        j = json_loads(c.data[0], 0, NULL);
        assert_json(j, "{\"id\":\"msg_9\",\"object\":\"chat.completion.chunk\","
                       "\"created\":42,\"model\":\"claude-x\",\"choices\":["
                       "{\"index\":0,\"delta\":{\"role\":\"assistant\","
                       "\"content\":\"\"},\"logprobs\":null,"
                       "\"finish_reason\":null}]}");
        json_decref(j);
        j = json_loads(c.data[2], 0, NULL);
        assert_json(json_object_get(json_array_get(json_object_get(
                        j, "choices"), 0), "delta"),
                    "{\"content\":\"lo \\\"x\\\"\"}");
        json_decref(j);
        j = json_loads(c.data[3], 0, NULL);
        assert_string_equal(json_string_value(json_object_get(json_array_get(
                                json_object_get(j, "choices"), 0),
                                "finish_reason")), "length");
        json_decref(j);
        if (usage) {
            /* the shape upstream.c strips when the gateway asked for it */
            assert_non_null(strstr(c.data[4], "\"choices\":[]"));
            j = json_loads(c.data[4], 0, NULL);
            assert_json(json_object_get(j, "usage"),
                        "{\"prompt_tokens\":12,\"completion_tokens\":3,"
                        "\"total_tokens\":15}");
            json_decref(j);
        }
        assert_string_equal(c.data[c.n - 1], "[DONE]");
        assert_int_equal(s.done, 1);
        /* nothing may follow message_stop but pings */
        assert_int_equal(feed(&s, &c, "{\"type\":\"ping\"}", why,
                              sizeof(why)), 0);
        assert_int_equal(feed(&s, &c, happy[3], why, sizeof(why)), -1);
        gw_anthropic_stream_release(&s);
    }
}

static void test_stream_errors(void **state)
{
    struct gw_anthropic_stream s;
    struct chunks c = {.fail_at = -1};
    char why[256];

    (void)state;
    assert_int_equal(gw_anthropic_stream_init(&s, 0, 1), 0);
    /* content before message_start */
    assert_int_equal(feed(&s, &c, happy[3], why, sizeof(why)), -1);
    assert_non_null(strstr(why, "before message_start"));
    assert_int_equal(feed(&s, &c, happy[0], why, sizeof(why)), 0);
    assert_int_equal(feed(&s, &c, "{\"type\":\"error\",\"error\":{\"type\":"
                                  "\"overloaded_error\",\"message\":"
                                  "\"Overloaded\"}}", why, sizeof(why)), -1);
    assert_string_equal(why, "the anthropic stream sent an error: "
                             "overloaded_error: Overloaded");
    assert_int_equal(feed(&s, &c, "not json", why, sizeof(why)), -1);
    assert_int_equal(feed(&s, &c, happy[0], why, sizeof(why)), -1);
    assert_non_null(strstr(why, "second message_start"));
    /* unknown event types are skipped */
    assert_int_equal(feed(&s, &c, "{\"type\":\"future_event\"}", why,
                          sizeof(why)), 0);
    /* the relay refusing a chunk stops the stream */
    c.fail_at = c.n;
    assert_int_equal(feed(&s, &c, happy[3], why, sizeof(why)), -1);
    assert_int_equal(s.done, 0);
    gw_anthropic_stream_release(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_basic),
        cmocka_unit_test(test_request_system_and_params),
        cmocka_unit_test(test_request_stop_array_images),
        cmocka_unit_test(test_request_refused),
        cmocka_unit_test(test_response),
        cmocka_unit_test(test_response_cache_tokens),
        cmocka_unit_test(test_response_errors),
        cmocka_unit_test(test_stream),
        cmocka_unit_test(test_stream_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
