/*
 * breaker.c - the circuit breaker of one backend.
 *
 *             N failures in a row, or error rate over the
 *             window (with min_requests), or Retry-After
 *    CLOSED ----------------------------------------------> OPEN
 *       ^                                                 |  ^
 *       |                                cool-down over   |  |
 *       |                          (or forced: the pool   |  | probe failed:
 *       |                           has nothing else)     v  | cool-down x2
 *       +---------- probe succeeded ------------------ HALF_OPEN
 *
 *    health check failed:  CLOSED -> OPEN
 *    health check passed:  OPEN | HALF_OPEN -> CLOSED
 *    Retry-After (429/503) in any state -> OPEN for exactly that long
 *
 * Transitions, each made in breaker_set() only, which logs each once:
 *   CLOSED -> OPEN          gw_breaker_record (threshold), gw_breaker_health
 *   OPEN -> HALF_OPEN       gw_breaker_acquire (cool-down over),
 *                           gw_breaker_force_probe
 *   HALF_OPEN -> CLOSED     gw_breaker_record (probe succeeded),
 *                           gw_breaker_health
 *   HALF_OPEN -> OPEN       gw_breaker_record (probe failed)
 *   OPEN -> CLOSED          gw_breaker_health
 *
 * Invariants:
 *  1. While OPEN and before open_until_us, no attempt is let through.
 *  2. At most conf->probes probes are in flight, whatever the state (a
 *     close by health check or a reopen by Retry-After leaves the probes
 *     out keeping their slots); every probe that gw_breaker_acquire hands
 *     out is given back exactly once by gw_breaker_record (any outcome,
 *     NEUTRAL included).
 *  3. The cool-down doubles with each trip since the last close, up to
 *     max_cooldown_ms; a close resets it.
 *  4. A Retry-After opening (told) ends at the time the backend asked for,
 *     never earlier: not by a forced probe, not by a health check.
 *
 * The error window is one bucket a second in a ring of window_s buckets;
 * a bucket whose second is stale counts as empty. Success costs a compare
 * and an increment; only a failure sums the window.
 */
#include "gateway/breaker.h"
#include "gateway/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const state_names[] = {"closed", "open", "half_open"};

const char *gw_breaker_state_name(enum gw_breaker_state s)
{
    return state_names[s];
}

void gw_breaker_conf_default(struct gw_breaker_conf *conf)
{
    conf->failures = 5;
    conf->error_rate_pct = 50;
    conf->min_requests = 20;
    conf->window_s = 10;
    conf->cooldown_ms = 5000;
    conf->max_cooldown_ms = 60000;
    conf->probes = 1;
}

void gw_breaker_init(struct gw_breaker *b, const char *name)
{
    memset(b, 0, sizeof(*b));
    b->name = name;
    b->state = GW_BREAKER_CLOSED;
}

/* The one place the state changes. */
static void breaker_set(struct gw_breaker *b, enum gw_breaker_state to,
                        int64_t now_us, const char *why)
{
    if (to == GW_BREAKER_OPEN)
        gw_log_warn("backend '%s': breaker %s -> open for %lld ms: %s",
                    b->name, state_names[b->state],
                    (long long)((b->open_until_us - now_us) / 1000), why);
    else
        gw_log_info("backend '%s': breaker %s -> %s: %s", b->name,
                    state_names[b->state], state_names[to], why);
    if (to == GW_BREAKER_OPEN && b->state != GW_BREAKER_OPEN)
        b->opens++;
    if (to != b->state)
        b->transitions[to]++;
    if (to == GW_BREAKER_CLOSED) {
        b->trips = 0;
        b->consecutive = 0;
        b->down = b->told = 0;
    }
    b->state = to;
}

static long cooldown(const struct gw_breaker_conf *conf, int trips)
{
    long ms = conf->cooldown_ms;

    for (int i = 1; i < trips && ms < conf->max_cooldown_ms; i++)
        ms *= 2;
    return ms < conf->max_cooldown_ms ? ms : conf->max_cooldown_ms;
}

static void trip(struct gw_breaker *b, const struct gw_breaker_conf *conf,
                 int64_t now_us, int down, const char *why)
{
    b->trips++;
    b->down = down;
    b->told = 0;
    b->open_until_us = now_us + (int64_t)cooldown(conf, b->trips) * 1000;
    breaker_set(b, GW_BREAKER_OPEN, now_us, why);
}

int gw_breaker_usable(const struct gw_breaker *b,
                      const struct gw_breaker_conf *conf, int64_t now_us)
{
    switch (b->state) {
    case GW_BREAKER_CLOSED:
        return 1;
    case GW_BREAKER_OPEN:
        /* probes of an earlier half-open spell may still be out (a health
         * check or a Retry-After reopened it meanwhile): they keep their
         * slots, or the next spell would let more than conf->probes go */
        return now_us >= b->open_until_us &&
               b->probes_inflight < conf->probes;
    case GW_BREAKER_HALF_OPEN:
        return b->probes_inflight < conf->probes;
    }
    return 0;
}

int gw_breaker_acquire(struct gw_breaker *b,
                       const struct gw_breaker_conf *conf, int64_t now_us)
{
    (void)conf;
    if (b->state == GW_BREAKER_OPEN && now_us >= b->open_until_us)
        breaker_set(b, GW_BREAKER_HALF_OPEN, now_us, "cool-down over");
    if (b->state != GW_BREAKER_HALF_OPEN)
        return 0;
    b->probes_inflight++;
    return 1;
}

int gw_breaker_can_force(const struct gw_breaker *b)
{
    return b->state == GW_BREAKER_OPEN && !b->down && !b->told;
}

void gw_breaker_force_probe(struct gw_breaker *b, int64_t now_us)
{
    if (!gw_breaker_can_force(b))
        return;
    breaker_set(b, GW_BREAKER_HALF_OPEN, now_us,
                "every other backend of the pool is out: probing early");
}

static void window_add(struct gw_breaker *b,
                       const struct gw_breaker_conf *conf, int64_t now_us,
                       int failed)
{
    int64_t sec = now_us / 1000000;
    int ws = conf->window_s > 0 && conf->window_s <= GW_BREAKER_MAX_WINDOW
                 ? conf->window_s : 1;
    int i = (int)(sec % ws);

    if (b->win[i].sec != sec) {
        b->win[i].sec = sec;
        b->win[i].ok = b->win[i].fail = 0;
    }
    if (failed)
        b->win[i].fail++;
    else
        b->win[i].ok++;
}

void gw_breaker_window(const struct gw_breaker *b,
                       const struct gw_breaker_conf *conf, int64_t now_us,
                       unsigned long *attempts, unsigned long *failures)
{
    int64_t sec = now_us / 1000000;
    int ws = conf->window_s > 0 && conf->window_s <= GW_BREAKER_MAX_WINDOW
                 ? conf->window_s : 1;
    unsigned long a = 0, f = 0;

    for (int i = 0; i < ws; i++) {
        if (b->win[i].sec > sec - ws && b->win[i].sec <= sec) {
            a += b->win[i].ok + b->win[i].fail;
            f += b->win[i].fail;
        }
    }
    *attempts = a;
    *failures = f;
}

void gw_breaker_record(struct gw_breaker *b,
                       const struct gw_breaker_conf *conf, int64_t now_us,
                       int probe, enum gw_breaker_outcome outcome,
                       long retry_after_ms)
{
    unsigned long n, nf;
    char why[96];

    if (probe && b->probes_inflight > 0)
        b->probes_inflight--;
    if (outcome == GW_BREAKER_NEUTRAL)
        return;
    window_add(b, conf, now_us, outcome != GW_BREAKER_OK);
    if (outcome == GW_BREAKER_OK) {
        b->consecutive = 0;
        if (b->state == GW_BREAKER_HALF_OPEN && probe)
            breaker_set(b, GW_BREAKER_CLOSED, now_us, "probe succeeded");
        return;
    }
    b->consecutive++;
    if (retry_after_ms > 0) {
        int64_t until = now_us + (int64_t)retry_after_ms * 1000;
        if (b->state != GW_BREAKER_OPEN || until > b->open_until_us) {
            enum gw_breaker_state was = b->state;
            b->open_until_us = until;
            b->told = 1;
            b->down = 0;
            if (was == GW_BREAKER_OPEN)
                gw_log_info("backend '%s': breaker stays open %ld ms more: "
                            "it answered Retry-After", b->name,
                            retry_after_ms);
            else
                breaker_set(b, GW_BREAKER_OPEN, now_us,
                            "the backend answered Retry-After");
        }
        return;
    }
    if (b->state == GW_BREAKER_HALF_OPEN) {
        if (probe)
            trip(b, conf, now_us, outcome == GW_BREAKER_DOWN,
                 "probe failed");
        return;
    }
    if (b->state != GW_BREAKER_CLOSED)
        return;
    if (conf->failures > 0 && b->consecutive >= conf->failures) {
        snprintf(why, sizeof(why), "%d failures in a row", b->consecutive);
        trip(b, conf, now_us, outcome == GW_BREAKER_DOWN, why);
        return;
    }
    if (conf->error_rate_pct > 0) {
        gw_breaker_window(b, conf, now_us, &n, &nf);
        if (n >= (unsigned long)conf->min_requests && n > 0 &&
            nf * 100 >= (unsigned long)conf->error_rate_pct * n) {
            snprintf(why, sizeof(why), "%lu of %lu attempts failed in %d s",
                     nf, n, conf->window_s);
            trip(b, conf, now_us, outcome == GW_BREAKER_DOWN, why);
        }
    }
}

void gw_breaker_health(struct gw_breaker *b,
                       const struct gw_breaker_conf *conf, int64_t now_us,
                       int healthy)
{
    if (healthy) {
        if (b->state == GW_BREAKER_CLOSED)
            return;
        if (b->told && now_us < b->open_until_us)
            return;
        breaker_set(b, GW_BREAKER_CLOSED, now_us, "health check passed");
        return;
    }
    if (b->state == GW_BREAKER_CLOSED)
        trip(b, conf, now_us, 1, "health check failed");
}

long gw_breaker_parse_retry_after(const char *value)
{
    long s = 0;
    const char *p = value;

    if (p == NULL)
        return 0;
    while (*p == ' ')
        p++;
    if (*p < '0' || *p > '9')
        return 0;
    for (; *p >= '0' && *p <= '9'; p++) {
        s = s * 10 + (*p - '0');
        if (s > 3600)
            s = 3600;
    }
    while (*p == ' ')
        p++;
    if (*p != '\0')
        return 0;
    return s * 1000;
}
