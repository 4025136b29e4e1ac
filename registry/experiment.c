/*
 * experiment.c - experiments: one label's traffic split between versions
 * by weight. Assignment itself (which arm a user gets) is in assign.c.
 *
 * Invariants:
 *  1. At most one running experiment per (prompt, label): a partial unique
 *     index in the schema enforces it; the check here only words the error.
 *  2. Arms are immutable once started, weights are whole percents summing
 *     to 100, versions distinct and existing (foreign key).
 *  3. The hashing key is "<prompt>@<label>" plus the experiment's salt, so
 *     an exported and re-imported experiment assigns users identically.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/rand.h>
#include "registry/internal.h"

#define EXP_COLUMNS \
    "SELECT e.id, p.name, e.label, e.salt, e.status, e.started_at," \
    " e.stopped_at, e.started_by FROM experiments e" \
    " JOIN prompts p ON p.id = e.prompt_id"

void reg_experiment_free(struct reg_experiment *e)
{
    if (e == NULL)
        return;
    free(e->name);
    free(e->prompt);
    free(e->label);
    free(e->salt);
    free(e->started_at);
    free(e->stopped_at);
    free(e->started_by);
    free(e->arms);
    free(e);
}

struct reg_experiment *reg_experiment_from_row(struct reg_db *db,
                                               sqlite3_stmt *st, char **err)
{
    struct reg_experiment *e = calloc(1, sizeof(*e));
    sqlite3_stmt *arms = NULL;
    size_t cap = 0;
    int rc;

    if (e == NULL)
        goto oom;
    e->id = sqlite3_column_int64(st, 0);
    e->prompt = reg_strdup_col0(st, 1);
    e->label = reg_strdup_col0(st, 2);
    e->salt = reg_strdup_col0(st, 3);
    e->running = strcmp((const char *)sqlite3_column_text(st, 4), "running") == 0;
    e->started_at = reg_strdup_col0(st, 5);
    e->stopped_at = reg_strdup_col(st, 6);
    e->started_by = reg_strdup_col0(st, 7);
    if (!e->prompt || !e->label || !e->salt || !e->started_at || !e->started_by
        || asprintf(&e->name, "%s@%s", e->prompt, e->label) < 0) {
        e->name = NULL;
        goto oom;
    }
    arms = reg_db_prepare(db, "SELECT version, weight FROM experiment_arms"
                          " WHERE experiment_id = ? ORDER BY rowid", err);
    if (arms == NULL)
        goto fail;
    sqlite3_bind_int64(arms, 1, e->id);
    while ((rc = sqlite3_step(arms)) == SQLITE_ROW) {
        if (e->n_arms == cap) {
            struct reg_arm *n;
            cap = cap ? cap * 2 : 4;
            n = realloc(e->arms, cap * sizeof(*n));
            if (n == NULL)
                goto oom;
            e->arms = n;
        }
        e->arms[e->n_arms].version = sqlite3_column_int(arms, 0);
        e->arms[e->n_arms].weight = sqlite3_column_int(arms, 1);
        e->n_arms++;
    }
    sqlite3_finalize(arms);
    return e;
oom:
    reg_err(err, "cannot read experiment: out of memory");
fail:
    sqlite3_finalize(arms);
    reg_experiment_free(e);
    return NULL;
}

static int check_arms(const struct reg_arm *arms, size_t n, char **err)
{
    int sum = 0;

    if (n < 2 || n > REG_ARMS_MAX) {
        reg_err(err, "an experiment needs 2 to %d arms, got %zu", REG_ARMS_MAX, n);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        if (arms[i].version < 1) {
            reg_err(err, "invalid arm version %d", arms[i].version);
            return -1;
        }
        if (arms[i].weight < 1 || arms[i].weight > 100) {
            reg_err(err, "invalid weight %d for version %d: want 1..100",
                    arms[i].weight, arms[i].version);
            return -1;
        }
        for (size_t j = 0; j < i; j++)
            if (arms[j].version == arms[i].version) {
                reg_err(err, "version %d is listed in two arms", arms[i].version);
                return -1;
            }
        sum += arms[i].weight;
    }
    if (sum != 100) {
        reg_err(err, "arm weights sum to %d: they must sum to 100", sum);
        return -1;
    }
    return 0;
}

static int random_salt(char out[17])
{
    unsigned char b[8];
    static const char hex[] = "0123456789abcdef";

    if (RAND_bytes(b, sizeof(b)) != 1)
        return -1;
    for (int i = 0; i < 8; i++) {
        out[2 * i] = hex[b[i] >> 4];
        out[2 * i + 1] = hex[b[i] & 15];
    }
    out[16] = '\0';
    return 0;
}

static int step_done(struct reg_db *db, sqlite3_stmt *st, const char *what,
                     char **err)
{
    int rc = sqlite3_step(st);

    if (rc != SQLITE_DONE) {
        reg_err(err, "cannot %s: %s", what, sqlite3_errmsg(db->sql));
        return -1;
    }
    return 0;
}

int reg_experiment_start(struct reg_db *db, const char *name,
                         const char *label, const struct reg_arm *arms,
                         size_t n_arms, const char *salt, const char *actor,
                         int64_t *id_out, char **err)
{
    sqlite3_stmt *st = NULL;
    char rsalt[17];
    int64_t pid, eid;
    int rc;

    if (!reg_name_valid(name)) {
        reg_err(err, "invalid prompt name '%s'", name ? name : "");
        return -1;
    }
    if (label == NULL || (!reg_label_valid(label) && strcmp(label, "latest") != 0)) {
        reg_err(err, "invalid label '%s': want [a-z0-9_-]+", label ? label : "");
        return -1;
    }
    if (check_arms(arms, n_arms, err) < 0)
        return -1;
    if (salt == NULL || *salt == '\0') {
        if (random_salt(rsalt) < 0) {
            reg_err(err, "cannot start experiment: no random salt");
            return -1;
        }
        salt = rsalt;
    } else if (strlen(salt) > REG_SALT_MAX) {
        reg_err(err, "salt is longer than %d bytes", REG_SALT_MAX);
        return -1;
    }
    if (actor && strlen(actor) > REG_AUTHOR_MAX) {
        reg_err(err, "author is longer than %d bytes", REG_AUTHOR_MAX);
        return -1;
    }
    if (reg_db_begin(db, err) < 0)
        return -1;
    if ((pid = reg_db_prompt_id(db, name, err)) <= 0)
        goto fail;
    if (strcmp(label, "latest") != 0) {
        st = reg_db_prepare(db, "SELECT 1 FROM labels WHERE prompt_id = ? AND label = ?", err);
        if (st == NULL)
            goto fail;
        sqlite3_bind_int64(st, 1, pid);
        sqlite3_bind_text(st, 2, label, -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
        sqlite3_finalize(st);
        st = NULL;
        if (rc != SQLITE_ROW) {
            reg_err(err, "prompt '%s' has no label '%s' (set it first: promptctl"
                    " label %s VERSION %s)", name, label, name, label);
            goto fail;
        }
    }
    st = reg_db_prepare(db, "SELECT 1 FROM experiments WHERE prompt_id = ?"
                        " AND label = ? AND status = 'running'", err);
    if (st == NULL)
        goto fail;
    sqlite3_bind_int64(st, 1, pid);
    sqlite3_bind_text(st, 2, label, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    st = NULL;
    if (rc == SQLITE_ROW) {
        reg_err(err, "label '%s' of '%s' already has a running experiment"
                " (stop it first: promptctl experiment stop %s@%s)",
                label, name, name, label);
        goto fail;
    }
    for (size_t i = 0; i < n_arms; i++) {
        st = reg_db_prepare(db, "SELECT 1 FROM versions WHERE prompt_id = ?"
                            " AND version = ?", err);
        if (st == NULL)
            goto fail;
        sqlite3_bind_int64(st, 1, pid);
        sqlite3_bind_int(st, 2, arms[i].version);
        rc = sqlite3_step(st);
        sqlite3_finalize(st);
        st = NULL;
        if (rc != SQLITE_ROW) {
            reg_err(err, "prompt '%s' has no version %d", name, arms[i].version);
            goto fail;
        }
    }
    st = reg_db_prepare(db, "INSERT INTO experiments (prompt_id, label, salt,"
                        " status, started_by) VALUES (?, ?, ?, 'running', ?)", err);
    if (st == NULL)
        goto fail;
    sqlite3_bind_int64(st, 1, pid);
    sqlite3_bind_text(st, 2, label, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, salt, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, actor ? actor : "", -1, SQLITE_STATIC);
    if (step_done(db, st, "start experiment", err) < 0)
        goto fail;
    sqlite3_finalize(st);
    st = NULL;
    eid = sqlite3_last_insert_rowid(db->sql);
    for (size_t i = 0; i < n_arms; i++) {
        st = reg_db_prepare(db, "INSERT INTO experiment_arms (experiment_id,"
                            " prompt_id, version, weight) VALUES (?, ?, ?, ?)", err);
        if (st == NULL)
            goto fail;
        sqlite3_bind_int64(st, 1, eid);
        sqlite3_bind_int64(st, 2, pid);
        sqlite3_bind_int(st, 3, arms[i].version);
        sqlite3_bind_int(st, 4, arms[i].weight);
        if (step_done(db, st, "add experiment arm", err) < 0)
            goto fail;
        sqlite3_finalize(st);
        st = NULL;
    }
    if (reg_db_commit(db, err) < 0)
        return -1;
    if (id_out)
        *id_out = eid;
    return 0;
fail:
    sqlite3_finalize(st);
    reg_db_rollback(db);
    return -1;
}

int reg_experiment_stop(struct reg_db *db, const char *name, const char *label,
                        char **err)
{
    sqlite3_stmt *st = NULL;
    int64_t pid;
    int n = 0;

    if (reg_db_begin(db, err) < 0)
        return -1;
    if ((pid = reg_db_prompt_id(db, name, err)) <= 0)
        goto fail;
    st = reg_db_prepare(db, "SELECT count(*) FROM experiments WHERE prompt_id = ?"
                        " AND status = 'running' AND (?2 IS NULL OR label = ?2)", err);
    if (st == NULL)
        goto fail;
    sqlite3_bind_int64(st, 1, pid);
    if (label && *label)
        sqlite3_bind_text(st, 2, label, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    st = NULL;
    if (n == 0) {
        if (label && *label)
            reg_err(err, "no running experiment on '%s@%s'", name, label);
        else
            reg_err(err, "no running experiment on '%s'", name);
        goto fail;
    }
    if (n > 1) {
        reg_err(err, "'%s' has %d running experiments: name the label"
                " (promptctl experiment stop %s@LABEL)", name, n, name);
        goto fail;
    }
    st = reg_db_prepare(db, "UPDATE experiments SET status = 'stopped',"
                        " stopped_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"
                        " WHERE prompt_id = ? AND status = 'running'"
                        " AND (?2 IS NULL OR label = ?2)", err);
    if (st == NULL)
        goto fail;
    sqlite3_bind_int64(st, 1, pid);
    if (label && *label)
        sqlite3_bind_text(st, 2, label, -1, SQLITE_STATIC);
    if (step_done(db, st, "stop experiment", err) < 0)
        goto fail;
    sqlite3_finalize(st);
    return reg_db_commit(db, err);
fail:
    sqlite3_finalize(st);
    reg_db_rollback(db);
    return -1;
}

void reg_experiment_list_free(struct reg_experiment **list, size_t n)
{
    if (list == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        reg_experiment_free(list[i]);
    free(list);
}

int reg_experiment_list(struct reg_db *db, const char *prompt, int running_only,
                        struct reg_experiment ***out, size_t *n, char **err)
{
    sqlite3_stmt *st;
    struct reg_experiment **list = NULL;
    size_t len = 0, cap = 0;
    int rc;

    *out = NULL;
    *n = 0;
    st = reg_db_prepare(db, EXP_COLUMNS " WHERE (?1 IS NULL OR p.name = ?1)"
                        " AND (?2 = 0 OR e.status = 'running')"
                        " ORDER BY e.id DESC", err);
    if (st == NULL)
        return -1;
    if (prompt)
        sqlite3_bind_text(st, 1, prompt, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, running_only);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct reg_experiment *e;
        if (len == cap) {
            struct reg_experiment **nl;
            cap = cap ? cap * 2 : 8;
            nl = realloc(list, cap * sizeof(*nl));
            if (nl == NULL) {
                reg_err(err, "cannot list experiments: out of memory");
                goto fail;
            }
            list = nl;
        }
        if ((e = reg_experiment_from_row(db, st, err)) == NULL)
            goto fail;
        list[len++] = e;
    }
    if (rc != SQLITE_DONE) {
        reg_err(err, "cannot list experiments: %s", sqlite3_errmsg(db->sql));
        goto fail;
    }
    sqlite3_finalize(st);
    *out = list;
    *n = len;
    return 0;
fail:
    sqlite3_finalize(st);
    reg_experiment_list_free(list, len);
    return -1;
}

struct reg_experiment *reg_experiment_weights(struct reg_db *db,
                                              const char *name,
                                              const char *label, char **err)
{
    sqlite3_stmt *st;
    struct reg_experiment *e = NULL;
    int rc;

    st = reg_db_prepare(db, EXP_COLUMNS " WHERE p.name = ?1"
                        " AND (?2 IS NULL OR e.label = ?2)"
                        " ORDER BY e.status = 'running' DESC, e.id DESC LIMIT 1", err);
    if (st == NULL)
        return NULL;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    if (label && *label)
        sqlite3_bind_text(st, 2, label, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        e = reg_experiment_from_row(db, st, err);
    else if (rc == SQLITE_DONE && label && *label)
        reg_err(err, "'%s@%s' never had an experiment", name, label);
    else if (rc == SQLITE_DONE)
        reg_err(err, "'%s' never had an experiment", name);
    else
        reg_err(err, "cannot read experiments: %s", sqlite3_errmsg(db->sql));
    sqlite3_finalize(st);
    return e;
}
