/*
 * sample.h - A/B samples, streamed from JSON lines or CSV.
 *
 * One sample is one exposure: `version` (required), `prompt`, `id`,
 * `user`, `variables` (object), `facts` (object), `output` (text), and the
 * outcome counts `impressions` (default 1), `clicks` and `conversions`
 * (default 0, at most impressions). A CSV file has a header row; its
 * `facts` and `variables` cells hold JSON text. `--map field=column,...`
 * renames the columns (or JSON keys) a field is read from.
 *
 * The reader holds one record at a time: memory does not grow with the
 * file. It can rewind, so a caller can make two passes over a file.
 */
#ifndef EVL_SAMPLE_H
#define EVL_SAMPLE_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#define EVL_LINE_MAX      (4 << 20)   /* bytes of one record */
#define EVL_VERSION_MAX   128         /* bytes of a version name */
#define EVL_CSV_COLS_MAX  256
#define EVL_COUNT_MAX     1000000000LL /* impressions of one sample */

enum evl_field {
    EVL_F_VERSION, EVL_F_PROMPT, EVL_F_ID, EVL_F_USER, EVL_F_VARIABLES,
    EVL_F_FACTS, EVL_F_OUTPUT, EVL_F_IMPRESSIONS, EVL_F_CLICKS,
    EVL_F_CONVERSIONS, EVL_F_COUNT_
};

struct evl_sample {
    const char *version;     /* borrowed from the reader, until next read */
    const char *prompt;      /* borrowed, NULL when absent */
    const char *id;          /* borrowed, NULL when absent */
    const char *user;        /* borrowed, NULL when absent */
    const json_t *variables; /* borrowed, NULL when absent */
    const json_t *facts;     /* borrowed, NULL when absent */
    const char *facts_text;  /* EVL_READ_FACTS: borrowed JSON text, or NULL */
    size_t facts_text_len;
    const char *output;      /* borrowed, NULL when absent */
    size_t output_len;
    int64_t impressions, clicks, conversions;
    long line;               /* line number where the record starts */
};

enum evl_read_mode {
    EVL_READ_FULL,           /* every field, validated */
    EVL_READ_INPUT,          /* the same, `version` optional (replay input) */
    EVL_READ_FACTS           /* only `facts`, undecoded, in facts_text (fast
                                path for a first pass); a facts text already
                                returned comes back as NULL (products repeat
                                across exposures; their values are known) */
};

struct evl_reader;

/*
 * Open `path`; csv is 1 for CSV, 0 for JSON lines, -1 to decide by the
 * name (.csv) . `map` is NULL or "field=column,...". Reads the CSV header.
 */
struct evl_reader *evl_reader_open(const char *path, int csv, const char *map,
                                   char **err);
void evl_reader_free(struct evl_reader *r);

/*
 * Read the next sample. Returns 1 with *s filled, 0 at end of file, -1 for
 * a malformed record (err names the line and the reason; reading can go
 * on), -2 for an I/O error (reading cannot go on).
 */
int evl_reader_next(struct evl_reader *r, struct evl_sample *s,
                    enum evl_read_mode mode, char **err);

/* Go back to the first record. */
int evl_reader_rewind(struct evl_reader *r, char **err);

/* Bytes read so far and the file size (for progress), 0 when unknown. */
uint64_t evl_reader_offset(const struct evl_reader *r);

/* Field name ("version") by enum. */
const char *evl_field_name(enum evl_field f);

#endif
