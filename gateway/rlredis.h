/*
 * rlredis.h - rate-limit decisions shared by every gateway instance,
 * taken by one Lua script in Redis per request (hiredis async on the
 * event loop).
 *
 * Knows of keys and limits, not of requests: the caller gets a callback
 * with the decision, or with ok == 0 when Redis did not answer within its
 * timeout (the caller's on_error policy decides then).
 */
#ifndef GW_RLREDIS_H
#define GW_RLREDIS_H

#include "gateway/config.h"
#include "gateway/limit.h"

struct event_base;
struct gw_rlredis;
struct gw_rlop;

typedef void (*gw_rlredis_cb)(void *arg, int ok,
                              const struct gw_limit_result *res);

/* Connects in the background and keeps reconnecting; never blocks. */
struct gw_rlredis *gw_rlredis_new(struct event_base *base,
                                  const struct gw_redis_conf *conf);
void gw_rlredis_free(struct gw_rlredis *r); /* pending ops are dropped */

/* Asks for a decision. The callback runs later, from the loop, exactly
 * once unless the op is cancelled; NULL when the request cannot even be
 * sent (not connected): decide by on_error at once. Token settlements
 * queued with gw_rlredis_settle ride along with the script call. */
struct gw_rlop *gw_rlredis_admit(struct gw_rlredis *r,
                                 const struct gw_key *key, const char *model,
                                 const struct gw_rate *mrate, long est,
                                 gw_rlredis_cb cb, void *arg);

/* The callback will not run (the client went away). */
void gw_rlredis_cancel(struct gw_rlop *op);

/* Queues delta tokens (actual - reserved) for the key (and key+model):
 * sent with that key's next decision, so a request costs one round trip. */
void gw_rlredis_settle(struct gw_rlredis *r, const struct gw_key *key,
                       const char *model, long tpm, long delta);

/* An admission that will settle here holds it (gw_limit_take_slot until
 * gw_limit_release), so a client replaced by a reload outlives it. */
void gw_rlredis_hold(struct gw_rlredis *r);
void gw_rlredis_unhold(struct gw_rlredis *r);

/* Nothing left to do: no admission holds it, no decision or settlement
 * waits for Redis, none is queued. A client replaced by a reload is
 * freed once it is idle (main.c). */
int gw_rlredis_idle(const struct gw_rlredis *r);

/* Decisions that failed (timeout, disconnect) since start. */
unsigned long gw_rlredis_errors(const struct gw_rlredis *r);

/* Every error of r is also added to *sink (relaxed atomic), a counter
 * that outlives r (a worker's, read by scrapes on other threads). */
void gw_rlredis_set_error_sink(struct gw_rlredis *r, unsigned long *sink);

#endif
