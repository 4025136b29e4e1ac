/*
 * breaker.h - a circuit breaker for one backend.
 *
 * Knows nothing of requests or config files: the caller tells it what each
 * attempt did (gw_breaker_record) and asks whether the backend may take one
 * more (gw_breaker_usable, gw_breaker_acquire). Times are gw_now_us()
 * microseconds, passed in so tests can drive the clock.
 *
 * Not thread-safe by itself: one caller at a time. In the gateway every
 * call is made under the backend state's lock (pool.c), whichever worker
 * makes it; only pool.c and the unit tests call these
 * (gw_breaker_parse_retry_after is pure: anyone may).
 */
#ifndef GW_BREAKER_H
#define GW_BREAKER_H

#include <stdint.h>

#define GW_BREAKER_MAX_WINDOW 60 /* seconds of the sliding error window */

enum gw_breaker_state {
    GW_BREAKER_CLOSED,
    GW_BREAKER_OPEN,
    GW_BREAKER_HALF_OPEN
};

/* What one attempt on the backend came to. */
enum gw_breaker_outcome {
    GW_BREAKER_OK,        /* an answer that says the backend works (<500) */
    GW_BREAKER_FAIL,      /* an error answer: 5xx, 429, broken stream */
    GW_BREAKER_DOWN,      /* no answer: connect error, reset, timeout */
    GW_BREAKER_NEUTRAL    /* nothing learnt (the client left) */
};

struct gw_breaker_conf {
    int failures;       /* consecutive failures that open it; 0: off */
    int error_rate_pct; /* error rate over the window that opens it; 0: off */
    int min_requests;   /* attempts in the window before the rate counts */
    int window_s;       /* 1..GW_BREAKER_MAX_WINDOW */
    long cooldown_ms;   /* first open; doubles on each trip in a row */
    long max_cooldown_ms;
    int probes;         /* attempts let through at once when half-open */
};

struct gw_breaker {
    const char *name; /* borrowed: the backend's name, for log lines */
    enum gw_breaker_state state;
    int consecutive;     /* failures in a row */
    int trips;           /* opens since the last close */
    int probes_inflight; /* half-open attempts not yet recorded */
    int down;            /* opened by DOWN outcomes: truly unreachable */
    int told;            /* opened by a Retry-After: never cut short */
    int64_t open_until_us;
    unsigned long opens; /* times it opened, for /admin/backends */
    unsigned long transitions[3]; /* changes into each state (metrics) */
    struct {
        int64_t sec;
        uint32_t ok, fail;
    } win[GW_BREAKER_MAX_WINDOW];
};

/* The defaults every backend gets unless its config says otherwise. */
void gw_breaker_conf_default(struct gw_breaker_conf *conf);

/* A closed breaker. name is borrowed and must outlive it. */
void gw_breaker_init(struct gw_breaker *b, const char *name);

/* 1 when an attempt may go to the backend now: closed, or open with its
 * cool-down over or half-open, with a probe slot free. Changes nothing. */
int gw_breaker_usable(const struct gw_breaker *b,
                      const struct gw_breaker_conf *conf, int64_t now_us);

/* Takes the backend for one attempt (after gw_breaker_usable said yes).
 * Returns 1 when the attempt is a half-open probe: pass it back to
 * gw_breaker_record. */
int gw_breaker_acquire(struct gw_breaker *b,
                       const struct gw_breaker_conf *conf, int64_t now_us);

/* 1 when the breaker is open for answered errors only (not unreachable,
 * not told by Retry-After): a pool with nothing else may probe it early so
 * that a blip on every backend does not eject them all. */
int gw_breaker_can_force(const struct gw_breaker *b);

/* Moves such a breaker to half-open at once (see gw_breaker_can_force). */
void gw_breaker_force_probe(struct gw_breaker *b, int64_t now_us);

/* Records the end of an attempt. probe: what gw_breaker_acquire returned.
 * retry_after_ms > 0 (a 429 or 503 that said Retry-After) opens the breaker
 * for exactly that long. */
void gw_breaker_record(struct gw_breaker *b,
                       const struct gw_breaker_conf *conf, int64_t now_us,
                       int probe, enum gw_breaker_outcome outcome,
                       long retry_after_ms);

/* A health check's verdict: a pass closes an open breaker (unless a
 * Retry-After still holds it), a failure opens a closed one. */
void gw_breaker_health(struct gw_breaker *b,
                       const struct gw_breaker_conf *conf, int64_t now_us,
                       int healthy);

/* Attempts and failures in the window ending at now_us. */
void gw_breaker_window(const struct gw_breaker *b,
                       const struct gw_breaker_conf *conf, int64_t now_us,
                       unsigned long *attempts, unsigned long *failures);

const char *gw_breaker_state_name(enum gw_breaker_state s);

/* Retry-After header value -> milliseconds: delta seconds only (an
 * HTTP-date is ignored: 0), capped at one hour. */
long gw_breaker_parse_retry_after(const char *value);

#endif
