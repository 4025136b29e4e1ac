/*
 * main.c - bin/promptgate: options, signals, reload and shutdown.
 *
 * SIGHUP reads the config file again; a good one replaces the current
 * config for new requests while requests in flight keep the one they
 * started with (reference counts); a bad one is refused and logged, and
 * the old one keeps serving. SIGTERM/SIGINT stop accepting, let requests
 * in flight finish up to limits.drain_timeout_ms, then exit 0.
 *
 * Workers ("workers": N): N event-loop threads, each a struct gw_gateway
 * with its own listening socket on the same address (SO_REUSEPORT: the
 * kernel spreads connections), curl multi, upstream connections, access
 * log buffer, Redis clients and cache flights. Worker 0 runs on the main
 * thread and owns what all share (limiter, backend states, registry
 * prompts, memory cache store, health checks, the metrics listener) and
 * the signals: a reload is loaded and checked once there, its shared part
 * applied there, then each other worker is handed the new config through
 * its mailbox (a mutex-guarded slot and a pipe that wakes its loop) and
 * applies its own part on its own thread. Drain and log reopening go the
 * same way. No worker touches another's event base.
 */
#include "gateway/gateway.h"
#include "gateway/accesslog.h"
#include "gateway/cache.h"
#include "gateway/curlev.h"
#include "gateway/http.h"
#include "gateway/limit.h"
#include "gateway/rlredis.h"
#include "gateway/log.h"
#include "gateway/metrics.h"
#include "gateway/prompt.h"
#include "gateway/health.h"
#include "gateway/pool.h"
#include "gateway/prompt.h"
#include "gateway/tls.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char usage_text[] =
    "usage: promptgate [-c FILE] [-t] [-d] [-h] [-V]\n"
    "\n"
    "An OpenAI-compatible LLM gateway: one endpoint in front of local model\n"
    "servers (vLLM, llama.cpp, Ollama) and remote APIs.\n"
    "\n"
    "  -c, --config FILE   configuration file (default conf/promptgate.json)\n"
    "  -t, --test          check the configuration, print one line per\n"
    "                      problem naming its JSON path, exit 0 if good\n"
    "  -d, --debug         log at debug level (state changes per request)\n"
    "  -h, --help          this text\n"
    "  -V, --version       print the version\n"
    "\n"
    "Signals: SIGHUP reloads the configuration, SIGTERM drains and exits,\n"
    "SIGUSR1 reopens the access log file (after logrotate moved it).\n"
    "Secrets: a config value \"env:NAME\" is read from the environment.\n"
    "Try it:  make run   (starts the bundled mock backend and the gateway)\n";

/* One worker thread (worker 0 is the main thread). Worker 0 handles the
 * signals; what the others must do (apply a config, reopen the access
 * log, drain, stop) it posts in their mailbox and wakes them through a
 * pipe: the workers' loops never touch each other's event base. */
struct worker {
    struct gw_gateway gw;
    struct main_state *m;        /* borrowed */
    pthread_t thread;
    int started;                 /* thread is running (joined at exit) */
    int wake_fd[2];              /* owned: worker 0 writes, this reads */
    struct event *wake;          /* owned */
    pthread_mutex_t mu;          /* guards the mailbox */
    struct gw_config *next;      /* owned reference: config to apply */
    int reopen, drain, stop_now; /* mailbox flags */
    struct event *drain_timer;   /* owned */
    struct event *retire_timer;  /* owned: frees retired redis clients */
    struct timespec drain_deadline;
    int draining;
};

struct main_state {
    struct worker **w;           /* owned: n workers */
    struct gw_gateway **gws;     /* owned: &w[i]->gw, every gw->workers */
    size_t n;
    struct event *sig_hup, *sig_term, *sig_int, *sig_usr1; /* owned */
};

static void to_limits(const struct gw_config *c, struct gw_http_limits *l)
{
    l->max_header_bytes = c->limits.max_header_bytes;
    l->max_body_bytes = c->limits.max_body_bytes;
    l->header_timeout_ms = c->limits.header_timeout_ms;
    l->body_timeout_ms = c->limits.body_timeout_ms;
    l->idle_timeout_ms = c->limits.idle_timeout_ms;
}

static void print_problems(const char *path, const char *err)
{
    fprintf(stderr, "promptgate: configuration '%s' is not valid:\n%s", path,
            err ? err : "out of memory\n");
}

static int redis_changed(const struct gw_config *a, const struct gw_config *b)
{
    if (a->has_redis != b->has_redis)
        return 1;
    if (!a->has_redis)
        return 0;
    return strcmp(a->redis.host, b->redis.host) != 0 ||
           a->redis.port != b->redis.port || a->redis.db != b->redis.db ||
           a->redis.timeout_ms != b->redis.timeout_ms ||
           (a->redis.password == NULL) != (b->redis.password == NULL) ||
           (a->redis.password &&
            strcmp(a->redis.password, b->redis.password) != 0);
}

/* A retired client goes once its last admission settled and Redis has
 * answered everything sent; one that cannot reach its Redis goes after
 * this long, with what it still had queued. */
#define RETIRE_GRACE_S 30

static time_t mono_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec;
}

static void sweep_retired(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    struct gw_gateway *gw = &w->gw;
    struct timeval tick = {0, 200000};
    time_t now = mono_s();
    size_t i = 0;

    (void)fd, (void)what;
    while (i < gw->n_rl_retired) {
        struct gw_rl_retired *e = &gw->rl_retired[i];
        int idle = gw_rlredis_idle(e->r);
        if (!idle && now - e->since < RETIRE_GRACE_S) {
            i++;
            continue;
        }
        if (!idle)
            gw_log_warn("redis client replaced by a reload still had work "
                        "after %d s; dropping it (queued token settlements "
                        "are lost)", RETIRE_GRACE_S);
        gw_rlredis_free(e->r);
        gw->rl_retired[i] = gw->rl_retired[--gw->n_rl_retired];
    }
    if (gw->n_rl_retired)
        evtimer_add(w->retire_timer, &tick);
}

/* The part of a reload each worker applies on its own loop: access log,
 * Redis limiter client, cache bounds, HTTP limits, metrics names, then
 * the config pointer. 0, or -1 (logged; the worker keeps its config). */
static int worker_apply(struct worker *w, struct gw_config *c)
{
    struct gw_gateway *gw = &w->gw;
    struct gw_http_limits l;

    if (strcmp(c->access_log, gw->config->access_log) != 0) {
        char e[256];
        struct gw_accesslog *al =
            gw_accesslog_open(gw->base, c->access_log, e, sizeof(e));
        if (al == NULL) {
            gw_log_error("reload refused: %s", e);
            return -1;
        }
        gw_accesslog_free(gw->alog);
        gw->alog = al;
    }
    if (redis_changed(gw->config, c)) {
        struct gw_rlredis *nr = NULL;
        struct gw_rl_retired *ret;
        if (c->has_redis &&
            (nr = gw_rlredis_new(gw->base, &c->redis)) == NULL) {
            gw_log_error("reload refused: cannot set up the redis client");
            return -1;
        }
        if (nr)
            gw_rlredis_set_error_sink(nr, &gw->rl_errors);
        ret = realloc(gw->rl_retired,
                      (gw->n_rl_retired + 1) * sizeof(*gw->rl_retired));
        if (ret == NULL) {
            gw_rlredis_free(nr);
            gw_log_error("reload refused: out of memory");
            return -1;
        }
        gw->rl_retired = ret;
        if (gw->rlredis) {
            struct timeval soon = {0, 0};
            ret[gw->n_rl_retired].r = gw->rlredis;
            ret[gw->n_rl_retired++].since = mono_s();
            evtimer_add(w->retire_timer, &soon);
        }
        gw->rlredis = nr;
        if (nr && gw->worker_id == 0)
            gw_log_info("reload: rate limits now use redis '%s:%d'",
                        c->redis.host, c->redis.port);
    }
    gw_cache_reload(gw->cache, c); /* bound and timeout; backend fixed */
    to_limits(c, &l);
    gw_http_server_set_limits(gw->http, &l);
    if (gw->worker_id != 0 && gw_metrics_attach(gw->metrics, c) < 0) {
        gw_log_error("reload: worker %d: out of memory for metrics names",
                     gw->worker_id);
        return -1;
    }
    /* tls (issue 9): new connections get the new certificate, open ones
     * keep theirs */
    if (c->tls.ctx != gw_http_server_tls(gw->http)) {
        gw_http_server_set_tls(gw->http, c->tls.ctx);
        if (gw->worker_id == 0)
            gw_tls_log(c->tls.ctx, "reloaded");
    }
    gw_config_unref(gw->config);
    gw->config = gw_config_ref(c);
    return 0;
}

/* Worker 0: leaves a request in worker i's mailbox and wakes it. */
static void post(struct worker *w, struct gw_config *c, int reopen,
                 int drain, int stop_now)
{
    char one = 1;

    pthread_mutex_lock(&w->mu);
    if (c) {
        gw_config_unref(w->next); /* one not applied yet: replaced */
        w->next = gw_config_ref(c);
    }
    w->reopen |= reopen;
    w->drain |= drain;
    w->stop_now |= stop_now;
    pthread_mutex_unlock(&w->mu);
    while (write(w->wake_fd[1], &one, 1) < 0 && errno == EINTR)
        ;
}

static void on_hup(evutil_socket_t fd, short what, void *arg)
{
    struct main_state *m = arg;
    struct gw_gateway *gw = &m->w[0]->gw;
    struct gw_config *c;
    char *err = NULL, msg[512];

    (void)fd, (void)what;
    gw_metrics_reload_begin(gw->metrics); /* refused unless reloaded */
    c = gw_config_load(gw->config_path, &err);
    if (c == NULL) {
        char *line, *save = NULL;
        gw_log_error("reload refused, still serving the previous "
                     "configuration: '%s' has problems", gw->config_path);
        for (line = strtok_r(err, "\n", &save); line;
             line = strtok_r(NULL, "\n", &save))
            gw_log_error("reload: %s", line);
        free(err);
        return;
    }
    /* tls (issue 9): one context for every worker; a certificate that
     * cannot be served refuses the reload, the old one goes on serving */
    if (gw_tls_attach(c, gw->config, msg, sizeof(msg)) < 0) {
        gw_log_error("reload refused, still serving the previous "
                     "configuration and certificate: %s", msg);
        gw_config_unref(c);
        return;
    }
    if (strcmp(c->listen_host, gw->config->listen_host) != 0 ||
        c->listen_port != gw->config->listen_port)
        gw_log_warn("reload: a new 'listen' address takes a restart; "
                    "still listening on %s:%d", gw->config->listen_host,
                    gw->config->listen_port);
    if ((size_t)c->workers != m->n)
        gw_log_warn("reload: a new 'workers' count takes a restart; still "
                    "running %zu", m->n);
    /* routing: breakers and counters carry over by backend name */
    if (gw_states_attach(gw->states, c) < 0) {
        gw_log_error("reload refused: out of memory");
        gw_config_unref(c);
        return;
    }
    if (worker_apply(m->w[0], c) < 0) {
        gw_config_unref(c);
        return;
    }
    gw_metrics_reload(gw->metrics, c); /* counters carry over by name */
    gw_health_apply(gw->health); /* checks follow the new config */
    if (gw->prompts && c->registry.path)
        gw_prompts_reload(gw->prompts, &c->registry);
    else if (gw->prompts || c->registry.path)
        gw_log_warn("reload: adding or removing \"registry\" takes a "
                    "restart");
    for (size_t i = 1; i < m->n; i++)
        post(m->w[i], c, 0, 0, 0);
    gw_log_info("configuration reloaded from '%s': %zu backends, %zu models",
                gw->config_path, c->n_backends, c->n_model_names);
    gw_config_unref(c); /* the workers hold theirs */
}

static void reopen_log(struct worker *w)
{
    char err[512];

    if (gw_accesslog_reopen(w->gw.alog, err, sizeof(err)) < 0)
        gw_log_error("%s", err);
    else if (w->gw.worker_id == 0)
        gw_log_info("access log reopened");
}

/* SIGUSR1: logrotate moved the access log away; write a new one. */
static void on_usr1(evutil_socket_t fd, short what, void *arg)
{
    struct main_state *m = arg;

    (void)fd, (void)what;
    reopen_log(m->w[0]);
    for (size_t i = 1; i < m->n; i++)
        post(m->w[i], NULL, 1, 0, 0);
}

static void check_drained(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    struct timespec now;
    struct timeval tick = {0, 20000};

    (void)fd, (void)what;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (gw_http_server_busy(w->gw.http) == 0) {
        if (w->gw.worker_id == 0)
            gw_log_info("drained, exiting");
        event_base_loopexit(w->gw.base, NULL);
        return;
    }
    if (now.tv_sec > w->drain_deadline.tv_sec ||
        (now.tv_sec == w->drain_deadline.tv_sec &&
         now.tv_nsec >= w->drain_deadline.tv_nsec)) {
        gw_log_warn("drain deadline passed with %zu connections busy; "
                    "exiting", gw_http_server_busy(w->gw.http));
        event_base_loopexit(w->gw.base, NULL);
        return;
    }
    evtimer_add(w->drain_timer, &tick);
}

/* Stop accepting and finish what is in flight until deadline. */
static void start_drain(struct worker *w, const struct timespec *deadline)
{
    if (w->draining)
        return;
    w->draining = 1;
    w->drain_deadline = *deadline;
    gw_http_server_shutdown(w->gw.http);
    check_drained(-1, 0, w);
}

static void on_term(evutil_socket_t fd, short what, void *arg)
{
    struct main_state *m = arg;
    struct worker *w0 = m->w[0];
    long ms = w0->gw.config->limits.drain_timeout_ms;
    struct timespec deadline;

    (void)fd, (void)what;
    if (w0->draining) {
        gw_log_warn("second stop signal: exiting now");
        for (size_t i = 1; i < m->n; i++)
            post(m->w[i], NULL, 0, 0, 1);
        event_base_loopexit(w0->gw.base, NULL);
        return;
    }
    gw_log_info("stopping: no new connections, draining up to %ld ms", ms);
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += ms / 1000;
    deadline.tv_nsec += (ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    for (size_t i = 1; i < m->n; i++) {
        pthread_mutex_lock(&m->w[i]->mu);
        m->w[i]->drain_deadline = deadline;
        pthread_mutex_unlock(&m->w[i]->mu);
        post(m->w[i], NULL, 0, 1, 0);
    }
    start_drain(w0, &deadline);
}

/* A worker's mailbox (workers 1..n-1): what worker 0 posted. */
static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    struct gw_config *c;
    struct timespec deadline;
    char buf[64];
    int reopen, drain, stop_now;

    (void)what;
    while (read(fd, buf, sizeof(buf)) > 0)
        ;
    pthread_mutex_lock(&w->mu);
    c = w->next;
    w->next = NULL;
    reopen = w->reopen, drain = w->drain, stop_now = w->stop_now;
    w->reopen = w->drain = 0;
    deadline = w->drain_deadline;
    pthread_mutex_unlock(&w->mu);
    if (stop_now) {
        event_base_loopexit(w->gw.base, NULL);
        gw_config_unref(c);
        return;
    }
    if (c) {
        worker_apply(w, c);
        gw_config_unref(c);
    }
    if (reopen)
        reopen_log(w);
    if (drain)
        start_drain(w, &deadline);
}

/*
 * The loop thread takes a file table of its own before it serves, when it
 * is the only loop. Threads that share a table (the registry's exposure
 * writer and watcher share the one they were started with) make the kernel
 * take and drop a reference on the file at every socket call the loop
 * makes; with a table of its own the loop skips that. Side by side, a
 * prompt gateway (three threads) cost 0.20 to 0.86 us less a request with
 * it, the more the slower the host (README, Performance, session 17); a
 * gateway without a registry has no other thread and gains nothing.
 *
 * Afterwards a descriptor opened on one side is not seen on the other, and
 * the same number may name different files on the two. So: the other
 * threads use only descriptors opened before (their database and JSON-lines
 * file, libevent's wake-up pipe) or their own; the loop opens no SQLite
 * database (the writer and the watcher close theirs on their own threads,
 * since SQLite may close one connection's descriptor when another
 * connection to the same file closes). With several workers the loops keep
 * sharing one table, as before: the main thread frees each worker's
 * sockets after that worker stops. A refusal (seccomp) costs only speed.
 */
static void own_file_table(void)
{
    if (unshare(CLONE_FILES) != 0)
        gw_log_debug("unshare(CLONE_FILES): %s; the loop shares the "
                     "process's file table", strerror(errno));
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    char name[16];

    /* top -H, ps -L and /proc/PID/task/TID/comm show which worker is busy */
    snprintf(name, sizeof(name), "pg-worker-%d", w->gw.worker_id);
    pthread_setname_np(pthread_self(), name);
    event_base_dispatch(w->gw.base);
    return NULL;
}

/* Worker i's own parts (worker 0's shared ones exist already). 0 or -1
 * with the reason logged. */
static int worker_init(struct main_state *m, size_t i)
{
    struct worker *w = m->w[i];
    struct gw_gateway *gw = &w->gw, *g0 = &m->w[0]->gw;
    struct gw_http_limits limits;
    struct timespec ts;
    char msg[512];

    gw->worker_id = (int)i;
    gw->n_workers = m->n;
    gw->workers = m->gws;
    w->m = m;
    clock_gettime(CLOCK_REALTIME, &ts);
    gw->rng = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^
              ((uint64_t)getpid() << 40) ^ ((uint64_t)i << 56) ^
              0x9E3779B97F4A7C15ULL;
    if ((gw->base = event_base_new()) == NULL) {
        gw_log_error("cannot create the event loop");
        return -1;
    }
    if (i > 0) {
        gw->config_path = g0->config_path;
        gw->config = gw_config_ref(g0->config);
        gw->limiter = g0->limiter;
        gw->states = g0->states;
        gw->health = g0->health;
        gw->memstore = g0->memstore;
        if (g0->prompts &&
            (gw->prompts = gw_prompts_view(g0->prompts, gw->base)) == NULL) {
            gw_log_error("out of memory at start");
            return -1;
        }
        if (pipe2(w->wake_fd, O_NONBLOCK | O_CLOEXEC) < 0 ||
            (w->wake = event_new(gw->base, w->wake_fd[0], EV_READ | EV_PERSIST,
                                 on_wake, w)) == NULL ||
            event_add(w->wake, NULL) < 0) {
            gw_log_error("cannot set up worker %zu's wake-up pipe: %s", i,
                         strerror(errno));
            return -1;
        }
    }
    gw->alog = gw_accesslog_open(gw->base, gw->config->access_log, msg,
                                 sizeof(msg));
    if (gw->alog == NULL) {
        gw_log_error("%s", msg);
        return -1;
    }
    gw->curl = gw_curlev_new(gw->base, gw_upstream_done);
    if (gw->config->has_redis &&
        (gw->rlredis = gw_rlredis_new(gw->base, &gw->config->redis)) == NULL) {
        gw_log_error("cannot set up the redis client");
        return -1;
    }
    if (gw->rlredis)
        gw_rlredis_set_error_sink(gw->rlredis, &gw->rl_errors);
    if (gw->config->cache.enabled &&
        (gw->cache = gw_cache_new(gw->base, gw->config, gw->memstore)) ==
            NULL) {
        gw_log_error("cannot set up the response cache: out of memory");
        return -1;
    }
    gw->http = gw_http_server_new(gw->base, gw_proxy_handle, gw);
    if (gw->http)
        gw_http_server_set_error_handler(gw->http, gw_proxy_reject);
    w->drain_timer = evtimer_new(gw->base, check_drained, w);
    w->retire_timer = evtimer_new(gw->base, sweep_retired, w);
    if (gw->curl == NULL || gw->http == NULL || w->drain_timer == NULL ||
        w->retire_timer == NULL || (gw->metrics = gw_metrics_new()) == NULL ||
        gw_metrics_attach(gw->metrics, gw->config) < 0) {
        gw_log_error("out of memory at start");
        return -1;
    }
    to_limits(gw->config, &limits);
    gw_http_server_set_limits(gw->http, &limits);
    gw_http_server_set_reuseport(gw->http, m->n > 1);
    /* tls (issue 9): built once (worker 0, before the config is shared);
     * every worker serves with that context, so sessions resume on any */
    if (i == 0 && gw_tls_attach(gw->config, NULL, msg, sizeof(msg)) < 0) {
        gw_log_error("%s", msg);
        return -1;
    }
    gw_http_server_set_tls(gw->http, gw->config->tls.ctx);
    if (i == 0 && gw->config->tls.ctx)
        gw_tls_log(gw->config->tls.ctx, "loaded");
    if (gw_http_server_listen(gw->http, gw->config->listen_host,
                              gw->config->listen_port, msg,
                              sizeof(msg)) < 0) {
        gw_log_error("%s", msg);
        return -1;
    }
    return 0;
}

/* Worker i's own parts, after its loop stopped (shared ones: main). */
static void worker_free(struct worker *w)
{
    struct gw_gateway *gw;

    if (w == NULL)
        return;
    gw = &w->gw;
    gw_http_server_free(gw->http);
    gw_metrics_free(gw->metrics); /* and its listener */
    gw_cache_free(gw->cache); /* after the requests that wait on it */
    gw_curlev_free(gw->curl);
    gw_upstream_free_pools(gw);
    gw_upstream_free_spares(gw);
    if (gw->worker_id != 0)
        gw_prompts_free(gw->prompts); /* a view; the first goes last */
    gw_rlredis_free(gw->rlredis);
    for (size_t i = 0; i < gw->n_rl_retired; i++)
        gw_rlredis_free(gw->rl_retired[i].r);
    free(gw->rl_retired);
    gw_accesslog_free(gw->alog);
    if (w->wake)
        event_free(w->wake);
    if (w->drain_timer)
        event_free(w->drain_timer);
    if (w->retire_timer)
        event_free(w->retire_timer);
    gw_config_unref(w->next);
    gw_config_unref(gw->config);
    if (gw->base)
        event_base_free(gw->base);
    if (w->wake_fd[0] >= 0)
        close(w->wake_fd[0]);
    if (w->wake_fd[1] >= 0)
        close(w->wake_fd[1]);
    pthread_mutex_destroy(&w->mu);
    free(w);
}

/* promptgate -t: prints what the configuration sets up. */
static int check_only(const char *path, struct gw_config *c)
{
    char msg[512];
    int rc;

    printf("promptgate: configuration '%s' ok: %zu backends, %zu models, "
           "listen %s:%d, %d worker%s\n", path, c->n_backends,
           c->n_model_names, c->listen_host, c->listen_port, c->workers,
           c->workers == 1 ? "" : "s");
    if (c->n_keys == 0)
        printf("promptgate: note: no \"keys\": the gateway runs open, "
               "any caller may use every model (fine for local "
               "development only)\n");
    else
        printf("promptgate: %zu virtual keys, rate limits %s\n", c->n_keys,
               c->rl_mode == GW_RL_REDIS ? "in redis" : "local");
    /* tls (issue 9): the certificate's subject and notAfter */
    if (gw_tls_check(c, stdout, stderr) < 0)
        return 1;
    if (c->registry.path) {
        rc = gw_prompts_check(&c->registry, msg, sizeof(msg));
        fprintf(rc < 0 ? stderr : stdout, "promptgate: %s\n", msg);
        if (rc < 0)
            return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"test", no_argument, NULL, 't'},
        {"debug", no_argument, NULL, 'd'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0}};
    struct main_state m;
    struct gw_gateway *gw = NULL;
    struct gw_config *config;
    struct gw_prompts *prompts = NULL;
    struct gw_health *health = NULL;
    struct gw_backend_states *states = NULL;
    struct gw_limiter *limiter = NULL;
    struct gw_memstore *memstore = NULL;
    const char *path = "conf/promptgate.json";
    char *err = NULL, msg[512];
    int ch, test = 0, rc = 1;
    size_t i;

    while ((ch = getopt_long(argc, argv, "c:tdhV", opts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            path = optarg;
            break;
        case 't':
            test = 1;
            break;
        case 'd':
            gw_log_set_level(GW_LOG_DEBUG);
            break;
        case 'h':
            fputs(usage_text, stdout);
            return 0;
        case 'V':
            printf("promptgate %s\n", GW_VERSION);
            return 0;
        default:
            fputs(usage_text, stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "promptgate: unexpected argument '%s'\n%s",
                argv[optind], usage_text);
        return 2;
    }

    config = gw_config_load(path, &err);
    if (config == NULL) {
        print_problems(path, err);
        free(err);
        return 1;
    }
    if (test) {
        rc = check_only(path, config);
        gw_config_unref(config);
        return rc;
    }

    memset(&m, 0, sizeof(m));
    signal(SIGPIPE, SIG_IGN);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        gw_log_error("cannot initialise libcurl");
        gw_config_unref(config);
        return 1;
    }
    m.n = (size_t)config->workers;
    m.w = calloc(m.n, sizeof(*m.w));
    m.gws = calloc(m.n, sizeof(*m.gws));
    for (i = 0; m.w && m.gws && i < m.n; i++) {
        if ((m.w[i] = calloc(1, sizeof(*m.w[i]))) == NULL)
            break;
        m.w[i]->wake_fd[0] = m.w[i]->wake_fd[1] = -1;
        pthread_mutex_init(&m.w[i]->mu, NULL);
        m.gws[i] = &m.w[i]->gw;
    }
    if (m.w == NULL || m.gws == NULL || i < m.n) {
        gw_log_error("out of memory at start");
        goto out;
    }
    /* worker 0 holds the shared parts; the others borrow them */
    gw = &m.w[0]->gw;
    gw->config_path = path;
    gw->config = config; /* worker_free(m.w[0]) drops it */
    gw->limiter = limiter = gw_limiter_new();
    gw->states = states = gw_states_new();
    gw->memstore = memstore = gw_memstore_new(config->cache.max_bytes,
                                              config->cache.max_entry_bytes);
    if (limiter == NULL || states == NULL || memstore == NULL ||
        gw_states_attach(states, config) < 0) {
        gw_log_error("out of memory at start");
        goto out;
    }
    if (worker_init(&m, 0) < 0)
        goto out;
    if (config->registry.path &&
        (gw->prompts = prompts = gw_prompts_new(gw->base, &config->registry,
                                                msg, sizeof(msg))) == NULL) {
        gw_log_error("%s", msg);
        goto out;
    }
    if ((gw->health = health = gw_health_new(gw)) == NULL ||
        gw_health_apply(health) < 0) {
        gw_log_error("out of memory at start");
        goto out;
    }
    if (gw_metrics_listen(gw, msg, sizeof(msg)) < 0) {
        gw_log_error("metrics.listen: %s", msg);
        goto out;
    }
    for (i = 1; i < m.n; i++)
        if (worker_init(&m, i) < 0)
            goto out;
    m.sig_hup = evsignal_new(gw->base, SIGHUP, on_hup, &m);
    m.sig_term = evsignal_new(gw->base, SIGTERM, on_term, &m);
    m.sig_int = evsignal_new(gw->base, SIGINT, on_term, &m);
    m.sig_usr1 = evsignal_new(gw->base, SIGUSR1, on_usr1, &m);
    if (m.sig_hup == NULL || m.sig_term == NULL || m.sig_int == NULL ||
        m.sig_usr1 == NULL) {
        gw_log_error("out of memory at start");
        goto out;
    }
    event_add(m.sig_hup, NULL);
    event_add(m.sig_term, NULL);
    event_add(m.sig_int, NULL);
    event_add(m.sig_usr1, NULL);
    /* the other threads block the signals: worker 0's loop takes them */
    {
        sigset_t set, old;
        sigemptyset(&set);
        sigaddset(&set, SIGHUP);
        sigaddset(&set, SIGTERM);
        sigaddset(&set, SIGINT);
        sigaddset(&set, SIGUSR1);
        pthread_sigmask(SIG_BLOCK, &set, &old);
        for (i = 1; i < m.n; i++) {
            if (pthread_create(&m.w[i]->thread, NULL, worker_main,
                               m.w[i]) != 0) {
                gw_log_error("cannot start worker thread %zu", i);
                break;
            }
            m.w[i]->started = 1;
        }
        pthread_sigmask(SIG_SETMASK, &old, NULL);
    }
    if (i == m.n) {
        gw_log_info("promptgate %s listening on %s:%d: %zu backends, %zu "
                    "models%s", GW_VERSION, config->listen_host,
                    config->listen_port, config->n_backends,
                    config->n_model_names,
                    m.n > 1 ? ", workers" : "");
        if (m.n > 1)
            gw_log_info("%zu workers (event-loop threads) share the "
                        "listening address", m.n);
        else
            own_file_table();
        event_base_dispatch(gw->base);
        rc = 0;
    }
out:
    /* stop the others (a drain already ended them, or a failed start) */
    for (i = 1; m.w && i < m.n; i++)
        if (m.w[i] && m.w[i]->started) {
            if (rc != 0)
                post(m.w[i], NULL, 0, 0, 1);
            pthread_join(m.w[i]->thread, NULL); /* drained by the deadline */
        }
    for (i = m.n; m.w && i-- > 1;)
        worker_free(m.w[i]); /* views of prompts first */
    gw_health_free(health); /* its checks run on worker 0's loop */
    gw_prompts_free(prompts);
    if (m.sig_hup)
        event_free(m.sig_hup);
    if (m.sig_term)
        event_free(m.sig_term);
    if (m.sig_int)
        event_free(m.sig_int);
    if (m.sig_usr1)
        event_free(m.sig_usr1);
    if (m.w && m.w[0])
        worker_free(m.w[0]);
    else
        gw_config_unref(config);
    gw_states_free(states);
    gw_limiter_free(limiter);
    gw_memstore_free(memstore);
    free(m.w);
    free(m.gws);
    curl_global_cleanup();
    return rc;
}
