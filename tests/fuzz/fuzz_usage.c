/*
 * fuzz_usage.c - libFuzzer target: the token usage scanner
 * (gateway/usage.c), which reads "usage" out of whole answers and stream
 * chunks without parsing them (upstream.c, cache.c, the access log).
 *
 * The input is an answer body. Oracle, where the scanner's shortcut is
 * meant to hold: a JSON object (jansson, no duplicate keys, no escapes
 * anywhere, no "-0", which jansson reads as 0 and the scanner as not a
 * count) with one "usage" in its text, at the top level, an object.
 * Then each count is the member's value when it is a non-negative integer
 * below 10^12, and -1 when the member is absent or not a number. Reals
 * are read up to their point, so they are not compared.
 */
#include "gateway/usage.h"

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void die(const char *what, const char *key)
{
    fprintf(stderr, "fuzz_usage: %s: %s\n", what, key);
    abort();
}

static void expect(const json_t *usage, const char *key, long got)
{
    const json_t *v = json_object_get(usage, key);

    if (json_is_real(v))
        return;
    if (json_is_integer(v) && json_integer_value(v) >= 0 &&
        json_integer_value(v) < 1000000000000LL) {
        if (got != (long)json_integer_value(v))
            die("a count differs from the value", key);
    } else if (!json_is_integer(v) && got != -1) {
        die("a count for a member that is not a number", key);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data, *first;
    struct gw_usage u;
    json_error_t e;
    json_t *root, *usage;
    int found;

    gw_usage_init(&u);
    found = gw_usage_find(s, size, &u);
    if (found != 0 && found != 1)
        die("gw_usage_find returned something else", "");
    if (found && (u.prompt_tokens < -1 || u.completion_tokens < -1 ||
                  u.total_tokens < -1))
        die("a negative count", "");
    /* the oracle's ground */
    first = memmem(s, size, "\"usage\"", 7);
    if (first == NULL || memchr(s, '\\', size) ||
        memmem(s, size, "-0", 2) ||
        memmem(first + 7, size - (size_t)(first + 7 - s), "\"usage\"", 7))
        return 0;
    root = json_loadb(s, size, JSON_REJECT_DUPLICATES, &e);
    if (root == NULL)
        return 0;
    usage = json_object_get(root, "usage");
    if (json_is_object(root) && json_is_object(usage)) {
        if (!found)
            die("a top-level usage object not found", "");
        expect(usage, "prompt_tokens", u.prompt_tokens);
        expect(usage, "completion_tokens", u.completion_tokens);
        expect(usage, "total_tokens", u.total_tokens);
    }
    json_decref(root);
    return 0;
}
