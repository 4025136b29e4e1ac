/*
 * fuzz_sample.c - libFuzzer target: the evaluator's sample reader
 * (evaluator/sample.c) on a JSON-lines file, as `prompteval run` reads it.
 * fuzz_csv.c compiles this file with FUZZ_CSV for the CSV reader.
 *
 * The first input byte says whether a --map is given; the rest is the
 * file, written to a memfd and opened by its /proc path (the reader takes
 * a path). Like evaluator/main.c, it reads a first pass in
 * EVL_READ_FACTS mode, rewinds, and reads every record in EVL_READ_FULL
 * mode; then once more in EVL_READ_INPUT mode (replay). Checked:
 *  - every error names its line, and reading goes on after it;
 *  - a record the full pass reads, the facts pass and the replay pass read
 *    too (they check less);
 *  - a record both passes read: the facts text of the first pass is the
 *    facts of the second, the counts are within their bounds;
 *  - the reader ends (the number of calls is bounded by the bytes).
 */
#include "evaluator/sample.h"

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifdef FUZZ_CSV
#define CSV 1
#define MAP "version=group,user=user_id,conversions=converted"
#define NAME "fuzz_csv"
#else
#define CSV 0
#define MAP "version=v,output=text,facts=attrs"
#define NAME "fuzz_sample"
#endif

#define MAX_RECORDS 4096

static void die(const char *what, const char *detail)
{
    fprintf(stderr, NAME ": %s: %s\n", what, detail ? detail : "");
    abort();
}

struct pass {
    long n;                  /* calls that returned a record */
    long lines[MAX_RECORDS]; /* s.line of each */
    json_t *facts[MAX_RECORDS]; /* owned: FACTS pass, decoded facts_text */
};

/* Reads to the end in mode; p (may be NULL) records what came. */
static void read_all(struct evl_reader *r, enum evl_read_mode mode,
                     struct pass *first, struct pass *p, size_t size)
{
    struct evl_sample s;
    char *err = NULL;
    long calls = 0;
    int rc;

    p->n = 0;
    while ((rc = evl_reader_next(r, &s, mode, &err)) != 0) {
        if (++calls > (long)size + 2)
            die("the reader does not end", NULL);
        if (rc == -2)
            die("an I/O error on a memfd", err);
        if (rc == -1) {
            if (err == NULL || strstr(err, "line") == NULL)
                die("an error that does not name its line", err);
            free(err);
            err = NULL;
            continue;
        }
        if (rc != 1)
            die("evl_reader_next returned something else", NULL);
        if (mode != EVL_READ_FACTS) {
            if (mode == EVL_READ_FULL &&
                (s.version == NULL || strlen(s.version) > EVL_VERSION_MAX))
                die("a record without a version", NULL);
            if (s.impressions < 0 || s.impressions > EVL_COUNT_MAX ||
                s.clicks < 0 || s.conversions < 0 ||
                s.clicks > s.impressions || s.conversions > s.impressions)
                die("counts out of their bounds", s.version);
            if (s.output && strlen(s.output) > s.output_len)
                die("output length is wrong", NULL);
        }
        if (p->n < MAX_RECORDS) {
            p->lines[p->n] = s.line;
            p->facts[p->n] = NULL;
            if (mode == EVL_READ_FACTS && s.facts_text) {
                json_error_t e;
                p->facts[p->n] = json_loadb(s.facts_text, s.facts_text_len,
                                            0, &e);
            }
            /* the same record in a later pass: the same facts */
            if (first && mode == EVL_READ_FULL && p->n < first->n &&
                first->lines[p->n] == s.line && first->facts[p->n] &&
                s.facts && !json_equal(first->facts[p->n], s.facts))
                die("the first pass read other facts", NULL);
        }
        p->n++;
    }
    free(err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct pass a, b, c;
    struct evl_reader *r;
    char path[64], *err = NULL;
    const char *map;
    int fd;
    long i;

    if (size < 1)
        return 0;
    map = data[0] & 1 ? MAP : NULL;
    data++, size--;
    if ((fd = memfd_create(NAME, 0)) < 0)
        die("memfd_create", NULL);
    if (size && write(fd, data, size) != (ssize_t)size)
        die("write", NULL);
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    r = evl_reader_open(path, CSV, map, &err);
    if (r == NULL) {
        if (err == NULL || *err == '\0')
            die("open failed without a reason", NULL);
        free(err);
        close(fd);
        return 0;
    }
    read_all(r, EVL_READ_FACTS, NULL, &a, size);
    if (evl_reader_rewind(r, &err) < 0)
        die("rewind", err);
    read_all(r, EVL_READ_FULL, &a, &b, size);
    if (evl_reader_rewind(r, &err) < 0)
        die("rewind", err);
    read_all(r, EVL_READ_INPUT, NULL, &c, size);
    if (evl_reader_offset(r) > size)
        die("offset past the end", NULL);
    evl_reader_free(r);
    close(fd);
    if (b.n > c.n || b.n > a.n)
        die("a lighter pass read fewer records than the full one", NULL);
    for (i = 0; i < a.n && i < MAX_RECORDS; i++)
        json_decref(a.facts[i]);
    return 0;
}
