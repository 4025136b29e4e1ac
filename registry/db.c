/*
 * db.c - the registry connection: open with the pragmas every connection
 * needs, write transactions, and small helpers the other files share.
 *
 * Invariants:
 *  1. Every connection runs with foreign keys on and a busy timeout; a
 *     read-write one is in WAL mode (readers never block the writer).
 *  2. Every write goes through reg_db_begin(), i.e. BEGIN IMMEDIATE: the
 *     write lock is taken up front, so a transaction never fails half-way
 *     with SQLITE_BUSY on lock upgrade. BEGIN itself waits (busy timeout)
 *     and is retried, so "database is locked" does not reach users unless
 *     another writer holds the lock for longer than REG_BUSY_TOTAL_MS.
 *  3. Error strings are malloc'd, lowercase, one line.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <openssl/evp.h>
#include "registry/internal.h"

#define REG_BUSY_TIMEOUT_MS 5000
#define REG_BEGIN_TRIES     12      /* x busy timeout: about a minute */
/* the page size of a new database (SQLite's default is 4 KiB): the
 * exposure log appends rows of tens of KiB (a chunk of records), which
 * at 4 KiB pages took a chain of overflow pages each, and every page of
 * the WAL costs two writes and, at the checkpoint, a read and a write.
 * bin/exposure-bench, alternated: 1.38-1.56 us of the writer's CPU a
 * record at 4 KiB, 1.18-1.34 at 16 KiB. A database that has tables keeps
 * its size. */
#define REG_PAGE_SIZE       "16384"

void reg_err(char **err, const char *fmt, ...)
{
    va_list ap;
    char *s = NULL;

    if (err == NULL)
        return;
    va_start(ap, fmt);
    if (vasprintf(&s, fmt, ap) < 0)
        s = NULL;
    va_end(ap);
    free(*err);
    *err = s;
}

const char *reg_strerror(int errnum)
{
    static __thread char buf[128];
    const char *s = strerror(errnum);

    /* messages are lowercase: "permission denied", not "Permission denied" */
    snprintf(buf, sizeof(buf), "%s", s);
    if (buf[0] >= 'A' && buf[0] <= 'Z' && !(buf[1] >= 'A' && buf[1] <= 'Z'))
        buf[0] = (char)(buf[0] - 'A' + 'a');
    return buf;
}

int reg_sha256_hex(const void *data, size_t len, char out[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    static const char hex[] = "0123456789abcdef";

    if (!EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) || mdlen != 32)
        return -1;
    for (unsigned int i = 0; i < 32; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[64] = '\0';
    return 0;
}

int reg_db_configure(sqlite3 *sql, const char *path, int readonly, char **err)
{
    char *msg = NULL;
    int rc;

    sqlite3_busy_timeout(sql, REG_BUSY_TIMEOUT_MS);
    sqlite3_extended_result_codes(sql, 1);
    rc = sqlite3_exec(sql, "PRAGMA foreign_keys = ON", NULL, NULL, &msg);
    if (rc == SQLITE_OK && !readonly) /* before WAL: fixed in WAL mode */
        rc = sqlite3_exec(sql, "PRAGMA page_size = " REG_PAGE_SIZE, NULL,
                          NULL, &msg);
    if (rc == SQLITE_OK && !readonly) {
        /* switching to WAL needs a lock: retry past a racing opener */
        for (int i = 0; i < REG_BEGIN_TRIES; i++) {
            sqlite3_free(msg);
            msg = NULL;
            rc = sqlite3_exec(sql, "PRAGMA journal_mode = WAL", NULL, NULL, &msg);
            if ((rc & 0xff) != SQLITE_BUSY)
                break;
        }
        if (rc == SQLITE_OK)
            rc = sqlite3_exec(sql, "PRAGMA synchronous = NORMAL", NULL, NULL, &msg);
    }
    if (rc != SQLITE_OK) {
        reg_err(err, "cannot open '%s': %s", path,
                msg ? msg : sqlite3_errstr(rc));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

struct reg_db *reg_db_open(const char *path, int flags, char **err)
{
    struct reg_db *db;
    struct stat stbuf;
    int oflags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX;
    int rc;

    if (path == NULL || *path == '\0') {
        reg_err(err, "cannot open registry: empty database path");
        return NULL;
    }
    if (!(flags & REG_DB_CREATE) && stat(path, &stbuf) != 0) {
        reg_err(err, "cannot open '%s': %s", path,
                reg_strerror(errno));
        return NULL;
    }
    if (flags & REG_DB_CREATE)
        oflags |= SQLITE_OPEN_CREATE;
    db = calloc(1, sizeof(*db));
    if (db == NULL || (db->path = strdup(path)) == NULL) {
        reg_err(err, "cannot open '%s': out of memory", path);
        free(db);
        return NULL;
    }
    rc = sqlite3_open_v2(path, &db->sql, oflags, NULL);
    if (rc != SQLITE_OK) {
        reg_err(err, "cannot open '%s': %s", path,
                db->sql ? sqlite3_errmsg(db->sql) : sqlite3_errstr(rc));
        goto fail;
    }
    if (reg_db_configure(db->sql, path, 0, err) < 0)
        goto fail;
    if (reg_migrate_apply(db, !(flags & REG_DB_NOMIGRATE), err) < 0)
        goto fail;
    return db;
fail:
    reg_db_free(db);
    return NULL;
}

void reg_db_free(struct reg_db *db)
{
    if (db == NULL)
        return;
    sqlite3_close(db->sql);
    free(db->path);
    free(db);
}

struct sqlite3 *reg_db_handle(struct reg_db *db)
{
    return db->sql;
}

int reg_db_begin(struct reg_db *db, char **err)
{
    int rc = SQLITE_OK;

    for (int i = 0; i < REG_BEGIN_TRIES; i++) {
        rc = sqlite3_exec(db->sql, "BEGIN IMMEDIATE", NULL, NULL, NULL);
        if ((rc & 0xff) != SQLITE_BUSY && (rc & 0xff) != SQLITE_LOCKED)
            break;
        /* the busy handler already waited; jitter before the next round */
        struct timespec ts = {0, (long)(1000000 + rand() % 5000000)};
        nanosleep(&ts, NULL);
    }
    if (rc != SQLITE_OK) {
        reg_err(err, "cannot write to '%s': %s (another writer held the lock"
                " too long; retry)", db->path, sqlite3_errmsg(db->sql));
        return -1;
    }
    return 0;
}

int reg_db_commit(struct reg_db *db, char **err)
{
    int rc = SQLITE_OK;

    for (int i = 0; i < REG_BEGIN_TRIES; i++) {
        rc = sqlite3_exec(db->sql, "COMMIT", NULL, NULL, NULL);
        if ((rc & 0xff) != SQLITE_BUSY)
            break;
    }
    if (rc != SQLITE_OK) {
        reg_err(err, "cannot commit to '%s': %s", db->path,
                sqlite3_errmsg(db->sql));
        reg_db_rollback(db);
        return -1;
    }
    return 0;
}

void reg_db_rollback(struct reg_db *db)
{
    if (!sqlite3_get_autocommit(db->sql))
        sqlite3_exec(db->sql, "ROLLBACK", NULL, NULL, NULL);
}

sqlite3_stmt *reg_db_prepare(struct reg_db *db, const char *sql, char **err)
{
    sqlite3_stmt *st = NULL;

    if (sqlite3_prepare_v2(db->sql, sql, -1, &st, NULL) != SQLITE_OK) {
        reg_err(err, "cannot query '%s': %s", db->path, sqlite3_errmsg(db->sql));
        sqlite3_finalize(st);
        return NULL;
    }
    return st;
}

int reg_db_exec(struct reg_db *db, const char *sql, char **err)
{
    char *msg = NULL;

    if (sqlite3_exec(db->sql, sql, NULL, NULL, &msg) != SQLITE_OK) {
        reg_err(err, "cannot update '%s': %s", db->path,
                msg ? msg : sqlite3_errmsg(db->sql));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

int64_t reg_db_prompt_id(struct reg_db *db, const char *name, char **err)
{
    sqlite3_stmt *st;
    int64_t id = -1;
    int rc;

    st = reg_db_prepare(db, "SELECT id FROM prompts WHERE name = ?", err);
    if (st == NULL)
        return -1;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        id = sqlite3_column_int64(st, 0);
    } else if (rc == SQLITE_DONE) {
        id = 0;
        reg_err(err, "unknown prompt '%s'", name);
    } else {
        reg_err(err, "cannot query '%s': %s", db->path, sqlite3_errmsg(db->sql));
    }
    sqlite3_finalize(st);
    return id;
}

char *reg_strdup_col(sqlite3_stmt *st, int col)
{
    const unsigned char *s = sqlite3_column_text(st, col);

    return s ? strdup((const char *)s) : NULL;
}

char *reg_strdup_col0(sqlite3_stmt *st, int col)
{
    const unsigned char *s = sqlite3_column_text(st, col);

    return strdup(s ? (const char *)s : "");
}
