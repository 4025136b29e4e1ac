/*
 * canon.h - the canonical form of a JSON request body, for cache keys:
 * members of every object sorted by their key's bytes, insignificant
 * whitespace removed, strings and numbers kept as written, chosen
 * top-level members left out. The result parses to the same value as the
 * input, so two bodies with the same canonical form ask the same thing.
 * Knows nothing of requests or the cache.
 */
#ifndef GW_CANON_H
#define GW_CANON_H

#include <stddef.h>

/* What the top level of the body says about sampling and streams. */
struct gw_canon_info {
    int deterministic;      /* temperature 0, or no sampling parameter
                               (temperature, top_p, top_k, min_p,
                               typical_p; n other than 1), or n 1 with an
                               integer seed */
    int has_stream_options; /* a top-level "stream_options" */
    int include_usage;      /* stream_options.include_usage is true */
};

struct gw_canon {
    char *buf; /* owned: the canonical text of the last call */
    size_t len, cap;
    char *scratch; /* owned: for reordering members */
    size_t scratch_cap;
};

void gw_canon_init(struct gw_canon *c);
void gw_canon_release(struct gw_canon *c);

/* Writes the canonical form of text (len bytes of JSON already validated,
 * e.g. by gw_jscan) into c->buf/c->len, leaving out the top-level members
 * named in skip (NULL-terminated, may be NULL), and fills info. Returns 0,
 * or -1 when text is not an object, nests deeper than 128, or memory runs
 * out. */
int gw_canon_body(struct gw_canon *c, const char *text, size_t len,
                  const char *const *skip, struct gw_canon_info *info);

#endif
