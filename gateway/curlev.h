/*
 * curlev.h - libcurl's multi-socket interface driven by a libevent loop.
 *
 * Knows nothing of requests or config: it runs easy handles and reports
 * each one's end. Modelled on curl's docs/examples/hiperfifo.c.
 */
#ifndef GW_CURLEV_H
#define GW_CURLEV_H

#include <curl/curl.h>

struct event_base;
struct gw_curlev;

/* Called once per transfer that ended by itself (not for one removed with
 * gw_curlev_remove), after it left the multi handle; priv is the
 * handle's CURLOPT_PRIVATE. The callback may free the handle. */
typedef void (*gw_curlev_done_cb)(CURL *easy, CURLcode result, void *priv);

struct gw_curlev *gw_curlev_new(struct event_base *base,
                                gw_curlev_done_cb done);

/* Starts a transfer. Returns 0 or -1. */
int gw_curlev_add(struct gw_curlev *cv, CURL *easy);

/* Stops a transfer at once; its done callback will not fire. Must not be
 * called from inside one of the handle's own curl callbacks. */
void gw_curlev_remove(struct gw_curlev *cv, CURL *easy);

/* Takes an easy handle from the pool of reusable ones (reset), or a new
 * one; NULL on failure. gw_curlev_put gives it back. */
CURL *gw_curlev_get(struct gw_curlev *cv);
void gw_curlev_put(struct gw_curlev *cv, CURL *easy);

/* Frees the multi handle; transfers still running are dropped. */
void gw_curlev_free(struct gw_curlev *cv);

#endif
