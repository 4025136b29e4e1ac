/*
 * test_reg_label.c - labels, their history and rollback.
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

static int points_at(struct reg_db *db, const char *label)
{
    struct reg_version *v = reg_version_get(db, "copy", label, 0, NULL);
    int n = v ? v->version : 0;

    reg_version_free(v);
    return n;
}

static struct reg_db *setup(char **path)
{
    struct reg_db *db;

    *path = treg_tmpdb();
    db = treg_open(*path);
    for (int i = 0; i < 4; i++) {
        char text[32];
        snprintf(text, sizeof(text), "text %d", i);
        treg_publish(db, "copy", text);
    }
    return db;
}

static void test_set_and_rollback_chain(void **state)
{
    char *path, *err = NULL;
    struct reg_db *db = setup(&path);
    int from = 0, to = 0;

    (void)state;
    assert_int_equal(reg_label_set(db, "copy", 1, "production", "ann", &err), 0);
    assert_int_equal(reg_label_set(db, "copy", 2, "production", "ann", &err), 0);
    assert_int_equal(reg_label_set(db, "copy", 3, "production", "bob", &err), 0);
    assert_int_equal(points_at(db, "production"), 3);
    assert_int_equal(reg_label_rollback(db, "copy", "production", "bob", &from, &to, &err), 0);
    assert_int_equal(from, 3);
    assert_int_equal(to, 2);
    assert_int_equal(points_at(db, "production"), 2);
    /* a second rollback goes further back, not back to 3 */
    assert_int_equal(reg_label_rollback(db, "copy", "production", "bob", &from, &to, &err), 0);
    assert_int_equal(to, 1);
    assert_int_equal(reg_label_rollback(db, "copy", "production", "bob", &from, &to, &err), -1);
    assert_non_null(strstr(err, "no earlier version"));
    free(err);
    err = NULL;
    assert_int_equal(points_at(db, "production"), 1);
    /* move forward again, then roll back that move */
    assert_int_equal(reg_label_set(db, "copy", 4, "production", "cy", &err), 0);
    assert_int_equal(reg_label_rollback(db, "copy", "production", "cy", &from, &to, &err), 0);
    assert_int_equal(from, 4);
    assert_int_equal(to, 1);
    reg_db_free(db);
    treg_cleanup(path);
}

static void test_log(void **state)
{
    char *path, *err = NULL;
    struct reg_db *db = setup(&path);
    json_t *log, *e;

    (void)state;
    reg_label_set(db, "copy", 1, "production", "ann", NULL);
    reg_label_set(db, "copy", 1, "production", "ann", NULL);   /* no move */
    reg_label_set(db, "copy", 2, "staging", "ann", NULL);
    reg_label_set(db, "copy", 3, "production", "bob", NULL);
    reg_label_rollback(db, "copy", "production", "cy", NULL, NULL, NULL);
    log = reg_label_log(db, "copy", &err);
    assert_non_null(log);
    assert_int_equal(json_array_size(log), 4);
    e = json_array_get(log, 0);
    assert_true(json_is_null(json_object_get(e, "from")));
    assert_int_equal(json_integer_value(json_object_get(e, "to")), 1);
    assert_string_equal(json_string_value(json_object_get(e, "actor")), "ann");
    e = json_array_get(log, 3);
    assert_string_equal(json_string_value(json_object_get(e, "action")), "rollback");
    assert_int_equal(json_integer_value(json_object_get(e, "from")), 3);
    assert_int_equal(json_integer_value(json_object_get(e, "to")), 1);
    assert_string_equal(json_string_value(json_object_get(e, "actor")), "cy");
    assert_non_null(json_string_value(json_object_get(e, "at")));
    json_decref(log);
    assert_int_equal(points_at(db, "staging"), 2);
    reg_db_free(db);
    treg_cleanup(path);
}

static void test_label_errors(void **state)
{
    char *path, *err = NULL;
    struct reg_db *db = setup(&path);

    (void)state;
    assert_int_equal(reg_label_set(db, "copy", 1, "latest", NULL, &err), -1);
    assert_non_null(strstr(err, "'latest' is built in"));
    free(err);
    err = NULL;
    assert_int_equal(reg_label_set(db, "copy", 1, "Prod", NULL, &err), -1);
    assert_non_null(strstr(err, "invalid label 'Prod'"));
    free(err);
    err = NULL;
    assert_int_equal(reg_label_set(db, "copy", 9, "prod", NULL, &err), -1);
    assert_string_equal(err, "prompt 'copy' has no version 9");
    free(err);
    err = NULL;
    assert_int_equal(reg_label_set(db, "nope", 1, "prod", NULL, &err), -1);
    assert_string_equal(err, "unknown prompt 'nope'");
    free(err);
    err = NULL;
    assert_int_equal(reg_label_rollback(db, "copy", "prod", NULL, NULL, NULL, &err), -1);
    assert_string_equal(err, "prompt 'copy' has no label 'prod'");
    free(err);
    reg_db_free(db);
    treg_cleanup(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_set_and_rollback_chain),
        cmocka_unit_test(test_log),
        cmocka_unit_test(test_label_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
