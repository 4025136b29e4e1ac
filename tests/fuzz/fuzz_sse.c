/*
 * fuzz_sse.c - libFuzzer target: an upstream event stream through the SSE
 * splitter (gateway/sse.c) and each event's data through the usage scanner
 * (gateway/usage.c), as upstream.c relays a stream.
 *
 * The first input byte picks the feed size; the rest is the stream. It is
 * parsed twice: in one gw_sse_feed call, and fed a few bytes at a time (as
 * reads deliver it). Both parses must give the same events (raw bytes,
 * name, joined data), the same verdict (an event over max_event is an
 * error) and the same [DONE] flag; every event's raw text must be a piece
 * of the input, in order. Usage counts found are -1 or non-negative.
 */
#include "gateway/sse.h"
#include "gateway/usage.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_EVENT 2048 /* small, so that the limit is reached */

struct log {
    char *p; /* owned: events, serialised */
    size_t len, cap;
    size_t raw_total; /* bytes of raw events, which must tile the input */
    const uint8_t *input;
};

static void die(const char *what)
{
    fprintf(stderr, "fuzz_sse: %s\n", what);
    abort();
}

static void add(struct log *l, const void *s, size_t n)
{
    if (l->len + n + 1 > l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 1024;
        while (cap < l->len + n + 1)
            cap *= 2;
        if ((l->p = realloc(l->p, cap)) == NULL)
            die("out of memory");
        l->cap = cap;
    }
    if (n)
        memcpy(l->p + l->len, s, n);
    l->len += n;
}

static void add_field(struct log *l, const char *s, size_t n)
{
    char len[24];
    int k = snprintf(len, sizeof(len), "%zu:", s ? n : (size_t)-1);

    add(l, len, (size_t)k);
    if (s)
        add(l, s, n);
}

static int on_event(void *arg, const struct gw_sse_event *ev)
{
    struct log *l = arg;
    struct gw_usage u;

    if (ev->raw_len == 0 ||
        memcmp(ev->raw, l->input + l->raw_total, ev->raw_len) != 0)
        die("an event's raw text is not the next piece of the input");
    l->raw_total += ev->raw_len;
    add_field(l, ev->raw, ev->raw_len);
    add_field(l, ev->name, ev->name_len);
    add_field(l, ev->data, ev->data_len);
    gw_usage_init(&u);
    if (ev->data && gw_usage_find(ev->data, ev->data_len, &u) == 1 &&
        (u.prompt_tokens < -1 || u.completion_tokens < -1 ||
         u.total_tokens < -1))
        die("a negative usage count");
    return 0;
}

static int parse(const uint8_t *data, size_t size, size_t feed,
                 struct log *l, int *done)
{
    struct gw_sse p;
    size_t off = 0;
    int rc = 0;

    l->input = data;
    gw_sse_init(&p, MAX_EVENT);
    while (off < size && rc == 0) {
        size_t k = feed && size - off > feed ? feed : size - off;
        rc = gw_sse_feed(&p, (const char *)data + off, k, on_event, l);
        off += k;
        if (rc == 0 && gw_sse_pending(&p) > MAX_EVENT + feed)
            die("more than an event held back");
    }
    if (rc == 0 && l->raw_total + gw_sse_pending(&p) != size)
        die("events and held bytes are not the input");
    *done = p.done;
    gw_sse_release(&p);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct log a = {0}, b = {0};
    struct gw_usage u;
    int ra, rb, da, db;
    size_t feed;

    if (size < 1)
        return 0;
    feed = 1 + data[0] % 61;
    data++, size--;
    ra = parse(data, size, 0, &a, &da);
    rb = parse(data, size, feed, &b, &db);
    if (ra != rb)
        die("whole and piecewise parses differ in verdict");
    if (ra == 0 && (a.len != b.len || (a.len && memcmp(a.p, b.p, a.len)) ||
                    da != db))
        die("whole and piecewise parses give different events");
    /* a whole body too, as upstream.c reads a buffered answer */
    gw_usage_init(&u);
    gw_usage_find((const char *)data, size, &u);
    free(a.p);
    free(b.p);
    return 0;
}
