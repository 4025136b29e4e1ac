/*
 * test_reg_util.h - helpers shared by the registry's cmocka tests:
 * temporary registry files that are removed afterwards.
 */
#ifndef TEST_REG_UTIL_H
#define TEST_REG_UTIL_H

#include "registry/registry.h"

/* a fresh "<tmpdir>/reg.db" path (malloc'd); the directory exists */
char *treg_tmpdb(void);
/* remove the database, its -wal/-shm files and the directory; frees path */
void treg_cleanup(char *path);
/* open (creating) or fail the test */
struct reg_db *treg_open(const char *path);
/* publish plain or JSON text as the next version, or fail the test */
int treg_publish(struct reg_db *db, const char *name, const char *text);
/* run SQL directly (for tamper tests); returns sqlite's result code */
int treg_sql(struct reg_db *db, const char *sql);

#endif
