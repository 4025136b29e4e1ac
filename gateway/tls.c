/*
 * tls.c - the listener's TLS context (issue 9, point 4).
 *
 * One SSL_CTX per loaded "tls" config: the certificate chain and key from
 * their PEM files, a minimum version (1.2 by default), OpenSSL's default
 * cipher lists (TLS 1.3 suites and ECDHE AEAD ones for 1.2), no
 * compression, no renegotiation, ALPN "http/1.1" only (a client offering
 * only h2 gets the no_application_protocol alert: this server speaks
 * HTTP/1.1). Session resumption works with the built-in cache and tickets.
 *
 * The connection-level I/O (SSL_read/SSL_write on non-blocking sockets) is
 * http.c's; this file only builds and describes contexts.
 *
 * Invariants:
 *  1. A gw_tls never changes after gw_tls_new returns; only its count does
 *     (atomically), so threads may share it without a lock.
 *  2. Every OpenSSL failure here leaves the thread's error queue empty:
 *     libcurl's TLS shares that queue and reads it after its own calls.
 */
#include "gateway/tls.h"
#include "gateway/config.h"
#include "gateway/log.h"

#include <errno.h>
#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct gw_tls {
    atomic_int refs;
    SSL_CTX *ctx;       /* owned */
    char *cert;         /* owned: the certificate file's path */
    char subject[256];  /* RFC 2253, cut to fit */
    time_t not_after;
};

/* The reason of the last OpenSSL error ("ee key too small"), then an
 * empty queue (invariant 2). */
static const char *ssl_reason(char *buf, size_t len)
{
    unsigned long e = ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;

    if (r == NULL && e)
        ERR_error_string_n(e, buf, len);
    else
        snprintf(buf, len, "%s", r ? r : "unknown error");
    ERR_clear_error();
    return buf;
}

/* No passphrase: an encrypted key fails instead of prompting a terminal. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf, (void)size, (void)rwflag, (void)u;
    return 0;
}

/* ALPN: "http/1.1" when the client offers it; nothing else is spoken. */
static int alpn_select(SSL *ssl, const unsigned char **out,
                       unsigned char *outlen, const unsigned char *in,
                       unsigned int inlen, void *arg)
{
    static const unsigned char h11[] = "\x08http/1.1";
    unsigned char *o = NULL;

    (void)ssl, (void)arg;
    if (SSL_select_next_proto(&o, outlen, h11, sizeof(h11) - 1, in,
                              inlen) != OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    *out = o;
    return SSL_TLSEXT_ERR_OK;
}

static void describe(struct gw_tls *t)
{
    X509 *x = SSL_CTX_get0_certificate(t->ctx);
    BIO *b = BIO_new(BIO_s_mem());
    struct tm tm;
    int n;

    t->subject[0] = '\0';
    t->not_after = 0;
    if (x == NULL)
        return;
    if (b && X509_NAME_print_ex(b, X509_get_subject_name(x), 0,
                                XN_FLAG_RFC2253) >= 0) {
        n = BIO_read(b, t->subject, sizeof(t->subject) - 1);
        t->subject[n > 0 ? n : 0] = '\0';
    }
    BIO_free(b);
    memset(&tm, 0, sizeof(tm));
    if (ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) == 1)
        t->not_after = timegm(&tm);
    ERR_clear_error();
}

struct gw_tls *gw_tls_new(const struct gw_config *c, char *err,
                          size_t errlen)
{
    const struct gw_tls_conf *tc = &c->tls;
    struct gw_tls *t;
    char why[256];

    err[0] = '\0';
    if (!tc->enabled)
        return NULL;
    /* the config checked both; the files may have changed since */
    if (access(tc->cert, R_OK) != 0) {
        snprintf(err, errlen, "tls.cert: cannot read '%s': %s", tc->cert,
                 strerror(errno));
        return NULL;
    }
    if (access(tc->key, R_OK) != 0) {
        snprintf(err, errlen, "tls.key: cannot read '%s': %s", tc->key,
                 strerror(errno));
        return NULL;
    }
    t = calloc(1, sizeof(*t));
    if (t == NULL || (t->cert = strdup(tc->cert)) == NULL ||
        (t->ctx = SSL_CTX_new(TLS_server_method())) == NULL) {
        snprintf(err, errlen, "tls: cannot make the TLS context: %s",
                 t ? ssl_reason(why, sizeof(why)) : "out of memory");
        goto fail;
    }
    atomic_init(&t->refs, 1);
    SSL_CTX_set_default_passwd_cb(t->ctx, no_passphrase);
    if (SSL_CTX_set_min_proto_version(t->ctx, tc->min_version) != 1) {
        snprintf(err, errlen, "tls.min_version: not supported by this "
                 "OpenSSL: %s", ssl_reason(why, sizeof(why)));
        goto fail;
    }
    SSL_CTX_set_options(t->ctx, SSL_OP_NO_COMPRESSION |
                                    SSL_OP_NO_RENEGOTIATION |
                                    SSL_OP_IGNORE_UNEXPECTED_EOF);
    /* http.c writes from an evbuffer that may move its bytes between a
     * retried SSL_write and the first (ACCEPT_MOVING), takes partial
     * writes as evbuffer_write does, and idle connections give their
     * record buffers back (RELEASE_BUFFERS): an idle keep-alive TLS
     * connection holds 14.0 KB of RSS instead of 28.5 (1,000 of them
     * opened after a warm-up; a plain one holds 1.1 KB) */
    SSL_CTX_set_mode(t->ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
                                 SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                                 SSL_MODE_RELEASE_BUFFERS);
    /* records are read a buffer at a time, not header then body: half the
     * read(2) calls; http.c drains what is buffered (SSL_has_pending) */
    SSL_CTX_set_read_ahead(t->ctx, 1);
    SSL_CTX_set_session_id_context(t->ctx, (const unsigned char *)"pg", 2);
    SSL_CTX_set_alpn_select_cb(t->ctx, alpn_select, NULL);
    if (SSL_CTX_use_certificate_chain_file(t->ctx, tc->cert) != 1) {
        snprintf(err, errlen, "tls.cert: cannot use '%s': %s", tc->cert,
                 ssl_reason(why, sizeof(why)));
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(t->ctx, tc->key, SSL_FILETYPE_PEM) != 1) {
        snprintf(err, errlen, "tls.key: cannot use '%s': %s", tc->key,
                 ssl_reason(why, sizeof(why)));
        goto fail;
    }
    if (SSL_CTX_check_private_key(t->ctx) != 1) {
        ERR_clear_error();
        snprintf(err, errlen, "tls.key: does not match tls.cert");
        goto fail;
    }
    describe(t);
    return t;
fail:
    if (err[0] == '\0')
        snprintf(err, errlen, "tls: out of memory");
    if (t) {
        SSL_CTX_free(t->ctx);
        free(t->cert);
        free(t);
    }
    ERR_clear_error();
    return NULL;
}

int gw_tls_attach(struct gw_config *c, const struct gw_config *old,
                  char *err, size_t errlen)
{
    err[0] = '\0';
    if (old && (old->tls.ctx == NULL) != (c->tls.enabled == 0)) {
        gw_log_warn("reload: adding or removing \"tls\" takes a restart; "
                    "the listener stays %s", old->tls.ctx
                        ? "on TLS with the previous certificate"
                        : "plain HTTP");
        c->tls.ctx = old->tls.ctx ? gw_tls_ref(old->tls.ctx) : NULL;
        return 0;
    }
    c->tls.ctx = gw_tls_new(c, err, errlen);
    return c->tls.ctx == NULL && err[0] ? -1 : 0;
}

struct gw_tls *gw_tls_ref(struct gw_tls *t)
{
    atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed);
    return t;
}

void gw_tls_unref(struct gw_tls *t)
{
    if (t == NULL ||
        atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) != 1)
        return;
    SSL_CTX_free(t->ctx);
    free(t->cert);
    free(t);
}

SSL_CTX *gw_tls_ctx(const struct gw_tls *t)
{
    return t->ctx;
}

const char *gw_tls_subject(const struct gw_tls *t)
{
    return t->subject;
}

time_t gw_tls_not_after(const struct gw_tls *t)
{
    return t->not_after;
}

/* "2027-01-31 12:00:00 UTC" and the whole days left (negative: expired
 * that long ago). */
static long expiry(const struct gw_tls *t, char *buf, size_t len)
{
    time_t now = time(NULL);
    struct tm tm;

    if (gmtime_r(&t->not_after, &tm) == NULL ||
        strftime(buf, len, "%Y-%m-%d %H:%M:%S UTC", &tm) == 0)
        snprintf(buf, len, "(unknown)");
    if (t->not_after >= now)
        return (long)((t->not_after - now) / 86400);
    return -(long)((now - t->not_after) / 86400) - 1;
}

/* The warning for a certificate near or past its end, or 0 (none). */
static int expiry_warning(const struct gw_tls *t, char *buf, size_t len)
{
    char when[64];
    long days = expiry(t, when, sizeof(when));

    if (t->not_after < time(NULL))
        snprintf(buf, len, "tls certificate '%s' has expired (notAfter "
                 "%s): clients refuse it; install a new one and send "
                 "SIGHUP", t->cert, when);
    else if (days < GW_TLS_WARN_DAYS)
        snprintf(buf, len, "tls certificate '%s' expires in %ld day%s "
                 "(notAfter %s): renew it and send SIGHUP", t->cert, days,
                 days == 1 ? "" : "s", when);
    else
        return 0;
    return 1;
}

void gw_tls_log(const struct gw_tls *t, const char *what)
{
    char when[64], warn[512];

    expiry(t, when, sizeof(when));
    gw_log_info("tls: certificate %s: '%s', subject '%s', notAfter %s",
                what, t->cert, t->subject, when);
    if (expiry_warning(t, warn, sizeof(warn)))
        gw_log_warn("%s", warn);
}

int gw_tls_check(const struct gw_config *c, FILE *out, FILE *warn)
{
    char err[512], when[64];
    struct gw_tls *t;

    if (!c->tls.enabled)
        return 0;
    t = gw_tls_new(c, err, sizeof(err));
    if (t == NULL) {
        fprintf(warn, "promptgate: %s\n", err);
        return -1;
    }
    expiry(t, when, sizeof(when));
    fprintf(out, "promptgate: tls: certificate '%s': subject '%s', "
            "notAfter %s, TLS %s and later\n", t->cert, t->subject, when,
            c->tls.min_version == TLS1_3_VERSION ? "1.3" : "1.2");
    if (expiry_warning(t, err, sizeof(err)))
        fprintf(warn, "promptgate: warning: %s\n", err);
    gw_tls_unref(t);
    return 0;
}
