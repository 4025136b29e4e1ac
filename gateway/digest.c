/*
 * digest.c - SHA-256 fetched once (OpenSSL 3 providers).
 *
 * Request paths hash a key per request (proxy.c) and a cache key per
 * cacheable request (cache.c). With OpenSSL 3, EVP_sha256() is a legacy
 * handle that EVP_DigestInit resolves to a provider implementation on
 * every call, under a read-write lock of the default library context:
 * 3% of a worker's profile with two workers. The fetched EVP_MD is kept
 * for the life of the process (reachable, never freed).
 */
#include "gateway/digest.h"

#include <pthread.h>

static pthread_once_t once = PTHREAD_ONCE_INIT;
static EVP_MD *sha256; /* owned by the process */

static void fetch(void)
{
    sha256 = EVP_MD_fetch(NULL, "SHA2-256", NULL);
}

const EVP_MD *gw_sha256(void)
{
    pthread_once(&once, fetch);
    return sha256 ? sha256 : EVP_sha256();
}
