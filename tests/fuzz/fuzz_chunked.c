/*
 * fuzz_chunked.c - libFuzzer target: the chunked transfer decoder
 * (gateway/chunked.c), which frames request bodies (http.c) and upstream
 * answers (upconn.c).
 *
 * The first input byte picks how the rest arrives and is taken: the
 * decoder reads it once whole, taking every data span at once, and again
 * fed a few bytes at a time, taking at most a few bytes of each span (as a
 * socket delivers it and a slow consumer drains it). Both runs must end
 * the same way (done, error, or wanting more), with the same body bytes,
 * the same bytes consumed, and total equal to the body's length.
 */
#include "gateway/chunked.h"

#include <event2/buffer.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct run {
    enum gw_chunked_step end;
    struct evbuffer *body;
    size_t consumed;
};

static void die(const char *what)
{
    fprintf(stderr, "fuzz_chunked: %s\n", what);
    abort();
}

/* Decodes data[0..size) arriving feed bytes at a time (0: all at once),
 * taking at most take bytes of a span per step (0: all of it). */
static void decode(const uint8_t *data, size_t size, size_t feed,
                   size_t take, struct run *r)
{
    struct evbuffer *in = evbuffer_new();
    struct gw_chunked d;
    size_t off = 0, n;

    r->body = evbuffer_new();
    if (in == NULL || r->body == NULL)
        die("evbuffer_new");
    gw_chunked_init(&d);
    for (;;) {
        enum gw_chunked_step step;
        size_t before;
        if (off < size) {
            size_t k = feed && size - off > feed ? feed : size - off;
            evbuffer_add(in, data + off, k);
            off += k;
        }
        before = evbuffer_get_length(in);
        step = gw_chunked_next(&d, in, &n);
        if (evbuffer_get_length(in) > before)
            die("the decoder added input");
        if (step == GW_CHUNKED_DATA) {
            if (n == 0 || n > evbuffer_get_length(in) || n > d.left)
                die("a data span that is empty or not there");
            if (take && n > take)
                n = take;
            evbuffer_remove_buffer(in, r->body, n);
            gw_chunked_took(&d, n);
            continue;
        }
        if (step == GW_CHUNKED_NEED && off < size)
            continue;
        r->end = step;
        break;
    }
    if (r->end == GW_CHUNKED_DONE &&
        d.total != evbuffer_get_length(r->body))
        die("total is not the body's length");
    r->consumed = off - evbuffer_get_length(in); /* fed, not left */
    evbuffer_free(in);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct run a, b;
    size_t feed, take, la, lb;

    if (size < 1)
        return 0;
    feed = 1 + (data[0] & 15);
    take = 1 + (data[0] >> 4);
    data++, size--;
    decode(data, size, 0, 0, &a);
    decode(data, size, feed, take, &b);
    if (a.end != b.end) {
        fprintf(stderr, "whole: %d, in pieces: %d\n", a.end, b.end);
        die("the two runs end differently");
    }
    la = evbuffer_get_length(a.body);
    lb = evbuffer_get_length(b.body);
    if (a.end == GW_CHUNKED_DONE &&
        (a.consumed != b.consumed || la != lb ||
         (la > 0 && memcmp(evbuffer_pullup(a.body, -1),
                           evbuffer_pullup(b.body, -1), la) != 0)))
        die("the two runs decoded different bodies");
    evbuffer_free(a.body);
    evbuffer_free(b.body);
    return 0;
}
