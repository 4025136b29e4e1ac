/*
 * stats.h - the statistics behind prompteval's reports: Wilson intervals,
 * two-proportion comparisons (difference, relative lift, pooled z-test,
 * Bayesian chance to beat), Holm adjustment and the chi-square
 * sample-ratio-mismatch check. Pure functions, no allocation, no I/O.
 *
 * Undefined quantities (a rate over zero trials, a lift over a zero
 * baseline) are NaN; the report writers turn NaN into JSON null.
 */
#ifndef EVL_STATS_H
#define EVL_STATS_H

#include <stddef.h>
#include <stdint.h>

/* z for a two-sided 95% interval: NormalDist().inv_cdf(0.975) */
#define EVL_Z95 1.959963984540054

/* A proportion with its interval. */
struct evl_rate {
    double value;            /* successes / trials, NaN when trials == 0 */
    double low, high;        /* Wilson interval, NaN when trials == 0 */
    uint64_t successes;
    uint64_t trials;
};

/* A treatment arm against control. */
struct evl_compare {
    double diff;             /* p_t - p_c */
    double diff_low, diff_high; /* unpooled Wald interval of diff */
    double rel_lift;         /* p_t / p_c - 1, NaN when p_c == 0 */
    double rel_low, rel_high;/* delta-method interval of rel_lift */
    double z;                /* pooled two-proportion z statistic */
    double p_value;          /* two-sided */
    double p_adjusted;       /* Holm-adjusted across arms (set by caller) */
    double chance_to_beat;   /* P(treatment better than control), Beta(1,1) */
};

/* Standard normal CDF, and the two-sided tail 2 * (1 - Phi(|z|)). */
double evl_stats_norm_cdf(double z);
double evl_stats_two_sided_p(double z);

/* Wilson score interval of s successes in n trials at `z` (EVL_Z95). */
void evl_stats_wilson(uint64_t s, uint64_t n, double z, struct evl_rate *out);

/*
 * Compare treatment (s_t of n_t) against control (s_c of n_c).
 * higher_is_better selects what chance_to_beat measures: P(p_t > p_c) for
 * conversion rates, P(p_t < p_c) for error rates. p_adjusted is set to
 * p_value; evl_stats_holm() adjusts it across arms.
 */
void evl_stats_compare(uint64_t s_c, uint64_t n_c, uint64_t s_t, uint64_t n_t,
                       int higher_is_better, double z,
                       struct evl_compare *out);

/*
 * Holm step-down adjustment of n p-values: adj[i] for p[i] (both arrays of
 * n entries; they may be the same array). NaN p-values are left NaN and
 * do not count as tests.
 */
void evl_stats_holm(const double *p, double *adj, size_t n);

/*
 * P(X_b > X_a) for X_a ~ Beta(a_a, b_a), X_b ~ Beta(a_b, b_b) independent,
 * with integer parameters >= 1 (posteriors under Beta(1,1) priors).
 * Deterministic: the exact finite sum, taken over the smallest parameter;
 * beyond 10^7 terms a normal approximation of both Betas.
 */
double evl_stats_beta_beats(uint64_t a_a, uint64_t b_a, uint64_t a_b,
                            uint64_t b_b);

/* Regularised upper incomplete gamma Q(a, x) = Gamma(a, x) / Gamma(a). */
double evl_stats_gamma_q(double a, double x);

/* Upper tail of the chi-square distribution with df degrees of freedom. */
double evl_stats_chi2_sf(double chi2, double df);

/* Sample-ratio-mismatch check. */
struct evl_srm {
    double chi2;
    int df;
    double p_value;          /* NaN when fewer than 2 arms or no samples */
    int flagged;             /* p_value < EVL_SRM_ALPHA */
};
#define EVL_SRM_ALPHA 0.001

/*
 * Chi-square goodness of fit of the observed counts obs[k] against the
 * expected shares weights[k] (any positive scale; normalised here).
 * Returns -1 when a weight is not positive or k < 2.
 */
int evl_stats_srm(const uint64_t *obs, const double *weights, size_t k,
                  struct evl_srm *out);

#endif
