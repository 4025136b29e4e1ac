/*
 * test_reg_assign.c - experiment assignment: stable per user, spread in
 * proportion to the weights (issue 6 bar: within 1% over 100,000 ids).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <endian.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include "tests/unit/test_reg_util.h"

#define USERS 100000

static void spread(const struct reg_arm *arms, size_t n, const char *salt)
{
    long counts[8] = {0};
    char id[32];

    for (int u = 0; u < USERS; u++) {
        int a;
        snprintf(id, sizeof(id), "user-%d", u);
        a = reg_assign("product_copy@production", salt, id, arms, n);
        assert_in_range(a, 0, (long)n - 1);
        counts[a]++;
    }
    for (size_t i = 0; i < n; i++) {
        double share = 100.0 * counts[i] / USERS;
        printf("    arm %zu weight %d%%: %.2f%%\n", i, arms[i].weight, share);
        assert_true(share > arms[i].weight - 1.0 && share < arms[i].weight + 1.0);
    }
}

static void test_spread_50_50(void **state)
{
    struct reg_arm arms[] = {{2, 50}, {3, 50}};
    (void)state;
    spread(arms, 2, "s1");
}

static void test_spread_uneven(void **state)
{
    struct reg_arm arms3[] = {{1, 20}, {2, 30}, {3, 50}};
    struct reg_arm arms2[] = {{1, 90}, {2, 10}};
    struct reg_arm arms4[] = {{1, 1}, {2, 1}, {3, 49}, {4, 49}};
    (void)state;
    spread(arms3, 3, "s2");
    spread(arms2, 2, "s3");
    spread(arms4, 4, "s4");
}

static void test_sticky(void **state)
{
    struct reg_arm arms[] = {{1, 34}, {2, 33}, {3, 33}};
    char id[32];

    (void)state;
    for (int u = 0; u < 2000; u++) {
        int a;
        snprintf(id, sizeof(id), "u%d", u);
        a = reg_assign("e", "s", id, arms, 3);
        for (int k = 0; k < 5; k++)
            assert_int_equal(reg_assign("e", "s", id, arms, 3), a);
    }
}

static void test_known_buckets(void **state)
{
    /* computed independently: sha256(b"exp\0salt\0user1\0")[:8] big-endian % 10000 */
    (void)state;
    assert_int_equal(reg_assign_bucket("exp", "salt", "user1"), 6706);
    assert_int_equal(reg_assign_bucket("product_copy@production", "abc", "alice"), 9215);
}

static void test_salt_reshuffles(void **state)
{
    struct reg_arm arms[] = {{1, 50}, {2, 50}};
    int differ = 0;
    char id[32];

    (void)state;
    for (int u = 0; u < 1000; u++) {
        snprintf(id, sizeof(id), "u%d", u);
        differ += reg_assign("e", "a", id, arms, 2) != reg_assign("e", "b", id, arms, 2);
    }
    /* independent hashes: about half differ */
    assert_in_range(differ, 400, 600);
}

static void test_degenerate(void **state)
{
    struct reg_arm zero[] = {{1, 0}, {2, 0}};
    struct reg_arm one[] = {{7, 100}};
    (void)state;
    assert_int_equal(reg_assign("e", "s", "u", zero, 2), -1);
    assert_int_equal(reg_assign("e", "s", "u", one, 0), -1);
    assert_int_equal(reg_assign("e", "s", "u", one, 1), 0);
    assert_int_equal(reg_assign("e", NULL, NULL, one, 1), 0);
}

/* the memo answers exactly what reg_assign answers: for returning users
 * (hits), for more users than it has slots (evictions), for ids too long
 * to keep, and after a reset for an experiment id whose arms changed */
static void test_memo_matches(void **state)
{
    struct reg_arm arms_a[2] = {{1, 50}, {2, 50}}, arms_b[3] = {{3, 10},
                                                               {4, 10},
                                                               {5, 80}};
    char name[] = "p@production", salt_a[] = "s1", salt_b[] = "s2";
    struct reg_experiment a = {.id = 7, .name = name, .salt = salt_a,
                               .n_arms = 2, .arms = arms_a};
    struct reg_experiment b = {.id = 7, .name = name, .salt = salt_b,
                               .n_arms = 3, .arms = arms_b};
    struct reg_arm_memo *m = reg_arm_memo_new();
    unsigned long lookups, hits;
    char user[REG_MEMO_USER_MAX + 20];

    (void)state;
    assert_non_null(m);
    for (int round = 0; round < 3; round++)
        for (int i = 0; i < 20000; i++) { /* more than its 8,192 slots */
            snprintf(user, sizeof(user), "user-%d", i);
            assert_int_equal(reg_assign_memo(m, &a, user),
                             reg_assign(a.name, a.salt, user, arms_a, 2));
        }
    reg_arm_memo_stats(m, &lookups, &hits);
    assert_int_equal(lookups, 60000);
    assert_true(hits < 60000); /* evictions: 20,000 users cycle */
    /* a few returning users: all hits */
    for (int round = 0; round < 3; round++)
        for (int i = 0; i < 1000; i++) {
            snprintf(user, sizeof(user), "u%d", i);
            assert_int_equal(reg_assign_memo(m, &a, user),
                             reg_assign(a.name, a.salt, user, arms_a, 2));
        }
    reg_arm_memo_stats(m, &lookups, &hits);
    {
        unsigned long h0 = hits, l0 = lookups;
        for (int i = 0; i < 1000; i++) {
            snprintf(user, sizeof(user), "u%d", i);
            reg_assign_memo(m, &a, user);
        }
        reg_arm_memo_stats(m, &lookups, &hits);
        assert_int_equal(lookups - l0, 1000);
        assert_true(hits - h0 >= 950); /* 2 ways: a set may get 3 of them */
    }
    /* the same id with other arms: after a reset the memo forgets */
    reg_arm_memo_reset(m);
    for (int i = 0; i < 1000; i++) {
        snprintf(user, sizeof(user), "u%d", i);
        assert_int_equal(reg_assign_memo(m, &b, user),
                         reg_assign(b.name, b.salt, user, arms_b, 3));
    }
    /* ids longer than the memo keeps, and ids that differ only past it */
    memset(user, 'x', REG_MEMO_USER_MAX + 10);
    user[REG_MEMO_USER_MAX + 10] = '\0';
    for (int i = 0; i < 2; i++) {
        user[REG_MEMO_USER_MAX + 9] = (char)('a' + i);
        assert_int_equal(reg_assign_memo(m, &b, user),
                         reg_assign(b.name, b.salt, user, arms_b, 3));
    }
    user[REG_MEMO_USER_MAX] = '\0'; /* the longest kept */
    for (int i = 0; i < 2; i++)
        assert_int_equal(reg_assign_memo(m, &b, user),
                         reg_assign(b.name, b.salt, user, arms_b, 3));
    assert_int_equal(reg_assign_memo(NULL, &b, "u1"),
                     reg_assign(b.name, b.salt, "u1", arms_b, 3));
    reg_arm_memo_free(m);
}

/* the memo's arm for id is reg_assign's */
#define assert_memo_agrees(m, e, id)                                          \
    assert_int_equal(reg_assign_memo((m), (e), (id)),                         \
                     reg_assign((e)->name, (e)->salt, (id), (e)->arms,        \
                                (e)->n_arms))

/* a prefetch hands its hash to the next lookup of the same id only: the
 * arms stay reg_assign's whether the lookup that follows is of that id, of
 * another one, of a longer id, or comes without a prefetch */
static void test_memo_prefetch(void **state)
{
    struct reg_arm arms[3] = {{1, 30}, {2, 30}, {3, 40}};
    char name[] = "p@production", salt[] = "s";
    struct reg_experiment e = {.id = 3, .name = name, .salt = salt,
                               .n_arms = 3, .arms = arms};
    struct reg_arm_memo *m = reg_arm_memo_new();
    char a[32], b[32], lng[REG_MEMO_USER_MAX + 8];
    unsigned long lookups, hits;

    (void)state;
    assert_non_null(m);
    reg_arm_memo_prefetch(NULL, "u"); /* no memo: nothing to do */
    reg_arm_memo_prefetch(m, "u0");   /* before its first lookup */
    for (int round = 0; round < 2; round++)
        for (int i = 0; i < 3000; i++) {
            snprintf(a, sizeof(a), "user-%d", i);
            snprintf(b, sizeof(b), "other-%d", i);
            reg_arm_memo_prefetch(m, a);
            assert_memo_agrees(m, &e, a);
            /* prefetched, then another id looked up (then a again) */
            reg_arm_memo_prefetch(m, a);
            assert_memo_agrees(m, &e, b);
            assert_memo_agrees(m, &e, a);
            /* the same buffer with another id in it: the hash was used
             * up by the lookup above, so it is not b's */
            reg_arm_memo_prefetch(m, b);
            assert_memo_agrees(m, &e, b);
            snprintf(b, sizeof(b), "third-%d", i);
            assert_memo_agrees(m, &e, b);
            /* a prefetch that keeps nothing clears the last one */
            reg_arm_memo_prefetch(m, a);
            reg_arm_memo_prefetch(m, NULL);
            snprintf(a, sizeof(a), "fourth-%d", i);
            assert_memo_agrees(m, &e, a);
        }
    reg_arm_memo_stats(m, &lookups, &hits);
    assert_true(hits > lookups / 3); /* the second round hits */
    memset(lng, 'y', sizeof(lng) - 1);
    lng[sizeof(lng) - 1] = '\0';
    reg_arm_memo_prefetch(m, lng); /* longer than it keeps: no hash */
    assert_memo_agrees(m, &e, lng);
    /* a lookup of an id it cannot keep uses the prefetch up too */
    for (int i = 0; i < 300; i++) {
        snprintf(a, sizeof(a), "fifth-%d", i);
        reg_arm_memo_prefetch(m, a);
        assert_memo_agrees(m, &e, lng);
        snprintf(a, sizeof(a), "sixth-%d", i);
        assert_memo_agrees(m, &e, a);
    }
    for (int i = 0; i < 300; i++) /* what the memo kept is theirs */
        for (int k = 0; k < 2; k++) {
            snprintf(a, sizeof(a), k ? "sixth-%d" : "fifth-%d", i);
            assert_memo_agrees(m, &e, a);
        }
    reg_arm_memo_free(m);
}

/* the memo's tags: SipHash-2-4 as its authors' reference vectors give it
 * (key 00..0f, message 00 01 02 ...), and as OpenSSL's SIPHASH computes it
 * for every length up to 64 bytes under another key */
static void test_siphash(void **state)
{
    static const struct {
        size_t len;
        uint64_t out;
    } ref[] = {{0, 0x726fdb47dd0e0e31ULL},
               {1, 0x74f839c593dc67fdULL},
               {8, 0x93f5f5799a932462ULL},
               {15, 0xa129ca6149be45e5ULL}};
    unsigned char kb[16], msg[64], mac[8];
    uint64_t key[2];
    size_t i, n;

    (void)state;
    for (i = 0; i < 16; i++)
        kb[i] = (unsigned char)i;
    for (i = 0; i < sizeof(msg); i++)
        msg[i] = (unsigned char)i;
    key[0] = 0x0706050403020100ULL, key[1] = 0x0f0e0d0c0b0a0908ULL;
    for (i = 0; i < sizeof(ref) / sizeof(ref[0]); i++)
        assert_true(reg_siphash24(key, msg, ref[i].len) == ref[i].out);
    for (i = 0; i < 16; i++)
        kb[i] = (unsigned char)(i * 37 + 11);
    memcpy(key, kb, 16); /* little endian words, as OpenSSL reads them */
    key[0] = le64toh(key[0]), key[1] = le64toh(key[1]);
    for (i = 0; i < sizeof(msg); i++)
        msg[i] = (unsigned char)(i * 7 + 3);
    for (n = 0; n <= sizeof(msg); n++) {
        EVP_MAC *mac_alg = EVP_MAC_fetch(NULL, "SIPHASH", NULL);
        EVP_MAC_CTX *ctx = EVP_MAC_CTX_new(mac_alg);
        size_t size = 8, got = 0;
        OSSL_PARAM params[] = {
            OSSL_PARAM_construct_size_t("size", &size), OSSL_PARAM_END};
        uint64_t want;
        assert_non_null(ctx);
        assert_int_equal(EVP_MAC_init(ctx, kb, 16, params), 1);
        assert_int_equal(EVP_MAC_update(ctx, msg, n), 1);
        assert_int_equal(EVP_MAC_final(ctx, mac, &got, sizeof(mac)), 1);
        assert_int_equal(got, 8);
        memcpy(&want, mac, 8);
        assert_true(reg_siphash24(key, msg, n) == le64toh(want));
        EVP_MAC_CTX_free(ctx);
        EVP_MAC_free(mac_alg);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spread_50_50),
        cmocka_unit_test(test_spread_uneven),
        cmocka_unit_test(test_sticky),
        cmocka_unit_test(test_known_buckets),
        cmocka_unit_test(test_salt_reshuffles),
        cmocka_unit_test(test_degenerate),
        cmocka_unit_test(test_memo_matches),
        cmocka_unit_test(test_memo_prefetch),
        cmocka_unit_test(test_siphash),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
