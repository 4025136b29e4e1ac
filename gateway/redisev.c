/*
 * redisev.c - a hiredis async connection that reconnects by itself (see
 * redisev.h).
 *
 * States: DOWN (ac NULL, the reconnect timer armed) -> CONNECTING (ac set,
 * connected 0) -> UP (connected 1) -> DOWN on a failed connect or a drop.
 * hiredis frees the context after the connect-failure and disconnect
 * callbacks, so those only forget the pointer. Commands are sent only in
 * UP (gw_redisev_ctx returns NULL otherwise), so nothing queues up in
 * hiredis while Redis is away.
 */
#include "gateway/redisev.h"
#include "gateway/log.h"

#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000

struct gw_redisev {
    struct event_base *base;  /* borrowed */
    char *host;               /* owned */
    int port;
    char *password;           /* owned, may be NULL */
    int db;
    char what[32];
    redisAsyncContext *ac;    /* owned by hiredis once attached */
    int connected;
    struct event *reconnect;  /* owned */
    long backoff_ms;
    int freeing;
    gw_redisev_connect_cb connect_cb;
    void *connect_arg;
};

static void schedule_reconnect(struct gw_redisev *r)
{
    struct timeval tv;

    if (r->freeing)
        return;
    tv.tv_sec = r->backoff_ms / 1000;
    tv.tv_usec = (r->backoff_ms % 1000) * 1000;
    evtimer_add(r->reconnect, &tv);
    r->backoff_ms = r->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS
                                                       : r->backoff_ms * 2;
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    struct gw_redisev *r = ac->data;

    if (status != REDIS_OK) {
        gw_log_warn("cannot connect to redis '%s:%d' (%s): %s; retrying",
                    r->host, r->port, r->what, ac->errstr);
        r->ac = NULL; /* hiredis frees it after this callback */
        r->connected = 0;
        schedule_reconnect(r);
        return;
    }
    r->connected = 1;
    r->backoff_ms = BACKOFF_MIN_MS;
    gw_log_info("connected to redis '%s:%d' for the %s", r->host, r->port,
                r->what);
    if (r->connect_cb)
        r->connect_cb(r->ac, r->connect_arg);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    struct gw_redisev *r = ac->data;

    r->ac = NULL;
    r->connected = 0;
    if (r->freeing)
        return;
    gw_log_warn("lost redis '%s:%d' (%s)%s%s; reconnecting", r->host,
                r->port, r->what, status == REDIS_OK ? "" : ": ",
                status == REDIS_OK ? "" : ac->errstr);
    schedule_reconnect(r);
}

static void connect_now(struct gw_redisev *r)
{
    redisAsyncContext *ac = redisAsyncConnect(r->host, r->port);

    if (ac == NULL || ac->err) {
        if (ac)
            redisAsyncFree(ac);
        schedule_reconnect(r);
        return;
    }
    ac->data = r;
    if (redisLibeventAttach(ac, r->base) != REDIS_OK) {
        redisAsyncFree(ac);
        schedule_reconnect(r);
        return;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    r->ac = ac;
    if (r->password)
        redisAsyncCommand(ac, NULL, NULL, "AUTH %s", r->password);
    if (r->db)
        redisAsyncCommand(ac, NULL, NULL, "SELECT %d", r->db);
}

static void reconnect_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    connect_now(arg);
}

struct gw_redisev *gw_redisev_new(struct event_base *base, const char *host,
                                  int port, const char *password, int db,
                                  const char *what)
{
    struct gw_redisev *r = calloc(1, sizeof(*r));

    if (r == NULL)
        return NULL;
    r->base = base;
    r->host = strdup(host);
    r->password = password ? strdup(password) : NULL;
    r->port = port;
    r->db = db;
    snprintf(r->what, sizeof(r->what), "%s", what);
    r->backoff_ms = BACKOFF_MIN_MS;
    r->reconnect = evtimer_new(base, reconnect_cb, r);
    if (r->host == NULL || r->reconnect == NULL ||
        (password && r->password == NULL)) {
        gw_redisev_free(r);
        return NULL;
    }
    connect_now(r);
    return r;
}

void gw_redisev_free(struct gw_redisev *r)
{
    if (r == NULL)
        return;
    r->freeing = 1;
    if (r->ac)
        redisAsyncFree(r->ac); /* fails pending commands: NULL replies */
    if (r->reconnect)
        event_free(r->reconnect);
    free(r->host);
    free(r->password);
    free(r);
}

void gw_redisev_on_connect(struct gw_redisev *r, gw_redisev_connect_cb cb,
                           void *arg)
{
    r->connect_cb = cb;
    r->connect_arg = arg;
}

void gw_redisev_drop(struct gw_redisev *r)
{
    redisAsyncContext *ac = r->ac;

    if (ac == NULL || !r->connected)
        return;
    r->connected = 0;
    redisAsyncFree(ac); /* runs on_disconnect: r->ac = NULL, reconnect */
    r->ac = NULL;
    if (!evtimer_pending(r->reconnect, NULL))
        schedule_reconnect(r);
}

struct redisAsyncContext *gw_redisev_ctx(struct gw_redisev *r)
{
    return r && r->connected && !r->freeing ? r->ac : NULL;
}
