/* Unit tests of gateway/jscan.c: validity verdicts (hand-written cases,
 * every prefix of a valid document, exhaustive short UTF-8 sequences and a
 * differential run against jansson), captures and string decoding, depth,
 * and a timing comparison with jansson on a typical request body. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gateway/jscan.h"

/* A document with its exact length (some hold NUL bytes). */
struct doc {
    const char *s;
    size_t n;
};
#define D(lit) {lit, sizeof(lit) - 1}

/* Scans a copy of d in a buffer of exactly d.n bytes, so that ASan sees
 * any read past the end. Whatever gw_jscan accepts is scanned again with
 * gw_jscan_trusted, which must capture the very same spans: every test
 * here checks the trusted scan on the documents it accepts. */
static int scan(const char *s, size_t n, int depth, struct gw_jscan_field *f,
                size_t nf, char *err, size_t errlen)
{
    char *copy = malloc(n ? n : 1), terr[256];
    struct gw_jscan_field t[16];
    size_t i;
    int rc;

    assert_non_null(copy);
    assert_true(nf <= 16);
    memcpy(copy, s, n);
    rc = gw_jscan(copy, n, depth, f, nf, err, errlen);
    if (rc == 0) {
        for (i = 0; i < nf; i++)
            t[i] = (struct gw_jscan_field){.key = f[i].key};
        assert_int_equal(gw_jscan_trusted(copy, n, depth, t, nf, terr,
                                          sizeof(terr)), 0);
        for (i = 0; i < nf; i++) {
            assert_int_equal(t[i].type, f[i].type);
            assert_ptr_equal(t[i].val, f[i].val);
            assert_int_equal(t[i].len, f[i].len);
            assert_int_equal(t[i].escaped, f[i].escaped);
        }
    }
    free(copy);
    return rc;
}

static int valid(const char *s, size_t n)
{
    char err[256];
    int rc = scan(s, n, 64, NULL, 0, err, sizeof(err));

    if (rc == 0)
        assert_string_equal(err, "");
    else
        assert_true(strlen(err) > 0);
    return rc == 0;
}

static const struct doc valid_docs[] = {
    D("{}"),
    D(" \t\r\n{ } \t\r\n"),
    D("{\"a\":1}"),
    D("{\"a\":-0}"),
    D("{\"a\":1e10,\"b\":1.5E-3,\"c\":-0.0e+0,\"d\":123456789,\"e\":0.5}"),
    D("{\"a\":[1,[2,[3,{\"b\":[]}]],{}],\"c\":{\"d\":{\"e\":null}}}"),
    D("{\"a\":true,\"b\":false,\"c\":null}"),
    D("{\"\":\"\"}"),
    D("{\"s\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\uD83D\\uDE00\"}"),
    D("{\"u\":\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xf4\x8f\xbf\xbf "
      "\xed\x9f\xbf \xee\x80\x80\"}"),
    D("{\"k\xc3\xa9y\" : [ 1 , \"x\" , { } , [ ] ] }"),
    D("{\"long\":\"0123456789abcdefghijklmnopqrstuvwxyz0123456789\"}"),
    D("{\"a\":[0,-1,2.25,3e0,4E+2,5e-2]}"),
    D("{\"a\":\"\\u0041\\u00ff\\u0fff\\uffff\"}"),
};

static void test_valid(void **state)
{
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(valid_docs) / sizeof(valid_docs[0]); i++) {
        if (!valid(valid_docs[i].s, valid_docs[i].n))
            fail_msg("rejected valid document %zu: %s", i, valid_docs[i].s);
    }
}

static const struct {
    struct doc d;
    const char *err; /* the full message */
} invalid_docs[] = {
    {D("{\"a\" 1}"), "invalid JSON at byte 5: expected ':' after object key"},
    {D("{\"a\":1,}"), "invalid JSON at byte 7: expected a string key after ','"},
    {D("{\"a\":[1,]}"), "invalid JSON at byte 8: expected a value"},
    {D("{\"a\":[,1]}"), "invalid JSON at byte 6: expected a value"},
    {D("{,}"), "invalid JSON at byte 1: expected a string key or '}'"},
    {D("{\"a\":01}"), "invalid JSON at byte 5: invalid number: leading zero"},
    {D("{\"a\":-01}"), "invalid JSON at byte 6: invalid number: leading zero"},
    {D("{\"a\":+1}"), "invalid JSON at byte 5: expected a value"},
    {D("{\"a\":.5}"), "invalid JSON at byte 5: expected a value"},
    {D("{\"a\":1.}"),
     "invalid JSON at byte 7: invalid number: expected a digit after '.'"},
    {D("{\"a\":1e}"),
     "invalid JSON at byte 7: invalid number: expected a digit in the "
     "exponent"},
    {D("{\"a\":-}"), "invalid JSON at byte 6: invalid number: expected a "
                     "digit"},
    {D("{\"a\":0x1}"),
     "invalid JSON at byte 6: expected ',' or '}' after an object member"},
    {D("{\"a\":\"x\ny\"}"),
     "invalid JSON at byte 7: unescaped control character 0x0a in string "
     "(write it as \\u000a)"},
    {D("{\"a\":\"x\ty\"}"),
     "invalid JSON at byte 7: unescaped control character 0x09 in string "
     "(write it as \\u0009)"},
    {D("{\"a\":\"\0\"}"),
     "invalid JSON at byte 6: unescaped control character 0x00 in string "
     "(write it as \\u0000)"},
    {D("{\"a\":\"\\x\"}"), "invalid JSON at byte 6: invalid escape '\\x' in "
                           "string"},
    {D("{\"a\":\"\\u12g4\"}"),
     "invalid JSON at byte 6: invalid escape: '\\u' must be followed by four "
     "hex digits"},
    {D("{\"a\":\"\\ud800\"}"),
     "invalid JSON at byte 6: high surrogate '\\ud800' not followed by a low "
     "surrogate in string"},
    {D("{\"a\":\"\\ud800\\u0041\"}"),
     "invalid JSON at byte 6: high surrogate '\\ud800' not followed by a low "
     "surrogate in string"},
    {D("{\"a\":\"\\udc00\"}"),
     "invalid JSON at byte 6: lone low surrogate '\\udc00' in string"},
    {D("{\"a\":\"\xff\"}"),
     "invalid JSON at byte 6: invalid UTF-8 sequence starting with byte 0xff "
     "in string"},
    {D("{\"a\":\"\x80\"}"),
     "invalid JSON at byte 6: invalid UTF-8 sequence starting with byte 0x80 "
     "in string"},
    {D("{\"a\":\"\xc0\xaf\"}"), /* overlong '/' */
     "invalid JSON at byte 6: invalid UTF-8 sequence starting with byte 0xc0 "
     "in string"},
    {D("{\"a\":\"\xe0\x80\xaf\"}"), /* overlong, 3 bytes */
     "invalid JSON at byte 6: invalid UTF-8 sequence starting with byte 0xe0 "
     "in string"},
    {D("{\"a\":\"\xf0\x80\x80\xaf\"}"), /* overlong, 4 bytes */
     "invalid JSON at byte 6: invalid UTF-8 sequence starting with byte 0xf0 "
     "in string"},
    {D("{\"a\":\"\xed\xa0\x80\"}"), /* encoded surrogate U+D800 */
     "invalid JSON at byte 6: invalid UTF-8 sequence starting with byte 0xed "
     "in string"},
    {D("{\"a\":\"\xf4\x90\x80\x80\"}"), /* U+110000 */
     "invalid JSON at byte 6: invalid UTF-8 sequence starting with byte 0xf4 "
     "in string"},
    {D("{\"a\":\"\xc3\"}"), /* continuation missing */
     "invalid JSON at byte 6: invalid UTF-8 sequence starting with byte 0xc3 "
     "in string"},
    {D("{\"a\":\"abc"), "invalid JSON at byte 9: unexpected end of input in "
                        "string"},
    {D("{\"a\":1} x"), "invalid JSON at byte 8: unexpected data after the JSON "
                       "document"},
    {D("{\"a\":1}{}"), "invalid JSON at byte 7: unexpected data after the JSON "
                       "document"},
    {D("{\"a\":1}\0"), "invalid JSON at byte 7: unexpected data after the JSON "
                       "document"},
    {D("{\"a\":tru}"), "invalid JSON at byte 5: invalid literal: expected a "
                       "value such as 'true'"},
    {D("{\"a\":nul"), "invalid JSON at byte 8: unexpected end of input in "
                      "'null'"},
    {D("{\"a\":True}"), "invalid JSON at byte 5: expected a value"},
    {D("{'a':1}"), "invalid JSON at byte 1: expected a string key or '}'"},
    {D("{\"a\":1]"), "invalid JSON at byte 6: expected ',' or '}' after an "
                     "object member"},
    {D("{\"a\":[1}"), "invalid JSON at byte 7: expected ',' or ']' after an "
                      "array element"},
    {D("{\"a\":1 \"b\":2}"), "invalid JSON at byte 7: expected ',' or '}' "
                             "after an object member"},
    {D("{\"a\"\f:1}"), "invalid JSON at byte 4: expected ':' after object "
                       "key"},
    {D("[1,2]"), "request body must be a JSON object"},
    {D("\"x\""), "request body must be a JSON object"},
    {D("42"), "request body must be a JSON object"},
    {D("null"), "request body must be a JSON object"},
    {D(""), "invalid JSON at byte 0: expected a JSON object, found end of "
            "input"},
    {D("  \n"), "invalid JSON at byte 3: expected a JSON object, found end "
                "of input"},
    {D("\xef\xbb\xbf{}"), "invalid JSON at byte 0: expected a JSON object"},
    {D("{"), "invalid JSON at byte 1: unexpected end of input"},
};

static void test_invalid(void **state)
{
    char err[256];
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(invalid_docs) / sizeof(invalid_docs[0]); i++) {
        const struct doc *d = &invalid_docs[i].d;
        if (scan(d->s, d->n, 64, NULL, 0, err, sizeof(err)) != -1)
            fail_msg("accepted invalid document %zu: %s", i, d->s);
        if (strcmp(err, invalid_docs[i].err) != 0)
            fail_msg("document %zu (%s): got \"%s\", want \"%s\"", i, d->s,
                     err, invalid_docs[i].err);
    }
    /* a short err buffer is truncated, NUL-terminated, never overrun */
    memset(err, 'x', sizeof(err));
    assert_int_equal(gw_jscan("{\"a\" 1}", 7, 64, NULL, 0, err, 10), -1);
    assert_string_equal(err, "invalid J");
    assert_int_equal(err[10], 'x');
    assert_int_equal(gw_jscan("{\"a\" 1}", 7, 64, NULL, 0, NULL, 0), -1);
    assert_int_equal(gw_jscan("{}", 2, 0, NULL, 0, err, sizeof(err)), -1);
    assert_string_equal(err, "JSON depth limit 0 out of range 1..4096");
    assert_int_equal(gw_jscan("{}", 2, GW_JSCAN_MAX_DEPTH + 1, NULL, 0, err,
                              sizeof(err)), -1);
}

/* Every proper prefix of a valid document (that does not end in
 * whitespace) is invalid, and says so without reading past its end. */
static void test_truncated(void **state)
{
    static const char body[] =
        "{\"model\":\"gpt-x\",\"messages\":[{\"role\":\"user\",\"content\":"
        "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \\u00e9\\ud83d\\ude00 "
        "\\\" \\n\"}],\"n\":-12.5e+3,\"t\":true,\"f\":false,\"z\":null,"
        "\"o\":{\"a\":[[],{}]},\"e\":\"\"}";
    char err[256];
    size_t n;

    (void)state;
    assert_true(valid(body, sizeof(body) - 1));
    for (n = 0; n < sizeof(body) - 1; n++) {
        if (scan(body, n, 64, NULL, 0, err, sizeof(err)) != -1)
            fail_msg("accepted the first %zu bytes", n);
        assert_true(strlen(err) > 0);
    }
}

/* A key written with escapes is the key it decodes to: captured, and a
 * duplicate of the plain one (a backend would read the last of the two). */
static void test_escaped_keys(void **state)
{
    static const char one[] = "{\"m\\u006fdel\":\"x\",\"n\":1}";
    static const char dup[] = "{\"model\":\"a\",\"mod\\u0065l\":\"b\"}";
    static const char nul[] = "{\"model\\u0000\":1,\"model\":\"y\"}";
    static const char lng[] =
        "{\"\\u006d0123456789012345678901234567890123456789012345678901234"
        "5678901234567890\":1,\"model\":\"z\"}";
    struct gw_jscan_field f[2] = {{.key = "model"}, {.key = "n"}};
    char err[256];

    (void)state;
    assert_int_equal(gw_jscan(one, sizeof(one) - 1, 8, f, 2, err,
                              sizeof(err)), 0);
    assert_int_equal(f[0].type, GW_JSON_STRING);
    assert_memory_equal(f[0].val, "x", 1);
    assert_int_equal(f[1].type, GW_JSON_NUMBER);
    assert_int_equal(gw_jscan(dup, sizeof(dup) - 1, 8, f, 2, err,
                              sizeof(err)), -1);
    assert_non_null(strstr(err, "duplicate key 'model'"));
    /* "model\0" is another key, and so is one too long to be requested */
    assert_int_equal(gw_jscan(nul, sizeof(nul) - 1, 8, f, 2, err,
                              sizeof(err)), 0);
    assert_memory_equal(f[0].val, "y", 1);
    assert_int_equal(gw_jscan(lng, sizeof(lng) - 1, 8, f, 2, err,
                              sizeof(err)), 0);
    assert_memory_equal(f[0].val, "z", 1);
}

static void test_captures(void **state)
{
    static const char body[] =
        "{\"messages\":[{\"model\":\"inner\",\"stream\":false}],"
        " \"model\" : \"gpt\\u00e9\\n\\ud83d\\ude00\\\"x\" ,"
        "\"stream\":true,\"temperature\":-0.5e2,\"meta\":{\"a\":[1,{}]},"
        "\"stop\":[\"\\n\",\"]\"],\"user\":null,\"plain\":\"abc\","
        "\"m\\u006fdels\":\"escaped, another key\",\"nope\":false}";
    struct gw_jscan_field f[] = {
        {.key = "model"}, {.key = "stream"}, {.key = "temperature"},
        {.key = "meta"}, {.key = "stop"}, {.key = "user"}, {.key = "plain"},
        {.key = "absent"}, {.key = NULL}, {.key = "nope"},
    };
    char err[256], out[64];

    (void)state;
    f[7].type = GW_JSON_ARRAY; /* stale output from an earlier call */
    assert_int_equal(gw_jscan(body, sizeof(body) - 1, 64, f, 10, err,
                              sizeof(err)), 0);
    assert_int_equal(f[0].type, GW_JSON_STRING);
    assert_int_equal(f[0].escaped, 1);
    assert_int_equal(f[0].len, strlen("gpt\\u00e9\\n\\ud83d\\ude00\\\"x"));
    assert_memory_equal(f[0].val, "gpt\\u00e9", 9);
    assert_int_equal(gw_jscan_string(&f[0], out, sizeof(out)), 12);
    assert_string_equal(out, "gpt\xc3\xa9\n\xf0\x9f\x98\x80\"x");
    /* needs 12 bytes and the NUL */
    assert_int_equal(gw_jscan_string(&f[0], out, 13), 12);
    assert_int_equal(gw_jscan_string(&f[0], out, 12), -1);
    assert_int_equal(gw_jscan_string(&f[0], out, 8), -1);

    assert_int_equal(f[1].type, GW_JSON_TRUE);
    assert_int_equal(f[1].len, 4);
    assert_int_equal(gw_jscan_string(&f[1], out, sizeof(out)), -1);
    assert_int_equal(f[2].type, GW_JSON_NUMBER);
    assert_int_equal(f[2].len, 6);
    assert_memory_equal(f[2].val, "-0.5e2", 6);
    assert_int_equal(f[3].type, GW_JSON_OBJECT);
    assert_int_equal(f[3].len, strlen("{\"a\":[1,{}]}"));
    assert_memory_equal(f[3].val, "{\"a\":[1,{}]}", f[3].len);
    assert_int_equal(f[4].type, GW_JSON_ARRAY);
    assert_int_equal(f[4].len, strlen("[\"\\n\",\"]\"]"));
    assert_memory_equal(f[4].val, "[\"\\n\",\"]\"]", f[4].len);
    assert_int_equal(f[5].type, GW_JSON_NULL);
    assert_int_equal(f[6].type, GW_JSON_STRING);
    assert_int_equal(f[6].escaped, 0);
    assert_int_equal(gw_jscan_string(&f[6], out, 4), 3);
    assert_string_equal(out, "abc");
    assert_int_equal(gw_jscan_string(&f[6], out, 3), -1);
    assert_int_equal(f[7].type, GW_JSON_NONE);
    assert_null(f[7].val);
    assert_int_equal(f[8].type, GW_JSON_NONE);
    assert_int_equal(f[9].type, GW_JSON_FALSE);
}

static void test_decode(void **state)
{
    static const struct {
        const char *doc, *want;
        long n;
    } cases[] = {
        {"{\"s\":\"\"}", "", 0},
        {"{\"s\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"}", "\"\\/\b\f\n\r\t", 8},
        {"{\"s\":\"\\u0041\\u007f\\u0080\\u07ff\\u0800\\uffff\"}",
         "A\x7f\xc2\x80\xdf\xbf\xe0\xa0\x80\xef\xbf\xbf", 12},
        {"{\"s\":\"\\ud800\\udc00\\udbff\\udfff\"}",
         "\xf0\x90\x80\x80\xf4\x8f\xbf\xbf", 8},
        {"{\"s\":\"x\\u0000y\"}", NULL, -1}, /* valid, but not a C string */
    };
    struct gw_jscan_field f = {.key = "s"};
    char err[256], out[64];
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(gw_jscan(cases[i].doc, strlen(cases[i].doc), 64, &f,
                                  1, err, sizeof(err)), 0);
        assert_int_equal(gw_jscan_string(&f, out, sizeof(out)), cases[i].n);
        if (cases[i].want != NULL)
            assert_memory_equal(out, cases[i].want, (size_t)cases[i].n + 1);
    }
    /* a hand-filled field with a broken escape is refused, not overread */
    f.type = GW_JSON_STRING;
    f.escaped = 1;
    f.val = "ab\\u12";
    f.len = 6;
    assert_int_equal(gw_jscan_string(&f, out, sizeof(out)), -1);
    f.val = "ab\\";
    f.len = 3;
    assert_int_equal(gw_jscan_string(&f, out, sizeof(out)), -1);
    f.val = "\\ud800\\u0041";
    f.len = 12;
    assert_int_equal(gw_jscan_string(&f, out, sizeof(out)), -1);
}

static void test_duplicates(void **state)
{
    struct gw_jscan_field f[] = {{.key = "model"}, {.key = "stream"}};
    char err[256];
    const char *d;

    (void)state;
    d = "{\"model\":\"a\",\"stream\":true,\"model\":\"b\"}";
    assert_int_equal(gw_jscan(d, strlen(d), 64, f, 2, err, sizeof(err)), -1);
    assert_string_equal(err, "invalid JSON at byte 27: duplicate key 'model'");
    d = "{\"stream\":{\"x\":1},\"stream\":[]}";
    assert_int_equal(gw_jscan(d, strlen(d), 64, f, 2, err, sizeof(err)), -1);
    assert_string_equal(err, "invalid JSON at byte 18: duplicate key "
                             "'stream'");
    /* duplicates of keys not asked for, or below the top level, are fine */
    d = "{\"x\":1,\"x\":2,\"model\":\"a\",\"o\":{\"model\":1,\"model\":2}}";
    assert_int_equal(gw_jscan(d, strlen(d), 64, f, 2, err, sizeof(err)), 0);
    assert_int_equal(f[0].type, GW_JSON_STRING);
    assert_memory_equal(f[0].val, "a", 1);
    assert_int_equal(f[1].type, GW_JSON_NONE);
}

static void same_field(const struct gw_jscan_field *a,
                       const struct gw_jscan_field *b)
{
    assert_int_equal(a->type, b->type);
    assert_ptr_equal(a->val, b->val);
    assert_int_equal(a->len, b->len);
    assert_int_equal(a->escaped, b->escaped);
}

static void same_member(const struct gw_jscan_member *a,
                        const struct gw_jscan_member *b)
{
    assert_ptr_equal(a->key, b->key);
    assert_int_equal(a->klen, b->klen);
    assert_int_equal(a->kescaped, b->kescaped);
    same_field(&a->v, &b->v);
}

/* A span equals the literal text. */
#define SPAN_IS(f, lit) \
    (assert_int_equal((f).len, sizeof(lit) - 1), \
     assert_memory_equal((f).val, lit, sizeof(lit) - 1))

/* Captures inside a field's object (struct gw_jscan_sub): members by key
 * and every other member in order, two levels down, and nothing from
 * arrays, deeper objects or look-alike keys elsewhere. (The documents
 * are scanned in place: the members point into them.) */
static void test_sub_captures(void **state)
{
    struct gw_jscan_member vm[4], pm[2];
    struct gw_jscan_field pf[3] = {{.key = "name"}, {.key = "label"},
                                   {.key = "variables"}};
    struct gw_jscan_sub vs = {.members = vm, .cap = 4};
    struct gw_jscan_sub ps = {.fields = pf, .n_fields = 3, .members = pm,
                              .cap = 2};
    struct gw_jscan_field f[2] = {{.key = "model"}, {.key = "prompt"}};
    char err[256];
    const char *d;

    (void)state;
    pf[2].sub = &vs;
    f[1].sub = &ps;
    d = "{\"model\":\"m\",\"x\":{\"name\":\"not this\"},\"prompt\":{"
        "\"a\":[{\"name\":\"nor this\"}],\"name\":\"p\",\"label\":null,"
        "\"variables\":{\"k\":\"v\\n\",\"k\\u0032\":2,\"o\":{\"name\":1},"
        "\"l\":[true]},\"z\":false},\"name\":\"top\"}";
    assert_int_equal(gw_jscan(d, strlen(d), 64, f, 2, err, sizeof(err)), 0);
    assert_int_equal(f[1].type, GW_JSON_OBJECT);
    assert_int_equal(ps.dup, -1);
    assert_int_equal(pf[0].type, GW_JSON_STRING);
    SPAN_IS(pf[0], "p");
    assert_int_equal(pf[1].type, GW_JSON_NULL);
    assert_int_equal(pf[2].type, GW_JSON_OBJECT);
    SPAN_IS(pf[2], "{\"k\":\"v\\n\",\"k\\u0032\":2,\"o\":{\"name\":1},"
                   "\"l\":[true]}");
    /* the prompt's other members: "a" and "z" */
    assert_int_equal(ps.n, 2);
    assert_int_equal(pm[0].klen, 1);
    assert_memory_equal(pm[0].key, "a", 1);
    assert_int_equal(pm[0].v.type, GW_JSON_ARRAY);
    assert_memory_equal(pm[1].key, "z", 1);
    assert_int_equal(pm[1].v.type, GW_JSON_FALSE);
    /* the variables, in order, keys as written */
    assert_int_equal(vs.n, 4);
    assert_int_equal(vs.dup, -1);
    assert_memory_equal(vm[0].key, "k", 1);
    assert_int_equal(vm[0].kescaped, 0);
    assert_int_equal(vm[0].v.type, GW_JSON_STRING);
    assert_int_equal(vm[0].v.escaped, 1);
    SPAN_IS(vm[0].v, "v\\n");
    assert_int_equal(vm[1].klen, 7);
    assert_memory_equal(vm[1].key, "k\\u0032", 7);
    assert_int_equal(vm[1].kescaped, 1);
    assert_int_equal(vm[1].v.type, GW_JSON_NUMBER);
    SPAN_IS(vm[1].v, "2");
    assert_int_equal(vm[2].v.type, GW_JSON_OBJECT);
    SPAN_IS(vm[2].v, "{\"name\":1}");
    assert_int_equal(vm[3].v.type, GW_JSON_ARRAY);
    SPAN_IS(vm[3].v, "[true]");
    /* the top level is captured as before */
    SPAN_IS(f[0], "m");
    /* the trusted scan captures the very same */
    {
        struct gw_jscan_member vm0[4], pm0[2];
        struct gw_jscan_field pf0[3];
        memcpy(vm0, vm, sizeof(vm));
        memcpy(pm0, pm, sizeof(pm));
        memcpy(pf0, pf, sizeof(pf));
        memset(vm, 0, sizeof(vm));
        memset(pm, 0, sizeof(pm));
        assert_int_equal(gw_jscan_trusted(d, strlen(d), 64, f, 2, err,
                                          sizeof(err)), 0);
        for (size_t i = 0; i < 4; i++)
            same_member(&vm0[i], &vm[i]);
        for (size_t i = 0; i < 2; i++)
            same_member(&pm0[i], &pm[i]);
        for (size_t i = 0; i < 3; i++)
            same_field(&pf0[i], &pf[i]);
    }

    /* more members than room: counted, the first ones kept */
    vs.cap = 2;
    assert_int_equal(gw_jscan(d, strlen(d), 64, f, 2, err, sizeof(err)), 0);
    assert_int_equal(vs.n, 4);
    SPAN_IS(vm[1].v, "2");

    /* a key twice below the top level is valid JSON: dup names it */
    d = "{\"prompt\":{\"label\":\"a\",\"name\":\"x\",\"label\":\"b\"}}";
    assert_int_equal(gw_jscan(d, strlen(d), 64, f, 2, err, sizeof(err)), 0);
    assert_int_equal(ps.dup, 1);
    /* ...also written with an escape, as a parser upstream reads it */
    d = "{\"prompt\":{\"name\":\"a\",\"n\\u0061me\":\"b\"}}";
    assert_int_equal(gw_jscan(d, strlen(d), 64, f, 2, err, sizeof(err)), 0);
    assert_int_equal(ps.dup, 0);
    /* and each object starts afresh: an earlier scan leaves nothing */
    d = "{\"prompt\":{\"variables\":{}}}";
    assert_int_equal(gw_jscan(d, strlen(d), 64, f, 2, err, sizeof(err)), 0);
    assert_int_equal(ps.dup, -1);
    assert_int_equal(ps.n, 0);
    assert_int_equal(pf[0].type, GW_JSON_NONE);
    assert_int_equal(pf[2].type, GW_JSON_OBJECT);
    assert_int_equal(vs.n, 0);
    /* a field whose value is not an object captures nothing below */
    vs.n = 99;
    d = "{\"prompt\":{\"variables\":[{\"k\":1}]}}";
    assert_int_equal(gw_jscan(d, strlen(d), 64, f, 2, err, sizeof(err)), 0);
    assert_int_equal(pf[2].type, GW_JSON_ARRAY);
    assert_int_equal(vs.n, 99);
}

/* Captures reach three levels (the root's members' members' members): a
 * sub hooked below that is left alone, and the scan stays valid. */
static void test_sub_depth(void **state)
{
    struct gw_jscan_member m3[2];
    struct gw_jscan_field f3[1] = {{.key = "d"}};
    struct gw_jscan_sub s4 = {.n = 7};
    struct gw_jscan_sub s3 = {.fields = f3, .n_fields = 1, .members = m3,
                              .cap = 2};
    struct gw_jscan_field f2[1] = {{.key = "c", .sub = &s3}};
    struct gw_jscan_sub s2 = {.fields = f2, .n_fields = 1};
    struct gw_jscan_field f[1] = {{.key = "b", .sub = &s2}};
    char err[256];
    const char *d = "{\"b\":{\"c\":{\"d\":{\"e\":1},\"f\":2}}}";

    (void)state;
    f3[0].sub = &s4;
    assert_int_equal(gw_jscan(d, strlen(d), 64, f, 1, err, sizeof(err)), 0);
    assert_int_equal(f2[0].type, GW_JSON_OBJECT);
    assert_int_equal(f3[0].type, GW_JSON_OBJECT);
    SPAN_IS(f3[0], "{\"e\":1}");
    assert_int_equal(s3.n, 1);
    SPAN_IS(m3[0].v, "2");
    assert_int_equal(s4.n, 7);
}

/* A document of an object holding n nested arrays. */
static char *nested(size_t n, size_t *len)
{
    char *s = malloc(2 * n + 8);
    size_t i, o = 0;

    assert_non_null(s);
    memcpy(s + o, "{\"a\":", 5);
    o += 5;
    for (i = 0; i < n; i++)
        s[o++] = '[';
    for (i = 0; i < n; i++)
        s[o++] = ']';
    s[o++] = '}';
    *len = o;
    return s;
}

static void test_depth(void **state)
{
    char err[256], *s;
    size_t len;

    (void)state;
    s = nested(63, &len); /* 64 levels with the root */
    assert_int_equal(gw_jscan(s, len, 64, NULL, 0, err, sizeof(err)), 0);
    assert_int_equal(gw_jscan(s, len, 63, NULL, 0, err, sizeof(err)), -1);
    assert_string_equal(err, "JSON nested deeper than 63 levels");
    free(s);
    s = nested(64, &len);
    assert_int_equal(gw_jscan(s, len, 64, NULL, 0, err, sizeof(err)), -1);
    assert_string_equal(err, "JSON nested deeper than 64 levels");
    free(s);
    /* the whole bit stack, across its 64-bit words */
    s = nested(GW_JSCAN_MAX_DEPTH - 1, &len);
    assert_int_equal(gw_jscan(s, len, GW_JSCAN_MAX_DEPTH, NULL, 0, err,
                              sizeof(err)), 0);
    free(s);
    s = nested(100000, &len);
    assert_int_equal(gw_jscan(s, len, 64, NULL, 0, err, sizeof(err)), -1);
    assert_string_equal(err, "JSON nested deeper than 64 levels");
    assert_int_equal(gw_jscan(s, len, GW_JSCAN_MAX_DEPTH, NULL, 0, err,
                              sizeof(err)), -1);
    assert_string_equal(err, "JSON nested deeper than 4096 levels");
    free(s);
}

/* Objects and arrays alternating, 4000 levels: a mismatched closer at any
 * level is caught, so the bit stack remembers each level's kind. */
static void test_depth_kinds(void **state)
{
    enum { N = 4000 };
    char *s = malloc(N * 8 + 16), err[256];
    size_t o = 0, i, open_end;

    (void)state;
    assert_non_null(s);
    s[o++] = '{';
    for (i = 1; i < N; i++) {
        if (i % 2) {
            memcpy(s + o, "\"k\":[", 5);
            o += 5;
        } else {
            s[o++] = '{';
        }
    }
    open_end = o;
    for (i = N - 1; i >= 1; i--)
        s[o++] = i % 2 ? ']' : '}';
    s[o++] = '}';
    assert_int_equal(gw_jscan(s, o, N, NULL, 0, err, sizeof(err)), 0);
    assert_int_equal(gw_jscan(s, o, N - 1, NULL, 0, err, sizeof(err)), -1);
    for (i = open_end; i < o - 1; i += 97) {
        s[i] = s[i] == ']' ? '}' : ']';
        assert_int_equal(gw_jscan(s, o, N, NULL, 0, err, sizeof(err)), -1);
        s[i] = s[i] == ']' ? '}' : ']';
    }
    free(s);
}

/* jansson's verdict with flags 0 plus the root-object rule. */
static int jansson_valid(const char *s, size_t n)
{
    json_error_t jerr;
    json_t *root = json_loadb(s, n, 0, &jerr);
    int ok = root != NULL && json_is_object(root);

    json_decref(root);
    return ok;
}

static const struct doc diff_docs[] = {
    D("{}"), D("{\"a\":1}"), D("{\"a\":[]}"), D("{\"a\":{}}"),
    D("{\"a\":-0}"), D("{\"a\":1e10}"), D("{\"a\":1.5E-3}"),
    D("{\"a\":-0.0e-0}"), D("{\"a\":01}"), D("{\"a\":1.}"), D("{\"a\":.1}"),
    D("{\"a\":1e}"), D("{\"a\":1e+}"), D("{\"a\":-}"), D("{\"a\":+1}"),
    D("{\"a\":NaN}"), D("{\"a\":Infinity}"), D("{\"a\":[1,]}"),
    D("{\"a\":1,}"), D("{\"a\":1 \"b\":2}"), D("{\"a\"}"), D("{\"a\":}"),
    D("{1:2}"), D("{\"a\":\"\\u00e9\"}"), D("{\"a\":\"\\uD83D\\uDE00\"}"),
    D("{\"a\":\"\\ud800\"}"), D("{\"a\":\"\\udc00\"}"),
    D("{\"a\":\"\\ud800x\"}"), D("{\"a\":\"\\ud800\\ud800\"}"),
    D("{\"a\":\"\\u12\"}"), D("{\"a\":\"\\U0041\"}"), D("{\"a\":\"\\a\"}"),
    D("{\"a\":\"\\/\"}"), D("{\"a\":\"\x1f\"}"), D("{\"a\":\"\x7f\"}"),
    D("{\"a\":\"\xc3\xa9\"}"), D("{\"a\":\"\xc0\x80\"}"),
    D("{\"a\":\"\xe0\x9f\xbf\"}"), D("{\"a\":\"\xed\xbf\xbf\"}"),
    D("{\"a\":\"\xf0\x8f\xbf\xbf\"}"), D("{\"a\":\"\xf4\x8f\xbf\xbf\"}"),
    D("{\"a\":\"\xf5\x80\x80\x80\"}"), D("{\"a\":\"\xe2\x82\"}"),
    D("{\"a\":\"\xfe\"}"), D("{\"\xff\":1}"), D("{\"a\":1}x"),
    D("{\"a\":1} \n"), D("{\"a\":1}}"), D("[1]"), D("\"s\""), D("1"),
    D("true"), D(""), D(" "), D("{\"a\":tru}"), D("{\"a\":nulll}"),
    D("{\"a\":[[[[[[{}]]]]]]}"), D("{\"a\":[[[[[[{}]]]]]}"),
    D("{\"a\":1}\0"), D("{\"a\":\"x\0y\"}"), D("{\"a\"\0:1}"),
    D("{\"a\":1,\"a\":2}"), D("{\"a\":\"\xef\xbb\xbf\"}"),
    D("\xef\xbb\xbf{}"), D("{\"a\":\"\xf0\x9f\x98\x80\"}"),
    D("{\"a\":\"\\\"\"}"), D("{\"a\":\"\\\"}"), D("{\"a\":\"\\\\\"}"),
};

/* The documents on which the two verdicts are known to differ: valid JSON
 * that jansson refuses by its own limits, not RFC 8259's. */
static const struct doc known_diffs[] = {
    D("{\"a\":\"\\u0000\"}"),           /* unless JSON_ALLOW_NUL */
    D("{\"a\":99999999999999999999}"),  /* too big for json_int_t */
    D("{\"a\":-99999999999999999999}"),
    D("{\"a\":1e400}"),                  /* real number overflow */
};

static void test_differential(void **state)
{
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(diff_docs) / sizeof(diff_docs[0]); i++) {
        const struct doc *d = &diff_docs[i];
        int ours = valid(d->s, d->n), theirs = jansson_valid(d->s, d->n);
        if (ours != theirs)
            fail_msg("document %zu \"%.*s\": jscan says %s, jansson %s", i,
                     (int)d->n, d->s, ours ? "valid" : "invalid",
                     theirs ? "valid" : "invalid");
    }
    for (i = 0; i < sizeof(known_diffs) / sizeof(known_diffs[0]); i++) {
        assert_true(valid(known_diffs[i].s, known_diffs[i].n));
        assert_false(jansson_valid(known_diffs[i].s, known_diffs[i].n));
    }
    /* and the other way: a NUL byte after a number or literal */
    assert_false(valid("{\"a\":1\0}", 8));
    assert_true(jansson_valid("{\"a\":1\0}", 8));
    assert_false(valid("{\"a\":[null\0]}", 13));
    assert_true(jansson_valid("{\"a\":[null\0]}", 13));
}

/* Every byte sequence of length 1 and 2, and the neighbourhood of each
 * boundary for lengths 3 and 4, inside a string: same verdict as jansson. */
static void test_utf8_exhaustive(void **state)
{
    static const unsigned char edges[] = {0x00, 0x20, 0x22, 0x5c, 0x7f, 0x80,
                                          0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0,
                                          0xc1, 0xc2, 0xef, 0xf4, 0xff};
    char d[16];
    unsigned a, b, c, e, n = 0;

    (void)state;
    memcpy(d, "{\"a\":\"", 6);
#define CHECK(len)                                                         \
    do {                                                                   \
        memcpy(d + 6 + (len), "\"}", 2);                                   \
        if (valid(d, 8 + (len)) != jansson_valid(d, 8 + (len)))            \
            fail_msg("verdicts differ on %u-byte sequence %02x %02x %02x " \
                     "%02x", (unsigned)(len), (unsigned char)d[6],         \
                     (unsigned char)d[7], (unsigned char)d[8],             \
                     (unsigned char)d[9]);                                 \
        n++;                                                               \
    } while (0)
    for (a = 0; a < 256; a++) {
        d[6] = (char)a;
        CHECK(1);
        for (b = 0; b < 256; b++) {
            d[7] = (char)b;
            CHECK(2);
        }
    }
    for (a = 0xe0; a <= 0xf7; a++) {
        d[6] = (char)a;
        for (b = 0; b < sizeof(edges); b++) {
            d[7] = (char)edges[b];
            for (c = 0; c < sizeof(edges); c++) {
                d[8] = (char)edges[c];
                CHECK(3);
                for (e = 0; e < sizeof(edges); e++) {
                    d[9] = (char)edges[e];
                    CHECK(4);
                }
            }
        }
    }
#undef CHECK
    assert_true(n > 65536);
}

/* jansson refused d only by a limit of its own, not RFC 8259's. */
static int jansson_own_limit(const char *s, size_t n)
{
    json_error_t jerr;
    json_t *root = json_loadb(s, n, 0, &jerr);

    json_decref(root);
    return root == NULL && (strstr(jerr.text, "NUL") != NULL ||
                            strstr(jerr.text, "too big") != NULL ||
                            strstr(jerr.text, "overflow") != NULL);
}

/* jansson (2.14) loses a NUL byte that ends a number or a literal: its
 * lexer pushes the byte back, and an empty slot of its one-character
 * buffer reads as "nothing pushed back", so "{\"a\":1\0}" passes there.
 * True when d is valid once such bytes are dropped, the one way jansson
 * may call valid what jscan does not. */
static int jansson_drops_nul(const char *d, size_t n)
{
    char c[256];
    size_t i, o = 0;
    int dropped = 0;

    assert_true(n <= sizeof(c));
    for (i = 0; i < n; i++) {
        if (d[i] == '\0' && i > 0 &&
            ((d[i - 1] >= '0' && d[i - 1] <= '9') ||
             (d[i - 1] >= 'a' && d[i - 1] <= 'z'))) {
            dropped = 1;
            continue;
        }
        c[o++] = d[i];
    }
    return dropped && valid(c, o);
}

/* Random edits (replace, insert, delete, from an alphabet of bytes that
 * matter to the grammar) of valid documents: the same verdict as jansson
 * on every result, bar jansson's own limits. Deterministic seed. */
static void test_mutations(void **state)
{
    static const char alphabet[] = "{}[],:\"\\ \tu0019eE.-+trufalsnd8DdcC/b"
                                   "\x00\x1f\x7f\x80\xbf\xc3\xa9\xe2\x82"
                                   "\xed\xa0\xf0\x9f\xf4\x90\xff";
    static const char *seeds[] = {
        ("{\"model\":\"m\\u00e9\\ud83d\\ude00\",\"stream\":true,\"n\":-1.5e+2,"
         "\"a\":[0,{},[],null,false,\"\\n\"]}"),
        "{\"s\":\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\",\"o\":{\"k\":[1e5]}}",
        "{\"a\":[[[{\"b\":\"\\\"\\\\\\/\"}]]],\"c\":0.25}",
    };
    char d[256];
    uint64_t x = 0x9e3779b97f4a7c15ULL;
    size_t n, i, j, k, diffs = 0, skipped = 0, bad = 0;

    (void)state;
    for (i = 0; i < 30000; i++) {
        n = strlen(seeds[i % 3]);
        memcpy(d, seeds[i % 3], n);
        for (j = 0; j <= (i % 4); j++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            k = (size_t)(x >> 8) % n;
            char c = alphabet[(x >> 40) % (sizeof(alphabet) - 1)];
            switch (x % 3) {
            case 0:
                d[k] = c;
                break;
            case 1:
                if (n < sizeof(d)) {
                    memmove(d + k + 1, d + k, n - k);
                    d[k] = c;
                    n++;
                }
                break;
            default:
                if (n > 1) {
                    memmove(d + k, d + k + 1, n - k - 1);
                    n--;
                }
                break;
            }
        }
        int ours = valid(d, n), theirs = jansson_valid(d, n);
        if (ours == theirs) {
            bad += !ours;
            continue;
        }
        if (ours ? jansson_own_limit(d, n) : jansson_drops_nul(d, n)) {
            skipped++;
            continue;
        }
        if (diffs++ < 5) {
            print_error("verdicts differ (jscan %s) on:",
                        ours ? "valid" : "invalid");
            for (k = 0; k < n; k++)
                print_error(" %02x", (unsigned char)d[k]);
            print_error("\n");
        }
    }
    printf("jscan mutations: 30000 documents, %zu invalid, %zu skipped for "
           "jansson's limits and quirk\n", bad, skipped);
    assert_int_equal(diffs, 0);
    assert_true(bad > 10000); /* most edits break the document */
    assert_true(bad < 29000);
    assert_true(skipped < 500);
}

static double now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

/* Nanoseconds per call of one round of gw_jscan (which == 0) or of
 * json_loadb + json_decref (which == 1) on body; each call is checked. */
static double time_round(int which, const char *body, size_t len, long iters)
{
    struct gw_jscan_field f[2] = {{.key = "model"}, {.key = "stream"}};
    char err[128];
    long i, ok = 0;
    double t0 = now_ns();

    for (i = 0; i < iters; i++) {
        if (which == 0) {
            ok += gw_jscan(body, len, 64, f, 2, err, sizeof(err)) == 0 &&
                  f[1].type == GW_JSON_TRUE && f[0].len == 21;
        } else {
            json_error_t jerr;
            json_t *root = json_loadb(body, len, 0, &jerr);
            ok += json_is_true(json_object_get(root, "stream"));
            json_decref(root);
        }
    }
    t0 = (now_ns() - t0) / (double)iters;
    assert_int_equal(ok, iters);
    return t0;
}

/* Times gw_jscan against json_loadb + json_decref on a typical chat
 * request body and prints the best of five rounds of each (the machine
 * may be shared); the figures are for the report, the assertions check
 * that every call did the work. GW_JSCAN_BENCH_ITERS sets the calls per
 * round. */
static void test_timing(void **state)
{
    static const char body[] =
        "{\"model\":\"llama-3.1-8b-instruct\",\"stream\":true,"
        "\"temperature\":0.7,\"max_tokens\":256,\"top_p\":0.95,"
        "\"messages\":[{\"role\":\"system\",\"content\":\"You are a "
        "copywriter for an online shop. Write short, factual product copy "
        "and never invent features.\"},{\"role\":\"user\",\"content\":"
        "\"Write a two-sentence description of the blue ceramic mug, 350 ml, "
        "dishwasher safe, made in Portugal.\\nKeep it under 40 words.\"}],"
        "\"user\":\"shop-frontend\",\"metadata\":{\"sku\":\"MUG-350-BL\","
        "\"ab\":[1,2]}}";
    const char *env = getenv("GW_JSCAN_BENCH_ITERS");
    long iters = env ? atol(env) : 4000;
    double best[2] = {1e18, 1e18}, t;
    int r, w;

    (void)state;
    if (iters < 1)
        iters = 1;
    for (r = 0; r < 5; r++) {
        for (w = 0; w < 2; w++) {
            t = time_round(w, body, sizeof(body) - 1, iters);
            if (t < best[w])
                best[w] = t;
        }
    }
    printf("jscan timing: %zu-byte body, best of 5 x %ld calls: gw_jscan "
           "%.0f ns, json_loadb+json_decref %.0f ns (%.1fx)\n",
           sizeof(body) - 1, iters, best[0], best[1], best[1] / best[0]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),
        cmocka_unit_test(test_invalid),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_captures),
        cmocka_unit_test(test_escaped_keys),
        cmocka_unit_test(test_decode),
        cmocka_unit_test(test_duplicates),
        cmocka_unit_test(test_sub_captures),
        cmocka_unit_test(test_sub_depth),
        cmocka_unit_test(test_depth),
        cmocka_unit_test(test_depth_kinds),
        cmocka_unit_test(test_differential),
        cmocka_unit_test(test_utf8_exhaustive),
        cmocka_unit_test(test_mutations),
        cmocka_unit_test(test_timing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
