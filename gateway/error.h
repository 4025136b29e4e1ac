/*
 * error.h - OpenAI-shaped error bodies.
 *
 * Every error the gateway itself produces has the shape
 *     {"error": {"message": "...", "type": "...", "code": "..."}}
 * with the type derived from the HTTP status, as OpenAI's API does.
 */
#ifndef GW_ERROR_H
#define GW_ERROR_H

#include <stddef.h>

struct evbuffer;

/* The OpenAI error type for an HTTP status ("invalid_request_error" for
 * most 4xx, "authentication_error" for 401, ...). Never NULL. */
const char *gw_error_type(int status);

/* The reason phrase of a status ("Bad Request"). Never NULL. */
const char *gw_error_reason(int status);

/* Appends the error JSON to out. message is escaped; code may be NULL
 * (written as null). Returns 0, or -1 when out cannot grow. */
int gw_error_json(struct evbuffer *out, int status, const char *code,
                  const char *message);

/* Appends s JSON-escaped (without the quotes) to out. Invalid UTF-8 bytes
 * are written as U+FFFD so the output is always valid JSON. */
int gw_json_escape(struct evbuffer *out, const char *s, size_t len);

#endif
