/*
 * snapshot.c - an immutable in-memory copy of the registry for the
 * gateway's request path.
 *
 * Design: reg_snapshot_load() reads everything in one read transaction
 * (a consistent point in time, even while promptctl writes) with four
 * sequential queries ordered by prompt name, so building needs no hash
 * maps: prompts land sorted by name (binary search at lookup), versions
 * land in version order (versions[N-1] is version N, since numbers have no
 * gaps), labels sorted by label. The gateway swaps in a new snapshot on
 * reload and drops the old one with reg_snapshot_unref() when the last
 * request holding it finishes.
 *
 * Invariants:
 *  1. Nothing changes after load except the refcount (atomic), so any
 *     number of threads may resolve and render against one snapshot.
 *  2. Every reg_resolved pointer is borrowed from the snapshot and valid
 *     while the caller holds a reference.
 *  3. The database must be exactly at this binary's schema version; an
 *     older or newer one is refused (the gateway keeps its old snapshot).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "registry/internal.h"

struct snap_label {
    char *name;                          /* owned */
    int version;
    struct reg_experiment *experiment;   /* borrowed from snapshot->exps */
};

struct snap_prompt {
    char *name;                          /* owned */
    char *description;                   /* owned */
    size_t n_versions;
    struct reg_version *versions;        /* owned: versions[i] is i+1 */
    size_t n_labels, cap_labels;
    struct snap_label *labels;           /* owned, sorted by name */
    struct reg_experiment *latest_exp;   /* borrowed: experiment on "latest" */
};

struct reg_snapshot {
    int refs;                            /* atomic */
    size_t n_prompts;
    struct snap_prompt *prompts;         /* owned, sorted by name */
    size_t n_versions;
    size_t n_exps;
    struct reg_experiment **exps;        /* owned: running experiments */
};

static void snapshot_free(struct reg_snapshot *s)
{
    for (size_t i = 0; i < s->n_prompts; i++) {
        struct snap_prompt *p = &s->prompts[i];
        for (size_t v = 0; v < p->n_versions; v++) {
            struct reg_version *rv = &p->versions[v];
            free(rv->prompt);
            free(rv->messages);
            json_decref(rv->params);
            json_decref(rv->variables);
            free(rv->hash);
            free(rv->message);
            free(rv->author);
            free(rv->created_at);
        }
        free(p->versions);
        for (size_t l = 0; l < p->n_labels; l++)
            free(p->labels[l].name);
        free(p->labels);
        free(p->name);
        free(p->description);
    }
    free(s->prompts);
    for (size_t i = 0; i < s->n_exps; i++)
        reg_experiment_free(s->exps[i]);
    free(s->exps);
    free(s);
}

struct reg_snapshot *reg_snapshot_ref(struct reg_snapshot *snap)
{
    if (snap)
        __atomic_add_fetch(&snap->refs, 1, __ATOMIC_RELAXED);
    return snap;
}

void reg_snapshot_unref(struct reg_snapshot *snap)
{
    if (snap && __atomic_sub_fetch(&snap->refs, 1, __ATOMIC_ACQ_REL) == 0)
        snapshot_free(snap);
}

size_t reg_snapshot_prompts(const struct reg_snapshot *snap)
{
    return snap->n_prompts;
}

size_t reg_snapshot_versions(const struct reg_snapshot *snap)
{
    return snap->n_versions;
}

static struct snap_prompt *find_prompt(const struct reg_snapshot *s,
                                       const char *name)
{
    size_t lo = 0, hi = s->n_prompts;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(name, s->prompts[mid].name);
        if (c == 0)
            return &s->prompts[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

static struct snap_label *find_label(const struct snap_prompt *p,
                                     const char *name)
{
    size_t lo = 0, hi = p->n_labels;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(name, p->labels[mid].name);
        if (c == 0)
            return &p->labels[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

static int load_prompts(sqlite3 *sql, struct reg_snapshot *s, char **err)
{
    sqlite3_stmt *st = NULL;
    size_t cap = 0;
    int rc;

    rc = sqlite3_prepare_v2(sql, "SELECT p.name, p.description,"
        " (SELECT count(*) FROM versions v WHERE v.prompt_id = p.id)"
        " FROM prompts p ORDER BY p.name", -1, &st, NULL);
    while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct snap_prompt *p;
        if (s->n_prompts == cap) {
            cap = cap ? cap * 2 : 64;
            if ((p = realloc(s->prompts, cap * sizeof(*p))) == NULL)
                goto oom;
            s->prompts = p;
        }
        p = &s->prompts[s->n_prompts++];
        memset(p, 0, sizeof(*p));
        p->name = reg_strdup_col0(st, 0);
        p->description = reg_strdup_col0(st, 1);
        p->versions = calloc((size_t)sqlite3_column_int(st, 2) + 1, sizeof(*p->versions));
        if (!p->name || !p->description || !p->versions)
            goto oom;
        rc = SQLITE_OK;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        reg_err(err, "cannot load prompts: %s", sqlite3_errmsg(sql));
        return -1;
    }
    return 0;
oom:
    sqlite3_finalize(st);
    reg_err(err, "cannot load prompts: out of memory");
    return -1;
}

/* rows arrive ordered by prompt name: advance *cursor to the row's prompt */
static struct snap_prompt *advance(struct reg_snapshot *s, size_t *cursor,
                                   const char *name)
{
    while (*cursor < s->n_prompts && strcmp(s->prompts[*cursor].name, name) != 0)
        (*cursor)++;
    return *cursor < s->n_prompts ? &s->prompts[*cursor] : NULL;
}

/*
 * Parse column `col`, or share `last` (the previous version's value) when
 * the text equals *prevtext (the previous version's text, kept here).
 */
static json_t *reuse(sqlite3_stmt *st, int col, char **prevtext, json_t *last)
{
    const char *text = (const char *)sqlite3_column_text(st, col);
    size_t len = (size_t)sqlite3_column_bytes(st, col);

    if (text == NULL)
        return NULL;
    if (last && *prevtext && strcmp(*prevtext, text) == 0)
        return json_incref(last);
    free(*prevtext);
    *prevtext = strndup(text, len);
    return json_loadb(text, len, 0, NULL);
}

static int load_versions(sqlite3 *sql, struct reg_snapshot *s, char **err)
{
    sqlite3_stmt *st = NULL;
    size_t cursor = 0;
    char *prev[2] = {NULL, NULL};
    int rc;

    rc = sqlite3_prepare_v2(sql, "SELECT p.name, v.version, v.messages, v.params,"
        " v.variables, v.hash, v.message, v.author, v.created_at"
        " FROM prompts p JOIN versions v ON v.prompt_id = p.id"
        " ORDER BY p.name, v.version", -1, &st, NULL);
    while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(st, 0);
        struct snap_prompt *p = advance(s, &cursor, name);
        struct reg_version *v;
        int n = sqlite3_column_int(st, 1);

        if (p == NULL || n != (int)p->n_versions + 1) {
            reg_err(err, "cannot load '%s': versions changed during load", name);
            goto fail;
        }
        v = &p->versions[p->n_versions++];
        s->n_versions++;
        v->version = n;
        v->prompt = strdup(name);
        v->messages = reg_message_decode((const char *)sqlite3_column_text(st, 2),
                                         (size_t)sqlite3_column_bytes(st, 2),
                                         &v->n_messages, NULL);
        /* params and variables rarely change between versions: share them */
        v->params = reuse(st, 3, &prev[0], n > 1 ? v[-1].params : NULL);
        v->variables = reuse(st, 4, &prev[1], n > 1 ? v[-1].variables : NULL);
        v->hash = reg_strdup_col0(st, 5);
        v->message = reg_strdup_col0(st, 6);
        v->author = reg_strdup_col0(st, 7);
        v->created_at = reg_strdup_col0(st, 8);
        if (!v->messages || !v->params || !v->variables) {
            reg_err(err, "cannot load '%s' version %d: invalid JSON", name, n);
            goto fail;
        }
        if (!v->prompt || !v->hash || !v->message || !v->author || !v->created_at) {
            reg_err(err, "cannot load versions: out of memory");
            goto fail;
        }
        rc = SQLITE_OK;
    }
    if (rc != SQLITE_DONE) {
        reg_err(err, "cannot load versions: %s", sqlite3_errmsg(sql));
        goto fail;
    }
    sqlite3_finalize(st);
    free(prev[0]);
    free(prev[1]);
    return 0;
fail:
    sqlite3_finalize(st);
    free(prev[0]);
    free(prev[1]);
    return -1;
}

static int load_labels(sqlite3 *sql, struct reg_snapshot *s, char **err)
{
    sqlite3_stmt *st = NULL;
    size_t cursor = 0;
    int rc;

    rc = sqlite3_prepare_v2(sql, "SELECT p.name, l.label, l.version FROM prompts p"
        " JOIN labels l ON l.prompt_id = p.id ORDER BY p.name, l.label", -1, &st, NULL);
    while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(st, 0);
        struct snap_prompt *p = advance(s, &cursor, name);
        struct snap_label *l;

        if (p == NULL) {
            reg_err(err, "cannot load labels of '%s'", name);
            goto fail;
        }
        if (p->n_labels == p->cap_labels) {
            size_t cap = p->cap_labels ? p->cap_labels * 2 : 4;
            if ((l = realloc(p->labels, cap * sizeof(*l))) == NULL)
                goto oom;
            p->labels = l;
            p->cap_labels = cap;
        }
        l = &p->labels[p->n_labels];
        memset(l, 0, sizeof(*l));
        if ((l->name = reg_strdup_col0(st, 1)) == NULL)
            goto oom;
        l->version = sqlite3_column_int(st, 2);
        p->n_labels++;
        rc = SQLITE_OK;
    }
    if (rc != SQLITE_DONE) {
        reg_err(err, "cannot load labels: %s", sqlite3_errmsg(sql));
        goto fail;
    }
    sqlite3_finalize(st);
    return 0;
oom:
    reg_err(err, "cannot load labels: out of memory");
fail:
    sqlite3_finalize(st);
    return -1;
}

static int load_experiments(sqlite3 *sql, const char *path,
                            struct reg_snapshot *s, char **err)
{
    struct reg_db db = {sql, (char *)path};
    struct reg_experiment **list = NULL;
    size_t n = 0;

    if (reg_experiment_list(&db, NULL, 1, &list, &n, err) < 0)
        return -1;
    s->exps = list;
    s->n_exps = n;
    for (size_t i = 0; i < n; i++) {
        struct reg_experiment *e = list[i];
        struct snap_prompt *p = find_prompt(s, e->prompt);
        struct snap_label *l;

        if (p == NULL)
            continue;
        if (strcmp(e->label, "latest") == 0)
            p->latest_exp = e;
        else if ((l = find_label(p, e->label)) != NULL)
            l->experiment = e;
        for (size_t a = 0; a < e->n_arms; a++)
            if (e->arms[a].version < 1 || (size_t)e->arms[a].version > p->n_versions) {
                reg_err(err, "experiment '%s' names a missing version %d",
                        e->name, e->arms[a].version);
                return -1;
            }
    }
    return 0;
}

struct reg_snapshot *reg_snapshot_load(const char *path, char **err)
{
    struct reg_snapshot *s = NULL;
    sqlite3 *sql = NULL;
    int rc;

    if (path == NULL || *path == '\0') {
        reg_err(err, "cannot load registry: empty database path");
        return NULL;
    }
    rc = sqlite3_open_v2(path, &sql, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        reg_err(err, "cannot open '%s': %s", path,
                sql ? sqlite3_errmsg(sql) : sqlite3_errstr(rc));
        goto fail;
    }
    if (reg_db_configure(sql, path, 1, err) < 0)
        goto fail;
    /* one read transaction: a consistent view while writers go on */
    if (sqlite3_exec(sql, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) {
        reg_err(err, "cannot read '%s': %s", path, sqlite3_errmsg(sql));
        goto fail;
    }
    if (reg_migrate_check_current(sql, path, err) < 0)
        goto fail;
    if ((s = calloc(1, sizeof(*s))) == NULL) {
        reg_err(err, "cannot load '%s': out of memory", path);
        goto fail;
    }
    s->refs = 1;
    if (load_prompts(sql, s, err) < 0 || load_versions(sql, s, err) < 0
        || load_labels(sql, s, err) < 0 || load_experiments(sql, path, s, err) < 0)
        goto fail;
    sqlite3_exec(sql, "COMMIT", NULL, NULL, NULL);
    sqlite3_close(sql);
    return s;
fail:
    if (s)
        snapshot_free(s);
    sqlite3_close(sql);
    return NULL;
}

int reg_snapshot_resolve(const struct reg_snapshot *snap, const char *name,
                         const char *label, int version, const char *user_id,
                         struct reg_resolved *out, char **err)
{
    return reg_snapshot_resolve_memo(snap, name, label, version, user_id,
                                     NULL, out, err);
}

int reg_snapshot_resolve_memo(const struct reg_snapshot *snap,
                              const char *name, const char *label,
                              int version, const char *user_id,
                              struct reg_arm_memo *memo,
                              struct reg_resolved *out, char **err)
{
    const struct snap_prompt *p;
    const struct reg_experiment *e = NULL;
    int v;

    memset(out, 0, sizeof(*out));
    out->arm = -1;
    if (name == NULL || (p = find_prompt(snap, name)) == NULL) {
        reg_err(err, "unknown prompt '%s'", name ? name : "");
        return -1;
    }
    if (p->n_versions == 0) {
        reg_err(err, "prompt '%s' has no versions", name);
        return -1;
    }
    if (version > 0) {
        if ((size_t)version > p->n_versions) {
            reg_err(err, "prompt '%s' has no version %d", name, version);
            return -1;
        }
        out->version = &p->versions[version - 1];
        return 0;
    }
    if (label == NULL || *label == '\0' || strcmp(label, "latest") == 0) {
        v = (int)p->n_versions;
        e = p->latest_exp;
        out->label = "latest";
    } else {
        const struct snap_label *l = find_label(p, label);
        if (l == NULL) {
            reg_err(err, "prompt '%s' has no label '%s'", name, label);
            return -1;
        }
        v = l->version;
        e = l->experiment;
        out->label = l->name;
    }
    if (e != NULL && user_id != NULL) {
        int arm = reg_assign_memo(memo, e, user_id);
        if (arm >= 0) {
            v = e->arms[arm].version;
            out->experiment = e;
            out->arm = arm;
        }
    }
    out->version = &p->versions[v - 1];
    return 0;
}
