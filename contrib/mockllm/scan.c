/*
 * scan.c: read the few fields mockllm needs from a chat or completion
 * request without building a JSON tree.
 *
 * jansson costs a malloc per value and was a third of the mock's CPU per
 * request; this recursive-descent scanner validates the whole body in one
 * pass and keeps only spans and counts.  It is deliberately partial: any
 * case it does not answer exactly the way the jansson path would (escaped
 * keys or model names, deep nesting, long numbers, a missing or mistyped
 * field) makes it give up, and the caller parses with jansson instead.
 *
 * Invariants:
 *  1. Returning 0 implies jansson would accept the body (same grammar:
 *     strict UTF-8, no \u0000, surrogate pairs checked, no trailing bytes)
 *     and that the fields in struct mock_scan equal what the jansson path
 *     computes (later duplicate keys win, as in jansson).
 *  2. Nothing is allocated; out only points into the body.
 */
#include "contrib/mockllm/scan.h"

#include <string.h>

#define SCAN_MAX_DEPTH 64
#define SCAN_MAX_NUMBER 15

struct sc {
    const unsigned char *p;
    const unsigned char *e;
    int depth;
};

static void
ws(struct sc *s)
{
    while (s->p < s->e && (*s->p == ' ' || *s->p == '\n' || *s->p == '\r' || *s->p == '\t'))
        s->p++;
}

static int
peek(struct sc *s)
{
    return s->p < s->e ? *s->p : -1;
}

static int
expect(struct sc *s, int c)
{
    if (s->p >= s->e || *s->p != c)
        return -1;
    s->p++;
    return 0;
}

static int
hex4(const unsigned char *p, unsigned *out)
{
    unsigned v = 0;
    int i;

    for (i = 0; i < 4; i++) {
        unsigned c = p[i], d;

        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (c >= 'a' && c <= 'f')
            d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            d = c - 'A' + 10;
        else
            return -1;
        v = v * 16 + d;
    }
    *out = v;
    return 0;
}

/* Validate one UTF-8 sequence starting at p (first byte >= 0x80). */
static int
utf8_seq(const unsigned char *p, const unsigned char *e, size_t *n)
{
    unsigned c = p[0], cp, min;
    size_t len, i;

    if (c >= 0xc2 && c <= 0xdf) {
        len = 2; cp = c & 0x1f; min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3; cp = c & 0x0f; min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4; cp = c & 0x07; min = 0x10000;
    } else {
        return -1;
    }
    if ((size_t)(e - p) < len)
        return -1;
    for (i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return -1;
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return -1;
    *n = len;
    return 0;
}

/*
 * Read a string at s->p (on the opening quote).  raw/raw_len: the bytes
 * between the quotes; decoded: its length once unescaped; esc: whether it
 * holds an escape.  Any of the outputs may be NULL.
 */
static int
string(struct sc *s, const char **raw, size_t *raw_len, size_t *decoded, int *esc)
{
    const unsigned char *start;
    size_t dec = 0;
    int has_esc = 0;

    if (expect(s, '"') < 0)
        return -1;
    start = s->p;
    for (;;) {
        unsigned c;

        if (s->p >= s->e)
            return -1;
        c = *s->p;
        if (c == '"')
            break;
        if (c < 0x20)
            return -1;
        if (c == '\\') {
            has_esc = 1;
            if (s->e - s->p < 2)
                return -1;
            c = s->p[1];
            if (c == 'u') {
                unsigned cp, lo;

                if (s->e - s->p < 6 || hex4(s->p + 2, &cp) < 0 || cp == 0)
                    return -1;
                s->p += 6;
                if (cp >= 0xdc00 && cp <= 0xdfff)
                    return -1;
                if (cp >= 0xd800 && cp <= 0xdbff) {
                    if (s->e - s->p < 6 || s->p[0] != '\\' || s->p[1] != 'u' ||
                        hex4(s->p + 2, &lo) < 0 || lo < 0xdc00 || lo > 0xdfff)
                        return -1;
                    s->p += 6;
                    dec += 4;
                } else {
                    dec += cp < 0x80 ? 1 : cp < 0x800 ? 2 : 3;
                }
                continue;
            }
            if (!strchr("\"\\/bfnrt", (int)c) || c == '\0')
                return -1;
            s->p += 2;
            dec++;
            continue;
        }
        if (c >= 0x80) {
            size_t n;

            if (utf8_seq(s->p, s->e, &n) < 0)
                return -1;
            s->p += n;
            dec += n;
            continue;
        }
        s->p++;
        dec++;
    }
    if (raw)
        *raw = (const char *)start;
    if (raw_len)
        *raw_len = (size_t)(s->p - start);
    if (decoded)
        *decoded = dec;
    if (esc)
        *esc = has_esc;
    s->p++; /* closing quote */
    return 0;
}

/* Read a number; *is_int and *val for plain integers of up to 15 digits. */
static int
number(struct sc *s, int *is_int, long *val)
{
    const unsigned char *start = s->p;
    long v = 0;
    int neg = 0, integer = 1;

    if (peek(s) == '-') {
        neg = 1;
        s->p++;
    }
    if (peek(s) == '0') {
        s->p++;
    } else if (peek(s) >= '1' && peek(s) <= '9') {
        while (peek(s) >= '0' && peek(s) <= '9') {
            if (v < 100000000000000000L) /* long ones are refused below */
                v = v * 10 + (*s->p - '0');
            s->p++;
        }
    } else {
        return -1;
    }
    if (peek(s) == '.') {
        integer = 0;
        s->p++;
        if (!(peek(s) >= '0' && peek(s) <= '9'))
            return -1;
        while (peek(s) >= '0' && peek(s) <= '9')
            s->p++;
    }
    if (peek(s) == 'e' || peek(s) == 'E') {
        integer = 0;
        s->p++;
        if (peek(s) == '+' || peek(s) == '-')
            s->p++;
        if (!(peek(s) >= '0' && peek(s) <= '9'))
            return -1;
        while (peek(s) >= '0' && peek(s) <= '9')
            s->p++;
    }
    /* long numbers may overflow in jansson: let it decide */
    if (s->p - start > SCAN_MAX_NUMBER)
        return -1;
    if (is_int)
        *is_int = integer;
    if (val)
        *val = neg ? -v : v;
    return 0;
}

static int
literal(struct sc *s, const char *word)
{
    size_t n = strlen(word);

    if ((size_t)(s->e - s->p) < n || memcmp(s->p, word, n) != 0)
        return -1;
    s->p += n;
    return 0;
}

static int value(struct sc *s);

/*
 * Iterate a container's items: call with s on `open`; body runs at each
 * item (s on its first byte), reads it and may return -1; the items are
 * separated by commas and end at `close`.
 */
#define FOR_ITEMS(s, open, close, body)                                      \
    do {                                                                     \
        if (expect(s, open) < 0 || ++(s)->depth > SCAN_MAX_DEPTH)            \
            return -1;                                                       \
        ws(s);                                                               \
        if (peek(s) == (close)) {                                            \
            (s)->p++;                                                        \
            (s)->depth--;                                                    \
            break;                                                           \
        }                                                                    \
        for (;;) {                                                           \
            body                                                             \
            ws(s);                                                           \
            if (peek(s) == ',') {                                            \
                (s)->p++;                                                    \
                ws(s);                                                       \
                continue;                                                    \
            }                                                                \
            if (expect(s, close) < 0)                                        \
                return -1;                                                   \
            break;                                                           \
        }                                                                    \
        (s)->depth--;                                                        \
    } while (0)

/* The members of the object at s->p: body runs at each value, its key in
 * keyvar[0..keylen) (a key with escapes gives up). */
#define FOR_MEMBERS(s, keyvar, keylen, body)                                 \
    FOR_ITEMS(s, '{', '}', {                                                 \
        const char *keyvar;                                                  \
        size_t keylen;                                                       \
        int kesc_;                                                           \
        if (string(s, &keyvar, &keylen, NULL, &kesc_) < 0 || kesc_)          \
            return -1;                                                       \
        ws(s);                                                               \
        if (expect(s, ':') < 0)                                              \
            return -1;                                                       \
        ws(s);                                                               \
        body                                                                 \
    })

/* The elements of the array at s->p, body run at each. */
#define FOR_ELEMENTS(s, body) FOR_ITEMS(s, '[', ']', body)

#define KEY_IS(k, n, lit) ((n) == sizeof(lit) - 1 && memcmp((k), (lit), (n)) == 0)


static int
array_values(struct sc *s)
{
    FOR_ELEMENTS(s, {
        if (value(s) < 0)
            return -1;
    });
    return 0;
}

static int
object_values(struct sc *s)
{
    FOR_MEMBERS(s, k, n, {
        (void)k;
        (void)n;
        if (value(s) < 0)
            return -1;
    });
    return 0;
}

static int
value(struct sc *s)
{
    switch (peek(s)) {
    case '"': return string(s, NULL, NULL, NULL, NULL);
    case '{': return object_values(s);
    case '[': return array_values(s);
    case 't': return literal(s, "true");
    case 'f': return literal(s, "false");
    case 'n': return literal(s, "null");
    default: return number(s, NULL, NULL);
    }
}

/* Decoded bytes of the "text" of a content part (0 unless a string). */
static int
part_text(struct sc *s, size_t *bytes)
{
    *bytes = 0;
    if (peek(s) != '{')
        return value(s);
    FOR_MEMBERS(s, k, n, {
        if (KEY_IS(k, n, "text") && peek(s) == '"') {
            if (string(s, NULL, NULL, bytes, NULL) < 0)
                return -1;
        } else {
            if (KEY_IS(k, n, "text"))
                *bytes = 0;
            if (value(s) < 0)
                return -1;
        }
    });
    return 0;
}

/* Decoded bytes of a message content: a string or an array of parts. */
static int
content(struct sc *s, size_t *bytes)
{
    *bytes = 0;
    if (peek(s) == '"')
        return string(s, NULL, NULL, bytes, NULL);
    if (peek(s) != '[')
        return value(s);
    FOR_ELEMENTS(s, {
        size_t b;
        if (part_text(s, &b) < 0)
            return -1;
        *bytes += b;
    });
    return 0;
}

static int
message(struct sc *s, size_t *bytes)
{
    *bytes = 0;
    if (peek(s) != '{')
        return value(s);
    FOR_MEMBERS(s, k, n, {
        if (KEY_IS(k, n, "content")) {
            if (content(s, bytes) < 0)
                return -1;
        } else if (value(s) < 0) {
            return -1;
        }
    });
    return 0;
}

static int
messages(struct sc *s, size_t *count, size_t *bytes)
{
    *count = 0;
    *bytes = 0;
    FOR_ELEMENTS(s, {
        size_t b;
        if (message(s, &b) < 0)
            return -1;
        *bytes += b;
        (*count)++;
    });
    return 0;
}

static int
prompt(struct sc *s, size_t *bytes)
{
    *bytes = 0;
    if (peek(s) == '"')
        return string(s, NULL, NULL, bytes, NULL);
    FOR_ELEMENTS(s, {
        size_t b = 4;
        if (peek(s) == '"') {
            if (string(s, NULL, NULL, &b, NULL) < 0)
                return -1;
        } else if (value(s) < 0) {
            return -1;
        }
        *bytes += b;
    });
    return 0;
}

/* max_tokens-like: null -> -1, positive integer -> it; else give up. */
static int
max_tokens(struct sc *s, long *out)
{
    int is_int;
    long v;

    if (peek(s) == 'n') {
        *out = -1;
        return literal(s, "null");
    }
    if (number(s, &is_int, &v) < 0 || !is_int || v < 1)
        return -1;
    *out = v > 1000000000 ? 1000000000 : v;
    return 0;
}

static int
stream_options(struct sc *s, int *include_usage)
{
    *include_usage = 0;
    if (peek(s) != '{')
        return value(s);
    FOR_MEMBERS(s, k, n, {
        if (KEY_IS(k, n, "include_usage")) {
            *include_usage = peek(s) == 't';
            if (value(s) < 0)
                return -1;
        } else if (value(s) < 0) {
            return -1;
        }
    });
    return 0;
}

static int
request(struct sc *s, struct mock_scan *out, long mt[2])
{
    FOR_MEMBERS(s, k, n, {
        if (KEY_IS(k, n, "model")) {
            int esc;

            if (peek(s) != '"' ||
                string(s, &out->model, &out->model_len, NULL, &esc) < 0 || esc)
                return -1;
        } else if (KEY_IS(k, n, "messages")) {
            size_t count;

            if (peek(s) != '[' || messages(s, &count, &out->content_bytes) < 0)
                return -1;
            out->has_messages = count > 0;
        } else if (KEY_IS(k, n, "prompt")) {
            if ((peek(s) != '"' && peek(s) != '[') || prompt(s, &out->prompt_bytes) < 0)
                return -1;
            out->has_prompt = 1;
        } else if (KEY_IS(k, n, "max_tokens")) {
            if (max_tokens(s, &mt[0]) < 0)
                return -1;
        } else if (KEY_IS(k, n, "max_completion_tokens")) {
            if (max_tokens(s, &mt[1]) < 0)
                return -1;
        } else if (KEY_IS(k, n, "stream")) {
            if (peek(s) == 't') {
                out->stream = 1;
                if (literal(s, "true") < 0)
                    return -1;
            } else {
                out->stream = 0;
                if (literal(s, peek(s) == 'f' ? "false" : "null") < 0)
                    return -1;
            }
        } else if (KEY_IS(k, n, "stream_options")) {
            if (stream_options(s, &out->include_usage) < 0)
                return -1;
        } else if (value(s) < 0) {
            return -1;
        }
    });
    return 0;
}

int
mock_scan_request(const char *body, size_t len, struct mock_scan *out)
{
    struct sc s = {(const unsigned char *)body, (const unsigned char *)body + len, 0};
    long mt[2] = {-1, -1};

    memset(out, 0, sizeof(*out));
    ws(&s);
    if (peek(&s) != '{' || request(&s, out, mt) < 0)
        return -1;
    ws(&s);
    if (s.p != s.e || !out->model || out->model_len == 0)
        return -1;
    out->max_tokens = mt[0];
    if (mt[1] >= 0 && (out->max_tokens < 0 || mt[1] < out->max_tokens))
        out->max_tokens = mt[1];
    return 0;
}
