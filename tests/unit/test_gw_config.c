/* Unit tests of gateway/config.c: defaults, env secrets, every problem
 * reported with its JSON path. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "gateway/config.h"
#include "gateway/tls.h"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <unistd.h>

static struct gw_config *parse(const char *text, char **err)
{
    *err = NULL;
    return gw_config_parse(text, strlen(text), err);
}

static void test_minimal_defaults(void **state)
{
    char *err;
    struct gw_config *c = parse(
        "{\"backends\":[{\"name\":\"a\",\"url\":\"http://127.0.0.1:9/v1/\","
        "\"models\":[\"m1\",\"m2\"]},{\"name\":\"b\",\"url\":"
        "\"https://api.example.com/v1\",\"models\":[\"m2\",\"m3\"]}]}",
        &err);

    (void)state;
    assert_non_null(c);
    assert_null(err);
    assert_string_equal(c->listen_host, "127.0.0.1");
    assert_int_equal(c->listen_port, 8080);
    assert_int_equal(c->limits.max_body_bytes, 8 << 20);
    assert_int_equal(c->n_backends, 2);
    assert_string_equal(c->backends[0].url, "http://127.0.0.1:9/v1");
    assert_int_equal(c->backends[0].weight, 1);
    assert_int_equal(c->backends[0].timeout_ms, 60000);
    assert_null(c->backends[0].auth_header);
    assert_int_equal(c->n_model_names, 3);
    assert_string_equal(c->model_names[2], "m3");
    assert_ptr_equal(gw_config_backend_for(c, "m2"), &c->backends[0]);
    assert_ptr_equal(gw_config_backend_for(c, "m3"), &c->backends[1]);
    assert_null(gw_config_backend_for(c, "m4"));
    assert_string_equal(c->access_log, "stderr");
    gw_config_unref(gw_config_ref(c));
    gw_config_unref(c);
}

static void test_env_secret(void **state)
{
    char *err;
    struct gw_config *c;

    (void)state;
    setenv("GW_TEST_KEY", "sk-abc", 1);
    c = parse("{\"listen\":\"[::1]:9000\",\"backends\":[{\"name\":\"a\","
              "\"url\":\"http://h/v1\",\"models\":[\"m\"],"
              "\"api_key\":\"env:GW_TEST_KEY\"}]}", &err);
    assert_non_null(c);
    assert_string_equal(c->listen_host, "::1");
    assert_int_equal(c->listen_port, 9000);
    assert_string_equal(c->backends[0].auth_header,
                        "Authorization: Bearer sk-abc");
    gw_config_unref(c);

    unsetenv("GW_TEST_KEY");
    c = parse("{\"backends\":[{\"name\":\"a\",\"url\":\"http://h/v1\","
              "\"models\":[\"m\"],\"api_key\":\"env:GW_TEST_KEY\"}]}", &err);
    assert_null(c);
    assert_non_null(strstr(err, "backends[0].api_key: environment variable "
                                "'GW_TEST_KEY' is not set"));
    free(err);
}

static void test_every_problem_named(void **state)
{
    char *err;
    struct gw_config *c = parse(
        "{\"listen\":\"nohost\",\"frobnicate\":1,\"workers\":0,"
        "\"limits\":{\"max_body_bytes\":-1,\"bogus\":2},"
        "\"backends\":[{\"name\":\"a\",\"url\":\"http://h/v1\",\"models\":"
        "[\"m\"]},{\"name\":\"a\",\"url\":\"ftp://x\",\"models\":[],"
        "\"weight\":\"2\",\"extra\":true}]}",
        &err);

    (void)state;
    assert_null(c);
    assert_non_null(err);
    assert_non_null(strstr(err, "listen: 'nohost' is not HOST:PORT"));
    assert_non_null(strstr(err, "frobnicate: unknown key"));
    assert_non_null(strstr(err, "workers: must be an integer"));
    assert_non_null(strstr(err, "limits.max_body_bytes: must be an integer"));
    assert_non_null(strstr(err, "limits.bogus: unknown key"));
    assert_non_null(strstr(err, "backends[1].name: 'a' is already used"));
    assert_non_null(strstr(err, "backends[1].url: not a URL"));
    assert_non_null(strstr(err, "backends[1].models: must be a non-empty"));
    assert_non_null(strstr(err, "backends[1].weight: must be an integer"));
    assert_non_null(strstr(err, "backends[1].extra: unknown key"));
    free(err);
}

static void test_limits_n_and_max_tokens(void **state)
{
    char *err;
    struct gw_config *c = parse(
        "{\"backends\":[{\"name\":\"a\",\"url\":\"http://h/v1\","
        "\"models\":[\"m\"]}]}", &err);

    (void)state;
    assert_non_null(c);
    assert_int_equal(c->limits.max_n, 128);
    assert_int_equal(c->limits.max_tokens, 1000000);
    gw_config_unref(c);
    c = parse("{\"limits\":{\"max_n\":4,\"max_tokens\":4096},"
              "\"backends\":[{\"name\":\"a\",\"url\":\"http://h/v1\","
              "\"models\":[\"m\"]}]}", &err);
    assert_non_null(c);
    assert_int_equal(c->limits.max_n, 4);
    assert_int_equal(c->limits.max_tokens, 4096);
    gw_config_unref(c);
    assert_null(parse("{\"limits\":{\"max_n\":0,\"max_tokens\":1e9},"
                      "\"backends\":[{\"name\":\"a\",\"url\":"
                      "\"http://h/v1\",\"models\":[\"m\"]}]}", &err));
    assert_non_null(strstr(err, "limits.max_n: must be an integer from 1 to "
                                "100000"));
    assert_non_null(strstr(err, "limits.max_tokens: must be an integer from "
                                "1 to 100000000"));
    free(err);
}

static void test_bad_json_and_shapes(void **state)
{
    char *err;

    (void)state;
    assert_null(parse("{\"backends\": [", &err));
    assert_non_null(strstr(err, "line 1"));
    free(err);
    assert_null(parse("[]", &err));
    assert_non_null(strstr(err, "(root): must be a JSON object"));
    free(err);
    assert_null(parse("{\"backends\":[]}", &err));
    assert_non_null(strstr(err, "backends: must be a non-empty array"));
    free(err);
    assert_null(parse("{\"backends\":[{\"name\":\"a\",\"url\":\"http://h/api\","
                      "\"models\":[\"m\"]}]}", &err));
    assert_non_null(strstr(err, "backends[0].url: must be the "
                                "OpenAI-compatible base URL ending in /v1"));
    free(err);
    assert_null(parse("{\"a\":1,\"a\":2}", &err));
    assert_non_null(strstr(err, "duplicate"));
    free(err);
    assert_null(parse("{\"cache\":{\"backend\":\"redis\"},\"backends\":[{"
                      "\"name\":\"a\",\"url\":\"http://h/v1\",\"models\":[\"m\"]}]}",
                      &err));
    assert_non_null(strstr(err, "cache.backend: \"redis\" needs the \"redis\" key"));
    free(err);
}

static const char cache_backends[] =
    "\"backends\":[{\"name\":\"a\",\"url\":\"http://h/v1\",\"models\":[\"m\"]}]";

static void test_parse_cache(void **state)
{
    struct gw_config *c;
    char *err = NULL, text[1024];

    (void)state;
    /* absent: off */
    snprintf(text, sizeof(text), "{%s}", cache_backends);
    c = parse(text, &err);
    assert_non_null(c);
    assert_int_equal(c->cache.enabled, 0);
    gw_config_unref(c);
    /* defaults */
    snprintf(text, sizeof(text), "{\"cache\":{},%s}", cache_backends);
    c = parse(text, &err);
    assert_non_null(c);
    assert_int_equal(c->cache.enabled, 1);
    assert_int_equal(c->cache.backend, GW_CACHE_MEMORY);
    assert_int_equal(c->cache.ttl_s, 3600);
    assert_int_equal(c->cache.max_entry_bytes, 1 << 20);
    assert_int_equal(c->cache.max_bytes, 64 << 20);
    gw_config_unref(c);
    /* per model switch and ttl, key namespace */
    snprintf(text, sizeof(text),
             "{\"cache\":{\"backend\":\"redis\",\"ttl_s\":5},"
             "\"redis\":{\"url\":\"redis://127.0.0.1:1/0\"},"
             "\"models\":{\"m\":{\"cache\":\"all\",\"cache_ttl_s\":7}},"
             "\"keys\":[{\"name\":\"k\",\"key_sha256\":\"%064d\","
             "\"models\":[\"*\"],\"cache_namespace\":\"shop\"}],%s}",
             0, cache_backends);
    c = parse(text, &err);
    assert_non_null(c);
    assert_int_equal(c->cache.backend, GW_CACHE_REDIS);
    assert_int_equal(c->cache.ttl_s, 5);
    assert_int_equal(c->model_confs[0].cache, GW_MODEL_CACHE_ALL);
    assert_int_equal(c->model_confs[0].cache_ttl_s, 7);
    assert_string_equal(c->keys[0].cache_namespace, "shop");
    gw_config_unref(c);
    /* problems, by path */
    snprintf(text, sizeof(text),
             "{\"cache\":{\"backend\":\"disk\",\"ttl_s\":0,\"x\":1},"
             "\"models\":{\"m\":{\"cache\":1}},%s}", cache_backends);
    assert_null(parse(text, &err));
    assert_non_null(strstr(err, "cache.backend: must be"));
    assert_non_null(strstr(err, "cache.ttl_s: must be an integer"));
    assert_non_null(strstr(err, "cache.x: unknown key"));
    free(err);
    snprintf(text, sizeof(text),
             "{\"models\":{\"m\":{\"cache\":1}},%s}", cache_backends);
    assert_null(parse(text, &err));
    assert_non_null(strstr(err, "models.m.cache: must be true"));
    free(err);
    snprintf(text, sizeof(text),
             "{\"cache\":{\"max_bytes\":4096,\"max_entry_bytes\":8192},%s}",
             cache_backends);
    assert_null(parse(text, &err));
    assert_non_null(strstr(err, "cache.max_entry_bytes: larger than"));
    free(err);
    snprintf(text, sizeof(text),
             "{\"keys\":[{\"name\":\"k\",\"key_sha256\":\"%064d\","
             "\"models\":[\"*\"],\"cache_namespace\":\"a b\"}],%s}",
             0, cache_backends);
    assert_null(parse(text, &err));
    assert_non_null(strstr(err, "keys[0].cache_namespace: must be"));
    free(err);
}

static void test_parse_registry(void **state)
{
    static const char be[] =
        "\"backends\":[{\"name\":\"a\",\"url\":\"http://h/v1\",\"models\":[\"m\"]}]";
    char text[512], *err = NULL;
    struct gw_config *c;

    (void)state;
    c = parse("{\"backends\":[{\"name\":\"a\",\"url\":\"http://h/v1\","
              "\"models\":[\"m\"]}]}", &err);
    assert_non_null(c);
    assert_null(c->registry.path); /* no registry: prompts off */
    gw_config_unref(c);
    snprintf(text, sizeof(text), "{\"registry\":{\"path\":\"r.db\"},%s}", be);
    c = parse(text, &err);
    assert_non_null(c);
    assert_string_equal(c->registry.path, "r.db");
    assert_string_equal(c->registry.exposures, "db");
    assert_int_equal(c->registry.log_outputs, 0);
    gw_config_unref(c);
    snprintf(text, sizeof(text), "{\"registry\":{\"path\":\"r.db\",\"exposures\":"
             "\"/var/log/x.jsonl\",\"log_outputs\":true},%s}", be);
    c = parse(text, &err);
    assert_non_null(c);
    assert_string_equal(c->registry.exposures, "/var/log/x.jsonl");
    assert_int_equal(c->registry.log_outputs, 1);
    gw_config_unref(c);
    /* every problem named with its path */
    snprintf(text, sizeof(text), "{\"registry\":{\"exposures\":3,\"log_outputs\":1,"
             "\"outputs\":true},%s}", be);
    assert_null(parse(text, &err));
    assert_non_null(strstr(err, "registry.path: must be"));
    assert_non_null(strstr(err, "registry.exposures: must be"));
    assert_non_null(strstr(err, "registry.log_outputs: must be true or false"));
    assert_non_null(strstr(err, "registry.outputs: unknown key"));
    free(err);
    snprintf(text, sizeof(text), "{\"registry\":\"r.db\",%s}", be);
    assert_null(parse(text, &err));
    assert_non_null(strstr(err, "registry: must be an object"));
    free(err);
}

/* routing: provider "anthropic", its keys and their checks */
static void test_provider_anthropic(void **state)
{
    char *err;
    struct gw_config *c;

    (void)state;
    setenv("GW_TEST_ANTHROPIC_KEY", "sk-ant-1", 1);
    c = parse("{\"backends\":[{\"name\":\"claude\",\"provider\":"
              "\"anthropic\",\"url\":\"https://api.anthropic.com/v1\","
              "\"models\":[\"claude-x\"],\"api_key\":"
              "\"env:GW_TEST_ANTHROPIC_KEY\"},{\"name\":\"c2\",\"provider\":"
              "\"anthropic\",\"url\":\"http://127.0.0.1:9/v1\",\"models\":"
              "[\"claude-y\"],\"anthropic_version\":\"2024-01-01\","
              "\"default_max_tokens\":512}]}", &err);
    assert_non_null(c);
    assert_int_equal(c->backends[0].provider, GW_PROVIDER_ANTHROPIC);
    /* x-api-key, never a bearer token */
    assert_string_equal(c->backends[0].auth_header, "x-api-key: sk-ant-1");
    assert_string_equal(c->backends[0].anthropic_version, "2023-06-01");
    assert_int_equal(c->backends[0].default_max_tokens, 4096);
    assert_null(c->backends[1].auth_header);
    assert_string_equal(c->backends[1].anthropic_version, "2024-01-01");
    assert_int_equal(c->backends[1].default_max_tokens, 512);
    gw_config_unref(c);
    unsetenv("GW_TEST_ANTHROPIC_KEY");

    c = parse("{\"backends\":[{\"name\":\"a\",\"provider\":\"anthropic\","
              "\"url\":\"https://api.anthropic.com\",\"models\":[\"m\"],"
              "\"anthropic_version\":\"2023 06\",\"default_max_tokens\":0},"
              "{\"name\":\"b\",\"url\":\"http://h/v1\",\"models\":[\"n\"],"
              "\"default_max_tokens\":100},{\"name\":\"c\",\"url\":"
              "\"http://h/v1\",\"models\":[\"o\"],\"provider\":\"bedrock\"}]}",
              &err);
    assert_null(c);
    assert_non_null(strstr(err, "backends[0].url: must be the "
                                "OpenAI-compatible base URL ending in /v1"));
    assert_non_null(strstr(err, "backends[0].anthropic_version: must be "
                                "the anthropic-version header's value"));
    assert_non_null(strstr(err, "backends[0].default_max_tokens"));
    assert_non_null(strstr(err, "backends[1]: \"anthropic_version\" and "
                                "\"default_max_tokens\" are for "
                                "\"provider\": \"anthropic\" only"));
    assert_non_null(strstr(err, "backends[2].provider: must be \"openai\" "
                                "(also vLLM, llama.cpp, Ollama, DashScope), "
                                "\"azure\" or \"anthropic\""));
    free(err);
}

/* metrics (issue 9): off unless the key is present; path, listener,
 * bearer token from the environment; every problem named */
static void test_parse_metrics(void **state)
{
    static const char be[] = "\"backends\":[{\"name\":\"a\",\"url\":"
                             "\"http://h/v1\",\"models\":[\"m\"]}]";
    char text[1024], *err;
    struct gw_config *c;

    (void)state;
    snprintf(text, sizeof(text), "{%s}", be);
    c = parse(text, &err);
    assert_non_null(c);
    assert_int_equal(c->metrics.enabled, 0);
    gw_config_unref(c);

    snprintf(text, sizeof(text), "{%s,\"metrics\":{}}", be);
    c = parse(text, &err);
    assert_non_null(c);
    assert_int_equal(c->metrics.enabled, 1);
    assert_string_equal(c->metrics.path, "/metrics");
    assert_null(c->metrics.listen_host);
    assert_null(c->metrics.bearer_token);
    gw_config_unref(c);

    setenv("GW_TEST_METRICS_TOKEN", "tok-123", 1);
    snprintf(text, sizeof(text),
             "{%s,\"metrics\":{\"enabled\":true,\"path\":\"/prom\","
             "\"listen\":\"[::1]:9464\",\"bearer_token\":"
             "\"env:GW_TEST_METRICS_TOKEN\"}}", be);
    c = parse(text, &err);
    assert_non_null(c);
    assert_string_equal(c->metrics.path, "/prom");
    assert_string_equal(c->metrics.listen_host, "::1");
    assert_int_equal(c->metrics.listen_port, 9464);
    assert_string_equal(c->metrics.bearer_token, "tok-123");
    gw_config_unref(c);

    snprintf(text, sizeof(text), "{%s,\"metrics\":{\"enabled\":false}}",
             be);
    c = parse(text, &err);
    assert_non_null(c);
    assert_int_equal(c->metrics.enabled, 0);
    gw_config_unref(c);

    unsetenv("GW_TEST_METRICS_UNSET");
    snprintf(text, sizeof(text),
             "{%s,\"listen\":\"127.0.0.1:8080\",\"metrics\":{\"enabled\":1,"
             "\"path\":\"/v1/models\",\"listen\":\"127.0.0.1:8080\","
             "\"bearer_token\":\"env:GW_TEST_METRICS_UNSET\",\"port\":1}}",
             be);
    c = parse(text, &err);
    assert_null(c);
    assert_non_null(err);
    assert_non_null(strstr(err, "metrics.enabled: must be true or false"));
    assert_non_null(strstr(err, "metrics.path: '/v1/models' is one of the "
                                "gateway's own routes"));
    assert_non_null(strstr(err, "metrics.listen: '127.0.0.1:8080' is the "
                                "main \"listen\" address"));
    assert_non_null(strstr(err, "metrics.bearer_token: environment variable "
                                "'GW_TEST_METRICS_UNSET' is not set"));
    assert_non_null(strstr(err, "metrics.port: unknown key"));
    free(err);

    snprintf(text, sizeof(text),
             "{%s,\"metrics\":{\"path\":\"metrics\",\"listen\":\"9464\"}}",
             be);
    c = parse(text, &err);
    assert_null(c);
    assert_non_null(strstr(err, "metrics.path: must be a path"));
    assert_non_null(strstr(err, "metrics.listen: must be \"HOST:PORT\""));
    free(err);

    snprintf(text, sizeof(text), "{%s,\"metrics\":true}", be);
    c = parse(text, &err);
    assert_null(c);
    assert_non_null(strstr(err, "metrics: must be an object"));
    free(err);
}

static void test_load_missing_file(void **state)
{
    char *err = NULL;

    (void)state;
    assert_null(gw_config_load("/nonexistent/promptgate.json", &err));
    assert_non_null(strstr(err, "cannot open '/nonexistent/promptgate.json'"));
    free(err);
}

/* ------------------------------------------------------------------ tls */

/* A P-256 key, and a certificate for cn signed by it, as PEM files in dir. */
static EVP_PKEY *write_key(const char *path)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    FILE *f = fopen(path, "w");

    assert_non_null(k);
    assert_non_null(f);
    assert_int_equal(PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL), 1);
    fclose(f);
    return k;
}

static void write_cert(const char *path, EVP_PKEY *k, const char *cn,
                       long days)
{
    X509 *x = X509_new();
    X509_NAME *n;
    FILE *f = fopen(path, "w");

    assert_non_null(x);
    assert_non_null(f);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 7);
    X509_gmtime_adj(X509_getm_notBefore(x), (days < 0 ? days - 1 : -1) * 86400);
    X509_gmtime_adj(X509_getm_notAfter(x), days * 86400);
    X509_set_pubkey(x, k);
    n = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC,
                               (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, n);
    assert_true(X509_sign(x, k, EVP_sha256()) > 0);
    assert_int_equal(PEM_write_X509(f, x), 1);
    fclose(f);
    X509_free(x);
}

struct pki {
    char dir[64];
    char cert[96], key[96], other_key[96], junk[96], missing[96];
};

static void pki_make(struct pki *p)
{
    EVP_PKEY *k, *o;
    FILE *f;

    strcpy(p->dir, "/tmp/test_gw_config_tls.XXXXXX");
    assert_non_null(mkdtemp(p->dir));
    snprintf(p->cert, sizeof(p->cert), "%s/cert.pem", p->dir);
    snprintf(p->key, sizeof(p->key), "%s/key.pem", p->dir);
    snprintf(p->other_key, sizeof(p->other_key), "%s/other.pem", p->dir);
    snprintf(p->junk, sizeof(p->junk), "%s/junk.pem", p->dir);
    snprintf(p->missing, sizeof(p->missing), "%s/missing.pem", p->dir);
    k = write_key(p->key);
    o = write_key(p->other_key);
    write_cert(p->cert, k, "unit.example", 3);
    f = fopen(p->junk, "w");
    assert_non_null(f);
    fputs("not a pem file\n", f);
    fclose(f);
    EVP_PKEY_free(k);
    EVP_PKEY_free(o);
}

static void pki_remove(struct pki *p)
{
    unlink(p->cert);
    unlink(p->key);
    unlink(p->other_key);
    unlink(p->junk);
    rmdir(p->dir);
}

/* cmocka setup and teardown: the files are removed even when a test
 * fails (an assertion leaves the test, not the teardown) */
static int pki_setup(void **state)
{
    struct pki *p = calloc(1, sizeof(*p));

    if (p == NULL)
        return -1;
    *state = p;
    pki_make(p);
    return 0;
}

static int pki_teardown(void **state)
{
    struct pki *p = *state;

    if (p != NULL) {
        if (p->dir[0] != '\0')
            pki_remove(p);
        free(p);
    }
    return 0;
}

/* a "tls" object of cert and key, with `extra` members */
static void tls_of(char *out, size_t len, const char *cert, const char *key,
                   const char *extra)
{
    snprintf(out, len, "{\"cert\":\"%s\",\"key\":\"%s\"%s}", cert, key,
             extra);
}

static struct gw_config *parse_tls(const char *tls, char **err)
{
    char text[2048];

    snprintf(text, sizeof(text),
             "{\"backends\":[{\"name\":\"a\",\"url\":\"http://127.0.0.1:9/v1\","
             "\"models\":[\"m\"]}],\"tls\":%s}", tls);
    return parse(text, err);
}

static void expect_problem(const char *tls, const char *want)
{
    char *err;
    struct gw_config *c = parse_tls(tls, &err);

    assert_null(c);
    assert_non_null(err);
    if (strstr(err, want) == NULL)
        fail_msg("expected '%s' in:\n%s", want, err);
    free(err);
}

/* no "tls": plain, and gw_tls_new says so with an empty message */
static void test_tls_none(void **state)
{
    char msg[512];
    char *err;
    struct gw_config *c;

    (void)state;
    c = parse("{\"backends\":[{\"name\":\"a\",\"url\":\"http://h/v1\","
              "\"models\":[\"m\"]}]}", &err);
    assert_non_null(c);
    assert_int_equal(c->tls.enabled, 0);
    msg[0] = 'x';
    assert_null(gw_tls_new(c, msg, sizeof(msg)));
    assert_int_equal(msg[0], '\0');
    gw_config_unref(c);
}

/* a good pair: the context is built, the certificate described */
static void test_tls_good_pair(void **state)
{
    const struct pki *p = *state;
    char tls[1024], msg[512];
    char *err;
    struct gw_config *c;
    struct gw_tls *t;

    tls_of(tls, sizeof(tls), p->cert, p->key, "");
    c = parse_tls(tls, &err);
    assert_non_null(c);
    assert_int_equal(c->tls.enabled, 1);
    assert_string_equal(c->tls.cert, p->cert);
    assert_string_equal(c->tls.key, p->key);
    assert_int_equal(c->tls.min_version, TLS1_2_VERSION);
    t = gw_tls_new(c, msg, sizeof(msg));
    assert_non_null(t);
    assert_non_null(gw_tls_ctx(t));
    assert_string_equal(gw_tls_subject(t), "CN=unit.example");
    assert_true(gw_tls_not_after(t) > time(NULL) + 2 * 86400);
    assert_true(gw_tls_not_after(t) <= time(NULL) + 3 * 86400);
    assert_int_equal(SSL_CTX_get_min_proto_version(gw_tls_ctx(t)),
                     TLS1_2_VERSION);
    gw_tls_unref(gw_tls_ref(t));
    gw_tls_unref(t);
    gw_config_unref(c);

    tls_of(tls, sizeof(tls), p->cert, p->key, ",\"min_version\":\"1.3\"");
    c = parse_tls(tls, &err);
    assert_non_null(c);
    assert_int_equal(c->tls.min_version, TLS1_3_VERSION);
    t = gw_tls_new(c, msg, sizeof(msg));
    assert_non_null(t);
    assert_int_equal(SSL_CTX_get_min_proto_version(gw_tls_ctx(t)),
                     TLS1_3_VERSION);
    gw_tls_unref(t);
    gw_config_unref(c);
}

/* every problem names its path */
static void test_tls_problems(void **state)
{
    const struct pki *p = *state;
    const struct {
        const char *cert, *key, *extra, *want;
    } cases[] = {
        {p->cert, p->other_key, "", "tls.key: does not match tls.cert"},
        {p->missing, p->key, "", "tls.cert: cannot read '"},
        {p->junk, p->key, "", "tls.cert: no PEM certificate in '"},
        {p->cert, p->junk, "", "tls.key: no usable PEM private key in '"},
        /* the certificate is not a key, nor the key a certificate */
        {p->key, p->cert, "", "tls.cert: no PEM certificate"},
        {p->cert, p->key, ",\"min_version\":\"1.1\"",
         "tls.min_version: must be \"1.2\""},
        {p->cert, p->key, ",\"min_version\":1.3", "tls.min_version: must be"},
        {p->cert, p->key, ",\"ciphers\":\"x\"", "tls.ciphers: unknown key"},
        {"/dev/null", p->key, "", "tls.cert: '/dev/null' is not a PEM file"},
        {p->cert, p->dir, "", "is not a PEM file"},
    };
    char tls[1024];
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        tls_of(tls, sizeof(tls), cases[i].cert, cases[i].key,
               cases[i].extra);
        expect_problem(tls, cases[i].want);
    }
    snprintf(tls, sizeof(tls), "{\"cert\":\"%s\"}", p->cert);
    expect_problem(tls, "tls.key: missing");
    snprintf(tls, sizeof(tls), "{\"key\":\"%s\"}", p->key);
    expect_problem(tls, "tls.cert: missing");
    expect_problem("{\"cert\":\"\",\"key\":7}",
                   "tls.cert: must be the path of the PEM certificate");
    expect_problem("{\"cert\":\"\",\"key\":7}",
                   "tls.key: must be the path of the PEM private key");
    expect_problem("true", "tls: must be an object");
}

/* -t: the subject and notAfter; an expired certificate is a warning, not
 * a failure */
static void test_tls_check(void **state)
{
    const struct pki *p = *state;
    char tls[1024], out[1024] = "", warn[1024] = "";
    char *err;
    struct gw_config *c;
    FILE *fo, *fw, *f;
    EVP_PKEY *k;

    tls_of(tls, sizeof(tls), p->cert, p->key, "");
    c = parse_tls(tls, &err);
    assert_non_null(c);
    fo = fmemopen(out, sizeof(out) - 1, "w");
    fw = fmemopen(warn, sizeof(warn) - 1, "w");
    assert_non_null(fo);
    assert_non_null(fw);
    assert_int_equal(gw_tls_check(c, fo, fw), 0);
    fflush(fo);
    fflush(fw);
    assert_non_null(strstr(out, "subject 'CN=unit.example', notAfter 20"));
    assert_non_null(strstr(warn, "warning: tls certificate '"));
    assert_non_null(strstr(warn, " days (notAfter 20")); /* 2 or 3 */

    f = fopen(p->key, "r");
    assert_non_null(f);
    k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    assert_non_null(k);
    write_cert(p->cert, k, "old.example", -2); /* ended two days ago */
    EVP_PKEY_free(k);
    rewind(fo);
    rewind(fw);
    assert_int_equal(gw_tls_check(c, fo, fw), 0);
    fflush(fo);
    fflush(fw);
    assert_non_null(strstr(out, "subject 'CN=old.example'"));
    assert_non_null(strstr(warn, "has expired (notAfter 20"));
    fclose(fo);
    fclose(fw);
    gw_config_unref(c);
}

/* gw_tls_attach: start, reload, and "tls" added or removed (kept as the
 * listener was: that takes a restart) */
static void test_tls_attach(void **state)
{
    const struct pki *p = *state;
    static const char plain_text[] =
        "{\"backends\":[{\"name\":\"a\",\"url\":\"http://h/v1\","
        "\"models\":[\"m\"]}]}";
    char tls[1024], msg[512];
    char *err;
    struct gw_config *c, *plain, *next;

    tls_of(tls, sizeof(tls), p->cert, p->key, "");
    c = parse_tls(tls, &err);
    next = parse_tls(tls, &err);
    assert_non_null(c);
    assert_non_null(next);
    assert_int_equal(gw_tls_attach(c, NULL, msg, sizeof(msg)), 0);
    assert_non_null(c->tls.ctx);
    assert_int_equal(gw_tls_attach(next, c, msg, sizeof(msg)), 0);
    assert_non_null(next->tls.ctx);
    assert_ptr_not_equal(next->tls.ctx, c->tls.ctx); /* rebuilt */
    plain = parse(plain_text, &err);
    assert_non_null(plain);
    assert_int_equal(gw_tls_attach(plain, c, msg, sizeof(msg)), 0);
    assert_ptr_equal(plain->tls.ctx, c->tls.ctx); /* still on TLS */
    gw_config_unref(plain);
    plain = parse(plain_text, &err);
    assert_non_null(plain);
    assert_int_equal(gw_tls_attach(plain, NULL, msg, sizeof(msg)), 0);
    assert_null(plain->tls.ctx);
    gw_config_unref(next);
    next = parse_tls(tls, &err);
    assert_non_null(next);
    assert_int_equal(gw_tls_attach(next, plain, msg, sizeof(msg)), 0);
    assert_null(next->tls.ctx); /* still plain */
    gw_config_unref(next);
    gw_config_unref(plain);
    gw_config_unref(c);
}

/* a file that changed after the load: gw_tls_new names it */
static void test_tls_changed_file(void **state)
{
    const struct pki *p = *state;
    char tls[1024], msg[512];
    char *err;
    struct gw_config *c;

    tls_of(tls, sizeof(tls), p->cert, p->key, "");
    c = parse_tls(tls, &err);
    assert_non_null(c);
    unlink(p->key);
    assert_null(gw_tls_new(c, msg, sizeof(msg)));
    assert_non_null(strstr(msg, "tls.key: cannot read '"));
    assert_int_equal(gw_tls_attach(c, NULL, msg, sizeof(msg)), -1);
    assert_non_null(strstr(msg, "tls.key: cannot read '"));
    assert_null(c->tls.ctx);
    gw_config_unref(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_minimal_defaults),
        cmocka_unit_test(test_env_secret),
        cmocka_unit_test(test_every_problem_named),
        cmocka_unit_test(test_bad_json_and_shapes),
        cmocka_unit_test(test_limits_n_and_max_tokens),
        cmocka_unit_test(test_parse_cache),
        cmocka_unit_test(test_parse_registry),
        cmocka_unit_test(test_load_missing_file),
        cmocka_unit_test(test_parse_metrics),
        cmocka_unit_test(test_provider_anthropic),
        cmocka_unit_test(test_tls_none),
        cmocka_unit_test_setup_teardown(test_tls_good_pair, pki_setup,
                                        pki_teardown),
        cmocka_unit_test_setup_teardown(test_tls_problems, pki_setup,
                                        pki_teardown),
        cmocka_unit_test_setup_teardown(test_tls_check, pki_setup,
                                        pki_teardown),
        cmocka_unit_test_setup_teardown(test_tls_attach, pki_setup,
                                        pki_teardown),
        cmocka_unit_test_setup_teardown(test_tls_changed_file, pki_setup,
                                        pki_teardown),
    };
    return cmocka_run_group_tests_name("gw_config", tests, NULL, NULL);
}
