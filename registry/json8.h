/*
 * json8.h - JSON string bytes eight at a time, for the loops that copy or
 * skip text until something in it needs a look: the gateway's scanner
 * (gateway/jscan.c), the template renderer (render.c) and the exposure
 * writer's escaper (exposure.c).
 *
 * Each function takes eight bytes as a little-endian word and returns a
 * mask with the high bit of a byte set for (at least) the first byte of
 * the kind it names, and 0 when none is there: the lowest set bit marks
 * the first such byte exactly (HASZERO's borrows only make false marks
 * above a true one; "Bit Twiddling Hacks", haszero and hasless). Callers
 * that only ask "is there one" test for nonzero; callers that find it
 * take __builtin_ctzll(mask) >> 3.
 */
#ifndef REGISTRY_JSON8_H
#define REGISTRY_JSON8_H

#include <stdint.h>

#define JSON8_ONES  0x0101010101010101ULL
#define JSON8_HIGHS 0x8080808080808080ULL

/* some byte of w is zero */
static inline uint64_t json8_haszero(uint64_t w)
{
    return (w - JSON8_ONES) & ~w & JSON8_HIGHS;
}

/* a quote or a backslash: the bytes that end a run in checked text */
static inline uint64_t json8_quote(uint64_t w)
{
    return json8_haszero(w ^ ('"' * JSON8_ONES)) |
           json8_haszero(w ^ ('\\' * JSON8_ONES));
}

/* a quote, a backslash or a control byte: what a JSON string must escape
 * (bytes from 0x80 are not marked) */
static inline uint64_t json8_escape(uint64_t w)
{
    return ((w - 0x20 * JSON8_ONES) & ~w & JSON8_HIGHS) | json8_quote(w);
}

/* json8_escape's bytes and every byte from 0x80 (UTF-8 to check) */
static inline uint64_t json8_special(uint64_t w)
{
    return json8_escape(w) | (w & JSON8_HIGHS);
}

#endif
