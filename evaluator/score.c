/*
 * score.c - aggregation and summary statistics per version (see score.h).
 *
 * Design: versions are few (at most EVL_VERSIONS_MAX), so a linear search
 * by name per sample is cheaper than hashing. Worst examples are a tiny
 * array kept sorted by contradictions (descending, then file order).
 *
 * Users: a hash set of 64-bit entries (8 bytes a user, at most half full,
 * so 16 MB for a million users) remembers each user's first version, so
 * the sample-ratio check can count users, the unit the gateway assigns,
 * and a user seen in two versions (a leak in the assignment) is counted.
 *
 * Invariant: after evl_score_finish, v[] is sorted by version name
 * (numeric names numerically) and `control` indexes the control arm;
 * user_set entries refer to indexes before that sort (users are counted
 * per version as they are added, so the sort does not need them).
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "evaluator/score.h"

static void set_err(char **err, const char *fmt, ...)
{
    va_list ap;
    char *s = NULL;

    if (err == NULL)
        return;
    va_start(ap, fmt);
    if (vasprintf(&s, fmt, ap) < 0)
        s = NULL;
    va_end(ap);
    free(*err);
    *err = s;
}

struct evl_score *evl_score_new(const struct evl_vocab *vocab,
                                size_t max_chars)
{
    struct evl_score *s = calloc(1, sizeof(*s));

    if (s == NULL)
        return NULL;
    s->vocab = vocab;
    s->n_attrs = vocab ? evl_vocab_n_attrs(vocab) : 0;
    s->max_chars = max_chars;
    s->srm_source = "equal";
    s->srm_unit = "samples";
    return s;
}

static void version_free(struct evl_version_stats *v)
{
    if (v == NULL)
        return;
    free(v->attr_present);
    free(v->attr_bad);
    free(v);
}

void evl_score_free(struct evl_score *s)
{
    size_t i;

    if (s == NULL)
        return;
    for (i = 0; i < s->n; i++)
        version_free(s->v[i]);
    free(s->user_set);
    free(s);
}

long evl_score_find(const struct evl_score *s, const char *name)
{
    size_t i;

    for (i = 0; i < s->n; i++)
        if (strcmp(s->v[i]->name, name) == 0)
            return (long)i;
    return -1;
}

static struct evl_version_stats *version_get(struct evl_score *s,
                                             const char *name, char **err)
{
    struct evl_version_stats *v;
    long i = evl_score_find(s, name);
    size_t na = s->n_attrs ? s->n_attrs : 1;

    if (i >= 0)
        return s->v[i];
    if (s->n >= EVL_VERSIONS_MAX) {
        set_err(err, "more than %d versions in the samples", EVL_VERSIONS_MAX);
        return NULL;
    }
    v = calloc(1, sizeof(*v));
    if (v == NULL || (v->attr_present = calloc(na, sizeof(uint64_t))) == NULL ||
        (v->attr_bad = calloc(na, sizeof(uint64_t))) == NULL) {
        version_free(v);
        set_err(err, "cannot add version '%s': out of memory", name);
        return NULL;
    }
    snprintf(v->name, sizeof(v->name), "%s", name);
    s->v[s->n++] = v;
    return v;
}

static size_t utf8_len(const char *s, size_t n)
{
    size_t i, c = 0;

    for (i = 0; i < n; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80)
            c++;
    return c;
}

static void keep_worst(struct evl_version_stats *v,
                       const struct evl_sample *smp,
                       const struct evl_check_result *res)
{
    struct evl_example *e;
    size_t pos, k;

    if (res->contradicted == 0)
        return;
    /* insert position: after every example with >= contradictions */
    for (pos = 0; pos < v->n_worst; pos++)
        if (v->worst[pos].contradictions < res->contradicted)
            break;
    if (pos >= EVL_WORST_MAX)
        return;
    if (v->n_worst < EVL_WORST_MAX)
        v->n_worst++;
    memmove(&v->worst[pos + 1], &v->worst[pos],
            (v->n_worst - 1 - pos) * sizeof(v->worst[0]));
    e = &v->worst[pos];
    memset(e, 0, sizeof(*e));
    if (smp->id)
        snprintf(e->id, sizeof(e->id), "%s", smp->id);
    else
        snprintf(e->id, sizeof(e->id), "line %ld", smp->line);
    e->line = smp->line;
    e->contradictions = res->contradicted;
    for (k = 0; k < res->n_details && k < EVL_EXAMPLE_CONTRA; k++)
        e->shown[k] = res->details[k];
    e->n_shown = (unsigned)k;
}

static uint64_t user_hash(const char *u)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a 64, then a mix */

    for (; *u; u++)
        h = (h ^ (unsigned char)*u) * 1099511628211ULL;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    return h & ~(uint64_t)0xFF;
}

static void user_put(uint64_t *set, size_t cap, uint64_t e)
{
    size_t i = (size_t)(e >> 8) & (cap - 1);

    while (set[i])
        i = (i + 1) & (cap - 1);
    set[i] = e;
}

/* Notes user u in version index vi; -1 out of memory. */
static int user_add(struct evl_score *s, const char *u, size_t vi)
{
    uint64_t h = user_hash(u), e;
    size_t i;

    if ((s->n_users + 1) * 2 > s->user_cap) {
        size_t cap = s->user_cap ? s->user_cap * 2 : 1024, k;
        uint64_t *set = calloc(cap, sizeof(*set));
        if (set == NULL)
            return -1;
        for (k = 0; k < s->user_cap; k++)
            if (s->user_set[k])
                user_put(set, cap, s->user_set[k]);
        free(s->user_set);
        s->user_set = set;
        s->user_cap = cap;
    }
    for (i = (size_t)(h >> 8) & (s->user_cap - 1); (e = s->user_set[i]);
         i = (i + 1) & (s->user_cap - 1))
        if ((e & ~(uint64_t)0xFF) == h) {
            if ((e & 0xFF) != vi + 1 && (e & 0xFF) != 0xFF) {
                s->users_in_several++;
                s->user_set[i] = h | 0xFF; /* counted once */
            }
            return 0;
        }
    s->user_set[i] = h | (uint64_t)(vi + 1);
    s->n_users++;
    s->v[vi]->users++;
    return 0;
}

int evl_score_add(struct evl_score *s, const struct evl_sample *smp,
                  const struct evl_check_result *res, char **err)
{
    struct evl_version_stats *v = version_get(s, smp->version, err);
    size_t k;

    if (v == NULL)
        return -1;
    if (v->prompt[0] == '\0' && smp->prompt)
        snprintf(v->prompt, sizeof(v->prompt), "%s", smp->prompt);
    s->samples++;
    v->samples++;
    if (smp->user == NULL || smp->user[0] == '\0') {
        s->samples_without_user++;
    } else if (user_add(s, smp->user, (size_t)evl_score_find(s, v->name)) < 0) {
        set_err(err, "out of memory counting users");
        return -1;
    }
    v->impressions += (uint64_t)smp->impressions;
    v->clicks += (uint64_t)smp->clicks;
    v->conversions += (uint64_t)smp->conversions;
    if (smp->output && s->max_chars > 0) {
        v->length_n++;
        if (utf8_len(smp->output, smp->output_len) <= s->max_chars)
            v->length_ok++;
    }
    if (res == NULL)
        return 0;
    v->checked++;
    v->supported += res->supported;
    v->contradicted += res->contradicted;
    v->unverifiable += res->unverifiable;
    if (res->contradicted > 0)
        v->fact_errors++;
    if (res->facts > 0) {
        v->coverage_sum += (double)res->facts_mentioned / (double)res->facts;
        v->coverage_n++;
    }
    for (k = 0; k < res->n_attrs_present; k++)
        if (res->attrs_present[k] < s->n_attrs)
            v->attr_present[res->attrs_present[k]]++;
    for (k = 0; k < res->n_attrs_contradicted; k++)
        if (res->attrs_contradicted[k] < s->n_attrs)
            v->attr_bad[res->attrs_contradicted[k]]++;
    keep_worst(v, smp, res);
    return 0;
}

/* Numeric names sort numerically ("2" < "10"), then bytewise. */
static int version_cmp(const void *a, const void *b)
{
    const struct evl_version_stats *x = *(const struct evl_version_stats *const *)a;
    const struct evl_version_stats *y = *(const struct evl_version_stats *const *)b;
    char *ex, *ey;
    double nx = strtod(x->name, &ex), ny = strtod(y->name, &ey);

    if (*ex == '\0' && *ey == '\0' && nx != ny)
        return nx < ny ? -1 : 1;
    if (*ex == '\0' && *ey != '\0')
        return -1;
    if (*ex != '\0' && *ey == '\0')
        return 1;
    return strcmp(x->name, y->name);
}

static int parse_split(struct evl_score *s, const char *split, double *w,
                       char **err)
{
    char *copy, *tok, *save = NULL;
    size_t i;
    int rc = -1;

    for (i = 0; i < s->n; i++)
        w[i] = -1.0;
    if (strlen(split) > 4096) {
        set_err(err, "--split is longer than 4096 bytes");
        return -1;
    }
    if ((copy = strdup(split)) == NULL) {
        set_err(err, "cannot parse --split: out of memory");
        return -1;
    }
    for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *colon = strrchr(tok, ':'), *end;
        double x;
        long idx;
        if (colon == NULL || colon == tok) {
            set_err(err, "invalid --split item '%s': expected VERSION:WEIGHT",
                    tok);
            goto done;
        }
        *colon = '\0';
        x = strtod(colon + 1, &end);
        if (*end != '\0' || !(x > 0.0) || x > 1e9) {
            set_err(err, "invalid --split weight '%s' for '%s': expected a "
                    "positive number", colon + 1, tok);
            goto done;
        }
        if ((idx = evl_score_find(s, tok)) < 0) {
            set_err(err, "--split names version '%s' that has no samples",
                    tok);
            goto done;
        }
        w[idx] = x;
    }
    for (i = 0; i < s->n; i++)
        if (w[i] < 0) {
            set_err(err, "--split gives no weight for version '%s' (list "
                    "every version: --split %s:W,...)", s->v[i]->name,
                    s->v[i]->name);
            goto done;
        }
    rc = 0;
done:
    free(copy);
    return rc;
}

int evl_score_finish(struct evl_score *s, const char *control,
                     const char *split, const char *const *reg_names,
                     const double *reg_weights, size_t n_reg, char **err)
{
    double w[EVL_VERSIONS_MAX], p[3][EVL_VERSIONS_MAX], adj[EVL_VERSIONS_MAX];
    uint64_t obs[EVL_VERSIONS_MAX];
    size_t i, m, k;
    long c = 0;
    double wsum = 0.0;
    struct evl_version_stats *ctl;

    if (s->n == 0) {
        set_err(err, "no valid samples");
        return -1;
    }
    qsort(s->v, s->n, sizeof(s->v[0]), version_cmp);
    if (control != NULL && (c = evl_score_find(s, control)) < 0) {
        set_err(err, "control version '%s' has no samples", control);
        return -1;
    }
    s->control = (size_t)c;
    ctl = s->v[c];
    for (i = 0; i < s->n; i++) {
        struct evl_version_stats *v = s->v[i];
        evl_stats_wilson(v->fact_errors, v->checked, EVL_Z95, &v->fer);
        evl_stats_wilson(v->clicks, v->impressions, EVL_Z95, &v->ctr);
        evl_stats_wilson(v->conversions, v->impressions, EVL_Z95, &v->cvr);
        evl_stats_compare(ctl->fact_errors, ctl->checked, v->fact_errors,
                          v->checked, 0, EVL_Z95, &v->vs_fer);
        evl_stats_compare(ctl->clicks, ctl->impressions, v->clicks,
                          v->impressions, 1, EVL_Z95, &v->vs_ctr);
        evl_stats_compare(ctl->conversions, ctl->impressions, v->conversions,
                          v->impressions, 1, EVL_Z95, &v->vs_cvr);
    }
    /* Holm across the treatment arms, per metric */
    for (i = 0, m = 0; i < s->n; i++) {
        if (i == s->control)
            continue;
        p[0][m] = s->v[i]->vs_fer.p_value;
        p[1][m] = s->v[i]->vs_ctr.p_value;
        p[2][m] = s->v[i]->vs_cvr.p_value;
        m++;
    }
    for (k = 0; k < 3; k++) {
        size_t j;
        evl_stats_holm(p[k], adj, m);
        for (i = 0, j = 0; i < s->n; i++) {
            struct evl_compare *cmp;
            if (i == s->control)
                continue;
            cmp = k == 0 ? &s->v[i]->vs_fer
                         : (k == 1 ? &s->v[i]->vs_ctr : &s->v[i]->vs_cvr);
            cmp->p_adjusted = adj[j++];
        }
    }
    /* sample-ratio mismatch */
    if (split != NULL) {
        if (parse_split(s, split, w, err) < 0)
            return -1;
        s->srm_source = "split";
    } else if (n_reg > 0) {
        for (i = 0; i < s->n; i++) {
            w[i] = -1.0;
            for (k = 0; k < n_reg; k++)
                if (strcmp(reg_names[k], s->v[i]->name) == 0)
                    w[i] = reg_weights[k];
            if (w[i] <= 0.0) {
                set_err(err, "version '%s' is not an arm of the registry "
                        "experiment (give the split with --split)",
                        s->v[i]->name);
                return -1;
            }
        }
        s->srm_source = "registry";
    } else {
        for (i = 0; i < s->n; i++)
            w[i] = 1.0;
        s->srm_source = "equal";
    }
    /* the unit of assignment is the user: count users when every
     * sample names one */
    s->srm_unit = s->samples > 0 && s->samples_without_user == 0 ? "users"
                                                                 : "samples";
    for (i = 0; i < s->n; i++) {
        obs[i] = strcmp(s->srm_unit, "users") == 0 ? s->v[i]->users
                                                   : s->v[i]->samples;
        wsum += w[i];
    }
    for (i = 0; i < s->n; i++)
        s->v[i]->expected_share = w[i] / wsum;
    if (evl_stats_srm(obs, w, s->n, &s->srm) < 0) {
        /* one arm: nothing to check */
        s->srm.chi2 = NAN;
        s->srm.p_value = NAN;
        s->srm.flagged = 0;
    }
    return 0;
}
