/*
 * test_gw_prompt.c - the exposure writer (gateway/exposure.c): records
 * reach a JSON-lines file or the registry database, every push is either
 * written or counted as dropped, and the output text is read from JSON
 * answers and SSE streams.
 *
 * test_writer_db_bulk doubles as the writer's cost harness: it pushes
 * EXPOSURE_N (default 10,000, at most 1,000,000) exposures shaped like
 * contrib/bench/prompt.sh's through the real writer into a real registry
 * file. Instructions per record of the writer thread alone:
 *   valgrind --tool=callgrind --separate-threads=yes \
 *       --callgrind-out-file=/tmp/cg.%p build/tests/test_gw_prompt test_writer_db_bulk
 * then the "totals:" of the thread-2 file (/tmp/cg.PID-02) divided by N.
 * EXPOSURE_OUTPUT=1 gives every record an answer to take the output text
 * from (log_outputs on).
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
#include <sqlite3.h>
#include <sys/resource.h>
#include <pthread.h>

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

/* The members are found in place in the checked answer: values before
 * them that hold brackets and quotes are skipped whole, a key written
 * with escapes is still the key, and a body that is not JSON has no text. */
static void test_output_text_members_in_place(void **state)
{
    static const struct {
        const char *body;
        int sse;
        const char *want; /* NULL: no text */
    } cases[] = {
        {"{\"x\":\"{[\\\"\",\"choices\" : [ {\"logprobs\":{\"a\":[\"}]\",{\"b\":[]}]},"
         "\"index\":0,\"message\":{\"tool_calls\":[],\"content\":\"A\\u00e9\\n\"}} ]}",
         0, "A\xc3\xa9\n"},
        {"{\"choices\":[{\"message\":{\"cont\\u0065nt\":\"escaped key\"}}]}", 0,
         "escaped key"},
        {"{\"choices\":[{\"message\":{\"content\":null},\"text\":\"the text\"}]}", 0,
         "the text"},
        {"{\"choices\":[{\"message\":{\"content\":\"x\"}}]", 0, NULL},   /* cut */
        {"{\"choices\":[]}", 0, NULL},
        {"{\"choices\":[1,{\"message\":{\"content\":\"x\"}}]}", 0, NULL},
        {"{\"choices\":[{\"delta\":{\"content\":\"a\\\"\"}}]}\n"
         "{\"choices\":[{\"delta\":{\"content\":\"}b\"},\"finish_reason\":null}]}\n", 1,
         "a\"}b"},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *t = gw_exposure_output_text(cases[i].body, strlen(cases[i].body),
                                          cases[i].sse);
        if (cases[i].want == NULL) {
            if (t != NULL)
                fail_msg("case %zu: want no text, got '%s'", i, t);
        } else if (t == NULL || strcmp(t, cases[i].want) != 0) {
            fail_msg("case %zu: want '%s', got '%s'", i, cases[i].want,
                     t ? t : "(null)");
        }
        free(t);
    }
}

/* Every prefix of an answer, in a buffer of exactly that size (ASan
 * catches a read past it): no text from a cut JSON answer, no crash. */
static void test_output_text_any_prefix(void **state)
{
    static const char *const bodies[] = {
        "{\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
        "\"content\":\"a\\\"b\\\\\\u00e9\"},\"logprobs\":{\"x\":[\"]}\"]}}],\"usage\":{}}",
        "{\"choices\":[{\"delta\":{\"content\":\"x\\\\\"}}]}\n"
        "{\"choices\":[{\"delta\":{\"cont\\u0065nt\":\"y\"}}]}\n",
    };

    (void)state;
    for (size_t b = 0; b < 2; b++) {
        size_t len = strlen(bodies[b]);
        for (size_t l = 0; l <= len; l++) {
            char *copy = malloc(l ? l : 1), *t;
            assert_non_null(copy);
            memcpy(copy, bodies[b], l);
            t = gw_exposure_output_text(copy, l, (int)b);
            if (b == 0 && l < len)
                assert_null(t);
            free(t);
            free(copy);
        }
    }
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

/* a record's strings stay in its area: model and backend cut to their
 * bounds at its end, nothing written past the room it was given */
static void test_rec_strings(void **state)
{
    struct gw_exposure_rec *r = gw_exposure_rec_new(GW_EXPOSURE, 3000);
    char big[3000], model[400];
    const char *m;

    (void)state;
    memset(big, 'b', sizeof(big));
    memset(model, 'm', sizeof(model) - 1);
    model[sizeof(model) - 1] = '\0';
    assert_non_null(r);
    assert_non_null(gw_exposure_rec_str(r, big, 2990));
    assert_null(gw_exposure_rec_str(r, big, 20)); /* 9 bytes left */
    assert_non_null(gw_exposure_rec_str(r, big, 8));
    assert_null(gw_exposure_rec_str(r, "", 0));
    assert_null(gw_exposure_rec_strn(r, NULL, 10));
    gw_exposure_rec_free(r);
    r = gw_exposure_rec_new(GW_EXPOSURE, 100 + GW_EXPOSURE_TAIL);
    assert_non_null(gw_exposure_rec_str(r, big, 100));
    m = gw_exposure_rec_strn(r, model, GW_EXPOSURE_MODEL_MAX);
    assert_non_null(m);
    assert_int_equal(strlen(m), GW_EXPOSURE_MODEL_MAX - 1);
    m = gw_exposure_rec_strn(r, "mock", GW_EXPOSURE_BACKEND_MAX);
    assert_string_equal(m, "mock");
    gw_exposure_rec_free(r);
}

/* record i of kind, from the loop-side blocks of l (NULL: the pool's) */
static struct gw_exposure_rec *make_from(struct gw_exposure_local *l, int i,
                                         enum gw_exposure_kind kind)
{
    char rid[32], vars[64];
    struct gw_exposure_rec *r;
    size_t need;

    snprintf(rid, sizeof(rid), "req-%d", i);
    snprintf(vars, sizeof(vars), "{\"i\":%d}", i);
    need = strlen(rid) + strlen(vars) + 16;
    r = l ? gw_exposure_rec_take(l, kind, need) : gw_exposure_rec_new(kind, need);
    r->at_us = 1795875000000000LL + i;
    if (kind == GW_EXPOSURE) {
        r->ex.request_id = gw_exposure_rec_str(r, rid, strlen(rid));
        r->ex.prompt = gw_exposure_rec_str(r, "p", 1);
        r->ex.version = 1 + i % 2;
        r->ex.status = 200;
        r->ex.variables = gw_exposure_rec_str(r, vars, strlen(vars));
    } else {
        r->fb.request_id = gw_exposure_rec_str(r, rid, strlen(rid));
        r->fb.event = gw_exposure_rec_str(r, "click", 5);
        r->fb.value = 1;
    }
    return r;
}

static struct gw_exposure_rec *make(int i, enum gw_exposure_kind kind)
{
    return make_from(NULL, i, kind);
}

/* a temporary directory in dir (a mkdtemp template) with a migrated
 * registry at path (its reg.db) */
static void temp_registry(char *dir, char *path, size_t cap)
{
    char *e = NULL;
    struct reg_db *db;

    assert_non_null(mkdtemp(dir));
    snprintf(path, cap, "%s/reg.db", dir);
    db = reg_db_open(path, REG_DB_CREATE, &e); /* the schema, migrated */
    if (db == NULL)
        fail_msg("%s", e);
    reg_db_free(db);
}

/* dir and everything in it */
static void remove_dir(const char *dir)
{
    char cmd[160];

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

/* lines of the file at path, or -1 */
static long count_lines(const char *path)
{
    char line[512];
    long n = 0;
    FILE *f = fopen(path, "r");

    if (f == NULL)
        return -1;
    while (fgets(line, sizeof(line), f))
        n++;
    fclose(f);
    return n;
}

/* more records back at once than the pool keeps: it keeps what fits and
 * frees the rest (ASan: nothing leaked, nothing freed twice) */
static void test_pool_overflow(void **state)
{
    enum { N = 20000 }; /* more than POOL_MAX (16,384) */
    struct gw_exposure_rec **recs = calloc(N, sizeof(*recs));

    (void)state;
    assert_non_null(recs);
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < N; i++) {
            recs[i] = gw_exposure_rec_new(GW_EXPOSURE, 16);
            assert_non_null(recs[i]);
            assert_non_null(gw_exposure_rec_str(recs[i], "req", 3));
        }
        gw_exposure_rec_free_n(recs, N / 3);
        gw_exposure_rec_free_n(recs + N / 3, N - N / 3);
    }
    free(recs);
}

/* the loop's side: records staged and handed GW_EXPOSURE_BULK at a time
 * (the caller told to arm its timer for the first of each stage), every
 * one written or, past a full queue, dropped and counted */
static void test_writer_staged(void **state)
{
    char dir[] = "/tmp/test_gw_prompt.XXXXXX", path[128], err[256];
    struct gw_exposure_local l;
    struct gw_exposure *w;
    struct gw_exposure_stats st;
    int i, firsts = 0, n = 2 * GW_EXPOSURE_BULK + 22;

    (void)state;
    memset(&l, 0, sizeof(l));
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/exposures.jsonl", dir);
    w = gw_exposure_new(NULL, path, 1000, err, sizeof(err));
    assert_non_null(w);
    for (i = 0; i < n; i++) {
        firsts += gw_exposure_stage(w, &l, make_from(&l, i, GW_EXPOSURE));
        assert_int_equal(l.n_out, (size_t)(i + 1) % GW_EXPOSURE_BULK);
    }
    assert_int_equal(firsts, 3);
    gw_exposure_stats(w, &st);
    assert_int_equal(st.queued, 2 * GW_EXPOSURE_BULK); /* 22 staged */
    gw_exposure_hand(w, &l);
    assert_int_equal(l.n_out, 0);
    gw_exposure_flush(w);
    gw_exposure_stats(w, &st);
    assert_int_equal(st.queued, n);
    assert_int_equal(st.written, n);
    assert_int_equal(st.dropped, 0);
    assert_int_equal(count_lines(path), n);
    /* blocks come back for reuse; a bulk into a queue of 10 keeps 10 */
    gw_exposure_free(w);
    unlink(path);
    w = gw_exposure_new(NULL, path, 10, err, sizeof(err));
    assert_non_null(w);
    for (i = 0; i < GW_EXPOSURE_BULK; i++)
        gw_exposure_stage(w, &l, make_from(&l, i, GW_EXPOSURE));
    gw_exposure_flush(w);
    gw_exposure_stats(w, &st);
    assert_int_equal(st.queued, 10);
    assert_int_equal(st.dropped, GW_EXPOSURE_BULK - 10);
    assert_int_equal(st.written, 10);
    /* records staged at exit are handed first, then the blocks freed */
    gw_exposure_stage(w, &l, make_from(&l, 1, GW_EXPOSURE));
    gw_exposure_hand(w, &l);
    gw_exposure_local_clear(&l);
    assert_null(l.free);
    gw_exposure_free(w);
    assert_int_equal(count_lines(path), 11);
    unlink(path);
    rmdir(dir);
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

/* An exposure like the ones contrib/bench/prompt.sh makes: a 16-hex-digit
 * request id, a 50/50 experiment, Chinese variables, no output. */
static struct gw_exposure_rec *make_real(int i)
{
    static const char vars[] =
        "{\"product\":\"316\xe4\xb8\x8d\xe9\x94\x88\xe9\x92\xa2\xe7\x9c\x9f\xe7\xa9\xba"
        "\xe4\xbf\x9d\xe6\xb8\xa9\xe6\x9d\xaf\",\"points\":\"\xe4\xbf\x9d\xe6\xb8\xa9"
        "\xe6\x97\xb6\xe9\x95\xbf\xe3\x80\x81\xe8\xbd\xbb\xe4\xbe\xbf\xe5\x92\x8c"
        "\xe5\x8d\x95\xe6\x89\x8b\xe5\xbc\x80\xe7\x9b\x96\"}";
    char rid[32], uid[16];
    struct gw_exposure_rec *r;

    snprintf(rid, sizeof(rid), "%016llx",
             (unsigned long long)i * 0x9E3779B97F4A7C15ULL);
    snprintf(uid, sizeof(uid), "u%d", 1 + i % 2000);
    r = gw_exposure_rec_new(GW_EXPOSURE, strlen(rid) + strlen(uid) +
                            sizeof(vars) + 64 + GW_EXPOSURE_TAIL);
    assert_non_null(r);
    r->at_us = 1795875000000000LL + (int64_t)i * 40;
    r->ex.request_id = gw_exposure_rec_str(r, rid, strlen(rid));
    r->ex.prompt = gw_exposure_rec_str(r, "bench_copy", 10);
    r->ex.label = gw_exposure_rec_str(r, "production", 10);
    r->ex.user_id = gw_exposure_rec_str(r, uid, strlen(uid));
    r->ex.experiment_id = 1;
    r->ex.experiment = gw_exposure_rec_str(r, "bench_copy@production",
                                           21);
    r->ex.arm = i % 2;
    r->ex.version = 1 + i % 2;
    r->ex.variables = gw_exposure_rec_str(r, vars, sizeof(vars) - 1);
    r->ex.status = 200;
    r->ex.latency_ms = 1.25;
    r->ex.prompt_tokens = 60, r->ex.completion_tokens = 48;
    r->ex.total_tokens = 108;
    r->ex.cache = "bypass";
    r->ex.model = gw_exposure_rec_strn(r, "gpt-4o-mini", GW_EXPOSURE_MODEL_MAX);
    r->ex.backend = gw_exposure_rec_strn(r, "mock", GW_EXPOSURE_BACKEND_MAX);
    if (getenv("EXPOSURE_OUTPUT")) { /* log_outputs on: a mockllm answer */
        static char body[1024];
        if (body[0] == '\0') {
            size_t n = (size_t)snprintf(body, sizeof(body),
                "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\","
                "\"created\":1795875000,\"model\":\"gpt-4o-mini\",\"choices\":"
                "[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"");
            for (int t = 0; t < 48; t++)
                n += (size_t)snprintf(body + n, sizeof(body) - n, "%stok%d",
                                      t ? " " : "", t);
            snprintf(body + n, sizeof(body) - n,
                     "\"},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":60,"
                     "\"completion_tokens\":48,\"total_tokens\":108}}");
        }
        gw_exposure_rec_output(r, body, strlen(body), 1 << 20);
    }
    return r;
}

/* EXPOSURE_N exposures through the db writer: all present after a clean
 * stop (gw_exposure_free, what SIGTERM runs), fields intact. */
static void test_writer_db_bulk(void **state)
{
    char dir[] = "/tmp/test_gw_prompt.XXXXXX", path[128], err[256];
    const char *env = getenv("EXPOSURE_N");
    long n = env ? strtol(env, NULL, 10) : 10000, i;
    struct gw_exposure *w;
    struct gw_exposure_stats st;
    sqlite3 *sql;
    sqlite3_stmt *q;

    struct gw_exposure_rec **recs;
    struct rusage ru0, ru1;
    double user_us, sys_us;

    (void)state;
    assert_true(n >= 1 && n <= 1000000);
    temp_registry(dir, path, sizeof(path));
    /* made first, pushed all at once: the writer (it lingers before its
     * first batch) is then about all that runs until it is freed */
    recs = calloc((size_t)n, sizeof(*recs));
    assert_non_null(recs);
    for (i = 0; i < n; i++)
        recs[i] = make_real((int)i);
    w = gw_exposure_new(path, NULL, (size_t)n, err, sizeof(err));
    assert_non_null(w);
    getrusage(RUSAGE_SELF, &ru0);
    for (i = 0; i < n; i++)
        assert_int_equal(gw_exposure_push(w, recs[i]), 0);
    gw_exposure_stats(w, &st);
    assert_int_equal(st.queued, n);
    assert_int_equal(st.dropped, 0);
    gw_exposure_free(w);
    getrusage(RUSAGE_SELF, &ru1);
    free(recs);
    user_us = (double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec) * 1e6
            + (double)(ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec);
    sys_us = (double)(ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) * 1e6
           + (double)(ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec);
    print_message("writer: %ld exposures, CPU %.2f us each (user %.2f,"
                  " system %.2f)\n", n, (user_us + sys_us) / (double)n,
                  user_us / (double)n, sys_us / (double)n);

    assert_int_equal(sqlite3_open(path, &sql), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(sql,
        "SELECT count(*), count(DISTINCT request_id), sum(arm),"
        " min(at), max(at) FROM exposures", -1, &q, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int64(q, 0), n);
    assert_int_equal(sqlite3_column_int64(q, 1), n);
    assert_int_equal(sqlite3_column_int64(q, 2), n / 2);
    assert_string_equal((const char *)sqlite3_column_text(q, 3),
                        "2026-11-28T14:10:00.000Z");
    sqlite3_finalize(q);
    /* one record in full, read back */
    assert_int_equal(sqlite3_prepare_v2(sql,
        "SELECT request_id, at, user_id, prompt, version, label,"
        " experiment_id, experiment, arm, model, backend, status, stream,"
        " latency_ms, prompt_tokens, completion_tokens, total_tokens, cache,"
        " json_extract(variables, '$.points'), output, key_name"
        " FROM exposures WHERE request_id = ?", -1, &q, NULL), SQLITE_OK);
    sqlite3_bind_text(q, 1, "9e3779b97f4a7c15", -1, SQLITE_STATIC);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(q, 1),
                        "2026-11-28T14:10:00.000Z");
    assert_string_equal((const char *)sqlite3_column_text(q, 2), "u2");
    assert_string_equal((const char *)sqlite3_column_text(q, 3), "bench_copy");
    assert_int_equal(sqlite3_column_int(q, 4), 2);
    assert_string_equal((const char *)sqlite3_column_text(q, 5), "production");
    assert_int_equal(sqlite3_column_int(q, 6), 1);
    assert_string_equal((const char *)sqlite3_column_text(q, 7),
                        "bench_copy@production");
    assert_int_equal(sqlite3_column_int(q, 8), 1);
    assert_string_equal((const char *)sqlite3_column_text(q, 9), "gpt-4o-mini");
    assert_string_equal((const char *)sqlite3_column_text(q, 10), "mock");
    assert_int_equal(sqlite3_column_int(q, 11), 200);
    assert_int_equal(sqlite3_column_int(q, 12), 0);
    assert_true(sqlite3_column_double(q, 13) == 1.25);
    assert_int_equal(sqlite3_column_int(q, 14), 60);
    assert_int_equal(sqlite3_column_int(q, 15), 48);
    assert_int_equal(sqlite3_column_int(q, 16), 108);
    assert_string_equal((const char *)sqlite3_column_text(q, 17), "bypass");
    assert_string_equal((const char *)sqlite3_column_text(q, 18),
        "\xe4\xbf\x9d\xe6\xb8\xa9\xe6\x97\xb6\xe9\x95\xbf\xe3\x80\x81\xe8\xbd\xbb"
        "\xe4\xbe\xbf\xe5\x92\x8c\xe5\x8d\x95\xe6\x89\x8b\xe5\xbc\x80\xe7\x9b\x96");
    if (getenv("EXPOSURE_OUTPUT")) {
        const char *o = (const char *)sqlite3_column_text(q, 19);
        assert_non_null(o);
        assert_int_equal(strncmp(o, "tok0 tok1 ", 10), 0);
        assert_non_null(strstr(o, " tok47"));
    } else {
        assert_int_equal(sqlite3_column_type(q, 19), SQLITE_NULL);
    }
    assert_int_equal(sqlite3_column_type(q, 20), SQLITE_NULL);
    sqlite3_finalize(q);
    sqlite3_close(sql);
    remove_dir(dir);
}

/* A tiny queue in front of the db writer: a push is written or dropped
 * and counted, never blocks; every accepted exposure and feedback is in
 * the database after a flush. */
static void test_writer_db_drops_counted(void **state)
{
    char dir[] = "/tmp/test_gw_prompt.XXXXXX", path[128], err[256];
    struct gw_exposure *w;
    struct gw_exposure_stats st;
    unsigned long accepted_ex = 0, accepted_fb = 0, refused = 0;
    sqlite3 *sql;
    sqlite3_stmt *q;

    (void)state;
    temp_registry(dir, path, sizeof(path));
    w = gw_exposure_new(path, NULL, 4, err, sizeof(err));
    assert_non_null(w);
    for (int i = 0; i < 20000; i++) {
        int fb = i % 10 == 0;
        struct gw_exposure_rec *r = make(i, fb ? GW_FEEDBACK : GW_EXPOSURE);
        if (gw_exposure_push(w, r) < 0)
            refused++;
        else if (fb)
            accepted_fb++;
        else
            accepted_ex++;
    }
    gw_exposure_flush(w);
    gw_exposure_stats(w, &st);
    assert_int_equal(st.queued + st.dropped, 20000);
    assert_int_equal(st.dropped, refused);
    assert_true(refused > 0); /* 4 slots cannot hold 20,000 pushes */
    assert_int_equal(st.written, accepted_ex + accepted_fb);
    assert_int_equal(st.failed, 0);
    gw_exposure_free(w);

    assert_int_equal(sqlite3_open(path, &sql), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(sql,
        "SELECT (SELECT count(*) FROM exposures),"
        " (SELECT sum(n) FROM exposure_chunks), (SELECT count(*) FROM feedback)",
        -1, &q, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int64(q, 0), accepted_ex);
    assert_int_equal(sqlite3_column_int64(q, 1), accepted_ex);
    assert_int_equal(sqlite3_column_int64(q, 2), accepted_fb);
    sqlite3_finalize(q);
    sqlite3_close(sql);
    remove_dir(dir);
}

/* One batch of several slices (the writer hands the registry 256 records
 * at a time in one transaction), exposures and feedback mixed: every
 * record is written once, each with its own time. */
static void test_writer_db_slices(void **state)
{
    char dir[] = "/tmp/test_gw_prompt.XXXXXX", path[128], err[256];
    struct gw_exposure *w;
    struct gw_exposure_stats st;
    sqlite3 *sql;
    sqlite3_stmt *q;

    (void)state;
    temp_registry(dir, path, sizeof(path));
    w = gw_exposure_new(path, NULL, 2000, err, sizeof(err));
    assert_non_null(w);
    /* pushed within the writer's linger: one batch */
    for (int i = 0; i < 1000; i++)
        assert_int_equal(gw_exposure_push(w, make(i, i % 10 == 3 ? GW_FEEDBACK
                                                               : GW_EXPOSURE)),
                         0);
    gw_exposure_flush(w);
    gw_exposure_stats(w, &st);
    assert_int_equal(st.written, 1000);
    assert_int_equal(st.failed, 0);
    gw_exposure_free(w);

    assert_int_equal(sqlite3_open(path, &sql), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(sql,
        "SELECT (SELECT count(DISTINCT request_id) FROM exposures),"
        " (SELECT count(*) FROM exposures WHERE length(at) = 24),"
        " (SELECT count(*) FROM feedback WHERE length(at) = 24),"
        " (SELECT count(*) FROM exposure_chunks)",
        -1, &q, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int64(q, 0), 900);
    assert_int_equal(sqlite3_column_int64(q, 1), 900);
    assert_int_equal(sqlite3_column_int64(q, 2), 100);
    assert_true(sqlite3_column_int64(q, 3) >= 4); /* 1,000 records / 256 */
    sqlite3_finalize(q);
    sqlite3_close(sql);
    remove_dir(dir);
}

/* strings the writer keeps (gw_exposure_intern): one copy for equal bytes,
 * bounded in length and in number, the kept ones found once it is full */
static void test_writer_intern(void **state)
{
    char err[256], a[] = "product_copy", b[] = "product_copy", big[300];
    char s[16];
    struct gw_exposure *w;
    const char *p, *q;
    int n;

    (void)state;
    w = gw_exposure_new(NULL, "/dev/null", 4, err, sizeof(err));
    assert_non_null(w);
    p = gw_exposure_intern(w, a, strlen(a));
    assert_non_null(p);
    assert_ptr_not_equal(p, a);
    assert_string_equal(p, "product_copy");
    assert_ptr_equal(gw_exposure_intern(w, b, strlen(b)), p);
    assert_ptr_equal(gw_exposure_intern(w, "product_copy_v2", 12), p);
    q = gw_exposure_intern(w, "product", 7); /* a prefix is another string */
    assert_ptr_not_equal(q, p);
    assert_string_equal(q, "product");
    assert_string_equal(gw_exposure_intern(w, "", 0), "");
    assert_null(gw_exposure_intern(w, NULL, 0));
    assert_null(gw_exposure_intern(NULL, "x", 1)); /* no writer: copy */
    memset(big, 'x', sizeof(big));
    assert_null(gw_exposure_intern(w, big, 257)); /* long: the caller copies */
    assert_int_equal(strlen(gw_exposure_intern(w, big, 256)), 256);
    for (n = 0; n < 5000; n++) {
        snprintf(s, sizeof(s), "k%d", n);
        if (gw_exposure_intern(w, s, strlen(s)) == NULL)
            break;
    }
    assert_in_range(n, 500, 4999); /* full: new strings are not kept */
    assert_null(gw_exposure_intern(w, "not kept", 8));
    assert_ptr_equal(gw_exposure_intern(w, "product_copy", 12), p);
    assert_ptr_equal(gw_exposure_intern(w, "k0", 2),
                     gw_exposure_intern(w, "k0", 2));
    gw_exposure_free(w);
}

struct intern_arg {
    struct gw_exposure *w;
    const char *got[200];
};

static void *intern_thread(void *arg)
{
    struct intern_arg *a = arg;
    char s[16];

    for (int i = 0; i < 200; i++) {
        snprintf(s, sizeof(s), "name-%d", i % 150);
        a->got[i] = gw_exposure_intern(a->w, s, strlen(s));
    }
    return NULL;
}

/* loops of several workers keep strings at once: equal bytes, one pointer
 * (make tsan-unit: no race on the table or the bytes) */
static void test_writer_intern_threads(void **state)
{
    char err[256];
    struct intern_arg args[3];
    pthread_t t[3];
    int i, k;

    (void)state;
    args[0].w = gw_exposure_new(NULL, "/dev/null", 4, err, sizeof(err));
    assert_non_null(args[0].w);
    for (k = 1; k < 3; k++)
        args[k].w = args[0].w;
    for (k = 0; k < 3; k++)
        assert_int_equal(pthread_create(&t[k], NULL, intern_thread, &args[k]),
                         0);
    for (k = 0; k < 3; k++)
        pthread_join(t[k], NULL);
    for (i = 0; i < 200; i++) {
        char s[16];
        snprintf(s, sizeof(s), "name-%d", i % 150);
        assert_string_equal(args[0].got[i], s);
        assert_ptr_equal(args[1].got[i], args[0].got[i]);
        assert_ptr_equal(args[2].got[i], args[0].got[i]);
        assert_ptr_equal(args[0].got[i], args[0].got[i % 150]);
    }
    gw_exposure_free(args[0].w);
}

/* records whose shared members are kept strings, copies of the same bytes,
 * or other bytes: each row has its own values, and a chunk of records
 * that share kept members holds them once, in its common object */
static void test_writer_db_kept(void **state)
{
    char dir[] = "/tmp/test_gw_prompt.XXXXXX", path[128], err[256];
    const char *kp, *kl, *kk, *km, *kb;
    struct gw_exposure *w;
    sqlite3 *sql;
    sqlite3_stmt *q;

    (void)state;
    temp_registry(dir, path, sizeof(path));
    w = gw_exposure_new(path, NULL, 1000, err, sizeof(err));
    assert_non_null(w);
    kp = gw_exposure_intern(w, "p", 1);
    kl = gw_exposure_intern(w, "production", 10);
    kk = gw_exposure_intern(w, "shop", 4);
    km = gw_exposure_intern(w, "qwen", 4);
    kb = gw_exposure_intern(w, "gpu-1", 5);
    for (int i = 0; i < 600; i++) {
        struct gw_exposure_rec *r = make(i, GW_EXPOSURE);
        r->ex.prompt = kp;
        r->ex.label = kl;
        r->ex.key_name = kk;
        r->ex.model = i % 7 == 5 ? gw_exposure_rec_str(r, "qwen", 4) : km;
        r->ex.backend = i == 300 ? gw_exposure_rec_str(r, "gpu-2", 5) : kb;
        assert_int_equal(gw_exposure_push(w, r), 0);
    }
    gw_exposure_flush(w);
    gw_exposure_free(w);

    assert_int_equal(sqlite3_open(path, &sql), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(sql,
        "SELECT count(*), sum(prompt = 'p' AND label = 'production' AND"
        " key_name = 'shop' AND model = 'qwen'), sum(backend = 'gpu-1'),"
        " (SELECT request_id FROM exposures WHERE backend = 'gpu-2'),"
        " (SELECT count(*) FROM exposure_chunks),"
        " (SELECT count(*) FROM exposure_chunks WHERE"
        "  json_extract(common, '$.k') IS NOT 'shop')"
        " FROM exposures", -1, &q, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int64(q, 0), 600);
    assert_int_equal(sqlite3_column_int64(q, 1), 600);
    assert_int_equal(sqlite3_column_int64(q, 2), 599);
    assert_string_equal((const char *)sqlite3_column_text(q, 3), "req-300");
    assert_true(sqlite3_column_int64(q, 4) >= 3); /* 600 / 256 */
    assert_int_equal(sqlite3_column_int64(q, 5), 0);
    sqlite3_finalize(q);
    sqlite3_close(sql);
    remove_dir(dir);
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

/* argv[1], when given, runs only the tests whose names match it (a
 * cmocka pattern over the whole name: "test_writer_db_bulk", "*db*") */
int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_output_text_json_and_sse),
        cmocka_unit_test(test_output_text_members_in_place),
        cmocka_unit_test(test_output_text_any_prefix),
        cmocka_unit_test(test_rec_output_bounded),
        cmocka_unit_test(test_rec_strings),
        cmocka_unit_test(test_writer_file_every_push_accounted),
        cmocka_unit_test(test_writer_staged),
        cmocka_unit_test(test_pool_overflow),
        cmocka_unit_test(test_writer_db_bulk),
        cmocka_unit_test(test_writer_db_drops_counted),
        cmocka_unit_test(test_writer_db_slices),
        cmocka_unit_test(test_writer_intern),
        cmocka_unit_test(test_writer_intern_threads),
        cmocka_unit_test(test_writer_db_kept),
        cmocka_unit_test(test_writer_bad_targets),
    };

    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
