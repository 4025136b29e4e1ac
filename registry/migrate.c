/*
 * migrate.c - applies the migrations built into the binary
 * (migrations/NNNN_name.sql, embedded by registry/embed.sh).
 *
 * Design: table schema_migrations(version, name, checksum, applied_at)
 * records each applied file with the SHA-256 of its text. Each pending
 * migration runs in its own BEGIN IMMEDIATE transaction together with its
 * record, so a failure leaves the database at the previous version, and two
 * processes opening a fresh database at once apply each file exactly once
 * (the second re-checks inside its transaction and finds it done).
 *
 * Invariants:
 *  1. reg_migration_srcs[] is sorted by version, versions unique (embed.sh
 *     gets the files sorted; a duplicate number fails the unit test).
 *  2. A database recording a version above the newest built-in one, or an
 *     applied migration whose checksum differs from the built-in text, is
 *     refused before anything is written.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "registry/internal.h"

#define CREATE_TABLE \
    "CREATE TABLE IF NOT EXISTS schema_migrations (" \
    " version INTEGER PRIMARY KEY, name TEXT NOT NULL," \
    " checksum TEXT NOT NULL, applied_at TEXT NOT NULL" \
    " DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')))"

int reg_migrate_latest(void)
{
    return reg_migration_count > 0
        ? reg_migration_srcs[reg_migration_count - 1].version : 0;
}

static int table_exists(sqlite3 *sql, int *exists, char **err)
{
    sqlite3_stmt *st = NULL;
    int rc;

    rc = sqlite3_prepare_v2(sql, "SELECT 1 FROM sqlite_master WHERE type = 'table'"
                            " AND name = 'schema_migrations'", -1, &st, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(st);
        *exists = rc == SQLITE_ROW;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        reg_err(err, "cannot read registry: %s", sqlite3_errmsg(sql));
        return -1;
    }
    return 0;
}

static const struct reg_migration_src *builtin(int version)
{
    for (int i = 0; i < reg_migration_count; i++)
        if (reg_migration_srcs[i].version == version)
            return &reg_migration_srcs[i];
    return NULL;
}

/*
 * Check the recorded migrations against the built-in ones. `*applied_max`
 * receives the highest recorded version (0 when none). Returns -1 when the
 * database is newer or an applied migration was changed.
 */
static int check(sqlite3 *sql, const char *path, int *applied_max, char **err)
{
    sqlite3_stmt *st = NULL;
    int exists = 0, rc;

    *applied_max = 0;
    if (table_exists(sql, &exists, err) < 0)
        return -1;
    if (!exists)
        return 0;
    rc = sqlite3_prepare_v2(sql, "SELECT version, name, checksum FROM"
                            " schema_migrations ORDER BY version", -1, &st, NULL);
    while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        int v = sqlite3_column_int(st, 0);
        const char *name = (const char *)sqlite3_column_text(st, 1);
        const char *sum = (const char *)sqlite3_column_text(st, 2);
        const struct reg_migration_src *m = builtin(v);
        char want[65];

        *applied_max = v;
        if (v > reg_migrate_latest()) {
            reg_err(err, "cannot use '%s': its schema version %d is newer than"
                    " this binary's (%d); upgrade promptgate", path, v,
                    reg_migrate_latest());
            sqlite3_finalize(st);
            return -1;
        }
        if (m == NULL || reg_sha256_hex(m->sql, strlen(m->sql), want) < 0
            || sum == NULL || strcmp(want, sum) != 0) {
            reg_err(err, "cannot use '%s': applied migration %04d_%s differs"
                    " from the one built into this binary (checksum mismatch);"
                    " a released migration must never be edited", path, v,
                    name && strchr(name, '_') ? strchr(name, '_') + 1 : "?");
            sqlite3_finalize(st);
            return -1;
        }
        rc = SQLITE_OK;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        reg_err(err, "cannot read migrations of '%s': %s", path,
                sqlite3_errmsg(sql));
        return -1;
    }
    return 0;
}

static int apply_one(struct reg_db *db, const struct reg_migration_src *m,
                     char **err)
{
    sqlite3_stmt *st = NULL;
    char sum[65];
    char *msg = NULL;
    int done, rc;

    if (reg_db_begin(db, err) < 0)
        return -1;
    if (reg_db_exec(db, CREATE_TABLE, err) < 0)
        goto fail;
    st = reg_db_prepare(db, "SELECT 1 FROM schema_migrations WHERE version = ?", err);
    if (st == NULL)
        goto fail;
    sqlite3_bind_int(st, 1, m->version);
    done = sqlite3_step(st) == SQLITE_ROW;
    sqlite3_finalize(st);
    st = NULL;
    if (done)   /* a concurrent opener applied it first */
        return reg_db_commit(db, err);
    if (sqlite3_exec(db->sql, m->sql, NULL, NULL, &msg) != SQLITE_OK) {
        reg_err(err, "cannot apply migration %s to '%s': %s", m->name, db->path,
                msg ? msg : sqlite3_errmsg(db->sql));
        sqlite3_free(msg);
        goto fail;
    }
    reg_sha256_hex(m->sql, strlen(m->sql), sum);
    st = reg_db_prepare(db, "INSERT INTO schema_migrations (version, name, checksum)"
                        " VALUES (?, ?, ?)", err);
    if (st == NULL)
        goto fail;
    sqlite3_bind_int(st, 1, m->version);
    sqlite3_bind_text(st, 2, m->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, sum, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        reg_err(err, "cannot record migration %s in '%s': %s", m->name,
                db->path, sqlite3_errmsg(db->sql));
        goto fail;
    }
    return reg_db_commit(db, err);
fail:
    reg_db_rollback(db);
    return -1;
}

int reg_migrate_apply(struct reg_db *db, int apply, char **err)
{
    int applied_max;

    if (!apply)   /* status only: report, do not judge */
        return 0;
    if (check(db->sql, db->path, &applied_max, err) < 0)
        return -1;
    for (int i = 0; i < reg_migration_count; i++) {
        if (reg_migration_srcs[i].version <= applied_max)
            continue;
        if (apply_one(db, &reg_migration_srcs[i], err) < 0)
            return -1;
    }
    return 0;
}

int reg_migrate_check_current(sqlite3 *sql, const char *path, char **err)
{
    int applied_max;

    if (check(sql, path, &applied_max, err) < 0)
        return -1;
    if (applied_max < reg_migrate_latest()) {
        reg_err(err, "cannot load '%s': schema version %d is older than this"
                " binary's (%d); run 'promptctl migrate --db %s'", path,
                applied_max, reg_migrate_latest(), path);
        return -1;
    }
    return 0;
}

int reg_migrate_status(struct reg_db *db, struct reg_migration_status *out,
                       int max, int *db_version, char **err)
{
    sqlite3_stmt *st = NULL;
    int exists = 0;

    *db_version = 0;
    if (table_exists(db->sql, &exists, err) < 0)
        return -1;
    for (int i = 0; i < reg_migration_count && i < max; i++) {
        const struct reg_migration_src *m = &reg_migration_srcs[i];
        static char sums[64][65];   /* built-in checksums, computed once */

        memset(&out[i], 0, sizeof(out[i]));
        out[i].version = m->version;
        out[i].name = m->name;
        if (i < 64) {
            reg_sha256_hex(m->sql, strlen(m->sql), sums[i]);
            out[i].checksum = sums[i];
        }
    }
    if (!exists)
        return reg_migration_count;
    st = reg_db_prepare(db, "SELECT version, checksum, applied_at FROM"
                        " schema_migrations ORDER BY version", err);
    if (st == NULL)
        return -1;
    while (sqlite3_step(st) == SQLITE_ROW) {
        int v = sqlite3_column_int(st, 0);
        const char *sum = (const char *)sqlite3_column_text(st, 1);
        const char *at = (const char *)sqlite3_column_text(st, 2);

        if (v > *db_version)
            *db_version = v;
        for (int i = 0; i < reg_migration_count && i < max; i++) {
            if (out[i].version != v)
                continue;
            out[i].applied = 1;
            out[i].checksum_ok = sum && out[i].checksum
                                 && strcmp(sum, out[i].checksum) == 0;
            snprintf(out[i].applied_at, sizeof(out[i].applied_at), "%s",
                     at ? at : "");
        }
    }
    sqlite3_finalize(st);
    return reg_migration_count;
}
