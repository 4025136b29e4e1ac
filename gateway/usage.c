/*
 * usage.c - reading the `usage` block without parsing whole bodies.
 *
 * Responses can be megabytes of generated text; the access log needs only
 * three integers. The last occurrence of "usage" is searched for (OpenAI
 * puts it at the end of bodies, and in the last chunk of streams), and
 * only the object after it is read: three integers at its first level.
 * The body has already been checked as JSON by the backend's own
 * serializer or is refused by the client anyway; a malformed usage object
 * yields unknown counts (-1), never a crash or a read past the end.
 */
#include "gateway/usage.h"

#include <string.h>

void gw_usage_init(struct gw_usage *u)
{
    u->prompt_tokens = u->completion_tokens = u->total_tokens = -1;
}

/* Offset just past the object starting at p[0] == '{', or 0 when it is
 * not closed within n bytes. Strings are skipped, escapes included. */
static size_t object_end(const char *p, size_t n)
{
    size_t i;
    int depth = 0, in_str = 0;

    for (i = 0; i < n; i++) {
        char ch = p[i];
        if (in_str) {
            if (ch == '\\')
                i++;
            else if (ch == '"')
                in_str = 0;
        } else if (ch == '"') {
            in_str = 1;
        } else if (ch == '{' || ch == '[') {
            depth++;
        } else if (ch == '}' || ch == ']') {
            if (--depth == 0)
                return i + 1;
        }
    }
    return 0;
}

/* The integer after "key": at depth 1 of the object o[0..n), or -1. */
static long count(const char *o, size_t n, const char *key)
{
    size_t kl = strlen(key), i;
    int depth = 0, in_str = 0;

    for (i = 0; i < n; i++) {
        char ch = o[i];
        if (in_str) {
            if (ch == '\\')
                i++;
            else if (ch == '"')
                in_str = 0;
            continue;
        }
        if (ch == '{' || ch == '[') {
            depth++;
        } else if (ch == '}' || ch == ']') {
            depth--;
        } else if (ch == '"') {
            if (depth == 1 && i + kl + 1 < n &&
                memcmp(o + i + 1, key, kl) == 0 && o[i + kl + 1] == '"') {
                const char *p = o + i + kl + 2, *end = o + n;
                long v = 0;
                while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' ||
                                   *p == '\r'))
                    p++;
                if (p >= end || *p != ':') {
                    /* a string value spelt like the key ("kind":
                     * "prompt_tokens"), not the key: skip it, the key may
                     * follow (it ended the search with -1; found by
                     * tests/fuzz/fuzz_usage) */
                    in_str = 1;
                    continue;
                }
                p++;
                while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' ||
                                   *p == '\r'))
                    p++;
                if (p >= end || *p < '0' || *p > '9')
                    return -1;
                while (p < end && *p >= '0' && *p <= '9' && v < 1000000000000L)
                    v = v * 10 + (*p++ - '0');
                return v;
            }
            in_str = 1;
        }
    }
    return -1;
}

int gw_usage_find(const char *json, size_t len, struct gw_usage *u)
{
    const char *p = NULL, *q, *end = json + len;
    size_t n;

    /* last occurrence of the key */
    for (q = json; (q = memmem(q, (size_t)(end - q), "\"usage\"", 7));
         q += 7)
        p = q;
    if (p == NULL)
        return 0;
    p += 7;
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    if (p >= end || *p != ':')
        return 0;
    p++;
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    if (p >= end || *p != '{')
        return 0;
    n = object_end(p, (size_t)(end - p));
    if (n == 0)
        return 0;
    u->prompt_tokens = count(p, n, "prompt_tokens");
    u->completion_tokens = count(p, n, "completion_tokens");
    u->total_tokens = count(p, n, "total_tokens");
    return 1;
}
