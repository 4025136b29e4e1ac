/*
 * exposure.h - the exposure log writer: a bounded queue in front of a
 * thread that appends exposure and feedback records to the registry
 * database (one transaction per batch) or to a JSON-lines file.
 *
 * The event loop only ever takes a mutex for a few instructions to push a
 * pointer; when the queue is full the record is dropped and counted, so a
 * slow disk never stalls a request. Knows nothing of requests or config.
 */
#ifndef GW_EXPOSURE_H
#define GW_EXPOSURE_H

#include <stddef.h>
#include <stdint.h>

#include "registry/registry.h"

enum gw_exposure_kind { GW_EXPOSURE, GW_FEEDBACK };

/* One record. The strings live in the same allocation (gw_exposure_rec_new);
 * the fields of ex/fb point into it or into the fixed arrays below. */
struct gw_exposure_rec {
    struct gw_exposure_rec *next; /* borrowed: the owner's list link */
    const void *owner;            /* borrowed: the request it belongs to,
                                     only used as a key; never dereferenced */
    enum gw_exposure_kind kind;
    int64_t at_us;                /* wall clock (µs since the epoch) */
    struct reg_exposure ex;
    struct reg_feedback fb;
    char *raw;                    /* owned: upstream answer bytes for the
                                     output text (SSE data or a JSON body) */
    size_t raw_len, raw_cap;
    int raw_sse;                  /* raw holds SSE data payloads, one a line */
    int truncated;                /* raw stopped at its limit */
    int pooled;                   /* a POOL_SIZE block, reused when freed */
    size_t str_len, str_cap;      /* bytes of strings used, and room */
    char strings[];               /* the packed strings (not cleared) */
};

/* what a record's strings must leave room for when the request's model
 * and backend are added at its end (gw_exposure_rec_strn, bounded to
 * these): all of a record in one run of cache lines */
#define GW_EXPOSURE_MODEL_MAX   264
#define GW_EXPOSURE_BACKEND_MAX 128
#define GW_EXPOSURE_TAIL (GW_EXPOSURE_MODEL_MAX + GW_EXPOSURE_BACKEND_MAX)

/* Allocates a record with room for `strings` extra bytes; small
 * ones come from a pool of records freed before. */
struct gw_exposure_rec *gw_exposure_rec_new(enum gw_exposure_kind kind,
                                            size_t strings);
struct gw_exposure;

/*
 * A loop's side of the queue, for the request path: blocks taken from the
 * pool all at once and records handed to the writer GW_EXPOSURE_BULK at a
 * time, one lock each way for many records. Zeroed to start; one owner (a
 * loop).
 */
#define GW_EXPOSURE_BULK 64
struct gw_exposure_local {
    struct gw_exposure_rec *free; /* owned: blocks ready, by next */
    struct gw_exposure_rec *out[GW_EXPOSURE_BULK]; /* owned: staged */
    size_t n_out;
};
/* gw_exposure_rec_new from the loop's blocks */
struct gw_exposure_rec *gw_exposure_rec_take(struct gw_exposure_local *l,
                                             enum gw_exposure_kind kind,
                                             size_t strings);
/* Stages r for w (a full stage is handed at once). Returns 1 when r is the
 * first staged: the caller then makes sure gw_exposure_hand runs soon (a
 * timer), so that a quiet loop does not keep records back. */
int gw_exposure_stage(struct gw_exposure *w, struct gw_exposure_local *l,
                      struct gw_exposure_rec *r);
/* Queues the staged records, as gw_exposure_push would each. */
void gw_exposure_hand(struct gw_exposure *w, struct gw_exposure_local *l);
/* Frees the blocks and records l holds (hand first to keep the records). */
void gw_exposure_local_clear(struct gw_exposure_local *l);

/* Appends s[0..len) (s may be NULL) to the record's string area; returns
 * the copy, or NULL when s is NULL or the area has no room for it. */
const char *gw_exposure_rec_str(struct gw_exposure_rec *r, const char *s,
                                size_t len);
/* The same for the string s, cut to at most max - 1 bytes. */
const char *gw_exposure_rec_strn(struct gw_exposure_rec *r, const char *s,
                                 size_t max);
/* Appends upstream answer bytes (bounded to max bytes in all). */
void gw_exposure_rec_output(struct gw_exposure_rec *r, const char *data,
                            size_t len, size_t max);
void gw_exposure_rec_free(struct gw_exposure_rec *r);
/* Frees recs[0..n) (NULLs skipped), returning the pooled ones with one
 * lock. */
void gw_exposure_rec_free_n(struct gw_exposure_rec **recs, size_t n);


/*
 * Starts a writer. `db_path`: the registry database (opened read-write,
 * migrated), used when `file` is NULL; `file`: a JSON-lines file opened
 * for appending. `queue` is the capacity in records. Returns NULL with a
 * message in err.
 */
struct gw_exposure *gw_exposure_new(const char *db_path, const char *file,
                                    size_t queue, char *err, size_t errlen);

/* Queues r (ownership passes). Returns 0, or -1 when the queue was full
 * (r is freed and counted as dropped). Never blocks on I/O. */
int gw_exposure_push(struct gw_exposure *w, struct gw_exposure_rec *r);

/* A copy of s[0..len) that w keeps until gw_exposure_free (the same
 * pointer for equal strings), for a record's members that many records
 * share; NULL when w or s is NULL, s is long, or w keeps no more strings
 * (then copy it into the record). Any thread. */
const char *gw_exposure_intern(struct gw_exposure *w, const char *s,
                               size_t len);

struct gw_exposure_stats {
    unsigned long queued, written, dropped, failed;
};
void gw_exposure_stats(struct gw_exposure *w, struct gw_exposure_stats *s);

/* Waits until everything queued so far is written (tests, shutdown). */
void gw_exposure_flush(struct gw_exposure *w);

/* Writes what is queued, stops the thread and frees. NULL is a no-op. */
void gw_exposure_free(struct gw_exposure *w);

/* The text an answer carries: choices[0].message.content (or .text) of a
 * JSON body, or the concatenated choices[0].delta.content (or .text) of
 * SSE data payloads separated by '\n'. Returns a malloc'd string or NULL. */
char *gw_exposure_output_text(const char *raw, size_t len, int sse);

#endif
