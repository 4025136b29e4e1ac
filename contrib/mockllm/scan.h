/*
 * scan.h: an allocation-free reader of chat / completion request bodies,
 * the fast path of mockllm (jansson stays the reference and the fallback).
 */
#ifndef MOCK_SCAN_H
#define MOCK_SCAN_H

#include <stddef.h>

struct mock_scan {
    const char *model;      /* borrowed from the body: raw bytes, no escapes */
    size_t model_len;
    int has_messages;       /* "messages" is a non-empty array */
    int has_prompt;         /* "prompt" is a string or an array */
    size_t content_bytes;   /* decoded bytes of the message contents */
    size_t prompt_bytes;    /* decoded bytes of the prompt(s), 4 per non-string */
    long max_tokens;        /* -1: none; the lower of max_(completion_)tokens */
    int stream;
    int include_usage;
};

/*
 * Read body (len bytes) as a JSON object and fill out.  Returns 0 when the
 * body is valid JSON that the fast path can answer from out alone (model
 * a plain string; messages, when present, an array; prompt a string or an
 * array; max_tokens absent, null or a positive integer; stream absent, null
 * or a boolean): the caller still checks has_messages / has_prompt and the
 * model name.  Returns -1 for
 * everything else, invalid JSON included: the caller then uses jansson,
 * which gives the exact answer or error.  The accepted language is the one
 * jansson accepts (strict UTF-8, no NUL escapes, depth limit).
 */
int mock_scan_request(const char *body, size_t len, struct mock_scan *out);

#endif
