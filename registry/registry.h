/*
 * registry.h - the prompt registry library (libregistry.a).
 *
 * One owner of the registry schema and of template rendering: the gateway,
 * the evaluator and promptctl link this library and never write SQL against
 * the registry themselves.
 *
 * Two ways in:
 *
 *   struct reg_db        a read-write connection for management verbs
 *                        (publish, label, experiments, import/export,
 *                        evaluator runs). Opening it applies the migrations
 *                        that are built into the binary.
 *   struct reg_snapshot  an immutable, refcounted in-memory copy of every
 *                        prompt, version, label and running experiment, for
 *                        the gateway's request path (no SQL per request).
 *                        Safe to share read-only between threads.
 *
 * Conventions: int functions return 0 on success and -1 on failure; pointer
 * functions return NULL on failure. On failure, when `err` is not NULL,
 * `*err` receives a malloc'd one-line message (lowercase, no final period)
 * that the caller frees with free(). Every x_free(NULL) is a no-op.
 */
#ifndef REGISTRY_H
#define REGISTRY_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <jansson.h>

/* ---- limits on every input (enforced by the library) ------------------ */
#define REG_NAME_MAX        128       /* prompt name bytes */
#define REG_LABEL_MAX       64        /* label name bytes */
#define REG_DESC_MAX        1024      /* prompt description bytes */
#define REG_MESSAGE_MAX     4096      /* publish message (-m) bytes */
#define REG_AUTHOR_MAX      128       /* author / actor bytes */
#define REG_SALT_MAX        64        /* experiment salt bytes */
#define REG_SOURCE_MAX      1024      /* eval run source (file name) bytes */
#define REG_TEMPLATE_MAX    (1 << 20) /* publish file / total template bytes */
#define REG_MESSAGES_MAX    256       /* messages per version */
#define REG_VARIABLES_MAX   256       /* distinct variables per version */
#define REG_VARNAME_MAX     64        /* variable name bytes */
#define REG_ARMS_MAX        16        /* arms per experiment */
#define REG_SUMMARY_MAX     (4 << 20) /* eval run summary JSON bytes */
#define REG_RENDER_MAX      (8 << 20) /* bytes of one rendered message */

/* ---- database ----------------------------------------------------------- */

struct reg_db;

/* flags for reg_db_open */
#define REG_DB_CREATE    0x1  /* create the file if it does not exist */
#define REG_DB_NOMIGRATE 0x2  /* neither check nor apply migrations: only
                                 for reg_migrate_status on any database */

/*
 * Open the registry at `path` (WAL, foreign keys on, busy timeout). Unless
 * REG_DB_NOMIGRATE is given, applies pending built-in migrations, each in its
 * own BEGIN IMMEDIATE transaction with its checksum recorded. Refuses a
 * database whose schema is newer than this binary, or whose applied
 * migration text differs from the built-in one. Returns NULL on failure.
 */
struct reg_db *reg_db_open(const char *path, int flags, char **err);
void reg_db_free(struct reg_db *db);

/* The sqlite3 handle, for tests only (owned by db). */
struct sqlite3 *reg_db_handle(struct reg_db *db);

/* One built-in migration and where the database stands with it. */
struct reg_migration_status {
    int version;             /* NNNN of migrations/NNNN_name.sql */
    const char *name;        /* borrowed from the built-in table */
    const char *checksum;    /* borrowed: sha-256 hex of the built-in text */
    int applied;             /* 1 when recorded in the database */
    int checksum_ok;         /* applied and recorded checksum matches */
    char applied_at[32];     /* when applied (UTC), "" if not */
};

/*
 * Fill `out` (up to `max` entries) with the built-in migrations and whether
 * each one is applied. Returns the number of built-in migrations, or -1.
 * `*db_version` receives the highest version recorded in the database
 * (which may exceed every built-in one when the database is newer).
 */
int reg_migrate_status(struct reg_db *db, struct reg_migration_status *out,
                       int max, int *db_version, char **err);
/* Highest built-in migration version (the schema this binary speaks). */
int reg_migrate_latest(void);

/* ---- names -------------------------------------------------------------- */

/* 1 when `s` is a valid prompt name [a-z0-9][a-z0-9_.-]*, <= REG_NAME_MAX */
int reg_name_valid(const char *s);
/* 1 when `s` is a valid label [a-z0-9_-]+, <= REG_LABEL_MAX */
int reg_label_valid(const char *s);

/*
 * Parse "name", "name@label" or "name@N" into its parts. `name` receives at
 * most REG_NAME_MAX+1 bytes, `label` REG_LABEL_MAX+1 ("" when none);
 * `*version` is N or 0. Returns -1 with an error for a malformed reference.
 */
int reg_ref_parse(const char *ref, char name[REG_NAME_MAX + 1],
                  char label[REG_LABEL_MAX + 1], int *version, char **err);

/* ---- prompts and versions ----------------------------------------------- */

/* One message of a version's template (plain C: see message.c for why). */
struct reg_message {
    const char *role;        /* borrowed from the version's message block */
    const char *name;        /* borrowed; NULL when the message has none */
    const char *content;     /* borrowed: the template, NUL-terminated */
    size_t content_len;      /* bytes of content (it may hold \u0000) */
};

struct reg_version {
    char *prompt;            /* owned: prompt name */
    int version;             /* 1, 2, ... */
    size_t n_messages;
    struct reg_message *messages; /* owned: one block with its strings */
    json_t *params;          /* owned: {"model", "temperature", ...}; read
                                only (in a snapshot it may be shared by
                                versions; jansson's refcounts are atomic) */
    json_t *variables;       /* owned: ["product_name", ...] in first-use
                                order; read only, like params */
    char *hash;              /* owned: sha-256 hex of canonical content */
    char *message;           /* owned: publish message */
    char *author;            /* owned */
    char *created_at;        /* owned: ISO-8601 UTC */
};
/* Frees a version from reg_version_get/reg_versions_list. Versions reached
 * through a snapshot belong to the snapshot: never free those. */
void reg_version_free(struct reg_version *v);

/* A version's messages (the template, unrendered) as a new JSON array of
 * {"role", ["name",] "content"}. */
json_t *reg_version_messages(const struct reg_version *v);

/*
 * Parse a publish file: JSON {"messages": [...], "params": {...}} when the
 * text opens like a JSON object ('{' then '"' or '}', whitespace aside), else
 * plain text = one user message (trailing newlines dropped; a template that
 * starts with "{{var}}" is text). UTF-8 only. Validates
 * roles, sizes and variable names. On success `*messages` and `*params`
 * receive new references.
 */
int reg_content_parse(const char *text, size_t len, json_t **messages,
                      json_t **params, char **err);

/*
 * Publish messages/params (borrowed) as version N+1 of prompt `name`,
 * creating the prompt when absent. When the content equals the latest
 * version, nothing is added and `*created` is 0. `*version_out` receives the
 * version. message/author/description may be NULL. Retries on busy.
 */
int reg_publish(struct reg_db *db, const char *name, const json_t *messages,
                const json_t *params, const char *message, const char *author,
                const char *description, int *version_out, int *created,
                char **err);

/* Set a prompt's description (the prompt must exist). */
int reg_prompt_describe(struct reg_db *db, const char *name,
                        const char *description, char **err);

/* One row of reg_prompt_list. */
struct reg_prompt_info {
    char *name;              /* owned */
    char *description;       /* owned */
    char *created_at;        /* owned */
    int latest;              /* newest version number */
    int n_versions;
    json_t *labels;          /* owned: {"production": 3, ...} */
};
/* All prompts by name. `*out` is an owned array freed by reg_prompt_list_free. */
int reg_prompt_list(struct reg_db *db, struct reg_prompt_info **out,
                    size_t *n, char **err);
void reg_prompt_list_free(struct reg_prompt_info *list, size_t n);

/*
 * Fetch one version: label "" / NULL and version 0 means latest; "latest"
 * is the newest as well. Returns NULL with an error naming what is missing.
 */
struct reg_version *reg_version_get(struct reg_db *db, const char *name,
                                    const char *label, int version, char **err);

/* Every version of a prompt, oldest first (array of owned pointers). */
int reg_versions_list(struct reg_db *db, const char *name,
                      struct reg_version ***out, size_t *n, char **err);
void reg_versions_list_free(struct reg_version **list, size_t n);

/* ---- labels ------------------------------------------------------------- */

/* Point `label` of prompt `name` at `version`, recording the move. */
int reg_label_set(struct reg_db *db, const char *name, int version,
                  const char *label, const char *actor, char **err);

/*
 * Move `label` back to where it pointed before its last move (a rollback
 * itself counts as a move, so two rollbacks go back twice in the chain of
 * moves, skipping the moves that were undone). `*from`/`*to` receive the
 * versions. Fails when there is nothing to roll back to.
 */
int reg_label_rollback(struct reg_db *db, const char *name, const char *label,
                       const char *actor, int *from, int *to, char **err);

/*
 * The label history of a prompt, oldest first, as a new JSON array of
 * {"label","from","to","action","actor","at"} ("from" null on first set).
 */
json_t *reg_label_log(struct reg_db *db, const char *name, char **err);

/* ---- rendering ---------------------------------------------------------- */

/*
 * The distinct variable names `{{name}}` used in `messages` (borrowed), in
 * order of first use, as a new JSON array. Names: [A-Za-z_][A-Za-z0-9_]*
 * with optional spaces inside the braces; any other `{{` is literal text.
 */
json_t *reg_template_variables(const json_t *messages, char **err);

/*
 * Render a version's messages with `variables` (a JSON object, borrowed;
 * string, number and boolean values). Values are inserted verbatim in one
 * pass: a value containing "{{x}}" stays literal. A variable the template
 * uses but `variables` lacks is an error naming it. `*messages_out`
 * receives a new array of {"role","content"}. Thread-safe on a shared
 * snapshot version.
 */
int reg_render(const struct reg_version *version, const json_t *variables,
               json_t **messages_out, char **err);
/* Same, on a bare messages array (borrowed). */
int reg_render_messages(const json_t *messages, const json_t *variables,
                        json_t **messages_out, char **err);

/* A variable's value for reg_render_json, as raw JSON text: a string's
 * bytes between its quotes with escapes in place (valid JSON string
 * content, spliced verbatim), or a number's text. */
enum reg_value_type { REG_VALUE_NONE, REG_VALUE_STRING, REG_VALUE_NUMBER,
                      REG_VALUE_TRUE, REG_VALUE_FALSE, REG_VALUE_OTHER };
struct reg_value {
    enum reg_value_type type;
    const char *text;        /* borrowed */
    size_t len;
};
/* Finds variable `name`: 0 with *out filled, or -1 when absent. */
typedef int (*reg_lookup_fn)(void *arg, const char *name, struct reg_value *out);
/* Appends bytes to the output: 0, or -1 on failure. */
typedef int (*reg_emit_fn)(void *arg, const char *data, size_t len);

/*
 * Render a version's messages straight to JSON text, without building a
 * tree: emits [{"role","name"?,"content"}, ...] exactly as reg_render's
 * result would encode (the same template scanner, the same values, the
 * same errors: a missing variable names it). For the gateway's request
 * path, where the variables are spans of the request body. Thread-safe on
 * a shared snapshot version.
 */
int reg_render_json(const struct reg_version *version, reg_lookup_fn lookup,
                    void *larg, reg_emit_fn emit, void *earg, char **err);

/*
 * reg_render_json in two steps, for a caller that renders one version many
 * times: reg_tpl_compile escapes the version's roles, names and literal
 * text into JSON once (NULL when out of memory); reg_tpl_render then only
 * copies that text and the variables' values, with reg_render_json's
 * result and errors (reg_render_json is these two calls). A compiled
 * template borrows nothing from the version and is read only: any thread
 * may render it.
 */
struct reg_tpl;
struct reg_tpl *reg_tpl_compile(const struct reg_version *version);
int reg_tpl_render(const struct reg_tpl *t, reg_lookup_fn lookup, void *larg,
                   reg_emit_fn emit, void *earg, char **err);
/* reg_tpl_render with the variables' values by place, vals[i] the value of
 * the version's variables[i] (REG_VALUE_NONE: absent), appending to out
 * (as reg_buf_emit would, without a call per piece): the request path's
 * way, no lookup by name */
struct reg_buf;
int reg_tpl_render_vals(const struct reg_tpl *t, const struct reg_value *vals,
                        size_t n_vals, struct reg_buf *out, char **err);
void reg_tpl_free(struct reg_tpl *t);

/* ---- experiments and assignment ----------------------------------------- */

struct reg_arm {
    int version;
    int weight;              /* percent; arms of an experiment sum to 100 */
};

/*
 * The arm index a user gets: SHA-256 of (experiment_name, salt, user_id)
 * -> bucket 0..9999 -> arm by cumulative weight. Stable across processes
 * and machines. Returns -1 only when n_arms is 0 or all weights are 0.
 */
int reg_assign(const char *experiment_name, const char *salt,
               const char *user_id, const struct reg_arm *arms, size_t n_arms);
/* The bucket 0..9999 behind reg_assign (exposed for tests and reports). */
int reg_assign_bucket(const char *experiment_name, const char *salt,
                      const char *user_id);

/*
 * A memo of arm assignments for one thread, so that a user who comes back
 * costs a table lookup instead of a SHA-256: a 4-way set-associative table
 * of 8,192 16-byte slots (128 KB, allocated on first use) keyed by a tag
 * of the experiment id and the user id's SipHash-2-4 under a random
 * per-memo key; user ids longer than REG_MEMO_USER_MAX bytes are assigned
 * without it. An experiment id names the same arms only within one
 * snapshot, so the owner calls reg_arm_memo_reset whenever it swaps
 * snapshots (O(1): entries of an older epoch are misses). Not thread-safe:
 * one owner.
 */
#define REG_MEMO_USER_MAX 120
struct reg_arm_memo;
struct reg_experiment;
struct reg_arm_memo *reg_arm_memo_new(void);
void reg_arm_memo_reset(struct reg_arm_memo *m);
void reg_arm_memo_free(struct reg_arm_memo *m);
/* Starts loading what a lookup of user_id (a string that stays put until
 * that lookup) reads, and keeps its hash for the next lookup of the same
 * id; m may be NULL. */
void reg_arm_memo_prefetch(struct reg_arm_memo *m, const char *user_id);
/* reg_assign for experiment e, through the memo (NULL: none) */
int reg_assign_memo(struct reg_arm_memo *m, const struct reg_experiment *e,
                    const char *user_id);
/* SipHash-2-4 of data under key (the memo's tags; exposed for tests) */
uint64_t reg_siphash24(const uint64_t key[2], const void *data, size_t len);
/* lookups, and those that found the user (for tests) */
void reg_arm_memo_stats(const struct reg_arm_memo *m, unsigned long *lookups,
                        unsigned long *hits);

struct reg_experiment {
    int64_t id;
    char *name;              /* owned: "<prompt>@<label>", the hashing key */
    char *prompt;            /* owned */
    char *label;             /* owned */
    char *salt;              /* owned */
    int running;             /* 1 running, 0 stopped */
    char *started_at;        /* owned */
    char *stopped_at;        /* owned, NULL while running */
    char *started_by;        /* owned */
    size_t n_arms;
    struct reg_arm *arms;    /* owned: n_arms entries */
};
void reg_experiment_free(struct reg_experiment *e);

/*
 * Start an experiment on `label` of prompt `name` splitting its traffic
 * between `arms` (versions must exist, weights > 0 and summing to 100,
 * distinct versions, 2..REG_ARMS_MAX arms). salt NULL or "" picks a random
 * one. At most one running experiment per label. `*id_out` may be NULL.
 */
int reg_experiment_start(struct reg_db *db, const char *name,
                         const char *label, const struct reg_arm *arms,
                         size_t n_arms, const char *salt, const char *actor,
                         int64_t *id_out, char **err);

/*
 * Stop the running experiment of prompt `name` on `label` (label NULL: the
 * only running experiment of that prompt; an error if there are several).
 */
int reg_experiment_stop(struct reg_db *db, const char *name, const char *label,
                        char **err);

/* Experiments (prompt NULL: all), newest first; running_only filters. */
int reg_experiment_list(struct reg_db *db, const char *prompt, int running_only,
                        struct reg_experiment ***out, size_t *n, char **err);
void reg_experiment_list_free(struct reg_experiment **list, size_t n);

/*
 * For the evaluator's sample-ratio-mismatch check: the running experiment of
 * prompt `name` (on `label` when not NULL), or else the most recently started
 * one. Returns a new reg_experiment (free with reg_experiment_free) holding
 * the arms and weights, or NULL with an error when the prompt never had one.
 */
struct reg_experiment *reg_experiment_weights(struct reg_db *db,
                                              const char *name,
                                              const char *label, char **err);

/* ---- evaluator runs ----------------------------------------------------- */

/*
 * Record an evaluator run against `prompt` version `version` (the version
 * must exist in the registry): `source` is the samples file name, and
 * `summary_json` a JSON text (validated, at most REG_SUMMARY_MAX bytes).
 * `*id_out` (may be NULL) receives the new run id.
 */
int reg_eval_run_add(struct reg_db *db, const char *prompt, int version,
                     const char *source, const char *summary_json,
                     int64_t *id_out, char **err);

/* Runs recorded for `prompt` (NULL: all), newest first, as a new JSON array
 * of {"id","created_at","prompt","version","source","summary"}. */
json_t *reg_eval_run_list(struct reg_db *db, const char *prompt, char **err);

/* ---- export / import / diff --------------------------------------------- */

/* The whole registry as one new JSON document (format "promptgate-registry"). */
json_t *reg_export(struct reg_db *db, char **err);

/*
 * Import a document made by reg_export, in one transaction. Idempotent:
 * existing identical versions are skipped, labels and experiments already
 * in place are left alone. A version whose number exists with other content
 * is a conflict and nothing is changed. Counts (may be NULL) say what was
 * added.
 */
struct reg_import_counts {
    int prompts, versions, labels, experiments;
};
int reg_import(struct reg_db *db, const json_t *doc, const char *actor,
               struct reg_import_counts *counts, char **err);

/*
 * A unified diff (like `diff -u`) between two versions' templates and
 * params, as a malloc'd string ("" when they are equal).
 */
char *reg_diff(const struct reg_version *a, const struct reg_version *b,
               char **err);

/* ---- snapshot for the gateway ------------------------------------------- */

struct reg_snapshot;

/*
 * Load every prompt, version, label and running experiment from the
 * registry at `path` (opened read-only; the schema must be the one this
 * binary speaks) into a new immutable snapshot with refcount 1.
 */
struct reg_snapshot *reg_snapshot_load(const char *path, char **err);
struct reg_snapshot *reg_snapshot_ref(struct reg_snapshot *snap);
void reg_snapshot_unref(struct reg_snapshot *snap);

/*
 * Change detection, for reloading snapshots without a restart: a watch
 * keeps a read-only connection on `path`. reg_watch_changed() returns 1 when
 * the registry changed since the previous call (always on the first call,
 * and when the file was replaced), 0 when not, -1 with an error when it
 * cannot be read (the caller keeps its last good snapshot). One pragma and
 * one stat() per call: fine on a timer. Not thread-safe: one owner.
 */
struct reg_watch;
struct reg_watch *reg_watch_new(const char *path, char **err);
int reg_watch_changed(struct reg_watch *w, char **err);
void reg_watch_free(struct reg_watch *w);
/* A short text that changes when what a snapshot holds may have changed
 * (prompts, versions, labels, experiments), and not on other writes such
 * as exposures. `out` receives at most outlen bytes (128 is plenty). */
int reg_watch_stamp(struct reg_watch *w, char *out, size_t outlen, char **err);

/* Counts, for logs and /metrics. */
size_t reg_snapshot_prompts(const struct reg_snapshot *snap);
size_t reg_snapshot_versions(const struct reg_snapshot *snap);

struct reg_resolved {
    const struct reg_version *version;      /* borrowed from the snapshot */
    const struct reg_experiment *experiment;/* borrowed; NULL when none applied */
    int arm;                                /* arm index, -1 when none */
    const char *label;                      /* borrowed: label resolved, or NULL */
};

/*
 * Resolve what to serve for prompt `name`: version `version` when > 0, else
 * `label` (NULL or "" means "latest"). When a running experiment splits that
 * label, `user_id` is assigned an arm (reg_assign) and the arm's version is
 * served. Thread-safe. Returns -1 with an error naming the unknown prompt,
 * label or version.
 */
int reg_snapshot_resolve(const struct reg_snapshot *snap, const char *name,
                         const char *label, int version, const char *user_id,
                         struct reg_resolved *out, char **err);
/* The same, assigning arms through a memo (reg_arm_memo; NULL: none) that
 * the caller resets when it moves to another snapshot. */
int reg_snapshot_resolve_memo(const struct reg_snapshot *snap,
                              const char *name, const char *label,
                              int version, const char *user_id,
                              struct reg_arm_memo *memo,
                              struct reg_resolved *out, char **err);

/* ---- exposures and outcomes (the gateway's A/B log) --------------------- */

#define REG_REQUEST_ID_MAX  128       /* request id bytes */
#define REG_EVENT_MAX       64        /* feedback event name bytes */
#define REG_USER_MAX        256       /* user id bytes */

/* One request served with a registry prompt. Every pointer is borrowed
 * and may be NULL unless said otherwise; numbers < 0 mean unknown. */
struct reg_exposure {
    const char *request_id;  /* required */
    const char *at;          /* ISO-8601 UTC, YYYY-MM-DDTHH:MM:SS[.fff]Z;
                                NULL: at_ms */
    int64_t at_ms;           /* when at is NULL: ms since the epoch */
    const char *key_name;
    const char *user_id;
    const char *prompt;      /* required */
    int version;             /* required, >= 1 */
    const char *label;
    int64_t experiment_id;   /* 0 when no experiment applied */
    const char *experiment;  /* "<prompt>@<label>" */
    int arm;                 /* -1 when none */
    const char *model;
    const char *backend;
    int status;
    int stream;
    double latency_ms;
    long prompt_tokens, completion_tokens, total_tokens;
    const char *cache;       /* "hit", "miss", "bypass" or NULL */
    const char *variables;   /* JSON object text; NULL means {} */
    int variables_json;      /* 1: variables is known to be valid JSON
                                (the caller parsed it) and is stored as
                                is; 0: stored as a string holding it,
                                parsed when read */
    const char *output;      /* the generated text, NULL when not logged */
};

/* One business outcome: `event` ([a-z0-9_.-], <= REG_EVENT_MAX) of
 * request `request_id` (<= REG_REQUEST_ID_MAX), with a value. */
struct reg_feedback {
    const char *request_id;
    const char *event;
    double value;
    const char *at;          /* ISO-8601 UTC */
};

/* A growable byte buffer (registry/buf.c): {0} is an empty one; p is
 * NUL-terminated once anything was added. */
struct reg_buf {
    char *p;                 /* owned: malloc'd */
    size_t len, cap;
};

/* Makes room for `more` bytes and a NUL after len: 0, or -1 when out of
 * memory (b as it was). */
int reg_buf_reserve(struct reg_buf *b, size_t more);

/* Appends s[0..n), NUL-terminated: 0, or -1 when out of memory. */
static inline int reg_buf_add(struct reg_buf *b, const void *s, size_t n)
{
    if (b->len + n + 1 > b->cap && reg_buf_reserve(b, n) < 0)
        return -1;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

/* reg_buf_add as a reg_emit_fn (arg: the struct reg_buf) */
int reg_buf_emit(void *arg, const char *data, size_t len);

#define REG_JSON_TYPED 1     /* "type": "exposure" first (JSON-lines log) */
#define REG_JSON_NULLS 2     /* unknown members as null, not left out */

/* Appends the record as one JSON object, the form of the JSON-lines log
 * (with REG_JSON_TYPED | REG_JSON_NULLS) and of a chunk's elements (0):
 * strings escaped (invalid UTF-8 as U+FFFD), variables as given when
 * variables_json, else as a string. 0, or -1 when out of memory. */
int reg_exposure_json(struct reg_buf *b, const struct reg_exposure *e,
                      int flags);
/* {"type": "feedback", "request_id", "event", "value", "at"} */
int reg_feedback_json(struct reg_buf *b, const struct reg_feedback *f);

/* The exposure log's writer: a connection tuned for a write-heavy log
 * with its INSERT statements prepared once. One thread at a time.
 * Exposures are stored as chunks (table exposure_chunks, migration 0005):
 * up to 256 records of one experiment to a row, as a JSON array of
 * records, each an array of its members by place (migration 0006); the
 * view `exposures` shows one row per exposure. */
struct reg_exposure_log;

/* Open the registry at `path` (it must exist; migrated) for appending
 * exposures. NULL with *err set on failure. */
struct reg_exposure_log *reg_exposure_log_open(const char *path, char **err);

/* reg_exposures_write through the log's prepared statements. */
int reg_exposure_log_write(struct reg_exposure_log *log,
                           const struct reg_exposure *ex, size_t n_ex,
                           const struct reg_feedback *fb, size_t n_fb,
                           int *fb_added, char **err);

/*
 * The same transaction in parts, for a writer that hands its records over
 * a slice at a time (while they are still in its cache): begin, any number
 * of adds and feedbacks, then commit. A failed add or feedback (a bad
 * record: nothing of the transaction is kept) rolls the whole transaction
 * back itself; a failed commit too. 0 or -1 with *err set.
 */
int reg_exposure_log_begin(struct reg_exposure_log *log, char **err);
int reg_exposure_log_add(struct reg_exposure_log *log,
                         const struct reg_exposure *ex, size_t n, char **err);
/* `*added` (may be NULL) is increased by the rows added */
int reg_exposure_log_feedback(struct reg_exposure_log *log,
                              const struct reg_feedback *fb, size_t n,
                              int *added, char **err);
int reg_exposure_log_commit(struct reg_exposure_log *log, char **err);

/* NULL is a no-op. */
void reg_exposure_log_free(struct reg_exposure_log *log);

/* 1 when `s` is a valid feedback event name */
int reg_event_valid(const char *s);

/*
 * Append exposures and feedback in one transaction (retried on busy).
 * Feedback is idempotent per (request_id, event): a repeat is skipped and
 * not counted. `*fb_added` (may be NULL) receives the feedback rows added.
 * Bad records (missing required fields) fail the whole batch.
 */
int reg_exposures_write(struct reg_db *db, const struct reg_exposure *ex,
                        size_t n_ex, const struct reg_feedback *fb,
                        size_t n_fb, int *fb_added, char **err);

/* Called once per sample by reg_samples_export; `sample` is borrowed
 * (the callback takes a reference to keep it). Non-zero stops the export. */
typedef int (*reg_sample_cb)(void *arg, json_t *sample);

/*
 * The A/B samples of experiment `experiment` ("<prompt>@<label>" or a
 * prompt name: its newest experiment on that label, or of that prompt),
 * one per exposure, oldest first, in the evaluator's input format:
 * {"id", "prompt", "version", "arm", "experiment", "user", "at",
 *  "variables", ["facts",] ["output",] "impressions", "clicks",
 *  "conversions", "outcomes": {event: value}, "status", "model"}.
 * `facts` is the variable "facts" when it is an object, or a string that
 * holds a JSON object. impressions is 1 for a 2xx answer, 0 for a failed
 * one (it showed nothing); clicks/conversions are 1 when feedback "click" /
 * "conversion" with a non-zero value exists. `since` (may be NULL) keeps
 * exposures at or after that ISO-8601 time. `*count` receives the samples.
 */
int reg_samples_export(struct reg_db *db, const char *experiment,
                       const char *since, reg_sample_cb cb, void *arg,
                       size_t *count, char **err);

/* The same, from a JSON-lines exposure log (the gateway's "exposures":
 * FILE mode): records {"type": "exposure", "request_id", "at", "user",
 * "prompt", "version", "experiment", "arm", "variables", "output",
 * "status", "model", ...} and {"type": "feedback", "request_id", "event",
 * "value", "at"}. */
int reg_samples_export_file(const char *path, const char *experiment,
                            const char *since, reg_sample_cb cb, void *arg,
                            size_t *count, char **err);


#endif
