/*
 * prompt.c - registry prompts on the request path (issue 7).
 *
 * A request may name a prompt instead of sending messages:
 *
 *   "prompt": {"name": "product_copy", "label": "production",
 *              "variables": {"product_name": "Kettle"}}
 *
 * This file resolves it against an in-memory registry snapshot (libregistry:
 * reg_snapshot_resolve picks the label's version or the caller's experiment
 * arm, reg_render fills the variables), rewrites the body into an ordinary
 * OpenAI request, and records an exposure when the request ends.
 *
 * Design:
 *  - The snapshot is immutable and refcounted. A watcher thread polls
 *    reg_watch (one pragma and one stat) every WATCH_MS; a change, or
 *    SIGHUP, loads a new snapshot there, and a loop timer swaps the pointer
 *    (no SQLite on the loop). With several workers, the first worker's
 *    gw_prompts owns the watcher and the exposure writer (the "shared"
 *    part, reached through p->sh); each other worker has a view
 *    (gw_prompts_view) with its own snapshot reference, version cache,
 *    pending table and body buffer, so the request path takes no lock:
 *    the watcher publishes the newest snapshot with a generation number
 *    under wmu, and each worker's timer takes a reference when the
 *    generation moved. Rendering happens inside the
 *    resolve stage, synchronously, so a request never holds a snapshot past
 *    its own stage: requests in flight are unaffected by a swap. A registry
 *    that cannot be read keeps the last good snapshot (logged once per
 *    failure streak).
 *  - The body is not rebuilt as a jansson tree. gw_jscan gives the spans of
 *    the "prompt" member and of the top-level keys the version's params
 *    name; the new body is spliced from the original bytes: the rendered
 *    messages and the missing params first, then the request's own members
 *    minus "prompt"; the variables are spans of the request too (jansson
 *    only dumps a version's params, once, into its vcache entry).
 *    proxy.c's gw_jscan has validated the whole body, so the passes here
 *    over it and its members use gw_jscan_trusted, which does not check
 *    the strings' UTF-8 again.
 *  - The exposure record is allocated at resolve time (one malloc holding
 *    its strings) and kept in a small hash table keyed by the request
 *    pointer; gw_proxy_log, which runs exactly once when a request ends,
 *    calls gw_prompt_finish to complete it and hand it to the writer thread
 *    (exposure.c). No SQL, no formatting of times, no output parsing on the
 *    event loop.
 *
 * Invariants:
 *  1. A request with a prompt reference is either rewritten completely or
 *     answered with an error; the upstream never sees a "prompt" object.
 *  2. Every request that passed resolution yields exactly one exposure
 *     record (queued, or counted as dropped).
 *  3. Errors name the problem: unknown prompt, label or version (404);
 *     malformed reference, missing variable, label and version both (400).
 */
#include "gateway/prompt.h"
#include "gateway/gateway.h"
#include "gateway/clock.h"
#include "gateway/error.h"
#include "gateway/exposure.h"
#include "gateway/http.h"
#include "gateway/jscan.h"
#include "gateway/log.h"
#include "registry/registry.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#define WATCH_MS 250              /* the watcher polls the database */
#define SWAP_MS 100               /* the loop takes a new snapshot */
#define HAND_MS 2                 /* finished records wait for more */
#define QUEUE_MAX 65536           /* exposure records waiting for the writer */
#define PEND_MIN 1024             /* pending table slots at first */
#define DONE_MAX GW_EXPOSURE_BULK  /* finished records applied at once */
#define MAX_PARAMS 32             /* params keys looked up in a request */
#define OUTPUT_MAX (256u << 10)   /* bytes of an answer kept for its text */
#define MAX_DEPTH 64
#define MAX_FIELDS 32             /* caller fields moved without a rescan */
#define VC_BUCKETS 256            /* version cache, power of two */

/* What the request path needs of one snapshot version, computed once:
 * its params as JSON text members, its variable names and its messages
 * compiled (escaped once, not per request). Valid as long
 * as the snapshot it came from is the current one (cleared on a swap). */
struct vcache {
    const struct reg_version *v;  /* borrowed from the current snapshot */
    struct vcache *next;          /* owned: the bucket's chain */
    size_t n_params;
    const char *keys[MAX_PARAMS]; /* borrowed from v->params */
    char *texts[MAX_PARAMS];      /* owned: ",\"key\":value" */
    size_t lens[MAX_PARAMS];
    /* where the value sits in texts[i], as gw_jscan would report it */
    size_t voff[MAX_PARAMS], vlen[MAX_PARAMS];
    enum gw_jscan_type vtype[MAX_PARAMS];
    int vesc[MAX_PARAMS];
    char model[256];              /* params.model, "" when none */
    size_t model_len;
    size_t model_k;               /* keys[model_k] is "model";
                                     MAX_PARAMS: none */
    size_t n_vars;
    const char **vars;            /* owned array of names borrowed from
                                     v->variables */
    struct reg_tpl *tpl;          /* owned: the messages, compiled */
    /* the caller's fields (proxy.c's: the same key strings every request)
     * matched to the params once: fmap[i] is the index of f[i]'s key in
     * keys[], FMAP_MESSAGES or FMAP_NONE; valid while f's keys are the
     * pointers in fkeys */
    size_t n_fkeys;
    const char *fkeys[MAX_FIELDS];
    int fmap[MAX_FIELDS];
    /* the answer's header lines, made once: "x-prompt-version: name@N",
     * and "x-prompt-experiment: exp; arm=K" for the experiment and arm
     * that served this version last (names are registry names: no byte a
     * header must not carry) */
    char vline[REG_NAME_MAX + 48];
    size_t vline_len;
    const struct reg_experiment *xexp;
    int xarm;
    char xline[2 * REG_NAME_MAX + REG_LABEL_MAX + 64];
    size_t xline_len;
    /* a record's members as the writer keeps them (keep_str), found once:
     * the version's prompt name, and the label and experiment that
     * served it last (NULL: not kept yet, or the writer keeps no more) */
    const char *kname;
    const char *klabel_of, *klabel;   /* klabel keeps the label klabel_of */
    const struct reg_experiment *kexp_of;
    const char *kexp;                 /* keeps kexp_of's name */
};
#define FMAP_NONE (-1)
#define FMAP_MESSAGES (-2)

/* a request in flight with a record: the table holds the owner itself, so
 * finding a record reads no record (they are cold by the time the answer
 * ends) */
struct pend {
    const void *owner;            /* NULL: free slot */
    struct gw_exposure_rec *r;
};

/* A finished request's values, kept in the loop's hot memory and written
 * into its record DONE_MAX at a time: stores to a cold record made the
 * next locked instruction of the request path wait for its lines, once a
 * request; applied together, their lines load side by side. Model and
 * backend longer than these go into the record at once. */
struct done {
    struct gw_exposure_rec *r;
    int status, stream;
    double latency_ms;
    long prompt_tokens, completion_tokens, total_tokens;
    const char *cache;            /* static */
    const char *mkept, *bkept;    /* kept by the writer (keep_str), or NULL */
    signed char mlen, blen;       /* -1: none (or kept) */
    char model[48], backend[32];
};

/* A record's members that many records share, kept once by the writer
 * (gw_exposure_intern): the last few of each kind this loop used, so that
 * finding one is a length and a memcmp of hot bytes, and a new one takes
 * the writer's lock once. */
enum { KEEP_PROMPT, KEEP_LABEL, KEEP_KEY, KEEP_EXPERIMENT, KEEP_MODEL,
       KEEP_BACKEND, KEEP_KINDS };
#define KEEP_WAYS 4
struct kept {
    const char *s;                /* borrowed from the writer; NULL: none */
    size_t len;
};

struct gw_prompts {
    struct gw_prompts *sh;        /* borrowed: the worker view that owns the
                                     shared part below (itself for the
                                     first); the fields marked "shared"
                                     are used through sh only */
    struct event_base *base;      /* borrowed */
    /* shared: registry, watcher thread and exposure writer */
    char *path;                   /* owned: registry database */
    char *exposures;              /* owned: "db" or a file path */
    int log_outputs;
    struct reg_snapshot *snap;    /* owned reference: this worker's current
                                     snapshot, read and swapped on its
                                     loop only */
    unsigned long seen_gen;       /* the generation snap came from */
    /* the watcher thread's side (watcher_main) */
    pthread_t watcher;
    int watching;                 /* the thread runs */
    pthread_mutex_t wmu;          /* guards next, wforce, wstop */
    pthread_cond_t wcv;
    struct reg_snapshot *latest;  /* owned: the newest snapshot loaded;
                                     NULL until a reload loads one */
    unsigned long gen;            /* bumped with each new latest */
    int wforce, wstop;
    struct reg_watch *watch;      /* owned, the watcher's only */
    /* this worker's: the swap timer, requests in flight, caches */
    struct event *timer;          /* owned */
    struct gw_exposure_local local; /* owned: this loop's blocks and the
                                     records it has not handed over yet */
    struct event *hand;           /* owned: hands them over, HAND_MS after
                                     the first */
    struct gw_exposure *writer;   /* owned */
    struct pend *pend;            /* owned: the requests that have a
                                     record, pend_cap slots (open
                                     addressing on the owner) */
    size_t pend_cap, n_pending;
    struct done done[DONE_MAX];   /* finished, their values not yet in
                                     their records (done_apply) */
    size_t n_done;
    struct kept kept[KEEP_KINDS][KEEP_WAYS];
    unsigned char kept_next[KEEP_KINDS];
    struct reg_buf out;           /* the body being built (reused) */
    struct vcache *vcache[VC_BUCKETS]; /* owned: per version of snap */
    int64_t wall_off;             /* CLOCK_REALTIME - CLOCK_MONOTONIC, in
                                     us, as of the last timer tick */
    struct reg_arm_memo *memo;    /* owned: arms of returning users, for
                                     snap (reset with each swap); NULL:
                                     none */
    int failing;                  /* the watcher's last load failed */
    unsigned long load_errors;    /* failed loads: the watcher adds, the
                                     loop reads (__atomic) */
    char stamp[128];              /* reg_watch_stamp of the last load */
    unsigned long dropped_seen;
};

/* ---- version cache ------------------------------------------------------- */

static void vcache_clear(struct gw_prompts *p)
{
    size_t i, k;

    for (i = 0; i < VC_BUCKETS; i++)
        while (p->vcache[i]) {
            struct vcache *c = p->vcache[i];
            p->vcache[i] = c->next;
            for (k = 0; k < c->n_params; k++)
                free(c->texts[k]);
            free(c->vars);
            reg_tpl_free(c->tpl);
            free(c);
        }
}

static size_t vc_bucket(const void *v)
{
    uintptr_t x = (uintptr_t)v;

    x ^= x >> 15;
    x *= 0x9E3779B97F4A7C15ULL;
    return (size_t)(x >> 40) & (VC_BUCKETS - 1);
}

/* A param's value as JSON text; a number as the shortest text that reads
 * back as the same double: 0.7, as published, not jansson's
 * 0.69999999999999996 (which also sends some backends' parsers down their
 * slow path: mockllm's costs twice the CPU). */
static char *dump_param(json_t *val)
{
    if (json_is_real(val)) {
        double d = json_real_value(val);
        char buf[40];
        int prec;

        for (prec = 15; prec < 17; prec++) {
            snprintf(buf, sizeof(buf), "%.*g", prec, d);
            if (strtod(buf, NULL) == d)
                break;
        }
        if (prec == 17)
            snprintf(buf, sizeof(buf), "%.17g", d);
        if (strpbrk(buf, ".eEn") == NULL) /* 2.0 stays a real: "2.0" */
            strcat(buf, ".0");
        return strdup(buf);
    }
    return json_dumps(val, JSON_COMPACT | JSON_ENCODE_ANY);
}

/* out = head + s + sep + decimal n + CRLF; returns its length, 0 when it
 * does not fit or s holds a control byte */
static size_t header_line(char *out, size_t cap, const char *head,
                          const char *s, const char *sep, int n)
{
    char num[16];
    size_t k = sizeof(num), lh = strlen(head), ls = strlen(s),
           lsep = strlen(sep), len;
    unsigned v = n < 0 ? 0 : (unsigned)n;

    do {
        num[--k] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    len = lh + ls + lsep + (sizeof(num) - k) + 2;
    if (len > cap)
        return 0;
    for (size_t i = 0; i < ls; i++) /* a value splits no answer */
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return 0;
    memcpy(out, head, lh);
    memcpy(out + lh, s, ls);
    memcpy(out + lh + ls, sep, lsep);
    memcpy(out + lh + ls + lsep, num + k, sizeof(num) - k);
    memcpy(out + len - 2, "\r\n", 2);
    return len;
}

static struct vcache *vcache_get(struct gw_prompts *p,
                                 const struct reg_version *v)
{
    struct vcache *c;
    const char *key;
    json_t *val;
    size_t b = vc_bucket(v), k;

    for (c = p->vcache[b]; c; c = c->next)
        if (c->v == v)
            return c;
    if ((c = calloc(1, sizeof(*c))) == NULL)
        return NULL;
    c->v = v;
    c->model_k = MAX_PARAMS; /* none */
    json_object_foreach(v->params, key, val) {
        char *t;
        if (c->n_params == MAX_PARAMS)
            break;
        /* whether the answer streams is the caller's choice, read before
         * this stage (publish refuses these keys; an imported or older
         * registry might still hold them) */
        if (strcmp(key, "stream") == 0 || strcmp(key, "stream_options") == 0)
            continue;
        if (strcmp(key, "model") == 0) {
            c->model_k = c->n_params;
            if (json_is_string(val) &&
                json_string_length(val) < sizeof(c->model)) {
                c->model_len = json_string_length(val);
                memcpy(c->model, json_string_value(val), c->model_len + 1);
            }
        }
        t = dump_param(val);
        if (t == NULL)
            goto oom;
        json_t *kj = json_string(key);
        char *ks = kj ? json_dumps(kj, JSON_ENCODE_ANY) : NULL;
        json_decref(kj);
        if (ks == NULL ||
            asprintf(&c->texts[c->n_params], ",%s:%s", ks, t) < 0) {
            free(ks);
            free(t);
            goto oom;
        }
        k = c->n_params;
        c->voff[k] = 1 + strlen(ks) + 1;
        c->vlen[k] = strlen(t);
        c->vesc[k] = 0;
        switch (json_typeof(val)) {
        case JSON_OBJECT: c->vtype[k] = GW_JSON_OBJECT; break;
        case JSON_ARRAY: c->vtype[k] = GW_JSON_ARRAY; break;
        case JSON_STRING:
            c->vtype[k] = GW_JSON_STRING;
            c->voff[k]++, c->vlen[k] -= 2; /* between the quotes */
            c->vesc[k] = strchr(t, '\\') != NULL;
            break;
        case JSON_TRUE: c->vtype[k] = GW_JSON_TRUE; break;
        case JSON_FALSE: c->vtype[k] = GW_JSON_FALSE; break;
        case JSON_NULL: c->vtype[k] = GW_JSON_NULL; break;
        default: c->vtype[k] = GW_JSON_NUMBER; break;
        }
        free(ks);
        free(t);
        c->keys[k] = key;
        c->lens[k] = strlen(c->texts[k]);
        c->n_params++;
    }
    c->n_vars = json_array_size(v->variables);
    if ((c->vars = calloc(c->n_vars + 1, sizeof(*c->vars))) == NULL)
        goto oom;
    for (k = 0; k < c->n_vars; k++)
        c->vars[k] = json_string_value(json_array_get(v->variables, k));
    if ((c->tpl = reg_tpl_compile(v)) == NULL)
        goto oom;
    c->vline_len = header_line(c->vline, sizeof(c->vline),
                               "x-prompt-version: ", v->prompt, "@",
                               v->version);
    c->next = p->vcache[b];
    p->vcache[b] = c;
    return c;
oom:
    for (k = 0; k < c->n_params; k++)
        free(c->texts[k]);
    free(c->vars);
    free(c);
    return NULL;
}

/* a variable's span as the renderer's value (REG_VALUE_NONE: absent) */
static void var_value(const struct gw_jscan_field *f, struct reg_value *out)
{
    out->text = f->val;
    out->len = f->len;
    switch (f->type) {
    case GW_JSON_NONE: out->type = REG_VALUE_NONE; break;
    case GW_JSON_STRING: out->type = REG_VALUE_STRING; break;
    case GW_JSON_NUMBER: out->type = REG_VALUE_NUMBER; break;
    case GW_JSON_TRUE: out->type = REG_VALUE_TRUE; break;
    case GW_JSON_FALSE: out->type = REG_VALUE_FALSE; break;
    default: out->type = REG_VALUE_OTHER; break;
    }
}

int gw_prompt_lookup_var(void *arg, const char *name,
                         struct reg_value *out)
{
    const struct gw_prompt_vars *l = arg;
    size_t i;

    for (i = 0; i < l->n; i++)
        if (strcmp(l->f[i].key, name) == 0)
            break;
    if (i == l->n || l->f[i].type == GW_JSON_NONE)
        return -1;
    var_value(&l->f[i], out);
    return 0;
}

static int64_t wall_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* wall-clock time less monotonic time: a request's wall-clock start is
 * its start_us plus this, with no clock read on the request path (the
 * timer refreshes it, following clock steps within SWAP_MS) */
static int64_t wall_offset(void)
{
    return wall_us() - gw_now_us();
}

/* ---- snapshot ------------------------------------------------------------ */

/*
 * The watcher thread: every WATCH_MS (or at once on SIGHUP) it asks
 * reg_watch whether the database changed and, when what a snapshot holds
 * changed, loads a new snapshot and leaves it in p->sh->next. The loop's timer
 * takes it from there. So no SQLite call ever runs on the event loop, and a
 * slow or locked database delays a reload, never a request.
 */
static void *watcher_main(void *arg)
{
    struct gw_prompts *p = arg;
    char stamp[sizeof(p->sh->stamp)], *err = NULL;
    struct reg_snapshot *s;
    struct timespec until;
    int rc, force;

    pthread_mutex_lock(&p->sh->wmu);
    while (!p->sh->wstop) {
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += WATCH_MS * 1000000L;
        if (until.tv_nsec >= 1000000000L)
            until.tv_sec++, until.tv_nsec -= 1000000000L;
        while (!p->sh->wstop && !p->sh->wforce &&
               pthread_cond_timedwait(&p->sh->wcv, &p->sh->wmu, &until) == 0)
            ;
        if (p->sh->wstop)
            break;
        force = p->sh->wforce;
        p->sh->wforce = 0;
        pthread_mutex_unlock(&p->sh->wmu);

        /* the exposure writer's commits change data_version too: reload
         * only when what a snapshot holds changed */
        rc = reg_watch_changed(p->sh->watch, &err);
        if (rc >= 0 && (rc == 1 || force || p->sh->failing))
            rc = reg_watch_stamp(p->sh->watch, stamp, sizeof(stamp), &err) < 0
                     ? -1 : strcmp(stamp, p->sh->stamp) != 0 || force ||
                                p->sh->failing;
        s = NULL;
        if (rc == 1 && (s = reg_snapshot_load(p->sh->path, &err)) == NULL)
            rc = -1;
        if (rc < 0) {
            if (!p->sh->failing)
                gw_log_error("registry: %s; still serving the previous "
                             "snapshot", err ? err : "out of memory");
            p->sh->failing = 1;
            __atomic_fetch_add(&p->sh->load_errors, 1, __ATOMIC_RELAXED);
        } else if (s) {
            if (p->sh->failing)
                gw_log_info("registry: readable again");
            p->sh->failing = 0;
            memcpy(p->sh->stamp, stamp, sizeof(stamp));
            gw_log_info("registry: snapshot of '%s' loaded (%s): %zu "
                        "prompts, %zu versions", p->sh->path,
                        force ? "reload" : "the database changed",
                        reg_snapshot_prompts(s), reg_snapshot_versions(s));
        }
        free(err);
        err = NULL;
        pthread_mutex_lock(&p->sh->wmu);
        if (s) {
            reg_snapshot_unref(p->sh->latest); /* each worker took a ref */
            p->sh->latest = s;
            p->sh->gen++;
        }
    }
    pthread_mutex_unlock(&p->sh->wmu);
    /* closed on this thread, which opened the snapshots' connections: a
     * loop may have its own file table by now (main.c, own_file_table) */
    reg_watch_free(p->sh->watch);
    p->sh->watch = NULL;
    return NULL;
}

/* A worker loop's side: swap in the newest snapshot the watcher loaded
 * (each worker holds its own reference and version cache), and, on the
 * first worker, report dropped exposures. */
static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct gw_prompts *p = arg;
    struct gw_exposure_stats st;
    struct reg_snapshot *s;

    (void)fd, (void)what;
    p->wall_off = wall_offset();
    s = NULL;
    pthread_mutex_lock(&p->sh->wmu);
    if (p->seen_gen != p->sh->gen) {
        s = reg_snapshot_ref(p->sh->latest);
        p->seen_gen = p->sh->gen;
    }
    pthread_mutex_unlock(&p->sh->wmu);
    if (s) {
        vcache_clear(p);
        reg_arm_memo_reset(p->memo);
        reg_snapshot_unref(p->snap);
        p->snap = s;
    }
    if (p->sh != p)
        return; /* the first worker reports drops */
    gw_exposure_stats(p->sh->writer, &st);
    if (st.dropped > p->dropped_seen) {
        gw_log_warn("exposure log: %lu records dropped so far (queue of %d "
                    "full: the writer cannot keep up)", st.dropped,
                    QUEUE_MAX);
        p->dropped_seen = st.dropped;
    }
}

static void done_apply(struct gw_prompts *p);

static void on_hand(evutil_socket_t fd, short what, void *arg)
{
    struct gw_prompts *p = arg;

    (void)fd, (void)what;
    done_apply(p);
    gw_exposure_hand(p->sh->writer, &p->local);
}

/* the loop's side of the writer's queue at exit: what it staged queued */
static void local_close(struct gw_prompts *p)
{
    if (p->hand)
        event_free(p->hand);
    if (p->sh->writer) {
        done_apply(p);
        gw_exposure_hand(p->sh->writer, &p->local);
    }
    gw_exposure_local_clear(&p->local);
}

/* Requests still pending at exit never ended: their records go. */
static void pending_clear(struct gw_prompts *p)
{
    for (size_t i = 0; i < p->pend_cap; i++)
        if (p->pend[i].owner)
            gw_exposure_rec_free(p->pend[i].r);
    free(p->pend);
    p->pend = NULL;
    p->pend_cap = p->n_pending = 0;
}

struct gw_prompts *gw_prompts_view(struct gw_prompts *first,
                                   struct event_base *base)
{
    struct gw_prompts *p = calloc(1, sizeof(*p));
    struct timeval tv = {0, SWAP_MS * 1000};

    if (p == NULL)
        return NULL;
    p->sh = first;
    p->base = base;
    p->memo = reg_arm_memo_new(); /* NULL: assigned without */
    p->wall_off = wall_offset();
    pthread_mutex_lock(&first->wmu);
    p->snap = reg_snapshot_ref(first->latest ? first->latest : first->snap);
    p->seen_gen = first->gen;
    pthread_mutex_unlock(&first->wmu);
    if ((p->timer = event_new(base, -1, EV_PERSIST, on_timer, p)) == NULL ||
        (p->hand = event_new(base, -1, 0, on_hand, p)) == NULL) {
        gw_prompts_free(p);
        return NULL;
    }
    event_add(p->timer, &tv);
    return p;
}

struct gw_prompts *gw_prompts_new(struct event_base *base,
                                  const struct gw_registry_conf *conf,
                                  char *err, size_t errlen)
{
    struct gw_prompts *p = calloc(1, sizeof(*p));
    struct timeval tv = {0, SWAP_MS * 1000};
    char *e = NULL;
    int file;

    if (p == NULL)
        goto oom;
    p->sh = p;
    p->memo = reg_arm_memo_new();
    p->wall_off = wall_offset();
    pthread_mutex_init(&p->sh->wmu, NULL);
    pthread_cond_init(&p->sh->wcv, NULL);
    p->base = base;
    p->sh->log_outputs = conf->log_outputs;
    p->sh->path = strdup(conf->path);
    p->sh->exposures = strdup(conf->exposures ? conf->exposures : "db");
    p->timer = event_new(base, -1, EV_PERSIST, on_timer, p);
    p->hand = event_new(base, -1, 0, on_hand, p);
    if (!p->sh->path || !p->sh->exposures || !p->timer || !p->hand)
        goto oom;
    file = strcmp(p->sh->exposures, "db") != 0;
    /* the writer first: opening the database read-write applies pending
     * migrations, which the snapshot then expects */
    p->sh->writer = gw_exposure_new(p->sh->path, file ? p->sh->exposures : NULL,
                                QUEUE_MAX, err, errlen);
    if (p->sh->writer == NULL)
        goto fail;
    /* the first snapshot before serving: a registry that cannot be read
     * at start is an error, not an empty registry */
    if ((p->sh->watch = reg_watch_new(p->sh->path, &e)) == NULL ||
        reg_watch_changed(p->sh->watch, &e) < 0 ||
        reg_watch_stamp(p->sh->watch, p->sh->stamp, sizeof(p->sh->stamp),
                        &e) < 0 ||
        (p->snap = reg_snapshot_load(p->sh->path, &e)) == NULL) {
        snprintf(err, errlen, "registry: %s", e ? e : "out of memory");
        free(e);
        goto fail;
    }
    if (pthread_create(&p->sh->watcher, NULL, watcher_main, p) != 0) {
        snprintf(err, errlen, "registry: cannot start the watcher thread");
        goto fail;
    }
    p->sh->watching = 1;
    gw_log_info("registry: '%s': %zu prompts, %zu versions; exposures to %s%s",
                p->sh->path, reg_snapshot_prompts(p->snap),
                reg_snapshot_versions(p->snap),
                file ? p->sh->exposures : "the registry database",
                p->sh->log_outputs ? " with outputs" : "");
    event_add(p->timer, &tv);
    return p;
oom:
    snprintf(err, errlen, "registry: out of memory");
fail:
    gw_prompts_free(p);
    return NULL;
}

int gw_prompts_check(const struct gw_registry_conf *conf, char *msg,
                     size_t len)
{
    struct reg_snapshot *s;
    char *e = NULL, dir[4096], *slash;

    if ((s = reg_snapshot_load(conf->path, &e)) == NULL) {
        snprintf(msg, len, "registry.path: %s", e ? e : "out of memory");
        free(e);
        return -1;
    }
    if (conf->exposures && strcmp(conf->exposures, "db") != 0) {
        snprintf(dir, sizeof(dir), "%s", conf->exposures);
        slash = strrchr(dir, '/');
        if (slash == NULL)
            snprintf(dir, sizeof(dir), ".");
        else if (slash == dir)
            dir[1] = '\0';
        else
            *slash = '\0';
        if (access(conf->exposures, W_OK) != 0 && access(dir, W_OK) != 0) {
            snprintf(msg, len, "registry.exposures: cannot write '%s' (nor "
                     "create it in '%s')", conf->exposures, dir);
            reg_snapshot_unref(s);
            return -1;
        }
    }
    snprintf(msg, len, "registry '%s' ok: %zu prompts, %zu versions; "
             "exposures to %s%s", conf->path, reg_snapshot_prompts(s),
             reg_snapshot_versions(s),
             conf->exposures && strcmp(conf->exposures, "db") != 0
                 ? conf->exposures : "its exposures table",
             conf->log_outputs ? " with outputs" : "");
    reg_snapshot_unref(s);
    return 0;
}

void gw_prompts_reload(struct gw_prompts *p,
                       const struct gw_registry_conf *conf)
{
    if (conf->path == NULL || strcmp(conf->path, p->sh->path) != 0 ||
        strcmp(conf->exposures ? conf->exposures : "db", p->sh->exposures) != 0)
        gw_log_warn("reload: a new registry path or exposures target takes "
                    "a restart; still using '%s' and '%s'", p->sh->path,
                    p->sh->exposures);
    /* read by every worker's requests */
    __atomic_store_n(&p->sh->log_outputs, conf->log_outputs, __ATOMIC_RELAXED);
    pthread_mutex_lock(&p->sh->wmu);
    p->sh->wforce = 1;
    pthread_cond_signal(&p->sh->wcv);
    pthread_mutex_unlock(&p->sh->wmu);
}

void gw_prompts_free(struct gw_prompts *p)
{
    if (p == NULL)
        return;
    if (p->sh != p) { /* another worker's view: its own parts only */
        if (p->timer)
            event_free(p->timer);
        local_close(p);
        pending_clear(p);
        vcache_clear(p);
        reg_arm_memo_free(p->memo);
        reg_snapshot_unref(p->snap);
        free(p->out.p);
        free(p);
        return;
    }
    if (p->sh->watching) {
        pthread_mutex_lock(&p->sh->wmu);
        p->sh->wstop = 1;
        pthread_cond_signal(&p->sh->wcv);
        pthread_mutex_unlock(&p->sh->wmu);
        pthread_join(p->sh->watcher, NULL);
    }
    if (p->timer)
        event_free(p->timer);
    local_close(p);
    pending_clear(p);
    if (p->sh->writer) {
        struct gw_exposure_stats st;
        gw_exposure_flush(p->sh->writer);
        gw_exposure_stats(p->sh->writer, &st);
        gw_log_info("exposure log: %lu records written, %lu dropped, %lu "
                    "failed", st.written, st.dropped, st.failed);
        gw_exposure_free(p->sh->writer);
    }
    reg_watch_free(p->sh->watch);
    vcache_clear(p);
    reg_arm_memo_free(p->memo);
    reg_snapshot_unref(p->snap);
    reg_snapshot_unref(p->sh->latest);
    pthread_mutex_destroy(&p->sh->wmu);
    pthread_cond_destroy(&p->sh->wcv);
    free(p->out.p);
    free(p->sh->path);
    free(p->sh->exposures);
    free(p);
}

/* ---- pending requests ---------------------------------------------------- */

/* log_outputs as of now (a reload may turn it on or off) */
static int logs_outputs(const struct gw_prompts *p)
{
    return __atomic_load_n(&p->sh->log_outputs, __ATOMIC_RELAXED);
}

static size_t pend_home(const struct gw_prompts *p, const void *req)
{
    uintptr_t x = (uintptr_t)req;

    x ^= x >> 17;
    x *= 0x9E3779B97F4A7C15ULL;
    return (size_t)(x >> 32) & (p->pend_cap - 1);
}

/* the slot of req, or of the free slot where it would go */
static size_t pend_slot(const struct gw_prompts *p, const void *req)
{
    size_t i = pend_home(p, req);

    while (p->pend[i].owner != NULL && p->pend[i].owner != req)
        i = (i + 1) & (p->pend_cap - 1);
    return i;
}

/* r pending for req (at most half the slots used: the table doubles);
 * 0, or -1 out of memory */
static int pending_add(struct gw_prompts *p, const void *req,
                       struct gw_exposure_rec *r)
{
    if ((p->n_pending + 1) * 2 > p->pend_cap) {
        struct pend *old = p->pend;
        size_t old_cap = p->pend_cap, i;
        size_t cap = old_cap ? old_cap * 2 : PEND_MIN;
        struct pend *t = calloc(cap, sizeof(*t));
        if (t == NULL)
            return -1;
        p->pend = t, p->pend_cap = cap;
        for (i = 0; i < old_cap; i++)
            if (old[i].owner)
                p->pend[pend_slot(p, old[i].owner)] = old[i];
        free(old);
    }
    p->pend[pend_slot(p, req)] = (struct pend){req, r};
    p->n_pending++;
    return 0;
}

static struct gw_exposure_rec *pending_find(struct gw_prompts *p,
                                            const void *req)
{
    return p->n_pending ? p->pend[pend_slot(p, req)].r : NULL;
}

/* removes req's record from the table (linear probing's backward shift:
 * no tombstones) and returns it */
static struct gw_exposure_rec *pending_take(struct gw_prompts *p,
                                            const void *req)
{
    size_t mask = p->pend_cap - 1, i, j, k;
    struct gw_exposure_rec *r;

    if (p->n_pending == 0 || (r = p->pend[i = pend_slot(p, req)].r) == NULL)
        return NULL;
    for (j = i;;) {
        j = (j + 1) & mask;
        if (p->pend[j].owner == NULL)
            break;
        k = pend_home(p, p->pend[j].owner);
        /* j moves into the hole at i unless its home lies in (i, j] */
        if (i <= j ? (k <= i || k > j) : (k <= i && k > j)) {
            p->pend[i] = p->pend[j];
            i = j;
        }
    }
    p->pend[i] = (struct pend){NULL, NULL};
    p->n_pending--;
    return r;
}

/* s[0..len) as the writer keeps it (kind: KEEP_*), or NULL: copy it */
static const char *keep_str(struct gw_prompts *p, int kind, const char *s,
                            size_t len)
{
    struct kept *k = p->kept[kind];
    const char *t;
    int i;

    for (i = 0; i < KEEP_WAYS; i++)
        if (k[i].s != NULL && k[i].len == len && memcmp(k[i].s, s, len) == 0)
            return k[i].s;
    if ((t = gw_exposure_intern(p->sh->writer, s, len)) != NULL) {
        i = p->kept_next[kind]++ % KEEP_WAYS;
        k[i].s = t, k[i].len = len;
    }
    return t;
}

/* *kept, found by keep_str the first time: s as the writer keeps it, or
 * NULL (copy it) */
static const char *keep_once(struct gw_prompts *p, int kind,
                             const char **kept, const char *s)
{
    if (*kept == NULL && s != NULL)
        *kept = keep_str(p, kind, s, strlen(s));
    return *kept;
}

/* the finished records' values into the records, which go to the writer */
static void done_apply(struct gw_prompts *p)
{
    size_t i;

    for (i = 0; i < p->n_done; i++) {
        struct done *d = &p->done[i];
        struct gw_exposure_rec *r = d->r;
        r->ex.status = d->status;
        r->ex.stream = d->stream;
        r->ex.latency_ms = d->latency_ms;
        r->ex.prompt_tokens = d->prompt_tokens;
        r->ex.completion_tokens = d->completion_tokens;
        r->ex.total_tokens = d->total_tokens;
        r->ex.cache = d->cache;
        if (d->mkept)
            r->ex.model = d->mkept;
        else if (d->mlen >= 0)
            r->ex.model = gw_exposure_rec_str(r, d->model, (size_t)d->mlen);
        if (d->bkept)
            r->ex.backend = d->bkept;
        else if (d->blen >= 0)
            r->ex.backend = gw_exposure_rec_str(r, d->backend,
                                                (size_t)d->blen);
        gw_exposure_stage(p->sh->writer, &p->local, r);
    }
    p->n_done = 0;
}

/* ---- resolve ------------------------------------------------------------- */

static const char *skip_ws(const char *s, const char *end)
{
    while (s < end && (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r'))
        s++;
    return s;
}

static const char *skip_ws_back(const char *s, const char *begin)
{
    while (s > begin &&
           (s[-1] == ' ' || s[-1] == '\t' || s[-1] == '\n' || s[-1] == '\r'))
        s--;
    return s;
}

/*
 * Finds the member `"prompt": value` around the value span [v, v+vlen) of a
 * validated object body, and the bytes to cut with one adjacent comma.
 * Returns 0 with [*cut0, *cut1), or -1 when the key is not where it must be.
 */
static int member_span(const char *body, size_t len, const char *v,
                       size_t vlen, const char **cut0, const char **cut1)
{
    const char *end = body + len, *k, *a, *b;

    k = skip_ws_back(v, body);
    if (k <= body || k[-1] != ':')
        return -1;
    k = skip_ws_back(k - 1, body);
    if (k - body < 8 || memcmp(k - 8, "\"prompt\"", 8) != 0)
        return -1;
    a = k - 8;
    b = skip_ws(v + vlen, end);
    if (b < end && *b == ',') {
        *cut0 = a, *cut1 = b + 1;
        return 0;
    }
    k = skip_ws_back(a, body);
    if (k > body && k[-1] == ',')
        a = k - 1;
    *cut0 = a, *cut1 = v + vlen;
    return 0;
}

static int fail(struct gw_gateway *gw, struct gw_http_req *req,
                struct gw_reqlog *rl, int status, const char *code,
                const char *fmt, ...) __attribute__((format(printf, 6, 7)));

static int fail(struct gw_gateway *gw, struct gw_http_req *req,
                struct gw_reqlog *rl, int status, const char *code,
                const char *fmt, ...)
{
    char msg[768];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    gw_proxy_error(gw, req, rl, status, code, msg);
    return -1;
}

void gw_prompt_scan_init(struct gw_prompt_scan *ps,
                         struct gw_jscan_field *prompt)
{
    static const char *const keys[4] = {"name", "label", "version",
                                        "variables"};
    size_t i;

    for (i = 0; i < 4; i++) {
        ps->f[i].key = keys[i];
        ps->f[i].sub = NULL;
    }
    ps->f[3].sub = &ps->vars;
    ps->prompt = (struct gw_jscan_sub){.fields = ps->f, .n_fields = 4};
    ps->vars = (struct gw_jscan_sub){.members = ps->var,
                                     .cap = GW_PROMPT_SCAN_VARS};
    prompt->sub = &ps->prompt;
}

/*
 * Fills vf[0..n) (keys set: the version's variables) from the members the
 * body's scan kept of the request's variables: a key written with escapes
 * matches by its decoded value. Returns 0, or -1 with *dup the variable
 * the request gives twice.
 */
static int match_vars(const struct gw_jscan_sub *vs, struct gw_jscan_field *vf,
                      size_t n, const char **dup)
{
    char buf[REG_VARNAME_MAX + 1];
    size_t i, j, klen;
    const char *key;

    for (i = 0; i < vs->n; i++) {
        const struct gw_jscan_member *m = &vs->members[i];
        key = m->key;
        klen = m->klen;
        if (m->kescaped) {
            struct gw_jscan_field k = {.type = GW_JSON_STRING, .val = m->key,
                                       .len = m->klen, .escaped = 1};
            long dn = gw_jscan_string(&k, buf, sizeof(buf));
            if (dn < 0)
                continue; /* longer than any variable name */
            key = buf;
            klen = (size_t)dn;
        }
        for (j = 0; j < n; j++) {
            const char *name = vf[j].key;
            if (name[0] != (klen ? key[0] : '\0') ||
                strncmp(name, key, klen) != 0 || name[klen] != '\0')
                continue;
            if (vf[j].type != GW_JSON_NONE) {
                *dup = name;
                return -1;
            }
            vf[j].type = m->v.type;
            vf[j].val = m->v.val;
            vf[j].len = m->v.len;
            vf[j].escaped = m->v.escaped;
            break;
        }
    }
    return 0;
}

static int bad_name(struct gw_gateway *gw, struct gw_http_req *req,
                    struct gw_reqlog *rl)
{
    return fail(gw, req, rl, 400, "invalid_prompt", "\"prompt.name\" must be "
                "a prompt name ([a-z0-9_.-], at most %d bytes)", REG_NAME_MAX);
}

static int bad_label(struct gw_gateway *gw, struct gw_http_req *req,
                     struct gw_reqlog *rl)
{
    return fail(gw, req, rl, 400, "invalid_prompt", "\"prompt.label\" must be "
                "a label name ([a-z0-9_-], at most %d bytes)", REG_LABEL_MAX);
}

static int bad_member(struct gw_gateway *gw, struct gw_http_req *req,
                      struct gw_reqlog *rl)
{
    return fail(gw, req, rl, 400, "invalid_prompt", "\"prompt\" must be "
                "written once, as a plain top-level key");
}

/* A string field into out (NUL-terminated); -1 when not a string that fits. */
static int field_str(const struct gw_jscan_field *f, char *out, size_t cap)
{
    return gw_jscan_string(f, out, cap) < 0 ? -1 : 0;
}

/* vc's map of the caller's fields f (see struct vcache), made on the
 * first request that brings these keys; NULL when there are too many */
static const int *field_map(struct vcache *vc, const struct gw_jscan_field *f,
                            size_t n_f)
{
    size_t i, k;

    if (n_f > MAX_FIELDS)
        return NULL;
    if (vc->n_fkeys == n_f) {
        for (i = 0; i < n_f && f[i].key == vc->fkeys[i]; i++)
            ;
        if (i == n_f)
            return vc->fmap;
    }
    for (i = 0; i < n_f; i++) {
        vc->fkeys[i] = f[i].key;
        vc->fmap[i] = strcmp(f[i].key, "messages") == 0 ? FMAP_MESSAGES
                                                        : FMAP_NONE;
        for (k = 0; k < vc->n_params && vc->fmap[i] == FMAP_NONE; k++)
            if (strcmp(f[i].key, vc->keys[k]) == 0)
                vc->fmap[i] = (int)k;
    }
    vc->n_fkeys = n_f;
    return vc->fmap;
}

/*
 * Fills want[0] ("messages") and want[1 + k] (the version's param k) from
 * the caller's fields f when they account for every member of the body
 * (n_members, counted by the caller's scan): a key f does not capture is
 * then absent. Returns -1, filling nothing, when the body has members f
 * did not capture (or there is no map): a scan must look for them.
 */
static int known_fields(const struct gw_jscan_field *f, size_t n_f,
                        const int *fmap, size_t n_members,
                        struct gw_jscan_field *want, size_t n_want)
{
    size_t i, found = 0;

    if (fmap == NULL)
        return -1;
    for (i = 0; i < n_f; i++)
        found += f[i].type != GW_JSON_NONE;
    if (found != n_members)
        return -1;
    for (i = 0; i < n_want; i++)
        want[i].type = GW_JSON_NONE;
    for (i = 0; i < n_f; i++) {
        size_t w = fmap[i] == FMAP_MESSAGES ? 0 : (size_t)(fmap[i] + 1);
        if (fmap[i] != FMAP_NONE && w < n_want) {
            const char *key = want[w].key;
            want[w] = f[i];
            want[w].key = key;
        }
    }
    return 0;
}

int gw_prompt_resolve(struct gw_gateway *gw, struct gw_http_req *req,
                      struct gw_reqlog *rl, struct gw_jscan_field *f,
                      size_t n_f, size_t n_members, size_t pi, size_t ui,
                      const char *key_name, char *model, size_t model_cap)
{
    const struct gw_jscan_field *pf = &f[pi], *uf = &f[ui];
    struct gw_prompts *p = gw->prompts;
    struct gw_jscan_field own[4], *pfs;
    const struct gw_jscan_sub *vs;
    const char *dup;
    struct gw_jscan_field bf[MAX_PARAMS + 1], vf[REG_VARIABLES_MAX];
    struct reg_value vals[REG_VARIABLES_MAX];
    struct vcache *vc;
    const int *fmap;
    size_t ins[MAX_PARAMS], offs[MAX_FIELDS], seg1, seg2, msg_off, msg_len;
    const char *nbody, *end_brace;
    char name[REG_NAME_MAX + 1], label[REG_LABEL_MAX + 1];
    char user[REG_USER_MAX + 1];
    char err[256];
    const char *uid = NULL, *body, *cut0, *cut1, *rest, *rs[7], *ks[7];
    size_t rlen[7];
    struct reg_resolved res;
    struct gw_exposure_rec *r;
    static const size_t kept_rs[4] = {1, 2, 4, 5}; /* rs[] it may keep */
    size_t len, i, k, need;
    char *e = NULL;
    long version = 0;
    int rc = -1;

    if (p == NULL)
        return fail(gw, req, rl, 400, "registry_not_configured",
                    "this request names a registry prompt, but the gateway "
                    "has no registry: set \"registry\": {\"path\": ...} in "
                    "its configuration");
    if (strcmp(req->path, "/v1/chat/completions") != 0)
        return fail(gw, req, rl, 400, "invalid_prompt",
                    "registry prompts are served on /v1/chat/completions "
                    "only");
    /* the prompt object's members: captured by the body's scan, or found
     * by a pass of its own */
    if (pf->sub != NULL) {
        pfs = pf->sub->fields;
        if (pf->sub->dup >= 0)
            return fail(gw, req, rl, 400, "invalid_prompt", "\"prompt\": "
                        "duplicate key '%s'", pfs[pf->sub->dup].key);
    } else {
        static const char *const keys[4] = {"name", "label", "version",
                                            "variables"};
        memset(own, 0, sizeof(own));
        for (i = 0; i < 4; i++)
            own[i].key = keys[i];
        pfs = own;
        if (gw_jscan_trusted(pf->val, pf->len, MAX_DEPTH, pfs, 4, err,
                             sizeof(err)) < 0)
            return fail(gw, req, rl, 400, "invalid_prompt", "\"prompt\": %s",
                        err);
    }
    /* the caller: the request's user, else x-user-id, else the key */
    if (uf->type == GW_JSON_STRING) {
        if (uf->len > REG_USER_MAX || field_str(uf, user, sizeof(user)) < 0)
            return fail(gw, req, rl, 400, "invalid_user",
                        "\"user\" must be a string of at most %d bytes",
                        REG_USER_MAX);
        uid = user;
    } else if ((uid = gw_http_req_header(req, "x-user-id")) != NULL) {
        if (strlen(uid) > REG_USER_MAX)
            return fail(gw, req, rl, 400, "invalid_user",
                        "x-user-id must be at most %d bytes", REG_USER_MAX);
    } else {
        uid = key_name;
    }
    if (uid && *uid == '\0')
        uid = NULL;
    /* the user's arm memo line loads while the prompt is parsed */
    reg_arm_memo_prefetch(p->memo, uid);
    /* the name's and label's characters are checked when the snapshot
     * does not know them: what it knows is a registry name */
    if (pfs[0].type != GW_JSON_STRING ||
        field_str(&pfs[0], name, sizeof(name)) < 0)
        return bad_name(gw, req, rl);
    label[0] = '\0';
    if (pfs[1].type != GW_JSON_NONE && pfs[1].type != GW_JSON_NULL &&
        (pfs[1].type != GW_JSON_STRING ||
         field_str(&pfs[1], label, sizeof(label)) < 0))
        return bad_label(gw, req, rl);
    if (pfs[2].type != GW_JSON_NONE && pfs[2].type != GW_JSON_NULL) {
        char num[16], *end;
        if (pfs[2].type != GW_JSON_NUMBER || pfs[2].len >= sizeof(num))
            return fail(gw, req, rl, 400, "invalid_prompt",
                        "\"prompt.version\" must be a version number (1, 2, "
                        "...)");
        memcpy(num, pfs[2].val, pfs[2].len);
        num[pfs[2].len] = '\0';
        version = strtol(num, &end, 10);
        if (*end != '\0' || version < 1 || version > 1000000000L)
            return fail(gw, req, rl, 400, "invalid_prompt",
                        "\"prompt.version\" must be a version number (1, 2, "
                        "...), not %s", num);
    }
    if (version > 0 && label[0])
        return fail(gw, req, rl, 400, "invalid_prompt",
                    "\"prompt\" names both a label ('%s') and a version (%ld):"
                    " give one of them", label, version);
    if (pfs[3].type != GW_JSON_NONE && pfs[3].type != GW_JSON_NULL &&
        pfs[3].type != GW_JSON_OBJECT)
        return fail(gw, req, rl, 400, "invalid_prompt",
                    "\"prompt.variables\" must be an object of strings, "
                    "numbers or booleans");
    /* what needs no version, while the arm memo's line loads: the
     * "prompt" member's place, the key as the writer keeps it, the
     * record's own strings' lengths (side by side, the memo's lookup had
     * cost ~0.24 us a request more than its instructions) */
    len = evbuffer_get_length(req->body);
    body = (const char *)evbuffer_pullup(req->body, -1);
    if (member_span(body, len, pf->val, pf->len, &cut0, &cut1) < 0)
        return bad_member(gw, req, rl);
    ks[4] = key_name ? keep_str(p, KEEP_KEY, key_name, strlen(key_name))
                     : NULL;
    rlen[0] = rl->request_id ? strlen(rl->request_id) : 0;
    rlen[3] = uid ? strlen(uid) : 0;
    if (reg_snapshot_resolve_memo(p->snap, name, label, (int)version, uid,
                                  p->memo, &res, &e) < 0) {
        if (!reg_name_valid(name))
            rc = bad_name(gw, req, rl);
        else if (label[0] && strcmp(label, "latest") != 0 &&
                 !reg_label_valid(label))
            rc = bad_label(gw, req, rl);
        else
            rc = fail(gw, req, rl, 404, "prompt_not_found",
                      "%s (promptctl list shows the registry)",
                      e ? e : "out of memory");
        free(e);
        return rc;
    }
    if ((vc = vcache_get(p, res.version)) == NULL)
        goto oom;

    /* which of the version's params the request sets itself */
    /* keys only: known_fields or the scan sets every one's type */
#ifdef GW_PROMPT_CHECK_FIELDS
    /* what is not set below is garbage, as on the stack */
    memset(bf, 0xa5, (vc->n_params + 1) * sizeof(bf[0]));
#endif
    bf[0].key = "messages";
    bf[0].sub = NULL;
    for (i = 0; i < vc->n_params; i++) {
        bf[i + 1].key = vc->keys[i];
        bf[i + 1].sub = NULL; /* nothing captured inside */
    }
    fmap = field_map(vc, f, n_f);
    if (known_fields(f, n_f, fmap, n_members, bf, vc->n_params + 1) < 0 &&
        gw_jscan_trusted(body, len, MAX_DEPTH, bf, vc->n_params + 1, err,
                         sizeof(err)) < 0)
        return bad_member(gw, req, rl);
    if (bf[0].type != GW_JSON_NONE)
        return fail(gw, req, rl, 400, "invalid_prompt",
                    "send either \"messages\" or \"prompt\", not both: the "
                    "prompt's version supplies the messages");

    /* the variables the version uses, as spans of the request */
    if (vc->n_vars > REG_VARIABLES_MAX)
        goto oom;
    memset(vf, 0, vc->n_vars * sizeof(vf[0]));
    for (i = 0; i < vc->n_vars; i++)
        vf[i].key = vc->vars[i];
    vs = pfs[3].sub;
    if (pfs[3].type == GW_JSON_OBJECT && vs != NULL && vs->n <= vs->cap) {
        if (match_vars(vs, vf, vc->n_vars, &dup) < 0)
            return fail(gw, req, rl, 400, "invalid_prompt",
                        "\"prompt.variables\": duplicate key '%s'", dup);
    } else if (pfs[3].type == GW_JSON_OBJECT &&
               gw_jscan_trusted(pfs[3].val, pfs[3].len, MAX_DEPTH, vf,
                                vc->n_vars, err, sizeof(err)) < 0) {
        return fail(gw, req, rl, 400, "invalid_prompt",
                    "\"prompt.variables\": %s", err);
    }
#ifdef GW_PROMPT_CHECK_FIELDS
    /* the captured prompt members and variables must equal what passes
     * of their own find */
    if (pf->sub != NULL) {
        struct gw_jscan_field cp[4] = {{.key = "name"}, {.key = "label"},
                                       {.key = "version"},
                                       {.key = "variables"}};
        struct gw_jscan_field cv[REG_VARIABLES_MAX];
        memset(cv, 0, sizeof(cv));
        for (i = 0; i < vc->n_vars; i++)
            cv[i].key = vc->vars[i];
        if (gw_jscan_trusted(pf->val, pf->len, MAX_DEPTH, cp, 4, err,
                             sizeof(err)) < 0 ||
            (cp[3].type == GW_JSON_OBJECT &&
             gw_jscan_trusted(cp[3].val, cp[3].len, MAX_DEPTH, cv,
                              vc->n_vars, err, sizeof(err)) < 0))
            gw_log_error("check: the captures passed, a scan fails: %s",
                         err), abort();
        for (i = 0; i < 4 + vc->n_vars; i++) {
            const struct gw_jscan_field *a = i < 4 ? &cp[i] : &cv[i - 4],
                                        *b = i < 4 ? &pfs[i] : &vf[i - 4];
            if (a->type != b->type || a->val != b->val || a->len != b->len ||
                a->escaped != b->escaped)
                gw_log_error("check: capture of '%s' differs", a->key),
                    abort();
        }
    }
#endif

    /* {params the request lacks, the request's members without "prompt",
     * "messages":[...]}: the model first, as OpenAI clients write it (some
     * servers read it faster there); offs[] remembers where the caller's
     * fields land */
    p->out.len = 0;
    if (reg_buf_add(&p->out, "{", 1) < 0)
        goto oom;
    for (i = 0; i < vc->n_params; i++) {
        int first = p->out.len == 1;
        ins[i] = (size_t)-1;
        if (bf[i + 1].type != GW_JSON_NONE)
            continue;
        if (i == vc->model_k) {
            if (vc->model_len == 0 || vc->model_len >= model_cap)
                continue;
            memcpy(model, vc->model, vc->model_len + 1);
        }
        /* texts[i] is ",\"key\":value": no comma before the first member */
        ins[i] = p->out.len + vc->voff[i] - first;
        if (reg_buf_add(&p->out, vc->texts[i] + first,
                        vc->lens[i] - first) < 0)
            goto oom;
    }
    if (model[0] == '\0') {
        rc = fail(gw, req, rl, 400, "missing_model",
                  "prompt '%s@%d' sets no model in its params: send "
                  "\"model\" with the request", name, res.version->version);
        goto done;
    }
    /* the request's own members, minus the prompt (and one comma) and the
     * closing brace */
    rest = (const char *)memchr(body, '{', len) + 1;
    end_brace = skip_ws_back(body + len, body) - 1; /* the root's } */
    if (!(skip_ws(rest, end_brace) == cut0 &&
          skip_ws(cut1, end_brace) == end_brace) &&
        p->out.len > 1 && reg_buf_add(&p->out, ",", 1) < 0)
        goto oom;
    seg1 = p->out.len;
    if (reg_buf_add(&p->out, rest, (size_t)(cut0 - rest)) < 0)
        goto oom;
    seg2 = p->out.len;
    if (reg_buf_add(&p->out, cut1, (size_t)(end_brace - cut1)) < 0)
        goto oom;
    /* a comma unless nothing came before (whitespace aside) */
    if (skip_ws_back(p->out.p + p->out.len, p->out.p) != p->out.p + 1 &&
        reg_buf_add(&p->out, ",", 1) < 0)
        goto oom;
    if (reg_buf_add(&p->out, "\"messages\":", 11) < 0)
        goto oom;
    msg_off = p->out.len;
    for (i = 0; i < vc->n_vars; i++)
        var_value(&vf[i], &vals[i]);
    if (reg_tpl_render_vals(vc->tpl, vals, vc->n_vars, &p->out, &e) < 0) {
        rc = fail(gw, req, rl, 400, "prompt_render_error",
                  "prompt '%s@%d': %s", name, res.version->version,
                  e ? e : "out of memory");
        free(e);
        goto done;
    }
    msg_len = p->out.len - msg_off;
    if (reg_buf_add(&p->out, "}", 1) < 0)
        goto oom;
    for (i = 0; fmap && i < n_f; i++) {
        const char *v = f[i].val;
        offs[i] = (size_t)-1;
        if (i == pi) {
            continue;
        } else if (f[i].type != GW_JSON_NONE) {
            if (v >= rest && v < cut0)
                offs[i] = seg1 + (size_t)(v - rest);
            else if (v >= cut1 && v < end_brace)
                offs[i] = seg2 + (size_t)(v - cut1);
        } else if (fmap[i] == FMAP_MESSAGES) {
            offs[i] = msg_off;
        } else if (fmap[i] >= 0) {
            offs[i] = ins[fmap[i]];
        }
    }

    /* the exposure record, with its strings in one allocation: request
     * id, user, variables, and prompt, label, key and experiment unless
     * the writer keeps them (keep_str) */
    rs[0] = rl->request_id, rs[1] = name, rs[2] = res.label, rs[3] = uid;
    rs[4] = key_name;
    rs[5] = res.experiment ? res.experiment->name : NULL;
    rs[6] = pfs[3].type == GW_JSON_OBJECT ? pfs[3].val : "{}";
    /* the prompt, label and experiment kept through the version's cache
     * (the snapshot's strings: the same pointers while it serves) */
    if (vc->klabel_of != res.label)
        vc->klabel_of = res.label, vc->klabel = NULL;
    if (vc->kexp_of != res.experiment)
        vc->kexp_of = res.experiment, vc->kexp = NULL;
    ks[0] = ks[3] = ks[6] = NULL;
    ks[1] = keep_once(p, KEEP_PROMPT, &vc->kname, res.version->prompt);
    ks[2] = keep_once(p, KEEP_LABEL, &vc->klabel, res.label);
    ks[5] = keep_once(p, KEEP_EXPERIMENT, &vc->kexp, rs[5]);
    rlen[6] = pfs[3].type == GW_JSON_OBJECT ? pfs[3].len : 2;
    need = rlen[0] + rlen[3] + rlen[6] + 3;
    for (k = 0; k < 4; k++) { /* prompt, label, key, experiment */
        i = kept_rs[k];
        rlen[i] = 0;
        if (ks[i] != NULL)
            continue;
        rlen[i] = rs[i] ? strlen(rs[i]) : 0;
        need += rlen[i] + 1;
    }
    if ((r = gw_exposure_rec_take(&p->local, GW_EXPOSURE,
                                  need + GW_EXPOSURE_TAIL)) == NULL)
        goto oom;
    for (i = 0; i < 7; i++)
        rs[i] = ks[i] ? ks[i] : gw_exposure_rec_str(r, rs[i], rlen[i]);
    r->owner = req;
    r->at_us = req->start_us + p->wall_off; /* when the request came */
    r->ex.request_id = rs[0];
    r->ex.prompt = rs[1];
    r->ex.version = res.version->version;
    r->ex.label = rs[2];
    r->ex.user_id = rs[3];
    r->ex.key_name = rs[4];
    if (res.experiment) {
        r->ex.experiment_id = res.experiment->id;
        r->ex.experiment = rs[5];
        r->ex.arm = res.arm;
    }
    r->ex.variables = rs[6];
    r->truncated = !logs_outputs(p); /* then it keeps no output bytes */
    if (pending_add(p, req, r) < 0) {
        gw_exposure_rec_free(r);
        goto oom;
    }

    /* the body is now the rewritten one, and the caller's fields describe
     * it (later stages read them): moved, dropped ("prompt") or pointing
     * at the inserted messages and params. Added behind the old body, then
     * the old drained: a small body's chain (1 KiB at least) has room for
     * both, so no chain is freed and allocated again (evbuffer_drain frees
     * a drained one); a larger one is made contiguous by the pullup */
    if (evbuffer_add(req->body, p->out.p, p->out.len) < 0)
        goto oom_late;
    evbuffer_drain(req->body, len);
    nbody = (const char *)evbuffer_pullup(req->body, -1);
    if (fmap == NULL) {
        if (gw_jscan(nbody, p->out.len, MAX_DEPTH, f, n_f, err,
                     sizeof(err)) < 0)
            gw_log_error("request %s: rewritten body does not scan: %s",
                         rl->request_id, err);
    } else {
        for (i = 0; i < n_f; i++) {
            size_t k;
            if (i == pi) {
                f[i].type = GW_JSON_NONE;
            } else if (offs[i] == (size_t)-1) {
                continue;
            } else if (f[i].type != GW_JSON_NONE) {
                f[i].val = nbody + offs[i];
            } else if (fmap[i] == FMAP_MESSAGES) {
                f[i].type = GW_JSON_ARRAY;
                f[i].val = nbody + offs[i];
                f[i].len = msg_len;
                f[i].escaped = 0;
            } else {
                k = (size_t)fmap[i];
                f[i].type = vc->vtype[k];
                f[i].val = nbody + offs[i];
                f[i].len = vc->vlen[k];
                f[i].escaped = vc->vesc[k];
            }
        }
    }
#ifdef GW_PROMPT_CHECK_FIELDS
    /* make CFLAGS="-O1 -g -DGW_PROMPT_CHECK_FIELDS": the moved fields must
     * equal what a fresh scan of the new body reports */
    {
        struct gw_jscan_field chk[MAX_FIELDS];
        memset(chk, 0, sizeof(chk));
        for (i = 0; i < n_f && i < MAX_FIELDS; i++)
            chk[i].key = f[i].key;
        if (gw_jscan(nbody, p->out.len, MAX_DEPTH, chk, i, err,
                     sizeof(err)) < 0)
            gw_log_error("check: rewritten body does not scan: %s", err),
                abort();
        while (i-- > 0)
            if (chk[i].type != f[i].type ||
                (chk[i].type != GW_JSON_NONE &&
                 (chk[i].val != f[i].val || chk[i].len != f[i].len ||
                  chk[i].escaped != f[i].escaped)))
                gw_log_error("check: field '%s' moved wrong", f[i].key),
                    abort();
    }
#endif
    if (p->out.cap > (1u << 20)) { /* do not keep a huge body's buffer */
        free(p->out.p);
        p->out.p = NULL, p->out.len = p->out.cap = 0;
    }

    gw_http_add_header_line(req, vc->vline, vc->vline_len);
    if (res.experiment) {
        if (vc->xexp != res.experiment || vc->xarm != res.arm) {
            vc->xexp = res.experiment, vc->xarm = res.arm;
            vc->xline_len = header_line(vc->xline, sizeof(vc->xline),
                                        "x-prompt-experiment: ",
                                        res.experiment->name, "; arm=",
                                        res.arm);
        }
        gw_http_add_header_line(req, vc->xline, vc->xline_len);
    }
    rc = 0;
    goto done;
oom:
    rc = fail(gw, req, rl, 500, "out_of_memory", "out of memory");
done:
    return rc;
oom_late:
    /* the record is pending: the error's log line completes it */
    return fail(gw, req, rl, 500, "out_of_memory", "out of memory");
}

void gw_prompt_finish(struct gw_prompts *p, struct gw_http_req *req,
                      const struct gw_reqlog *rl, int64_t end_us)
{
    size_t ml = rl->model ? strlen(rl->model) : 0;
    size_t bl = rl->backend ? strlen(rl->backend) : 0;
    struct gw_exposure_rec *r;
    struct done *d;
    size_t off;

    if ((r = pending_take(p, req)) == NULL)
        return;
    d = &p->done[p->n_done];
    d->r = r;
    d->status = rl->status;
    d->stream = rl->stream;
    d->latency_ms = (double)(end_us - req->start_us) / 1000.0;
    d->prompt_tokens = rl->usage.prompt_tokens;
    d->completion_tokens = rl->usage.completion_tokens;
    d->total_tokens = rl->usage.total_tokens;
    d->cache = req->cache; /* static strings */
    d->mlen = d->blen = -1;
    d->mkept = rl->model && ml < GW_EXPOSURE_MODEL_MAX
             ? keep_str(p, KEEP_MODEL, rl->model, ml) : NULL;
    d->bkept = rl->backend && bl < GW_EXPOSURE_BACKEND_MAX
             ? keep_str(p, KEEP_BACKEND, rl->backend, bl) : NULL;
    if ((d->mkept || ml < sizeof(d->model)) &&
        (d->bkept || bl < sizeof(d->backend))) {
        if (rl->model && !d->mkept)
            memcpy(d->model, rl->model, ml), d->mlen = (signed char)ml;
        if (rl->backend && !d->bkept)
            memcpy(d->backend, rl->backend, bl), d->blen = (signed char)bl;
    } else { /* long names: into the record now */
        r->ex.model = d->mkept ? d->mkept
                    : gw_exposure_rec_strn(r, rl->model,
                                           GW_EXPOSURE_MODEL_MAX);
        r->ex.backend = d->bkept ? d->bkept
                      : gw_exposure_rec_strn(r, rl->backend,
                                             GW_EXPOSURE_BACKEND_MAX);
        d->mkept = d->bkept = NULL;
    }
    /* the lines done_apply writes, loading while other requests run */
    for (off = offsetof(struct gw_exposure_rec, ex.status);
         off < offsetof(struct gw_exposure_rec, strings) + 384; off += 64)
        __builtin_prefetch((const char *)r + off, 1);
    if (++p->n_done == 1) {
        static const struct timeval tv = {0, HAND_MS * 1000};
        event_add(p->hand, &tv);
    } else if (p->n_done == DONE_MAX) {
        done_apply(p);
    }
}

void gw_prompt_output(struct gw_prompts *p, struct gw_http_req *req,
                      const char *data, size_t len, int sse)
{
    struct gw_exposure_rec *r;

    if (p == NULL || !logs_outputs(p) || (r = pending_find(p, req)) == NULL)
        return;
    r->raw_sse = sse;
    if (sse && (len == 6 && memcmp(data, "[DONE]", 6) == 0))
        return;
    gw_exposure_rec_output(r, data, len, OUTPUT_MAX);
}

int gw_prompt_wants_output(struct gw_prompts *p, struct gw_http_req *req)
{
    return p && logs_outputs(p) && pending_find(p, req);
}

/* ---- feedback ------------------------------------------------------------ */

void gw_prompt_feedback(struct gw_gateway *gw, struct gw_http_req *req,
                        struct gw_reqlog *rl)
{
    struct gw_prompts *p = gw->prompts;
    struct gw_jscan_field f[3] = {{.key = "request_id"}, {.key = "event"},
                                  {.key = "value"}};
    char rid[REG_REQUEST_ID_MAX + 1], ev[REG_EVENT_MAX + 1], err[256];
    struct gw_exposure_rec *r;
    struct evbuffer *b;
    size_t len = evbuffer_get_length(req->body), n;
    double value = 1;

    if (p == NULL) {
        fail(gw, req, rl, 404, "registry_not_configured",
             "feedback is recorded in the registry, and this gateway has "
             "none: set \"registry\": {\"path\": ...} in its configuration");
        return;
    }
    if (len == 0 || gw_jscan((const char *)evbuffer_pullup(req->body, -1),
                             len, MAX_DEPTH, f, 3, err, sizeof(err)) < 0) {
        fail(gw, req, rl, 400, "invalid_json", "feedback body: %s",
             len ? err : "empty; send {\"request_id\", \"event\", \"value\"}");
        return;
    }
    if (f[0].type != GW_JSON_STRING || field_str(&f[0], rid, sizeof(rid)) < 0
        || rid[0] == '\0'
        || rid[n = strspn(rid, "abcdefghijklmnopqrstuvwxyz"
                               "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-")]
               != '\0') {
        fail(gw, req, rl, 400, "invalid_feedback",
             "\"request_id\" must be the x-request-id of an answer (1-%d "
             "characters of [A-Za-z0-9._:-])", REG_REQUEST_ID_MAX);
        return;
    }
    if (f[1].type != GW_JSON_STRING || field_str(&f[1], ev, sizeof(ev)) < 0
        || !reg_event_valid(ev)) {
        fail(gw, req, rl, 400, "invalid_feedback",
             "\"event\" must be an event name such as \"click\" or "
             "\"conversion\" ([a-z0-9_.-], at most %d bytes)", REG_EVENT_MAX);
        return;
    }
    if (f[2].type == GW_JSON_NUMBER) {
        char num[64], *end;
        if (f[2].len >= sizeof(num)) {
            fail(gw, req, rl, 400, "invalid_feedback",
                 "\"value\" is too long a number");
            return;
        }
        memcpy(num, f[2].val, f[2].len);
        num[f[2].len] = '\0';
        value = strtod(num, &end);
    } else if (f[2].type == GW_JSON_TRUE || f[2].type == GW_JSON_FALSE) {
        value = f[2].type == GW_JSON_TRUE;
    } else if (f[2].type != GW_JSON_NONE && f[2].type != GW_JSON_NULL) {
        fail(gw, req, rl, 400, "invalid_feedback",
             "\"value\" must be a number (default 1)");
        return;
    }
    if ((r = gw_exposure_rec_new(GW_FEEDBACK, strlen(rid) + strlen(ev) + 2))
        == NULL || (b = evbuffer_new()) == NULL) {
        gw_exposure_rec_free(r);
        fail(gw, req, rl, 500, "out_of_memory", "out of memory");
        return;
    }
    r->at_us = wall_us();
    r->fb.request_id = gw_exposure_rec_str(r, rid, strlen(rid));
    r->fb.event = gw_exposure_rec_str(r, ev, strlen(ev));
    r->fb.value = value;
    if (gw_exposure_push(p->sh->writer, r) < 0) {
        evbuffer_free(b);
        fail(gw, req, rl, 503, "feedback_queue_full",
             "the feedback log is behind; retry shortly (feedback is "
             "idempotent per request id and event)");
        return;
    }
    evbuffer_add_printf(b, "{\"status\":\"accepted\",\"request_id\":\"%s\","
                        "\"event\":\"%s\"}", rid, ev);
    gw_http_reply_buffer(req, 202, "application/json", b);
    evbuffer_free(b);
    rl->status = 202;
    gw_proxy_log(gw, req, rl);
}

/* ---- metrics ------------------------------------------------------------- */

void gw_prompts_stats(struct gw_prompts *p, struct gw_exposure_stats *ex,
                      unsigned long *load_errors)
{
    if (p->sh->writer)
        gw_exposure_stats(p->sh->writer, ex);
    else
        memset(ex, 0, sizeof(*ex));
    *load_errors = __atomic_load_n(&p->sh->load_errors, __ATOMIC_RELAXED);
}
