/*
 * health.h - active health checks of backends (config "health_check").
 *
 * A backend with a health_check gets GET <url><path> every interval_ms;
 * an answer 2xx within timeout_ms passes, anything else fails. A failure
 * opens the backend's breaker, a pass closes it (breaker.c,
 * gw_breaker_health): backends come back without waiting for traffic to
 * probe them, and go out before traffic finds them dead.
 */
#ifndef GW_HEALTH_H
#define GW_HEALTH_H

struct gw_gateway;
struct gw_health;

/* NULL on failure. gw is borrowed and must outlive it. */
struct gw_health *gw_health_new(struct gw_gateway *gw);

/* Starts, re-times or stops the checks to match gw->config (call at start
 * and after each reload, once the config is attached to the states).
 * Returns 0, or -1 when out of memory (checks that could not start are
 * logged). */
int gw_health_apply(struct gw_health *h);

/* Stops every check (before gw_states_free) and frees. NULL: no-op. */
void gw_health_free(struct gw_health *h);

#endif
