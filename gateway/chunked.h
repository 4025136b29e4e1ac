/*
 * chunked.h - HTTP/1.1 chunked transfer coding, decoded incrementally
 * from an evbuffer, and one read(2) into an evbuffer. Shared by the
 * server side (request bodies, http.c) and the client side (answers,
 * upconn.c). Knows nothing of requests.
 */
#ifndef GW_CHUNKED_H
#define GW_CHUNKED_H

#include <event2/util.h>
#include <stddef.h>
#include <stdint.h>

struct evbuffer;

enum gw_chunked_step {
    GW_CHUNKED_NEED,  /* more input needed */
    GW_CHUNKED_DATA,  /* *len bytes of body are at the front of in */
    GW_CHUNKED_DONE,  /* the last chunk and the trailers were read */
    GW_CHUNKED_ERROR, /* malformed framing */
};

struct gw_chunked {
    int state;     /* 0 size line, 1 data, 2 CRLF after data, 3 trailers */
    uint64_t left; /* bytes of the current chunk not yet handed out */
    uint64_t total;
};

void gw_chunked_init(struct gw_chunked *d);

/* Consumes framing from in and says what is next. After GW_CHUNKED_DATA
 * the caller takes (or drains) n <= *len bytes from in and reports them
 * with gw_chunked_took. The body size so far (plus the announced chunk) is
 * d->total + d->left, for limits. */
enum gw_chunked_step gw_chunked_next(struct gw_chunked *d,
                                     struct evbuffer *in, size_t *len);
void gw_chunked_took(struct gw_chunked *d, size_t n);

/* One read of at most max (<= 64 KB) bytes appended to in, without the
 * FIONREAD that evbuffer_read asks for first. Returns the bytes read, 0 at
 * EOF, -1 on error, -2 when nothing is there now. */
int gw_read_some(struct evbuffer *in, evutil_socket_t fd, size_t max);

#endif
