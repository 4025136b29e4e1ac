/*
 * test_gw_prompt.c - the exposure writer (gateway/exposure.c): records
 * reach a JSON-lines file, every push is either written or counted as
 * dropped, and the output text is read from JSON answers and SSE streams.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gateway/exposure.h"

static void test_output_text_json_and_sse(void **state)
{
    const char *body = "{\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
                       "\"content\":\"Hello \\\"world\\\" \\u00e9\"}}],\"usage\":{}}";
    const char *sse = "{\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n"
                      "{\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n"
                      "not json\n"
                      "{\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\n"
                      "{\"choices\":[],\"usage\":{\"total_tokens\":3}}\n";
    const char *legacy = "{\"choices\":[{\"text\":\"old style\"}]}";
    char *t;

    (void)state;
    t = gw_exposure_output_text(body, strlen(body), 0);
    assert_string_equal(t, "Hello \"world\" \xc3\xa9");
    free(t);
    t = gw_exposure_output_text(sse, strlen(sse), 1);
    assert_string_equal(t, "Hello");
    free(t);
    t = gw_exposure_output_text(legacy, strlen(legacy), 0);
    assert_string_equal(t, "old style");
    free(t);
    assert_null(gw_exposure_output_text("{\"error\":{}}", 12, 0));
    assert_null(gw_exposure_output_text("", 0, 0));
}

static void test_rec_output_bounded(void **state)
{
    struct gw_exposure_rec *r = gw_exposure_rec_new(GW_EXPOSURE, 0);
    char chunk[100];

    (void)state;
    memset(chunk, 'x', sizeof(chunk));
    r->raw_sse = 1;
    for (int i = 0; i < 50; i++)
        gw_exposure_rec_output(r, chunk, sizeof(chunk), 1000);
    assert_true(r->truncated);
    assert_true(r->raw_len <= 1000);
    assert_int_equal(r->raw_len, 9 * 101);
    gw_exposure_rec_free(r);
}

static struct gw_exposure_rec *make(int i, enum gw_exposure_kind kind)
{
    char rid[32], vars[64];
    struct gw_exposure_rec *r;
    size_t off = 0;

    snprintf(rid, sizeof(rid), "req-%d", i);
    snprintf(vars, sizeof(vars), "{\"i\":%d}", i);
    r = gw_exposure_rec_new(kind, strlen(rid) + strlen(vars) + 16);
    r->at_us = 1795875000000000LL + i;
    if (kind == GW_EXPOSURE) {
        r->ex.request_id = gw_exposure_rec_str(r, &off, rid, strlen(rid));
        r->ex.prompt = gw_exposure_rec_str(r, &off, "p", 1);
        r->ex.version = 1 + i % 2;
        r->ex.status = 200;
        r->ex.variables = gw_exposure_rec_str(r, &off, vars, strlen(vars));
    } else {
        r->fb.request_id = gw_exposure_rec_str(r, &off, rid, strlen(rid));
        r->fb.event = gw_exposure_rec_str(r, &off, "click", 5);
        r->fb.value = 1;
    }
    return r;
}

static void test_writer_file_every_push_accounted(void **state)
{
    char dir[] = "/tmp/test_gw_prompt.XXXXXX", path[128], err[256], line[512];
    struct gw_exposure *w;
    struct gw_exposure_stats st;
    unsigned long lines = 0, feedback = 0, pushed = 0, refused = 0;
    FILE *f;

    (void)state;
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/exposures.jsonl", dir);
    /* a tiny queue: pushes faster than the writer drains must be dropped
     * and counted, never block */
    w = gw_exposure_new(NULL, path, 4, err, sizeof(err));
    assert_non_null(w);
    for (int i = 0; i < 20000; i++) {
        if (gw_exposure_push(w, make(i, i % 10 == 0 ? GW_FEEDBACK : GW_EXPOSURE)) < 0)
            refused++;
        pushed++;
    }
    gw_exposure_flush(w);
    gw_exposure_stats(w, &st);
    assert_int_equal(st.queued + st.dropped, pushed);
    assert_int_equal(st.dropped, refused);
    assert_int_equal(st.written, st.queued);
    assert_int_equal(st.failed, 0);
    gw_exposure_free(w);

    f = fopen(path, "r");
    assert_non_null(f);
    while (fgets(line, sizeof(line), f)) {
        json_t *j = json_loads(line, 0, NULL);
        assert_non_null(j);
        if (strcmp(json_string_value(json_object_get(j, "type")), "feedback") == 0)
            feedback++;
        else
            assert_true(json_is_object(json_object_get(j, "variables")));
        assert_int_equal(strlen(json_string_value(json_object_get(j, "at"))), 24);
        json_decref(j);
        lines++;
    }
    fclose(f);
    assert_int_equal(lines, st.written);
    assert_true(feedback > 0 || st.written < 10);
    unlink(path);
    rmdir(dir);
}

static void test_writer_bad_targets(void **state)
{
    char err[256];

    (void)state;
    assert_null(gw_exposure_new(NULL, "/nonexistent-dir/x.jsonl", 4, err, sizeof(err)));
    assert_non_null(strstr(err, "cannot open exposure log '/nonexistent-dir/x.jsonl'"));
    assert_null(gw_exposure_new("/nonexistent-dir/reg.db", NULL, 4, err, sizeof(err)));
    assert_non_null(strstr(err, "exposure log: "));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_output_text_json_and_sse),
        cmocka_unit_test(test_rec_output_bounded),
        cmocka_unit_test(test_writer_file_every_push_accounted),
        cmocka_unit_test(test_writer_bad_targets),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
