/*
 * fuzz_import.c - libFuzzer target: `promptctl import FILE` (registry
 * import.c's reg_import, on the document promptctl parses).
 *
 * The input is the file. As cmd_import in registry/promptctl.c does, it is
 * parsed with JSON_REJECT_DUPLICATES and imported into a registry. The
 * registry is a real SQLite file in a temporary directory, reset before
 * each input to a template holding prompt "copy" version 1 and a label
 * (sqlite3_backup from a second database): imports meet existing content,
 * conflicts included. Checked:
 *  - a failed import names its reason and changes nothing;
 *  - a successful import is idempotent: the same document again adds
 *    nothing (registry.h);
 *  - the database keeps its foreign keys.
 */
#include "registry/registry.h"

#include <errno.h>
#include <jansson.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static struct reg_db *db, *tmpl;

static void die(const char *what, const char *err)
{
    fprintf(stderr, "fuzz_import: %s: %s\n", what, err ? err : "");
    abort();
}

static void publish(struct reg_db *d, const char *name, const char *content)
{
    json_t *messages = NULL, *params = NULL;
    char *err = NULL;
    int version, created;

    if (reg_content_parse(content, strlen(content), &messages, &params,
                          &err) < 0 ||
        reg_publish(d, name, messages, params, "seed", "fuzz", "seeded",
                    &version, &created, &err) < 0)
        die(name, err);
    json_decref(messages);
    json_decref(params);
}

static void unlink_db(const char *dir, const char *name)
{
    static const char *const sfx[] = {"", "-wal", "-shm", NULL};
    char path[128];
    size_t i;

    for (i = 0; sfx[i]; i++) {
        snprintf(path, sizeof(path), "%s/%s%s", dir, name, sfx[i]);
        unlink(path);
    }
}

static void setup(void)
{
    static char dir[] = "/tmp/fuzz_import.XXXXXX";
    char path[128], *err = NULL;

    if (mkdtemp(dir) == NULL)
        die("mkdtemp", strerror(errno));
    snprintf(path, sizeof(path), "%s/template.db", dir);
    if ((tmpl = reg_db_open(path, REG_DB_CREATE, &err)) == NULL)
        die("template", err);
    publish(tmpl, "copy", "Write copy for {{product}} in a {{tone}} voice.\n");
    if (reg_label_set(tmpl, "copy", 1, "production", "fuzz", &err) < 0)
        die("label", err);
    snprintf(path, sizeof(path), "%s/registry.db", dir);
    if ((db = reg_db_open(path, REG_DB_CREATE, &err)) == NULL)
        die("registry", err);
    /* a scratch file: durability does not matter, speed does */
    sqlite3_exec(reg_db_handle(db), "PRAGMA synchronous=OFF", NULL, NULL,
                 NULL);
    /* the files go now; the open handles keep them while the process
     * runs */
    unlink_db(dir, "template.db");
    unlink_db(dir, "registry.db");
    rmdir(dir);
}

/* The registry back to the template. */
static void reset(void)
{
    sqlite3_backup *b = sqlite3_backup_init(reg_db_handle(db), "main",
                                            reg_db_handle(tmpl), "main");

    if (b == NULL || sqlite3_backup_step(b, -1) != SQLITE_DONE)
        die("reset", sqlite3_errmsg(reg_db_handle(db)));
    sqlite3_backup_finish(b);
}

/* A text that changes when the registry's content does. */
static char *content(void)
{
    static const char *const sql =
        "SELECT (SELECT count(*) FROM prompts) || '/' ||"
        " (SELECT count(*) FROM versions) || '/' ||"
        " (SELECT count(*) FROM labels) || '/' ||"
        " (SELECT count(*) FROM experiments)";
    sqlite3_stmt *st;
    char *s;

    if (sqlite3_prepare_v2(reg_db_handle(db), sql, -1, &st, NULL) !=
            SQLITE_OK ||
        sqlite3_step(st) != SQLITE_ROW)
        die("count", sqlite3_errmsg(reg_db_handle(db)));
    s = strdup((const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    return s;
}

static void foreign_keys_hold(void)
{
    sqlite3_stmt *st;

    if (sqlite3_prepare_v2(reg_db_handle(db), "PRAGMA foreign_key_check", -1,
                           &st, NULL) != SQLITE_OK)
        die("foreign_key_check", sqlite3_errmsg(reg_db_handle(db)));
    if (sqlite3_step(st) == SQLITE_ROW)
        die("a foreign key is broken after import",
            (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct reg_import_counts n1, n2;
    json_error_t e;
    json_t *doc;
    char *err = NULL, *before, *after, *before2;

    if (db == NULL)
        setup();
    doc = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &e);
    if (doc == NULL)
        return 0;
    reset();
    before = content();
    if (reg_import(db, doc, "fuzz", &n1, &err) < 0) {
        if (err == NULL || *err == '\0')
            die("import failed without a reason", NULL);
        after = content();
        if (strcmp(before, after) != 0)
            die("a failed import changed the registry", err);
        free(after);
        free(err);
    } else {
        foreign_keys_hold();
        after = content();
        if (reg_import(db, doc, "fuzz", &n2, &err) < 0)
            die("the same document again failed", err);
        if (n2.prompts || n2.versions || n2.labels || n2.experiments)
            die("importing the same document twice added more", NULL);
        before2 = content();
        if (strcmp(before2, after) != 0)
            die("importing the same document twice changed the registry",
                NULL);
        free(before2);
        free(after);
    }
    free(before);
    json_decref(doc);
    return 0;
}
