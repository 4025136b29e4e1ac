/*
 * exposure.c - the exposure writer's CPU a record (issue 7), without a
 * gateway around it: records like the prompt bench's (contrib/bench/
 * prompt.sh: a 50/50 experiment, 2,000 users, two Chinese variables) are
 * pushed at about 60,000 a second into gw_exposure, the writer thread the
 * gateway runs, and the process's CPU time minus this thread's is the
 * writer's. The figure moves with the host; compare builds or options in
 * alternation, not against a number.
 *
 *   make bin/exposure-bench
 *   bin/exposure-bench [--records N] [--page-size BYTES] [--keep] DB
 *
 * DB must not exist: it is created as `promptctl init` would (with
 * --page-size, that SQLite page size instead of the registry's) and
 * removed after the run unless --keep.
 */
#include "gateway/exposure.h"

#include <errno.h>
#include <getopt.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PER_SLICE 1000 /* records pushed between two 16 ms sleeps */

static double secs(struct timeval t)
{
    return (double)t.tv_sec + (double)t.tv_usec / 1e6;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: exposure-bench [--records N] [--page-size BYTES] "
            "[--keep] DB\n"
            "  the exposure writer thread's CPU a record, records pushed at "
            "about 60,000/s\n"
            "  --records N        records to write (default 300000)\n"
            "  --page-size BYTES  create DB with this SQLite page size "
            "(512..65536, a power of two)\n"
            "  --keep             keep DB (and its WAL) after the run\n");
}

/* creates the registry at path, with the page size asked for (0: the
 * registry's own) set before any table exists */
static int create_db(const char *path, long page_size)
{
    sqlite3 *db = NULL;
    struct reg_db *reg;
    char sql[64], *e = NULL;
    int rc = SQLITE_OK;

    if (page_size > 0) {
        if (sqlite3_open(path, &db) != SQLITE_OK) {
            fprintf(stderr, "exposure-bench: cannot create '%s': %s\n", path,
                    sqlite3_errmsg(db));
            sqlite3_close(db);
            return -1;
        }
        snprintf(sql, sizeof(sql), "PRAGMA page_size = %ld; VACUUM",
                 page_size);
        rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
        sqlite3_close(db);
    }
    if (rc != SQLITE_OK || (reg = reg_db_open(path, REG_DB_CREATE, &e)) == NULL) {
        fprintf(stderr, "exposure-bench: cannot create '%s': %s\n", path,
                e ? e : "page size refused");
        free(e);
        return -1;
    }
    reg_db_free(reg);
    return 0;
}

static int push_one(struct gw_exposure *w, long i, int64_t now)
{
    static const char vars[] =
        "{\"product\":\"316不锈钢真空保温杯\",\"points\":\"保温时长、轻便和"
        "单手开盖\"}";
    char rid[40], uid[16];
    const char *rs[7], *kept[7];
    size_t rl[7], need = 0;
    struct gw_exposure_rec *r;
    int k;

    snprintf(rid, sizeof(rid), "%016llx%08lx", (unsigned long long)now, i);
    snprintf(uid, sizeof(uid), "user-%ld", i % 2000);
    rs[0] = rid, rs[1] = "bench_copy", rs[2] = "production", rs[3] = uid;
    rs[4] = "bench", rs[5] = "bench_copy@production", rs[6] = vars;
    /* as the gateway makes them: the members many records share (prompt,
     * label, key, experiment, model, backend) kept by the writer, the
     * others copied into the record */
    for (k = 0; k < 7; k++) {
        rl[k] = strlen(rs[k]);
        kept[k] = k == 1 || k == 2 || k == 4 || k == 5
                ? gw_exposure_intern(w, rs[k], rl[k]) : NULL;
        if (kept[k] == NULL)
            need += rl[k] + 1;
    }
    if ((r = gw_exposure_rec_new(GW_EXPOSURE, need)) == NULL)
        return -1;
    for (k = 0; k < 7; k++)
        rs[k] = kept[k] ? kept[k] : gw_exposure_rec_str(r, rs[k], rl[k]);
    r->owner = r;
    r->at_us = now + i * 16;
    r->ex.request_id = rs[0], r->ex.prompt = rs[1], r->ex.label = rs[2];
    r->ex.user_id = rs[3], r->ex.key_name = rs[4];
    r->ex.version = 1 + (int)(i & 1);
    r->ex.experiment_id = 1, r->ex.experiment = rs[5], r->ex.arm = (int)(i & 1);
    r->ex.variables = rs[6];
    r->truncated = 1; /* no output kept */
    r->ex.status = 200;
    r->ex.latency_ms = 0.4 + (double)(i % 97) / 1000.0;
    r->ex.prompt_tokens = 60, r->ex.completion_tokens = 48;
    r->ex.total_tokens = 108;
    r->ex.cache = "miss";
    r->ex.model = gw_exposure_intern(w, "gpt-4o-mini", 11);
    r->ex.backend = gw_exposure_intern(w, "mock", 4);
    return gw_exposure_push(w, r);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"records", required_argument, NULL, 'n'},
        {"page-size", required_argument, NULL, 'p'},
        {"keep", no_argument, NULL, 'k'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    long total = 300000, page_size = 0, i, dropped = 0;
    int keep = 0, c;
    char err[512], *end;
    const char *path;
    struct gw_exposure *w;
    struct gw_exposure_stats st;
    struct rusage p0, p1, t0, t1;
    struct timespec ts, slice = {0, 16 * 1000000L};
    struct stat sb;
    int64_t now;

    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'n':
            total = strtol(optarg, &end, 10);
            if (*end || total < 1 || total > 100000000) {
                fprintf(stderr, "exposure-bench: --records wants 1.."
                        "100000000, not '%s'\n", optarg);
                return 2;
            }
            break;
        case 'p':
            page_size = strtol(optarg, &end, 10);
            if (*end || page_size < 512 || page_size > 65536 ||
                (page_size & (page_size - 1))) {
                fprintf(stderr, "exposure-bench: --page-size wants a power "
                        "of two in 512..65536, not '%s'\n", optarg);
                return 2;
            }
            break;
        case 'k':
            keep = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc - 1) {
        usage(stderr);
        return 2;
    }
    path = argv[optind];
    if (stat(path, &sb) == 0) {
        fprintf(stderr, "exposure-bench: '%s' exists; give a new path (the "
                "run creates and removes it)\n", path);
        return 2;
    }
    if (create_db(path, page_size) < 0)
        return 1;
    if ((w = gw_exposure_new(path, NULL, 65536, err, sizeof(err))) == NULL) {
        fprintf(stderr, "exposure-bench: %s\n", err);
        return 1;
    }
    clock_gettime(CLOCK_REALTIME, &ts);
    now = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
    getrusage(RUSAGE_SELF, &p0);
    getrusage(RUSAGE_THREAD, &t0);
    for (i = 0; i < total; i++) {
        if (push_one(w, i, now) < 0)
            dropped++;
        if (i % PER_SLICE == PER_SLICE - 1)
            nanosleep(&slice, NULL);
    }
    gw_exposure_flush(w);
    getrusage(RUSAGE_SELF, &p1);
    getrusage(RUSAGE_THREAD, &t1);
    gw_exposure_stats(w, &st);
    gw_exposure_free(w);
    printf("{\"records\": %ld, \"written\": %lu, \"dropped\": %lu, "
           "\"writer_user_us\": %.3f, \"writer_sys_us\": %.3f}\n",
           total, st.written, st.dropped + (unsigned long)dropped,
           ((secs(p1.ru_utime) - secs(p0.ru_utime)) -
            (secs(t1.ru_utime) - secs(t0.ru_utime))) * 1e6 / (double)total,
           ((secs(p1.ru_stime) - secs(p0.ru_stime)) -
            (secs(t1.ru_stime) - secs(t0.ru_stime))) * 1e6 / (double)total);
    if (!keep) {
        char wal[4096];
        unlink(path);
        snprintf(wal, sizeof(wal), "%s-wal", path);
        unlink(wal);
        snprintf(wal, sizeof(wal), "%s-shm", path);
        unlink(wal);
    }
    return st.written == (unsigned long)total ? 0 : 1;
}
