/*
 * canon.c - canonical JSON for cache keys (see canon.h).
 *
 * One pass writes each value in canonical form into the output. An object
 * is written with its members in input order while their spans in the
 * output are noted; then the members' region is put in key order (one
 * copy through a scratch buffer). A level copies only its own region, so
 * the cost is the size times the depth of objects, bounded by MAX_DEPTH;
 * the caller keeps bodies small enough (the cache uses jansson above its
 * limit). Keys compare by their bytes as written (escapes not decoded):
 * two spellings of one key give two forms, a miss, never a wrong match.
 *
 * Input must be valid JSON (the gateway validated it with gw_jscan);
 * this code still never reads past len.
 */
#include "gateway/canon.h"

#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 128
#define MAX_MEMBERS_STACK 32

struct span {
    size_t key_off, key_len; /* the key without quotes, in the output */
    size_t off, len;         /* the member "key":value, in the output */
};

struct ctx {
    struct gw_canon *c;
    const char *p, *end;
    struct gw_canon_info *info; /* stream_options seen while skipped */
};

void gw_canon_init(struct gw_canon *c)
{
    memset(c, 0, sizeof(*c));
}

void gw_canon_release(struct gw_canon *c)
{
    free(c->buf);
    free(c->scratch);
    memset(c, 0, sizeof(*c));
}

static int out(struct ctx *x, const char *s, size_t n)
{
    struct gw_canon *c = x->c;

    if (c->len + n > c->cap) {
        size_t cap = c->cap ? c->cap : 1024;
        while (cap < c->len + n)
            cap *= 2;
        char *b = realloc(c->buf, cap);
        if (b == NULL)
            return -1;
        c->buf = b;
        c->cap = cap;
    }
    memcpy(c->buf + c->len, s, n);
    c->len += n;
    return 0;
}

static void ws(struct ctx *x)
{
    while (x->p < x->end && (*x->p == ' ' || *x->p == '\t' ||
                             *x->p == '\n' || *x->p == '\r'))
        x->p++;
}

/* A string token at x->p, copied with its quotes. */
static int string(struct ctx *x)
{
    const char *s = x->p, *q = s + 1;

    while (q < x->end && *q != '"')
        q += *q == '\\' ? 2 : 1;
    if (q >= x->end)
        return -1;
    x->p = q + 1;
    return out(x, s, (size_t)(x->p - s));
}

static int value(struct ctx *x, int depth);

static int cmp_key(const struct gw_canon *c, const struct span *a,
                   const struct span *b)
{
    size_t n = a->key_len < b->key_len ? a->key_len : b->key_len;
    int r = memcmp(c->buf + a->key_off, c->buf + b->key_off, n);

    if (r)
        return r;
    return a->key_len < b->key_len ? -1 : a->key_len > b->key_len;
}

/* Insertion sort: objects in requests are small, and it is stable. */
static void sort_spans(const struct gw_canon *c, struct span *v, size_t n)
{
    for (size_t i = 1; i < n; i++) {
        struct span t = v[i];
        size_t j = i;
        while (j > 0 && cmp_key(c, &v[j - 1], &t) > 0) {
            v[j] = v[j - 1];
            j--;
        }
        v[j] = t;
    }
}

/* Whether the canonical value o[0..n) is an object with the member
 * "include_usage":true of its own. A search of the whole text also
 * matched it inside a nested value ({"x":{"include_usage":true}}), where
 * OpenAI does not read it and cache.c's jansson path does not either
 * (found by tests/fuzz/fuzz_canon). */
static int usage_true(const char *o, size_t n)
{
    size_t i;
    int depth = 0, in_str = 0;

    for (i = 0; i < n; i++) {
        char ch = o[i];
        if (in_str) {
            if (ch == '\\')
                i++;
            else if (ch == '"')
                in_str = 0;
        } else if (ch == '"') {
            if (depth == 1 && (o[i - 1] == '{' || o[i - 1] == ',') &&
                n - i >= 20 && memcmp(o + i, "\"include_usage\":true", 20) == 0)
                return 1;
            in_str = 1;
        } else if (ch == '{' || ch == '[') {
            depth++;
        } else if (ch == '}' || ch == ']') {
            depth--;
        }
    }
    return 0;
}

static int object(struct ctx *x, int depth, const char *const *skip)
{
    struct span stack[MAX_MEMBERS_STACK], *v = stack;
    size_t n = 0, cap = MAX_MEMBERS_STACK, start, i;
    int rc = -1;

    x->p++; /* { */
    if (out(x, "{", 1) < 0)
        return -1;
    start = x->c->len;
    for (;;) {
        ws(x);
        if (x->p >= x->end)
            goto out;
        if (*x->p == '}') {
            x->p++;
            break;
        }
        if (*x->p == ',') {
            x->p++;
            continue;
        }
        if (*x->p != '"')
            goto out;
        if (n == cap) {
            struct span *nv = malloc(2 * cap * sizeof(*nv));
            if (nv == NULL)
                goto out;
            memcpy(nv, v, n * sizeof(*v));
            if (v != stack)
                free(v);
            v = nv;
            cap *= 2;
        }
        size_t off = x->c->len;
        if (n > 0 && out(x, ",", 1) < 0)
            goto out;
        size_t moff = x->c->len;
        if (string(x) < 0)
            goto out;
        size_t kend = x->c->len;
        ws(x);
        if (x->p >= x->end || *x->p != ':')
            goto out;
        x->p++;
        if (out(x, ":", 1) < 0)
            goto out;
        ws(x);
        if (value(x, depth + 1) < 0)
            goto out;
        if (skip) {
            const char *k = x->c->buf + moff + 1;
            size_t kl = kend - moff - 2;
            for (i = 0; skip[i]; i++)
                if (strlen(skip[i]) == kl && memcmp(skip[i], k, kl) == 0)
                    break;
            if (skip[i]) {
                if (kl == 14 && memcmp(k, "stream_options", 14) == 0) {
                    x->info->has_stream_options = 1;
                    x->info->include_usage = usage_true(
                        x->c->buf + kend + 1, x->c->len - kend - 1);
                }
                x->c->len = off; /* left out */
                continue;
            }
        }
        v[n].key_off = moff + 1;
        v[n].key_len = kend - moff - 2;
        v[n].off = moff;
        v[n].len = x->c->len - moff;
        n++;
    }
    if (n > 1) {
        size_t region = x->c->len - start, pos = 0;
        if (region > x->c->scratch_cap) {
            char *s = realloc(x->c->scratch, region);
            if (s == NULL)
                goto out;
            x->c->scratch = s;
            x->c->scratch_cap = region;
        }
        /* keys are compared in place, so sort before moving bytes */
        sort_spans(x->c, v, n);
        for (i = 0; i < n; i++) {
            if (i > 0)
                x->c->scratch[pos++] = ',';
            memcpy(x->c->scratch + pos, x->c->buf + v[i].off, v[i].len);
            pos += v[i].len;
        }
        memcpy(x->c->buf + start, x->c->scratch, pos);
        x->c->len = start + pos;
    }
    rc = out(x, "}", 1);
out:
    if (v != stack)
        free(v);
    return rc;
}

static int array(struct ctx *x, int depth)
{
    int first = 1;

    x->p++; /* [ */
    if (out(x, "[", 1) < 0)
        return -1;
    for (;;) {
        ws(x);
        if (x->p >= x->end)
            return -1;
        if (*x->p == ']') {
            x->p++;
            return out(x, "]", 1);
        }
        if (*x->p == ',') {
            x->p++;
            continue;
        }
        if (!first && out(x, ",", 1) < 0)
            return -1;
        first = 0;
        if (value(x, depth + 1) < 0)
            return -1;
    }
}

static int value(struct ctx *x, int depth)
{
    const char *s;

    if (depth > MAX_DEPTH || x->p >= x->end)
        return -1;
    switch (*x->p) {
    case '{':
        return object(x, depth, NULL);
    case '[':
        return array(x, depth);
    case '"':
        return string(x);
    default:
        /* number, true, false, null: up to a delimiter */
        s = x->p;
        while (x->p < x->end && !strchr(",}] \t\r\n", *x->p))
            x->p++;
        return x->p > s ? out(x, s, (size_t)(x->p - s)) : -1;
    }
}

/* ------------------------------------------------ top-level facts */

/* The values of the top-level members named in keys (NULL-terminated),
 * found in one walk over the canonical text: vals[i]/lens[i], NULL when
 * absent. Nested values are stepped over (strings skipped whole). */
static void members(const struct gw_canon *c, const char *const *keys,
                    const char **vals, size_t *lens)
{
    const char *p = c->buf + 1, *end = c->buf + c->len - 1;
    size_t i;

    for (i = 0; keys[i]; i++)
        vals[i] = NULL, lens[i] = 0;
    while (p < end) {
        const char *k = p + 1, *q = k;
        while (*q != '"')
            q += *q == '\\' ? 2 : 1;
        const char *v = q + 2, *e = v;
        int d = 0;
        while (e < end && (d > 0 || *e != ',')) {
            if (*e == '"') {
                e++;
                while (*e != '"')
                    e += *e == '\\' ? 2 : 1;
            } else if (*e == '{' || *e == '[') {
                d++;
            } else if (*e == '}' || *e == ']') {
                d--;
            }
            e++;
        }
        for (i = 0; keys[i]; i++)
            if (strlen(keys[i]) == (size_t)(q - k) &&
                memcmp(k, keys[i], (size_t)(q - k)) == 0) {
                vals[i] = v;
                lens[i] = (size_t)(e - v);
            }
        p = e + 1;
    }
}

static int is(const char *v, size_t n, const char *lit)
{
    return v && n == strlen(lit) && memcmp(v, lit, n) == 0;
}

static int is_zero(const char *v, size_t n)
{
    char num[64];

    if (v == NULL || n == 0 || n >= sizeof(num) || !strchr("-0123456789", *v))
        return 0;
    memcpy(num, v, n);
    num[n] = '\0';
    return strtod(num, NULL) == 0.0;
}

static int is_integer(const char *v, size_t n)
{
    size_t i = v && n && *v == '-' ? 1 : 0;

    if (v == NULL || i == n)
        return 0;
    for (; i < n; i++)
        if (v[i] < '0' || v[i] > '9')
            return 0;
    return 1;
}

static void facts(const struct gw_canon *c, struct gw_canon_info *info)
{
    /* temperature, n, seed, then the other sampling parameters */
    static const char *const keys[] = {"temperature", "n", "seed", "top_p",
                                       "top_k", "min_p", "typical_p", NULL};
    const char *v[8];
    size_t l[8];

    members(c, keys, v, l);
    int one = v[1] == NULL || is(v[1], l[1], "null") || is(v[1], l[1], "1");
    int any = v[0] || v[3] || v[4] || v[5] || v[6];
    info->deterministic = is_zero(v[0], l[0]) ||
                          (is_integer(v[2], l[2]) && one) || (!any && one);
}

int gw_canon_body(struct gw_canon *c, const char *text, size_t len,
                  const char *const *skip, struct gw_canon_info *info)
{
    struct ctx x = {c, text, text + len, info};

    memset(info, 0, sizeof(*info));
    c->len = 0;
    ws(&x);
    if (x.p >= x.end || *x.p != '{' || object(&x, 0, skip) < 0)
        return -1;
    facts(c, info);
    return 0;
}
