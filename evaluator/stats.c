/*
 * stats.c - statistics for the evaluator (see stats.h).
 *
 * Design notes:
 * - Everything is computed in double from integer counts; no state.
 * - The Bayesian chance to beat uses the closed-form sum for Beta variables
 *   with integer parameters (each term a ratio of Beta functions, computed
 *   through lgamma), so the same counts always give the same answer.
 *   Four equivalent forms sum over a_a, a_b, b_a or b_b terms; the smallest
 *   is used. Terms are positive, so the sum has no cancellation.
 * - The incomplete gamma uses its power series below x < a + 1 and the
 *   Legendre continued fraction (modified Lentz) above, the classic split
 *   that keeps both converging fast.
 *
 * Invariants: every function returns NaN (never traps) on degenerate
 * input, and probabilities are clamped to [0, 1].
 */
#include <math.h>
#include <stdlib.h>
#include "evaluator/stats.h"

#define BEATS_MAX_TERMS 10000000ULL

static double clamp01(double p)
{
    if (isnan(p))
        return p;
    return p < 0.0 ? 0.0 : (p > 1.0 ? 1.0 : p);
}

double evl_stats_norm_cdf(double z)
{
    return 0.5 * erfc(-z / M_SQRT2);
}

double evl_stats_two_sided_p(double z)
{
    if (isnan(z))
        return NAN;
    return clamp01(erfc(fabs(z) / M_SQRT2));
}

void evl_stats_wilson(uint64_t s, uint64_t n, double z, struct evl_rate *out)
{
    double p, nn, z2, den, centre, half;

    out->successes = s;
    out->trials = n;
    if (n == 0) {
        out->value = out->low = out->high = NAN;
        return;
    }
    nn = (double)n;
    p = (double)s / nn;
    z2 = z * z;
    den = 1.0 + z2 / nn;
    centre = (p + z2 / (2.0 * nn)) / den;
    half = z * sqrt(p * (1.0 - p) / nn + z2 / (4.0 * nn * nn)) / den;
    out->value = p;
    /* exact ends: the interval of 0/n starts at 0, of n/n ends at 1 */
    out->low = s == 0 ? 0.0 : clamp01(centre - half);
    out->high = s == n ? 1.0 : clamp01(centre + half);
}

/* log B(a, b) */
static double lbeta(double a, double b)
{
    return lgamma(a) + lgamma(b) - lgamma(a + b);
}

/*
 * P(X_b > X_a), summing a_b terms (Evan Miller's formula):
 *   sum_{i=0}^{a_b-1} B(a_a+i, b_a+b_b) / ((b_b+i) B(1+i, b_b) B(a_a, b_a))
 */
static double beats_sum(double a_a, double b_a, double a_b, double b_b)
{
    double total = 0.0, base = lbeta(a_a, b_a);
    uint64_t i, n = (uint64_t)a_b;

    for (i = 0; i < n; i++) {
        double di = (double)i;
        total += exp(lbeta(a_a + di, b_a + b_b) - log(b_b + di) -
                     lbeta(1.0 + di, b_b) - base);
    }
    return total;
}

static double beta_mean_var(double a, double b, double *var)
{
    double s = a + b;

    *var = a * b / (s * s * (s + 1.0));
    return a / s;
}

double evl_stats_beta_beats(uint64_t a_a, uint64_t b_a, uint64_t a_b,
                            uint64_t b_b)
{
    double A = (double)a_a, B = (double)b_a, C = (double)a_b, D = (double)b_b;
    uint64_t m;

    if (a_a == 0 || b_a == 0 || a_b == 0 || b_b == 0)
        return NAN;
    m = a_b;
    if (a_a < m)
        m = a_a;
    if (b_a < m)
        m = b_a;
    if (b_b < m)
        m = b_b;
    if (m > BEATS_MAX_TERMS) {
        double va, vb, ma = beta_mean_var(A, B, &va);
        double mb = beta_mean_var(C, D, &vb);
        return clamp01(evl_stats_norm_cdf((mb - ma) / sqrt(va + vb)));
    }
    /* Y = 1 - X ~ Beta(b, a): P(X_b > X_a) = P(Y_a > Y_b) */
    if (m == a_b)
        return clamp01(beats_sum(A, B, C, D));
    if (m == a_a)
        return clamp01(1.0 - beats_sum(C, D, A, B));
    if (m == b_a)
        return clamp01(beats_sum(D, C, B, A));
    return clamp01(1.0 - beats_sum(B, A, D, C));
}

void evl_stats_compare(uint64_t s_c, uint64_t n_c, uint64_t s_t, uint64_t n_t,
                       int higher_is_better, double z,
                       struct evl_compare *out)
{
    double pc, pt, vc, vt, se, pool, sep, var_rel, ctb;

    out->diff = out->diff_low = out->diff_high = NAN;
    out->rel_lift = out->rel_low = out->rel_high = NAN;
    out->z = out->p_value = out->p_adjusted = out->chance_to_beat = NAN;
    if (n_c == 0 || n_t == 0)
        return;
    pc = (double)s_c / (double)n_c;
    pt = (double)s_t / (double)n_t;
    vc = pc * (1.0 - pc) / (double)n_c;
    vt = pt * (1.0 - pt) / (double)n_t;
    se = sqrt(vc + vt);
    out->diff = pt - pc;
    out->diff_low = out->diff - z * se;
    out->diff_high = out->diff + z * se;
    if (pc > 0.0) {
        /* delta method on g(pt, pc) = pt/pc - 1 */
        var_rel = vt / (pc * pc) + pt * pt * vc / (pc * pc * pc * pc);
        out->rel_lift = pt / pc - 1.0;
        out->rel_low = out->rel_lift - z * sqrt(var_rel);
        out->rel_high = out->rel_lift + z * sqrt(var_rel);
    }
    pool = (double)(s_c + s_t) / (double)(n_c + n_t);
    sep = sqrt(pool * (1.0 - pool) * (1.0 / (double)n_c + 1.0 / (double)n_t));
    if (sep > 0.0) {
        out->z = (pt - pc) / sep;
        out->p_value = evl_stats_two_sided_p(out->z);
    } else {
        /* both arms all-success or all-failure: no evidence of a difference */
        out->z = 0.0;
        out->p_value = 1.0;
    }
    out->p_adjusted = out->p_value;
    ctb = evl_stats_beta_beats(1 + s_c, 1 + n_c - s_c, 1 + s_t, 1 + n_t - s_t);
    out->chance_to_beat = higher_is_better ? ctb : clamp01(1.0 - ctb);
}

struct pidx {
    double p;
    size_t i;
};

static int pidx_cmp(const void *a, const void *b)
{
    const struct pidx *x = a, *y = b;

    if (x->p < y->p)
        return -1;
    if (x->p > y->p)
        return 1;
    return x->i < y->i ? -1 : (x->i > y->i);
}

void evl_stats_holm(const double *p, double *adj, size_t n)
{
    struct pidx *v;
    size_t i, m = 0;
    double run = 0.0;

    v = malloc((n ? n : 1) * sizeof(*v));
    if (v == NULL) {
        /* cannot sort: Bonferroni is a valid, more conservative bound */
        for (i = 0; i < n; i++)
            adj[i] = isnan(p[i]) ? NAN : fmin(1.0, p[i] * (double)n);
        return;
    }
    for (i = 0; i < n; i++)
        if (!isnan(p[i])) {
            v[m].p = p[i];
            v[m].i = i;
            m++;
        }
    for (i = 0; i < n; i++)
        if (isnan(p[i]))
            adj[i] = NAN;
    qsort(v, m, sizeof(*v), pidx_cmp);
    for (i = 0; i < m; i++) {
        double a = fmin(1.0, (double)(m - i) * v[i].p);
        if (a > run)
            run = a;
        adj[v[i].i] = run;
    }
    free(v);
}

/* Series for the lower regularised gamma P(a, x), x < a + 1. */
static double gamma_p_series(double a, double x)
{
    double sum = 1.0 / a, term = sum, ap = a;
    int n;

    for (n = 0; n < 100000; n++) {
        ap += 1.0;
        term *= x / ap;
        sum += term;
        if (fabs(term) < fabs(sum) * 1e-16)
            break;
    }
    return sum * exp(-x + a * log(x) - lgamma(a));
}

/* Continued fraction for Q(a, x), x >= a + 1 (modified Lentz). */
static double gamma_q_fraction(double a, double x)
{
    const double tiny = 1e-300;
    double b = x + 1.0 - a, c = 1.0 / tiny, d = 1.0 / b, h = d;
    int i;

    for (i = 1; i < 100000; i++) {
        double an = -i * (i - a), del;
        b += 2.0;
        d = an * d + b;
        if (fabs(d) < tiny)
            d = tiny;
        c = b + an / c;
        if (fabs(c) < tiny)
            c = tiny;
        d = 1.0 / d;
        del = d * c;
        h *= del;
        if (fabs(del - 1.0) < 1e-16)
            break;
    }
    return exp(-x + a * log(x) - lgamma(a)) * h;
}

double evl_stats_gamma_q(double a, double x)
{
    if (isnan(a) || isnan(x) || a <= 0.0 || x < 0.0)
        return NAN;
    if (x == 0.0)
        return 1.0;
    if (isinf(x))
        return 0.0;
    if (x < a + 1.0)
        return clamp01(1.0 - gamma_p_series(a, x));
    return clamp01(gamma_q_fraction(a, x));
}

double evl_stats_chi2_sf(double chi2, double df)
{
    if (df <= 0.0)
        return NAN;
    return evl_stats_gamma_q(df / 2.0, chi2 / 2.0);
}

int evl_stats_srm(const uint64_t *obs, const double *weights, size_t k,
                  struct evl_srm *out)
{
    double wsum = 0.0, total = 0.0, chi2 = 0.0;
    size_t i;

    out->chi2 = NAN;
    out->df = k > 0 ? (int)k - 1 : 0;
    out->p_value = NAN;
    out->flagged = 0;
    if (k < 2)
        return -1;
    for (i = 0; i < k; i++) {
        if (!(weights[i] > 0.0))
            return -1;
        wsum += weights[i];
        total += (double)obs[i];
    }
    if (total <= 0.0)
        return 0;
    for (i = 0; i < k; i++) {
        double e = total * weights[i] / wsum, d = (double)obs[i] - e;
        chi2 += d * d / e;
    }
    out->chi2 = chi2;
    out->p_value = evl_stats_chi2_sf(chi2, (double)out->df);
    out->flagged = out->p_value < EVL_SRM_ALPHA;
    return 0;
}
