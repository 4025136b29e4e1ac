/*
 * metrics.h - Prometheus metrics of the gateway (issue 9): counters and
 * histograms updated on the event loop with plain integer adds, written in
 * the text exposition format (version 0.0.4) when scraped.
 *
 * Label sets are bounded: a model, backend or key label is one of the
 * names some loaded config held (slots kept by name across reloads, as
 * pool.c keeps breakers), "other" for any name no config held, or ""
 * when the request had none. Routes and status classes are fixed lists.
 * No request id, user, prompt or secret ever becomes a label.
 *
 * Threads: each worker owns one struct gw_metrics and is the only caller
 * of gw_metrics_begin / gw_metrics_request on it. Every other function
 * may be called on any worker's object from another thread (reload
 * fan-out, scrapes): each object has its own lock, taken by the request
 * path too (uncontended).
 */
#ifndef GW_METRICS_H
#define GW_METRICS_H

#include <stddef.h>
#include <stdint.h>

struct evbuffer;
struct gw_config;
struct gw_gateway;
struct gw_http_req;
struct gw_reqlog;
struct gw_metrics;

/* One bucket layout for every histogram, in seconds: LLM calls run from
 * milliseconds (a cache hit) to minutes (a long stream). */
#define GW_METRICS_BUCKETS 14
#define GW_METRICS_BOUNDS_US                                              \
    {5000L, 10000L, 25000L, 50000L, 100000L, 250000L, 500000L, 1000000L,  \
     2500000L, 5000000L, 10000000L, 30000000L, 60000000L, 120000000L}

/* A histogram: per-bucket counts (not cumulative; [GW_METRICS_BUCKETS]
 * is above the last bound) and the sum of the observations. */
struct gw_metrics_hist {
    uint64_t b[GW_METRICS_BUCKETS + 1];
    uint64_t sum_us;
};

/* Adds one observation of us microseconds (negative counts as 0). */
static inline void gw_metrics_observe(struct gw_metrics_hist *h, long us)
{
    static const long bounds[GW_METRICS_BUCKETS] = GW_METRICS_BOUNDS_US;
    int i = 0;

    if (us < 0)
        us = 0;
    while (i < GW_METRICS_BUCKETS && us > bounds[i])
        i++;
    h->b[i]++;
    h->sum_us += (uint64_t)us;
}

/* NULL on out of memory. */
struct gw_metrics *gw_metrics_new(void);
/* Closes the admin listener, if any. NULL is a no-op. */
void gw_metrics_free(struct gw_metrics *m);

/* Makes c's models, backends and keys labels (at start and each reload,
 * before c serves). Counters of names c no longer holds are kept (they
 * come back if a later config names them again) but left out of the
 * output. Returns 0, or -1 on out of memory (the old labels stay; names
 * new in c then count as "other"). */
int gw_metrics_attach(struct gw_metrics *m, const struct gw_config *c);

/* SIGHUP: a reload starts. Unless gw_metrics_reload follows, it counts
 * as refused (promptgate_config_reloads_total{result="error"}). */
void gw_metrics_reload_begin(struct gw_metrics *m);

/* SIGHUP: c replaced the config: gw_metrics_attach (warns on out of
 * memory), counted as a reload, and a warning when c's metrics.listen
 * differs from the listener running (it takes a restart). */
void gw_metrics_reload(struct gw_metrics *m, const struct gw_config *c);

/* A request was handed to the handler (in-flight gauge, no lock). Every
 * call is matched by one gw_metrics_request when the request's access-log
 * line is written, whether it was answered or the client left. */
void gw_metrics_begin(struct gw_metrics *m);

/* The end of a request, from gw_proxy_log: requests, duration (to end_us,
 * gw_now_us() when it ended), time to first token (streams), tokens,
 * cache result, rate-limit rejections. No allocation, no formatting, about
 * 0.1 us with m's (uncontended) lock. NULL m is a no-op. */
void gw_metrics_request(struct gw_metrics *m, const struct gw_http_req *req,
                        const struct gw_reqlog *rl, int64_t end_us);

/* What the gateway reads at scrape time from state kept elsewhere, summed
 * over the workers (gw_metrics_handle). */
struct gw_metrics_extra {
    long upstream_calls;     /* each worker's gw->calls */
    long retries_inflight;   /* each worker's gw->retries */
    uint64_t retries_refused; /* each worker's gw->retries_refused */
    unsigned long exposure_written, exposure_dropped, exposure_failed;
    unsigned long registry_reload_errors;
    unsigned long redis_errors_ratelimit;
    int have_cache;
    unsigned long redis_errors_cache; /* cache errors (its Redis, timeouts) */
};

/* Writes the metrics of the n workers' objects ms (borrowed; ms[0] is
 * worker 0's, whose reload counts and start time are the process's) in
 * the text format into out: their counters added up by name (each locked
 * in turn, never two at once), then per backend of c (borrowed; NULL:
 * none) its state (up, breaker, transitions, attempts, retries), extra,
 * build info and process metrics (/proc). The sum of one object writes
 * exactly what that object holds. Returns 0, or -1 on out of memory. */
int gw_metrics_write_sum(struct gw_metrics *const *ms, size_t n,
                         const struct gw_config *c, int64_t now_us,
                         const struct gw_metrics_extra *extra,
                         struct evbuffer *out);

/* gw_metrics_write_sum of m alone. */
int gw_metrics_write(struct gw_metrics *m, const struct gw_config *c,
                     int64_t now_us, const struct gw_metrics_extra *extra,
                     struct evbuffer *out);

/* GET <metrics.path> on the main listener of any worker, or on the
 * metrics listener: checks the bearer token (401) and answers the scrape
 * (text/plain; version=0.0.4) with the sum over gw->workers (gw alone
 * when workers is NULL). Logged like any request. */
void gw_metrics_handle(struct gw_gateway *gw, struct gw_http_req *req,
                       struct gw_reqlog *rl);

/* 1 when the main listener answers path with the metrics: they are
 * enabled, path is metrics.path, and no admin listener serves them (m's
 * first config, the one the process started with, had no
 * metrics.listen). */
int gw_metrics_serves(const struct gw_metrics *m, const struct gw_config *c,
                      const char *path);

/* metrics.listen: starts the admin listener (on worker 0, gw) that serves
 * only the metrics path (the sum of every worker's); the workers' main
 * listeners leave that path alone. Returns 0 (also when no listen address
 * is configured), or -1 with a message in err: the process must not
 * start then. */
int gw_metrics_listen(struct gw_gateway *gw, char *err, size_t errlen);

/* The text format's label value escaping (backslash, double quote and
 * newline), appended to out. */
void gw_metrics_escape(struct evbuffer *out, const char *s);

#endif
