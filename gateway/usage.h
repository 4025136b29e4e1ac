/*
 * usage.h - token usage from an OpenAI response body or stream chunk.
 */
#ifndef GW_USAGE_H
#define GW_USAGE_H

#include <stddef.h>

struct gw_usage {
    long prompt_tokens;     /* -1 when unknown */
    long completion_tokens; /* -1 when unknown */
    long total_tokens;      /* -1 when unknown */
};

void gw_usage_init(struct gw_usage *u);

/* Looks for a top-level-looking "usage": {...} object in the JSON text
 * and reads its counts into u. Only the usage object is parsed, not the
 * whole document. Returns 1 when found, 0 when absent or null. */
int gw_usage_find(const char *json, size_t len, struct gw_usage *u);

#endif
