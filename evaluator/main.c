/*
 * main.c - bin/prompteval: the analysts' command line.
 *
 *   prompteval run SAMPLES [options]      score samples, write reports
 *   prompteval replay SAMPLES [options]   collect fresh outputs through a
 *                                         running promptgate
 *   prompteval bench-parse SAMPLES        (hidden) only parse every line
 *                                         with jansson: the throughput
 *                                         baseline of evaluator/README.md
 *
 * `run` reads the file twice: a fast first pass collects the vocabulary of
 * every attribute (only the `facts` of each line are decoded), the second
 * pass checks and counts every sample. Memory stays bounded by the
 * vocabulary and the number of versions, never by the number of samples.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "evaluator/claim.h"
#include "evaluator/replay.h"
#include "evaluator/report.h"
#include "evaluator/sample.h"
#include "evaluator/score.h"
#include "registry/registry.h"

#define MALFORMED_SHOWN 20

static const char usage_text[] =
    "usage: prompteval run SAMPLES [options]\n"
    "       prompteval replay SAMPLES --gateway URL --key K --prompt NAME\n"
    "                         --versions 3,4 [options]\n"
    "       prompteval COMMAND --help\n"
    "\n"
    "Scores A/B samples per prompt version: the fact-error rate of the\n"
    "generated copy, click-through and conversion rates, with 95% intervals,\n"
    "tests against the control version and a sample-ratio check; writes\n"
    "report.json, report.md and report.html.\n";

static const char run_help[] =
    "usage: prompteval run SAMPLES [options]\n"
    "\n"
    "SAMPLES is a file of JSON lines (or CSV with a header row, by the .csv\n"
    "name or --csv). One line is one exposure:\n"
    "  {\"version\": \"4\", \"id\": \"s1\", \"user\": \"u1\",\n"
    "   \"facts\": {\"颜色\": \"白色\", \"重量\": \"1.2kg\"},\n"
    "   \"output\": \"白色外套，仅重1200克\", \"impressions\": 1, \"clicks\": 1,\n"
    "   \"conversions\": 0}\n"
    "Only `version` is required; impressions default to 1, clicks and\n"
    "conversions to 0.\n"
    "\n"
    "options:\n"
    "  --control V        the control version (default: the lowest version)\n"
    "  --split V:W,...    planned traffic split for the sample-ratio check,\n"
    "                     e.g. 3:50,4:50 (default: the registry experiment\n"
    "                     with --db, else an equal split)\n"
    "  --out DIR          where to write the reports (default: .)\n"
    "  --db PATH          registry database: read the experiment's weights\n"
    "                     and record this run against each version scored\n"
    "  --prompt NAME      prompt name for --db when the samples have none\n"
    "  --max-chars N      also report the share of outputs of at most N\n"
    "                     characters (length compliance)\n"
    "  --lexicon FILE     extra vocabulary: lines `attribute<TAB>value`\n"
    "  --map F=COL,...    read field F from column/key COL, e.g.\n"
    "                     --map version=group,user=user_id,conversions=converted\n"
    "  --csv, --jsonl     force the input format\n"
    "  --strict           fail on the first malformed line (default: report\n"
    "                     it with its line number and skip it)\n"
    "  --tolerance X      relative tolerance for quantities (default 0.02)\n"
    "  --min-chars N      shortest categorical value matched in copy, in\n"
    "                     characters (default 1: 裙 is a word; 2 is stricter,\n"
    "                     flags fewer copies and misses swaps of 裙/裤)\n"
    "  --quiet            no summary table on stdout\n"
    "\n"
    "exit status: 0 reports written, 1 error, 2 usage error.\n"
    "See evaluator/README.md for how each figure is computed.\n";

struct run_opts {
    const char *samples, *control, *split, *out, *db, *prompt, *lexicon, *map;
    long max_chars;
    int csv, strict, quiet, min_chars;
    double tolerance;
};

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int parse_long(const char *s, long lo, long hi, long *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || *s == '\0' || *end != '\0' || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

/* Pass 1: every categorical value of every attribute in the file. */
static struct evl_vocab *build_vocab(struct evl_reader *r,
                                     const struct run_opts *o)
{
    struct evl_vocab *v = evl_vocab_new(o->min_chars);
    struct evl_sample s;
    char *err = NULL;
    int rc;

    if (v == NULL) {
        fprintf(stderr, "prompteval: out of memory\n");
        return NULL;
    }
    while ((rc = evl_reader_next(r, &s, EVL_READ_FACTS, &err)) != 0) {
        if (rc == -2)
            goto fail;
        if (rc < 0)
            continue; /* the second pass reports malformed lines */
        if (s.facts_text == NULL)
            continue; /* no facts, or a facts text already seen */
        if (evl_vocab_add_facts_text(v, s.facts_text, s.facts_text_len,
                                     &err) < 0) {
            if (evl_vocab_full(v)) {
                fprintf(stderr, "prompteval: '%s' line %ld: %s\n", o->samples,
                        s.line, err);
                goto fail_quiet;
            }
            free(err);
            err = NULL;
        }
    }
    if (o->lexicon && evl_vocab_load_lexicon(v, o->lexicon, &err) < 0)
        goto fail;
    if (evl_vocab_build(v, &err) < 0)
        goto fail;
    free(err);
    return v;
fail:
    fprintf(stderr, "prompteval: %s\n", err ? err : "error");
fail_quiet:
    free(err);
    evl_vocab_free(v);
    return NULL;
}

/* --db: the experiment's planned weights, when there is one. */
static int registry_weights(struct reg_db *db, const char *prompt,
                            char names[][24], double *w, const char **ptrs,
                            size_t *n)
{
    char *err = NULL;
    struct reg_experiment *e = reg_experiment_weights(db, prompt, NULL, &err);
    size_t i;

    *n = 0;
    if (e == NULL) {
        fprintf(stderr, "prompteval: no experiment for '%s' in the registry "
                "(%s); checking the sample ratio against an equal split\n",
                prompt, err ? err : "none");
        free(err);
        return 0;
    }
    for (i = 0; i < e->n_arms && i < REG_ARMS_MAX; i++) {
        snprintf(names[i], 24, "%d", e->arms[i].version);
        ptrs[i] = names[i];
        w[i] = e->arms[i].weight;
    }
    *n = i;
    reg_experiment_free(e);
    return 0;
}

static const char *run_prompt(const struct run_opts *o,
                              const struct evl_score *sc)
{
    size_t i;
    const char *p = o->prompt;

    if (p)
        return p;
    for (i = 0; i < sc->n; i++) {
        if (sc->v[i]->prompt[0] == '\0')
            continue;
        if (p && strcmp(p, sc->v[i]->prompt) != 0)
            return NULL;
        p = sc->v[i]->prompt;
    }
    return p;
}

/* --db: record one run per version scored. */
static int record_runs(struct reg_db *db, const char *prompt,
                       const struct evl_score *sc, const char *source)
{
    json_t *rep = evl_report_json(sc, source), *vs = json_object_get(rep, "versions");
    size_t i;
    int rc = 0;

    for (i = 0; i < sc->n && rc == 0; i++) {
        long ver;
        char *err = NULL, *text;
        json_t *sum;
        int64_t id;
        if (parse_long(sc->v[i]->name, 1, INT_MAX, &ver) < 0) {
            fprintf(stderr, "prompteval: cannot record version '%s' in the "
                    "registry: registry versions are numbers\n",
                    sc->v[i]->name);
            rc = -1;
            break;
        }
        sum = json_object();
        json_object_set(sum, "control", json_object_get(rep, "control"));
        json_object_set(sum, "samples_total", json_object_get(rep, "samples"));
        json_object_set(sum, "srm", json_object_get(rep, "srm"));
        json_object_set(sum, "verdict", json_object_get(rep, "verdict"));
        json_object_set(sum, "version", json_array_get(vs, i));
        text = json_dumps(sum, JSON_COMPACT | JSON_REAL_PRECISION(17));
        json_decref(sum);
        if (text == NULL ||
            reg_eval_run_add(db, prompt, (int)ver, source, text, &id, &err) < 0) {
            fprintf(stderr, "prompteval: cannot record the run of '%s' "
                    "version %ld: %s\n", prompt, ver, err ? err : "out of memory");
            rc = -1;
        } else {
            fprintf(stderr, "prompteval: recorded run %lld for %s@%ld\n",
                    (long long)id, prompt, ver);
        }
        free(text);
        free(err);
    }
    json_decref(rep);
    return rc;
}

static int cmd_run(const struct run_opts *o)
{
    struct evl_reader *r = NULL;
    struct evl_vocab *vocab = NULL;
    struct evl_checker *chk = NULL;
    struct evl_score *sc = NULL;
    struct reg_db *db = NULL;
    struct evl_sample s;
    struct evl_check_result res;
    char *err = NULL;
    char reg_names[REG_ARMS_MAX][24];
    const char *reg_ptrs[REG_ARMS_MAX];
    double reg_w[REG_ARMS_MAX], t0 = now_s();
    size_t n_reg = 0;
    const char *prompt = NULL;
    int rc, status = 1;

    if (o->db) {
        db = reg_db_open(o->db, 0, &err);
        if (db == NULL) {
            fprintf(stderr, "prompteval: %s\n", err ? err : "cannot open registry");
            goto done;
        }
    }
    r = evl_reader_open(o->samples, o->csv, o->map, &err);
    if (r == NULL) {
        fprintf(stderr, "prompteval: %s\n", err);
        goto done;
    }
    if ((vocab = build_vocab(r, o)) == NULL)
        goto done;
    chk = evl_checker_new(vocab, o->tolerance);
    sc = evl_score_new(vocab, (size_t)o->max_chars);
    if (chk == NULL || sc == NULL) {
        fprintf(stderr, "prompteval: out of memory\n");
        goto done;
    }
    if (evl_reader_rewind(r, &err) < 0) {
        fprintf(stderr, "prompteval: %s\n", err);
        goto done;
    }
    while ((rc = evl_reader_next(r, &s, EVL_READ_FULL, &err)) != 0) {
        if (rc == 1 && s.output &&
            evl_check(chk, s.facts, s.output, s.output_len, &res, &err) < 0) {
            char *e2 = NULL;
            if (asprintf(&e2, "line %ld: %s", s.line, err) < 0)
                e2 = NULL;
            free(err);
            err = e2;
            rc = -1;
        }
        if (rc == -2) {
            fprintf(stderr, "prompteval: %s\n", err);
            goto done;
        }
        if (rc < 0) {
            sc->malformed++;
            if (o->strict) {
                fprintf(stderr, "prompteval: '%s' %s (--strict: stopping)\n",
                        o->samples, err);
                goto done;
            }
            if (sc->malformed <= MALFORMED_SHOWN)
                fprintf(stderr, "prompteval: '%s' %s; skipped\n", o->samples,
                        err);
            continue;
        }
        if (evl_score_add(sc, &s, s.output ? &res : NULL, &err) < 0) {
            fprintf(stderr, "prompteval: '%s' line %ld: %s\n", o->samples,
                    s.line, err);
            goto done;
        }
    }
    if (sc->malformed > MALFORMED_SHOWN)
        fprintf(stderr, "prompteval: ... %llu malformed lines in all, all "
                "skipped\n", (unsigned long long)sc->malformed);
    if (sc->n == 0) {
        fprintf(stderr, "prompteval: '%s' has no valid samples (each line "
                "needs at least a \"version\")\n", o->samples);
        goto done;
    }
    if (db) {
        prompt = run_prompt(o, sc);
        if (prompt == NULL) {
            fprintf(stderr, "prompteval: --db needs the prompt name: the "
                    "samples carry none or several; give --prompt NAME\n");
            goto done;
        }
        if (o->split == NULL &&
            registry_weights(db, prompt, reg_names, reg_w, reg_ptrs, &n_reg) < 0)
            goto done;
    }
    if (evl_score_finish(sc, o->control, o->split, reg_ptrs, reg_w, n_reg,
                         &err) < 0) {
        fprintf(stderr, "prompteval: %s\n", err);
        goto done;
    }
    if (evl_report_write(sc, o->samples, o->out, &err) < 0) {
        fprintf(stderr, "prompteval: %s\n", err);
        goto done;
    }
    if (!o->quiet)
        evl_report_table(sc, stdout);
    if (db && record_runs(db, prompt, sc, o->samples) < 0)
        goto done;
    fprintf(stderr, "prompteval: %llu samples (%llu malformed) scored in "
            "%.2f s; reports in %s/report.{json,md,html}\n",
            (unsigned long long)sc->samples,
            (unsigned long long)sc->malformed, now_s() - t0, o->out);
    status = 0;
done:
    free(err);
    evl_score_free(sc);
    evl_checker_free(chk);
    evl_vocab_free(vocab);
    evl_reader_free(r);
    reg_db_free(db);
    return status;
}

static int main_run(int argc, char **argv)
{
    static const struct option lo[] = {
        {"control", required_argument, NULL, 'c'},
        {"split", required_argument, NULL, 's'},
        {"out", required_argument, NULL, 'o'},
        {"db", required_argument, NULL, 'd'},
        {"prompt", required_argument, NULL, 'p'},
        {"max-chars", required_argument, NULL, 'm'},
        {"lexicon", required_argument, NULL, 'l'},
        {"map", required_argument, NULL, 'M'},
        {"csv", no_argument, NULL, 'C'},
        {"jsonl", no_argument, NULL, 'J'},
        {"strict", no_argument, NULL, 'S'},
        {"tolerance", required_argument, NULL, 't'},
        {"min-chars", required_argument, NULL, 'n'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    struct run_opts o;
    int c;
    long n;
    char *end;

    memset(&o, 0, sizeof(o));
    o.out = ".";
    o.csv = -1;
    o.min_chars = EVL_MIN_CHARS;
    o.tolerance = 0.02;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (c) {
        case 'c': o.control = optarg; break;
        case 's': o.split = optarg; break;
        case 'o': o.out = optarg; break;
        case 'd': o.db = optarg; break;
        case 'p': o.prompt = optarg; break;
        case 'l': o.lexicon = optarg; break;
        case 'M': o.map = optarg; break;
        case 'C': o.csv = 1; break;
        case 'J': o.csv = 0; break;
        case 'S': o.strict = 1; break;
        case 'q': o.quiet = 1; break;
        case 'm':
            if (parse_long(optarg, 1, 1000000, &o.max_chars) < 0) {
                fprintf(stderr, "prompteval: invalid --max-chars '%s': expected "
                        "1..1000000\n", optarg);
                return 2;
            }
            break;
        case 'n':
            if (parse_long(optarg, 1, 32, &n) < 0) {
                fprintf(stderr, "prompteval: invalid --min-chars '%s': expected "
                        "1..32\n", optarg);
                return 2;
            }
            o.min_chars = (int)n;
            break;
        case 't':
            o.tolerance = strtod(optarg, &end);
            if (*end != '\0' || !(o.tolerance >= 0.0 && o.tolerance < 1.0)) {
                fprintf(stderr, "prompteval: invalid --tolerance '%s': expected "
                        "a number in [0, 1)\n", optarg);
                return 2;
            }
            break;
        case 'h': fputs(run_help, stdout); return 0;
        default:
            fprintf(stderr, "prompteval: see 'prompteval run --help'\n");
            return 2;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "prompteval: run needs exactly one SAMPLES file (see "
                "'prompteval run --help')\n");
        return 2;
    }
    o.samples = argv[optind];
    return cmd_run(&o);
}

/* The throughput baseline: getline + json_loadb + json_decref per line. */
static int main_bench_parse(int argc, char **argv)
{
    FILE *f;
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    unsigned long long ok = 0, bad = 0;
    double t0 = now_s(), dt;

    if (argc != 2) {
        fprintf(stderr, "usage: prompteval bench-parse SAMPLES\n");
        return 2;
    }
    if ((f = fopen(argv[1], "r")) == NULL) {
        fprintf(stderr, "prompteval: cannot open '%s': %s\n", argv[1],
                strerror(errno));
        return 1;
    }
    while ((n = getline(&line, &cap, f)) >= 0) {
        json_t *j = json_loadb(line, (size_t)n, JSON_DISABLE_EOF_CHECK, NULL);
        if (j)
            ok++;
        else
            bad++;
        json_decref(j);
    }
    dt = now_s() - t0;
    printf("parsed %llu lines (%llu invalid) in %.3f s: %.0f lines/s\n", ok,
           bad, dt, (double)(ok + bad) / dt);
    free(line);
    fclose(f);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs(usage_text, stderr);
        return 2;
    }
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "help") == 0) {
        fputs(usage_text, stdout);
        return 0;
    }
    if (strcmp(argv[1], "run") == 0)
        return main_run(argc - 1, argv + 1);
    if (strcmp(argv[1], "replay") == 0)
        return evl_replay_main(argc - 1, argv + 1);
    if (strcmp(argv[1], "bench-parse") == 0)
        return main_bench_parse(argc - 1, argv + 1);
    fprintf(stderr, "prompteval: unknown command '%s'\n%s", argv[1], usage_text);
    return 2;
}
