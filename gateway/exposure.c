/*
 * exposure.c - the exposure log writer (issue 7): a bounded queue and one
 * writer thread.
 *
 * Design: the event loop pushes record pointers into a ring under a mutex
 * held for a few instructions; the writer thread takes up to BATCH records
 * at a time and writes them with one registry transaction (or one fflush
 * of a JSON-lines file). Everything slow - formatting times, extracting
 * the output text from the upstream answer, JSON, SQLite - happens on the
 * writer thread.
 *
 * Invariants:
 *  1. gw_exposure_push never waits for I/O: a full ring drops the record
 *     and counts it (stats.dropped); nothing blocks a request.
 *  2. Only the writer thread touches the database handle or the file after
 *     gw_exposure_new returns.
 *  3. gw_exposure_free writes everything queued before it returns (drain
 *     on SIGTERM loses nothing that was accepted).
 *  4. Counters are read and written under the mutex.
 *  5. A pusher signals only a writer that waits for work; a woken writer
 *     lingers LINGER_MS before taking records, so under load a commit
 *     carries up to BATCH records and the loop causes no wake-up per
 *     request. An exposure is in the log within about LINGER_MS.
 *  6. The writer thread closes the database (or the file) itself when it
 *     stops: a loop may have a file table of its own by then (main.c,
 *     own_file_table), where the descriptors SQLite opened on this thread
 *     do not exist.
 */
#include "gateway/exposure.h"
#include "gateway/jscan.h"
#include "gateway/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

/* Records per transaction, and how long a woken writer waits for more.
 * Commits cost more than their bytes: two prompt gateways side by side
 * under load, one writing 1,024 records a commit after a 20 ms linger
 * served ~1% fewer requests a second than one writing 4,096 after 60 ms
 * (with 5 ms, ~2% fewer); 8,192 after 120 ms, another 0.2-0.6% more in
 * three pairs of runs; 250 ms, 0.4% more again (five launches each; at
 * 13,000 requests a second a batch is then ~3,300 records). Under load a
 * record waits about LINGER_MS. */
#define BATCH 8192
#define LINGER_MS 250

/* Records per slice of a database batch: each slice's records go from
 * their rows to their chunks while still in the cache (a batch's records
 * are megabytes, read in three passes when written whole), and a slice is
 * one chunk's worth. */
#define SLICE 256

/* ISO-8601 UTC with milliseconds ("2026-11-28T14:10:00.000Z", 24 bytes
 * and a NUL). The part up to the second is formatted once per second and
 * reused: records arrive in about time order, so this is nearly always a
 * copy and three digits. */
struct at_cache {
    int64_t sec;     /* the second prefix holds; -1: none */
    char prefix[20]; /* "YYYY-MM-DDTHH:MM:SS" */
};

/* Strings many records share (prompt, label, key name, experiment, model,
 * backend) are kept once by the writer, until it is freed: records point
 * at them, so a loop copies none of them into a record, and the writer,
 * which asks which members a chunk's records share, finds them equal by
 * pointer without reading their bytes (cold by then). Side by side, the
 * writer's comparisons of those bytes cost 0.35 us a request (0.9% of the
 * prompt gateway's capacity). Bounded: past INTERN_MAX strings or
 * INTERN_BYTES bytes, or for a string longer than INTERN_LEN, the caller
 * copies the string into its record as before. */
#define INTERN_MAX   1024          /* strings; the table has twice the slots */
#define INTERN_BYTES (64u << 10)   /* bytes of them, NULs included */
#define INTERN_LEN   256

struct intern_slot {
    const char *s;                 /* borrowed from the arena; NULL: free */
    size_t len;
};

struct gw_exposure {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;      /* the writer waits for records */
    pthread_cond_t idle;    /* flushers wait for the writer */
    struct gw_exposure_rec **ring; /* owned: cap slots */
    size_t cap, head, n;
    int stop;
    int busy;               /* the writer is awake (not waiting on cv) */
    int flushing;           /* someone waits in gw_exposure_flush */
    struct reg_exposure_log *db; /* owned; NULL in file mode */
    FILE *file;             /* owned; NULL in db mode */
    char *where;            /* owned: path, for messages */
    struct gw_exposure_stats st;
    struct at_cache atc;    /* the writer thread's */
    struct reg_buf text;    /* owned: the writer thread's file batch */
    /* owned, BATCH each (ex: SLICE): the writer thread's batch, its
     * records' rows (a slice's exposures, the batch's feedback) and their
     * times (on the heap: a thread's stack and TLS stay small) */
    struct gw_exposure_rec **batch;
    struct reg_exposure *ex;
    struct reg_feedback *fb;
    char (*ats)[32];
    /* the kept strings (gw_exposure_intern), any thread's, under imu */
    pthread_mutex_t imu;
    struct intern_slot *islots;    /* owned: 2 * INTERN_MAX, open addressing */
    char *iarena;                  /* owned: INTERN_BYTES */
    size_t in_n, in_used;
};

/* Records of up to POOL_SIZE bytes are kept for reuse: the loop takes
 * one back instead of a malloc, the writer returns it instead of a free.
 * Allocating in one thread and freeing in another, hundreds at a time,
 * made the allocator consolidate and trim its heap under load (and the
 * loop fault the pages in again). */
#define POOL_SIZE 2048 /* bytes of a pooled record, header included */
#define POOL_MAX  16384 /* records kept: 32 MiB at most (two batches) */
#define POOL_STRINGS (POOL_SIZE - sizeof(struct gw_exposure_rec))

static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;
static struct gw_exposure_rec *pool; /* owned: kept records, by next */
static size_t pool_n;

/* The first POOL_MAX blocks are carved, in order, from one mapping that
 * asks for transparent huge pages: under load the records in flight span
 * tens of megabytes (a batch lingers LINGER_MS), and in 4 KiB pages each
 * record the loop fills and the writer reads was a TLB miss of its own.
 * Never unmapped: its blocks live in the pool (or in flight) for the
 * process's life, and pool_trim keeps them. */
#define SLAB_ALIGN (2u << 20)
#define SLAB_BYTES ((size_t)POOL_MAX * POOL_SIZE)
static char *slab;      /* the mapping, SLAB_ALIGN-aligned; NULL: none yet */
static size_t slab_used; /* blocks carved */
static int slab_failed; /* mmap failed: malloc from then on */

static int in_slab(const struct gw_exposure_rec *r)
{
    const char *c = (const char *)r;
    const char *s = __atomic_load_n(&slab, __ATOMIC_ACQUIRE);
    return s != NULL && c >= s && c < s + SLAB_BYTES;
}

/* a new block: carved from the slab while it lasts, else malloc'd;
 * pool_mu held */
static struct gw_exposure_rec *block_alloc_locked(void)
{
    if (slab == NULL && !slab_failed) {
        size_t len = SLAB_BYTES + SLAB_ALIGN;
        char *m = mmap(NULL, len, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED) {
            slab_failed = 1;
        } else {
            uintptr_t a = ((uintptr_t)m + SLAB_ALIGN - 1) &
                          ~(uintptr_t)(SLAB_ALIGN - 1);
            /* the unaligned ends go back */
            if (a > (uintptr_t)m)
                munmap(m, a - (uintptr_t)m);
            if ((uintptr_t)m + len > a + SLAB_BYTES)
                munmap((char *)(a + SLAB_BYTES),
                       (uintptr_t)m + len - (a + SLAB_BYTES));
#ifdef MADV_HUGEPAGE
            (void)madvise((char *)a, SLAB_BYTES, MADV_HUGEPAGE); /* a hint */
#endif
            __atomic_store_n(&slab, (char *)a, __ATOMIC_RELEASE);
        }
    }
    if (slab != NULL && slab_used < POOL_MAX)
        return (struct gw_exposure_rec *)(slab + POOL_SIZE * slab_used++);
    return malloc(POOL_SIZE);
}

static struct gw_exposure_rec *block_alloc(void)
{
    struct gw_exposure_rec *r;

    pthread_mutex_lock(&pool_mu);
    r = block_alloc_locked();
    pthread_mutex_unlock(&pool_mu);
    return r;
}

/* a block from the pool, or a new one to join it later (NULL: out of
 * memory) */
static struct gw_exposure_rec *block_new(void)
{
    struct gw_exposure_rec *r;

    pthread_mutex_lock(&pool_mu);
    if ((r = pool) != NULL) {
        pool = r->next;
        pool_n--;
    } else {
        r = block_alloc_locked();
    }
    pthread_mutex_unlock(&pool_mu);
    return r;
}

/* r (NULL: out of memory) as a new record of kind, with cap bytes for
 * its strings */
static struct gw_exposure_rec *rec_init(struct gw_exposure_rec *r, int pooled,
                                        enum gw_exposure_kind kind, size_t cap)
{
    if (r == NULL)
        return NULL;
    if (pooled) {
        memset(r, 0, offsetof(struct gw_exposure_rec, strings));
        r->pooled = 1;
    }
    r->str_cap = cap;
    r->kind = kind;
    r->ex.arm = -1;
    r->ex.latency_ms = -1;
    r->ex.prompt_tokens = r->ex.completion_tokens = r->ex.total_tokens = -1;
    return r;
}

struct gw_exposure_rec *gw_exposure_rec_new(enum gw_exposure_kind kind,
                                            size_t strings)
{
    size_t size = sizeof(struct gw_exposure_rec) + strings;

    if (size <= POOL_SIZE)
        return rec_init(block_new(), 1, kind, POOL_STRINGS);
    return rec_init(calloc(1, size), 0, kind, strings);
}

/* Asks for the lines of block b that the next record writes first (its
 * cleared head and the start of its strings), for write:
 * blocks come back cold, and a request is long enough for them to arrive.
 * Inlined: GCC drops a static function whose only effect is a prefetch. */
static inline __attribute__((always_inline)) void
block_prefetch(const struct gw_exposure_rec *b)
{
    const char *c = (const char *)b;
    size_t off;

    for (off = 0; off < offsetof(struct gw_exposure_rec, strings); off += 64)
        __builtin_prefetch(c + off, 1);
    for (off = 0; off < 256; off += 64)
        __builtin_prefetch(b->strings + off, 1);
}

struct gw_exposure_rec *gw_exposure_rec_take(struct gw_exposure_local *l,
                                             enum gw_exposure_kind kind,
                                             size_t strings)
{
    struct gw_exposure_rec *r;

    if (sizeof(struct gw_exposure_rec) + strings > POOL_SIZE)
        return gw_exposure_rec_new(kind, strings);
    if (l->free == NULL) {
        /* the pool's whole list for one lock: no walk over cold blocks
         * (another loop that finds the pool empty allocates) */
        pthread_mutex_lock(&pool_mu);
        l->free = pool;
        pool = NULL, pool_n = 0;
        pthread_mutex_unlock(&pool_mu);
    }
    if ((r = l->free) != NULL) {
        l->free = r->next;
        if (l->free)
            block_prefetch(l->free);
    } else {
        r = block_alloc();
    }
    return rec_init(r, 1, kind, POOL_STRINGS);
}

const char *gw_exposure_rec_str(struct gw_exposure_rec *r, const char *s,
                                size_t len)
{
    char *d;

    if (s == NULL || r->str_cap - r->str_len <= len)
        return NULL;
    d = r->strings + r->str_len;
    memcpy(d, s, len);
    d[len] = '\0';
    r->str_len += len + 1;
    return d;
}

const char *gw_exposure_rec_strn(struct gw_exposure_rec *r, const char *s,
                                 size_t max)
{
    return s ? gw_exposure_rec_str(r, s, strnlen(s, max - 1)) : NULL;
}

void gw_exposure_rec_output(struct gw_exposure_rec *r, const char *data,
                            size_t len, size_t max)
{
    size_t need = len + (r->raw_sse ? 1 : 0);

    if (r->truncated)
        return;
    if (r->raw_len + need > max) {
        r->truncated = 1;
        return;
    }
    if (r->raw_len + need + 1 > r->raw_cap) {
        size_t cap = r->raw_cap ? r->raw_cap : 1024;
        char *nb;
        while (cap < r->raw_len + need + 1)
            cap *= 2;
        if ((nb = realloc(r->raw, cap)) == NULL) {
            r->truncated = 1;
            return;
        }
        r->raw = nb, r->raw_cap = cap;
    }
    memcpy(r->raw + r->raw_len, data, len);
    r->raw_len += len;
    if (r->raw_sse)
        r->raw[r->raw_len++] = '\n';
    r->raw[r->raw_len] = '\0';
}

void gw_exposure_rec_free(struct gw_exposure_rec *r)
{
    gw_exposure_rec_free_n(&r, 1);
}

void gw_exposure_rec_free_n(struct gw_exposure_rec **recs, size_t n)
{
    struct gw_exposure_rec *keep = NULL, *last = NULL, *spill = NULL, *r;
    size_t i, n_keep = 0, room;

    for (i = 0; i < n; i++) {
        if ((r = recs[i]) == NULL)
            continue;
        free(r->raw);
        free((char *)r->ex.output);
        if (!r->pooled) {
            free(r);
            continue;
        }
        r->next = keep;
        keep = r;
        if (last == NULL)
            last = r;
        n_keep++;
    }
    if (keep == NULL)
        return;
    /* one lock for all of them: the writer returns a batch at a time; as
     * many as the pool has room for (a batch may be larger than it), and
     * the slab's blocks always (they cannot be freed) */
    pthread_mutex_lock(&pool_mu);
    room = pool_n < POOL_MAX ? POOL_MAX - pool_n : 0;
    if (room >= n_keep) {
        last->next = pool;
        pool = keep;
        pool_n += n_keep;
        keep = NULL;
    }
    while (keep) {
        r = keep->next;
        if (room > 0 || in_slab(keep)) {
            room -= room > 0;
            keep->next = pool;
            pool = keep;
            pool_n++;
        } else {
            keep->next = spill;
            spill = keep;
        }
        keep = r;
    }
    pthread_mutex_unlock(&pool_mu);
    while (spill) { /* the pool is full */
        r = spill->next;
        free(spill);
        spill = r;
    }
}

/* frees the kept records that were malloc'd (a writer stopped; the next
 * ones are new); the slab's stay */
static void pool_trim(void)
{
    struct gw_exposure_rec *r, *kept = NULL, *next;
    size_t n = 0;

    pthread_mutex_lock(&pool_mu);
    r = pool;
    pool = NULL;
    pool_n = 0;
    pthread_mutex_unlock(&pool_mu);
    for (; r; r = next) {
        next = r->next;
        if (in_slab(r)) {
            r->next = kept;
            kept = r;
            n++;
        } else {
            free(r);
        }
    }
    if (kept == NULL)
        return;
    pthread_mutex_lock(&pool_mu);
    for (r = kept; r->next; r = r->next)
        ;
    r->next = pool;
    pool = kept;
    pool_n += n;
    pthread_mutex_unlock(&pool_mu);
}

/* ---- members of JSON text that gw_jscan validated ------------------------
 * Once gw_jscan has checked a whole answer, finding a nested member needs
 * no second validation: these walk the text, trusting its grammar, and
 * never read outside [p, end). */

static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
        p++;
    return p;
}

/* the end of the string that starts at p (its opening quote) */
static const char *string_end(const char *p, const char *end)
{
    for (p++; p < end; p++) {
        if (*p == '\\')
            p++;
        else if (*p == '"')
            return p + 1;
    }
    return end;
}

/* the end of the value that starts at p */
static const char *value_end(const char *p, const char *end)
{
    size_t depth = 0;

    if (p >= end)
        return end;
    if (*p == '"')
        return string_end(p, end);
    if (*p != '{' && *p != '[') { /* number or literal */
        while (p < end && *p != ',' && *p != '}' && *p != ']' && *p != ' ' &&
               *p != '\t' && *p != '\r' && *p != '\n')
            p++;
        return p;
    }
    while (p < end) {
        if (*p == '"') {
            p = string_end(p, end);
            continue;
        }
        if (*p == '{' || *p == '[')
            depth++;
        else if ((*p == '}' || *p == ']') && --depth == 0)
            return p + 1;
        p++;
    }
    return end;
}

/* Member `key` of the object that starts at obj (its members end at its
 * '}', so `end` may be any bound past it): 0 with the start of its value
 * in *val (before end), 1 when absent, -1 when a key is written with
 * escapes (it may still be `key`: the caller asks gw_jscan). */
static int member(const char *obj, const char *end, const char *key,
                  const char **val)
{
    size_t kl = strlen(key);
    const char *p;

    if (obj >= end || *obj != '{')
        return 1;
    p = skip_ws(obj + 1, end);
    while (p < end && *p == '"') {
        const char *k = p + 1, *q = k;
        while (q < end && *q != '"') {
            if (*q == '\\')
                return -1;
            q++;
        }
        p = skip_ws(q + 1, end);
        if (p >= end || *p != ':')
            return 1;
        if ((p = skip_ws(p + 1, end)) >= end)
            return 1;
        if ((size_t)(q - k) == kl && memcmp(k, key, kl) == 0) {
            *val = p; /* < end */
            return 0;
        }
        p = skip_ws(value_end(p, end), end);
        if (p >= end || *p != ',')
            break;
        p = skip_ws(p + 1, end);
    }
    return 1;
}

/* the string value at v (its opening quote) as a field gw_jscan_string
 * decodes */
static void string_field(const char *v, const char *end,
                         struct gw_jscan_field *f)
{
    const char *p;

    f->type = GW_JSON_STRING;
    f->val = v + 1;
    f->escaped = 0;
    for (p = v + 1; p < end && *p != '"'; p++)
        if (*p == '\\')
            p++, f->escaped = 1;
    if (p > end) /* a text cut after a backslash (never in checked JSON) */
        p = end;
    f->len = (size_t)(p - f->val);
}

/* Appends the text of choices[0] of one JSON answer or chunk
 * (.message.content, or .delta.content for a chunk, else .text) to
 * out[0..*n) (grown, *cap); answers that do not scan add nothing. No
 * tree: one gw_jscan pass checks the answer, the members are then found in
 * place, and only the text is decoded. 0, or -1 out of memory. */
static int choice_text(const char *json, size_t len, int delta, char **out,
                       size_t *n, size_t *cap)
{
    struct gw_jscan_field top = {.key = "choices"}, t;
    const char *end, *c0, *v, *m;
    int rc;
    long got;

    if (gw_jscan(json, len, 64, &top, 1, NULL, 0) < 0 ||
        top.type != GW_JSON_ARRAY)
        return 0;
    end = top.val + top.len;
    c0 = skip_ws(top.val + 1, end);
    if (c0 >= end || *c0 != '{')
        return 0;
    rc = member(c0, end, delta ? "delta" : "message", &m);
    if (rc == 0 && *m == '{' &&
        (rc = member(m, end, "content", &v)) == 0 && *v == '"') {
        string_field(v, end, &t);
    } else if (rc >= 0 && (rc = member(c0, end, "text", &v)) == 0 &&
               *v == '"') {
        string_field(v, end, &t);
    } else if (rc < 0) {
        /* a key with escapes: the validating scanner decodes keys */
        struct gw_jscan_field ch[2] = {{.key = delta ? "delta" : "message"},
                                       {.key = "text"}};
        struct gw_jscan_field content = {.key = "content"};
        if (gw_jscan(c0, (size_t)(value_end(c0, end) - c0), 63, ch, 2, NULL,
                     0) < 0)
            return 0;
        if (ch[0].type == GW_JSON_OBJECT &&
            gw_jscan(ch[0].val, ch[0].len, 62, &content, 1, NULL, 0) == 0 &&
            content.type == GW_JSON_STRING)
            t = content;
        else if (ch[1].type == GW_JSON_STRING)
            t = ch[1];
        else
            return 0;
    } else {
        return 0;
    }
    if (*n + t.len + 1 > *cap) { /* decoded is never longer than raw */
        size_t nc = *cap ? *cap : 256;
        char *nb;
        while (nc < *n + t.len + 1)
            nc *= 2;
        if ((nb = realloc(*out, nc)) == NULL)
            return -1;
        *out = nb, *cap = nc;
    }
    if ((got = gw_jscan_string(&t, *out + *n, *cap - *n)) > 0)
        *n += (size_t)got;
    (*out)[*n] = '\0';
    return 0;
}

char *gw_exposure_output_text(const char *raw, size_t len, int sse)
{
    char *out = NULL;
    size_t n = 0, cap = 0;

    if (raw == NULL || len == 0)
        return NULL;
    if (!sse) {
        if (choice_text(raw, len, 0, &out, &n, &cap) < 0 || out == NULL) {
            free(out);
            return NULL;
        }
        return out;
    }
    const char *p = raw, *end = raw + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t l = (size_t)((nl ? nl : end) - p);
        if (l > 0 && choice_text(p, l, 1, &out, &n, &cap) < 0)
            break;
        p += l + 1;
    }
    if (out == NULL)
        out = strdup("");
    return out;
}

/* ---- the writer thread -------------------------------------------------- */

/* a / b rounded down (b > 0): whole units before a time, even before
 * the epoch */
static int64_t floor_div(int64_t a, int64_t b)
{
    return a >= 0 ? a / b : -((b - 1 - a) / b);
}

static void format_at(struct at_cache *c, int64_t us, char out[32])
{
    int64_t sec = floor_div(us, 1000000);
    int ms = (int)((us - sec * 1000000) / 1000);

    if (sec != c->sec) {
        time_t s = (time_t)sec;
        struct tm tm;
        if (gmtime_r(&s, &tm) == NULL ||
            strftime(c->prefix, sizeof(c->prefix), "%Y-%m-%dT%H:%M:%S",
                     &tm) != 19)
            memcpy(c->prefix, "1970-01-01T00:00:00", 20);
        c->sec = sec;
    }
    memcpy(out, c->prefix, 19);
    out[19] = '.';
    out[20] = (char)('0' + ms / 100);
    out[21] = (char)('0' + ms / 10 % 10);
    out[22] = (char)('0' + ms % 10);
    out[23] = 'Z';
    out[24] = '\0';
}

/* One JSON line per record, in the format reg_samples_export_file reads
 * (registry.h), all of a batch in one buffer and one write(2) (more only
 * when the kernel takes part of it). */
static int write_file(struct gw_exposure *w, struct gw_exposure_rec **recs,
                      size_t n)
{
    struct reg_buf *b = &w->text;
    size_t i, off = 0;

    b->len = 0;
    for (i = 0; i < n; i++) {
        int rc = recs[i]->kind == GW_FEEDBACK
            ? reg_feedback_json(b, &recs[i]->fb)
            : reg_exposure_json(b, &recs[i]->ex,
                                REG_JSON_TYPED | REG_JSON_NULLS);
        if (rc < 0) {
            errno = ENOMEM;
            return -1;
        }
        b->p[b->len++] = '\n'; /* the room of the '\0' */
    }
    while (off < b->len) {
        ssize_t k = write(fileno(w->file), b->p + off, b->len - off);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        off += (size_t)k;
    }
    if (b->cap > (4u << 20)) { /* do not keep a huge batch's buffer */
        free(b->p);
        memset(b, 0, sizeof(*b));
    }
    return 0;
}

/* recs[from..to) (of n) ready to write: times formatted, outputs
 * extracted; with ex and fb (not NULL), copied as rows: exposures to ex
 * (at *n_ex), feedback to fb (at *n_fb). */
static void rows_of(struct gw_exposure *w, struct gw_exposure_rec **recs,
                    size_t from, size_t to, size_t n, struct reg_exposure *ex,
                    size_t *n_ex, struct reg_feedback *fb, size_t *n_fb)
{
    for (size_t i = from; i < to; i++) {
        struct gw_exposure_rec *r = recs[i];
        if (i + 8 < n) { /* the lines read below, cold since queued */
            const char *c = (const char *)recs[i + 8];
            __builtin_prefetch(c);
            __builtin_prefetch(c + 64);
            __builtin_prefetch(c + 128);
            __builtin_prefetch(c + 192);
        }
        if (r->kind == GW_EXPOSURE && ex) {
            /* the database keeps the time in ms: no text to format */
            r->ex.at = NULL;
            r->ex.at_ms = floor_div(r->at_us, 1000);
        } else {
            format_at(&w->atc, r->at_us, w->ats[i]);
            if (r->kind == GW_EXPOSURE)
                r->ex.at = w->ats[i];
        }
        if (r->kind == GW_EXPOSURE) {
            /* the request's own "variables" object, which gw_jscan
             * checked (JSON and UTF-8) before the prompt rendered it */
            r->ex.variables_json = 1;
            if (r->raw)
                r->ex.output = gw_exposure_output_text(r->raw, r->raw_len,
                                                       r->raw_sse);
            if (ex)
                ex[(*n_ex)++] = r->ex;
        } else {
            r->fb.at = w->ats[i];
            if (fb)
                fb[(*n_fb)++] = r->fb;
        }
    }
}

/* recs[0..n) into the registry: one transaction, the exposures a slice
 * at a time, then the feedback. 0 or -1 with *err set. */
static int write_db(struct gw_exposure *w, struct gw_exposure_rec **recs,
                    size_t n, char **err)
{
    size_t i, n_fb = 0;

    if (reg_exposure_log_begin(w->db, err) < 0)
        return -1;
    for (i = 0; i < n; i += SLICE) {
        size_t to = n - i < SLICE ? n : i + SLICE, n_ex = 0, j, k = 0;
        struct gw_exposure_rec *done[SLICE];
        rows_of(w, recs, i, to, n, w->ex, &n_ex, w->fb, &n_fb);
        if (reg_exposure_log_add(w->db, w->ex, n_ex, err) < 0)
            return -1;
        /* the slice's exposures are in SQLite's pages now: their blocks
         * go back while still in the cache (a batch's records are
         * megabytes, cold again by its end); feedback waits for its rows,
         * and the caller frees what is left (recs[j] NULL: freed) */
        for (j = i; j < to; j++)
            if (recs[j]->kind == GW_EXPOSURE) {
                done[k++] = recs[j];
                recs[j] = NULL;
            }
        gw_exposure_rec_free_n(done, k);
    }
    if (reg_exposure_log_feedback(w->db, w->fb, n_fb, NULL, err) < 0 ||
        reg_exposure_log_commit(w->db, err) < 0)
        return -1;
    return 0;
}

static void write_batch(struct gw_exposure *w, struct gw_exposure_rec **recs,
                        size_t n)
{
    char *err = NULL;
    int rc;

    if (w->file) { /* the file's lines come from the records themselves */
        rows_of(w, recs, 0, n, n, NULL, NULL, NULL, NULL);
        rc = write_file(w, recs, n);
        if (rc < 0)
            err = strdup(strerror(errno));
    } else {
        rc = write_db(w, recs, n, &err);
    }
    pthread_mutex_lock(&w->mu);
    if (rc < 0)
        w->st.failed += n;
    else
        w->st.written += n;
    pthread_mutex_unlock(&w->mu);
    if (rc < 0)
        gw_log_error("exposure log: cannot write %zu records to '%s': %s", n,
                     w->where, err ? err : "out of memory");
    free(err);
}

/* the database or the file, closed; both are NULL after */
static void close_sink(struct gw_exposure *w)
{
    if (w->file)
        fclose(w->file);
    w->file = NULL;
    reg_exposure_log_free(w->db);
    w->db = NULL;
}

static void *writer_main(void *arg)
{
    struct gw_exposure *w = arg;
    struct gw_exposure_rec **batch = w->batch;
    struct timespec linger = {0, LINGER_MS * 1000000L};
    size_t n;

    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (w->n == 0 && !w->stop) {
            w->busy = 0;
            pthread_cond_broadcast(&w->idle);
            pthread_cond_wait(&w->cv, &w->mu);
        }
        if (w->n == 0 && w->stop)
            break;
        w->busy = 1;
        /* let a batch gather: one transaction for many records, and no
         * wake-up per request (pushers only signal an idle writer) */
        if (!w->stop && w->n < BATCH && !w->flushing) {
            pthread_mutex_unlock(&w->mu);
            nanosleep(&linger, NULL);
            pthread_mutex_lock(&w->mu);
        }
        while (w->n > 0) {
            for (n = 0; n < BATCH && w->n > 0; n++) {
                batch[n] = w->ring[w->head];
                w->head = (w->head + 1) % w->cap;
                w->n--;
            }
            pthread_mutex_unlock(&w->mu);
            write_batch(w, batch, n);
            gw_exposure_rec_free_n(batch, n);
            pthread_mutex_lock(&w->mu);
        }
    }
    w->busy = 0;
    pthread_cond_broadcast(&w->idle);
    pthread_mutex_unlock(&w->mu);
    close_sink(w); /* on this thread: see invariant 6 */
    return NULL;
}

/* the arrays of gw_exposure_new (any of them may be NULL) */
static void free_arrays(struct gw_exposure *w)
{
    free(w->ring);
    free(w->batch);
    free(w->ex);
    free(w->fb);
    free(w->ats);
    free(w->islots);
    free(w->iarena);
}

/* everything w holds, once its thread has ended (or never started) */
static void release(struct gw_exposure *w)
{
    close_sink(w); /* when the thread never ran */
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    pthread_cond_destroy(&w->idle);
    pthread_mutex_destroy(&w->imu);
    free(w->text.p);
    free(w->where);
    free_arrays(w);
    free(w);
}

struct gw_exposure *gw_exposure_new(const char *db_path, const char *file,
                                    size_t queue, char *err, size_t errlen)
{
    struct gw_exposure *w = calloc(1, sizeof(*w));
    char *e = NULL;

    if (w == NULL || queue == 0 ||
        (w->ring = calloc(queue, sizeof(*w->ring))) == NULL ||
        (w->batch = calloc(BATCH, sizeof(*w->batch))) == NULL ||
        (w->ex = calloc(SLICE, sizeof(*w->ex))) == NULL ||
        (w->fb = calloc(BATCH, sizeof(*w->fb))) == NULL ||
        (w->ats = calloc(BATCH, sizeof(*w->ats))) == NULL ||
        (w->islots = calloc(2 * INTERN_MAX, sizeof(*w->islots))) == NULL ||
        (w->iarena = malloc(INTERN_BYTES)) == NULL) {
        snprintf(err, errlen, "cannot start the exposure log: out of memory");
        if (w)
            free_arrays(w);
        free(w);
        return NULL;
    }
    w->cap = queue;
    w->atc.sec = -1;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    pthread_cond_init(&w->idle, NULL);
    pthread_mutex_init(&w->imu, NULL);
    if (file) {
        w->where = strdup(file);
        if ((w->file = fopen(file, "a")) == NULL) { /* O_APPEND: lines whole */
            snprintf(err, errlen, "cannot open exposure log '%s': %s", file,
                     strerror(errno));
            goto fail;
        }
    } else {
        w->where = strdup(db_path);
        if ((w->db = reg_exposure_log_open(db_path, &e)) == NULL) {
            snprintf(err, errlen, "exposure log: %s", e ? e : "out of memory");
            free(e);
            goto fail;
        }
    }
    if (pthread_create(&w->thread, NULL, writer_main, w) != 0) {
        snprintf(err, errlen, "cannot start the exposure log thread");
        goto fail;
    }
    return w;
fail:
    release(w);
    return NULL;
}

/* queues recs[0..n) with one lock; those that do not fit are dropped
 * (counted, freed). The number dropped. */
static size_t push_n(struct gw_exposure *w, struct gw_exposure_rec **recs,
                     size_t n)
{
    size_t i, fit;
    int wake;

    pthread_mutex_lock(&w->mu);
    fit = w->stop ? 0 : w->cap - w->n < n ? w->cap - w->n : n;
    wake = fit > 0 && w->n == 0 && !w->busy;
    for (i = 0; i < fit; i++)
        w->ring[(w->head + w->n + i) % w->cap] = recs[i];
    w->n += fit;
    w->st.queued += fit;
    w->st.dropped += n - fit;
    pthread_mutex_unlock(&w->mu);
    if (wake)
        pthread_cond_signal(&w->cv);
    if (fit < n)
        gw_exposure_rec_free_n(recs + fit, n - fit);
    return n - fit;
}

int gw_exposure_push(struct gw_exposure *w, struct gw_exposure_rec *r)
{
    return push_n(w, &r, 1) ? -1 : 0;
}

int gw_exposure_stage(struct gw_exposure *w, struct gw_exposure_local *l,
                      struct gw_exposure_rec *r)
{
    l->out[l->n_out++] = r;
    if (l->n_out == GW_EXPOSURE_BULK) {
        gw_exposure_hand(w, l);
        return 0;
    }
    return l->n_out == 1;
}

void gw_exposure_hand(struct gw_exposure *w, struct gw_exposure_local *l)
{
    if (l->n_out > 0)
        push_n(w, l->out, l->n_out);
    l->n_out = 0;
}

void gw_exposure_local_clear(struct gw_exposure_local *l)
{
    struct gw_exposure_rec *r;

    while ((r = l->free) != NULL) {
        l->free = r->next;
        if (in_slab(r)) { /* rare (a loop stops): one lock each */
            pthread_mutex_lock(&pool_mu);
            r->next = pool;
            pool = r;
            pool_n++;
            pthread_mutex_unlock(&pool_mu);
        } else {
            free(r);
        }
    }
    gw_exposure_rec_free_n(l->out, l->n_out);
    l->n_out = 0;
}

const char *gw_exposure_intern(struct gw_exposure *w, const char *s,
                               size_t len)
{
    const size_t mask = 2 * INTERN_MAX - 1;
    uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a */
    const char *kept = NULL;
    size_t i;

    if (w == NULL || s == NULL || len > INTERN_LEN)
        return NULL;
    for (i = 0; i < len; i++)
        h = (h ^ (unsigned char)s[i]) * 0x100000001b3ULL;
    pthread_mutex_lock(&w->imu);
    for (i = (size_t)h & mask; w->islots[i].s != NULL; i = (i + 1) & mask) {
        if (w->islots[i].len == len && memcmp(w->islots[i].s, s, len) == 0) {
            kept = w->islots[i].s;
            break;
        }
    }
    if (kept == NULL && w->in_n < INTERN_MAX &&
        INTERN_BYTES - w->in_used > len) {
        char *d = w->iarena + w->in_used;
        memcpy(d, s, len);
        d[len] = '\0';
        w->in_used += len + 1;
        w->in_n++;
        w->islots[i] = (struct intern_slot){d, len};
        kept = d;
    }
    pthread_mutex_unlock(&w->imu);
    return kept;
}

void gw_exposure_stats(struct gw_exposure *w, struct gw_exposure_stats *s)
{
    pthread_mutex_lock(&w->mu);
    *s = w->st;
    pthread_mutex_unlock(&w->mu);
}

void gw_exposure_flush(struct gw_exposure *w)
{
    pthread_mutex_lock(&w->mu);
    w->flushing++;
    pthread_cond_signal(&w->cv);
    while (w->n > 0 || w->busy)
        pthread_cond_wait(&w->idle, &w->mu);
    w->flushing--;
    pthread_mutex_unlock(&w->mu);
}

void gw_exposure_free(struct gw_exposure *w)
{
    if (w == NULL)
        return;
    pthread_mutex_lock(&w->mu);
    w->stop = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    release(w);
    pool_trim();
}
