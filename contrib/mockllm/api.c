/*
 * api.c: mockllm's endpoints, faults and control surface.
 *
 * The OpenAI answers are written with printf-style calls straight into
 * evbuffers: model names are checked at start to need no JSON escaping,
 * and everything else in a success body is a number or a fixed word, so
 * the hot path needs no JSON serializer.  Error bodies, which carry user
 * input, go through jansson.  Chat and completion bodies are read by the
 * allocation-free scanner (scan.c); jansson parses a body only when the
 * scanner gives up (errors, unusual bodies), for embeddings, and for the
 * recorder, which then shares its tree with the endpoint.
 *
 * An exchange that outlives the handler is a job (struct mock_job):
 *
 *     DELAY --timer (delay-ms)--> answer --non-stream, token delay--> GEN
 *                                        --stream--> STREAM
 *     GEN --timer (tokens x token-delay-ms)--> answer sent, job freed
 *     STREAM --event written; timer / output drained--> STREAM
 *     STREAM --last event / close-after-chunks--> job freed, conn finished
 *     any --client closed--> job freed (job_on_close)
 *
 * Invariants:
 *  1. A job is detached from its conn (freed, or mock_http_set_job(NULL)
 *     in the DELAY timer) before the call that finishes its exchange, so
 *     a pipelined request processed by that call starts from a clean conn
 *     and the job's on_close can never run for the next exchange.
 *  2. active_streams counts STREAM jobs that are alive; stream_events
 *     counts the events they wrote (a paused reader stops it growing).
 *  3. The runtime fault's count is spent only by API requests that used it
 *     (a request with its own x-mock-fault header does not spend it).
 *
 * POST /v1/messages speaks Anthropic's Messages API (for the gateway's
 * "anthropic" provider): the same answers, faults and jobs, in Anthropic's
 * shapes (its errors, its SSE events), and it checks its input strictly
 * (unknown fields, a missing max_tokens or anthropic-version are 400s) so
 * that tests see every translation mistake of a client.
 */
#include "contrib/mockllm/api.h"

#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <jansson.h>

#include "contrib/mockllm/fault.h"
#include "contrib/mockllm/record.h"
#include "contrib/mockllm/scan.h"

#define STREAM_HIGH_WATER (64 * 1024)
#define EMBED_DEFAULT_DIM 8
#define EMBED_MAX_DIM 4096
#define EMBED_MAX_INPUTS 2048
#define TOK_CACHE 4096 /* tokens whose text is prebuilt */

struct mock_api {
    struct event_base *base;        /* borrowed */
    struct mock_http *http;         /* borrowed from main */
    char *models[MOCK_MAX_MODELS];  /* owned */
    size_t model_len[MOCK_MAX_MODELS];
    size_t n_models;
    char *tok_text;                 /* owned: "tok0 tok1 ... tok<TOK_CACHE-1>" */
    size_t tok_off[TOK_CACHE + 1];  /* length of the text of N tokens */
    char *models_body;              /* owned: GET /v1/models answer */
    size_t models_body_len;
    int tokens, token_delay_ms;
    struct mock_fault cli_fault;
    struct mock_fault rt_fault;
    int has_rt_fault;
    struct mock_record *rec;        /* owned, NULL with --no-record */
    unsigned long long count;
    unsigned long long next_id;
    long active_streams;
    unsigned long long stream_events; /* SSE events written by all streams */
    time_t started;
    char *api_key;                  /* owned: --api-key, or NULL */
};

enum job_phase { JOB_DELAY, JOB_GEN, JOB_STREAM };
enum endpoint { EP_CHAT, EP_COMPLETION, EP_MESSAGES };

struct mock_job {
    struct mock_api *api;           /* borrowed */
    struct mock_http_conn *conn;    /* borrowed: the job ends first */
    const struct mock_http_req *req;/* borrowed from conn, valid while BUSY */
    json_t *root;                   /* owned: the parsed request body */
    struct event timer;
    int timer_pending;
    enum job_phase phase;
    struct mock_fault fault;
    /* JOB_GEN: the answer, ready */
    struct evbuffer *body;          /* owned */
    int truncate;
    char extra[64];
    /* JOB_STREAM */
    enum endpoint ep;
    int include_usage;
    int n_tokens, prompt_tokens, token_delay_ms, close_after;
    int sent, total;
    int delay_done;
    int error_after;                /* -1: off; else an error event there */
    char prefix[512];
    /* EP_MESSAGES */
    int mi;
    char stop_reason[16];
    char stop_seq[24];              /* "tokN" that stopped it, or "" */
};

/* ------------------------------------------------------------ helpers */

static void
set_retry_after(char *extra, size_t len, const struct mock_fault *f)
{
    if (f->retry_after >= 0)
        snprintf(extra, len, "Retry-After: %d\r\n", f->retry_after);
    else
        extra[0] = '\0';
}

static void
respond_json(struct mock_http_conn *conn, int status, const char *extra,
             json_t *obj, int truncate)
{
    struct evbuffer *body = evbuffer_new();
    char *s = obj ? json_dumps(obj, JSON_COMPACT) : NULL;

    if (body && s)
        evbuffer_add(body, s, strlen(s));
    free(s);
    mock_http_respond(conn, status, "application/json", extra, body, truncate);
    evbuffer_free(body);
}

/* Answer with OpenAI's error shape. */
static void
respond_error(struct mock_http_conn *conn, int status, const char *extra,
              const char *type, const char *code, const char *param,
              int truncate, const char *fmt, ...)
    __attribute__((format(printf, 8, 9)));

static void
respond_error(struct mock_http_conn *conn, int status, const char *extra,
              const char *type, const char *code, const char *param,
              int truncate, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    json_t *obj;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    obj = json_pack("{s:{s:s,s:s,s:s?,s:s?}}", "error", "message", msg,
                    "type", type, "param", param, "code", code);
    if (!obj) /* msg was not valid UTF-8: keep the shape */
        obj = json_pack("{s:{s:s,s:s,s:s?,s:s?}}", "error", "message",
                        "invalid request", "type", type, "param", param, "code", code);
    respond_json(conn, status, extra, obj, truncate);
    json_decref(obj);
}

static void
bad_request(struct mock_http_conn *conn, const char *code, const char *param,
            const char *msg)
{
    respond_error(conn, 400, NULL, "invalid_request_error", code, param, 0, "%s", msg);
}

static int
find_model(const struct mock_api *api, const char *name)
{
    size_t i;

    for (i = 0; i < api->n_models; i++)
        if (strcmp(api->models[i], name) == 0)
            return (int)i;
    return -1;
}

static void
model_not_found(struct mock_http_conn *conn, const char *name)
{
    respond_error(conn, 404, NULL, "invalid_request_error", "model_not_found", "model",
                  0, "The model '%.200s' does not exist", name);
}

/* The fault of a status=N item, in OpenAI's shape. */
static void
respond_fault_status(struct mock_http_conn *conn, const struct mock_fault *f)
{
    const char *type = "server_error", *code = NULL;
    char extra[64];

    switch (f->status) {
    case 400: type = "invalid_request_error"; break;
    case 401: type = "authentication_error"; code = "invalid_api_key"; break;
    case 403: type = "permission_error"; break;
    case 404: type = "invalid_request_error"; code = "not_found"; break;
    case 429: type = "requests"; code = "rate_limit_exceeded"; break;
    default:
        if (f->status < 500)
            type = "invalid_request_error";
        break;
    }
    set_retry_after(extra, sizeof(extra), f);
    respond_error(conn, f->status, extra, type, code, NULL,
                  f->close_after_chunks >= 0, "mock fault: status %d", f->status);
}

/* Deterministic token estimate of a text: bytes / 4, at least 1. */
static int
estimate(size_t bytes)
{
    size_t n = bytes / 4;

    return n < 1 ? 1 : (n > 100000000 ? 100000000 : (int)n);
}

/* Bytes of text in a message content (string or array of parts). */
static size_t
content_bytes(json_t *content)
{
    size_t n = 0, i;
    json_t *part;

    if (json_is_string(content))
        return json_string_length(content);
    if (json_is_array(content))
        json_array_foreach(content, i, part) {
            json_t *t = json_object_get(part, "text");
            if (json_is_string(t))
                n += json_string_length(t);
        }
    return n;
}

/*
 * Read max_tokens / max_completion_tokens into *limit (-1: none).
 * Returns 0, or -1 after answering 400.
 */
static int
read_max_tokens(struct mock_http_conn *conn, json_t *root, int *limit)
{
    static const char *names[] = {"max_tokens", "max_completion_tokens"};
    size_t i;

    *limit = -1;
    for (i = 0; i < 2; i++) {
        json_t *v = json_object_get(root, names[i]);
        char msg[96];

        if (!v || json_is_null(v))
            continue;
        if (!json_is_integer(v) || json_integer_value(v) < 1) {
            snprintf(msg, sizeof(msg), "invalid '%s': expected an integer >= 1", names[i]);
            bad_request(conn, "invalid_value", names[i], msg);
            return -1;
        }
        if (*limit < 0 || json_integer_value(v) < *limit)
            *limit = json_integer_value(v) > 1000000000 ? 1000000000
                                                         : (int)json_integer_value(v);
    }
    return 0;
}

/* Append " tok0 tok1 ..." (n words, no leading blank) to buf. */
static void
add_tokens(struct evbuffer *buf, int n)
{
    char chunk[4096];
    size_t off = 0;
    int i;

    for (i = 0; i < n; i++) {
        if (off > sizeof(chunk) - 24) {
            evbuffer_add(buf, chunk, off);
            off = 0;
        }
        off += (size_t)snprintf(chunk + off, sizeof(chunk) - off, i ? " tok%d" : "tok%d", i);
    }
    if (off)
        evbuffer_add(buf, chunk, off);
}

/* ------------------------------------------------------------ jobs */

static void job_timer_cb(evutil_socket_t fd, short what, void *arg);

static struct mock_job *
job_new(struct mock_api *api, struct mock_http_conn *conn,
        const struct mock_http_req *req, json_t *root, const struct mock_fault *f)
{
    struct mock_job *j = calloc(1, sizeof(*j));

    if (!j)
        return NULL;
    j->api = api;
    j->conn = conn;
    j->req = req;
    j->root = json_incref(root);
    j->fault = *f;
    j->error_after = -1;
    event_assign(&j->timer, api->base, -1, 0, job_timer_cb, j);
    return j;
}

static void
job_free(struct mock_job *j)
{
    if (j->timer_pending)
        event_del(&j->timer);
    if (j->phase == JOB_STREAM)
        j->api->active_streams--;
    json_decref(j->root);
    if (j->body)
        evbuffer_free(j->body);
    free(j);
}

static void
job_on_close(struct mock_http_conn *conn, void *arg)
{
    (void)conn;
    job_free(arg);
}

static void
job_arm(struct mock_job *j, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

    event_add(&j->timer, &tv);
    j->timer_pending = 1;
}

static void answer(struct mock_api *api, struct mock_http_conn *conn,
                   const struct mock_http_req *req, json_t *root,
                   const struct mock_fault *f, struct mock_job *job);

/* ------------------------------------------------------------ streams */

/* Write event i of a Messages stream: message_start, content_block_start,
 * ping, one text delta per token, content_block_stop, message_delta,
 * message_stop. */
static void
messages_event(struct mock_job *j, int i)
{
    char buf[1024], seq[40];
    int n, C = j->n_tokens;

    if (j->stop_seq[0])
        snprintf(seq, sizeof(seq), "\"%s\"", j->stop_seq);
    else
        snprintf(seq, sizeof(seq), "null");
    if (i == 0)
        n = snprintf(buf, sizeof(buf), "event: message_start\ndata: {\"type\":"
                     "\"message_start\",\"message\":{\"id\":\"%s\",\"type\":"
                     "\"message\",\"role\":\"assistant\",\"model\":\"%s\","
                     "\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,"
                     "\"usage\":{\"input_tokens\":%d,\"output_tokens\":1}}}\n\n",
                     j->prefix, j->api->models[j->mi], j->prompt_tokens);
    else if (i == 1)
        n = snprintf(buf, sizeof(buf), "event: content_block_start\ndata: "
                     "{\"type\":\"content_block_start\",\"index\":0,"
                     "\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n");
    else if (i == 2)
        n = snprintf(buf, sizeof(buf), "event: ping\ndata: {\"type\": \"ping\"}\n\n");
    else if (i < 3 + C)
        n = snprintf(buf, sizeof(buf), "event: content_block_delta\ndata: "
                     "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":"
                     "{\"type\":\"text_delta\",\"text\":\"%stok%d\"}}\n\n",
                     i > 3 ? " " : "", i - 3);
    else if (i == 3 + C)
        n = snprintf(buf, sizeof(buf), "event: content_block_stop\ndata: "
                     "{\"type\":\"content_block_stop\",\"index\":0}\n\n");
    else if (i == 4 + C)
        n = snprintf(buf, sizeof(buf), "event: message_delta\ndata: {\"type\":"
                     "\"message_delta\",\"delta\":{\"stop_reason\":\"%s\","
                     "\"stop_sequence\":%s},\"usage\":{\"output_tokens\":%d}}\n\n",
                     j->stop_reason, seq, C);
    else
        n = snprintf(buf, sizeof(buf), "event: message_stop\ndata: "
                     "{\"type\":\"message_stop\"}\n\n");
    if (n > 0 && (size_t)n < sizeof(buf))
        mock_http_stream_write(j->conn, buf, (size_t)n);
}

/* The error-after-chunks fault: an error event, as each API says it. */
static void
stream_error_event(struct mock_job *j)
{
    static const char anth[] =
        "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":"
        "\"overloaded_error\",\"message\":\"mock fault: overloaded\"}}\n\n";
    static const char oai[] =
        "event: error\ndata: {\"error\":{\"message\":\"mock fault: stream error\","
        "\"type\":\"server_error\",\"code\":null}}\n\n";

    if (j->ep == EP_MESSAGES)
        mock_http_stream_write(j->conn, anth, sizeof(anth) - 1);
    else
        mock_http_stream_write(j->conn, oai, sizeof(oai) - 1);
}

/* Write stream event i of j as one SSE event. */
static void
stream_event(struct mock_job *j, int i)
{
    char buf[2048];
    const char *un = j->include_usage ? ",\"usage\":null" : "";
    int n, C = j->n_tokens, P = j->prompt_tokens;
    int first_tok = j->ep == EP_CHAT ? 1 : 0;

    if (j->ep == EP_MESSAGES) {
        messages_event(j, i);
        return;
    }
    if (i == j->total - 1) {
        mock_http_stream_write(j->conn, "data: [DONE]\n\n", 14);
        return;
    }
    if (j->ep == EP_CHAT && i == 0)
        n = snprintf(buf, sizeof(buf), "data: %s{\"index\":0,\"delta\":{\"role\":\"assistant\","
                     "\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}]%s}\n\n",
                     j->prefix, un);
    else if (i < first_tok + C && j->ep == EP_CHAT)
        n = snprintf(buf, sizeof(buf), "data: %s{\"index\":0,\"delta\":{\"content\":\"%stok%d\"},"
                     "\"logprobs\":null,\"finish_reason\":null}]%s}\n\n",
                     j->prefix, i > first_tok ? " " : "", i - first_tok, un);
    else if (i < first_tok + C)
        n = snprintf(buf, sizeof(buf), "data: %s{\"text\":\"%stok%d\",\"index\":0,"
                     "\"logprobs\":null,\"finish_reason\":null}]%s}\n\n",
                     j->prefix, i > first_tok ? " " : "", i - first_tok, un);
    else if (i == first_tok + C && j->ep == EP_CHAT)
        n = snprintf(buf, sizeof(buf), "data: %s{\"index\":0,\"delta\":{},\"logprobs\":null,"
                     "\"finish_reason\":\"stop\"}]%s}\n\n", j->prefix, un);
    else if (i == first_tok + C)
        n = snprintf(buf, sizeof(buf), "data: %s{\"text\":\"\",\"index\":0,\"logprobs\":null,"
                     "\"finish_reason\":\"stop\"}]%s}\n\n", j->prefix, un);
    else
        n = snprintf(buf, sizeof(buf), "data: %s],\"usage\":{\"prompt_tokens\":%d,"
                     "\"completion_tokens\":%d,\"total_tokens\":%d}}\n\n",
                     j->prefix, P, C, P + C);
    if (n > 0 && (size_t)n < sizeof(buf))
        mock_http_stream_write(j->conn, buf, (size_t)n);
}

static int
is_token_event(const struct mock_job *j, int i)
{
    int first = j->ep == EP_CHAT ? 1 : j->ep == EP_MESSAGES ? 3 : 0;

    return i >= first && i < first + j->n_tokens;
}

static void
stream_pump(struct mock_job *j)
{
    struct mock_http_conn *conn = j->conn;

    while (j->sent < j->total) {
        if (j->close_after >= 0 && j->sent >= j->close_after) {
            job_free(j);
            mock_http_abort(conn);
            return;
        }
        if (j->error_after >= 0 && j->sent >= j->error_after) {
            stream_error_event(j);
            job_free(j);
            mock_http_stream_end(conn);
            return;
        }
        if (j->token_delay_ms > 0 && is_token_event(j, j->sent) && !j->delay_done) {
            job_arm(j, j->token_delay_ms);
            return;
        }
        j->delay_done = 0;
        stream_event(j, j->sent);
        j->sent++;
        j->api->stream_events++;
        if (mock_http_pending(conn) > STREAM_HIGH_WATER) {
            mock_http_want_drain(conn); /* on_drain goes on */
            return;
        }
    }
    job_free(j);
    mock_http_stream_end(conn);
}

static void
stream_on_drain(struct mock_http_conn *conn, void *arg)
{
    struct mock_job *j = arg;

    (void)conn;
    if (!j->timer_pending)
        stream_pump(j);
}

/* ------------------------------------------------------------ endpoints */

/* What chat and completions need from a request body. */
struct gen {
    int mi;             /* index of the model */
    int limit;          /* max_tokens, -1: none */
    int stream;
    int include_usage;
    int P;              /* prompt tokens */
};

/* A job becomes a stream of total events: C tokens of model g->mi, each
 * delay ms apart, with f's stream faults (its prefix, stop fields and the
 * like are the caller's). */
static void stream_init(struct mock_job *job, enum endpoint ep,
                        const struct gen *g, int C, int delay,
                        const struct mock_fault *f, int total)
{
    job->phase = JOB_STREAM;
    job->api->active_streams++;
    job->ep = ep;
    job->mi = g->mi;
    job->include_usage = g->include_usage;
    job->n_tokens = C;
    job->prompt_tokens = g->P;
    job->token_delay_ms = delay;
    job->close_after = f->close_after_chunks;
    job->error_after = f->error_after_chunks;
    job->total = total;
    job->sent = 0;
}

/* Sends the stream's head and its first events; the job is the
 * connection's from now on. */
static void stream_run(struct mock_http_conn *conn, struct mock_job *job,
                       const char *extra)
{
    mock_http_set_job(conn, stream_on_drain, job_on_close, job);
    mock_http_stream_start(conn, 200, "text/event-stream", extra);
    stream_pump(job);
}

/* The fast path: the allocation-free scanner; -1 when jansson must decide. */
static int
gen_fast(const struct mock_api *api, const struct mock_http_req *req,
         enum endpoint ep, struct gen *g)
{
    struct mock_scan sc;
    size_t i;

    if (mock_scan_request(req->body, req->body_len, &sc) < 0)
        return -1;
    if (ep == EP_CHAT ? !sc.has_messages : !sc.has_prompt)
        return -1;
    g->mi = -1;
    for (i = 0; i < api->n_models; i++)
        if (api->model_len[i] == sc.model_len &&
            memcmp(api->models[i], sc.model, sc.model_len) == 0) {
            g->mi = (int)i;
            break;
        }
    if (g->mi < 0)
        return -1;
    g->limit = (int)sc.max_tokens;
    g->stream = sc.stream;
    g->include_usage = sc.include_usage;
    g->P = estimate(ep == EP_CHAT ? sc.content_bytes : sc.prompt_bytes);
    return 0;
}

/* The reference path on a jansson tree; -1 after answering an error. */
static int
gen_json(const struct mock_api *api, struct mock_http_conn *conn, json_t *root,
         enum endpoint ep, struct gen *g)
{
    const char *what = ep == EP_CHAT ? "messages" : "prompt";
    json_t *jm, *input, *js, *jso;
    char msg[96];

    if (!json_is_object(root)) {
        bad_request(conn, "invalid_json", NULL, root ? "invalid type for the request body: "
                    "expected an object" : "We could not parse the JSON body of your request.");
        return -1;
    }
    jm = json_object_get(root, "model");
    if (!json_is_string(jm) || json_string_length(jm) == 0) {
        bad_request(conn, "missing_required_parameter", "model",
                    "you must provide a model parameter");
        return -1;
    }
    input = json_object_get(root, what);
    if (ep == EP_CHAT ? (!json_is_array(input) || json_array_size(input) == 0)
                      : !(json_is_string(input) || json_is_array(input))) {
        snprintf(msg, sizeof(msg), "missing required parameter: '%s'", what);
        bad_request(conn, "missing_required_parameter", what, msg);
        return -1;
    }
    g->mi = find_model(api, json_string_value(jm));
    if (g->mi < 0) {
        model_not_found(conn, json_string_value(jm));
        return -1;
    }
    if (read_max_tokens(conn, root, &g->limit) < 0)
        return -1;
    js = json_object_get(root, "stream");
    if (js && !json_is_null(js) && !json_is_boolean(js)) {
        bad_request(conn, "invalid_type", "stream", "invalid 'stream': expected a boolean");
        return -1;
    }
    g->stream = json_is_true(js);
    jso = json_object_get(root, "stream_options");
    g->include_usage = json_is_object(jso) &&
                       json_is_true(json_object_get(jso, "include_usage"));
    if (ep == EP_CHAT) {
        size_t i, bytes = 0;
        json_t *m;

        json_array_foreach(input, i, m)
            bytes += content_bytes(json_object_get(m, "content"));
        g->P = estimate(bytes);
    } else if (json_is_string(input)) {
        g->P = estimate(json_string_length(input));
    } else {
        size_t i, bytes = 0;
        json_t *p;

        json_array_foreach(input, i, p)
            bytes += json_is_string(p) ? json_string_length(p) : 4;
        g->P = estimate(bytes);
    }
    return 0;
}

/*
 * Chat and legacy completions share everything but the shapes: read the
 * body, then answer at once, after the generation time, or as a stream.
 * job: a DELAY job already detached from conn, reused or freed here.
 */
static void
generate(struct mock_api *api, struct mock_http_conn *conn,
         const struct mock_http_req *req, json_t *root, const struct mock_fault *f,
         enum endpoint ep, struct mock_job *job)
{
    json_t *own = NULL;
    struct gen g;
    int C, delay;
    unsigned long long id;
    long created = (long)time(NULL);
    char extra[64];

    if (gen_fast(api, req, ep, &g) < 0) {
        if (!root)
            root = own = json_loadb(req->body, req->body_len, 0, NULL);
        if (gen_json(api, conn, root, ep, &g) < 0)
            goto out;
    }
    C = f->tokens >= 0 ? f->tokens : api->tokens;
    if (g.limit >= 0 && g.limit < C)
        C = g.limit;
    delay = f->token_delay_ms >= 0 ? f->token_delay_ms : api->token_delay_ms;
    id = ++api->next_id;
    set_retry_after(extra, sizeof(extra), f);

    if (g.stream) {
        if (!job && !(job = job_new(api, conn, NULL, NULL, f))) {
            respond_error(conn, 500, NULL, "server_error", NULL, NULL, 0, "out of memory");
            goto out;
        }
        stream_init(job, ep, &g, C, delay, f,
                    (ep == EP_CHAT ? 1 : 0) + C + 1 + (g.include_usage ? 1 : 0) + 1);
        snprintf(job->prefix, sizeof(job->prefix),
                 "{\"id\":\"%s-mock-%llu\",\"object\":\"%s\",\"created\":%ld,"
                 "\"model\":\"%s\",%s\"choices\":[",
                 ep == EP_CHAT ? "chatcmpl" : "cmpl",
                 id, ep == EP_CHAT ? "chat.completion.chunk" : "text_completion",
                 created, api->models[g.mi],
                 ep == EP_CHAT ? "\"system_fingerprint\":\"fp_mock\"," : "");
        stream_run(conn, job, extra);
        job = NULL; /* the stream owns it now */
        goto out;
    }

    {
        char head[512], tail[192];
        int hl, tl;
        struct mock_http_iov iov[3];

        if (ep == EP_CHAT)
            hl = snprintf(head, sizeof(head), "{\"id\":\"chatcmpl-mock-%llu\",\"object\":"
                          "\"chat.completion\",\"created\":%ld,\"model\":\"%s\","
                          "\"system_fingerprint\":\"fp_mock\",\"choices\":[{\"index\":0,"
                          "\"message\":{\"role\":\"assistant\",\"content\":\"",
                          id, created, api->models[g.mi]);
        else
            hl = snprintf(head, sizeof(head), "{\"id\":\"cmpl-mock-%llu\",\"object\":"
                          "\"text_completion\",\"created\":%ld,\"model\":\"%s\","
                          "\"choices\":[{\"text\":\"", id, created, api->models[g.mi]);
        tl = snprintf(tail, sizeof(tail), "%s\"usage\":{\"prompt_tokens\":%d,"
                      "\"completion_tokens\":%d,\"total_tokens\":%d}}",
                      ep == EP_CHAT
                      ? "\"},\"logprobs\":null,\"finish_reason\":\"stop\"}],"
                      : "\",\"index\":0,\"logprobs\":null,\"finish_reason\":\"stop\"}],",
                      g.P, C, g.P + C);
        if (hl < 0 || tl < 0 || (size_t)hl >= sizeof(head) || (size_t)tl >= sizeof(tail)) {
            respond_error(conn, 500, NULL, "server_error", NULL, NULL, 0, "answer too long");
            goto out;
        }
        if (C <= TOK_CACHE && !(delay > 0 && C > 0)) {
            /* the hot path: three pieces straight into the output */
            iov[0].base = head;
            iov[0].len = (size_t)hl;
            iov[1].base = api->tok_text;
            iov[1].len = api->tok_off[C];
            iov[2].base = tail;
            iov[2].len = (size_t)tl;
            mock_http_respond_iov(conn, 200, "application/json", extra, iov, 3,
                                  f->close_after_chunks >= 0);
            goto out;
        }
        {
            struct evbuffer *body = evbuffer_new();

            if (!body) {
                respond_error(conn, 500, NULL, "server_error", NULL, NULL, 0, "out of memory");
                goto out;
            }
            evbuffer_add(body, head, (size_t)hl);
            if (C <= TOK_CACHE)
                evbuffer_add(body, api->tok_text, api->tok_off[C]);
            else
                add_tokens(body, C);
            evbuffer_add(body, tail, (size_t)tl);
            if (delay > 0 && C > 0) {
                /* answer after the generation time of C tokens */
                long ms = (long)delay * C;

                if (!job && !(job = job_new(api, conn, NULL, NULL, f))) {
                    evbuffer_free(body);
                    respond_error(conn, 500, NULL, "server_error", NULL, NULL, 0,
                                  "out of memory");
                    goto out;
                }
                job->phase = JOB_GEN;
                job->body = body;
                job->truncate = f->close_after_chunks >= 0;
                memcpy(job->extra, extra, sizeof(extra));
                mock_http_set_job(conn, NULL, job_on_close, job);
                job_arm(job, ms > 3600000 ? 3600000 : (int)ms);
                job = NULL; /* armed: the timer owns it */
                goto out;
            }
            mock_http_respond(conn, 200, "application/json", extra, body,
                              f->close_after_chunks >= 0);
            evbuffer_free(body);
        }
    }
out:
    json_decref(own);
    if (job)
        job_free(job);
}

/* splitmix64: spread the bits of a hash for one vector component */
static uint64_t
mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static uint64_t
fnv1a(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    size_t i;

    for (i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

static void
add_base64(struct evbuffer *out, const unsigned char *p, size_t n)
{
    static const char tab[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char q[4];
    size_t i;

    for (i = 0; i + 2 < n; i += 3) {
        q[0] = tab[p[i] >> 2];
        q[1] = tab[((p[i] & 3) << 4) | (p[i + 1] >> 4)];
        q[2] = tab[((p[i + 1] & 15) << 2) | (p[i + 2] >> 6)];
        q[3] = tab[p[i + 2] & 63];
        evbuffer_add(out, q, 4);
    }
    if (i < n) {
        q[0] = tab[p[i] >> 2];
        if (i + 1 < n) {
            q[1] = tab[((p[i] & 3) << 4) | (p[i + 1] >> 4)];
            q[2] = tab[(p[i + 1] & 15) << 2];
        } else {
            q[1] = tab[(p[i] & 3) << 4];
            q[2] = '=';
        }
        q[3] = '=';
        evbuffer_add(out, q, 4);
    }
}

/* One embedding of text: dim floats of unit length, from a hash of text. */
static void
add_vector(struct evbuffer *out, const char *text, size_t len, int dim, int b64)
{
    uint64_t h = fnv1a(text, len);
    float v[EMBED_MAX_DIM];
    double norm = 0;
    int i;

    for (i = 0; i < dim; i++) {
        uint64_t x = mix64(h + (uint64_t)i);
        v[i] = (float)((double)(x >> 11) / 9007199254740992.0 * 2.0 - 1.0);
        norm += (double)v[i] * v[i];
    }
    norm = sqrt(norm);
    for (i = 0; i < dim; i++)
        v[i] = norm > 0 ? (float)(v[i] / norm) : 0.0f;
    if (b64) {
        unsigned char bytes[EMBED_MAX_DIM * 4];
        for (i = 0; i < dim; i++) {
            uint32_t u;
            memcpy(&u, &v[i], 4);
            bytes[4 * i] = (unsigned char)u;
            bytes[4 * i + 1] = (unsigned char)(u >> 8);
            bytes[4 * i + 2] = (unsigned char)(u >> 16);
            bytes[4 * i + 3] = (unsigned char)(u >> 24);
        }
        evbuffer_add(out, "\"", 1);
        add_base64(out, bytes, (size_t)dim * 4);
        evbuffer_add(out, "\"", 1);
        return;
    }
    evbuffer_add(out, "[", 1);
    for (i = 0; i < dim; i++)
        evbuffer_add_printf(out, i ? ",%.7f" : "%.7f", (double)v[i]);
    evbuffer_add(out, "]", 1);
}

static void
embeddings(struct mock_api *api, struct mock_http_conn *conn, json_t *root,
           const struct mock_fault *f)
{
    json_t *jm, *input, *jd, *jf, *item;
    struct evbuffer *body;
    int mi, dim = EMBED_DEFAULT_DIM, b64 = 0, P = 0, single;
    size_t i, n;
    char extra[64];

    if (!json_is_object(root)) {
        bad_request(conn, "invalid_json", NULL, root ? "invalid type for the request body: "
                    "expected an object" : "We could not parse the JSON body of your request.");
        return;
    }
    jm = json_object_get(root, "model");
    if (!json_is_string(jm) || json_string_length(jm) == 0) {
        bad_request(conn, "missing_required_parameter", "model",
                    "you must provide a model parameter");
        return;
    }
    input = json_object_get(root, "input");
    if (!(json_is_string(input) && json_string_length(input) > 0) &&
        !(json_is_array(input) && json_array_size(input) > 0 &&
          json_array_size(input) <= EMBED_MAX_INPUTS)) {
        bad_request(conn, "invalid_value", "input", "invalid 'input': expected a non-empty "
                    "string or an array of 1..2048 strings or token arrays");
        return;
    }
    mi = find_model(api, json_string_value(jm));
    if (mi < 0) {
        model_not_found(conn, json_string_value(jm));
        return;
    }
    jd = json_object_get(root, "dimensions");
    if (jd && !json_is_null(jd)) {
        if (!json_is_integer(jd) || json_integer_value(jd) < 1 ||
            json_integer_value(jd) > EMBED_MAX_DIM) {
            bad_request(conn, "invalid_value", "dimensions",
                        "invalid 'dimensions': expected an integer 1..4096");
            return;
        }
        dim = (int)json_integer_value(jd);
    }
    jf = json_object_get(root, "encoding_format");
    if (jf && !json_is_null(jf)) {
        if (json_is_string(jf) && strcmp(json_string_value(jf), "base64") == 0) {
            b64 = 1;
        } else if (!json_is_string(jf) || strcmp(json_string_value(jf), "float") != 0) {
            bad_request(conn, "invalid_value", "encoding_format",
                        "invalid 'encoding_format': expected 'float' or 'base64'");
            return;
        }
    }
    /* a string, or an array of integers, is one input; else each element is */
    single = json_is_string(input) || json_is_integer(json_array_get(input, 0));
    n = single ? 1 : json_array_size(input);
    for (i = 0; i < n; i++) {
        item = single ? input : json_array_get(input, i);
        if (!json_is_string(item) && !(json_is_array(item) && json_array_size(item) > 0)) {
            bad_request(conn, "invalid_value", "input", "invalid 'input': items must be "
                        "strings or non-empty token arrays");
            return;
        }
    }
    body = evbuffer_new();
    if (!body) {
        respond_error(conn, 500, NULL, "server_error", NULL, NULL, 0, "out of memory");
        return;
    }
    evbuffer_add_printf(body, "{\"object\":\"list\",\"data\":[");
    for (i = 0; i < n; i++) {
        const char *text;
        size_t len;
        char *dump = NULL;

        item = single ? input : json_array_get(input, i);
        if (json_is_string(item)) {
            text = json_string_value(item);
            len = json_string_length(item);
            P += estimate(len);
        } else {
            /* a token array: hash its compact JSON text */
            dump = json_dumps(item, JSON_COMPACT);
            text = dump ? dump : "";
            len = strlen(text);
            P += (int)json_array_size(item);
        }
        evbuffer_add_printf(body, "%s{\"object\":\"embedding\",\"index\":%zu,\"embedding\":",
                            i ? "," : "", i);
        add_vector(body, text, len, dim, b64);
        evbuffer_add(body, "}", 1);
        free(dump);
    }
    evbuffer_add_printf(body, "],\"model\":\"%s\",\"usage\":{\"prompt_tokens\":%d,"
                        "\"total_tokens\":%d}}", api->models[mi], P, P);
    set_retry_after(extra, sizeof(extra), f);
    mock_http_respond(conn, 200, "application/json", extra, body,
                      f->close_after_chunks >= 0);
    evbuffer_free(body);
}

static void
models(struct mock_api *api, struct mock_http_conn *conn, const char *id,
       const struct mock_fault *f)
{
    struct evbuffer *body = evbuffer_new();
    char extra[64];

    set_retry_after(extra, sizeof(extra), f);
    if (!body) {
        respond_error(conn, 500, NULL, "server_error", NULL, NULL, 0, "out of memory");
        return;
    }
    if (id) {
        int mi = find_model(api, id);

        if (mi < 0) {
            evbuffer_free(body);
            model_not_found(conn, id);
            return;
        }
        evbuffer_add_printf(body, "{\"id\":\"%s\",\"object\":\"model\",\"created\":%ld,"
                            "\"owned_by\":\"mockllm\"}", api->models[mi], (long)api->started);
    } else {
        evbuffer_add(body, api->models_body, api->models_body_len);
    }
    mock_http_respond(conn, 200, "application/json", extra, body,
                      f->close_after_chunks >= 0);
    evbuffer_free(body);
}

/* ------------------------------------------------- Anthropic Messages */

static const char *
anthropic_error_type(int status)
{
    switch (status) {
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 413: return "request_too_large";
    case 429: return "rate_limit_error";
    case 529: return "overloaded_error";
    default: return status >= 500 ? "api_error" : "invalid_request_error";
    }
}

/* Answer with Anthropic's error shape {"type":"error","error":{...}}. */
static void
respond_anthropic_error(struct mock_http_conn *conn, int status, const char *extra,
                        int truncate, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static void
respond_anthropic_error(struct mock_http_conn *conn, int status, const char *extra,
                        int truncate, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    json_t *obj;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    obj = json_pack("{s:s,s:{s:s,s:s}}", "type", "error", "error", "type",
                    anthropic_error_type(status), "message", msg);
    if (!obj)
        obj = json_pack("{s:s,s:{s:s,s:s}}", "type", "error", "error", "type",
                        anthropic_error_type(status), "message", "invalid request");
    respond_json(conn, status, extra, obj, truncate);
    json_decref(obj);
}

enum block_owner { BLOCKS_SYSTEM, BLOCKS_USER, BLOCKS_ASSISTANT, BLOCKS_RESULT };

/* Text bytes of a Messages content or system (a string or blocks: text;
 * image and tool_result in a user turn, tool_use in an assistant turn,
 * text only in system and a tool_result); -1 when it is none of those. */
static long
blocks_bytes(json_t *v, enum block_owner who)
{
    size_t i;
    long n = 0, r;
    json_t *b;

    if (json_is_string(v))
        return (long)json_string_length(v);
    if (!json_is_array(v))
        return -1;
    json_array_foreach(v, i, b) {
        const char *t = json_string_value(json_object_get(b, "type"));
        json_t *text = json_object_get(b, "text");

        if (t && strcmp(t, "text") == 0 && json_is_string(text))
            n += (long)json_string_length(text);
        else if (who == BLOCKS_USER && t && strcmp(t, "image") == 0 &&
                 json_is_object(json_object_get(b, "source")))
            continue;
        else if (who == BLOCKS_USER && t && strcmp(t, "tool_result") == 0 &&
                 json_is_string(json_object_get(b, "tool_use_id")) &&
                 (r = blocks_bytes(json_object_get(b, "content"), BLOCKS_RESULT)) >= 0)
            n += r;
        else if (who == BLOCKS_ASSISTANT && t && strcmp(t, "tool_use") == 0 &&
                 json_is_string(json_object_get(b, "id")) &&
                 json_is_string(json_object_get(b, "name")) &&
                 json_is_object(json_object_get(b, "input")))
            continue;
        else
            return -1;
    }
    return n;
}

/* 1 when the content array holds a block of type t with key == value. */
static int
has_block(json_t *content, const char *t, const char *key, const char *value)
{
    size_t i;
    json_t *b;

    json_array_foreach(content, i, b) {
        const char *bt = json_string_value(json_object_get(b, "type"));
        const char *v = key ? json_string_value(json_object_get(b, key)) : NULL;

        if (bt && strcmp(bt, t) == 0 && (!key || (v && strcmp(v, value) == 0)))
            return 1;
    }
    return 0;
}

/* tools and tool_choice as the real API checks them: 0, or -1 after
 * answering 400. */
static int
tools_read(struct mock_http_conn *conn, json_t *root)
{
    json_t *tools = json_object_get(root, "tools");
    json_t *choice = json_object_get(root, "tool_choice");
    json_t *t, *v;
    const char *key, *ct;
    size_t i;

    if (tools && (!json_is_array(tools) || json_array_size(tools) == 0)) {
        respond_anthropic_error(conn, 400, NULL, 0, "tools: Input should be a list");
        return -1;
    }
    json_array_foreach(tools, i, t) {
        json_object_foreach(t, key, v)
            if (strcmp(key, "name") != 0 && strcmp(key, "description") != 0 &&
                strcmp(key, "input_schema") != 0) {
                respond_anthropic_error(conn, 400, NULL, 0, "tools.%zu.%.64s: Extra "
                                        "inputs are not permitted", i, key);
                return -1;
            }
        if (!json_is_string(json_object_get(t, "name")) ||
            !json_is_object(json_object_get(t, "input_schema")) ||
            (json_object_get(t, "description") &&
             !json_is_string(json_object_get(t, "description")))) {
            respond_anthropic_error(conn, 400, NULL, 0, "tools.%zu: needs a name and an "
                                    "input_schema object", i);
            return -1;
        }
    }
    if (!choice)
        return 0;
    ct = json_string_value(json_object_get(choice, "type"));
    if (!tools || !ct || (strcmp(ct, "auto") && strcmp(ct, "any") && strcmp(ct, "tool") &&
                          strcmp(ct, "none"))) {
        respond_anthropic_error(conn, 400, NULL, 0, "tool_choice: needs tools and a type "
                                "among auto, any, tool, none");
        return -1;
    }
    v = json_object_get(choice, "disable_parallel_tool_use");
    if ((v && !json_is_boolean(v)) || (strcmp(ct, "none") == 0 && v)) {
        respond_anthropic_error(conn, 400, NULL, 0, "tool_choice.disable_parallel_tool_use: "
                                "a boolean, not with type none");
        return -1;
    }
    if (strcmp(ct, "tool") == 0) {
        const char *name = json_string_value(json_object_get(choice, "name"));

        json_array_foreach(tools, i, t)
            if (name && strcmp(json_string_value(json_object_get(t, "name")), name) == 0)
                break;
        if (i == json_array_size(tools)) {
            respond_anthropic_error(conn, 400, NULL, 0, "tool_choice.name: not one of "
                                    "the tools");
            return -1;
        }
    }
    return 0;
}

/* Checks a Messages request as strictly as the real API; fills g, the
 * stop sequences and returns 0, or answers 400/404 and returns -1. */
static int
messages_read(const struct mock_api *api, struct mock_http_conn *conn, json_t *root,
              struct gen *g, json_t **stops)
{
    static const char *const known[] = {
        "model", "messages", "max_tokens", "system", "stop_sequences", "stream",
        "temperature", "top_p", "top_k", "metadata", "tools", "tool_choice", NULL};
    const char *key;
    json_t *v, *m;
    long bytes = 0, b;
    size_t i;

    if (!json_is_object(root)) {
        respond_anthropic_error(conn, 400, NULL, 0, "the request body is not a JSON object");
        return -1;
    }
    json_object_foreach(root, key, v) {
        const char *const *k;

        for (k = known; *k && strcmp(*k, key) != 0; k++)
            ;
        if (!*k) {
            respond_anthropic_error(conn, 400, NULL, 0, "%.64s: Extra inputs are not "
                                    "permitted", key);
            return -1;
        }
    }
    v = json_object_get(root, "model");
    if (!json_is_string(v)) {
        respond_anthropic_error(conn, 400, NULL, 0, "model: Field required");
        return -1;
    }
    if ((g->mi = find_model(api, json_string_value(v))) < 0) {
        respond_anthropic_error(conn, 404, NULL, 0, "model: %.200s", json_string_value(v));
        return -1;
    }
    v = json_object_get(root, "max_tokens");
    if (!json_is_integer(v) || json_integer_value(v) < 1) {
        respond_anthropic_error(conn, 400, NULL, 0, "max_tokens: Field required (an "
                                "integer >= 1)");
        return -1;
    }
    g->limit = json_integer_value(v) > 1000000000 ? 1000000000 : (int)json_integer_value(v);
    v = json_object_get(root, "messages");
    if (!json_is_array(v) || json_array_size(v) == 0) {
        respond_anthropic_error(conn, 400, NULL, 0, "messages: at least one message is "
                                "required");
        return -1;
    }
    json_array_foreach(v, i, m) {
        const char *role = json_string_value(json_object_get(m, "role"));

        if (!role || (strcmp(role, "user") != 0 && strcmp(role, "assistant") != 0)) {
            respond_anthropic_error(conn, 400, NULL, 0, "messages.%zu.role: Input should be "
                                    "'user' or 'assistant'", i);
            return -1;
        }
        json_t *content = json_object_get(m, "content");

        if ((b = blocks_bytes(content, role[0] == 'u' ? BLOCKS_USER : BLOCKS_ASSISTANT)) < 0) {
            respond_anthropic_error(conn, 400, NULL, 0, "messages.%zu.content: Input should "
                                    "be a string or a list of content blocks", i);
            return -1;
        }
        bytes += b;
        /* every tool_result answers a tool_use of the turn before */
        if (role[0] == 'u' && json_is_array(content)) {
            json_t *prev = json_object_get(json_array_get(v, i - 1), "content");
            size_t k;
            json_t *blk;

            json_array_foreach(content, k, blk) {
                const char *bt = json_string_value(json_object_get(blk, "type"));
                const char *id = json_string_value(json_object_get(blk, "tool_use_id"));

                if (!bt || strcmp(bt, "tool_result") != 0)
                    continue;
                if (i == 0 || !json_is_array(prev) ||
                    !has_block(prev, "tool_use", "id", id)) {
                    respond_anthropic_error(conn, 400, NULL, 0, "messages.%zu.content.%zu: "
                                            "unexpected tool_use_id found in tool_result "
                                            "blocks: %.64s. Each tool_result block must "
                                            "have a corresponding tool_use block in the "
                                            "previous message.", i, k, id);
                    return -1;
                }
            }
        }
    }
    if (tools_read(conn, root) < 0)
        return -1;
    v = json_object_get(root, "system");
    if (v && (b = blocks_bytes(v, BLOCKS_SYSTEM)) < 0) {
        respond_anthropic_error(conn, 400, NULL, 0, "system: Input should be a string or a "
                                "list of text blocks");
        return -1;
    }
    bytes += v ? b : 0;
    v = json_object_get(root, "stop_sequences");
    if (v) {
        json_t *x;

        if (!json_is_array(v)) {
            respond_anthropic_error(conn, 400, NULL, 0, "stop_sequences: Input should be a "
                                    "list of strings");
            return -1;
        }
        json_array_foreach(v, i, x)
            if (!json_is_string(x)) {
                respond_anthropic_error(conn, 400, NULL, 0, "stop_sequences.%zu: Input "
                                        "should be a string", i);
                return -1;
            }
        *stops = v;
    }
    v = json_object_get(root, "stream");
    if (v && !json_is_boolean(v)) {
        respond_anthropic_error(conn, 400, NULL, 0, "stream: Input should be a boolean");
        return -1;
    }
    g->stream = json_is_true(v);
    v = json_object_get(root, "temperature");
    if (v && (!json_is_number(v) || json_number_value(v) < 0 || json_number_value(v) > 1)) {
        respond_anthropic_error(conn, 400, NULL, 0, "temperature: Input should be a number "
                                "between 0 and 1");
        return -1;
    }
    v = json_object_get(root, "top_p");
    if (v && !json_is_number(v)) {
        respond_anthropic_error(conn, 400, NULL, 0, "top_p: Input should be a number");
        return -1;
    }
    v = json_object_get(root, "top_k");
    if (v && !json_is_integer(v)) {
        respond_anthropic_error(conn, 400, NULL, 0, "top_k: Input should be an integer");
        return -1;
    }
    v = json_object_get(root, "metadata");
    if (v && (!json_is_object(v) || json_object_size(v) > 1 ||
              (json_object_size(v) == 1 && !json_is_string(json_object_get(v, "user_id"))))) {
        respond_anthropic_error(conn, 400, NULL, 0, "metadata: only user_id (a string) is "
                                "accepted");
        return -1;
    }
    g->include_usage = 0;
    g->P = estimate((size_t)bytes);
    return 0;
}

static void
add_sse(struct evbuffer *b, const char *name, json_t *data)
{
    char *text = data ? json_dumps(data, JSON_COMPACT) : NULL;

    if (text)
        evbuffer_add_printf(b, "event: %s\ndata: %s\n\n", name, text);
    free(text);
    json_decref(data);
}

/*
 * A Messages answer that calls tools (the request has tools, tool_choice
 * is not none, and its last turn holds no tool_result): tool_choice tool
 * calls that one; else the first tool, and the second too when there is
 * one and parallel use is not disabled.  Each call's input is
 * {"query": "tokK"}; with tool_choice auto a text block "tok0" comes
 * first.  A stream sends it all at once (faults other than those before
 * the answer do not apply).
 */
static void
messages_tool_answer(struct mock_api *api, struct mock_http_conn *conn, json_t *root,
                     const struct gen *g, int C, unsigned long long id, const char *extra)
{
    json_t *tools = json_object_get(root, "tools");
    json_t *choice = json_object_get(root, "tool_choice");
    const char *ct = choice ? json_string_value(json_object_get(choice, "type")) : "auto";
    const char *names[2];
    json_t *content = json_array(), *msg;
    char mid[48], tid[64], q[24];
    int n = 0, k, text = strcmp(ct, "auto") == 0;

    snprintf(mid, sizeof(mid), "msg_mock_%llu", id);
    if (strcmp(ct, "tool") == 0) {
        names[n++] = json_string_value(json_object_get(choice, "name"));
    } else {
        names[n++] = json_string_value(json_object_get(json_array_get(tools, 0), "name"));
        if (json_array_size(tools) > 1 &&
            !json_is_true(json_object_get(choice, "disable_parallel_tool_use")))
            names[n++] = json_string_value(json_object_get(json_array_get(tools, 1), "name"));
    }
    if (text)
        json_array_append_new(content, json_pack("{s:s,s:s}", "type", "text", "text", "tok0"));
    for (k = 0; k < n; k++) {
        snprintf(tid, sizeof(tid), "toolu_mock_%llu_%d", id, k);
        snprintf(q, sizeof(q), "tok%d", k);
        json_array_append_new(content, json_pack("{s:s,s:s,s:s,s:{s:s}}", "type", "tool_use",
                                                 "id", tid, "name", names[k], "input",
                                                 "query", q));
    }
    msg = json_pack("{s:s,s:s,s:s,s:s,s:o,s:s,s:n,s:{s:i,s:i}}", "id", mid, "type", "message",
                    "role", "assistant", "model", api->models[g->mi], "content", content,
                    "stop_reason", "tool_use", "stop_sequence", "usage", "input_tokens",
                    g->P, "output_tokens", C);
    if (!g->stream) {
        respond_json(conn, 200, extra, msg, 0);
        json_decref(msg);
        return;
    }
    {
        struct evbuffer *b = evbuffer_new();
        size_t i;
        json_t *blk;

        if (!b) {
            json_decref(msg);
            respond_anthropic_error(conn, 500, NULL, 0, "out of memory");
            return;
        }
        add_sse(b, "message_start", json_pack(
                    "{s:s,s:{s:s,s:s,s:s,s:s,s:[],s:n,s:n,s:{s:i,s:i}}}", "type",
                    "message_start", "message", "id", mid, "type", "message", "role",
                    "assistant", "model", api->models[g->mi], "content", "stop_reason",
                    "stop_sequence", "usage", "input_tokens", g->P, "output_tokens", 1));
        json_array_foreach(content, i, blk) {
            const char *bt = json_string_value(json_object_get(blk, "type"));

            if (strcmp(bt, "text") == 0) {
                add_sse(b, "content_block_start", json_pack(
                            "{s:s,s:i,s:{s:s,s:s}}", "type", "content_block_start", "index",
                            (int)i, "content_block", "type", "text", "text", ""));
                add_sse(b, "content_block_delta", json_pack(
                            "{s:s,s:i,s:{s:s,s:s}}", "type", "content_block_delta", "index",
                            (int)i, "delta", "type", "text_delta", "text", "tok0"));
            } else {
                char piece[48];

                add_sse(b, "content_block_start", json_pack(
                            "{s:s,s:i,s:{s:s,s:O,s:O,s:{}}}", "type", "content_block_start",
                            "index", (int)i, "content_block", "type", "tool_use", "id",
                            json_object_get(blk, "id"), "name", json_object_get(blk, "name"),
                            "input"));
                snprintf(piece, sizeof(piece), "\"%s\"}", json_string_value(json_object_get(
                             json_object_get(blk, "input"), "query")));
                add_sse(b, "content_block_delta", json_pack(
                            "{s:s,s:i,s:{s:s,s:s}}", "type", "content_block_delta", "index",
                            (int)i, "delta", "type", "input_json_delta", "partial_json",
                            "{\"query\": "));
                add_sse(b, "content_block_delta", json_pack(
                            "{s:s,s:i,s:{s:s,s:s}}", "type", "content_block_delta", "index",
                            (int)i, "delta", "type", "input_json_delta", "partial_json", piece));
            }
            add_sse(b, "content_block_stop", json_pack("{s:s,s:i}", "type",
                                                       "content_block_stop", "index", (int)i));
        }
        add_sse(b, "message_delta", json_pack("{s:s,s:{s:s,s:n},s:{s:i}}", "type",
                                              "message_delta", "delta", "stop_reason",
                                              "tool_use", "stop_sequence", "usage",
                                              "output_tokens", C));
        add_sse(b, "message_stop", json_pack("{s:s}", "type", "message_stop"));
        mock_http_stream_start(conn, 200, "text/event-stream", extra);
        mock_http_stream_write(conn, (const char *)evbuffer_pullup(b, -1),
                               evbuffer_get_length(b));
        mock_http_stream_end(conn);
        evbuffer_free(b);
    }
    json_decref(msg);
}

/*
 * POST /v1/messages: the mock's answer in Anthropic's shapes.  Output
 * stops early at a stop sequence equal to a token ("tok3"): stop_reason
 * stop_sequence; at max_tokens below the answer's length: max_tokens;
 * else end_turn.
 */
static void
messages(struct mock_api *api, struct mock_http_conn *conn, const struct mock_http_req *req,
         json_t *root, const struct mock_fault *f, struct mock_job *job)
{
    json_t *own = NULL, *stops = NULL;
    struct gen g;
    int C, delay, k;
    unsigned long long id;
    const char *reason = "end_turn";
    char seq[24] = "", extra[64];

    if (!mock_http_header(req, "anthropic-version")) {
        respond_anthropic_error(conn, 400, NULL, 0, "anthropic-version: header is required");
        goto out;
    }
    if (!root)
        root = own = json_loadb(req->body, req->body_len, 0, NULL);
    if (messages_read(api, conn, root, &g, &stops) < 0)
        goto out;
    C = f->tokens >= 0 ? f->tokens : api->tokens;
    if (g.limit < C) {
        C = g.limit;
        reason = "max_tokens";
    }
    for (k = 0; stops && k < C; k++) {
        char t[24];
        size_t i;
        json_t *x;

        snprintf(t, sizeof(t), "tok%d", k);
        json_array_foreach(stops, i, x)
            if (strcmp(json_string_value(x), t) == 0)
                break;
        if (i < json_array_size(stops)) {
            C = k;
            reason = "stop_sequence";
            snprintf(seq, sizeof(seq), "%s", t);
            break;
        }
    }
    delay = f->token_delay_ms >= 0 ? f->token_delay_ms : api->token_delay_ms;
    id = ++api->next_id;
    set_retry_after(extra, sizeof(extra), f);
    {
        json_t *msgs = json_object_get(root, "messages");
        json_t *last = json_array_get(msgs, json_array_size(msgs) - 1);
        json_t *lc = json_object_get(last, "content");
        const char *ct = json_string_value(json_object_get(json_object_get(root, "tool_choice"),
                                                           "type"));

        if (json_object_get(root, "tools") && !(ct && strcmp(ct, "none") == 0) &&
            strcmp(json_string_value(json_object_get(last, "role")), "user") == 0 &&
            !(json_is_array(lc) && has_block(lc, "tool_result", NULL, NULL))) {
            messages_tool_answer(api, conn, root, &g, C, id, extra);
            goto out;
        }
    }
    if (g.stream) {
        if (!job && !(job = job_new(api, conn, NULL, NULL, f))) {
            respond_anthropic_error(conn, 500, NULL, 0, "out of memory");
            goto out;
        }
        stream_init(job, EP_MESSAGES, &g, C, delay, f, C + 6);
        snprintf(job->prefix, sizeof(job->prefix), "msg_mock_%llu", id);
        snprintf(job->stop_reason, sizeof(job->stop_reason), "%s", reason);
        snprintf(job->stop_seq, sizeof(job->stop_seq), "%s", seq);
        stream_run(conn, job, extra);
        job = NULL; /* the stream owns it now */
        goto out;
    }
    {
        struct evbuffer *body = evbuffer_new();

        if (!body) {
            respond_anthropic_error(conn, 500, NULL, 0, "out of memory");
            goto out;
        }
        evbuffer_add_printf(body, "{\"id\":\"msg_mock_%llu\",\"type\":\"message\","
                            "\"role\":\"assistant\",\"model\":\"%s\",\"content\":"
                            "[{\"type\":\"text\",\"text\":\"", id, api->models[g.mi]);
        if (C <= TOK_CACHE)
            evbuffer_add(body, api->tok_text, api->tok_off[C]);
        else
            add_tokens(body, C);
        evbuffer_add_printf(body, "\"}],\"stop_reason\":\"%s\",\"stop_sequence\":",
                            reason);
        if (seq[0])
            evbuffer_add_printf(body, "\"%s\"", seq);
        else
            evbuffer_add(body, "null", 4);
        evbuffer_add_printf(body, ",\"usage\":{\"input_tokens\":%d,\"output_tokens\":%d}}",
                            g.P, C);
        if (delay > 0 && C > 0) {
            long ms = (long)delay * C;

            if (!job && !(job = job_new(api, conn, NULL, NULL, f))) {
                evbuffer_free(body);
                respond_anthropic_error(conn, 500, NULL, 0, "out of memory");
                goto out;
            }
            job->phase = JOB_GEN;
            job->body = body;
            job->truncate = f->close_after_chunks >= 0;
            memcpy(job->extra, extra, sizeof(extra));
            mock_http_set_job(conn, NULL, job_on_close, job);
            job_arm(job, ms > 3600000 ? 3600000 : (int)ms);
            job = NULL;
            goto out;
        }
        mock_http_respond(conn, 200, "application/json", extra, body,
                          f->close_after_chunks >= 0);
        evbuffer_free(body);
    }
out:
    json_decref(own);
    if (job)
        job_free(job);
}

/* --api-key: 1 when req carries it (x-api-key on /v1/messages, a bearer
 * token elsewhere), else answers 401 in the route's shape and returns 0. */
static int
authorized(const struct mock_api *api, struct mock_http_conn *conn,
           const struct mock_http_req *req, int anthropic)
{
    const char *h;

    if (!api->api_key)
        return 1;
    if (anthropic) {
        h = mock_http_header(req, "x-api-key");
        if (h && strcmp(h, api->api_key) == 0)
            return 1;
        respond_anthropic_error(conn, 401, NULL, 0, "invalid x-api-key");
        return 0;
    }
    h = mock_http_header(req, "authorization");
    if (h && strncmp(h, "Bearer ", 7) == 0 && strcmp(h + 7, api->api_key) == 0)
        return 1;
    /* GET /v1/models is both APIs' (a health check of either kind) */
    h = mock_http_header(req, "x-api-key");
    if (strncmp(req->path, "/v1/models", 10) == 0 && h && strcmp(h, api->api_key) == 0)
        return 1;
    respond_error(conn, 401, NULL, "invalid_request_error", "invalid_api_key", NULL, 0,
                  "Incorrect API key provided (send 'Authorization: Bearer KEY')");
    return 0;
}

/*
 * Route an API request once its faults before the answer (reset, hang,
 * delay) are behind it.  job: the DELAY job that waited, or NULL; it is
 * reused for a stream or freed.
 */
static void
answer(struct mock_api *api, struct mock_http_conn *conn,
       const struct mock_http_req *req, json_t *root, const struct mock_fault *f,
       struct mock_job *job)
{
    const char *p = req->path;
    int post = strcmp(req->method, "POST") == 0;
    int get = strcmp(req->method, "GET") == 0;
    int anthropic = strcmp(p, "/v1/messages") == 0;
    enum endpoint ep;

    if (!authorized(api, conn, req, anthropic))
        goto free_job;
    if (f->status && anthropic) {
        char extra[64];

        set_retry_after(extra, sizeof(extra), f);
        respond_anthropic_error(conn, f->status, extra, f->close_after_chunks >= 0,
                                "mock fault: status %d", f->status);
        goto free_job;
    }
    if (f->status) {
        respond_fault_status(conn, f);
        goto free_job;
    }
    if (anthropic) {
        if (!post)
            goto not_allowed;
        messages(api, conn, req, root, f, job);
        return;
    }
    if (strcmp(p, "/v1/chat/completions") == 0 || strcmp(p, "/v1/completions") == 0) {
        ep = p[4] == 'c' && p[5] == 'h' ? EP_CHAT : EP_COMPLETION;
        if (!post)
            goto not_allowed;
        if (!root && req->body_len == 0) {
            bad_request(conn, "invalid_json", NULL, "We could not parse the JSON body of "
                        "your request: the body is empty.");
            goto free_job;
        }
        generate(api, conn, req, root, f, ep, job);
        return;
    }
    if (strcmp(p, "/v1/embeddings") == 0) {
        if (!post)
            goto not_allowed;
        if (root) {
            embeddings(api, conn, root, f);
        } else {
            json_t *own = json_loadb(req->body, req->body_len, 0, NULL);

            embeddings(api, conn, own, f);
            json_decref(own);
        }
        goto free_job;
    }
    if (strcmp(p, "/v1/models") == 0) {
        if (!get)
            goto not_allowed;
        models(api, conn, NULL, f);
        goto free_job;
    }
    if (strncmp(p, "/v1/models/", 11) == 0 && p[11]) {
        if (!get)
            goto not_allowed;
        models(api, conn, p + 11, f);
        goto free_job;
    }
    respond_error(conn, 404, NULL, "invalid_request_error", "unknown_url", NULL, 0,
                  "Unknown request URL: %.16s %.200s", req->method, p);
    goto free_job;
not_allowed:
    respond_error(conn, 405, post ? "Allow: GET\r\n" : "Allow: POST\r\n",
                  "invalid_request_error", "method_not_allowed", NULL, 0,
                  "Method %.16s is not allowed on %.200s", req->method, p);
free_job:
    if (job)
        job_free(job);
}

static void
job_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct mock_job *j = arg;
    struct mock_http_conn *conn = j->conn;

    (void)fd;
    (void)what;
    j->timer_pending = 0;
    switch (j->phase) {
    case JOB_DELAY: {
        /* the job is cleared from the conn: answer() reuses or frees it */
        mock_http_set_job(conn, NULL, NULL, NULL);
        answer(j->api, conn, j->req, j->root, &j->fault, j);
        break;
    }
    case JOB_GEN: {
        struct evbuffer *body = j->body;
        char extra[64];
        int truncate = j->truncate;

        memcpy(extra, j->extra, sizeof(extra));
        j->body = NULL;
        job_free(j);
        mock_http_respond(conn, 200, "application/json", extra, body, truncate);
        evbuffer_free(body);
        break;
    }
    case JOB_STREAM:
        j->delay_done = 1;
        stream_pump(j);
        break;
    }
}

/* ------------------------------------------------------------ control */

static json_t *
fault_json(const struct mock_api *api)
{
    char rt[MOCK_FAULT_SPEC_MAX], cli[MOCK_FAULT_SPEC_MAX];

    rt[0] = '\0';
    if (api->has_rt_fault)
        mock_fault_format(&api->rt_fault, rt, sizeof(rt));
    mock_fault_format(&api->cli_fault, cli, sizeof(cli));
    return json_pack("{s:s,s:o,s:s}", "fault", rt, "count",
                     api->has_rt_fault && api->rt_fault.count > 0
                         ? json_integer(api->rt_fault.count) : json_null(),
                     "cli_fault", cli);
}

static void
control(struct mock_api *api, struct mock_http_conn *conn, const struct mock_http_req *req)
{
    const char *p = req->path, *m = req->method;
    json_t *obj = NULL;

    if (strcmp(p, "/_mock/requests") == 0) {
        if (strcmp(m, "DELETE") == 0) {
            if (api->rec)
                mock_record_clear(api->rec);
            api->count = 0;
        } else if (strcmp(m, "GET") != 0) {
            goto not_allowed;
        }
        obj = json_pack("{s:I,s:o}", "count", (json_int_t)api->count, "requests",
                        api->rec ? mock_record_list(api->rec) : json_array());
    } else if (strcmp(p, "/_mock/fault") == 0) {
        if (strcmp(m, "POST") == 0 || strcmp(m, "PUT") == 0) {
            struct mock_fault f;
            char err[256];

            if (mock_fault_parse(&f, req->body, req->body_len, 1, err, sizeof(err)) < 0) {
                bad_request(conn, "invalid_fault", NULL, err);
                return;
            }
            api->rt_fault = f;
            api->has_rt_fault = mock_fault_active(&f);
        } else if (strcmp(m, "DELETE") == 0) {
            api->has_rt_fault = 0;
        } else if (strcmp(m, "GET") != 0) {
            goto not_allowed;
        }
        obj = fault_json(api);
    } else if (strcmp(p, "/_mock/stats") == 0) {
        if (strcmp(m, "GET") != 0)
            goto not_allowed;
        obj = json_pack("{s:I,s:I,s:I,s:I}", "count", (json_int_t)api->count,
                        "open_connections",
                        (json_int_t)(api->http ? mock_http_open_connections(api->http) : 0),
                        "active_streams", (json_int_t)api->active_streams,
                        "stream_events", (json_int_t)api->stream_events);
    } else {
        respond_error(conn, 404, NULL, "invalid_request_error", "unknown_url", NULL, 0,
                      "Unknown control URL: %.200s (known: /_mock/requests, "
                      "/_mock/fault, /_mock/stats)", p);
        return;
    }
    respond_json(conn, 200, NULL, obj, 0);
    json_decref(obj);
    return;
not_allowed:
    respond_error(conn, 405, NULL, "invalid_request_error", "method_not_allowed", NULL, 0,
                  "Method %.16s is not allowed on %.200s", m, p);
}

/* ------------------------------------------------------------ requests */

static json_t *
string_lossy(const char *s, size_t len)
{
    json_t *j = json_stringn(s, len);
    char *copy;
    size_t i;

    if (j)
        return j;
    /* not UTF-8: keep the ASCII bytes readable */
    copy = malloc(len + 1);
    if (!copy)
        return json_null();
    for (i = 0; i < len; i++)
        copy[i] = (unsigned char)s[i] < 0x80 && s[i] != '\0' ? s[i] : '?';
    j = json_stringn(copy, len);
    free(copy);
    return j ? j : json_null();
}

static void
record(struct mock_api *api, const struct mock_http_req *req, json_t *root)
{
    json_t *e = json_object(), *h = json_object();
    size_t i;

    if (!e || !h) {
        json_decref(e);
        json_decref(h);
        return;
    }
    for (i = 0; i < req->n_headers; i++) {
        const char *n = req->headers[i].name;
        json_t *old = json_object_get(h, n);
        json_t *v = string_lossy(req->headers[i].value, strlen(req->headers[i].value));

        if (json_is_string(old) && json_is_string(v)) {
            char *joined;
            size_t a = json_string_length(old), b = json_string_length(v);

            joined = malloc(a + b + 3);
            if (joined) {
                memcpy(joined, json_string_value(old), a);
                memcpy(joined + a, ", ", 2);
                memcpy(joined + a + 2, json_string_value(v), b + 1);
                json_object_set_new(h, n, string_lossy(joined, a + b + 2));
                free(joined);
            }
            json_decref(v);
        } else {
            json_object_set_new(h, n, v);
        }
    }
    json_object_set_new(e, "method", json_string(req->method));
    json_object_set_new(e, "path", string_lossy(req->path, strlen(req->path)));
    if (req->query)
        json_object_set_new(e, "query", string_lossy(req->query, strlen(req->query)));
    json_object_set_new(e, "headers", h);
    if (root)
        json_object_set(e, "body", root);
    else if (req->body_len)
        json_object_set_new(e, "body", string_lossy(req->body, req->body_len));
    else
        json_object_set_new(e, "body", json_null());
    mock_record_add(api->rec, e);
}

void
mock_api_handle(struct mock_http_conn *conn, const struct mock_http_req *req, void *arg)
{
    struct mock_api *api = arg;
    struct mock_fault f;
    const char *hdr;
    json_t *root = NULL;

    if (strncmp(req->path, "/_mock/", 7) == 0) {
        control(api, conn, req);
        return;
    }
    api->count++;
    if (api->rec) {
        /* the recorder needs the tree; the endpoints share it */
        if (req->body_len)
            root = json_loadb(req->body, req->body_len, 0, NULL);
        record(api, req, root);
    }

    hdr = mock_http_header(req, "x-mock-fault");
    if (hdr) {
        char err[256];

        if (mock_fault_parse(&f, hdr, strlen(hdr), 0, err, sizeof(err)) < 0) {
            bad_request(conn, "invalid_fault", NULL, err);
            goto out;
        }
    } else if (api->has_rt_fault) {
        f = api->rt_fault;
        if (api->rt_fault.count > 0 && --api->rt_fault.count == 0)
            api->has_rt_fault = 0;
    } else {
        f = api->cli_fault;
    }

    if (f.reset) {
        mock_http_reset(conn);
        goto out;
    }
    if (f.hang)
        goto out; /* the exchange stays open until the client leaves */
    if (f.delay_ms > 0) {
        struct mock_job *j = job_new(api, conn, req, root, &f);

        if (!j) {
            respond_error(conn, 500, NULL, "server_error", NULL, NULL, 0, "out of memory");
            goto out;
        }
        j->phase = JOB_DELAY;
        mock_http_set_job(conn, NULL, job_on_close, j);
        job_arm(j, f.delay_ms);
        goto out;
    }
    answer(api, conn, req, root, &f, NULL);
out:
    json_decref(root);
}

/* ------------------------------------------------------------ setup */

static int
model_name_ok(const char *s, size_t n)
{
    size_t i;

    if (n == 0 || n > MOCK_MAX_MODEL_LEN)
        return 0;
    for (i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && !strchr("._-:/@+", s[i]))
            return 0;
    return 1;
}

struct mock_api *
mock_api_new(struct event_base *base, const struct mock_api_options *opt,
             char *err, size_t errlen)
{
    struct mock_api *api = calloc(1, sizeof(*api));
    const char *p;
    struct evbuffer *b = NULL;
    size_t i;

    if (!api) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    api->base = base;
    api->tokens = opt->tokens;
    api->token_delay_ms = opt->token_delay_ms;
    api->started = time(NULL);
    mock_fault_init(&api->rt_fault);
    if (mock_fault_parse(&api->cli_fault, opt->fault ? opt->fault : "",
                         opt->fault ? strlen(opt->fault) : 0, 0, err, errlen) < 0)
        goto fail;
    for (p = opt->models; *p;) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);

        if (!model_name_ok(p, n)) {
            snprintf(err, errlen, "bad model name '%.*s': use 1..%d characters among "
                     "letters, digits and ._-:/@+", (int)(n > 200 ? 200 : n), p,
                     MOCK_MAX_MODEL_LEN);
            goto fail;
        }
        if (api->n_models == MOCK_MAX_MODELS) {
            snprintf(err, errlen, "too many models (limit %d)", MOCK_MAX_MODELS);
            goto fail;
        }
        api->models[api->n_models] = strndup(p, n);
        if (!api->models[api->n_models]) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
        api->model_len[api->n_models] = n;
        api->n_models++;
        p = e ? e + 1 : p + n;
    }
    if (api->n_models == 0) {
        snprintf(err, errlen, "no models given: --models needs at least one name");
        goto fail;
    }
    b = evbuffer_new();
    if (!b) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    evbuffer_add_printf(b, "{\"object\":\"list\",\"data\":[");
    for (i = 0; i < api->n_models; i++)
        evbuffer_add_printf(b, "%s{\"id\":\"%s\",\"object\":\"model\",\"created\":%ld,"
                            "\"owned_by\":\"mockllm\"}", i ? "," : "", api->models[i],
                            (long)api->started);
    evbuffer_add_printf(b, "]}");
    api->models_body_len = evbuffer_get_length(b);
    api->models_body = malloc(api->models_body_len);
    if (!api->models_body) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    evbuffer_remove(b, api->models_body, api->models_body_len);
    evbuffer_free(b);
    b = NULL;
    api->tok_text = malloc((size_t)TOK_CACHE * 9);
    if (!api->tok_text) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    api->tok_off[0] = 0;
    for (i = 0; i < TOK_CACHE; i++) {
        size_t off = api->tok_off[i];
        int n = snprintf(api->tok_text + off, (size_t)TOK_CACHE * 9 - off,
                         i ? " tok%zu" : "tok%zu", i);

        api->tok_off[i + 1] = off + (size_t)n;
    }
    if (opt->api_key && !(api->api_key = strdup(opt->api_key))) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (opt->record && !(api->rec = mock_record_new(MOCK_RECORD_CAP))) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    return api;
fail:
    if (b)
        evbuffer_free(b);
    mock_api_free(api);
    return NULL;
}

void
mock_api_set_http(struct mock_api *api, struct mock_http *http)
{
    api->http = http;
}

void
mock_api_free(struct mock_api *api)
{
    size_t i;

    if (!api)
        return;
    for (i = 0; i < api->n_models; i++)
        free(api->models[i]);
    free(api->models_body);
    free(api->tok_text);
    free(api->api_key);
    mock_record_free(api->rec);
    free(api);
}
