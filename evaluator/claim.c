/*
 * claim.c - vocabulary, claim extraction and fact checking (see claim.h).
 *
 * Design:
 * - The vocabulary is two string maps (attribute names, values) with ids,
 *   and each value keeps the list of attributes it belongs to (纯色 is both
 *   a colour and a pattern).
 * - The matcher is a byte trie over the normalised values that are at
 *   least min_chars code points long: the root has a 256-entry table (most
 *   text positions fail there at once), deeper edges live in one
 *   open-addressing hash keyed by (node, byte). Matching walks the trie
 *   from each code point start and keeps the longest value that ends on a
 *   word boundary (ASCII values must not touch ASCII letters or digits).
 * - A bitmap of the code points that start some value lets the scan skip
 *   most positions without touching the trie; the same pass tracks clauses
 *   (split at ，。！？；、 and ASCII punctuation) and pairing cues (搭配, "pair
 *   with", ...), after which a claim is about another item.
 * - The checker owns per-value and per-attribute stamp arrays, so marking
 *   "mentioned" or "present" costs O(1) and clearing costs nothing (the
 *   stamp moves on). Its memory is fixed once the vocabulary is built.
 * - The first pass feeds facts as JSON text: a small scanner reads objects
 *   of strings, numbers and arrays of them without building a JSON tree,
 *   and hands anything else to jansson, so both paths add the same values.
 * - Memory is bounded by EVL_VOCAB_VALUES_MAX and EVL_VOCAB_BYTES_MAX (the
 *   trie has at most one node per byte of value text).
 *
 * Invariants: after evl_vocab_build the vocabulary is read-only; value and
 * attribute ids are dense and stable; every string stored is normalised
 * (trimmed, ASCII lower-case) and at most EVL_VALUE_BYTES_MAX-1 bytes.
 */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "evaluator/claim.h"

/* ---- string map ---------------------------------------------------------- */

struct strmap {
    uint32_t *slots;         /* owned: id + 1, 0 = empty */
    size_t cap;              /* power of two */
    char **keys;             /* borrowed from the owner's id-indexed array */
};

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ULL;   /* FNV-1a */
    size_t i;

    for (i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ULL;
    }
    return h ^ (h >> 29);
}

static long strmap_get(const struct strmap *m, const char *s, size_t n)
{
    size_t i;

    if (m->cap == 0)
        return -1;
    i = hash_bytes(s, n) & (m->cap - 1);
    while (m->slots[i]) {
        const char *k = m->keys[m->slots[i] - 1];
        if (strlen(k) == n && memcmp(k, s, n) == 0)
            return (long)m->slots[i] - 1;
        i = (i + 1) & (m->cap - 1);
    }
    return -1;
}

/* Rehash so that `count + 1` entries fit at load <= 1/2. */
static int strmap_reserve(struct strmap *m, size_t count, char **keys)
{
    size_t cap = m->cap ? m->cap : 64, i;
    uint32_t *slots;

    m->keys = keys;
    if ((count + 1) * 2 <= m->cap)
        return 0;
    while ((count + 1) * 2 > cap)
        cap *= 2;
    slots = calloc(cap, sizeof(*slots));
    if (slots == NULL)
        return -1;
    for (i = 0; i < count; i++) {
        size_t j = hash_bytes(keys[i], strlen(keys[i])) & (cap - 1);
        while (slots[j])
            j = (j + 1) & (cap - 1);
        slots[j] = (uint32_t)i + 1;
    }
    free(m->slots);
    m->slots = slots;
    m->cap = cap;
    return 0;
}

static void strmap_put(struct strmap *m, const char *s, size_t n, uint32_t id)
{
    size_t i = hash_bytes(s, n) & (m->cap - 1);

    while (m->slots[i])
        i = (i + 1) & (m->cap - 1);
    m->slots[i] = id + 1;
}

/* ---- vocabulary ---------------------------------------------------------- */

struct vvalue {
    uint32_t *attrs;         /* owned: attribute ids */
    uint16_t n_attrs, cap_attrs;
    uint8_t matchable;       /* long enough to be matched in copy */
};

struct evl_vocab {
    int min_chars;
    int built;
    char **attr_names;       /* owned: n_attrs strings */
    size_t n_attrs, cap_attr_names;
    struct strmap attr_map;
    char **value_texts;      /* owned: n_values strings */
    struct vvalue *values;   /* owned: n_values entries */
    size_t n_values, cap_values;
    size_t value_bytes;      /* total text of the values */
    int full;                /* a limit was hit: the vocabulary is incomplete */
    struct strmap value_map;
    /* trie */
    uint32_t root[256];      /* child node of the root per byte, 0 = none */
    uint8_t first_cp[8192];  /* bitmap: BMP code points that start a value */
    int first_astral;        /* some value starts beyond the BMP */
    uint32_t *node_value;    /* owned: value id + 1 per node, 0 = none */
    size_t n_nodes, cap_nodes;
    uint64_t *edge_keys;     /* owned: (node << 8 | byte) + 1, 0 = empty */
    uint32_t *edge_vals;     /* owned: child node */
    size_t cap_edges, n_edges;
};

static void set_err(char **err, const char *fmt, ...)
{
    va_list ap;
    char *s = NULL;

    if (err == NULL)
        return;
    va_start(ap, fmt);
    if (vasprintf(&s, fmt, ap) < 0)
        s = NULL;
    va_end(ap);
    free(*err);
    *err = s;
}

struct evl_vocab *evl_vocab_new(int min_chars)
{
    struct evl_vocab *v = calloc(1, sizeof(*v));

    if (v == NULL)
        return NULL;
    v->min_chars = min_chars > 0 ? min_chars : 1;
    return v;
}

void evl_vocab_free(struct evl_vocab *v)
{
    size_t i;

    if (v == NULL)
        return;
    for (i = 0; i < v->n_attrs; i++)
        free(v->attr_names[i]);
    for (i = 0; i < v->n_values; i++) {
        free(v->value_texts[i]);
        free(v->values[i].attrs);
    }
    free(v->attr_names);
    free(v->value_texts);
    free(v->values);
    free(v->attr_map.slots);
    free(v->value_map.slots);
    free(v->node_value);
    free(v->edge_keys);
    free(v->edge_vals);
    free(v);
}

/* Trim spaces and lower-case ASCII into buf; returns length, or -1 if long. */
static long normalise(const char *s, size_t n, char *buf, size_t size)
{
    size_t a = 0, b = n, i;

    while (a < b && isspace((unsigned char)s[a]))
        a++;
    while (b > a && isspace((unsigned char)s[b - 1]))
        b--;
    if (b - a >= size)
        return -1;
    for (i = a; i < b; i++)
        buf[i - a] = (char)tolower((unsigned char)s[i]);
    buf[b - a] = '\0';
    return (long)(b - a);
}

static size_t utf8_chars(const char *s, size_t n)
{
    size_t i, c = 0;

    for (i = 0; i < n; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80)
            c++;
    return c;
}

static long attr_intern(struct evl_vocab *v, const char *name, char **err)
{
    size_t n = strlen(name);
    long id;
    char *copy;

    if (n == 0 || n >= EVL_ATTR_BYTES_MAX) {
        set_err(err, "attribute name '%.40s' is empty or longer than %d bytes",
                name, EVL_ATTR_BYTES_MAX - 1);
        return -1;
    }
    if ((id = strmap_get(&v->attr_map, name, n)) >= 0)
        return id;
    if (v->n_attrs >= EVL_VOCAB_ATTRS_MAX) {
        v->full = 1;
        set_err(err, "more than %d distinct attributes in the facts",
                EVL_VOCAB_ATTRS_MAX);
        return -1;
    }
    if (v->n_attrs == v->cap_attr_names) {
        size_t cap = v->cap_attr_names ? v->cap_attr_names * 2 : 32;
        char **p = realloc(v->attr_names, cap * sizeof(*p));
        if (p == NULL)
            goto oom;
        v->attr_names = p;
        v->cap_attr_names = cap;
    }
    if ((copy = strdup(name)) == NULL)
        goto oom;
    v->attr_names[v->n_attrs] = copy;
    if (strmap_reserve(&v->attr_map, v->n_attrs, v->attr_names) < 0) {
        free(copy);
        goto oom;
    }
    strmap_put(&v->attr_map, name, n, (uint32_t)v->n_attrs);
    return (long)v->n_attrs++;
oom:
    set_err(err, "cannot grow the vocabulary: out of memory");
    return -1;
}

static int value_add(struct evl_vocab *v, uint32_t attr, const char *raw,
                     size_t raw_len, char **err)
{
    char buf[EVL_VALUE_BYTES_MAX];
    long n = normalise(raw, raw_len, buf, sizeof(buf)), id;
    struct vvalue *vv;
    uint16_t k;

    if (n <= 0)
        return 0; /* empty or too long to be a vocabulary value: not an error */
    if ((id = strmap_get(&v->value_map, buf, (size_t)n)) < 0) {
        char *copy;
        if (v->n_values >= EVL_VOCAB_VALUES_MAX ||
            v->value_bytes + (size_t)n > EVL_VOCAB_BYTES_MAX) {
            v->full = 1;
            set_err(err, "more than %d distinct fact values or %d bytes of "
                    "them (unique values such as ids do not belong in "
                    "'facts')", EVL_VOCAB_VALUES_MAX, EVL_VOCAB_BYTES_MAX);
            return -1;
        }
        if (v->n_values == v->cap_values) {
            size_t cap = v->cap_values ? v->cap_values * 2 : 256;
            char **t = realloc(v->value_texts, cap * sizeof(*t));
            struct vvalue *p;
            if (t == NULL)
                goto oom;
            v->value_texts = t;
            p = realloc(v->values, cap * sizeof(*p));
            if (p == NULL)
                goto oom;
            v->values = p;
            v->cap_values = cap;
        }
        if ((copy = strdup(buf)) == NULL)
            goto oom;
        v->value_texts[v->n_values] = copy;
        if (strmap_reserve(&v->value_map, v->n_values, v->value_texts) < 0) {
            free(copy);
            goto oom;
        }
        memset(&v->values[v->n_values], 0, sizeof(v->values[0]));
        v->values[v->n_values].matchable =
            utf8_chars(buf, (size_t)n) >= (size_t)v->min_chars;
        strmap_put(&v->value_map, buf, (size_t)n, (uint32_t)v->n_values);
        v->value_bytes += (size_t)n;
        id = (long)v->n_values++;
    }
    vv = &v->values[id];
    for (k = 0; k < vv->n_attrs; k++)
        if (vv->attrs[k] == attr)
            return 0;
    if (vv->n_attrs == vv->cap_attrs) {
        uint16_t cap = vv->cap_attrs ? (uint16_t)(vv->cap_attrs * 2) : 2;
        uint32_t *p;
        if (vv->cap_attrs >= 16384) {
            v->full = 1;
            set_err(err, "value '%s' belongs to too many attributes", buf);
            return -1;
        }
        p = realloc(vv->attrs, cap * sizeof(*p));
        if (p == NULL)
            goto oom;
        vv->attrs = p;
        vv->cap_attrs = cap;
    }
    vv->attrs[vv->n_attrs++] = attr;
    return 0;
oom:
    set_err(err, "cannot grow the vocabulary: out of memory");
    return -1;
}

int evl_vocab_add(struct evl_vocab *v, const char *attr, const char *value,
                  char **err)
{
    long a;

    if (v->built) {
        set_err(err, "vocabulary is frozen");
        return -1;
    }
    if ((a = attr_intern(v, attr, err)) < 0)
        return -1;
    return value_add(v, (uint32_t)a, value, strlen(value), err);
}

/* Text of a scalar fact value into buf; -1 when not a string or number. */
static long scalar_text(const json_t *x, char *buf, size_t size,
                        const char **out)
{
    if (json_is_string(x)) {
        *out = json_string_value(x);
        return (long)json_string_length(x);
    }
    if (json_is_integer(x)) {
        *out = buf;
        return snprintf(buf, size, "%lld", (long long)json_integer_value(x));
    }
    if (json_is_real(x)) {
        *out = buf;
        return snprintf(buf, size, "%.15g", json_real_value(x));
    }
    return -1;
}

int evl_vocab_add_facts(struct evl_vocab *v, const json_t *facts, char **err)
{
    const char *key;
    json_t *val;

    if (facts == NULL || json_is_null(facts))
        return 0;
    if (!json_is_object(facts)) {
        set_err(err, "'facts' is not an object");
        return -1;
    }
    json_object_foreach((json_t *)facts, key, val) {
        long a = attr_intern(v, key, err);
        size_t i, n = json_is_array(val) ? json_array_size(val) : 1;
        if (a < 0)
            return -1;
        for (i = 0; i < n; i++) {
            const json_t *x = json_is_array(val) ? json_array_get(val, i) : val;
            char num[64];
            const char *text;
            long len = scalar_text(x, num, sizeof(num), &text);
            struct evl_quantity q;
            if (len < 0) {
                set_err(err, "fact '%s' is not a string, number or array of "
                        "them", key);
                return -1;
            }
            if (evl_unit_parse(text, (size_t)len, &q) == 0)
                continue; /* quantities are compared as numbers */
            if (value_add(v, (uint32_t)a, text, (size_t)len, err) < 0)
                return -1;
        }
    }
    return 0;
}

/* ---- facts text fast path ------------------------------------------------ */

struct scan {
    const char *p, *end;     /* borrowed: the text being scanned */
};

static void scan_ws(struct scan *sc)
{
    while (sc->p < sc->end && (*sc->p == ' ' || *sc->p == '\t' ||
                               *sc->p == '\n' || *sc->p == '\r'))
        sc->p++;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static int read_hex4(const char *p, const char *end, unsigned *out)
{
    int k, h;

    if (end - p < 4)
        return -1;
    *out = 0;
    for (k = 0; k < 4; k++) {
        if ((h = hexval(p[k])) < 0)
            return -1;
        *out = (*out << 4) | (unsigned)h;
    }
    return 0;
}

/*
 * Decode a JSON string at sc->p ('"') into buf (NUL-terminated). Returns
 * its length, -1 when malformed, -2 when longer than the buffer (the caller
 * then skips the value: it cannot be vocabulary).
 */
static long scan_string(struct scan *sc, char *buf, size_t size)
{
    size_t n = 0;
    int too_long = 0;

    if (sc->p >= sc->end || *sc->p != '"')
        return -1;
    sc->p++;
    while (sc->p < sc->end) {
        unsigned char c = (unsigned char)*sc->p++;
        unsigned cp, lo;
        char tmp[4];
        size_t k, w;
        if (c == '"') {
            buf[too_long ? 0 : n] = '\0';
            return too_long ? -2 : (long)n;
        }
        if (c < 0x20)
            return -1;
        if (c >= 0x80) {
            /* a whole UTF-8 sequence, validated as jansson does */
            size_t len = c >= 0xC2 && c <= 0xDF ? 2
                         : c >= 0xE0 && c <= 0xEF ? 3
                         : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
            unsigned char c1;
            if (len == 0 || (size_t)(sc->end - sc->p) < len - 1)
                return -1;
            c1 = (unsigned char)sc->p[0];
            if ((c == 0xE0 && c1 < 0xA0) || (c == 0xED && c1 > 0x9F) ||
                (c == 0xF0 && c1 < 0x90) || (c == 0xF4 && c1 > 0x8F))
                return -1; /* overlong, surrogate or beyond U+10FFFF */
            for (k = 0; k + 1 < len; k++)
                if (((unsigned char)sc->p[k] & 0xC0) != 0x80)
                    return -1;
            if (n + len < size) {
                buf[n++] = (char)c;
                for (k = 0; k + 1 < len; k++)
                    buf[n++] = sc->p[k];
            } else {
                too_long = 1;
            }
            sc->p += len - 1;
            continue;
        }
        if (c != '\\') {
            if (n + 1 < size)
                buf[n++] = (char)c;
            else
                too_long = 1;
            continue;
        }
        if (sc->p >= sc->end)
            return -1;
        c = (unsigned char)*sc->p++;
        switch (c) {
        case '"': case '\\': case '/': tmp[0] = (char)c; w = 1; break;
        case 'b': tmp[0] = '\b'; w = 1; break;
        case 'f': tmp[0] = '\f'; w = 1; break;
        case 'n': tmp[0] = '\n'; w = 1; break;
        case 'r': tmp[0] = '\r'; w = 1; break;
        case 't': tmp[0] = '\t'; w = 1; break;
        case 'u':
            if (read_hex4(sc->p, sc->end, &cp) < 0)
                return -1;
            sc->p += 4;
            if (cp >= 0xD800 && cp < 0xDC00) {
                if (sc->end - sc->p < 6 || sc->p[0] != '\\' || sc->p[1] != 'u' ||
                    read_hex4(sc->p + 2, sc->end, &lo) < 0 || lo < 0xDC00 ||
                    lo > 0xDFFF)
                    return -1;
                sc->p += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            } else if (cp >= 0xDC00 && cp < 0xE000) {
                return -1;
            }
            if (cp == 0)
                return -1; /* jansson rejects \u0000 too */
            if (cp < 0x80) {
                tmp[0] = (char)cp;
                w = 1;
            } else if (cp < 0x800) {
                tmp[0] = (char)(0xC0 | (cp >> 6));
                tmp[1] = (char)(0x80 | (cp & 0x3F));
                w = 2;
            } else if (cp < 0x10000) {
                tmp[0] = (char)(0xE0 | (cp >> 12));
                tmp[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
                tmp[2] = (char)(0x80 | (cp & 0x3F));
                w = 3;
            } else {
                tmp[0] = (char)(0xF0 | (cp >> 18));
                tmp[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
                tmp[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
                tmp[3] = (char)(0x80 | (cp & 0x3F));
                w = 4;
            }
            break;
        default:
            return -1;
        }
        for (k = 0; k < w; k++) {
            if (n + 1 < size)
                buf[n++] = tmp[k];
            else
                too_long = 1;
        }
    }
    return -1;
}

/* A JSON number token as the text evl_vocab_add_facts would use. */
static long scan_number(struct scan *sc, char *buf, size_t size)
{
    const char *a = sc->p;
    char tok[64];
    int real = 0;
    size_t n;

    /* JSON grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
#define DIGIT(p) ((p) < sc->end && *(p) >= '0' && *(p) <= '9')
    if (sc->p < sc->end && *sc->p == '-')
        sc->p++;
    if (sc->p < sc->end && *sc->p == '0')
        sc->p++;
    else if (DIGIT(sc->p))
        while (DIGIT(sc->p))
            sc->p++;
    else
        return -1;
    if (sc->p < sc->end && *sc->p == '.') {
        real = 1;
        sc->p++;
        if (!DIGIT(sc->p))
            return -1;
        while (DIGIT(sc->p))
            sc->p++;
    }
    if (sc->p < sc->end && (*sc->p == 'e' || *sc->p == 'E')) {
        real = 1;
        sc->p++;
        if (sc->p < sc->end && (*sc->p == '+' || *sc->p == '-'))
            sc->p++;
        if (!DIGIT(sc->p))
            return -1;
        while (DIGIT(sc->p))
            sc->p++;
    }
#undef DIGIT
    n = (size_t)(sc->p - a);
    if (n == 0 || n >= sizeof(tok))
        return -1;
    memcpy(tok, a, n);
    tok[n] = '\0';
    if (real) {
        double d = strtod(tok, NULL);
        if (!isfinite(d))
            return -1; /* jansson: real number overflow */
        return snprintf(buf, size, "%.15g", d);
    }
    errno = 0;
    {
        long long x = strtoll(tok, NULL, 10);
        if (errno == ERANGE)
            return -1; /* jansson refuses it too: the general path says so */
        return snprintf(buf, size, "%lld", x);
    }
}

/*
 * One scalar fact value: 1 added (or skipped as a quantity), 0 not scalar.
 * With v NULL (a dry run) nothing is added.
 */
static int scan_scalar(struct evl_vocab *v, struct scan *sc, uint32_t attr,
                       char **err, int *fail)
{
    char buf[EVL_VALUE_BYTES_MAX * 4];
    long n;
    struct evl_quantity q;

    if (sc->p < sc->end && *sc->p == '"')
        n = scan_string(sc, buf, sizeof(buf));
    else if (sc->p < sc->end && (*sc->p == '-' || (*sc->p >= '0' && *sc->p <= '9')))
        n = scan_number(sc, buf, sizeof(buf));
    else
        return 0;
    if (n == -2)
        return 1; /* too long to be vocabulary */
    if (n < 0)
        return 0;
    if (v == NULL || evl_unit_parse(buf, (size_t)n, &q) == 0)
        return 1;
    if (value_add(v, attr, buf, (size_t)n, err) < 0)
        *fail = 1;
    return 1;
}

/*
 * 1 done, 0 the text needs the general path, -1 error (err set). With v
 * NULL only checks that the text is a plain facts object, so that a text
 * jansson would refuse adds nothing, and that no key comes twice: jansson
 * keeps the last value of a key, this scan added them all (found by
 * tests/fuzz/fuzz_claim), so such a text takes the general path too.
 */
static int facts_text_fast(struct evl_vocab *v, const char *text, size_t len,
                           char **err)
{
    struct scan sc = {text, text + len};
    char key[EVL_ATTR_BYTES_MAX * 2];
    uint64_t keys[EVL_FACTS_MAX];
    size_t n_keys = 0, i;
    int fail = 0;

    scan_ws(&sc);
    if (sc.p >= sc.end || *sc.p != '{')
        return 0;
    sc.p++;
    scan_ws(&sc);
    if (sc.p < sc.end && *sc.p == '}') {
        sc.p++;
        scan_ws(&sc);
        return sc.p == sc.end ? 1 : 0;
    }
    for (;;) {
        long a, kn;
        scan_ws(&sc);
        if ((kn = scan_string(&sc, key, sizeof(key))) < 0)
            return 0;
        if (v == NULL) {
            uint64_t h = hash_bytes(key, (size_t)kn);
            for (i = 0; i < n_keys; i++)
                if (keys[i] == h)
                    return 0; /* a key twice (or a rare collision) */
            if (n_keys == EVL_FACTS_MAX)
                return 0;
            keys[n_keys++] = h;
        }
        scan_ws(&sc);
        if (sc.p >= sc.end || *sc.p != ':')
            return 0;
        sc.p++;
        scan_ws(&sc);
        a = 0;
        if (v != NULL && (a = attr_intern(v, key, err)) < 0)
            return -1;
        if (sc.p < sc.end && *sc.p == '[') {
            sc.p++;
            scan_ws(&sc);
            if (sc.p < sc.end && *sc.p == ']') {
                sc.p++;
            } else {
                for (;;) {
                    scan_ws(&sc);
                    if (!scan_scalar(v, &sc, (uint32_t)a, err, &fail))
                        return 0;
                    if (fail)
                        return -1;
                    scan_ws(&sc);
                    if (sc.p < sc.end && *sc.p == ',') {
                        sc.p++;
                        continue;
                    }
                    if (sc.p < sc.end && *sc.p == ']') {
                        sc.p++;
                        break;
                    }
                    return 0;
                }
            }
        } else {
            if (!scan_scalar(v, &sc, (uint32_t)a, err, &fail))
                return 0;
            if (fail)
                return -1;
        }
        scan_ws(&sc);
        if (sc.p < sc.end && *sc.p == ',') {
            sc.p++;
            continue;
        }
        if (sc.p < sc.end && *sc.p == '}') {
            sc.p++;
            scan_ws(&sc);
            return sc.p == sc.end ? 1 : 0;
        }
        return 0;
    }
}

int evl_vocab_add_facts_text(struct evl_vocab *v, const char *text,
                             size_t len, char **err)
{
    json_error_t jerr;
    json_t *j;
    int rc = facts_text_fast(NULL, text, len, err);

    /* a dry run first: a text that turns out invalid half-way adds nothing */
    if (rc > 0 && (rc = facts_text_fast(v, text, len, err)) != 0)
        return rc > 0 ? 0 : -1;
    /* unusual facts (null, nested, invalid): the general, validating path */
    j = json_loadb(text, len, JSON_DECODE_ANY, &jerr);
    if (j == NULL) {
        set_err(err, "invalid JSON in 'facts': %s", jerr.text);
        return -1;
    }
    rc = evl_vocab_add_facts(v, j, err);
    json_decref(j);
    return rc;
}

int evl_vocab_load_lexicon(struct evl_vocab *v, const char *path, char **err)
{
    FILE *f = fopen(path, "r");
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    long lineno = 0;
    int rc = -1;

    if (f == NULL) {
        set_err(err, "cannot open '%s': %s", path, strerror(errno));
        return -1;
    }
    while ((n = getline(&line, &cap, f)) >= 0) {
        char *tab, *e;
        lineno++;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = '\0';
        if (n == 0 || line[0] == '#')
            continue;
        if (n > 4096 || (tab = strchr(line, '\t')) == NULL) {
            set_err(err, "cannot read '%s' line %ld: expected "
                    "'attribute<TAB>value'", path, lineno);
            goto done;
        }
        *tab = '\0';
        if (evl_vocab_add(v, line, tab + 1, &e) < 0) {
            set_err(err, "cannot read '%s' line %ld: %s", path, lineno,
                    e ? e : "error");
            free(e);
            goto done;
        }
    }
    if (ferror(f)) {
        set_err(err, "cannot read '%s': %s", path, strerror(errno));
        goto done;
    }
    rc = 0;
done:
    free(line);
    fclose(f);
    return rc;
}

/* ---- trie ---------------------------------------------------------------- */

/* Decode the code point at s[i] (ASCII lower-cased); *n gets its length. */
static uint32_t decode_cp(const char *s, size_t len, size_t i, size_t *n)
{
    const unsigned char *u = (const unsigned char *)s + i;
    size_t left = len - i;

    if (u[0] < 0x80) {
        *n = 1;
        return (u[0] >= 'A' && u[0] <= 'Z') ? u[0] + 32u : u[0];
    }
    if (u[0] >= 0xC0 && u[0] < 0xE0 && left >= 2) {
        *n = 2;
        return ((u[0] & 0x1Fu) << 6) | (u[1] & 0x3Fu);
    }
    if (u[0] >= 0xE0 && u[0] < 0xF0 && left >= 3) {
        *n = 3;
        return ((u[0] & 0x0Fu) << 12) | ((u[1] & 0x3Fu) << 6) | (u[2] & 0x3Fu);
    }
    if (u[0] >= 0xF0 && left >= 4) {
        *n = 4;
        return ((u[0] & 0x07u) << 18) | ((u[1] & 0x3Fu) << 12) |
               ((u[2] & 0x3Fu) << 6) | (u[3] & 0x3Fu);
    }
    *n = 1;
    return 0xFFFD;
}

static size_t edge_slot(const struct evl_vocab *v, uint64_t key)
{
    uint64_t h = key * 0x9E3779B97F4A7C15ULL;
    size_t i = (size_t)(h >> 20) & (v->cap_edges - 1);

    while (v->edge_keys[i] && v->edge_keys[i] != key + 1)
        i = (i + 1) & (v->cap_edges - 1);
    return i;
}

static uint32_t trie_child(const struct evl_vocab *v, uint32_t node,
                           unsigned char c)
{
    size_t i;

    if (node == 0)
        return v->root[c];
    i = edge_slot(v, ((uint64_t)node << 8) | c);
    return v->edge_keys[i] ? v->edge_vals[i] : 0;
}

static long trie_new_node(struct evl_vocab *v)
{
    if (v->n_nodes == v->cap_nodes) {
        size_t cap = v->cap_nodes * 2;
        uint32_t *p = realloc(v->node_value, cap * sizeof(*p));
        if (p == NULL)
            return -1;
        v->node_value = p;
        v->cap_nodes = cap;
    }
    v->node_value[v->n_nodes] = 0;
    return (long)v->n_nodes++;
}

int evl_vocab_build(struct evl_vocab *v, char **err)
{
    size_t i, bytes = 0;

    if (v->built)
        return 0;
    for (i = 0; i < v->n_values; i++)
        if (v->values[i].matchable)
            bytes += strlen(v->value_texts[i]);
    v->cap_nodes = bytes + 2;
    v->node_value = calloc(v->cap_nodes, sizeof(*v->node_value));
    v->cap_edges = 64;
    while (v->cap_edges < bytes * 2 + 2)
        v->cap_edges *= 2;
    v->edge_keys = calloc(v->cap_edges, sizeof(*v->edge_keys));
    v->edge_vals = calloc(v->cap_edges, sizeof(*v->edge_vals));
    if (v->node_value == NULL || v->edge_keys == NULL || v->edge_vals == NULL)
        goto oom;
    v->n_nodes = 1; /* node 0 is the root */
    for (i = 0; i < v->n_values; i++) {
        const unsigned char *s = (const unsigned char *)v->value_texts[i];
        uint32_t node = 0;
        if (!v->values[i].matchable)
            continue;
        for (; *s; s++) {
            uint32_t next = trie_child(v, node, *s);
            if (next == 0) {
                long nn = trie_new_node(v);
                if (nn < 0)
                    goto oom;
                next = (uint32_t)nn;
                if (node == 0) {
                    v->root[*s] = next;
                } else {
                    uint64_t key = ((uint64_t)node << 8) | *s;
                    size_t slot = edge_slot(v, key);
                    v->edge_keys[slot] = key + 1;
                    v->edge_vals[slot] = next;
                    v->n_edges++;
                }
            }
            node = next;
        }
        v->node_value[node] = (uint32_t)i + 1;
        {
            size_t n;
            const char *t = v->value_texts[i];
            uint32_t cp = decode_cp(t, strlen(t), 0, &n);
            if (cp < 0x10000)
                v->first_cp[cp >> 3] |= (uint8_t)(1u << (cp & 7));
            else
                v->first_astral = 1;
        }
    }
    v->built = 1;
    return 0;
oom:
    set_err(err, "cannot build the vocabulary matcher: out of memory");
    return -1;
}

int evl_vocab_full(const struct evl_vocab *v)
{
    return v->full;
}

size_t evl_vocab_n_attrs(const struct evl_vocab *v)
{
    return v->n_attrs;
}

size_t evl_vocab_n_values(const struct evl_vocab *v)
{
    return v->n_values;
}

const char *evl_vocab_value_text(const struct evl_vocab *v, size_t id)
{
    return id < v->n_values ? v->value_texts[id] : NULL;
}

const char *evl_vocab_attr_name(const struct evl_vocab *v, size_t id)
{
    return id < v->n_attrs ? v->attr_names[id] : NULL;
}

long evl_vocab_attr_id(const struct evl_vocab *v, const char *name)
{
    return strmap_get(&v->attr_map, name, strlen(name));
}

/* ---- checker ------------------------------------------------------------- */

struct fact {
    uint32_t attr;
    int is_quantity;
    long value;              /* value id, -1 when not in the vocabulary */
    struct evl_quantity q;
    const char *text;        /* borrowed from the facts JSON or `num` */
    size_t len;
    int mentioned;
    char num[32];            /* text of a numeric fact */
};

struct evl_checker {
    const struct evl_vocab *v;   /* borrowed from the caller */
    double tol;
    uint32_t stamp;
    uint32_t *value_seen;        /* owned: stamp when claimed in this output */
    uint32_t *value_fact;        /* owned: stamp when a fact of the product */
    uint32_t *attr_stamp;        /* owned: stamp when the product has attr */
    uint32_t *attr_bad;          /* owned: stamp when attr contradicted */
    struct fact facts[EVL_FACTS_MAX];
    size_t n_facts;
    uint32_t claims[EVL_CLAIMS_MAX];   /* distinct value ids in order */
    uint8_t paired[EVL_CLAIMS_MAX];    /* every mention follows a pair cue */
    size_t n_claims;
    struct evl_quantity qs[EVL_CLAIMS_MAX];
    size_t n_qs;
};

struct evl_checker *evl_checker_new(const struct evl_vocab *v, double rel_tol)
{
    struct evl_checker *c = calloc(1, sizeof(*c));
    size_t nv = v->n_values ? v->n_values : 1, na = v->n_attrs ? v->n_attrs : 1;

    if (c == NULL)
        return NULL;
    c->v = v;
    c->tol = rel_tol;
    c->value_seen = calloc(nv, sizeof(uint32_t));
    c->value_fact = calloc(nv, sizeof(uint32_t));
    c->attr_stamp = calloc(na, sizeof(uint32_t));
    c->attr_bad = calloc(na, sizeof(uint32_t));
    if (!c->value_seen || !c->value_fact || !c->attr_stamp || !c->attr_bad) {
        evl_checker_free(c);
        return NULL;
    }
    return c;
}

void evl_checker_free(struct evl_checker *c)
{
    if (c == NULL)
        return;
    free(c->value_seen);
    free(c->value_fact);
    free(c->attr_stamp);
    free(c->attr_bad);
    free(c);
}

static unsigned char lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
}

static int is_word(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9');
}

/*
 * Pairing cues: in "白色上衣，搭配黑色短裤" the black shorts are another
 * item. A claim that follows one of these in the same clause is about what
 * the product is worn with, and cannot contradict the product's facts.
 */
static const char *const pair_cues[] = {
    "搭配", "配上", "配以", "内搭", "外搭", "叠穿", "混搭", "搭上", "可搭",
    "pair with", "paired with", "pairs with", "wear with", "worn with",
    "goes with", "team with"};
#define N_PAIR_CUES (sizeof(pair_cues) / sizeof(pair_cues[0]))

static int starts_with_ci(const char *text, size_t len, size_t i,
                          const char *tok)
{
    size_t k;

    for (k = 0; tok[k]; k++)
        if (i + k >= len || lower((unsigned char)text[i + k]) != (unsigned char)tok[k])
            return 0;
    return 1;
}

/* First code points of the cues: 搭 配 内 外 叠 混 可, p w g t. */
static int is_cue_start(uint32_t cp)
{
    return cp == 0x642D || cp == 0x914D || cp == 0x5185 || cp == 0x5916 ||
           cp == 0x53E0 || cp == 0x6DF7 || cp == 0x53EF || cp == 'p' ||
           cp == 'w' || cp == 'g' || cp == 't';
}

/* 1 when a pairing cue starts at text[i]. */
static int pair_cue_at(const char *text, size_t len, size_t i)
{
    size_t k;

    for (k = 0; k < N_PAIR_CUES; k++)
        if (starts_with_ci(text, len, i, pair_cues[k]))
            return 1;
    return 0;
}

/*
 * Longest vocabulary value starting at text[i] that respects ASCII word
 * boundaries; returns its end (0 when none) and its id.
 */
static size_t match_at(const struct evl_vocab *v, const char *text,
                       size_t len, size_t i, uint32_t *id)
{
    uint32_t node;
    size_t j, best = 0;
    unsigned char first = lower((unsigned char)text[i]);

    /* most positions fail here, on the root table */
    if ((node = v->root[first]) == 0)
        return 0;
    if (is_word(first) && i > 0 && is_word((unsigned char)text[i - 1]))
        return 0;
    for (j = i; j < len; j++) {
        unsigned char c = lower((unsigned char)text[j]);
        if (j > i)
            node = trie_child(v, node, c);
        if (node == 0)
            break;
        if (v->node_value[node]) {
            size_t end = j + 1;
            if (is_word(c) && end < len && is_word((unsigned char)text[end]))
                continue;
            best = end;
            *id = v->node_value[node] - 1;
        }
    }
    return best;
}

static void copy_trunc(char *dst, size_t size, const char *src, size_t n)
{
    size_t k;

    if (n >= size) {
        n = size - 1;
        /* do not cut a code point in half */
        while (n > 0 && ((unsigned char)src[n] & 0xC0) == 0x80)
            n--;
    }
    for (k = 0; k < n; k++)
        dst[k] = src[k];
    dst[n] = '\0';
}

/* "a/b/c": the product's values of attr, into buf. */
static void known_values(const struct evl_checker *c, uint32_t attr,
                         int quantities, enum evl_dim dim, char *buf,
                         size_t size)
{
    size_t i, used = 0;

    buf[0] = '\0';
    for (i = 0; i < c->n_facts; i++) {
        const struct fact *f = &c->facts[i];
        if (quantities ? (!f->is_quantity || f->q.dim != dim)
                       : (f->attr != attr || f->is_quantity))
            continue;
        if (used > 0 && used + 1 < size)
            buf[used++] = '/';
        if (used + 1 >= size)
            break;
        copy_trunc(buf + used, size - used, f->text, f->len);
        used += strlen(buf + used);
    }
}

static void note_attr_bad(struct evl_checker *c, struct evl_check_result *out,
                          uint32_t attr)
{
    if (c->attr_bad[attr] == c->stamp)
        return;
    c->attr_bad[attr] = c->stamp;
    if (out->n_attrs_contradicted < EVL_FACTS_MAX)
        out->attrs_contradicted[out->n_attrs_contradicted++] = attr;
}

static void add_detail(struct evl_check_result *out, uint32_t attr,
                       const char *stated, size_t stated_len, const char *known)
{
    struct evl_contradiction *d;

    if (out->n_details >= EVL_DETAILS_MAX)
        return;
    d = &out->details[out->n_details++];
    d->attr = attr;
    copy_trunc(d->stated, sizeof(d->stated), stated, stated_len);
    copy_trunc(d->known, sizeof(d->known), known, strlen(known));
}

static int load_facts(struct evl_checker *c, const json_t *facts,
                      struct evl_check_result *out, char **err)
{
    const struct evl_vocab *v = c->v;
    const char *key;
    json_t *val;

    c->n_facts = 0;
    if (facts == NULL || json_is_null(facts))
        return 0;
    if (!json_is_object(facts)) {
        set_err(err, "'facts' is not an object");
        return -1;
    }
    json_object_foreach((json_t *)facts, key, val) {
        long a = strmap_get(&v->attr_map, key, strlen(key));
        size_t i, n = json_is_array(val) ? json_array_size(val) : 1;
        if (a < 0) {
            set_err(err, "fact '%.40s' was not seen when the vocabulary was "
                    "built (the file changed while it was read?)", key);
            return -1;
        }
        for (i = 0; i < n; i++) {
            const json_t *x = json_is_array(val) ? json_array_get(val, i) : val;
            struct fact *f;
            char buf[EVL_VALUE_BYTES_MAX];
            long len, nlen;
            if (c->n_facts >= EVL_FACTS_MAX) {
                set_err(err, "more than %d fact values", EVL_FACTS_MAX);
                return -1;
            }
            f = &c->facts[c->n_facts];
            len = scalar_text(x, f->num, sizeof(f->num), &f->text);
            if (len < 0) {
                set_err(err, "fact '%.40s' is not a string, number or array "
                        "of them", key);
                return -1;
            }
            f->len = (size_t)len;
            f->attr = (uint32_t)a;
            f->mentioned = 0;
            f->value = -1;
            f->is_quantity = evl_unit_parse(f->text, f->len, &f->q) == 0;
            if (!f->is_quantity) {
                nlen = normalise(f->text, f->len, buf, sizeof(buf));
                if (nlen > 0)
                    f->value = strmap_get(&v->value_map, buf, (size_t)nlen);
                if (f->value >= 0)
                    c->value_fact[f->value] = c->stamp;
            }
            if (c->attr_stamp[a] != c->stamp) {
                c->attr_stamp[a] = c->stamp;
                out->attrs_present[out->n_attrs_present++] = (uint32_t)a;
            }
            c->n_facts++;
        }
    }
    return 0;
}

/* Case-insensitive (ASCII) substring search of a normalised needle. */
static int contains_ci(const char *hay, size_t hlen, const char *needle,
                       size_t nlen)
{
    size_t i, k;

    if (nlen == 0 || nlen > hlen)
        return 0;
    for (i = 0; i + nlen <= hlen; i++) {
        for (k = 0; k < nlen; k++)
            if ((char)tolower((unsigned char)hay[i + k]) != needle[k])
                break;
        if (k == nlen)
            return 1;
    }
    return 0;
}

/*
 * 1 when the fact's value is part of a longer value the copy names that
 * belongs to another attribute: 连衣裙 (a dress length) states 裙 (a
 * skirt-type garment). A longer value of the same attribute is a different
 * value: 米白色 does not state 白色.
 */
static int inside_other_claim(const struct evl_checker *c, const struct fact *f)
{
    const struct evl_vocab *v = c->v;
    const char *needle = v->value_texts[f->value];
    size_t i, k;

    for (i = 0; i < c->n_claims; i++) {
        const struct vvalue *w = &v->values[c->claims[i]];
        int same = 0;
        if (strstr(v->value_texts[c->claims[i]], needle) == NULL)
            continue;
        for (k = 0; k < w->n_attrs && !same; k++)
            same = w->attrs[k] == f->attr;
        if (!same)
            return 1;
    }
    return 0;
}

/* 1 when value `id` is inside one of the product's values of its attributes. */
static int part_of_own_value(const struct evl_checker *c, uint32_t id)
{
    const struct evl_vocab *v = c->v;
    const struct vvalue *vv = &v->values[id];
    const char *needle = v->value_texts[id];
    size_t j, k;

    for (j = 0; j < c->n_facts; j++) {
        const struct fact *f = &c->facts[j];
        if (f->is_quantity || f->value < 0)
            continue;
        for (k = 0; k < vv->n_attrs; k++)
            if (vv->attrs[k] == f->attr &&
                strstr(v->value_texts[f->value], needle) != NULL)
                return 1;
    }
    return 0;
}

int evl_check(struct evl_checker *c, const json_t *facts, const char *text,
              size_t len, struct evl_check_result *out, char **err)
{
    const struct evl_vocab *v = c->v;
    char known[EVL_VALUE_BYTES_MAX];
    size_t i, k;
    int in_pair;

    memset(out, 0, offsetof(struct evl_check_result, attrs_present));
    out->n_attrs_contradicted = 0;
    out->n_details = 0;
    if (++c->stamp == 0) {
        /* wrapped after 4e9 samples: reset the stamps once */
        memset(c->value_seen, 0, v->n_values * sizeof(uint32_t));
        memset(c->value_fact, 0, v->n_values * sizeof(uint32_t));
        memset(c->attr_stamp, 0, v->n_attrs * sizeof(uint32_t));
        memset(c->attr_bad, 0, v->n_attrs * sizeof(uint32_t));
        c->stamp = 1;
    }
    if (load_facts(c, facts, out, err) < 0)
        return -1;

    /* categorical claims, distinct, in order of first mention */
    c->n_claims = 0;
    for (i = 0, in_pair = 0; i < len;) {
        uint32_t id, cp;
        size_t end = 0, n;
        cp = decode_cp(text, len, i, &n);
        if (cp < 0x10000 ? (v->first_cp[cp >> 3] >> (cp & 7)) & 1
                         : v->first_astral)
            end = match_at(v, text, len, i, &id);
        if (end == 0) {
            if (cp == 0xFF0C || cp == 0x3002 || cp == 0xFF01 || cp == 0xFF1F ||
                cp == 0xFF1B || cp == 0x3001 || cp == ',' || cp == '.' ||
                cp == '!' || cp == '?' || cp == ';' || cp == '\n')
                in_pair = 0;
            else if (!in_pair && is_cue_start(cp) && pair_cue_at(text, len, i))
                in_pair = 1;
            i += n;
            continue;
        }
        if (c->value_seen[id] != c->stamp) {
            if (c->n_claims < EVL_CLAIMS_MAX) {
                c->value_seen[id] = c->stamp;
                c->paired[c->n_claims] = (uint8_t)in_pair;
                c->claims[c->n_claims++] = id;
            }
        } else if (!in_pair) {
            /* mentioned outside a pairing clause too: a claim on the product */
            for (k = 0; k < c->n_claims; k++)
                if (c->claims[k] == id)
                    c->paired[k] = 0;
        }
        i = end;
    }
    /* quantities */
    c->n_qs = evl_unit_scan(text, len, c->qs, EVL_CLAIMS_MAX);
    if (c->n_qs > EVL_CLAIMS_MAX)
        c->n_qs = EVL_CLAIMS_MAX;

    /* which of the product's facts does the copy state? */
    for (i = 0; i < c->n_facts; i++) {
        struct fact *f = &c->facts[i];
        if (f->is_quantity) {
            for (k = 0; k < c->n_qs && !f->mentioned; k++)
                f->mentioned = evl_unit_equal(&f->q, &c->qs[k], c->tol);
        } else if (f->value >= 0 && v->values[f->value].matchable) {
            f->mentioned = c->value_seen[f->value] == c->stamp ||
                           inside_other_claim(c, f);
        } else {
            char buf[EVL_VALUE_BYTES_MAX];
            long n = normalise(f->text, f->len, buf, sizeof(buf));
            f->mentioned = n > 0 && contains_ci(text, len, buf, (size_t)n);
        }
        out->facts++;
        out->facts_mentioned += f->mentioned ? 1 : 0;
    }

    /* sort the categorical claims */
    for (i = 0; i < c->n_claims; i++) {
        uint32_t id = c->claims[i];
        const struct vvalue *vv = &v->values[id];
        int bad = 0;
        if (c->value_fact[id] == c->stamp) {
            out->supported++;
            continue;
        }
        if (c->paired[i]) {
            out->unverifiable++;
            continue;
        }
        if (part_of_own_value(c, id)) {
            /* 木耳 for 木耳边: the copy names part of a true value */
            out->supported++;
            continue;
        }
        for (k = 0; k < vv->n_attrs; k++) {
            uint32_t a = vv->attrs[k];
            size_t j;
            int unstated = 0;
            if (c->attr_stamp[a] != c->stamp)
                continue;
            for (j = 0; j < c->n_facts && !unstated; j++)
                unstated = c->facts[j].attr == a && !c->facts[j].mentioned;
            if (!unstated)
                continue;
            bad = 1;
            note_attr_bad(c, out, a);
            known_values(c, a, 0, EVL_DIM_NONE, known, sizeof(known));
            add_detail(out, a, v->value_texts[id], strlen(v->value_texts[id]),
                       known);
        }
        if (bad)
            out->contradicted++;
        else
            out->unverifiable++;
    }

    /* sort the quantities (distinct by value) */
    for (i = 0; i < c->n_qs; i++) {
        const struct evl_quantity *q = &c->qs[i];
        const struct fact *unstated = NULL;
        int supported = 0, has_dim = 0;
        for (k = 0; k < i; k++)
            if (evl_unit_equal(q, &c->qs[k], c->tol))
                break;
        if (k < i)
            continue;
        for (k = 0; k < c->n_facts; k++) {
            const struct fact *f = &c->facts[k];
            if (!f->is_quantity || f->q.dim != q->dim)
                continue;
            has_dim = 1;
            if (evl_unit_equal(&f->q, q, c->tol))
                supported = 1;
            else if (!f->mentioned && unstated == NULL)
                unstated = f;
        }
        if (supported) {
            out->supported++;
        } else if (has_dim && unstated != NULL) {
            out->contradicted++;
            note_attr_bad(c, out, unstated->attr);
            known_values(c, 0, 1, q->dim, known, sizeof(known));
            add_detail(out, unstated->attr, text + q->start,
                       q->end - q->start, known);
        } else {
            out->unverifiable++;
        }
    }
    return 0;
}
