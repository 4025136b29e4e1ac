/*
 * score.h - per-version aggregation of checked samples, and the summary
 * (rates, intervals, comparisons against control, SRM) the reports print.
 *
 * Everything kept is bounded: per version a fixed record, per attribute two
 * counters, and the EVL_WORST_MAX worst examples. Memory does not depend on
 * the number of samples.
 */
#ifndef EVL_SCORE_H
#define EVL_SCORE_H

#include <stddef.h>
#include <stdint.h>
#include "evaluator/claim.h"
#include "evaluator/sample.h"
#include "evaluator/stats.h"

#define EVL_VERSIONS_MAX 64
#define EVL_WORST_MAX    5
#define EVL_EXAMPLE_CONTRA 3
#define EVL_ID_MAX       64

struct evl_example {
    char id[EVL_ID_MAX];     /* sample id, or "line N" */
    long line;
    unsigned contradictions;
    unsigned n_shown;
    struct evl_contradiction shown[EVL_EXAMPLE_CONTRA];
};

struct evl_version_stats {
    char name[EVL_VERSION_MAX + 1];
    char prompt[EVL_VERSION_MAX + 1]; /* first `prompt` seen for it, or "" */
    uint64_t samples;
    uint64_t checked;         /* samples with an output */
    uint64_t fact_errors;     /* outputs with >= 1 contradiction */
    uint64_t supported, contradicted, unverifiable;
    uint64_t impressions, clicks, conversions;
    double coverage_sum;      /* sum of per-output fact coverage */
    uint64_t coverage_n;      /* outputs whose product has facts */
    uint64_t length_ok, length_n;
    uint64_t *attr_present;   /* owned: per attribute id, outputs with it */
    uint64_t *attr_bad;       /* owned: per attribute id, outputs wrong on it */
    size_t n_worst;
    struct evl_example worst[EVL_WORST_MAX];
    /* filled by evl_score_finish */
    struct evl_rate fer, ctr, cvr;
    struct evl_compare vs_fer, vs_ctr, vs_cvr;
    double expected_share;    /* SRM weight, normalised */
    uint64_t users;           /* distinct users first seen in this version */
};

struct evl_score {
    const struct evl_vocab *vocab;   /* borrowed */
    size_t n_attrs;
    size_t max_chars;                /* 0: no length check */
    struct evl_version_stats *v[EVL_VERSIONS_MAX]; /* owned */
    size_t n;
    uint64_t samples, malformed;
    size_t control;                  /* index into v, set by finish */
    struct evl_srm srm;
    const char *srm_source;          /* static: "equal", "split", "registry" */
    /* Users are the unit of assignment: the SRM check counts them when
     * every sample names one (else samples). A set of 64-bit entries,
     * open addressing: a 56-bit hash of the user id, and in the low byte
     * the index + 1 of the version it was first seen in. */
    uint64_t *user_set;              /* owned */
    size_t user_cap, n_users;
    uint64_t samples_without_user;
    uint64_t users_in_several;       /* users seen in more than one version */
    const char *srm_unit;            /* static: "users" or "samples" */
};

struct evl_score *evl_score_new(const struct evl_vocab *vocab,
                                size_t max_chars);
void evl_score_free(struct evl_score *s);

/*
 * Count one sample; `res` is its check (NULL when it had no output).
 * Returns -1 with err when there are too many versions.
 */
int evl_score_add(struct evl_score *s, const struct evl_sample *smp,
                  const struct evl_check_result *res, char **err);

/*
 * Sort versions, pick the control (`control` NULL: the first version),
 * compute rates, comparisons with Holm adjustment, and the SRM check
 * against `split` ("V:W,..." or NULL), else the given registry weights
 * (names/weights of n_reg arms, may be 0), else an equal split.
 */
int evl_score_finish(struct evl_score *s, const char *control,
                     const char *split, const char *const *reg_names,
                     const double *reg_weights, size_t n_reg, char **err);

/* The version index named `name`, or -1. */
long evl_score_find(const struct evl_score *s, const char *name);

#endif
