/*
 * fuzz_jscan.c - libFuzzer target: a request body through gateway/jscan.c,
 * the scan handle_inference (gateway/proxy.c) makes of every body.
 *
 * The input is the body. It is scanned with proxy.c's depth and its eight
 * fields, and the string fields are decoded as proxy.c and prompt.c decode
 * them. jansson is the oracle (the differential of tests/unit/
 * test_gw_jscan.c, on any input):
 *  - a body jscan accepts parses with jansson too, bar jansson's own limits
 *    (numbers out of range, \u0000), and every captured field has the type
 *    and value jansson sees (strings decoded, other spans parsed alone);
 *  - a body jscan refuses is refused by jansson too, bar the documented
 *    differences (a NUL after a number or literal, which jansson drops; a
 *    requested key written twice; nesting beyond the depth).
 * Any disagreement aborts: that is a bug in one of the two, to look at.
 * A body jscan accepts is scanned again with gw_jscan_trusted (prompt.c's
 * passes over a checked body), which must accept it and capture the very
 * same spans. "prompt" captures inside its object as proxy.c hooks it
 * (struct gw_jscan_sub: name, label, version and variables by key, the
 * other members and every member of the variables in order); a scan of
 * that object's text, and of the variables', must find the same values
 * (and a duplicate where the sub reports one).
 */
#include "gateway/jscan.h"

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEPTH 128 /* MAX_JSON_DEPTH in gateway/proxy.c */
#define N_FIELDS 8

static const char *const keys[N_FIELDS] = {
    "model", "stream", "max_tokens", "max_completion_tokens",
    "prompt", "user", "stream_options", "n"};

static void fail(const char *what, const char *key)
{
    fprintf(stderr, "fuzz_jscan: %s%s%s\n", what, key ? ": " : "",
            key ? key : "");
    abort();
}

/* jansson refused the text only by a limit of its own. */
static int own_limit(const json_error_t *e)
{
    return strstr(e->text, "NUL") != NULL ||
           strstr(e->text, "too big") != NULL ||
           strstr(e->text, "overflow") != NULL;
}

/* The captured value of f against jansson's v. */
static void check_field(const struct gw_jscan_field *f, json_t *v)
{
    static char out[1 << 16];
    json_error_t e;
    json_t *alone;

    switch (f->type) {
    case GW_JSON_NONE:
        if (v != NULL)
            fail("jscan missed a field jansson sees", f->key);
        return;
    case GW_JSON_STRING: {
        long n = gw_jscan_string(f, out, sizeof(out));
        if (!json_is_string(v))
            fail("jscan says string, jansson does not", f->key);
        if (n < 0) {
            /* too long for out, or holds \u0000 */
            if (f->len + 1 <= sizeof(out) / 4 &&
                memchr(json_string_value(v), '\0', json_string_length(v)) ==
                    NULL)
                fail("gw_jscan_string refused a plain string", f->key);
            return;
        }
        if ((size_t)n != json_string_length(v) ||
            memcmp(out, json_string_value(v), (size_t)n) != 0)
            fail("decoded string differs from jansson's", f->key);
        if (strlen(out) != (size_t)n)
            fail("decoded string holds a NUL", f->key);
        if (!f->escaped &&
            ((size_t)n != f->len || memcmp(out, f->val, f->len) != 0))
            fail("unescaped string is not its raw span", f->key);
        return;
    }
    case GW_JSON_TRUE:
        if (!json_is_true(v))
            fail("type true differs", f->key);
        return;
    case GW_JSON_FALSE:
        if (!json_is_false(v))
            fail("type false differs", f->key);
        return;
    case GW_JSON_NULL:
        if (!json_is_null(v))
            fail("type null differs", f->key);
        return;
    case GW_JSON_NUMBER:
    case GW_JSON_OBJECT:
    case GW_JSON_ARRAY:
        /* the span alone is the same value */
        alone = json_loadb(f->val, f->len, JSON_DECODE_ANY | JSON_ALLOW_NUL,
                           &e);
        if (alone == NULL)
            fail("a captured span does not parse alone", f->key);
        if (!json_equal(alone, v))
            fail("a captured span is not jansson's value", f->key);
        json_decref(alone);
        return;
    }
}

/* gw_jscan_trusted over a body gw_jscan accepted gives the same fields. */
static void check_trusted(const uint8_t *data, size_t size,
                          const struct gw_jscan_field *f)
{
    struct gw_jscan_field t[N_FIELDS];
    char err[256];
    size_t i;

    memset(t, 0, sizeof(t));
    for (i = 0; i < N_FIELDS; i++)
        t[i].key = keys[i];
    if (gw_jscan_trusted((const char *)data, size, DEPTH, t, N_FIELDS, err,
                         sizeof(err)) < 0)
        fail("gw_jscan_trusted refuses a checked body", err);
    for (i = 0; i < N_FIELDS; i++)
        if (t[i].type != f[i].type || t[i].val != f[i].val ||
            t[i].len != f[i].len || t[i].escaped != f[i].escaped)
            fail("gw_jscan_trusted captured another span", keys[i]);
}

#define SUB_ROOM 8

static const char *const pkeys[4] = {"name", "label", "version",
                                     "variables"};

/* Every kept member of sub s of the object text obj[0..len) is what a scan
 * of that text for its key finds (keys with escapes, and keys that come
 * twice, which that scan refuses, are left out). */
static void check_members(const char *obj, size_t len,
                          const struct gw_jscan_sub *s)
{
    size_t i, kept = s->n < s->cap ? s->n : s->cap;
    struct gw_jscan_field t;
    char key[64], err[256];

    for (i = 0; i < kept; i++) {
        const struct gw_jscan_member *m = &s->members[i];
        if (m->key < obj || m->key + m->klen >= obj + len ||
            m->key[m->klen] != '"')
            fail("a member's key is not in its object", NULL);
        if (m->kescaped || m->klen >= sizeof(key))
            continue;
        memcpy(key, m->key, m->klen);
        key[m->klen] = '\0';
        t = (struct gw_jscan_field){.key = key};
        if (gw_jscan_trusted(obj, len, DEPTH, &t, 1, err, sizeof(err)) < 0) {
            if (strstr(err, "duplicate") == NULL)
                fail("a captured object does not scan alone", err);
            continue;
        }
        if (t.type != m->v.type || t.val != m->v.val || t.len != m->v.len ||
            t.escaped != m->v.escaped)
            fail("a member's capture differs from a scan for it", key);
    }
}

/* The prompt object's captures against scans of its own text. */
static void check_subs(const struct gw_jscan_field *prompt,
                       const struct gw_jscan_sub *ps,
                       const struct gw_jscan_sub *vs)
{
    struct gw_jscan_field t[4];
    char err[256];
    size_t i;

    memset(t, 0, sizeof(t));
    for (i = 0; i < 4; i++)
        t[i].key = pkeys[i];
    if (gw_jscan_trusted(prompt->val, prompt->len, DEPTH, t, 4, err,
                         sizeof(err)) < 0) {
        if (strstr(err, "duplicate") == NULL || ps->dup < 0)
            fail("prompt: the scan alone refuses, the sub has no dup", err);
        return;
    }
    if (ps->dup >= 0)
        fail("prompt: the sub reports a dup the scan alone does not", NULL);
    for (i = 0; i < 4; i++)
        if (t[i].type != ps->fields[i].type || t[i].val != ps->fields[i].val ||
            t[i].len != ps->fields[i].len ||
            t[i].escaped != ps->fields[i].escaped)
            fail("prompt: a captured member differs", pkeys[i]);
    check_members(prompt->val, prompt->len, ps);
    if (ps->fields[3].type == GW_JSON_OBJECT)
        check_members(ps->fields[3].val, ps->fields[3].len, vs);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct gw_jscan_field f[N_FIELDS], pf[4];
    struct gw_jscan_member pm[SUB_ROOM], vm[SUB_ROOM];
    struct gw_jscan_sub ps = {.fields = pf, .n_fields = 4, .members = pm,
                              .cap = SUB_ROOM};
    struct gw_jscan_sub vs = {.members = vm, .cap = SUB_ROOM};
    char err[256];
    json_error_t e;
    json_t *root;
    size_t i;
    int ok;

    memset(f, 0, sizeof(f));
    for (i = 0; i < N_FIELDS; i++)
        f[i].key = keys[i];
    memset(pf, 0, sizeof(pf));
    for (i = 0; i < 4; i++)
        pf[i].key = pkeys[i];
    pf[3].sub = &vs;
    f[4].sub = &ps;
    /* data is exactly size bytes: ASan sees any read past the end */
    ok = gw_jscan((const char *)data, size, DEPTH, f, N_FIELDS, err,
                  sizeof(err)) == 0;
    if (!ok && (err[0] == '\0' || strlen(err) >= sizeof(err)))
        fail("refused without a message", NULL);

    root = json_loadb((const char *)data, size, JSON_ALLOW_NUL, &e);
    if (ok) {
        if (root == NULL) {
            if (!own_limit(&e))
                fail("jscan accepts what jansson refuses", e.text);
            return 0;
        }
        if (!json_is_object(root))
            fail("jscan accepts a root that is not an object", NULL);
        check_trusted(data, size, f);
        if (f[4].type == GW_JSON_OBJECT)
            check_subs(&f[4], &ps, &vs);
        for (i = 0; i < N_FIELDS; i++)
            check_field(&f[i], json_object_get(root, keys[i]));
    } else if (root != NULL && json_is_object(root) &&
               memchr(data, '\0', size) == NULL &&
               strstr(err, "nested deeper") == NULL &&
               strstr(err, "more than once") == NULL &&
               strstr(err, "twice") == NULL &&
               strstr(err, "duplicate") == NULL) {
        fprintf(stderr, "jscan: %s\n", err);
        fail("jscan refuses what jansson accepts", err);
    }
    json_decref(root);
    return 0;
}
