/*
 * exposure.c - the A/B log: exposures (what the gateway served, to whom)
 * and feedback (business outcomes attached later), and their export as
 * the evaluator's samples (issue 7).
 *
 * Design: the gateway's writer thread holds a reg_exposure_log (one
 * connection, its INSERTs prepared once) and hands it batches, one
 * transaction per batch, so a busy gateway costs SQLite one commit per
 * batch rather than per request, and one statement execution per
 * EX_ROWS exposures rather than per exposure. Feedback is keyed
 * by (request_id, event) with INSERT OR IGNORE: a client that retries a
 * POST /v1/feedback adds nothing. The export joins exposures with their
 * feedback and streams one sample per exposure through a callback, so an
 * export of millions of rows runs in constant memory.
 *
 * Invariants:
 *  1. A batch is all or nothing: a bad record fails the whole batch
 *     before anything is written; a failed step rolls it back.
 *  2. The first feedback of a (request, event) wins; later ones change
 *     nothing (idempotency, not "last writer wins").
 *  3. The sample format is the evaluator's input (issue 8): version, user,
 *     variables, facts, output, impressions, clicks, conversions.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "registry/internal.h"

#define LINE_MAX_BYTES (16u << 20) /* one line of a JSON-lines log */

int reg_event_valid(const char *s)
{
    size_t n;

    if (s == NULL || *s == '\0')
        return 0;
    n = strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789_.-");
    return s[n] == '\0' && n <= REG_EVENT_MAX;
}

/* exposure columns, in the order bind_exposure binds them */
#define EX_COLS 21
#define EX_COLUMNS \
    "request_id, at, key_name, user_id, prompt, version, label," \
    " experiment_id, experiment, arm, model, backend, status, stream," \
    " latency_ms, prompt_tokens, completion_tokens, total_tokens, cache," \
    " variables, output"
/* rows per multi-row INSERT: one statement execution (its cursors, its
 * halt, its record buffers) serves this many records */
#define EX_ROWS 32

struct reg_exposure_log {
    struct reg_db *db;       /* owned */
    sqlite3_stmt *ins1;      /* owned: INSERT of one exposure */
    sqlite3_stmt *insn;      /* owned: INSERT of EX_ROWS exposures */
    sqlite3_stmt *fb;        /* owned: INSERT OR IGNORE of one feedback */
};

/* The statements, prepared once per connection. The multi-row INSERT is
 * EX_ROWS copies of the one-row VALUES tuple. */
static int log_prepare(struct reg_exposure_log *log, char **err)
{
    static const char one[] = "INSERT INTO exposures (" EX_COLUMNS
                              ") VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)";
    const char *tuple = strstr(one, " VALUES ") + 8;
    size_t head = (size_t)(tuple - one), tl = strlen(tuple);
    char *sql = malloc(head + EX_ROWS * (tl + 1) + 1), *q;

    if (sql == NULL) {
        reg_err(err, "out of memory");
        return -1;
    }
    memcpy(sql, one, head);
    q = sql + head;
    for (int i = 0; i < EX_ROWS; i++) {
        if (i > 0)
            *q++ = ',';
        memcpy(q, tuple, tl);
        q += tl;
    }
    *q = '\0';
    log->ins1 = reg_db_prepare(log->db, one, err);
    log->insn = log->ins1 ? reg_db_prepare(log->db, sql, err) : NULL;
    log->fb = log->insn ? reg_db_prepare(log->db,
        "INSERT OR IGNORE INTO feedback (request_id, event, value, at)"
        " VALUES (?, ?, ?, ?)", err) : NULL;
    free(sql);
    return log->fb ? 0 : -1;
}

static void log_finalize(struct reg_exposure_log *log)
{
    sqlite3_finalize(log->ins1);
    sqlite3_finalize(log->insn);
    sqlite3_finalize(log->fb);
    log->ins1 = log->insn = log->fb = NULL;
}

struct reg_exposure_log *reg_exposure_log_open(const char *path, char **err)
{
    struct reg_exposure_log *log = calloc(1, sizeof(*log));

    if (log == NULL) {
        reg_err(err, "cannot open '%s': out of memory", path);
        return NULL;
    }
    if ((log->db = reg_db_open(path, 0, err)) == NULL)
        goto fail;
    /* an append-mostly log: a larger page cache and memory-mapped reads
     * keep the index pages of a big table out of read() copies; a WAL of
     * up to 4,000 pages (16 MiB at 4 KiB) between checkpoints rewrites
     * the table's right edge less often, and is cut back to 16 MiB after
     * one (synchronous = NORMAL from reg_db_open: a commit does not wait
     * for the disk, a power loss may lose the last commits, never
     * corrupt the file) */
    if (reg_db_exec(log->db, "PRAGMA cache_size = -16384", err) < 0 ||
        reg_db_exec(log->db, "PRAGMA mmap_size = 268435456", err) < 0 ||
        reg_db_exec(log->db, "PRAGMA wal_autocheckpoint = 4000", err) < 0 ||
        reg_db_exec(log->db, "PRAGMA journal_size_limit = 16777216", err) < 0 ||
        log_prepare(log, err) < 0)
        goto fail;
    return log;
fail:
    reg_exposure_log_free(log);
    return NULL;
}

void reg_exposure_log_free(struct reg_exposure_log *log)
{
    if (log == NULL)
        return;
    log_finalize(log);
    reg_db_free(log->db);
    free(log);
}

static int exposure_check(const struct reg_exposure *e, char **err)
{
    if (e->request_id == NULL || *e->request_id == '\0'
        || strlen(e->request_id) > REG_REQUEST_ID_MAX) {
        reg_err(err, "exposure without a valid request id");
        return -1;
    }
    if (e->at == NULL || e->prompt == NULL || e->version < 1) {
        reg_err(err, "exposure '%s' lacks its time, prompt or version",
                e->request_id);
        return -1;
    }
    return 0;
}

static int feedback_check(const struct reg_feedback *f, char **err)
{
    if (f->request_id == NULL || *f->request_id == '\0'
        || strlen(f->request_id) > REG_REQUEST_ID_MAX
        || !reg_event_valid(f->event) || f->at == NULL) {
        reg_err(err, "feedback without a valid request id, event or time");
        return -1;
    }
    return 0;
}

/* Every parameter is bound on every use (NULL included), so a statement
 * never needs sqlite3_clear_bindings. The strings are the caller's and
 * outlive the step: SQLITE_STATIC, no copies. */
static void bind_text(sqlite3_stmt *st, int col, const char *s)
{
    if (s)
        sqlite3_bind_text(st, col, s, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, col);
}

static void bind_long(sqlite3_stmt *st, int col, long v)
{
    if (v >= 0)
        sqlite3_bind_int64(st, col, v);
    else
        sqlite3_bind_null(st, col);
}

/* binds e as the row whose first parameter is b + 1 */
static void bind_exposure(sqlite3_stmt *st, int b, const struct reg_exposure *e)
{
    bind_text(st, b + 1, e->request_id);
    bind_text(st, b + 2, e->at);
    bind_text(st, b + 3, e->key_name);
    bind_text(st, b + 4, e->user_id);
    bind_text(st, b + 5, e->prompt);
    sqlite3_bind_int(st, b + 6, e->version);
    bind_text(st, b + 7, e->label);
    if (e->experiment_id > 0) {
        sqlite3_bind_int64(st, b + 8, e->experiment_id);
        bind_text(st, b + 9, e->experiment);
        sqlite3_bind_int(st, b + 10, e->arm);
    } else {
        sqlite3_bind_null(st, b + 8);
        sqlite3_bind_null(st, b + 9);
        sqlite3_bind_null(st, b + 10);
    }
    bind_text(st, b + 11, e->model);
    bind_text(st, b + 12, e->backend);
    sqlite3_bind_int(st, b + 13, e->status);
    sqlite3_bind_int(st, b + 14, e->stream != 0);
    if (e->latency_ms >= 0)
        sqlite3_bind_double(st, b + 15, e->latency_ms);
    else
        sqlite3_bind_null(st, b + 15);
    bind_long(st, b + 16, e->prompt_tokens);
    bind_long(st, b + 17, e->completion_tokens);
    bind_long(st, b + 18, e->total_tokens);
    bind_text(st, b + 19, e->cache);
    bind_text(st, b + 20, e->variables ? e->variables : "{}");
    bind_text(st, b + 21, e->output);
}

/* runs st once (reset after, so it holds no read of the table) */
static int step_once(struct reg_db *db, sqlite3_stmt *st, const char *what,
                     const char *rid, char **err)
{
    int rc = sqlite3_step(st);

    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        reg_err(err, "cannot record %s '%s' in '%s': %s", what, rid,
                db->path, sqlite3_errmsg(reg_db_handle(db)));
        return -1;
    }
    return 0;
}

/* The batch with the log's statements: one transaction, exposures
 * EX_ROWS to a statement execution, then feedback one at a time (each
 * may be a repeat that adds nothing). */
static int log_write(struct reg_exposure_log *log,
                     const struct reg_exposure *ex, size_t n_ex,
                     const struct reg_feedback *fb, size_t n_fb,
                     int *fb_added, char **err)
{
    struct reg_db *db = log->db;
    int added = 0;
    size_t i, k;

    if (fb_added)
        *fb_added = 0;
    if (n_ex == 0 && n_fb == 0)
        return 0;
    /* all or nothing, and nothing written for a bad record */
    for (i = 0; i < n_ex; i++)
        if (exposure_check(&ex[i], err) < 0)
            return -1;
    for (i = 0; i < n_fb; i++)
        if (feedback_check(&fb[i], err) < 0)
            return -1;
    if (reg_db_begin(db, err) < 0)
        return -1;
    for (i = 0; i + EX_ROWS <= n_ex; i += EX_ROWS) {
        for (k = 0; k < EX_ROWS; k++)
            bind_exposure(log->insn, (int)k * EX_COLS, &ex[i + k]);
        if (step_once(db, log->insn, "exposures from", ex[i].request_id,
                      err) < 0)
            goto fail;
    }
    for (; i < n_ex; i++) {
        bind_exposure(log->ins1, 0, &ex[i]);
        if (step_once(db, log->ins1, "exposure", ex[i].request_id, err) < 0)
            goto fail;
    }
    for (i = 0; i < n_fb; i++) {
        bind_text(log->fb, 1, fb[i].request_id);
        bind_text(log->fb, 2, fb[i].event);
        sqlite3_bind_double(log->fb, 3, fb[i].value);
        bind_text(log->fb, 4, fb[i].at);
        if (step_once(db, log->fb, "feedback for", fb[i].request_id, err) < 0)
            goto fail;
        added += sqlite3_changes(reg_db_handle(db));
    }
    if (reg_db_commit(db, err) < 0)
        return -1;
    if (fb_added)
        *fb_added = added;
    return 0;
fail:
    reg_db_rollback(db);
    return -1;
}

int reg_exposure_log_write(struct reg_exposure_log *log,
                           const struct reg_exposure *ex, size_t n_ex,
                           const struct reg_feedback *fb, size_t n_fb,
                           int *fb_added, char **err)
{
    return log_write(log, ex, n_ex, fb, n_fb, fb_added, err);
}

int reg_exposures_write(struct reg_db *db, const struct reg_exposure *ex,
                        size_t n_ex, const struct reg_feedback *fb,
                        size_t n_fb, int *fb_added, char **err)
{
    struct reg_exposure_log log = {db, NULL, NULL, NULL};
    int rc;

    if (fb_added)
        *fb_added = 0;
    if (n_ex == 0 && n_fb == 0)
        return 0;
    if (log_prepare(&log, err) < 0) {
        log_finalize(&log);
        return -1;
    }
    rc = log_write(&log, ex, n_ex, fb, n_fb, fb_added, err);
    log_finalize(&log);
    return rc;
}

/* ---- JSON forms ---------------------------------------------------------- */

static void set_str(json_t *o, const char *k, const char *v)
{
    json_object_set_new(o, k, v ? json_string(v) : json_null());
}

/* ---- export -------------------------------------------------------------- */

/* facts carried by the variables: an object, or a string holding one */
static json_t *facts_of(json_t *vars)
{
    json_t *f = json_object_get(vars, "facts");

    if (json_is_object(f))
        return json_incref(f);
    if (json_is_string(f)) {
        json_t *p = json_loadb(json_string_value(f), json_string_length(f),
                               0, NULL);
        if (json_is_object(p))
            return p;
        json_decref(p);
    }
    return NULL;
}

/* One sample from an exposure's fields (borrowed) and outcomes (borrowed
 * object event -> value, may be NULL). */
static json_t *sample_new(const char *id, const char *prompt, int version,
                          json_t *arm, const char *experiment,
                          const char *user, const char *at, json_t *vars,
                          const char *output, json_t *outcomes, int status,
                          const char *model)
{
    json_t *s = json_object(), *facts, *v;
    int clicks = 0, conversions = 0;

    if (s == NULL)
        return NULL;
    v = json_object_get(outcomes, "click");
    clicks = v && json_number_value(v) != 0;
    v = json_object_get(outcomes, "conversion");
    conversions = v && json_number_value(v) != 0;
    set_str(s, "id", id);
    set_str(s, "prompt", prompt);
    json_object_set_new(s, "version", json_integer(version));
    json_object_set(s, "arm", arm ? arm : json_null());
    set_str(s, "experiment", experiment);
    set_str(s, "user", user);
    set_str(s, "at", at);
    json_object_set(s, "variables", vars ? vars : json_object());
    if (vars && (facts = facts_of(vars)) != NULL)
        json_object_set_new(s, "facts", facts);
    if (output)
        set_str(s, "output", output);
    /* an answer that failed showed the user nothing */
    json_object_set_new(s, "impressions",
                        json_integer(status >= 200 && status < 300));
    json_object_set_new(s, "clicks", json_integer(clicks));
    json_object_set_new(s, "conversions", json_integer(conversions));
    if (outcomes)
        json_object_set(s, "outcomes", outcomes);
    else
        json_object_set_new(s, "outcomes", json_object());
    json_object_set_new(s, "status", json_integer(status));
    set_str(s, "model", model);
    return s;
}

/* The experiment id for "<prompt>@<label>" or "<prompt>": the newest. */
static int64_t experiment_find(struct reg_db *db, const char *ref,
                               char **err)
{
    char name[REG_NAME_MAX + 1], label[REG_LABEL_MAX + 1];
    struct reg_experiment **list = NULL;
    size_t n = 0, i;
    int version;
    int64_t id = 0;

    if (reg_ref_parse(ref, name, label, &version, err) < 0)
        return -1;
    if (version > 0) {
        reg_err(err, "experiment '%s': name it PROMPT@LABEL, not a version",
                ref);
        return -1;
    }
    if (reg_experiment_list(db, name, 0, &list, &n, err) < 0)
        return -1;
    for (i = 0; i < n; i++) /* newest first */
        if (label[0] == '\0' || strcmp(list[i]->label, label) == 0) {
            id = list[i]->id;
            break;
        }
    reg_experiment_list_free(list, n);
    if (id == 0)
        reg_err(err, "no experiment '%s' (see 'promptctl experiment list')",
                ref);
    return id ? id : -1;
}

int reg_samples_export(struct reg_db *db, const char *experiment,
                       const char *since, reg_sample_cb cb, void *arg,
                       size_t *count, char **err)
{
    sqlite3_stmt *st;
    int64_t id;
    int rc;

    *count = 0;
    if ((id = experiment_find(db, experiment, err)) < 0)
        return -1;
    st = reg_db_prepare(db,
        "SELECT e.request_id, e.prompt, e.version, e.arm, e.experiment,"
        " e.user_id, e.at, e.variables, e.output, e.status, e.model,"
        " (SELECT json_group_object(f.event, f.value) FROM feedback f"
        "  WHERE f.request_id = e.request_id)"
        " FROM exposures e WHERE e.experiment_id = ? AND e.at >= ?"
        " ORDER BY e.id", err);
    if (st == NULL)
        return -1;
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_text(st, 2, since ? since : "", -1, SQLITE_STATIC);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        json_t *vars, *outcomes = NULL, *arm, *s;
        const char *o = (const char *)sqlite3_column_text(st, 11);
        int stop;

        vars = json_loads((const char *)sqlite3_column_text(st, 7), 0, NULL);
        if (o)
            outcomes = json_loads(o, 0, NULL);
        arm = sqlite3_column_type(st, 3) == SQLITE_NULL
            ? json_null() : json_integer(sqlite3_column_int(st, 3));
        s = sample_new((const char *)sqlite3_column_text(st, 0),
                       (const char *)sqlite3_column_text(st, 1),
                       sqlite3_column_int(st, 2), arm,
                       (const char *)sqlite3_column_text(st, 4),
                       (const char *)sqlite3_column_text(st, 5),
                       (const char *)sqlite3_column_text(st, 6), vars,
                       (const char *)sqlite3_column_text(st, 8), outcomes,
                       sqlite3_column_int(st, 9),
                       (const char *)sqlite3_column_text(st, 10));
        json_decref(vars);
        json_decref(outcomes);
        json_decref(arm);
        if (s == NULL) {
            reg_err(err, "out of memory");
            sqlite3_finalize(st);
            return -1;
        }
        stop = cb(arg, s);
        json_decref(s);
        (*count)++;
        if (stop)
            break;
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        reg_err(err, "cannot read exposures from '%s': %s", db->path,
                sqlite3_errmsg(reg_db_handle(db)));
        sqlite3_finalize(st);
        return -1;
    }
    sqlite3_finalize(st);
    return 0;
}

/* Reads the next line of f into *buf (grown); 0 at EOF, -1 too long. */
static long next_line(FILE *f, char **buf, size_t *cap)
{
    size_t n = 0;
    int ch;

    while ((ch = getc(f)) != EOF) {
        if (n + 2 > *cap) {
            size_t nc = *cap ? *cap * 2 : 4096;
            char *nb;
            if (nc > LINE_MAX_BYTES + 2)
                return -1;
            if ((nb = realloc(*buf, nc)) == NULL)
                return -1;
            *buf = nb, *cap = nc;
        }
        if (ch == '\n')
            break;
        (*buf)[n++] = (char)ch;
    }
    if (n == 0 && ch == EOF)
        return 0;
    (*buf)[n] = '\0';
    return (long)n + 1;
}

int reg_samples_export_file(const char *path, const char *experiment,
                            const char *since, reg_sample_cb cb, void *arg,
                            size_t *count, char **err)
{
    FILE *f;
    json_t *fb = NULL, *rec;
    char *line = NULL;
    size_t cap = 0, lineno;
    long n;
    int pass, rc = -1, stop = 0;

    *count = 0;
    if ((f = fopen(path, "r")) == NULL) {
        reg_err(err, "cannot open '%s': %s", path, reg_strerror(errno));
        return -1;
    }
    if ((fb = json_object()) == NULL)
        goto oom;
    /* pass 0 gathers feedback by request id (first per event wins), pass 1
     * emits the experiment's exposures with it */
    for (pass = 0; pass < 2 && !stop; pass++) {
        rewind(f);
        lineno = 0;
        while ((n = next_line(f, &line, &cap)) > 0) {
            const char *type, *rid, *exp, *at;
            lineno++;
            if (line[0] == '\0')
                continue;
            if ((rec = json_loads(line, 0, NULL)) == NULL) {
                reg_err(err, "'%s' line %zu: not a JSON object", path, lineno);
                goto done;
            }
            type = json_string_value(json_object_get(rec, "type"));
            rid = json_string_value(json_object_get(rec, "request_id"));
            at = json_string_value(json_object_get(rec, "at"));
            if (type == NULL || rid == NULL) {
                json_decref(rec);
                continue;
            }
            if (pass == 0 && strcmp(type, "feedback") == 0) {
                const char *ev = json_string_value(json_object_get(rec, "event"));
                json_t *o = json_object_get(fb, rid);
                if (ev && o == NULL) {
                    o = json_object();
                    json_object_set_new(fb, rid, o);
                }
                if (ev && o && json_object_get(o, ev) == NULL)
                    json_object_set(o, ev, json_object_get(rec, "value"));
            } else if (pass == 1 && strcmp(type, "exposure") == 0
                       && (exp = json_string_value(json_object_get(rec, "experiment")))
                       && (strcmp(exp, experiment) == 0
                           || (strchr(experiment, '@') == NULL
                               && strncmp(exp, experiment, strlen(experiment)) == 0
                               && exp[strlen(experiment)] == '@'))
                       && (since == NULL || (at && strcmp(at, since) >= 0))) {
                json_t *s = sample_new(
                    rid, json_string_value(json_object_get(rec, "prompt")),
                    (int)json_integer_value(json_object_get(rec, "version")),
                    json_object_get(rec, "arm"), exp,
                    json_string_value(json_object_get(rec, "user")), at,
                    json_object_get(rec, "variables"),
                    json_string_value(json_object_get(rec, "output")),
                    json_object_get(fb, rid),
                    (int)json_integer_value(json_object_get(rec, "status")),
                    json_string_value(json_object_get(rec, "model")));
                if (s == NULL) {
                    json_decref(rec);
                    goto oom;
                }
                stop = cb(arg, s);
                json_decref(s);
                (*count)++;
            }
            json_decref(rec);
            if (stop)
                break;
        }
        if (n < 0) {
            reg_err(err, "'%s' line %zu: longer than %u bytes", path,
                    lineno + 1, LINE_MAX_BYTES);
            goto done;
        }
    }
    rc = 0;
    goto done;
oom:
    reg_err(err, "out of memory");
done:
    free(line);
    json_decref(fb);
    fclose(f);
    return rc;
}
