/*
 * label.c - labels (production, staging, ...) that point at versions, and
 * their history.
 *
 * Design: every move is a row of label_history. Rollback treats the
 * non-rollback moves of a label as a stack: it takes the newest move not yet
 * undone, points the label back at that move's "from" version, marks the
 * move undone and records the rollback itself as a row. So a second
 * rollback goes one step further back instead of flipping between two
 * versions, and `log` shows every change with who, when and from what.
 *
 * Invariants:
 *  1. labels(prompt, label) and the newest history row of that label agree:
 *     both change in the same transaction.
 *  2. "latest" is not stored: it always means the newest version.
 */
#include <stdlib.h>
#include <string.h>
#include "registry/internal.h"

static int check_label(const char *label, char **err)
{
    if (label && strcmp(label, "latest") == 0) {
        reg_err(err, "label 'latest' is built in: it always means the newest"
                " version");
        return -1;
    }
    if (!reg_label_valid(label)) {
        reg_err(err, "invalid label '%s': want [a-z0-9_-]+, at most %d bytes",
                label ? label : "", REG_LABEL_MAX);
        return -1;
    }
    return 0;
}

/* current version of a label: >0, 0 when unset, -1 on error */
int reg_label_current(struct reg_db *db, int64_t pid, const char *label,
                      char **err)
{
    sqlite3_stmt *st = reg_db_prepare(db, "SELECT version FROM labels"
                                      " WHERE prompt_id = ? AND label = ?", err);
    int v = 0, rc;

    if (st == NULL)
        return -1;
    sqlite3_bind_int64(st, 1, pid);
    sqlite3_bind_text(st, 2, label, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        v = sqlite3_column_int(st, 0);
    else if (rc != SQLITE_DONE) {
        reg_err(err, "cannot read labels: %s", sqlite3_errmsg(db->sql));
        v = -1;
    }
    sqlite3_finalize(st);
    return v;
}

int reg_label_point(struct reg_db *db, int64_t pid, const char *label, int to,
                    const char *actor, char **err)
{
    sqlite3_stmt *st;
    int rc;

    st = reg_db_prepare(db, "INSERT INTO labels (prompt_id, label, version, updated_by)"
                        " VALUES (?1, ?2, ?3, ?4) ON CONFLICT (prompt_id, label)"
                        " DO UPDATE SET version = ?3, updated_by = ?4,"
                        " updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')", err);
    if (st == NULL)
        return -1;
    sqlite3_bind_int64(st, 1, pid);
    sqlite3_bind_text(st, 2, label, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 3, to);
    sqlite3_bind_text(st, 4, actor ? actor : "", -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        reg_err(err, "cannot move label '%s': %s", label, sqlite3_errmsg(db->sql));
        return -1;
    }
    return 0;
}

/* point the label and record the move (inside the caller's transaction) */
int reg_label_move(struct reg_db *db, int64_t pid, const char *label, int from,
                int to, const char *action, const char *actor, char **err)
{
    sqlite3_stmt *st;
    int rc;

    if (reg_label_point(db, pid, label, to, actor, err) < 0)
        return -1;
    st = reg_db_prepare(db, "INSERT INTO label_history (prompt_id, label,"
                        " from_version, to_version, action, actor)"
                        " VALUES (?, ?, ?, ?, ?, ?)", err);
    if (st == NULL)
        return -1;
    sqlite3_bind_int64(st, 1, pid);
    sqlite3_bind_text(st, 2, label, -1, SQLITE_STATIC);
    if (from > 0)
        sqlite3_bind_int(st, 3, from);
    sqlite3_bind_int(st, 4, to);
    sqlite3_bind_text(st, 5, action, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 6, actor ? actor : "", -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        reg_err(err, "cannot record label move: %s", sqlite3_errmsg(db->sql));
        return -1;
    }
    return 0;
}

int reg_label_set(struct reg_db *db, const char *name, int version,
                  const char *label, const char *actor, char **err)
{
    sqlite3_stmt *st;
    int64_t pid;
    int cur, rc;

    if (check_label(label, err) < 0)
        return -1;
    if (actor && strlen(actor) > REG_AUTHOR_MAX) {
        reg_err(err, "author is longer than %d bytes", REG_AUTHOR_MAX);
        return -1;
    }
    if (reg_db_begin(db, err) < 0)
        return -1;
    if ((pid = reg_db_prompt_id(db, name, err)) <= 0)
        goto fail;
    st = reg_db_prepare(db, "SELECT 1 FROM versions WHERE prompt_id = ? AND version = ?", err);
    if (st == NULL)
        goto fail;
    sqlite3_bind_int64(st, 1, pid);
    sqlite3_bind_int(st, 2, version);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW) {
        reg_err(err, "prompt '%s' has no version %d", name, version);
        goto fail;
    }
    if ((cur = reg_label_current(db, pid, label, err)) < 0)
        goto fail;
    if (cur == version)   /* already there: no move to record */
        return reg_db_commit(db, err);
    if (reg_label_move(db, pid, label, cur, version, "set", actor, err) < 0)
        goto fail;
    return reg_db_commit(db, err);
fail:
    reg_db_rollback(db);
    return -1;
}

int reg_label_rollback(struct reg_db *db, const char *name, const char *label,
                       const char *actor, int *from, int *to, char **err)
{
    sqlite3_stmt *st;
    int64_t pid, hid = 0;
    int cur, prev = 0, rc;

    if (check_label(label, err) < 0)
        return -1;
    if (actor && strlen(actor) > REG_AUTHOR_MAX) {
        reg_err(err, "author is longer than %d bytes", REG_AUTHOR_MAX);
        return -1;
    }
    if (reg_db_begin(db, err) < 0)
        return -1;
    if ((pid = reg_db_prompt_id(db, name, err)) <= 0)
        goto fail;
    if ((cur = reg_label_current(db, pid, label, err)) < 0)
        goto fail;
    if (cur == 0) {
        reg_err(err, "prompt '%s' has no label '%s'", name, label);
        goto fail;
    }
    st = reg_db_prepare(db, "SELECT id, from_version FROM label_history"
                        " WHERE prompt_id = ? AND label = ? AND action <> 'rollback'"
                        " AND undone = 0 ORDER BY id DESC LIMIT 1", err);
    if (st == NULL)
        goto fail;
    sqlite3_bind_int64(st, 1, pid);
    sqlite3_bind_text(st, 2, label, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        hid = sqlite3_column_int64(st, 0);
        prev = sqlite3_column_int(st, 1);   /* NULL -> 0 */
    }
    sqlite3_finalize(st);
    if (hid == 0 || prev == 0) {
        reg_err(err, "label '%s' of '%s' has no earlier version to roll back"
                " to (it points at version %d since it was first set)",
                label, name, cur);
        goto fail;
    }
    st = reg_db_prepare(db, "UPDATE label_history SET undone = 1 WHERE id = ?", err);
    if (st == NULL)
        goto fail;
    sqlite3_bind_int64(st, 1, hid);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        reg_err(err, "cannot roll back: %s", sqlite3_errmsg(db->sql));
        goto fail;
    }
    if (reg_label_move(db, pid, label, cur, prev, "rollback", actor, err) < 0)
        goto fail;
    if (reg_db_commit(db, err) < 0)
        return -1;
    if (from)
        *from = cur;
    if (to)
        *to = prev;
    return 0;
fail:
    reg_db_rollback(db);
    return -1;
}

json_t *reg_label_log(struct reg_db *db, const char *name, char **err)
{
    sqlite3_stmt *st;
    json_t *out;
    int64_t pid;
    int rc;

    if ((pid = reg_db_prompt_id(db, name, err)) <= 0)
        return NULL;
    st = reg_db_prepare(db, "SELECT label, from_version, to_version, action,"
                        " actor, at FROM label_history WHERE prompt_id = ?"
                        " ORDER BY id", err);
    if (st == NULL)
        return NULL;
    sqlite3_bind_int64(st, 1, pid);
    out = json_array();
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        json_t *from = sqlite3_column_type(st, 1) == SQLITE_NULL
            ? json_null() : json_integer(sqlite3_column_int(st, 1));
        json_array_append_new(out, json_pack("{ss so si ss ss ss}",
            "label", (const char *)sqlite3_column_text(st, 0),
            "from", from,
            "to", sqlite3_column_int(st, 2),
            "action", (const char *)sqlite3_column_text(st, 3),
            "actor", (const char *)sqlite3_column_text(st, 4),
            "at", (const char *)sqlite3_column_text(st, 5)));
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        reg_err(err, "cannot read label history: %s", sqlite3_errmsg(db->sql));
        json_decref(out);
        return NULL;
    }
    return out;
}
