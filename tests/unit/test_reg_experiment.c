/*
 * test_reg_experiment.c - experiments (start/stop/list/weights) and
 * evaluator runs.
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

    *path = treg_tmpdb();
    db = treg_open(*path);
    treg_publish(db, "copy", "one {{x}}");
    treg_publish(db, "copy", "two {{x}}");
    treg_publish(db, "copy", "three {{x}}");
    assert_int_equal(reg_label_set(db, "copy", 2, "production", "t", NULL), 0);
    assert_int_equal(reg_label_set(db, "copy", 1, "staging", "t", NULL), 0);
    return db;
}

static void expect_start_err(struct reg_db *db, const char *label,
                             const struct reg_arm *arms, size_t n, const char *needle)
{
    char *err = NULL;

    assert_int_equal(reg_experiment_start(db, "copy", label, arms, n, NULL, "t",
                                          NULL, &err), -1);
    if (err == NULL || strstr(err, needle) == NULL)
        fail_msg("error '%s' lacks '%s'", err ? err : "(none)", needle);
    free(err);
}

static void test_start_validation(void **state)
{
    char *path;
    struct reg_db *db = setup(&path);
    struct reg_arm bad_sum[] = {{2, 50}, {3, 40}};
    struct reg_arm dup[] = {{2, 50}, {2, 50}};
    struct reg_arm missing[] = {{2, 50}, {9, 50}};
    struct reg_arm one[] = {{2, 100}};
    struct reg_arm zero[] = {{2, 0}, {3, 100}};
    struct reg_arm ok[] = {{2, 50}, {3, 50}};

    (void)state;
    expect_start_err(db, "production", bad_sum, 2, "sum to 90");
    expect_start_err(db, "production", dup, 2, "listed in two arms");
    expect_start_err(db, "production", missing, 2, "has no version 9");
    expect_start_err(db, "production", one, 1, "2 to");
    expect_start_err(db, "production", zero, 2, "invalid weight 0");
    expect_start_err(db, "canary", ok, 2, "has no label 'canary'");
    expect_start_err(db, "Bad", ok, 2, "invalid label");
    reg_db_free(db);
    treg_cleanup(path);
}

static void test_one_running_per_label(void **state)
{
    char *path, *err = NULL;
    struct reg_db *db = setup(&path);
    struct reg_arm ok[] = {{2, 50}, {3, 50}};
    struct reg_arm ok2[] = {{1, 30}, {3, 70}};
    struct reg_experiment **list;
    size_t n;
    int64_t id = 0;

    (void)state;
    assert_int_equal(reg_experiment_start(db, "copy", "production", ok, 2, "salty",
                                          "t", &id, &err), 0);
    assert_true(id > 0);
    expect_start_err(db, "production", ok, 2, "already has a running experiment");
    /* another label may run its own */
    assert_int_equal(reg_experiment_start(db, "copy", "staging", ok2, 2, NULL, "t",
                                          NULL, &err), 0);
    assert_int_equal(reg_experiment_list(db, NULL, 1, &list, &n, &err), 0);
    assert_int_equal(n, 2);
    assert_string_equal(list[1]->name, "copy@production");
    assert_string_equal(list[1]->salt, "salty");
    assert_int_equal(strlen(list[0]->salt), 16);   /* random salt */
    reg_experiment_list_free(list, n);
    /* stop without a label is ambiguous now */
    assert_int_equal(reg_experiment_stop(db, "copy", NULL, &err), -1);
    assert_non_null(strstr(err, "2 running experiments"));
    free(err);
    err = NULL;
    assert_int_equal(reg_experiment_stop(db, "copy", "production", &err), 0);
    assert_int_equal(reg_experiment_stop(db, "copy", "production", &err), -1);
    assert_string_equal(err, "no running experiment on 'copy@production'");
    free(err);
    err = NULL;
    assert_int_equal(reg_experiment_stop(db, "copy", NULL, &err), 0);
    assert_int_equal(reg_experiment_list(db, "copy", 1, &list, &n, &err), 0);
    assert_int_equal(n, 0);
    reg_experiment_list_free(list, n);
    assert_int_equal(reg_experiment_list(db, "copy", 0, &list, &n, &err), 0);
    assert_int_equal(n, 2);
    assert_false(list[0]->running);
    assert_non_null(list[0]->stopped_at);
    reg_experiment_list_free(list, n);
    /* and a new one may start on the freed label */
    assert_int_equal(reg_experiment_start(db, "copy", "production", ok2, 2, NULL, "t",
                                          NULL, &err), 0);
    reg_db_free(db);
    treg_cleanup(path);
}

static void test_weights_for_evaluator(void **state)
{
    char *path, *err = NULL;
    struct reg_db *db = setup(&path);
    struct reg_arm a1[] = {{2, 60}, {3, 40}};
    struct reg_arm a2[] = {{1, 50}, {2, 50}};
    struct reg_experiment *e;

    (void)state;
    assert_null(reg_experiment_weights(db, "copy", NULL, &err));
    assert_string_equal(err, "'copy' never had an experiment");
    free(err);
    err = NULL;
    assert_int_equal(reg_experiment_start(db, "copy", "production", a1, 2, NULL, "t", NULL, &err), 0);
    assert_int_equal(reg_experiment_stop(db, "copy", "production", &err), 0);
    /* the last one, stopped */
    e = reg_experiment_weights(db, "copy", NULL, &err);
    assert_non_null(e);
    assert_false(e->running);
    assert_int_equal(e->n_arms, 2);
    assert_int_equal(e->arms[0].version, 2);
    assert_int_equal(e->arms[0].weight, 60);
    assert_int_equal(e->arms[1].weight, 40);
    reg_experiment_free(e);
    /* a running one wins over a newer stopped one */
    assert_int_equal(reg_experiment_start(db, "copy", "staging", a2, 2, NULL, "t", NULL, &err), 0);
    assert_int_equal(reg_experiment_start(db, "copy", "production", a1, 2, NULL, "t", NULL, &err), 0);
    assert_int_equal(reg_experiment_stop(db, "copy", "production", &err), 0);
    e = reg_experiment_weights(db, "copy", NULL, &err);
    assert_true(e->running);
    assert_string_equal(e->label, "staging");
    reg_experiment_free(e);
    e = reg_experiment_weights(db, "copy", "production", &err);
    assert_string_equal(e->label, "production");
    reg_experiment_free(e);
    reg_db_free(db);
    treg_cleanup(path);
}

static void test_eval_runs(void **state)
{
    char *path, *err = NULL;
    struct reg_db *db = setup(&path);
    int64_t id = 0;
    json_t *runs;

    (void)state;
    assert_int_equal(reg_eval_run_add(db, "copy", 2, "samples.jsonl",
                                      "{\"fact_error_rate\": 0.12}", &id, &err), 0);
    assert_true(id > 0);
    assert_int_equal(reg_eval_run_add(db, "copy", 9, "s", "{}", NULL, &err), -1);
    assert_string_equal(err, "prompt 'copy' has no version 9");
    free(err);
    err = NULL;
    assert_int_equal(reg_eval_run_add(db, "nope", 1, "s", "{}", NULL, &err), -1);
    assert_string_equal(err, "unknown prompt 'nope'");
    free(err);
    err = NULL;
    assert_int_equal(reg_eval_run_add(db, "copy", 1, "s", "{oops", NULL, &err), -1);
    assert_non_null(strstr(err, "invalid eval summary JSON"));
    free(err);
    err = NULL;
    runs = reg_eval_run_list(db, "copy", &err);
    assert_int_equal(json_array_size(runs), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(runs, 0), "source")),
                        "samples.jsonl");
    assert_true(json_real_value(json_object_get(json_object_get(json_array_get(runs, 0),
                                                                "summary"), "fact_error_rate")) == 0.12);
    json_decref(runs);
    reg_db_free(db);
    treg_cleanup(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_start_validation),
        cmocka_unit_test(test_one_running_per_label),
        cmocka_unit_test(test_weights_for_evaluator),
        cmocka_unit_test(test_eval_runs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
