/*
 * config.h - the gateway configuration: one JSON file, an immutable
 * reference-counted snapshot once loaded.
 *
 * A request takes a reference to the config it started with (gw_config_ref)
 * and drops it when it ends, so SIGHUP can swap in a new config while
 * requests in flight finish on the old one.
 */
#ifndef GW_CONFIG_H
#define GW_CONFIG_H

#include <stddef.h>
#include <sys/socket.h>

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
    int inflight; /* live count; the one mutable field, loop-local */
    /* plain http:// to a numeric address (or localhost) is served by the
     * gateway's own client (upconn.c); anything else through libcurl */
    int native;
    struct sockaddr_storage addr; /* native only */
    socklen_t addrlen;
    char *host_header; /* owned: "HOST:PORT" as in the URL */
    char *path;        /* owned: the URL's path, e.g. "/v1" */
};

struct gw_limits {
    size_t max_body_bytes;
    size_t max_header_bytes;
    long header_timeout_ms;
    long body_timeout_ms;
    long idle_timeout_ms;
    long drain_timeout_ms;
};

struct gw_config {
    int refs;
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
};

/* Reads and checks FILE. On failure returns NULL and sets *err to a
 * malloc'd text of one line per problem, each naming the JSON path
 * ("backends[1].url: not a URL"); the caller frees it. */
struct gw_config *gw_config_load(const char *path, char **err);

/* The same from JSON text (for tests and -t on stdin). */
struct gw_config *gw_config_parse(const char *text, size_t len, char **err);

struct gw_config *gw_config_ref(struct gw_config *c);
void gw_config_unref(struct gw_config *c); /* NULL is a no-op */

/* The first backend serving model, or NULL. The pointer is borrowed from
 * c and lives as long as c. */
struct gw_backend *gw_config_backend_for(struct gw_config *c,
                                         const char *model);

#endif
