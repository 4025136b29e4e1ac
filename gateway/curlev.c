/*
 * curlev.c - curl multi on libevent.
 *
 * curl tells us which sockets it wants watched (socket_cb) and when it
 * wants a timeout (timer_cb); we tell curl when a socket is ready or the
 * timer expired (curl_multi_socket_action), then drain finished transfers
 * with curl_multi_info_read. One event per socket, kept with
 * curl_multi_assign so it is found again without a lookup.
 *
 * Finished handles are removed from the multi before their done callback
 * runs, so the callback may reuse or free them; the loop over
 * curl_multi_info_read stays valid because removing a handle that is
 * already done is allowed while reading messages.
 */
#include "gateway/curlev.h"

#include <event2/event.h>
#include <stdlib.h>

#define POOL_MAX 256

struct gw_curlev {
    struct event_base *base; /* borrowed */
    CURLM *multi;            /* owned */
    struct event *timer;     /* owned */
    gw_curlev_done_cb done;
    CURL *pool[POOL_MAX]; /* owned: idle easy handles */
    int n_pool;
};

struct sock {
    struct event *ev; /* owned */
    curl_socket_t fd;
    struct gw_curlev *cv; /* borrowed */
};

static void check_done(struct gw_curlev *cv)
{
    CURLMsg *msg;
    int left;

    while ((msg = curl_multi_info_read(cv->multi, &left))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        CURL *easy = msg->easy_handle;
        CURLcode res = msg->data.result;
        void *priv = NULL;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&priv);
        curl_multi_remove_handle(cv->multi, easy);
        cv->done(easy, res, priv);
    }
}

static void event_cb(evutil_socket_t fd, short what, void *arg)
{
    struct gw_curlev *cv = arg;
    int action = (what & EV_READ ? CURL_CSELECT_IN : 0) |
                 (what & EV_WRITE ? CURL_CSELECT_OUT : 0);
    int running;

    curl_multi_socket_action(cv->multi, fd, action, &running);
    check_done(cv);
}

static void timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    struct gw_curlev *cv = arg;
    int running;

    (void)fd, (void)what;
    curl_multi_socket_action(cv->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(cv);
}

static int timer_cb(CURLM *multi, long timeout_ms, void *arg)
{
    struct gw_curlev *cv = arg;
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};

    (void)multi;
    if (timeout_ms < 0)
        evtimer_del(cv->timer);
    else
        evtimer_add(cv->timer, &tv);
    return 0;
}

static int socket_cb(CURL *easy, curl_socket_t fd, int what, void *arg,
                     void *sockp)
{
    struct gw_curlev *cv = arg;
    struct sock *s = sockp;
    short kind;

    (void)easy;
    if (what == CURL_POLL_REMOVE) {
        if (s) {
            event_free(s->ev);
            free(s);
            curl_multi_assign(cv->multi, fd, NULL);
        }
        return 0;
    }
    kind = EV_PERSIST | (what & CURL_POLL_IN ? EV_READ : 0) |
           (what & CURL_POLL_OUT ? EV_WRITE : 0);
    if (s == NULL) {
        s = calloc(1, sizeof(*s));
        if (s == NULL)
            return -1;
        s->fd = fd;
        s->cv = cv;
        curl_multi_assign(cv->multi, fd, s);
    } else {
        event_free(s->ev);
    }
    s->ev = event_new(cv->base, fd, kind, event_cb, cv);
    if (s->ev == NULL)
        return -1;
    event_add(s->ev, NULL);
    return 0;
}

struct gw_curlev *gw_curlev_new(struct event_base *base,
                                gw_curlev_done_cb done)
{
    struct gw_curlev *cv = calloc(1, sizeof(*cv));

    if (cv == NULL)
        return NULL;
    cv->base = base;
    cv->done = done;
    cv->multi = curl_multi_init();
    cv->timer = evtimer_new(base, timeout_cb, cv);
    if (cv->multi == NULL || cv->timer == NULL) {
        gw_curlev_free(cv);
        return NULL;
    }
    curl_multi_setopt(cv->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
    curl_multi_setopt(cv->multi, CURLMOPT_SOCKETDATA, cv);
    curl_multi_setopt(cv->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(cv->multi, CURLMOPT_TIMERDATA, cv);
    curl_multi_setopt(cv->multi, CURLMOPT_MAXCONNECTS, 1024L);
    return cv;
}

int gw_curlev_add(struct gw_curlev *cv, CURL *easy)
{
    return curl_multi_add_handle(cv->multi, easy) == CURLM_OK ? 0 : -1;
}

void gw_curlev_remove(struct gw_curlev *cv, CURL *easy)
{
    curl_multi_remove_handle(cv->multi, easy);
}

CURL *gw_curlev_get(struct gw_curlev *cv)
{
    if (cv->n_pool > 0) {
        CURL *e = cv->pool[--cv->n_pool];
        curl_easy_reset(e);
        return e;
    }
    return curl_easy_init();
}

void gw_curlev_put(struct gw_curlev *cv, CURL *easy)
{
    if (easy == NULL)
        return;
    if (cv->n_pool < POOL_MAX)
        cv->pool[cv->n_pool++] = easy;
    else
        curl_easy_cleanup(easy);
}

void gw_curlev_free(struct gw_curlev *cv)
{
    if (cv == NULL)
        return;
    while (cv->n_pool > 0)
        curl_easy_cleanup(cv->pool[--cv->n_pool]);
    if (cv->multi)
        curl_multi_cleanup(cv->multi);
    if (cv->timer)
        event_free(cv->timer);
    free(cv);
}
