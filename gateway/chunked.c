/*
 * chunked.c - chunked transfer coding (RFC 9112 7.1) and socket reads.
 *
 *   size line --size 0--> trailers --empty line--> done
 *      ^   \--size n--> data --n bytes taken--> CRLF --+
 *      +-----------------------------------------------+
 *
 * Lines must end in CRLF; a size line or trailer longer than 4 KiB without
 * one is malformed (it would otherwise buffer without bound).
 */
#include "gateway/chunked.h"

#include <ctype.h>
#include <errno.h>
#include <event2/buffer.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_LINE 4096

void gw_chunked_init(struct gw_chunked *d)
{
    d->state = 0;
    d->left = d->total = 0;
}

static int parse_size(const char *line, uint64_t *out)
{
    uint64_t v = 0;
    const char *p = line;

    if (!isxdigit((unsigned char)*p))
        return -1;
    for (; isxdigit((unsigned char)*p); p++) {
        if (v >> 60)
            return -1; /* would overflow */
        v = v * 16 + (uint64_t)(isdigit((unsigned char)*p)
                                    ? *p - '0'
                                    : (tolower((unsigned char)*p) - 'a' + 10));
    }
    /* RFC 9112: chunk-size [ BWS ";" chunk-ext ]: after the digits only
     * whitespace, then the end or a ';' ("5 xyz" is not a size line) */
    while (*p == ' ' || *p == '\t')
        p++;
    if (*p && *p != ';')
        return -1;
    *out = v;
    return 0;
}

/*
 * The next line of in, ended by CRLF, when the first chain of in holds it
 * and it is shorter than cap: copied into buf, NUL-terminated, and drained
 * with its CRLF; returns its length. Else -1 (the line is not there yet,
 * or spans chains, or is long): evbuffer_readln decides. A stream's size
 * lines are in the first chain nearly always, and evbuffer_readln
 * allocates each line it returns.
 */
static long line_in_first_chain(struct evbuffer *in, char *buf, size_t cap)
{
    struct evbuffer_iovec v;
    const char *s, *p, *end;

    if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
        return -1;
    s = v.iov_base;
    end = s + v.iov_len;
    for (p = s; (p = memchr(p, '\n', (size_t)(end - p))) != NULL; p++) {
        if (p > s && p[-1] == '\r') { /* strict: a bare LF ends no line */
            size_t n = (size_t)(p - 1 - s);
            if (n >= cap)
                return -1;
            memcpy(buf, s, n);
            buf[n] = '\0';
            evbuffer_drain(in, n + 2);
            return (long)n;
        }
    }
    return -1;
}

enum gw_chunked_step gw_chunked_next(struct gw_chunked *d,
                                     struct evbuffer *in, size_t *len)
{
    char small[64], *line, *heap;
    size_t n;
    long k;

    for (;;) {
        if (d->state == 1) {
            size_t avail = evbuffer_get_length(in);
            if (avail == 0)
                return GW_CHUNKED_NEED;
            *len = avail < d->left ? avail : (size_t)d->left;
            return GW_CHUNKED_DATA;
        }
        heap = NULL;
        if ((k = line_in_first_chain(in, small, sizeof(small))) >= 0) {
            line = small;
            n = (size_t)k;
        } else {
            line = heap = evbuffer_readln(in, &n, EVBUFFER_EOL_CRLF_STRICT);
            if (line == NULL)
                return evbuffer_get_length(in) > MAX_LINE ? GW_CHUNKED_ERROR
                                                          : GW_CHUNKED_NEED;
        }
        if (d->state == 2) { /* the CRLF after a chunk's data */
            free(heap);
            if (n != 0)
                return GW_CHUNKED_ERROR;
            d->state = 0;
            continue;
        }
        if (d->state == 3) { /* trailers: skipped up to the empty line */
            free(heap);
            if (n == 0)
                return GW_CHUNKED_DONE;
            continue;
        }
        int bad = parse_size(line, &d->left);
        free(heap);
        if (bad)
            return GW_CHUNKED_ERROR;
        d->state = d->left == 0 ? 3 : 1;
    }
}

void gw_chunked_took(struct gw_chunked *d, size_t n)
{
    d->left -= n;
    d->total += n;
    if (d->left == 0)
        d->state = 2;
}

/* Reads go through one buffer per thread and only what came is added to
 * the evbuffer: reserving `max` in an emptied evbuffer allocated a chain
 * of twice that (libevent frees a drained chain and keeps none), a 32 or
 * 128 KB malloc and free for a read of a few hundred bytes, twice a
 * request. A small read now lands in a small chain; a large one costs a
 * copy. */
#define READ_SCRATCH (64 * 1024)
static __thread char read_scratch[READ_SCRATCH];

int gw_read_some(struct evbuffer *in, evutil_socket_t fd, size_t max)
{
    ssize_t n;

    if (max > READ_SCRATCH)
        max = READ_SCRATCH;
    do
        n = read(fd, read_scratch, max);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK ? -2 : -1;
    if (n > 0 && evbuffer_add(in, read_scratch, (size_t)n) < 0)
        return -1;
    return (int)n;
}
