/*
 * fuzz_claim.c - libFuzzer target: the evaluator's claim extractor and fact
 * checker (evaluator/claim.c, with the quantities of evaluator/unit.c).
 *
 * Input: one byte (the shortest value matched, 1..3 code points), then
 * up to three lines: the product's facts (JSON), another product's facts
 * (adds values that can contradict), and the copy to check (the rest,
 * newlines included). The vocabulary is built twice from the same facts:
 * from their text (evl_vocab_add_facts_text, the first pass) and from the
 * jansson tree (evl_vocab_add_facts); claim.c says both paths add the same
 * values. Checked: the two vocabularies agree in size and give the same
 * verdicts on the copy; counts stay within their bounds.
 */
#include "evaluator/claim.h"

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz_claim: %s: %s\n", what, detail ? detail : "");
    abort();
}

/* Splits off the first line of *p (n bytes left); returns its length. */
static size_t line(const char **p, size_t *n, const char **start)
{
    const char *nl = memchr(*p, '\n', *n);
    size_t len = nl ? (size_t)(nl - *p) : *n;

    *start = *p;
    *p += nl ? len + 1 : len;
    *n -= nl ? len + 1 : len;
    return len;
}

static int check(struct evl_vocab *v, const json_t *facts, const char *text,
                 size_t len, struct evl_check_result *res)
{
    struct evl_checker *c = evl_checker_new(v, 0.05);
    char *err = NULL;
    int rc;

    if (c == NULL)
        die("evl_checker_new", NULL);
    memset(res, 0, sizeof(*res));
    rc = evl_check(c, facts, text, len, res, &err);
    if (rc < 0 && (err == NULL || *err == '\0'))
        die("evl_check failed without a reason", NULL);
    free(err);
    evl_checker_free(c);
    if (rc == 0 &&
        (res->n_details > EVL_DETAILS_MAX ||
         res->n_attrs_present > EVL_FACTS_MAX ||
         res->n_attrs_contradicted > EVL_FACTS_MAX ||
         res->supported + res->contradicted + res->unverifiable >
             EVL_CLAIMS_MAX ||
         res->facts_mentioned > res->facts))
        die("a result out of its bounds", NULL);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p, *f1, *f2, *text;
    size_t n, l1, l2, i;
    struct evl_vocab *va, *vb;
    struct evl_check_result ra, rb;
    json_t *j1 = NULL, *j2 = NULL;
    json_error_t e;
    char *ea = NULL, *eb = NULL;
    int min_chars, a1, b1, a2 = 0, b2 = 0, rca, rcb;

    if (size < 1)
        return 0;
    min_chars = 1 + data[0] % 3;
    p = (const char *)data + 1;
    n = size - 1;
    l1 = line(&p, &n, &f1);
    l2 = line(&p, &n, &f2);
    text = p;

    va = evl_vocab_new(min_chars);
    vb = evl_vocab_new(min_chars);
    if (va == NULL || vb == NULL)
        die("evl_vocab_new", NULL);
    j1 = json_loadb(f1, l1, 0, &e);
    j2 = l2 ? json_loadb(f2, l2, 0, &e) : NULL;
    if (j1 == NULL)
        goto out; /* the reader refuses such a record */
    a1 = evl_vocab_add_facts_text(va, f1, l1, &ea);
    b1 = evl_vocab_add_facts(vb, j1, &eb);
    if (j2) {
        a2 = evl_vocab_add_facts_text(va, f2, l2, &ea);
        b2 = evl_vocab_add_facts(vb, j2, &eb);
    }
    if (a1 != b1 || a2 != b2) {
        fprintf(stderr, "text: %s\ntree: %s\n", ea ? ea : "ok",
                eb ? eb : "ok");
        die("the two ways of adding facts disagree", NULL);
    }
    if (evl_vocab_n_values(va) != evl_vocab_n_values(vb) ||
        evl_vocab_n_attrs(va) != evl_vocab_n_attrs(vb))
        die("the two vocabularies differ in size", NULL);
    for (i = 0; i < evl_vocab_n_values(va); i++)
        if (strcmp(evl_vocab_value_text(va, i), evl_vocab_value_text(vb, i)))
            die("the two vocabularies hold other values",
                evl_vocab_value_text(va, i));
    free(ea);
    free(eb);
    ea = eb = NULL;
    if (evl_vocab_build(va, &ea) < 0 || evl_vocab_build(vb, &eb) < 0)
        goto out;
    rca = check(va, json_is_object(j1) ? j1 : NULL, text, n, &ra);
    rcb = check(vb, json_is_object(j1) ? j1 : NULL, text, n, &rb);
    if (rca != rcb || ra.supported != rb.supported ||
        ra.contradicted != rb.contradicted ||
        ra.unverifiable != rb.unverifiable || ra.facts != rb.facts ||
        ra.facts_mentioned != rb.facts_mentioned)
        die("the two vocabularies check the copy differently", NULL);
out:
    free(ea);
    free(eb);
    json_decref(j1);
    json_decref(j2);
    evl_vocab_free(va);
    evl_vocab_free(vb);
    return 0;
}
