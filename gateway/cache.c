/*
 * cache.c - the response cache: keys, entries, the memory LRU, the Redis
 * backend, request coalescing, hit replay, purge.
 *
 * Key. SHA-256 over a version tag, the upstream path, the key's cache
 * namespace, the resolved model, the resolved prompt version (the
 * x-prompt-version the prompt stage set) and the canonical request: the
 * body parsed by jansson, without "user", "stream", "stream_options" and
 * "metadata", with sorted keys and no whitespace: canon.c writes it in one
 * pass without a tree (bodies up to CANON_MAX), jansson above that (its
 * sort does not grow with nesting); the two forms are tagged apart. Only deterministic requests are
 * cached unless the model says "all": temperature 0, or no sampling
 * parameter at all, or n 1 with a seed.
 *
 * Entry. One byte string, the same in memory and in Redis:
 *   "PGC1" created_ms:8 prompt:4 completion:4 total:4 json_len:4 sse_len:4
 *   usage_at:4, JSON body, then SSE events (without data: [DONE])
 * usage_at is where the usage-only event (choices []) starts in the
 * events, sse_len when there is none: a stream hit leaves it out unless
 * the client asked for stream usage, as upstream would.
 * all integers big-endian. An entry holds the form the answer came in:
 * a JSON body (sse_len 0) or a stream's events (json_len 0). Storing is a
 * copy, never a parse; a hit in the same form is a copy too. A hit in the
 * other form converts (answer_hit): a JSON body is rendered as SSE
 * chunks, a stream is assembled into the JSON body a non-stream request
 * gets. A stream that cannot be assembled (tool-call deltas, logprobs)
 * serves stream hits only (a non-stream request misses and stores its
 * JSON, which then serves both); embeddings have only the JSON form.
 *
 * Coalescing. Every miss that will be stored leads a "flight" keyed by its
 * digest until its call ends. An identical request arriving meanwhile
 * waits on the flight (at most COALESCE_MS) instead of going upstream:
 * when the leader stores, each waiter is answered from the new entry; when
 * the leader ends without storing (error, truncated stream, too big, client
 * gone), the waiters go upstream on their own.
 *
 * Invariants:
 *  1. Nothing is stored unless the call ended complete: a 2xx JSON body,
 *     or a 200 stream that ended with data: [DONE]; never over
 *     max_entry_bytes (counted on the upstream's answer).
 *  2. A lookup never waits on Redis longer than redis.timeout_ms: the
 *     timer makes it a miss (counted in errors). hiredis still owns the
 *     op until it answers or the connection drops (NULL reply), so an op
 *     is freed only when its callback has run or been cancelled AND Redis
 *     is done with it.
 *  3. A fill leads at most one flight and a flight has exactly one leader;
 *     the flight goes when its leader's fill goes.
 */
#include "gateway/cache.h"
#include "gateway/digest.h"
#include "gateway/prompt.h"
#include "gateway/canon.h"
#include "gateway/gateway.h"
#include "gateway/clock.h"
#include "gateway/http.h"
#include "gateway/log.h"
#include "gateway/pool.h"
#include "gateway/redisev.h"
#include "gateway/sse.h"

#include <event2/buffer.h>
#include <pthread.h>
#include <event2/event.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define HEAD_LEN 36
#define CANON_MAX (64u << 10) /* larger bodies: canonical by jansson */
#define COALESCE_MS 30000
#define MAX_CHOICES 128
#define REDIS_PREFIX "pg:c:"
#define REDIS_NS_PREFIX "pg:cn:"
#define NS_MAX 72
/* commands sent to Redis and not answered: past this a lookup is a miss
 * without asking and a store is dropped (counted in errors), so a Redis
 * that hangs cannot make hiredis queue without bound */
#define MAX_PENDING 4096

/* ------------------------------------------------------------ entries */

static void put32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24), p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8), p[3] = (unsigned char)v;
}

static uint32_t get32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
           (uint32_t)p[2] << 8 | p[3];
}

struct entry_view {
    int64_t created_ms;
    struct gw_usage usage;
    const char *json;
    size_t json_len;
    const char *sse;
    size_t sse_len;
    size_t usage_at;
};

static int entry_parse(const unsigned char *b, size_t len,
                       struct entry_view *v)
{
    if (len < HEAD_LEN || memcmp(b, "PGC1", 4) != 0)
        return -1;
    v->created_ms = (int64_t)((uint64_t)get32(b + 4) << 32 | get32(b + 8));
    v->usage.prompt_tokens = (int32_t)get32(b + 12);
    v->usage.completion_tokens = (int32_t)get32(b + 16);
    v->usage.total_tokens = (int32_t)get32(b + 20);
    v->json_len = get32(b + 24);
    v->sse_len = get32(b + 28);
    v->usage_at = get32(b + 32);
    if (v->json_len + v->sse_len == 0 ||
        HEAD_LEN + v->json_len + v->sse_len != len ||
        v->usage_at > v->sse_len)
        return -1;
    v->json = (const char *)b + HEAD_LEN;
    v->sse = v->json + v->json_len;
    return 0;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Where the last event starts when it is the usage-only chunk, else
 * len. */
static size_t usage_at(const char *sse, size_t len)
{
    size_t i;

    if (len < 4)
        return len;
    for (i = len - 2; i > 0; i--)
        if (sse[i - 1] == '\n' && sse[i] == '\n')
            break;
    i = i > 0 ? i + 1 : 0;
    if (memmem(sse + i, len - i, "\"choices\":[]", 12) &&
        memmem(sse + i, len - i, "\"usage\"", 7))
        return i;
    return len;
}

/* The entry of json and sse, malloc'd, or NULL. */
static unsigned char *entry_build(const char *json, size_t json_len,
                                  const char *sse, size_t sse_len,
                                  size_t *len)
{
    unsigned char *b;
    struct gw_usage u;
    uint64_t now = (uint64_t)wall_ms();

    if (json_len > UINT32_MAX || sse_len > UINT32_MAX)
        return NULL;
    *len = HEAD_LEN + json_len + sse_len;
    if ((b = malloc(*len)) == NULL)
        return NULL;
    gw_usage_init(&u);
    if (json_len)
        gw_usage_find(json, json_len, &u);
    else if (usage_at(sse, sse_len) < sse_len)
        gw_usage_find(sse + usage_at(sse, sse_len),
                      sse_len - usage_at(sse, sse_len), &u);
    memcpy(b, "PGC1", 4);
    put32(b + 4, (uint32_t)(now >> 32));
    put32(b + 8, (uint32_t)now);
    put32(b + 12, (uint32_t)(int32_t)u.prompt_tokens);
    put32(b + 16, (uint32_t)(int32_t)u.completion_tokens);
    put32(b + 20, (uint32_t)(int32_t)u.total_tokens);
    put32(b + 24, (uint32_t)json_len);
    put32(b + 28, (uint32_t)sse_len);
    put32(b + 32, (uint32_t)usage_at(sse, sse_len));
    if (json_len)
        memcpy(b + HEAD_LEN, json, json_len);
    if (sse_len)
        memcpy(b + HEAD_LEN + json_len, sse, sse_len);
    return b;
}

/* ------------------------------------------------------- memory LRU */

/* The memory store is shared by every worker: up to MEM_SHARDS shards by
 * a byte of the digest, each with its own mutex, table, LRU list and an
 * equal part of max_bytes. Fewer shards when the store is small: a
 * shard holds at least 4 entries of max_entry_bytes (a small store is one
 * exact LRU). A hit holds its shard's lock only to find the
 * entry and take a reference; the answer is copied from the entry with no
 * lock held, and the last reference frees it (the table holds one). */
#define MEM_SHARDS 16

struct mentry {
    struct mentry *hnext;       /* owned by the table: bucket chain */
    struct mentry *prev, *next; /* borrowed: LRU order, head newest */
    int refs;                   /* the table's + hits' in use (atomic) */
    unsigned char digest[32];
    char ns[NS_MAX];
    int64_t expires_ms;
    size_t len;
    unsigned char blob[]; /* the entry */
};

struct mem {
    pthread_mutex_t mu;
    struct mentry **buckets; /* owned: nb chains */
    size_t nb, n, bytes, max_bytes;
    struct mentry *head, *tail;
    unsigned long evictions;
} __attribute__((aligned(64)));

struct gw_memstore {
    struct mem shard[MEM_SHARDS];
    size_t n;                       /* shards in use, 1..MEM_SHARDS */
};

static size_t mentry_size(const struct mentry *e)
{
    return sizeof(*e) + e->len;
}

static size_t bucket_of(const unsigned char *digest, size_t nb)
{
    uint64_t h;
    memcpy(&h, digest, sizeof(h));
    return (size_t)(h & (nb - 1));
}

static struct mem *shard_of(struct gw_memstore *ms, const unsigned char *d)
{
    return &ms->shard[d[31] % ms->n];
}

static void mentry_unref(struct mentry *e)
{
    if (e && __atomic_sub_fetch(&e->refs, 1, __ATOMIC_ACQ_REL) == 0)
        free(e);
}

static void lru_unlink(struct mem *m, struct mentry *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        m->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        m->tail = e->prev;
    e->prev = e->next = NULL;
}

static void lru_push(struct mem *m, struct mentry *e)
{
    e->prev = NULL;
    e->next = m->head;
    if (m->head)
        m->head->prev = e;
    m->head = e;
    if (m->tail == NULL)
        m->tail = e;
}

/* Under m->mu. */
static void mem_remove(struct mem *m, struct mentry *e)
{
    struct mentry **pp = &m->buckets[bucket_of(e->digest, m->nb)];

    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    lru_unlink(m, e);
    m->n--;
    m->bytes -= mentry_size(e);
    mentry_unref(e);
}

/* Under m->mu: the live entry for digest, or NULL (an expired one goes). */
static struct mentry *mem_find(struct mem *m, const unsigned char *digest,
                               int64_t now)
{
    struct mentry *e = m->buckets[bucket_of(digest, m->nb)];

    while (e && memcmp(e->digest, digest, 32) != 0)
        e = e->hnext;
    if (e == NULL)
        return NULL;
    if (e->expires_ms <= now) {
        mem_remove(m, e);
        return NULL;
    }
    return e;
}

/* The entry for digest with a reference the caller drops with
 * mentry_unref, or NULL; marks it most recently used. */
static struct mentry *mem_get(struct gw_memstore *ms,
                              const unsigned char *digest, int64_t now)
{
    struct mem *m = shard_of(ms, digest);
    struct mentry *e;

    pthread_mutex_lock(&m->mu);
    if ((e = mem_find(m, digest, now)) != NULL) {
        lru_unlink(m, e);
        lru_push(m, e);
        __atomic_add_fetch(&e->refs, 1, __ATOMIC_RELAXED);
    }
    pthread_mutex_unlock(&m->mu);
    return e;
}

static void mem_grow(struct mem *m)
{
    size_t nb = m->nb * 2, i;
    struct mentry **b = calloc(nb, sizeof(*b));

    if (b == NULL)
        return; /* longer chains, still correct */
    for (i = 0; i < m->nb; i++) {
        struct mentry *e = m->buckets[i], *next;
        for (; e; e = next) {
            next = e->hnext;
            size_t k = bucket_of(e->digest, nb);
            e->hnext = b[k];
            b[k] = e;
        }
    }
    free(m->buckets);
    m->buckets = b;
    m->nb = nb;
}

/* Under m->mu: evicts least recently used entries down to max_bytes. */
static void mem_trim(struct mem *m, size_t room)
{
    struct mentry *old;

    while (m->bytes + room > m->max_bytes && (old = m->tail) != NULL) {
        mem_remove(m, old);
        m->evictions++;
    }
}

/* Takes blob's bytes (copied). Evicts least recently used entries of the
 * shard to stay within its part of max_bytes. */
static void mem_put(struct gw_memstore *ms, const unsigned char *digest,
                    const char *ns, int64_t expires_ms,
                    const unsigned char *blob, size_t len)
{
    struct mem *m = shard_of(ms, digest);
    struct mentry *e, *old;
    size_t size = sizeof(*e) + len;

    /* built outside the lock */
    if ((e = malloc(size)) == NULL)
        return;
    e->refs = 1;
    e->prev = e->next = NULL;
    memcpy(e->digest, digest, 32);
    snprintf(e->ns, sizeof(e->ns), "%s", ns);
    e->expires_ms = expires_ms;
    e->len = len;
    memcpy(e->blob, blob, len);
    pthread_mutex_lock(&m->mu);
    if ((old = mem_find(m, digest, 0)) != NULL)
        mem_remove(m, old);
    if (size > m->max_bytes) {
        pthread_mutex_unlock(&m->mu);
        free(e);
        return;
    }
    mem_trim(m, size);
    if (m->n >= m->nb)
        mem_grow(m);
    size_t k = bucket_of(digest, m->nb);
    e->hnext = m->buckets[k];
    m->buckets[k] = e;
    lru_push(m, e);
    m->n++;
    m->bytes += size;
    pthread_mutex_unlock(&m->mu);
}

static long mem_purge(struct gw_memstore *ms, const char *ns)
{
    long n = 0;

    for (size_t i = 0; i < ms->n; i++) {
        struct mem *m = &ms->shard[i];
        struct mentry *e, *next;
        pthread_mutex_lock(&m->mu);
        for (e = m->head; e; e = next) {
            next = e->next;
            if (strcmp(e->ns, ns) == 0) {
                mem_remove(m, e);
                n++;
            }
        }
        pthread_mutex_unlock(&m->mu);
    }
    return n;
}

/* Entries, bytes and evictions summed over the shards. */
static void mem_totals(struct gw_memstore *ms, size_t *n, size_t *bytes,
                       unsigned long *evictions)
{
    *n = *bytes = 0;
    *evictions = 0;
    for (size_t i = 0; i < ms->n; i++) {
        struct mem *m = &ms->shard[i];
        pthread_mutex_lock(&m->mu);
        *n += m->n;
        *bytes += m->bytes;
        *evictions += m->evictions;
        pthread_mutex_unlock(&m->mu);
    }
}

static void mem_set_max(struct gw_memstore *ms, size_t max_bytes)
{
    for (size_t i = 0; i < ms->n; i++) {
        struct mem *m = &ms->shard[i];
        pthread_mutex_lock(&m->mu);
        m->max_bytes = max_bytes / ms->n;
        mem_trim(m, 0);
        pthread_mutex_unlock(&m->mu);
    }
}

struct gw_memstore *gw_memstore_new(size_t max_bytes, size_t max_entry)
{
    struct gw_memstore *ms = aligned_alloc(_Alignof(struct gw_memstore),
                                           sizeof(*ms));

    if (ms == NULL)
        return NULL;
    memset(ms, 0, sizeof(*ms));
    for (ms->n = MEM_SHARDS; ms->n > 1; ms->n /= 2)
        if (max_bytes / ms->n >= 4 * (max_entry ? max_entry : 1))
            break;
    for (size_t i = 0; i < ms->n; i++) {
        struct mem *m = &ms->shard[i];
        pthread_mutex_init(&m->mu, NULL);
        m->nb = 64;
        m->max_bytes = max_bytes / ms->n;
        if ((m->buckets = calloc(m->nb, sizeof(*m->buckets))) == NULL) {
            gw_memstore_free(ms);
            return NULL;
        }
    }
    return ms;
}

void gw_memstore_free(struct gw_memstore *ms)
{
    if (ms == NULL)
        return;
    for (size_t i = 0; i < ms->n; i++) {
        struct mem *m = &ms->shard[i];
        while (m->head)
            mem_remove(m, m->head);
        free(m->buckets);
        pthread_mutex_destroy(&m->mu);
    }
    free(ms);
}

/* ------------------------------------------------------------- state */

enum op_phase { OP_GET, OP_WAIT, OP_DONE };

struct flight {
    unsigned char digest[32];
    struct gw_cache_fill *leader; /* borrowed: the fill that leads it */
    struct gw_cache_op *waiters;  /* borrowed: ops waiting on it */
    struct flight *next;          /* owned: bucket chain */
};

struct gw_cache_op {
    struct gw_cache *cache;   /* borrowed */
    struct gw_gateway *gw;    /* borrowed */
    struct gw_http_req *req;  /* borrowed while cb is set */
    struct gw_reqlog *rl;     /* borrowed from the waiter while cb is set */
    gw_cache_resume_cb cb;    /* NULL until armed, and once done */
    void *arg;
    struct gw_cache_fill *fill; /* owned until handed on */
    struct event *timer;      /* owned */
    enum op_phase phase;
    int in_redis;             /* hiredis holds it (a GET in flight) */
    int stream;
    int with_usage;           /* the client asked for stream usage */
    struct flight *flight;    /* borrowed: waiting on it (OP_WAIT) */
    struct gw_cache_op *wnext, *wprev; /* borrowed: the flight's list */
};

struct gw_cache_fill {
    struct gw_cache *cache; /* borrowed */
    unsigned char digest[32];
    char ns[NS_MAX];
    long ttl_s;
    size_t max_entry;
    struct evbuffer *sse; /* owned: a stream's events, NULL until one */
    size_t data_bytes;
    int too_big;
    struct flight *flight; /* borrowed: led by this fill, or NULL */
    int with_usage;        /* stream_options.include_usage was true */
    int no_options;        /* the request has no stream_options */
};

struct gw_cache {
    struct event_base *base;   /* borrowed */
    enum gw_cache_backend backend;
    struct gw_memstore *mem;   /* borrowed (shared by the workers) or
                                  owned (own_mem): the memory store */
    int own_mem;
    struct gw_redisev *redis;  /* owned: redis backend only */
    long timeout_ms;
    struct flight *flights[256]; /* owned chains */
    EVP_MD_CTX *md;            /* owned: reused for every key */
    struct gw_canon canon;     /* the canonical body, reused */
    /* counters: written by this worker only, but atomic (relaxed) because
     * /admin/cache and scrapes on other workers read them */
    unsigned long hits, misses, bypasses, stores, errors, coalesced;
    unsigned long pending; /* Redis commands not answered yet */
    int freeing;
};

struct gw_cache *gw_cache_new(struct event_base *base,
                              const struct gw_config *c,
                              struct gw_memstore *shared)
{
    struct gw_cache *cache = calloc(1, sizeof(*cache));

    if (cache == NULL)
        return NULL;
    cache->mem = shared;
    if (shared) { /* made at start, maybe before "cache" was configured */
        mem_set_max(shared, c->cache.max_bytes);
    } else {
        cache->mem = gw_memstore_new(c->cache.max_bytes,
                                     c->cache.max_entry_bytes);
        cache->own_mem = 1;
    }
    cache->base = base;
    cache->backend = c->cache.backend;
    cache->timeout_ms = c->redis.timeout_ms > 0 ? c->redis.timeout_ms : 50;
    cache->md = EVP_MD_CTX_new();
    gw_canon_init(&cache->canon);
    if (cache->mem == NULL || cache->md == NULL)
        goto fail;
    if (cache->backend == GW_CACHE_REDIS &&
        (cache->redis = gw_redisev_new(base, c->redis.host, c->redis.port,
                                       c->redis.password, c->redis.db,
                                       "cache")) == NULL)
        goto fail;
    return cache;
fail:
    gw_cache_free(cache);
    return NULL;
}

void gw_cache_free(struct gw_cache *cache)
{
    size_t i;

    if (cache == NULL)
        return;
    cache->freeing = 1;
    gw_redisev_free(cache->redis); /* GETs in flight answer NULL: freed */
    if (cache->own_mem)
        gw_memstore_free(cache->mem);
    for (i = 0; i < 256; i++)
        while (cache->flights[i]) {
            struct flight *f = cache->flights[i];
            cache->flights[i] = f->next;
            if (f->leader)
                f->leader->flight = NULL;
            free(f);
        }
    EVP_MD_CTX_free(cache->md);
    gw_canon_release(&cache->canon);
    free(cache);
}

/* --------------------------------------------------------------- key */

static const char *const sampling[] = {"temperature", "top_p", "top_k",
                                       "min_p", "typical_p", NULL};

/* 1 when the request asks for one answer that does not depend on chance:
 * temperature 0, or no sampling parameter at all, or n 1 with a seed. */
static int deterministic(json_t *root)
{
    json_t *t = json_object_get(root, "temperature");
    json_t *n = json_object_get(root, "n");
    int one = n == NULL || json_is_null(n) ||
              (json_is_integer(n) && json_integer_value(n) == 1);
    size_t i;

    if (json_is_number(t) && json_number_value(t) == 0.0)
        return 1;
    if (json_is_integer(json_object_get(root, "seed")) && one)
        return 1;
    for (i = 0; sampling[i]; i++)
        if (json_object_get(root, sampling[i]))
            return 0;
    return one;
}

/* The digest of the request; 1 when it may be cached, 0 when it may not
 * (not deterministic, or not a JSON object), -1 out of memory. */
static int request_key(struct gw_cache *cache, struct gw_http_req *req,
                       const char *suffix, const char *ns, const char *model,
                       int all, struct gw_cache_fill *f)
{
    static const char *const skip[] = {"user", "stream", "stream_options",
                                       "metadata", NULL};
    unsigned char *digest = f->digest;
    size_t len = evbuffer_get_length(req->body), clen;
    const char *body = (const char *)evbuffer_pullup(req->body, -1), *ctext;
    struct gw_canon_info info;
    json_t *root = NULL;
    char *dump = NULL, version[160];
    unsigned int dlen = 0;
    int rc = 0;

    if (len <= CANON_MAX) {
        /* the common case: one pass, no tree, no allocation */
        if (gw_canon_body(&cache->canon, body, len, skip, &info) < 0)
            goto out;
        if (!all && !info.deterministic)
            goto out;
        f->no_options = !info.has_stream_options;
        f->with_usage = info.include_usage;
        ctext = cache->canon.buf;
        clen = cache->canon.len;
    } else {
        /* large bodies: jansson sorts in O(n log n) whatever the nesting */
        root = json_loadb(body, len, 0, NULL);
        if (!json_is_object(root))
            goto out;
        if (!all && !deterministic(root))
            goto out;
        json_t *so = json_object_get(root, "stream_options");
        f->no_options = so == NULL;
        f->with_usage = json_is_true(json_object_get(so, "include_usage"));
        for (size_t i = 0; skip[i]; i++)
            json_object_del(root, skip[i]);
        rc = -1;
        if ((dump = json_dumps(root, JSON_SORT_KEYS | JSON_COMPACT)) == NULL)
            goto out;
        ctext = dump;
        clen = strlen(dump);
    }
    rc = -1;
    if (gw_http_resp_header_get(req, "x-prompt-version", version,
                                sizeof(version)) < 0)
        version[0] = '\0';
    if (EVP_DigestInit_ex(cache->md, gw_sha256(), NULL) != 1 ||
        EVP_DigestUpdate(cache->md, root ? "pgj1" : "pgc1", 5) != 1 ||
        EVP_DigestUpdate(cache->md, suffix, strlen(suffix) + 1) != 1 ||
        EVP_DigestUpdate(cache->md, ns, strlen(ns) + 1) != 1 ||
        EVP_DigestUpdate(cache->md, model, strlen(model) + 1) != 1 ||
        EVP_DigestUpdate(cache->md, version, strlen(version) + 1) != 1 ||
        EVP_DigestUpdate(cache->md, ctext, clen) != 1 ||
        EVP_DigestFinal_ex(cache->md, digest, &dlen) != 1 || dlen != 32)
        goto out;
    rc = 1;
out:
    free(dump);
    json_decref(root);
    return rc;
}

/* ------------------------------------------------- the two forms */

static int add_event(struct evbuffer *out, json_t *chunk)
{
    char *s = json_dumps(chunk, JSON_COMPACT);
    int rc;

    json_decref(chunk);
    if (s == NULL)
        return -1;
    rc = evbuffer_add(out, "data: ", 6) == 0 &&
                 evbuffer_add(out, s, strlen(s)) == 0 &&
                 evbuffer_add(out, "\n\n", 2) == 0
             ? 0
             : -1;
    free(s);
    return rc;
}

/* A chunk's head: id, object, created, model (and system_fingerprint). */
static json_t *chunk_head(json_t *root, const char *object)
{
    json_t *c = json_object();
    static const char *const copy[] = {"id", "created", "model",
                                       "system_fingerprint", NULL};

    if (c == NULL)
        return NULL;
    for (size_t i = 0; copy[i]; i++) {
        json_t *v = json_object_get(root, copy[i]);
        if (v)
            json_object_set(c, copy[i], v);
        if (i == 0)
            json_object_set_new(c, "object", json_string(object));
    }
    return c;
}

/* One chunk of choice idx: delta (chat) or text (completions), taken. */
static int emit_choice(struct evbuffer *out, json_t *root, int chat,
                       json_t *idx, json_t *delta_or_text, json_t *fin)
{
    json_t *c = chunk_head(root, chat ? "chat.completion.chunk"
                                      : "text_completion");
    json_t *arr = json_array(), *d = json_object();

    if (c == NULL || arr == NULL || d == NULL) {
        json_decref(c), json_decref(arr), json_decref(d);
        json_decref(delta_or_text);
        return -1;
    }
    json_object_set(d, "index", idx);
    json_object_set_new(d, chat ? "delta" : "text", delta_or_text);
    json_object_set_new(d, "logprobs", json_null());
    json_object_set_new(d, "finish_reason", fin ? json_incref(fin)
                                                : json_null());
    json_array_append_new(arr, d);
    json_object_set_new(c, "choices", arr);
    json_object_set_new(c, "usage", json_null()); /* as with include_usage */
    return add_event(out, c);
}

#define PIECE 24 /* bytes of text a chunk carries, cut after a space */

/* The pieces of text s, each as a chunk (content deltas or texts). */
static int emit_pieces(struct evbuffer *out, json_t *root, int chat,
                       json_t *idx, const char *s, size_t n)
{
    size_t at = 0;

    while (at < n) {
        size_t end = at + PIECE < n ? at + PIECE : n;
        /* cut after an ASCII space: never inside a UTF-8 sequence */
        while (end < n && s[end - 1] != ' ')
            end++;
        json_t *piece = json_stringn_nocheck(s + at, end - at);
        json_t *v = piece;
        if (chat) {
            v = json_object();
            json_object_set_new(v, "content", piece);
        }
        if (emit_choice(out, root, chat, idx, v, NULL) < 0)
            return -1;
        at = end;
    }
    return 0;
}

/* SSE events for a non-streamed answer, as OpenAI streams them: per
 * choice a first chunk (chat: the role and any other message fields, with
 * content ""), the text in pieces, a chunk with the finish_reason; then
 * the usage chunk (choices []). Every chunk carries "usage": null. Returns
 * 1 when root has a stream form, 0 when not (embeddings), -1 on failure. */
static int render_sse(json_t *root, struct evbuffer *out)
{
    const char *object = json_string_value(json_object_get(root, "object"));
    json_t *choices = json_object_get(root, "choices"), *ch, *c;
    json_t *usage = json_object_get(root, "usage");
    int chat;
    size_t i;

    if (object == NULL || !json_is_array(choices))
        return 0;
    if (strcmp(object, "chat.completion") == 0)
        chat = 1;
    else if (strcmp(object, "text_completion") == 0)
        chat = 0;
    else
        return 0;
    json_array_foreach(choices, i, ch) {
        json_t *idx = json_object_get(ch, "index");
        json_t *fin = json_object_get(ch, "finish_reason");
        json_t *own = idx ? json_incref(idx) : json_integer((json_int_t)i);
        const char *text;
        int rc = -1;
        if (chat) {
            json_t *msg = json_deep_copy(json_object_get(ch, "message"));
            json_t *content, *tc, *t;
            size_t k;
            if (!json_is_object(msg)) {
                json_decref(msg);
                json_decref(own);
                return -1;
            }
            content = json_incref(json_object_get(msg, "content"));
            json_object_set_new(msg, "content", json_string(""));
            tc = json_object_get(msg, "tool_calls");
            json_array_foreach(tc, k, t)
                json_object_set_new(t, "index", json_integer((json_int_t)k));
            text = json_string_value(content);
            rc = emit_choice(out, root, 1, own, msg, NULL) < 0 ||
                         (text && emit_pieces(out, root, 1, own, text,
                                              json_string_length(content)) < 0) ||
                         emit_choice(out, root, 1, own, json_object(), fin) < 0
                     ? -1 : 0;
            json_decref(content);
        } else {
            json_t *tx = json_object_get(ch, "text");
            text = json_string_value(tx);
            rc = (text && emit_pieces(out, root, 0, own, text,
                                      json_string_length(tx)) < 0) ||
                         emit_choice(out, root, 0, own, json_string(""), fin) < 0
                     ? -1 : 0;
        }
        json_decref(own);
        if (rc < 0)
            return -1;
    }
    if (json_is_object(usage)) {
        if ((c = chunk_head(root, chat ? "chat.completion.chunk"
                                       : "text_completion")) == NULL)
            return -1;
        json_object_set_new(c, "choices", json_array());
        json_object_set(c, "usage", usage);
        if (add_event(out, c) < 0)
            return -1;
    }
    return 1;
}

/* Assembling a stream's events into the JSON body a non-stream request
 * would have had. */
struct assembly {
    json_t *root;    /* owned: head fields, then the answer */
    json_t *choices; /* owned: by index: {"index", "role", "content"...} */
    int chat;
    int failed;
};

static int assemble_event(void *arg, const struct gw_sse_event *ev)
{
    struct assembly *a = arg;
    json_t *chunk, *chs, *ch, *v;
    size_t i;

    if (a->failed || (ev->data_len == 6 && memcmp(ev->data, "[DONE]", 6) == 0))
        return 0;
    chunk = json_loadb(ev->data, ev->data_len, 0, NULL);
    if (!json_is_object(chunk) || ev->name != NULL ||
        json_object_get(chunk, "error") != NULL ||
        !json_is_array(json_object_get(chunk, "choices")))
        goto fail; /* an error event, or not a completion chunk */
    if (a->root == NULL) {
        const char *o = json_string_value(json_object_get(chunk, "object"));
        a->chat = o == NULL || strcmp(o, "text_completion") != 0;
        a->root = chunk_head(chunk, a->chat ? "chat.completion"
                                            : "text_completion");
        if (a->root == NULL)
            goto fail;
    }
    v = json_object_get(chunk, "usage");
    if (json_is_object(v))
        json_object_set(a->root, "usage", v);
    chs = json_object_get(chunk, "choices");
    json_array_foreach(chs, i, ch) {
        json_t *idx = json_object_get(ch, "index"), *slot, *d;
        json_int_t k = json_is_integer(idx) ? json_integer_value(idx) : 0;
        const char *key;
        if (k < 0 || k >= MAX_CHOICES)
            goto fail;
        v = json_object_get(ch, "logprobs");
        if (v && !json_is_null(v))
            goto fail; /* not assembled: not stored */
        while (json_array_size(a->choices) <= (size_t)k)
            json_array_append_new(a->choices, json_object());
        slot = json_array_get(a->choices, (size_t)k);
        d = a->chat ? json_object_get(ch, "delta") : ch;
        json_object_foreach(d, key, v) {
            if (strcmp(key, "content") == 0 || strcmp(key, "text") == 0) {
                json_t *cur = json_object_get(slot, key);
                if (json_is_null(v))
                    continue;
                if (!json_is_string(v))
                    goto fail;
                if (cur == NULL) {
                    json_object_set(slot, key, v);
                } else {
                    size_t l1 = json_string_length(cur);
                    size_t l2 = json_string_length(v);
                    char *s = malloc(l1 + l2 + 1);
                    if (s == NULL)
                        goto fail;
                    memcpy(s, json_string_value(cur), l1);
                    memcpy(s + l1, json_string_value(v), l2);
                    json_object_set_new(slot, key,
                                        json_stringn_nocheck(s, l1 + l2));
                    free(s);
                }
            } else if (strcmp(key, "role") == 0) {
                json_object_set(slot, key, v);
            } else if (strcmp(key, "index") == 0 ||
                       strcmp(key, "logprobs") == 0 ||
                       strcmp(key, "finish_reason") == 0 ||
                       json_is_null(v)) {
                continue;
            } else {
                goto fail; /* tool calls and other deltas: not assembled */
            }
        }
        v = json_object_get(ch, "finish_reason");
        if (v && !json_is_null(v))
            json_object_set(slot, "finish_reason", v);
    }
    json_decref(chunk);
    return 0;
fail:
    json_decref(chunk);
    a->failed = 1;
    return 0;
}

/* The JSON body of a stream's events, malloc'd text, or NULL. */
static char *assemble(const char *sse, size_t len)
{
    struct assembly a = {0};
    struct gw_sse p;
    json_t *out, *ch;
    size_t i;
    char *s = NULL;

    a.choices = json_array();
    gw_sse_init(&p, len + 1);
    if (a.choices == NULL || gw_sse_feed(&p, sse, len, assemble_event, &a) < 0 ||
        a.failed || a.root == NULL || json_array_size(a.choices) == 0)
        goto out;
    out = json_array();
    json_array_foreach(a.choices, i, ch) {
        json_t *c = json_object();
        json_object_set_new(c, "index", json_integer((json_int_t)i));
        if (a.chat) {
            json_t *m = json_object();
            json_t *role = json_object_get(ch, "role");
            json_t *content = json_object_get(ch, "content");
            json_object_set_new(m, "role", role ? json_incref(role)
                                                : json_string("assistant"));
            json_object_set_new(m, "content", content ? json_incref(content)
                                                      : json_string(""));
            json_object_set_new(c, "message", m);
        } else {
            json_t *text = json_object_get(ch, "text");
            json_object_set_new(c, "text", text ? json_incref(text)
                                                : json_string(""));
        }
        json_object_set_new(c, "logprobs", json_null());
        json_t *fin = json_object_get(ch, "finish_reason");
        json_object_set_new(c, "finish_reason",
                            fin ? json_incref(fin) : json_null());
        json_array_append_new(out, c);
    }
    json_object_set_new(a.root, "choices", out);
    s = json_dumps(a.root, JSON_COMPACT | JSON_PRESERVE_ORDER);
out:
    gw_sse_release(&p);
    json_decref(a.choices);
    json_decref(a.root);
    return s;
}

/* --------------------------------------------------------------- hits */

static void add_cache_header(struct gw_http_req *req, const char *v)
{
    if (req->cache == NULL) {
        req->cache = v;
        gw_http_add_header(req, "x-promptgate-cache", v);
    }
}

static void mark_miss(struct gw_cache *cache, struct gw_http_req *req)
{
    __atomic_fetch_add(&cache->misses, 1, __ATOMIC_RELAXED);
    add_cache_header(req, "miss");
}

/* Answers req from an entry (checked) and logs it. The form the request
 * needs is made now when the entry lacks it (a JSON answer rendered as
 * SSE, a stream assembled into JSON): the store path stays a copy, and
 * the work falls on the rarer cross-form hits. Returns -1, having sent
 * nothing, when the entry cannot be put in that form (treat as a miss). */
static int answer_hit(struct gw_gateway *gw, struct gw_http_req *req,
                      struct gw_reqlog *rl, const struct entry_view *v0,
                      int stream, int with_usage)
{
    struct entry_view v = *v0;
    int64_t age = (wall_ms() - v.created_ms) / 1000;
    struct evbuffer *tmp = NULL;
    char *assembled = NULL, num[24];

    if (stream && v.sse_len == 0) {
        json_t *root = json_loadb(v.json, v.json_len, 0, NULL);
        int r = -1;
        if (json_is_object(root) && (tmp = evbuffer_new()) != NULL)
            r = render_sse(root, tmp);
        json_decref(root);
        if (r < 0) {
            if (tmp)
                evbuffer_free(tmp);
            return -1;
        }
        if (r == 0) {
            stream = 0; /* no stream form (embeddings): JSON, as upstream */
        } else {
            v.sse_len = evbuffer_get_length(tmp);
            v.sse = (const char *)evbuffer_pullup(tmp, -1);
            v.usage_at = usage_at(v.sse, v.sse_len);
        }
    } else if (!stream && v.json_len == 0) {
        if ((assembled = assemble(v.sse, v.sse_len)) == NULL)
            return -1;
        v.json = assembled;
        v.json_len = strlen(assembled);
    }
    snprintf(num, sizeof(num), "%lld", (long long)(age > 0 ? age : 0));
    add_cache_header(req, "hit");
    gw_http_add_header(req, "age", num);
    rl->usage = v.usage;
    rl->status = 200;
    rl->ttfb_us = -1;
    if (stream) {
        gw_http_add_header(req, "Cache-Control", "no-cache");
        gw_http_reply_start(req, 200, "text/event-stream");
        gw_http_reply_chunk(req, v.sse, with_usage ? v.sse_len : v.usage_at);
        gw_http_reply_chunk(req, "data: [DONE]\n\n", 14);
        gw_http_reply_end(req);
    } else {
        gw_http_reply(req, 200, "application/json", v.json, v.json_len);
    }
    /* the exposure of a prompt request records what was served */
    if (v.json_len > 0)
        gw_prompt_output(gw->prompts, req, v.json, v.json_len, 0);
    else if (gw_prompt_wants_output(gw->prompts, req) &&
             (assembled = assemble(v.sse, v.sse_len)) != NULL)
        gw_prompt_output(gw->prompts, req, assembled, strlen(assembled), 0);
    gw_proxy_log(gw, req, rl);
    free(assembled);
    if (tmp)
        evbuffer_free(tmp);
    return 0;
}

/* --------------------------------------------------------- flights */

static struct flight *flight_find(struct gw_cache *cache,
                                  const unsigned char *digest)
{
    struct flight *f = cache->flights[digest[0]];

    while (f && memcmp(f->digest, digest, 32) != 0)
        f = f->next;
    return f;
}

static void flight_lead(struct gw_cache *cache, struct gw_cache_fill *fill)
{
    struct flight *f = calloc(1, sizeof(*f));

    if (f == NULL)
        return; /* not coalesced, still correct */
    memcpy(f->digest, fill->digest, 32);
    f->leader = fill;
    f->next = cache->flights[fill->digest[0]];
    cache->flights[fill->digest[0]] = f;
    fill->flight = f;
}

static void waiter_unlink(struct gw_cache_op *op)
{
    struct flight *f = op->flight;

    if (f == NULL)
        return;
    if (op->wprev)
        op->wprev->wnext = op->wnext;
    else
        f->waiters = op->wnext;
    if (op->wnext)
        op->wnext->wprev = op->wprev;
    op->wnext = op->wprev = NULL;
    op->flight = NULL;
}

static void op_free(struct gw_cache_op *op)
{
    if (op->timer)
        event_free(op->timer);
    gw_cache_fill_free(op->fill);
    free(op);
}

/* Ends an op: the waiter hears answered (1: the hit went out) or goes on
 * with the fill. */
static void op_finish(struct gw_cache_op *op, int answered)
{
    gw_cache_resume_cb cb = op->cb;
    void *arg = op->arg;
    struct gw_cache_fill *fill = answered ? NULL : op->fill;

    if (!answered)
        op->fill = NULL;
    op->cb = NULL;
    op->phase = OP_DONE;
    waiter_unlink(op);
    evtimer_del(op->timer);
    if (!op->in_redis)
        op_free(op);
    if (cb)
        cb(arg, answered, fill);
    else
        gw_cache_fill_free(fill);
}

/* The flight's leader is done: stored (v) or not (NULL). */
static void flight_land(struct gw_cache *cache, struct flight *f,
                        const struct entry_view *v)
{
    struct flight **pp = &cache->flights[f->digest[0]];
    struct gw_cache_op *op;

    while (*pp != f)
        pp = &(*pp)->next;
    *pp = f->next;
    while ((op = f->waiters) != NULL) {
        waiter_unlink(op);
        if (v && op->cb &&
            answer_hit(op->gw, op->req, op->rl, v, op->stream,
                       op->with_usage) == 0) {
            __atomic_fetch_add(&cache->hits, 1, __ATOMIC_RELAXED);
            op_finish(op, 1);
        } else {
            /* the waiter goes upstream itself, storing as it goes: from
             * the loop (its timer, at once), not from inside the
             * leader's transport callback that freed the leader's fill */
            struct timeval zero = {0, 0};
            evtimer_del(op->timer);
            evtimer_add(op->timer, &zero);
        }
    }
    free(f);
}

static struct gw_cache_op *op_new(struct gw_cache *cache,
                                  struct gw_gateway *gw,
                                  struct gw_http_req *req, int stream,
                                  struct gw_cache_fill *fill);

/* A miss (no entry): wait on an identical request already upstream, or
 * lead. Returns 1 when op now waits on a flight. */
static int miss_or_wait(struct gw_cache *cache, struct gw_cache_op *op)
{
    struct flight *f = flight_find(cache, op->fill->digest);
    struct timeval tv = {COALESCE_MS / 1000, 0};

    if (op->fill->flight)
        return 0; /* it leads already (it asked Redis as the leader) */
    if (f) {
        op->phase = OP_WAIT;
        op->flight = f;
        op->wnext = f->waiters;
        if (f->waiters)
            f->waiters->wprev = op;
        f->waiters = op;
        __atomic_fetch_add(&cache->coalesced, 1, __ATOMIC_RELAXED);
        evtimer_add(op->timer, &tv);
        return 1;
    }
    flight_lead(cache, op->fill);
    return 0;
}

/* ------------------------------------------------------------- redis */

static void on_get(redisAsyncContext *ac, void *reply, void *priv)
{
    struct gw_cache_op *op = priv;
    redisReply *r = reply;
    struct entry_view v;

    (void)ac;
    op->in_redis = 0;
    __atomic_fetch_sub(&op->cache->pending, 1, __ATOMIC_RELAXED);
    if (op->phase != OP_GET) {
        if (op->phase == OP_DONE)
            op_free(op);
        return;
    }
    evtimer_del(op->timer);
    if (op->cache->freeing) {
        op_finish(op, 0);
        return;
    }
    if (r && r->type == REDIS_REPLY_STRING &&
        entry_parse((const unsigned char *)r->str, r->len, &v) == 0 &&
        answer_hit(op->gw, op->req, op->rl, &v, op->stream,
                   op->with_usage) == 0) {
        if (op->fill->flight) {
            /* those that waited on this lookup get the entry too */
            struct flight *fl = op->fill->flight;
            op->fill->flight = NULL;
            flight_land(op->cache, fl, &v);
        }
        __atomic_fetch_add(&op->cache->hits, 1, __ATOMIC_RELAXED);
        op_finish(op, 1);
        return;
    }
    if (r == NULL || r->type == REDIS_REPLY_ERROR)
        __atomic_fetch_add(&op->cache->errors, 1, __ATOMIC_RELAXED);
    if (miss_or_wait(op->cache, op))
        return;
    mark_miss(op->cache, op->req);
    op_finish(op, 0);
}

static void on_op_timer(evutil_socket_t fd, short what, void *arg)
{
    struct gw_cache_op *op = arg;

    (void)fd, (void)what;
    if (op->phase == OP_GET) {
        /* Redis is slow or away: a miss, counted; Redis still holds op */
        __atomic_fetch_add(&op->cache->errors, 1, __ATOMIC_RELAXED);
        gw_log_debug("cache lookup in redis took longer than %ld ms: miss",
                     op->cache->timeout_ms);
        if (miss_or_wait(op->cache, op))
            return;
        mark_miss(op->cache, op->req);
        op_finish(op, 0);
        return;
    }
    /* waited COALESCE_MS on an identical request, or its leader ended
     * without storing (flight_land): go on alone */
    mark_miss(op->cache, op->req);
    op_finish(op, 0);
}

static struct gw_cache_op *op_new(struct gw_cache *cache,
                                  struct gw_gateway *gw,
                                  struct gw_http_req *req, int stream,
                                  struct gw_cache_fill *fill)
{
    struct gw_cache_op *op = calloc(1, sizeof(*op));

    if (op == NULL)
        return NULL;
    op->cache = cache;
    op->gw = gw;
    op->req = req;
    op->stream = stream;
    op->with_usage = fill->with_usage;
    op->fill = fill;
    op->timer = evtimer_new(cache->base, on_op_timer, op);
    if (op->timer == NULL) {
        op->fill = NULL;
        op_free(op);
        return NULL;
    }
    return op;
}

static void hexify(const unsigned char *d, char *out)
{
    static const char hx[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        out[2 * i] = hx[d[i] >> 4];
        out[2 * i + 1] = hx[d[i] & 15];
    }
    out[64] = '\0';
}

/* Sends GET; 0, or -1 when Redis is not connected. */
static int redis_get(struct gw_cache *cache, struct gw_cache_op *op)
{
    redisAsyncContext *ac = gw_redisev_ctx(cache->redis);
    char key[sizeof(REDIS_PREFIX) + 64];
    struct timeval tv = {cache->timeout_ms / 1000,
                         (cache->timeout_ms % 1000) * 1000};

    if (ac == NULL || cache->pending >= MAX_PENDING)
        return -1;
    memcpy(key, REDIS_PREFIX, sizeof(REDIS_PREFIX) - 1);
    hexify(op->fill->digest, key + sizeof(REDIS_PREFIX) - 1);
    if (redisAsyncCommand(ac, on_get, op, "GET %s", key) != REDIS_OK)
        return -1;
    __atomic_fetch_add(&cache->pending, 1, __ATOMIC_RELAXED);
    op->in_redis = 1;
    op->phase = OP_GET;
    evtimer_add(op->timer, &tv);
    return 0;
}

static void on_put(redisAsyncContext *ac, void *reply, void *priv)
{
    struct gw_cache *cache = priv;

    (void)ac;
    __atomic_fetch_sub(&cache->pending, 1, __ATOMIC_RELAXED);
    if (reply == NULL || ((redisReply *)reply)->type == REDIS_REPLY_ERROR)
        __atomic_fetch_add(&cache->errors, 1, __ATOMIC_RELAXED);
}

static void redis_put(struct gw_cache *cache, const struct gw_cache_fill *f,
                      const unsigned char *blob, size_t len)
{
    redisAsyncContext *ac = gw_redisev_ctx(cache->redis);
    char key[sizeof(REDIS_PREFIX) + 64], set[sizeof(REDIS_NS_PREFIX) + NS_MAX];

    if (ac == NULL || cache->pending + 3 > MAX_PENDING) {
        __atomic_fetch_add(&cache->errors, 1, __ATOMIC_RELAXED);
        return;
    }
    memcpy(key, REDIS_PREFIX, sizeof(REDIS_PREFIX) - 1);
    hexify(f->digest, key + sizeof(REDIS_PREFIX) - 1);
    snprintf(set, sizeof(set), REDIS_NS_PREFIX "%s", f->ns);
    /* the namespace's set lists its entries, for purge; it lives as long
     * as its newest entry */
    if (redisAsyncCommand(ac, on_put, cache, "SET %s %b EX %ld", key, blob,
                          len, f->ttl_s) != REDIS_OK)
        goto fail;
    __atomic_fetch_add(&cache->pending, 1, __ATOMIC_RELAXED);
    if (redisAsyncCommand(ac, on_put, cache, "SADD %s %s", set, key) !=
        REDIS_OK)
        goto fail;
    __atomic_fetch_add(&cache->pending, 1, __ATOMIC_RELAXED);
    if (redisAsyncCommand(ac, on_put, cache, "EXPIRE %s %ld", set,
                          f->ttl_s) != REDIS_OK)
        goto fail;
    __atomic_fetch_add(&cache->pending, 1, __ATOMIC_RELAXED);
    return;
fail:
    __atomic_fetch_add(&cache->errors, 1, __ATOMIC_RELAXED);
}

/* ------------------------------------------------------------ lookup */

static const struct gw_model_conf *model_conf(const struct gw_config *c,
                                              const char *model)
{
    for (size_t i = 0; i < c->n_model_confs; i++)
        if (strcmp(c->model_confs[i].name, model) == 0)
            return &c->model_confs[i];
    return NULL;
}

/* cache-control: no-cache (1) and no-store (2), as a bit set. */
static int cache_control(const struct gw_http_req *req)
{
    const char *h = gw_http_req_header(req, "cache-control");
    int bits = 0;

    while (h && *h) {
        while (*h == ' ' || *h == '\t' || *h == ',')
            h++;
        size_t n = strcspn(h, ", \t");
        if (n == 8 && strncasecmp(h, "no-cache", 8) == 0)
            bits |= 1;
        else if (n == 8 && strncasecmp(h, "no-store", 8) == 0)
            bits |= 2;
        h += n;
    }
    return bits;
}

/* The worker's cache, made on first use when a reload turned it on;
 * published with an atomic store: scrapes on other workers read it. */
static struct gw_cache *worker_cache(struct gw_gateway *gw,
                                     const struct gw_config *c)
{
    struct gw_cache *cache = gw_cache_new(gw->base, c, gw->memstore);

    if (cache)
        __atomic_store_n(&gw->cache, cache, __ATOMIC_RELEASE);
    return cache;
}

enum gw_cache_verdict gw_cache_lookup(struct gw_gateway *gw,
                                      struct gw_http_req *req,
                                      struct gw_reqlog *rl,
                                      struct gw_config *c,
                                      const struct gw_key *key,
                                      const char *model, const char *suffix,
                                      int stream, int usage_injected,
                                      struct gw_cache_fill **fill,
                                      struct gw_cache_op **op)
{
    const struct gw_model_conf *mc = model_conf(c, model);
    int cc = cache_control(req), all = mc && mc->cache == GW_MODEL_CACHE_ALL;
    const char *ns = key ? (key->cache_namespace ? key->cache_namespace
                                                 : key->name)
                         : "default";
    struct gw_cache *cache = gw->cache;
    struct gw_cache_fill *f;
    struct mentry *e;
    struct entry_view v;

    *fill = NULL;
    *op = NULL;
    if (cache == NULL &&
        (cache = worker_cache(gw, c)) == NULL) {
        add_cache_header(req, "bypass");
        return GW_CACHE_GO;
    }
    if ((mc && mc->cache == GW_MODEL_CACHE_OFF) || (cc & 2) ||
        gw_pool_find(c, model) == NULL || (f = calloc(1, sizeof(*f))) == NULL) {
        __atomic_fetch_add(&cache->bypasses, 1, __ATOMIC_RELAXED);
        add_cache_header(req, "bypass");
        return GW_CACHE_GO;
    }
    if (request_key(cache, req, suffix, ns, model, all, f) <= 0) {
        free(f);
        __atomic_fetch_add(&cache->bypasses, 1, __ATOMIC_RELAXED);
        add_cache_header(req, "bypass");
        return GW_CACHE_GO;
    }
    if (usage_injected) /* the rate limiter asked for it, not the client */
        f->with_usage = f->no_options = 0;
    if (!stream)
        f->no_options = 0;
    f->cache = cache;
    snprintf(f->ns, sizeof(f->ns), "%s", ns);
    f->ttl_s = mc && mc->cache_ttl_s ? mc->cache_ttl_s : c->cache.ttl_s;
    f->max_entry = c->cache.max_entry_bytes;
    *fill = f;
    if (cc & 1) {
        /* no-cache: not looked up, stored fresh; not coalesced either */
        __atomic_fetch_add(&cache->misses, 1, __ATOMIC_RELAXED);
        add_cache_header(req, "miss");
        return GW_CACHE_GO;
    }
    if (cache->backend == GW_CACHE_MEMORY) {
        e = mem_get(cache->mem, f->digest, wall_ms());
        if (e && entry_parse(e->blob, e->len, &v) == 0 &&
            answer_hit(gw, req, rl, &v, stream, f->with_usage) == 0) {
            mentry_unref(e);
            __atomic_fetch_add(&cache->hits, 1, __ATOMIC_RELAXED);
            gw_cache_fill_free(f);
            *fill = NULL;
            return GW_CACHE_ANSWERED;
        }
        mentry_unref(e);
    }
    if (flight_find(cache, f->digest) == NULL &&
        (cache->backend == GW_CACHE_MEMORY ||
         gw_redisev_ctx(cache->redis) == NULL)) {
        if (cache->backend == GW_CACHE_REDIS)
            __atomic_fetch_add(&cache->errors, 1, __ATOMIC_RELAXED); /* not connected: a miss at once */
        flight_lead(cache, f);
        __atomic_fetch_add(&cache->misses, 1, __ATOMIC_RELAXED);
        add_cache_header(req, "miss");
        return GW_CACHE_GO;
    }
    /* wait: on an identical request already upstream, or on Redis */
    if ((*op = op_new(cache, gw, req, stream, f)) == NULL) {
        *fill = NULL;
        gw_cache_fill_free(f);
        add_cache_header(req, "bypass");
        return GW_CACHE_GO;
    }
    *fill = NULL;
    if (miss_or_wait(cache, *op))
        return GW_CACHE_WAIT;
    /* miss_or_wait made f lead: now ask Redis */
    if (redis_get(cache, *op) < 0) {
        __atomic_fetch_add(&cache->errors, 1, __ATOMIC_RELAXED);
        __atomic_fetch_add(&cache->misses, 1, __ATOMIC_RELAXED);
        (*op)->fill = NULL;
        op_free(*op);
        *op = NULL;
        *fill = f;
        add_cache_header(req, "miss");
        return GW_CACHE_GO;
    }
    return GW_CACHE_WAIT;
}

void gw_cache_op_wait(struct gw_cache_op *op, struct gw_reqlog *rl,
                      gw_cache_resume_cb cb, void *arg)
{
    op->rl = rl;
    op->cb = cb;
    op->arg = arg;
}

void gw_cache_op_cancel(struct gw_cache_op *op)
{
    op->cb = NULL;
    op->req = NULL;
    op->rl = NULL;
    op->phase = OP_DONE;
    waiter_unlink(op);
    evtimer_del(op->timer);
    gw_cache_fill_free(op->fill);
    op->fill = NULL;
    if (!op->in_redis)
        op_free(op);
}

/* ------------------------------------------------------------- fills */

void gw_cache_fill_event(struct gw_cache_fill *f, const char *data,
                         size_t len)
{
    const char *p = data, *end = data + len, *nl;

    if (f == NULL || f->too_big ||
        (len == 6 && memcmp(data, "[DONE]", 6) == 0))
        return;
    f->data_bytes += len;
    if (f->data_bytes > f->max_entry) {
        f->too_big = 1;
        if (f->sse)
            evbuffer_free(f->sse);
        f->sse = NULL;
        return;
    }
    if (f->sse == NULL && (f->sse = evbuffer_new()) == NULL) {
        f->too_big = 1;
        return;
    }
    /* one data: line per line of the event's data */
    do {
        nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        evbuffer_add(f->sse, "data: ", 6);
        evbuffer_add(f->sse, p, n);
        evbuffer_add(f->sse, "\n", 1);
        p = nl ? nl + 1 : end;
    } while (nl);
    evbuffer_add(f->sse, "\n", 1);
}

void gw_cache_fill_store(struct gw_cache_fill *f, const char *json,
                         size_t len)
{
    struct gw_cache *cache;
    unsigned char *blob = NULL;
    size_t blen;
    struct entry_view v;

    if (f == NULL || f->too_big)
        return;
    cache = f->cache;
    if (json) {
        if (len == 0 || len > f->max_entry)
            return;
        blob = entry_build(json, len, NULL, 0, &blen);
    } else {
        if (f->sse == NULL)
            return;
        blob = entry_build(NULL, 0, (const char *)evbuffer_pullup(f->sse, -1),
                           evbuffer_get_length(f->sse), &blen);
    }
    if (blob == NULL || entry_parse(blob, blen, &v) < 0)
        goto out;
    __atomic_fetch_add(&cache->stores, 1, __ATOMIC_RELAXED);
    if (cache->backend == GW_CACHE_MEMORY)
        mem_put(cache->mem, f->digest, f->ns,
                wall_ms() + (int64_t)f->ttl_s * 1000, blob, blen);
    else
        redis_put(cache, f, blob, blen);
    if (f->flight) {
        struct flight *fl = f->flight;
        f->flight = NULL;
        flight_land(cache, fl, &v);
    }
out:
    free(blob);
}

void gw_cache_fill_free(struct gw_cache_fill *f)
{
    if (f == NULL)
        return;
    if (f->flight) {
        struct flight *fl = f->flight;
        f->flight = NULL;
        flight_land(f->cache, fl, NULL);
    }
    if (f->sse)
        evbuffer_free(f->sse);
    free(f);
}

/* ------------------------------------------------------------ others */

void gw_cache_error_header(struct gw_http_req *req)
{
    if (req->path && strncmp(req->path, "/v1/", 4) == 0 &&
        strcmp(req->path, "/v1/models") != 0 &&
        strcmp(req->path, "/v1/feedback") != 0)
        add_cache_header(req, "bypass");
}

/* Deletes every entry of a namespace listed in its set, then the set. */
static const char purge_script[] =
    "local ks = redis.call('SMEMBERS', KEYS[1])\n"
    "local n = 0\n"
    "for i = 1, #ks do n = n + redis.call('DEL', ks[i]) end\n"
    "redis.call('DEL', KEYS[1])\n"
    "return n\n";

struct purge {
    struct gw_gateway *gw;   /* borrowed */
    struct gw_http_req *req; /* borrowed until answered or gone */
    struct gw_reqlog rl;
    char request_id[136];
    char ns[NS_MAX];
};

static void purge_answer(struct gw_gateway *gw, struct gw_http_req *req,
                         struct gw_reqlog *rl, const char *ns,
                         const char *backend, long n)
{
    struct evbuffer *b = evbuffer_new();

    if (b == NULL) {
        gw_proxy_error(gw, req, rl, 500, "out_of_memory", "out of memory");
        return;
    }
    evbuffer_add_printf(b, "{\"namespace\":\"%s\",\"backend\":\"%s\","
                           "\"purged\":%ld}", ns, backend, n);
    gw_http_add_header(req, "Cache-Control", "no-store");
    gw_http_reply_buffer(req, 200, "application/json", b);
    evbuffer_free(b);
    rl->status = 200;
    gw_proxy_log(gw, req, rl);
}

static void purge_gone(struct gw_http_req *req, void *arg)
{
    struct purge *p = arg;

    (void)req;
    p->rl.status = 499;
    p->rl.error = "client_closed";
    gw_proxy_log(p->gw, p->req, &p->rl);
    p->req = NULL;
}

static void on_purged(redisAsyncContext *ac, void *reply, void *priv)
{
    struct purge *p = priv;
    redisReply *r = reply;

    (void)ac;
    if (p->req) {
        gw_http_req_set_callbacks(p->req, NULL, NULL, NULL);
        if (r && r->type == REDIS_REPLY_INTEGER)
            purge_answer(p->gw, p->req, &p->rl, p->ns, "redis",
                         (long)r->integer);
        else
            gw_proxy_error(p->gw, p->req, &p->rl, 503, "cache_unavailable",
                           "the cache's redis failed the purge; retry");
    }
    free(p);
}

void gw_cache_purge(struct gw_gateway *gw, struct gw_http_req *req,
                    struct gw_reqlog *rl)
{
    struct gw_config *c = gw->config;
    json_t *root, *v;
    char ns[NS_MAX], set[sizeof(REDIS_NS_PREFIX) + NS_MAX];
    const char *s;
    size_t n;
    redisAsyncContext *ac;
    struct purge *p;

    if (gw_admin_check(gw, req, rl) < 0)
        return;
    if (!c->cache.enabled) {
        gw_proxy_error(gw, req, rl, 404, "cache_disabled",
                       "the cache is off: add \"cache\" to the "
                       "configuration");
        return;
    }
    root = json_loadb((const char *)evbuffer_pullup(req->body, -1),
                      evbuffer_get_length(req->body), 0, NULL);
    v = json_object_get(root, "namespace");
    s = json_string_value(v);
    n = s ? strlen(s) : 0;
    if (n == 0 || n > 64 || strspn(s, "abcdefghijklmnopqrstuvwxyz"
                                      "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                      "0123456789_.-") != n) {
        json_decref(root);
        gw_proxy_error(gw, req, rl, 400, "invalid_namespace",
                       "send {\"namespace\": \"NAME\"}: a key's "
                       "cache_namespace (its name by default), or "
                       "\"default\" for a gateway without keys");
        return;
    }
    memcpy(ns, s, n + 1);
    json_decref(root);
    if (gw->cache == NULL && worker_cache(gw, c) == NULL) {
        gw_proxy_error(gw, req, rl, 500, "out_of_memory", "out of memory");
        return;
    }
    if (gw->cache->backend == GW_CACHE_MEMORY) {
        purge_answer(gw, req, rl, ns, "memory",
                     mem_purge(gw->cache->mem, ns));
        return;
    }
    snprintf(set, sizeof(set), REDIS_NS_PREFIX "%s", ns);
    ac = gw_redisev_ctx(gw->cache->redis);
    if (ac == NULL || (p = calloc(1, sizeof(*p))) == NULL) {
        gw_http_add_header(req, "Retry-After", "1");
        gw_proxy_error(gw, req, rl, 503, "cache_unavailable",
                       "the cache's redis is not connected; retry");
        return;
    }
    p->gw = gw;
    p->req = req;
    p->rl = *rl;
    snprintf(p->request_id, sizeof(p->request_id), "%s", rl->request_id);
    p->rl.request_id = p->request_id;
    memcpy(p->ns, ns, n + 1);
    if (redisAsyncCommand(ac, on_purged, p, "EVAL %s 1 %s", purge_script,
                          set) != REDIS_OK) {
        free(p);
        gw_proxy_error(gw, req, rl, 503, "cache_unavailable",
                       "the cache's redis is not connected; retry");
        return;
    }
    gw_http_req_set_callbacks(req, purge_gone, NULL, p);
}

int gw_cache_fill_wants_usage(const struct gw_cache_fill *f)
{
    return f != NULL && f->no_options;
}

void gw_cache_stats(struct gw_gateway *gw, struct gw_http_req *req,
                    struct gw_reqlog *rl)
{
    struct gw_cache *cache = gw->cache;
    struct evbuffer *b;
    unsigned long t[7] = {0}, evictions;
    size_t entries, bytes;

    if (gw_admin_check(gw, req, rl) < 0)
        return;
    if (!gw->config->cache.enabled || cache == NULL) {
        gw_proxy_error(gw, req, rl, 404, "cache_disabled",
                       "the cache is off: add \"cache\" to the "
                       "configuration");
        return;
    }
    if ((b = evbuffer_new()) == NULL) {
        gw_proxy_error(gw, req, rl, 500, "out_of_memory", "out of memory");
        return;
    }
    /* the counters of every worker (each writes its own; read relaxed) */
    for (size_t i = 0; i < gw->n_workers; i++) {
        const struct gw_cache *w =
            __atomic_load_n(&gw->workers[i]->cache, __ATOMIC_ACQUIRE);
        if (w == NULL)
            continue;
        t[0] += __atomic_load_n(&w->hits, __ATOMIC_RELAXED);
        t[1] += __atomic_load_n(&w->misses, __ATOMIC_RELAXED);
        t[2] += __atomic_load_n(&w->bypasses, __ATOMIC_RELAXED);
        t[3] += __atomic_load_n(&w->stores, __ATOMIC_RELAXED);
        t[4] += __atomic_load_n(&w->errors, __ATOMIC_RELAXED);
        t[5] += __atomic_load_n(&w->coalesced, __ATOMIC_RELAXED);
        t[6] += __atomic_load_n(&w->pending, __ATOMIC_RELAXED);
    }
    mem_totals(cache->mem, &entries, &bytes, &evictions);
    evbuffer_add_printf(
        b, "{\"backend\":\"%s\",\"connected\":%s,\"entries\":%zu,"
           "\"bytes\":%zu,\"max_bytes\":%zu,\"hits\":%lu,\"misses\":%lu,"
           "\"bypasses\":%lu,\"stores\":%lu,\"errors\":%lu,"
           "\"coalesced\":%lu,\"evictions\":%lu,\"redis_pending\":%lu}",
        cache->backend == GW_CACHE_REDIS ? "redis" : "memory",
        cache->backend == GW_CACHE_MEMORY || gw_redisev_ctx(cache->redis)
            ? "true" : "false",
        entries, bytes, gw->config->cache.max_bytes, t[0], t[1], t[2], t[3],
        t[4], t[5], evictions, t[6]);
    gw_http_add_header(req, "Cache-Control", "no-store");
    gw_http_reply_buffer(req, 200, "application/json", b);
    evbuffer_free(b);
    rl->status = 200;
    gw_proxy_log(gw, req, rl);
}

void gw_cache_reload(struct gw_cache *cache, const struct gw_config *c)
{
    if (cache == NULL || !c->cache.enabled)
        return;
    if (c->cache.backend != cache->backend)
        gw_log_warn("reload: a new cache.backend takes a restart; the "
                    "cache stays on %s",
                    cache->backend == GW_CACHE_REDIS ? "redis" : "memory");
    cache->timeout_ms = c->redis.timeout_ms > 0 ? c->redis.timeout_ms : 50;
    mem_set_max(cache->mem, c->cache.max_bytes); /* the store is shared */
}

unsigned long gw_cache_errors(const struct gw_cache *cache)
{
    return __atomic_load_n(&cache->errors, __ATOMIC_RELAXED);
}
