/*
 * test_reg_render.c - templates: variable extraction and rendering edge
 * cases (missing variables, braces in values, UTF-8, value types).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>
#include "tests/unit/test_reg_util.h"

/* render one user message `tpl` with `vars_json`; returns content or NULL */
static char *render1(const char *tpl, const char *vars_json, char **err)
{
    json_t *msgs = json_pack("[{ssss}]", "role", "user", "content", tpl);
    json_t *vars = vars_json ? json_loads(vars_json, 0, NULL) : NULL;
    json_t *out = NULL;
    char *s = NULL;

    if (reg_render_messages(msgs, vars, &out, err) == 0) {
        assert_string_equal(json_string_value(json_object_get(json_array_get(out, 0),
                                                              "role")), "user");
        s = strdup(json_string_value(json_object_get(json_array_get(out, 0), "content")));
    }
    json_decref(out);
    json_decref(msgs);
    json_decref(vars);
    return s;
}

static void expect(const char *tpl, const char *vars, const char *want)
{
    char *err = NULL, *got = render1(tpl, vars, &err);

    if (got == NULL)
        fail_msg("render '%s': %s", tpl, err);
    assert_string_equal(got, want);
    free(got);
}

static void test_basic(void **state)
{
    (void)state;
    expect("Hello {{name}}!", "{\"name\": \"Ada\"}", "Hello Ada!");
    expect("{{ name }} and {{name}}", "{\"name\": \"x\"}", "x and x");
    expect("no variables", NULL, "no variables");
    expect("", "{}", "");
    expect("{{a}}{{b}}", "{\"a\": \"1\", \"b\": \"2\"}", "12");
}

static void test_missing_variable_named(void **state)
{
    char *err = NULL;

    (void)state;
    assert_null(render1("Hi {{first}} {{product_name}}", "{\"first\": \"x\"}", &err));
    assert_string_equal(err, "missing variable 'product_name'");
    free(err);
    err = NULL;
    assert_null(render1("Hi {{who}}", NULL, &err));
    assert_string_equal(err, "missing variable 'who'");
    free(err);
}

static void test_no_injection(void **state)
{
    (void)state;
    /* a value that looks like a placeholder stays literal */
    expect("A {{a}} B {{b}}", "{\"a\": \"{{b}}\", \"b\": \"bee\"}", "A {{b}} B bee");
    expect("{{a}}", "{\"a\": \"}} {{ {{{a}}}\"}", "}} {{ {{{a}}}");
}

static void test_literal_braces(void **state)
{
    (void)state;
    expect("{{not a var}} {{x", "{}", "{{not a var}} {{x");
    expect("{{{x}}}", "{\"x\": \"v\"}", "{v}");
    expect("{ {x} }", "{}", "{ {x} }");
    expect("{{1abc}}", "{}", "{{1abc}}");
    expect("json: {\"k\": {{v}}}", "{\"v\": 3}", "json: {\"k\": 3}");
}

static void test_utf8(void **state)
{
    (void)state;
    expect("Beschreibe {{produkt}} – bitte", "{\"produkt\": \"Käsereibe 🧀\"}",
           "Beschreibe Käsereibe 🧀 – bitte");
    expect("日本語 {{x}}", "{\"x\": \"テスト\"}", "日本語 テスト");
}

static void test_value_types(void **state)
{
    char *err = NULL;

    (void)state;
    expect("{{n}} {{f}} {{t}} {{no}}", "{\"n\": 42, \"f\": 0.5, \"t\": true, \"no\": false}",
           "42 0.5 true false");
    assert_null(render1("{{x}}", "{\"x\": null}", &err));
    assert_non_null(strstr(err, "'x' must be a string, number or boolean"));
    free(err);
    err = NULL;
    assert_null(render1("{{x}}", "{\"x\": [1]}", &err));
    free(err);
}

static void test_variables_list(void **state)
{
    json_t *msgs = json_pack("[{ssss}{ssss}]", "role", "system", "content",
                             "{{b}} then {{ a }} then {{b}}", "role", "user",
                             "content", "{{c}} {{a}} {{ bad name }}");
    json_t *vars = reg_template_variables(msgs, NULL);

    (void)state;
    assert_non_null(vars);
    assert_int_equal(json_array_size(vars), 3);
    assert_string_equal(json_string_value(json_array_get(vars, 0)), "b");
    assert_string_equal(json_string_value(json_array_get(vars, 1)), "a");
    assert_string_equal(json_string_value(json_array_get(vars, 2)), "c");
    json_decref(vars);
    json_decref(msgs);
}

static void test_keeps_other_keys_and_rejects_bad_vars(void **state)
{
    json_t *msgs = json_pack("[{ssssss}]", "role", "user", "name", "bob",
                             "content", "{{x}}");
    json_t *vars = json_pack("[]"), *out = NULL;
    char *err = NULL;

    (void)state;
    assert_int_equal(reg_render_messages(msgs, vars, &out, &err), -1);
    assert_string_equal(err, "variables must be a JSON object");
    free(err);
    json_decref(vars);
    vars = json_pack("{ss}", "x", "y");
    assert_int_equal(reg_render_messages(msgs, vars, &out, NULL), 0);
    assert_string_equal(json_string_value(json_object_get(json_array_get(out, 0), "name")), "bob");
    json_decref(out);
    json_decref(vars);
    json_decref(msgs);
}

/* reg_render_json's variable: v = "值", as the raw JSON string text */
static int lookup_v(void *arg, const char *name, struct reg_value *out)
{
    (void)arg;
    if (strcmp(name, "v") != 0)
        return -1;
    out->type = REG_VALUE_STRING;
    out->text = "\xe5\x80\xbc";
    out->len = 3;
    return 0;
}

static int emit_buf(void *arg, const char *data, size_t len)
{
    char *b = arg;
    size_t n = strlen(b);

    if (n + len >= 512)
        return -1;
    memcpy(b + n, data, len);
    b[n + len] = '\0';
    return 0;
}

/* The gateway's way, reg_tpl_render_vals (v's variables are ["v"]), gives
 * reg_render_json's text. */
static void same_in_buf(const struct reg_version *v, const char *want)
{
    struct reg_tpl *t = reg_tpl_compile(v);
    struct reg_value val;
    struct reg_buf b = {0};
    char *err = NULL;

    assert_non_null(t);
    assert_int_equal(lookup_v(NULL, "v", &val), 0);
    assert_int_equal(reg_tpl_render_vals(t, &val, 1, &b, &err), 0);
    assert_int_equal(b.len, strlen(want));
    assert_memory_equal(b.p, want, b.len);
    free(b.p);
    reg_tpl_free(t);
}

/* reg_tpl_render_vals takes each value by its variable's place, and its
 * errors are reg_render_json's. */
static void test_render_vals(void **state)
{
    char content[] = "{{b}}-{{a}}-{{b}}", name[] = "p";
    struct reg_message m = {.role = "user", .content = content,
                            .content_len = strlen(content)};
    json_t *names = json_pack("[ss]", "b", "a");
    struct reg_version v = {.prompt = name, .version = 1, .n_messages = 1,
                            .messages = &m, .variables = names};
    struct reg_value vals[2] = {{REG_VALUE_STRING, "B", 1},
                                {REG_VALUE_NUMBER, "1e2", 3}};
    struct reg_tpl *t = reg_tpl_compile(&v);
    struct reg_buf b = {0};
    char *err = NULL;

    (void)state;
    assert_non_null(t);
    assert_int_equal(reg_tpl_render_vals(t, vals, 2, &b, &err), 0);
    assert_string_equal(b.p, "[{\"role\":\"user\",\"content\":\"B-100-B\"}]");
    b.len = 0;
    vals[1].type = REG_VALUE_NONE;
    assert_int_equal(reg_tpl_render_vals(t, vals, 2, &b, &err), -1);
    assert_string_equal(err, "missing variable 'a'");
    free(err);
    err = NULL;
    vals[1] = (struct reg_value){REG_VALUE_OTHER, "[1]", 3};
    assert_int_equal(reg_tpl_render_vals(t, vals, 2, &b, &err), -1);
    assert_string_equal(err, "variable 'a' must be a string, number or "
                             "boolean");
    free(err);
    err = NULL;
    /* fewer values than variables: the rest are absent */
    assert_int_equal(reg_tpl_render_vals(t, vals, 1, &b, &err), -1);
    assert_string_equal(err, "missing variable 'a'");
    free(err);
    free(b.p);
    reg_tpl_free(t);
    json_decref(names);
}

/* reg_render_json skips text with nothing to escape a word at a time: a
 * character to escape at every offset around the word boundaries, between
 * ASCII and CJK text, must come out escaped and everything else verbatim
 * (parsed back by jansson). */
static void test_render_json_escapes(void **state)
{
    static const char *const specials[] = {"\"", "\\", "\n", "\t", "\x01",
                                           "\x1f", "{", "}"};
    static const char *const fills[] = {"a", "\xe4\xb8\xad"}; /* a, 中 */
    char tpl[256], want[256 + 8], out[512], *err = NULL;
    char name[] = "p";
    struct reg_message m = {.role = "user"};
    struct reg_version v = {.prompt = name, .version = 1, .n_messages = 1,
                            .messages = &m};
    size_t off, si, fi, k;

    (void)state;
    v.variables = json_pack("[s]", "v");
    for (fi = 0; fi < 2; fi++)
        for (si = 0; si < sizeof(specials) / sizeof(specials[0]); si++)
            for (off = 0; off < 20; off++) {
                tpl[0] = '\0';
                for (k = 0; k < off; k++)
                    strcat(tpl, fills[fi]);
                strcat(tpl, specials[si]);
                for (k = 0; k < 20 - off; k++)
                    strcat(tpl, fills[fi]);
                /* the expected content: the same text, the variable as 值 */
                snprintf(want, sizeof(want), "%s\xe5\x80\xbc", tpl);
                strcat(tpl, "{{v}}");
                m.content = tpl;
                m.content_len = strlen(tpl);
                out[0] = '\0';
                assert_int_equal(reg_render_json(&v, lookup_v, NULL, emit_buf,
                                                 out, &err), 0);
                same_in_buf(&v, out);
                json_t *j = json_loads(out, 0, NULL);
                if (j == NULL)
                    fail_msg("not JSON: %s", out);
                assert_string_equal(json_string_value(json_object_get(
                                        json_array_get(j, 0), "content")),
                                    want);
                json_decref(j);
            }
    json_decref(v.variables);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_basic),
        cmocka_unit_test(test_missing_variable_named),
        cmocka_unit_test(test_no_injection),
        cmocka_unit_test(test_literal_braces),
        cmocka_unit_test(test_utf8),
        cmocka_unit_test(test_value_types),
        cmocka_unit_test(test_variables_list),
        cmocka_unit_test(test_keeps_other_keys_and_rejects_bad_vars),
        cmocka_unit_test(test_render_json_escapes),
        cmocka_unit_test(test_render_vals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
