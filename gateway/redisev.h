/*
 * redisev.h - one hiredis async connection on a libevent loop that keeps
 * itself connected: connects in the background, AUTH and SELECT on each
 * connect, reconnects with backoff (100 ms doubling to 5 s) when the
 * connection fails or drops. Knows nothing of what the commands are for.
 *
 * hiredis fails every command in flight when the connection drops or the
 * context is freed: their callbacks run with a NULL reply, so a caller's
 * per-command state is always released by its callback.
 */
#ifndef GW_REDISEV_H
#define GW_REDISEV_H

struct event_base;
struct redisAsyncContext;
struct gw_redisev;

/* Starts connecting to host:port (never blocks). password may be NULL; db
 * 0 needs no SELECT. what names the user in log lines ("cache"). NULL on
 * out of memory. */
struct gw_redisev *gw_redisev_new(struct event_base *base, const char *host,
                                  int port, const char *password, int db,
                                  const char *what);

/* Frees the context (pending commands get NULL replies first). NULL is a
 * no-op. */
void gw_redisev_free(struct gw_redisev *r);

/* Called on every successful connect, after AUTH and SELECT were queued
 * (commands sent from it run before any other on that connection): e.g.
 * SCRIPT LOAD. */
typedef void (*gw_redisev_connect_cb)(struct redisAsyncContext *ac,
                                      void *arg);
void gw_redisev_on_connect(struct gw_redisev *r, gw_redisev_connect_cb cb,
                           void *arg);

/* Closes the connection at once (commands in flight get NULL replies now,
 * not after the answers a graceful disconnect would wait for) and
 * reconnects with backoff: for a server that stopped answering. */
void gw_redisev_drop(struct gw_redisev *r);

/* The context to send commands on, or NULL while not connected. */
struct redisAsyncContext *gw_redisev_ctx(struct gw_redisev *r);

#endif
