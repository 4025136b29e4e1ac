/*
 * report.h - prompteval's outputs: report.json (the machine contract),
 * report.md, a self-contained report.html (inline CSS and SVG, no
 * network), and the summary table printed on the terminal.
 */
#ifndef EVL_REPORT_H
#define EVL_REPORT_H

#include <stdio.h>
#include <jansson.h>
#include "evaluator/score.h"

/* The metric a verdict is about, and its outcome. */
struct evl_verdict {
    const char *metric;      /* static: "cvr", "ctr" or "fact_error_rate" */
    const char *label;       /* static: "conversion rate", ... */
    long winner;             /* version index, -1 when no clear winner */
    int significant;         /* winner beats the others at Holm p < 0.05 */
    char text[1024];         /* one sentence for people */
};

/* Decide what the reports headline (see report.c for the rule). */
void evl_report_verdict(const struct evl_score *s, struct evl_verdict *out);

/* report.json as a new JSON object; `source` is the samples file name. */
json_t *evl_report_json(const struct evl_score *s, const char *source);

/* Write report.json, report.md and report.html into `dir` (created). */
int evl_report_write(const struct evl_score *s, const char *source,
                     const char *dir, char **err);

/* The terminal summary. */
void evl_report_table(const struct evl_score *s, FILE *out);

#endif
