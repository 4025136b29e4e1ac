/*
 * unit.c - quantity scanner and unit normaliser (see unit.h).
 *
 * Design: one table of unit spellings, each with its dimension and factor
 * to the dimension's base unit; the scanner tries the longest spelling
 * that follows a number. Matching is byte-wise on UTF-8 (the Chinese
 * spellings are whole code point sequences) and ASCII-case-insensitive.
 *
 * Choices worth knowing: 寸 is read as the inch (screen sizes are quoted
 * that way in e-commerce copy), 斤 is the market jin (500 g), 1 TB is
 * 1024 GB. "G" alone means gram, never gigabyte.
 *
 * Invariants: the scanner never reads past `len`, and every span it
 * reports starts and ends on a code point boundary.
 */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "evaluator/unit.h"

struct unit_spelling {
    const char *text;
    enum evl_dim dim;
    double factor;
};

/* Suffix spellings; longer spellings of a shared prefix come first. */
static const struct unit_spelling suffixes[] = {
    {"千克", EVL_DIM_MASS, 1000},    {"公斤", EVL_DIM_MASS, 1000},
    {"毫克", EVL_DIM_MASS, 0.001},   {"克", EVL_DIM_MASS, 1},
    {"斤", EVL_DIM_MASS, 500},       {"kg", EVL_DIM_MASS, 1000},
    {"mg", EVL_DIM_MASS, 0.001},     {"g", EVL_DIM_MASS, 1},
    {"毫升", EVL_DIM_VOLUME, 1},     {"升", EVL_DIM_VOLUME, 1000},
    {"ml", EVL_DIM_VOLUME, 1},       {"l", EVL_DIM_VOLUME, 1000},
    {"毫米", EVL_DIM_LENGTH, 1},     {"厘米", EVL_DIM_LENGTH, 10},
    {"公分", EVL_DIM_LENGTH, 10},    {"英寸", EVL_DIM_LENGTH, 25.4},
    {"寸", EVL_DIM_LENGTH, 25.4},    {"米", EVL_DIM_LENGTH, 1000},
    {"inches", EVL_DIM_LENGTH, 25.4}, {"inch", EVL_DIM_LENGTH, 25.4},
    {"mm", EVL_DIM_LENGTH, 1},       {"cm", EVL_DIM_LENGTH, 10},
    {"m", EVL_DIM_LENGTH, 1000},
    {"毫安时", EVL_DIM_CHARGE, 1},   {"毫安", EVL_DIM_CHARGE, 1},
    {"mah", EVL_DIM_CHARGE, 1},      {"ah", EVL_DIM_CHARGE, 1000},
    {"千瓦", EVL_DIM_POWER, 1000},   {"瓦", EVL_DIM_POWER, 1},
    {"kw", EVL_DIM_POWER, 1000},     {"w", EVL_DIM_POWER, 1},
    {"mb", EVL_DIM_STORAGE, 1.0 / 1024}, {"gb", EVL_DIM_STORAGE, 1},
    {"tb", EVL_DIM_STORAGE, 1024},
    {"元", EVL_DIM_MONEY, 1},        {"块", EVL_DIM_MONEY, 1},
    {"rmb", EVL_DIM_MONEY, 1},       {"yuan", EVL_DIM_MONEY, 1},
    {"小时", EVL_DIM_TIME, 3600},    {"分钟", EVL_DIM_TIME, 60},
    {"秒", EVL_DIM_TIME, 1},         {"天", EVL_DIM_TIME, 86400},
    {"hours", EVL_DIM_TIME, 3600},   {"hour", EVL_DIM_TIME, 3600},
    {"hrs", EVL_DIM_TIME, 3600},     {"hr", EVL_DIM_TIME, 3600},
    {"h", EVL_DIM_TIME, 3600},       {"minutes", EVL_DIM_TIME, 60},
    {"mins", EVL_DIM_TIME, 60},      {"min", EVL_DIM_TIME, 60},
    {"sec", EVL_DIM_TIME, 1},        {"days", EVL_DIM_TIME, 86400},
    {"%", EVL_DIM_PERCENT, 1},       {"％", EVL_DIM_PERCENT, 1},
};

/* Money prefixes: "¥199", "￥ 199", "RMB 199". */
static const char *const money_prefixes[] = {"¥", "￥", "rmb"};

#define N_SUFFIXES (sizeof(suffixes) / sizeof(suffixes[0]))
#define N_PREFIXES (sizeof(money_prefixes) / sizeof(money_prefixes[0]))

static const char *const dim_names[EVL_DIM_COUNT_] = {
    "none", "mass", "volume", "length", "charge", "power",
    "storage", "money", "time", "percent"};
static const char *const dim_bases[EVL_DIM_COUNT_] = {
    "", "g", "ml", "mm", "mAh", "W", "GB", "元", "s", "%"};

const char *evl_unit_dim_name(enum evl_dim dim)
{
    return (dim >= 0 && dim < EVL_DIM_COUNT_) ? dim_names[dim] : "none";
}

const char *evl_unit_base(enum evl_dim dim)
{
    return (dim >= 0 && dim < EVL_DIM_COUNT_) ? dim_bases[dim] : "";
}

static int is_alpha(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

/* Case-insensitive (ASCII) prefix test of `tok` at text[i..len). */
static size_t match_token(const char *text, size_t len, size_t i,
                          const char *tok)
{
    size_t n = strlen(tok), k;

    if (n > len - i)
        return 0;
    for (k = 0; k < n; k++) {
        unsigned char c = (unsigned char)text[i + k];
        if ((unsigned char)tolower(c) != (unsigned char)tok[k])
            return 0;
    }
    return n;
}

/*
 * Parse a number at text[i]: digits, optional ",ddd" groups, optional
 * ".d+". Returns bytes used (0 when none) and stores the value.
 */
static size_t parse_number(const char *text, size_t len, size_t i, double *v)
{
    char buf[64];
    size_t j = i, b = 0;

    while (j < len && is_digit((unsigned char)text[j])) {
        if (b < sizeof(buf) - 1)
            buf[b++] = text[j];
        j++;
        /* thousands group: exactly three digits after a comma */
        if (j + 3 < len && text[j] == ',' &&
            is_digit((unsigned char)text[j + 1]) &&
            is_digit((unsigned char)text[j + 2]) &&
            is_digit((unsigned char)text[j + 3]) &&
            (j + 4 >= len || !is_digit((unsigned char)text[j + 4])))
            j++;
    }
    if (j == i)
        return 0;
    if (j + 1 < len && text[j] == '.' && is_digit((unsigned char)text[j + 1])) {
        if (b < sizeof(buf) - 1)
            buf[b++] = '.';
        j++;
        while (j < len && is_digit((unsigned char)text[j])) {
            if (b < sizeof(buf) - 1)
                buf[b++] = text[j];
            j++;
        }
    }
    buf[b] = '\0';
    *v = strtod(buf, NULL);
    return j - i;
}

/* Longest suffix unit at text[i]; 0 when none. */
static size_t match_suffix(const char *text, size_t len, size_t i,
                           const struct unit_spelling **out)
{
    size_t k, best = 0;

    for (k = 0; k < N_SUFFIXES; k++) {
        size_t n = match_token(text, len, i, suffixes[k].text);
        if (n == 0 || n <= best)
            continue;
        /* an ASCII unit must end the word: "5 miles" is no length */
        if (is_alpha((unsigned char)suffixes[k].text[n - 1]) && i + n < len &&
            is_alpha((unsigned char)text[i + n]))
            continue;
        best = n;
        *out = &suffixes[k];
    }
    return best;
}

/*
 * Try a quantity starting at text[i]. Returns its end (exclusive) or 0.
 */
static size_t quantity_at(const char *text, size_t len, size_t i,
                          struct evl_quantity *q)
{
    const struct unit_spelling *u = NULL;
    size_t n, j, p, k;
    double v;

    /* money prefix */
    for (k = 0; k < N_PREFIXES; k++) {
        p = match_token(text, len, i, money_prefixes[k]);
        if (p == 0)
            continue;
        if (is_alpha((unsigned char)money_prefixes[k][0]) && i > 0 &&
            is_alpha((unsigned char)text[i - 1]))
            continue;
        j = i + p;
        if (j < len && text[j] == ' ')
            j++;
        if (j < len && is_digit((unsigned char)text[j]) &&
            (n = parse_number(text, len, j, &v)) > 0) {
            q->dim = EVL_DIM_MONEY;
            q->value = v;
            q->start = i;
            q->end = j + n;
            return q->end;
        }
    }
    if (!is_digit((unsigned char)text[i]))
        return 0;
    if (i > 0) {
        unsigned char c = (unsigned char)text[i - 1];
        if (is_alpha(c) || is_digit(c) || c == '.' || c == '-' || c == '_')
            return 0;
    }
    n = parse_number(text, len, i, &v);
    j = i + n;
    if (j < len && text[j] == ' ')
        j++;
    if (j >= len || (p = match_suffix(text, len, j, &u)) == 0)
        return 0;
    q->dim = u->dim;
    q->value = v * u->factor;
    q->start = i;
    q->end = j + p;
    return q->end;
}

size_t evl_unit_scan(const char *text, size_t len, struct evl_quantity *out,
                     size_t max)
{
    size_t i = 0, found = 0;
    struct evl_quantity q;

    while (i < len) {
        unsigned char c = (unsigned char)text[i];
        size_t end;
        /* only digits and the money prefixes' first bytes (¥ C2, ￥ EF, r)
         * can start a quantity: skip everything else cheaply */
        if (!is_digit(c) && c != 0xC2 && c != 0xEF && c != 'r' && c != 'R') {
            i++;
            continue;
        }
        end = quantity_at(text, len, i, &q);
        if (end > 0) {
            if (found < max)
                out[found] = q;
            found++;
            i = end;
            continue;
        }
        /* skip the rest of a number so "12345" is not tried at each digit */
        if (is_digit((unsigned char)text[i])) {
            while (i < len && (is_digit((unsigned char)text[i]) ||
                               text[i] == '.' || text[i] == ','))
                i++;
            continue;
        }
        i++;
    }
    return found;
}

int evl_unit_parse(const char *s, size_t len, struct evl_quantity *q)
{
    size_t a = 0, b = len, end;

    while (a < b && isspace((unsigned char)s[a]))
        a++;
    while (b > a && isspace((unsigned char)s[b - 1]))
        b--;
    if (a == b)
        return -1;
    end = quantity_at(s + a, b - a, 0, q);
    if (end != b - a)
        return -1;
    q->start = a;
    q->end = b;
    return 0;
}

int evl_unit_equal(const struct evl_quantity *a, const struct evl_quantity *b,
                   double rel_tol)
{
    double m;

    if (a->dim != b->dim)
        return 0;
    m = fmax(fabs(a->value), fabs(b->value));
    return fabs(a->value - b->value) <= rel_tol * m;
}

void evl_unit_format(const struct evl_quantity *q, char *buf, size_t size)
{
    if (size == 0)
        return;
    snprintf(buf, size, "%.10g %s", q->value, evl_unit_base(q->dim));
}
