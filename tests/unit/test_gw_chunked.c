/* Unit tests of gateway/chunked.c: chunked framing fed in every split. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <event2/buffer.h>
#include <string.h>

#include "gateway/chunked.h"

static int own_chains; /* decode: each piece in a chain of its own */

/* Feeds text in pieces of `step` bytes; returns the final step and puts
 * the decoded body in out. */
static enum gw_chunked_step decode(const char *text, size_t step, char *out,
                                   size_t outcap, size_t *outlen)
{
    struct evbuffer *in = evbuffer_new();
    struct gw_chunked d;
    enum gw_chunked_step st = GW_CHUNKED_NEED;
    size_t off = 0, total = strlen(text), n;

    gw_chunked_init(&d);
    *outlen = 0;
    while (st != GW_CHUNKED_DONE && st != GW_CHUNKED_ERROR) {
        st = gw_chunked_next(&d, in, &n);
        if (st == GW_CHUNKED_DATA) {
            assert_true(*outlen + n <= outcap);
            evbuffer_remove(in, out + *outlen, n);
            *outlen += n;
            gw_chunked_took(&d, n);
        } else if (st == GW_CHUNKED_NEED) {
            if (off == total)
                break;
            size_t k = total - off < step ? total - off : step;
            if (own_chains) {
                /* moved chains stay apart: lines then span chains */
                struct evbuffer *piece = evbuffer_new();
                evbuffer_add(piece, text + off, k);
                evbuffer_add_buffer(in, piece);
                evbuffer_free(piece);
            } else {
                evbuffer_add(in, text + off, k);
            }
            off += k;
        }
    }
    evbuffer_free(in);
    return st;
}

static void test_splits(void **state)
{
    /* a trailer longer than a size line's buffer, one with a bare LF
     * (strict: only CRLF ends a line) */
    const char *text = "5\r\nhello\r\n1 ;ext=1\r\n \r\n6\t\r\nworld!\r\n"
                       "0\r\nTrailer: x\r\nX-Long: "
                       "0123456789012345678901234567890123456789012345678901"
                       "234567890123456789\r\nX-Lf: a\nb\r\n\r\n";
    char out[64];
    size_t len, step;

    (void)state;
    for (own_chains = 0; own_chains < 2; own_chains++)
        for (step = 1; step <= strlen(text); step++) {
            assert_int_equal(decode(text, step, out, sizeof(out), &len),
                             GW_CHUNKED_DONE);
            assert_int_equal(len, 12);
            assert_memory_equal(out, "hello world!", 12);
        }
    own_chains = 0;
}

static void test_malformed(void **state)
{
    const char *bad[] = {
        "x\r\nhello\r\n0\r\n\r\n",          /* size not hex */
        "5\r\nhelloXX0\r\n\r\n",            /* no CRLF after data */
        "5zz\r\nhello\r\n0\r\n\r\n",        /* junk after size */
        "fffffffffffffffff\r\n",            /* overflows 64 bits */
        "5\nhello\r\n0\r\n\r\n",            /* bare LF */
        "5 xyz\r\nhello\r\n0\r\n\r\n",      /* junk after the blanks */
    };
    char out[64];
    size_t len, i;

    (void)state;
    for (own_chains = 0; own_chains < 2; own_chains++)
        for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
            assert_int_equal(decode(bad[i], own_chains ? 1 : 64, out,
                                    sizeof(out), &len),
                             GW_CHUNKED_ERROR);
    own_chains = 0;
}

static void test_endless_size_line(void **state)
{
    char text[6000];
    char out[8];
    size_t len;

    (void)state;
    memset(text, '1', sizeof(text) - 1);
    text[sizeof(text) - 1] = '\0';
    assert_int_equal(decode(text, 512, out, sizeof(out), &len),
                     GW_CHUNKED_ERROR);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_splits),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_endless_size_line),
    };
    return cmocka_run_group_tests_name("gw_chunked", tests, NULL, NULL);
}
