/*
 * config.c - loading and checking the JSON configuration.
 *
 * Every problem in a file is reported, not only the first, each on its own
 * line naming the JSON path, so that `promptgate -t` tells an operator all
 * there is to fix at once. Unknown keys are errors: a misspelt limit that
 * is silently ignored is a limit that does not hold.
 *
 * Secrets are never written in the file: a string "env:NAME" is read from
 * the environment. Resolved secrets are kept only in the built
 * Authorization header and never logged.
 */
#include "gateway/config.h"
#include "gateway/anthropic.h"
#include "gateway/pool.h"
#include "gateway/tls.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_MODEL_NAME 256
#define MAX_BACKENDS 1024

struct problems {
    char *text; /* owned */
    size_t len, cap;
    int count;
};

static void problem(struct problems *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void problem(struct problems *p, const char *fmt, ...)
{
    va_list ap;
    char line[1024];
    int n;

    va_start(ap, fmt);
    n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if (n > (int)sizeof(line) - 2)
        n = sizeof(line) - 2;
    /* one line per problem: a key or value echoed from the file may hold
     * a newline or other control byte (found by tests/fuzz/fuzz_config) */
    for (int i = 0; i < n; i++)
        if ((unsigned char)line[i] < 0x20 || line[i] == 0x7f)
            line[i] = '?';
    line[n++] = '\n';
    p->count++;
    if (p->len + n + 1 > p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 512;
        while (cap < p->len + n + 1)
            cap *= 2;
        char *t = realloc(p->text, cap);
        if (t == NULL)
            return;
        p->text = t, p->cap = cap;
    }
    memcpy(p->text + p->len, line, n);
    p->len += n;
    p->text[p->len] = '\0';
}

/* Worker threads share a config: the count is atomic (relaxed to take a
 * reference, acquire-release to drop one, so the last owner sees every
 * other owner's writes before it frees). */
struct gw_config *gw_config_ref(struct gw_config *c)
{
    __atomic_add_fetch(&c->refs, 1, __ATOMIC_RELAXED);
    return c;
}

static void key_release(struct gw_key *k)
{
    size_t i;

    free(k->name);
    for (i = 0; i < k->n_models; i++)
        free(k->models[i]);
    free(k->models);
    for (i = 0; i < k->n_model_rates; i++)
        free(k->model_rates[i].model);
    free(k->model_rates);
    free(k->cache_namespace);
}

struct gw_key *gw_config_key_by_digest(struct gw_config *c,
                                       const unsigned char digest[32])
{
    struct gw_key *found = NULL;
    size_t i;

    /* every key is compared, so the time does not tell which matched */
    for (i = 0; i < c->n_keys; i++)
        if (CRYPTO_memcmp(c->keys[i].sha256, digest, 32) == 0)
            found = &c->keys[i];
    return found;
}

int gw_key_allows(const struct gw_key *key, const char *model)
{
    size_t i;

    if (key->models == NULL)
        return 1;
    for (i = 0; i < key->n_models; i++)
        if (strcmp(key->models[i], model) == 0)
            return 1;
    return 0;
}

static void backend_release(struct gw_backend *b)
{
    size_t i;

    free(b->name);
    free(b->url);
    free(b->host_header);
    free(b->path);
    if (b->auth_header) {
        /* the key must not linger in freed memory */
        volatile char *s = b->auth_header;
        while (*s)
            *s++ = 0;
        free(b->auth_header);
    }
    for (i = 0; i < b->n_models; i++)
        free(b->models[i]);
    free(b->models);
    free(b->health_path);
    free(b->api_version);
    free(b->ca_file);
    free(b->anthropic_version);
    for (i = 0; b->deployments && i < b->n_models; i++)
        free(b->deployments[i]);
    free(b->deployments);
}

void gw_config_unref(struct gw_config *c)
{
    size_t i;

    if (c == NULL || __atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL) > 0)
        return;
    for (i = 0; i < c->n_backends; i++)
        backend_release(&c->backends[i]);
    free(c->backends);
    for (i = 0; i < c->n_keys; i++)
        key_release(&c->keys[i]);
    free(c->keys);
    free(c->redis.host);
    free(c->redis.password);
    free(c->model_names); /* strings borrowed from the backends */
    gw_pools_free(c);
    for (i = 0; i < c->n_model_confs; i++) {
        for (size_t j = 0; j < c->model_confs[i].n_fallbacks; j++)
            free(c->model_confs[i].fallbacks[j]);
        free(c->model_confs[i].fallbacks);
        free(c->model_confs[i].name);
    }
    free(c->model_confs);
    if (c->admin_key) {
        volatile char *s = c->admin_key;
        while (*s)
            *s++ = 0;
        free(c->admin_key);
    }
    free(c->path);
    free(c->listen_host);
    free(c->access_log);
    free(c->registry.path);
    free(c->registry.exposures);
    free(c->metrics.path);
    free(c->metrics.listen_host);
    free(c->metrics.bearer_token);
    free(c->tls.cert);
    free(c->tls.key);
    gw_tls_unref(c->tls.ctx);
    free(c);
}

struct gw_backend *gw_config_backend_for(struct gw_config *c,
                                         const char *model)
{
    size_t i, j;

    for (i = 0; i < c->n_backends; i++)
        for (j = 0; j < c->backends[i].n_models; j++)
            if (strcmp(c->backends[i].models[j], model) == 0)
                return &c->backends[i];
    return NULL;
}

/* A string value, with "env:NAME" resolved. Returns a malloc'd copy or
 * NULL after reporting the problem. */
static char *secret_value(json_t *v, const char *path, struct problems *p)
{
    const char *s = json_string_value(v);

    if (s == NULL) {
        problem(p, "%s: must be a string (\"env:NAME\" reads the environment)",
                path);
        return NULL;
    }
    if (strncmp(s, "env:", 4) == 0) {
        const char *e = getenv(s + 4);
        if (s[4] == '\0') {
            problem(p, "%s: \"env:\" needs a variable name", path);
            return NULL;
        }
        if (e == NULL || *e == '\0') {
            problem(p, "%s: environment variable '%s' is not set", path,
                    s + 4);
            return NULL;
        }
        s = e;
    }
    for (const char *q = s; *q; q++) {
        if ((unsigned char)*q < 0x21 || *q == 0x7f) {
            problem(p, "%s: contains a space or control character", path);
            return NULL;
        }
    }
    return strdup(s);
}

/* An integer in [lo, hi], or def when absent. */
static long int_value(json_t *obj, const char *key, long def, long lo,
                      long hi, const char *path, struct problems *p)
{
    json_t *v = json_object_get(obj, key);

    if (v == NULL)
        return def;
    if (!json_is_integer(v) || json_integer_value(v) < lo ||
        json_integer_value(v) > hi) {
        problem(p, "%s%s%s: must be an integer from %ld to %ld", path,
                *path ? "." : "", key, lo, hi);
        return def;
    }
    return (long)json_integer_value(v);
}

static void unknown_keys(json_t *obj, const char *const *known,
                         const char *path, struct problems *p)
{
    const char *key;
    json_t *v;

    json_object_foreach(obj, key, v) {
        const char *const *k;
        for (k = known; *k; k++)
            if (strcmp(*k, key) == 0)
                break;
        if (*k == NULL)
            problem(p, "%s%s%s: unknown key", path, *path ? "." : "", key);
    }
}

static int parse_listen(struct gw_config *c, json_t *v, struct problems *p)
{
    const char *s = json_string_value(v);
    const char *colon;
    char *end;
    long port;

    if (s == NULL) {
        problem(p, "listen: must be a string \"HOST:PORT\"");
        return -1;
    }
    colon = strrchr(s, ':');
    if (colon == NULL || colon == s) {
        problem(p, "listen: '%s' is not HOST:PORT (e.g. 127.0.0.1:8080)", s);
        return -1;
    }
    errno = 0;
    port = strtol(colon + 1, &end, 10);
    if (*end != '\0' || colon[1] == '\0' || errno || port < 1 ||
        port > 65535) {
        problem(p, "listen: port in '%s' must be 1 to 65535", s);
        return -1;
    }
    if (s[0] == '[') {
        if (colon[-1] != ']') {
            problem(p, "listen: '%s' is not [IPv6]:PORT", s);
            return -1;
        }
        c->listen_host = strndup(s + 1, colon - s - 2);
    } else {
        c->listen_host = strndup(s, colon - s);
    }
    c->listen_port = (int)port;
    return 0;
}

static int valid_name(const char *s, size_t max)
{
    size_t n = strlen(s);

    if (n == 0 || n > max)
        return 0;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && !strchr("_.-", *s))
            return 0;
    return 1;
}

static int check_url(const char *url, const char *path, struct problems *p,
                     int need_v1)
{
    const char *host;
    size_t n = strlen(url);

    if (strncmp(url, "http://", 7) == 0)
        host = url + 7;
    else if (strncmp(url, "https://", 8) == 0)
        host = url + 8;
    else {
        problem(p, "%s: not a URL (must start with http:// or https://)",
                path);
        return -1;
    }
    if (*host == '\0' || *host == '/' || *host == ':') {
        problem(p, "%s: not a URL (no host)", path);
        return -1;
    }
    for (const char *q = url; *q; q++) {
        if ((unsigned char)*q <= 0x20 || *q == 0x7f || *q == '?' ||
            *q == '#') {
            problem(p, "%s: not a URL (space, control, '?' or '#')", path);
            return -1;
        }
    }
    while (n > 0 && url[n - 1] == '/')
        n--;
    if (need_v1 && (n < 3 || strncmp(url + n - 3, "/v1", 3) != 0)) {
        problem(p, "%s: must be the OpenAI-compatible base URL ending in "
                   "/v1 (e.g. http://127.0.0.1:8000/v1)", path);
        return -1;
    }
    return 0;
}

/* Splits an http:// URL into host, port and path; fills the native
 * address when the host is numeric or localhost. */
static void native_address(struct gw_backend *b)
{
    const char *h = b->url + 7, *slash, *colon, *hend;
    char host[256];
    long port = 80;

    if (strncmp(b->url, "http://", 7) != 0)
        return;
    slash = strchr(h, '/');
    hend = slash ? slash : h + strlen(h);
    b->host_header = strndup(h, (size_t)(hend - h));
    b->path = strdup(slash ? slash : "");
    if (h[0] == '[') {
        const char *rb = memchr(h, ']', (size_t)(hend - h));
        if (rb == NULL || (size_t)(rb - h - 1) >= sizeof(host))
            return;
        memcpy(host, h + 1, (size_t)(rb - h - 1));
        host[rb - h - 1] = '\0';
        colon = rb[1] == ':' ? rb + 1 : NULL;
    } else {
        colon = memchr(h, ':', (size_t)(hend - h));
        size_t n = (size_t)((colon ? colon : hend) - h);
        if (n >= sizeof(host))
            return;
        memcpy(host, h, n);
        host[n] = '\0';
    }
    if (colon) {
        char *e;
        port = strtol(colon + 1, &e, 10);
        if (e != hend || port < 1 || port > 65535)
            return;
    }
    if (strcmp(host, "localhost") == 0)
        strcpy(host, "127.0.0.1");
    struct sockaddr_in *in4 = (struct sockaddr_in *)&b->addr;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&b->addr;
    if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)port);
        b->addrlen = sizeof(*in4);
    } else if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        b->addrlen = sizeof(*in6);
    } else {
        return;
    }
    b->native = b->host_header && b->path;
}

/* routing (upstream.c): azure's "api_version" and "deployments" {MODEL:
 * NAME} (a model without one is its own deployment name) */
static void parse_azure(struct gw_backend *b, json_t *o, const char *path,
                        struct problems *p)
{
    json_t *v = json_object_get(o, "api_version");
    json_t *d = json_object_get(o, "deployments");
    const char *s, *key;
    json_t *dv;
    size_t i;

    if (b->provider != GW_PROVIDER_AZURE) {
        if (v || d)
            problem(p, "%s: \"api_version\" and \"deployments\" are for "
                       "\"provider\": \"azure\" only", path);
        return;
    }
    s = json_string_value(v);
    if (s == NULL || *s == '\0' || strlen(s) > 32 ||
        strspn(s, "0123456789abcdefghijklmnopqrstuvwxyz"
                  "ABCDEFGHIJKLMNOPQRSTUVWXYZ.-") != strlen(s))
        problem(p, "%s.api_version: azure needs its api-version, e.g. "
                   "\"2024-06-01\"", path);
    else
        b->api_version = strdup(s);
    if (d != NULL && !json_is_object(d)) {
        problem(p, "%s.deployments: must be an object {\"MODEL\": "
                   "\"DEPLOYMENT\"}", path);
        return;
    }
    json_object_foreach(d, key, dv) {
        for (i = 0; i < b->n_models; i++)
            if (strcmp(b->models[i], key) == 0)
                break;
        if (i == b->n_models)
            problem(p, "%s.deployments.%.256s: not one of this backend's "
                       "models", path, key);
        if (!json_is_string(dv) || !valid_name(json_string_value(dv), 64))
            problem(p, "%s.deployments.%.256s: must be 1-64 characters of "
                       "[A-Za-z0-9_.-]", path, key);
    }
    b->deployments = calloc(b->n_models ? b->n_models : 1, sizeof(char *));
    for (i = 0; b->deployments && i < b->n_models; i++) {
        s = json_string_value(json_object_get(d, b->models[i]));
        if (s == NULL && !valid_name(b->models[i], 64)) {
            problem(p, "%s.deployments: model '%s' needs a deployment name "
                       "(its own name is not one)", path, b->models[i]);
            continue;
        }
        b->deployments[i] = strdup(s ? s : b->models[i]);
    }
}

/* routing (anthropic.c): "anthropic_version" (the anthropic-version
 * header, default 2023-06-01) and "default_max_tokens" (Messages needs a
 * max_tokens; used when a request sets none, default 4096) */
static void parse_anthropic(struct gw_backend *b, json_t *o, const char *path,
                            struct problems *p)
{
    json_t *v = json_object_get(o, "anthropic_version");
    const char *s;

    if (b->provider != GW_PROVIDER_ANTHROPIC) {
        if (v || json_object_get(o, "default_max_tokens"))
            problem(p, "%s: \"anthropic_version\" and \"default_max_tokens\" "
                       "are for \"provider\": \"anthropic\" only", path);
        return;
    }
    s = v ? json_string_value(v) : GW_ANTHROPIC_DEFAULT_VERSION;
    if (s == NULL || *s == '\0' || strlen(s) > 32 ||
        strspn(s, "0123456789abcdefghijklmnopqrstuvwxyz"
                  "ABCDEFGHIJKLMNOPQRSTUVWXYZ.-") != strlen(s))
        problem(p, "%s.anthropic_version: must be the anthropic-version "
                   "header's value, e.g. \"2023-06-01\"", path);
    else
        b->anthropic_version = strdup(s);
    b->default_max_tokens = int_value(o, "default_max_tokens",
                                      GW_ANTHROPIC_DEFAULT_MAX_TOKENS, 1,
                                      1000000, path, p);
}

/* routing (breaker.c): "breaker": {...} of a backend */
static void parse_breaker(struct gw_backend *b, json_t *o, const char *bpath,
                          struct problems *p)
{
    static const char *const known[] = {
        "failures", "error_rate_pct", "min_requests", "window_s",
        "cooldown_ms", "max_cooldown_ms", "probes", NULL};
    struct gw_breaker_conf *k = &b->breaker;
    char path[96];

    gw_breaker_conf_default(k);
    if (o == NULL)
        return;
    snprintf(path, sizeof(path), "%s.breaker", bpath);
    if (!json_is_object(o)) {
        problem(p, "%s: must be an object", path);
        return;
    }
    unknown_keys(o, known, path, p);
    k->failures = (int)int_value(o, "failures", k->failures, 0, 1000000, path,
                                 p);
    k->error_rate_pct = (int)int_value(o, "error_rate_pct", k->error_rate_pct,
                                       0, 100, path, p);
    k->min_requests = (int)int_value(o, "min_requests", k->min_requests, 1,
                                     1000000, path, p);
    k->window_s = (int)int_value(o, "window_s", k->window_s, 1,
                                 GW_BREAKER_MAX_WINDOW, path, p);
    k->cooldown_ms = int_value(o, "cooldown_ms", k->cooldown_ms, 1, 3600000,
                               path, p);
    k->max_cooldown_ms = int_value(o, "max_cooldown_ms",
                                   k->max_cooldown_ms > k->cooldown_ms
                                       ? k->max_cooldown_ms : k->cooldown_ms,
                                   1, 3600000, path, p);
    if (k->max_cooldown_ms < k->cooldown_ms)
        problem(p, "%s.max_cooldown_ms: must be at least cooldown_ms (%ld)",
                path, k->cooldown_ms);
    k->probes = (int)int_value(o, "probes", k->probes, 1, 1000, path, p);
}

/* routing (health.c): "health_check": {"path", "interval_ms", "timeout_ms"} */
static void parse_health(struct gw_backend *b, json_t *o, const char *bpath,
                         struct problems *p)
{
    static const char *const known[] = {"path", "interval_ms", "timeout_ms",
                                        NULL};
    char path[96];
    const char *hp;

    if (o == NULL)
        return;
    snprintf(path, sizeof(path), "%s.health_check", bpath);
    if (!json_is_object(o)) {
        problem(p, "%s: must be an object {\"path\": \"/models\", "
                   "\"interval_ms\": 5000, \"timeout_ms\": 1000}", path);
        return;
    }
    unknown_keys(o, known, path, p);
    hp = json_string_value(json_object_get(o, "path"));
    if (json_object_get(o, "path") == NULL)
        hp = "/models";
    if (hp == NULL || hp[0] != '/' || strlen(hp) > 256 ||
        strpbrk(hp, " \t\r\n?#") != NULL) {
        problem(p, "%s.path: must be a path under the backend's URL starting "
                   "with '/' (e.g. \"/models\"), at most 256 bytes", path);
        return;
    }
    b->health_path = strdup(hp);
    b->health_interval_ms = int_value(o, "interval_ms", 5000, 100, 3600000,
                                      path, p);
    b->health_timeout_ms = int_value(o, "timeout_ms", 1000, 10, 600000, path,
                                     p);
}

static void parse_backend(struct gw_config *c, struct gw_backend *b,
                          json_t *o, size_t idx, struct problems *p)
{
    static const char *const known[] = {
        "name", "url", "models", "api_key", "weight", "max_inflight",
        "timeout_ms", "connect_timeout_ms", "first_byte_timeout_ms",
        "priority", "breaker", "health_check", "provider", "api_version",
        "deployments", "anthropic_version", "default_max_tokens", "ca_file",
        NULL};
    char path[64], sub[96];
    json_t *v;
    size_t i, j;

    snprintf(path, sizeof(path), "backends[%zu]", idx);
    if (!json_is_object(o)) {
        problem(p, "%s: must be an object", path);
        return;
    }
    unknown_keys(o, known, path, p);

    v = json_object_get(o, "name");
    if (!json_is_string(v) || !valid_name(json_string_value(v), 64))
        problem(p, "%s.name: must be 1-64 characters of [A-Za-z0-9_.-]",
                path);
    else {
        for (i = 0; i < idx; i++)
            if (c->backends[i].name &&
                strcmp(c->backends[i].name, json_string_value(v)) == 0)
                problem(p, "%s.name: '%s' is already used by backends[%zu]",
                        path, json_string_value(v), i);
        b->name = strdup(json_string_value(v));
    }

    /* routing: provider adapters */
    v = json_object_get(o, "provider");
    if (v && json_is_string(v) &&
        strcmp(json_string_value(v), "azure") == 0)
        b->provider = GW_PROVIDER_AZURE;
    else if (v && json_is_string(v) &&
             strcmp(json_string_value(v), "anthropic") == 0)
        b->provider = GW_PROVIDER_ANTHROPIC;
    else if (v && !(json_is_string(v) &&
                    strcmp(json_string_value(v), "openai") == 0))
        problem(p, "%s.provider: must be \"openai\" (also vLLM, llama.cpp, "
                   "Ollama, DashScope), \"azure\" or \"anthropic\"", path);

    v = json_object_get(o, "url");
    snprintf(sub, sizeof(sub), "%s.url", path);
    if (!json_is_string(v))
        problem(p, "%s: must be a string", sub);
    else if (check_url(json_string_value(v), sub, p,
                       b->provider != GW_PROVIDER_AZURE) == 0) {
        const char *u = json_string_value(v);
        size_t n = strlen(u);
        while (n > 0 && u[n - 1] == '/')
            n--;
        b->url = strndup(u, n);
        if (b->url)
            native_address(b);
    }

    /* TLS to the backend is always verified; ca_file names the CA bundle
     * (PEM) for a backend whose certificate the system's CAs do not sign */
    v = json_object_get(o, "ca_file");
    if (v) {
        const char *f = json_string_value(v);
        if (f == NULL || *f == '\0')
            problem(p, "%s.ca_file: must be the path of a PEM file of CA "
                       "certificates", path);
        else if (b->url && strncmp(b->url, "https://", 8) != 0)
            problem(p, "%s.ca_file: only for an https:// url (this backend "
                       "is plain http)", path);
        else if (access(f, R_OK) != 0)
            problem(p, "%s.ca_file: cannot read '%s': %s", path, f,
                    strerror(errno));
        else
            b->ca_file = strdup(f);
    }

    v = json_object_get(o, "models");
    if (!json_is_array(v) || json_array_size(v) == 0) {
        problem(p, "%s.models: must be a non-empty array of model names",
                path);
    } else {
        b->models = calloc(json_array_size(v), sizeof(char *));
        for (i = 0; i < json_array_size(v) && b->models; i++) {
            const char *m = json_string_value(json_array_get(v, i));
            if (m == NULL || *m == '\0' || strlen(m) > MAX_MODEL_NAME) {
                problem(p, "%s.models[%zu]: must be a non-empty string of "
                           "at most %d bytes", path, i, MAX_MODEL_NAME);
                continue;
            }
            for (j = 0; j < b->n_models; j++)
                if (strcmp(b->models[j], m) == 0)
                    break;
            if (j < b->n_models) {
                problem(p, "%s.models[%zu]: '%s' is listed twice", path, i,
                        m);
                continue;
            }
            b->models[b->n_models++] = strdup(m);
        }
    }

    v = json_object_get(o, "api_key");
    if (v) {
        snprintf(sub, sizeof(sub), "%s.api_key", path);
        char *key = secret_value(v, sub, p);
        if (key) {
            size_t n = strlen(key) + sizeof("Authorization: Bearer ");
            b->auth_header = malloc(n);
            if (b->auth_header && b->provider == GW_PROVIDER_AZURE)
                snprintf(b->auth_header, n, "api-key: %s", key);
            else if (b->auth_header && b->provider == GW_PROVIDER_ANTHROPIC)
                snprintf(b->auth_header, n, "x-api-key: %s", key);
            else if (b->auth_header)
                snprintf(b->auth_header, n, "Authorization: Bearer %s", key);
            memset(key, 0, strlen(key));
            free(key);
        }
    }
    b->weight = (int)int_value(o, "weight", 1, 1, 1000, path, p);
    b->max_inflight =
        (int)int_value(o, "max_inflight", 0, 0, 1000000, path, p);
    b->timeout_ms = int_value(o, "timeout_ms", 60000, 1, 3600000, path, p);
    b->connect_timeout_ms = int_value(o, "connect_timeout_ms", 5000, 1,
                                      600000, path, p);
    b->first_byte_timeout_ms = int_value(o, "first_byte_timeout_ms",
                                         b->timeout_ms, 1, 3600000, path, p);
    b->priority = (int)int_value(o, "priority", 0, 0, 100, path, p);
    parse_azure(b, o, path, p);
    parse_anthropic(b, o, path, p);
    parse_breaker(b, json_object_get(o, "breaker"), path, p);
    parse_health(b, json_object_get(o, "health_check"), path, p);
}

/* routing (pool.c): "models": {"NAME": {"strategy", "fallbacks"}} */
static void parse_models(struct gw_config *c, json_t *o, struct problems *p)
{
    static const char *const known[] = {"strategy", "fallbacks", "cache",
                                        "cache_ttl_s", NULL};
    static const char *const strategies[] = {"round_robin", "least_inflight",
                                             "latency", NULL};
    const char *name;
    json_t *m;
    char path[320], err[512];
    size_t i, j;

    if (o != NULL && !json_is_object(o)) {
        problem(p, "models: must be an object {\"MODEL\": {\"strategy\": "
                   "\"round_robin\", \"fallbacks\": [...]}}");
        return;
    }
    if (o != NULL && json_object_size(o) > 0) {
        c->model_confs = calloc(json_object_size(o), sizeof(*c->model_confs));
        if (c->model_confs == NULL)
            return;
    }
    json_object_foreach(o, name, m) {
        struct gw_model_conf *mc = &c->model_confs[c->n_model_confs];
        json_t *v;
        snprintf(path, sizeof(path), "models.%.256s", name);
        for (i = 0; i < c->n_model_names; i++)
            if (strcmp(c->model_names[i], name) == 0)
                break;
        if (i == c->n_model_names) {
            problem(p, "%s: no backend serves this model (list it in a "
                       "backend's \"models\")", path);
            continue;
        }
        if (!json_is_object(m)) {
            problem(p, "%s: must be an object", path);
            continue;
        }
        unknown_keys(m, known, path, p);
        mc->name = strdup(name);
        c->n_model_confs++;
        v = json_object_get(m, "strategy");
        if (v) {
            for (j = 0; strategies[j]; j++)
                if (json_is_string(v) &&
                    strcmp(json_string_value(v), strategies[j]) == 0)
                    break;
            if (strategies[j] == NULL)
                problem(p, "%s.strategy: must be \"round_robin\", "
                           "\"least_inflight\" or \"latency\"", path);
            else
                mc->strategy = (enum gw_strategy)j;
        }
        v = json_object_get(m, "cache");
        if (json_is_false(v))
            mc->cache = GW_MODEL_CACHE_OFF;
        else if (json_is_string(v) && strcmp(json_string_value(v), "all") == 0)
            mc->cache = GW_MODEL_CACHE_ALL;
        else if (v && !json_is_true(v))
            problem(p, "%s.cache: must be true (deterministic requests), "
                       "false or \"all\" (every request)", path);
        mc->cache_ttl_s = int_value(m, "cache_ttl_s", 0, 1, 30L * 86400,
                                    path, p);
        v = json_object_get(m, "fallbacks");
        if (v == NULL)
            continue;
        if (!json_is_array(v) || json_array_size(v) > GW_POOL_MAX_FALLBACKS) {
            problem(p, "%s.fallbacks: must be an array of at most %d model "
                       "names", path, GW_POOL_MAX_FALLBACKS);
            continue;
        }
        mc->fallbacks = calloc(json_array_size(v) + 1, sizeof(char *));
        if (mc->fallbacks == NULL)
            continue;
        for (j = 0; j < json_array_size(v); j++) {
            const char *f = json_string_value(json_array_get(v, j));
            for (i = 0; f && i < c->n_model_names; i++)
                if (strcmp(c->model_names[i], f) == 0)
                    break;
            if (f == NULL || i == c->n_model_names || strcmp(f, name) == 0) {
                problem(p, "%s.fallbacks[%zu]: must name another model that "
                           "a backend serves", path, j);
                continue;
            }
            mc->fallbacks[mc->n_fallbacks++] = strdup(f);
        }
    }
    if (p->count == 0 && gw_pools_build(c, err, sizeof(err)) < 0)
        problem(p, "%s", err);
}

static int hexval(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

static void parse_rate(json_t *o, struct gw_rate *r, const char *path,
                       struct problems *p)
{
    r->rpm = int_value(o, "rpm", 0, 0, 100000000L, path, p);
    r->tpm = int_value(o, "tpm", 0, 0, 100000000000L, path, p);
}

static void parse_key(struct gw_config *c, struct gw_key *k, json_t *o,
                      size_t idx, struct problems *p)
{
    static const char *const known[] = {
        "name", "key", "key_sha256", "models", "rpm", "tpm",
        "max_concurrent", "daily_tokens", "model_limits", "cache_namespace",
        NULL};
    char path[64], sub[128];
    json_t *v;
    size_t i;

    snprintf(path, sizeof(path), "keys[%zu]", idx);
    if (!json_is_object(o)) {
        problem(p, "%s: must be an object", path);
        return;
    }
    unknown_keys(o, known, path, p);
    v = json_object_get(o, "name");
    if (!json_is_string(v) || !valid_name(json_string_value(v), 64)) {
        problem(p, "%s.name: must be 1-64 characters of [A-Za-z0-9_.-]",
                path);
    } else {
        for (i = 0; i < idx; i++)
            if (c->keys[i].name &&
                strcmp(c->keys[i].name, json_string_value(v)) == 0)
                problem(p, "%s.name: '%s' is already used by keys[%zu]",
                        path, json_string_value(v), i);
        k->name = strdup(json_string_value(v));
    }

    json_t *key = json_object_get(o, "key");
    json_t *dig = json_object_get(o, "key_sha256");
    if ((key == NULL) == (dig == NULL)) {
        problem(p, "%s: give exactly one of \"key\" (\"env:NAME\") or "
                   "\"key_sha256\" (64 hex digits)", path);
    } else if (key) {
        snprintf(sub, sizeof(sub), "%s.key", path);
        if (json_is_string(key) &&
            strncmp(json_string_value(key), "env:", 4) != 0) {
            problem(p, "%s: write the key as \"env:NAME\" or give "
                       "key_sha256; a key in the file is a leaked key", sub);
        } else {
            char *secret = secret_value(key, sub, p);
            if (secret) {
                unsigned int n = 0;
                EVP_Digest(secret, strlen(secret), k->sha256, &n,
                           EVP_sha256(), NULL);
                OPENSSL_cleanse(secret, strlen(secret));
                free(secret);
            }
        }
    } else {
        const char *h = json_string_value(dig);
        if (h == NULL || strlen(h) != 64) {
            problem(p, "%s.key_sha256: must be 64 hex digits (sha256sum "
                       "of the key)", path);
        } else {
            for (i = 0; i < 32; i++) {
                int hi = hexval(h[2 * i]), lo = hexval(h[2 * i + 1]);
                if (hi < 0 || lo < 0) {
                    problem(p, "%s.key_sha256: must be 64 hex digits", path);
                    break;
                }
                k->sha256[i] = (unsigned char)(hi << 4 | lo);
            }
        }
    }

    v = json_object_get(o, "models");
    if (v == NULL) {
        problem(p, "%s.models: required: the models it may use, or [\"*\"]",
                path);
    } else if (!json_is_array(v) || json_array_size(v) == 0) {
        problem(p, "%s.models: must be a non-empty array (or [\"*\"])", path);
    } else {
        int star = 0;
        for (i = 0; i < json_array_size(v); i++) {
            const char *m = json_string_value(json_array_get(v, i));
            if (m == NULL || *m == '\0')
                problem(p, "%s.models[%zu]: must be a model name or \"*\"",
                        path, i);
            else if (strcmp(m, "*") == 0)
                star = 1;
        }
        if (!star) {
            k->models = calloc(json_array_size(v), sizeof(char *));
            for (i = 0; k->models && i < json_array_size(v); i++) {
                const char *m = json_string_value(json_array_get(v, i));
                if (m && *m)
                    k->models[k->n_models++] = strdup(m);
            }
        }
    }
    v = json_object_get(o, "cache_namespace");
    if (v && (!json_is_string(v) || !valid_name(json_string_value(v), 64)))
        problem(p, "%s.cache_namespace: must be 1-64 characters of "
                   "[A-Za-z0-9_.-]", path);
    else if (v)
        k->cache_namespace = strdup(json_string_value(v));
    parse_rate(o, &k->rate, path, p);
    k->max_concurrent = int_value(o, "max_concurrent", 0, 0, 1000000, path, p);
    k->daily_tokens = int_value(o, "daily_tokens", 0, 0, 1000000000000L,
                                path, p);
    v = json_object_get(o, "model_limits");
    if (v && !json_is_object(v)) {
        problem(p, "%s.model_limits: must be an object {\"MODEL\": "
                   "{\"rpm\", \"tpm\"}}", path);
    } else if (v) {
        const char *model;
        json_t *lim;
        static const char *const rk[] = {"rpm", "tpm", NULL};
        k->model_rates = calloc(json_object_size(v) + 1, sizeof(*k->model_rates));
        json_object_foreach(v, model, lim) {
            snprintf(sub, sizeof(sub), "%s.model_limits.%s", path, model);
            if (!json_is_object(lim)) {
                problem(p, "%s: must be an object {\"rpm\", \"tpm\"}", sub);
                continue;
            }
            unknown_keys(lim, rk, sub, p);
            if (k->model_rates == NULL)
                continue;
            struct gw_model_rate *mr = &k->model_rates[k->n_model_rates++];
            mr->model = strdup(model);
            parse_rate(lim, &mr->rate, sub, p);
        }
    }
}

static void parse_keys(struct gw_config *c, json_t *v, struct problems *p)
{
    size_t i, j;

    if (v == NULL)
        return;
    if (!json_is_array(v)) {
        problem(p, "keys: must be an array of keys");
        return;
    }
    c->keys = calloc(json_array_size(v) + 1, sizeof(*c->keys));
    if (c->keys == NULL)
        return;
    c->n_keys = json_array_size(v);
    for (i = 0; i < c->n_keys; i++)
        parse_key(c, &c->keys[i], json_array_get(v, i), i, p);
    for (i = 0; i < c->n_keys; i++)
        for (j = 0; j < i; j++)
            if (CRYPTO_memcmp(c->keys[i].sha256, c->keys[j].sha256, 32) == 0)
                problem(p, "keys[%zu]: the same key as keys[%zu]", i, j);
}

static void parse_rate_limit(struct gw_config *c, json_t *o,
                             struct problems *p)
{
    static const char *const known[] = {"mode", "on_error", NULL};
    json_t *v;

    if (o == NULL)
        return;
    if (!json_is_object(o)) {
        problem(p, "rate_limit: must be an object {\"mode\", \"on_error\"}");
        return;
    }
    unknown_keys(o, known, "rate_limit", p);
    v = json_object_get(o, "mode");
    if (v && !(json_is_string(v) &&
               (strcmp(json_string_value(v), "local") == 0 ||
                strcmp(json_string_value(v), "redis") == 0)))
        problem(p, "rate_limit.mode: must be \"local\" or \"redis\"");
    else if (v && strcmp(json_string_value(v), "redis") == 0)
        c->rl_mode = GW_RL_REDIS;
    v = json_object_get(o, "on_error");
    if (v && !(json_is_string(v) &&
               (strcmp(json_string_value(v), "open") == 0 ||
                strcmp(json_string_value(v), "closed") == 0)))
        problem(p, "rate_limit.on_error: must be \"open\" (admit when Redis "
                   "fails) or \"closed\" (429)");
    else if (v && strcmp(json_string_value(v), "closed") == 0)
        c->rl_fail_closed = 1;
}

static void parse_redis(struct gw_config *c, json_t *o, struct problems *p)
{
    static const char *const known[] = {"url", "timeout_ms", NULL};
    const char *u, *h, *e;
    json_t *v;

    if (o == NULL)
        return;
    if (!json_is_object(o)) {
        problem(p, "redis: must be an object {\"url\", \"timeout_ms\"}");
        return;
    }
    unknown_keys(o, known, "redis", p);
    c->redis.timeout_ms = int_value(o, "timeout_ms", 50, 1, 60000, "redis", p);
    v = json_object_get(o, "url");
    u = json_string_value(v);
    if (u && strncmp(u, "env:", 4) == 0)
        u = getenv(u + 4);
    if (u == NULL || strncmp(u, "redis://", 8) != 0) {
        problem(p, "redis.url: must be redis://[:PASSWORD@]HOST:PORT[/DB] "
                   "(\"env:NAME\" allowed)");
        return;
    }
    h = u + 8;
    e = strchr(h, '@');
    if (e) {
        const char *pw = h;
        if (*pw == ':')
            pw++;
        c->redis.password = strndup(pw, (size_t)(e - pw));
        h = e + 1;
    }
    const char *colon = strchr(h, ':'), *slash = strchr(h, '/');
    const char *hend = colon ? colon : (slash ? slash : h + strlen(h));
    c->redis.host = strndup(h, (size_t)(hend - h));
    c->redis.port = colon ? atoi(colon + 1) : 6379;
    c->redis.db = slash ? atoi(slash + 1) : 0;
    if (c->redis.port < 1 || c->redis.port > 65535 || hend == h)
        problem(p, "redis.url: bad host or port in the URL");
    c->has_redis = 1;
}

/* "cache": {"backend", "ttl_s", "max_entry_bytes", "max_bytes"} */
static void parse_cache(struct gw_config *c, json_t *o, struct problems *p)
{
    static const char *const known[] = {"backend", "ttl_s",
                                        "max_entry_bytes", "max_bytes", NULL};
    struct gw_cache_conf *cc = &c->cache;
    json_t *v;

    if (o == NULL)
        return;
    if (!json_is_object(o)) {
        problem(p, "cache: must be an object {\"backend\": \"memory\" or "
                   "\"redis\", \"ttl_s\", \"max_entry_bytes\", "
                   "\"max_bytes\"}");
        return;
    }
    unknown_keys(o, known, "cache", p);
    cc->enabled = 1;
    v = json_object_get(o, "backend");
    if (v && !(json_is_string(v) &&
               (strcmp(json_string_value(v), "memory") == 0 ||
                strcmp(json_string_value(v), "redis") == 0)))
        problem(p, "cache.backend: must be \"memory\" (in-process LRU) or "
                   "\"redis\" (shared; needs the \"redis\" key)");
    else if (v && strcmp(json_string_value(v), "redis") == 0)
        cc->backend = GW_CACHE_REDIS;
    cc->ttl_s = int_value(o, "ttl_s", 3600, 1, 30L * 86400, "cache", p);
    cc->max_entry_bytes = (size_t)int_value(o, "max_entry_bytes", 1L << 20,
                                            64, 64L << 20, "cache", p);
    cc->max_bytes = (size_t)int_value(o, "max_bytes", 64L << 20, 4096,
                                      64L << 30, "cache", p);
    if (cc->backend == GW_CACHE_MEMORY && cc->max_entry_bytes > cc->max_bytes)
        problem(p, "cache.max_entry_bytes: larger than cache.max_bytes "
                   "(%zu): no entry could be kept", cc->max_bytes);
}

static void parse_limits(struct gw_config *c, json_t *o, struct problems *p)
{
    static const char *const known[] = {
        "max_body_bytes", "max_header_bytes", "header_timeout_ms",
        "body_timeout_ms", "idle_timeout_ms", "drain_timeout_ms", "max_n",
        "max_tokens", NULL};
    struct gw_limits *l = &c->limits;

    if (o == NULL)
        return;
    if (!json_is_object(o)) {
        problem(p, "limits: must be an object");
        return;
    }
    unknown_keys(o, known, "limits", p);
    l->max_body_bytes = (size_t)int_value(o, "max_body_bytes",
                                          (long)l->max_body_bytes, 1,
                                          1L << 30, "limits", p);
    l->max_header_bytes = (size_t)int_value(o, "max_header_bytes",
                                            (long)l->max_header_bytes, 1024,
                                            1L << 20, "limits", p);
    l->header_timeout_ms = int_value(o, "header_timeout_ms",
                                     l->header_timeout_ms, 1, 3600000,
                                     "limits", p);
    l->body_timeout_ms = int_value(o, "body_timeout_ms", l->body_timeout_ms,
                                   1, 3600000, "limits", p);
    l->idle_timeout_ms = int_value(o, "idle_timeout_ms", l->idle_timeout_ms,
                                   1, 3600000, "limits", p);
    l->drain_timeout_ms = int_value(o, "drain_timeout_ms",
                                    l->drain_timeout_ms, 0, 3600000,
                                    "limits", p);
    l->max_n = int_value(o, "max_n", l->max_n, 1, 100000, "limits", p);
    l->max_tokens = int_value(o, "max_tokens", l->max_tokens, 1, 100000000,
                              "limits", p);
}

/* Collects the distinct model names across backends, in file order. */
static int index_models(struct gw_config *c)
{
    size_t i, j, k, total = 0;

    for (i = 0; i < c->n_backends; i++)
        total += c->backends[i].n_models;
    c->model_names = calloc(total ? total : 1, sizeof(char *));
    if (c->model_names == NULL)
        return -1;
    for (i = 0; i < c->n_backends; i++)
        for (j = 0; j < c->backends[i].n_models; j++) {
            const char *m = c->backends[i].models[j];
            for (k = 0; k < c->n_model_names; k++)
                if (strcmp(c->model_names[k], m) == 0)
                    break;
            if (k == c->n_model_names)
                c->model_names[c->n_model_names++] = (char *)m;
        }
    return 0;
}

static void parse_registry(struct gw_config *c, json_t *o,
                           struct problems *p)
{
    static const char *const known[] = {"path", "exposures", "log_outputs",
                                        NULL};
    struct gw_registry_conf *r = &c->registry;
    json_t *v;

    if (o == NULL)
        return;
    if (!json_is_object(o)) {
        problem(p, "registry: must be an object {\"path\", \"exposures\", "
                   "\"log_outputs\"}");
        return;
    }
    unknown_keys(o, known, "registry", p);
    v = json_object_get(o, "path");
    if (!json_is_string(v) || json_string_length(v) == 0 ||
        json_string_length(v) > 4096)
        problem(p, "registry.path: must be the registry database file "
                   "(made with 'promptctl init')");
    else
        r->path = strdup(json_string_value(v));
    v = json_object_get(o, "exposures");
    if (v == NULL)
        r->exposures = strdup("db");
    else if (!json_is_string(v) || json_string_length(v) == 0 ||
             json_string_length(v) > 4096)
        problem(p, "registry.exposures: must be \"db\" (the registry's "
                   "exposures table) or a JSON-lines file path");
    else
        r->exposures = strdup(json_string_value(v));
    v = json_object_get(o, "log_outputs");
    if (v && !json_is_boolean(v))
        problem(p, "registry.log_outputs: must be true or false");
    else
        r->log_outputs = json_is_true(v);
}

/* "metrics": {"enabled", "path", "listen", "bearer_token"} (metrics.c) */
static void parse_metrics(struct gw_config *c, json_t *o, struct problems *p)
{
    static const char *const known[] = {"enabled", "path", "listen",
                                        "bearer_token", NULL};
    struct gw_metrics_conf *m = &c->metrics;
    const char *s, *colon;
    json_t *v;

    if (o == NULL)
        return;
    if (!json_is_object(o)) {
        problem(p, "metrics: must be an object {\"enabled\", \"path\", "
                   "\"listen\", \"bearer_token\"}");
        return;
    }
    unknown_keys(o, known, "metrics", p);
    v = json_object_get(o, "enabled");
    if (v && !json_is_boolean(v))
        problem(p, "metrics.enabled: must be true or false");
    m->enabled = v == NULL || json_is_true(v);
    v = json_object_get(o, "path");
    s = v ? json_string_value(v) : "/metrics";
    if (s == NULL || s[0] != '/' || strlen(s) > 100 ||
        strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                  "0123456789/_.-") != strlen(s))
        problem(p, "metrics.path: must be a path such as \"/metrics\" "
                   "(letters, digits, '/', '_', '.', '-'; at most 100)");
    else if (strncmp(s, "/v1/", 4) == 0 || strcmp(s, "/v1") == 0 ||
             strncmp(s, "/admin/", 7) == 0 || strcmp(s, "/healthz") == 0 ||
             strcmp(s, "/readyz") == 0)
        problem(p, "metrics.path: '%s' is one of the gateway's own routes "
                   "(/v1/..., /admin/..., /healthz, /readyz); choose "
                   "another, e.g. \"/metrics\"", s);
    else
        m->path = strdup(s);
    v = json_object_get(o, "listen");
    if (v) {
        char *end;
        long port;
        s = json_string_value(v);
        colon = s ? strrchr(s, ':') : NULL;
        errno = 0;
        port = colon ? strtol(colon + 1, &end, 10) : 0;
        if (colon == NULL || colon == s || colon[1] == '\0' || *end ||
            errno || port < 1 || port > 65535 ||
            (s[0] == '[' && colon[-1] != ']')) {
            problem(p, "metrics.listen: must be \"HOST:PORT\" (e.g. "
                       "\"127.0.0.1:9464\"), a listener of its own for "
                       "scrapes");
        } else {
            m->listen_host = s[0] == '['
                                 ? strndup(s + 1, (size_t)(colon - s - 2))
                                 : strndup(s, (size_t)(colon - s));
            m->listen_port = (int)port;
            if (c->listen_host && m->listen_port == c->listen_port &&
                m->listen_host && strcmp(m->listen_host, c->listen_host) == 0)
                problem(p, "metrics.listen: '%s' is the main \"listen\" "
                           "address; leave metrics.listen out to serve the "
                           "metrics there", s);
        }
    }
    v = json_object_get(o, "bearer_token");
    if (v)
        m->bearer_token = secret_value(v, "metrics.bearer_token", p);
}

/* A passphrase callback that has none: an encrypted key fails to load
 * rather than prompting on a terminal that a daemon does not have. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf, (void)size, (void)rwflag, (void)u;
    return 0;
}

#define TLS_FILE_MAX (1 << 20) /* a chain of a few certificates: KBs */

/* A path value of "tls" (not a secret: "env:" is not read), or NULL
 * after reporting the problem. */
static const char *tls_path(json_t *o, const char *key, const char *what,
                            struct problems *p)
{
    json_t *v = json_object_get(o, key);
    const char *s = json_string_value(v);
    struct stat st;

    if (v == NULL) {
        problem(p, "tls.%s: missing: the path of the PEM %s", key, what);
        return NULL;
    }
    if (s == NULL || *s == '\0' || json_string_length(v) > 4096 ||
        strlen(s) != json_string_length(v)) {
        problem(p, "tls.%s: must be the path of the PEM %s (at most 4096 "
                   "bytes)", key, what);
        return NULL;
    }
    if (access(s, R_OK) != 0 || stat(s, &st) != 0) {
        problem(p, "tls.%s: cannot read '%s': %s", key, s, strerror(errno));
        return NULL;
    }
    /* a FIFO or a device would hang the reading, a huge file fill memory */
    if (!S_ISREG(st.st_mode) || st.st_size > TLS_FILE_MAX) {
        problem(p, "tls.%s: '%s' is not a PEM file (a regular file of at "
                   "most %d KiB)", key, s, TLS_FILE_MAX >> 10);
        return NULL;
    }
    return s;
}

/* "tls": {"cert", "key", "min_version"} (tls.c): both files are read
 * here, so that -t and a reload find a wrong or mismatched file before
 * the listener would */
static void parse_tls(struct gw_config *c, json_t *o, struct problems *p)
{
    static const char *const known[] = {"cert", "key", "min_version", NULL};
    struct gw_tls_conf *t = &c->tls;
    const char *cert, *key, *s;
    X509 *x = NULL;
    EVP_PKEY *pk = NULL;
    FILE *f;
    json_t *v;

    if (o == NULL)
        return;
    if (!json_is_object(o)) {
        problem(p, "tls: must be an object {\"cert\": \"PATH\", \"key\": "
                   "\"PATH\", \"min_version\": \"1.2\" or \"1.3\"}");
        return;
    }
    unknown_keys(o, known, "tls", p);
    t->enabled = 1;
    t->min_version = TLS1_2_VERSION;
    v = json_object_get(o, "min_version");
    s = json_string_value(v);
    if (v && s && strcmp(s, "1.3") == 0)
        t->min_version = TLS1_3_VERSION;
    else if (v && !(s && strcmp(s, "1.2") == 0))
        problem(p, "tls.min_version: must be \"1.2\" (the default) or "
                   "\"1.3\"");
    cert = tls_path(o, "cert", "certificate (then its chain)", p);
    key = tls_path(o, "key", "private key", p);
    if (cert && (f = fopen(cert, "r")) != NULL) {
        x = PEM_read_X509(f, NULL, no_passphrase, NULL);
        fclose(f);
        if (x == NULL)
            problem(p, "tls.cert: no PEM certificate in '%s' (expected "
                       "\"-----BEGIN CERTIFICATE-----\")", cert);
    }
    if (key && (f = fopen(key, "r")) != NULL) {
        pk = PEM_read_PrivateKey(f, NULL, no_passphrase, NULL);
        fclose(f);
        if (pk == NULL)
            problem(p, "tls.key: no usable PEM private key in '%s' (an "
                       "encrypted key is not supported: 'openssl pkey -in "
                       "KEY -out PLAIN' decrypts it)", key);
    }
    if (x && pk && X509_check_private_key(x, pk) != 1)
        problem(p, "tls.key: does not match tls.cert (the key in '%s' is "
                   "not the one certified in '%s')", key, cert);
    ERR_clear_error(); /* the thread's queue is shared with libcurl */
    X509_free(x);
    EVP_PKEY_free(pk);
    if (cert)
        t->cert = strdup(cert);
    if (key)
        t->key = strdup(key);
}

static struct gw_config *from_json(json_t *root, struct problems *p)
{
    static const char *const known[] = {"listen",  "workers",   "limits",
                                        "backends", "access_log", "registry", "keys",
                                        "rate_limit", "redis", "admin_key",
                                        "models", "cache", "metrics", "tls",
                                        NULL};
    /* keys of the design that later features bring; named, not "unknown" */
    static const char *const later[] = {"registry", NULL};
    struct gw_config *c;
    json_t *v;
    const char *key;
    size_t i;

    if (!json_is_object(root)) {
        problem(p, "(root): must be a JSON object");
        return NULL;
    }
    /* aligned for refs' cache line (calloc only promises 16 bytes) */
    c = aligned_alloc(_Alignof(struct gw_config), sizeof(*c));
    if (c == NULL)
        return NULL;
    memset(c, 0, sizeof(*c));
    c->refs = 1;
    c->workers = 1;
    c->limits.max_body_bytes = 8 << 20;
    c->limits.max_header_bytes = 32 << 10;
    c->limits.header_timeout_ms = 10000;
    c->limits.body_timeout_ms = 30000;
    c->limits.idle_timeout_ms = 60000;
    c->limits.drain_timeout_ms = 30000;
    c->limits.max_n = 128;            /* OpenAI's own bound on n */
    c->limits.max_tokens = 1000000;   /* far above any model's output */

    json_object_foreach(root, key, v) {
        const char *const *k;
        for (k = known; *k && strcmp(*k, key) != 0; k++)
            ;
        if (*k)
            continue;
        for (k = later; *k && strcmp(*k, key) != 0; k++)
            ;
        if (*k)
            problem(p, "%s: not supported by this version of promptgate "
                       "yet; remove it", key);
        else
            problem(p, "%s: unknown key", key);
    }

    v = json_object_get(root, "listen");
    if (v == NULL)
        c->listen_host = strdup("127.0.0.1"), c->listen_port = 8080;
    else
        parse_listen(c, v, p);

    c->workers = (int)int_value(root, "workers", 1, 1, GW_MAX_WORKERS, "", p);
    parse_limits(c, json_object_get(root, "limits"), p);

    parse_keys(c, json_object_get(root, "keys"), p);
    parse_rate_limit(c, json_object_get(root, "rate_limit"), p);
    parse_redis(c, json_object_get(root, "redis"), p);
    if (c->rl_mode == GW_RL_REDIS && !c->has_redis)
        problem(p, "rate_limit.mode: \"redis\" needs the \"redis\" key "
                   "({\"url\": \"redis://127.0.0.1:6379/0\"})");
    parse_cache(c, json_object_get(root, "cache"), p);
    if (c->cache.backend == GW_CACHE_REDIS && !c->has_redis)
        problem(p, "cache.backend: \"redis\" needs the \"redis\" key "
                   "({\"url\": \"redis://127.0.0.1:6379/0\"})");

    v = json_object_get(root, "access_log");
    if (v == NULL)
        c->access_log = strdup("stderr");
    else if (!json_is_string(v) || json_string_length(v) == 0)
        problem(p, "access_log: must be \"stderr\", \"syslog\", \"off\" or "
                   "a file path");
    else
        c->access_log = strdup(json_string_value(v));

    parse_registry(c, json_object_get(root, "registry"), p);
    parse_metrics(c, json_object_get(root, "metrics"), p);
    parse_tls(c, json_object_get(root, "tls"), p);

    v = json_object_get(root, "backends");
    if (!json_is_array(v) || json_array_size(v) == 0) {
        problem(p, "backends: must be a non-empty array of backends "
                   "({\"name\", \"url\", \"models\"})");
    } else if (json_array_size(v) > MAX_BACKENDS) {
        problem(p, "backends: at most %d backends", MAX_BACKENDS);
    } else {
        c->backends = calloc(json_array_size(v), sizeof(*c->backends));
        if (c->backends == NULL) {
            gw_config_unref(c);
            return NULL;
        }
        c->n_backends = json_array_size(v);
        for (i = 0; i < c->n_backends; i++)
            parse_backend(c, &c->backends[i], json_array_get(v, i), i, p);
    }
    if (p->count == 0 && index_models(c) < 0)
        problem(p, "(root): out of memory");
    if (p->count == 0)
        parse_models(c, json_object_get(root, "models"), p);
    if (json_object_get(root, "admin_key"))
        c->admin_key = secret_value(json_object_get(root, "admin_key"),
                                    "admin_key", p);
    if (p->count > 0) {
        gw_config_unref(c);
        return NULL;
    }
    return c;
}

struct gw_config *gw_config_parse(const char *text, size_t len, char **err)
{
    struct problems p = {0};
    json_error_t jerr;
    json_t *root;
    struct gw_config *c = NULL;

    root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL)
        problem(&p, "line %d, column %d: %s", jerr.line, jerr.column,
                jerr.text);
    else
        c = from_json(root, &p);
    json_decref(root);
    if (c == NULL && p.count == 0)
        problem(&p, "(root): out of memory");
    if (c)
        free(p.text);
    else if (err)
        *err = p.text;
    else
        free(p.text);
    return c;
}

struct gw_config *gw_config_load(const char *path, char **err)
{
    FILE *f;
    char *text = NULL;
    size_t len = 0, cap = 0, n;
    struct gw_config *c = NULL;

    f = fopen(path, "rb");
    if (f == NULL) {
        if (err && asprintf(err, "cannot open '%s': %s\n", path,
                            strerror(errno)) < 0)
            *err = NULL;
        return NULL;
    }
    for (;;) {
        if (len + 4096 > cap) {
            cap = cap ? cap * 2 : 8192;
            if (cap > (16u << 20)) {
                if (err && asprintf(err, "cannot read '%s': larger than "
                                         "16 MiB\n", path) < 0)
                    *err = NULL;
                goto out;
            }
            char *t = realloc(text, cap);
            if (t == NULL)
                goto out;
            text = t;
        }
        n = fread(text + len, 1, cap - len, f);
        len += n;
        if (n == 0)
            break;
    }
    if (ferror(f)) {
        if (err && asprintf(err, "cannot read '%s': %s\n", path,
                            strerror(errno)) < 0)
            *err = NULL;
        goto out;
    }
    c = gw_config_parse(text, len, err);
    if (c)
        c->path = strdup(path);
out:
    free(text);
    fclose(f);
    return c;
}
