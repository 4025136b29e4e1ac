/*
 * report.c - report writers (see report.h).
 *
 * Design: report.json is built as a jansson tree from the finished score;
 * report.md and report.html are printed straight from the same structs.
 * NaN (a rate over zero trials, a lift over a zero baseline) becomes JSON
 * null and "n/a" for people.
 *
 * The verdict rule: the headline metric is the conversion rate when any
 * sample carries conversions, else the click-through rate when any carries
 * clicks, else the fact-error rate. A treatment wins when it is better than
 * control at Holm-adjusted p < 0.05 (the best such arm when several);
 * control wins when every treatment is significantly worse; otherwise there
 * is no significant difference yet. A winner that also makes significantly
 * more factual errors than control gets a warning, and so does a sample
 * ratio mismatch.
 *
 * The HTML has no script, no external font or image: it renders the same
 * offline, in a mail attachment, or in a headless browser.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "evaluator/report.h"

#define ALPHA 0.05

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

/* ---- verdict ------------------------------------------------------------- */

static const struct evl_rate *metric_rate(const struct evl_version_stats *v,
                                          const char *metric)
{
    if (strcmp(metric, "cvr") == 0)
        return &v->cvr;
    if (strcmp(metric, "ctr") == 0)
        return &v->ctr;
    return &v->fer;
}

static const struct evl_compare *metric_cmp(const struct evl_version_stats *v,
                                            const char *metric)
{
    if (strcmp(metric, "cvr") == 0)
        return &v->vs_cvr;
    if (strcmp(metric, "ctr") == 0)
        return &v->vs_ctr;
    return &v->vs_fer;
}

static int higher_better(const char *metric)
{
    return strcmp(metric, "fact_error_rate") != 0;
}

/* +1 significantly better than control, -1 worse, 0 neither / control. */
static int significance(const struct evl_score *s, size_t i,
                        const char *metric)
{
    const struct evl_compare *c = metric_cmp(s->v[i], metric);
    int up;

    if (i == s->control || isnan(c->p_adjusted) || c->p_adjusted >= ALPHA)
        return 0;
    up = c->diff > 0;
    return (up == higher_better(metric)) ? 1 : -1;
}

static void fmt_pct(char *buf, size_t n, double x)
{
    if (isnan(x))
        snprintf(buf, n, "n/a");
    else
        snprintf(buf, n, "%.2f%%", 100.0 * x);
}

static void fmt_signed_pct(char *buf, size_t n, double x)
{
    if (isnan(x))
        snprintf(buf, n, "n/a");
    else
        snprintf(buf, n, "%+.1f%%", 100.0 * x);
}

static void fmt_p(char *buf, size_t n, double p)
{
    if (isnan(p))
        snprintf(buf, n, "n/a");
    else if (p < 0.0001)
        snprintf(buf, n, "<0.0001");
    else
        snprintf(buf, n, "%.4f", p);
}

void evl_report_verdict(const struct evl_score *s, struct evl_verdict *out)
{
    uint64_t conv = 0, clicks = 0;
    size_t i, n_treat = 0, n_worse = 0;
    long best = -1, best_any = -1;
    const struct evl_version_stats *ctl = s->v[s->control];
    char a[32], b[32], l[32], lo[32], hi[32], p[32];
    size_t used;

    for (i = 0; i < s->n; i++) {
        conv += s->v[i]->conversions;
        clicks += s->v[i]->clicks;
    }
    if (conv > 0) {
        out->metric = "cvr";
        out->label = "conversion rate";
    } else if (clicks > 0) {
        out->metric = "ctr";
        out->label = "click-through rate";
    } else {
        out->metric = "fact_error_rate";
        out->label = "fact-error rate";
    }
    for (i = 0; i < s->n; i++) {
        int sig;
        double x;
        if (i == s->control)
            continue;
        n_treat++;
        sig = significance(s, i, out->metric);
        x = metric_rate(s->v[i], out->metric)->value;
        if (sig < 0)
            n_worse++;
        if (best_any < 0 ||
            (higher_better(out->metric)
                 ? x > metric_rate(s->v[best_any], out->metric)->value
                 : x < metric_rate(s->v[best_any], out->metric)->value))
            best_any = (long)i;
        if (sig > 0 && (best < 0 ||
                        (higher_better(out->metric)
                             ? x > metric_rate(s->v[best], out->metric)->value
                             : x < metric_rate(s->v[best], out->metric)->value)))
            best = (long)i;
    }
    out->winner = -1;
    out->significant = 0;
    if (n_treat == 0) {
        fmt_pct(a, sizeof(a), metric_rate(ctl, out->metric)->value);
        snprintf(out->text, sizeof(out->text),
                 "Only one version (%s) in the samples: %s %s, nothing to "
                 "compare.", ctl->name, out->label, a);
    } else if (best >= 0) {
        const struct evl_version_stats *w = s->v[best];
        const struct evl_compare *c = metric_cmp(w, out->metric);
        out->winner = best;
        out->significant = 1;
        fmt_pct(a, sizeof(a), metric_rate(w, out->metric)->value);
        fmt_pct(b, sizeof(b), metric_rate(ctl, out->metric)->value);
        fmt_signed_pct(l, sizeof(l), c->rel_lift);
        fmt_signed_pct(lo, sizeof(lo), c->rel_low);
        fmt_signed_pct(hi, sizeof(hi), c->rel_high);
        fmt_p(p, sizeof(p), c->p_adjusted);
        snprintf(out->text, sizeof(out->text),
                 "Version %s wins on %s: %s against %s for control %s (%s "
                 "relative, 95%% CI %s to %s); significant, Holm-adjusted "
                 "p = %s.", w->name, out->label, a, b, ctl->name, l, lo, hi, p);
    } else if (n_worse == n_treat) {
        out->winner = (long)s->control;
        out->significant = 1;
        snprintf(out->text, sizeof(out->text),
                 "Control %s wins on %s: every other version is significantly "
                 "worse (Holm-adjusted p < 0.05).", ctl->name, out->label);
    } else {
        const struct evl_compare *c = metric_cmp(s->v[best_any], out->metric);
        fmt_signed_pct(l, sizeof(l), c->rel_lift);
        fmt_p(p, sizeof(p), c->p_adjusted);
        snprintf(out->text, sizeof(out->text),
                 "No significant difference in %s yet: the best treatment, "
                 "version %s, is at %s against control %s (Holm-adjusted "
                 "p = %s). Keep collecting samples before deciding.",
                 out->label, s->v[best_any]->name, l, ctl->name, p);
    }
    used = strlen(out->text);
    if (out->winner >= 0 && (size_t)out->winner != s->control &&
        strcmp(out->metric, "fact_error_rate") != 0 &&
        significance(s, (size_t)out->winner, "fact_error_rate") < 0) {
        fmt_pct(a, sizeof(a), s->v[out->winner]->fer.value);
        fmt_pct(b, sizeof(b), ctl->fer.value);
        snprintf(out->text + used, sizeof(out->text) - used,
                 " Warning: it states significantly more false facts (%s of "
                 "outputs against %s).", a, b);
        used = strlen(out->text);
    }
    if (s->srm.flagged)
        snprintf(out->text + used, sizeof(out->text) - used,
                 " Sample ratio mismatch (p = %.2g): the arms' %s counts "
                 "do not match the planned split, so the comparison may be "
                 "biased; check the assignment first.", s->srm.p_value,
                 strcmp(s->srm_unit, "users") == 0 ? "user" : "sample");
    used = strlen(out->text);
    if (s->users_in_several > 0)
        snprintf(out->text + used, sizeof(out->text) - used,
                 " %llu users appear in more than one version: the "
                 "assignment is not sticky for them.",
                 (unsigned long long)s->users_in_several);
}

/* ---- report.json --------------------------------------------------------- */

static json_t *jnum(double x)
{
    return isfinite(x) ? json_real(x) : json_null();
}

static json_t *jrate(const struct evl_rate *r, int counts)
{
    json_t *o = json_object();

    json_object_set_new(o, "value", jnum(r->value));
    json_object_set_new(o, "ci_low", jnum(r->low));
    json_object_set_new(o, "ci_high", jnum(r->high));
    if (counts) {
        json_object_set_new(o, "successes", json_integer((json_int_t)r->successes));
        json_object_set_new(o, "trials", json_integer((json_int_t)r->trials));
    }
    return o;
}

static json_t *jcompare(const struct evl_compare *c)
{
    json_t *o = json_object();

    json_object_set_new(o, "diff", jnum(c->diff));
    json_object_set_new(o, "diff_ci_low", jnum(c->diff_low));
    json_object_set_new(o, "diff_ci_high", jnum(c->diff_high));
    json_object_set_new(o, "rel_lift", jnum(c->rel_lift));
    json_object_set_new(o, "rel_ci_low", jnum(c->rel_low));
    json_object_set_new(o, "rel_ci_high", jnum(c->rel_high));
    json_object_set_new(o, "z", jnum(c->z));
    json_object_set_new(o, "p_value", jnum(c->p_value));
    json_object_set_new(o, "p_value_adjusted", jnum(c->p_adjusted));
    json_object_set_new(o, "chance_to_beat", jnum(c->chance_to_beat));
    return o;
}

static json_t *jattributes(const struct evl_score *s,
                           const struct evl_version_stats *v)
{
    json_t *a = json_array();
    size_t i;

    for (i = 0; i < s->n_attrs; i++) {
        json_t *o;
        struct evl_rate r;
        if (v->attr_present[i] == 0)
            continue;
        evl_stats_wilson(v->attr_bad[i], v->attr_present[i], EVL_Z95, &r);
        o = json_object();
        json_object_set_new(o, "attribute",
                            json_string(evl_vocab_attr_name(s->vocab, i)));
        json_object_set_new(o, "outputs", json_integer((json_int_t)v->attr_present[i]));
        json_object_set_new(o, "errors", json_integer((json_int_t)v->attr_bad[i]));
        json_object_set_new(o, "error_rate", jrate(&r, 0));
        json_array_append_new(a, o);
    }
    return a;
}

static json_t *jworst(const struct evl_score *s,
                      const struct evl_version_stats *v)
{
    json_t *a = json_array();
    size_t i, k;

    for (i = 0; i < v->n_worst; i++) {
        const struct evl_example *e = &v->worst[i];
        json_t *o = json_object(), *cs = json_array();
        json_object_set_new(o, "id", json_string(e->id));
        json_object_set_new(o, "line", json_integer(e->line));
        json_object_set_new(o, "contradictions", json_integer(e->contradictions));
        for (k = 0; k < e->n_shown; k++) {
            json_t *c = json_object();
            json_object_set_new(c, "attribute", json_string(
                evl_vocab_attr_name(s->vocab, e->shown[k].attr)));
            json_object_set_new(c, "stated", json_string(e->shown[k].stated));
            json_object_set_new(c, "known", json_string(e->shown[k].known));
            json_array_append_new(cs, c);
        }
        json_object_set_new(o, "examples", cs);
        json_array_append_new(a, o);
    }
    return a;
}

json_t *evl_report_json(const struct evl_score *s, const char *source)
{
    json_t *root = json_object(), *vs = json_array(), *srm = json_object();
    struct evl_verdict verdict;
    size_t i;

    evl_report_verdict(s, &verdict);
    json_object_set_new(root, "control", json_string(s->v[s->control]->name));
    json_object_set_new(root, "source", json_string(source ? source : ""));
    json_object_set_new(root, "samples", json_integer((json_int_t)s->samples));
    json_object_set_new(root, "malformed", json_integer((json_int_t)s->malformed));
    json_object_set_new(srm, "chi2", jnum(s->srm.chi2));
    json_object_set_new(srm, "df", json_integer(s->srm.df));
    json_object_set_new(srm, "p_value", jnum(s->srm.p_value));
    json_object_set_new(srm, "flagged", json_boolean(s->srm.flagged));
    json_object_set_new(srm, "expected_from", json_string(s->srm_source));
    json_object_set_new(srm, "unit", json_string(s->srm_unit));
    json_object_set_new(srm, "users_in_several_versions",
                        json_integer((json_int_t)s->users_in_several));
    json_object_set_new(root, "srm", srm);
    for (i = 0; i < s->n; i++) {
        const struct evl_version_stats *v = s->v[i];
        json_t *o = json_object(), *claims = json_object();
        json_object_set_new(o, "version", json_string(v->name));
        if (v->prompt[0])
            json_object_set_new(o, "prompt", json_string(v->prompt));
        json_object_set_new(o, "samples", json_integer((json_int_t)v->samples));
        json_object_set_new(o, "users", json_integer((json_int_t)v->users));
        json_object_set_new(o, "expected_share", jnum(v->expected_share));
        json_object_set_new(o, "fact_error_rate", jrate(&v->fer, 1));
        json_object_set_new(claims, "supported", json_integer((json_int_t)v->supported));
        json_object_set_new(claims, "contradicted", json_integer((json_int_t)v->contradicted));
        json_object_set_new(claims, "unverifiable", json_integer((json_int_t)v->unverifiable));
        json_object_set_new(o, "claims", claims);
        json_object_set_new(o, "ctr", jrate(&v->ctr, 1));
        json_object_set_new(o, "cvr", jrate(&v->cvr, 1));
        json_object_set_new(o, "key_fact_coverage",
                            jnum(v->coverage_n ? v->coverage_sum / (double)v->coverage_n
                                               : NAN));
        if (s->max_chars > 0) {
            struct evl_rate r;
            evl_stats_wilson(v->length_ok, v->length_n, EVL_Z95, &r);
            json_object_set_new(o, "length_compliance", jrate(&r, 1));
        }
        json_object_set_new(o, "attributes", jattributes(s, v));
        json_object_set_new(o, "worst_examples", jworst(s, v));
        if (i != s->control) {
            json_t *c = json_object();
            json_object_set_new(c, "cvr", jcompare(&v->vs_cvr));
            json_object_set_new(c, "ctr", jcompare(&v->vs_ctr));
            json_object_set_new(c, "fact_error_rate", jcompare(&v->vs_fer));
            json_object_set_new(o, "vs_control", c);
        }
        json_array_append_new(vs, o);
    }
    json_object_set_new(root, "versions", vs);
    {
        json_t *vd = json_object();
        json_object_set_new(vd, "metric", json_string(verdict.metric));
        json_object_set_new(vd, "winner", verdict.winner >= 0
                                              ? json_string(s->v[verdict.winner]->name)
                                              : json_null());
        json_object_set_new(vd, "significant", json_boolean(verdict.significant));
        json_object_set_new(vd, "text", json_string(verdict.text));
        json_object_set_new(root, "verdict", vd);
    }
    return root;
}

/* ---- terminal table ------------------------------------------------------ */

static void fmt_rate_ci(char *buf, size_t n, const struct evl_rate *r)
{
    if (isnan(r->value))
        snprintf(buf, n, "n/a");
    else
        snprintf(buf, n, "%.2f%% [%.2f, %.2f]", 100 * r->value, 100 * r->low,
                 100 * r->high);
}

void evl_report_table(const struct evl_score *s, FILE *out)
{
    struct evl_verdict verdict;
    const char *m;
    char head[32];
    size_t i;

    evl_report_verdict(s, &verdict);
    m = verdict.metric;
    snprintf(head, sizeof(head), "%s lift",
             strcmp(m, "cvr") == 0 ? "CVR" : strcmp(m, "ctr") == 0 ? "CTR"
                                                                 : "error");
    fprintf(out, "%-12s %9s  %-24s %-24s %-24s %10s %9s %7s\n", "version",
            "samples", "fact errors [95% CI]", "CTR [95% CI]", "CVR [95% CI]",
            head, "p (Holm)", "P(beat)");
    for (i = 0; i < s->n; i++) {
        const struct evl_version_stats *v = s->v[i];
        const struct evl_compare *c = metric_cmp(v, m);
        char fer[48], ctr[48], cvr[48], lift[24], p[24], beat[24];
        fmt_rate_ci(fer, sizeof(fer), &v->fer);
        fmt_rate_ci(ctr, sizeof(ctr), &v->ctr);
        fmt_rate_ci(cvr, sizeof(cvr), &v->cvr);
        if (i == s->control) {
            snprintf(lift, sizeof(lift), "control");
            snprintf(p, sizeof(p), "-");
            snprintf(beat, sizeof(beat), "-");
        } else {
            fmt_signed_pct(lift, sizeof(lift), c->rel_lift);
            fmt_p(p, sizeof(p), c->p_adjusted);
            if (isnan(c->chance_to_beat))
                snprintf(beat, sizeof(beat), "n/a");
            else
                snprintf(beat, sizeof(beat), "%.1f%%", 100 * c->chance_to_beat);
        }
        fprintf(out, "%-12s %9llu  %-24s %-24s %-24s %10s %9s %7s\n", v->name,
                (unsigned long long)v->samples, fer, ctr, cvr, lift, p, beat);
    }
    if (!isnan(s->srm.p_value))
        fprintf(out, "sample ratio (%s): chi2 %.3f, df %d, p %.4g (expected "
                "%s)%s\n", s->srm_unit, s->srm.chi2, s->srm.df, s->srm.p_value,
                strcmp(s->srm_source, "equal") == 0 ? "an equal split"
                : strcmp(s->srm_source, "split") == 0 ? "the --split"
                                                     : "the registry weights",
                s->srm.flagged ? "  MISMATCH" : "");
    fprintf(out, "%s\n", verdict.text);
    fflush(out);
}

/* ---- report.md ----------------------------------------------------------- */

/* Markdown table cells: escape the pipe, flatten newlines. */
static void md_cell(FILE *f, const char *s)
{
    for (; *s; s++) {
        if (*s == '|')
            fputs("\\|", f);
        else if (*s == '\n' || *s == '\r')
            fputc(' ', f);
        else
            fputc(*s, f);
    }
}

/* A table row of text cells, in Markdown or HTML. */
struct row_style {
    const char *open, *sep, *close;
    void (*cell)(FILE *f, const char *s); /* writes one cell's text */
};
static const struct row_style md_row = {"| ", " | ", " |\n", md_cell};

static void row(FILE *f, const struct row_style *st, const char *const *cells,
                size_t n)
{
    size_t i;

    fputs(st->open, f);
    for (i = 0; i < n; i++) {
        if (i > 0)
            fputs(st->sep, f);
        st->cell(f, cells[i]);
    }
    fputs(st->close, f);
}

/* The worst examples of v, a row each: sample, attribute, what the copy
 * says, what the product has. */
static void worst_rows(FILE *f, const struct evl_score *s,
                       const struct evl_version_stats *v,
                       const struct row_style *st)
{
    size_t k;
    unsigned j;

    for (k = 0; k < v->n_worst; k++)
        for (j = 0; j < v->worst[k].n_shown; j++) {
            const struct evl_contradiction *x = &v->worst[k].shown[j];
            const char *cells[4] = {v->worst[k].id,
                                    evl_vocab_attr_name(s->vocab, x->attr),
                                    x->stated, x->known};
            row(f, st, cells, 4);
        }
}

static void write_md(const struct evl_score *s, const char *source, FILE *f)
{
    struct evl_verdict verdict;
    size_t i, k;
    char a[48], b[48], c[48], d[32], e[32], g[32];

    evl_report_verdict(s, &verdict);
    fprintf(f, "# prompteval report\n\n");
    fprintf(f, "Samples: %llu from `", (unsigned long long)s->samples);
    md_cell(f, source);
    fprintf(f, "` (%llu malformed lines skipped). Control: version **%s**.\n\n",
            (unsigned long long)s->malformed, s->v[s->control]->name);
    fprintf(f, "**Verdict.** %s\n\n", verdict.text);
    fprintf(f, "## Per version\n\n");
    fprintf(f, "| version | samples | fact-error rate [95%% CI] | CTR [95%% CI] "
               "| CVR [95%% CI] | key-fact coverage |\n");
    fprintf(f, "|---|---:|---|---|---|---:|\n");
    for (i = 0; i < s->n; i++) {
        const struct evl_version_stats *v = s->v[i];
        fmt_rate_ci(a, sizeof(a), &v->fer);
        fmt_rate_ci(b, sizeof(b), &v->ctr);
        fmt_rate_ci(c, sizeof(c), &v->cvr);
        fmt_pct(d, sizeof(d), v->coverage_n ? v->coverage_sum / (double)v->coverage_n
                                            : NAN);
        fprintf(f, "| ");
        md_cell(f, v->name);
        fprintf(f, "%s | %llu | %s | %s | %s | %s |\n",
                i == s->control ? " (control)" : "",
                (unsigned long long)v->samples, a, b, c, d);
    }
    fprintf(f, "\n## Against control\n\n");
    fprintf(f, "| version | metric | difference [95%% CI] | relative lift "
               "[95%% CI] | z | p | p (Holm) | chance to beat |\n");
    fprintf(f, "|---|---|---|---|---:|---:|---:|---:|\n");
    for (i = 0; i < s->n; i++) {
        static const char *const names[] = {"CVR", "CTR", "fact-error rate"};
        const struct evl_compare *cs[3];
        if (i == s->control)
            continue;
        cs[0] = &s->v[i]->vs_cvr;
        cs[1] = &s->v[i]->vs_ctr;
        cs[2] = &s->v[i]->vs_fer;
        for (k = 0; k < 3; k++) {
            const struct evl_compare *x = cs[k];
            char dl[24], dh[24], rl[24], rh[24];
            fmt_signed_pct(a, sizeof(a), x->diff);
            fmt_signed_pct(dl, sizeof(dl), x->diff_low);
            fmt_signed_pct(dh, sizeof(dh), x->diff_high);
            fmt_signed_pct(b, sizeof(b), x->rel_lift);
            fmt_signed_pct(rl, sizeof(rl), x->rel_low);
            fmt_signed_pct(rh, sizeof(rh), x->rel_high);
            fmt_p(d, sizeof(d), x->p_value);
            fmt_p(e, sizeof(e), x->p_adjusted);
            fmt_pct(g, sizeof(g), x->chance_to_beat);
            fprintf(f, "| ");
            md_cell(f, s->v[i]->name);
            fprintf(f, " | %s | %s pts [%s, %s] | %s [%s, %s] | %.3f | %s | %s "
                       "| %s |\n", names[k], a, dl, dh, b, rl, rh,
                    isnan(x->z) ? 0.0 : x->z, d, e, g);
        }
    }
    fprintf(f, "\nDifferences are in percentage points with unpooled 95%% "
               "intervals; relative lift intervals use the delta method; p is "
               "the pooled two-proportion z-test, Holm-adjusted across "
               "treatment arms; chance to beat is P(better than control) under "
               "Beta(1,1) priors (lower is better for the fact-error rate).\n\n");
    if (!isnan(s->srm.p_value))
        fprintf(f, "Sample ratio check (%s): chi-square %.3f, df %d, p = "
                   "%.4g against %s%s.\n\n", s->srm_unit, s->srm.chi2,
                s->srm.df, s->srm.p_value,
                strcmp(s->srm_source, "equal") == 0 ? "an equal split"
                : strcmp(s->srm_source, "split") == 0 ? "--split"
                                                     : "the registry experiment",
                s->srm.flagged ? " — **mismatch**: check the assignment" : "");
    fprintf(f, "## Fact checking\n\n");
    fprintf(f, "| version | outputs checked | claims supported | contradicted "
               "| unverifiable |\n|---|---:|---:|---:|---:|\n");
    for (i = 0; i < s->n; i++) {
        const struct evl_version_stats *v = s->v[i];
        fprintf(f, "| ");
        md_cell(f, v->name);
        fprintf(f, " | %llu | %llu | %llu | %llu |\n",
                (unsigned long long)v->checked, (unsigned long long)v->supported,
                (unsigned long long)v->contradicted,
                (unsigned long long)v->unverifiable);
    }
    for (i = 0; i < s->n; i++) {
        const struct evl_version_stats *v = s->v[i];
        size_t shown = 0;
        fprintf(f, "\n### Version ");
        md_cell(f, v->name);
        fprintf(f, "\n\nAttributes with errors (share of outputs about that "
                   "attribute that contradict it):\n\n");
        for (k = 0; k < s->n_attrs; k++) {
            if (v->attr_present[k] == 0 || v->attr_bad[k] == 0)
                continue;
            fprintf(f, "%s- ", shown ? "" : "");
            md_cell(f, evl_vocab_attr_name(s->vocab, k));
            fprintf(f, ": %llu of %llu (%.1f%%)\n",
                    (unsigned long long)v->attr_bad[k],
                    (unsigned long long)v->attr_present[k],
                    100.0 * (double)v->attr_bad[k] / (double)v->attr_present[k]);
            shown++;
        }
        if (shown == 0)
            fprintf(f, "- none\n");
        if (v->n_worst > 0) {
            fprintf(f, "\nWorst examples:\n\n| sample | attribute | copy says "
                       "| product has |\n|---|---|---|---|\n");
            worst_rows(f, s, v, &md_row);
        }
    }
}

/* ---- report.html --------------------------------------------------------- */

static void html_esc(FILE *f, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        case '\'': fputs("&#39;", f); break;
        default: fputc(*s, f);
        }
    }
}

static const struct row_style html_row = {"<tr><td>", "</td><td>",
                                          "</td></tr>\n", html_esc};

#define C_CONTROL "#4a6fa5"
#define C_BETTER "#1e8449"
#define C_WORSE "#c0392b"
#define C_NEUTRAL "#8c8c8c"

static const char *bar_colour(const struct evl_score *s, size_t i,
                              const char *metric)
{
    int sig;

    if (i == s->control)
        return C_CONTROL;
    sig = significance(s, i, metric);
    return sig > 0 ? C_BETTER : (sig < 0 ? C_WORSE : C_NEUTRAL);
}

/* A "nice" axis step (1, 2, 2.5 or 5 x 10^k) so that 4 steps cover max. */
static double nice_step(double max)
{
    double raw = max / 4.0, mag = pow(10.0, floor(log10(raw))), r = raw / mag;

    if (r <= 1.0)
        return mag;
    if (r <= 2.0)
        return 2.0 * mag;
    if (r <= 2.5)
        return 2.5 * mag;
    if (r <= 5.0)
        return 5.0 * mag;
    return 10.0 * mag;
}

/* Tick label for a percentage with just enough decimals for the step. */
static void tick_label(char *buf, size_t n, double pct, double step_pct,
                       int sign)
{
    int dec = step_pct >= 1.0 ? 0 : (step_pct >= 0.1 ? 1 : (step_pct >= 0.01 ? 2 : 3));

    snprintf(buf, n, sign ? "%+.*f%%" : "%.*f%%", dec, pct);
}

/* A horizontal bar chart of one rate per version with its 95% interval. */
static void svg_rates(FILE *f, const struct evl_score *s, const char *metric,
                      const char *title)
{
    const int W = 760, left = 150, right = 190, row = 36, top = 34;
    int H = top + row * (int)s->n + 34, plot = W - left - right, t;
    double max = 0.0, step;
    char tl[32];
    size_t i;

    for (i = 0; i < s->n; i++) {
        const struct evl_rate *r = metric_rate(s->v[i], metric);
        if (!isnan(r->high) && r->high > max)
            max = r->high;
    }
    if (max <= 0.0)
        max = 0.01;
    step = nice_step(max);
    max = 4.0 * step;
    fprintf(f, "<svg class=\"chart\" role=\"img\" width=\"%d\" height=\"%d\" "
               "viewBox=\"0 0 %d %d\" xmlns=\"http://www.w3.org/2000/svg\">\n",
            W, H, W, H);
    fprintf(f, "<title>");
    html_esc(f, title);
    fprintf(f, "</title>\n<text x=\"0\" y=\"18\" class=\"ct\">");
    html_esc(f, title);
    fprintf(f, "</text>\n");
    for (t = 0; t <= 4; t++) {
        double x = left + plot * t / 4.0;
        tick_label(tl, sizeof(tl), 100.0 * step * t, 100.0 * step, 0);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" "
                   "stroke=\"#e3e3e3\"/>\n<text x=\"%.1f\" y=\"%d\" "
                   "class=\"ax\" text-anchor=\"middle\">%s</text>\n",
                x, top - 4, x, H - 26, x, H - 10, tl);
    }
    for (i = 0; i < s->n; i++) {
        const struct evl_rate *r = metric_rate(s->v[i], metric);
        int y = top + row * (int)i;
        const char *col = bar_colour(s, i, metric);
        char label[64];
        fprintf(f, "<text x=\"%d\" y=\"%d\" class=\"vl\" text-anchor=\"end\">"
                   "version ", left - 10, y + 22);
        html_esc(f, s->v[i]->name);
        fprintf(f, "%s</text>\n", i == s->control ? " (control)" : "");
        if (isnan(r->value)) {
            fprintf(f, "<text x=\"%d\" y=\"%d\" class=\"ax\">no data</text>\n",
                    left + 4, y + 22);
            continue;
        }
        fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%.1f\" height=\"%d\" "
                   "fill=\"%s\"/>\n",
                left, y + 8, plot * r->value / max, row - 14, col);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" "
                   "stroke=\"#222\" stroke-width=\"2\"/>\n",
                left + plot * r->low / max, y + 18, left + plot * r->high / max,
                y + 18);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" "
                   "stroke=\"#222\" stroke-width=\"2\"/>\n<line x1=\"%.1f\" "
                   "y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#222\" "
                   "stroke-width=\"2\"/>\n",
                left + plot * r->low / max, y + 11, left + plot * r->low / max,
                y + 25, left + plot * r->high / max, y + 11,
                left + plot * r->high / max, y + 25);
        snprintf(label, sizeof(label), "%.2f%% [%.2f, %.2f]", 100 * r->value,
                 100 * r->low, 100 * r->high);
        fprintf(f, "<text x=\"%d\" y=\"%d\" class=\"vl\">%s</text>\n",
                W - right + 8, y + 22, label);
    }
    fprintf(f, "</svg>\n");
}

/* Forest plot: relative lift of each treatment against control. */
static void svg_lift(FILE *f, const struct evl_score *s, const char *metric,
                     const char *title)
{
    const int W = 760, left = 150, right = 190, row = 36, top = 34;
    int n = (int)s->n - 1, H, plot = W - left - right, t, k = 0;
    double lim = 0.05, step;
    char tl[32];
    size_t i;

    if (n <= 0)
        return;
    H = top + row * n + 34;
    for (i = 0; i < s->n; i++) {
        const struct evl_compare *c = metric_cmp(s->v[i], metric);
        if (i == s->control)
            continue;
        if (!isnan(c->rel_low) && fabs(c->rel_low) > lim)
            lim = fabs(c->rel_low);
        if (!isnan(c->rel_high) && fabs(c->rel_high) > lim)
            lim = fabs(c->rel_high);
    }
    step = nice_step(lim * 2.0) / 2.0;
    lim = 4.0 * step;
    step = lim / 2.0;
#define LX(v) (left + plot * ((v) + lim) / (2 * lim))
    fprintf(f, "<svg class=\"chart\" role=\"img\" width=\"%d\" height=\"%d\" "
               "viewBox=\"0 0 %d %d\" xmlns=\"http://www.w3.org/2000/svg\">\n",
            W, H, W, H);
    fprintf(f, "<title>");
    html_esc(f, title);
    fprintf(f, "</title>\n<text x=\"0\" y=\"18\" class=\"ct\">");
    html_esc(f, title);
    fprintf(f, "</text>\n");
    for (t = 0; t <= 4; t++) {
        double v = -lim + step * t;
        tick_label(tl, sizeof(tl), 100.0 * v, 100.0 * step, t != 2);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" "
                   "stroke=\"%s\"%s/>\n<text x=\"%.1f\" y=\"%d\" class=\"ax\" "
                   "text-anchor=\"middle\">%s</text>\n",
                LX(v), top - 4, LX(v), H - 26, t == 2 ? "#555" : "#e3e3e3",
                t == 2 ? " stroke-width=\"1.5\"" : "", LX(v), H - 10, tl);
    }
    for (i = 0; i < s->n; i++) {
        const struct evl_compare *c = metric_cmp(s->v[i], metric);
        const char *col = bar_colour(s, i, metric);
        int y;
        char label[64];
        if (i == s->control)
            continue;
        y = top + row * k++;
        fprintf(f, "<text x=\"%d\" y=\"%d\" class=\"vl\" text-anchor=\"end\">"
                   "version ", left - 10, y + 22);
        html_esc(f, s->v[i]->name);
        fprintf(f, "</text>\n");
        if (isnan(c->rel_lift)) {
            fprintf(f, "<text x=\"%d\" y=\"%d\" class=\"ax\">n/a (control "
                       "rate is 0)</text>\n", left + 4, y + 22);
            continue;
        }
        fprintf(f, "<rect x=\"%.1f\" y=\"%d\" width=\"%.1f\" height=\"10\" "
                   "fill=\"%s\" fill-opacity=\"0.35\"/>\n",
                LX(c->rel_low), y + 13, LX(c->rel_high) - LX(c->rel_low), col);
        fprintf(f, "<circle cx=\"%.1f\" cy=\"%d\" r=\"7\" fill=\"%s\"/>\n",
                LX(c->rel_lift), y + 18, col);
        snprintf(label, sizeof(label), "%+.1f%% [%+.1f, %+.1f]",
                 100 * c->rel_lift, 100 * c->rel_low, 100 * c->rel_high);
        fprintf(f, "<text x=\"%d\" y=\"%d\" class=\"vl\">%s</text>\n",
                W - right + 8, y + 22, label);
    }
#undef LX
    fprintf(f, "</svg>\n");
}

static void html_rate_cell(FILE *f, const struct evl_rate *r)
{
    char buf[64];

    fmt_rate_ci(buf, sizeof(buf), r);
    fprintf(f, "<td>%s</td>", buf);
}

static void write_html(const struct evl_score *s, const char *source, FILE *f)
{
    struct evl_verdict verdict;
    size_t i, k;
    const char *cls;

    evl_report_verdict(s, &verdict);
    cls = verdict.significant ? "win" : "tie";
    if (s->srm.flagged)
        cls = "warn";
    fprintf(f, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
               "\n<title>prompteval report</title>\n<style>\n"
               "body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,"
               "'Noto Sans CJK SC',sans-serif;margin:24px auto;max-width:960px;"
               "color:#222;padding:0 16px}\n"
               "h1{font-size:24px}h2{font-size:19px;margin-top:32px}"
               "h3{font-size:16px}\n"
               ".verdict{font-size:18px;padding:14px 18px;border-radius:6px;"
               "border-left:8px solid}\n"
               ".win{background:#eaf6ee;border-color:" C_BETTER "}"
               ".tie{background:#f3f3f3;border-color:" C_NEUTRAL "}"
               ".warn{background:#fdf0e6;border-color:#e67e22}\n"
               "table{border-collapse:collapse;margin:8px 0;font-size:14px}"
               "td,th{border:1px solid #ddd;padding:4px 8px;text-align:left}"
               "th{background:#f6f6f6}\n"
               ".chart{display:block;margin:12px 0;background:#fff}"
               ".ct{font-size:15px;font-weight:bold}.ax{font-size:12px;"
               "fill:#666}.vl{font-size:13px}\n"
               ".legend span{display:inline-block;margin-right:18px}"
               ".sw{display:inline-block;width:12px;height:12px;margin-right:5px;"
               "vertical-align:-1px}\n.small{color:#666;font-size:13px}\n"
               "</style></head><body>\n");
    fprintf(f, "<h1>prompteval report</h1>\n<p class=\"small\">%llu samples "
               "from <code>", (unsigned long long)s->samples);
    html_esc(f, source);
    fprintf(f, "</code>; %llu malformed lines skipped; control is version "
               "<b>", (unsigned long long)s->malformed);
    html_esc(f, s->v[s->control]->name);
    fprintf(f, "</b>.</p>\n<div class=\"verdict %s\" id=\"verdict\">", cls);
    html_esc(f, verdict.text);
    fprintf(f, "</div>\n<p class=\"legend small\"><span><i class=\"sw\" "
               "style=\"background:" C_CONTROL "\"></i>control</span><span>"
               "<i class=\"sw\" style=\"background:" C_BETTER "\"></i>"
               "significantly better than control</span><span><i class=\"sw\" "
               "style=\"background:" C_WORSE "\"></i>significantly worse"
               "</span><span><i class=\"sw\" style=\"background:" C_NEUTRAL
               "\"></i>no significant difference</span> Black whiskers: 95%% "
               "intervals. Significance: Holm-adjusted p &lt; 0.05.</p>\n");
    if (strcmp(verdict.metric, "fact_error_rate") != 0) {
        svg_rates(f, s, verdict.metric,
                  strcmp(verdict.metric, "cvr") == 0
                      ? "Conversion rate (higher is better)"
                      : "Click-through rate (higher is better)");
        svg_lift(f, s, verdict.metric,
                 strcmp(verdict.metric, "cvr") == 0
                     ? "Relative lift in conversion rate against control"
                     : "Relative lift in click-through rate against control");
    }
    svg_rates(f, s, "fact_error_rate",
              "Fact-error rate: outputs contradicting the product facts "
              "(lower is better)");
    if (strcmp(verdict.metric, "cvr") == 0)
        svg_rates(f, s, "ctr", "Click-through rate (higher is better)");

    {
        const char *short_name = strcmp(verdict.metric, "cvr") == 0 ? "CVR"
                                 : strcmp(verdict.metric, "ctr") == 0
                                     ? "CTR"
                                     : "fact-error";
        fprintf(f, "<h2>Per version</h2>\n<table><tr><th>version</th><th>samples"
                   "</th><th>fact-error rate [95%% CI]</th><th>CTR [95%% CI]</th>"
                   "<th>CVR [95%% CI]</th><th>%s lift</th><th>%s p (Holm)</th>"
                   "<th>%s chance to beat</th><th>key-fact coverage</th></tr>\n",
                short_name, short_name, short_name);
    }
    for (i = 0; i < s->n; i++) {
        const struct evl_version_stats *v = s->v[i];
        char l[32], p[32], c[32], cov[32];
        fprintf(f, "<tr><td>");
        html_esc(f, v->name);
        fprintf(f, "%s</td><td>%llu</td>", i == s->control ? " (control)" : "",
                (unsigned long long)v->samples);
        html_rate_cell(f, &v->fer);
        html_rate_cell(f, &v->ctr);
        html_rate_cell(f, &v->cvr);
        if (i == s->control) {
            snprintf(l, sizeof(l), "-");
            snprintf(p, sizeof(p), "-");
            snprintf(c, sizeof(c), "-");
        } else {
            const struct evl_compare *x = metric_cmp(v, verdict.metric);
            fmt_signed_pct(l, sizeof(l), x->rel_lift);
            fmt_p(p, sizeof(p), x->p_adjusted);
            fmt_pct(c, sizeof(c), x->chance_to_beat);
        }
        fmt_pct(cov, sizeof(cov), v->coverage_n ? v->coverage_sum / (double)v->coverage_n
                                                : NAN);
        fprintf(f, "<td>%s</td><td>%s</td><td>%s</td><td>%s</td></tr>\n", l, p,
                c, cov);
    }
    fprintf(f, "</table>\n");
    if (!isnan(s->srm.p_value))
        fprintf(f, "<p class=\"small\">Sample ratio check (%s): chi-square "
                   "%.3f, df %d, p = %.4g against %s%s.</p>\n", s->srm_unit,
                s->srm.chi2, s->srm.df, s->srm.p_value,
                strcmp(s->srm_source, "equal") == 0 ? "an equal split"
                : strcmp(s->srm_source, "split") == 0 ? "the given split"
                                                     : "the registry experiment",
                s->srm.flagged ? " &mdash; <b>mismatch</b>" : " (no mismatch)");

    fprintf(f, "<h2>Fact checking</h2>\n<p class=\"small\">A claim is "
               "<i>contradicted</i> when the copy names a value of an attribute "
               "that the product does not have, in place of one it has; "
               "<i>unverifiable</i> when the product has no fact for that "
               "attribute.</p>\n<table><tr><th>version</th><th>outputs</th>"
               "<th>supported</th><th>contradicted</th><th>unverifiable</th>"
               "</tr>\n");
    for (i = 0; i < s->n; i++) {
        const struct evl_version_stats *v = s->v[i];
        fprintf(f, "<tr><td>");
        html_esc(f, v->name);
        fprintf(f, "</td><td>%llu</td><td>%llu</td><td>%llu</td><td>%llu</td>"
                   "</tr>\n", (unsigned long long)v->checked,
                (unsigned long long)v->supported,
                (unsigned long long)v->contradicted,
                (unsigned long long)v->unverifiable);
    }
    fprintf(f, "</table>\n");
    for (i = 0; i < s->n; i++) {
        const struct evl_version_stats *v = s->v[i];
        int any = 0;
        fprintf(f, "<h3>Version ");
        html_esc(f, v->name);
        fprintf(f, "</h3>\n");
        for (k = 0; k < s->n_attrs; k++) {
            if (v->attr_present[k] == 0 || v->attr_bad[k] == 0)
                continue;
            if (!any)
                fprintf(f, "<table><tr><th>attribute</th><th>outputs about it"
                           "</th><th>contradicted</th><th>error rate</th></tr>\n");
            any = 1;
            fprintf(f, "<tr><td>");
            html_esc(f, evl_vocab_attr_name(s->vocab, k));
            fprintf(f, "</td><td>%llu</td><td>%llu</td><td>%.1f%%</td></tr>\n",
                    (unsigned long long)v->attr_present[k],
                    (unsigned long long)v->attr_bad[k],
                    100.0 * (double)v->attr_bad[k] / (double)v->attr_present[k]);
        }
        if (any)
            fprintf(f, "</table>\n");
        else
            fprintf(f, "<p class=\"small\">No contradicted attribute.</p>\n");
        if (v->n_worst > 0) {
            fprintf(f, "<table><tr><th>worst examples: sample</th><th>attribute"
                       "</th><th>copy says</th><th>product has</th></tr>\n");
            worst_rows(f, s, v, &html_row);
            fprintf(f, "</table>\n");
        }
    }
    fprintf(f, "<h2>How to read this</h2>\n<p class=\"small\">Rates carry "
               "Wilson 95%% intervals. Against control: the difference has an "
               "unpooled 95%% interval, the relative lift a delta-method "
               "interval; p comes from the pooled two-proportion z-test and is "
               "Holm-adjusted across treatment arms; chance to beat is the "
               "posterior probability of being better than control under "
               "Beta(1,1) priors. Full numbers: report.json.</p>\n"
               "</body></html>\n");
}

/* ---- files --------------------------------------------------------------- */

static int write_file(const char *dir, const char *name,
                      void (*fn)(const struct evl_score *, const char *, FILE *),
                      const struct evl_score *s, const char *source, char **err)
{
    char path[4096], tmp[4200];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    if ((f = fopen(tmp, "w")) == NULL) {
        set_err(err, "cannot open '%s': %s", tmp, strerror(errno));
        return -1;
    }
    fn(s, source, f);
    if (fflush(f) != 0 || ferror(f)) {
        set_err(err, "cannot write '%s': %s", tmp, strerror(errno));
        fclose(f);
        unlink(tmp);
        return -1;
    }
    fclose(f);
    if (rename(tmp, path) < 0) {
        set_err(err, "cannot rename '%s': %s", tmp, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

static void write_json_file(const struct evl_score *s, const char *source,
                            FILE *f)
{
    json_t *j = evl_report_json(s, source);

    json_dumpf(j, f, JSON_INDENT(2) | JSON_REAL_PRECISION(17));
    fputc('\n', f);
    json_decref(j);
}

int evl_report_write(const struct evl_score *s, const char *source,
                     const char *dir, char **err)
{
    if (strlen(dir) > 3000) {
        set_err(err, "output directory name is too long");
        return -1;
    }
    if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
        set_err(err, "cannot create '%s': %s", dir, strerror(errno));
        return -1;
    }
    if (write_file(dir, "report.json", write_json_file, s, source, err) < 0 ||
        write_file(dir, "report.md", write_md, s, source, err) < 0 ||
        write_file(dir, "report.html", write_html, s, source, err) < 0)
        return -1;
    return 0;
}
