/*
 * health.c - active health checks: one timer per checked backend, one
 * check in flight at most, its verdict handed to the backend's breaker.
 *
 * Design:
 *  - The check state (struct gw_hcheck) hangs off the backend's runtime
 *    state (pool.c), which outlives reloads; the settings are read from
 *    the current config at each tick, so a SIGHUP that changes the path or
 *    the interval takes effect at the next tick, and one that removes the
 *    check or the backend stops it (gw_health_apply).
 *  - Plain http:// backends at numeric addresses are checked with the
 *    gateway's own client (upconn.c) on a pool that keeps no idle
 *    connection, so every check opens a fresh connection and a refused
 *    connect fails it; other backends through libcurl on a multi handle of
 *    their own (its done callback is health.c's, not upstream.c's).
 *  - Nothing blocks: the check is a normal event-driven exchange with its
 *    own deadline timer.
 *  - Threads: the checks run on worker 0's loop only, the thread that also
 *    attaches configs to the state table; the table is walked under its
 *    mutex and a verdict goes to the breaker under the backend state's lock
 *    (gw_states_health), since every worker picks on that breaker.
 *
 * Invariants:
 *  1. At most one check per backend is in flight (busy); a tick that finds
 *     one still running skips.
 *  2. A check in flight is aborted (no callback follows) before its
 *     gw_hcheck is freed.
 */
#include "gateway/health.h"
#include "gateway/gateway.h"
#include "gateway/clock.h"
#include "gateway/curlev.h"
#include "gateway/log.h"
#include "gateway/pool.h"
#include "gateway/upconn.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct gw_health {
    struct gw_gateway *gw;  /* borrowed */
    struct gw_curlev *curl; /* owned: checks of non-native backends */
};

struct gw_hcheck {
    struct gw_health *h;          /* borrowed */
    struct gw_backend_state *s;   /* borrowed: owns this check */
    struct event *tick;           /* owned: the interval */
    struct event *deadline;       /* owned: the check's timeout */
    struct gw_uppool *pool;       /* owned: native checks, no idle kept */
    struct sockaddr_storage addr; /* pool's address */
    struct gw_upconn *up;         /* borrowed: a native check in flight */
    CURL *easy;                   /* owned: a curl check in flight */
    struct curl_slist *headers;   /* owned: its headers */
    long status;
    int busy;
    int last_ok; /* -1: none yet */
};

static struct gw_backend *backend_of(struct gw_health *h,
                                     const struct gw_backend_state *s)
{
    struct gw_config *c = h->gw->config;

    for (size_t i = 0; i < c->n_backends; i++)
        if (c->backends[i].state == s)
            return &c->backends[i];
    return NULL;
}

static void arm(struct event *ev, long ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(ev, &tv);
}

/* Drops a check in flight without a verdict. */
static void check_abort(struct gw_hcheck *hc)
{
    if (hc->up) {
        gw_upconn_abort(hc->up);
        hc->up = NULL;
    }
    if (hc->easy) {
        gw_curlev_remove(hc->h->curl, hc->easy);
        curl_easy_cleanup(hc->easy);
        hc->easy = NULL;
    }
    curl_slist_free_all(hc->headers);
    hc->headers = NULL;
    evtimer_del(hc->deadline);
    hc->busy = 0;
}

static void verdict(struct gw_hcheck *hc, int ok, const char *why)
{
    struct gw_backend *b = backend_of(hc->h, hc->s);

    evtimer_del(hc->deadline);
    curl_slist_free_all(hc->headers);
    hc->headers = NULL;
    hc->busy = 0;
    if (b == NULL)
        return; /* removed by a reload meanwhile */
    if (ok != hc->last_ok) /* logged once per change */
        gw_log(ok ? GW_LOG_INFO : GW_LOG_WARN,
               "backend '%s': health check %s%s%s", b->name,
               ok ? "passes" : "fails", ok ? "" : ": ", ok ? "" : why);
    hc->last_ok = ok;
    gw_states_health(b, gw_now_us(), ok);
}

/* --------------------------------------------------- native transport */

static void up_head(void *arg, int status, const char *ctype,
                    const char *retry)
{
    struct gw_hcheck *hc = arg;

    (void)ctype, (void)retry;
    hc->status = status;
}

static int up_body(void *arg, const char *data, size_t len)
{
    (void)arg, (void)data, (void)len;
    return 0; /* the body does not matter */
}

static void up_done(void *arg, const char *err)
{
    struct gw_hcheck *hc = arg;
    char why[160];

    hc->up = NULL;
    if (err)
        snprintf(why, sizeof(why), "%s", err);
    else
        snprintf(why, sizeof(why), "status %ld", hc->status);
    verdict(hc, err == NULL && hc->status >= 200 && hc->status < 300, why);
}

static const struct gw_upconn_cbs up_cbs = {up_head, up_body, up_done, NULL};

static int native_check(struct gw_hcheck *hc, const struct gw_backend *b)
{
    struct evbuffer *out;

    if (hc->pool && memcmp(&hc->addr, &b->addr, b->addrlen) != 0) {
        gw_uppool_free(hc->pool); /* the address changed on a reload */
        hc->pool = NULL;
    }
    if (hc->pool == NULL) {
        hc->pool = gw_uppool_new(hc->h->gw->base,
                                 (const struct sockaddr *)&b->addr,
                                 b->addrlen, 0, 1000);
        if (hc->pool == NULL)
            return -1;
        memcpy(&hc->addr, &b->addr, sizeof(b->addr));
    }
    if ((out = evbuffer_new()) == NULL)
        return -1;
    evbuffer_add_printf(out, "GET %s%s HTTP/1.1\r\nHost: %s\r\n", b->path,
                        b->health_path, b->host_header);
    if (b->auth_header)
        evbuffer_add_printf(out, "%s\r\n", b->auth_header);
    if (b->anthropic_version) /* Anthropic's API wants it on every call */
        evbuffer_add_printf(out, "anthropic-version: %s\r\n",
                            b->anthropic_version);
    evbuffer_add_printf(out, "User-Agent: promptgate-health/%s\r\n"
                             "Connection: close\r\n\r\n", GW_VERSION);
    hc->up = gw_upconn_send(hc->pool, out, b->health_timeout_ms, &up_cbs,
                            hc);
    evbuffer_free(out);
    return hc->up ? 0 : -1;
}

/* ----------------------------------------------------- curl transport */

static size_t discard(char *buf, size_t size, size_t n, void *arg)
{
    (void)buf, (void)arg;
    return size * n;
}

static void curl_done(CURL *easy, CURLcode result, void *priv)
{
    struct gw_hcheck *hc = priv;
    char why[160];

    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &hc->status);
    curl_easy_cleanup(easy);
    hc->easy = NULL;
    if (result != CURLE_OK)
        snprintf(why, sizeof(why), "%s", curl_easy_strerror(result));
    else
        snprintf(why, sizeof(why), "status %ld", hc->status);
    verdict(hc, result == CURLE_OK && hc->status >= 200 && hc->status < 300,
            why);
}

static int curl_check(struct gw_hcheck *hc, const struct gw_backend *b)
{
    char url[2048];
    CURL *e = curl_easy_init();

    if (e == NULL)
        return -1;
    if (b->auth_header &&
        (hc->headers = curl_slist_append(NULL, b->auth_header)) == NULL) {
        curl_easy_cleanup(e);
        return -1;
    }
    if (b->anthropic_version) {
        char av[128];
        struct curl_slist *l;
        snprintf(av, sizeof(av), "anthropic-version: %s",
                 b->anthropic_version);
        if ((l = curl_slist_append(hc->headers, av)) == NULL) {
            curl_easy_cleanup(e);
            return -1;
        }
        hc->headers = l;
    }
    snprintf(url, sizeof(url), "%s%s", b->url, b->health_path);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, hc);
    curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, hc->headers);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, b->health_timeout_ms);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_FORBID_REUSE, 1L);
    if (b->ca_file) /* verified like the requests (upstream.c) */
        curl_easy_setopt(e, CURLOPT_CAINFO, b->ca_file);
    if (gw_curlev_add(hc->h->curl, e) < 0) {
        curl_easy_cleanup(e);
        return -1;
    }
    hc->easy = e;
    return 0;
}

/* ------------------------------------------------------------- timers */

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct gw_hcheck *hc = arg;
    struct gw_backend *b = backend_of(hc->h, hc->s);
    char why[96];

    (void)fd, (void)what;
    check_abort(hc);
    snprintf(why, sizeof(why), "no answer within %ld ms",
             b ? b->health_timeout_ms : 0L);
    verdict(hc, 0, why);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct gw_hcheck *hc = arg;
    struct gw_backend *b = backend_of(hc->h, hc->s);
    int rc;

    (void)fd, (void)what;
    if (b == NULL || b->health_path == NULL)
        return; /* gw_health_apply stops it */
    arm(hc->tick, b->health_interval_ms);
    if (hc->busy)
        return;
    hc->status = 0;
    hc->busy = 1;
    rc = b->native ? native_check(hc, b) : curl_check(hc, b);
    if (rc < 0) {
        check_abort(hc);
        verdict(hc, 0, "cannot start the check");
        return;
    }
    arm(hc->deadline, b->health_timeout_ms);
}

static void hcheck_free(struct gw_hcheck *hc)
{
    check_abort(hc);
    if (hc->tick)
        event_free(hc->tick);
    if (hc->deadline)
        event_free(hc->deadline);
    gw_uppool_free(hc->pool);
    hc->s->health = NULL;
    free(hc);
}

struct gw_health *gw_health_new(struct gw_gateway *gw)
{
    struct gw_health *h = calloc(1, sizeof(*h));

    if (h == NULL)
        return NULL;
    h->gw = gw;
    h->curl = gw_curlev_new(gw->base, curl_done);
    if (h->curl == NULL) {
        free(h);
        return NULL;
    }
    return h;
}

int gw_health_apply(struct gw_health *h)
{
    struct gw_backend_states *st = h->gw->states;
    int rc = 0;

    pthread_mutex_lock(&st->lock); /* against gw_states_attach */
    for (size_t i = 0; i < st->n; i++) {
        struct gw_backend_state *s = st->v[i];
        struct gw_backend *b = s->in_config ? backend_of(h, s) : NULL;
        struct gw_hcheck *hc = s->health;

        if (b == NULL || b->health_path == NULL) {
            if (hc)
                hcheck_free(hc);
            continue;
        }
        if (hc == NULL) {
            hc = calloc(1, sizeof(*hc));
            if (hc == NULL) {
                rc = -1;
                continue;
            }
            hc->h = h;
            hc->s = s;
            hc->last_ok = -1;
            hc->tick = evtimer_new(h->gw->base, on_tick, hc);
            hc->deadline = evtimer_new(h->gw->base, on_deadline, hc);
            s->health = hc;
            if (hc->tick == NULL || hc->deadline == NULL) {
                hcheck_free(hc);
                rc = -1;
                continue;
            }
            arm(hc->tick, 0); /* the first check at once */
        } else if (!hc->busy) {
            arm(hc->tick, b->health_interval_ms); /* a new interval */
        }
    }
    pthread_mutex_unlock(&st->lock);
    if (rc < 0)
        gw_log_error("cannot start every health check: out of memory");
    return rc;
}

void gw_health_free(struct gw_health *h)
{
    struct gw_backend_states *st;

    if (h == NULL)
        return;
    st = h->gw->states;
    if (st)
        pthread_mutex_lock(&st->lock);
    for (size_t i = 0; st && i < st->n; i++)
        if (st->v[i]->health)
            hcheck_free(st->v[i]->health);
    if (st)
        pthread_mutex_unlock(&st->lock);
    gw_curlev_free(h->curl);
    free(h);
}
