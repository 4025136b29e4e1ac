/*
 * config.h - the gateway configuration: one JSON file, an immutable
 * reference-counted snapshot once loaded.
 *
 * A request takes a reference to the config it started with (gw_config_ref)
 * and drops it when it ends, so SIGHUP can swap in a new config while
 * requests in flight finish on the old one.
 *
 * The one part that changes after loading: each model pool's smooth round
 * robin weights (pool.c), loop-local scheduling state that may start over
 * at a reload. Counters and breakers that must survive a reload live
 * outside the snapshot, keyed by backend name (struct gw_backend_state).
 */
#ifndef GW_CONFIG_H
#define GW_CONFIG_H

#include <stddef.h>
#include <sys/socket.h>

#include "gateway/breaker.h"

struct gw_backend_state;
struct gw_pool;

struct gw_backend {
    char *name;        /* owned */
    char *url;         /* owned: base URL, no trailing '/', e.g. .../v1 */
    char *auth_header; /* owned: "Authorization: Bearer <key>" or NULL */
    char **models;     /* owned: n_models owned strings */
    size_t n_models;
    int weight;
    int max_inflight; /* 0: no limit */
    long timeout_ms;
    long connect_timeout_ms;
    long first_byte_timeout_ms;
    /* plain http:// to a numeric address (or localhost) is served by the
     * gateway's own client (upconn.c); anything else through libcurl */
    int native;
    struct sockaddr_storage addr; /* native only */
    socklen_t addrlen;
    char *host_header; /* owned: "HOST:PORT" as in the URL */
    char *path;        /* owned: the URL's path, e.g. "/v1" */
    int priority;      /* tier: lower tiers are used first */
    struct gw_breaker_conf breaker;
    int provider; /* enum gw_provider */
    char *api_version;  /* owned: azure "api-version", else NULL */
    char *ca_file;      /* owned: CA bundle (PEM) to verify its TLS
                           certificate with; NULL: the system's */
    char **deployments; /* owned: azure, one owned name per models[i] */
    char *anthropic_version;  /* owned: anthropic "anthropic-version", else
                                 NULL */
    long default_max_tokens;  /* anthropic: max_tokens of a request that
                                 sets none (Messages requires one) */
    char *health_path;        /* owned: e.g. "/models", NULL: no checks */
    long health_interval_ms;
    long health_timeout_ms;
    /* runtime state (in flight, breaker, latency) kept across reloads by
     * backend name (pool.c); NULL until gw_states_attach */
    struct gw_backend_state *state; /* borrowed from the gateway's table */
};

/* How a backend is spoken to (routing, config "provider"). */
enum gw_provider {
    GW_PROVIDER_OPENAI, /* OpenAI's API: also vLLM, llama.cpp, Ollama, ... */
    GW_PROVIDER_AZURE,  /* deployment URLs, api-version, api-key header */
    GW_PROVIDER_ANTHROPIC /* Messages API, translated (anthropic.c) */
};

enum gw_strategy {
    GW_STRATEGY_ROUND_ROBIN,
    GW_STRATEGY_LEAST_INFLIGHT,
    GW_STRATEGY_LATENCY
};

/* Routing settings of one model (config key "models"). */
struct gw_model_conf {
    char *name; /* owned */
    enum gw_strategy strategy;
    char **fallbacks; /* owned: n_fallbacks owned model names, in order */
    size_t n_fallbacks;
    int cache;        /* enum gw_model_cache (cache.c) */
    long cache_ttl_s; /* 0: the cache's ttl_s */
};

/* models.NAME.cache: true (the default: deterministic requests), false,
 * or "all" (every request of the model, sampling or not) */
enum gw_model_cache { GW_MODEL_CACHE_ON, GW_MODEL_CACHE_OFF,
                      GW_MODEL_CACHE_ALL };

/* Per key and model limits; 0 means no limit. */
struct gw_rate {
    long rpm;
    long tpm;
};

struct gw_model_rate {
    char *model; /* owned */
    struct gw_rate rate;
};

/* A virtual key: who calls, what it may use, how much. */
struct gw_key {
    char *name;                 /* owned */
    unsigned char sha256[32];   /* of the key itself; the key is not kept */
    char **models;              /* owned: allowed models; NULL when "*" */
    size_t n_models;
    struct gw_rate rate;        /* per key */
    struct gw_model_rate *model_rates; /* owned: per key and model */
    size_t n_model_rates;
    long max_concurrent;
    long daily_tokens;
    char *cache_namespace;      /* owned: whose cache entries it shares;
                                   defaults to the key's name */
};

enum gw_rl_mode { GW_RL_LOCAL, GW_RL_REDIS };

struct gw_redis_conf {
    char *host; /* owned */
    int port;
    int db;
    char *password; /* owned, may be NULL */
    long timeout_ms;
};

enum gw_cache_backend { GW_CACHE_MEMORY, GW_CACHE_REDIS };

/* "cache": {"backend", "ttl_s", "max_entry_bytes", "max_bytes"} (issue 5) */
struct gw_cache_conf {
    int enabled; /* the key is present */
    enum gw_cache_backend backend;
    long ttl_s;
    size_t max_entry_bytes; /* a larger answer is not stored */
    size_t max_bytes;       /* memory backend: the LRU's bound */
};

struct gw_limits {
    size_t max_body_bytes;
    size_t max_header_bytes;
    long header_timeout_ms;
    long body_timeout_ms;
    long idle_timeout_ms;
    long drain_timeout_ms;
    long max_n;      /* a request's "n" above it: 400 (proxy.c) */
    long max_tokens; /* its max_tokens / max_completion_tokens above it */
};

/* "registry": {"path", "exposures", "log_outputs"} (issue 7) */
struct gw_registry_conf {
    char *path;      /* owned: registry database; NULL when not configured */
    char *exposures; /* owned: "db" or a JSON-lines file path */
    int log_outputs; /* record the generated text with each exposure */
};

/* "metrics": {"enabled", "path", "listen", "bearer_token"} (issue 9) */
struct gw_metrics_conf {
    int enabled;        /* the key is present and enabled is not false */
    char *path;         /* owned: "/metrics" by default */
    char *listen_host;  /* owned: a separate listener, NULL: the main one */
    int listen_port;
    char *bearer_token; /* owned: resolved secret; NULL: the admin key's
                           rule (metrics.c) */
};

/* "workers": event-loop threads (main.c) */
#define GW_MAX_WORKERS 64

/* "tls": {"cert", "key", "min_version"} (issue 9): the listener speaks
 * TLS (tls.c). Both files were readable, PEM, and the key matched the
 * certificate when the config was loaded. */
struct gw_tls_conf {
    int enabled;     /* the key is present */
    char *cert;      /* owned: PEM certificate, then its chain */
    char *key;       /* owned: PEM private key, not encrypted */
    int min_version; /* OpenSSL's number: TLS1_2_VERSION or TLS1_3_VERSION */
    /* owned reference: the context built from the above by gw_tls_attach
     * (main.c, once, before the config is shared), which every worker
     * serves new connections with; NULL: plain, or not built (-t, tests) */
    struct gw_tls *ctx;
};

struct gw_config {
    char *path;        /* owned: the file it was read from */
    char *listen_host; /* owned */
    int listen_port;
    int workers;
    struct gw_limits limits;
    struct gw_backend *backends; /* owned: n_backends entries */
    size_t n_backends;
    char **model_names; /* owned: distinct model names, in file order */
    size_t n_model_names;
    char *access_log; /* owned: "stderr", "off" or a path */
    struct gw_registry_conf registry;
    char *admin_key;  /* owned: resolved secret, NULL: admin API off */
    struct gw_model_conf *model_confs; /* owned: n_model_confs */
    size_t n_model_confs;
    struct gw_pool *pools; /* owned: one per model name (pool.c) */
    size_t n_pools;
    struct gw_key *keys; /* owned: n_keys; none means the gateway is open */
    size_t n_keys;
    enum gw_rl_mode rl_mode;
    int rl_fail_closed; /* rate_limit.on_error "closed" */
    int has_redis;
    struct gw_redis_conf redis;
    struct gw_cache_conf cache;
    struct gw_metrics_conf metrics;
    struct gw_tls_conf tls;
    /* references (atomic: workers share the config); on a cache line of
     * its own, so that taking one does not evict the fields above from
     * the other workers' caches */
    int refs __attribute__((aligned(64)));
};

/* Reads and checks FILE. On failure returns NULL and sets *err to a
 * malloc'd text of one line per problem, each naming the JSON path
 * ("backends[1].url: not a URL"); the caller frees it. */
struct gw_config *gw_config_load(const char *path, char **err);

/* The same from JSON text (for tests and -t on stdin). */
struct gw_config *gw_config_parse(const char *text, size_t len, char **err);

struct gw_config *gw_config_ref(struct gw_config *c);
void gw_config_unref(struct gw_config *c); /* NULL is a no-op */

/* The key whose SHA-256 is digest (compared in constant time over all
 * keys), or NULL. */
struct gw_key *gw_config_key_by_digest(struct gw_config *c,
                                       const unsigned char digest[32]);

/* 1 when key may use model. */
int gw_key_allows(const struct gw_key *key, const char *model);

/* The first backend serving model, or NULL. The pointer is borrowed from
 * c and lives as long as c. */
struct gw_backend *gw_config_backend_for(struct gw_config *c,
                                         const char *model);

#endif
