/*
 * test_evl_sample.c - the sample reader: JSON lines and CSV, --map, the
 * facts-only first pass, and malformed records reported with their line
 * number without stopping the reader.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include "evaluator/sample.h"

static char *write_tmp(const char *suffix, const char *text)
{
    char *path;
    FILE *f;

    assert_true(asprintf(&path, "/tmp/test_evl_sample_%d_%s", (int)getpid(),
                         suffix) > 0);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

static void test_jsonl(void **state)
{
    char *path = write_tmp("a.jsonl",
        "{\"version\": \"3\", \"id\": \"a\", \"user\": \"u1\", \"facts\": "
        "{\"颜色\": \"白色\"}, \"output\": \"白色\", \"clicks\": 1}\n"
        "\n"
        "{\"version\": 4, \"impressions\": 5, \"clicks\": 2, \"conversions\": 1}\n");
    struct evl_reader *r = evl_reader_open(path, -1, NULL, NULL);
    struct evl_sample s;
    char *err = NULL;

    (void)state;
    assert_non_null(r);
    assert_int_equal(evl_reader_next(r, &s, EVL_READ_FULL, &err), 1);
    assert_string_equal(s.version, "3");
    assert_string_equal(s.id, "a");
    assert_string_equal(s.output, "白色");
    assert_int_equal(s.output_len, 6);
    assert_int_equal(s.impressions, 1);
    assert_int_equal(s.clicks, 1);
    assert_int_equal(s.conversions, 0);
    assert_int_equal(s.line, 1);
    assert_int_equal(evl_reader_next(r, &s, EVL_READ_FULL, &err), 1);
    assert_string_equal(s.version, "4"); /* numbers become names */
    assert_int_equal(s.line, 3);         /* blank line skipped, counted */
    assert_int_equal(s.impressions, 5);
    assert_null(s.output);
    assert_int_equal(evl_reader_next(r, &s, EVL_READ_FULL, &err), 0);
    /* second pass after rewind; the facts-only pass dedups facts texts */
    assert_int_equal(evl_reader_rewind(r, &err), 0);
    assert_int_equal(evl_reader_next(r, &s, EVL_READ_FACTS, &err), 1);
    assert_int_equal(s.facts_text_len, strlen("{\"颜色\": \"白色\"}"));
    assert_memory_equal(s.facts_text, "{\"颜色\": \"白色\"}", s.facts_text_len);
    assert_int_equal(evl_reader_next(r, &s, EVL_READ_FACTS, &err), 1);
    assert_null(s.facts_text); /* no facts on that line */
    evl_reader_free(r);
    unlink(path);
    free(path);
    free(err);
}

static void test_facts_seen_once(void **state)
{
    char *path = write_tmp("b.jsonl",
        "{\"version\": \"1\", \"facts\": {\"a\": \"x\"}}\n"
        "{\"facts\": {\"a\": \"x\"}, \"version\": \"2\"}\n"
        "{\"version\": \"1\", \"facts\": {\"a\": \"y\"}}\n");
    struct evl_reader *r = evl_reader_open(path, 0, NULL, NULL);
    struct evl_sample s;

    (void)state;
    assert_int_equal(evl_reader_next(r, &s, EVL_READ_FACTS, NULL), 1);
    assert_non_null(s.facts_text);
    assert_int_equal(evl_reader_next(r, &s, EVL_READ_FACTS, NULL), 1);
    assert_null(s.facts_text); /* same text seen */
    assert_int_equal(evl_reader_next(r, &s, EVL_READ_FACTS, NULL), 1);
    assert_memory_equal(s.facts_text, "{\"a\": \"y\"}", s.facts_text_len);
    evl_reader_free(r);
    unlink(path);
    free(path);
}

struct bad_case {
    const char *line;
    const char *want;        /* substring of the error */
};

static void test_malformed_jsonl(void **state)
{
    static const struct bad_case cases[] = {
        {"{\"version\": \"1\"", "invalid JSON"},
        {"[1, 2]", "not a JSON object"},
        {"{\"id\": \"x\"}", "missing 'version'"},
        {"{\"version\": true}", "not a string or number"},
        {"{\"version\": \"1\", \"clicks\": 3, \"impressions\": 2}", "clicks 3"},
        {"{\"version\": \"1\", \"conversions\": -1}", "conversions -1"},
        {"{\"version\": \"1\", \"clicks\": \"many\"}", "not a whole number"},
        {"{\"version\": \"1\", \"facts\": [1]}", "'facts' is not an object"},
        {"{\"version\": \"1\", \"output\": 5}", "must be strings"},
        {"{\"version\": \"1\", \"user\": 12}", "must be strings"},
    };
    size_t i, n = sizeof(cases) / sizeof(cases[0]);
    char *text = NULL, *path, *err = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&text, &len);
    struct evl_reader *r;
    struct evl_sample s;

    (void)state;
    for (i = 0; i < n; i++)
        fprintf(m, "%s\n", cases[i].line);
    fprintf(m, "{\"version\": \"ok\"}\n");
    fclose(m);
    path = write_tmp("bad.jsonl", text);
    r = evl_reader_open(path, 0, NULL, NULL);
    for (i = 0; i < n; i++) {
        char want_line[32];
        assert_int_equal(evl_reader_next(r, &s, EVL_READ_FULL, &err), -1);
        snprintf(want_line, sizeof(want_line), "line %zu:", i + 1);
        if (strstr(err, want_line) == NULL || strstr(err, cases[i].want) == NULL)
            fail_msg("case %zu: error '%s', want '%s' and '%s'", i, err,
                     want_line, cases[i].want);
    }
    /* the reader goes on after malformed lines */
    assert_int_equal(evl_reader_next(r, &s, EVL_READ_FULL, &err), 1);
    assert_string_equal(s.version, "ok");
    evl_reader_free(r);
    unlink(path);
    free(path);
    free(text);
    free(err);
}

static void test_csv_map(void **state)
{
    char *path = write_tmp("c.csv",
        "group,user_id,converted,clicks,facts,output\n"
        "A,u1,1,1,\"{\"\"颜色\"\": \"\"白色\"\"}\",\"白色, 好看\"\n"
        "B,u2,0,0,,\"two\nlines\"\n"
        "C,u3,x,0,,\n"
        "D,u4,0,0,,\"open quote\n");
    struct evl_reader *r;
    struct evl_sample s;
    char *err = NULL;

    (void)state;
    r = evl_reader_open(path, -1, "version=group,user=user_id,conversions=converted",
                        &err);
    assert_non_null(r);
    assert_int_equal(evl_reader_next(r, &s, EVL_READ_FULL, &err), 1);
    assert_string_equal(s.version, "A");
    assert_string_equal(s.user, "u1");
    assert_int_equal(s.conversions, 1);
    assert_string_equal(s.output, "白色, 好看");
    assert_string_equal(json_string_value(json_object_get(s.facts, "颜色")),
                        "白色");
    assert_int_equal(s.line, 2);
    assert_int_equal(evl_reader_next(r, &s, EVL_READ_FULL, &err), 1);
    assert_string_equal(s.output, "two\nlines");
    assert_null(s.facts);
    assert_int_equal(evl_reader_next(r, &s, EVL_READ_FULL, &err), -1);
    assert_non_null(strstr(err, "line 5"));
    assert_non_null(strstr(err, "converted"));
    assert_int_equal(evl_reader_next(r, &s, EVL_READ_FULL, &err), -1);
    assert_non_null(strstr(err, "unterminated"));
    assert_int_equal(evl_reader_next(r, &s, EVL_READ_FULL, &err), 0);
    evl_reader_free(r);
    /* without the map there is no version column: a clear error */
    assert_null(evl_reader_open(path, -1, NULL, &err));
    assert_non_null(strstr(err, "--map version="));
    assert_null(evl_reader_open(path, -1, "colour=x", &err));
    assert_non_null(strstr(err, "unknown field"));
    assert_null(evl_reader_open("/nonexistent/x.jsonl", -1, NULL, &err));
    assert_non_null(strstr(err, "cannot open '/nonexistent/x.jsonl'"));
    unlink(path);
    free(path);
    free(err);
}

static void test_csv_bad_utf8(void **state)
{
    char *path = write_tmp("d.csv", "version,output\n1,ok\n2,\xff\xfe\n");
    struct evl_reader *r = evl_reader_open(path, -1, NULL, NULL);
    struct evl_sample s;
    char *err = NULL;

    (void)state;
    assert_int_equal(evl_reader_next(r, &s, EVL_READ_FULL, &err), 1);
    assert_int_equal(evl_reader_next(r, &s, EVL_READ_FULL, &err), -1);
    assert_non_null(strstr(err, "UTF-8"));
    evl_reader_free(r);
    unlink(path);
    free(path);
    free(err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_jsonl),
        cmocka_unit_test(test_facts_seen_once),
        cmocka_unit_test(test_malformed_jsonl),
        cmocka_unit_test(test_csv_map),
        cmocka_unit_test(test_csv_bad_utf8),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
