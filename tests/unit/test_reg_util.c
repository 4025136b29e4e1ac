/*
 * test_reg_util.c - helpers for the registry unit tests (see the header).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sqlite3.h>
#include "tests/unit/test_reg_util.h"

char *treg_tmpdb(void)
{
    char dir[] = "/tmp/test_reg.XXXXXX";
    char *path = NULL;

    assert_non_null(mkdtemp(dir));
    assert_true(asprintf(&path, "%s/reg.db", dir) > 0);
    return path;
}

void treg_cleanup(char *path)
{
    static const char *const sfx[] = {"", "-wal", "-shm", "-journal"};
    char buf[4096];
    char *slash;

    for (int i = 0; i < 4; i++) {
        snprintf(buf, sizeof(buf), "%s%s", path, sfx[i]);
        unlink(buf);
    }
    slash = strrchr(path, '/');
    if (slash) {
        *slash = '\0';
        rmdir(path);
    }
    free(path);
}

struct reg_db *treg_open(const char *path)
{
    char *err = NULL;
    struct reg_db *db = reg_db_open(path, REG_DB_CREATE, &err);

    if (db == NULL)
        fail_msg("open: %s", err);
    return db;
}

int treg_publish(struct reg_db *db, const char *name, const char *text)
{
    json_t *m = NULL, *p = NULL;
    char *err = NULL;
    int v = 0, created = 0;

    if (reg_content_parse(text, strlen(text), &m, &p, &err) < 0)
        fail_msg("parse: %s", err);
    if (reg_publish(db, name, m, p, "msg", "tester", NULL, &v, &created, &err) < 0)
        fail_msg("publish: %s", err);
    json_decref(m);
    json_decref(p);
    return v;
}

int treg_sql(struct reg_db *db, const char *sql)
{
    return sqlite3_exec(reg_db_handle(db), sql, NULL, NULL, NULL);
}
