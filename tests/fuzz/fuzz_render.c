/*
 * fuzz_render.c - libFuzzer target: the registry's template renderer
 * (registry/render.c) from a publish file to rendered messages.
 *
 * The input is a publish file (what `promptctl publish` reads: JSON
 * {"messages", "params"} or plain text), a NUL byte, then a JSON object of
 * variables. The file goes through reg_content_parse and
 * reg_template_variables; the messages through reg_message_decode, as a
 * snapshot stores them. The version is then rendered both ways:
 *  - reg_render, with the variables as a jansson tree (promptctl render);
 *  - reg_render_json, with the variables as spans of the text found by
 *    gw_jscan and looked up by the gateway's own gw_prompt_lookup_var;
 *  - reg_tpl_render_vals on the compiled template, the same spans as
 *    values by place (the gateway's request path, gateway/prompt.c).
 * registry.h promises the same result and the same errors: all must
 * succeed or fail together, the JSON texts must be the same bytes, and
 * they must parse to the tree.
 */
#include "gateway/jscan.h"
#include "gateway/prompt.h"
#include "registry/internal.h"
#include "registry/registry.h"

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct vars {
    struct gw_jscan_field f[REG_VARIABLES_MAX];
    size_t n;
};

static void fail(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz_render: %s: %s\n", what, detail ? detail : "");
    abort();
}

static char prompt_name[] = "fuzz";

/* reg_tpl_render_vals gives reg_render_json's result rc: its text o, or
 * its error err */
static void check_vals(const struct reg_version *v, const struct vars *vars,
                       int rc, const struct reg_buf *o, const char *err)
{
    static struct reg_value vals[REG_VARIABLES_MAX];
    struct reg_tpl *t = reg_tpl_compile(v);
    struct reg_buf b = {0};
    char *e = NULL;
    size_t i;

    if (t == NULL)
        fail("reg_tpl_compile", "out of memory");
    for (i = 0; i < vars->n; i++) {
        struct gw_prompt_vars one = {(struct gw_jscan_field *)&vars->f[i], 1};
        if (gw_prompt_lookup_var(&one, vars->f[i].key, &vals[i]) < 0)
            vals[i].type = REG_VALUE_NONE;
    }
    if (reg_tpl_render_vals(t, vals, vars->n, &b, &e) != rc)
        fail("reg_tpl_render_vals and reg_render_json disagree", e);
    if (rc == 0 && (b.len != o->len || memcmp(b.p, o->p, b.len) != 0))
        fail("reg_tpl_render_vals wrote other bytes", NULL);
    if (rc < 0 && (e == NULL || err == NULL || strcmp(e, err) != 0))
        fail("reg_tpl_render_vals gave another error", e);
    free(e);
    free(b.p);
    reg_tpl_free(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data, *sep;
    size_t tlen, vlen, i;
    json_t *messages = NULL, *params = NULL, *names = NULL, *vtree = NULL;
    json_t *tree = NULL, *parsed = NULL;
    struct reg_version v;
    struct vars vars;
    struct gw_prompt_vars pv;
    struct reg_buf o = {0};
    json_error_t e;
    char *dump = NULL, *err1 = NULL, *err2 = NULL, *err = NULL, jerr[256];
    int rc1, rc2;

    sep = memchr(text, '\0', size);
    tlen = sep ? (size_t)(sep - text) : size;
    vlen = sep ? size - tlen - 1 : 0;
    memset(&v, 0, sizeof(v));

    if (reg_content_parse(text, tlen, &messages, &params, &err) < 0) {
        if (err == NULL || *err == '\0')
            fail("reg_content_parse failed without a message", NULL);
        goto done;
    }
    if (!json_is_array(messages) || json_array_size(messages) == 0 ||
        (params != NULL && !json_is_object(params)))
        fail("reg_content_parse accepted a bad shape", NULL);
    if ((names = reg_template_variables(messages, &err)) == NULL)
        goto done;
    /* the messages as a snapshot holds them */
    dump = json_dumps(messages, JSON_COMPACT);
    if (dump == NULL)
        goto done;
    v.messages = reg_message_decode(dump, strlen(dump), &v.n_messages, &err);
    if (v.messages == NULL)
        fail("reg_message_decode refused reg_content_parse's messages", err);
    v.prompt = prompt_name;
    v.version = 1;
    v.variables = names;

    /* the variables, both ways; a text jscan refuses is not a request */
    memset(&vars, 0, sizeof(vars));
    vars.n = json_array_size(names);
    if (vars.n > REG_VARIABLES_MAX)
        fail("more variables than REG_VARIABLES_MAX", NULL);
    for (i = 0; i < vars.n; i++)
        vars.f[i].key = json_string_value(json_array_get(names, i));
    if (gw_jscan(vlen ? sep + 1 : "{}", vlen ? vlen : 2, 64, vars.f, vars.n,
                 jerr, sizeof(jerr)) < 0)
        goto done;
    vtree = json_loadb(vlen ? sep + 1 : "{}", vlen ? vlen : 2,
                       JSON_REJECT_DUPLICATES, &e);
    if (vtree == NULL)
        goto done; /* numbers out of jansson's range, \u0000, duplicates */

    rc1 = reg_render(&v, vtree, &tree, &err1);
    pv.f = vars.f;
    pv.n = vars.n;
    rc2 = reg_render_json(&v, gw_prompt_lookup_var, &pv, reg_buf_emit, &o, &err2);
    if (rc1 != rc2) {
        fprintf(stderr, "reg_render: %s\nreg_render_json: %s\n",
                rc1 ? err1 : "ok", rc2 ? err2 : "ok");
        fail("the two renderers disagree", NULL);
    }
    check_vals(&v, &vars, rc2, &o, err2);
    if (rc1 < 0) {
        if (err1 == NULL || err2 == NULL)
            fail("an error without a message", NULL);
        goto done;
    }
    parsed = json_loadb(o.p, o.len, JSON_ALLOW_NUL, &e);
    if (parsed == NULL) {
        fprintf(stderr, "%.*s\n", (int)o.len, o.p);
        fail("reg_render_json wrote invalid JSON", e.text);
    }
    if (!json_equal(parsed, tree)) {
        char *a = json_dumps(tree, JSON_COMPACT);
        fprintf(stderr, "reg_render:      %s\nreg_render_json: %.*s\n",
                a ? a : "?", (int)o.len, o.p);
        free(a);
        fail("the two renderers wrote different messages", NULL);
    }
done:
    json_decref(parsed);
    json_decref(tree);
    json_decref(vtree);
    json_decref(names);
    json_decref(messages);
    json_decref(params);
    free(v.messages);
    free(dump);
    free(o.p);
    free(err);
    free(err1);
    free(err2);
    return 0;
}
