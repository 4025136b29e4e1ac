/*
 * fault.c: parse and print mockllm fault specifications.
 *
 * A SPEC is "item[,item]...", each item "name=value" or a bare "hang" /
 * "reset"; blanks around items are ignored, so are empty items.  Every
 * value is a decimal integer within a fixed range, so that a typo never
 * turns into a silent no-op: an unknown name or an out-of-range value is
 * an error naming the item.
 *
 * Invariant: mock_fault_parse() either fills the whole struct or leaves it
 * as "no fault"; a half-applied spec never exists.
 */
#include "contrib/mockllm/fault.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void
mock_fault_init(struct mock_fault *f)
{
    f->status = 0;
    f->retry_after = -1;
    f->delay_ms = 0;
    f->close_after_chunks = -1;
    f->hang = 0;
    f->reset = 0;
    f->tokens = -1;
    f->token_delay_ms = -1;
    f->error_after_chunks = -1;
    f->count = -1;
}

int
mock_fault_active(const struct mock_fault *f)
{
    return f->status || f->retry_after >= 0 || f->delay_ms > 0 ||
           f->close_after_chunks >= 0 || f->hang || f->reset ||
           f->tokens >= 0 || f->token_delay_ms >= 0 ||
           f->error_after_chunks >= 0;
}

/* Parse a decimal integer that fills [s, s+len) and lies in [lo, hi]. */
static int
parse_int(const char *s, size_t len, long lo, long hi, long *out)
{
    char buf[24];
    char *end;
    long v;

    if (len == 0 || len >= sizeof(buf))
        return -1;
    memcpy(buf, s, len);
    buf[len] = '\0';
    if (!isdigit((unsigned char)buf[0]))
        return -1;
    errno = 0;
    v = strtol(buf, &end, 10);
    if (errno || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

struct item_def {
    const char *name;
    long lo, hi;
    const char *what;
};

static const struct item_def items[] = {
    {"status", 400, 599, "an HTTP status 400..599"},
    {"retry-after", 0, 86400, "seconds 0..86400"},
    {"delay-ms", 0, 600000, "milliseconds 0..600000"},
    {"close-after-chunks", 0, 1000000, "a chunk count 0..1000000"},
    {"tokens", 0, 1000000, "a token count 0..1000000"},
    {"token-delay-ms", 0, 60000, "milliseconds 0..60000"},
    {"count", 1, 1000000000, "a request count 1..1000000000"},
    {"error-after-chunks", 0, 1000000, "a chunk count 0..1000000"},
};

static int
fail(char *err, size_t errlen, const char *item, size_t ilen, const char *why)
{
    if (ilen > 64)
        ilen = 64;
    snprintf(err, errlen, "bad fault item '%.*s': %s", (int)ilen, item, why);
    return -1;
}

int
mock_fault_parse(struct mock_fault *out, const char *spec, size_t len,
                 int allow_count, char *err, size_t errlen)
{
    struct mock_fault f;
    const char *p = spec, *end = spec + len;

    mock_fault_init(out);
    mock_fault_init(&f);
    if (len > MOCK_FAULT_SPEC_MAX) {
        snprintf(err, errlen, "fault spec too long: %zu bytes (limit %d)",
                 len, MOCK_FAULT_SPEC_MAX);
        return -1;
    }
    while (p < end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *ie = comma ? comma : end;
        const char *is = p, *eq;
        size_t nlen, ilen;
        long v;
        size_t i;

        p = comma ? comma + 1 : end;
        while (is < ie && isspace((unsigned char)*is))
            is++;
        while (ie > is && isspace((unsigned char)ie[-1]))
            ie--;
        ilen = (size_t)(ie - is);
        if (ilen == 0)
            continue;
        if (ilen == 4 && memcmp(is, "hang", 4) == 0) {
            f.hang = 1;
            continue;
        }
        if (ilen == 5 && memcmp(is, "reset", 5) == 0) {
            f.reset = 1;
            continue;
        }
        eq = memchr(is, '=', ilen);
        nlen = eq ? (size_t)(eq - is) : ilen;
        for (i = 0; i < sizeof(items) / sizeof(items[0]); i++)
            if (strlen(items[i].name) == nlen && memcmp(items[i].name, is, nlen) == 0)
                break;
        if (i == sizeof(items) / sizeof(items[0]))
            return fail(err, errlen, is, ilen,
                        "unknown name (known: status, retry-after, delay-ms, "
                        "close-after-chunks, hang, reset, tokens, token-delay-ms, count, "
                        "error-after-chunks)");
        if (!eq)
            return fail(err, errlen, is, ilen, "expected name=value");
        if (parse_int(eq + 1, (size_t)(ie - eq - 1), items[i].lo, items[i].hi, &v) < 0) {
            char why[96];
            snprintf(why, sizeof(why), "expected %s", items[i].what);
            return fail(err, errlen, is, ilen, why);
        }
        switch (i) {
        case 0: f.status = (int)v; break;
        case 1: f.retry_after = (int)v; break;
        case 2: f.delay_ms = (int)v; break;
        case 3: f.close_after_chunks = (int)v; break;
        case 4: f.tokens = (int)v; break;
        case 5: f.token_delay_ms = (int)v; break;
        case 7: f.error_after_chunks = (int)v; break;
        default:
            if (!allow_count)
                return fail(err, errlen, is, ilen,
                            "count is only accepted by POST /_mock/fault");
            f.count = v;
            break;
        }
    }
    *out = f;
    return 0;
}

void
mock_fault_format(const struct mock_fault *f, char *buf, size_t len)
{
    size_t off = 0;

#define ADD(...)                                                        \
    do {                                                                \
        int n_ = snprintf(buf + off, len - off, "%s", off ? "," : "");  \
        if (n_ > 0 && (size_t)n_ < len - off)                           \
            off += (size_t)n_;                                          \
        n_ = snprintf(buf + off, len - off, __VA_ARGS__);               \
        if (n_ > 0 && (size_t)n_ < len - off)                           \
            off += (size_t)n_;                                          \
    } while (0)

    if (len == 0)
        return;
    buf[0] = '\0';
    if (f->status)
        ADD("status=%d", f->status);
    if (f->retry_after >= 0)
        ADD("retry-after=%d", f->retry_after);
    if (f->delay_ms > 0)
        ADD("delay-ms=%d", f->delay_ms);
    if (f->close_after_chunks >= 0)
        ADD("close-after-chunks=%d", f->close_after_chunks);
    if (f->hang)
        ADD("hang");
    if (f->reset)
        ADD("reset");
    if (f->tokens >= 0)
        ADD("tokens=%d", f->tokens);
    if (f->token_delay_ms >= 0)
        ADD("token-delay-ms=%d", f->token_delay_ms);
    if (f->error_after_chunks >= 0)
        ADD("error-after-chunks=%d", f->error_after_chunks);
#undef ADD
}
