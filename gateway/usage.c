/*
 * usage.c - reading the `usage` block without parsing whole bodies.
 *
 * Responses can be megabytes of generated text; the access log needs only
 * three integers. The last occurrence of "usage" is searched for (OpenAI
 * puts it at the end of bodies, and in the last chunk of streams), and
 * only the object after it is parsed with jansson.
 */
#include "gateway/usage.h"

#include <jansson.h>
#include <string.h>

void gw_usage_init(struct gw_usage *u)
{
    u->prompt_tokens = u->completion_tokens = u->total_tokens = -1;
}

static long count(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_integer(v) ? (long)json_integer_value(v) : -1;
}

int gw_usage_find(const char *json, size_t len, struct gw_usage *u)
{
    const char *p = NULL, *q, *end = json + len;
    json_t *o;

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
    o = json_loadb(p, (size_t)(end - p), JSON_DISABLE_EOF_CHECK, NULL);
    if (!json_is_object(o)) {
        json_decref(o);
        return 0;
    }
    u->prompt_tokens = count(o, "prompt_tokens");
    u->completion_tokens = count(o, "completion_tokens");
    u->total_tokens = count(o, "total_tokens");
    json_decref(o);
    return 1;
}
