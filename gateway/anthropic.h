/*
 * anthropic.h - the "anthropic" provider adapter (routing, issue 3 point
 * 5): OpenAI chat completions translated to Anthropic's Messages API and
 * back, streams included.
 *
 * Pure translation: bytes in, bytes out (evbuffers), no sockets and no
 * config, so that upstream.c hooks it in and tests/unit/test_gw_anthropic.c
 * checks it alone. Only requests routed to an anthropic backend pay for it
 * (it parses with jansson); the OpenAI path never calls it.
 */
#ifndef GW_ANTHROPIC_H
#define GW_ANTHROPIC_H

#include <stddef.h>

struct evbuffer;

#define GW_ANTHROPIC_DEFAULT_VERSION "2023-06-01"
#define GW_ANTHROPIC_DEFAULT_MAX_TOKENS 4096

/* Why a request cannot be translated: answered 400 to the client. */
struct gw_anthropic_err {
    char code[48];     /* OpenAI-style error code, e.g. "unsupported_parameter" */
    char message[384]; /* names the field and what to do */
};

/* Translates the OpenAI chat completion request body[0..len) into a
 * Messages request for model and appends it to out: system and developer
 * messages joined into "system", max_tokens (or max_completion_tokens,
 * else default_max_tokens), temperature, top_p, top_k, stop ->
 * stop_sequences, stream, user -> metadata.user_id, tools, tool_choice,
 * parallel_tool_calls, tool calls and tool results. *include_usage is set
 * to 1 when the request asks for the final usage chunk
 * (stream_options.include_usage). Returns 0, or -1 with err filled (a
 * field the adapter does not translate, such as functions, n > 1 or an
 * unknown field; a malformed message) and out unchanged. */
int gw_anthropic_request(const char *body, size_t len, const char *model,
                         long default_max_tokens, struct evbuffer *out,
                         int *include_usage, struct gw_anthropic_err *err);

/* Translates a whole (non-stream) answer of status: a 2xx Messages
 * response becomes a chat.completion (created is its timestamp), any other
 * status an OpenAI error body {"error": {"message", "type", "code"}} with
 * Anthropic's error type as the code. Appends to out and returns 0, or -1
 * when a 2xx body is not a Messages response (out unchanged). */
int gw_anthropic_response(int status, const char *body, size_t len,
                          long created, struct evbuffer *out);

/* The OpenAI finish_reason of an Anthropic stop_reason (never NULL). */
const char *gw_anthropic_finish_reason(const char *stop_reason);

/* Called for each OpenAI chunk a stream event turns into: data[0..len) is
 * the JSON of a chat.completion.chunk, or "[DONE]". Return 0 to go on. */
typedef int (*gw_anthropic_emit_cb)(void *arg, const char *data, size_t len);

/* The state of one translated stream (one upstream attempt). */
struct gw_anthropic_stream {
    char id[128];
    char model[264];
    long created;
    int include_usage;
    long input_tokens;  /* from message_start (cache reads included) */
    long cached_tokens; /* of which read from Anthropic's prompt cache */
    long output_tokens; /* from message_delta (cumulative) */
    int n_tools;        /* tool_use blocks so far */
    int cur_tool;       /* tool call index of the open block, -1: none */
    int started;        /* message_start seen: the role chunk went out */
    int done;           /* message_stop seen: [DONE] went out */
    char error_type[48]; /* of an `error` event ("overloaded_error"), or "" */
    struct evbuffer *scratch; /* owned: one chunk being written */
    struct evbuffer *head;    /* owned: every chunk's opening (id, created,
                                 model), written once at message_start */
};

/* 0, or -1 on out of memory. */
int gw_anthropic_stream_init(struct gw_anthropic_stream *s, int include_usage,
                             long created);
void gw_anthropic_stream_release(struct gw_anthropic_stream *s);

/* One SSE event of a Messages stream (its data; the "type" member says
 * which event it is, so the `event:` name is not needed). message_start
 * emits the role chunk, text deltas a content chunk each, a tool_use
 * block a tool_calls chunk (id, name) and its input_json_deltas argument
 * chunks, message_delta the finish chunk, message_stop the usage chunk
 * (when include_usage) and [DONE]; ping, content_block_stop and unknown
 * events emit nothing.
 * Returns 0, or -1 with why[0..whylen) for an `error` event, a malformed
 * event, an event out of order, or emit returning non-zero. */
int gw_anthropic_stream_event(struct gw_anthropic_stream *s, const char *data,
                              size_t len, gw_anthropic_emit_cb emit,
                              void *arg, char *why, size_t whylen);

#endif
