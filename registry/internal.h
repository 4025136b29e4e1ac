/*
 * internal.h - declarations shared by the files of libregistry only.
 * Nothing outside registry/ includes this: the public face is registry.h.
 */
#ifndef REGISTRY_INTERNAL_H
#define REGISTRY_INTERNAL_H

#include <sqlite3.h>
#include <stdarg.h>
#include "registry/registry.h"

/* a migration embedded at build time (registry/embed.sh) */
struct reg_migration_src {
    int version;
    const char *name;        /* borrowed: static "0001_init" */
    const char *sql;         /* borrowed: static text of the file */
};
extern const struct reg_migration_src reg_migration_srcs[];
extern const int reg_migration_count;

struct reg_db {
    sqlite3 *sql;            /* owned */
    char *path;              /* owned */
};

/* db.c */
void reg_err(char **err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
int reg_db_configure(sqlite3 *sql, const char *path, int readonly, char **err);
int reg_db_begin(struct reg_db *db, char **err);   /* BEGIN IMMEDIATE, retried */
int reg_db_commit(struct reg_db *db, char **err);
void reg_db_rollback(struct reg_db *db);
sqlite3_stmt *reg_db_prepare(struct reg_db *db, const char *sql, char **err);
int reg_db_exec(struct reg_db *db, const char *sql, char **err);
/* prompt id by name: >0 found, 0 absent (error set), -1 sql error */
int64_t reg_db_prompt_id(struct reg_db *db, const char *name, char **err);
char *reg_strdup_col(sqlite3_stmt *st, int col);      /* NULL column -> NULL */
char *reg_strdup_col0(sqlite3_stmt *st, int col);     /* NULL column -> "" */
int reg_sha256_hex(const void *data, size_t len, char out[65]);
/* strerror, lowercased (thread-local buffer) */
const char *reg_strerror(int errnum);

/* migrate.c */
int reg_migrate_apply(struct reg_db *db, int apply, char **err);
/* read-only check that `sql` is exactly at this binary's schema */
int reg_migrate_check_current(sqlite3 *sql, const char *path, char **err);

/* prompt.c */
struct reg_version *reg_version_from_row(sqlite3_stmt *st, const char *prompt,
                                         char **err);
char *reg_content_hash(const json_t *messages, const json_t *params);
int reg_content_check(const json_t *messages, const json_t *params, char **err);
int reg_text_check(const char *what, const char *s, size_t max, char **err);

/* label.c: a label's current version (>0; 0 when unset; -1 on error) */
int reg_label_current(struct reg_db *db, int64_t pid, const char *label,
                      char **err);

/* label.c: point a label without recording a move (import of a history
 * that came verbatim), inside the caller's transaction */
int reg_label_point(struct reg_db *db, int64_t pid, const char *label, int to,
                    const char *actor, char **err);

/* label.c: point a label and record the move, inside the caller's transaction */
int reg_label_move(struct reg_db *db, int64_t pid, const char *label, int from,
                   int to, const char *action, const char *actor, char **err);

/* message.c: decode stored messages JSON into one owned block */
struct reg_message *reg_message_decode(const char *json, size_t len, size_t *n,
                                       char **err);
json_t *reg_message_json(const struct reg_message *msgs, size_t n);

/* experiment.c */
struct reg_experiment *reg_experiment_from_row(struct reg_db *db,
                                               sqlite3_stmt *st, char **err);

#endif
