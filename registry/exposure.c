/*
 * exposure.c - the A/B log: exposures (what the gateway served, to whom)
 * and feedback (business outcomes attached later), and their export as
 * the evaluator's samples (issue 7).
 *
 * Design: the gateway's writer thread holds a reg_exposure_log (one
 * connection, its INSERTs prepared once) and hands it batches, one
 * transaction per batch, so a busy gateway costs SQLite one commit per
 * batch rather than per request, and one statement execution per
 * EX_ROWS exposures rather than per exposure. Feedback is keyed
 * by (request_id, event) with INSERT OR IGNORE: a client that retries a
 * POST /v1/feedback adds nothing. The export joins exposures with their
 * feedback and streams one sample per exposure through a callback, so an
 * export of millions of rows runs in constant memory.
 *
 * Invariants:
 *  1. A batch is all or nothing: a bad record fails the whole batch
 *     before anything is written; a failed step rolls it back.
 *  2. The first feedback of a (request, event) wins; later ones change
 *     nothing (idempotency, not "last writer wins").
 *  3. The sample format is the evaluator's input (issue 8): version, user,
 *     variables, facts, output, impressions, clicks, conversions.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "registry/internal.h"
#include "registry/json8.h"

#define LINE_MAX_BYTES (16u << 20) /* one line of a JSON-lines log */
#define WAL_BYTES (4L << 20)       /* the log's WAL between checkpoints */

int reg_event_valid(const char *s)
{
    size_t n;

    if (s == NULL || *s == '\0')
        return 0;
    n = strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789_.-");
    return s[n] == '\0' && n <= REG_EVENT_MAX;
}

/* ---- JSON text of a record --------------------------------------------- */

/* The record formatter's small helpers are inlined (INLINE) where they
 * are used: their key names and sizes are then constants, so the copies
 * are a few moves rather than calls of memcpy. */
#define INLINE static inline __attribute__((always_inline))

/* grows *b to hold `more` bytes past its length; -1 out of memory */
INLINE int buf_room(struct reg_buf *b, size_t more)
{
    return b->len + more + 1 <= b->cap ? 0 : reg_buf_reserve(b, more);
}

/* appends n bytes that fit (buf_room was called) */
#define PUT(b, s, n) (memcpy((b)->p + (b)->len, (s), (n)), (b)->len += (n))
#define PUT_LIT(b, lit) PUT(b, lit, sizeof(lit) - 1)

/* length of the valid UTF-8 sequence at s (lead byte >= 0x80), or 0 */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t l;
    unsigned int cp;

    if (c >= 0xc2 && c <= 0xdf)
        l = 2, cp = c & 0x1f;
    else if (c >= 0xe0 && c <= 0xef)
        l = 3, cp = c & 0x0f;
    else if (c >= 0xf0 && c <= 0xf4)
        l = 4, cp = c & 0x07;
    else
        return 0;
    if (l > n)
        return 0;
    for (size_t i = 1; i < l; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((l == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
        (l == 4 && (cp < 0x10000 || cp > 0x10ffff)))
        return 0;
    return l;
}

/* bytes a JSON string cannot carry as they are: controls, '"', '\\', and
 * every byte >= 0x80 (checked as UTF-8 on the slow path) */
static const unsigned char json_special[256] = {
    [0 ... 0x1f] = 1, ['"'] = 1, ['\\'] = 1, [0x80 ... 0xff] = 1,
};

/* "s" as a JSON string: quotes, backslashes and control bytes escaped,
 * a byte that is not valid UTF-8 written as U+FFFD, so the text always
 * parses */
static int put_str(struct reg_buf *b, const char *str)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = (const unsigned char *)str;
    size_t n = strlen(str), i = 0, run, l;

    if (buf_room(b, n * 6 + 2) < 0)
        return -1;
    b->p[b->len++] = '"';
    for (;;) {
        run = i;
        /* eight plain bytes at a time (ids, times, ASCII text) */
        while (n - i >= 8) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (json8_special(w))
                break;
            i += 8;
        }
        while (i < n && !json_special[s[i]])
            i++;
        PUT(b, s + run, i - run);
        if (i == n)
            break;
        unsigned char c = s[i];
        if (c >= 0x80 && (l = utf8_len(s + i, n - i)) > 0) {
            PUT(b, s + i, l);
            i += l;
            continue;
        }
        if (c == '"' || c == '\\') {
            b->p[b->len++] = '\\';
            b->p[b->len++] = (char)c;
        } else if (c == '\n') {
            PUT_LIT(b, "\\n");
        } else if (c < 0x20) {
            PUT_LIT(b, "\\u00");
            b->p[b->len++] = hex[c >> 4];
            b->p[b->len++] = hex[c & 15];
        } else {
            PUT_LIT(b, "\\ufffd");
        }
        i++;
    }
    b->p[b->len++] = '"';
    return 0;
}

/* the number of decimal digits of v: from its bits, and one comparison */
INLINE unsigned n_digits(unsigned long long v)
{
    static const unsigned long long pow10[20] = {
        1ULL, 10ULL, 100ULL, 1000ULL, 10000ULL, 100000ULL, 1000000ULL,
        10000000ULL, 100000000ULL, 1000000000ULL, 10000000000ULL,
        100000000000ULL, 1000000000000ULL, 10000000000000ULL,
        100000000000000ULL, 1000000000000000ULL, 10000000000000000ULL,
        100000000000000000ULL, 1000000000000000000ULL,
        10000000000000000000ULL};
    /* bits * log10(2), rounded down: v has t or t + 1 digits */
    unsigned t = ((64u - (unsigned)__builtin_clzll(v | 1)) * 1233u) >> 12;

    t += v >= pow10[t];
    return t ? t : 1;
}

/* v's decimal digits written at p (room for 20); returns their end.
 * Written in place, last first, two digits a division: no copy of a
 * variable length (a call of memcpy) a number, and a record's numbers
 * (status, tokens, latency) are mostly two or three digits. */
INLINE char *at_digits(char *p, unsigned long long v)
{
    static const char pairs[] =
        "00010203040506070809101112131415161718192021222324252627282930313233"
        "34353637383940414243444546474849505152535455565758596061626364656667"
        "6869707172737475767778798081828384858687888990919293949596979899";
    char *end = p + n_digits(v);

    p = end;
    while (v >= 100) {
        unsigned q = (unsigned)(v % 100);
        v /= 100;
        p -= 2;
        memcpy(p, pairs + 2 * q, 2);
    }
    if (v >= 10) {
        p -= 2;
        memcpy(p, pairs + 2 * v, 2);
    } else {
        *--p = (char)('0' + v);
    }
    return end;
}

/* v, unchecked: the caller made room for 21 bytes */
INLINE void int_text(struct reg_buf *b, long long v)
{
    unsigned long long u = (unsigned long long)v;

    if (v < 0) {
        b->p[b->len++] = '-';
        u = 0ULL - u;
    }
    b->len = (size_t)(at_digits(b->p + b->len, u) - b->p);
}

INLINE int put_int(struct reg_buf *b, long long v)
{
    if (buf_room(b, 22) < 0)
        return -1;
    int_text(b, v);
    return 0;
}

/* ,"key": (key a literal without escapes), one copy of a constant */
#define KEY_TEXT(key) ",\"" key "\":"
#define KEY(b, key) (buf_room(b, sizeof(KEY_TEXT(key))) < 0 ? -1 \
                     : (PUT_LIT(b, KEY_TEXT(key)), 0))

INLINE int put_null(struct reg_buf *b)
{
    if (buf_room(b, 4) < 0)
        return -1;
    PUT_LIT(b, "null");
    return 0;
}

/* a string member; NULL is left out, or null with REG_JSON_NULLS */
INLINE int mem_str(struct reg_buf *b, int flags, const char *key_text,
                   size_t klen, const char *v)
{
    if (v == NULL && !(flags & REG_JSON_NULLS))
        return 0;
    if (buf_room(b, klen) < 0)
        return -1;
    PUT(b, key_text, klen);
    return v ? put_str(b, v) : put_null(b);
}
#define STR(b, f, key, v) \
    mem_str(b, f, KEY_TEXT(key), sizeof(KEY_TEXT(key)) - 1, v)

/* an integer member; < 0 (unknown) is left out, or null */
INLINE int mem_int(struct reg_buf *b, int flags, const char *key_text,
                   size_t klen, long long v)
{
    if (v < 0 && !(flags & REG_JSON_NULLS))
        return 0;
    if (buf_room(b, klen) < 0)
        return -1;
    PUT(b, key_text, klen);
    return v >= 0 ? put_int(b, v) : put_null(b);
}
#define INT(b, f, key, v) \
    mem_int(b, f, KEY_TEXT(key), sizeof(KEY_TEXT(key)) - 1, v)

/* ---- times ---------------------------------------------------------- */

/* s ("YYYY-MM-DDTHH:MM:SS" with an optional fraction, then "Z") as ms
 * since the epoch (the fraction cut to ms): 0, or -1 when s is not so */
static int iso_ms(const char *s, int64_t *ms)
{
    static const char shape[] = "dddd-dd-ddTdd:dd:dd";
    int v[6] = {0}, f = 0, i, k = 0, fd = 0;
    struct tm tm;
    time_t t;

    for (i = 0; shape[i]; i++) {
        if (shape[i] == 'd') {
            if (s[i] < '0' || s[i] > '9')
                return -1;
            v[k] = v[k] * 10 + (s[i] - '0');
        } else if (s[i] != shape[i]) {
            return -1;
        } else {
            k++;
        }
    }
    s += i;
    if (*s == '.')
        for (s++; *s >= '0' && *s <= '9'; s++, fd++)
            if (fd < 3)
                f = f * 10 + (*s - '0');
    if (*s != 'Z' || s[1] != '\0' || (s[-1] == '.' && fd == 0))
        return -1;
    while (fd > 0 && fd < 3)
        f *= 10, fd++;
    if (v[1] < 1 || v[1] > 12 || v[2] < 1 || v[2] > 31 || v[3] > 23 ||
        v[4] > 59 || v[5] > 60)
        return -1;
    memset(&tm, 0, sizeof(tm));
    tm.tm_year = v[0] - 1900, tm.tm_mon = v[1] - 1, tm.tm_mday = v[2];
    tm.tm_hour = v[3], tm.tm_min = v[4], tm.tm_sec = v[5];
    t = timegm(&tm);
    /* a day the month does not have comes back as another */
    if (gmtime_r(&t, &tm) == NULL || tm.tm_mday != v[2] ||
        tm.tm_mon != v[1] - 1)
        return -1;
    *ms = (int64_t)t * 1000 + f;
    return 0;
}

/* ms since the epoch as "YYYY-MM-DDTHH:MM:SS.mmmZ" */
static void ms_iso(int64_t ms, char out[32])
{
    int64_t sec = ms >= 0 ? ms / 1000 : -((-ms + 999) / 1000);
    time_t t = (time_t)sec;
    struct tm tm;

    if (gmtime_r(&t, &tm) == NULL ||
        strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm) != 19)
        memcpy(out, "1970-01-01T00:00:00", 20);
    snprintf(out + 19, 13, ".%03dZ", (int)(ms - sec * 1000));
}

/* e's time as ms since the epoch (exposure_check vouched for it) */
static int64_t exposure_ms(const struct reg_exposure *e)
{
    int64_t ms = 0;

    if (e->at == NULL)
        return e->at_ms;
    (void)iso_ms(e->at, &ms);
    return ms;
}

/* string members a chunk may hold once for all its records (the chunk's
 * "common" object) instead of in each */
enum {
    COMMON_KEY = 1, COMMON_PROMPT = 2, COMMON_LABEL = 4, COMMON_EXPERIMENT = 8,
    COMMON_MODEL = 16, COMMON_BACKEND = 32, COMMON_CACHE = 64
};
#define COMMON_FIELDS 7

/* e's common members in bit order: v[i] is bit i's */
INLINE void common_values(const struct reg_exposure *e,
                          const char *v[COMMON_FIELDS])
{
    v[0] = e->key_name;
    v[1] = e->prompt;
    v[2] = e->label;
    v[3] = e->experiment_id > 0 ? e->experiment : NULL;
    v[4] = e->model;
    v[5] = e->backend;
    v[6] = e->cache;
}

/* latency in milliseconds with 3 decimals, as printf("%.3f"),
 * unchecked: the caller made room for 25 bytes */
INLINE void ms_text(struct reg_buf *b, double ms)
{
    unsigned long long us = (unsigned long long)(ms * 1000.0 + 0.5);
    char *p = at_digits(b->p + b->len, us / 1000);

    p[0] = '.';
    p[1] = (char)('0' + us / 100 % 10);
    p[2] = (char)('0' + us / 10 % 10);
    p[3] = (char)('0' + us % 10);
    b->len = (size_t)(p + 4 - b->p);
}

INLINE int put_ms(struct reg_buf *b, double ms)
{
    if (buf_room(b, 26) < 0)
        return -1;
    ms_text(b, ms);
    return 0;
}

/* v, or null when v < 0 (unknown), unchecked: room for 21 bytes */
INLINE void num_text(struct reg_buf *b, long long v)
{
    if (v < 0)
        PUT_LIT(b, "null");
    else
        b->len = (size_t)(at_digits(b->p + b->len, (unsigned long long)v) -
                          b->p);
}

/* the variables: the caller's JSON object as it is, a string holding
 * text it could not vouch for, or {} */
INLINE int put_vars(struct reg_buf *b, const struct reg_exposure *e)
{
    if (e->variables == NULL) {
        if (buf_room(b, 2) < 0)
            return -1;
        PUT_LIT(b, "{}");
        return 0;
    }
    if (e->variables_json) {
        size_t n = strlen(e->variables);
        if (buf_room(b, n) < 0)
            return -1;
        PUT(b, e->variables, n);
        return 0;
    }
    return put_str(b, e->variables);
}

/* e as a JSON object: the JSON-lines log's line and reg_exposure_json */
static int exposure_json(struct reg_buf *b, const struct reg_exposure *e,
                         int flags)
{
    int exp = e->experiment_id > 0;
    char at[32];

    if (buf_room(b, 40) < 0)
        return -1;
    if (flags & REG_JSON_TYPED)
        PUT_LIT(b, "{\"type\":\"exposure\",\"request_id\":");
    else
        PUT_LIT(b, "{\"request_id\":");
    if (e->at == NULL)
        ms_iso(e->at_ms, at);
    if (put_str(b, e->request_id ? e->request_id : "") < 0 ||
        STR(b, flags, "at", e->at ? e->at : at) < 0 ||
        STR(b, flags, "key", e->key_name) < 0 ||
        STR(b, flags, "user", e->user_id) < 0 ||
        STR(b, flags, "prompt", e->prompt) < 0 ||
        INT(b, flags, "version", e->version) < 0 ||
        STR(b, flags, "label", e->label) < 0 ||
        INT(b, flags, "experiment_id", exp ? e->experiment_id : -1) < 0 ||
        STR(b, flags, "experiment", exp ? e->experiment : NULL) < 0 ||
        INT(b, flags, "arm", exp ? e->arm : -1) < 0 ||
        STR(b, flags, "model", e->model) < 0 ||
        STR(b, flags, "backend", e->backend) < 0 ||
        INT(b, flags, "status", e->status) < 0 ||
        KEY(b, "stream") < 0 || buf_room(b, 5) < 0)
        return -1;
    if (e->stream)
        PUT_LIT(b, "true");
    else
        PUT_LIT(b, "false");
    if (e->latency_ms >= 0) {
        if (KEY(b, "latency_ms") < 0 || put_ms(b, e->latency_ms) < 0)
            return -1;
    } else if ((flags & REG_JSON_NULLS) &&
               (KEY(b, "latency_ms") < 0 || put_null(b) < 0)) {
        return -1;
    }
    if (INT(b, flags, "prompt_tokens", e->prompt_tokens) < 0 ||
        INT(b, flags, "completion_tokens", e->completion_tokens) < 0 ||
        INT(b, flags, "total_tokens", e->total_tokens) < 0 ||
        STR(b, flags, "cache", e->cache) < 0 ||
        KEY(b, "variables") < 0 || put_vars(b, e) < 0 ||
        STR(b, flags, "output", e->output) < 0 || buf_room(b, 1) < 0)
        return -1;
    b->p[b->len++] = '}';
    b->p[b->len] = '\0';
    return 0;
}

/*
 * A chunk's form of a record (migration 0006): an array, its members by
 * place rather than by name (each byte of a record is copied some five
 * times on its way to disk: the WAL, its checksum, the checkpoint's read
 * and write; the names were a quarter of a typical record, the time as
 * text another tenth):
 *   0 request_id  1 at (ms since the epoch)  2 user_id  3 version  4 arm
 *   5 status  6 latency_ms  7 prompt_tokens  8 completion_tokens
 *   9 total_tokens  10 variables  11 stream (1 when streamed)  12 output
 *   13 key  14 prompt  15 label  16 experiment  17 model  18 backend
 *   19 cache
 * null where unknown; the places after 10 only up to the last one set.
 * The string members of bits in `omit` (13..19) are left out: the chunk's
 * common object holds them. experiment_id is the chunk's column. The view
 * `exposures` gives the places their names.
 */
#define CHUNK_PLACES 20

static int chunk_record(struct reg_buf *b, const struct reg_exposure *e,
                        int64_t ms, int omit)
{
    /* places 11.. (stream is written as 1 below); 13.. are the common
     * members, bit i of omit for place 13 + i */
    const char *tail[CHUNK_PLACES - 11];
    int exp = e->experiment_id > 0, last, i;

    tail[0] = NULL;
    tail[1] = e->output;
    common_values(e, tail + 2);
    for (i = 0; i < COMMON_FIELDS; i++)
        if (omit & (1 << i))
            tail[2 + i] = NULL;
    for (i = CHUNK_PLACES - 1; i > 11 && tail[i - 11] == NULL; i--)
        ;
    last = i > 11 ? i : e->stream ? 11 : 10;
    if (buf_room(b, 2) < 0)
        return -1;
    b->p[b->len++] = '[';
    if (put_str(b, e->request_id ? e->request_id : "") < 0 ||
        buf_room(b, 23) < 0)
        return -1;
    b->p[b->len++] = ',';
    int_text(b, ms);
    b->p[b->len++] = ',';
    if ((e->user_id ? put_str(b, e->user_id) : put_null(b)) < 0)
        return -1;
    /* the seven numbers, each at most 20 digits and a comma (or
     * ",null"), and the comma before the variables */
    if (buf_room(b, 7 * 26 + 1) < 0)
        return -1;
    b->p[b->len++] = ',';
    num_text(b, e->version);
    b->p[b->len++] = ',';
    num_text(b, exp ? e->arm : -1);
    b->p[b->len++] = ',';
    num_text(b, e->status);
    b->p[b->len++] = ',';
    if (e->latency_ms >= 0)
        ms_text(b, e->latency_ms);
    else
        PUT_LIT(b, "null");
    b->p[b->len++] = ',';
    num_text(b, e->prompt_tokens);
    b->p[b->len++] = ',';
    num_text(b, e->completion_tokens);
    b->p[b->len++] = ',';
    num_text(b, e->total_tokens);
    b->p[b->len++] = ',';
    if (put_vars(b, e) < 0)
        return -1;
    for (i = 11; i <= last; i++) {
        if (buf_room(b, 2) < 0)
            return -1;
        b->p[b->len++] = ',';
        if (i == 11) {
            if (!e->stream) {
                if (put_null(b) < 0)
                    return -1;
            } else {
                b->p[b->len++] = '1'; /* room: the 2 above */
            }
        } else if ((tail[i - 11] ? put_str(b, tail[i - 11])
                                 : put_null(b)) < 0) {
            return -1;
        }
    }
    if (buf_room(b, 1) < 0)
        return -1;
    b->p[b->len++] = ']';
    b->p[b->len] = '\0';
    return 0;
}

int reg_exposure_json(struct reg_buf *b, const struct reg_exposure *e,
                      int flags)
{
    return exposure_json(b, e, flags & (REG_JSON_TYPED | REG_JSON_NULLS));
}

int reg_feedback_json(struct reg_buf *b, const struct reg_feedback *f)
{
    char num[40];
    int n = snprintf(num, sizeof(num), "%.17g", f->value);

    if (buf_room(b, 32) < 0)
        return -1;
    PUT_LIT(b, "{\"type\":\"feedback\",\"request_id\":");
    if (put_str(b, f->request_id ? f->request_id : "") < 0 ||
        STR(b, REG_JSON_NULLS, "event", f->event) < 0 ||
        KEY(b, "value") < 0 || buf_room(b, (size_t)n) < 0)
        return -1;
    PUT(b, num, (size_t)n);
    if (STR(b, REG_JSON_NULLS, "at", f->at) < 0 || buf_room(b, 1) < 0)
        return -1;
    b->p[b->len++] = '}';
    b->p[b->len] = '\0';
    return 0;
}

/* ---- the log's writer --------------------------------------------------- */

/* records per chunk row, and the text after which a chunk is closed */
#define CHUNK_RECORDS 256
#define CHUNK_BYTES   (1u << 20)

struct reg_exposure_log {
    struct reg_db *db;       /* owned */
    sqlite3_stmt *chunk;     /* owned: INSERT of one chunk */
    sqlite3_stmt *fb;        /* owned: INSERT OR IGNORE of one feedback */
    struct reg_buf text;     /* owned: the chunk being built */
    struct reg_buf common;   /* owned: its common object */
    unsigned char *done;     /* owned: per record of a batch, written */
    size_t *sel;             /* owned: the records of the chunk */
    size_t done_cap;         /* records done and sel hold */
};

static int log_prepare(struct reg_exposure_log *log, char **err)
{
    log->chunk = reg_db_prepare(log->db,
        "INSERT INTO exposure_chunks (experiment_id, first_at, last_at, n,"
        " common, records) VALUES (?, ?, ?, ?, ?, ?)", err);
    log->fb = log->chunk ? reg_db_prepare(log->db,
        "INSERT OR IGNORE INTO feedback (request_id, event, value, at)"
        " VALUES (?, ?, ?, ?)", err) : NULL;
    return log->fb ? 0 : -1;
}

static void log_release(struct reg_exposure_log *log)
{
    sqlite3_finalize(log->chunk);
    sqlite3_finalize(log->fb);
    free(log->text.p);
    free(log->common.p);
    free(log->done);
    free(log->sel);
    log->chunk = log->fb = NULL;
    memset(&log->text, 0, sizeof(log->text));
    memset(&log->common, 0, sizeof(log->common));
    log->done = NULL, log->sel = NULL, log->done_cap = 0;
}

/* the database's page size in bytes (4096 if it cannot be read) */
static long page_size(struct reg_db *db)
{
    sqlite3_stmt *st = NULL;
    long n = 0;

    if (sqlite3_prepare_v2(reg_db_handle(db), "PRAGMA page_size", -1, &st,
                           NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        n = (long)sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return n >= 512 ? n : 4096;
}

struct reg_exposure_log *reg_exposure_log_open(const char *path, char **err)
{
    struct reg_exposure_log *log = calloc(1, sizeof(*log));
    char pragma[64];

    if (log == NULL) {
        reg_err(err, "cannot open '%s': out of memory", path);
        return NULL;
    }
    if ((log->db = reg_db_open(path, 0, err)) == NULL)
        goto fail;
    /* an append-mostly log: a checkpoint every 4 MiB of WAL (a gateway's
     * batch is 1-2 MiB), so the WAL's pages are still cached when the
     * checkpoint reads them and fewer of the loop's lines are pushed out
     * (at 16 MiB the prompt gateway cost 0.2-0.4 us a request more, side
     * by side); a WAL that grew past 16 MiB (a long reader held the
     * checkpoint back) is cut back to that after one. synchronous =
     * NORMAL from reg_db_open: a commit does not wait for the disk, so a
     * power loss may lose the last commits, never corrupt the file */
    snprintf(pragma, sizeof(pragma), "PRAGMA wal_autocheckpoint = %d",
             (int)(WAL_BYTES / page_size(log->db)));
    if (reg_db_exec(log->db, pragma, err) < 0 ||
        reg_db_exec(log->db, "PRAGMA journal_size_limit = 16777216",
                    err) < 0 ||
        log_prepare(log, err) < 0)
        goto fail;
    return log;
fail:
    reg_exposure_log_free(log);
    return NULL;
}

void reg_exposure_log_free(struct reg_exposure_log *log)
{
    if (log == NULL)
        return;
    log_release(log);
    reg_db_free(log->db);
    free(log);
}

#define PREFETCH_AHEAD 8

/* the lines of e's strings that a record's JSON reads first: its request
 * id and what usually follows it in the caller's packing (the gateway
 * keeps a record's strings together) */
static inline __attribute__((always_inline)) void
prefetch_strings(const struct reg_exposure *e)
{
    const char *s = e->request_id;

    if (s) {
        __builtin_prefetch(s);
        __builtin_prefetch(s + 64);
        __builtin_prefetch(s + 128);
        __builtin_prefetch(s + 192);
    }
}

static int exposure_check(const struct reg_exposure *e, char **err)
{
    int64_t ms;

    if (e->request_id == NULL || *e->request_id == '\0'
        || strlen(e->request_id) > REG_REQUEST_ID_MAX) {
        reg_err(err, "exposure without a valid request id");
        return -1;
    }
    if (e->prompt == NULL || e->version < 1) {
        reg_err(err, "exposure '%s' lacks its prompt or version",
                e->request_id);
        return -1;
    }
    if (e->at != NULL && iso_ms(e->at, &ms) < 0) {
        reg_err(err, "exposure '%s': time '%.40s' is not ISO-8601 UTC "
                "(YYYY-MM-DDTHH:MM:SS.mmmZ)", e->request_id, e->at);
        return -1;
    }
    return 0;
}

static int feedback_check(const struct reg_feedback *f, char **err)
{
    if (f->request_id == NULL || *f->request_id == '\0'
        || strlen(f->request_id) > REG_REQUEST_ID_MAX
        || !reg_event_valid(f->event) || f->at == NULL) {
        reg_err(err, "feedback without a valid request id, event or time");
        return -1;
    }
    return 0;
}

/* The strings bound below are the caller's or the log's and outlive the
 * step: SQLITE_STATIC, no copies. */
static void bind_text(sqlite3_stmt *st, int col, const char *s)
{
    if (s)
        sqlite3_bind_text(st, col, s, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, col);
}

/* runs st once (reset after, so it holds no read of the table) */
static int step_once(struct reg_db *db, sqlite3_stmt *st, const char *what,
                     const char *rid, char **err)
{
    int rc = sqlite3_step(st);

    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        reg_err(err, "cannot record %s '%s' in '%s': %s", what, rid,
                db->path, sqlite3_errmsg(reg_db_handle(db)));
        return -1;
    }
    return 0;
}

/* Writes the exposures of ex[] as chunks: each chunk holds records of one
 * experiment id (0: none), in their order, up to CHUNK_RECORDS or about
 * CHUNK_BYTES of text. A batch usually holds one or two experiments, so
 * the passes over it are few. The string members every record of a chunk
 * shares (prompt, label, experiment, model, backend, key, cache: usually
 * all of them) are written once, in the chunk's common object. */
static int write_chunks(struct reg_exposure_log *log,
                        const struct reg_exposure *ex, size_t n, char **err)
{
    struct reg_buf *t = &log->text, *c = &log->common;
    size_t left = n, i, start = 0;

    if (n > log->done_cap) {
        unsigned char *d = realloc(log->done, n);
        size_t *sel;
        if (d == NULL)
            goto oom;
        log->done = d;
        if ((sel = realloc(log->sel, n * sizeof(*sel))) == NULL)
            goto oom;
        log->sel = sel, log->done_cap = n;
    }
    memset(log->done, 0, n);
    while (left > 0) {
        const struct reg_exposure *e0;
        int64_t first, last;
        char first_at[32], last_at[32];
        size_t k = 0, bytes = 0, j;
        const char *v0[COMMON_FIELDS], *v[COMMON_FIELDS];
        int64_t exp;
        int common = 0, f;

        while (log->done[start])
            start++;
        e0 = &ex[start];
        exp = e0->experiment_id > 0 ? e0->experiment_id : 0;
        /* the chunk's records, and the members they share */
        common_values(e0, v0);
        for (f = 0; f < COMMON_FIELDS; f++)
            if (v0[f] != NULL)
                common |= 1 << f;
        for (i = start; i < n && k < CHUNK_RECORDS && bytes < CHUNK_BYTES;
             i++) {
            const struct reg_exposure *e = &ex[i];
            if (log->done[i] ||
                (e->experiment_id > 0 ? e->experiment_id : 0) != exp)
                continue;
            common_values(e, v);
            for (f = 0; f < COMMON_FIELDS; f++)
                if ((common & (1 << f)) && v0[f] != v[f] &&
                    (v[f] == NULL || strcmp(v0[f], v[f]) != 0))
                    common &= ~(1 << f);
            bytes += 256 + (e->variables ? strlen(e->variables) : 2)
                   + (e->output ? strlen(e->output) : 0);
            log->done[i] = 1;
            log->sel[k++] = i;
        }
        c->len = 0;
        if (common) {
            if (buf_room(c, 1) < 0)
                goto oom;
            c->p[c->len++] = '{';
            for (f = 0; f < COMMON_FIELDS; f++) {
                static const char *const names[COMMON_FIELDS] = {
                    "\"k\":", "\"p\":", "\"l\":", "\"x\":", "\"m\":",
                    "\"b\":", "\"c\":"};
                if (!(common & (1 << f)))
                    continue;
                if (buf_room(c, 6) < 0)
                    goto oom;
                if (c->len > 1)
                    c->p[c->len++] = ',';
                PUT(c, names[f], 4);
                if (put_str(c, v0[f]) < 0)
                    goto oom;
            }
            if (buf_room(c, 1) < 0)
                goto oom;
            c->p[c->len++] = '}';
        }
        t->len = 0;
        if (buf_room(t, 1) < 0)
            goto oom;
        t->p[t->len++] = '[';
        first = last = exposure_ms(e0);
        for (j = 0; j < k; j++) {
            const struct reg_exposure *e = &ex[log->sel[j]];
            int64_t ms = exposure_ms(e);
            if (j > 0)
                t->p[t->len++] = ','; /* room: the '\0' after the last */
            if (chunk_record(t, e, ms, common) < 0)
                goto oom;
            first = ms < first ? ms : first;
            last = ms > last ? ms : last;
        }
        ms_iso(first, first_at);
        ms_iso(last, last_at);
        if (buf_room(t, 1) < 0)
            goto oom;
        t->p[t->len++] = ']';
        left -= k;
        if (exp > 0)
            sqlite3_bind_int64(log->chunk, 1, exp);
        else
            sqlite3_bind_null(log->chunk, 1);
        bind_text(log->chunk, 2, first_at);
        bind_text(log->chunk, 3, last_at);
        sqlite3_bind_int(log->chunk, 4, (int)k);
        if (common)
            sqlite3_bind_text(log->chunk, 5, c->p, (int)c->len, SQLITE_STATIC);
        else
            sqlite3_bind_null(log->chunk, 5);
        sqlite3_bind_text(log->chunk, 6, t->p, (int)t->len, SQLITE_STATIC);
        if (step_once(log->db, log->chunk, "exposures from", e0->request_id,
                      err) < 0)
            return -1;
    }
    return 0;
oom:
    reg_err(err, "cannot record exposures in '%s': out of memory",
            log->db->path);
    return -1;
}

/* A transaction in parts (registry.h): a caller hands its records over a
 * slice at a time, while they are still in its cache, and commits once. */
int reg_exposure_log_begin(struct reg_exposure_log *log, char **err)
{
    return reg_db_begin(log->db, err);
}

int reg_exposure_log_add(struct reg_exposure_log *log,
                         const struct reg_exposure *ex, size_t n, char **err)
{
    size_t i;

    /* nothing written for a bad record; this first pass over the records'
     * strings asks for them a few records ahead (a gateway's come from
     * memory that went cold while they queued) */
    for (i = 0; i < n; i++) {
        if (i + PREFETCH_AHEAD < n)
            prefetch_strings(&ex[i + PREFETCH_AHEAD]);
        if (exposure_check(&ex[i], err) < 0)
            goto fail;
    }
    if (n > 0 && write_chunks(log, ex, n, err) < 0)
        goto fail;
    return 0;
fail:
    reg_db_rollback(log->db);
    return -1;
}

/* Feedback one at a time: each may be a repeat that adds nothing. */
int reg_exposure_log_feedback(struct reg_exposure_log *log,
                              const struct reg_feedback *fb, size_t n,
                              int *added, char **err)
{
    struct reg_db *db = log->db;
    size_t i;

    for (i = 0; i < n; i++)
        if (feedback_check(&fb[i], err) < 0)
            goto fail;
    for (i = 0; i < n; i++) {
        bind_text(log->fb, 1, fb[i].request_id);
        bind_text(log->fb, 2, fb[i].event);
        sqlite3_bind_double(log->fb, 3, fb[i].value);
        bind_text(log->fb, 4, fb[i].at);
        if (step_once(db, log->fb, "feedback for", fb[i].request_id, err) < 0)
            goto fail;
        if (added)
            *added += sqlite3_changes(reg_db_handle(db));
    }
    return 0;
fail:
    reg_db_rollback(db);
    return -1;
}

int reg_exposure_log_commit(struct reg_exposure_log *log, char **err)
{
    return reg_db_commit(log->db, err);
}

/* The batch with the log's statements: one transaction, the exposures as
 * chunks, then the feedback. */
static int log_write(struct reg_exposure_log *log,
                     const struct reg_exposure *ex, size_t n_ex,
                     const struct reg_feedback *fb, size_t n_fb,
                     int *fb_added, char **err)
{
    int added = 0;

    if (fb_added)
        *fb_added = 0;
    if (n_ex == 0 && n_fb == 0)
        return 0;
    if (reg_exposure_log_begin(log, err) < 0 ||
        reg_exposure_log_add(log, ex, n_ex, err) < 0 ||
        reg_exposure_log_feedback(log, fb, n_fb, &added, err) < 0 ||
        reg_exposure_log_commit(log, err) < 0)
        return -1;
    if (fb_added)
        *fb_added = added;
    return 0;
}

int reg_exposure_log_write(struct reg_exposure_log *log,
                           const struct reg_exposure *ex, size_t n_ex,
                           const struct reg_feedback *fb, size_t n_fb,
                           int *fb_added, char **err)
{
    return log_write(log, ex, n_ex, fb, n_fb, fb_added, err);
}

int reg_exposures_write(struct reg_db *db, const struct reg_exposure *ex,
                        size_t n_ex, const struct reg_feedback *fb,
                        size_t n_fb, int *fb_added, char **err)
{
    struct reg_exposure_log log;
    int rc;

    memset(&log, 0, sizeof(log));
    log.db = db;
    if (fb_added)
        *fb_added = 0;
    if (n_ex == 0 && n_fb == 0)
        return 0;
    if (log_prepare(&log, err) < 0) {
        log_release(&log);
        return -1;
    }
    rc = log_write(&log, ex, n_ex, fb, n_fb, fb_added, err);
    log_release(&log);
    return rc;
}

/* ---- JSON forms ---------------------------------------------------------- */

static void set_str(json_t *o, const char *k, const char *v)
{
    json_object_set_new(o, k, v ? json_string(v) : json_null());
}

/* ---- export -------------------------------------------------------------- */

/* facts carried by the variables: an object, or a string holding one */
static json_t *facts_of(json_t *vars)
{
    json_t *f = json_object_get(vars, "facts");

    if (json_is_object(f))
        return json_incref(f);
    if (json_is_string(f)) {
        json_t *p = json_loadb(json_string_value(f), json_string_length(f),
                               0, NULL);
        if (json_is_object(p))
            return p;
        json_decref(p);
    }
    return NULL;
}

/* One sample from an exposure's fields (borrowed) and outcomes (borrowed
 * object event -> value, may be NULL). */
static json_t *sample_new(const char *id, const char *prompt, int version,
                          json_t *arm, const char *experiment,
                          const char *user, const char *at, json_t *vars,
                          const char *output, json_t *outcomes, int status,
                          const char *model)
{
    json_t *s = json_object(), *facts, *v;
    int clicks = 0, conversions = 0;

    if (s == NULL)
        return NULL;
    v = json_object_get(outcomes, "click");
    clicks = v && json_number_value(v) != 0;
    v = json_object_get(outcomes, "conversion");
    conversions = v && json_number_value(v) != 0;
    set_str(s, "id", id);
    set_str(s, "prompt", prompt);
    json_object_set_new(s, "version", json_integer(version));
    json_object_set(s, "arm", arm ? arm : json_null());
    set_str(s, "experiment", experiment);
    set_str(s, "user", user);
    set_str(s, "at", at);
    json_object_set(s, "variables", vars ? vars : json_object());
    if (vars && (facts = facts_of(vars)) != NULL)
        json_object_set_new(s, "facts", facts);
    if (output)
        set_str(s, "output", output);
    /* an answer that failed showed the user nothing */
    json_object_set_new(s, "impressions",
                        json_integer(status >= 200 && status < 300));
    json_object_set_new(s, "clicks", json_integer(clicks));
    json_object_set_new(s, "conversions", json_integer(conversions));
    if (outcomes)
        json_object_set(s, "outcomes", outcomes);
    else
        json_object_set_new(s, "outcomes", json_object());
    json_object_set_new(s, "status", json_integer(status));
    set_str(s, "model", model);
    return s;
}

/* The experiment id for "<prompt>@<label>" or "<prompt>": the newest. */
static int64_t experiment_find(struct reg_db *db, const char *ref,
                               char **err)
{
    char name[REG_NAME_MAX + 1], label[REG_LABEL_MAX + 1];
    struct reg_experiment **list = NULL;
    size_t n = 0, i;
    int version;
    int64_t id = 0;

    if (reg_ref_parse(ref, name, label, &version, err) < 0)
        return -1;
    if (version > 0) {
        reg_err(err, "experiment '%s': name it PROMPT@LABEL, not a version",
                ref);
        return -1;
    }
    if (reg_experiment_list(db, name, 0, &list, &n, err) < 0)
        return -1;
    for (i = 0; i < n; i++) /* newest first */
        if (label[0] == '\0' || strcmp(list[i]->label, label) == 0) {
            id = list[i]->id;
            break;
        }
    reg_experiment_list_free(list, n);
    if (id == 0)
        reg_err(err, "no experiment '%s' (see 'promptctl experiment list')",
                ref);
    return id ? id : -1;
}

/* A record's variables as an object (new reference): the object itself,
 * or the JSON text a string holds (a record written with variables_json
 * 0); {} when neither. */
static json_t *vars_of(json_t *v)
{
    json_t *o;

    if (json_is_object(v))
        return json_incref(v);
    if (json_is_string(v) &&
        (o = json_loadb(json_string_value(v), json_string_length(v), 0,
                        NULL)) != NULL) {
        if (json_is_object(o))
            return o;
        json_decref(o);
    }
    return json_object();
}

/* The member names of a record: the JSON-lines log's, and a chunk's. */
struct rec_names {
    const char *id, *prompt, *version, *arm, *experiment, *user, *at,
        *vars, *output, *status, *model;
};
static const struct rec_names line_names = {
    "request_id", "prompt", "version", "arm", "experiment", "user", "at",
    "variables", "output", "status", "model"};
static const struct rec_names chunk_names = {
    "r", "p", "v", "a", "x", "u", "t", "vars", "o", "s", "m"};

#define MEMBER(rec, nm, f) json_object_get(rec, (nm)->f)

/* A chunk's array record (migration 0006) as the object form it replaced
 * (migration 0005's short names), which the export reads: rec is
 * consumed; NULL out of memory. */
static json_t *chunk_object(json_t *rec)
{
    static const char *const names[CHUNK_PLACES] = {
        "r", "t", "u", "v", "a", "s", "ms", "pt", "ct", "tt", "vars", "st",
        "o", "k", "p", "l", "x", "m", "b", "c"};
    json_t *o, *v;
    size_t i;

    if (!json_is_array(rec))
        return rec;
    if ((o = json_object()) != NULL)
        json_array_foreach(rec, i, v) {
            if (i >= CHUNK_PLACES)
                break;
            if (i == 1 && json_is_integer(v)) { /* the time in ms */
                char at[32];
                ms_iso((int64_t)json_integer_value(v), at);
                json_object_set_new(o, "t", json_string(at));
            } else if (!json_is_null(v)) {
                json_object_set(o, names[i], v);
            }
        }
    json_decref(rec);
    return o;
}

/* The sample of one exposure record (a chunk's element or a JSON-lines
 * log's line, borrowed, member names nm) with its outcomes (borrowed, may
 * be NULL). */
static json_t *sample_of(json_t *rec, const struct rec_names *nm,
                         json_t *outcomes)
{
    json_t *vars = vars_of(MEMBER(rec, nm, vars)), *arm, *s;

    arm = MEMBER(rec, nm, arm);
    s = sample_new(json_string_value(MEMBER(rec, nm, id)),
                   json_string_value(MEMBER(rec, nm, prompt)),
                   (int)json_integer_value(MEMBER(rec, nm, version)),
                   arm ? arm : json_null(),
                   json_string_value(MEMBER(rec, nm, experiment)),
                   json_string_value(MEMBER(rec, nm, user)),
                   json_string_value(MEMBER(rec, nm, at)), vars,
                   json_string_value(MEMBER(rec, nm, output)), outcomes,
                   (int)json_integer_value(MEMBER(rec, nm, status)),
                   json_string_value(MEMBER(rec, nm, model)));
    json_decref(vars);
    return s;
}

int reg_samples_export(struct reg_db *db, const char *experiment,
                       const char *since, reg_sample_cb cb, void *arg,
                       size_t *count, char **err)
{
    sqlite3_stmt *st, *fq;
    json_t *common = NULL;    /* the current chunk's common members */
    int64_t id, chunk_id = 0;
    int rc;

    *count = 0;
    if ((id = experiment_find(db, experiment, err)) < 0)
        return -1;
    /* the experiment's chunks through exposure_chunks_experiment, in the
     * order written; a chunk whose last record is older than `since` is
     * skipped whole */
    st = reg_db_prepare(db,
        "SELECT j.value, c.id, c.common"
        " FROM exposure_chunks c, json_each(c.records) j"
        " WHERE c.experiment_id = ? AND c.last_at >= ? ORDER BY c.id", err);
    fq = st ? reg_db_prepare(db,
        "SELECT json_group_object(event, value) FROM feedback"
        " WHERE request_id = ?", err) : NULL;
    if (fq == NULL) {
        sqlite3_finalize(st);
        return -1;
    }
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_text(st, 2, since ? since : "", -1, SQLITE_STATIC);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        json_t *rec, *outcomes = NULL, *s;
        const char *rid, *at, *o;
        int stop;

        if (sqlite3_column_int64(st, 1) != chunk_id) { /* the next chunk */
            chunk_id = sqlite3_column_int64(st, 1);
            json_decref(common);
            common = NULL;
            if (sqlite3_column_type(st, 2) == SQLITE_TEXT)
                common = json_loadb((const char *)sqlite3_column_text(st, 2),
                                    (size_t)sqlite3_column_bytes(st, 2), 0,
                                    NULL);
        }
        rec = chunk_object(json_loadb((const char *)sqlite3_column_text(st, 0),
                                      (size_t)sqlite3_column_bytes(st, 0), 0,
                                      NULL));
        if (rec && json_is_object(common))
            json_object_update_missing(rec, common);
        rid = json_string_value(MEMBER(rec, &chunk_names, id));
        at = json_string_value(MEMBER(rec, &chunk_names, at));
        if (rid == NULL || at == NULL || (since && strcmp(at, since) < 0)) {
            json_decref(rec);
            continue;
        }
        sqlite3_bind_text(fq, 1, rid, -1, SQLITE_STATIC);
        if (sqlite3_step(fq) == SQLITE_ROW &&
            (o = (const char *)sqlite3_column_text(fq, 0)) != NULL)
            outcomes = json_loads(o, 0, NULL);
        sqlite3_reset(fq);
        s = sample_of(rec, &chunk_names, outcomes);
        json_decref(outcomes);
        json_decref(rec);
        if (s == NULL) {
            reg_err(err, "out of memory");
            json_decref(common);
            sqlite3_finalize(st);
            sqlite3_finalize(fq);
            return -1;
        }
        stop = cb(arg, s);
        json_decref(s);
        (*count)++;
        if (stop)
            break;
    }
    json_decref(common);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        reg_err(err, "cannot read exposures from '%s': %s", db->path,
                sqlite3_errmsg(reg_db_handle(db)));
        sqlite3_finalize(st);
        sqlite3_finalize(fq);
        return -1;
    }
    sqlite3_finalize(st);
    sqlite3_finalize(fq);
    return 0;
}

/* Reads the next line of f into *buf (grown); 0 at EOF, -1 too long. */
static long next_line(FILE *f, char **buf, size_t *cap)
{
    size_t n = 0;
    int ch;

    while ((ch = getc(f)) != EOF) {
        if (n + 2 > *cap) {
            size_t nc = *cap ? *cap * 2 : 4096;
            char *nb;
            if (nc > LINE_MAX_BYTES + 2)
                return -1;
            if ((nb = realloc(*buf, nc)) == NULL)
                return -1;
            *buf = nb, *cap = nc;
        }
        if (ch == '\n')
            break;
        (*buf)[n++] = (char)ch;
    }
    if (n == 0 && ch == EOF)
        return 0;
    (*buf)[n] = '\0';
    return (long)n + 1;
}

int reg_samples_export_file(const char *path, const char *experiment,
                            const char *since, reg_sample_cb cb, void *arg,
                            size_t *count, char **err)
{
    FILE *f;
    json_t *fb = NULL, *rec;
    char *line = NULL;
    size_t cap = 0, lineno;
    long n;
    int pass, rc = -1, stop = 0;

    *count = 0;
    if ((f = fopen(path, "r")) == NULL) {
        reg_err(err, "cannot open '%s': %s", path, reg_strerror(errno));
        return -1;
    }
    if ((fb = json_object()) == NULL)
        goto oom;
    /* pass 0 gathers feedback by request id (first per event wins), pass 1
     * emits the experiment's exposures with it */
    for (pass = 0; pass < 2 && !stop; pass++) {
        rewind(f);
        lineno = 0;
        while ((n = next_line(f, &line, &cap)) > 0) {
            const char *type, *rid, *exp, *at;
            lineno++;
            if (line[0] == '\0')
                continue;
            if ((rec = json_loads(line, 0, NULL)) == NULL) {
                reg_err(err, "'%s' line %zu: not a JSON object", path, lineno);
                goto done;
            }
            type = json_string_value(json_object_get(rec, "type"));
            rid = json_string_value(json_object_get(rec, "request_id"));
            at = json_string_value(json_object_get(rec, "at"));
            if (type == NULL || rid == NULL) {
                json_decref(rec);
                continue;
            }
            if (pass == 0 && strcmp(type, "feedback") == 0) {
                const char *ev = json_string_value(json_object_get(rec, "event"));
                json_t *o = json_object_get(fb, rid);
                if (ev && o == NULL) {
                    o = json_object();
                    json_object_set_new(fb, rid, o);
                }
                if (ev && o && json_object_get(o, ev) == NULL)
                    json_object_set(o, ev, json_object_get(rec, "value"));
            } else if (pass == 1 && strcmp(type, "exposure") == 0
                       && (exp = json_string_value(json_object_get(rec, "experiment")))
                       && (strcmp(exp, experiment) == 0
                           || (strchr(experiment, '@') == NULL
                               && strncmp(exp, experiment, strlen(experiment)) == 0
                               && exp[strlen(experiment)] == '@'))
                       && (since == NULL || (at && strcmp(at, since) >= 0))) {
                json_t *s = sample_of(rec, &line_names,
                                      json_object_get(fb, rid));
                if (s == NULL) {
                    json_decref(rec);
                    goto oom;
                }
                stop = cb(arg, s);
                json_decref(s);
                (*count)++;
            }
            json_decref(rec);
            if (stop)
                break;
        }
        if (n < 0) {
            reg_err(err, "'%s' line %zu: longer than %u bytes", path,
                    lineno + 1, LINE_MAX_BYTES);
            goto done;
        }
    }
    rc = 0;
    goto done;
oom:
    reg_err(err, "out of memory");
done:
    free(line);
    json_decref(fb);
    fclose(f);
    return rc;
}
