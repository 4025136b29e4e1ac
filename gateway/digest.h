/*
 * digest.h - SHA-256 for the request path.
 */
#ifndef GW_DIGEST_H
#define GW_DIGEST_H

#include <openssl/evp.h>

/* OpenSSL's SHA-256 implementation, fetched once for the process. The
 * implicit fetch behind EVP_sha256() takes a process-wide lock on every
 * digest, which worker threads then contend on; a fetched EVP_MD skips
 * it. NULL only if OpenSSL has no SHA-256 (then EVP_sha256() is used). */
const EVP_MD *gw_sha256(void);

#endif
