/*
 * test_evl_claim.c - the claim checker on hand-made Chinese and English
 * copy: supported, contradicted and unverifiable claims, longest match,
 * multi-attribute values, pairing clauses, quantities across units, and
 * malformed facts.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>
#include <cmocka.h>
#include <jansson.h>
#include "evaluator/claim.h"

struct fixture {
    struct evl_vocab *v;
    struct evl_checker *c;
};

/* The "sample file": every product's facts feed the vocabulary. */
static const char *const products[] = {
    "{\"颜色\": \"白色\", \"类型\": \"上衣\", \"材质\": \"棉\"}",
    "{\"颜色\": [\"黑色\", \"红色\"], \"类型\": \"裙\", \"风格\": \"复古\"}",
    "{\"颜色\": \"米白色\", \"图案\": \"纯色\", \"重量\": \"1.2kg\"}",
    "{\"颜色\": \"纯色\", \"裙长\": \"连衣裙\", \"裙款式\": \"木耳边\"}",
    "{\"颜色\": \"蓝色\", \"风格\": [\"简约\", \"休闲\"]}",
    "{\"color\": \"red\", \"material\": \"cotton\", \"battery\": \"5000mAh\"}",
    "{\"color\": \"blue\", \"material\": \"linen\", \"weight\": \"2 lb\"}",
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    size_t i;

    f->v = evl_vocab_new(EVL_MIN_CHARS);
    for (i = 0; i < sizeof(products) / sizeof(products[0]); i++) {
        json_t *j = json_loads(products[i], 0, NULL);
        assert_non_null(j);
        assert_int_equal(evl_vocab_add_facts(f->v, j, NULL), 0);
        json_decref(j);
    }
    assert_int_equal(evl_vocab_add(f->v, "裙款式", "木耳", NULL), 0);
    assert_int_equal(evl_vocab_build(f->v, NULL), 0);
    f->c = evl_checker_new(f->v, 0.02);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    evl_checker_free(f->c);
    evl_vocab_free(f->v);
    free(f);
    return 0;
}

static void check(struct fixture *f, const char *facts, const char *text,
                  struct evl_check_result *r)
{
    json_t *j = json_loads(facts, 0, NULL);
    char *err = NULL;

    assert_non_null(j);
    if (evl_check(f->c, j, text, strlen(text), r, &err) != 0)
        fail_msg("check failed: %s", err);
    json_decref(j);
}

static void test_vocab(void **state)
{
    struct fixture *f = *state;

    /* quantities are not vocabulary; the attributes are still known */
    assert_true(evl_vocab_attr_id(f->v, "重量") >= 0);
    assert_true(evl_vocab_attr_id(f->v, "颜色") >= 0);
    assert_int_equal(evl_vocab_attr_id(f->v, "尺码"), -1);
    assert_string_equal(evl_vocab_attr_name(f->v, 0), "颜色");
}

static void test_supported(void **state)
{
    struct evl_check_result r;

    check(*state, "{\"颜色\": \"白色\", \"类型\": \"上衣\"}",
          "这款白色上衣简约百搭。", &r);
    assert_int_equal(r.supported, 2);
    assert_int_equal(r.contradicted, 0);
    assert_int_equal(r.facts, 2);
    assert_int_equal(r.facts_mentioned, 2);
}

static void test_contradicted_colour(void **state)
{
    struct evl_check_result r;
    struct fixture *f = *state;

    check(f, "{\"颜色\": \"白色\", \"类型\": \"上衣\"}", "这款黑色上衣很显瘦。", &r);
    assert_int_equal(r.contradicted, 1);
    assert_int_equal(r.supported, 1);
    assert_int_equal(r.n_details, 1);
    assert_string_equal(r.details[0].stated, "黑色");
    assert_string_equal(r.details[0].known, "白色");
    assert_string_equal(evl_vocab_attr_name(f->v, r.details[0].attr), "颜色");
    assert_int_equal(r.n_attrs_contradicted, 1);
    assert_int_equal(r.facts_mentioned, 1);
}

static void test_longest_match(void **state)
{
    struct evl_check_result r;

    /* 米白色 is another colour, not 白色 */
    check(*state, "{\"颜色\": \"白色\"}", "米白色的针织开衫。", &r);
    assert_int_equal(r.contradicted, 1);
    assert_int_equal(r.supported, 0);
    assert_string_equal(r.details[0].stated, "米白色");
    /* and a product that is 米白色 is supported by it */
    check(*state, "{\"颜色\": \"米白色\"}", "米白色的针织开衫。", &r);
    assert_int_equal(r.supported, 1);
    assert_int_equal(r.contradicted, 0);
    /* the broader 白色 for an off-white product names part of the truth */
    check(*state, "{\"颜色\": \"米白色\"}", "白色的针织开衫。", &r);
    assert_int_equal(r.supported, 1);
    assert_int_equal(r.contradicted, 0);
}

static void test_unverifiable(void **state)
{
    struct evl_check_result r;

    /* no 风格 fact: a style claim cannot be checked */
    check(*state, "{\"颜色\": \"白色\"}", "复古的白色衬衫。", &r);
    assert_int_equal(r.unverifiable, 1);
    assert_int_equal(r.supported, 1);
    assert_int_equal(r.contradicted, 0);
    /* every real value stated plus one more: an addition, not a swap */
    check(*state, "{\"风格\": \"简约\"}", "简约又休闲的设计。", &r);
    assert_int_equal(r.supported, 1);
    assert_int_equal(r.unverifiable, 1);
    assert_int_equal(r.contradicted, 0);
    /* a real value left out and another named: contradiction */
    check(*state, "{\"风格\": [\"简约\", \"复古\"]}", "简约又休闲的设计。", &r);
    assert_int_equal(r.contradicted, 1);
}

static void test_pairing_clause(void **state)
{
    struct evl_check_result r;

    check(*state, "{\"颜色\": \"白色\", \"类型\": \"上衣\"}",
          "白色上衣，搭配黑色的裙，清爽利落。", &r);
    assert_int_equal(r.contradicted, 0);
    assert_int_equal(r.unverifiable, 2);
    /* the cue only covers its own clause */
    check(*state, "{\"颜色\": \"白色\"}", "搭配什么都好看，黑色很百搭。", &r);
    assert_int_equal(r.contradicted, 1);
}

static void test_multi_attribute_value(void **state)
{
    struct evl_check_result r;

    /* 纯色 is a colour and a pattern: the product has it as a pattern */
    check(*state, "{\"图案\": \"纯色\", \"颜色\": \"白色\"}", "纯色白色T恤", &r);
    assert_int_equal(r.contradicted, 0);
    assert_int_equal(r.supported, 2);
}

static void test_part_of_true_value_and_other_attribute(void **state)
{
    struct evl_check_result r;

    /* 木耳 is part of the true 木耳边 */
    check(*state, "{\"裙款式\": \"木耳边\"}", "木耳花边领口。", &r);
    assert_int_equal(r.contradicted, 0);
    /* 连衣裙 (a length) states 裙 (a type): 上衣 is then an addition */
    check(*state, "{\"类型\": \"裙\", \"裙长\": \"连衣裙\"}",
          "这条连衣裙配一件上衣也好看。", &r);
    assert_int_equal(r.contradicted, 0);
}

static void test_english_word_boundaries(void **state)
{
    struct evl_check_result r;

    check(*state, "{\"color\": \"red\", \"material\": \"cotton\"}",
          "A Red cotton shirt, redesigned for summer.", &r);
    assert_int_equal(r.supported, 2);
    assert_int_equal(r.contradicted, 0);
    check(*state, "{\"color\": \"red\", \"material\": \"cotton\"}",
          "A blue linen shirt.", &r);
    assert_int_equal(r.contradicted, 2);
}

static void test_quantities(void **state)
{
    struct evl_check_result r;

    check(*state, "{\"重量\": \"1.2kg\"}", "整机仅重1200克，轻薄便携。", &r);
    assert_int_equal(r.supported, 1);
    assert_int_equal(r.contradicted, 0);
    assert_int_equal(r.facts_mentioned, 1);
    check(*state, "{\"重量\": \"1.2kg\"}", "仅重2.4斤。", &r);
    assert_int_equal(r.supported, 1);
    check(*state, "{\"重量\": \"1.2kg\"}", "仅重1.5公斤。", &r);
    assert_int_equal(r.contradicted, 1);
    assert_string_equal(r.details[0].stated, "1.5公斤");
    assert_string_equal(r.details[0].known, "1.2kg");
    check(*state, "{\"battery\": \"5000mAh\"}", "A 4000 mAh battery, 65W charging.",
          &r);
    assert_int_equal(r.contradicted, 1);
    assert_int_equal(r.unverifiable, 1); /* no power fact */
    check(*state, "{\"battery\": \"5000mAh\"}", "5 Ah inside.", &r);
    assert_int_equal(r.supported, 1);
}

static void test_malformed_facts(void **state)
{
    struct fixture *f = *state;
    struct evl_check_result r;
    char *err = NULL;
    json_t *j = json_loads("{\"颜色\": {\"x\": 1}}", 0, NULL);

    assert_int_equal(evl_check(f->c, j, "白色", 6, &r, &err), -1);
    assert_non_null(err);
    assert_non_null(strstr(err, "颜色"));
    free(err);
    err = NULL;
    json_decref(j);
    j = json_loads("[1, 2]", 0, NULL);
    assert_int_equal(evl_check(f->c, j, "白色", 6, &r, &err), -1);
    free(err);
    json_decref(j);
    /* no facts at all: everything unverifiable */
    assert_int_equal(evl_check(f->c, NULL, "白色上衣", 12, &r, NULL), 0);
    assert_int_equal(r.unverifiable, 2);
}

static void test_lexicon(void **state)
{
    struct evl_vocab *v = evl_vocab_new(1);
    char path[] = "/tmp/test_evl_lexiconXXXXXX";
    int fd = mkstemp(path);
    char *err = NULL;
    static const char text[] = "# colours\n颜色\t藏青色\n\n颜色\t酒红色\n";

    (void)state;
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, sizeof(text) - 1), (int)sizeof(text) - 1);
    close(fd);
    assert_int_equal(evl_vocab_load_lexicon(v, path, &err), 0);
    assert_int_equal(evl_vocab_n_values(v), 2);
    fd = open(path, O_WRONLY | O_TRUNC);
    assert_int_equal(write(fd, "no tab here\n", 12), 12);
    close(fd);
    assert_int_equal(evl_vocab_load_lexicon(v, path, &err), -1);
    assert_non_null(strstr(err, "line 1"));
    free(err);
    unlink(path);
    evl_vocab_free(v);
}

static void test_facts_text_fast_path_matches_jansson(void **state)
{
    static const char *const texts[] = {
        "{\"颜色\": \"白色\", \"n\": 12, \"r\": 1.5, \"w\": \"1.2kg\"}",
        " { \"a\" : [ \"x\" , \"y\\\"q\" ] , \"b\":[] } ",
        "{\"esc\": \"tab\\there\\u00e9\\u767d\\ud83d\\ude00\"}",
        "{\"big\": 12345678901234, \"neg\": -3, \"exp\": 2e3}",
        "{\"nested\": {\"x\": 1}}",          /* invalid: both paths refuse */
        "{\"nul\": null, \"ok\": \"v\"}",     /* null: refused by both */
        "{}",
    };
    struct evl_vocab *a = evl_vocab_new(1), *b = evl_vocab_new(1);
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        json_t *j = json_loads(texts[i], 0, NULL);
        char *e1 = NULL, *e2 = NULL;
        int r1, r2;
        assert_non_null(j);
        r1 = evl_vocab_add_facts(a, j, &e1);
        r2 = evl_vocab_add_facts_text(b, texts[i], strlen(texts[i]), &e2);
        if (r1 != r2)
            fail_msg("'%s': jansson path %d (%s), text path %d (%s)", texts[i],
                     r1, e1 ? e1 : "", r2, e2 ? e2 : "");
        free(e1);
        free(e2);
        json_decref(j);
    }
    assert_int_equal(evl_vocab_n_values(a), evl_vocab_n_values(b));
    assert_int_equal(evl_vocab_n_attrs(a), evl_vocab_n_attrs(b));
    for (i = 0; i < evl_vocab_n_attrs(a); i++)
        assert_string_equal(evl_vocab_attr_name(a, i), evl_vocab_attr_name(b, i));
    assert_int_equal(evl_vocab_build(a, NULL), 0);
    assert_int_equal(evl_vocab_build(b, NULL), 0);
    {
        /* the decoded values match the same way: tab, é, 白, emoji, 2000 */
        const char *t = "x 12 1.5 y\"q tab\there\xc3\xa9\xe7\x99\xbd\xf0\x9f\x98\x80 "
                        "12345678901234 -3 2000";
        const char *facts = "{\"n\": 12, \"r\": 1.5, \"a\": [\"x\", \"y\\\"q\"], "
            "\"esc\": \"tab\\there\\u00e9\\u767d\\ud83d\\ude00\", "
            "\"big\": 12345678901234, \"neg\": -3, \"exp\": 2e3}";
        json_t *j = json_loads(facts, 0, NULL);
        struct evl_checker *ca = evl_checker_new(a, 0.02), *cb = evl_checker_new(b, 0.02);
        struct evl_check_result ra, rb;
        assert_int_equal(evl_check(ca, j, t, strlen(t), &ra, NULL), 0);
        assert_int_equal(evl_check(cb, j, t, strlen(t), &rb, NULL), 0);
        assert_int_equal(ra.supported, 8);
        assert_int_equal(rb.supported, ra.supported);
        assert_int_equal(rb.facts_mentioned, ra.facts_mentioned);
        evl_checker_free(ca);
        evl_checker_free(cb);
        json_decref(j);
    }
    evl_vocab_free(a);
    evl_vocab_free(b);
}

/* Random mutations of facts texts: both paths agree on every one. */
static void test_facts_text_fuzz_equivalence(void **state)
{
    static const char *const seeds[] = {
        "{\"颜色\": [\"白色\", \"黑色\"], \"n\": -12.5e1, \"w\": \"1.2kg\"}",
        "{\"a\": \"x\\u00e9\\ud83d\\ude00\\n\", \"b\": [1, 0, -0, 2E-3]}",
        "{}",
    };
    static const char alphabet[] = "\"\\{}[],:u0-9.eE+ \xe7\x99\xbd\xff\xc3";
    struct evl_vocab *a = evl_vocab_new(1), *b = evl_vocab_new(1);
    uint64_t rng = 88172645463325252ULL;
    char buf[256];
    size_t i, k;

    (void)state;
    for (i = 0; i < 20000; i++) {
        const char *seed = seeds[i % 3];
        size_t n = strlen(seed), muts;
        json_t *j;
        json_error_t jerr;
        char *e1 = NULL, *e2 = NULL;
        int r1, r2;
        memcpy(buf, seed, n);
        rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
        for (muts = 1 + rng % 3; muts > 0; muts--) {
            size_t pos;
            rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
            pos = n ? (size_t)(rng >> 8) % n : 0;
            switch (rng % 3) {
            case 0: /* replace */
                if (n)
                    buf[pos] = alphabet[(rng >> 32) % (sizeof(alphabet) - 1)];
                break;
            case 1: /* delete */
                if (n) {
                    memmove(buf + pos, buf + pos + 1, n - pos - 1);
                    n--;
                }
                break;
            default: /* insert */
                if (n + 1 < sizeof(buf)) {
                    memmove(buf + pos + 1, buf + pos, n - pos);
                    buf[pos] = alphabet[(rng >> 32) % (sizeof(alphabet) - 1)];
                    n++;
                }
            }
        }
        j = json_loadb(buf, n, JSON_DECODE_ANY, &jerr);
        r1 = j ? evl_vocab_add_facts(a, j, &e1) : -1;
        r2 = evl_vocab_add_facts_text(b, buf, n, &e2);
        if (r1 != r2 || evl_vocab_n_values(a) != evl_vocab_n_values(b) ||
            evl_vocab_n_attrs(a) != evl_vocab_n_attrs(b))
            fail_msg("mutation %zu '%.*s': jansson %d (%s), text %d (%s), "
                     "values %zu/%zu", i, (int)n, buf, r1, e1 ? e1 : "", r2,
                     e2 ? e2 : "", evl_vocab_n_values(a), evl_vocab_n_values(b));
        free(e1);
        free(e2);
        json_decref(j);
    }
    for (k = 0; k < evl_vocab_n_values(a); k++)
        assert_string_equal(evl_vocab_value_text(a, k), evl_vocab_value_text(b, k));
    for (k = 0; k < evl_vocab_n_attrs(a); k++)
        assert_string_equal(evl_vocab_attr_name(a, k), evl_vocab_attr_name(b, k));
    evl_vocab_free(a);
    evl_vocab_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vocab),
        cmocka_unit_test(test_supported),
        cmocka_unit_test(test_contradicted_colour),
        cmocka_unit_test(test_longest_match),
        cmocka_unit_test(test_unverifiable),
        cmocka_unit_test(test_pairing_clause),
        cmocka_unit_test(test_multi_attribute_value),
        cmocka_unit_test(test_part_of_true_value_and_other_attribute),
        cmocka_unit_test(test_english_word_boundaries),
        cmocka_unit_test(test_quantities),
        cmocka_unit_test(test_malformed_facts),
        cmocka_unit_test(test_lexicon),
        cmocka_unit_test(test_facts_text_fast_path_matches_jansson),
        cmocka_unit_test(test_facts_text_fuzz_equivalence),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
