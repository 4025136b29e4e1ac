/*
 * fuzz_canon.c - libFuzzer target: the canonical form of a request body
 * for cache keys (gateway/canon.c), as cache.c computes it.
 *
 * The input is a body; one that gw_jscan refuses (as proxy.c would) is
 * skipped. Checked, on cache.c's skip list:
 *  - a valid object body nested at most 64 deep always has a form;
 *  - the form is JSON and, without the skipped members on both sides,
 *    the same value as the body (jansson; bodies with duplicate keys or
 *    numbers out of jansson's range aside);
 *  - the form of the form is itself (it is canonical);
 *  - has_stream_options and include_usage say what the body says.
 * The gw_canon buffers are reused from input to input, as the cache does.
 */
#include "gateway/canon.h"
#include "gateway/jscan.h"

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const skip[] = {"user", "stream", "stream_options",
                                   "metadata", NULL}; /* as cache.c */

static void die(const char *what)
{
    fprintf(stderr, "fuzz_canon: %s\n", what);
    abort();
}

static void drop_skipped(json_t *o)
{
    size_t i;

    for (i = 0; skip[i]; i++)
        json_object_del(o, skip[i]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct gw_canon c1, c2;
    struct gw_canon_info info, info2;
    char err[256];
    json_error_t e;
    json_t *in, *form, *so;
    int depth_ok;

    if (gw_jscan((const char *)data, size, 128, NULL, 0, err,
                 sizeof(err)) < 0)
        return 0;
    depth_ok = gw_jscan((const char *)data, size, 64, NULL, 0, err,
                        sizeof(err)) == 0;
    if (gw_canon_body(&c1, (const char *)data, size, skip, &info) < 0) {
        if (depth_ok)
            die("no form for a valid body");
        return 0;
    }
    /* canonical: a fixed point */
    if (gw_canon_body(&c2, c1.buf, c1.len, skip, &info2) < 0 ||
        c2.len != c1.len || memcmp(c2.buf, c1.buf, c1.len) != 0) {
        fprintf(stderr, "form: %.*s\nits form: %.*s\n", (int)c1.len, c1.buf,
                (int)c2.len, c2.buf);
        die("the form of the form differs");
    }
    if (info2.deterministic != info.deterministic)
        die("the form is judged differently from the body");

    in = json_loadb((const char *)data, size,
                    JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &e);
    if (in == NULL)
        return 0;
    form = json_loadb(c1.buf, c1.len, JSON_ALLOW_NUL, &e);
    if (form == NULL) {
        fprintf(stderr, "form: %.*s\n%s\n", (int)c1.len, c1.buf, e.text);
        die("the form is not JSON");
    }
    so = json_object_get(in, "stream_options");
    if (info.has_stream_options != (so != NULL))
        die("has_stream_options is wrong");
    if (info.include_usage !=
        json_is_true(json_object_get(so, "include_usage")))
        die("include_usage is wrong");
    drop_skipped(in);
    drop_skipped(form);
    if (!json_equal(in, form)) {
        fprintf(stderr, "form: %.*s\n", (int)c1.len, c1.buf);
        die("the form is not the body's value");
    }
    json_decref(in);
    json_decref(form);
    return 0;
}
