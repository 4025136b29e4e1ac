/*
 * export.c - the whole registry as one JSON document, and importing it
 * back (backups, moving a registry, reviewing prompts in git).
 *
 * Document: {"format": "promptgate-registry", "format_version": 1,
 *   "schema_version": N, "prompts": [{"name", "description", "created_at",
 *   "versions": [{"version", "messages", "params", "variables", "hash",
 *   "message", "author", "created_at"}], "labels": {"production": 3},
 *   "label_history": [{"label", "from", "to", "action", "undone", "actor",
 *   "at"}], "experiments": [{"label", "salt", "status", "started_at",
 *   "stopped_at", "started_by", "arms": [{"version", "weight"}]}]}]}
 *
 * Import runs in one transaction and is idempotent: a version already
 * present with the same content is skipped, one with other content is a
 * conflict that aborts everything; labels are moved only when they differ
 * (recorded as action "import"); an experiment is identified by (label,
 * salt, started_at). The label history of a prompt that the import creates
 * is copied verbatim, so rollback works the same after a restore.
 * Imported content goes through the same checks as publish; hashes are
 * recomputed, never trusted from the document.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "registry/internal.h"

#define FORMAT "promptgate-registry"

static json_t *export_history(struct reg_db *db, const char *name, char **err)
{
    sqlite3_stmt *st;
    json_t *out = json_array();
    int rc;

    st = reg_db_prepare(db, "SELECT h.label, h.from_version, h.to_version, h.action,"
                        " h.undone, h.actor, h.at FROM label_history h JOIN prompts p"
                        " ON p.id = h.prompt_id WHERE p.name = ? ORDER BY h.id", err);
    if (st == NULL) {
        json_decref(out);
        return NULL;
    }
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        json_array_append_new(out, json_pack("{ss so si ss sb ss ss}",
            "label", (const char *)sqlite3_column_text(st, 0),
            "from", sqlite3_column_type(st, 1) == SQLITE_NULL ? json_null()
                    : json_integer(sqlite3_column_int(st, 1)),
            "to", sqlite3_column_int(st, 2),
            "action", (const char *)sqlite3_column_text(st, 3),
            "undone", sqlite3_column_int(st, 4),
            "actor", (const char *)sqlite3_column_text(st, 5),
            "at", (const char *)sqlite3_column_text(st, 6)));
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        reg_err(err, "cannot export label history: %s", sqlite3_errmsg(db->sql));
        json_decref(out);
        return NULL;
    }
    return out;
}

static json_t *export_prompt(struct reg_db *db, const struct reg_prompt_info *p,
                             char **err)
{
    struct reg_version **vs = NULL;
    struct reg_experiment **es = NULL;
    size_t nv = 0, ne = 0;
    json_t *versions = json_array(), *exps = json_array(), *hist, *out = NULL;

    if (reg_versions_list(db, p->name, &vs, &nv, err) < 0)
        goto done;
    for (size_t i = 0; i < nv; i++)
        json_array_append_new(versions, json_pack("{si so sO sO ss ss ss ss}",
            "version", vs[i]->version, "messages", reg_version_messages(vs[i]),
            "params", vs[i]->params, "variables", vs[i]->variables,
            "hash", vs[i]->hash, "message", vs[i]->message,
            "author", vs[i]->author, "created_at", vs[i]->created_at));
    if (reg_experiment_list(db, p->name, 0, &es, &ne, err) < 0)
        goto done;
    for (size_t i = ne; i-- > 0;) {   /* oldest first */
        json_t *arms = json_array();
        for (size_t a = 0; a < es[i]->n_arms; a++)
            json_array_append_new(arms, json_pack("{sisi}",
                "version", es[i]->arms[a].version, "weight", es[i]->arms[a].weight));
        json_array_append_new(exps, json_pack("{ss ss ss ss so ss so}",
            "label", es[i]->label, "salt", es[i]->salt,
            "status", es[i]->running ? "running" : "stopped",
            "started_at", es[i]->started_at,
            "stopped_at", es[i]->stopped_at ? json_string(es[i]->stopped_at) : json_null(),
            "started_by", es[i]->started_by, "arms", arms));
    }
    if ((hist = export_history(db, p->name, err)) == NULL)
        goto done;
    out = json_pack("{ss ss ss sO sO so sO}", "name", p->name,
                    "description", p->description, "created_at", p->created_at,
                    "versions", versions, "labels", p->labels,
                    "label_history", hist, "experiments", exps);
done:
    json_decref(versions);
    json_decref(exps);
    reg_versions_list_free(vs, nv);
    reg_experiment_list_free(es, ne);
    return out;
}

json_t *reg_export(struct reg_db *db, char **err)
{
    struct reg_prompt_info *ps = NULL;
    size_t n = 0;
    json_t *prompts, *doc;

    /* a read transaction: one consistent point in time */
    if (reg_db_exec(db, "BEGIN", err) < 0)
        return NULL;
    if (reg_prompt_list(db, &ps, &n, err) < 0) {
        reg_db_rollback(db);
        return NULL;
    }
    prompts = json_array();
    for (size_t i = 0; i < n; i++) {
        json_t *p = export_prompt(db, &ps[i], err);
        if (p == NULL) {
            json_decref(prompts);
            reg_prompt_list_free(ps, n);
            reg_db_rollback(db);
            return NULL;
        }
        json_array_append_new(prompts, p);
    }
    reg_prompt_list_free(ps, n);
    reg_db_rollback(db);
    doc = json_pack("{ss si si so}", "format", FORMAT, "format_version", 1,
                    "schema_version", reg_migrate_latest(), "prompts", prompts);
    return doc;
}

/* ---- import ---------------------------------------------------------- */

static const char *str_or(const json_t *o, const char *key, const char *dflt)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : dflt;
}

static int64_t import_prompt_row(struct reg_db *db, const json_t *jp,
                                 const char *name, int *fresh, char **err)
{
    sqlite3_stmt *st;
    const char *desc = str_or(jp, "description", "");
    const char *created = str_or(jp, "created_at", NULL);
    int64_t pid = reg_db_prompt_id(db, name, NULL);

    *fresh = 0;
    if (pid != 0)
        return pid;
    if (reg_text_check("description", desc, REG_DESC_MAX, err) < 0)
        return -1;
    st = reg_db_prepare(db, "INSERT INTO prompts (name, description, created_at)"
                        " VALUES (?, ?, coalesce(?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')))", err);
    if (st == NULL)
        return -1;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, desc, -1, SQLITE_STATIC);
    if (created)
        sqlite3_bind_text(st, 3, created, -1, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_DONE) {
        reg_err(err, "cannot import prompt '%s': %s", name, sqlite3_errmsg(db->sql));
        sqlite3_finalize(st);
        return -1;
    }
    sqlite3_finalize(st);
    *fresh = 1;
    return sqlite3_last_insert_rowid(db->sql);
}

static int import_version(struct reg_db *db, int64_t pid, const char *name,
                          const json_t *jv, int *added, char **err)
{
    sqlite3_stmt *st = NULL;
    const json_t *messages = json_object_get(jv, "messages");
    json_t *params = json_object_get(jv, "params"), *vars = NULL;
    json_int_t n = json_integer_value(json_object_get(jv, "version"));
    const char *msg = str_or(jv, "message", ""), *author = str_or(jv, "author", "");
    const char *created = str_or(jv, "created_at", NULL);
    char *hash = NULL, *jm = NULL, *jp = NULL, *jvars = NULL;
    int latest = 0, rc, ret = -1;

    *added = 0;
    if (params == NULL)
        params = json_object();
    else
        json_incref(params);
    if (n < 1 || n > 1000000000) {
        reg_err(err, "import: '%s' has a version without a valid \"version\" number", name);
        goto out;
    }
    if (reg_content_check(messages, params, err) < 0
        || reg_text_check("message", msg, REG_MESSAGE_MAX, err) < 0
        || reg_text_check("author", author, REG_AUTHOR_MAX, err) < 0) {
        char *inner = err ? *err : NULL;
        if (err) {
            *err = NULL;
            reg_err(err, "import: '%s' version %d: %s", name, (int)n, inner ? inner : "invalid");
        }
        free(inner);
        goto out;
    }
    hash = reg_content_hash(messages, params);
    vars = reg_template_variables(messages, err);
    if (hash == NULL || vars == NULL)
        goto out;
    st = reg_db_prepare(db, "SELECT (SELECT hash FROM versions WHERE prompt_id = ?1"
                        " AND version = ?2), (SELECT coalesce(max(version), 0)"
                        " FROM versions WHERE prompt_id = ?1)", err);
    if (st == NULL)
        goto out;
    sqlite3_bind_int64(st, 1, pid);
    sqlite3_bind_int(st, 2, (int)n);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL) {
        int same = strcmp((const char *)sqlite3_column_text(st, 0), hash) == 0;
        sqlite3_finalize(st);
        st = NULL;
        if (!same) {
            reg_err(err, "import conflict: '%s' version %d exists with other"
                    " content (versions are immutable; nothing was imported)",
                    name, (int)n);
            goto out;
        }
        ret = 0;
        goto out;
    }
    latest = sqlite3_column_int(st, 1);
    sqlite3_finalize(st);
    st = NULL;
    if (n != latest + 1) {
        reg_err(err, "import: '%s' version %d cannot follow version %d"
                " (versions are numbered without gaps)", name, (int)n, latest);
        goto out;
    }
    jm = json_dumps(messages, JSON_COMPACT);
    jp = json_dumps(params, JSON_COMPACT);
    jvars = json_dumps(vars, JSON_COMPACT);
    st = reg_db_prepare(db, "INSERT INTO versions (prompt_id, version, messages,"
                        " params, variables, hash, message, author, created_at)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?,"
                        " coalesce(?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')))", err);
    if (st == NULL || !jm || !jp || !jvars)
        goto out;
    sqlite3_bind_int64(st, 1, pid);
    sqlite3_bind_int(st, 2, (int)n);
    sqlite3_bind_text(st, 3, jm, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, jp, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, jvars, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 6, hash, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 7, msg, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 8, author, -1, SQLITE_STATIC);
    if (created)
        sqlite3_bind_text(st, 9, created, -1, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_DONE) {
        reg_err(err, "import: cannot add '%s' version %d: %s", name, (int)n,
                sqlite3_errmsg(db->sql));
        goto out;
    }
    *added = 1;
    ret = 0;
out:
    sqlite3_finalize(st);
    json_decref(params);
    json_decref(vars);
    free(hash);
    free(jm);
    free(jp);
    free(jvars);
    return ret;
}

static int import_history(struct reg_db *db, int64_t pid, const char *name,
                          const json_t *hist, char **err)
{
    size_t i;
    const json_t *h;

    json_array_foreach(hist, i, h) {
        sqlite3_stmt *st;
        const char *label = str_or(h, "label", ""), *action = str_or(h, "action", "set");
        json_int_t from = json_integer_value(json_object_get(h, "from"));
        int rc;

        if (!reg_label_valid(label) || (strcmp(action, "set") != 0
            && strcmp(action, "rollback") != 0 && strcmp(action, "import") != 0)) {
            reg_err(err, "import: '%s' label_history[%zu] is invalid", name, i);
            return -1;
        }
        st = reg_db_prepare(db, "INSERT INTO label_history (prompt_id, label,"
                            " from_version, to_version, action, undone, actor, at)"
                            " VALUES (?, ?, ?, ?, ?, ?, ?,"
                            " coalesce(?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')))", err);
        if (st == NULL)
            return -1;
        sqlite3_bind_int64(st, 1, pid);
        sqlite3_bind_text(st, 2, label, -1, SQLITE_STATIC);
        if (from > 0)
            sqlite3_bind_int64(st, 3, from);
        sqlite3_bind_int64(st, 4, json_integer_value(json_object_get(h, "to")));
        sqlite3_bind_text(st, 5, action, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 6, json_is_true(json_object_get(h, "undone")));
        sqlite3_bind_text(st, 7, str_or(h, "actor", ""), -1, SQLITE_STATIC);
        if (str_or(h, "at", NULL))
            sqlite3_bind_text(st, 8, str_or(h, "at", NULL), -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
        sqlite3_finalize(st);
        if (rc != SQLITE_DONE) {
            reg_err(err, "import: '%s' label history: %s", name, sqlite3_errmsg(db->sql));
            return -1;
        }
    }
    return 0;
}

static int import_labels(struct reg_db *db, int64_t pid, const char *name,
                         const json_t *labels, int fresh, const char *actor,
                         int *moved, char **err)
{
    const char *label;
    const json_t *jv;

    json_object_foreach((json_t *)labels, label, jv) {
        int to = (int)json_integer_value(jv), cur;

        if (!reg_label_valid(label) || strcmp(label, "latest") == 0 || to < 1) {
            reg_err(err, "import: '%s' has an invalid label '%s'", name, label);
            return -1;
        }
        if ((cur = reg_label_current(db, pid, label, err)) < 0)
            return -1;
        if (cur == to)
            continue;
        /* a fresh prompt's history came verbatim: only point the label */
        if ((fresh ? reg_label_point(db, pid, label, to, actor, err)
                   : reg_label_move(db, pid, label, cur, to, "import", actor,
                                    err)) < 0)
            return -1;
        (*moved)++;
    }
    return 0;
}

static int import_experiment(struct reg_db *db, int64_t pid, const char *name,
                             const json_t *je, int *added, char **err)
{
    sqlite3_stmt *st;
    const char *label = str_or(je, "label", ""), *salt = str_or(je, "salt", "");
    const char *status = str_or(je, "status", "");
    const char *started = str_or(je, "started_at", "");
    const json_t *arms = json_object_get(je, "arms"), *ja;
    int64_t eid;
    size_t i;
    int rc, sum = 0;

    *added = 0;
    if ((!reg_label_valid(label)) || !*salt || strlen(salt) > REG_SALT_MAX
        || (strcmp(status, "running") != 0 && strcmp(status, "stopped") != 0)
        || !*started || !json_is_array(arms) || json_array_size(arms) < 2
        || json_array_size(arms) > REG_ARMS_MAX) {
        reg_err(err, "import: '%s' has an invalid experiment on '%s'", name, label);
        return -1;
    }
    json_array_foreach(arms, i, ja)
        sum += (int)json_integer_value(json_object_get(ja, "weight"));
    if (sum != 100) {
        reg_err(err, "import: '%s' experiment on '%s': weights sum to %d, not 100",
                name, label, sum);
        return -1;
    }
    st = reg_db_prepare(db, "SELECT 1 FROM experiments WHERE prompt_id = ? AND"
                        " label = ? AND salt = ? AND started_at = ?", err);
    if (st == NULL)
        return -1;
    sqlite3_bind_int64(st, 1, pid);
    sqlite3_bind_text(st, 2, label, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, salt, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, started, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc == SQLITE_ROW)
        return 0;
    st = reg_db_prepare(db, "INSERT INTO experiments (prompt_id, label, salt, status,"
                        " started_at, stopped_at, started_by) VALUES (?, ?, ?, ?, ?, ?, ?)", err);
    if (st == NULL)
        return -1;
    sqlite3_bind_int64(st, 1, pid);
    sqlite3_bind_text(st, 2, label, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, salt, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, status, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, started, -1, SQLITE_STATIC);
    if (str_or(je, "stopped_at", NULL))
        sqlite3_bind_text(st, 6, str_or(je, "stopped_at", NULL), -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 7, str_or(je, "started_by", ""), -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        if ((rc & 0xff) == SQLITE_CONSTRAINT)
            reg_err(err, "import conflict: '%s@%s' already has a running"
                    " experiment (nothing was imported)", name, label);
        else
            reg_err(err, "import: '%s' experiment: %s", name, sqlite3_errmsg(db->sql));
        return -1;
    }
    eid = sqlite3_last_insert_rowid(db->sql);
    json_array_foreach(arms, i, ja) {
        st = reg_db_prepare(db, "INSERT INTO experiment_arms (experiment_id,"
                            " prompt_id, version, weight) VALUES (?, ?, ?, ?)", err);
        if (st == NULL)
            return -1;
        sqlite3_bind_int64(st, 1, eid);
        sqlite3_bind_int64(st, 2, pid);
        sqlite3_bind_int64(st, 3, json_integer_value(json_object_get(ja, "version")));
        sqlite3_bind_int64(st, 4, json_integer_value(json_object_get(ja, "weight")));
        rc = sqlite3_step(st);
        sqlite3_finalize(st);
        if (rc != SQLITE_DONE) {
            reg_err(err, "import: '%s' experiment arm: %s", name, sqlite3_errmsg(db->sql));
            return -1;
        }
    }
    *added = 1;
    return 0;
}

int reg_import(struct reg_db *db, const json_t *doc, const char *actor,
               struct reg_import_counts *counts, char **err)
{
    struct reg_import_counts c = {0, 0, 0, 0};
    const json_t *prompts = json_object_get(doc, "prompts"), *jp;
    size_t i;

    if (!json_is_object(doc) || strcmp(str_or(doc, "format", ""), FORMAT) != 0) {
        reg_err(err, "import: not a registry export (want \"format\": \"%s\")", FORMAT);
        return -1;
    }
    if (json_integer_value(json_object_get(doc, "format_version")) != 1) {
        reg_err(err, "import: unsupported format_version (this binary reads 1)");
        return -1;
    }
    if (!json_is_array(prompts)) {
        reg_err(err, "import: \"prompts\" must be an array");
        return -1;
    }
    if (reg_db_begin(db, err) < 0)
        return -1;
    json_array_foreach(prompts, i, jp) {
        const char *name = str_or(jp, "name", "");
        const json_t *vs = json_object_get(jp, "versions"), *x;
        const json_t *labels = json_object_get(jp, "labels");
        const json_t *hist = json_object_get(jp, "label_history");
        const json_t *exps = json_object_get(jp, "experiments");
        int fresh, added;
        int64_t pid;
        size_t k;

        if (!reg_name_valid(name)) {
            reg_err(err, "import: prompts[%zu]: invalid name '%s'", i, name);
            goto fail;
        }
        if ((pid = import_prompt_row(db, jp, name, &fresh, err)) <= 0)
            goto fail;
        c.prompts += fresh;
        json_array_foreach(vs, k, x) {
            if (import_version(db, pid, name, x, &added, err) < 0)
                goto fail;
            c.versions += added;
        }
        if (fresh && json_is_array(hist) && import_history(db, pid, name, hist, err) < 0)
            goto fail;
        if (json_is_object(labels)
            && import_labels(db, pid, name, labels, fresh, actor, &c.labels, err) < 0)
            goto fail;
        json_array_foreach(exps, k, x) {
            if (import_experiment(db, pid, name, x, &added, err) < 0)
                goto fail;
            c.experiments += added;
        }
    }
    if (reg_db_commit(db, err) < 0)
        return -1;
    if (counts)
        *counts = c;
    return 0;
fail:
    reg_db_rollback(db);
    return -1;
}
