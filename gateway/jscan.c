/*
 * jscan.c - one-pass, allocation-free JSON validation with capture of
 * top-level fields, and of members of their objects two levels down (see
 * jscan.h for the contract).
 *
 * Design: gw_jscan is one loop of labelled states (object_first, key,
 * value, after_value, close, ...) joined by gotos instead of recursion, so
 * the C stack use is fixed whatever the input. The only memory it keeps
 * per open container is one bit ("object" or "array") in a bit array on
 * the stack, GW_JSCAN_MAX_DEPTH bits in all. Strings, the bulk of request
 * bodies, are scanned eight bytes at a time while no byte is special
 * (quote, backslash, control character or non-ASCII); a special byte is
 * then handled alone: escapes are checked, UTF-8 sequences are checked
 * against the table of well-formed sequences (Unicode 15, table 3-7).
 *
 * Invariants:
 *  1. depth is the number of open containers; bit (d-1) of stack says
 *     whether the container at level d is an object; 1 <= depth <=
 *     max_depth inside the root.
 *  2. For a level d <= CAP_DEPTH, cur[d] is set only between a captured
 *     key of the object open at level d and the end of its value; cst[d]
 *     then points at the first byte of that value. lv[d] (d >= 2) is what
 *     the object open at level d captures, NULL when nothing; the root's
 *     captures are fields[0..n_fields).
 *  3. Every read of *p is preceded by a check that p < end; no byte past
 *     json[len) is ever read, so the input need not be NUL-terminated.
 */
#include "gateway/jscan.h"

#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include "registry/json8.h"

struct scan {
    const unsigned char *base; /* borrowed: start of the document */
    char *err;                 /* borrowed from the caller */
    size_t errlen;
    int trusted;               /* gw_jscan_trusted: strings were checked */
};

/* Byte classes inside a string. */
enum {
    C_PLAIN,   /* printable ASCII other than '"' and '\\' */
    C_QUOTE,
    C_ESCAPE,
    C_CTRL,    /* 0x00-0x1f: must be escaped */
    C_UTF2,    /* C2-DF: one continuation byte */
    C_E0,      /* E0: A0-BF then one */
    C_UTF3,    /* E1-EC, EE-EF: two continuation bytes */
    C_ED,      /* ED: 80-9F then one (no surrogates) */
    C_F0,      /* F0: 90-BF then two */
    C_UTF4,    /* F1-F3: three continuation bytes */
    C_F4,      /* F4: 80-8F then two (at most U+10FFFF) */
    C_BAD      /* 80-C1 (continuation or overlong lead), F5-FF */
};

/* C_PLAIN is 0, so only the other classes are listed. */
static const unsigned char str_class[256] = {
    [0x00 ... 0x1f] = C_CTRL,
    ['"'] = C_QUOTE,
    ['\\'] = C_ESCAPE,
    [0x80 ... 0xc1] = C_BAD,
    [0xc2 ... 0xdf] = C_UTF2,
    [0xe0] = C_E0,
    [0xe1 ... 0xec] = C_UTF3,
    [0xed] = C_ED,
    [0xee ... 0xef] = C_UTF3,
    [0xf0] = C_F0,
    [0xf1 ... 0xf3] = C_UTF4,
    [0xf4] = C_F4,
    [0xf5 ... 0xff] = C_BAD,
};

/* A hex digit's value plus one; 0 for any other byte. */
static const unsigned char hex_val[256] = {
    ['0'] = 1, ['1'] = 2, ['2'] = 3, ['3'] = 4, ['4'] = 5,
    ['5'] = 6, ['6'] = 7, ['7'] = 8, ['8'] = 9, ['9'] = 10,
    ['a'] = 11, ['b'] = 12, ['c'] = 13, ['d'] = 14, ['e'] = 15, ['f'] = 16,
    ['A'] = 11, ['B'] = 12, ['C'] = 13, ['D'] = 14, ['E'] = 15, ['F'] = 16,
};

__attribute__((cold, format(printf, 3, 4)))
static void fail(const struct scan *sc, const unsigned char *at,
                 const char *fmt, ...)
{
    va_list ap;
    int n;

    if (sc->errlen == 0)
        return;
    n = snprintf(sc->err, sc->errlen, "invalid JSON at byte %zu: ",
                 (size_t)(at - sc->base));
    if (n < 0 || (size_t)n >= sc->errlen)
        return;
    va_start(ap, fmt);
    vsnprintf(sc->err + n, sc->errlen - (size_t)n, fmt, ap);
    va_end(ap);
}

static inline const unsigned char *skip_ws(const unsigned char *p,
                                           const unsigned char *end)
{
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
        p++;
    return p;
}

/* Four hex digits at p (caller checked 4 bytes remain): the value, or -1. */
static inline long hex4(const unsigned char *p)
{
    int a = hex_val[p[0]] - 1, b = hex_val[p[1]] - 1, c = hex_val[p[2]] - 1,
        d = hex_val[p[3]] - 1;

    if ((a | b | c | d) < 0)
        return -1;
    return (long)a << 12 | b << 8 | c << 4 | d;
}

/* Scans a string whose opening quote is at p[-1]. Returns a pointer to
 * the closing quote, setting *escaped when a backslash was seen, or NULL
 * after writing the error. */
static inline __attribute__((always_inline)) const unsigned char *
scan_string(const struct scan *sc,
                                        const unsigned char *p,
                                        const unsigned char *end,
                                        int *escaped)
{
    const unsigned char *at;
    long cp, lo;

    for (;;) {
        while (end - p >= 8) {
            uint64_t w, m;

            memcpy(&w, p, 8);
            /* checked text: only a quote or a backslash ends a run */
            m = sc->trusted ? json8_quote(w) : json8_special(w);
            if (m == 0) {
                p += 8;
                continue;
            }
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
            p += __builtin_ctzll(m) >> 3;
#endif
            break;
        }
        if (p >= end)
            goto eof;
        if (sc->trusted && str_class[*p] >= C_CTRL) {
            p++;
            continue;
        }
        switch (str_class[*p]) {
        case C_PLAIN:
            p++;
            continue;
        case C_QUOTE:
            return p;
        case C_ESCAPE:
            *escaped = 1;
            at = p++;
            if (p >= end)
                goto eof;
            switch (*p) {
            case '"': case '\\': case '/': case 'b': case 'f': case 'n':
            case 'r': case 't':
                p++;
                continue;
            case 'u':
                break;
            default:
                if (*p >= 0x20 && *p < 0x7f)
                    fail(sc, at, "invalid escape '\\%c' in string", *p);
                else
                    fail(sc, at, "invalid escape '\\' followed by byte "
                         "0x%02x in string", *p);
                return NULL;
            }
            if (end - p < 5)
                goto eof_hex;
            if ((cp = hex4(p + 1)) < 0)
                goto bad_hex;
            p += 5;
            if (cp >= 0xdc00 && cp <= 0xdfff) {
                fail(sc, at, "lone low surrogate '\\u%04lx' in string", cp);
                return NULL;
            }
            if (cp < 0xd800 || cp > 0xdbff)
                continue;
            /* a high surrogate: a low one must follow at once */
            if (end - p < 6) {
                /* a second escape cut short is an early end */
                if (p == end || (p[0] == '\\' && (end - p == 1 ||
                                                  p[1] == 'u')))
                    goto eof;
                goto lone_high;
            }
            if (p[0] != '\\' || p[1] != 'u')
                goto lone_high;
            if ((lo = hex4(p + 2)) < 0) {
                at = p;
                p++;
                goto bad_hex;
            }
            if (lo < 0xdc00 || lo > 0xdfff)
                goto lone_high;
            p += 6;
            continue;
        lone_high:
            fail(sc, at, "high surrogate '\\u%04lx' not followed by a low "
                 "surrogate in string", cp);
            return NULL;
        eof_hex:
            /* a truncated but so far well-formed escape is an early end */
            for (at = p + 1; at < end; at++)
                if (hex_val[*at] == 0)
                    goto bad_hex;
            goto eof;
        bad_hex:
            fail(sc, p - 1, "invalid escape: '\\u' must be followed by four "
                 "hex digits");
            return NULL;
        case C_CTRL:
            fail(sc, p, "unescaped control character 0x%02x in string (write "
                 "it as \\u%04x)", *p, *p);
            return NULL;
        case C_BAD:
            goto bad_utf8;
        default:
            break;
        }
        /* multi-byte UTF-8 sequences, one after another without going
         * back to the word loop while they follow each other (CJK text is
         * one run of three-byte ones): lead byte at p */
        for (;;) {
            unsigned c = str_class[*p], n, lo1 = 0x80, hi1 = 0xbf, i;

            if (c == C_UTF3 && end - p >= 3 &&
                ((p[1] ^ 0x80) | (p[2] ^ 0x80)) < 0x40) {
                p += 3;     /* the common case: any two continuations */
                if (p < end && *p >= 0x80)
                    continue;
                break;
            }
            if (c == C_BAD)
                goto bad_utf8;
            n = c == C_UTF2 ? 1 : c <= C_ED ? 2 : 3;
            if (c == C_E0)
                lo1 = 0xa0;
            else if (c == C_ED)
                hi1 = 0x9f;
            else if (c == C_F0)
                lo1 = 0x90;
            else if (c == C_F4)
                hi1 = 0x8f;
            for (i = 1; i <= n; i++) {
                if (p + i >= end)
                    goto eof;
                if (p[i] < (i == 1 ? lo1 : 0x80) ||
                    p[i] > (i == 1 ? hi1 : 0xbf))
                    goto bad_utf8;
            }
            p += n + 1;
            if (p >= end || *p < 0x80)
                break;
        }
    }
bad_utf8:
    fail(sc, p, "invalid UTF-8 sequence starting with byte 0x%02x in string",
         *p);
    return NULL;
eof:
    fail(sc, end, "unexpected end of input in string");
    return NULL;
}

static inline int is_digit(const unsigned char *p, const unsigned char *end)
{
    return p < end && *p >= '0' && *p <= '9';
}

/* Scans a number starting at p; returns the first byte after it, or NULL
 * after writing the error. */
static const unsigned char *scan_number(const struct scan *sc,
                                        const unsigned char *p,
                                        const unsigned char *end)
{
    if (*p == '-')
        p++;
    if (p >= end)
        goto eof;
    if (*p == '0') {
        p++;
        if (is_digit(p, end)) {
            fail(sc, p - 1, "invalid number: leading zero");
            return NULL;
        }
    } else if (*p >= '1' && *p <= '9') {
        while (is_digit(++p, end))
            ;
    } else {
        fail(sc, p, "invalid number: expected a digit");
        return NULL;
    }
    if (p < end && *p == '.') {
        p++;
        if (p >= end)
            goto eof;
        if (!is_digit(p, end)) {
            fail(sc, p, "invalid number: expected a digit after '.'");
            return NULL;
        }
        while (is_digit(++p, end))
            ;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if (p >= end)
            goto eof;
        if (!is_digit(p, end)) {
            fail(sc, p, "invalid number: expected a digit in the exponent");
            return NULL;
        }
        while (is_digit(++p, end))
            ;
    }
    return p;
eof:
    fail(sc, end, "unexpected end of input in a number");
    return NULL;
}

/* Scans the literal word (true, false or null) at p. */
static const unsigned char *scan_literal(const struct scan *sc,
                                         const unsigned char *p,
                                         const unsigned char *end,
                                         const char *word, size_t n)
{
    size_t have = (size_t)(end - p);

    if (have >= n && memcmp(p, word, n) == 0)
        return p + n;
    if (have < n && memcmp(p, word, have) == 0)
        fail(sc, end, "unexpected end of input in '%s'", word);
    else
        fail(sc, p, "invalid literal: expected a value such as '%s'", word);
    return NULL;
}

/* Captures reach this level: the root's members (1), theirs (2) and
 * theirs (3). */
#define CAP_DEPTH 3

/* Index of the field named by the raw key k[0..n), or -1. */
static long find_field(const struct gw_jscan_field *fields, size_t n_fields,
                       const unsigned char *k, size_t n)
{
    size_t i;

    for (i = 0; i < n_fields; i++) {
        const char *key = fields[i].key;
        /* the first byte settles most keys without a call */
        if (key != NULL && (n == 0 ? key[0] == '\0' : key[0] == (char)k[0] &&
                            strncmp(key, (const char *)k, n) == 0 &&
                            key[n] == '\0'))
            return (long)i;
    }
    return -1;
}

/* The same for a key written with escapes: it is matched by its decoded
 * value, as every JSON parser upstream reads it. Matching raw bytes only
 * let {"model": "a", "mod\u0065l": "b"} through: the gateway checked and
 * routed "a" while the backend, taking the last duplicate, served "b"
 * (and "max_tok\u0065ns" slipped past limits.max_tokens the same way).
 * Only keys with escapes pay for the decoding; requested keys are short,
 * so a key whose value does not fit the buffer matches none. */
static long find_escaped(const struct gw_jscan_field *fields, size_t n_fields,
                         const unsigned char *k, size_t n)
{
    struct gw_jscan_field f = {.type = GW_JSON_STRING, .escaped = 1};
    char buf[64];
    long dn;

    f.val = (const char *)k;
    f.len = n;
    if ((dn = gw_jscan_string(&f, buf, sizeof(buf))) < 0)
        return -1;
    return find_field(fields, n_fields, (const unsigned char *)buf,
                      (size_t)dn);
}

/* f's out members as before a scan: absent (its key and sub are in) */
static void field_clear(struct gw_jscan_field *f)
{
    f->type = GW_JSON_NONE;
    f->val = NULL;
    f->len = 0;
    f->escaped = 0;
}

/* s as it is before its object's first member */
static void sub_reset(struct gw_jscan_sub *s)
{
    size_t i;

    for (i = 0; i < s->n_fields; i++)
        field_clear(&s->fields[i]);
    s->n = 0;
    s->dup = -1;
}

/* Where the value of key k[0..n) of an object captured into s goes:
 * its field, a new member, or NULL (not kept). */
static struct gw_jscan_field *sub_key(struct gw_jscan_sub *s,
                                      const unsigned char *k, size_t n,
                                      int escaped)
{
    struct gw_jscan_member *m;
    long i = -1;

    if (s->n_fields > 0)
        i = escaped ? find_escaped(s->fields, s->n_fields, k, n)
                    : find_field(s->fields, s->n_fields, k, n);
    if (i >= 0) {
        if (s->fields[i].type != GW_JSON_NONE && s->dup < 0)
            s->dup = i;
        return &s->fields[i];
    }
    if (s->members == NULL || s->n++ >= s->cap)
        return NULL;
    m = &s->members[s->n - 1];
    m->key = (const char *)k;
    m->klen = n;
    m->kescaped = escaped;
    field_clear(&m->v);
    m->v.sub = NULL; /* its own members are not captured */
    return &m->v;
}

static inline __attribute__((always_inline)) int
scan_doc(const char *json, size_t len, int max_depth,
         struct gw_jscan_field *fields, size_t n_fields, size_t *n_members,
         char *err, size_t errlen, int trusted)
{
    uint64_t stack[GW_JSCAN_MAX_DEPTH / 64];
    const unsigned char *p, *end, *q, *k, *cst[CAP_DEPTH + 1];
    struct gw_jscan_sub *lv[CAP_DEPTH + 1];
    struct gw_jscan_field *cur[CAP_DEPTH + 1], *cf;
    struct scan sc;
    enum gw_jscan_type t;
    int depth, escaped;
    long cap;
    size_t i, members = 0;

    if (errlen > 0)
        err[0] = '\0';
    sc.base = (const unsigned char *)json;
    sc.err = err;
    sc.errlen = errlen;
    sc.trusted = trusted;
    if (max_depth < 1 || max_depth > GW_JSCAN_MAX_DEPTH) {
        if (errlen > 0)
            snprintf(err, errlen, "JSON depth limit %d out of range 1..%d",
                     max_depth, GW_JSCAN_MAX_DEPTH);
        return -1;
    }
    if ((json == NULL && len > 0) || (fields == NULL && n_fields > 0)) {
        if (errlen > 0)
            snprintf(err, errlen, "gw_jscan called without %s",
                     json == NULL ? "a document" : "its fields");
        return -1;
    }
    for (i = 0; i < n_fields; i++)
        field_clear(&fields[i]);

    p = sc.base;
    end = p + len;
    p = skip_ws(p, end);
    if (p >= end) {
        fail(&sc, p, "expected a JSON object, found end of input");
        return -1;
    }
    if (*p != '{') {
        if (*p != '\0' && strchr("[\"-0123456789tfn", *p) != NULL) {
            if (errlen > 0)
                snprintf(err, errlen, "request body must be a JSON object");
        } else {
            fail(&sc, p, "expected a JSON object");
        }
        return -1;
    }
    p++;
    stack[0] = 1;
    depth = 1;
    cur[1] = NULL;

object_first: /* just after '{' */
    p = skip_ws(p, end);
    if (p >= end)
        goto eof;
    if (*p == '}') {
        p++;
        goto close;
    }
    if (*p != '"') {
        fail(&sc, p, "expected a string key or '}'");
        return -1;
    }
    goto key;

object_next: /* just after ',' in an object */
    p = skip_ws(p, end);
    if (p >= end)
        goto eof;
    if (*p != '"') {
        fail(&sc, p, "expected a string key after ','");
        return -1;
    }

key: /* at the opening quote of a key */
    k = p + 1;
    escaped = 0;
    if ((q = scan_string(&sc, k, end, &escaped)) == NULL)
        return -1;
    p = q + 1;
    if (depth == 1) {
        members++;
        if (n_fields > 0) {
            cap = escaped ? find_escaped(fields, n_fields, k, (size_t)(q - k))
                          : find_field(fields, n_fields, k, (size_t)(q - k));
            if (cap >= 0 && fields[cap].type != GW_JSON_NONE) {
                if (errlen > 0)
                    snprintf(err, errlen, "invalid JSON at byte %zu: "
                             "duplicate key '%s'", (size_t)(k - 1 - sc.base),
                             fields[cap].key);
                return -1;
            }
            cur[1] = cap >= 0 ? &fields[cap] : NULL;
        }
    } else if (depth <= CAP_DEPTH && lv[depth] != NULL) {
        cur[depth] = sub_key(lv[depth], k, (size_t)(q - k), escaped);
    }
    p = skip_ws(p, end);
    if (p >= end)
        goto eof;
    if (*p != ':') {
        fail(&sc, p, "expected ':' after object key");
        return -1;
    }
    p++;
    goto value;

array_first: /* just after '[' */
    p = skip_ws(p, end);
    if (p >= end)
        goto eof;
    if (*p == ']') {
        p++;
        goto close;
    }

value:
    p = skip_ws(p, end);
    if (p >= end)
        goto eof;
    if (depth <= CAP_DEPTH)
        cst[depth] = p;
    switch (*p) {
    case '{':
    case '[':
        if (depth >= max_depth) {
            if (errlen > 0)
                snprintf(err, errlen, "JSON nested deeper than %d levels",
                         max_depth);
            return -1;
        }
        if (*p == '{')
            stack[depth >> 6] |= 1ULL << (depth & 63);
        else
            stack[depth >> 6] &= ~(1ULL << (depth & 63));
        depth++;
        if (depth <= CAP_DEPTH) {
            /* the object a captured field's value is may capture too */
            cf = cur[depth - 1];
            cur[depth] = NULL;
            lv[depth] = NULL;
            if (*p == '{' && cf != NULL && cf->sub != NULL) {
                lv[depth] = cf->sub;
                sub_reset(cf->sub);
            }
        }
        if (*p++ == '{')
            goto object_first;
        goto array_first;
    case '"':
        escaped = 0;
        if ((q = scan_string(&sc, p + 1, end, &escaped)) == NULL)
            return -1;
        if (depth <= CAP_DEPTH && (cf = cur[depth]) != NULL) {
            cf->type = GW_JSON_STRING;
            cf->val = (const char *)p + 1;
            cf->len = (size_t)(q - p - 1);
            cf->escaped = escaped;
            cur[depth] = NULL;
        }
        p = q + 1;
        goto after_value;
    case '-': case '0': case '1': case '2': case '3': case '4': case '5':
    case '6': case '7': case '8': case '9':
        q = scan_number(&sc, p, end);
        t = GW_JSON_NUMBER;
        break;
    case 't':
        q = scan_literal(&sc, p, end, "true", 4);
        t = GW_JSON_TRUE;
        break;
    case 'f':
        q = scan_literal(&sc, p, end, "false", 5);
        t = GW_JSON_FALSE;
        break;
    case 'n':
        q = scan_literal(&sc, p, end, "null", 4);
        t = GW_JSON_NULL;
        break;
    default:
        fail(&sc, p, "expected a value");
        return -1;
    }
    if (q == NULL)
        return -1;
    if (depth <= CAP_DEPTH && (cf = cur[depth]) != NULL) {
        cf->type = t;
        cf->val = (const char *)p;
        cf->len = (size_t)(q - p);
        cur[depth] = NULL;
    }
    p = q;
    goto after_value;

close: /* just after the '}' or ']' closing the container at level depth */
    depth--;
    if (depth == 0)
        goto done;
    if (depth <= CAP_DEPTH && (cf = cur[depth]) != NULL) {
        cf->type = stack[depth >> 6] >> (depth & 63) & 1
                       ? GW_JSON_OBJECT : GW_JSON_ARRAY;
        cf->val = (const char *)cst[depth];
        cf->len = (size_t)(p - cst[depth]);
        cur[depth] = NULL;
    }

after_value:
    p = skip_ws(p, end);
    if (p >= end)
        goto eof;
    if (stack[(depth - 1) >> 6] >> ((depth - 1) & 63) & 1) {
        if (*p == ',') {
            p++;
            goto object_next;
        }
        if (*p == '}') {
            p++;
            goto close;
        }
        fail(&sc, p, "expected ',' or '}' after an object member");
        return -1;
    }
    if (*p == ',') {
        p++;
        goto value;
    }
    if (*p == ']') {
        p++;
        goto close;
    }
    fail(&sc, p, "expected ',' or ']' after an array element");
    return -1;

done:
    p = skip_ws(p, end);
    if (p < end) {
        fail(&sc, p, "unexpected data after the JSON document");
        return -1;
    }
    if (n_members != NULL)
        *n_members = members;
    return 0;

eof:
    fail(&sc, end, "unexpected end of input");
    return -1;
}

/* Writes code point cp as UTF-8 at out[o..); returns bytes written, or 0
 * when they would not leave room for the final NUL below cap. */
static size_t put_utf8(char *out, size_t o, size_t cap, unsigned long cp)
{
    size_t n = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
    unsigned char *b = (unsigned char *)out + o;

    if (o + n >= cap)
        return 0;
    switch (n) {
    case 1:
        b[0] = (unsigned char)cp;
        break;
    case 2:
        b[0] = (unsigned char)(0xc0 | cp >> 6);
        b[1] = (unsigned char)(0x80 | (cp & 0x3f));
        break;
    case 3:
        b[0] = (unsigned char)(0xe0 | cp >> 12);
        b[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3f));
        b[2] = (unsigned char)(0x80 | (cp & 0x3f));
        break;
    default:
        b[0] = (unsigned char)(0xf0 | cp >> 18);
        b[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3f));
        b[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3f));
        b[3] = (unsigned char)(0x80 | (cp & 0x3f));
        break;
    }
    return n;
}

int gw_jscan(const char *json, size_t len, int max_depth,
             struct gw_jscan_field *fields, size_t n_fields,
             char *err, size_t errlen)
{
    return scan_doc(json, len, max_depth, fields, n_fields, NULL, err,
                    errlen, 0);
}

int gw_jscan_count(const char *json, size_t len, int max_depth,
                   struct gw_jscan_field *fields, size_t n_fields,
                   size_t *n_members, char *err, size_t errlen)
{
    return scan_doc(json, len, max_depth, fields, n_fields, n_members, err,
                    errlen, 0);
}

int gw_jscan_trusted(const char *json, size_t len, int max_depth,
                     struct gw_jscan_field *fields, size_t n_fields,
                     char *err, size_t errlen)
{
    return scan_doc(json, len, max_depth, fields, n_fields, NULL, err,
                    errlen, 1);
}

long gw_jscan_string(const struct gw_jscan_field *f, char *out, size_t outcap)
{
    const unsigned char *s;
    size_t i, o = 0, n, w;
    long cp, lo;

    if (f == NULL || f->type != GW_JSON_STRING || out == NULL || outcap == 0 ||
        f->len > (size_t)LONG_MAX - 1)
        return -1;
    s = (const unsigned char *)f->val;
    n = f->len;
    if (!f->escaped) {
        if (n >= outcap)
            return -1;
        memcpy(out, s, n);
        out[n] = '\0';
        return (long)n;
    }
    /* Validated by gw_jscan, but every escape is checked again so that a
     * field filled by hand cannot make this read out of bounds. */
    for (i = 0; i < n;) {
        if (s[i] != '\\') {
            if (o + 1 >= outcap)
                return -1;
            out[o++] = (char)s[i++];
            continue;
        }
        if (i + 1 >= n)
            return -1;
        switch (s[i + 1]) {
        case '"': cp = '"'; break;
        case '\\': cp = '\\'; break;
        case '/': cp = '/'; break;
        case 'b': cp = '\b'; break;
        case 'f': cp = '\f'; break;
        case 'n': cp = '\n'; break;
        case 'r': cp = '\r'; break;
        case 't': cp = '\t'; break;
        case 'u':
            if (n - i < 6 || (cp = hex4(s + i + 2)) < 0)
                return -1;
            if (cp >= 0xd800 && cp <= 0xdbff) {
                if (n - i < 12 || s[i + 6] != '\\' || s[i + 7] != 'u' ||
                    (lo = hex4(s + i + 8)) < 0xdc00 || lo > 0xdfff)
                    return -1;
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                i += 6;
            } else if ((cp >= 0xdc00 && cp <= 0xdfff) || cp == 0) {
                return -1;
            }
            i += 4;
            break;
        default:
            return -1;
        }
        i += 2;
        if ((w = put_utf8(out, o, outcap, (unsigned long)cp)) == 0)
            return -1;
        o += w;
    }
    out[o] = '\0';
    return (long)o;
}
