/*
 * test_reg_export.c - export/import round trip, idempotence, conflicts;
 * and the unified diff.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "tests/unit/test_reg_util.h"

static struct reg_db *setup(char **path)
{
    struct reg_db *db;
    struct reg_arm arms[] = {{2, 50}, {3, 50}};

    *path = treg_tmpdb();
    db = treg_open(*path);
    treg_publish(db, "copy", "one {{x}}");
    treg_publish(db, "copy", "{\"messages\": [{\"role\": \"system\", \"content\": \"Säge\"},"
                 " {\"role\": \"user\", \"content\": \"two {{x}}\"}],"
                 " \"params\": {\"temperature\": 0.7, \"model\": \"m\"}}");
    treg_publish(db, "copy", "three");
    treg_publish(db, "zeta", "z");
    assert_int_equal(reg_prompt_describe(db, "copy", "desc", NULL), 0);
    assert_int_equal(reg_label_set(db, "copy", 1, "production", "a", NULL), 0);
    assert_int_equal(reg_label_set(db, "copy", 2, "production", "a", NULL), 0);
    assert_int_equal(reg_experiment_start(db, "copy", "production", arms, 2, "s", "a",
                                          NULL, NULL), 0);
    return db;
}

static void test_round_trip(void **state)
{
    char *p1, *p2 = treg_tmpdb(), *err = NULL, *d1, *d2;
    struct reg_db *a = setup(&p1), *b = treg_open(p2);
    struct reg_import_counts c;
    json_t *doc = reg_export(a, &err), *doc2;
    struct reg_snapshot *s;
    struct reg_resolved r;
    int from, to;

    (void)state;
    assert_non_null(doc);
    assert_int_equal(reg_import(b, doc, "restorer", &c, &err), 0);
    assert_int_equal(c.prompts, 2);
    assert_int_equal(c.versions, 4);
    assert_int_equal(c.labels, 1);
    assert_int_equal(c.experiments, 1);
    doc2 = reg_export(b, &err);
    d1 = json_dumps(json_object_get(doc, "prompts"), JSON_SORT_KEYS);
    d2 = json_dumps(json_object_get(doc2, "prompts"), JSON_SORT_KEYS);
    assert_string_equal(d1, d2);
    free(d1);
    free(d2);
    json_decref(doc2);
    /* idempotent */
    assert_int_equal(reg_import(b, doc, "restorer", &c, &err), 0);
    assert_int_equal(c.prompts + c.versions + c.labels + c.experiments, 0);
    /* history came along: rollback works in the copy */
    assert_int_equal(reg_label_rollback(b, "copy", "production", "x", &from, &to, &err), 0);
    assert_int_equal(to, 1);
    reg_db_free(b);
    /* the experiment assigns identically (same name and salt) */
    s = reg_snapshot_load(p2, &err);
    assert_int_equal(reg_snapshot_resolve(s, "copy", "production", 0, "alice", &r, &err), 0);
    assert_non_null(r.experiment);
    assert_string_equal(r.experiment->salt, "s");
    reg_snapshot_unref(s);
    json_decref(doc);
    reg_db_free(a);
    treg_cleanup(p1);
    treg_cleanup(p2);
}

static void test_conflict_changes_nothing(void **state)
{
    char *p1, *err = NULL;
    struct reg_db *a = setup(&p1);
    json_t *doc = reg_export(a, &err), *v, *prompts, *extra;
    struct reg_prompt_info *ps;
    size_t n;

    (void)state;
    prompts = json_object_get(doc, "prompts");
    /* a new prompt first in the document, then a changed version */
    extra = json_deep_copy(json_array_get(prompts, 1));
    json_object_set_new(extra, "name", json_string("newcomer"));
    json_array_insert_new(prompts, 0, extra);
    v = json_array_get(json_object_get(json_array_get(prompts, 1), "versions"), 0);
    json_object_set_new(v, "messages", json_pack("[{ssss}]", "role", "user", "content", "changed"));
    assert_int_equal(reg_import(a, doc, "x", NULL, &err), -1);
    assert_non_null(strstr(err, "import conflict: 'copy' version 1 exists with other content"));
    free(err);
    err = NULL;
    assert_int_equal(reg_prompt_list(a, &ps, &n, &err), 0);
    assert_int_equal(n, 2);   /* "newcomer" rolled back too */
    reg_prompt_list_free(ps, n);
    json_decref(doc);
    doc = json_pack("{ss}", "format", "something-else");
    assert_int_equal(reg_import(a, doc, "x", NULL, &err), -1);
    assert_non_null(strstr(err, "not a registry export"));
    free(err);
    json_decref(doc);
    reg_db_free(a);
    treg_cleanup(p1);
}

static void test_diff(void **state)
{
    char *p1, *err = NULL, *d;
    struct reg_db *a = setup(&p1);
    struct reg_version *v1 = reg_version_get(a, "copy", NULL, 1, &err);
    struct reg_version *v2 = reg_version_get(a, "copy", NULL, 2, &err);

    (void)state;
    d = reg_diff(v1, v1, &err);
    assert_string_equal(d, "");
    free(d);
    d = reg_diff(v1, v2, &err);
    assert_non_null(d);
    assert_non_null(strstr(d, "--- copy@1\n+++ copy@2\n@@ "));
    assert_non_null(strstr(d, "\n+[system]\n+Säge\n"));
    assert_non_null(strstr(d, "\n-one {{x}}\n+two {{x}}\n"));
    assert_non_null(strstr(d, "\n+  \"temperature\": 0.7\n"));
    assert_non_null(strstr(d, "\n [user]\n"));
    free(d);
    reg_version_free(v1);
    reg_version_free(v2);
    reg_db_free(a);
    treg_cleanup(p1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_conflict_changes_nothing),
        cmocka_unit_test(test_diff),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
