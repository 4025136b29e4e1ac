/*
 * tls.h - TLS on the listener: the OpenSSL server context built from the
 * config's "tls" key.
 *
 * A gw_tls is immutable once built and reference-counted with an atomic
 * count, so worker threads may share one. The HTTP server holds a
 * reference for the connections it accepts from then on; each connection's
 * SSL holds the SSL_CTX itself (OpenSSL counts that), so a reload that
 * replaces the gw_tls leaves open connections on the certificate they
 * started with.
 */
#ifndef GW_TLS_H
#define GW_TLS_H

#include <stddef.h>
#include <stdio.h>
#include <time.h>

#include <openssl/ssl.h>

struct gw_config;
struct gw_tls;

/* Days before notAfter from which a certificate is warned about. */
#define GW_TLS_WARN_DAYS 7

/* Builds the context of c->tls: TLS server, min_version, no compression,
 * no renegotiation, ALPN "http/1.1" only, OpenSSL's default ciphers.
 * Returns a new reference; when c has no "tls", returns NULL with
 * err[0] = '\0' (plain listener); on failure, NULL with a message naming
 * the JSON path ("tls.cert: ...") in err. */
struct gw_tls *gw_tls_new(const struct gw_config *c, char *err,
                          size_t errlen);

struct gw_tls *gw_tls_ref(struct gw_tls *t);
void gw_tls_unref(struct gw_tls *t); /* NULL is a no-op */

/* Builds c's context into c->tls.ctx (c must not be shared yet). old: the
 * config it replaces (a reload) or NULL (start). Adding or removing "tls"
 * at a reload takes a restart: it is logged and c takes old's context
 * instead (or none), so the listener keeps what it speaks. Returns 0, or
 * -1 with the message in err ("tls.cert: ..."): refuse c. */
int gw_tls_attach(struct gw_config *c, const struct gw_config *old,
                  char *err, size_t errlen);

/* The context to make connections with (SSL_new); borrowed from t. */
SSL_CTX *gw_tls_ctx(const struct gw_tls *t);

/* The leaf certificate's subject (RFC 2253, "CN=example.com,O=...") and
 * notAfter; both borrowed from / kept by t. */
const char *gw_tls_subject(const struct gw_tls *t);
time_t gw_tls_not_after(const struct gw_tls *t);

/* Logs "tls: certificate WHAT: ..." with the file, subject and notAfter
 * at info level, and a warning when it expires within GW_TLS_WARN_DAYS
 * or has expired. what: "loaded", "reloaded". */
void gw_tls_log(const struct gw_tls *t, const char *what);

/* For promptgate -t: when c has "tls", builds the context, prints the
 * certificate's subject and notAfter on out and a warning line on warn
 * when it expires within GW_TLS_WARN_DAYS. Returns 0, or -1 after
 * printing why the listener could not serve it. */
int gw_tls_check(const struct gw_config *c, FILE *out, FILE *warn);

#endif
