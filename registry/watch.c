/*
 * watch.c - tells the gateway when the registry changed, so it reloads its
 * snapshot within a poll interval of a `promptctl label` (issue 7).
 *
 * Design: a read-only connection kept open for `PRAGMA data_version`, which
 * changes whenever another connection (any process) commits. A file that
 * was replaced (restore from backup, mv of a new file) keeps the old inode
 * open, so the path's device/inode are compared too and the connection is
 * reopened on a change. Cheap enough to call from a timer every few hundred
 * milliseconds: one pragma, one stat().
 *
 * Invariant: the first call after reg_watch_new reports "changed", so a
 * caller can load its first snapshot from the same loop.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "registry/internal.h"

struct reg_watch {
    char *path;              /* owned */
    sqlite3 *sql;            /* owned; NULL while the file is missing */
    sqlite3_stmt *dv, *stamp; /* owned: prepared once per connection (the
                                stamp's six subqueries cost more to compile
                                than to run) */
    int64_t data_version;    /* last seen, -1 before the first call */
    dev_t dev;
    ino_t ino;
};

static void watch_close(struct reg_watch *w)
{
    sqlite3_finalize(w->dv);
    sqlite3_finalize(w->stamp);
    w->dv = w->stamp = NULL;
    sqlite3_close(w->sql);
    w->sql = NULL;
}

/* *slot, prepared from sql on first use; NULL on failure */
static sqlite3_stmt *watch_stmt(struct reg_watch *w, sqlite3_stmt **slot,
                                const char *sql)
{
    if (*slot == NULL &&
        sqlite3_prepare_v3(w->sql, sql, -1, SQLITE_PREPARE_PERSISTENT, slot,
                           NULL) != SQLITE_OK) {
        sqlite3_finalize(*slot);
        *slot = NULL;
    }
    return *slot;
}

static int watch_open(struct reg_watch *w, char **err)
{
    struct stat st;

    if (stat(w->path, &st) != 0) {
        reg_err(err, "cannot open '%s': %s", w->path,
                reg_strerror(errno));
        return -1;
    }
    if (sqlite3_open_v2(w->path, &w->sql, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK
        || reg_db_configure(w->sql, w->path, 1, err) < 0) {
        if (err && *err == NULL)
            reg_err(err, "cannot open '%s': %s", w->path, sqlite3_errmsg(w->sql));
        watch_close(w);
        return -1;
    }
    w->dev = st.st_dev;
    w->ino = st.st_ino;
    return 0;
}

struct reg_watch *reg_watch_new(const char *path, char **err)
{
    struct reg_watch *w;

    if (path == NULL || *path == '\0') {
        reg_err(err, "cannot watch registry: empty database path");
        return NULL;
    }
    if ((w = calloc(1, sizeof(*w))) == NULL || (w->path = strdup(path)) == NULL) {
        reg_err(err, "cannot watch '%s': out of memory", path);
        free(w);
        return NULL;
    }
    w->data_version = -1;
    return w;
}

void reg_watch_free(struct reg_watch *w)
{
    if (w == NULL)
        return;
    watch_close(w);
    free(w->path);
    free(w);
}

int reg_watch_changed(struct reg_watch *w, char **err)
{
    sqlite3_stmt *st;
    struct stat sb;
    int64_t dv;
    int rc, reopened = 0;

    if (w->sql && (stat(w->path, &sb) != 0 || sb.st_dev != w->dev
                   || sb.st_ino != w->ino))
        watch_close(w);   /* replaced or removed: look again */
    if (w->sql == NULL) {
        if (watch_open(w, err) < 0)
            return -1;
        reopened = 1;
    }
    st = watch_stmt(w, &w->dv, "PRAGMA data_version");
    rc = st ? sqlite3_step(st) : SQLITE_ERROR;
    if (rc != SQLITE_ROW) {
        reg_err(err, "cannot watch '%s': %s", w->path, sqlite3_errmsg(w->sql));
        watch_close(w);
        return -1;
    }
    dv = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    if (reopened || dv != w->data_version) {
        w->data_version = dv;
        return 1;
    }
    return 0;
}

/*
 * The serving content's stamp (issue 7): counts and high-water marks of the
 * tables a snapshot reads. The gateway's own exposure writes change
 * data_version too; comparing stamps tells a registry change (publish,
 * label move, experiment start/stop, import) from log traffic, so those
 * writes never cause a snapshot reload.
 */
int reg_watch_stamp(struct reg_watch *w, char *out, size_t outlen, char **err)
{
    static const char q[] =
        "SELECT (SELECT count(*) FROM prompts) || ':' ||"
        " (SELECT count(*) FROM versions) || ':' ||"
        " (SELECT count(*) FROM labels) || ':' ||"
        " (SELECT coalesce(max(id), 0) FROM label_history) || ':' ||"
        " (SELECT coalesce(max(id), 0) FROM experiments) || ':' ||"
        " (SELECT count(*) || '/' || coalesce(sum(id), 0) FROM experiments"
        "  WHERE status = 'running')";
    sqlite3_stmt *st;
    int rc;

    if (w->sql == NULL && watch_open(w, err) < 0)
        return -1;
    st = watch_stmt(w, &w->stamp, q);
    rc = st ? sqlite3_step(st) : SQLITE_ERROR;
    if (rc != SQLITE_ROW) {
        reg_err(err, "cannot read '%s': %s", w->path, sqlite3_errmsg(w->sql));
        if (st)
            sqlite3_reset(st);
        return -1;
    }
    snprintf(out, outlen, "%s", (const char *)sqlite3_column_text(st, 0));
    sqlite3_reset(st); /* ends the read transaction */
    return 0;
}
