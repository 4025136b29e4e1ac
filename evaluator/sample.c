/*
 * sample.c - streaming A/B sample reader (see sample.h).
 *
 * Design: getline() into one reused buffer; a JSON line is decoded with
 * jansson into one tree kept until the next read (the sample borrows from
 * it). In EVL_READ_FACTS mode a JSON line is not decoded whole: a small
 * scanner walks the top-level object, skips every value but `facts`, and
 * only that value goes to jansson. A first pass over a big file then
 * costs a fraction of a full parse.
 *
 * CSV follows RFC 4180: quoted fields may hold commas, doubled quotes and
 * newlines; the record is decoded in place into the line buffer.
 *
 * The first pass also remembers a 64-bit hash of each distinct facts text
 * (a bounded set: 2^18 slots, 2 MiB, filled to half) and skips decoding a
 * facts text it has seen: an A/B file shows the same product to many users.
 *
 * Invariants: at most one record is held; a malformed record leaves the
 * reader positioned on the next one; every error names its line.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "evaluator/sample.h"

static const char *const field_names[EVL_F_COUNT_] = {
    "version", "prompt", "id", "user", "variables",
    "facts", "output", "impressions", "clicks", "conversions"};

struct evl_reader {
    FILE *f;                  /* owned */
    char *path;               /* owned */
    int csv;
    char *line;               /* owned: getline buffer */
    size_t cap;
    char *rec;                /* owned: CSV record being assembled */
    size_t rec_cap;
    long lineno;              /* lines consumed so far */
    uint64_t offset;
    long data_start_line;
    long data_start_offset;
    json_t *root;             /* owned: current JSON record */
    json_t *facts;            /* owned: current CSV facts / fast-path facts */
    json_t *variables;        /* owned: current CSV variables */
    char *key[EVL_F_COUNT_];  /* owned: JSON key / CSV column per field */
    int col[EVL_F_COUNT_];    /* CSV column index, -1 when absent */
    char *cells[EVL_CSV_COLS_MAX]; /* borrowed from rec */
    size_t cell_len[EVL_CSV_COLS_MAX];
    int n_cols;
    uint64_t *seen;           /* owned: hashes of facts texts (FACTS mode) */
    size_t n_seen;
};

#define SEEN_SLOTS (1u << 18)

/* 1 when the facts text was seen before; remembers it otherwise. */
static int facts_seen(struct evl_reader *r, const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ULL ^ n;
    size_t i;

    if (r->seen == NULL && (r->seen = calloc(SEEN_SLOTS, sizeof(uint64_t))) == NULL)
        return 0;
    for (i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 1099511628211ULL;
    }
    h ^= h >> 31;
    h |= 1; /* 0 marks an empty slot */
    for (i = (size_t)(h >> 7) & (SEEN_SLOTS - 1); r->seen[i];
         i = (i + 1) & (SEEN_SLOTS - 1))
        if (r->seen[i] == h)
            return 1;
    if (r->n_seen < SEEN_SLOTS / 2) {
        r->seen[i] = h;
        r->n_seen++;
    }
    return 0;
}

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

const char *evl_field_name(enum evl_field f)
{
    return (f >= 0 && f < EVL_F_COUNT_) ? field_names[f] : "?";
}

static int parse_map(struct evl_reader *r, const char *map, char **err)
{
    char *copy, *tok, *save = NULL;
    int f;

    for (f = 0; f < EVL_F_COUNT_; f++)
        if ((r->key[f] = strdup(field_names[f])) == NULL)
            goto oom;
    if (map == NULL || *map == '\0')
        return 0;
    if (strlen(map) > 4096) {
        set_err(err, "--map is longer than 4096 bytes");
        return -1;
    }
    if ((copy = strdup(map)) == NULL)
        goto oom;
    for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');
        if (eq == NULL || eq == tok || eq[1] == '\0') {
            set_err(err, "invalid --map item '%s': expected field=column "
                    "(fields: version, prompt, id, user, variables, facts, "
                    "output, impressions, clicks, conversions)", tok);
            free(copy);
            return -1;
        }
        *eq = '\0';
        for (f = 0; f < EVL_F_COUNT_; f++)
            if (strcmp(tok, field_names[f]) == 0)
                break;
        if (f == EVL_F_COUNT_) {
            set_err(err, "invalid --map item '%s': unknown field (fields: "
                    "version, prompt, id, user, variables, facts, output, "
                    "impressions, clicks, conversions)", tok);
            free(copy);
            return -1;
        }
        free(r->key[f]);
        if ((r->key[f] = strdup(eq + 1)) == NULL) {
            free(copy);
            goto oom;
        }
    }
    free(copy);
    return 0;
oom:
    set_err(err, "cannot parse --map: out of memory");
    return -1;
}

/* ---- CSV ----------------------------------------------------------------- */

/*
 * Read one CSV record (possibly several lines) into r->rec and split it
 * into cells. Returns 1, 0 at EOF, -1 malformed, -2 I/O error.
 */
static int csv_record(struct evl_reader *r, long *start_line, char **err)
{
    size_t used = 0;
    int in_quotes = 0, n = 0;
    ssize_t got;
    size_t i, out, cell_start;
    char *s;

    *start_line = r->lineno + 1;
    for (;;) {
        got = getline(&r->line, &r->cap, r->f);
        if (got < 0) {
            if (ferror(r->f)) {
                set_err(err, "cannot read '%s': %s", r->path, strerror(errno));
                return -2;
            }
            if (used == 0)
                return 0;
            set_err(err, "line %ld: unterminated quoted field", *start_line);
            return -1;
        }
        r->lineno++;
        r->offset += (uint64_t)got;
        if (used + (size_t)got + 1 > EVL_LINE_MAX) {
            /* drain the rest of the record's physical line and give up */
            set_err(err, "line %ld: record longer than %d bytes", *start_line,
                    EVL_LINE_MAX);
            return -1;
        }
        if (used + (size_t)got + 1 > r->rec_cap) {
            size_t cap = (used + (size_t)got + 1) * 2;
            char *p = realloc(r->rec, cap);
            if (p == NULL) {
                set_err(err, "cannot read '%s': out of memory", r->path);
                return -2;
            }
            r->rec = p;
            r->rec_cap = cap;
        }
        memcpy(r->rec + used, r->line, (size_t)got);
        used += (size_t)got;
        r->rec[used] = '\0';
        for (i = used - (size_t)got; i < used; i++)
            if (r->rec[i] == '"')
                in_quotes = !in_quotes;
        if (!in_quotes)
            break;
    }
    while (used > 0 && (r->rec[used - 1] == '\n' || r->rec[used - 1] == '\r'))
        r->rec[--used] = '\0';
    /* split and unquote in place */
    s = r->rec;
    i = out = cell_start = 0;
    for (;;) {
        int quoted = 0;
        cell_start = out;
        if (i < used && s[i] == '"') {
            quoted = 1;
            i++;
            for (;;) {
                if (i >= used) {
                    set_err(err, "line %ld: unterminated quoted field",
                            *start_line);
                    return -1;
                }
                if (s[i] == '"') {
                    if (i + 1 < used && s[i + 1] == '"') {
                        s[out++] = '"';
                        i += 2;
                        continue;
                    }
                    i++;
                    break;
                }
                s[out++] = s[i++];
            }
        }
        while (i < used && s[i] != ',') {
            if (quoted) {
                set_err(err, "line %ld: text after a closing quote in field "
                        "%d", *start_line, n + 1);
                return -1;
            }
            s[out++] = s[i++];
        }
        if (n >= EVL_CSV_COLS_MAX) {
            set_err(err, "line %ld: more than %d fields", *start_line,
                    EVL_CSV_COLS_MAX);
            return -1;
        }
        r->cells[n] = s + cell_start;
        r->cell_len[n] = out - cell_start;
        n++;
        if (i >= used) {
            s[out] = '\0';
            break;
        }
        s[out++] = '\0';
        i++; /* the comma */
    }
    /* cells were NUL-terminated as we went (the comma slot became NUL) */
    r->n_cols = n;
    return 1;
}

static int csv_header(struct evl_reader *r, char **err)
{
    long line;
    int rc = csv_record(r, &line, err), f, c;

    if (rc == 0) {
        set_err(err, "cannot read '%s': empty CSV file (a header row is "
                "required)", r->path);
        return -1;
    }
    if (rc < 0)
        return -1;
    for (f = 0; f < EVL_F_COUNT_; f++) {
        r->col[f] = -1;
        for (c = 0; c < r->n_cols; c++)
            if (strcmp(r->cells[c], r->key[f]) == 0)
                r->col[f] = c;
    }
    if (r->col[EVL_F_VERSION] < 0) {
        set_err(err, "cannot read '%s': the CSV header has no column '%s' "
                "for the version (use --map version=COLUMN)", r->path,
                r->key[EVL_F_VERSION]);
        return -1;
    }
    return 0;
}

/* ---- helpers ------------------------------------------------------------- */

static int utf8_valid(const char *s, size_t n)
{
    size_t i = 0;

    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        size_t k, len;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF)
            len = 2;
        else if (c >= 0xE0 && c <= 0xEF)
            len = 3;
        else if (c >= 0xF0 && c <= 0xF4)
            len = 4;
        else
            return 0;
        if (i + len > n)
            return 0;
        for (k = 1; k < len; k++)
            if (((unsigned char)s[i + k] & 0xC0) != 0x80)
                return 0;
        i += len;
    }
    return 1;
}

static int parse_count(const char *s, size_t n, int64_t *out)
{
    int64_t v = 0;
    size_t i;

    if (n == 0 || n > 12)
        return -1;
    for (i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

static int check_counts(struct evl_sample *s, char **err)
{
    if (s->impressions < 0 || s->impressions > EVL_COUNT_MAX) {
        set_err(err, "line %ld: impressions %lld out of range 0..%lld",
                s->line, (long long)s->impressions, (long long)EVL_COUNT_MAX);
        return -1;
    }
    if (s->clicks < 0 || s->clicks > s->impressions) {
        set_err(err, "line %ld: clicks %lld not within 0..impressions (%lld)",
                s->line, (long long)s->clicks, (long long)s->impressions);
        return -1;
    }
    if (s->conversions < 0 || s->conversions > s->impressions) {
        set_err(err, "line %ld: conversions %lld not within 0..impressions "
                "(%lld)", s->line, (long long)s->conversions,
                (long long)s->impressions);
        return -1;
    }
    return 0;
}

static int check_version(struct evl_sample *s, enum evl_read_mode mode,
                         char **err)
{
    size_t n;

    if (mode == EVL_READ_INPUT && s->version == NULL)
        return 0;
    if (s->version == NULL || (n = strlen(s->version)) == 0) {
        set_err(err, "line %ld: missing 'version'", s->line);
        return -1;
    }
    if (n > EVL_VERSION_MAX) {
        set_err(err, "line %ld: version longer than %d bytes", s->line,
                EVL_VERSION_MAX);
        return -1;
    }
    return 0;
}

/* ---- JSON lines ---------------------------------------------------------- */

static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
        p++;
    return p;
}

/* Skip a JSON string starting at '"'; returns the byte after it or NULL. */
static const char *skip_string(const char *p, const char *end)
{
    for (p++; p < end; p++) {
        if (*p == '\\') {
            p++;
            continue;
        }
        if (*p == '"')
            return p + 1;
    }
    return NULL;
}

/* Skip any JSON value (not validated); returns the byte after it or NULL. */
static const char *skip_value(const char *p, const char *end)
{
    int depth = 0;

    if (p >= end)
        return NULL;
    if (*p == '"')
        return skip_string(p, end);
    if (*p != '{' && *p != '[') {
        while (p < end && *p != ',' && *p != '}' && *p != ']' && *p != ' ' &&
               *p != '\t' && *p != '\r' && *p != '\n')
            p++;
        return p;
    }
    for (; p < end; p++) {
        if (*p == '"') {
            if ((p = skip_string(p, end)) == NULL)
                return NULL;
            p--;
        } else if (*p == '{' || *p == '[') {
            depth++;
        } else if (*p == '}' || *p == ']') {
            if (--depth == 0)
                return p + 1;
        }
    }
    return NULL;
}

/*
 * Fast path: find the top-level key `facts` and hand out its text
 * undecoded (s->facts_text; NULL when absent or already seen). Returns 1,
 * or -1 when the line does not look like an object (the full pass reports
 * it).
 */
static int json_facts_only(struct evl_reader *r, struct evl_sample *s,
                           const char *line, size_t n)
{
    const char *p = line, *end = line + n, *k, *kend, *v, *vend;
    const char *fv = NULL, *fvend = NULL;
    const char *key = r->key[EVL_F_FACTS];
    size_t klen = strlen(key);

    p = skip_ws(p, end);
    if (p >= end || *p != '{')
        return -1;
    p++;
    for (;;) {
        p = skip_ws(p, end);
        if (p < end && *p == '}')
            break;
        if (p >= end || *p != '"')
            return -1;
        k = p + 1;
        if ((kend = skip_string(p, end)) == NULL)
            return -1;
        p = skip_ws(kend, end);
        if (p >= end || *p != ':')
            return -1;
        v = skip_ws(p + 1, end);
        if ((vend = skip_value(v, end)) == NULL)
            return -1;
        /* a key written twice: the last one counts, as jansson reads the
         * line in the full pass (the first one here gave the vocabulary
         * other facts than the check saw; found by tests/fuzz/fuzz_sample) */
        if ((size_t)(kend - 1 - k) == klen && memcmp(k, key, klen) == 0)
            fv = v, fvend = vend;
        p = skip_ws(vend, end);
        if (p < end && *p == ',') {
            p++;
            continue;
        }
        if (p < end && *p == '}')
            break;
        return -1;
    }
    if (fv && !facts_seen(r, fv, (size_t)(fvend - fv))) {
        s->facts_text = fv;
        s->facts_text_len = (size_t)(fvend - fv);
    }
    return 1;
}

static int json_count(const json_t *o, const char *key, int64_t dflt,
                      int64_t *out, long line, char **err)
{
    const json_t *x = json_object_get(o, key);

    if (x == NULL || json_is_null(x)) {
        *out = dflt;
        return 0;
    }
    if (json_is_integer(x)) {
        *out = json_integer_value(x);
        return 0;
    }
    if (json_is_boolean(x)) {
        *out = json_is_true(x);
        return 0;
    }
    if (json_is_real(x) && json_real_value(x) == (double)(int64_t)json_real_value(x)) {
        *out = (int64_t)json_real_value(x);
        return 0;
    }
    set_err(err, "line %ld: '%s' is not a whole number", line, key);
    return -1;
}

static const char *json_str(const json_t *o, const char *key, int *bad)
{
    const json_t *x = json_object_get(o, key);

    if (x == NULL || json_is_null(x))
        return NULL;
    if (!json_is_string(x)) {
        *bad = 1;
        return NULL;
    }
    return json_string_value(x);
}

static int read_json(struct evl_reader *r, struct evl_sample *s,
                     enum evl_read_mode mode, const char *line, size_t n,
                     char **err)
{
    json_error_t jerr;
    const json_t *ver, *o;
    int bad = 0;

    if (mode == EVL_READ_FACTS) {
        if (json_facts_only(r, s, line, n) < 0) {
            set_err(err, "line %ld: not a JSON object", s->line);
            return -1;
        }
        return 1;
    }
    r->root = json_loadb(line, n, 0, &jerr);
    if (r->root == NULL) {
        set_err(err, "line %ld: invalid JSON: %s (column %d)", s->line,
                jerr.text, jerr.column);
        return -1;
    }
    o = r->root;
    if (!json_is_object(o)) {
        set_err(err, "line %ld: not a JSON object", s->line);
        return -1;
    }
    ver = json_object_get(o, r->key[EVL_F_VERSION]);
    if (json_is_integer(ver)) {
        /* a numeric version is the usual case (prompt versions are numbers) */
        char buf[32];
        json_t *str;
        snprintf(buf, sizeof(buf), "%lld", (long long)json_integer_value(ver));
        str = json_string(buf);
        if (str == NULL || json_object_set_new(r->root, r->key[EVL_F_VERSION],
                                               str) < 0) {
            set_err(err, "line %ld: out of memory", s->line);
            return -2;
        }
    } else if (ver != NULL && !json_is_string(ver)) {
        set_err(err, "line %ld: 'version' is not a string or number", s->line);
        return -1;
    }
    s->version = json_str(o, r->key[EVL_F_VERSION], &bad);
    s->prompt = json_str(o, r->key[EVL_F_PROMPT], &bad);
    s->id = json_str(o, r->key[EVL_F_ID], &bad);
    s->user = json_str(o, r->key[EVL_F_USER], &bad);
    s->output = json_str(o, r->key[EVL_F_OUTPUT], &bad);
    if (bad) {
        set_err(err, "line %ld: 'prompt', 'id', 'user' and 'output' must be "
                "strings", s->line);
        return -1;
    }
    if (json_is_integer(json_object_get(o, r->key[EVL_F_ID])) ||
        json_is_integer(json_object_get(o, r->key[EVL_F_USER]))) {
        set_err(err, "line %ld: 'id' and 'user' must be strings", s->line);
        return -1;
    }
    s->output_len = s->output ? json_string_length(
                                    json_object_get(o, r->key[EVL_F_OUTPUT]))
                              : 0;
    s->facts = json_object_get(o, r->key[EVL_F_FACTS]);
    s->variables = json_object_get(o, r->key[EVL_F_VARIABLES]);
    if (s->facts && !json_is_object(s->facts) && !json_is_null(s->facts)) {
        set_err(err, "line %ld: 'facts' is not an object", s->line);
        return -1;
    }
    if (s->variables && !json_is_object(s->variables) &&
        !json_is_null(s->variables)) {
        set_err(err, "line %ld: 'variables' is not an object", s->line);
        return -1;
    }
    if (json_count(o, r->key[EVL_F_IMPRESSIONS], 1, &s->impressions, s->line,
                   err) < 0 ||
        json_count(o, r->key[EVL_F_CLICKS], 0, &s->clicks, s->line, err) < 0 ||
        json_count(o, r->key[EVL_F_CONVERSIONS], 0, &s->conversions, s->line,
                   err) < 0)
        return -1;
    if (check_version(s, mode, err) < 0 || check_counts(s, err) < 0)
        return -1;
    return 1;
}

/* ---- CSV samples --------------------------------------------------------- */

static const char *cell(struct evl_reader *r, enum evl_field f, size_t *len)
{
    int c = r->col[f];

    if (c < 0 || c >= r->n_cols || r->cell_len[c] == 0)
        return NULL;
    if (len)
        *len = r->cell_len[c];
    return r->cells[c];
}

static int csv_json_cell(struct evl_reader *r, enum evl_field f, json_t **out,
                         long line, char **err)
{
    size_t n;
    const char *c = cell(r, f, &n);
    json_error_t jerr;

    *out = NULL;
    if (c == NULL)
        return 0;
    *out = json_loadb(c, n, 0, &jerr);
    if (*out == NULL || !json_is_object(*out)) {
        set_err(err, "line %ld: column '%s' is not a JSON object%s%s", line,
                r->key[f], *out ? "" : ": ", *out ? "" : jerr.text);
        return -1;
    }
    return 0;
}

static int read_csv(struct evl_reader *r, struct evl_sample *s,
                    enum evl_read_mode mode, char **err)
{
    static const enum evl_field counts[] = {EVL_F_IMPRESSIONS, EVL_F_CLICKS,
                                            EVL_F_CONVERSIONS};
    int64_t *dst[] = {&s->impressions, &s->clicks, &s->conversions};
    size_t i, n;
    const char *c;

    if (r->n_cols == 1 && r->cell_len[0] == 0) {
        set_err(err, "line %ld: empty line", s->line);
        return -1;
    }
    if (mode == EVL_READ_FACTS) {
        c = cell(r, EVL_F_FACTS, &n);
        if (c != NULL && !facts_seen(r, c, n)) {
            s->facts_text = c;
            s->facts_text_len = n;
        }
        return 1;
    }
    if (csv_json_cell(r, EVL_F_FACTS, &r->facts, s->line, err) < 0)
        return -1;
    s->facts = r->facts;
    if (csv_json_cell(r, EVL_F_VARIABLES, &r->variables, s->line, err) < 0)
        return -1;
    s->variables = r->variables;
    s->version = cell(r, EVL_F_VERSION, NULL);
    s->prompt = cell(r, EVL_F_PROMPT, NULL);
    s->id = cell(r, EVL_F_ID, NULL);
    s->user = cell(r, EVL_F_USER, NULL);
    s->output = cell(r, EVL_F_OUTPUT, &s->output_len);
    if (s->output == NULL)
        s->output_len = 0;
    for (i = 0; i < 3; i++) {
        c = cell(r, counts[i], &n);
        *dst[i] = counts[i] == EVL_F_IMPRESSIONS ? 1 : 0;
        if (c && parse_count(c, n, dst[i]) < 0) {
            set_err(err, "line %ld: column '%s' is not a whole number",
                    s->line, r->key[counts[i]]);
            return -1;
        }
    }
    for (i = 0; i < (size_t)r->n_cols; i++)
        if (!utf8_valid(r->cells[i], r->cell_len[i])) {
            set_err(err, "line %ld: field %zu is not valid UTF-8", s->line,
                    i + 1);
            return -1;
        }
    if (check_version(s, mode, err) < 0 || check_counts(s, err) < 0)
        return -1;
    return 1;
}

/* ---- public -------------------------------------------------------------- */

struct evl_reader *evl_reader_open(const char *path, int csv, const char *map,
                                   char **err)
{
    struct evl_reader *r = calloc(1, sizeof(*r));
    struct stat st;
    size_t n;

    if (r == NULL) {
        set_err(err, "cannot open '%s': out of memory", path);
        return NULL;
    }
    if ((r->path = strdup(path)) == NULL) {
        set_err(err, "cannot open '%s': out of memory", path);
        goto fail;
    }
    if (parse_map(r, map, err) < 0)
        goto fail;
    r->f = fopen(path, "r");
    if (r->f == NULL) {
        set_err(err, "cannot open '%s': %s", path, strerror(errno));
        goto fail;
    }
    if (fstat(fileno(r->f), &st) == 0 && !S_ISREG(st.st_mode)) {
        set_err(err, "cannot read '%s': not a regular file (the samples are "
                "read twice: save them to a file first)", path);
        goto fail;
    }
    n = strlen(path);
    r->csv = csv >= 0 ? csv : (n > 4 && strcasecmp(path + n - 4, ".csv") == 0);
    if (r->csv && csv_header(r, err) < 0)
        goto fail;
    r->data_start_line = r->lineno;
    r->data_start_offset = ftell(r->f);
    return r;
fail:
    evl_reader_free(r);
    return NULL;
}

void evl_reader_free(struct evl_reader *r)
{
    int f;

    if (r == NULL)
        return;
    if (r->f)
        fclose(r->f);
    json_decref(r->root);
    json_decref(r->facts);
    json_decref(r->variables);
    for (f = 0; f < EVL_F_COUNT_; f++)
        free(r->key[f]);
    free(r->line);
    free(r->rec);
    free(r->path);
    free(r->seen);
    free(r);
}

int evl_reader_rewind(struct evl_reader *r, char **err)
{
    if (fseek(r->f, r->data_start_offset, SEEK_SET) < 0) {
        set_err(err, "cannot rewind '%s': %s", r->path, strerror(errno));
        return -1;
    }
    r->lineno = r->data_start_line;
    r->offset = (uint64_t)r->data_start_offset;
    return 0;
}

uint64_t evl_reader_offset(const struct evl_reader *r)
{
    return r->offset;
}

int evl_reader_next(struct evl_reader *r, struct evl_sample *s,
                    enum evl_read_mode mode, char **err)
{
    ssize_t got;

    json_decref(r->root);
    json_decref(r->facts);
    json_decref(r->variables);
    r->root = r->facts = r->variables = NULL;
    memset(s, 0, sizeof(*s));
    if (r->csv) {
        int rc = csv_record(r, &s->line, err);
        if (rc <= 0)
            return rc;
        return read_csv(r, s, mode, err);
    }
    for (;;) {
        got = getline(&r->line, &r->cap, r->f);
        if (got < 0) {
            if (ferror(r->f)) {
                set_err(err, "cannot read '%s': %s", r->path, strerror(errno));
                return -2;
            }
            return 0;
        }
        r->lineno++;
        r->offset += (uint64_t)got;
        s->line = r->lineno;
        while (got > 0 && (r->line[got - 1] == '\n' || r->line[got - 1] == '\r'))
            got--;
        if (got == 0)
            continue; /* blank lines separate nothing in JSON lines */
        if (got > EVL_LINE_MAX) {
            set_err(err, "line %ld: longer than %d bytes", s->line,
                    EVL_LINE_MAX);
            return -1;
        }
        return read_json(r, s, mode, r->line, (size_t)got, err);
    }
}
