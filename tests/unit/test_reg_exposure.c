/*
 * test_reg_exposure.c - the A/B log in the registry: exposures and
 * feedback (batch all-or-nothing, feedback idempotent per request and
 * event), the samples export, and reg_render_json against reg_render.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sqlite3.h>
#include "tests/unit/test_reg_util.h"

/* ---- reg_render_json ------------------------------------------------------ */

struct var {
    const char *name;
    enum reg_value_type type;
    const char *raw; /* JSON text: a string's contents, or a number */
};

struct vars {
    const struct var *v;
    size_t n;
};

static int lookup(void *arg, const char *name, struct reg_value *out)
{
    struct vars *vs = arg;

    for (size_t i = 0; i < vs->n; i++)
        if (strcmp(vs->v[i].name, name) == 0) {
            out->type = vs->v[i].type;
            out->text = vs->v[i].raw;
            out->len = strlen(vs->v[i].raw);
            return 0;
        }
    return -1;
}

struct sbuf {
    char *p;
    size_t len;
};

static int emit(void *arg, const char *data, size_t len)
{
    struct sbuf *b = arg;
    char *p = realloc(b->p, b->len + len + 1);

    if (p == NULL)
        return -1;
    memcpy(p + b->len, data, len);
    b->p = p;
    b->len += len;
    p[b->len] = '\0';
    return 0;
}

/* The variables as the JSON object text a request would carry. */
static char *vars_text(const struct var *v, size_t n)
{
    struct sbuf b = {NULL, 0};

    emit(&b, "{", 1);
    for (size_t i = 0; i < n; i++) {
        int str = v[i].type == REG_VALUE_STRING;
        emit(&b, i ? ",\"" : "\"", i ? 2 : 1);
        emit(&b, v[i].name, strlen(v[i].name));
        emit(&b, str ? "\":\"" : "\":", str ? 3 : 2);
        emit(&b, v[i].raw, strlen(v[i].raw));
        if (str)
            emit(&b, "\"", 1);
    }
    emit(&b, "}", 1);
    return b.p;
}

/* reg_render_json and reg_render agree on `text` (a publish file) */
static void same_render(const char *text, const struct var *v, size_t n)
{
    char *path = treg_tmpdb(), *err = NULL, *err2 = NULL, *vt = vars_text(v, n);
    struct reg_db *db = treg_open(path);
    struct reg_version *ver;
    json_t *vars = json_loads(vt, 0, NULL), *want = NULL, *got;
    struct vars vs = {v, n};
    struct sbuf b = {NULL, 0};
    int rc1, rc2;

    assert_non_null(vars);
    treg_publish(db, "p", text);
    ver = reg_version_get(db, "p", NULL, 0, &err);
    assert_non_null(ver);
    rc1 = reg_render(ver, vars, &want, &err);
    rc2 = reg_render_json(ver, lookup, &vs, emit, &b, &err2);
    assert_int_equal(rc1, rc2);
    if (rc1 == 0) {
        got = json_loads(b.p, 0, NULL);
        if (got == NULL || !json_equal(got, want)) {
            char *w = json_dumps(want, JSON_COMPACT);
            fail_msg("render differs:\n  reg_render      %s\n  reg_render_json %s", w, b.p);
        }
        json_decref(got);
    } else {
        assert_string_equal(err, err2);
    }
    json_decref(want);
    json_decref(vars);
    free(b.p);
    free(err);
    free(err2);
    free(vt);
    reg_version_free(ver);
    reg_db_free(db);
    treg_cleanup(path);
}

static void test_render_json_matches_render(void **state)
{
    static const struct var basic[] = {{"name", REG_VALUE_STRING, "Ada"}};
    static const struct var tricky[] = {
        {"a", REG_VALUE_STRING, "quote \\\" backslash \\\\ nl \\n tab \\t"},
        {"b", REG_VALUE_STRING, "\\u00e9t\\u00e9 \\ud83d\\ude00 \xe4\xbf\x9d\xe6\xb8\xa9"},
        {"c", REG_VALUE_STRING, "{{a}} stays literal"},
        {"n", REG_VALUE_NUMBER, "42"},
        {"r", REG_VALUE_NUMBER, "1.5e3"},
        {"f", REG_VALUE_NUMBER, "0.1"},
        {"neg", REG_VALUE_NUMBER, "-7"},
        {"t", REG_VALUE_TRUE, "true"},
        {"u", REG_VALUE_FALSE, "false"}};
    static const struct var missing[] = {{"first", REG_VALUE_STRING, "x"}};
    static const struct var bad[] = {{"x", REG_VALUE_OTHER, "null"}};

    (void)state;
    same_render("Hello {{name}}!\n", basic, 1);
    same_render("{\"messages\": [{\"role\": \"system\", \"content\": \"Say \\\"hi\\\"\\n\\t\\\\ \\u0001 "
                "{{ a }}|{{b}}|{{c}}\"}, {\"role\": \"user\", \"name\": \"bob\", \"content\": "
                "\"{{n}} {{r}} {{f}} {{neg}} {{t}} {{u}} {{ nope {{x y}}\"}], \"params\": {}}",
                tricky, sizeof(tricky) / sizeof(tricky[0]));
    same_render("Hi {{first}} {{product_name}}", missing, 1);
    same_render("value {{x}}", bad, 1);
}

/* ---- exposures and feedback ----------------------------------------------- */

static int count(struct reg_db *db, const char *sql)
{
    sqlite3_stmt *st;
    int n = -1;

    assert_int_equal(sqlite3_prepare_v2(reg_db_handle(db), sql, -1, &st, NULL), SQLITE_OK);
    if (sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return n;
}

static struct reg_exposure exposure(const char *rid, const char *user, int version,
                                    int64_t exp_id, int arm, const char *vars)
{
    struct reg_exposure e;

    memset(&e, 0, sizeof(e));
    e.request_id = rid;
    e.at = "2026-11-28T10:00:00.000Z";
    e.user_id = user;
    e.prompt = "p";
    e.version = version;
    e.label = "production";
    e.experiment_id = exp_id;
    e.experiment = exp_id ? "p@production" : NULL;
    e.arm = arm;
    e.model = "m";
    e.backend = "b";
    e.status = 200;
    e.latency_ms = 1.5;
    e.prompt_tokens = 3;
    e.completion_tokens = 4;
    e.total_tokens = 7;
    e.variables = vars;
    return e;
}

static void test_write_batch_and_feedback_idempotent(void **state)
{
    char *path = treg_tmpdb(), *err = NULL;
    struct reg_db *db = treg_open(path);
    struct reg_exposure ex[2] = {exposure("r1", "u1", 1, 0, -1, "{\"a\":1}"),
                                 exposure("r2", "u2", 1, 0, -1, NULL)};
    struct reg_feedback fb[3] = {{"r1", "click", 1, "2026-11-28T10:00:01.000Z"},
                                 {"r1", "click", 1, "2026-11-28T10:00:02.000Z"},
                                 {"r1", "conversion", 5, "2026-11-28T10:00:03.000Z"}};
    int added = -1;

    (void)state;
    treg_publish(db, "p", "hello");
    assert_int_equal(reg_exposures_write(db, ex, 2, fb, 3, &added, &err), 0);
    assert_int_equal(added, 2);
    assert_int_equal(count(db, "SELECT count(*) FROM exposures"), 2);
    assert_int_equal(count(db, "SELECT count(*) FROM exposures WHERE variables = '{}'"), 1);
    /* a retried feedback adds nothing, and the first value stays */
    fb[2].value = 9;
    assert_int_equal(reg_exposures_write(db, NULL, 0, &fb[1], 2, &added, &err), 0);
    assert_int_equal(added, 0);
    assert_int_equal(count(db, "SELECT value FROM feedback WHERE event = 'conversion'"), 5);
    /* a bad record fails the whole batch: nothing of it is kept */
    ex[1].request_id = NULL;
    assert_int_equal(reg_exposures_write(db, ex, 2, NULL, 0, NULL, &err), -1);
    assert_non_null(strstr(err, "request id"));
    free(err);
    err = NULL;
    assert_int_equal(count(db, "SELECT count(*) FROM exposures"), 2);
    fb[0].event = "Bad Event";
    assert_int_equal(reg_exposures_write(db, NULL, 0, fb, 1, NULL, &err), -1);
    free(err);
    reg_db_free(db);
    treg_cleanup(path);
}

/* The transaction in parts: slices added one after the other are
 * committed together; a bad record in a later slice, or bad feedback,
 * rolls back the slices before it; the log works on after a rollback. */
static void test_log_in_parts(void **state)
{
    char *path = treg_tmpdb(), *err = NULL;
    struct reg_db *db = treg_open(path);
    struct reg_exposure_log *log;
    struct reg_exposure ex[3] = {exposure("r1", "u1", 1, 0, -1, NULL),
                                 exposure("r2", "u2", 1, 0, -1, NULL),
                                 exposure("r3", "u3", 1, 0, -1, NULL)};
    struct reg_feedback fb[2] = {{"r1", "click", 1, "2026-11-28T10:00:01.000Z"},
                                 {"r1", "click", 1, "2026-11-28T10:00:02.000Z"}};
    int added = 0;

    (void)state;
    treg_publish(db, "p", "hello");
    log = reg_exposure_log_open(path, &err);
    assert_non_null(log);
    assert_int_equal(reg_exposure_log_begin(log, &err), 0);
    assert_int_equal(reg_exposure_log_add(log, ex, 2, &err), 0);
    assert_int_equal(reg_exposure_log_add(log, &ex[2], 1, &err), 0);
    assert_int_equal(reg_exposure_log_feedback(log, fb, 2, &added, &err), 0);
    assert_int_equal(added, 1); /* the second is a repeat */
    /* nothing is seen before the commit */
    assert_int_equal(count(db, "SELECT count(*) FROM exposures"), 0);
    assert_int_equal(reg_exposure_log_commit(log, &err), 0);
    assert_int_equal(count(db, "SELECT count(*) FROM exposures"), 3);
    assert_int_equal(count(db, "SELECT count(*) FROM exposures WHERE request_id = 'r3'"), 1);

    /* a bad record in the second slice: the first is not kept either */
    ex[0].request_id = "r4";
    ex[2].request_id = NULL;
    assert_int_equal(reg_exposure_log_begin(log, &err), 0);
    assert_int_equal(reg_exposure_log_add(log, ex, 1, &err), 0);
    assert_int_equal(reg_exposure_log_add(log, &ex[2], 1, &err), -1);
    assert_non_null(strstr(err, "request id"));
    free(err);
    err = NULL;
    assert_int_equal(count(db, "SELECT count(*) FROM exposures"), 3);

    /* bad feedback after a good slice: rolled back the same way */
    fb[0].event = "Bad Event";
    assert_int_equal(reg_exposure_log_begin(log, &err), 0);
    assert_int_equal(reg_exposure_log_add(log, ex, 1, &err), 0);
    assert_int_equal(reg_exposure_log_feedback(log, fb, 1, NULL, &err), -1);
    free(err);
    err = NULL;
    assert_int_equal(count(db, "SELECT count(*) FROM exposures"), 3);

    /* and the log goes on */
    assert_int_equal(reg_exposure_log_begin(log, &err), 0);
    assert_int_equal(reg_exposure_log_add(log, ex, 2, &err), 0);
    assert_int_equal(reg_exposure_log_commit(log, &err), 0);
    assert_int_equal(count(db, "SELECT count(*) FROM exposures"), 5);
    reg_exposure_log_free(log);
    reg_db_free(db);
    treg_cleanup(path);
}

static int collect(void *arg, json_t *sample)
{
    json_array_append(arg, sample);
    return 0;
}

/* Prompt "p" with versions 1 and 2, "production" on 1 and a 50/50
 * experiment on it; returns the experiment's id. */
static int64_t start_ab(struct reg_db *db)
{
    struct reg_arm arms[2] = {{1, 50}, {2, 50}};
    int64_t id = 0;
    char *err = NULL;

    treg_publish(db, "p", "v1 {{x}}");
    treg_publish(db, "p", "v2 {{x}}");
    assert_int_equal(reg_label_set(db, "p", 1, "production", "t", &err), 0);
    assert_int_equal(reg_experiment_start(db, "p", "production", arms, 2, "salt", "t",
                                          &id, &err), 0);
    return id;
}

static void test_samples_export(void **state)
{
    char *path = treg_tmpdb(), *err = NULL;
    struct reg_db *db = treg_open(path);
    json_t *out = json_array(), *s;
    int64_t id;
    size_t n = 0;

    (void)state;
    id = start_ab(db);
    {
        struct reg_exposure ex[3] = {
            exposure("a", "u1", 1, id, 0, "{\"x\":\"k\",\"facts\":\"{\\\"color\\\":\\\"white\\\"}\"}"),
            exposure("b", "u2", 2, id, 1, "{\"x\":\"k\",\"facts\":{\"weight\":\"1kg\"}}"),
            exposure("c", "u3", 1, 0, -1, "{}")}; /* not in the experiment */
        struct reg_feedback fb[2] = {{"a", "click", 1, "t"}, {"a", "conversion", 1, "t"}};
        ex[1].at = "2026-11-28T11:00:00.000Z";
        ex[1].output = "the text";
        assert_int_equal(reg_exposures_write(db, ex, 3, fb, 2, NULL, &err), 0);
    }
    assert_int_equal(reg_samples_export(db, "p@production", NULL, collect, out, &n, &err), 0);
    assert_int_equal(n, 2);
    s = json_array_get(out, 0);
    assert_string_equal(json_string_value(json_object_get(s, "id")), "a");
    assert_int_equal(json_integer_value(json_object_get(s, "version")), 1);
    assert_int_equal(json_integer_value(json_object_get(s, "clicks")), 1);
    assert_int_equal(json_integer_value(json_object_get(s, "conversions")), 1);
    assert_int_equal(json_integer_value(json_object_get(s, "impressions")), 1);
    assert_string_equal(json_string_value(json_object_get(json_object_get(s, "facts"), "color")),
                        "white");
    assert_null(json_object_get(s, "output"));
    s = json_array_get(out, 1);
    assert_int_equal(json_integer_value(json_object_get(s, "clicks")), 0);
    assert_string_equal(json_string_value(json_object_get(s, "output")), "the text");
    assert_string_equal(json_string_value(json_object_get(json_object_get(s, "facts"), "weight")),
                        "1kg");
    assert_string_equal(json_string_value(json_object_get(s, "user")), "u2");
    /* the prompt name alone finds its newest experiment; --since filters */
    json_array_clear(out);
    assert_int_equal(reg_samples_export(db, "p", "2026-11-28T10:30", collect, out, &n, &err), 0);
    assert_int_equal(n, 1);
    assert_int_equal(reg_samples_export(db, "p@staging", NULL, collect, out, &n, &err), -1);
    assert_string_equal(err, "no experiment 'p@staging' (see 'promptctl experiment list')");
    free(err);
    json_decref(out);
    reg_db_free(db);
    treg_cleanup(path);
}

/* one text column of the first row of sql (a malloc'd copy, NULL for NULL) */
static char *text(struct reg_db *db, const char *sql)
{
    sqlite3_stmt *st;
    char *t = NULL;

    assert_int_equal(sqlite3_prepare_v2(reg_db_handle(db), sql, -1, &st, NULL), SQLITE_OK);
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
        t = strdup((const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    return t;
}

#define ASSERT_TEXT(db, sql, want) do { \
        char *t_ = text(db, sql); \
        assert_non_null(t_); \
        assert_string_equal(t_, want); \
        free(t_); \
    } while (0)

/* Interleaved experiments go to one chunk each, in their order; strings
 * that JSON must escape, bytes that are not UTF-8 and variables the writer
 * cannot vouch for come back through the view and the export. */
static void test_chunks_by_experiment_and_the_view(void **state)
{
    char *path = treg_tmpdb(), *err = NULL;
    struct reg_db *db = treg_open(path);
    struct reg_exposure ex[5];
    json_t *out = json_array(), *s;
    int64_t id;
    size_t n = 0;

    (void)state;
    id = start_ab(db);
    ex[0] = exposure("e1", "quote\"back\\slash\nnl\ttab\x01", 1, id, 0,
                     "{\"x\":\"\xe4\xbf\x9d\",\"n\":[1,{\"a\":null}]}");
    ex[0].variables_json = 1;
    ex[0].output = "line 1\nline \"2\"";
    ex[1] = exposure("n1", "bad\xff\xfeutf8", 1, 0, -1, "not json at all");
    ex[2] = exposure("e2", "u2", 2, id, 1, "{\"x\":\"k\"}"); /* a string */
    ex[2].at = "2026-11-28T10:00:01.000Z";
    ex[2].model = "other"; /* the model is not common to the chunk */
    ex[2].cache = "hit";   /* nor the cache (NULL in the others) */
    ex[3] = exposure("n2", NULL, 1, 0, -1, NULL);
    ex[3].latency_ms = -1;
    ex[3].prompt_tokens = ex[3].completion_tokens = ex[3].total_tokens = -1;
    ex[3].stream = 1;
    ex[4] = exposure("e3", "u3", 1, id, 0, "{}");
    ex[4].at = "2026-11-28T09:59:59.999Z";
    assert_int_equal(reg_exposures_write(db, ex, 5, NULL, 0, NULL, &err), 0);

    /* two chunks: the experiment's three records, then the two without */
    assert_int_equal(count(db, "SELECT count(*) FROM exposure_chunks"), 2);
    assert_int_equal(count(db, "SELECT n FROM exposure_chunks WHERE experiment_id IS NOT NULL"), 3);
    ASSERT_TEXT(db, "SELECT first_at || ' ' || last_at FROM exposure_chunks"
                    " WHERE experiment_id IS NOT NULL",
                "2026-11-28T09:59:59.999Z 2026-11-28T10:00:01.000Z");
    assert_int_equal(count(db, "SELECT count(*) FROM exposure_chunks WHERE json_valid(records)"), 2);
    /* what every record of a chunk shares is written once */
    ASSERT_TEXT(db, "SELECT common FROM exposure_chunks WHERE experiment_id IS NOT NULL",
                "{\"p\":\"p\",\"l\":\"production\",\"x\":\"p@production\",\"b\":\"b\"}");
    ASSERT_TEXT(db, "SELECT common FROM exposure_chunks WHERE experiment_id IS NULL",
                "{\"p\":\"p\",\"l\":\"production\",\"m\":\"m\",\"b\":\"b\"}");
    ASSERT_TEXT(db, "SELECT group_concat(model || '/' || coalesce(cache, '-'), ',') FROM"
                    " (SELECT model, cache FROM exposures ORDER BY id)",
                "m/-,other/hit,m/-,m/-,m/-");
    ASSERT_TEXT(db, "SELECT group_concat(request_id, ',') FROM"
                    " (SELECT request_id FROM exposures ORDER BY id)", "e1,e2,e3,n1,n2");
    /* the view's columns as the table had them */
    ASSERT_TEXT(db, "SELECT user_id FROM exposures WHERE request_id = 'e1'",
                "quote\"back\\slash\nnl\ttab\x01");
    ASSERT_TEXT(db, "SELECT output FROM exposures WHERE request_id = 'e1'",
                "line 1\nline \"2\"");
    ASSERT_TEXT(db, "SELECT variables FROM exposures WHERE request_id = 'e1'",
                "{\"x\":\"\xe4\xbf\x9d\",\"n\":[1,{\"a\":null}]}");
    ASSERT_TEXT(db, "SELECT user_id FROM exposures WHERE request_id = 'n1'",
                "bad\xef\xbf\xbd\xef\xbf\xbdutf8");
    ASSERT_TEXT(db, "SELECT variables FROM exposures WHERE request_id = 'n1'",
                "not json at all");
    ASSERT_TEXT(db, "SELECT variables FROM exposures WHERE request_id = 'n2'", "{}");
    ASSERT_TEXT(db, "SELECT typeof(latency_ms) || typeof(prompt_tokens) || typeof(user_id)"
                    " || stream FROM exposures WHERE request_id = 'n2'", "nullnullnull1");
    ASSERT_TEXT(db, "SELECT printf('%.3f %d %d %d %s %s %s %d %d %d %s %s %s', latency_ms,"
                    " prompt_tokens, completion_tokens, total_tokens, prompt, label, experiment,"
                    " arm, version, status, model, backend, typeof(key_name))"
                    " FROM exposures WHERE request_id = 'e2'",
                "1.500 3 4 7 p production p@production 1 2 200 other b null");
    assert_int_equal(count(db, "SELECT count(*) FROM exposures WHERE experiment_id IS NULL"
                               " AND arm IS NULL AND experiment IS NULL"), 2);

    /* the export: the experiment's three, in their order, variables as
     * objects whichever way they were stored */
    assert_int_equal(reg_samples_export(db, "p@production", NULL, collect, out, &n, &err), 0);
    assert_int_equal(n, 3);
    s = json_array_get(out, 0);
    assert_string_equal(json_string_value(json_object_get(s, "id")), "e1");
    assert_string_equal(json_string_value(json_object_get(s, "user")),
                        "quote\"back\\slash\nnl\ttab\x01");
    assert_int_equal(json_array_size(json_object_get(json_object_get(s, "variables"), "n")), 2);
    s = json_array_get(out, 1);
    assert_string_equal(json_string_value(json_object_get(json_object_get(s, "variables"), "x")),
                        "k");
    assert_int_equal(json_integer_value(json_object_get(s, "arm")), 1);
    assert_string_equal(json_string_value(json_object_get(s, "model")), "other");
    assert_string_equal(json_string_value(json_object_get(s, "experiment")), "p@production");
    assert_string_equal(json_string_value(json_object_get(json_array_get(out, 0), "model")), "m");
    /* --since keeps the later records of a chunk only */
    json_array_clear(out);
    assert_int_equal(reg_samples_export(db, "p@production", "2026-11-28T10:00:00.000Z",
                                        collect, out, &n, &err), 0);
    assert_int_equal(n, 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(out, 1), "id")), "e2");
    json_decref(out);
    reg_db_free(db);
    treg_cleanup(path);
}

/* Numbers of every width come back as they went in: the record's digits
 * are written two at a time, and one and two digit values, round hundreds
 * and long values each take a different path. */
static void test_numbers_round_trip(void **state)
{
    static const struct {
        long tokens[3];
        int status;
        double ms;
        const char *want;
    } cases[] = {
        {{0, 9, 10}, 200, 0.0, "0 9 10 200 0.000"},
        {{99, 100, 101}, 404, 0.001, "99 100 101 404 0.001"},
        {{999, 1000, 1009}, 503, 9.999, "999 1000 1009 503 9.999"},
        {{12345, 100000, 9876543210L}, 200, 12345.678,
         "12345 100000 9876543210 200 12345.678"},
        {{7, 70, 700}, 100, 100.05, "7 70 700 100 100.050"},
        /* the digit count's edges: 10^18 - 1, 10^18, the largest long */
        {{999999999999999999L, 1000000000000000000L, 9223372036854775807L},
         599, 99999.9994,
         "999999999999999999 1000000000000000000 9223372036854775807 599"
         " 99999.999"},
    };
    char *path = treg_tmpdb(), *err = NULL, rid[16], q[160];
    struct reg_db *db = treg_open(path);
    enum { N = sizeof(cases) / sizeof(cases[0]) };
    struct reg_exposure ex[N];
    size_t i;

    (void)state;
    for (i = 0; i < N; i++) {
        snprintf(rid, sizeof(rid), "n%zu", i);
        ex[i] = exposure(strdup(rid), "u", 1, 0, -1, "{}");
        ex[i].prompt_tokens = cases[i].tokens[0];
        ex[i].completion_tokens = cases[i].tokens[1];
        ex[i].total_tokens = cases[i].tokens[2];
        ex[i].status = cases[i].status;
        ex[i].latency_ms = cases[i].ms;
    }
    assert_int_equal(reg_exposures_write(db, ex, N, NULL, 0, NULL, &err), 0);
    for (i = 0; i < N; i++) {
        snprintf(q, sizeof(q), "SELECT printf('%%d %%d %%d %%d %%.3f', prompt_tokens,"
                 " completion_tokens, total_tokens, status, latency_ms)"
                 " FROM exposures WHERE request_id = 'n%zu'", i);
        ASSERT_TEXT(db, q, cases[i].want);
        free((char *)ex[i].request_id);
    }
    reg_db_free(db);
    treg_cleanup(path);
}

/* A record's time is kept in ms: given as ms (at NULL) or as ISO-8601 text
 * of any fraction, it reads back as text with milliseconds, in the view,
 * the chunk's first_at and last_at, and the export; text that is not a
 * time, or not a day of its month, fails the batch with the reason. */
static void test_times(void **state)
{
    char *path = treg_tmpdb(), *err = NULL;
    struct reg_db *db = treg_open(path);
    struct reg_exposure ex[5];
    json_t *out = json_array();
    size_t n = 0;
    int64_t id;

    (void)state;
    id = start_ab(db);
    ex[0] = exposure("ms", "u", 1, id, 0, "{}");
    ex[0].at = NULL;
    ex[0].at_ms = 1796047200123LL; /* 2026-11-30T14:00:00.123Z */
    ex[1] = exposure("whole", "u", 1, id, 0, "{}");
    ex[1].at = "2026-11-30T13:59:59Z";
    ex[2] = exposure("tenths", "u", 1, id, 0, "{}");
    ex[2].at = "2026-11-30T14:00:00.5Z";
    ex[3] = exposure("micro", "u", 1, id, 0, "{}");
    ex[3].at = "2026-11-30T14:00:00.987654Z";
    ex[4] = exposure("epoch", "u", 1, id, 0, "{}");
    ex[4].at = NULL;
    ex[4].at_ms = 0;
    assert_int_equal(reg_exposures_write(db, ex, 5, NULL, 0, NULL, &err), 0);
    ASSERT_TEXT(db, "SELECT group_concat(request_id || '=' || at, ' ') FROM"
                    " (SELECT request_id, at FROM exposures ORDER BY id)",
                "ms=2026-11-30T14:00:00.123Z whole=2026-11-30T13:59:59.000Z"
                " tenths=2026-11-30T14:00:00.500Z micro=2026-11-30T14:00:00.987Z"
                " epoch=1970-01-01T00:00:00.000Z");
    ASSERT_TEXT(db, "SELECT first_at || ' ' || last_at FROM exposure_chunks",
                "1970-01-01T00:00:00.000Z 2026-11-30T14:00:00.987Z");
    ASSERT_TEXT(db, "SELECT json_extract(records, '$[0][1]') FROM exposure_chunks",
                "1796047200123");
    assert_int_equal(reg_samples_export(db, "p@production", "2026-11-30T14:00:00.000Z",
                                        collect, out, &n, &err), 0);
    assert_int_equal(n, 3);
    assert_string_equal(json_string_value(json_object_get(json_array_get(out, 0), "at")),
                        "2026-11-30T14:00:00.123Z");

    static const char *const bad[] = {
        "2026-11-30 14:00:00.000Z", "2026-11-30T14:00:00.000", "2026-02-30T00:00:00Z",
        "2026-11-30T14:00:00.Z", "2026-13-01T00:00:00Z", "yesterday", ""};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ex[0] = exposure("bad", "u", 1, id, 0, "{}");
        ex[0].at = bad[i];
        free(err);
        err = NULL;
        assert_int_equal(reg_exposures_write(db, ex, 1, NULL, 0, NULL, &err), -1);
        assert_non_null(strstr(err, "is not ISO-8601 UTC"));
    }
    free(err);
    assert_int_equal(count(db, "SELECT count(*) FROM exposures WHERE request_id = 'bad'"), 0);
    json_decref(out);
    reg_db_free(db);
    treg_cleanup(path);
}

/* Chunks written before migration 0006 hold objects (0005's short
 * names): the view and the export read them beside the arrays written
 * now, common members and all. */
static void test_object_records_still_read(void **state)
{
    char *path = treg_tmpdb(), *err = NULL;
    struct reg_db *db = treg_open(path);
    struct reg_exposure ex[1];
    json_t *out = json_array(), *s;
    size_t n = 0;
    char sql[1024];
    int64_t id;

    (void)state;
    id = start_ab(db);
    snprintf(sql, sizeof(sql),
             "INSERT INTO exposure_chunks (experiment_id, first_at, last_at, n,"
             " common, records) VALUES (%lld, '2026-11-28T09:00:00.000Z',"
             " '2026-11-28T09:00:00.000Z', 1, '{\"p\":\"p\",\"l\":\"production\","
             "\"x\":\"p@production\",\"m\":\"m\"}', '[{\"r\":\"old\","
             "\"t\":\"2026-11-28T09:00:00.000Z\",\"u\":\"u0\",\"v\":2,\"a\":1,"
             "\"s\":200,\"st\":true,\"ms\":2.25,\"pt\":1,\"ct\":2,\"tt\":3,"
             "\"b\":\"b0\",\"vars\":{\"x\":\"k\"},\"o\":\"said\"}]')",
             (long long)id);
    assert_int_equal(sqlite3_exec(reg_db_handle(db), sql, NULL, NULL, NULL), SQLITE_OK);
    ex[0] = exposure("new", "u1", 1, id, 0, "{\"x\":\"y\"}");
    ex[0].variables_json = 1;
    assert_int_equal(reg_exposures_write(db, ex, 1, NULL, 0, NULL, &err), 0);
    ASSERT_TEXT(db, "SELECT typeof(records) || json_type(records, '$[0]') FROM exposure_chunks"
                    " ORDER BY id DESC LIMIT 1", "textarray");
    ASSERT_TEXT(db, "SELECT group_concat(printf('%s %s %s %d %d %d %d %.2f %d %d %d %s %s %s %s"
                    " %s %s %s', request_id, at, user_id, version, arm, status, stream,"
                    " latency_ms, prompt_tokens, completion_tokens, total_tokens, variables,"
                    " coalesce(output, '-'), prompt, label, experiment, model, backend), '|')"
                    " FROM (SELECT * FROM exposures ORDER BY id)",
                "old 2026-11-28T09:00:00.000Z u0 2 1 200 1 2.25 1 2 3 {\"x\":\"k\"} said p"
                " production p@production m b0|"
                "new 2026-11-28T10:00:00.000Z u1 1 0 200 0 1.50 3 4 7 {\"x\":\"y\"} - p"
                " production p@production m b");
    assert_int_equal(reg_samples_export(db, "p@production", NULL, collect, out, &n, &err), 0);
    assert_int_equal(n, 2);
    s = json_array_get(out, 0);
    assert_string_equal(json_string_value(json_object_get(s, "id")), "old");
    assert_string_equal(json_string_value(json_object_get(s, "output")), "said");
    assert_int_equal(json_integer_value(json_object_get(s, "version")), 2);
    s = json_array_get(out, 1);
    assert_string_equal(json_string_value(json_object_get(s, "id")), "new");
    assert_string_equal(json_string_value(json_object_get(s, "user")), "u1");
    assert_int_equal(json_integer_value(json_object_get(s, "arm")), 0);
    assert_string_equal(json_string_value(json_object_get(json_object_get(s, "variables"), "x")),
                        "y");
    json_decref(out);
    reg_db_free(db);
    treg_cleanup(path);
}

/* A batch bigger than a chunk is split; every record lands once. */
static void test_chunk_size_bound(void **state)
{
    char *path = treg_tmpdb(), *err = NULL;
    struct reg_db *db = treg_open(path);
    static struct reg_exposure ex[600];
    static char rid[600][16];

    (void)state;
    for (int i = 0; i < 600; i++) {
        snprintf(rid[i], sizeof(rid[i]), "r%d", i);
        ex[i] = exposure(rid[i], "u", 1, 0, -1, "{}");
    }
    assert_int_equal(reg_exposures_write(db, ex, 600, NULL, 0, NULL, &err), 0);
    ASSERT_TEXT(db, "SELECT group_concat(n, ',') FROM (SELECT n FROM exposure_chunks ORDER BY id)",
                "256,256,88");
    assert_int_equal(count(db, "SELECT count(DISTINCT request_id) FROM exposures"), 600);
    ASSERT_TEXT(db, "SELECT request_id FROM exposures ORDER BY id DESC LIMIT 1", "r599");
    /* big outputs close a chunk at about 1 MiB of text */
    {
        char *big = malloc(300001);
        assert_non_null(big);
        memset(big, 'o', 300000);
        big[300000] = '\0';
        for (int i = 0; i < 10; i++)
            ex[i].output = big;
        assert_int_equal(reg_exposures_write(db, ex, 10, NULL, 0, NULL, &err), 0);
        free(big);
    }
    ASSERT_TEXT(db, "SELECT group_concat(n, ',') FROM (SELECT n FROM exposure_chunks"
                    " WHERE id > 3 ORDER BY id)", "4,4,2");
    assert_int_equal(count(db, "SELECT count(*) FROM exposures WHERE length(output) = 300000"), 10);
    reg_db_free(db);
    treg_cleanup(path);
}

/* The queries that need an index have one: the export reads one
 * experiment's chunks through exposure_chunks_experiment, in id order
 * with no sort, and a feedback joins its exposure through feedback's key.
 * (The statements are those of registry/exposure.c.) */
static void test_export_query_plans(void **state)
{
    char *path = treg_tmpdb();
    struct reg_db *db = treg_open(path);
    static const char *const plans[][2] = {
        {"SELECT j.value FROM exposure_chunks c, json_each(c.records) j"
         " WHERE c.experiment_id = 1 AND c.last_at >= '' ORDER BY c.id",
         "USING INDEX exposure_chunks_experiment (experiment_id=?)"},
        {"SELECT json_group_object(event, value) FROM feedback WHERE request_id = 'x'",
         "USING INDEX sqlite_autoindex_feedback_1 (request_id=?)"},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(plans) / sizeof(plans[0]); i++) {
        char sql[512], all[1024] = "";
        sqlite3_stmt *st;
        snprintf(sql, sizeof(sql), "EXPLAIN QUERY PLAN %s", plans[i][0]);
        assert_int_equal(sqlite3_prepare_v2(reg_db_handle(db), sql, -1, &st, NULL),
                         SQLITE_OK);
        while (sqlite3_step(st) == SQLITE_ROW) {
            strncat(all, (const char *)sqlite3_column_text(st, 3),
                    sizeof(all) - strlen(all) - 2);
            strcat(all, "\n");
        }
        sqlite3_finalize(st);
        if (strstr(all, plans[i][1]) == NULL || strstr(all, "TEMP B-TREE") != NULL)
            fail_msg("plan of %s:\n%s", plans[i][0], all);
    }
    reg_db_free(db);
    treg_cleanup(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_render_json_matches_render),
        cmocka_unit_test(test_write_batch_and_feedback_idempotent),
        cmocka_unit_test(test_log_in_parts),
        cmocka_unit_test(test_samples_export),
        cmocka_unit_test(test_chunks_by_experiment_and_the_view),
        cmocka_unit_test(test_numbers_round_trip),
        cmocka_unit_test(test_object_records_still_read),
        cmocka_unit_test(test_times),
        cmocka_unit_test(test_chunk_size_bound),
        cmocka_unit_test(test_export_query_plans),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
