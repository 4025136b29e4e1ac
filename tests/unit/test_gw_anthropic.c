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

/* gw_anthropic_response's answer to (status, body), which it must give,
 * as JSON */
static json_t *converted(int status, const char *body, size_t len,
                         long created)
{
    struct evbuffer *out = evbuffer_new();
    json_t *got;

    assert_non_null(out);
    assert_int_equal(gw_anthropic_response(status, body, len, created, out),
                     0);
    got = parse_buf(out);
    evbuffer_free(out);
    return got;
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
    snprintf(req, sizeof(req), "{\"model\":\"m\",%s,\"functions\":[{"
             "\"name\":\"f\"}]}", msgs);
    request_refused(req, "unsupported_parameter",
                    "this backend's provider (anthropic) does not support "
                    "'functions' through promptgate yet");
    snprintf(req, sizeof(req), "{\"model\":\"m\",%s,\"tools\":[{\"type\":"
             "\"web_search\"}]}", msgs);
    request_refused(req, "unsupported_parameter", "tools of type 'web_search'");
    snprintf(req, sizeof(req), "{\"model\":\"m\",%s,\"tools\":[{\"type\":"
             "\"function\",\"function\":{}}]}", msgs);
    request_refused(req, "invalid_value", "tools[0].function: needs a");
    snprintf(req, sizeof(req), "{\"model\":\"m\",%s,\"tool_choice\":"
             "\"required\"}", msgs);
    request_refused(req, "invalid_value", "has no 'tools'");
    snprintf(req, sizeof(req), "{\"model\":\"m\",%s,\"tools\":[{\"type\":"
             "\"function\",\"function\":{\"name\":\"f\"}}],\"tool_choice\":"
             "\"sometimes\"}", msgs);
    request_refused(req, "invalid_value", "'tool_choice' must be");
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
    request_refused("{\"model\":\"m\",\"messages\":[{\"role\":"
                    "\"function\",\"content\":\"x\",\"name\":\"f\"}]}",
                    "unsupported_parameter", "role 'function'");
    request_refused("{\"model\":\"m\",\"messages\":[{\"role\":\"tool\","
                    "\"content\":\"x\"}]}", "invalid_value",
                    "messages[0].tool_call_id");
    request_refused("{\"model\":\"m\",\"messages\":[{\"role\":\"assistant\","
                    "\"content\":null,\"tool_calls\":[{}]}]}",
                    "invalid_value", "messages[0].tool_calls[0]: needs");
    request_refused("{\"model\":\"m\",\"messages\":[{\"role\":\"assistant\","
                    "\"tool_calls\":[{\"id\":\"c\",\"type\":\"function\","
                    "\"function\":{\"name\":\"f\",\"arguments\":\"[1]\"}}]}]}",
                    "invalid_value", "arguments: must be a JSON object");
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

static void test_request_tools(void **state)
{
    (void)state;
    request_ok(
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":"
        "\"weather?\"}],\"tools\":[{\"type\":\"function\",\"function\":"
        "{\"name\":\"get_weather\",\"description\":\"by city\","
        "\"parameters\":{\"type\":\"object\",\"properties\":{\"city\":"
        "{\"type\":\"string\"}}},\"strict\":true}},{\"type\":\"function\","
        "\"function\":{\"name\":\"now\"}}],\"tool_choice\":\"required\","
        "\"parallel_tool_calls\":false}",
        "{\"model\":\"claude-x\",\"max_tokens\":4096,\"messages\":[{\"role\":"
        "\"user\",\"content\":\"weather?\"}],\"tools\":[{\"name\":"
        "\"get_weather\",\"description\":\"by city\",\"input_schema\":"
        "{\"type\":\"object\",\"properties\":{\"city\":{\"type\":"
        "\"string\"}}}},{\"name\":\"now\",\"input_schema\":{\"type\":"
        "\"object\"}}],\"tool_choice\":{\"type\":\"any\","
        "\"disable_parallel_tool_use\":true}}", 0);
    /* a named function; auto (the default) says nothing; none */
    request_ok(
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":"
        "\"x\"}],\"tools\":[{\"type\":\"function\",\"function\":{\"name\":"
        "\"f\"}}],\"tool_choice\":{\"type\":\"function\",\"function\":"
        "{\"name\":\"f\"}}}",
        "{\"model\":\"claude-x\",\"max_tokens\":4096,\"messages\":[{\"role\":"
        "\"user\",\"content\":\"x\"}],\"tools\":[{\"name\":\"f\","
        "\"input_schema\":{\"type\":\"object\"}}],\"tool_choice\":"
        "{\"type\":\"tool\",\"name\":\"f\"}}", 0);
    request_ok(
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":"
        "\"x\"}],\"tools\":[{\"type\":\"function\",\"function\":{\"name\":"
        "\"f\"}}],\"tool_choice\":\"auto\"}",
        "{\"model\":\"claude-x\",\"max_tokens\":4096,\"messages\":[{\"role\":"
        "\"user\",\"content\":\"x\"}],\"tools\":[{\"name\":\"f\","
        "\"input_schema\":{\"type\":\"object\"}}]}", 0);
    request_ok(
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":"
        "\"x\"}],\"tools\":[{\"type\":\"function\",\"function\":{\"name\":"
        "\"f\"}}],\"tool_choice\":\"none\",\"parallel_tool_calls\":false}",
        "{\"model\":\"claude-x\",\"max_tokens\":4096,\"messages\":[{\"role\":"
        "\"user\",\"content\":\"x\"}],\"tools\":[{\"name\":\"f\","
        "\"input_schema\":{\"type\":\"object\"}}],\"tool_choice\":"
        "{\"type\":\"none\"}}", 0);
}

/* A conversation with tool calls and their results. */
static void test_request_tool_conversation(void **state)
{
    (void)state;
    request_ok(
        "{\"model\":\"m\",\"messages\":["
        "{\"role\":\"user\",\"content\":\"weather in Paris and Rome?\"},"
        "{\"role\":\"assistant\",\"content\":\"Checking.\",\"tool_calls\":["
        "{\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":"
        "\"w\",\"arguments\":\"{\\\"city\\\":\\\"Paris\\\"}\"}},"
        "{\"id\":\"call_2\",\"type\":\"function\",\"function\":{\"name\":"
        "\"w\",\"arguments\":\"\"}}]},"
        "{\"role\":\"tool\",\"tool_call_id\":\"call_1\",\"content\":\"sun\"},"
        "{\"role\":\"tool\",\"tool_call_id\":\"call_2\",\"content\":[{\"type\":"
        "\"text\",\"text\":\"rain\"}]},"
        "{\"role\":\"user\",\"content\":\"thanks\"},"
        "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":"
        "\"call_3\",\"type\":\"function\",\"function\":{\"name\":\"w\","
        "\"arguments\":\"{}\"}}]},"
        "{\"role\":\"tool\",\"tool_call_id\":\"call_3\",\"content\":\"fog\"}],"
        "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"w\"}}]}",
        "{\"model\":\"claude-x\",\"max_tokens\":4096,\"messages\":["
        "{\"role\":\"user\",\"content\":\"weather in Paris and Rome?\"},"
        "{\"role\":\"assistant\",\"content\":[{\"type\":\"text\",\"text\":"
        "\"Checking.\"},{\"type\":\"tool_use\",\"id\":\"call_1\",\"name\":"
        "\"w\",\"input\":{\"city\":\"Paris\"}},{\"type\":\"tool_use\","
        "\"id\":\"call_2\",\"name\":\"w\",\"input\":{}}]},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"tool_result\","
        "\"tool_use_id\":\"call_1\",\"content\":\"sun\"},{\"type\":"
        "\"tool_result\",\"tool_use_id\":\"call_2\",\"content\":[{\"type\":"
        "\"text\",\"text\":\"rain\"}]}]},"
        "{\"role\":\"user\",\"content\":\"thanks\"},"
        "{\"role\":\"assistant\",\"content\":[{\"type\":\"tool_use\",\"id\":"
        "\"call_3\",\"name\":\"w\",\"input\":{}}]},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"tool_result\","
        "\"tool_use_id\":\"call_3\",\"content\":\"fog\"}]}],"
        "\"tools\":[{\"name\":\"w\",\"input_schema\":{\"type\":"
        "\"object\"}}]}", 0);
}

static void test_response_tool_use(void **state)
{
    static const char body[] =
        "{\"id\":\"msg_t\",\"type\":\"message\",\"model\":\"c\",\"content\":["
        "{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"w\",\"input\":"
        "{\"city\":\"Paris\"}},{\"type\":\"tool_use\",\"id\":\"toolu_2\","
        "\"name\":\"now\",\"input\":{}}],\"stop_reason\":\"tool_use\","
        "\"usage\":{\"input_tokens\":3,\"output_tokens\":9}}";
    json_t *got;

    (void)state;
    got = converted(200, body, sizeof(body) - 1, 5);
    assert_json(json_object_get(got, "choices"),
                "[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":"
                "null,\"tool_calls\":[{\"id\":\"toolu_1\",\"type\":\"function\","
                "\"function\":{\"name\":\"w\",\"arguments\":"
                "\"{\\\"city\\\":\\\"Paris\\\"}\"}},{\"id\":\"toolu_2\",\"type\":"
                "\"function\",\"function\":{\"name\":\"now\",\"arguments\":"
                "\"{}\"}}]},\"logprobs\":null,\"finish_reason\":\"tool_calls\"}]");
    json_decref(got);
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
        json_t *got = converted(200, body, strlen(body), 1700000000);
        assert_json(got, want);
        json_decref(got);
    }
}

static void test_response_cache_tokens(void **state)
{
    static const char body[] =
        "{\"id\":\"m\",\"type\":\"message\",\"model\":\"c\",\"content\":[],"
        "\"stop_reason\":\"end_turn\",\"usage\":{\"input_tokens\":5,"
        "\"cache_read_input_tokens\":100,\"cache_creation_input_tokens\":20,"
        "\"output_tokens\":1}}";
    json_t *got;

    (void)state;
    got = converted(200, body, sizeof(body) - 1, 1);
    assert_json(json_object_get(got, "usage"),
                "{\"prompt_tokens\":125,\"completion_tokens\":1,"
                "\"total_tokens\":126,\"prompt_tokens_details\":"
                "{\"cached_tokens\":100}}");
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(json_array_get(json_object_get(
                                got, "choices"), 0), "message"), "content")),
                        "");
    json_decref(got);
}

static void test_response_errors(void **state)
{
    static const char overloaded[] =
        "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\","
        "\"message\":\"Overloaded\"}}";
    struct evbuffer *out = evbuffer_new();
    json_t *got;

    (void)state;
    got = converted(529, overloaded, sizeof(overloaded) - 1, 1);
    assert_json(got, "{\"error\":{\"message\":\"Overloaded\",\"type\":"
                     "\"server_error\",\"code\":\"overloaded_error\"}}");
    json_decref(got);
    /* not an Anthropic error body: the status is still said */
    got = converted(401, "<html>", 6, 1);
    assert_json(got, "{\"error\":{\"message\":\"the anthropic backend "
                     "answered 401 without an error message\",\"type\":"
                     "\"authentication_error\",\"code\":\"backend_error\"}}");
    json_decref(got);
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

static void test_stream_tool_use(void **state)
{
    static const char *const evs[] = {
        "{\"type\":\"message_start\",\"message\":{\"id\":\"msg_t\",\"model\":"
        "\"c\",\"usage\":{\"input_tokens\":4}}}",
        "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":"
        "{\"type\":\"text\",\"text\":\"\"}}",
        "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":"
        "\"text_delta\",\"text\":\"Sure.\"}}",
        "{\"type\":\"content_block_stop\",\"index\":0}",
        "{\"type\":\"content_block_start\",\"index\":1,\"content_block\":"
        "{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"w\",\"input\":{}}}",
        "{\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":"
        "\"input_json_delta\",\"partial_json\":\"\"}}",
        "{\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":"
        "\"input_json_delta\",\"partial_json\":\"{\\\"city\\\": \"}}",
        "{\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":"
        "\"input_json_delta\",\"partial_json\":\"\\\"Paris\\\"}\"}}",
        "{\"type\":\"content_block_stop\",\"index\":1}",
        "{\"type\":\"content_block_start\",\"index\":2,\"content_block\":"
        "{\"type\":\"tool_use\",\"id\":\"toolu_2\",\"name\":\"now\",\"input\":{}}}",
        "{\"type\":\"content_block_stop\",\"index\":2}",
        "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},"
        "\"usage\":{\"output_tokens\":20}}",
        "{\"type\":\"message_stop\"}",
    };
    struct gw_anthropic_stream s;
    struct chunks c = {.fail_at = -1};
    char why[256];
    json_t *j;

    (void)state;
    assert_int_equal(gw_anthropic_stream_init(&s, 0, 1), 0);
    for (size_t i = 0; i < sizeof(evs) / sizeof(evs[0]); i++)
        assert_int_equal(feed(&s, &c, evs[i], why, sizeof(why)), 0);
    /* role, text, call 0 head, 2 argument pieces, call 1 head, finish, DONE */
    assert_int_equal(c.n, 8);
    j = json_loads(c.data[2], 0, NULL);
    assert_json(json_object_get(json_array_get(json_object_get(j, "choices"),
                                               0), "delta"),
                "{\"tool_calls\":[{\"index\":0,\"id\":\"toolu_1\",\"type\":"
                "\"function\",\"function\":{\"name\":\"w\",\"arguments\":"
                "\"\"}}]}");
    json_decref(j);
    j = json_loads(c.data[4], 0, NULL);
    assert_json(json_object_get(json_array_get(json_object_get(j, "choices"),
                                               0), "delta"),
                "{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":"
                "\"\\\"Paris\\\"}\"}}]}");
    json_decref(j);
    j = json_loads(c.data[5], 0, NULL);
    assert_json(json_object_get(json_array_get(json_object_get(j, "choices"),
                                               0), "delta"),
                "{\"tool_calls\":[{\"index\":1,\"id\":\"toolu_2\",\"type\":"
                "\"function\",\"function\":{\"name\":\"now\",\"arguments\":"
                "\"\"}}]}");
    json_decref(j);
    assert_non_null(strstr(c.data[6], "\"finish_reason\":\"tool_calls\""));
    assert_string_equal(c.data[7], "[DONE]");
    gw_anthropic_stream_release(&s);
}

/* Text deltas take the scanner's path: escapes and UTF-8 pass unchanged,
 * and an invalid event falls to the general path's error. */
static void test_stream_text_escapes(void **state)
{
    struct gw_anthropic_stream s;
    struct chunks c = {.fail_at = -1};
    char why[256];
    json_t *j;

    (void)state;
    assert_int_equal(gw_anthropic_stream_init(&s, 0, 1), 0);
    assert_int_equal(feed(&s, &c, happy[0], why, sizeof(why)), 0);
    assert_int_equal(feed(&s, &c, "{\"type\":\"content_block_delta\",\"index\":0,"
                                  "\"delta\":{\"type\":\"text_delta\",\"text\":"
                                  "\"a\\u00e9\\n\\\"\xc3\xa9\\\\\"}}", why,
                          sizeof(why)), 0);
    assert_int_equal(c.n, 2);
    j = json_loads(c.data[1], 0, NULL);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(json_object_get(
                            json_array_get(json_object_get(j, "choices"), 0),
                            "delta"), "content")),
                        "a\xc3\xa9\n\"\xc3\xa9\\");
    assert_string_equal(json_string_value(json_object_get(j, "id")), "msg_9");
    json_decref(j);
    /* broken JSON is not taken for a delta */
    assert_int_equal(feed(&s, &c, "{\"type\":\"content_block_delta\",\"delta\":"
                                  "{\"type\":\"text_delta\",\"text\":\"x}}", why,
                          sizeof(why)), -1);
    assert_int_equal(c.n, 2);
    gw_anthropic_stream_release(&s);
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
    /* its type, for the status of an answer not started yet (upstream.c) */
    assert_string_equal(s.error_type, "overloaded_error");
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
        cmocka_unit_test(test_request_tools),
        cmocka_unit_test(test_request_tool_conversation),
        cmocka_unit_test(test_response_tool_use),
        cmocka_unit_test(test_response),
        cmocka_unit_test(test_response_cache_tokens),
        cmocka_unit_test(test_response_errors),
        cmocka_unit_test(test_stream),
        cmocka_unit_test(test_stream_tool_use),
        cmocka_unit_test(test_stream_text_escapes),
        cmocka_unit_test(test_stream_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
