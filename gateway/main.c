/*
 * main.c - bin/promptgate: options, signals, reload and shutdown.
 *
 * SIGHUP reads the config file again; a good one replaces the current
 * config for new requests while requests in flight keep the one they
 * started with (reference counts); a bad one is refused and logged, and
 * the old one keeps serving. SIGTERM/SIGINT stop accepting, let requests
 * in flight finish up to limits.drain_timeout_ms, then exit 0.
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

#include <event2/event.h>
#include <getopt.h>
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

struct main_state {
    struct gw_gateway gw;
    struct gw_gateway *self; /* gw.workers points here */
    struct event *sig_hup, *sig_term, *sig_int, *sig_usr1; /* owned */
    struct event *drain_timer;                  /* owned */
    struct event *retire_timer; /* owned: frees retired redis clients */
    struct timespec drain_deadline;
    int draining;
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
    struct main_state *m = arg;
    struct gw_gateway *gw = &m->gw;
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
        gw->rl_errors_gone += gw_rlredis_errors(e->r); /* metrics keep them */
        gw_rlredis_free(e->r);
        gw->rl_retired[i] = gw->rl_retired[--gw->n_rl_retired];
    }
    if (gw->n_rl_retired)
        evtimer_add(m->retire_timer, &tick);
}

static void on_hup(evutil_socket_t fd, short what, void *arg)
{
    struct main_state *m = arg;
    struct gw_gateway *gw = &m->gw;
    struct gw_config *c;
    struct gw_http_limits l;
    char *err = NULL;

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
    if (strcmp(c->listen_host, gw->config->listen_host) != 0 ||
        c->listen_port != gw->config->listen_port)
        gw_log_warn("reload: a new 'listen' address takes a restart; "
                    "still listening on %s:%d", gw->config->listen_host,
                    gw->config->listen_port);
    /* routing: breakers and counters carry over by backend name */
    if (gw_states_attach(gw->states, c) < 0) {
        gw_log_error("reload refused: out of memory");
        gw_config_unref(c);
        return;
    }
    gw_cache_reload(gw->cache, c); /* bound and timeout; backend fixed */
    if (strcmp(c->access_log, gw->config->access_log) != 0) {
        char e[256];
        struct gw_accesslog *al =
            gw_accesslog_open(gw->base, c->access_log, e, sizeof(e));
        if (al == NULL) {
            gw_log_error("reload refused: %s", e);
            gw_config_unref(c);
            return;
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
            gw_config_unref(c);
            return;
        }
        ret = realloc(gw->rl_retired,
                      (gw->n_rl_retired + 1) * sizeof(*gw->rl_retired));
        if (ret == NULL) {
            gw_rlredis_free(nr);
            gw_log_error("reload refused: out of memory");
            gw_config_unref(c);
            return;
        }
        gw->rl_retired = ret;
        if (gw->rlredis) {
            struct timeval soon = {0, 0};
            ret[gw->n_rl_retired].r = gw->rlredis;
            ret[gw->n_rl_retired++].since = mono_s();
            evtimer_add(m->retire_timer, &soon);
        }
        gw->rlredis = nr;
        if (nr)
            gw_log_info("reload: rate limits now use redis '%s:%d'",
                        c->redis.host, c->redis.port);
    }
    to_limits(c, &l);
    gw_http_server_set_limits(gw->http, &l);
    gw_config_unref(gw->config);
    gw->config = c;
    gw_metrics_reload(gw->metrics, c); /* counters carry over by name */
    gw_health_apply(gw->health); /* checks follow the new config */
    if (gw->prompts && c->registry.path)
        gw_prompts_reload(gw->prompts, &c->registry);
    else if (gw->prompts || c->registry.path)
        gw_log_warn("reload: adding or removing \"registry\" takes a "
                    "restart");
    gw_log_info("configuration reloaded from '%s': %zu backends, %zu models",
                gw->config_path, c->n_backends, c->n_model_names);
}

/* SIGUSR1: logrotate moved the access log away; write a new one. */
static void on_usr1(evutil_socket_t fd, short what, void *arg)
{
    struct main_state *m = arg;
    char err[512];

    (void)fd, (void)what;
    if (gw_accesslog_reopen(m->gw.alog, err, sizeof(err)) < 0)
        gw_log_error("%s", err);
    else
        gw_log_info("access log reopened");
}

static void check_drained(evutil_socket_t fd, short what, void *arg)
{
    struct main_state *m = arg;
    struct timespec now;
    struct timeval tick = {0, 20000};

    (void)fd, (void)what;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (gw_http_server_busy(m->gw.http) == 0) {
        gw_log_info("drained, exiting");
        event_base_loopexit(m->gw.base, NULL);
        return;
    }
    if (now.tv_sec > m->drain_deadline.tv_sec ||
        (now.tv_sec == m->drain_deadline.tv_sec &&
         now.tv_nsec >= m->drain_deadline.tv_nsec)) {
        gw_log_warn("drain deadline passed with %zu connections busy; "
                    "exiting", gw_http_server_busy(m->gw.http));
        event_base_loopexit(m->gw.base, NULL);
        return;
    }
    evtimer_add(m->drain_timer, &tick);
}

static void on_term(evutil_socket_t fd, short what, void *arg)
{
    struct main_state *m = arg;
    long ms = m->gw.config->limits.drain_timeout_ms;

    (void)fd, (void)what;
    if (m->draining) {
        gw_log_warn("second stop signal: exiting now");
        event_base_loopexit(m->gw.base, NULL);
        return;
    }
    m->draining = 1;
    gw_log_info("stopping: no new connections, draining up to %ld ms", ms);
    gw_http_server_shutdown(m->gw.http);
    clock_gettime(CLOCK_MONOTONIC, &m->drain_deadline);
    m->drain_deadline.tv_sec += ms / 1000;
    m->drain_deadline.tv_nsec += (ms % 1000) * 1000000L;
    if (m->drain_deadline.tv_nsec >= 1000000000L) {
        m->drain_deadline.tv_sec++;
        m->drain_deadline.tv_nsec -= 1000000000L;
    }
    check_drained(-1, 0, m);
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
    struct gw_gateway *gw = &m.gw;
    struct gw_http_limits limits;
    const char *path = "conf/promptgate.json";
    char *err = NULL, msg[512];
    int ch, test = 0, rc = 1;
    struct timespec ts;

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

    memset(&m, 0, sizeof(m));
    m.self = gw;
    gw->n_workers = 1;
    gw->workers = &m.self;
    gw->config_path = path;
    gw->config = gw_config_load(path, &err);
    if (gw->config == NULL) {
        print_problems(path, err);
        free(err);
        return 1;
    }
    if (test) {
        printf("promptgate: configuration '%s' ok: %zu backends, %zu models, "
               "listen %s:%d\n", path, gw->config->n_backends,
               gw->config->n_model_names, gw->config->listen_host,
               gw->config->listen_port);
        if (gw->config->n_keys == 0)
            printf("promptgate: note: no \"keys\": the gateway runs open, "
                   "any caller may use every model (fine for local "
                   "development only)\n");
        else
            printf("promptgate: %zu virtual keys, rate limits %s\n",
                   gw->config->n_keys,
                   gw->config->rl_mode == GW_RL_REDIS ? "in redis" : "local");
        if (gw->config->registry.path) {
            rc = gw_prompts_check(&gw->config->registry, msg, sizeof(msg));
            fprintf(rc < 0 ? stderr : stdout, "promptgate: %s\n", msg);
            if (rc < 0) {
                gw_config_unref(gw->config);
                return 1;
            }
        }
        gw_config_unref(gw->config);
        return 0;
    }

    signal(SIGPIPE, SIG_IGN);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        gw_log_error("cannot initialise libcurl");
        gw_config_unref(gw->config);
        return 1;
    }
    clock_gettime(CLOCK_REALTIME, &ts);
    gw->rng = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^
              ((uint64_t)getpid() << 40) ^ 0x9E3779B97F4A7C15ULL;
    gw->base = event_base_new();
    if (gw->base == NULL) {
        gw_log_error("cannot create the event loop");
        goto out;
    }
    gw->alog = gw_accesslog_open(gw->base, gw->config->access_log, msg,
                                 sizeof(msg));
    if (gw->alog == NULL) {
        gw_log_error("%s", msg);
        goto out;
    }
    if (gw->config->registry.path &&
        (gw->prompts = gw_prompts_new(gw->base, &gw->config->registry, msg,
                                      sizeof(msg))) == NULL) {
        gw_log_error("%s", msg);
        goto out;
    }
    gw->memstore = gw_memstore_new(gw->config->cache.max_bytes,
                                   gw->config->cache.max_entry_bytes);
    if (gw->memstore == NULL) {
        gw_log_error("out of memory at start");
        goto out;
    }
    gw->curl = gw_curlev_new(gw->base, gw_upstream_done);
    gw->limiter = gw_limiter_new();
    if (gw->config->has_redis &&
        (gw->rlredis = gw_rlredis_new(gw->base, &gw->config->redis)) == NULL) {
        gw_log_error("cannot set up the redis client");
        goto out;
    }
    if (gw->config->cache.enabled &&
        (gw->cache = gw_cache_new(gw->base, gw->config, gw->memstore)) == NULL) {
        gw_log_error("cannot set up the response cache: out of memory");
        goto out;
    }
    gw->http = gw_http_server_new(gw->base, gw_proxy_handle, gw);
    if (gw->http)
        gw_http_server_set_error_handler(gw->http, gw_proxy_reject);
    m.sig_hup = evsignal_new(gw->base, SIGHUP, on_hup, &m);
    m.sig_term = evsignal_new(gw->base, SIGTERM, on_term, &m);
    m.sig_int = evsignal_new(gw->base, SIGINT, on_term, &m);
    m.sig_usr1 = evsignal_new(gw->base, SIGUSR1, on_usr1, &m);
    m.drain_timer = evtimer_new(gw->base, check_drained, &m);
    m.retire_timer = evtimer_new(gw->base, sweep_retired, &m);
    if (m.retire_timer == NULL || gw->curl == NULL || gw->http == NULL ||
        gw->limiter == NULL || m.sig_hup == NULL || m.sig_term == NULL ||
        m.sig_int == NULL || m.sig_usr1 == NULL || m.drain_timer == NULL) {
        gw_log_error("out of memory at start");
        goto out;
    }
    gw->states = gw_states_new();
    if ((gw->metrics = gw_metrics_new()) == NULL ||
        gw_metrics_attach(gw->metrics, gw->config) < 0 ||
        gw->states == NULL || gw_states_attach(gw->states, gw->config) < 0 ||
        (gw->health = gw_health_new(gw)) == NULL ||
        gw_health_apply(gw->health) < 0) {
        gw_log_error("out of memory at start");
        goto out;
    }
    to_limits(gw->config, &limits);
    gw_http_server_set_limits(gw->http, &limits);
    if (gw_http_server_listen(gw->http, gw->config->listen_host,
                              gw->config->listen_port, msg,
                              sizeof(msg)) < 0) {
        gw_log_error("%s", msg);
        goto out;
    }
    if (gw_metrics_listen(gw, msg, sizeof(msg)) < 0) {
        gw_log_error("metrics.listen: %s", msg);
        goto out;
    }
    event_add(m.sig_hup, NULL);
    event_add(m.sig_term, NULL);
    event_add(m.sig_int, NULL);
    event_add(m.sig_usr1, NULL);
    gw_log_info("promptgate %s listening on %s:%d: %zu backends, %zu models",
                GW_VERSION, gw->config->listen_host, gw->config->listen_port,
                gw->config->n_backends, gw->config->n_model_names);
    event_base_dispatch(gw->base);
    rc = 0;
out:
    gw_http_server_free(gw->http);
    gw_metrics_free(gw->metrics); /* and its listener */
    gw_cache_free(gw->cache); /* after the requests that wait on it */
    gw_memstore_free(gw->memstore);
    gw_curlev_free(gw->curl);
    gw_upstream_free_pools(gw);
    gw_prompts_free(gw->prompts);
    gw_health_free(gw->health);
    gw_states_free(gw->states);
    gw_rlredis_free(gw->rlredis);
    for (size_t i = 0; i < gw->n_rl_retired; i++)
        gw_rlredis_free(gw->rl_retired[i].r);
    free(gw->rl_retired);
    gw_limiter_free(gw->limiter);
    gw_accesslog_free(gw->alog);
    if (m.sig_hup)
        event_free(m.sig_hup);
    if (m.sig_term)
        event_free(m.sig_term);
    if (m.sig_int)
        event_free(m.sig_int);
    if (m.sig_usr1)
        event_free(m.sig_usr1);
    if (m.drain_timer)
        event_free(m.drain_timer);
    if (m.retire_timer)
        event_free(m.retire_timer);
    gw_config_unref(gw->config);
    if (gw->base)
        event_base_free(gw->base);
    curl_global_cleanup();
    return rc;
}
