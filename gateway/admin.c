/*
 * admin.c - GET /admin/backends: the routing state an operator reads.
 *
 * Every backend of the current config with its breaker state, in-flight
 * count, EWMA latency and recent error rate (pool.c writes the document),
 * and every model pool with its strategy and fallbacks.
 *
 * Access: the config's admin_key, sent as `Authorization: Bearer KEY` (or
 * `x-admin-key: KEY`), compared in constant time. Without admin_key in the
 * config the endpoint answers 404, so an unconfigured gateway shows
 * nothing of its backends.
 *
 * Threads: any worker answers it; the states are read through
 * gw_states_snap (pool.c), each under its own lock, never all at once.
 */
#include "gateway/gateway.h"
#include "gateway/clock.h"
#include "gateway/http.h"
#include "gateway/pool.h"

#include <event2/buffer.h>
#include <string.h>
#include <strings.h>

int gw_admin_check(struct gw_gateway *gw, struct gw_http_req *req,
                   struct gw_reqlog *rl)
{
    struct gw_config *c = gw->config;
    const char *given = gw_http_req_header(req, "authorization");

    if (c->admin_key == NULL) {
        gw_proxy_error(gw, req, rl, 404, "admin_disabled",
                       "the admin API is off: set \"admin_key\" in the "
                       "configuration (e.g. \"env:PROMPTGATE_ADMIN_KEY\")");
        return -1;
    }
    if (given && strncasecmp(given, "Bearer ", 7) == 0)
        given += 7;
    else
        given = gw_http_req_header(req, "x-admin-key");
    if (given == NULL) {
        gw_proxy_error(gw, req, rl, 401, "missing_admin_key",
                       "send the admin key as 'Authorization: Bearer KEY'");
        return -1;
    }
    if (!gw_admin_key_ok(c->admin_key, given)) {
        gw_proxy_error(gw, req, rl, 403, "invalid_admin_key",
                       "the admin key is not valid");
        return -1;
    }
    return 0;
}

void gw_admin_backends(struct gw_gateway *gw, struct gw_http_req *req,
                       struct gw_reqlog *rl)
{
    struct gw_config *c = gw->config;
    struct evbuffer *b;

    if (gw_admin_check(gw, req, rl) < 0)
        return;
    b = evbuffer_new();
    if (b == NULL) {
        gw_proxy_error(gw, req, rl, 500, "out_of_memory", "out of memory");
        return;
    }
    gw_states_json(c, gw_now_us(), b);
    gw_http_add_header(req, "Cache-Control", "no-store");
    gw_http_reply_buffer(req, 200, "application/json", b);
    evbuffer_free(b);
    rl->status = 200;
    gw_proxy_log(gw, req, rl);
}
