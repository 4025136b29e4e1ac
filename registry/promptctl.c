/*
 * promptctl.c - the prompt registry CLI for prompt engineers.
 *
 * A thin shell over libregistry: parse arguments, call one library
 * function, print the result as text for people or, with --json, as JSON
 * for scripts. All validation that matters lives in the library (so the
 * gateway and the evaluator get it too); this file adds usage errors and
 * the help that teaches each verb.
 *
 * Invariants:
 *  1. Exit status 0 on success, 1 on any error, with exactly one line
 *     "promptctl: <error>" on stderr.
 *  2. Every input is bounded: files (prompt, vars, import), --var count and
 *     sizes; the library bounds the rest.
 *  3. Read verbs never create a database file; init, publish and import do.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "registry/registry.h"

#define IMPORT_MAX   (256u << 20)   /* bytes of an import file */
#define VARS_MAX     (1u << 20)     /* bytes of a --vars file */
#define ARGS_MAX     1024           /* arguments after the verb */

struct cli {
    const char *db_path;     /* borrowed from argv or environment */
    int json;                /* --json */
    int argc;
    char **argv;             /* owned array of borrowed argv strings */
};

struct verb {
    const char *name;        /* borrowed: static */
    int (*run)(struct cli *c);
    const char *synopsis;    /* borrowed: static */
    const char *help;        /* borrowed: static */
};

static const struct verb *find_verb(const char *name);

static void die_msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void die_msg(const char *fmt, ...)
{
    va_list ap;

    fputs("promptctl: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* strerror in the house style: lowercase, short */
static const char *errstr(int errnum)
{
    static char buf[128];
    const char *s = strerror(errnum);

    snprintf(buf, sizeof(buf), "%s", s);
    if (buf[0] >= 'A' && buf[0] <= 'Z' && !(buf[1] >= 'A' && buf[1] <= 'Z'))
        buf[0] = (char)(buf[0] - 'A' + 'a');
    return buf;
}

/* report a library error and return 1 */
static int fail(char *err)
{
    die_msg("%s", err ? err : "out of memory");
    free(err);
    return 1;
}

static int usage(const char *verb, const char *what)
{
    die_msg("%s: %s (see 'promptctl help %s')", verb, what, verb);
    return 1;
}

static void print_json(json_t *j)
{
    json_dumpf(j, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(15));
    fputc('\n', stdout);
}

/* A command's result: j (freed here) as JSON with --json, else the line
 * fmt. Returns 0. */
static int report(const struct cli *c, json_t *j, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int report(const struct cli *c, json_t *j, const char *fmt, ...)
{
    va_list ap;

    if (c->json) {
        print_json(j);
    } else {
        va_start(ap, fmt);
        vprintf(fmt, ap);
        va_end(ap);
    }
    json_decref(j);
    return 0;
}

static const char *actor_default(const char *given)
{
    const char *a = given;

    if (a == NULL || *a == '\0')
        a = getenv("PROMPTCTL_AUTHOR");
    if (a == NULL || *a == '\0')
        a = getenv("USER");
    return a && *a ? a : "unknown";
}

/* Read a whole file ("-" = stdin) of at most `max` bytes. */
static char *read_file(const char *path, size_t max, size_t *len, char **err)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    char *buf = NULL;
    size_t cap = 0, n = 0;

    if (f == NULL) {
        if (asprintf(err, "cannot open '%s': %s", path,
                     errstr(errno)) < 0)
            *err = NULL;
        return NULL;
    }
    for (;;) {
        size_t got;
        if (n == cap) {
            char *nb;
            cap = cap ? cap * 2 : 65536;
            if ((nb = realloc(buf, cap + 1)) == NULL)
                goto oom;
            buf = nb;
        }
        got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (n > max) {
            if (asprintf(err, "cannot read '%s': larger than %zu bytes", path,
                         max) < 0)
                *err = NULL;
            goto fail;
        }
        if (got == 0)
            break;
    }
    if (ferror(f)) {
        if (asprintf(err, "cannot read '%s': %s", path, errstr(errno)) < 0)
            *err = NULL;
        goto fail;
    }
    if (f != stdin)
        fclose(f);
    buf[n] = '\0';
    *len = n;
    return buf;
oom:
    *err = strdup("out of memory");
fail:
    if (f != stdin)
        fclose(f);
    free(buf);
    return NULL;
}

static struct reg_db *open_db(struct cli *c, int create, char **err)
{
    struct reg_db *db;

    if (!create && access(c->db_path, F_OK) != 0) {
        if (asprintf(err, "cannot open '%s': no such registry; create one with"
                     " 'promptctl init' or choose one with --db PATH or"
                     " PROMPTGATE_DB", c->db_path) < 0)
            *err = NULL;
        return NULL;
    }
    db = reg_db_open(c->db_path, create ? REG_DB_CREATE : 0, err);
    return db;
}

/*
 * Option parsing for verbs: flags with a value (-f FILE) and repeatable
 * ones. `spec` lists the accepted options; positional args are collected.
 */
struct opt {
    const char *name;        /* "-f", "--label", ... */
    const char *alias;       /* "--file" or NULL */
    int repeat;              /* may be given several times */
    int flag;                /* takes no value */
    int count;
    const char *value;       /* last value, borrowed */
    const char **values;     /* owned array of borrowed, when repeat */
};

static int parse_opts(struct cli *c, const char *verb, struct opt *opts,
                      const char **pos, int max_pos, int *npos)
{
    *npos = 0;
    for (int i = 0; i < c->argc; i++) {
        const char *a = c->argv[i];
        struct opt *o = NULL;

        if (a[0] == '-' && a[1] != '\0') {
            for (struct opt *p = opts; p && p->name; p++)
                if (strcmp(a, p->name) == 0 || (p->alias && strcmp(a, p->alias) == 0))
                    o = p;
            if (o == NULL) {
                char msg[256];
                snprintf(msg, sizeof(msg), "unknown option '%.100s'", a);
                return usage(verb, msg);
            }
            if (o->count && !o->repeat) {
                char msg[256];
                snprintf(msg, sizeof(msg), "option '%s' given twice", o->name);
                return usage(verb, msg);
            }
            if (!o->flag) {
                if (i + 1 >= c->argc) {
                    char msg[256];
                    snprintf(msg, sizeof(msg), "option '%s' needs a value", o->name);
                    return usage(verb, msg);
                }
                o->value = c->argv[++i];
                if (o->repeat) {
                    const char **nv = realloc(o->values, (o->count + 1) * sizeof(*nv));
                    if (nv == NULL)
                        return fail(NULL);
                    o->values = nv;
                    o->values[o->count] = o->value;
                }
            }
            o->count++;
            continue;
        }
        if (*npos >= max_pos) {
            char msg[256];
            snprintf(msg, sizeof(msg), "unexpected argument '%.100s'", a);
            return usage(verb, msg);
        }
        pos[(*npos)++] = a;
    }
    return 0;
}

/* parse_opts for a verb of exactly n positional arguments: 1 (after the
 * usage line `missing`) when they are not all there */
static int parse_exact(struct cli *c, const char *verb, struct opt *opts,
                       const char **pos, int n, const char *missing)
{
    int npos;

    if (parse_opts(c, verb, opts, pos, n, &npos))
        return 1;
    return npos != n ? usage(verb, missing) : 0;
}

static void free_opts(struct opt *opts)
{
    for (struct opt *p = opts; p->name; p++)
        free(p->values);
}

static int parse_int(const char *s, int lo, int hi, int *out)
{
    char *end;
    long v;

    if (s == NULL || *s == '\0')
        return -1;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || *end != '\0' || v < lo || v > hi)
        return -1;
    *out = (int)v;
    return 0;
}

/* ---- verbs ------------------------------------------------------------ */

static int cmd_init(struct cli *c)
{
    char *err = NULL;
    struct reg_db *db;
    struct opt opts[] = {{0}};
    const char *pos[1];
    int npos;

    if (parse_opts(c, "init", opts, pos, 0, &npos))
        return 1;
    if ((db = open_db(c, 1, &err)) == NULL)
        return fail(err);
    reg_db_free(db);
    return report(c, json_pack("{ss si}", "db", c->db_path, "schema_version",
                               reg_migrate_latest()),
                  "registry '%s' is ready (schema version %d)\n", c->db_path,
                  reg_migrate_latest());
}

static int cmd_migrate(struct cli *c)
{
    struct reg_migration_status st[64];
    struct opt opts[] = {{"--status", NULL, 0, 1, 0, NULL, NULL}, {0}};
    const char *pos[1];
    char *err = NULL;
    struct reg_db *db;
    int npos, n, dbv = 0, bad = 0;

    if (parse_opts(c, "migrate", opts, pos, 0, &npos))
        return 1;
    if (!opts[0].count) {
        /* opening applies what is pending, or says why it cannot */
        if ((db = open_db(c, 0, &err)) == NULL)
            return fail(err);
        reg_db_free(db);
    }
    if (access(c->db_path, F_OK) != 0) {
        open_db(c, 0, &err);   /* a missing file: words the error */
        return fail(err);
    }
    if ((db = reg_db_open(c->db_path, REG_DB_NOMIGRATE, &err)) == NULL)
        return fail(err);
    n = reg_migrate_status(db, st, 64, &dbv, &err);
    reg_db_free(db);
    if (n < 0)
        return fail(err);
    for (int i = 0; i < n && i < 64; i++)
        bad |= st[i].applied && !st[i].checksum_ok;
    if (c->json) {
        json_t *arr = json_array(), *j;
        for (int i = 0; i < n && i < 64; i++)
            json_array_append_new(arr, json_pack("{si ss ss sb sb ss?}",
                "version", st[i].version, "name", st[i].name,
                "checksum", st[i].checksum, "applied", st[i].applied,
                "checksum_ok", st[i].checksum_ok,
                "applied_at", st[i].applied ? st[i].applied_at : NULL));
        j = json_pack("{ss si si sb so}", "db", c->db_path, "db_version", dbv,
                      "binary_version", reg_migrate_latest(), "usable",
                      !bad && dbv <= reg_migrate_latest(), "migrations", arr);
        print_json(j);
        json_decref(j);
    } else {
        printf("registry '%s': schema version %d, this binary speaks %d\n",
               c->db_path, dbv, reg_migrate_latest());
        for (int i = 0; i < n && i < 64; i++)
            printf("  %-24s %s\n", st[i].name,
                   !st[i].applied ? "pending"
                   : st[i].checksum_ok ? st[i].applied_at
                   : "CHANGED after it was applied");
        if (dbv > reg_migrate_latest())
            printf("  (and newer migrations this binary does not know)\n");
        else if (!bad && dbv < reg_migrate_latest())
            printf("run 'promptctl migrate' to apply the pending migrations\n");
    }
    if (bad || dbv > reg_migrate_latest()) {
        die_msg("this binary cannot use '%s': %s", c->db_path,
                bad ? "an applied migration was changed"
                    : "its schema is newer; upgrade promptgate");
        return 1;
    }
    return 0;
}

static int cmd_publish(struct cli *c)
{
    struct opt opts[] = {
        {"-f", "--file", 0, 0, 0, NULL, NULL},
        {"-m", "--message", 0, 0, 0, NULL, NULL},
        {"--author", NULL, 0, 0, 0, NULL, NULL},
        {"--description", NULL, 0, 0, 0, NULL, NULL},
        {0}};
    const char *pos[1];
    char *err = NULL, *text = NULL;
    json_t *messages = NULL, *params = NULL;
    struct reg_db *db = NULL;
    size_t len;
    int version = 0, created = 0, rc = 1;

    if (parse_exact(c, "publish", opts, pos, 1,
                    "missing prompt NAME"))
        return 1;
    if (opts[0].value == NULL)
        return usage("publish", "missing -f FILE (the prompt text or JSON; - for stdin)");
    if (!reg_name_valid(pos[0])) {
        die_msg("invalid prompt name '%s': use lowercase letters, digits and"
                " _ . - (starting with a letter or digit), at most %d bytes",
                pos[0], REG_NAME_MAX);
        return 1;
    }
    if ((text = read_file(opts[0].value, REG_TEMPLATE_MAX, &len, &err)) == NULL)
        return fail(err);
    if (reg_content_parse(text, len, &messages, &params, &err) < 0) {
        char *e2 = NULL;
        if (asprintf(&e2, "cannot publish '%s': %s", opts[0].value, err) < 0)
            e2 = NULL;
        free(err);
        rc = fail(e2);
        goto out;
    }
    if ((db = open_db(c, 1, &err)) == NULL) {
        rc = fail(err);
        goto out;
    }
    if (reg_publish(db, pos[0], messages, params, opts[1].value,
                    actor_default(opts[2].value), opts[3].value, &version,
                    &created, &err) < 0) {
        rc = fail(err);
        goto out;
    }
    if (c->json) {
        json_t *j = json_pack("{ss si sb}", "name", pos[0], "version", version,
                              "created", created);
        print_json(j);
        json_decref(j);
    } else if (created) {
        printf("published %s@%d\n", pos[0], version);
    } else {
        printf("unchanged: %s@%d already has this content\n", pos[0], version);
    }
    rc = 0;
out:
    reg_db_free(db);
    json_decref(messages);
    json_decref(params);
    free(text);
    return rc;
}

static int cmd_list(struct cli *c)
{
    struct opt opts[] = {{0}};
    const char *pos[1];
    struct reg_prompt_info *ps = NULL;
    struct reg_db *db;
    char *err = NULL;
    size_t n = 0;
    int npos;

    if (parse_opts(c, "list", opts, pos, 0, &npos))
        return 1;
    if ((db = open_db(c, 0, &err)) == NULL)
        return fail(err);
    if (reg_prompt_list(db, &ps, &n, &err) < 0) {
        reg_db_free(db);
        return fail(err);
    }
    reg_db_free(db);
    if (c->json) {
        json_t *arr = json_array();
        for (size_t i = 0; i < n; i++)
            json_array_append_new(arr, json_pack("{ss ss ss si si sO}",
                "name", ps[i].name, "description", ps[i].description,
                "created_at", ps[i].created_at, "latest", ps[i].latest,
                "versions", ps[i].n_versions, "labels", ps[i].labels));
        print_json(arr);
        json_decref(arr);
    } else if (n == 0) {
        printf("no prompts yet: publish one with 'promptctl publish NAME -f FILE'\n");
    } else {
        printf("%-32s %6s  %-30s %s\n", "NAME", "LATEST", "LABELS", "DESCRIPTION");
        for (size_t i = 0; i < n; i++) {
            char labels[256] = "";
            const char *k;
            json_t *v;
            size_t off = 0;
            json_object_foreach(ps[i].labels, k, v) {
                int w = snprintf(labels + off, sizeof(labels) - off, "%s%s=%d",
                                 off ? " " : "", k, (int)json_integer_value(v));
                if (w < 0 || (size_t)w >= sizeof(labels) - off)
                    break;
                off += (size_t)w;
            }
            printf("%-32s %6d  %-30s %s\n", ps[i].name, ps[i].latest,
                   labels[0] ? labels : "-", ps[i].description);
        }
    }
    reg_prompt_list_free(ps, n);
    return 0;
}

/* labels (other than latest) pointing at version v of prompt, as text */
static json_t *labels_of(struct reg_db *db, const char *name, int v)
{
    struct reg_prompt_info *ps = NULL;
    size_t n = 0;
    json_t *out = json_array();

    if (reg_prompt_list(db, &ps, &n, NULL) < 0)
        return out;
    for (size_t i = 0; i < n; i++) {
        const char *k;
        json_t *jv;
        if (strcmp(ps[i].name, name) != 0)
            continue;
        json_object_foreach(ps[i].labels, k, jv)
            if (json_integer_value(jv) == v)
                json_array_append_new(out, json_string(k));
        if (ps[i].latest == v)
            json_array_append_new(out, json_string("latest"));
    }
    reg_prompt_list_free(ps, n);
    return out;
}

static json_t *version_json(const struct reg_version *v, json_t *labels)
{
    return json_pack("{ss si ss ss ss ss sO sO so so}", "name", v->prompt,
                     "version", v->version, "created_at", v->created_at,
                     "author", v->author, "message", v->message, "hash", v->hash,
                     "variables", v->variables, "params", v->params,
                     "messages", reg_version_messages(v), "labels", labels);
}

static int cmd_show(struct cli *c)
{
    struct opt opts[] = {{0}};
    const char *pos[1];
    char name[REG_NAME_MAX + 1], label[REG_LABEL_MAX + 1];
    struct reg_version *v;
    struct reg_db *db;
    json_t *labels;
    char *err = NULL;
    int version;
    size_t i;
    json_t *m;

    if (parse_exact(c, "show", opts, pos, 1,
                    "missing NAME, NAME@LABEL or NAME@VERSION"))
        return 1;
    if (reg_ref_parse(pos[0], name, label, &version, &err) < 0)
        return fail(err);
    if ((db = open_db(c, 0, &err)) == NULL)
        return fail(err);
    if ((v = reg_version_get(db, name, label, version, &err)) == NULL) {
        reg_db_free(db);
        return fail(err);
    }
    labels = labels_of(db, name, v->version);
    reg_db_free(db);
    if (c->json) {
        json_t *j = version_json(v, labels);
        print_json(j);
        json_decref(j);
        reg_version_free(v);
        return 0;
    }
    printf("%s@%d", v->prompt, v->version);
    json_array_foreach(labels, i, m)
        printf("%s%s", i ? ", " : "  (", json_string_value(m));
    printf("%s\n", json_array_size(labels) ? ")" : "");
    printf("published %s by %s%s%s\n", v->created_at, v->author[0] ? v->author : "-",
           v->message[0] ? ": " : "", v->message);
    printf("variables:");
    json_array_foreach(v->variables, i, m)
        printf(" %s", json_string_value(m));
    printf("%s\n", json_array_size(v->variables) ? "" : " (none)");
    if (json_object_size(v->params)) {
        char *p = json_dumps(v->params, JSON_COMPACT | JSON_SORT_KEYS
                             | JSON_REAL_PRECISION(15));
        printf("params: %s\n", p ? p : "");
        free(p);
    }
    for (i = 0; i < v->n_messages; i++)
        printf("\n[%s]\n%s\n", v->messages[i].role, v->messages[i].content);
    json_decref(labels);
    reg_version_free(v);
    return 0;
}

static int cmd_versions(struct cli *c)
{
    struct opt opts[] = {{0}};
    const char *pos[1];
    struct reg_version **vs = NULL;
    struct reg_prompt_info *ps = NULL;
    struct reg_db *db;
    json_t *labmap = NULL;
    char *err = NULL;
    size_t n = 0, np = 0;

    if (parse_exact(c, "versions", opts, pos, 1,
                    "missing prompt NAME"))
        return 1;
    if ((db = open_db(c, 0, &err)) == NULL)
        return fail(err);
    if (reg_versions_list(db, pos[0], &vs, &n, &err) < 0) {
        reg_db_free(db);
        return fail(err);
    }
    if (reg_prompt_list(db, &ps, &np, NULL) == 0)
        for (size_t i = 0; i < np; i++)
            if (strcmp(ps[i].name, pos[0]) == 0)
                labmap = json_incref(ps[i].labels);
    reg_prompt_list_free(ps, np);
    reg_db_free(db);
    if (c->json) {
        json_t *arr = json_array();
        for (size_t i = 0; i < n; i++) {
            json_t *labels = json_array();
            const char *k;
            json_t *jv;
            json_object_foreach(labmap, k, jv)
                if (json_integer_value(jv) == vs[i]->version)
                    json_array_append_new(labels, json_string(k));
            if (i == n - 1)
                json_array_append_new(labels, json_string("latest"));
            json_array_append_new(arr, version_json(vs[i], labels));
        }
        print_json(arr);
        json_decref(arr);
    } else {
        printf("%7s  %-24s %-16s %-24s %s\n", "VERSION", "CREATED", "AUTHOR",
               "LABELS", "MESSAGE");
        for (size_t i = 0; i < n; i++) {
            char labels[128] = "";
            size_t off = 0;
            const char *k;
            json_t *jv;
            json_object_foreach(labmap, k, jv)
                if (json_integer_value(jv) == vs[i]->version && off < sizeof(labels)) {
                    int w = snprintf(labels + off, sizeof(labels) - off, "%s%s",
                                     off ? "," : "", k);
                    off += w > 0 ? (size_t)w : 0;
                }
            if (i == n - 1 && off < sizeof(labels))
                snprintf(labels + off, sizeof(labels) - off, "%slatest", off ? "," : "");
            printf("%7d  %-24s %-16s %-24s %s\n", vs[i]->version, vs[i]->created_at,
                   vs[i]->author[0] ? vs[i]->author : "-", labels, vs[i]->message);
        }
    }
    json_decref(labmap);
    reg_versions_list_free(vs, n);
    return 0;
}

/* a diff side: a version number, or a label */
static struct reg_version *get_side(struct reg_db *db, const char *name,
                                    const char *side, char **err)
{
    int v;

    if (parse_int(side, 1, 1000000000, &v) == 0)
        return reg_version_get(db, name, NULL, v, err);
    if (!reg_label_valid(side)) {
        if (asprintf(err, "invalid version or label '%s'", side) < 0)
            *err = NULL;
        return NULL;
    }
    return reg_version_get(db, name, side, 0, err);
}

static int cmd_diff(struct cli *c)
{
    struct opt opts[] = {{0}};
    const char *pos[3];
    struct reg_version *a = NULL, *b = NULL;
    struct reg_db *db;
    char *err = NULL, *d;

    if (parse_exact(c, "diff", opts, pos, 3,
                    "want NAME A B (versions or labels)"))
        return 1;
    if ((db = open_db(c, 0, &err)) == NULL)
        return fail(err);
    a = get_side(db, pos[0], pos[1], &err);
    if (a)
        b = get_side(db, pos[0], pos[2], &err);
    reg_db_free(db);
    if (a == NULL || b == NULL) {
        reg_version_free(a);
        return fail(err);
    }
    d = reg_diff(a, b, &err);
    if (d == NULL) {
        reg_version_free(a);
        reg_version_free(b);
        return fail(err);
    }
    if (c->json) {
        json_t *j = json_pack("{ss si si sb ss}", "name", pos[0], "from", a->version,
                              "to", b->version, "same", d[0] == '\0', "diff", d);
        print_json(j);
        json_decref(j);
    } else {
        fputs(d, stdout);
        if (d[0] == '\0')
            printf("%s@%d and %s@%d are identical\n", a->prompt, a->version,
                   b->prompt, b->version);
    }
    free(d);
    reg_version_free(a);
    reg_version_free(b);
    return 0;
}

static int cmd_label(struct cli *c)
{
    struct opt opts[] = {{"--author", NULL, 0, 0, 0, NULL, NULL}, {0}};
    const char *pos[3];
    struct reg_db *db;
    char *err = NULL;
    int version;

    if (parse_exact(c, "label", opts, pos, 3,
                    "want NAME VERSION LABEL"))
        return 1;
    if (parse_int(pos[1], 1, 1000000000, &version) < 0)
        return usage("label", "VERSION must be a version number such as 3");
    if ((db = open_db(c, 0, &err)) == NULL)
        return fail(err);
    if (reg_label_set(db, pos[0], version, pos[2], actor_default(opts[0].value),
                      &err) < 0) {
        reg_db_free(db);
        return fail(err);
    }
    reg_db_free(db);
    return report(c, json_pack("{ss ss si}", "name", pos[0], "label", pos[2],
                               "version", version),
                  "%s@%s -> version %d\n", pos[0], pos[2], version);
}

static int cmd_rollback(struct cli *c)
{
    struct opt opts[] = {{"--author", NULL, 0, 0, 0, NULL, NULL}, {0}};
    const char *pos[2];
    struct reg_db *db;
    char *err = NULL;
    int from = 0, to = 0;

    if (parse_exact(c, "rollback", opts, pos, 2,
                    "want NAME LABEL"))
        return 1;
    if ((db = open_db(c, 0, &err)) == NULL)
        return fail(err);
    if (reg_label_rollback(db, pos[0], pos[1], actor_default(opts[0].value),
                           &from, &to, &err) < 0) {
        reg_db_free(db);
        return fail(err);
    }
    reg_db_free(db);
    return report(c, json_pack("{ss ss si si}", "name", pos[0], "label",
                               pos[1], "from", from, "to", to),
                  "%s@%s rolled back: version %d -> %d\n", pos[0], pos[1],
                  from, to);
}

static int cmd_log(struct cli *c)
{
    struct opt opts[] = {{0}};
    const char *pos[1];
    struct reg_db *db;
    json_t *log, *e;
    char *err = NULL;
    size_t i;

    if (parse_exact(c, "log", opts, pos, 1,
                    "missing prompt NAME"))
        return 1;
    if ((db = open_db(c, 0, &err)) == NULL)
        return fail(err);
    log = reg_label_log(db, pos[0], &err);
    reg_db_free(db);
    if (log == NULL)
        return fail(err);
    if (c->json) {
        print_json(log);
    } else if (json_array_size(log) == 0) {
        printf("no label moves yet for '%s'\n", pos[0]);
    } else {
        printf("%-24s %-16s %-9s %-9s %s\n", "WHEN", "LABEL", "ACTION", "VERSION", "BY");
        json_array_foreach(log, i, e) {
            char move[32];
            json_t *from = json_object_get(e, "from");
            if (json_is_integer(from))
                snprintf(move, sizeof(move), "%d->%d", (int)json_integer_value(from),
                         (int)json_integer_value(json_object_get(e, "to")));
            else
                snprintf(move, sizeof(move), "->%d",
                         (int)json_integer_value(json_object_get(e, "to")));
            printf("%-24s %-16s %-9s %-9s %s\n",
                   json_string_value(json_object_get(e, "at")),
                   json_string_value(json_object_get(e, "label")),
                   json_string_value(json_object_get(e, "action")), move,
                   json_string_value(json_object_get(e, "actor")));
        }
    }
    json_decref(log);
    return 0;
}

static int cmd_render(struct cli *c)
{
    struct opt opts[] = {
        {"--var", NULL, 1, 0, 0, NULL, NULL},
        {"--vars", NULL, 0, 0, 0, NULL, NULL},
        {"--user", NULL, 0, 0, 0, NULL, NULL},
        {0}};
    const char *pos[1];
    char name[REG_NAME_MAX + 1], label[REG_LABEL_MAX + 1];
    struct reg_version *v = NULL;
    struct reg_snapshot *snap = NULL;
    struct reg_resolved res;
    const struct reg_version *use;
    struct reg_db *db = NULL;
    json_t *vars = NULL, *out = NULL;
    char *err = NULL;
    int npos, version, rc = 1;

    if (parse_opts(c, "render", opts, pos, 1, &npos))
        goto done;
    if (npos != 1) {
        rc = usage("render", "missing NAME, NAME@LABEL or NAME@VERSION");
        goto done;
    }
    if (opts[0].count > REG_VARIABLES_MAX) {
        rc = usage("render", "too many --var options");
        goto done;
    }
    if (reg_ref_parse(pos[0], name, label, &version, &err) < 0) {
        rc = fail(err);
        goto done;
    }
    if (opts[1].value) {
        size_t len;
        json_error_t jerr;
        char *text = read_file(opts[1].value, VARS_MAX, &len, &err);
        if (text == NULL) {
            rc = fail(err);
            goto done;
        }
        vars = json_loadb(text, len, 0, &jerr);
        free(text);
        if (!json_is_object(vars)) {
            die_msg("cannot read '%s': want a JSON object of variables%s%s",
                    opts[1].value, vars ? "" : ": ", vars ? "" : jerr.text);
            goto done;
        }
    } else {
        vars = json_object();
    }
    for (int i = 0; i < opts[0].count; i++) {
        const char *kv = opts[0].values[i], *eq = strchr(kv, '=');
        char key[REG_VARNAME_MAX + 1];
        if (eq == NULL || eq == kv || (size_t)(eq - kv) > REG_VARNAME_MAX) {
            rc = usage("render", "--var wants NAME=VALUE");
            goto done;
        }
        memcpy(key, kv, (size_t)(eq - kv));
        key[eq - kv] = '\0';
        json_object_set_new(vars, key, json_string(eq + 1));
        if (json_object_get(vars, key) == NULL) {
            die_msg("--var %s: value is not valid UTF-8", key);
            goto done;
        }
    }
    if (opts[2].value) {
        /* resolve like the gateway does: experiments apply */
        if (access(c->db_path, F_OK) != 0) {
            die_msg("cannot open '%s': no such registry", c->db_path);
            goto done;
        }
        if ((snap = reg_snapshot_load(c->db_path, &err)) == NULL
            || reg_snapshot_resolve(snap, name, label, version, opts[2].value,
                                    &res, &err) < 0) {
            rc = fail(err);
            goto done;
        }
        use = res.version;
    } else {
        if ((db = open_db(c, 0, &err)) == NULL
            || (v = reg_version_get(db, name, label, version, &err)) == NULL) {
            rc = fail(err);
            goto done;
        }
        use = v;
    }
    if (reg_render(use, vars, &out, &err) < 0) {
        char *e2 = NULL;
        if (asprintf(&e2, "cannot render %s@%d: %s", use->prompt, use->version,
                     err) < 0)
            e2 = NULL;
        free(err);
        rc = fail(e2);
        goto done;
    }
    if (c->json) {
        json_t *j = json_pack("{ss si sO sO}", "name", use->prompt, "version",
                              use->version, "messages", out, "params", use->params);
        if (snap && res.experiment)
            json_object_set_new(j, "experiment", json_pack("{ss si}",
                "name", res.experiment->name, "arm", res.arm));
        print_json(j);
        json_decref(j);
    } else {
        size_t i;
        json_t *m;
        printf("# %s@%d", use->prompt, use->version);
        if (snap && res.experiment)
            printf(" (experiment %s, arm %d)", res.experiment->name, res.arm + 1);
        printf("\n");
        json_array_foreach(out, i, m)
            printf("[%s]\n%s\n", json_string_value(json_object_get(m, "role")),
                   json_string_value(json_object_get(m, "content")));
    }
    rc = 0;
done:
    free_opts(opts);
    json_decref(out);
    json_decref(vars);
    reg_version_free(v);
    reg_snapshot_unref(snap);
    reg_db_free(db);
    return rc;
}

/* NAME or NAME@LABEL into name + label (label may stay "") */
static int name_label(const char *ref, char *name, char *label, char **err)
{
    int version = 0;

    if (reg_ref_parse(ref, name, label, &version, err) < 0)
        return -1;
    if (version) {
        if (asprintf(err, "'%s': want NAME or NAME@LABEL, not a version", ref) < 0)
            *err = NULL;
        return -1;
    }
    return 0;
}

static json_t *experiment_json(const struct reg_experiment *e)
{
    json_t *arms = json_array();

    for (size_t a = 0; a < e->n_arms; a++)
        json_array_append_new(arms, json_pack("{sisi}", "version", e->arms[a].version,
                                              "weight", e->arms[a].weight));
    return json_pack("{sI ss ss ss ss ss ss ss? ss so}", "id", (json_int_t)e->id,
                     "name", e->name, "prompt", e->prompt, "label", e->label,
                     "salt", e->salt, "status", e->running ? "running" : "stopped",
                     "started_at", e->started_at, "stopped_at", e->stopped_at,
                     "started_by", e->started_by, "arms", arms);
}

static int experiment_start(struct cli *c)
{
    struct opt opts[] = {
        {"--label", NULL, 0, 0, 0, NULL, NULL},
        {"--arm", NULL, 1, 0, 0, NULL, NULL},
        {"--salt", NULL, 0, 0, 0, NULL, NULL},
        {"--author", NULL, 0, 0, 0, NULL, NULL},
        {0}};
    const char *pos[1];
    char name[REG_NAME_MAX + 1], label[REG_LABEL_MAX + 1];
    struct reg_arm arms[REG_ARMS_MAX];
    struct reg_experiment *e = NULL;
    struct reg_db *db = NULL;
    char *err = NULL;
    int npos, rc = 1;

    if (parse_opts(c, "experiment", opts, pos, 1, &npos))
        goto done;
    if (npos != 1) {
        rc = usage("experiment", "start wants NAME --label L --arm VERSION:WEIGHT ...");
        goto done;
    }
    if (name_label(pos[0], name, label, &err) < 0) {
        rc = fail(err);
        goto done;
    }
    if (opts[0].value) {
        if (label[0] && strcmp(label, opts[0].value) != 0) {
            rc = usage("experiment", "two different labels given");
            goto done;
        }
        snprintf(label, sizeof(label), "%s", opts[0].value);
    }
    if (!label[0]) {
        rc = usage("experiment", "missing --label L (the label whose traffic is split)");
        goto done;
    }
    if (opts[1].count < 2 || opts[1].count > REG_ARMS_MAX) {
        rc = usage("experiment", "give 2 or more --arm VERSION:WEIGHT (weights sum to 100)");
        goto done;
    }
    for (int i = 0; i < opts[1].count; i++) {
        const char *a = opts[1].values[i], *colon = strchr(a, ':');
        char vbuf[16];
        if (colon == NULL || (size_t)(colon - a) >= sizeof(vbuf)) {
            rc = usage("experiment", "--arm wants VERSION:WEIGHT, e.g. --arm 3:50");
            goto done;
        }
        memcpy(vbuf, a, (size_t)(colon - a));
        vbuf[colon - a] = '\0';
        if (parse_int(vbuf, 1, 1000000000, &arms[i].version) < 0
            || parse_int(colon + 1, 0, 100, &arms[i].weight) < 0) {
            rc = usage("experiment", "--arm wants VERSION:WEIGHT with WEIGHT 1..100");
            goto done;
        }
    }
    if ((db = open_db(c, 0, &err)) == NULL
        || reg_experiment_start(db, name, label, arms, (size_t)opts[1].count,
                                opts[2].value, actor_default(opts[3].value),
                                NULL, &err) < 0
        || (e = reg_experiment_weights(db, name, label, &err)) == NULL) {
        rc = fail(err);
        goto done;
    }
    if (c->json) {
        json_t *j = experiment_json(e);
        print_json(j);
        json_decref(j);
    } else {
        printf("experiment %s started:", e->name);
        for (size_t a = 0; a < e->n_arms; a++)
            printf(" v%d %d%%", e->arms[a].version, e->arms[a].weight);
        printf(" (salt %s)\n", e->salt);
    }
    rc = 0;
done:
    free_opts(opts);
    reg_experiment_free(e);
    reg_db_free(db);
    return rc;
}

static int experiment_stop(struct cli *c)
{
    struct opt opts[] = {{"--label", NULL, 0, 0, 0, NULL, NULL}, {0}};
    const char *pos[1];
    char name[REG_NAME_MAX + 1], label[REG_LABEL_MAX + 1];
    struct reg_db *db;
    char *err = NULL;

    if (parse_exact(c, "experiment", opts, pos, 1,
                    "stop wants NAME or NAME@LABEL"))
        return 1;
    if (name_label(pos[0], name, label, &err) < 0)
        return fail(err);
    if (opts[0].value)
        snprintf(label, sizeof(label), "%s", opts[0].value);
    if ((db = open_db(c, 0, &err)) == NULL)
        return fail(err);
    if (reg_experiment_stop(db, name, label[0] ? label : NULL, &err) < 0) {
        reg_db_free(db);
        return fail(err);
    }
    reg_db_free(db);
    return report(c, json_pack("{ss ss? ss}", "name", name, "label",
                               label[0] ? label : NULL, "status", "stopped"),
                  "experiment on %s%s%s stopped\n", name, label[0] ? "@" : "",
                  label);
}

static int experiment_list(struct cli *c)
{
    struct opt opts[] = {{"--running", NULL, 0, 1, 0, NULL, NULL}, {0}};
    const char *pos[1];
    struct reg_experiment **es = NULL;
    struct reg_db *db;
    char *err = NULL;
    size_t n = 0;
    int npos;

    if (parse_opts(c, "experiment", opts, pos, 1, &npos))
        return 1;
    if (npos == 1 && !reg_name_valid(pos[0])) {
        die_msg("invalid prompt name '%s'", pos[0]);
        return 1;
    }
    if ((db = open_db(c, 0, &err)) == NULL)
        return fail(err);
    if (reg_experiment_list(db, npos ? pos[0] : NULL, opts[0].count > 0, &es, &n,
                            &err) < 0) {
        reg_db_free(db);
        return fail(err);
    }
    reg_db_free(db);
    if (c->json) {
        json_t *arr = json_array();
        for (size_t i = 0; i < n; i++)
            json_array_append_new(arr, experiment_json(es[i]));
        print_json(arr);
        json_decref(arr);
    } else if (n == 0) {
        printf("no experiments\n");
    } else {
        printf("%-4s %-40s %-8s %-24s %s\n", "ID", "EXPERIMENT", "STATUS", "STARTED", "ARMS");
        for (size_t i = 0; i < n; i++) {
            printf("%-4lld %-40s %-8s %-24s", (long long)es[i]->id, es[i]->name,
                   es[i]->running ? "running" : "stopped", es[i]->started_at);
            for (size_t a = 0; a < es[i]->n_arms; a++)
                printf(" v%d:%d%%", es[i]->arms[a].version, es[i]->arms[a].weight);
            printf("\n");
        }
    }
    reg_experiment_list_free(es, n);
    return 0;
}

static int cmd_experiment(struct cli *c)
{
    const char *sub = c->argc > 0 ? c->argv[0] : NULL;

    if (sub == NULL)
        return usage("experiment", "missing start, stop or list");
    c->argc--;
    c->argv++;
    if (strcmp(sub, "start") == 0)
        return experiment_start(c);
    if (strcmp(sub, "stop") == 0)
        return experiment_stop(c);
    if (strcmp(sub, "list") == 0)
        return experiment_list(c);
    return usage("experiment", "want start, stop or list");
}

static int cmd_export(struct cli *c)
{
    struct opt opts[] = {{"-o", "--output", 0, 0, 0, NULL, NULL}, {0}};
    const char *pos[1];
    struct reg_db *db;
    json_t *doc;
    char *err = NULL;
    int npos, rc = 0;

    if (parse_opts(c, "export", opts, pos, 0, &npos))
        return 1;
    if ((db = open_db(c, 0, &err)) == NULL)
        return fail(err);
    doc = reg_export(db, &err);
    reg_db_free(db);
    if (doc == NULL)
        return fail(err);
    if (opts[0].value && strcmp(opts[0].value, "-") != 0) {
        char tmp[4096];
        snprintf(tmp, sizeof(tmp), "%s.tmp", opts[0].value);
        if (json_dump_file(doc, tmp, JSON_INDENT(2) | JSON_REAL_PRECISION(17)) != 0 || rename(tmp, opts[0].value) != 0) {
            die_msg("cannot write '%s': %s", opts[0].value, errstr(errno));
            unlink(tmp);
            rc = 1;
        } else if (!c->json) {
            fprintf(stderr, "exported %zu prompts to '%s'\n",
                    json_array_size(json_object_get(doc, "prompts")), opts[0].value);
        }
    } else {
        /* full precision: an export must import back bit-identical */
        json_dumpf(doc, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(17));
        fputc('\n', stdout);
    }
    json_decref(doc);
    return rc;
}

static int cmd_import(struct cli *c)
{
    struct opt opts[] = {{"--author", NULL, 0, 0, 0, NULL, NULL}, {0}};
    const char *pos[1];
    struct reg_import_counts counts;
    struct reg_db *db;
    json_error_t jerr;
    json_t *doc;
    char *err = NULL, *text;
    size_t len;

    if (parse_exact(c, "import", opts, pos, 1,
                    "missing FILE (made by 'promptctl export'; - for stdin)"))
        return 1;
    if ((text = read_file(pos[0], IMPORT_MAX, &len, &err)) == NULL)
        return fail(err);
    doc = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    free(text);
    if (doc == NULL) {
        die_msg("cannot import '%s': invalid JSON: %s at line %d", pos[0],
                jerr.text, jerr.line);
        return 1;
    }
    if ((db = open_db(c, 1, &err)) == NULL) {
        json_decref(doc);
        return fail(err);
    }
    if (reg_import(db, doc, actor_default(opts[0].value), &counts, &err) < 0) {
        json_decref(doc);
        reg_db_free(db);
        return fail(err);
    }
    json_decref(doc);
    reg_db_free(db);
    if (c->json) {
        json_t *j = json_pack("{si si si si}", "prompts", counts.prompts,
                              "versions", counts.versions, "labels", counts.labels,
                              "experiments", counts.experiments);
        print_json(j);
        json_decref(j);
    } else {
        printf("imported %d prompts, %d versions, %d label moves, %d experiments\n",
               counts.prompts, counts.versions, counts.labels, counts.experiments);
    }
    return 0;
}

static int cmd_help(struct cli *c);

/* ---- samples: the gateway's exposures as the evaluator's input --------- */

static int sample_print(void *arg, json_t *sample)
{
    FILE *out = arg;

    if (json_dumpf(sample, out, JSON_COMPACT | JSON_REAL_PRECISION(15)) < 0
        || fputc('\n', out) == EOF)
        return -1;
    return 0;
}

static int cmd_samples(struct cli *c)
{
    struct opt opts[] = {{"--experiment", NULL, 0, 0, 0, NULL, NULL},
                         {"--since", NULL, 0, 0, 0, NULL, NULL},
                         {"--from", NULL, 0, 0, 0, NULL, NULL},
                         {"-o", "--output", 0, 0, 0, NULL, NULL},
                         {0}};
    const char *pos[1];
    struct reg_db *db = NULL;
    FILE *out = stdout;
    char *err = NULL;
    size_t n = 0;
    int npos, rc = 1, r;

    if (parse_opts(c, "samples", opts, pos, 1, &npos))
        goto done;
    if (npos != 1 || strcmp(pos[0], "export") != 0) {
        usage("samples", "want 'samples export --experiment PROMPT@LABEL'");
        goto done;
    }
    if (opts[0].value == NULL) {
        usage("samples", "export needs --experiment PROMPT@LABEL "
              "('promptctl experiment list' names them)");
        goto done;
    }
    if (opts[3].value && (out = fopen(opts[3].value, "w")) == NULL) {
        die_msg("cannot open '%s': %s", opts[3].value, errstr(errno));
        goto done;
    }
    if (opts[2].value) {
        r = reg_samples_export_file(opts[2].value, opts[0].value,
                                    opts[1].value, sample_print, out, &n, &err);
    } else {
        if ((db = open_db(c, 0, &err)) == NULL) {
            fail(err);
            goto done;
        }
        r = reg_samples_export(db, opts[0].value, opts[1].value, sample_print,
                               out, &n, &err);
    }
    if (r < 0) {
        fail(err);
        goto done;
    }
    if (fflush(out) != 0 || ferror(out)) {
        die_msg("cannot write samples: %s", errstr(errno));
        goto done;
    }
    fprintf(stderr, "promptctl: exported %zu samples of '%s'\n", n,
            opts[0].value);
    rc = 0;
done:
    if (out != stdout)
        fclose(out);
    reg_db_free(db);
    free_opts(opts);
    return rc;
}

static const struct verb verbs[] = {
    {"init", cmd_init, "init",
     "Create the registry database (or bring it to this binary's schema).\n"
     "The path is --db PATH, else $PROMPTGATE_DB, else ./promptgate.db.\n"
     "\nexample:\n  promptctl init --db /var/lib/promptgate/promptgate.db\n"},
    {"migrate", cmd_migrate, "migrate [--status]",
     "Apply pending schema migrations (each in a transaction, recorded with its\n"
     "checksum). --status only shows where the database stands. A database newer\n"
     "than this binary, or one whose applied migration was edited, is refused.\n"},
    {"publish", cmd_publish,
     "publish NAME -f FILE [-m MESSAGE] [--author A] [--description TEXT]",
     "Add the next version of prompt NAME (created on first publish). Versions\n"
     "are immutable; publishing the same content as the latest version adds\n"
     "nothing and prints that version.\n"
     "\nFILE (- for stdin) is either plain text, sent as one user message:\n"
     "  Write a product description for {{product_name}}.\n"
     "or JSON with messages and optional model params:\n"
     "  {\"messages\": [{\"role\": \"system\", \"content\": \"You write shop copy.\"},\n"
     "                {\"role\": \"user\", \"content\": \"Describe {{product_name}}.\"}],\n"
     "   \"params\": {\"model\": \"qwen2.5-7b\", \"temperature\": 0.7, \"max_tokens\": 256}}\n"
     "{{name}} marks a variable; the list is derived and shown by 'show'.\n"
     "NAME: lowercase letters, digits, _ . - (e.g. product_copy).\n"
     "\nexample:\n  promptctl publish product_copy -f copy.json -m \"shorter intro\"\n"},
    {"list", cmd_list, "list",
     "List prompts with their latest version and labels.\n"},
    {"show", cmd_show, "show NAME[@LABEL|@VERSION]",
     "Show one version: its messages, params, variables and labels.\n"
     "NAME alone is the latest version.\n"
     "\nexamples:\n  promptctl show product_copy@production\n  promptctl show product_copy@3\n"},
    {"versions", cmd_versions, "versions NAME",
     "List every version of a prompt with author, message and labels.\n"},
    {"diff", cmd_diff, "diff NAME A B",
     "Unified diff of two versions' templates and params. A and B are\n"
     "version numbers or labels.\n\nexample:\n  promptctl diff product_copy production 3\n"},
    {"label", cmd_label, "label NAME VERSION LABEL [--author A]",
     "Point LABEL (production, staging, any [a-z0-9_-]+) at VERSION. Every\n"
     "move is kept in the history ('log'); 'latest' is built in and always\n"
     "means the newest version.\n\nexample:\n  promptctl label product_copy 2 production\n"},
    {"rollback", cmd_rollback, "rollback NAME LABEL [--author A]",
     "Move LABEL back to where it pointed before its last move. Repeat to go\n"
     "further back.\n\nexample:\n  promptctl rollback product_copy production\n"},
    {"log", cmd_log, "log NAME",
     "Show the label history of a prompt: when, which label, from which\n"
     "version to which, and who.\n"},
    {"render", cmd_render,
     "render NAME[@LABEL|@VERSION] [--var K=V ...] [--vars FILE.json] [--user ID]",
     "Print the messages the gateway would send. A missing variable is an\n"
     "error that names it; values are inserted verbatim. --user ID resolves\n"
     "like the gateway, following a running experiment on the label.\n"
     "\nexample:\n  promptctl render product_copy@production --var product_name=\"Trail shoe\"\n"},
    {"experiment", cmd_experiment,
     "experiment start NAME --label L --arm VERSION:WEIGHT ... [--salt S]\n"
     "       promptctl experiment stop NAME[@LABEL]\n"
     "       promptctl experiment list [NAME] [--running]",
     "Split the traffic of one label between versions. Weights are percents\n"
     "and sum to 100; a label has at most one running experiment. A user is\n"
     "assigned an arm by a stable hash of the experiment, its salt and the\n"
     "user id, so the same user always sees the same version.\n"
     "\nexample (50/50 between versions 2 and 3 on production):\n"
     "  promptctl experiment start product_copy --label production --arm 2:50 --arm 3:50\n"
     "  promptctl experiment stop product_copy@production\n"},
    {"export", cmd_export, "export [-o FILE]",
     "Write every prompt, version, label (with history) and experiment as one\n"
     "JSON document, to stdout or FILE. 'import' reads it back.\n"},
    {"import", cmd_import, "import FILE [--author A]",
     "Import a document made by 'export' (- for stdin), in one transaction.\n"
     "Idempotent: what is already there is skipped; a version number that\n"
     "exists with other content is a conflict and nothing is imported.\n"},
    {"samples", cmd_samples,
     "samples export --experiment PROMPT@LABEL [--since T] [--from FILE] [-o FILE]",
     "Write one A/B sample per exposure the gateway recorded for an\n"
     "experiment, as JSON lines in prompteval's input format: version, user,\n"
     "variables, facts (when the variables carry them), output (when the\n"
     "gateway logs outputs), impressions, clicks and conversions (from\n"
     "POST /v1/feedback events \"click\" and \"conversion\") and every outcome.\n"
     "--since keeps exposures at or after an ISO-8601 UTC time; --from reads\n"
     "the gateway's JSON-lines exposure log instead of the database.\n"
     "\nexample:\n"
     "  promptctl samples export --experiment product_copy@production > samples.jsonl\n"
     "  prompteval run samples.jsonl --db promptgate.db\n"},
    {"help", cmd_help, "help [VERB]", "Show help for all verbs or one.\n"},
    {NULL, NULL, NULL, NULL}};

static const struct verb *find_verb(const char *name)
{
    for (const struct verb *v = verbs; v->name; v++)
        if (strcmp(v->name, name) == 0)
            return v;
    return NULL;
}

static void overview(FILE *f)
{
    fprintf(f,
        "promptctl - the prompt registry: publish immutable prompt versions,\n"
        "label them, roll back, split traffic between them, export/import.\n"
        "\nusage: promptctl [--db PATH] [--json] VERB [ARGS]\n\nverbs:\n");
    for (const struct verb *v = verbs; v->name; v++) {
        /* multi-line synopses: one verb line each, aligned */
        for (const char *s = v->synopsis, *nl; s; s = nl ? nl + 1 : NULL) {
            nl = strchr(s, '\n');
            while (*s == ' ')
                s++;
            if (strncmp(s, "promptctl ", 10) == 0)
                s += 10;
            fprintf(f, "  %.*s\n", nl ? (int)(nl - s) : (int)strlen(s), s);
        }
    }
    fprintf(f,
        "\noptions:\n"
        "  --db PATH   registry database (default $PROMPTGATE_DB or ./promptgate.db)\n"
        "  --json      machine-readable output on every read verb\n"
        "  -h, --help  this help; 'promptctl help VERB' for one verb\n"
        "  --author A  who made a change (default $PROMPTCTL_AUTHOR, else $USER)\n"
        "\na first session:\n"
        "  promptctl init\n"
        "  promptctl publish product_copy -f v1.txt -m \"first\"\n"
        "  promptctl publish product_copy -f v2.json -m \"system prompt\"\n"
        "  promptctl publish product_copy -f v3.json -m \"shorter\"\n"
        "  promptctl label product_copy 1 production\n"
        "  promptctl label product_copy 2 production\n"
        "  promptctl experiment start product_copy --label production --arm 2:50 --arm 3:50\n"
        "  promptctl render product_copy@production --var product_name=Kettle --user alice\n"
        "  promptctl experiment stop product_copy@production\n"
        "  promptctl rollback product_copy production\n"
        "  promptctl export -o backup.json\n"
        "(v1.txt: plain text such as 'Describe {{product_name}}.'; v2.json: see\n"
        "'promptctl help publish'; rollback moves production back to version 1)\n"
        "\nexit status: 0 on success, 1 on error (one line on stderr).\n");
}

static int cmd_help(struct cli *c)
{
    const struct verb *v;

    if (c->argc == 0) {
        overview(stdout);
        return 0;
    }
    if ((v = find_verb(c->argv[0])) == NULL) {
        die_msg("no verb '%s' (see 'promptctl help')", c->argv[0]);
        return 1;
    }
    printf("usage: promptctl %s\n\n%s", v->synopsis, v->help);
    printf("\nevery verb takes --db PATH and --json.\n");
    return 0;
}

int main(int argc, char **argv)
{
    struct cli c = {NULL, 0, 0, NULL};
    const struct verb *v = NULL;
    int rc, want_help = 0;

    c.db_path = getenv("PROMPTGATE_DB");
    if (c.db_path == NULL || *c.db_path == '\0')
        c.db_path = "promptgate.db";
    if (argc - 1 > ARGS_MAX) {
        die_msg("too many arguments (at most %d)", ARGS_MAX);
        return 1;
    }
    c.argv = calloc((size_t)argc + 1, sizeof(char *));
    if (c.argv == NULL)
        return fail(NULL);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--db") == 0) {
            if (i + 1 >= argc) {
                die_msg("--db needs a PATH");
                free(c.argv);
                return 1;
            }
            c.db_path = argv[++i];
        } else if (strncmp(a, "--db=", 5) == 0) {
            c.db_path = a + 5;
        } else if (strcmp(a, "--json") == 0) {
            c.json = 1;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            want_help = 1;
        } else if (v == NULL && c.argc == 0 && a[0] != '-') {
            if ((v = find_verb(a)) == NULL) {
                die_msg("no verb '%s' (see 'promptctl help')", a);
                free(c.argv);
                return 1;
            }
        } else {
            c.argv[c.argc++] = argv[i];
        }
    }
    if (want_help || v == NULL) {
        if (v) {
            struct cli h = {c.db_path, 0, 1, NULL};
            char *args[1] = {(char *)v->name};
            h.argv = args;
            rc = cmd_help(&h);
        } else if (v == NULL && !want_help && c.argc > 0) {
            die_msg("missing VERB before '%s' (see 'promptctl help')", c.argv[0]);
            rc = 1;
        } else if (v == NULL && !want_help) {
            overview(stderr);
            rc = 1;
        } else {
            overview(stdout);
            rc = 0;
        }
        free(c.argv);
        return rc;
    }
    if (strlen(c.db_path) == 0 || strlen(c.db_path) > 4000) {
        die_msg("invalid --db path");
        free(c.argv);
        return 1;
    }
    {
        char **base = c.argv;
        rc = v->run(&c);
        free(base);
    }
    return rc;
}
