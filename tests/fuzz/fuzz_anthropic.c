/*
 * fuzz_anthropic.c - libFuzzer target: the "anthropic" provider adapter
 * (gateway/anthropic.c): OpenAI requests to Messages requests, answers
 * back, and Messages streams to chat.completion.chunk streams.
 *
 * The first input byte picks the function, the second is a parameter;
 * the rest is the body or stream:
 *   byte0 % 3 == 0  gw_anthropic_request (byte1: default max_tokens)
 *   byte0 % 3 == 1  gw_anthropic_response (byte1: status 200, 400, 429,
 *                   500 or 529)
 *   byte0 % 3 == 2  a stream: gw_sse_feed (gateway/sse.c, as upstream.c
 *                   splits it) then gw_anthropic_stream_event per event
 * Checked: what is appended is JSON (a Messages request with the model,
 * max_tokens and messages; a chat.completion or an error body; chunks),
 * nothing is appended on failure, a failure says why, [DONE] comes at
 * most once and last.
 */
#include "gateway/anthropic.h"
#include "gateway/sse.h"

#include <event2/buffer.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz_anthropic: %s: %s\n", what, detail ? detail : "");
    abort();
}

static json_t *parse(struct evbuffer *b, const char *what)
{
    size_t n = evbuffer_get_length(b);
    json_error_t e;
    json_t *j = json_loadb((const char *)evbuffer_pullup(b, -1), n, 0, &e);

    if (j == NULL || !json_is_object(j)) {
        fprintf(stderr, "%.*s\n", (int)(n > 4000 ? 4000 : n),
                (const char *)evbuffer_pullup(b, -1));
        die(what, j ? "not an object" : e.text);
    }
    return j;
}

static void request(const char *body, size_t len, long max_tokens)
{
    struct evbuffer *out = evbuffer_new();
    struct gw_anthropic_err err;
    int include_usage = -1;
    json_t *j;

    memset(&err, 0, sizeof(err));
    if (gw_anthropic_request(body, len, "claude-test", max_tokens, out,
                             &include_usage, &err) < 0) {
        if (err.code[0] == '\0' || err.message[0] == '\0')
            die("request refused without a code and message", NULL);
        if (evbuffer_get_length(out) != 0)
            die("a refused request appended output", NULL);
    } else {
        j = parse(out, "the Messages request is not JSON");
        if (!json_is_string(json_object_get(j, "model")) ||
            strcmp(json_string_value(json_object_get(j, "model")),
                   "claude-test") != 0 ||
            !json_is_integer(json_object_get(j, "max_tokens")) ||
            !json_is_array(json_object_get(j, "messages")))
            die("the Messages request lacks model, max_tokens or messages",
                NULL);
        if (include_usage != 0 && include_usage != 1)
            die("include_usage not set", NULL);
        json_decref(j);
    }
    evbuffer_free(out);
}

static void response(const char *body, size_t len, int status)
{
    struct evbuffer *out = evbuffer_new();
    json_t *j;

    if (gw_anthropic_response(status, body, len, 1700000000L, out) < 0) {
        if (evbuffer_get_length(out) != 0)
            die("a refused answer appended output", NULL);
        if (status < 200 || status > 299)
            die("an error answer was not translated", NULL);
    } else {
        j = parse(out, "the translated answer is not JSON");
        if (json_object_get(j, status / 100 == 2 ? "choices" : "error") ==
            NULL)
            die("the translated answer lacks choices or error", NULL);
        json_decref(j);
    }
    evbuffer_free(out);
}

struct relay {
    struct gw_anthropic_stream st;
    int done, failed;
};

static int on_chunk(void *arg, const char *data, size_t len)
{
    struct relay *r = arg;
    json_error_t e;
    json_t *j;

    if (r->done)
        die("a chunk after [DONE]", NULL);
    if (len == 6 && memcmp(data, "[DONE]", 6) == 0) {
        r->done = 1;
        return 0;
    }
    j = json_loadb(data, len, 0, &e);
    if (j == NULL || !json_is_object(j) ||
        !json_is_array(json_object_get(j, "choices"))) {
        fprintf(stderr, "%.*s\n", (int)len, data);
        die("a chunk is not a chat.completion.chunk", e.text);
    }
    json_decref(j);
    return 0;
}

static int on_event(void *arg, const struct gw_sse_event *ev)
{
    struct relay *r = arg;
    char why[256];

    if (r->failed || ev->data == NULL)
        return 0;
    why[0] = '\0';
    if (gw_anthropic_stream_event(&r->st, ev->data, ev->data_len, on_chunk,
                                  r, why, sizeof(why)) < 0) {
        if (why[0] == '\0')
            die("a stream event refused without a reason", NULL);
        r->failed = 1; /* upstream.c ends the client's stream here */
    }
    return 0;
}

static void stream(const char *body, size_t len, int include_usage)
{
    struct relay r;
    struct gw_sse p;

    memset(&r, 0, sizeof(r));
    if (gw_anthropic_stream_init(&r.st, include_usage, 1700000000L) < 0)
        die("stream init", NULL);
    gw_sse_init(&p, 1 << 20);
    gw_sse_feed(&p, body, len, on_event, &r);
    gw_sse_release(&p);
    if (r.done && !r.st.done)
        die("[DONE] went out but the stream is not done", NULL);
    gw_anthropic_stream_release(&r.st);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const int statuses[] = {200, 400, 429, 500, 529};
    const char *body = (const char *)data + 2;

    if (size < 2)
        return 0;
    switch (data[0] % 3) {
    case 0:
        request(body, size - 2, data[1] ? data[1] * 16L : 4096);
        break;
    case 1:
        response(body, size - 2, statuses[data[1] % 5]);
        break;
    default:
        stream(body, size - 2, data[1] & 1);
        break;
    }
    return 0;
}
