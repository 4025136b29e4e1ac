/*
 * test_reg_migrate.c - schema migrations: applied once with checksums,
 * WAL and foreign keys on, newer or tampered databases refused.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>
#include <sqlite3.h>
#include "tests/unit/test_reg_util.h"

static int count_rows(struct reg_db *db, const char *sql)
{
    sqlite3_stmt *st;
    int n = -1;

    assert_int_equal(sqlite3_prepare_v2(reg_db_handle(db), sql, -1, &st, NULL), SQLITE_OK);
    if (sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return n;
}

static void test_fresh_applies_all(void **state)
{
    struct reg_migration_status st[16];
    char *path = treg_tmpdb(), *err = NULL;
    struct reg_db *db = treg_open(path);
    int n, dbv = 0;

    (void)state;
    n = reg_migrate_status(db, st, 16, &dbv, &err);
    assert_true(n >= 2);
    assert_int_equal(dbv, reg_migrate_latest());
    for (int i = 0; i < n; i++) {
        assert_true(st[i].applied);
        assert_true(st[i].checksum_ok);
        assert_int_equal(strlen(st[i].checksum), 64);
        if (i > 0)
            assert_true(st[i].version > st[i - 1].version);
    }
    assert_string_equal(st[0].name, "0001_init");
    assert_int_equal(count_rows(db, "SELECT count(*) FROM eval_runs"), 0);
    reg_db_free(db);
    /* reopening applies nothing twice */
    db = treg_open(path);
    assert_int_equal(count_rows(db, "SELECT count(*) FROM schema_migrations"), n);
    reg_db_free(db);
    treg_cleanup(path);
}

static void test_pragmas(void **state)
{
    char *path = treg_tmpdb();
    struct reg_db *db = treg_open(path);
    sqlite3_stmt *st;

    (void)state;
    assert_int_equal(sqlite3_prepare_v2(reg_db_handle(db), "PRAGMA journal_mode",
                                        -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
    sqlite3_finalize(st);
    assert_int_equal(count_rows(db, "PRAGMA foreign_keys"), 1);
    /* foreign keys bite: a label on a missing prompt */
    assert_int_not_equal(treg_sql(db, "INSERT INTO labels (prompt_id, label, version)"
                                  " VALUES (42, 'x', 1)"), SQLITE_OK);
    reg_db_free(db);
    treg_cleanup(path);
}

/* a new database gets 16 KiB pages (the exposure log's chunks); one made
 * with 4 KiB pages keeps them and still opens, migrates and writes */
static void test_page_size(void **state)
{
    char *path = treg_tmpdb();
    struct reg_db *db = treg_open(path);
    sqlite3 *raw = NULL;

    (void)state;
    assert_int_equal(count_rows(db, "PRAGMA page_size"), 16384);
    reg_db_free(db);
    treg_cleanup(path);
    path = treg_tmpdb();
    assert_int_equal(sqlite3_open(path, &raw), SQLITE_OK);
    assert_int_equal(sqlite3_exec(raw, "PRAGMA page_size = 4096; "
                                  "CREATE TABLE t(x)", NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(raw);
    db = treg_open(path);
    assert_int_equal(count_rows(db, "PRAGMA page_size"), 4096);
    assert_int_equal(treg_publish(db, "p", "{\"messages\": [{\"role\": "
                                  "\"user\", \"content\": \"hi\"}]}"), 1);
    assert_int_equal(count_rows(db, "SELECT count(*) FROM versions"), 1);
    reg_db_free(db);
    treg_cleanup(path);
}

static void test_newer_database_refused(void **state)
{
    char *path = treg_tmpdb(), *err = NULL;
    struct reg_db *db = treg_open(path);

    (void)state;
    assert_int_equal(treg_sql(db, "INSERT INTO schema_migrations (version, name,"
                              " checksum) VALUES (9999, '9999_future', 'x')"), SQLITE_OK);
    reg_db_free(db);
    assert_null(reg_db_open(path, 0, &err));
    assert_non_null(strstr(err, "newer than this binary"));
    free(err);
    err = NULL;
    assert_null(reg_snapshot_load(path, &err));
    assert_non_null(strstr(err, "newer"));
    free(err);
    treg_cleanup(path);
}

static void test_changed_migration_refused(void **state)
{
    char *path = treg_tmpdb(), *err = NULL;
    struct reg_db *db = treg_open(path);

    (void)state;
    assert_int_equal(treg_sql(db, "UPDATE schema_migrations SET checksum = 'bad'"
                              " WHERE version = 1"), SQLITE_OK);
    reg_db_free(db);
    assert_null(reg_db_open(path, 0, &err));
    assert_non_null(strstr(err, "0001_init differs"));
    free(err);
    treg_cleanup(path);
}

static void test_status_without_migrating(void **state)
{
    struct reg_migration_status st[16];
    char *path = treg_tmpdb(), *err = NULL;
    struct reg_db *db = reg_db_open(path, REG_DB_CREATE | REG_DB_NOMIGRATE, &err);
    int n, dbv = -1;

    (void)state;
    assert_non_null(db);
    n = reg_migrate_status(db, st, 16, &dbv, &err);
    assert_true(n >= 2);
    assert_int_equal(dbv, 0);
    for (int i = 0; i < n; i++)
        assert_false(st[i].applied);
    reg_db_free(db);
    /* a database behind this binary is refused by the snapshot loader */
    assert_null(reg_snapshot_load(path, &err));
    assert_non_null(strstr(err, "older than this binary"));
    free(err);
    treg_cleanup(path);
}

static void test_missing_file_not_created(void **state)
{
    char *path = treg_tmpdb(), *err = NULL;

    (void)state;
    assert_null(reg_db_open(path, 0, &err));
    assert_non_null(strstr(err, "cannot open"));
    free(err);
    treg_cleanup(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fresh_applies_all),
        cmocka_unit_test(test_pragmas),
        cmocka_unit_test(test_page_size),
        cmocka_unit_test(test_newer_database_refused),
        cmocka_unit_test(test_changed_migration_refused),
        cmocka_unit_test(test_status_without_migrating),
        cmocka_unit_test(test_missing_file_not_created),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
