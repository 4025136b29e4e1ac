/*
 * unit.h - quantities with units in product copy and facts: find them in
 * UTF-8 text, normalise them to one base unit per dimension across metric,
 * imperial, Chinese and English spellings, and compare them.
 */
#ifndef EVL_UNIT_H
#define EVL_UNIT_H

#include <stddef.h>

enum evl_dim {
    EVL_DIM_NONE = 0,
    EVL_DIM_MASS,     /* base g:   g kg mg 克 千克 公斤 斤 毫克 */
    EVL_DIM_VOLUME,   /* base ml:  ml l 毫升 升 */
    EVL_DIM_LENGTH,   /* base mm:  mm cm m 毫米 厘米 公分 米 英寸 寸 inch */
    EVL_DIM_CHARGE,   /* base mAh: mAh Ah 毫安 毫安时 */
    EVL_DIM_POWER,    /* base W:   W kW 瓦 千瓦 */
    EVL_DIM_STORAGE,  /* base GB:  MB GB TB (1 TB = 1024 GB) */
    EVL_DIM_MONEY,    /* base 元:  元 块 RMB yuan, prefixes ¥ ￥ RMB */
    EVL_DIM_TIME,     /* base s:   秒 s sec 分钟 min 小时 h hr hours 天 days */
    EVL_DIM_PERCENT,  /* base %:   % ％ */
    EVL_DIM_COUNT_
};

struct evl_quantity {
    enum evl_dim dim;
    double value;            /* in the dimension's base unit */
    size_t start, end;       /* byte span in the scanned text */
};

/* The name of a dimension ("mass") and its base unit ("g"). */
const char *evl_unit_dim_name(enum evl_dim dim);
const char *evl_unit_base(enum evl_dim dim);

/*
 * Parse a whole fact value such as "1.2kg", "5000 mAh", "¥199" or "95%"
 * (surrounding spaces allowed, nothing else). Returns 0 and fills `q`, or
 * -1 when the string is not exactly one quantity with a known unit.
 */
int evl_unit_parse(const char *s, size_t len, struct evl_quantity *q);

/*
 * Find quantities in `text` (UTF-8, `len` bytes): a number (digits, an
 * optional decimal part, "," thousands groups) not glued to a preceding
 * letter or digit, then at most one space and a unit; or a money prefix
 * then a number. An ASCII unit must not run into further letters ("5 min"
 * is time, "5 mins" too, "5 miles" is nothing). Writes up to `max` into
 * `out` and returns how many it found (all of them, even beyond max).
 */
size_t evl_unit_scan(const char *text, size_t len, struct evl_quantity *out,
                     size_t max);

/* 1 when a and b have one dimension and differ by at most rel_tol. */
int evl_unit_equal(const struct evl_quantity *a, const struct evl_quantity *b,
                   double rel_tol);

/* Format "1200 g" into buf (always NUL-terminated). */
void evl_unit_format(const struct evl_quantity *q, char *buf, size_t size);

#endif
