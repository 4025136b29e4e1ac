/*
 * diff.c - a unified diff (as `diff -u` prints it) between two versions.
 *
 * Design: each version is first laid out as text - every message as a
 * "[role]" line followed by its template, then "[params]" and the params as
 * indented JSON with sorted keys - so the diff shows wording and settings
 * together. Lines are compared with a longest-common-subsequence table,
 * which is quadratic: inputs above DIFF_CELLS_MAX cells are refused with a
 * clear error instead of eating memory. Hunks carry 3 lines of context.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "registry/internal.h"

#define DIFF_CONTEXT   3
#define DIFF_CELLS_MAX (32u << 20)

struct lines {
    char *text;              /* owned: the whole layout, NULs between lines */
    char **line;             /* owned array; entries borrowed from text */
    size_t n;
};

static void lines_free(struct lines *l)
{
    free(l->text);
    free(l->line);
}

static int layout(const struct reg_version *v, struct lines *out)
{
    char *buf = NULL, *params;
    size_t len = 0, cap = 0, i;
    FILE *f = open_memstream(&buf, &len);

    (void)cap;
    memset(out, 0, sizeof(*out));
    if (f == NULL)
        return -1;
    for (i = 0; i < v->n_messages; i++)
        fprintf(f, "[%s]\n%s\n", v->messages[i].role, v->messages[i].content);
    params = json_dumps(v->params, JSON_INDENT(2) | JSON_SORT_KEYS
                        | JSON_REAL_PRECISION(15));
    fprintf(f, "[params]\n%s\n", params ? params : "{}");
    free(params);
    if (fclose(f) != 0) {
        free(buf);
        return -1;
    }
    out->text = buf;
    for (size_t k = 0; k < len; k++)
        if (buf[k] == '\n')
            out->n++;
    out->line = calloc(out->n + 1, sizeof(char *));
    if (out->line == NULL) {
        free(buf);
        return -1;
    }
    out->n = 0;
    for (char *p = buf, *nl; (nl = strchr(p, '\n')) != NULL; p = nl + 1) {
        *nl = '\0';
        out->line[out->n++] = p;
    }
    return 0;
}

static int emit_hunk(FILE *f, const char *ops, size_t from, size_t to,
                     const struct lines *a, const struct lines *b)
{
    size_t ai = 0, bi = 0, a0, b0, na = 0, nb = 0;

    /* positions at hunk start */
    for (size_t k = 0; k < from; k++) {
        if (ops[k] != '+')
            ai++;
        if (ops[k] != '-')
            bi++;
    }
    a0 = ai;
    b0 = bi;
    for (size_t k = from; k < to; k++) {
        if (ops[k] != '+')
            na++;
        if (ops[k] != '-')
            nb++;
    }
    fprintf(f, "@@ -%zu,%zu +%zu,%zu @@\n", na ? a0 + 1 : a0, na, nb ? b0 + 1 : b0, nb);
    for (size_t k = from; k < to; k++) {
        if (ops[k] == '=')
            fprintf(f, " %s\n", a->line[ai++]), bi++;
        else if (ops[k] == '-')
            fprintf(f, "-%s\n", a->line[ai++]);
        else
            fprintf(f, "+%s\n", b->line[bi++]);
    }
    return 0;
}

char *reg_diff(const struct reg_version *va, const struct reg_version *vb,
               char **err)
{
    struct lines a, b;
    unsigned *t = NULL;
    char *ops = NULL, *out = NULL;
    size_t n, m, nops = 0, outlen = 0;
    FILE *f = NULL;

    if (layout(va, &a) < 0) {
        reg_err(err, "cannot diff: out of memory");
        return NULL;
    }
    if (layout(vb, &b) < 0) {
        lines_free(&a);
        reg_err(err, "cannot diff: out of memory");
        return NULL;
    }
    n = a.n;
    m = b.n;
    if ((n + 1) * (m + 1) > DIFF_CELLS_MAX) {
        reg_err(err, "cannot diff: versions of %zu and %zu lines are too large", n, m);
        goto done;
    }
    t = calloc((n + 1) * (m + 1), sizeof(*t));
    ops = malloc(n + m + 1);
    if (t == NULL || ops == NULL) {
        reg_err(err, "cannot diff: out of memory");
        goto done;
    }
    /* t[i][j] = LCS length of a[i..] and b[j..] */
    for (size_t i = n; i-- > 0;)
        for (size_t j = m; j-- > 0;)
            t[i * (m + 1) + j] = strcmp(a.line[i], b.line[j]) == 0
                ? t[(i + 1) * (m + 1) + j + 1] + 1
                : (t[(i + 1) * (m + 1) + j] >= t[i * (m + 1) + j + 1]
                   ? t[(i + 1) * (m + 1) + j] : t[i * (m + 1) + j + 1]);
    for (size_t i = 0, j = 0; i < n || j < m;) {
        if (i < n && j < m && strcmp(a.line[i], b.line[j]) == 0) {
            ops[nops++] = '=';
            i++, j++;
        } else if (i < n && (j == m || t[(i + 1) * (m + 1) + j] >= t[i * (m + 1) + j + 1])) {
            ops[nops++] = '-';   /* removals first, as diff -u prints them */
            i++;
        } else {
            ops[nops++] = '+';
            j++;
        }
    }
    if ((f = open_memstream(&out, &outlen)) == NULL) {
        reg_err(err, "cannot diff: out of memory");
        goto done;
    }
    for (size_t k = 0; k < nops; k++)
        if (ops[k] != '=') {
            fprintf(f, "--- %s@%d\n+++ %s@%d\n", va->prompt, va->version,
                    vb->prompt, vb->version);
            break;
        }
    for (size_t k = 0; k < nops;) {
        size_t start, end, last;
        if (ops[k] == '=') {
            k++;
            continue;
        }
        start = k > DIFF_CONTEXT ? k - DIFF_CONTEXT : 0;
        /* extend while the next change is within 2*context of the last */
        last = k;
        for (size_t j = k; j < nops; j++) {
            if (ops[j] != '=')
                last = j;
            else if (j - last > 2 * DIFF_CONTEXT)
                break;
        }
        end = last + 1 + DIFF_CONTEXT < nops ? last + 1 + DIFF_CONTEXT : nops;
        emit_hunk(f, ops, start, end, &a, &b);
        k = end;
    }
    if (fclose(f) != 0) {
        free(out);
        out = NULL;
        reg_err(err, "cannot diff: out of memory");
    }
done:
    free(t);
    free(ops);
    lines_free(&a);
    lines_free(&b);
    return out;
}
