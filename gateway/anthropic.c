/*
 * anthropic.c - OpenAI chat completions <-> Anthropic Messages API.
 *
 * Clients speak OpenAI's format only; a backend with "provider":
 * "anthropic" is spoken to in Messages (POST {url}/messages). This file is
 * the translation, both ways, and nothing else: upstream.c decides when
 * (only for anthropic backends) and carries the bytes.
 *
 * Request: the body is parsed with jansson (the OpenAI path never gets
 * here, so its zero-copy scan keeps its cost) and a new body is written.
 * Every top-level field is either translated, dropped because it only
 * tunes OpenAI's own service (seed, penalties, store, service_tier, ...),
 * or refused with a 400 that names it: a silently dropped "logprobs" would
 * answer a different question than the one asked.
 *
 * Tools: "tools" (functions) become Messages tools with the parameters as
 * input_schema; tool_choice auto/none/required/{function} becomes
 * auto/none/any/{tool}; parallel_tool_calls false becomes
 * disable_parallel_tool_use. An assistant's tool_calls become tool_use
 * blocks (arguments parsed: they must be a JSON object), "tool" messages
 * tool_result blocks of a user turn (consecutive ones share it, as
 * Messages wants all results of a turn together). Back, tool_use blocks
 * become tool_calls (input serialized as arguments), streamed as
 * tool_calls deltas: the call's id and name first, then its arguments in
 * the pieces Anthropic sends (input_json_delta).
 *
 * Response: a whole answer is rebuilt as a chat.completion; an error keeps
 * its HTTP status and becomes OpenAI's error shape. A stream is translated
 * event by event (struct gw_anthropic_stream): message_start -> the role
 * chunk, text deltas -> content chunks, message_delta -> the finish chunk,
 * message_stop -> the usage chunk (when asked for) and [DONE].
 *
 * Invariants:
 *  1. Output is valid JSON whatever the input held: every string from
 *     either side is written through gw_json_escape or jansson.
 *  2. A failed translation leaves the output buffer as it was.
 *  3. A stream emits [DONE] only after message_stop, so a stream that
 *     breaks earlier still ends in the gateway's stream error (upstream.c).
 *
 * Cost: the bulk of a stream is text deltas; they are read with the
 * allocation-free scanner (jscan.c), their text copied as it came (a
 * validated JSON string needs no re-escaping) after a chunk opening built
 * once. Other events, rare, are parsed with jansson.
 */
#include "gateway/anthropic.h"
#include "gateway/error.h"
#include "gateway/jscan.h"

#include <event2/buffer.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SYSTEM_PARTS 1024
/* s must be a string literal ("" s does not compile otherwise) */
#define ADD_LIT(b, s) evbuffer_add((b), "" s, sizeof(s) - 1)

static int fail(struct gw_anthropic_err *err, const char *code,
                const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(struct gw_anthropic_err *err, const char *code,
                const char *fmt, ...)
{
    va_list ap;

    snprintf(err->code, sizeof(err->code), "%s", code);
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
    return -1;
}

static int unsupported(struct gw_anthropic_err *err, const char *what)
{
    return fail(err, "unsupported_parameter",
                "this backend's provider (anthropic) does not support %s "
                "through promptgate yet", what);
}

/* ------------------------------------------------------------ request */

/* Top-level request fields that tune OpenAI's service and have no meaning
 * for Messages: dropped. */
static const char *const ignored_fields[] = {
    "seed", "frequency_penalty", "presence_penalty", "logit_bias", "store",
    "metadata", "service_tier", "prompt_cache_key",
    "safety_identifier", NULL};

/* Fields that change what is asked and are not translated: 400 when set. */
static const char *const refused_fields[] = {
    "functions", "function_call", "top_logprobs",
    "audio", "modalities", "prediction", "web_search_options",
    "reasoning_effort", NULL};

static int in_list(const char *const *list, const char *s)
{
    for (; *list; list++)
        if (strcmp(*list, s) == 0)
            return 1;
    return 0;
}

/* Appends the text of a system/developer content (a string or an array of
 * text parts) to sys, paragraphs apart. */
static int system_text(json_t *content, struct evbuffer *sys,
                       struct gw_anthropic_err *err, size_t idx)
{
    size_t i;
    json_t *part;

    if (json_is_string(content)) {
        if (evbuffer_get_length(sys))
            ADD_LIT(sys, "\n\n");
        evbuffer_add(sys, json_string_value(content),
                     json_string_length(content));
        return 0;
    }
    if (!json_is_array(content) || json_array_size(content) > MAX_SYSTEM_PARTS)
        return fail(err, "invalid_value", "messages[%zu].content: must be a "
                    "string or an array of text parts", idx);
    json_array_foreach(content, i, part) {
        json_t *t = json_object_get(part, "text");
        const char *type = json_string_value(json_object_get(part, "type"));
        if (type == NULL || strcmp(type, "text") != 0 || !json_is_string(t))
            return fail(err, "invalid_value", "messages[%zu].content[%zu]: "
                        "a system message holds text parts only", idx, i);
        if (evbuffer_get_length(sys))
            ADD_LIT(sys, "\n\n");
        evbuffer_add(sys, json_string_value(t), json_string_length(t));
    }
    return 0;
}

/* An image_url part as an Anthropic image block: a data: URL becomes a
 * base64 source, an http(s) URL a url source. */
static json_t *image_block(json_t *part, struct gw_anthropic_err *err,
                           size_t idx, size_t i)
{
    json_t *iu = json_object_get(part, "image_url");
    const char *url = json_string_value(json_is_object(iu)
                                            ? json_object_get(iu, "url") : iu);
    const char *semi, *comma;

    if (url == NULL) {
        fail(err, "invalid_value", "messages[%zu].content[%zu].image_url: "
             "must hold a \"url\"", idx, i);
        return NULL;
    }
    if (strncmp(url, "https://", 8) == 0 || strncmp(url, "http://", 7) == 0)
        return json_pack("{s:s,s:{s:s,s:s}}", "type", "image", "source",
                         "type", "url", "url", url);
    if (strncmp(url, "data:", 5) == 0 &&
        (semi = strchr(url + 5, ';')) != NULL &&
        strncmp(semi, ";base64,", 8) == 0 && semi - (url + 5) < 64) {
        char media[64];
        comma = semi + 7;
        snprintf(media, sizeof(media), "%.*s", (int)(semi - (url + 5)),
                 url + 5);
        return json_pack("{s:s,s:{s:s,s:s,s:s}}", "type", "image", "source",
                         "type", "base64", "media_type", media, "data",
                         comma + 1);
    }
    fail(err, "invalid_value", "messages[%zu].content[%zu].image_url.url: "
         "must be an http(s) URL or a data:MEDIA;base64, URL", idx, i);
    return NULL;
}

/* The Messages content of a user or assistant message. */
static json_t *message_content(json_t *content, int user,
                               struct gw_anthropic_err *err, size_t idx)
{
    json_t *blocks, *part, *b;
    size_t i;

    if (json_is_string(content))
        return json_incref(content);
    if (!json_is_array(content)) {
        fail(err, "invalid_value", "messages[%zu].content: must be a string "
             "or an array of content parts", idx);
        return NULL;
    }
    if ((blocks = json_array()) == NULL) {
        fail(err, "out_of_memory", "out of memory");
        return NULL;
    }
    json_array_foreach(content, i, part) {
        const char *type = json_string_value(json_object_get(part, "type"));
        json_t *t = json_object_get(part, "text");
        if (type && strcmp(type, "text") == 0 && json_is_string(t)) {
            b = json_pack("{s:s,s:O}", "type", "text", "text", t);
        } else if (type && strcmp(type, "refusal") == 0 && !user) {
            t = json_object_get(part, "refusal");
            b = json_is_string(t) ? json_pack("{s:s,s:O}", "type", "text",
                                              "text", t) : NULL;
        } else if (type && strcmp(type, "image_url") == 0 && user) {
            if ((b = image_block(part, err, idx, i)) == NULL) {
                json_decref(blocks);
                return NULL;
            }
        } else {
            char what[96];
            snprintf(what, sizeof(what), "content parts of type '%.32s'",
                     type ? type : "(none)");
            unsupported(err, what);
            json_decref(blocks);
            return NULL;
        }
        if (b == NULL || json_array_append_new(blocks, b) < 0) {
            fail(err, "invalid_value", "messages[%zu].content[%zu]: cannot "
                 "be translated", idx, i);
            json_decref(blocks);
            return NULL;
        }
    }
    return blocks;
}

/* The tool_use blocks of an assistant's tool_calls, appended to blocks. */
static int tool_use_blocks(json_t *calls, json_t *blocks,
                           struct gw_anthropic_err *err, size_t idx)
{
    json_t *call;
    size_t j;

    if (!json_is_array(calls))
        return fail(err, "invalid_value", "messages[%zu].tool_calls: must be "
                    "an array", idx);
    json_array_foreach(calls, j, call) {
        json_t *fn = json_object_get(call, "function"), *input;
        const char *id = json_string_value(json_object_get(call, "id"));
        const char *name = json_string_value(json_object_get(fn, "name"));
        const char *args = json_string_value(json_object_get(fn, "arguments"));
        const char *type = json_string_value(json_object_get(call, "type"));
        if (type && strcmp(type, "function") != 0) {
            char what[96];
            snprintf(what, sizeof(what), "tool calls of type '%.32s'", type);
            return unsupported(err, what);
        }
        if (id == NULL || name == NULL)
            return fail(err, "invalid_value", "messages[%zu].tool_calls[%zu]: "
                        "needs \"id\" and \"function\": {\"name\", "
                        "\"arguments\"}", idx, j);
        input = args && *args ? json_loads(args, 0, NULL) : json_object();
        if (!json_is_object(input)) {
            json_decref(input);
            return fail(err, "invalid_value", "messages[%zu].tool_calls[%zu]."
                        "function.arguments: must be a JSON object in a "
                        "string", idx, j);
        }
        if (json_array_append_new(blocks, json_pack(
                "{s:s,s:s,s:s,s:o}", "type", "tool_use", "id", id, "name",
                name, "input", input)) < 0)
            return fail(err, "out_of_memory", "out of memory");
    }
    return 0;
}

/* A "tool" message as a tool_result block of a user turn: the previous
 * one when it holds tool results already. */
static int tool_result(json_t *m, json_t *out, struct gw_anthropic_err *err,
                       size_t idx)
{
    const char *id = json_string_value(json_object_get(m, "tool_call_id"));
    json_t *content = json_object_get(m, "content"), *c, *b, *last, *lc;

    if (id == NULL)
        return fail(err, "invalid_value", "messages[%zu].tool_call_id: must "
                    "be a string", idx);
    if (json_is_null(content) || content == NULL)
        c = json_string("");
    else if ((c = message_content(content, 0, err, idx)) == NULL)
        return -1;
    b = json_pack("{s:s,s:s,s:o}", "type", "tool_result", "tool_use_id", id,
                  "content", c);
    last = json_array_get(out, json_array_size(out) - 1);
    lc = json_object_get(last, "content");
    if (json_array_size(out) > 0 &&
        strcmp(json_string_value(json_object_get(last, "role")), "user") ==
            0 &&
        json_is_array(lc) && json_array_size(lc) > 0 &&
        strcmp(json_string_value(json_object_get(
                   json_array_get(lc, json_array_size(lc) - 1), "type")),
               "tool_result") == 0)
        return json_array_append_new(lc, b) < 0
                   ? fail(err, "out_of_memory", "out of memory") : 0;
    if (json_array_append_new(out, json_pack("{s:s,s:[o]}", "role", "user",
                                             "content", b)) < 0)
        return fail(err, "out_of_memory", "out of memory");
    return 0;
}

/* messages -> system text and the Messages "messages" array. */
static json_t *messages(json_t *in, struct evbuffer *sys,
                        struct gw_anthropic_err *err)
{
    json_t *out, *m;
    size_t i;

    if (!json_is_array(in) || json_array_size(in) == 0) {
        fail(err, "invalid_value", "'messages' must be a non-empty array of "
             "{\"role\", \"content\"} objects");
        return NULL;
    }
    if ((out = json_array()) == NULL) {
        fail(err, "out_of_memory", "out of memory");
        return NULL;
    }
    json_array_foreach(in, i, m) {
        const char *role = json_string_value(json_object_get(m, "role"));
        json_t *content = json_object_get(m, "content"), *c, *calls;
        if (role == NULL) {
            fail(err, "invalid_value", "messages[%zu].role: must be a string",
                 i);
            goto fail;
        }
        if (strcmp(role, "system") == 0 || strcmp(role, "developer") == 0) {
            if (system_text(content, sys, err, i) < 0)
                goto fail;
            continue;
        }
        if (strcmp(role, "tool") == 0) {
            if (tool_result(m, out, err, i) < 0)
                goto fail;
            continue;
        }
        if (strcmp(role, "function") == 0) {
            unsupported(err, "messages with role 'function' (use tools)");
            goto fail;
        }
        if (strcmp(role, "user") != 0 && strcmp(role, "assistant") != 0) {
            fail(err, "invalid_value", "messages[%zu].role: '%.32s' is not "
                 "one of system, developer, user, assistant", i, role);
            goto fail;
        }
        if (json_object_get(m, "function_call") &&
            !json_is_null(json_object_get(m, "function_call"))) {
            unsupported(err, "'function_call' in messages (use tool_calls)");
            goto fail;
        }
        calls = json_object_get(m, "tool_calls");
        if (role[0] == 'a' && calls && !json_is_null(calls)) {
            json_t *blocks = json_array();
            if (blocks == NULL) {
                fail(err, "out_of_memory", "out of memory");
                goto fail;
            }
            if (content && !json_is_null(content) &&
                !(json_is_string(content) && json_string_length(content) == 0)) {
                json_t *t = message_content(content, 0, err, i);
                if (t == NULL) {
                    json_decref(blocks);
                    goto fail;
                }
                if (json_is_string(t))
                    json_array_append_new(blocks, json_pack(
                        "{s:s,s:o}", "type", "text", "text", t));
                else
                    json_array_extend(blocks, t), json_decref(t);
            }
            if (tool_use_blocks(calls, blocks, err, i) < 0) {
                json_decref(blocks);
                goto fail;
            }
            json_array_append_new(out, json_pack("{s:s,s:o}", "role", role,
                                                 "content", blocks));
            continue;
        }
        if (role[0] == 'u' && calls && !json_is_null(calls)) {
            fail(err, "invalid_value", "messages[%zu].tool_calls: only an "
                 "assistant message makes tool calls", i);
            goto fail;
        }
        if (content == NULL || json_is_null(content)) {
            if (role[0] == 'a')
                continue; /* an empty assistant turn says nothing */
            fail(err, "invalid_value", "messages[%zu].content: a user "
                 "message needs content", i);
            goto fail;
        }
        if ((c = message_content(content, role[0] == 'u', err, i)) == NULL)
            goto fail;
        if (json_array_append_new(out, json_pack("{s:s,s:o}", "role", role,
                                                 "content", c)) < 0) {
            fail(err, "out_of_memory", "out of memory");
            goto fail;
        }
    }
    return out;
fail:
    json_decref(out);
    return NULL;
}

/* "tools": OpenAI function tools as Messages tools. */
static json_t *tools_of(json_t *in, struct gw_anthropic_err *err)
{
    json_t *out, *t;
    size_t i;

    if (!json_is_array(in) || json_array_size(in) == 0 ||
        (out = json_array()) == NULL) {
        fail(err, "invalid_value", "'tools' must be a non-empty array of "
             "{\"type\": \"function\", \"function\": {\"name\", ...}}");
        return NULL;
    }
    json_array_foreach(in, i, t) {
        const char *type = json_string_value(json_object_get(t, "type"));
        json_t *fn = json_object_get(t, "function"), *o;
        json_t *desc = json_object_get(fn, "description");
        json_t *params = json_object_get(fn, "parameters");
        const char *name = json_string_value(json_object_get(fn, "name"));
        if (type == NULL || strcmp(type, "function") != 0) {
            char what[96];
            snprintf(what, sizeof(what), "tools of type '%.32s'",
                     type ? type : "(none)");
            unsupported(err, what);
            json_decref(out);
            return NULL;
        }
        if (name == NULL || (desc && !json_is_string(desc) &&
                             !json_is_null(desc)) ||
            (params && !json_is_object(params) && !json_is_null(params))) {
            fail(err, "invalid_value", "tools[%zu].function: needs a "
                 "\"name\"; \"description\" is a string, \"parameters\" a "
                 "JSON schema object", i);
            json_decref(out);
            return NULL;
        }
        o = json_pack("{s:s}", "name", name);
        if (json_is_string(desc))
            json_object_set(o, "description", desc);
        json_object_set_new(o, "input_schema", json_is_object(params)
                            ? json_incref(params)
                            : json_pack("{s:s}", "type", "object"));
        json_array_append_new(out, o);
    }
    return out;
}

/* tool_choice (and parallel_tool_calls false) as Messages' tool_choice;
 * *choice NULL when there is nothing to say. */
static int tool_choice_of(json_t *v, json_t *parallel, json_t **choice,
                          struct gw_anthropic_err *err)
{
    const char *s = json_string_value(v);

    *choice = NULL;
    if (v == NULL || json_is_null(v) || (s && strcmp(s, "auto") == 0))
        *choice = json_pack("{s:s}", "type", "auto");
    else if (s && strcmp(s, "none") == 0)
        *choice = json_pack("{s:s}", "type", "none");
    else if (s && strcmp(s, "required") == 0)
        *choice = json_pack("{s:s}", "type", "any");
    else if (json_is_object(v) &&
             json_is_string(json_object_get(json_object_get(v, "function"),
                                            "name")))
        *choice = json_pack("{s:s,s:O}", "type", "tool", "name",
                            json_object_get(json_object_get(v, "function"),
                                            "name"));
    else
        return fail(err, "invalid_value", "'tool_choice' must be \"auto\", "
                    "\"none\", \"required\" or {\"type\": \"function\", "
                    "\"function\": {\"name\": ...}}");
    if (json_is_false(parallel) &&
        strcmp(json_string_value(json_object_get(*choice, "type")), "none"))
        json_object_set_new(*choice, "disable_parallel_tool_use", json_true());
    /* auto is Messages' default: said only when it carries the flag */
    if (strcmp(json_string_value(json_object_get(*choice, "type")), "auto") ==
            0 && json_object_size(*choice) == 1) {
        json_decref(*choice);
        *choice = NULL;
    }
    return 0;
}

static int dump_cb(const char *buf, size_t size, void *data)
{
    return evbuffer_add(data, buf, size);
}

int gw_anthropic_request(const char *body, size_t len, const char *model,
                         long default_max_tokens, struct evbuffer *out,
                         int *include_usage, struct gw_anthropic_err *err)
{
    json_t *in = json_loadb(body, len, 0, NULL), *o = NULL, *msgs, *v;
    struct evbuffer *sys = evbuffer_new();
    const char *key;
    int rc = -1;

    *include_usage = 0;
    if (sys == NULL) {
        fail(err, "out_of_memory", "out of memory");
        goto out;
    }
    if (!json_is_object(in)) {
        fail(err, "invalid_json", "the request body must be a JSON object");
        goto out;
    }
    json_object_foreach(in, key, v) {
        if (in_list(ignored_fields, key))
            continue;
        if (in_list(refused_fields, key)) {
            char what[96];
            if (json_is_null(v))
                continue;
            snprintf(what, sizeof(what), "'%s'", key);
            unsupported(err, what);
            goto out;
        }
        if (strcmp(key, "logprobs") == 0) {
            if (json_is_true(v)) {
                unsupported(err, "'logprobs'");
                goto out;
            }
            continue;
        }
        if (strcmp(key, "response_format") == 0) {
            const char *t = json_string_value(json_object_get(v, "type"));
            if (!json_is_null(v) && (t == NULL || strcmp(t, "text") != 0)) {
                unsupported(err, "'response_format' other than text");
                goto out;
            }
            continue;
        }
        if (strcmp(key, "n") == 0) {
            if (!json_is_null(v) &&
                !(json_is_integer(v) && json_integer_value(v) == 1)) {
                unsupported(err, "'n' other than 1");
                goto out;
            }
            continue;
        }
        if (!in_list((const char *const[]){"model", "messages", "max_tokens",
                                           "max_completion_tokens",
                                           "temperature", "top_p", "top_k",
                                           "stop", "stream", "stream_options",
                                           "user", "tools", "tool_choice",
                                           "parallel_tool_calls", NULL},
                     key)) {
            fail(err, "unknown_parameter", "unknown field '%.64s': the "
                 "anthropic provider translates only the OpenAI chat "
                 "completion fields it knows", key);
            goto out;
        }
    }
    if ((o = json_object()) == NULL) {
        fail(err, "out_of_memory", "out of memory");
        goto out;
    }
    json_object_set_new(o, "model", json_string(model));
    v = json_object_get(in, "max_completion_tokens");
    if (v == NULL || json_is_null(v))
        v = json_object_get(in, "max_tokens");
    if (v != NULL && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) < 1) {
            fail(err, "invalid_value", "'max_tokens' must be an integer of "
                 "at least 1");
            goto out;
        }
        json_object_set(o, "max_tokens", v);
    } else {
        json_object_set_new(o, "max_tokens", json_integer(default_max_tokens));
    }
    if ((msgs = messages(json_object_get(in, "messages"), sys, err)) == NULL)
        goto out;
    if (evbuffer_get_length(sys)) {
        json_t *s = json_stringn((const char *)evbuffer_pullup(sys, -1),
                                 evbuffer_get_length(sys));
        if (s == NULL) {
            json_decref(msgs);
            fail(err, "invalid_value", "the system messages are not UTF-8");
            goto out;
        }
        json_object_set_new(o, "system", s);
    }
    json_object_set_new(o, "messages", msgs);
    v = json_object_get(in, "stop");
    if (json_is_string(v)) {
        json_object_set_new(o, "stop_sequences", json_pack("[O]", v));
    } else if (json_is_array(v)) {
        size_t i;
        json_t *s;
        json_array_foreach(v, i, s)
            if (!json_is_string(s))
                break;
        if (i < json_array_size(v)) {
            fail(err, "invalid_value", "'stop' must be a string or an array "
                 "of strings");
            goto out;
        }
        if (json_array_size(v))
            json_object_set(o, "stop_sequences", v);
    } else if (v && !json_is_null(v)) {
        fail(err, "invalid_value", "'stop' must be a string or an array of "
             "strings");
        goto out;
    }
    static const char *const nums[] = {"temperature", "top_p", "top_k", NULL};
    for (const char *const *n = nums; *n; n++) {
        v = json_object_get(in, *n);
        if (v == NULL || json_is_null(v))
            continue;
        if (!json_is_number(v) ||
            (strcmp(*n, "top_k") == 0 && !json_is_integer(v))) {
            fail(err, "invalid_value", "'%s' must be a number", *n);
            goto out;
        }
        json_object_set(o, *n, v);
    }
    v = json_object_get(in, "tools");
    if (v && !json_is_null(v)) {
        json_t *tools = tools_of(v, err), *choice;
        if (tools == NULL)
            goto out;
        json_object_set_new(o, "tools", tools);
        if (tool_choice_of(json_object_get(in, "tool_choice"),
                           json_object_get(in, "parallel_tool_calls"), &choice,
                           err) < 0)
            goto out;
        if (choice)
            json_object_set_new(o, "tool_choice", choice);
    } else {
        v = json_object_get(in, "tool_choice");
        if (v && !json_is_null(v) &&
            !(json_is_string(v) && (strcmp(json_string_value(v), "none") == 0 ||
                                    strcmp(json_string_value(v), "auto") == 0))) {
            fail(err, "invalid_value", "'tool_choice' names a tool but the "
                 "request has no 'tools'");
            goto out;
        }
    }
    v = json_object_get(in, "user");
    if (json_is_string(v)) {
        json_object_set_new(o, "metadata", json_pack("{s:O}", "user_id", v));
    } else if (v && !json_is_null(v)) {
        fail(err, "invalid_value", "'user' must be a string");
        goto out;
    }
    v = json_object_get(in, "stream");
    if (json_is_true(v)) {
        json_object_set_new(o, "stream", json_true());
        *include_usage = json_is_true(json_object_get(
            json_object_get(in, "stream_options"), "include_usage"));
    } else if (v && !json_is_false(v) && !json_is_null(v)) {
        fail(err, "invalid_value", "'stream' must be true or false");
        goto out;
    }
    {
        /* all or nothing: out is written only on success (invariant 2) */
        struct evbuffer *tmp = evbuffer_new();
        if (tmp == NULL ||
            json_dump_callback(o, dump_cb, tmp, JSON_COMPACT) < 0 ||
            evbuffer_add_buffer(out, tmp) < 0) {
            if (tmp)
                evbuffer_free(tmp);
            fail(err, "out_of_memory", "out of memory");
            goto out;
        }
        evbuffer_free(tmp);
    }
    rc = 0;
out:
    if (rc < 0)
        *include_usage = 0;
    json_decref(o);
    json_decref(in);
    if (sys)
        evbuffer_free(sys);
    return rc;
}

/* ----------------------------------------------------------- response */

const char *gw_anthropic_finish_reason(const char *stop_reason)
{
    if (stop_reason == NULL)
        return "stop";
    if (strcmp(stop_reason, "max_tokens") == 0 ||
        strcmp(stop_reason, "model_context_window_exceeded") == 0)
        return "length";
    if (strcmp(stop_reason, "tool_use") == 0)
        return "tool_calls";
    if (strcmp(stop_reason, "refusal") == 0)
        return "content_filter";
    return "stop"; /* end_turn, stop_sequence, pause_turn */
}

static void add_str(struct evbuffer *b, const char *s, size_t n)
{
    ADD_LIT(b, "\"");
    gw_json_escape(b, s, n);
    ADD_LIT(b, "\"");
}

static long count_of(json_t *usage, const char *key)
{
    json_t *v = json_object_get(usage, key);
    return json_is_integer(v) && json_integer_value(v) >= 0
               ? (long)json_integer_value(v) : 0;
}

/* input + cache reads + cache writes: what OpenAI calls prompt tokens */
static long prompt_count(json_t *usage, long *cached)
{
    *cached = count_of(usage, "cache_read_input_tokens");
    return count_of(usage, "input_tokens") + *cached +
           count_of(usage, "cache_creation_input_tokens");
}

static void add_usage(struct evbuffer *b, long p, long c, long cached)
{
    evbuffer_add_printf(b, "\"usage\":{\"prompt_tokens\":%ld,"
                           "\"completion_tokens\":%ld,\"total_tokens\":%ld",
                        p, c, p + c);
    if (cached > 0)
        evbuffer_add_printf(b, ",\"prompt_tokens_details\":"
                               "{\"cached_tokens\":%ld}", cached);
    ADD_LIT(b, "}");
}

int gw_anthropic_response(int status, const char *body, size_t len,
                          long created, struct evbuffer *out)
{
    json_t *r = json_loadb(body, len, 0, NULL), *content, *blk, *usage;
    struct evbuffer *b = NULL;
    const char *id, *model, *type;
    long p, c, cached;
    size_t i;
    int rc = -1;

    if (status < 200 || status >= 300) {
        json_t *e = json_object_get(r, "error");
        const char *et = json_string_value(json_object_get(e, "type"));
        const char *em = json_string_value(json_object_get(e, "message"));
        char msg[160];
        if (em == NULL) {
            snprintf(msg, sizeof(msg), "the anthropic backend answered %d "
                     "without an error message", status);
            em = msg;
        }
        rc = gw_error_json(out, status, et ? et : "backend_error", em);
        json_decref(r);
        return rc;
    }
    type = json_string_value(json_object_get(r, "type"));
    content = json_object_get(r, "content");
    id = json_string_value(json_object_get(r, "id"));
    model = json_string_value(json_object_get(r, "model"));
    if (type == NULL || strcmp(type, "message") != 0 ||
        !json_is_array(content) || id == NULL || model == NULL ||
        (b = evbuffer_new()) == NULL)
        goto out;
    ADD_LIT(b, "{\"id\":");
    add_str(b, id, strlen(id));
    evbuffer_add_printf(b, ",\"object\":\"chat.completion\",\"created\":%ld,"
                           "\"model\":", created);
    add_str(b, model, strlen(model));
    ADD_LIT(b, ",\"choices\":[{\"index\":0,\"message\":{\"role\":"
                    "\"assistant\",\"content\":");
    {
        /* text blocks joined; tool_use blocks as tool_calls; thinking and
         * other blocks are not part of the answer */
        size_t n_text = 0, n_tools = 0;
        json_array_foreach(content, i, blk) {
            const char *bt = json_string_value(json_object_get(blk, "type"));
            if (bt && strcmp(bt, "text") == 0 &&
                json_is_string(json_object_get(blk, "text")))
                n_text++;
            else if (bt && strcmp(bt, "tool_use") == 0)
                n_tools++;
        }
        if (n_text == 0 && n_tools > 0) {
            ADD_LIT(b, "null");
        } else {
            ADD_LIT(b, "\"");
            json_array_foreach(content, i, blk) {
                const char *bt = json_string_value(json_object_get(blk, "type"));
                json_t *t = json_object_get(blk, "text");
                if (bt && strcmp(bt, "text") == 0 && json_is_string(t))
                    gw_json_escape(b, json_string_value(t),
                                   json_string_length(t));
            }
            ADD_LIT(b, "\"");
        }
        if (n_tools > 0) {
            size_t k = 0;
            ADD_LIT(b, ",\"tool_calls\":[");
            json_array_foreach(content, i, blk) {
                const char *bt = json_string_value(json_object_get(blk, "type"));
                const char *tid = json_string_value(json_object_get(blk, "id"));
                const char *name = json_string_value(json_object_get(blk,
                                                                     "name"));
                char *args;
                if (bt == NULL || strcmp(bt, "tool_use") != 0)
                    continue;
                if (tid == NULL || name == NULL)
                    goto out;
                args = json_dumps(json_object_get(blk, "input"),
                                  JSON_COMPACT | JSON_ENCODE_ANY);
                if (k++)
                    ADD_LIT(b, ",");
                ADD_LIT(b, "{\"id\":");
                add_str(b, tid, strlen(tid));
                ADD_LIT(b, ",\"type\":\"function\",\"function\":{\"name\":");
                add_str(b, name, strlen(name));
                ADD_LIT(b, ",\"arguments\":");
                add_str(b, args ? args : "{}", args ? strlen(args) : 2);
                ADD_LIT(b, "}}");
                free(args);
            }
            ADD_LIT(b, "]");
        }
    }
    evbuffer_add_printf(b, "},\"logprobs\":null,\"finish_reason\":\"%s\"}],",
                        gw_anthropic_finish_reason(json_string_value(
                            json_object_get(r, "stop_reason"))));
    usage = json_object_get(r, "usage");
    p = prompt_count(usage, &cached);
    c = count_of(usage, "output_tokens");
    add_usage(b, p, c, cached);
    ADD_LIT(b, "}");
    rc = evbuffer_add_buffer(out, b);
out:
    if (b)
        evbuffer_free(b);
    json_decref(r);
    return rc;
}

/* ------------------------------------------------------------- stream */

int gw_anthropic_stream_init(struct gw_anthropic_stream *s, int include_usage,
                             long created)
{
    memset(s, 0, sizeof(*s));
    s->cur_tool = -1;
    s->include_usage = include_usage;
    s->created = created;
    s->scratch = evbuffer_new();
    s->head = evbuffer_new();
    if (s->scratch == NULL || s->head == NULL) {
        gw_anthropic_stream_release(s);
        return -1;
    }
    return 0;
}

void gw_anthropic_stream_release(struct gw_anthropic_stream *s)
{
    if (s->scratch)
        evbuffer_free(s->scratch);
    if (s->head)
        evbuffer_free(s->head);
    s->scratch = s->head = NULL;
}

/* Writes the opening of every chunk, up to the choices array's '[', once
 * id and model are known (message_start). */
static void head_build(struct gw_anthropic_stream *s)
{
    struct evbuffer *b = s->head;

    evbuffer_drain(b, evbuffer_get_length(b));
    ADD_LIT(b, "{\"id\":");
    add_str(b, s->id, strlen(s->id));
    evbuffer_add_printf(b, ",\"object\":\"chat.completion.chunk\","
                           "\"created\":%ld,\"model\":", s->created);
    add_str(b, s->model, strlen(s->model));
    ADD_LIT(b, ",\"choices\":[");
    evbuffer_pullup(b, -1); /* one piece from now on */
}

/* Starts a chunk in scratch with the opening. */
static void chunk_head(struct gw_anthropic_stream *s)
{
    struct evbuffer *b = s->scratch;

    evbuffer_drain(b, evbuffer_get_length(b));
    evbuffer_add(b, evbuffer_pullup(s->head, -1),
                 evbuffer_get_length(s->head));
}

static int chunk_emit(struct gw_anthropic_stream *s, gw_anthropic_emit_cb emit,
                      void *arg)
{
    struct evbuffer *b = s->scratch;
    size_t n = evbuffer_get_length(b);

    return emit(arg, (const char *)evbuffer_pullup(b, -1), n);
}

/* A tool_calls delta of call s->cur_tool: its id and name (a new call)
 * or a piece of its arguments. */
static int tool_chunk(struct gw_anthropic_stream *s, const char *id,
                      const char *name, const char *args, size_t args_len,
                      gw_anthropic_emit_cb emit, void *arg)
{
    struct evbuffer *b = s->scratch;

    chunk_head(s);
    evbuffer_add_printf(b, "{\"index\":0,\"delta\":{\"tool_calls\":["
                           "{\"index\":%d,", s->cur_tool);
    if (id) {
        ADD_LIT(b, "\"id\":");
        add_str(b, id, strlen(id));
        ADD_LIT(b, ",\"type\":\"function\",\"function\":{\"name\":");
        add_str(b, name, strlen(name));
        ADD_LIT(b, ",\"arguments\":\"\"}");
    } else {
        ADD_LIT(b, "\"function\":{\"arguments\":");
        add_str(b, args, args_len);
        ADD_LIT(b, "}");
    }
    ADD_LIT(b, "}]},\"logprobs\":null,\"finish_reason\":null}]}");
    return chunk_emit(s, emit, arg);
}

/* A chunk of one choice: delta is the start of the delta object's
 * members, then the content text when text is not NULL. */
static int choice_chunk(struct gw_anthropic_stream *s, const char *delta,
                        const char *text, size_t text_len,
                        const char *finish, gw_anthropic_emit_cb emit,
                        void *arg)
{
    struct evbuffer *b = s->scratch;

    chunk_head(s);
    ADD_LIT(b, "{\"index\":0,\"delta\":{");
    evbuffer_add(b, delta, strlen(delta));
    if (text) {
        ADD_LIT(b, "\"content\":\"");
        gw_json_escape(b, text, text_len);
        ADD_LIT(b, "\"");
    }
    if (finish)
        evbuffer_add_printf(b, "},\"logprobs\":null,\"finish_reason\":\"%s\"}]}",
                            finish);
    else
        ADD_LIT(b, "},\"logprobs\":null,\"finish_reason\":null}]}");
    return chunk_emit(s, emit, arg);
}

/* The fast path of a text delta event, {"type":"content_block_delta",
 * "index":N,"delta":{"type":"text_delta","text":"..."}}, read without a
 * tree. Returns 1 when it was one (*rc: the emit's verdict), 0 when the
 * event is anything else (or not valid JSON): the general path decides. */
static int text_delta_fast(struct gw_anthropic_stream *s, const char *data,
                           size_t len, gw_anthropic_emit_cb emit, void *arg,
                           int *rc)
{
    struct gw_jscan_field f[2] = {{.key = "type"}, {.key = "delta"}};
    struct gw_jscan_field d[2] = {{.key = "type"}, {.key = "text"}};
    struct evbuffer *b = s->scratch;
    char err[8];

    if (!s->started || s->done ||
        gw_jscan(data, len, 16, f, 2, err, sizeof(err)) < 0 ||
        f[0].type != GW_JSON_STRING || f[0].len != 19 ||
        memcmp(f[0].val, "content_block_delta", 19) != 0 ||
        f[1].type != GW_JSON_OBJECT ||
        gw_jscan(f[1].val, f[1].len, 16, d, 2, err, sizeof(err)) < 0 ||
        d[0].type != GW_JSON_STRING || d[0].len != 10 ||
        memcmp(d[0].val, "text_delta", 10) != 0 ||
        d[1].type != GW_JSON_STRING)
        return 0;
    *rc = 0;
    if (d[1].len == 0)
        return 1;
    chunk_head(s);
    ADD_LIT(b, "{\"index\":0,\"delta\":{\"content\":\"");
    evbuffer_add(b, d[1].val, d[1].len); /* escapes kept: valid JSON */
    ADD_LIT(b, "\"},\"logprobs\":null,\"finish_reason\":null}]}");
    *rc = chunk_emit(s, emit, arg) != 0 ? -1 : 0;
    return 1;
}

static void copy_str(char *dst, size_t cap, json_t *v, const char *dflt)
{
    const char *s = json_string_value(v);
    snprintf(dst, cap, "%s", s ? s : dflt);
}

int gw_anthropic_stream_event(struct gw_anthropic_stream *s, const char *data,
                              size_t len, gw_anthropic_emit_cb emit,
                              void *arg, char *why, size_t whylen)
{
    json_t *ev, *v;
    const char *type;
    int rc = 0;

    if (text_delta_fast(s, data, len, emit, arg, &rc)) {
        if (rc != 0)
            snprintf(why, whylen, "the translated stream could not be "
                     "relayed");
        return rc;
    }
    ev = json_loadb(data, len, 0, NULL);
    type = json_string_value(json_object_get(ev, "type"));
    if (type == NULL) {
        snprintf(why, whylen, "the anthropic stream sent an event that is "
                 "not a JSON object with a \"type\"");
        rc = -1;
        goto out;
    }
    if (strcmp(type, "error") == 0) {
        json_t *e = json_object_get(ev, "error");
        const char *et = json_string_value(json_object_get(e, "type"));
        /* a code for the client: letters and '_' only */
        if (et && strlen(et) < sizeof(s->error_type) &&
            strspn(et, "abcdefghijklmnopqrstuvwxyz_") == strlen(et))
            snprintf(s->error_type, sizeof(s->error_type), "%s", et);
        snprintf(why, whylen, "the anthropic stream sent an error: %.64s: "
                 "%.256s", json_string_value(json_object_get(e, "type"))
                 ? json_string_value(json_object_get(e, "type")) : "error",
                 json_string_value(json_object_get(e, "message"))
                 ? json_string_value(json_object_get(e, "message")) : "");
        rc = -1;
        goto out;
    }
    if (strcmp(type, "ping") == 0)
        goto out;
    if (s->done) {
        snprintf(why, whylen, "the anthropic stream sent '%.32s' after "
                 "message_stop", type);
        rc = -1;
        goto out;
    }
    if (strcmp(type, "message_start") == 0) {
        json_t *m = json_object_get(ev, "message");
        if (s->started || !json_is_object(m)) {
            snprintf(why, whylen, "the anthropic stream sent a %s "
                     "message_start", s->started ? "second" : "malformed");
            rc = -1;
            goto out;
        }
        s->started = 1;
        copy_str(s->id, sizeof(s->id), json_object_get(m, "id"), "msg");
        copy_str(s->model, sizeof(s->model), json_object_get(m, "model"), "");
        s->input_tokens = prompt_count(json_object_get(m, "usage"),
                                       &s->cached_tokens);
        s->output_tokens = count_of(json_object_get(m, "usage"),
                                    "output_tokens");
        head_build(s);
        rc = choice_chunk(s, "\"role\":\"assistant\",", "", 0, NULL, emit,
                          arg);
        goto out;
    }
    if (!s->started) {
        snprintf(why, whylen, "the anthropic stream sent '%.32s' before "
                 "message_start", type);
        rc = -1;
        goto out;
    }
    if (strcmp(type, "content_block_start") == 0) {
        json_t *cb = json_object_get(ev, "content_block");
        const char *bt = json_string_value(json_object_get(cb, "type"));
        v = json_object_get(cb, "text");
        s->cur_tool = -1;
        if (bt && strcmp(bt, "text") == 0 && json_string_length(v) > 0) {
            rc = choice_chunk(s, "", json_string_value(v),
                              json_string_length(v), NULL, emit, arg);
        } else if (bt && strcmp(bt, "tool_use") == 0) {
            const char *id = json_string_value(json_object_get(cb, "id"));
            const char *name = json_string_value(json_object_get(cb, "name"));
            if (id == NULL || name == NULL) {
                snprintf(why, whylen, "the anthropic stream sent a tool_use "
                         "block without id or name");
                rc = -1;
                goto out;
            }
            s->cur_tool = s->n_tools++;
            rc = tool_chunk(s, id, name, NULL, 0, emit, arg);
        }
    } else if (strcmp(type, "content_block_delta") == 0) {
        json_t *d = json_object_get(ev, "delta");
        const char *dt = json_string_value(json_object_get(d, "type"));
        v = json_object_get(d, "text");
        /* thinking and signature deltas are not part of the answer */
        if (dt && strcmp(dt, "text_delta") == 0 && json_is_string(v) &&
            json_string_length(v) > 0) {
            rc = choice_chunk(s, "", json_string_value(v),
                              json_string_length(v), NULL, emit, arg);
        } else if (dt && strcmp(dt, "input_json_delta") == 0 &&
                   s->cur_tool >= 0) {
            v = json_object_get(d, "partial_json");
            if (json_string_length(v) > 0)
                rc = tool_chunk(s, NULL, NULL, json_string_value(v),
                                json_string_length(v), emit, arg);
        }
    } else if (strcmp(type, "content_block_stop") == 0) {
        s->cur_tool = -1;
    } else if (strcmp(type, "message_delta") == 0) {
        json_t *d = json_object_get(ev, "delta");
        json_t *u = json_object_get(ev, "usage");
        if (json_is_integer(json_object_get(u, "output_tokens")))
            s->output_tokens = count_of(u, "output_tokens");
        if (json_is_integer(json_object_get(u, "input_tokens")))
            s->input_tokens = prompt_count(u, &s->cached_tokens);
        v = json_object_get(d, "stop_reason");
        if (json_is_string(v))
            rc = choice_chunk(s, "", NULL, 0,
                              gw_anthropic_finish_reason(json_string_value(v)),
                              emit, arg);
    } else if (strcmp(type, "message_stop") == 0) {
        s->done = 1;
        if (s->include_usage) {
            chunk_head(s);
            ADD_LIT(s->scratch, "],");
            add_usage(s->scratch, s->input_tokens, s->output_tokens,
                      s->cached_tokens);
            ADD_LIT(s->scratch, "}");
            rc = chunk_emit(s, emit, arg);
        }
        if (rc == 0)
            rc = emit(arg, "[DONE]", 6);
    }
    /* content_block_stop and event types added later: nothing to say */
    if (rc != 0) {
        snprintf(why, whylen, "the translated stream could not be relayed");
        rc = -1;
    }
out:
    json_decref(ev);
    return rc;
}
