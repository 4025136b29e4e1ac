/*
 * test_reg_bench.c - the snapshot bar of issue 6: a registry of 1,000
 * prompts with 20 versions each (3 messages, params, 2 variables, two
 * labels, 100 running experiments) loads into an in-memory snapshot in
 * under 200 ms. Builds the registry through reg_import (one transaction),
 * then times reg_snapshot_load over several runs and prints them.
 * Exit status 1 when the best run misses the bar.
 *   usage: test_reg_bench [PROMPTS [VERSIONS]]
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "tests/unit/test_reg_util.h"

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int main(int argc, char **argv)
{
    int np = argc > 1 ? atoi(argv[1]) : 1000, nv = argc > 2 ? atoi(argv[2]) : 20;
    char *path = treg_tmpdb(), *err = NULL;
    struct reg_db *db = treg_open(path);
    json_t *prompts = json_array(), *doc;
    struct reg_import_counts c;
    double t0, best = 1e9;
    int rc = 0;

    for (int p = 0; p < np; p++) {
        json_t *vs = json_array(), *exps = json_array();
        char name[64];
        snprintf(name, sizeof(name), "prompt-%04d", p);
        for (int v = 1; v <= nv; v++) {
            char sys[128], user[256];
            snprintf(sys, sizeof(sys), "You write product copy for shop %d. Style %d.", p, v);
            snprintf(user, sizeof(user), "Write a description of {{product_name}} in"
                     " {{language}}. Keep it under %d words and mention the price.", 50 + v);
            json_array_append_new(vs, json_pack("{si s[{ssss}{ssss}{ssss}] s{sssfsi}}",
                "version", v, "messages",
                "role", "system", "content", sys,
                "role", "user", "content", user,
                "role", "assistant", "content", "Sure. Here is the copy:",
                "params", "model", "qwen2.5-7b", "temperature", 0.7, "max_tokens", 256));
        }
        if (p % 10 == 0)
            json_array_append_new(exps, json_pack("{ss ss ss ss sn ss s[{sisi}{sisi}]}",
                "label", "production", "salt", "s", "status", "running",
                "started_at", "2026-01-01T00:00:00Z", "stopped_at", "started_by", "bench",
                "arms", "version", nv, "weight", 50, "version", nv - 1, "weight", 50));
        json_array_append_new(prompts, json_pack("{ss ss so s{sisi} so}",
            "name", name, "description", "bench prompt", "versions", vs,
            "labels", "production", nv - 1, "staging", nv,
            "experiments", exps));
    }
    doc = json_pack("{ss si so}", "format", "promptgate-registry",
                    "format_version", 1, "prompts", prompts);
    t0 = now_ms();
    if (reg_import(db, doc, "bench", &c, &err) < 0) {
        fprintf(stderr, "import: %s\n", err);
        return 1;
    }
    printf("built %d prompts x %d versions (%d versions) in %.0f ms\n",
           c.prompts, nv, c.versions, now_ms() - t0);
    json_decref(doc);
    reg_db_free(db);
    for (int run = 0; run < 5; run++) {
        struct reg_snapshot *s;
        struct reg_resolved r;
        double ms;
        t0 = now_ms();
        s = reg_snapshot_load(path, &err);
        ms = now_ms() - t0;
        if (s == NULL) {
            fprintf(stderr, "load: %s\n", err);
            return 1;
        }
        if (reg_snapshot_resolve(s, "prompt-0000", "production", 0, "u1", &r, NULL) < 0
            || reg_snapshot_versions(s) != (size_t)np * nv)
            rc = 1;
        printf("snapshot load %d: %.1f ms (%zu prompts, %zu versions)\n", run + 1,
               ms, reg_snapshot_prompts(s), reg_snapshot_versions(s));
        if (run == 0 && np >= 1) {
            /* per-request cost: resolve through a running experiment */
            char id[32];
            int n = 200000;
            t0 = now_ms();
            for (int i = 0; i < n; i++) {
                snprintf(id, sizeof(id), "user-%d", i);
                if (reg_snapshot_resolve(s, "prompt-0000", "production", 0, id, &r,
                                         NULL) < 0 || r.experiment == NULL)
                    rc = 1;
            }
            printf("resolve with experiment: %.2f us each (%d calls)\n",
                   (now_ms() - t0) * 1000.0 / n, n);
        }
        if (ms < best)
            best = ms;
        reg_snapshot_unref(s);
    }
    printf("best %.1f ms: %s the 200 ms bar\n", best, best < 200 ? "meets" : "MISSES");
    treg_cleanup(path);
    return rc || best >= 200;
}
