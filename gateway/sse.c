/*
 * sse.c - incremental SSE event splitter.
 *
 * An event ends at a blank line; lines end with "\n", "\r\n" or "\r" (the
 * WHATWG grammar). Bytes are kept until their event is complete; the
 * search resumes where the previous feed stopped, so a stream fed one byte
 * at a time costs O(n), not O(n^2).
 *
 * Invariant: buf[0..len) never holds a complete event after gw_sse_feed
 * returns 0.
 */
#include "gateway/sse.h"

#include <stdlib.h>
#include <string.h>

void gw_sse_init(struct gw_sse *p, size_t max_event)
{
    memset(p, 0, sizeof(*p));
    p->max_event = max_event;
}

void gw_sse_release(struct gw_sse *p)
{
    free(p->buf);
    free(p->data);
    memset(p, 0, sizeof(*p));
}

/* Offset of the first '\n' or '\r' in b[i..n), or n when there is none.
 * Two memchr passes instead of a loop over bytes: the '\n' that ends
 * nearly every line is found at memchr's speed, and the '\r' search is
 * bounded by it. (A byte loop here was a tenth of the gateway's CPU per
 * relayed event.) */
static size_t next_eol(const char *b, size_t i, size_t n)
{
    const char *nl, *cr;
    size_t end;

    if (i >= n)
        return n;
    nl = memchr(b + i, '\n', n - i);
    end = nl ? (size_t)(nl - b) : n;
    cr = memchr(b + i, '\r', end - i);
    return cr ? (size_t)(cr - b) : end;
}

/* Offset just past the blank line ending the first event in b[from..n),
 * or 0 when there is none yet. from is where scanning may resume. */
static size_t find_end(const char *b, size_t n, size_t from)
{
    size_t i = from;

    while ((i = next_eol(b, i, n)) < n) {
        /* b[i] ends a line; is the next line empty? */
        size_t j = i + 1;
        if (b[i] == '\r' && j < n && b[j] == '\n')
            j++;
        else if (b[i] == '\r' && j == n)
            return 0; /* "\r" at the end: wait for a possible "\n" */
        if (j < n && b[j] == '\n')
            return j + 1;
        if (j < n && b[j] == '\r') {
            if (j + 1 < n && b[j + 1] == '\n')
                return j + 2;
            if (j + 1 == n)
                return 0;
            return j + 1;
        }
        i = j;
    }
    return 0;
}

static int data_append(struct gw_sse *p, size_t *dlen, const char *s,
                       size_t n)
{
    if (*dlen + n + 1 > p->data_cap) {
        size_t cap = p->data_cap ? p->data_cap : 256;
        while (cap < *dlen + n + 1)
            cap *= 2;
        char *d = realloc(p->data, cap);
        if (d == NULL)
            return -1;
        p->data = d, p->data_cap = cap;
    }
    memcpy(p->data + *dlen, s, n);
    *dlen += n;
    p->data[*dlen] = '\0';
    return 0;
}

/* Fills ev's fields from the event text e[0..n). */
static int parse_event(struct gw_sse *p, const char *e, size_t n,
                       struct gw_sse_event *ev)
{
    size_t i = 0, dlen = 0;
    int have_data = 0;

    ev->raw = e, ev->raw_len = n;
    ev->name = NULL, ev->name_len = 0;
    while (i < n) {
        size_t start = i, end;
        i = next_eol(e, i, n);
        end = i;
        if (i < n && e[i] == '\r' && i + 1 < n && e[i + 1] == '\n')
            i++;
        i++;
        if (end == start || e[start] == ':')
            continue; /* blank line or comment */
        const char *colon = memchr(e + start, ':', end - start);
        size_t flen = colon ? (size_t)(colon - (e + start)) : end - start;
        const char *val = colon ? colon + 1 : e + end;
        if (colon && val < e + end && *val == ' ')
            val++;
        size_t vlen = (size_t)(e + end - val);
        if (flen == 4 && memcmp(e + start, "data", 4) == 0) {
            if (have_data && data_append(p, &dlen, "\n", 1) < 0)
                return -1;
            if (data_append(p, &dlen, val, vlen) < 0)
                return -1;
            have_data = 1;
        } else if (flen == 5 && memcmp(e + start, "event", 5) == 0) {
            ev->name = val, ev->name_len = vlen;
        }
    }
    if (!have_data && data_append(p, &dlen, "", 0) < 0)
        return -1;
    ev->data = p->data, ev->data_len = dlen;
    if (dlen == 6 && memcmp(p->data, "[DONE]", 6) == 0)
        p->done = 1;
    return 0;
}

/* Emits every complete event in b[0..n); returns the bytes consumed, or
 * (size_t)-1 on error. *scan is where the search resumes. */
static size_t emit(struct gw_sse *p, const char *b, size_t n, size_t *scan,
                   gw_sse_event_cb cb, void *arg)
{
    size_t off = 0, end;
    struct gw_sse_event ev;

    while ((end = find_end(b + off, n - off, *scan)) > 0) {
        /* the limit holds for an event read whole from the caller's bytes
         * too, not only for one held across feeds (found by
         * tests/fuzz/fuzz_sse: the verdict depended on the read sizes) */
        if (end > p->max_event || parse_event(p, b + off, end, &ev) < 0 ||
            cb(arg, &ev) < 0)
            return (size_t)-1;
        off += end;
        *scan = 0;
    }
    /* resume a few bytes early: a line end split across feeds ("\r" |
     * "\n\r\n") must be seen whole; rescanning never adds a false end */
    *scan = n - off > 3 ? n - off - 3 : 0;
    return off;
}

int gw_sse_feed(struct gw_sse *p, const char *bytes, size_t n,
                gw_sse_event_cb cb, void *arg)
{
    size_t used, scan;

    if (p->len == 0) {
        /* fast path: parse straight from the caller's bytes */
        scan = 0;
        used = emit(p, bytes, n, &scan, cb, arg);
        if (used == (size_t)-1)
            return -1;
        bytes += used, n -= used;
        if (n == 0)
            return 0;
        p->scanned = scan;
    }
    /* held bytes and this feed may pass max_event together when the feed
     * completes the held event: the limit is checked on what stays held */
    if (p->len + n > p->cap) {
        size_t cap = p->cap ? p->cap : 1024;
        while (cap < p->len + n)
            cap *= 2;
        char *b = realloc(p->buf, cap);
        if (b == NULL)
            return -1;
        p->buf = b, p->cap = cap;
    }
    memcpy(p->buf + p->len, bytes, n);
    p->len += n;
    scan = p->scanned;
    used = emit(p, p->buf, p->len, &scan, cb, arg);
    if (used == (size_t)-1)
        return -1;
    if (used > 0)
        memmove(p->buf, p->buf + used, p->len - used);
    p->len -= used;
    p->scanned = scan;
    return p->len > p->max_event ? -1 : 0;
}
