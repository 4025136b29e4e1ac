/*
 * eval.c - evaluator runs recorded against prompt versions (table
 * eval_runs, migration 0002). The evaluator calls reg_eval_run_add() after
 * scoring; promptctl and reports read them back with reg_eval_run_list().
 *
 * Invariant: a run names a version that exists in the registry, and its
 * summary is valid JSON (checked here and by the schema).
 */
#include <stdlib.h>
#include <string.h>
#include "registry/internal.h"

int reg_eval_run_add(struct reg_db *db, const char *prompt, int version,
                     const char *source, const char *summary_json,
                     int64_t *id_out, char **err)
{
    sqlite3_stmt *st = NULL;
    json_error_t jerr;
    json_t *summary;
    int64_t pid;
    int rc;

    if (!reg_name_valid(prompt)) {
        reg_err(err, "invalid prompt name '%s'", prompt ? prompt : "");
        return -1;
    }
    if (version < 1) {
        reg_err(err, "invalid version %d for '%s'", version, prompt);
        return -1;
    }
    if (source == NULL)
        source = "";
    if (strlen(source) > REG_SOURCE_MAX) {
        reg_err(err, "source name is longer than %d bytes", REG_SOURCE_MAX);
        return -1;
    }
    if (summary_json == NULL || strlen(summary_json) > REG_SUMMARY_MAX) {
        reg_err(err, "eval summary is missing or longer than %d bytes",
                REG_SUMMARY_MAX);
        return -1;
    }
    summary = json_loads(summary_json, JSON_DECODE_ANY, &jerr);
    if (summary == NULL) {
        reg_err(err, "invalid eval summary JSON: %s (line %d)", jerr.text,
                jerr.line);
        return -1;
    }
    json_decref(summary);
    if (reg_db_begin(db, err) < 0)
        return -1;
    if ((pid = reg_db_prompt_id(db, prompt, err)) <= 0)
        goto fail;
    st = reg_db_prepare(db, "SELECT 1 FROM versions WHERE prompt_id = ? AND version = ?", err);
    if (st == NULL)
        goto fail;
    sqlite3_bind_int64(st, 1, pid);
    sqlite3_bind_int(st, 2, version);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    st = NULL;
    if (rc != SQLITE_ROW) {
        reg_err(err, "prompt '%s' has no version %d", prompt, version);
        goto fail;
    }
    st = reg_db_prepare(db, "INSERT INTO eval_runs (prompt, version, source, summary)"
                        " VALUES (?, ?, ?, ?)", err);
    if (st == NULL)
        goto fail;
    sqlite3_bind_text(st, 1, prompt, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, version);
    sqlite3_bind_text(st, 3, source, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, summary_json, -1, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_DONE) {
        reg_err(err, "cannot record eval run: %s", sqlite3_errmsg(db->sql));
        goto fail;
    }
    sqlite3_finalize(st);
    if (id_out)
        *id_out = sqlite3_last_insert_rowid(db->sql);
    return reg_db_commit(db, err);
fail:
    sqlite3_finalize(st);
    reg_db_rollback(db);
    return -1;
}

json_t *reg_eval_run_list(struct reg_db *db, const char *prompt, char **err)
{
    sqlite3_stmt *st;
    json_t *out = json_array();
    int rc;

    st = reg_db_prepare(db, "SELECT id, created_at, prompt, version, source, summary"
                        " FROM eval_runs WHERE (?1 IS NULL OR prompt = ?1)"
                        " ORDER BY id DESC", err);
    if (st == NULL || out == NULL)
        goto fail;
    if (prompt)
        sqlite3_bind_text(st, 1, prompt, -1, SQLITE_STATIC);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        json_t *summary = json_loads((const char *)sqlite3_column_text(st, 5),
                                     JSON_DECODE_ANY, NULL);
        json_array_append_new(out, json_pack("{sI ss ss si ss so}",
            "id", (json_int_t)sqlite3_column_int64(st, 0),
            "created_at", (const char *)sqlite3_column_text(st, 1),
            "prompt", (const char *)sqlite3_column_text(st, 2),
            "version", sqlite3_column_int(st, 3),
            "source", (const char *)sqlite3_column_text(st, 4),
            "summary", summary ? summary : json_null()));
    }
    if (rc != SQLITE_DONE) {
        reg_err(err, "cannot list eval runs: %s", sqlite3_errmsg(db->sql));
        goto fail;
    }
    sqlite3_finalize(st);
    return out;
fail:
    sqlite3_finalize(st);
    json_decref(out);
    return NULL;
}
