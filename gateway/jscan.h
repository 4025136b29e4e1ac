/*
 * jscan.h - a validating JSON scanner that captures top-level fields.
 *
 * The request path needs two or three top-level members of a body ("model",
 * "stream") and a verdict that the whole body is well-formed JSON. Building
 * a jansson tree for that costs an allocation per node; gw_jscan validates
 * the document in one pass, without allocating, and hands back borrowed
 * spans of the values asked for. A field may also name what to capture
 * inside its value when that is an object (struct gw_jscan_sub): the
 * registry prompt's "prompt": {"name", ..., "variables": {...}} is read
 * in the same pass.
 *
 * Usage:
 *
 *     struct gw_jscan_field f[2] = {{.key = "model"}, {.key = "stream"}};
 *     char err[128];
 *     if (gw_jscan(body, len, 64, f, 2, err, sizeof(err)) < 0)
 *         reply 400 with err;
 *     if (f[0].type == GW_JSON_STRING)
 *         n = gw_jscan_string(&f[0], model, sizeof(model));
 */
#ifndef GW_JSCAN_H
#define GW_JSCAN_H

#include <stddef.h>

/* gw_jscan keeps one bit per open container on the C stack; max_depth may
 * not exceed this. */
#define GW_JSCAN_MAX_DEPTH 4096

enum gw_jscan_type {
    GW_JSON_NONE,   /* the key was absent */
    GW_JSON_STRING,
    GW_JSON_NUMBER,
    GW_JSON_TRUE,
    GW_JSON_FALSE,
    GW_JSON_NULL,
    GW_JSON_OBJECT,
    GW_JSON_ARRAY
};

struct gw_jscan_sub;

struct gw_jscan_field {
    const char *key;         /* in, borrowed from the caller: a top-level
                              * key to capture, plain ASCII, shorter than 64
                              * bytes; a key written with escapes in the
                              * document matches by its decoded value
                              * ("mod\u0065l" is "model"), as any parser
                              * reads it */
    enum gw_jscan_type type; /* out: GW_JSON_NONE when absent */
    const char *val;         /* out, borrowed from the document: the raw
                              * value text; for strings the bytes between
                              * the quotes, escapes still in place; for
                              * objects and arrays the text from the opening
                              * to the closing bracket inclusive */
    size_t len;              /* out: bytes at val */
    int escaped;             /* out: the string holds backslash escapes, so
                              * val is not its value; use gw_jscan_string */
    struct gw_jscan_sub *sub; /* in, optional: when the value is an object,
                              * its members are captured into sub as well
                              * (two levels below the root at most). A
                              * field filled by assignment rather than an
                              * initializer must set it (NULL: none) */
};

/* A member of a sub-object captured whatever its key. */
struct gw_jscan_member {
    const char *key;         /* out, borrowed: the key's bytes between the
                              * quotes, escapes still in place */
    size_t klen;
    int kescaped;            /* out: the key holds backslash escapes */
    struct gw_jscan_field v; /* out: the value (v.key and v.sub unused) */
};

/*
 * What to capture inside the object a field's value is: members by key,
 * as at the top level, and every other member in order. It is filled
 * when the scan enters that object, and only then: read it when the
 * field's type is GW_JSON_OBJECT. Unlike the top level, a key written
 * twice is not an error of the scan: dup says which (the object is valid
 * JSON; what a duplicate means is the caller's to say).
 */
struct gw_jscan_sub {
    struct gw_jscan_field *fields; /* in: members to capture by key */
    size_t n_fields;
    struct gw_jscan_member *members; /* in: room for the other members, in
                              * order (NULL: not kept) */
    size_t cap;              /* in: entries at members */
    size_t n;                /* out: the other members the object has, kept
                              * or not (n > cap: some were not kept) */
    long dup;                /* out: index in fields of the first key that
                              * came twice, or -1 */
};

/*
 * Validates json[0..len) as one JSON document (RFC 8259) whose root must
 * be an object nested at most max_depth levels deep (the root object is
 * level 1), and fills fields[0..n_fields) for the keys they name.
 *
 * Strict: UTF-8 is checked (no overlong forms, no encoded surrogates, at
 * most U+10FFFF), numbers follow the grammar (no leading zeros, no '+', no
 * bare '.'), control characters in strings are rejected, \u escapes are
 * checked, a high surrogate must be followed by a low one and a low one
 * may not stand alone, and only whitespace may follow the document. It does
 * not limit the range of numbers, and accepts \u0000 (RFC 8259 does);
 * jansson rejects both, so bodies it refused may pass here. The other way,
 * a NUL byte right after a number or literal, which jansson 2.14 silently
 * drops, is an error here.
 *
 * A requested key that appears twice at the top level is an error; other
 * duplicates are not checked. Nothing is allocated; the scan is iterative,
 * so any nesting costs no C stack beyond a fixed bit array.
 *
 * Returns 0. On failure returns -1 with a message in err (always
 * NUL-terminated when errlen > 0), such as
 *   "invalid JSON at byte 17: expected ':' after object key"
 *   "JSON nested deeper than 64 levels"
 *   "request body must be a JSON object"
 * and the fields' out members are unspecified. max_depth outside
 * 1..GW_JSCAN_MAX_DEPTH is an error too.
 */
int gw_jscan(const char *json, size_t len, int max_depth,
             struct gw_jscan_field *fields, size_t n_fields,
             char *err, size_t errlen);

/*
 * gw_jscan that also counts the root object's members, captured or not,
 * into *n_members (set on success only). When the count equals the number
 * of fields found, the caller knows every key the body has: no other
 * member needs looking for in a second pass.
 */
int gw_jscan_count(const char *json, size_t len, int max_depth,
                   struct gw_jscan_field *fields, size_t n_fields,
                   size_t *n_members, char *err, size_t errlen);

/*
 * gw_jscan for text a successful gw_jscan has already accepted: a whole
 * document again, or the value of one of its members (an object's text
 * from '{' to '}'). Strings are only searched for their end: their UTF-8
 * and control characters are not checked again, which makes CJK text, the
 * bulk of an e-commerce body, about three times cheaper to pass over. The
 * structure, numbers, escapes and duplicate captured keys are checked as
 * by gw_jscan. Never give it bytes that did not pass gw_jscan.
 */
int gw_jscan_trusted(const char *json, size_t len, int max_depth,
                     struct gw_jscan_field *fields, size_t n_fields,
                     char *err, size_t errlen);

/*
 * Decodes a string field filled by a successful gw_jscan (f->val, f->len,
 * escapes resolved to UTF-8) into out[0..outcap), NUL-terminated. Returns
 * the decoded length in bytes, or -1 when f is not a string, when the value
 * and its NUL do not fit in outcap, or when it holds \u0000, which a C
 * string cannot carry (so strlen(out) is always the returned length).
 */
long gw_jscan_string(const struct gw_jscan_field *f, char *out,
                     size_t outcap);

#endif
