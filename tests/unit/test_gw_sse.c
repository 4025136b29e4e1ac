/* Unit tests of gateway/sse.c: event framing however bytes are split. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "gateway/sse.h"
#include "gateway/usage.h"

struct seen {
    int n;
    char data[16][128];
    char name[16][32];
    size_t raw_total;
};

static int on_event(void *arg, const struct gw_sse_event *ev)
{
    struct seen *s = arg;
    if (s->n < 16) {
        snprintf(s->data[s->n], sizeof(s->data[0]), "%.*s",
                 (int)ev->data_len, ev->data);
        snprintf(s->name[s->n], sizeof(s->name[0]), "%.*s",
                 (int)ev->name_len, ev->name ? ev->name : "");
    }
    s->n++;
    s->raw_total += ev->raw_len;
    return 0;
}

static const char stream[] =
    "data: {\"a\":1}\n\n"
    ": a comment\n\n"
    "event: ping\r\ndata: x\r\n\r\n"
    "data: line1\ndata: line2\n\n"
    "data:nospace\r\rdata: [DONE]\n\n";

static void check(struct seen *s)
{
    assert_int_equal(s->n, 6);
    assert_string_equal(s->data[0], "{\"a\":1}");
    assert_string_equal(s->data[1], "");
    assert_string_equal(s->name[2], "ping");
    assert_string_equal(s->data[2], "x");
    assert_string_equal(s->data[3], "line1\nline2");
    assert_string_equal(s->data[4], "nospace");
    assert_string_equal(s->data[5], "[DONE]");
    assert_int_equal(s->raw_total, sizeof(stream) - 1);
}

static void test_whole(void **state)
{
    struct gw_sse p;
    struct seen s = {0};

    (void)state;
    gw_sse_init(&p, 1024);
    assert_int_equal(gw_sse_feed(&p, stream, sizeof(stream) - 1, on_event,
                                 &s), 0);
    check(&s);
    assert_true(p.done);
    assert_int_equal(gw_sse_pending(&p), 0);
    gw_sse_release(&p);
}

static void test_every_split(void **state)
{
    size_t n = sizeof(stream) - 1, i, j;

    (void)state;
    /* one byte at a time */
    {
        struct gw_sse p;
        struct seen s = {0};
        gw_sse_init(&p, 1024);
        for (i = 0; i < n; i++)
            assert_int_equal(gw_sse_feed(&p, stream + i, 1, on_event, &s), 0);
        check(&s);
        gw_sse_release(&p);
    }
    /* every split into three pieces */
    for (i = 0; i <= n; i++)
        for (j = i; j <= n; j++) {
            struct gw_sse p;
            struct seen s = {0};
            gw_sse_init(&p, 1024);
            gw_sse_feed(&p, stream, i, on_event, &s);
            gw_sse_feed(&p, stream + i, j - i, on_event, &s);
            gw_sse_feed(&p, stream + j, n - j, on_event, &s);
            check(&s);
            gw_sse_release(&p);
        }
}

static void test_incomplete_and_limit(void **state)
{
    struct gw_sse p;
    struct seen s = {0};
    char big[200];

    (void)state;
    gw_sse_init(&p, 64);
    assert_int_equal(gw_sse_feed(&p, "data: partial", 13, on_event, &s), 0);
    assert_int_equal(s.n, 0);
    assert_int_equal(gw_sse_pending(&p), 13);
    assert_false(p.done);
    memset(big, 'x', sizeof(big));
    assert_int_equal(gw_sse_feed(&p, big, sizeof(big), on_event, &s), -1);
    gw_sse_release(&p);
}

static void test_usage(void **state)
{
    struct gw_usage u;
    const char body[] =
        "{\"id\":\"x\",\"choices\":[{\"message\":{\"content\":\"the \\\"usage\\\" "
        "word\"}}],\"usage\": {\"prompt_tokens\": 86, \"completion_tokens\": "
        "48, \"total_tokens\": 134, \"prompt_tokens_details\": {}}}";

    (void)state;
    gw_usage_init(&u);
    assert_int_equal(gw_usage_find(body, sizeof(body) - 1, &u), 1);
    assert_int_equal(u.prompt_tokens, 86);
    assert_int_equal(u.completion_tokens, 48);
    assert_int_equal(u.total_tokens, 134);
    gw_usage_init(&u);
    assert_int_equal(gw_usage_find("{\"usage\":null}", 14, &u), 0);
    assert_int_equal(u.total_tokens, -1);
    assert_int_equal(gw_usage_find("{\"a\":1}", 7, &u), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_whole),
        cmocka_unit_test(test_every_split),
        cmocka_unit_test(test_incomplete_and_limit),
        cmocka_unit_test(test_usage),
    };
    return cmocka_run_group_tests_name("gw_sse", tests, NULL, NULL);
}
