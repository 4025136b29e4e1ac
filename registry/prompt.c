/*
 * prompt.c - prompts and their immutable versions: parsing a publish file,
 * publishing version N+1, and reading versions back.
 *
 * Design: a version's content is its messages and params; its hash is the
 * SHA-256 of their canonical JSON (compact, keys sorted), so "publish the
 * same content again" is detected whatever the file's layout. The variable
 * list is derived once, at publish time, with the same scanner rendering
 * uses (render.c).
 *
 * Invariants:
 *  1. Versions are immutable and numbered 1, 2, ... without gaps; triggers
 *     in the schema enforce both, not only this code.
 *  2. Publishing reads the latest version and inserts the next one inside
 *     one BEGIN IMMEDIATE transaction, so concurrent publishers serialise
 *     and never collide on a number.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "registry/internal.h"

#define VERSION_COLUMNS \
    "SELECT version, messages, params, variables, hash, message, author," \
    " created_at FROM versions"

static const char *const roles[] = {
    "system", "developer", "user", "assistant", NULL
};

void reg_version_free(struct reg_version *v)
{
    if (v == NULL)
        return;
    free(v->prompt);
    free(v->messages);
    json_decref(v->params);
    json_decref(v->variables);
    free(v->hash);
    free(v->message);
    free(v->author);
    free(v->created_at);
    free(v);
}

/* 1 when s[0..n) is valid UTF-8 without NUL bytes */
static int utf8_valid(const unsigned char *s, size_t n)
{
    size_t i = 0;

    while (i < n) {
        unsigned char c = s[i];
        size_t k;
        if (c == 0)
            return 0;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf)
            k = 1;
        else if (c >= 0xe0 && c <= 0xef)
            k = 2;
        else if (c >= 0xf0 && c <= 0xf4)
            k = 3;
        else
            return 0;
        if (i + k >= n)
            return 0;
        for (size_t j = 1; j <= k; j++)
            if ((s[i + j] & 0xc0) != 0x80)
                return 0;
        i += k + 1;
    }
    return 1;
}

static int check_messages(const json_t *messages, char **err)
{
    size_t i;
    const json_t *m;

    if (!json_is_array(messages) || json_array_size(messages) == 0) {
        reg_err(err, "\"messages\" must be a non-empty array of"
                " {\"role\", \"content\"} objects");
        return -1;
    }
    if (json_array_size(messages) > REG_MESSAGES_MAX) {
        reg_err(err, "too many messages: at most %d", REG_MESSAGES_MAX);
        return -1;
    }
    json_array_foreach(messages, i, m) {
        const char *key, *role;
        const json_t *v;
        int ok = 0;

        if (!json_is_object(m)) {
            reg_err(err, "messages[%zu]: want an object with \"role\" and"
                    " \"content\"", i);
            return -1;
        }
        json_object_foreach((json_t *)m, key, v) {
            if (strcmp(key, "role") != 0 && strcmp(key, "content") != 0
                && strcmp(key, "name") != 0) {
                reg_err(err, "messages[%zu]: unknown key '%s' (want role,"
                        " content, name)", i, key);
                return -1;
            }
            if (!json_is_string(v)) {
                reg_err(err, "messages[%zu].%s: want a string", i, key);
                return -1;
            }
        }
        role = json_string_value(json_object_get(m, "role"));
        if (role == NULL || json_object_get(m, "content") == NULL) {
            reg_err(err, "messages[%zu]: \"role\" and \"content\" are required", i);
            return -1;
        }
        for (int r = 0; roles[r]; r++)
            ok |= strcmp(role, roles[r]) == 0;
        if (!ok) {
            reg_err(err, "messages[%zu].role: '%s' is not one of system,"
                    " developer, user, assistant", i, role);
            return -1;
        }
    }
    return 0;
}

static int check_params(const json_t *params, char **err)
{
    const char *key;
    const json_t *v;

    if (!json_is_object(params)) {
        reg_err(err, "\"params\" must be an object such as {\"model\":"
                " \"qwen2.5-7b\", \"temperature\": 0.7}");
        return -1;
    }
    json_object_foreach((json_t *)params, key, v) {
        if (strlen(key) > 64) {
            reg_err(err, "params: key longer than 64 bytes");
            return -1;
        }
        if (strcmp(key, "model") == 0 && !json_is_string(v)) {
            reg_err(err, "params.model: want a string");
            return -1;
        }
        if (strcmp(key, "temperature") == 0
            && (!json_is_number(v) || json_number_value(v) < 0
                || json_number_value(v) > 2)) {
            reg_err(err, "params.temperature: want a number from 0 to 2");
            return -1;
        }
        if (strcmp(key, "top_p") == 0
            && (!json_is_number(v) || json_number_value(v) < 0
                || json_number_value(v) > 1)) {
            reg_err(err, "params.top_p: want a number from 0 to 1");
            return -1;
        }
        if (strcmp(key, "max_tokens") == 0
            && (!json_is_integer(v) || json_integer_value(v) < 1)) {
            reg_err(err, "params.max_tokens: want a positive integer");
            return -1;
        }
        if (strcmp(key, "messages") == 0 || strcmp(key, "stream") == 0
            || strcmp(key, "prompt") == 0) {
            reg_err(err, "params.%s: not a model parameter (the request sets it)",
                    key);
            return -1;
        }
    }
    return 0;
}

int reg_content_parse(const char *text, size_t len, json_t **messages,
                      json_t **params, char **err)
{
    size_t i = 0, j;
    json_t *doc = NULL, *vars;

    *messages = *params = NULL;
    if (len > REG_TEMPLATE_MAX) {
        reg_err(err, "prompt file is larger than %d bytes", REG_TEMPLATE_MAX);
        return -1;
    }
    if (!utf8_valid((const unsigned char *)text, len)) {
        reg_err(err, "prompt file is not valid UTF-8 text");
        return -1;
    }
    while (i < len && (text[i] == ' ' || text[i] == '\t' || text[i] == '\n'
                       || text[i] == '\r'))
        i++;
    j = i + 1;
    while (j < len && (text[j] == ' ' || text[j] == '\t' || text[j] == '\n'
                       || text[j] == '\r'))
        j++;
    /* JSON when it opens like an object with a key; "{{var}} ..." is text */
    if (i < len && text[i] == '{' && j < len && (text[j] == '"' || text[j] == '}')) {
        json_error_t jerr;
        const char *key;
        json_t *v;

        doc = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
        if (doc == NULL) {
            reg_err(err, "invalid JSON in prompt file: %s at line %d column %d",
                    jerr.text, jerr.line, jerr.column);
            return -1;
        }
        json_object_foreach(doc, key, v) {
            if (strcmp(key, "messages") != 0 && strcmp(key, "params") != 0) {
                reg_err(err, "prompt file: unknown key '%s' (want \"messages\""
                        " and optional \"params\")", key);
                goto fail;
            }
        }
        *messages = json_incref(json_object_get(doc, "messages"));
        *params = json_incref(json_object_get(doc, "params"));
        if (*params == NULL)
            *params = json_object();
        json_decref(doc);
        doc = NULL;
    } else {
        size_t n = len;
        while (n > 0 && (text[n - 1] == '\n' || text[n - 1] == '\r'))
            n--;
        if (n == 0) {
            reg_err(err, "prompt file is empty");
            return -1;
        }
        *messages = json_pack("[{ss s:s%}]", "role", "user", "content", text, n);
        *params = json_object();
    }
    if (*messages == NULL) {
        reg_err(err, "prompt file has no \"messages\"");
        goto fail;
    }
    if (check_messages(*messages, err) < 0 || check_params(*params, err) < 0)
        goto fail;
    if ((vars = reg_template_variables(*messages, err)) == NULL)
        goto fail;
    json_decref(vars);
    return 0;
fail:
    json_decref(doc);
    json_decref(*messages);
    json_decref(*params);
    *messages = *params = NULL;
    return -1;
}

int reg_content_check(const json_t *messages, const json_t *params, char **err)
{
    json_t *vars;

    if (check_messages(messages, err) < 0 || check_params(params, err) < 0)
        return -1;
    if ((vars = reg_template_variables(messages, err)) == NULL)
        return -1;
    json_decref(vars);
    return 0;
}

char *reg_content_hash(const json_t *messages, const json_t *params)
{
    json_t *doc = json_pack("{sOsO}", "messages", messages, "params", params);
    char *s, *hex = NULL;

    if (doc == NULL)
        return NULL;
    s = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(doc);
    if (s && (hex = malloc(65)) != NULL && reg_sha256_hex(s, strlen(s), hex) < 0) {
        free(hex);
        hex = NULL;
    }
    free(s);
    return hex;
}

int reg_text_check(const char *what, const char *s, size_t max, char **err)
{
    if (s && strlen(s) > max) {
        reg_err(err, "%s is longer than %zu bytes", what, max);
        return -1;
    }
    if (s && !utf8_valid((const unsigned char *)s, strlen(s))) {
        reg_err(err, "%s is not valid UTF-8", what);
        return -1;
    }
    return 0;
}

int reg_publish(struct reg_db *db, const char *name, const json_t *messages,
                const json_t *params, const char *message, const char *author,
                const char *description, int *version_out, int *created,
                char **err)
{
    sqlite3_stmt *st = NULL;
    json_t *vars = NULL;
    char *hash = NULL, *jm = NULL, *jp = NULL, *jv = NULL;
    int64_t pid;
    int latest = 0, rc, ret = -1;

    *created = 0;
    if (!reg_name_valid(name)) {
        reg_err(err, "invalid prompt name '%s': want [a-z0-9][a-z0-9_.-]*,"
                " at most %d bytes", name ? name : "", REG_NAME_MAX);
        return -1;
    }
    if (reg_text_check("message", message, REG_MESSAGE_MAX, err) < 0
        || reg_text_check("author", author, REG_AUTHOR_MAX, err) < 0
        || reg_text_check("description", description, REG_DESC_MAX, err) < 0)
        return -1;
    if (params == NULL)
        params = json_object();
    else
        json_incref((json_t *)params);
    if (check_messages(messages, err) < 0 || check_params(params, err) < 0)
        goto out;
    if ((vars = reg_template_variables(messages, err)) == NULL)
        goto out;
    hash = reg_content_hash(messages, params);
    jm = json_dumps(messages, JSON_COMPACT);
    jp = json_dumps(params, JSON_COMPACT);
    jv = json_dumps(vars, JSON_COMPACT);
    if (!hash || !jm || !jp || !jv) {
        reg_err(err, "cannot publish '%s': out of memory", name);
        goto out;
    }
    if (reg_db_begin(db, err) < 0)
        goto out;
    pid = reg_db_prompt_id(db, name, NULL);
    if (pid < 0) {
        reg_err(err, "cannot publish '%s': %s", name, sqlite3_errmsg(db->sql));
        goto fail;
    }
    if (pid == 0) {
        st = reg_db_prepare(db, "INSERT INTO prompts (name, description) VALUES (?, ?)", err);
        if (st == NULL)
            goto fail;
        sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, description ? description : "", -1, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_DONE) {
            reg_err(err, "cannot create prompt '%s': %s", name, sqlite3_errmsg(db->sql));
            goto fail;
        }
        sqlite3_finalize(st);
        st = NULL;
        pid = sqlite3_last_insert_rowid(db->sql);
    } else if (description) {
        st = reg_db_prepare(db, "UPDATE prompts SET description = ? WHERE id = ?", err);
        if (st == NULL)
            goto fail;
        sqlite3_bind_text(st, 1, description, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, pid);
        rc = sqlite3_step(st);
        sqlite3_finalize(st);
        st = NULL;
        if (rc != SQLITE_DONE) {
            reg_err(err, "cannot describe '%s': %s", name, sqlite3_errmsg(db->sql));
            goto fail;
        }
    }
    st = reg_db_prepare(db, "SELECT version, hash FROM versions WHERE prompt_id = ?"
                        " ORDER BY version DESC LIMIT 1", err);
    if (st == NULL)
        goto fail;
    sqlite3_bind_int64(st, 1, pid);
    if (sqlite3_step(st) == SQLITE_ROW) {
        latest = sqlite3_column_int(st, 0);
        if (strcmp((const char *)sqlite3_column_text(st, 1), hash) == 0) {
            /* same content as the latest version: nothing to add */
            sqlite3_finalize(st);
            st = NULL;
            if (reg_db_commit(db, err) < 0)
                goto out;
            *version_out = latest;
            ret = 0;
            goto out;
        }
    }
    sqlite3_finalize(st);
    st = reg_db_prepare(db, "INSERT INTO versions (prompt_id, version, messages,"
                        " params, variables, hash, message, author)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)", err);
    if (st == NULL)
        goto fail;
    sqlite3_bind_int64(st, 1, pid);
    sqlite3_bind_int(st, 2, latest + 1);
    sqlite3_bind_text(st, 3, jm, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, jp, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, jv, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 6, hash, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 7, message ? message : "", -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 8, author ? author : "", -1, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_DONE) {
        reg_err(err, "cannot publish '%s': %s", name, sqlite3_errmsg(db->sql));
        goto fail;
    }
    sqlite3_finalize(st);
    st = NULL;
    if (reg_db_commit(db, err) < 0)
        goto out;
    *version_out = latest + 1;
    *created = 1;
    ret = 0;
    goto out;
fail:
    sqlite3_finalize(st);
    reg_db_rollback(db);
out:
    json_decref((json_t *)params);
    json_decref(vars);
    free(hash);
    free(jm);
    free(jp);
    free(jv);
    return ret;
}

int reg_prompt_describe(struct reg_db *db, const char *name,
                        const char *description, char **err)
{
    sqlite3_stmt *st;
    int rc;

    if (reg_text_check("description", description, REG_DESC_MAX, err) < 0)
        return -1;
    if (reg_db_begin(db, err) < 0)
        return -1;
    if (reg_db_prompt_id(db, name, err) <= 0)
        goto fail;
    st = reg_db_prepare(db, "UPDATE prompts SET description = ? WHERE name = ?", err);
    if (st == NULL)
        goto fail;
    sqlite3_bind_text(st, 1, description ? description : "", -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        reg_err(err, "cannot describe '%s': %s", name, sqlite3_errmsg(db->sql));
        goto fail;
    }
    return reg_db_commit(db, err);
fail:
    reg_db_rollback(db);
    return -1;
}

struct reg_version *reg_version_from_row(sqlite3_stmt *st, const char *prompt,
                                         char **err)
{
    struct reg_version *v = calloc(1, sizeof(*v));

    if (v == NULL)
        goto oom;
    v->version = sqlite3_column_int(st, 0);
    v->messages = reg_message_decode((const char *)sqlite3_column_text(st, 1),
                                     (size_t)sqlite3_column_bytes(st, 1),
                                     &v->n_messages, NULL);
    v->params = json_loads((const char *)sqlite3_column_text(st, 2), 0, NULL);
    v->variables = json_loads((const char *)sqlite3_column_text(st, 3), 0, NULL);
    v->hash = reg_strdup_col0(st, 4);
    v->message = reg_strdup_col0(st, 5);
    v->author = reg_strdup_col0(st, 6);
    v->created_at = reg_strdup_col0(st, 7);
    v->prompt = strdup(prompt);
    if (!v->messages || !v->params || !v->variables) {
        reg_err(err, "version %d of '%s' holds invalid JSON", v->version, prompt);
        reg_version_free(v);
        return NULL;
    }
    if (!v->hash || !v->message || !v->author || !v->created_at || !v->prompt)
        goto oom;
    return v;
oom:
    reg_err(err, "cannot read version: out of memory");
    reg_version_free(v);
    return NULL;
}

/* the version `label` points at: >0, 0 when absent (error set), -1 */
static int label_version(struct reg_db *db, int64_t pid, const char *name,
                         const char *label, char **err)
{
    sqlite3_stmt *st;
    int v = 0, rc;

    st = reg_db_prepare(db, "SELECT version FROM labels WHERE prompt_id = ?"
                        " AND label = ?", err);
    if (st == NULL)
        return -1;
    sqlite3_bind_int64(st, 1, pid);
    sqlite3_bind_text(st, 2, label, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        v = sqlite3_column_int(st, 0);
    else if (rc == SQLITE_DONE)
        reg_err(err, "prompt '%s' has no label '%s'", name, label);
    else {
        reg_err(err, "cannot read labels: %s", sqlite3_errmsg(db->sql));
        v = -1;
    }
    sqlite3_finalize(st);
    return v;
}

struct reg_version *reg_version_get(struct reg_db *db, const char *name,
                                    const char *label, int version, char **err)
{
    sqlite3_stmt *st;
    struct reg_version *v = NULL;
    int64_t pid;
    int rc;

    if ((pid = reg_db_prompt_id(db, name, err)) <= 0)
        return NULL;
    if (version <= 0 && label && *label && strcmp(label, "latest") != 0) {
        if ((version = label_version(db, pid, name, label, err)) <= 0)
            return NULL;
    }
    if (version > 0)
        st = reg_db_prepare(db, VERSION_COLUMNS " WHERE prompt_id = ? AND version = ?", err);
    else
        st = reg_db_prepare(db, VERSION_COLUMNS " WHERE prompt_id = ?"
                            " ORDER BY version DESC LIMIT 1", err);
    if (st == NULL)
        return NULL;
    sqlite3_bind_int64(st, 1, pid);
    if (version > 0)
        sqlite3_bind_int(st, 2, version);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        v = reg_version_from_row(st, name, err);
    else if (rc == SQLITE_DONE && version > 0)
        reg_err(err, "prompt '%s' has no version %d", name, version);
    else if (rc == SQLITE_DONE)
        reg_err(err, "prompt '%s' has no versions", name);
    else
        reg_err(err, "cannot read '%s': %s", name, sqlite3_errmsg(db->sql));
    sqlite3_finalize(st);
    return v;
}

void reg_versions_list_free(struct reg_version **list, size_t n)
{
    if (list == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        reg_version_free(list[i]);
    free(list);
}

int reg_versions_list(struct reg_db *db, const char *name,
                      struct reg_version ***out, size_t *n, char **err)
{
    sqlite3_stmt *st;
    struct reg_version **list = NULL;
    size_t len = 0, cap = 0;
    int64_t pid;
    int rc;

    *out = NULL;
    *n = 0;
    if ((pid = reg_db_prompt_id(db, name, err)) <= 0)
        return -1;
    st = reg_db_prepare(db, VERSION_COLUMNS " WHERE prompt_id = ? ORDER BY version", err);
    if (st == NULL)
        return -1;
    sqlite3_bind_int64(st, 1, pid);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (len == cap) {
            struct reg_version **nl;
            cap = cap ? cap * 2 : 16;
            if ((nl = realloc(list, cap * sizeof(*nl))) == NULL) {
                reg_err(err, "cannot list versions: out of memory");
                goto fail;
            }
            list = nl;
        }
        if ((list[len] = reg_version_from_row(st, name, err)) == NULL)
            goto fail;
        len++;
    }
    if (rc != SQLITE_DONE) {
        reg_err(err, "cannot list versions: %s", sqlite3_errmsg(db->sql));
        goto fail;
    }
    sqlite3_finalize(st);
    *out = list;
    *n = len;
    return 0;
fail:
    sqlite3_finalize(st);
    reg_versions_list_free(list, len);
    return -1;
}

void reg_prompt_list_free(struct reg_prompt_info *list, size_t n)
{
    if (list == NULL)
        return;
    for (size_t i = 0; i < n; i++) {
        free(list[i].name);
        free(list[i].description);
        free(list[i].created_at);
        json_decref(list[i].labels);
    }
    free(list);
}

int reg_prompt_list(struct reg_db *db, struct reg_prompt_info **out,
                    size_t *n, char **err)
{
    sqlite3_stmt *st;
    struct reg_prompt_info *list = NULL;
    size_t len = 0, cap = 0;
    int rc;

    *out = NULL;
    *n = 0;
    st = reg_db_prepare(db, "SELECT p.name, p.description, p.created_at,"
        " (SELECT coalesce(max(version), 0) FROM versions WHERE prompt_id = p.id),"
        " (SELECT count(*) FROM versions WHERE prompt_id = p.id),"
        " (SELECT json_group_object(label, version) FROM"
        "   (SELECT label, version FROM labels WHERE prompt_id = p.id ORDER BY label))"
        " FROM prompts p ORDER BY p.name", err);
    if (st == NULL)
        return -1;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct reg_prompt_info *p;
        if (len == cap) {
            cap = cap ? cap * 2 : 16;
            if ((p = realloc(list, cap * sizeof(*p))) == NULL) {
                reg_err(err, "cannot list prompts: out of memory");
                goto fail;
            }
            list = p;
        }
        p = &list[len++];
        p->name = reg_strdup_col0(st, 0);
        p->description = reg_strdup_col0(st, 1);
        p->created_at = reg_strdup_col0(st, 2);
        p->latest = sqlite3_column_int(st, 3);
        p->n_versions = sqlite3_column_int(st, 4);
        p->labels = json_loads((const char *)sqlite3_column_text(st, 5), 0, NULL);
        if (p->labels == NULL)
            p->labels = json_object();
    }
    if (rc != SQLITE_DONE) {
        reg_err(err, "cannot list prompts: %s", sqlite3_errmsg(db->sql));
        goto fail;
    }
    sqlite3_finalize(st);
    *out = list;
    *n = len;
    return 0;
fail:
    sqlite3_finalize(st);
    reg_prompt_list_free(list, len);
    return -1;
}
