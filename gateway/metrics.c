/*
 * metrics.c - Prometheus metrics: counted on the loop, written on scrape.
 *
 * Design:
 *  - The request path does integer adds only. gw_metrics_request (called
 *    once per request, from the access-log hook gw_proxy_log) resolves the
 *    request's model, backend and key names to slots with one hash probe
 *    each (FNV-1a, open addressing; no allocation), then adds to counters
 *    and histograms. Names that no loaded config held resolve to the slot
 *    "other": a client sending a thousand model names makes one series.
 *  - Slots are created only by gw_metrics_attach (start, SIGHUP), from the
 *    config's names, and are kept by name for the life of the process, as
 *    pool.c keeps breakers: a reload keeps every count. A slot whose name
 *    the current config dropped is left out of the output.
 *  - promptgate_requests_total{route,model,backend,status_class} is sparse
 *    (most model x backend pairs never occur): a table of series keyed by
 *    the packed slot indexes, grown at attach and at scrape time (never on
 *    the request path). A series that finds the table three quarters full
 *    between two scrapes is counted in promptgate_metrics_overflow_total
 *    instead.
 *  - State kept elsewhere is read at scrape time, never copied per
 *    request: breakers, attempts and retries per backend (pool.c), calls
 *    and retries in flight (upstream.c), exposure-log and Redis counters,
 *    /proc for the process.
 *  - One gw_metrics per worker (issue 9, point 3), added up at scrape.
 *    Its owner thread updates it; another thread may attach names to it
 *    (a reload fanned out from worker 0) or read it (a scrape on any
 *    worker). So each object has its own mutex, never a global one: the
 *    owner takes it once per request (uncontended, about 20 ns), attach
 *    takes it, and a scrape takes one worker's at a time to add that
 *    worker's counts into a private sum, by name (two workers' slots for
 *    one name may differ), then writes the sum with no lock held. The
 *    in-flight gauge takes no lock: only its owner writes it (atomic
 *    stores of plain adds, no locked instruction), scrapes load it. Series
 *    table growth happens under its object's lock (attach, scrape).
 *    Reloads are counted in worker 0's object only, which also owns the
 *    metrics listener.
 *  - With one worker the sum is a copy of that worker's object, slot for
 *    slot and series for series in the same table layout (series_merge
 *    walks the table from an empty entry), so the output is the same
 *    bytes as writing the object itself.
 *
 * Invariants:
 *  1. Slot 0 of every name table is "" (the request had none) and slot 1
 *     is "other"; both stay in the output whatever the config. No other
 *     label value comes from a request: routes and status classes are
 *     fixed lists, names are the config's.
 *  2. gw_metrics_begin and gw_metrics_request pair up per request, so
 *     promptgate_inflight_requests returns to 0 (a cancelled stream is
 *     logged once, as 499).
 *  3. Every field but inflight and listen_at_start is read or written
 *     only under the object's lock; a scrape never holds two objects'
 *     locks.
 */
#include "gateway/metrics.h"
#include "gateway/gateway.h"
#include "gateway/cache.h"
#include "gateway/clock.h"
#include "gateway/exposure.h"
#include "gateway/fmt.h"
#include "gateway/http.h"
#include "gateway/log.h"
#include "gateway/pool.h"
#include "gateway/prompt.h"

#include <dirent.h>
#include <event2/buffer.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define MAX_NAMES 4096       /* slots per label (config names + 2) */
#define SERIES_MIN 1024      /* requests_total table, entries */
#define SLOT_NONE 0
#define SLOT_OTHER 1

/* ------------------------------------------------------------- labels */

/* Routes: the gateway's own paths, then the metrics path, then "other". */
static const char *const route_names[] = {
    "/v1/chat/completions", "/v1/completions", "/v1/embeddings",
    "/v1/models", "/v1/feedback", "/healthz", "/readyz", "/admin/backends",
    "/admin/cache", "/admin/cache/purge"};
#define N_FIXED_ROUTES (sizeof(route_names) / sizeof(route_names[0]))
#define ROUTE_METRICS N_FIXED_ROUTES
#define ROUTE_OTHER (N_FIXED_ROUTES + 1)
#define N_ROUTES (N_FIXED_ROUTES + 2)

static const char *const class_names[] = {"1xx", "2xx", "3xx", "4xx",
                                           "5xx"};
#define N_CLASSES 5

/* Rate-limit rejections: the gateway's 429 codes (limit.c, rlredis.c,
 * proxy.c) and their reason labels. */
static const char *const reject_codes[] = {
    "rate_limit_exceeded", "concurrency_limit_exceeded",
    "daily_budget_exceeded", "rate_limit_unavailable"};
static const char *const reject_reasons[] = {"rate", "concurrency",
                                             "daily_budget", "unavailable"};
#define N_REASONS 4

static const char *const cache_results[] = {"hit", "miss", "bypass"};
#define N_CACHE 3

static const char *const bucket_les[GW_METRICS_BUCKETS] = {
    "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5",
    "1",     "2.5",  "5",     "10",   "30",  "60",  "120"};

/* Names of one label, by slot; a hash index for the request path. */
struct names {
    char **v;            /* owned: n owned names */
    unsigned char *live; /* owned: 1 when the current config names v[i] */
    size_t n, cap;
    uint32_t *ht; /* owned: hcap entries, slot + 1, 0 empty */
    size_t hcap;  /* a power of two, at least 2 * cap */
};

struct series {
    uint64_t key; /* packed slots + 1; 0: empty */
    uint64_t v;
};

struct gw_metrics {
    pthread_mutex_t lock; /* every field but inflight, listen_at_start */
    struct names models, backends, keys;
    struct series *series; /* owned: requests_total, n_series_cap entries */
    size_t n_series, series_cap;
    uint64_t overflow;
    struct gw_metrics_hist duration[N_ROUTES];
    struct gw_metrics_hist *ttft;    /* owned: by model slot (models.cap) */
    uint64_t (*tokens)[2];           /* owned: by key slot (keys.cap) */
    uint64_t (*rejects)[N_REASONS];  /* owned: by key slot (keys.cap) */
    uint64_t cache[N_CACHE];
    long inflight;                   /* atomic: written by the owner only */
    int attached;                    /* a config was attached */
    int listen_at_start;             /* atomic: the first config's
                                        metrics.listen serves the path */
    char metrics_path[128];          /* the route label of the scrapes */
    double start_time;               /* wall clock seconds at start */
    uint64_t reloads, reloads_ok;    /* SIGHUPs, and those that applied */
    int last_reload_ok;
    struct gw_http_server *admin;    /* owned: metrics.listen, or NULL */
    char admin_addr[300];            /* "HOST:PORT" it listens on, or "" */
};

static uint32_t fnv1a(const char *s)
{
    uint32_t h = 2166136261u;

    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

/* The slot of s: SLOT_NONE for NULL or "", SLOT_OTHER when unknown. */
static size_t names_find(const struct names *t, const char *s)
{
    size_t mask = t->hcap - 1, i;

    if (s == NULL || *s == '\0')
        return SLOT_NONE;
    for (i = fnv1a(s) & mask; t->ht[i]; i = (i + 1) & mask)
        if (strcmp(t->v[t->ht[i] - 1], s) == 0)
            return t->ht[i] - 1;
    return SLOT_OTHER;
}

static int names_rehash(struct names *t, size_t hcap)
{
    uint32_t *ht = calloc(hcap, sizeof(*ht));

    if (ht == NULL)
        return -1;
    for (size_t s = 0; s < t->n; s++) {
        size_t i = fnv1a(t->v[s]) & (hcap - 1);
        while (ht[i])
            i = (i + 1) & (hcap - 1);
        ht[i] = (uint32_t)s + 1;
    }
    free(t->ht);
    t->ht = ht;
    t->hcap = hcap;
    return 0;
}

/* Adds s (not there yet) as a new slot. Returns the slot, SLOT_OTHER when
 * the table is full, or -1 on out of memory. The arrays sized by cap grow
 * in the caller (grow_slots) when cap changed. */
static long names_add(struct names *t, const char *s)
{
    char *copy;

    if (t->n >= MAX_NAMES)
        return SLOT_OTHER;
    if (t->n == t->cap) {
        size_t cap = t->cap * 2;
        char **v = realloc(t->v, cap * sizeof(*v));
        if (v == NULL)
            return -1;
        t->v = v;
        unsigned char *live = realloc(t->live, cap);
        if (live == NULL)
            return -1;
        memset(live + t->cap, 0, cap - t->cap);
        t->live = live;
        t->cap = cap;
    }
    if (t->hcap < 2 * t->cap && names_rehash(t, 2 * t->cap) < 0)
        return -1;
    if ((copy = strdup(s)) == NULL)
        return -1;
    t->v[t->n] = copy;
    size_t i = fnv1a(s) & (t->hcap - 1);
    while (t->ht[i])
        i = (i + 1) & (t->hcap - 1);
    t->ht[i] = (uint32_t)t->n + 1;
    t->live[t->n] = 1;
    return (long)t->n++;
}

static int names_init(struct names *t)
{
    t->cap = 16;
    t->v = calloc(t->cap, sizeof(*t->v));
    t->live = calloc(t->cap, 1);
    if (t->v == NULL || t->live == NULL || names_rehash(t, 2 * t->cap) < 0)
        return -1;
    /* slot 0 "" is never hashed (names_find answers it), slot 1 is */
    if ((t->v[0] = strdup("")) == NULL)
        return -1;
    t->n = 1;
    t->live[0] = 1;
    return names_add(t, "other") == SLOT_OTHER ? 0 : -1;
}

static void names_release(struct names *t)
{
    for (size_t i = 0; i < t->n; i++)
        free(t->v[i]);
    free(t->v);
    free(t->live);
    free(t->ht);
}

/* Marks name live, adding it when new. -1 on out of memory. */
static int names_mark(struct names *t, const char *name)
{
    size_t s = names_find(t, name);

    if (s == SLOT_OTHER && strcmp(name, "other") != 0) {
        long n = names_add(t, name);
        if (n < 0)
            return -1;
        s = (size_t)n;
    }
    t->live[s] = 1;
    return 0;
}

/* ------------------------------------------------------ requests_total */

static uint64_t series_key(size_t model, size_t backend, size_t route,
                           size_t cls)
{
    return (((uint64_t)model << 40) | ((uint64_t)backend << 24) |
            ((uint64_t)route << 8) | cls) + 1;
}

static uint64_t mix(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    return k;
}

static void series_add(struct gw_metrics *m, uint64_t key)
{
    size_t mask = m->series_cap - 1, i;

    for (i = mix(key) & mask; m->series[i].key; i = (i + 1) & mask)
        if (m->series[i].key == key) {
            m->series[i].v++;
            return;
        }
    if (m->n_series >= m->series_cap / 4 * 3) {
        m->overflow++;
        return;
    }
    m->series[i].key = key;
    m->series[i].v = 1;
    m->n_series++;
}

/* Moves the table into one of cap entries (a power of two, larger). */
static int series_rehash(struct gw_metrics *m, size_t cap)
{
    struct series *s = calloc(cap, sizeof(*s));
    if (s == NULL)
        return -1;
    for (size_t j = 0; j < m->series_cap; j++) {
        if (!m->series[j].key)
            continue;
        size_t i = mix(m->series[j].key) & (cap - 1);
        while (s[i].key)
            i = (i + 1) & (cap - 1);
        s[i] = m->series[j];
    }
    free(m->series);
    m->series = s;
    m->series_cap = cap;
    return 0;
}

/* Doubles the table while it is half full (attach and scrape only). */
static int series_grow(struct gw_metrics *m)
{
    size_t cap = m->series_cap;

    while (m->n_series >= cap / 2)
        cap *= 2;
    return cap == m->series_cap ? 0 : series_rehash(m, cap);
}

/* Adds v to the series key of a scrape's sum, growing it as needed (it
 * never overflows). -1 on out of memory. */
static int series_put(struct gw_metrics *m, uint64_t key, uint64_t v)
{
    size_t mask = m->series_cap - 1, i;

    for (i = mix(key) & mask; m->series[i].key; i = (i + 1) & mask)
        if (m->series[i].key == key) {
            m->series[i].v += v;
            return 0;
        }
    if (m->n_series >= m->series_cap / 4 * 3) {
        if (series_rehash(m, m->series_cap * 2) < 0)
            return -1;
        return series_put(m, key, v);
    }
    m->series[i].key = key;
    m->series[i].v = v;
    m->n_series++;
    return 0;
}

/* -------------------------------------------------------------- set-up */

/* Grows the arrays sized by slot capacity to the name tables' caps. */
static int grow_slots(struct gw_metrics *m, size_t *mcap, size_t *kcap)
{
    if (m->models.cap != *mcap) {
        struct gw_metrics_hist *t =
            realloc(m->ttft, m->models.cap * sizeof(*t));
        if (t == NULL)
            return -1;
        memset(t + *mcap, 0, (m->models.cap - *mcap) * sizeof(*t));
        m->ttft = t;
        *mcap = m->models.cap;
    }
    if (m->keys.cap != *kcap) {
        uint64_t(*tok)[2] = realloc(m->tokens, m->keys.cap * sizeof(*tok));
        if (tok == NULL)
            return -1;
        memset(tok + *kcap, 0, (m->keys.cap - *kcap) * sizeof(*tok));
        m->tokens = tok;
        uint64_t(*rej)[N_REASONS] =
            realloc(m->rejects, m->keys.cap * sizeof(*rej));
        if (rej == NULL)
            return -1;
        memset(rej + *kcap, 0, (m->keys.cap - *kcap) * sizeof(*rej));
        m->rejects = rej;
        *kcap = m->keys.cap;
    }
    return 0;
}

struct gw_metrics *gw_metrics_new(void)
{
    struct gw_metrics *m = calloc(1, sizeof(*m));
    size_t mcap = 0, kcap = 0;
    struct timeval tv;

    if (m == NULL)
        return NULL;
    if (pthread_mutex_init(&m->lock, NULL) != 0) {
        free(m);
        return NULL;
    }
    if (names_init(&m->models) < 0 || names_init(&m->backends) < 0 ||
        names_init(&m->keys) < 0 || grow_slots(m, &mcap, &kcap) < 0 ||
        (m->series = calloc(SERIES_MIN, sizeof(*m->series))) == NULL) {
        gw_metrics_free(m);
        return NULL;
    }
    m->series_cap = SERIES_MIN;
    m->last_reload_ok = 1; /* the config it started with */
    memcpy(m->metrics_path, "/metrics", sizeof("/metrics"));
    gettimeofday(&tv, NULL);
    m->start_time = (double)tv.tv_sec + (double)(tv.tv_usec / 10000) / 100.0;
    return m;
}

void gw_metrics_free(struct gw_metrics *m)
{
    if (m == NULL)
        return;
    gw_http_server_free(m->admin);
    names_release(&m->models);
    names_release(&m->backends);
    names_release(&m->keys);
    free(m->series);
    free(m->ttft);
    free(m->tokens);
    free(m->rejects);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

/* gw_metrics_attach with m's lock held. */
static int attach_locked(struct gw_metrics *m, const struct gw_config *c)
{
    size_t i, j, mcap = m->models.cap, kcap = m->keys.cap;
    int rc = 0;

    /* a slot stays live only while the current config names it; slots 0
     * and 1 always are */
    memset(m->models.live + 2, 0, m->models.n - 2);
    memset(m->backends.live + 2, 0, m->backends.n - 2);
    memset(m->keys.live + 2, 0, m->keys.n - 2);
    for (i = 0; i < c->n_model_names && rc == 0; i++)
        rc = names_mark(&m->models, c->model_names[i]);
    for (i = 0; i < c->n_backends && rc == 0; i++) {
        rc = names_mark(&m->backends, c->backends[i].name);
        /* models a backend lists (a backend's models are the config's
         * model names; fallbacks name them too) */
        for (j = 0; j < c->backends[i].n_models && rc == 0; j++)
            rc = names_mark(&m->models, c->backends[i].models[j]);
    }
    for (i = 0; i < c->n_keys && rc == 0; i++)
        rc = names_mark(&m->keys, c->keys[i].name);
    if (grow_slots(m, &mcap, &kcap) < 0 || series_grow(m) < 0)
        rc = -1;
    if (c->metrics.path)
        gw_copy(m->metrics_path, sizeof(m->metrics_path), c->metrics.path);
    /* the listener starts with the process (or the process stops), and a
     * new metrics.listen takes a restart: every worker knows from its
     * first config, before worker 0 starts the listener */
    if (!m->attached)
        __atomic_store_n(&m->listen_at_start,
                         c->metrics.enabled && c->metrics.listen_host != NULL,
                         __ATOMIC_RELAXED);
    m->attached = 1;
    return rc;
}

int gw_metrics_attach(struct gw_metrics *m, const struct gw_config *c)
{
    int rc;

    pthread_mutex_lock(&m->lock);
    rc = attach_locked(m, c);
    pthread_mutex_unlock(&m->lock);
    return rc;
}

void gw_metrics_reload_begin(struct gw_metrics *m)
{
    pthread_mutex_lock(&m->lock);
    m->reloads++;
    m->last_reload_ok = 0;
    pthread_mutex_unlock(&m->lock);
}

void gw_metrics_reload(struct gw_metrics *m, const struct gw_config *c)
{
    char addr[sizeof(m->admin_addr)];
    int rc;

    pthread_mutex_lock(&m->lock);
    m->reloads_ok++;
    m->last_reload_ok = 1;
    rc = attach_locked(m, c);
    pthread_mutex_unlock(&m->lock);
    if (rc < 0)
        gw_log_warn("reload: out of memory: metrics count the names new in "
                    "this configuration as \"other\"");
    addr[0] = '\0';
    if (c->metrics.enabled && c->metrics.listen_host)
        snprintf(addr, sizeof(addr), "%s:%d", c->metrics.listen_host,
                 c->metrics.listen_port);
    if (strcmp(addr, m->admin_addr) != 0)
        gw_log_warn("reload: a new metrics.listen takes a restart; metrics "
                    "are still served on %s", m->admin_addr[0]
                                                  ? m->admin_addr
                                                  : "the main listener");
}

/* -------------------------------------------------------- request path */

void gw_metrics_begin(struct gw_metrics *m)
{
    /* only the owner writes it: a plain add, stored atomically for the
     * scrapes of other threads (no locked instruction) */
    if (m)
        __atomic_store_n(&m->inflight, m->inflight + 1, __ATOMIC_RELAXED);
}

static size_t route_of(const struct gw_metrics *m, const char *path)
{
    if (path == NULL)
        return ROUTE_OTHER;
    for (size_t i = 0; i < N_FIXED_ROUTES; i++)
        if (strcmp(path, route_names[i]) == 0)
            return i;
    return strcmp(path, m->metrics_path) == 0 ? ROUTE_METRICS : ROUTE_OTHER;
}

void gw_metrics_request(struct gw_metrics *m, const struct gw_http_req *req,
                        const struct gw_reqlog *rl, int64_t end_us)
{
    size_t route, model, backend, cls, key;
    int hit = 0;

    if (m == NULL)
        return;
    __atomic_store_n(&m->inflight, m->inflight - 1, __ATOMIC_RELAXED);
    pthread_mutex_lock(&m->lock);
    route = route_of(m, req->path);
    model = names_find(&m->models, rl->model);
    backend = names_find(&m->backends, rl->backend);
    cls = rl->status >= 100 && rl->status < 600 ? (size_t)rl->status / 100 - 1
                                                : 4;
    series_add(m, series_key(model, backend, route, cls));
    gw_metrics_observe(&m->duration[route], (long)(end_us - req->start_us));
    if (req->cache) {
        for (size_t i = 0; i < N_CACHE; i++)
            if (strcmp(req->cache, cache_results[i]) == 0)
                m->cache[i]++;
        hit = strcmp(req->cache, "hit") == 0;
    }
    /* a stream's first token came with its head (a cancelled one too) */
    if (rl->stream && rl->ttfb_us >= 0 &&
        (rl->status < 400 || rl->status == 499))
        gw_metrics_observe(&m->ttft[model], rl->ttfb_us);
    /* tokens the backends processed: a cache hit cost none */
    if (!hit && (rl->usage.prompt_tokens > 0 ||
                 rl->usage.completion_tokens > 0)) {
        key = names_find(&m->keys, rl->key);
        if (rl->usage.prompt_tokens > 0)
            m->tokens[key][0] += (uint64_t)rl->usage.prompt_tokens;
        if (rl->usage.completion_tokens > 0)
            m->tokens[key][1] += (uint64_t)rl->usage.completion_tokens;
    }
    if (rl->status == 429 && rl->error) {
        for (size_t i = 0; i < N_REASONS; i++)
            if (strcmp(rl->error, reject_codes[i]) == 0) {
                m->rejects[names_find(&m->keys, rl->key)][i]++;
                break;
            }
    }
    pthread_mutex_unlock(&m->lock);
}

/* ---------------------------------------------------- sums at scrape */

#define SLOT_DROP UINT32_MAX /* a dead name with no room in the sum */

/* Adds src's names to a sum's table dst, by name: map[i] is the slot of
 * src's slot i in dst. A name is live in the sum when it is live in any
 * worker (they differ only while a reload reaches them one by one). -1
 * on out of memory. */
static int names_merge(struct names *dst, const struct names *src,
                       uint32_t *map)
{
    map[SLOT_NONE] = SLOT_NONE;
    map[SLOT_OTHER] = SLOT_OTHER;
    for (size_t i = 2; i < src->n; i++) {
        size_t s = names_find(dst, src->v[i]);
        if (s == SLOT_OTHER) {
            long n = names_add(dst, src->v[i]);
            if (n < 0)
                return -1;
            if (n == SLOT_OTHER && !src->live[i]) {
                map[i] = SLOT_DROP; /* never in the output anyway */
                continue;
            }
            s = (size_t)n;
            if (s != SLOT_OTHER)
                dst->live[s] = 0; /* names_add made it live */
        }
        dst->live[s] |= src->live[i];
        map[i] = (uint32_t)s;
    }
    return 0;
}

static void hist_add(struct gw_metrics_hist *dst,
                     const struct gw_metrics_hist *src)
{
    for (int i = 0; i <= GW_METRICS_BUCKETS; i++)
        dst->b[i] += src->b[i];
    dst->sum_us += src->sum_us;
}

/* Adds src's series to the sum's, remapped by name. src's table is walked
 * from an entry after an empty one: linear probing then puts every series
 * where src has it, so a sum of one object has its table's layout (and
 * writes the series in the same order). */
static int series_merge(struct gw_metrics *dst, const struct gw_metrics *src,
                        const uint32_t *mm, const uint32_t *bm)
{
    size_t cap = src->series_cap, start = 0;

    if (dst->series_cap < cap && series_rehash(dst, cap) < 0)
        return -1;
    while (src->series[start].key) /* at most 3/4 full: one is empty */
        start++;
    for (size_t j = 1; j <= cap; j++) {
        const struct series *e = &src->series[(start + j) & (cap - 1)];
        if (!e->key)
            continue;
        uint64_t k = e->key - 1;
        uint32_t model = mm[k >> 40], backend = bm[(k >> 24) & 0xffff];
        if (model == SLOT_DROP || backend == SLOT_DROP)
            continue;
        if (series_put(dst, series_key(model, backend,
                                       (size_t)(k >> 8) & 0xffff,
                                       (size_t)k & 0xff),
                       e->v) < 0)
            return -1;
    }
    dst->overflow += src->overflow;
    return 0;
}

/* Adds src (locked by the caller) into the sum dst. map has room for
 * 3 * MAX_NAMES slots. -1 on out of memory. */
static int merge(struct gw_metrics *dst, const struct gw_metrics *src,
                 uint32_t *map)
{
    uint32_t *mm = map, *bm = map + MAX_NAMES, *km = map + 2 * MAX_NAMES;
    size_t i, j, mcap = dst->models.cap, kcap = dst->keys.cap;

    if (names_merge(&dst->models, &src->models, mm) < 0 ||
        names_merge(&dst->backends, &src->backends, bm) < 0 ||
        names_merge(&dst->keys, &src->keys, km) < 0 ||
        grow_slots(dst, &mcap, &kcap) < 0 ||
        series_merge(dst, src, mm, bm) < 0)
        return -1;
    for (i = 0; i < N_ROUTES; i++)
        hist_add(&dst->duration[i], &src->duration[i]);
    for (i = 0; i < src->models.n; i++)
        if (mm[i] != SLOT_DROP)
            hist_add(&dst->ttft[mm[i]], &src->ttft[i]);
    for (i = 0; i < src->keys.n; i++) {
        if (km[i] == SLOT_DROP)
            continue;
        for (j = 0; j < 2; j++)
            dst->tokens[km[i]][j] += src->tokens[i][j];
        for (j = 0; j < N_REASONS; j++)
            dst->rejects[km[i]][j] += src->rejects[i][j];
    }
    for (i = 0; i < N_CACHE; i++)
        dst->cache[i] += src->cache[i];
    return 0;
}

/* -------------------------------------------------------------- output */

#define ADD(b, lit) evbuffer_add((b), (lit), sizeof(lit) - 1)

static void family(struct evbuffer *out, const char *name, const char *type,
                   const char *help)
{
    evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help,
                        name, type);
}

void gw_metrics_escape(struct evbuffer *out, const char *s)
{
    const char *run = s;

    for (; *s; s++) {
        const char *rep = *s == '\\' ? "\\\\"
                        : *s == '"'  ? "\\\""
                        : *s == '\n' ? "\\n"
                                     : NULL;
        if (rep == NULL)
            continue;
        evbuffer_add(out, run, (size_t)(s - run));
        evbuffer_add(out, rep, 2);
        run = s + 1;
    }
    evbuffer_add(out, run, (size_t)(s - run));
}

/* name="value" (escaped), preceded by a comma unless first. */
static void label(struct evbuffer *out, int first, const char *name,
                  const char *value)
{
    if (!first)
        ADD(out, ",");
    evbuffer_add(out, name, strlen(name));
    ADD(out, "=\"");
    gw_metrics_escape(out, value);
    ADD(out, "\"");
}

static void value_u64(struct evbuffer *out, uint64_t v)
{
    evbuffer_add_printf(out, " %" PRIu64 "\n", v);
}

/* A sum of microseconds in seconds, exactly. */
static void value_seconds(struct evbuffer *out, uint64_t us)
{
    evbuffer_add_printf(out, " %" PRIu64 ".%06" PRIu64 "\n", us / 1000000,
                        us % 1000000);
}

/* One histogram's series; labels is the text inside the braces before le
 * ("" for none). */
static void histogram(struct evbuffer *out, const char *name,
                      const char *labels, const struct gw_metrics_hist *h)
{
    uint64_t cum = 0;
    const char *sep = *labels ? "," : "";

    for (int i = 0; i <= GW_METRICS_BUCKETS; i++) {
        cum += h->b[i];
        evbuffer_add_printf(out, "%s_bucket{%s%sle=\"%s\"}", name, labels,
                            sep, i < GW_METRICS_BUCKETS ? bucket_les[i]
                                                        : "+Inf");
        value_u64(out, cum);
    }
    evbuffer_add_printf(out, "%s_sum{%s}", name, labels);
    value_seconds(out, h->sum_us);
    evbuffer_add_printf(out, "%s_count{%s}", name, labels);
    value_u64(out, cum);
}

static uint64_t hist_count(const struct gw_metrics_hist *h)
{
    uint64_t n = 0;

    for (int i = 0; i <= GW_METRICS_BUCKETS; i++)
        n += h->b[i];
    return n;
}

/* The label text name="value" in a buffer of its own (for histograms). */
static int label_text(struct evbuffer *tmp, const char *name,
                      const char *value, char *out, size_t cap)
{
    size_t n;

    evbuffer_drain(tmp, evbuffer_get_length(tmp));
    label(tmp, 1, name, value);
    n = evbuffer_get_length(tmp);
    if (n >= cap)
        return -1;
    evbuffer_copyout(tmp, out, n);
    out[n] = '\0';
    return 0;
}

static const char *route_label(const struct gw_metrics *m, size_t r)
{
    return r < N_FIXED_ROUTES ? route_names[r]
           : r == ROUTE_METRICS ? m->metrics_path
                                : "other";
}

static void write_requests(const struct gw_metrics *m, struct evbuffer *out)
{
    family(out, "promptgate_requests_total", "counter",
           "Requests answered, by route, model, backend and status class.");
    for (size_t i = 0; i < m->series_cap; i++) {
        const struct series *s = &m->series[i];
        if (!s->key)
            continue;
        uint64_t k = s->key - 1;
        size_t model = (size_t)(k >> 40), backend = (size_t)(k >> 24) & 0xffff;
        size_t route = (size_t)(k >> 8) & 0xffff, cls = (size_t)k & 0xff;
        if (!m->models.live[model] || !m->backends.live[backend])
            continue;
        ADD(out, "promptgate_requests_total{");
        label(out, 1, "route", route_label(m, route));
        label(out, 0, "model", m->models.v[model]);
        label(out, 0, "backend", m->backends.v[backend]);
        label(out, 0, "status_class", class_names[cls]);
        ADD(out, "}");
        value_u64(out, s->v);
    }
    family(out, "promptgate_metrics_overflow_total", "counter",
           "Requests not counted in promptgate_requests_total because its "
           "series table was full between two scrapes.");
    ADD(out, "promptgate_metrics_overflow_total");
    value_u64(out, m->overflow);
}

static void write_histograms(const struct gw_metrics *m, struct evbuffer *out,
                             struct evbuffer *tmp)
{
    char lab[1024];
    size_t i;

    family(out, "promptgate_request_duration_seconds", "histogram",
           "Time from the request's first byte to its end (the last byte "
           "of a stream), by route.");
    for (i = 0; i < N_ROUTES; i++) {
        if (hist_count(&m->duration[i]) == 0 ||
            label_text(tmp, "route", route_label(m, i), lab, sizeof(lab)) < 0)
            continue;
        histogram(out, "promptgate_request_duration_seconds", lab,
                  &m->duration[i]);
    }
    family(out, "promptgate_time_to_first_token_seconds", "histogram",
           "Streams: time from the request's first byte to the backend's "
           "response head, by model.");
    for (i = 0; i < m->models.n; i++) {
        if (!m->models.live[i] || hist_count(&m->ttft[i]) == 0 ||
            label_text(tmp, "model", m->models.v[i], lab, sizeof(lab)) < 0)
            continue;
        histogram(out, "promptgate_time_to_first_token_seconds", lab,
                  &m->ttft[i]);
    }
}

static void write_keys(const struct gw_metrics *m, struct evbuffer *out)
{
    static const char *const kinds[] = {"prompt", "completion"};
    size_t i, j;

    family(out, "promptgate_tokens_total", "counter",
           "Tokens the backends reported (cache hits excluded), by kind and "
           "virtual key.");
    for (i = 0; i < m->keys.n; i++) {
        int always = i >= 2 && m->keys.live[i];
        for (j = 0; j < 2; j++) {
            if (!m->keys.live[i] || (!always && m->tokens[i][j] == 0))
                continue;
            ADD(out, "promptgate_tokens_total{");
            label(out, 1, "kind", kinds[j]);
            label(out, 0, "key", m->keys.v[i]);
            ADD(out, "}");
            value_u64(out, m->tokens[i][j]);
        }
    }
    family(out, "promptgate_ratelimit_rejections_total", "counter",
           "Requests refused with 429 by the gateway's rate limits, by key "
           "and reason.");
    for (i = 0; i < m->keys.n; i++) {
        for (j = 0; j < N_REASONS; j++) {
            if (!m->keys.live[i] || m->rejects[i][j] == 0)
                continue;
            ADD(out, "promptgate_ratelimit_rejections_total{");
            label(out, 1, "key", m->keys.v[i]);
            label(out, 0, "reason", reject_reasons[j]);
            ADD(out, "}");
            value_u64(out, m->rejects[i][j]);
        }
    }
}

/* 1 when an earlier backend of c has the same state (a repeated name):
 * its series are written once. */
static int seen_before(const struct gw_config *c, size_t i)
{
    for (size_t k = 0; k < i; k++)
        if (c->backends[k].state == c->backends[i].state)
            return 1;
    return 0;
}

static void write_backends(const struct gw_config *c, int64_t now_us,
                           struct evbuffer *out, struct evbuffer *tmp)
{
    static const char *const results[] = {"ok", "error"};
    char lab[1024];
    size_t i, j;
    /* one copy of each state, taken under its lock: workers move them */
    struct gw_backend_snap *snaps;

    snaps = c && c->n_backends ? calloc(c->n_backends, sizeof(*snaps)) : NULL;
    if (c && c->n_backends && snaps == NULL)
        return; /* out of memory: the backend families are left out */
    for (i = 0; snaps && i < c->n_backends; i++)
        if (c->backends[i].state != NULL)
            gw_states_snap(&c->backends[i], now_us, &snaps[i]);
#define EACH_BACKEND(b, s)                                                 \
    for (i = 0; snaps && i < c->n_backends; i++)                           \
        if (((b) = &c->backends[i])->state != NULL &&                      \
            ((s) = &snaps[i]) && !seen_before(c, i))
    const struct gw_backend *b;
    const struct gw_backend_snap *s;

    family(out, "promptgate_backend_up", "gauge",
           "1 when the backend's breaker lets requests through now.");
    EACH_BACKEND(b, s) {
        ADD(out, "promptgate_backend_up{");
        label(out, 1, "backend", b->name);
        ADD(out, "}");
        value_u64(out, (uint64_t)s->usable);
    }
    family(out, "promptgate_breaker_state", "gauge",
           "The backend's circuit breaker state: 1 for the current state, "
           "0 for the others.");
    EACH_BACKEND(b, s) {
        for (j = 0; j < 3; j++) {
            ADD(out, "promptgate_breaker_state{");
            label(out, 1, "backend", b->name);
            label(out, 0, "state", gw_breaker_state_name(j));
            ADD(out, "}");
            value_u64(out, s->state == (enum gw_breaker_state)j);
        }
    }
    family(out, "promptgate_breaker_transitions_total", "counter",
           "Breaker state changes, by backend and the state entered.");
    EACH_BACKEND(b, s) {
        for (j = 0; j < 3; j++) {
            ADD(out, "promptgate_breaker_transitions_total{");
            label(out, 1, "backend", b->name);
            label(out, 0, "to", gw_breaker_state_name(j));
            ADD(out, "}");
            value_u64(out, s->transitions[j]);
        }
    }
    family(out, "promptgate_upstream_attempts_total", "counter",
           "Upstream attempts that ended with an outcome (ok, or error: "
           "5xx, 429, connect error, timeout, broken stream), by backend.");
    EACH_BACKEND(b, s) {
        for (j = 0; j < 2; j++) {
            ADD(out, "promptgate_upstream_attempts_total{");
            label(out, 1, "backend", b->name);
            label(out, 0, "result", results[j]);
            ADD(out, "}");
            value_u64(out, j == 0 ? s->attempts - s->failures : s->failures);
        }
    }
    family(out, "promptgate_upstream_retries_total", "counter",
           "Attempts that retried a failed one, by the backend retried on.");
    EACH_BACKEND(b, s) {
        ADD(out, "promptgate_upstream_retries_total{");
        label(out, 1, "backend", b->name);
        ADD(out, "}");
        value_u64(out, s->retries_to);
    }
    family(out, "promptgate_upstream_inflight", "gauge",
           "Upstream attempts in flight, by backend.");
    EACH_BACKEND(b, s) {
        ADD(out, "promptgate_upstream_inflight{");
        label(out, 1, "backend", b->name);
        ADD(out, "}");
        value_u64(out, s->inflight > 0 ? (uint64_t)s->inflight : 0);
    }
    family(out, "promptgate_upstream_head_duration_seconds", "histogram",
           "Answered attempts: time from sending the attempt to the "
           "backend's response head, by backend.");
    EACH_BACKEND(b, s) {
        if (label_text(tmp, "backend", b->name, lab, sizeof(lab)) == 0)
            histogram(out, "promptgate_upstream_head_duration_seconds", lab,
                      &s->head);
    }
#undef EACH_BACKEND
    free(snaps);
}

static void gauge(struct evbuffer *out, const char *name, const char *help,
                  long v)
{
    family(out, name, "gauge", help);
    evbuffer_add_printf(out, "%s %ld\n", name, v);
}

static void counter(struct evbuffer *out, const char *name, const char *help,
                    const char *labels, uint64_t v, int with_family)
{
    if (with_family)
        family(out, name, "counter", help);
    evbuffer_add_printf(out, "%s%s%s%s", name, *labels ? "{" : "", labels,
                        *labels ? "}" : "");
    value_u64(out, v);
}

static void write_process(const struct gw_metrics *m, struct evbuffer *out)
{
    struct rusage ru;
    struct rlimit rl;
    FILE *f;
    DIR *d;
    long pages = 0, rss = 0, fds = 0;

    if (getrusage(RUSAGE_SELF, &ru) == 0) {
        uint64_t us = (uint64_t)ru.ru_utime.tv_sec * 1000000 +
                      (uint64_t)ru.ru_utime.tv_usec +
                      (uint64_t)ru.ru_stime.tv_sec * 1000000 +
                      (uint64_t)ru.ru_stime.tv_usec;
        family(out, "process_cpu_seconds_total", "counter",
               "Total user and system CPU time spent in seconds.");
        ADD(out, "process_cpu_seconds_total");
        value_seconds(out, us);
    }
    if ((f = fopen("/proc/self/statm", "r")) != NULL) {
        if (fscanf(f, "%ld %ld", &pages, &rss) == 2)
            gauge(out, "process_resident_memory_bytes",
                  "Resident memory size in bytes.",
                  rss * sysconf(_SC_PAGESIZE));
        fclose(f);
    }
    if ((d = opendir("/proc/self/fd")) != NULL) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL)
            fds += e->d_name[0] != '.';
        closedir(d);
        gauge(out, "process_open_fds", "Number of open file descriptors.",
              fds - 1); /* the directory's own */
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
        gauge(out, "process_max_fds",
              "Maximum number of open file descriptors.", (long)rl.rlim_cur);
    family(out, "process_start_time_seconds", "gauge",
           "Start time of the process since unix epoch in seconds.");
    evbuffer_add_printf(out, "process_start_time_seconds %.2f\n",
                        m->start_time);
}

/* Writes a scrape's sum m (private: no lock). */
static int write_sum(const struct gw_metrics *m, const struct gw_config *c,
                     int64_t now_us, const struct gw_metrics_extra *x,
                     struct evbuffer *out)
{
    struct evbuffer *tmp = evbuffer_new();
    char lab[64];
    size_t i;

    if (tmp == NULL)
        return -1;
    write_requests(m, out);
    write_histograms(m, out, tmp);
    gauge(out, "promptgate_inflight_requests",
          "Requests being answered (this scrape included).",
          m->inflight > 0 ? m->inflight : 0);
    write_keys(m, out);
    family(out, "promptgate_cache_requests_total", "counter",
           "Cache lookups of inference requests, by result.");
    for (i = 0; i < N_CACHE; i++) {
        snprintf(lab, sizeof(lab), "result=\"%s\"", cache_results[i]);
        counter(out, "promptgate_cache_requests_total", "", lab, m->cache[i],
                0);
    }
    write_backends(c, now_us, out, tmp);
    if (x) {
        gauge(out, "promptgate_upstream_calls_inflight",
              "Upstream calls in flight (each may make several attempts).",
              x->upstream_calls);
        gauge(out, "promptgate_retries_inflight",
              "Upstream calls in flight on a retry: the retry budget allows "
              "max(3, calls in flight / 5).", x->retries_inflight);
        counter(out, "promptgate_retries_refused_total",
                "Failed attempts not retried because the retry budget was "
                "spent (the answer was the failure).", "",
                x->retries_refused, 1);
        family(out, "promptgate_redis_errors_total", "counter",
               "Redis commands that failed or timed out, by use.");
        counter(out, "promptgate_redis_errors_total", "",
                "use=\"ratelimit\"", x->redis_errors_ratelimit, 0);
        if (x->have_cache) {
            counter(out, "promptgate_redis_errors_total", "", "use=\"cache\"",
                    x->redis_errors_cache, 0);
        }
        /* 0 without a registry: dashboards need not guess */
        counter(out, "promptgate_exposure_written_total",
                "Exposure records written to the exposure log.", "",
                x->exposure_written, 1);
        counter(out, "promptgate_exposure_dropped_total",
                "Exposure records dropped: the writer's queue was full.", "",
                x->exposure_dropped, 1);
        counter(out, "promptgate_exposure_failed_total",
                "Exposure records the writer could not write.", "",
                x->exposure_failed, 1);
        counter(out, "promptgate_registry_reload_errors_total",
                "Registry snapshot loads that failed (the last good one "
                "kept serving).", "", x->registry_reload_errors, 1);
    }
    family(out, "promptgate_config_reloads_total", "counter",
           "SIGHUP reloads of the configuration, by result (error: refused, "
           "the previous configuration kept serving).");
    counter(out, "promptgate_config_reloads_total", "", "result=\"ok\"",
            m->reloads_ok, 0);
    counter(out, "promptgate_config_reloads_total", "", "result=\"error\"",
            m->reloads - m->reloads_ok, 0);
    gauge(out, "promptgate_config_last_reload_successful",
          "1 when the last reload (or the start) applied its configuration.",
          m->last_reload_ok);
    family(out, "promptgate_build_info", "gauge",
           "Always 1: the version of promptgate as a label.");
    ADD(out, "promptgate_build_info{version=\"" GW_VERSION "\"} 1\n");
    write_process(m, out);
    evbuffer_free(tmp);
    return 0;
}

int gw_metrics_write_sum(struct gw_metrics *const *ms, size_t n,
                         const struct gw_config *c, int64_t now_us,
                         const struct gw_metrics_extra *x,
                         struct evbuffer *out)
{
    struct gw_metrics *sum = gw_metrics_new();
    uint32_t *map = malloc(3 * MAX_NAMES * sizeof(*map));
    int rc = sum && map ? 0 : -1;

    for (size_t k = 0; k < n && rc == 0; k++) {
        struct gw_metrics *m = ms[k];
        pthread_mutex_lock(&m->lock);
        (void)series_grow(m); /* room for the series of the next interval */
        rc = merge(sum, m, map);
        if (k == 0) { /* reloads and the listener are worker 0's */
            memcpy(sum->metrics_path, m->metrics_path,
                   sizeof(sum->metrics_path));
            sum->start_time = m->start_time;
            sum->reloads = m->reloads;
            sum->reloads_ok = m->reloads_ok;
            sum->last_reload_ok = m->last_reload_ok;
        }
        pthread_mutex_unlock(&m->lock);
        sum->inflight += __atomic_load_n(&m->inflight, __ATOMIC_RELAXED);
    }
    if (rc == 0)
        rc = write_sum(sum, c, now_us, x, out);
    free(map);
    gw_metrics_free(sum);
    return rc;
}

int gw_metrics_write(struct gw_metrics *m, const struct gw_config *c,
                     int64_t now_us, const struct gw_metrics_extra *x,
                     struct evbuffer *out)
{
    return gw_metrics_write_sum(&m, 1, c, now_us, x, out);
}

/* ------------------------------------------------------------ scrapes */

/* Adds what worker w keeps outside its metrics to x. Another worker's
 * fields are read while it runs, so only its counters, with atomic loads:
 * never its Redis clients, which a reload may free (each worker's clients
 * add their errors to its rl_errors, which outlives them). Its cache is
 * created at most once and kept until exit. */
static void add_worker_extra(struct gw_metrics_extra *x,
                             const struct gw_gateway *w)
{
    const struct gw_cache *cache = __atomic_load_n(&w->cache,
                                                   __ATOMIC_ACQUIRE);

    x->upstream_calls += (long)__atomic_load_n(&w->calls, __ATOMIC_RELAXED);
    x->retries_inflight +=
        (long)__atomic_load_n(&w->retries, __ATOMIC_RELAXED);
    x->retries_refused +=
        __atomic_load_n(&w->retries_refused, __ATOMIC_RELAXED);
    x->redis_errors_ratelimit +=
        __atomic_load_n(&w->rl_errors, __ATOMIC_RELAXED);
    if (cache) {
        x->have_cache = 1;
        x->redis_errors_cache += gw_cache_errors(cache);
    }
}

void gw_metrics_handle(struct gw_gateway *gw, struct gw_http_req *req,
                       struct gw_reqlog *rl)
{
    const struct gw_config *c = gw->config;
    const char *token = c->metrics.bearer_token ? c->metrics.bearer_token
                                                : c->admin_key;
    size_t n = gw->workers && gw->n_workers ? gw->n_workers : 1;
    struct gw_metrics_extra x;
    struct gw_metrics **ms;
    struct evbuffer *b;
    int rc;

    if (strcmp(req->method, "GET") != 0 && strcmp(req->method, "HEAD") != 0) {
        gw_http_add_header(req, "Allow", "GET");
        gw_proxy_error(gw, req, rl, 405, "method_not_allowed",
                       "the metrics path answers GET only");
        return;
    }
    if (token) {
        const char *h = gw_http_req_header(req, "authorization");
        if (h == NULL || strncasecmp(h, "Bearer ", 7) != 0 ||
            !gw_admin_key_ok(token, h + 7)) {
            gw_http_add_header(req, "WWW-Authenticate", "Bearer");
            gw_proxy_error(gw, req, rl, 401, "invalid_metrics_token",
                           c->metrics.bearer_token
                               ? "send metrics.bearer_token as "
                                 "'Authorization: Bearer TOKEN'"
                               : "send the admin key as 'Authorization: "
                                 "Bearer KEY' (or set metrics.bearer_token)");
            return;
        }
    }
    memset(&x, 0, sizeof(x));
    if ((ms = calloc(n, sizeof(*ms))) == NULL) {
        gw_proxy_error(gw, req, rl, 500, "out_of_memory", "out of memory");
        return;
    }
    /* worker 0 first: its object holds the reloads */
    for (size_t i = 0; i < n; i++) {
        const struct gw_gateway *w = gw->workers ? gw->workers[i] : gw;
        ms[i] = w->metrics;
        add_worker_extra(&x, w);
    }
    if (gw->prompts) { /* shared by the workers: once */
        struct gw_exposure_stats st;
        gw_prompts_stats(gw->prompts, &st, &x.registry_reload_errors);
        x.exposure_written = st.written;
        x.exposure_dropped = st.dropped;
        x.exposure_failed = st.failed;
    }
    b = evbuffer_new();
    rc = b ? gw_metrics_write_sum(ms, n, c, gw_now_us(), &x, b) : -1;
    free(ms);
    if (rc < 0) {
        if (b)
            evbuffer_free(b);
        gw_proxy_error(gw, req, rl, 500, "out_of_memory", "out of memory");
        return;
    }
    gw_http_reply_buffer(req, 200, "text/plain; version=0.0.4; charset=utf-8",
                         b);
    evbuffer_free(b);
    rl->status = 200;
    gw_proxy_log(gw, req, rl);
}

int gw_metrics_serves(const struct gw_metrics *m, const struct gw_config *c,
                      const char *path)
{
    return c->metrics.enabled &&
           !__atomic_load_n(&m->listen_at_start, __ATOMIC_RELAXED) &&
           strcmp(path, c->metrics.path) == 0;
}

/* The admin listener: the metrics path and nothing else. */
static void admin_handle(struct gw_http_req *req, void *arg)
{
    struct gw_gateway *gw = arg;
    struct gw_reqlog rl;
    char id[GW_FMT_NUM];
    uint64_t x = gw->rng;

    if (!gw->config->metrics.enabled ||
        strcmp(req->path, gw->config->metrics.path) != 0) {
        static const char msg[] = "not found: this listener serves the "
                                  "metrics path only\n";
        gw_http_reply(req, 404, "text/plain", msg, sizeof(msg) - 1);
        return;
    }
    gw_metrics_begin(gw->metrics);
    x ^= x >> 12, x ^= x << 25, x ^= x >> 27;
    gw->rng = x;
    gw_fmt_hex64(id, x * 0x2545F4914F6CDD1DULL);
    memset(&rl, 0, sizeof(rl));
    rl.request_id = id;
    rl.ttfb_us = -1;
    gw_usage_init(&rl.usage);
    gw_metrics_handle(gw, req, &rl);
}

int gw_metrics_listen(struct gw_gateway *gw, char *err, size_t errlen)
{
    const struct gw_config *c = gw->config;
    struct gw_metrics *m = gw->metrics;
    struct gw_http_limits l;

    if (!c->metrics.enabled || c->metrics.listen_host == NULL)
        return 0;
    if ((m->admin = gw_http_server_new(gw->base, admin_handle, gw)) == NULL) {
        snprintf(err, errlen, "cannot start the metrics listener: out of "
                              "memory");
        return -1;
    }
    l.max_header_bytes = c->limits.max_header_bytes;
    l.max_body_bytes = 4096; /* a scrape has no body */
    l.header_timeout_ms = c->limits.header_timeout_ms;
    l.body_timeout_ms = c->limits.body_timeout_ms;
    l.idle_timeout_ms = c->limits.idle_timeout_ms;
    gw_http_server_set_limits(m->admin, &l);
    if (gw_http_server_listen(m->admin, c->metrics.listen_host,
                              c->metrics.listen_port, err, errlen) < 0)
        return -1;
    snprintf(m->admin_addr, sizeof(m->admin_addr), "%s:%d",
             c->metrics.listen_host, c->metrics.listen_port);
    return 0;
}
