/*
 * test_reg_snapshot.c - the gateway's in-memory snapshot: resolution by
 * label, version and experiment, errors, isolation from later writes.
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

static char *setup(void)
{
    char *path = treg_tmpdb(), *err = NULL;
    struct reg_db *db = treg_open(path);
    struct reg_arm arms[] = {{2, 50}, {3, 50}};

    treg_publish(db, "copy", "one {{x}}");
    treg_publish(db, "copy", "two {{x}}");
    treg_publish(db, "copy", "three {{x}}");
    treg_publish(db, "other", "{\"messages\": [{\"role\": \"system\", \"content\": \"s\"}],"
                 " \"params\": {\"model\": \"gpt-4o-mini\"}}");
    assert_int_equal(reg_label_set(db, "copy", 1, "production", "t", &err), 0);
    assert_int_equal(reg_label_set(db, "copy", 1, "staging", "t", &err), 0);
    assert_int_equal(reg_experiment_start(db, "copy", "production", arms, 2, "salt",
                                          "t", NULL, &err), 0);
    reg_db_free(db);
    return path;
}

static void test_resolve(void **state)
{
    char *path = setup(), *err = NULL;
    struct reg_snapshot *s = reg_snapshot_load(path, &err);
    struct reg_resolved r;

    (void)state;
    assert_non_null(s);
    assert_int_equal(reg_snapshot_prompts(s), 2);
    assert_int_equal(reg_snapshot_versions(s), 4);
    assert_int_equal(reg_snapshot_resolve(s, "copy", NULL, 0, "u", &r, &err), 0);
    assert_int_equal(r.version->version, 3);
    assert_null(r.experiment);
    assert_int_equal(r.arm, -1);
    assert_int_equal(reg_snapshot_resolve(s, "copy", "staging", 0, "u", &r, &err), 0);
    assert_int_equal(r.version->version, 1);
    assert_string_equal(r.label, "staging");
    assert_int_equal(reg_snapshot_resolve(s, "copy", NULL, 2, "u", &r, &err), 0);
    assert_int_equal(r.version->version, 2);
    assert_null(r.experiment);
    assert_int_equal(reg_snapshot_resolve(s, "other", "latest", 0, NULL, &r, &err), 0);
    assert_string_equal(json_string_value(json_object_get(r.version->params, "model")),
                        "gpt-4o-mini");
    assert_int_equal(reg_snapshot_resolve(s, "nope", NULL, 0, "u", &r, &err), -1);
    assert_string_equal(err, "unknown prompt 'nope'");
    free(err);
    err = NULL;
    assert_int_equal(reg_snapshot_resolve(s, "copy", "canary", 0, "u", &r, &err), -1);
    assert_string_equal(err, "prompt 'copy' has no label 'canary'");
    free(err);
    err = NULL;
    assert_int_equal(reg_snapshot_resolve(s, "copy", NULL, 4, "u", &r, &err), -1);
    assert_string_equal(err, "prompt 'copy' has no version 4");
    free(err);
    reg_snapshot_unref(s);
    treg_cleanup(path);
}

static void test_experiment_assignment(void **state)
{
    char *path = setup(), *err = NULL;
    struct reg_snapshot *s = reg_snapshot_load(path, &err);
    struct reg_arm arms[] = {{2, 50}, {3, 50}};
    struct reg_resolved r;
    int seen[4] = {0};
    char id[32];

    (void)state;
    for (int u = 0; u < 2000; u++) {
        snprintf(id, sizeof(id), "user%d", u);
        assert_int_equal(reg_snapshot_resolve(s, "copy", "production", 0, id, &r, &err), 0);
        assert_non_null(r.experiment);
        assert_string_equal(r.experiment->name, "copy@production");
        /* the arm is exactly what reg_assign says, and sticky */
        assert_int_equal(r.arm, reg_assign("copy@production", "salt", id, arms, 2));
        assert_int_equal(r.version->version, arms[r.arm].version);
        seen[r.version->version]++;
    }
    assert_int_equal(seen[1], 0);   /* the label's own version is not an arm */
    assert_in_range(seen[2], 900, 1100);
    assert_in_range(seen[3], 900, 1100);
    /* no user id: the label's version, no experiment */
    assert_int_equal(reg_snapshot_resolve(s, "copy", "production", 0, NULL, &r, &err), 0);
    assert_int_equal(r.version->version, 1);
    assert_null(r.experiment);
    reg_snapshot_unref(s);
    treg_cleanup(path);
}

static void test_isolation_and_refcount(void **state)
{
    char *path = setup(), *err = NULL;
    struct reg_snapshot *s = reg_snapshot_load(path, &err), *s2;
    struct reg_db *db;
    struct reg_resolved r;
    json_t *vars = json_pack("{ss}", "x", "{{y}}"), *out = NULL;

    (void)state;
    db = treg_open(path);
    treg_publish(db, "copy", "four");
    assert_int_equal(reg_experiment_stop(db, "copy", "production", &err), 0);
    reg_db_free(db);
    /* the old snapshot still sees its point in time */
    assert_int_equal(reg_snapshot_resolve(s, "copy", NULL, 0, "u", &r, &err), 0);
    assert_int_equal(r.version->version, 3);
    s2 = reg_snapshot_ref(s);
    reg_snapshot_unref(s);
    assert_int_equal(reg_render(r.version, vars, &out, &err), 0);
    assert_string_equal(json_string_value(json_object_get(json_array_get(out, 0), "content")),
                        "three {{y}}");
    json_decref(out);
    reg_snapshot_unref(s2);
    s = reg_snapshot_load(path, &err);
    assert_int_equal(reg_snapshot_resolve(s, "copy", NULL, 0, "u", &r, &err), 0);
    assert_int_equal(r.version->version, 4);
    assert_int_equal(reg_snapshot_resolve(s, "copy", "production", 0, "u", &r, &err), 0);
    assert_null(r.experiment);
    assert_int_equal(r.version->version, 1);
    reg_snapshot_unref(s);
    json_decref(vars);
    treg_cleanup(path);
}

static void test_watch(void **state)
{
    char *path = setup(), *err = NULL, moved[4200];
    struct reg_watch *w = reg_watch_new(path, &err);
    struct reg_db *db;

    (void)state;
    assert_non_null(w);
    assert_int_equal(reg_watch_changed(w, &err), 1);   /* first call */
    assert_int_equal(reg_watch_changed(w, &err), 0);
    assert_int_equal(reg_watch_changed(w, &err), 0);
    db = treg_open(path);
    assert_int_equal(reg_label_set(db, "copy", 3, "production", "t", &err), 0);
    assert_int_equal(reg_watch_changed(w, &err), 1);
    assert_int_equal(reg_watch_changed(w, &err), 0);
    /* a read does not count as a change */
    reg_version_free(reg_version_get(db, "copy", NULL, 0, NULL));
    assert_int_equal(reg_watch_changed(w, &err), 0);
    reg_db_free(db);
    /* a file replaced under the same path */
    snprintf(moved, sizeof(moved), "%s.old", path);
    assert_int_equal(rename(path, moved), 0);
    assert_int_equal(reg_watch_changed(w, &err), -1);
    assert_non_null(strstr(err, "no such file"));
    free(err);
    err = NULL;
    assert_int_equal(rename(moved, path), 0);
    assert_int_equal(reg_watch_changed(w, &err), 1);
    assert_int_equal(reg_watch_changed(w, &err), 0);
    reg_watch_free(w);
    treg_cleanup(path);
}

static void test_load_errors(void **state)
{
    char *err = NULL;

    (void)state;
    assert_null(reg_snapshot_load("/nonexistent/dir/x.db", &err));
    assert_non_null(strstr(err, "cannot open '/nonexistent/dir/x.db'"));
    free(err);
    err = NULL;
    assert_null(reg_snapshot_load("", &err));
    free(err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resolve),
        cmocka_unit_test(test_experiment_assignment),
        cmocka_unit_test(test_isolation_and_refcount),
        cmocka_unit_test(test_watch),
        cmocka_unit_test(test_load_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
