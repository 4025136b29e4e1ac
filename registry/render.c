/*
 * render.c - templates: the `{{name}}` variables of a version's messages,
 * and rendering them with caller values.
 *
 * Design: one scanner (next_var) serves both variable extraction at publish
 * time and rendering at request time, so what `show` lists is exactly what
 * `render` demands. A placeholder is "{{", optional spaces, a name
 * [A-Za-z_][A-Za-z0-9_]* of at most REG_VARNAME_MAX bytes, optional spaces,
 * "}}"; any other "{{" is literal text. Rendering is a single left-to-right
 * pass over the template that copies values verbatim: a value is never
 * scanned again, so a value containing "{{x}}" stays literal (no template
 * injection) and output size is bounded by REG_RENDER_MAX.
 *
 * Invariant: reads its inputs only (no refcount changes on them), so many
 * threads may render the same snapshot version at once.
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "registry/internal.h"
#include "registry/json8.h"

static int is_name_start(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static int is_name_char(char c)
{
    return is_name_start(c) || (c >= '0' && c <= '9');
}

/*
 * Find the next placeholder in s[0..len). Returns its offset (or len when
 * none) and sets *plen to the placeholder length, *name and *nlen to the name.
 */
static size_t next_var(const char *s, size_t len, size_t *plen,
                       const char **name, size_t *nlen)
{
    for (size_t i = 0; i + 1 < len; i++) {
        size_t j, n0;
        const char *b = memchr(s + i, '{', len - 1 - i); /* not the last byte */

        if (b == NULL)
            break;
        i = (size_t)(b - s);
        if (s[i + 1] != '{')
            continue;
        j = i + 2;
        while (j < len && s[j] == ' ')
            j++;
        if (j >= len || !is_name_start(s[j]))
            continue;
        n0 = j;
        while (j < len && is_name_char(s[j]))
            j++;
        if (j - n0 > REG_VARNAME_MAX)
            continue;
        *name = s + n0;
        *nlen = j - n0;
        while (j < len && s[j] == ' ')
            j++;
        if (j + 1 < len && s[j] == '}' && s[j + 1] == '}') {
            *plen = j + 2 - i;
            return i;
        }
    }
    return len;
}

json_t *reg_template_variables(const json_t *messages, char **err)
{
    json_t *vars = json_array();
    size_t i;
    const json_t *m;

    if (vars == NULL || !json_is_array(messages)) {
        reg_err(err, "cannot list variables: messages must be an array");
        json_decref(vars);
        return NULL;
    }
    json_array_foreach(messages, i, m) {
        const json_t *c = json_object_get(m, "content");
        const char *s = json_string_value(c);
        size_t len = json_string_length(c), off = 0;

        while (s && off < len) {
            size_t plen, nlen, at;
            const char *name;
            char buf[REG_VARNAME_MAX + 1];
            int seen = 0;

            at = next_var(s + off, len - off, &plen, &name, &nlen);
            if (at == len - off)
                break;
            memcpy(buf, name, nlen);
            buf[nlen] = '\0';
            for (size_t k = 0; k < json_array_size(vars); k++)
                if (strcmp(json_string_value(json_array_get(vars, k)), buf) == 0)
                    seen = 1;
            if (!seen) {
                if (json_array_size(vars) >= REG_VARIABLES_MAX) {
                    reg_err(err, "too many variables: at most %d per version",
                            REG_VARIABLES_MAX);
                    json_decref(vars);
                    return NULL;
                }
                json_array_append_new(vars, json_string(buf));
            }
            off += at + plen;
        }
    }
    return vars;
}

/* appends to a rendered message, which stays within REG_RENDER_MAX */
static int buf_add(struct reg_buf *b, const char *s, size_t n)
{
    if (b->len + n > REG_RENDER_MAX)
        return -1;
    return reg_buf_add(b, s, n);
}

/* the text of a variable value; `tmp` holds numbers */
static const char *value_text(const json_t *v, char tmp[64], size_t *n)
{
    if (json_is_string(v)) {
        *n = json_string_length(v);
        return json_string_value(v);
    }
    if (json_is_integer(v))
        snprintf(tmp, 64, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    else if (json_is_real(v))
        snprintf(tmp, 64, "%.17g", json_real_value(v));
    else if (json_is_true(v))
        snprintf(tmp, 64, "true");
    else if (json_is_false(v))
        snprintf(tmp, 64, "false");
    else
        return NULL;
    *n = strlen(tmp);
    return tmp;
}

static json_t *render_one(const char *s, size_t len, const json_t *vars,
                          char **err)
{
    struct reg_buf b = {NULL, 0, 0};
    size_t off = 0;
    json_t *out;

    if (buf_add(&b, "", 0) < 0)
        goto toolong;
    while (off < len) {
        size_t plen, nlen, at, vlen;
        const char *name, *val;
        char key[REG_VARNAME_MAX + 1], tmp[64];
        const json_t *v;

        at = next_var(s + off, len - off, &plen, &name, &nlen);
        if (buf_add(&b, s + off, at) < 0)
            goto toolong;
        if (at == len - off)
            break;
        memcpy(key, name, nlen);
        key[nlen] = '\0';
        v = vars ? json_object_get(vars, key) : NULL;
        if (v == NULL) {
            reg_err(err, "missing variable '%s'", key);
            goto fail;
        }
        if ((val = value_text(v, tmp, &vlen)) == NULL) {
            reg_err(err, "variable '%s' must be a string, number or boolean", key);
            goto fail;
        }
        if (buf_add(&b, val, vlen) < 0)
            goto toolong;
        off += at + plen;
    }
    out = json_stringn_nocheck(b.p, b.len);
    free(b.p);
    return out;
toolong:
    reg_err(err, "rendered message is larger than %d bytes", REG_RENDER_MAX);
fail:
    free(b.p);
    return NULL;
}

int reg_render_messages(const json_t *messages, const json_t *variables,
                        json_t **messages_out, char **err)
{
    json_t *out = json_array();
    const json_t *m;
    size_t i;

    *messages_out = NULL;
    if (variables != NULL && !json_is_object(variables)) {
        reg_err(err, "variables must be a JSON object");
        goto fail;
    }
    if (out == NULL || !json_is_array(messages)) {
        reg_err(err, "cannot render: messages must be an array");
        goto fail;
    }
    json_array_foreach(messages, i, m) {
        const json_t *c = json_object_get(m, "content");
        const char *key;
        const json_t *val;
        json_t *copy = json_object(), *text;

        if (copy == NULL || json_array_append_new(out, copy) < 0) {
            reg_err(err, "cannot render: out of memory");
            goto fail;
        }
        json_object_foreach((json_t *)m, key, val)
            if (strcmp(key, "content") != 0)
                json_object_set_new(copy, key, json_deep_copy(val));
        if (!json_is_string(c)) {
            reg_err(err, "cannot render: message %zu has no text content", i);
            goto fail;
        }
        text = render_one(json_string_value(c), json_string_length(c),
                          variables, err);
        if (text == NULL)
            goto fail;
        json_object_set_new(copy, "content", text);
    }
    *messages_out = out;
    return 0;
fail:
    json_decref(out);
    return -1;
}

int reg_render(const struct reg_version *version, const json_t *variables,
               json_t **messages_out, char **err)
{
    json_t *out = json_array();

    *messages_out = NULL;
    if (variables != NULL && !json_is_object(variables)) {
        reg_err(err, "variables must be a JSON object");
        goto fail;
    }
    for (size_t i = 0; out && i < version->n_messages; i++) {
        const struct reg_message *m = &version->messages[i];
        json_t *o = json_object(), *text;

        if (o == NULL || json_array_append_new(out, o) < 0) {
            reg_err(err, "cannot render: out of memory");
            goto fail;
        }
        json_object_set_new(o, "role", json_string(m->role));
        if (m->name)
            json_object_set_new(o, "name", json_string(m->name));
        text = render_one(m->content, m->content_len, variables, err);
        if (text == NULL)
            goto fail;
        json_object_set_new(o, "content", text);
    }
    if (out == NULL) {
        reg_err(err, "cannot render: out of memory");
        return -1;
    }
    *messages_out = out;
    return 0;
fail:
    json_decref(out);
    return -1;
}

/* ---- rendering straight to JSON text (the gateway's request path) -------- */

/* Nonzero when one of the 8 bytes at s needs escaping in a JSON string: a
 * quote, a backslash or a control character (bytes >= 0x80 do not). */
static int word_needs_escape(const char *s)
{
    uint64_t w;

    memcpy(&w, s, 8);
    return json8_escape(w) != 0;
}

/* JSON-escapes s[0..len) (valid UTF-8) through emit, runs at a time:
 * templates are mostly text with nothing to escape, skipped a word at a
 * time. */
static int emit_escaped(reg_emit_fn emit, void *arg, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t i, run = 0;

    for (i = 0; i < len; i++) {
        unsigned char c;
        char esc[6];
        size_t n = 2;

        while (len - i >= 8 && !word_needs_escape(s + i))
            i += 8;
        if (i >= len)
            break;
        c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        if (i > run && emit(arg, s + run, i - run) < 0)
            return -1;
        esc[0] = '\\';
        switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        default:
            esc[1] = 'u', esc[2] = '0', esc[3] = '0';
            esc[4] = hex[c >> 4], esc[5] = hex[c & 15];
            n = 6;
        }
        if (emit(arg, esc, n) < 0)
            return -1;
        run = i + 1;
    }
    return len > run ? emit(arg, s + run, len - run) : 0;
}

/* A number's text as reg_render writes it (jansson's reading of the JSON
 * number, then JSON_INTEGER_FORMAT or %.17g): tmp receives it. */
static int number_text(const char *s, size_t len, char tmp[64], size_t *n)
{
    /* a number may be written with any number of digits (jansson reads
     * 1.000...1 of 70 digits): long ones are copied to the heap, so that
     * the gateway does not refuse what reg_render writes (found by
     * tests/fuzz/fuzz_render) */
    char small[64], *num = small, *end;
    int rc = -1;

    if (len == 0)
        return -1;
    if (len >= sizeof(small) && (num = malloc(len + 1)) == NULL)
        return -1;
    memcpy(num, s, len);
    num[len] = '\0';
    errno = 0;
    if (strpbrk(num, ".eE") == NULL) {
        long long v = strtoll(num, &end, 10);
        if (errno || *end != '\0')
            goto out;
        snprintf(tmp, 64, "%lld", v);
    } else {
        double d = strtod(num, &end);
        /* only an overflow is out of range, as jansson reads numbers for
         * reg_render: an underflow (1e-310, 1e-400) sets ERANGE too but
         * is the nearest double, which reg_render writes (found by
         * tests/fuzz/fuzz_render: the gateway said 400 where promptctl
         * rendered) */
        if ((errno == ERANGE && (d == HUGE_VAL || d == -HUGE_VAL)) ||
            *end != '\0')
            goto out;
        snprintf(tmp, 64, "%.17g", d);
    }
    *n = strlen(tmp);
    rc = 0;
out:
    if (num != small)
        free(num);
    return rc;
}

/*
 * A version compiled for rendering: its messages as JSON text with holes.
 * Each part is text to emit as it is (the punctuation, role and name, and
 * the template's literal text, all escaped once here), then optionally a
 * variable. tlen is the template bytes the part's literal content stands
 * for (they count towards REG_RENDER_MAX, as in reg_render); msg_end marks
 * the part that closes a message, where its size is checked and the count
 * starts again.
 */
struct tpl_part {
    size_t off, len;          /* the text: bytes of tpl->text */
    size_t tlen;
    size_t var;               /* 1 + the offset in tpl->text of the
                                 variable's name (NUL-terminated); 0: none */
    size_t vidx;              /* 1 + its place in version->variables; 0:
                                 none or not listed */
    int msg_end;
};

struct reg_tpl {
    size_t n_parts;
    struct tpl_part *parts;   /* owned */
    char *text;               /* owned */
};

void reg_tpl_free(struct reg_tpl *t)
{
    if (t == NULL)
        return;
    free(t->parts);
    free(t->text);
    free(t);
}

/* 1 + the place of name[0..n) in version->variables, 0 when not there */
static size_t var_index(const struct reg_version *version, const char *name,
                        size_t n)
{
    size_t i, k = version->variables ? json_array_size(version->variables) : 0;

    for (i = 0; i < k; i++) {
        const char *v = json_string_value(json_array_get(version->variables,
                                                         i));
        if (v && strncmp(v, name, n) == 0 && v[n] == '\0')
            return i + 1;
    }
    return 0;
}

struct reg_tpl *reg_tpl_compile(const struct reg_version *version)
{
    struct reg_buf b = {0};
    struct tpl_part *parts = NULL, *np;
    size_t n = 0, cap = 0, i, start = 0;
    struct reg_tpl *t;

#define ADD(p, len) do { if (reg_buf_add(&b, (p), (len)) < 0) goto oom; } while (0)
#define PART(tl, v, vi, end) do {                                         \
        if (n == cap) {                                                   \
            cap = cap ? cap * 2 : 8;                                      \
            if ((np = realloc(parts, cap * sizeof(*parts))) == NULL)      \
                goto oom;                                                 \
            parts = np;                                                   \
        }                                                                 \
        parts[n++] = (struct tpl_part){start, b.len - start, (tl), (v),   \
                                       (vi), (end)};                      \
    } while (0)
    ADD("[", 1);
    for (i = 0; i < version->n_messages; i++) {
        const struct reg_message *m = &version->messages[i];
        const char *s = m->content;
        size_t len = m->content_len, off = 0;

        ADD(i ? ",{\"role\":\"" : "{\"role\":\"", i ? 10 : 9);
        if (emit_escaped(reg_buf_emit, &b, m->role, strlen(m->role)) < 0)
            goto oom;
        if (m->name) {
            ADD("\",\"name\":\"", 10);
            if (emit_escaped(reg_buf_emit, &b, m->name, strlen(m->name)) < 0)
                goto oom;
        }
        ADD("\",\"content\":\"", 13);
        for (;;) {
            size_t plen, nlen, at;
            const char *name;
            size_t name_off;

            at = next_var(s + off, len - off, &plen, &name, &nlen);
            if (emit_escaped(reg_buf_emit, &b, s + off, at) < 0)
                goto oom;
            if (at == len - off) {
                ADD(i + 1 == version->n_messages ? "\"}]" : "\"}",
                    i + 1 == version->n_messages ? 3 : 2);
                PART(at, 0, 0, 1);
                start = b.len;
                break;
            }
            /* the name after the part's text, NUL-terminated, outside
             * the part's length */
            name_off = b.len;
            PART(at, name_off + 1, var_index(version, name, nlen), 0);
            ADD(name, nlen);
            ADD("", 1);
            start = b.len;
            off += at + plen;
        }
    }
    if (version->n_messages == 0) {
        ADD("]", 1);
        PART(0, 0, 0, 0);
    }
    if ((t = malloc(sizeof(*t))) == NULL)
        goto oom;
    t->n_parts = n;
    t->parts = parts;
    t->text = b.p;
    return t;
oom:
    free(parts);
    free(b.p);
    return NULL;
#undef PART
#undef ADD
}

/* reg_tpl_render's body; inlined with its emit, so that rendering into a
 * struct reg_buf appends in place rather than by a call per piece */
static inline __attribute__((always_inline)) int
tpl_render(const struct reg_tpl *t, reg_lookup_fn lookup, void *larg,
           const struct reg_value *vals, size_t n_vals,
           reg_emit_fn emit, void *earg, char **err)
{
    size_t i, total = 0, vlen;
    char tmp[64];

    for (i = 0; i < t->n_parts; i++) {
        const struct tpl_part *pt = &t->parts[i];
        const char *key = pt->var ? t->text + pt->var - 1 : NULL, *val;
        struct reg_value v;

        total += pt->tlen;
        if (pt->msg_end) {
            if (total > REG_RENDER_MAX) {
                reg_err(err, "rendered message is larger than %d bytes",
                        REG_RENDER_MAX);
                return -1;
            }
            total = 0;
        }
        if (emit(earg, t->text + pt->off, pt->len) < 0)
            goto oom;
        if (key == NULL)
            continue;
        if (vals != NULL) {
            if (pt->vidx == 0 || pt->vidx > n_vals ||
                vals[pt->vidx - 1].type == REG_VALUE_NONE) {
                reg_err(err, "missing variable '%s'", key);
                return -1;
            }
            v = vals[pt->vidx - 1];
        } else if (lookup(larg, key, &v) < 0) {
            reg_err(err, "missing variable '%s'", key);
            return -1;
        }
        switch (v.type) {
        case REG_VALUE_STRING: /* raw JSON string text: already escaped */
            val = v.text, vlen = v.len;
            break;
        case REG_VALUE_NUMBER:
            if (number_text(v.text, v.len, tmp, &vlen) < 0) {
                reg_err(err, "variable '%s' is not a number in range", key);
                return -1;
            }
            val = tmp;
            break;
        case REG_VALUE_TRUE:
            val = "true", vlen = 4;
            break;
        case REG_VALUE_FALSE:
            val = "false", vlen = 5;
            break;
        default:
            reg_err(err, "variable '%s' must be a string, number or boolean",
                    key);
            return -1;
        }
        total += vlen;
        if (total > REG_RENDER_MAX) {
            reg_err(err, "rendered message is larger than %d bytes",
                    REG_RENDER_MAX);
            return -1;
        }
        if (emit(earg, val, vlen) < 0)
            goto oom;
    }
    return 0;
oom:
    reg_err(err, "cannot render: out of memory");
    return -1;
}

int reg_tpl_render(const struct reg_tpl *t, reg_lookup_fn lookup, void *larg,
                   reg_emit_fn emit, void *earg, char **err)
{
    return tpl_render(t, lookup, larg, NULL, 0, emit, earg, err);
}

static inline int buf_emit(void *arg, const char *data, size_t len)
{
    return reg_buf_add(arg, data, len);
}

int reg_tpl_render_vals(const struct reg_tpl *t, const struct reg_value *vals,
                        size_t n_vals, struct reg_buf *out, char **err)
{
    return tpl_render(t, NULL, NULL, vals, n_vals, buf_emit, out, err);
}

int reg_render_json(const struct reg_version *version, reg_lookup_fn lookup,
                    void *larg, reg_emit_fn emit, void *earg, char **err)
{
    struct reg_tpl *t = reg_tpl_compile(version);
    int rc;

    if (t == NULL) {
        reg_err(err, "cannot render: out of memory");
        return -1;
    }
    rc = reg_tpl_render(t, lookup, larg, emit, earg, err);
    reg_tpl_free(t);
    return rc;
}
