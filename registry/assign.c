/*
 * assign.c - which arm of an experiment a user gets.
 *
 * Design: SHA-256 over "<experiment>\0<salt>\0<user>" -> first 8 bytes as a
 * big-endian integer -> bucket = value mod 10000 -> the arm whose
 * cumulative share of 10000 covers the bucket. The hash is uniform, so each
 * arm's share converges to its weight; it depends only on its inputs, so a
 * user gets the same arm in every process, on every machine, after every
 * reload. The modulo bias of 2^64 mod 10000 is below 1e-15.
 *
 * Invariant: a pure function of its inputs, safe from any thread. The only
 * state is the SHA-256 implementation, fetched once (pthread_once): on the
 * gateway's request path SHA256() would look the algorithm up in OpenSSL's
 * provider tables on every call, which cost more than the hash itself; and
 * each thread's digest context, reused (a thread-specific key frees it when
 * the thread ends).
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include "registry/internal.h"

static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;
static EVP_MD *sha256_md;    /* owned for the life of the process */
static pthread_key_t ctx_key; /* each thread's EVP_MD_CTX, freed at its exit */
static int ctx_key_ok;

static void ctx_free(void *ctx)
{
    EVP_MD_CTX_free(ctx);
}

static void sha256_fetch(void)
{
    sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
    ctx_key_ok = pthread_key_create(&ctx_key, ctx_free) == 0;
}

/* SHA-256 of buf with this thread's context, kept from call to call: an
 * EVP_Digest allocates, initialises and frees one each time. 0 or -1. */
static int sha256(const unsigned char *buf, size_t len, unsigned char *md)
{
    EVP_MD_CTX *ctx;

    pthread_once(&sha256_once, sha256_fetch);
    if (sha256_md == NULL || !ctx_key_ok)
        return SHA256(buf, len, md) ? 0 : -1;
    if ((ctx = pthread_getspecific(ctx_key)) == NULL) {
        if ((ctx = EVP_MD_CTX_new()) == NULL)
            return -1;
        if (pthread_setspecific(ctx_key, ctx) != 0) {
            EVP_MD_CTX_free(ctx);
            return -1;
        }
    }
    return EVP_DigestInit_ex2(ctx, sha256_md, NULL) == 1 &&
                   EVP_DigestUpdate(ctx, buf, len) == 1 &&
                   EVP_DigestFinal_ex(ctx, md, NULL) == 1
               ? 0
               : -1;
}

int reg_assign_bucket(const char *experiment_name, const char *salt,
                      const char *user_id)
{
    unsigned char md[SHA256_DIGEST_LENGTH], stackbuf[512], *buf = stackbuf;
    const char *parts[3] = {experiment_name ? experiment_name : "",
                            salt ? salt : "", user_id ? user_id : ""};
    size_t len[3], total = 0, off = 0;
    uint64_t v = 0;

    for (int i = 0; i < 3; i++)
        total += (len[i] = strlen(parts[i]) + 1);
    /* per request: hash from the stack, no allocation unless ids are huge */
    if (total > sizeof(stackbuf) && (buf = malloc(total)) == NULL)
        return -1;
    for (int i = 0; i < 3; i++) {   /* the NULs keep ("ab","c") != ("a","bc") */
        memcpy(buf + off, parts[i], len[i]);
        off += len[i];
    }
    if (sha256(buf, total, md) < 0 && SHA256(buf, total, md) == NULL) {
        if (buf != stackbuf)
            free(buf);
        return -1;
    }
    if (buf != stackbuf)
        free(buf);
    for (int i = 0; i < 8; i++)
        v = (v << 8) | md[i];
    return (int)(v % 10000);
}

int reg_assign(const char *experiment_name, const char *salt,
               const char *user_id, const struct reg_arm *arms, size_t n_arms)
{
    long total = 0, cum = 0;
    int bucket;

    for (size_t i = 0; i < n_arms; i++)
        if (arms[i].weight > 0)
            total += arms[i].weight;
    if (total == 0)
        return -1;
    bucket = reg_assign_bucket(experiment_name, salt, user_id);
    if (bucket < 0)
        return -1;
    for (size_t i = 0; i < n_arms; i++) {
        if (arms[i].weight <= 0)
            continue;
        cum += arms[i].weight;
        if (bucket < cum * 10000 / total)
            return (int)i;
    }
    return (int)n_arms - 1;   /* unreachable: cum reaches total */
}
