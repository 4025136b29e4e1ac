/*
 * test_reg_prompt.c - publish files, versions and their immutability.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>
#include <sqlite3.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>
#include "tests/unit/test_reg_util.h"

static char *parse_err(const char *text)
{
    json_t *m = NULL, *p = NULL;
    char *err = NULL;

    assert_int_equal(reg_content_parse(text, strlen(text), &m, &p, &err), -1);
    assert_null(m);
    assert_null(p);
    assert_non_null(err);
    return err;
}

static void expect_parse_err(const char *text, const char *needle)
{
    char *err = parse_err(text);
    if (strstr(err, needle) == NULL)
        fail_msg("error '%s' lacks '%s'", err, needle);
    free(err);
}

static void test_parse_text_and_json(void **state)
{
    json_t *m = NULL, *p = NULL;
    const char *t1 = "Describe {{product_name}}.\n";
    const char *t2 = "{{greeting}}, write copy\n";
    const char *t3 = " {\"messages\": [{\"role\": \"system\", \"content\": \"S\"},"
                     " {\"role\": \"user\", \"content\": \"U {{x}}\"}],"
                     " \"params\": {\"model\": \"m\", \"temperature\": 0.2, \"max_tokens\": 9}}";

    (void)state;
    assert_int_equal(reg_content_parse(t1, strlen(t1), &m, &p, NULL), 0);
    assert_int_equal(json_array_size(m), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(m, 0), "content")),
                        "Describe {{product_name}}.");
    assert_string_equal(json_string_value(json_object_get(json_array_get(m, 0), "role")), "user");
    assert_int_equal(json_object_size(p), 0);
    json_decref(m);
    json_decref(p);
    /* a template that opens with {{ is text, not JSON */
    assert_int_equal(reg_content_parse(t2, strlen(t2), &m, &p, NULL), 0);
    assert_string_equal(json_string_value(json_object_get(json_array_get(m, 0), "content")),
                        "{{greeting}}, write copy");
    json_decref(m);
    json_decref(p);
    assert_int_equal(reg_content_parse(t3, strlen(t3), &m, &p, NULL), 0);
    assert_int_equal(json_array_size(m), 2);
    assert_string_equal(json_string_value(json_object_get(p, "model")), "m");
    json_decref(m);
    json_decref(p);
}

static void test_parse_errors(void **state)
{
    (void)state;
    expect_parse_err("", "empty");
    expect_parse_err("\n\n", "empty");
    expect_parse_err("{\"messages\": [", "invalid JSON");
    expect_parse_err("{\"messages\": [], \"x\": 1}", "unknown key 'x'");
    expect_parse_err("{\"messages\": []}", "non-empty array");
    expect_parse_err("{\"params\": {}}", "no \"messages\"");
    expect_parse_err("{\"messages\": [{\"role\": \"robot\", \"content\": \"x\"}]}",
                     "'robot' is not one of");
    expect_parse_err("{\"messages\": [{\"role\": \"user\"}]}", "required");
    expect_parse_err("{\"messages\": [{\"role\": \"user\", \"content\": 3}]}",
                     "messages[0].content: want a string");
    expect_parse_err("{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}],"
                     " \"params\": {\"temperature\": 5}}", "params.temperature");
    expect_parse_err("{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}],"
                     " \"params\": {\"max_tokens\": -1}}", "params.max_tokens");
    expect_parse_err("{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}],"
                     " \"params\": {\"stream\": true}}", "params.stream");
    expect_parse_err("bad \xff utf8", "UTF-8");
}

static void test_publish_versions(void **state)
{
    char *path = treg_tmpdb(), *err = NULL;
    struct reg_db *db = treg_open(path);
    struct reg_version *v;
    json_t *m = json_pack("[{ssss}]", "role", "user", "content", "Hi {{who}}");
    json_t *p = json_pack("{ss}", "model", "qwen2.5-7b");
    int ver = 0, created = -1;

    (void)state;
    assert_int_equal(treg_publish(db, "copy", "one"), 1);
    assert_int_equal(treg_publish(db, "copy", "two"), 2);
    /* identical content to the latest: nothing added */
    assert_int_equal(reg_publish(db, "copy", m, p, "m", "a", NULL, &ver, &created, &err), 0);
    assert_int_equal(ver, 3);
    assert_int_equal(created, 1);
    assert_int_equal(reg_publish(db, "copy", m, p, "again", "a", NULL, &ver, &created, &err), 0);
    assert_int_equal(ver, 3);
    assert_int_equal(created, 0);
    /* same content as an older version is a new version */
    assert_int_equal(treg_publish(db, "copy", "one"), 4);
    v = reg_version_get(db, "copy", NULL, 3, &err);
    assert_non_null(v);
    assert_string_equal(v->prompt, "copy");
    assert_string_equal(v->message, "m");
    assert_int_equal(json_array_size(v->variables), 1);
    assert_string_equal(json_string_value(json_array_get(v->variables, 0)), "who");
    assert_string_equal(json_string_value(json_object_get(v->params, "model")), "qwen2.5-7b");
    assert_int_equal(strlen(v->hash), 64);
    reg_version_free(v);
    v = reg_version_get(db, "copy", NULL, 0, &err);
    assert_int_equal(v->version, 4);
    reg_version_free(v);
    v = reg_version_get(db, "copy", "latest", 0, &err);
    assert_int_equal(v->version, 4);
    reg_version_free(v);
    assert_null(reg_version_get(db, "copy", NULL, 9, &err));
    assert_string_equal(err, "prompt 'copy' has no version 9");
    free(err);
    err = NULL;
    assert_null(reg_version_get(db, "nope", NULL, 0, &err));
    assert_string_equal(err, "unknown prompt 'nope'");
    free(err);
    err = NULL;
    assert_null(reg_version_get(db, "copy", "production", 0, &err));
    assert_string_equal(err, "prompt 'copy' has no label 'production'");
    free(err);
    json_decref(m);
    json_decref(p);
    reg_db_free(db);
    treg_cleanup(path);
}

static void test_publish_rejects(void **state)
{
    char *path = treg_tmpdb(), *err = NULL, big[REG_MESSAGE_MAX + 2];
    struct reg_db *db = treg_open(path);
    json_t *m = json_pack("[{ssss}]", "role", "user", "content", "x");
    int ver, created;

    (void)state;
    assert_int_equal(reg_publish(db, "Bad Name", m, NULL, NULL, NULL, NULL, &ver, &created, &err), -1);
    assert_non_null(strstr(err, "invalid prompt name 'Bad Name'"));
    free(err);
    err = NULL;
    assert_int_equal(reg_publish(db, "_x", m, NULL, NULL, NULL, NULL, &ver, &created, &err), -1);
    free(err);
    err = NULL;
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(reg_publish(db, "ok", m, NULL, big, NULL, NULL, &ver, &created, &err), -1);
    assert_non_null(strstr(err, "message is longer than"));
    free(err);
    assert_true(reg_name_valid("a.b-c_9"));
    assert_false(reg_name_valid("A"));
    assert_false(reg_name_valid("-a"));
    assert_false(reg_name_valid(""));
    json_decref(m);
    reg_db_free(db);
    treg_cleanup(path);
}

static void test_versions_immutable_in_database(void **state)
{
    char *path = treg_tmpdb();
    struct reg_db *db = treg_open(path);
    sqlite3 *sql;

    (void)state;
    treg_publish(db, "copy", "one");
    treg_publish(db, "copy", "two");
    sql = reg_db_handle(db);
    assert_int_not_equal(treg_sql(db, "UPDATE versions SET messages = '[]'"), SQLITE_OK);
    assert_non_null(strstr(sqlite3_errmsg(sql), "versions are immutable"));
    assert_int_not_equal(treg_sql(db, "DELETE FROM versions WHERE version = 2"), SQLITE_OK);
    assert_non_null(strstr(sqlite3_errmsg(sql), "versions are immutable"));
    /* no gaps, no reuse of numbers */
    assert_int_not_equal(treg_sql(db, "INSERT INTO versions (prompt_id, version, messages,"
                                  " params, variables, hash) VALUES (1, 5, '[]', '{}', '[]', 'h')"),
                         SQLITE_OK);
    assert_int_not_equal(treg_sql(db, "INSERT INTO versions (prompt_id, version, messages,"
                                  " params, variables, hash) VALUES (1, 2, '[]', '{}', '[]', 'h')"),
                         SQLITE_OK);
    reg_db_free(db);
    treg_cleanup(path);
}

static void test_list_and_refs(void **state)
{
    char *path = treg_tmpdb(), *err = NULL;
    struct reg_db *db = treg_open(path);
    struct reg_prompt_info *ps;
    struct reg_version **vs;
    size_t n, nv;
    char name[REG_NAME_MAX + 1], label[REG_LABEL_MAX + 1];
    int version;

    (void)state;
    treg_publish(db, "b", "x");
    treg_publish(db, "a", "x");
    treg_publish(db, "a", "y");
    assert_int_equal(reg_prompt_describe(db, "a", "the a prompt", &err), 0);
    assert_int_equal(reg_prompt_list(db, &ps, &n, &err), 0);
    assert_int_equal(n, 2);
    assert_string_equal(ps[0].name, "a");
    assert_int_equal(ps[0].latest, 2);
    assert_string_equal(ps[0].description, "the a prompt");
    reg_prompt_list_free(ps, n);
    assert_int_equal(reg_versions_list(db, "a", &vs, &nv, &err), 0);
    assert_int_equal(nv, 2);
    assert_int_equal(vs[1]->version, 2);
    reg_versions_list_free(vs, nv);
    assert_int_equal(reg_ref_parse("copy@production", name, label, &version, NULL), 0);
    assert_string_equal(name, "copy");
    assert_string_equal(label, "production");
    assert_int_equal(reg_ref_parse("copy@12", name, label, &version, NULL), 0);
    assert_int_equal(version, 12);
    assert_string_equal(label, "");
    assert_int_equal(reg_ref_parse("copy", name, label, &version, NULL), 0);
    assert_int_equal(version, 0);
    assert_int_equal(reg_ref_parse("copy@", name, label, &version, &err), -1);
    free(err);
    err = NULL;
    assert_int_equal(reg_ref_parse("copy@0", name, label, &version, &err), -1);
    free(err);
    err = NULL;
    assert_int_equal(reg_ref_parse("Copy@x", name, label, &version, &err), -1);
    free(err);
    reg_db_free(db);
    treg_cleanup(path);
}

/* two processes publishing at once: every publish succeeds, numbers unique */
static void test_concurrent_publishers(void **state)
{
    char *path = treg_tmpdb();
    struct reg_db *db = treg_open(path);
    struct reg_version **vs;
    size_t n;
    pid_t kids[2];

    (void)state;
    reg_db_free(db);
    for (int k = 0; k < 2; k++) {
        kids[k] = fork();
        assert_true(kids[k] >= 0);
        if (kids[k] == 0) {
            char *err = NULL;
            struct reg_db *cdb = reg_db_open(path, 0, &err);
            int bad = cdb == NULL;
            for (int i = 0; i < 50 && !bad; i++) {
                char text[64];
                json_t *m;
                int v, created;
                snprintf(text, sizeof(text), "child %d text %d", k, i);
                m = json_pack("[{ssss}]", "role", "user", "content", text);
                bad = reg_publish(cdb, "raced", m, NULL, NULL, NULL, NULL, &v,
                                  &created, &err) < 0 || !created;
                if (bad)
                    fprintf(stderr, "child %d: %s\n", k, err ? err : "not created");
                json_decref(m);
            }
            reg_db_free(cdb);
            _exit(bad);
        }
    }
    for (int k = 0; k < 2; k++) {
        int status;
        assert_int_equal(waitpid(kids[k], &status, 0), kids[k]);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
    }
    db = treg_open(path);
    assert_int_equal(reg_versions_list(db, "raced", &vs, &n, NULL), 0);
    assert_int_equal(n, 100);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(vs[i]->version, (int)i + 1);
    reg_versions_list_free(vs, n);
    reg_db_free(db);
    treg_cleanup(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_text_and_json),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_publish_versions),
        cmocka_unit_test(test_publish_rejects),
        cmocka_unit_test(test_versions_immutable_in_database),
        cmocka_unit_test(test_list_and_refs),
        cmocka_unit_test(test_concurrent_publishers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
