/*
 * message.c - a version's messages as plain C (struct reg_message), decoded
 * from the JSON text stored in the registry.
 *
 * Why not jansson here: the snapshot decodes every version's messages at
 * load, and building jansson objects (a hashtable per message) was 80% of
 * the load time of a 1,000 x 20 registry, against a 200 ms bar. Stored
 * messages are always an array of objects whose values are strings (publish
 * and import validate that), so a small strict decoder covering exactly that
 * shape, with full JSON string unescaping, does the job at memory speed.
 *
 * Invariants:
 *  1. One allocation per version: the reg_message array followed by the
 *     NUL-terminated decoded strings it points into. Decoding never grows a
 *     string, so len + 1 bytes of string space always suffice.
 *  2. Anything outside the expected shape is an error, never a guess.
 */
#include <stdlib.h>
#include <string.h>
#include "registry/internal.h"

struct cursor {
    const char *p;           /* borrowed: next input byte */
    const char *end;         /* borrowed: end of input */
    char *out;               /* borrowed: next free byte of string space */
};

static void skip_ws(struct cursor *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\n' || *c->p == '\r'
                             || *c->p == '\t'))
        c->p++;
}

static int hex4(const char *p, unsigned *v)
{
    *v = 0;
    for (int i = 0; i < 4; i++) {
        char h = p[i];
        *v <<= 4;
        if (h >= '0' && h <= '9')
            *v |= (unsigned)(h - '0');
        else if (h >= 'a' && h <= 'f')
            *v |= (unsigned)(h - 'a' + 10);
        else if (h >= 'A' && h <= 'F')
            *v |= (unsigned)(h - 'A' + 10);
        else
            return -1;
    }
    return 0;
}

static void put_utf8(struct cursor *c, unsigned cp)
{
    if (cp < 0x80) {
        *c->out++ = (char)cp;
    } else if (cp < 0x800) {
        *c->out++ = (char)(0xc0 | (cp >> 6));
        *c->out++ = (char)(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
        *c->out++ = (char)(0xe0 | (cp >> 12));
        *c->out++ = (char)(0x80 | ((cp >> 6) & 0x3f));
        *c->out++ = (char)(0x80 | (cp & 0x3f));
    } else {
        *c->out++ = (char)(0xf0 | (cp >> 18));
        *c->out++ = (char)(0x80 | ((cp >> 12) & 0x3f));
        *c->out++ = (char)(0x80 | ((cp >> 6) & 0x3f));
        *c->out++ = (char)(0x80 | (cp & 0x3f));
    }
}

/* decode a JSON string at c->p into string space; *s and *len receive it */
static int string(struct cursor *c, const char **s, size_t *len)
{
    char *start = c->out;

    if (c->p >= c->end || *c->p != '"')
        return -1;
    c->p++;
    for (;;) {
        const char *q = c->p;
        /* copy the plain run in one go */
        while (q < c->end && *q != '"' && *q != '\\' && (unsigned char)*q >= 0x20)
            q++;
        memcpy(c->out, c->p, (size_t)(q - c->p));
        c->out += q - c->p;
        c->p = q;
        if (c->p >= c->end || (unsigned char)*c->p < 0x20)
            return -1;
        if (*c->p == '"')
            break;
        /* backslash escape */
        if (c->p + 1 >= c->end)
            return -1;
        switch (c->p[1]) {
        case '"': *c->out++ = '"'; break;
        case '\\': *c->out++ = '\\'; break;
        case '/': *c->out++ = '/'; break;
        case 'b': *c->out++ = '\b'; break;
        case 'f': *c->out++ = '\f'; break;
        case 'n': *c->out++ = '\n'; break;
        case 'r': *c->out++ = '\r'; break;
        case 't': *c->out++ = '\t'; break;
        case 'u': {
            unsigned cp, lo;
            if (c->end - c->p < 6 || hex4(c->p + 2, &cp) < 0)
                return -1;
            if (cp >= 0xd800 && cp <= 0xdbff) {
                if (c->end - c->p < 12 || c->p[6] != '\\' || c->p[7] != 'u'
                    || hex4(c->p + 8, &lo) < 0 || lo < 0xdc00 || lo > 0xdfff)
                    return -1;
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                c->p += 6;
            } else if (cp >= 0xdc00 && cp <= 0xdfff) {
                return -1;
            }
            put_utf8(c, cp);
            c->p += 4;
            break;
        }
        default:
            return -1;
        }
        c->p += 2;
    }
    c->p++;   /* closing quote */
    *len = (size_t)(c->out - start);
    *c->out++ = '\0';
    *s = start;
    return 0;
}

static int object(struct cursor *c, struct reg_message *m)
{
    memset(m, 0, sizeof(*m));
    if (c->p >= c->end || *c->p != '{')
        return -1;
    c->p++;
    skip_ws(c);
    if (c->p < c->end && *c->p == '}') {
        c->p++;
        return -1;   /* an empty message has no role */
    }
    for (;;) {
        const char *key, *val;
        size_t klen, vlen;

        skip_ws(c);
        if (string(c, &key, &klen) < 0)
            return -1;
        skip_ws(c);
        if (c->p >= c->end || *c->p != ':')
            return -1;
        c->p++;
        skip_ws(c);
        if (string(c, &val, &vlen) < 0)
            return -1;
        if (strcmp(key, "role") == 0)
            m->role = val;
        else if (strcmp(key, "content") == 0) {
            m->content = val;
            m->content_len = vlen;
        } else if (strcmp(key, "name") == 0)
            m->name = val;
        else
            return -1;
        skip_ws(c);
        if (c->p < c->end && *c->p == ',') {
            c->p++;
            continue;
        }
        if (c->p < c->end && *c->p == '}') {
            c->p++;
            break;
        }
        return -1;
    }
    return m->role && m->content ? 0 : -1;
}

struct reg_message *reg_message_decode(const char *json, size_t len, size_t *n,
                                       char **err)
{
    struct cursor c = {json, json + len, NULL};
    struct reg_message *msgs;
    size_t max = 0, count = 0;

    *n = 0;
    for (const char *p = json; (p = memchr(p, '{', (size_t)(json + len - p))) != NULL; p++)
        max++;
    msgs = malloc(max * sizeof(*msgs) + len + 1);
    if (msgs == NULL) {
        reg_err(err, "cannot decode messages: out of memory");
        return NULL;
    }
    c.out = (char *)(msgs + max);
    skip_ws(&c);
    if (c.p >= c.end || *c.p != '[')
        goto bad;
    c.p++;
    skip_ws(&c);
    if (c.p < c.end && *c.p == ']') {
        c.p++;
    } else {
        for (;;) {
            if (count >= max || object(&c, &msgs[count]) < 0)
                goto bad;
            count++;
            skip_ws(&c);
            if (c.p < c.end && *c.p == ',') {
                c.p++;
                skip_ws(&c);
                continue;
            }
            if (c.p < c.end && *c.p == ']') {
                c.p++;
                break;
            }
            goto bad;
        }
    }
    skip_ws(&c);
    if (c.p != c.end)
        goto bad;
    *n = count;
    return msgs;
bad:
    reg_err(err, "invalid stored messages at byte %zu", (size_t)(c.p - json));
    free(msgs);
    return NULL;
}

json_t *reg_message_json(const struct reg_message *msgs, size_t n)
{
    json_t *arr = json_array();

    for (size_t i = 0; arr && i < n; i++) {
        json_t *o = json_object();
        json_object_set_new(o, "role", json_string(msgs[i].role));
        if (msgs[i].name)
            json_object_set_new(o, "name", json_string(msgs[i].name));
        json_object_set_new(o, "content",
                            json_stringn(msgs[i].content, msgs[i].content_len));
        if (json_array_append_new(arr, o) < 0) {
            json_decref(arr);
            return NULL;
        }
    }
    return arr;
}

json_t *reg_version_messages(const struct reg_version *v)
{
    return reg_message_json(v->messages, v->n_messages);
}
