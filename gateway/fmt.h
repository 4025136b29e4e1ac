/*
 * fmt.h - numbers and strings formatted on the request path without
 * printf: snprintf costs about a microsecond a call there (its format
 * parsing and FILE set-up), which is measurable at 20 us a request.
 */
#ifndef GW_FMT_H
#define GW_FMT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define GW_FMT_NUM 24 /* room for any 64-bit integer and its NUL */

/* v in decimal into out (GW_FMT_NUM bytes), NUL-terminated; returns the
 * length. */
static inline size_t gw_fmt_long(char *out, long v)
{
    char d[GW_FMT_NUM];
    size_t i = sizeof(d), n = 0;
    unsigned long u = v < 0 ? 0UL - (unsigned long)v : (unsigned long)v;

    do {
        d[--i] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        out[n++] = '-';
    memcpy(out + n, d + i, sizeof(d) - i);
    n += sizeof(d) - i;
    out[n] = '\0';
    return n;
}

/* v as 16 lowercase hex digits into out (17 bytes), NUL-terminated. */
static inline void gw_fmt_hex64(char *out, uint64_t v)
{
    static const char hex[] = "0123456789abcdef";

    for (int i = 15; i >= 0; i--, v >>= 4)
        out[i] = hex[v & 15];
    out[16] = '\0';
}

/* Copies src into dst of size bytes (> 0), truncating; always
 * NUL-terminated. Returns the length copied. */
static inline size_t gw_copy(char *dst, size_t size, const char *src)
{
    size_t n = strnlen(src, size - 1);

    memcpy(dst, src, n);
    dst[n] = '\0';
    return n;
}

#endif
