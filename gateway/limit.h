/*
 * limit.h - per-key rate limits: requests and tokens per minute (GCRA),
 * concurrency and a daily token budget, with reservations settled from
 * the upstream's usage.
 *
 * State lives in a gw_limiter that outlives configurations (keyed by key
 * name, and key name + model), so a SIGHUP does not reset anyone's
 * counters. This file decides locally; redis mode (rlredis.c) runs the
 * same arithmetic in a Lua script shared by every instance.
 *
 * Threads: one gw_limiter is shared by every worker. gw_limit_admit,
 * gw_limit_take_slot and gw_limit_release may be called from any number
 * of threads at once (striped locks inside, no global one); a gw_admit
 * belongs to one request and is not shared. gw_limiter_new and
 * gw_limiter_free run while no other thread uses the limiter. In redis
 * mode admit->remote is the admitting worker's client, and the release
 * must run on that worker's thread (its holds count is not locked).
 */
#ifndef GW_LIMIT_H
#define GW_LIMIT_H

#include <stdint.h>

#include "gateway/config.h"

struct gw_limiter;
struct gw_lstate;
struct gw_rlredis;

/* A reservation held by one admitted request until it ends. */
struct gw_admit {
    struct gw_lstate *ks; /* borrowed from the limiter: the key's state */
    struct gw_lstate *ms; /* borrowed: key+model state, or NULL */
    const struct gw_key *key; /* borrowed from the request's config */
    const struct gw_rate *mrate; /* borrowed: the key+model rate, or NULL */
    long reserved; /* tokens reserved */
    long day;      /* the day (UTC) the reservation counted against */
    int active;
    struct gw_rlredis *remote; /* borrowed: decided in Redis, settle there */
    int injected_usage; /* the gateway asked upstream for stream usage:
                           the relay drops that chunk for the client */
    char model[264];           /* remote only: for the key+model settle */
};

/* What a decision says; the x-ratelimit-* headers come from it. Fields
 * are -1 when the key has no such limit. */
struct gw_limit_result {
    int allowed;
    long retry_after_ms;
    const char *code; /* when denied: "rate_limit_exceeded", ... */
    char message[256];
    long limit_req, remaining_req, reset_req_ms;
    long limit_tok, remaining_tok, reset_tok_ms;
};

struct gw_limiter *gw_limiter_new(void);
void gw_limiter_free(struct gw_limiter *l); /* NULL is a no-op */

/* Decides on a request of key for model, estimated to cost est_tokens,
 * at time now_ms (wall clock, ms). On admission fills *admit, which must
 * later go to gw_limit_release exactly once. Returns 0, or -1 when out of
 * memory. */
int gw_limit_admit(struct gw_limiter *l, const struct gw_key *key,
                   const char *model, long est_tokens, int64_t now_ms,
                   struct gw_admit *admit, struct gw_limit_result *res);

/* Redis mode: only the concurrency slot is local (an in-flight request
 * is a local resource); rates and budget are decided by rlredis.c. Fills
 * *admit as gw_limit_admit does, with admit->remote set. */
int gw_limit_take_slot(struct gw_limiter *l, const struct gw_key *key,
                       const char *model, long est, struct gw_rlredis *remote,
                       struct gw_admit *admit, struct gw_limit_result *res);

/* Ends a reservation: frees the concurrency slot and settles tokens with
 * what the upstream reported (actual < 0: unknown, the reservation
 * stands). A no-op when admit is not active. */
void gw_limit_release(struct gw_limiter *l, struct gw_admit *admit,
                      long actual_tokens, int64_t now_ms);

/* Formats a duration as OpenAI does in x-ratelimit-reset-*: "20ms",
 * "1.5s", "6m0s". */
void gw_limit_fmt_reset(long ms, char *out, size_t outlen);

#endif
