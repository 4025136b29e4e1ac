/*
 * fuzz_prompt.c - libFuzzer target: a chat request naming a registry prompt,
 * through the resolve-prompt stage (gw_prompt_resolve, gateway/prompt.c):
 * the "prompt" reference, the variables, reg_render_json and the rewrite
 * of the body.
 *
 * The input is the request body. As handle_inference (gateway/proxy.c)
 * does, it is scanned with proxy.c's fields, and a body with a "prompt"
 * object goes to gw_prompt_resolve against a snapshot of a small registry
 * made once in a temporary directory (prompts with variables, params, a
 * named message, escapes, a label and an experiment).
 *
 * prompt.c is compiled into this file (its statics are needed: the
 * gw_prompts structure, the pending records) with GW_PROMPT_CHECK_FIELDS,
 * its own check that the fields it moves equal a fresh scan of the new
 * body. gw_proxy_error, the stage's one call into proxy.c, is replaced by
 * a recorder below (and gw_proxy_log, which only POST /v1/feedback calls,
 * by a trap): no connection, no loop. Oracles after a rewrite: the new
 * body is a JSON object with "messages" and without "prompt", and holds
 * every other member of the request with the same value.
 */
#define GW_PROMPT_CHECK_FIELDS 1
#include "gateway/prompt.c"

#include <stdint.h>

#define DEPTH 128 /* MAX_JSON_DEPTH in gateway/proxy.c */
#define MODEL_MAX 256

static struct gw_gateway gw;
static int last_status;

/* The error sink of gw_prompt_resolve (proxy.c answers the client). */
void gw_proxy_error(struct gw_gateway *g, struct gw_http_req *req,
                    struct gw_reqlog *rl, int status, const char *code,
                    const char *message)
{
    (void)g, (void)req;
    if (status < 400 || code == NULL || message == NULL || *message == '\0')
        abort();
    rl->status = status;
    rl->error = code;
    last_status = status;
}

/* Only gw_prompt_feedback logs by itself; this target never calls it. */
void gw_proxy_log(struct gw_gateway *g, struct gw_http_req *req,
                  const struct gw_reqlog *rl)
{
    (void)g, (void)req, (void)rl;
    abort();
}

static void die(const char *what, const char *err)
{
    fprintf(stderr, "fuzz_prompt: %s: %s\n", what, err ? err : "?");
    abort();
}

static void publish(struct reg_db *db, const char *name, const char *content)
{
    json_t *messages = NULL, *params = NULL;
    char *err = NULL;
    int version, created;

    if (reg_content_parse(content, strlen(content), &messages, &params,
                          &err) < 0 ||
        reg_publish(db, name, messages, params, "fuzz", "fuzz", NULL,
                    &version, &created, &err) < 0)
        die(name, err);
    json_decref(messages);
    json_decref(params);
}

/* The registry and the gateway's prompt state, once per process. */
static void setup(void)
{
    static char dir[] = "/tmp/fuzz_prompt.XXXXXX";
    static const struct reg_arm arms[2] = {{1, 50}, {2, 50}};
    char path[64], msg[256], *err = NULL;
    struct reg_db *db;

    if (mkdtemp(dir) == NULL)
        die("mkdtemp", strerror(errno));
    snprintf(path, sizeof(path), "%s/registry.db", dir);
    if ((db = reg_db_open(path, REG_DB_CREATE, &err)) == NULL)
        die("reg_db_open", err);
    publish(db, "greet",
            "{\"messages\":[{\"role\":\"system\",\"content\":\"You are a "
            "{{ tone }} helper.\"},{\"role\":\"user\",\"content\":\"Hello "
            "{{name}}, tell me about {{topic}} {{name}}.\"}],\"params\":"
            "{\"model\":\"gpt-4o-mini\",\"temperature\":0.2,"
            "\"max_tokens\":100}}");
    publish(db, "greet",
            "{\"messages\":[{\"role\":\"system\",\"name\":\"caf\\u00e9\","
            "\"content\":\"Say \\\"{{name}}\\\"\\n\\t\\u2603 {{x}}\"},"
            "{\"role\":\"user\",\"content\":\"{{topic}}\"}],\"params\":"
            "{\"model\":\"m\\\"2\",\"stop\":[\"\\n\"],\"response_format\":"
            "{\"type\":\"json_object\"},\"seed\":7,\"logprobs\":true,"
            "\"user\":null}}");
    publish(db, "plain", "Say hi to {{who}}\n");
    publish(db, "nomodel", "{\"messages\":[{\"role\":\"user\","
            "\"content\":\"static text\"}]}");
    if (reg_label_set(db, "greet", 1, "production", "fuzz", &err) < 0 ||
        reg_label_set(db, "greet", 1, "exp", "fuzz", &err) < 0 ||
        reg_experiment_start(db, "greet", "exp", arms, 2, "salt", "fuzz",
                             NULL, &err) < 0)
        die("labels", err);
    reg_db_free(db);

    gw.prompts = calloc(1, sizeof(*gw.prompts));
    if (gw.prompts == NULL)
        die("calloc", NULL);
    gw.prompts->sh = gw.prompts; /* the first worker's: owns the shared part */
    /* a writer that is never handed a record: it keeps the records' shared
     * strings (keep_str), until its table is full and they are copied */
    if ((gw.prompts->writer = gw_exposure_new(NULL, "/dev/null", 4, msg,
                                              sizeof(msg))) == NULL)
        die("gw_exposure_new", msg);
    if ((gw.prompts->snap = reg_snapshot_load(path, &err)) == NULL)
        die("reg_snapshot_load", err);
    unlink(path);
    snprintf(path, sizeof(path), "%s/registry.db-wal", dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/registry.db-shm", dir);
    unlink(path);
    rmdir(dir);
}

/* The rewritten body against the request it came from. */
static void check_rewrite(const char *orig, size_t orig_len,
                          const char *nbody, size_t nlen, const char *model)
{
    json_error_t e;
    json_t *o, *n, *v;
    const char *key;

    n = json_loadb(nbody, nlen, JSON_ALLOW_NUL, &e);
    if (n == NULL) {
        /* numbers jansson cannot hold, and keys with \u0000, which it
         * refuses (RFC 8259 allows them), came from the request */
        if (strstr(e.text, "too big") || strstr(e.text, "overflow") ||
            strstr(e.text, "NUL byte in object key"))
            return;
        fprintf(stderr, "%.*s\n", (int)nlen, nbody);
        die("rewritten body is not JSON", e.text);
    }
    if (!json_is_object(n) || json_object_get(n, "prompt") != NULL ||
        !json_is_array(json_object_get(n, "messages")))
        die("rewritten body lacks messages or keeps prompt", nbody);
    if (!json_is_string(json_object_get(n, "model")) ||
        strcmp(json_string_value(json_object_get(n, "model")), model) != 0)
        die("rewritten body's model is not the stage's", model);
    /* every member of a request without duplicate keys is kept as is */
    o = json_loadb(orig, orig_len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL,
                   &e);
    if (o != NULL) {
        json_object_foreach(o, key, v) {
            if (strcmp(key, "prompt") == 0)
                continue;
            if (!json_equal(v, json_object_get(n, key)))
                die("a member of the request changed", key);
        }
    }
    json_decref(o);
    json_decref(n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct gw_jscan_field f[8] = {{.key = "model"},
                                  {.key = "stream"},
                                  {.key = "max_tokens"},
                                  {.key = "max_completion_tokens"},
                                  {.key = "prompt"},
                                  {.key = "user"},
                                  {.key = "stream_options"},
                                  {.key = "n"}};
    struct gw_prompt_scan ps;
    struct gw_http_req req;
    struct gw_reqlog rl;
    struct gw_exposure_rec *r;
    char err[256], model[MODEL_MAX + 1];
    size_t n_members;
    int rc;

    if (gw.prompts == NULL)
        setup();
    /* handle_inference's checks before the stage; its scan captures the
     * prompt's members (odd sizes leave the stage to find them itself,
     * as for a caller that does not hook the scan) */
    if (size % 2 == 0)
        gw_prompt_scan_init(&ps, &f[4]);
    if (gw_jscan((const char *)data, size, DEPTH, f, 8, err,
                 sizeof(err)) < 0 || f[4].type != GW_JSON_OBJECT)
        return 0;
    model[0] = '\0';
    if (f[0].type != GW_JSON_NONE &&
        (f[0].type != GW_JSON_STRING || f[0].len == 0 ||
         f[0].len > MODEL_MAX ||
         gw_jscan_string(&f[0], model, sizeof(model)) < 0))
        return 0;

    memset(&req, 0, sizeof(req));
    memset(&rl, 0, sizeof(rl));
    req.path = "/v1/chat/completions";
    req.body = evbuffer_new();
    if (req.body == NULL || evbuffer_add(req.body, data, size) < 0)
        die("evbuffer", NULL);
    /* the fields must point into the body the stage reads; the members
     * counted as proxy.c counts them for every other input, so that both
     * of the stage's ways to find the params the request sets are fuzzed
     * (the fields it describes the new body with are checked either way) */
    if (gw_jscan_count((const char *)evbuffer_pullup(req.body, -1), size,
                       DEPTH, f, 8, &n_members, err, sizeof(err)) < 0)
        die("second scan", err);
    if (size & 1)
        n_members = (size_t)-1;
    rl.request_id = "fuzz-request-1";
    last_status = 0;

    rc = gw_prompt_resolve(&gw, &req, &rl, f, 8, n_members, 4, 5, NULL, model,
                           sizeof(model));
    if (rc < 0) {
        if (getenv("FUZZ_PROMPT_SHOW"))
            fprintf(stderr, "%d %s\n", last_status, rl.error);
        if (last_status == 0)
            die("resolve failed without answering", NULL);
    } else {
        size_t nlen = evbuffer_get_length(req.body);
        if (last_status != 0)
            die("resolve answered an error and went on", NULL);
        if (model[0] == '\0')
            die("resolved without a model", NULL);
        if (getenv("FUZZ_PROMPT_SHOW")) /* replaying one input: the result */
            fprintf(stderr, "%.*s\n", (int)nlen,
                    (const char *)evbuffer_pullup(req.body, -1));
        check_rewrite((const char *)data, size,
                      (const char *)evbuffer_pullup(req.body, -1), nlen,
                      model);
        /* the exposure record is pending until the request ends */
        if ((r = pending_take(gw.prompts, &req)) == NULL)
            die("no exposure record", NULL);
        gw_exposure_rec_free(r);
    }
    if (gw.prompts->n_pending != 0)
        die("an exposure record is left pending", NULL);
    evbuffer_free(req.body);
    free(req.rh);
    return 0;
}
