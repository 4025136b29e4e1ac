/*
 * rlredis.c - the Redis rate limiter.
 *
 * One EVALSHA per decision runs the same GCRA as limit.c inside Redis, on
 * Redis's clock (TIME), so instances with skewed clocks still agree. The
 * script is called by its SHA-1, computed here; after a Redis restart the
 * first NOSCRIPT answer makes us send the whole script once (EVAL), which
 * also loads it.
 *
 * hiredis 0.14 has no timeouts for async commands: each op has its own
 * timer. When it fires the caller hears ok == 0 at once and the op stays
 * (marked) until Redis answers or the connection drops, because hiredis
 * still owns the callback. A dropped connection fails every pending op and
 * redisev.c reconnects, with backoff, in the background (and loads the
 * scripts again on each connect).
 *
 * Refunds and extra charges of tokens (usage known at the end of a
 * request) are queued per key and added to that key's next script call.
 */
#include "gateway/rlredis.h"
#include "gateway/log.h"
#include "gateway/redisev.h"

#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <openssl/sha.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char script[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local rpm, tpm = tonumber(ARGV[1]), tonumber(ARGV[2])\n"
    "local mrpm, mtpm = tonumber(ARGV[3]), tonumber(ARGV[4])\n"
    "local est, tol, dlim = tonumber(ARGV[5]), tonumber(ARGV[9]), tonumber(ARGV[8])\n"
    "local function get(k) return tonumber(redis.call('GET', k) or '0') end\n"
    "local function put(k, v)\n"
    "  redis.call('SET', k, string.format('%.3f', v), 'PX',\n"
    "             math.max(math.floor(v - now), 0) + 60000)\n"
    "end\n"
    "local function settle(k, r, d)\n"
    "  if r > 0 and d ~= 0 then put(k, get(k) + d * 60000 / r) end\n"
    "end\n"
    "settle(KEYS[2], tpm, tonumber(ARGV[6]))\n"
    "settle(KEYS[4], mtpm, tonumber(ARGV[7]))\n"
    "if dlim > 0 and tonumber(ARGV[10]) ~= 0 then\n"
    "  redis.call('INCRBY', KEYS[5], ARGV[10])\n"
    "end\n"
    "local function req(k, r)\n"
    "  if r <= 0 then return 0, 0 end\n"
    "  local T = 60000 / r\n"
    "  local new = math.max(get(k), now) + T\n"
    "  local over = new - now - math.max(tol, T)\n"
    "  if over > 1e-9 then return over, 0 end\n"
    "  return 0, new\n"
    "end\n"
    "local function tok(k, r)\n"
    "  if r <= 0 then return 0, 0 end\n"
    "  local base = math.max(get(k), now)\n"
    "  if base - now >= tol then return base - now - tol + 1, 0 end\n"
    "  return 0, base + est * 60000 / r\n"
    "end\n"
    "local function rem(r, tat, reqs)\n"
    "  if r <= 0 then return -1, -1 end\n"
    "  local T = 60000 / r\n"
    "  local used = math.max(tat - now, 0)\n"
    "  local owed = math.ceil(used / T - 1e-6)\n"
    "  local left = math.max(r - owed, 0)\n"
    "  if reqs and owed > 0 and math.max(tol, T) - used < T then left = 0 end\n"
    "  return left, math.floor(used)\n"
    "end\n"
    "local function deny(w, code)\n"
    "  local rr, rs = rem(rpm, get(KEYS[1]), true)\n"
    "  local tr, ts = rem(tpm, get(KEYS[2]), false)\n"
    "  if code == 1 then rr = 0 end\n"
    "  if code == 2 then tr = 0 end\n"
    "  return {0, math.ceil(w), code, rpm, rr, rs, tpm, tr, ts}\n"
    "end\n"
    "if dlim > 0 and tonumber(redis.call('GET', KEYS[5]) or '0') >= dlim then\n"
    "  return deny(86400000 - (now % 86400000), 3)\n"
    "end\n"
    "local w, nk = req(KEYS[1], rpm)\n"
    "if w > 0 then return deny(w, 1) end\n"
    "local w2, nm = req(KEYS[3], mrpm)\n"
    "if w2 > 0 then return deny(w2, 1) end\n"
    "local w3, tk = tok(KEYS[2], tpm)\n"
    "if w3 > 0 then return deny(w3, 2) end\n"
    "local w4, tm = tok(KEYS[4], mtpm)\n"
    "if w4 > 0 then return deny(w4, 2) end\n"
    "if rpm > 0 then put(KEYS[1], nk) end\n"
    "if mrpm > 0 then put(KEYS[3], nm) end\n"
    "if tpm > 0 then put(KEYS[2], tk) end\n"
    "if mtpm > 0 then put(KEYS[4], tm) end\n"
    "if dlim > 0 then\n"
    "  redis.call('INCRBY', KEYS[5], est)\n"
    "  redis.call('PEXPIRE', KEYS[5], 172800000)\n"
    "end\n"
    "local rr, rs = rem(rpm, nk, true)\n"
    "local tr, ts = rem(tpm, tk, false)\n"
    "return {1, 0, 0, rpm, rr, rs, tpm, tr, ts}\n";

/* Settles tokens of requests whose key got no next request soon enough
 * to carry them: KEYS[1] the token tat, KEYS[2] the day's budget counter. */
static const char settle_script[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local d, r = tonumber(ARGV[1]), tonumber(ARGV[2])\n"
    "if r > 0 and d ~= 0 then\n"
    "  local v = tonumber(redis.call('GET', KEYS[1]) or '0') + d * 60000 / r\n"
    "  redis.call('SET', KEYS[1], string.format('%.3f', v), 'PX',\n"
    "             math.max(math.floor(v - now), 0) + 60000)\n"
    "end\n"
    "if ARGV[3] == '1' and d ~= 0 then redis.call('INCRBY', KEYS[2], d) end\n"
    "return 1\n";

#define FLUSH_MS 100

struct pending_delta {
    char *name; /* owned: key name, or key name '\x1f' model */
    char *tat_key;   /* owned: the Redis key of its token tat */
    char *daily_key; /* owned: the day's counter, or NULL */
    long tpm;
    long delta;
    struct pending_delta *next; /* owned */
};

struct gw_rlop {
    struct gw_rlredis *r; /* borrowed */
    gw_rlredis_cb cb;     /* NULL once answered, timed out or cancelled */
    void *arg;
    struct event *timer; /* owned */
    /* what to resend after NOSCRIPT */
    char *keys[5];       /* owned */
    char *argv[10];      /* owned */
    int resent;
    int timed_out;
};

struct gw_rlredis {
    struct event_base *base; /* borrowed */
    struct gw_redis_conf conf; /* host, password: owned copies */
    struct gw_redisev *conn; /* owned: the self-reconnecting connection */
    char sha[41];
    char settle_sha[41];
    struct pending_delta *deltas; /* owned */
    struct event *flush;          /* owned: settles deltas left waiting */
    unsigned long errors;
    unsigned long *sink;       /* borrowed, or NULL: also counts errors
                                  there (atomic: read by other threads) */
    int stale; /* ops that timed out and still wait for their answer */
    int freeing;
    long holds;       /* admissions that will settle here */
    long outstanding; /* ops alive and settlements waiting for Redis */
};


static void op_free(struct gw_rlop *op)
{
    int i;

    op->r->outstanding--;
    if (op->timer)
        event_free(op->timer);
    for (i = 0; i < 5; i++)
        free(op->keys[i]);
    for (i = 0; i < 10; i++)
        free(op->argv[i]);
    free(op);
}

/* The caller hears of a failure once; the op lives on until hiredis is
 * done with it. */
static void op_fail(struct gw_rlop *op)
{
    gw_rlredis_cb cb = op->cb;

    op->cb = NULL;
    op->r->errors++;
    if (op->r->sink)
        __atomic_fetch_add(op->r->sink, 1, __ATOMIC_RELAXED);
    if (cb)
        cb(op->arg, 0, NULL);
}

/* A Redis that stopped answering must not hold a growing queue nor make
 * every request wait out its timeout: past this many unanswered ops the
 * connection is dropped, which fails them all at once; requests are then
 * decided by on_error without waiting until the reconnect succeeds. */
#define MAX_STALE 64

static void op_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct gw_rlop *op = arg;
    struct gw_rlredis *r = op->r;

    (void)fd, (void)what;
    op->timed_out = 1;
    r->stale++;
    op_fail(op);
    if (r->stale > MAX_STALE && gw_redisev_ctx(r->conn)) {
        gw_log_warn("redis '%s:%d' left %d decisions unanswered; dropping "
                    "the connection", r->conf.host, r->conf.port, r->stale);
        gw_redisev_drop(r->conn);
    }
}

static int send_op(struct gw_rlop *op, int full);

static void on_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    struct gw_rlop *op = priv;
    redisReply *rep = reply;
    struct gw_limit_result res;

    (void)ac;
    if (op->timed_out) {
        op->timed_out = 0;
        op->r->stale--;
    }
    if (rep && rep->type == REDIS_REPLY_ERROR &&
        strncmp(rep->str, "NOSCRIPT", 8) == 0 && !op->resent &&
        gw_redisev_ctx(op->r->conn) && !op->r->freeing) {
        op->resent = 1;
        if (send_op(op, 1) == 0)
            return; /* this op goes on with the EVAL */
    }
    if (rep == NULL || rep->type != REDIS_REPLY_ARRAY || rep->elements < 9) {
        if (rep && rep->type == REDIS_REPLY_ERROR)
            gw_log_warn("rate limit script failed in redis: %.200s", rep->str);
        op_fail(op);
        op_free(op);
        return;
    }
    if (op->cb) {
        long v[9];
        for (int i = 0; i < 9; i++)
            v[i] = rep->element[i]->type == REDIS_REPLY_INTEGER
                       ? (long)rep->element[i]->integer
                       : -1;
        memset(&res, 0, sizeof(res));
        res.allowed = v[0] == 1;
        res.retry_after_ms = v[1] > 0 ? v[1] : 1;
        res.limit_req = v[3] > 0 ? v[3] : -1;
        res.remaining_req = v[3] > 0 ? v[4] : -1;
        res.reset_req_ms = v[3] > 0 ? v[5] : -1;
        res.limit_tok = v[6] > 0 ? v[6] : -1;
        res.remaining_tok = v[6] > 0 ? v[7] : -1;
        res.reset_tok_ms = v[6] > 0 ? v[8] : -1;
        if (!res.allowed) {
            res.code = v[2] == 3 ? "daily_budget_exceeded"
                                 : "rate_limit_exceeded";
            snprintf(res.message, sizeof(res.message), "%s",
                     v[2] == 3 ? "this key has used its daily token budget"
                     : v[2] == 2 ? "rate limit reached: tokens per minute"
                                 : "rate limit reached: requests per minute");
        }
        gw_rlredis_cb cb = op->cb;
        op->cb = NULL;
        evtimer_del(op->timer);
        cb(op->arg, 1, &res);
    }
    op_free(op);
}

static int send_op(struct gw_rlop *op, int full)
{
    const char *argv[3 + 1 + 5 + 10];
    int argc = 0, i;

    argv[argc++] = full ? "EVAL" : "EVALSHA";
    argv[argc++] = full ? script : op->r->sha;
    argv[argc++] = "5";
    for (i = 0; i < 5; i++)
        argv[argc++] = op->keys[i];
    for (i = 0; i < 10; i++)
        argv[argc++] = op->argv[i];
    redisAsyncContext *ac = gw_redisev_ctx(op->r->conn);

    if (ac == NULL)
        return -1;
    return redisAsyncCommandArgv(ac, on_reply, op, argc, argv, NULL) ==
                   REDIS_OK
               ? 0
               : -1;
}

static char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
static char *fmt(const char *f, ...)
{
    va_list ap;
    char *s = NULL;

    va_start(ap, f);
    if (vasprintf(&s, f, ap) < 0)
        s = NULL;
    va_end(ap);
    return s;
}

static void delta_free(struct pending_delta *d)
{
    free(d->name);
    free(d->tat_key);
    free(d->daily_key);
    free(d);
}

static long take_delta(struct gw_rlredis *r, const char *name)
{
    struct pending_delta **pp, *d;
    long v;

    for (pp = &r->deltas; (d = *pp); pp = &d->next)
        if (strcmp(d->name, name) == 0) {
            *pp = d->next;
            v = d->delta;
            delta_free(d);
            return v;
        }
    return 0;
}

static void settled(redisAsyncContext *ac, void *reply, void *priv)
{
    struct gw_rlredis *r = priv;

    (void)ac, (void)reply;
    r->outstanding--;
}

static void flush_cb(evutil_socket_t fd, short what, void *arg)
{
    struct gw_rlredis *r = arg;
    struct pending_delta *d;

    (void)fd, (void)what;
    redisAsyncContext *ac = gw_redisev_ctx(r->conn);

    if (ac == NULL) {
        struct timeval tv = {0, FLUSH_MS * 1000};
        evtimer_add(r->flush, &tv); /* keep them until Redis is back */
        return;
    }
    while ((d = r->deltas)) {
        char delta[24], tpm[24];
        r->deltas = d->next;
        snprintf(delta, sizeof(delta), "%ld", d->delta);
        snprintf(tpm, sizeof(tpm), "%ld", d->tpm);
        const char *argv[] = {"EVALSHA", r->settle_sha, "2", d->tat_key,
                              d->daily_key ? d->daily_key : d->tat_key,
                              delta, tpm, d->daily_key ? "1" : "0"};
        if (redisAsyncCommandArgv(ac, settled, r, 8, argv, NULL) == REDIS_OK)
            r->outstanding++;
        delta_free(d);
    }
}

void gw_rlredis_settle(struct gw_rlredis *r, const struct gw_key *key,
                       const char *model, long tpm, long delta)
{
    char name[600];
    struct pending_delta *d;

    if (delta == 0)
        return;
    snprintf(name, sizeof(name), "%s%s%s", key->name, model ? "\x1f" : "",
             model ? model : "");
    for (d = r->deltas; d; d = d->next)
        if (strcmp(d->name, name) == 0) {
            d->delta += delta;
            return;
        }
    d = calloc(1, sizeof(*d));
    if (d == NULL || (d->name = strdup(name)) == NULL) {
        free(d);
        return;
    }
    if (model)
        d->tat_key = fmt("pg:rl:%s:m:%s:t", key->name, model);
    else
        d->tat_key = fmt("pg:rl:%s:t", key->name);
    if (!model && key->daily_tokens)
        d->daily_key = fmt("pg:rl:%s:d:%ld", key->name,
                           (long)(time(NULL) / 86400));
    if (d->tat_key == NULL) {
        delta_free(d);
        return;
    }
    d->tpm = tpm;
    d->delta = delta;
    d->next = r->deltas;
    r->deltas = d;
    /* a key's next request carries it; if none comes soon, the timer does */
    if (!evtimer_pending(r->flush, NULL)) {
        struct timeval tv = {0, FLUSH_MS * 1000};
        evtimer_add(r->flush, &tv);
    }
}


struct gw_rlop *gw_rlredis_admit(struct gw_rlredis *r,
                                 const struct gw_key *key, const char *model,
                                 const struct gw_rate *mrate, long est,
                                 gw_rlredis_cb cb, void *arg)
{
    struct gw_rlop *op;
    struct timeval tv = {r->conf.timeout_ms / 1000,
                         (r->conf.timeout_ms % 1000) * 1000};
    char mname[600];
    long day = (long)(time(NULL) / 86400);
    int i;

    if (gw_redisev_ctx(r->conn) == NULL)
        return NULL;
    op = calloc(1, sizeof(*op));
    if (op == NULL)
        return NULL;
    op->r = r;
    r->outstanding++;
    op->cb = cb;
    op->arg = arg;
    snprintf(mname, sizeof(mname), "%s\x1f%s", key->name, model);
    /* keys are prefix + names: the names were checked in the config, the
     * model is just bytes to Redis */
    op->keys[0] = fmt("pg:rl:%s:r", key->name);
    op->keys[1] = fmt("pg:rl:%s:t", key->name);
    op->keys[2] = fmt("pg:rl:%s:m:%s:r", key->name, model);
    op->keys[3] = fmt("pg:rl:%s:m:%s:t", key->name, model);
    op->keys[4] = fmt("pg:rl:%s:d:%ld", key->name, day);
    op->argv[0] = fmt("%ld", key->rate.rpm);
    op->argv[1] = fmt("%ld", key->rate.tpm);
    op->argv[2] = fmt("%ld", mrate ? mrate->rpm : 0L);
    op->argv[3] = fmt("%ld", mrate ? mrate->tpm : 0L);
    op->argv[4] = fmt("%ld", est);
    long dk = take_delta(r, key->name);
    op->argv[5] = fmt("%ld", dk);
    op->argv[6] = fmt("%ld", take_delta(r, mname));
    op->argv[7] = fmt("%ld", key->daily_tokens);
    op->argv[8] = fmt("%d", 1000);
    op->argv[9] = fmt("%ld", dk);
    op->timer = evtimer_new(r->base, op_timeout, op);
    for (i = 0; i < 5; i++)
        if (op->keys[i] == NULL)
            goto fail;
    for (i = 0; i < 10; i++)
        if (op->argv[i] == NULL)
            goto fail;
    if (op->timer == NULL || send_op(op, 0) < 0)
        goto fail;
    evtimer_add(op->timer, &tv);
    return op;
fail:
    op_free(op);
    return NULL;
}

void gw_rlredis_cancel(struct gw_rlop *op)
{
    op->cb = NULL;
    evtimer_del(op->timer);
}

void gw_rlredis_hold(struct gw_rlredis *r)
{
    r->holds++;
}

void gw_rlredis_unhold(struct gw_rlredis *r)
{
    r->holds--;
}

int gw_rlredis_idle(const struct gw_rlredis *r)
{
    return r->holds == 0 && r->outstanding == 0 && r->deltas == NULL;
}

void gw_rlredis_set_error_sink(struct gw_rlredis *r, unsigned long *sink)
{
    r->sink = sink;
}

unsigned long gw_rlredis_errors(const struct gw_rlredis *r)
{
    return r->errors;
}

/* On every connect: both scripts are then called by SHA; commands on one
 * connection run in order, so these come before any call. */
static void load_scripts(redisAsyncContext *ac, void *arg)
{
    (void)arg;
    redisAsyncCommand(ac, NULL, NULL, "SCRIPT LOAD %s", script);
    redisAsyncCommand(ac, NULL, NULL, "SCRIPT LOAD %s", settle_script);
}

struct gw_rlredis *gw_rlredis_new(struct event_base *base,
                                  const struct gw_redis_conf *conf)
{
    struct gw_rlredis *r = calloc(1, sizeof(*r));
    unsigned char digest[SHA_DIGEST_LENGTH];
    int i;

    if (r == NULL)
        return NULL;
    r->base = base;
    r->conf = *conf;
    r->conf.host = strdup(conf->host);
    r->conf.password = conf->password ? strdup(conf->password) : NULL;
    r->flush = evtimer_new(base, flush_cb, r);
    if (r->conf.host == NULL || r->flush == NULL) {
        gw_rlredis_free(r);
        return NULL;
    }
    SHA1((const unsigned char *)script, sizeof(script) - 1, digest);
    for (i = 0; i < SHA_DIGEST_LENGTH; i++)
        snprintf(r->sha + 2 * i, 3, "%02x", digest[i]);
    SHA1((const unsigned char *)settle_script, sizeof(settle_script) - 1,
         digest);
    for (i = 0; i < SHA_DIGEST_LENGTH; i++)
        snprintf(r->settle_sha + 2 * i, 3, "%02x", digest[i]);
    r->conn = gw_redisev_new(base, r->conf.host, r->conf.port,
                             r->conf.password, r->conf.db, "rate limits");
    if (r->conn == NULL) {
        gw_rlredis_free(r);
        return NULL;
    }
    gw_redisev_on_connect(r->conn, load_scripts, r);
    return r;
}

void gw_rlredis_free(struct gw_rlredis *r)
{
    if (r == NULL)
        return;
    r->freeing = 1;
    gw_redisev_free(r->conn); /* fails pending ops: on_reply(NULL) */
    if (r->flush)
        event_free(r->flush);
    while (r->deltas) {
        struct pending_delta *d = r->deltas;
        r->deltas = d->next;
        delta_free(d);
    }
    free(r->conf.host);
    free(r->conf.password);
    free(r);
}
