/*
 * replay.c - replay samples through a running gateway (see replay.h).
 *
 * Design: one libcurl multi handle with at most `concurrency` transfers in
 * flight. Samples are read lazily: a new sample is read only when a slot is
 * free and the previous sample's versions are all queued, so memory holds
 * the in-flight requests and nothing else, whatever the file size. Each
 * request keeps references to the sample fields it copies into its output
 * line (jansson refcounts), not the whole record.
 *
 * Retries: a 429 or 503 waits for its `retry-after` (seconds; 1 s when
 * absent or unreadable, capped at 60 s); other 5xx and transport errors
 * back off 0.5 s, 1 s, 2 s, ... Up to --retries attempts, then the request
 * is reported on stderr and counted as failed. Delayed requests wait in a
 * list ordered by due time; the loop sleeps in curl_multi_poll until the
 * next due time or socket activity.
 *
 * Progress goes to stderr: a redrawn bar when stderr is a terminal,
 * otherwise one plain line every 5 seconds. The key is never printed.
 *
 * Request state: QUEUED -> RUNNING -> (DONE | DELAYED -> RUNNING ... |
 * FAILED); transitions happen in start_request(), finish_request() only.
 */
#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <jansson.h>
#include "evaluator/replay.h"
#include "evaluator/sample.h"

#define VERSIONS_MAX 16
#define CONCURRENCY_MAX 256
#define RESPONSE_MAX (8 << 20)
#define RETRY_AFTER_MAX 60.0

struct request {
    struct request *next;     /* borrowed: next in replay.delayed */
    CURL *easy;               /* owned */
    struct curl_slist *hdrs;  /* owned */
    char *body;               /* owned: request JSON */
    char *resp;               /* owned: response bytes */
    size_t resp_len, resp_cap;
    double retry_after;       /* from the response header, -1 when none */
    double due;               /* delayed until (monotonic seconds) */
    int attempts;
    int slot;                 /* index in replay.inflight while RUNNING */
    int version;
    json_t *base;             /* owned: sample fields to copy (id, user, ...) */
    long line;
};

struct replay {
    const char *gateway, *prompt, *model; /* borrowed from argv */
    char *auth;               /* owned: "Authorization: Bearer ..." */
    char url[2048];
    int versions[VERSIONS_MAX];
    int n_versions;
    int concurrency, retries;
    long timeout_ms;
    int max_tokens;
    CURLM *multi;             /* owned */
    FILE *out;                /* borrowed or owned (out_owned) */
    int out_owned;
    struct request *delayed;  /* owned list, by due time */
    struct request *inflight[CONCURRENCY_MAX]; /* owned: RUNNING requests */
    int running;
    unsigned long long total, done, failed, retried;
    double t0, last_progress;
    int tty;
};

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void request_free(struct request *q)
{
    if (q == NULL)
        return;
    if (q->easy)
        curl_easy_cleanup(q->easy);
    curl_slist_free_all(q->hdrs);
    free(q->body);
    free(q->resp);
    json_decref(q->base);
    free(q);
}

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct request *q = ud;
    size_t n = size * nmemb;

    if (q->resp_len + n + 1 > RESPONSE_MAX)
        return 0; /* aborts the transfer: CURLE_WRITE_ERROR */
    if (q->resp_len + n + 1 > q->resp_cap) {
        size_t cap = (q->resp_len + n + 1) * 2;
        char *p = realloc(q->resp, cap);
        if (p == NULL)
            return 0;
        q->resp = p;
        q->resp_cap = cap;
    }
    memcpy(q->resp + q->resp_len, ptr, n);
    q->resp_len += n;
    q->resp[q->resp_len] = '\0';
    return n;
}

static size_t on_header(char *buf, size_t size, size_t nitems, void *ud)
{
    struct request *q = ud;
    size_t n = size * nitems;
    static const char name[] = "retry-after:";

    if (n > sizeof(name) - 1 && strncasecmp(buf, name, sizeof(name) - 1) == 0) {
        char tmp[64], *end;
        size_t k = n - (sizeof(name) - 1);
        double v;
        if (k >= sizeof(tmp))
            k = sizeof(tmp) - 1;
        memcpy(tmp, buf + sizeof(name) - 1, k);
        tmp[k] = '\0';
        v = strtod(tmp, &end);
        while (*end && isspace((unsigned char)*end))
            end++;
        q->retry_after = (*end == '\0' && v >= 0) ? v : 1.0;
    }
    return n;
}

static int start_request(struct replay *rp, struct request *q)
{
    q->resp_len = 0;
    q->retry_after = -1;
    q->attempts++;
    if (q->easy == NULL) {
        q->easy = curl_easy_init();
        if (q->easy == NULL)
            return -1;
        q->hdrs = curl_slist_append(NULL, "Content-Type: application/json");
        if (q->hdrs)
            q->hdrs = curl_slist_append(q->hdrs, rp->auth);
        if (q->hdrs == NULL)
            return -1;
        curl_easy_setopt(q->easy, CURLOPT_URL, rp->url);
        curl_easy_setopt(q->easy, CURLOPT_HTTPHEADER, q->hdrs);
        curl_easy_setopt(q->easy, CURLOPT_POSTFIELDS, q->body);
        curl_easy_setopt(q->easy, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(q->easy, CURLOPT_WRITEDATA, q);
        curl_easy_setopt(q->easy, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(q->easy, CURLOPT_HEADERDATA, q);
        curl_easy_setopt(q->easy, CURLOPT_TIMEOUT_MS, rp->timeout_ms);
        curl_easy_setopt(q->easy, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(q->easy, CURLOPT_PRIVATE, q);
    }
    for (q->slot = 0; q->slot < CONCURRENCY_MAX; q->slot++)
        if (rp->inflight[q->slot] == NULL)
            break;
    if (q->slot == CONCURRENCY_MAX ||
        curl_multi_add_handle(rp->multi, q->easy) != CURLM_OK)
        return -1;
    rp->inflight[q->slot] = q;
    rp->running++;
    return 0;
}

static void delay_request(struct replay *rp, struct request *q, double wait)
{
    struct request **pp = &rp->delayed;

    q->due = now_s() + wait;
    while (*pp && (*pp)->due <= q->due)
        pp = &(*pp)->next;
    q->next = *pp;
    *pp = q;
    rp->retried++;
}

/* Write the new sample line; -1 when the answer has no text. */
static int write_output(struct replay *rp, struct request *q)
{
    json_t *resp = json_loadb(q->resp ? q->resp : "", q->resp_len, 0, NULL);
    json_t *content = json_object_get(
        json_object_get(json_array_get(json_object_get(resp, "choices"), 0),
                        "message"),
        "content");
    json_t *line;
    char v[16];

    if (!json_is_string(content)) {
        json_decref(resp);
        return -1;
    }
    line = json_deep_copy(q->base);
    snprintf(v, sizeof(v), "%d", q->version);
    json_object_set_new(line, "version", json_string(v));
    json_object_set_new(line, "prompt", json_string(rp->prompt));
    json_object_set(line, "output", content);
    json_dumpf(line, rp->out, JSON_COMPACT);
    fputc('\n', rp->out);
    json_decref(line);
    json_decref(resp);
    return 0;
}

static void finish_request(struct replay *rp, struct request *q, CURLcode cc)
{
    long status = 0;
    double wait;

    curl_multi_remove_handle(rp->multi, q->easy);
    rp->inflight[q->slot] = NULL;
    rp->running--;
    curl_easy_getinfo(q->easy, CURLINFO_RESPONSE_CODE, &status);
    if (cc == CURLE_OK && status == 200 && write_output(rp, q) == 0) {
        rp->done++;
        request_free(q);
        return;
    }
    if (q->attempts <= rp->retries &&
        (cc != CURLE_OK || status == 429 || status >= 500)) {
        if ((status == 429 || status == 503) && q->retry_after >= 0)
            wait = fmin(q->retry_after, RETRY_AFTER_MAX);
        else if (status == 429 || status == 503)
            wait = 1.0;
        else
            wait = fmin(0.5 * pow(2.0, q->attempts - 1), RETRY_AFTER_MAX);
        delay_request(rp, q, wait);
        return;
    }
    if (rp->tty)
        fputc('\n', stderr);
    if (cc != CURLE_OK)
        fprintf(stderr, "prompteval: sample at line %ld, version %d: cannot "
                "reach '%s': %s\n", q->line, q->version, rp->url,
                curl_easy_strerror(cc));
    else
        fprintf(stderr, "prompteval: sample at line %ld, version %d: gateway "
                "answered %ld: %.200s\n", q->line, q->version, status,
                q->resp ? q->resp : "");
    rp->failed++;
    rp->done++;
    request_free(q);
}

static void progress(struct replay *rp, int final)
{
    double t = now_s(), el = t - rp->t0, rate = el > 0 ? rp->done / el : 0;
    double eta = rate > 0 ? (double)(rp->total - rp->done) / rate : 0;
    int width = 30, fill, i;

    if (rp->tty) {
        if (!final && t - rp->last_progress < 0.1)
            return;
        fill = rp->total ? (int)(width * (double)rp->done / (double)rp->total) : 0;
        fputs("\r[", stderr);
        for (i = 0; i < width; i++)
            fputc(i < fill ? '#' : ' ', stderr);
        fprintf(stderr, "] %llu/%llu  %.1f/s  ETA %.0fs  failed %llu ",
                rp->done, rp->total, rate, eta, rp->failed);
        if (final)
            fputc('\n', stderr);
    } else {
        if (!final && t - rp->last_progress < 5.0)
            return;
        fprintf(stderr, "prompteval: replay %llu/%llu done, %.1f/s, ETA %.0fs, "
                "%llu failed, %llu retried\n", rp->done, rp->total, rate, eta,
                rp->failed, rp->retried);
    }
    rp->last_progress = t;
}

/* Lines in the file: the progress total (samples x versions). */
static unsigned long long count_records(const char *path)
{
    FILE *f = fopen(path, "r");
    char buf[65536];
    size_t n, i;
    unsigned long long lines = 0;

    if (f == NULL)
        return 0;
    while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
        for (i = 0; i < n; i++)
            lines += buf[i] == '\n';
    fclose(f);
    return lines;
}

static json_t *sample_base(const struct evl_sample *s)
{
    json_t *o = json_object();

    if (s->id)
        json_object_set_new(o, "id", json_string(s->id));
    if (s->user)
        json_object_set_new(o, "user", json_string(s->user));
    if (s->variables)
        json_object_set(o, "variables", (json_t *)s->variables);
    if (s->facts)
        json_object_set(o, "facts", (json_t *)s->facts);
    return o;
}

static struct request *new_request(struct replay *rp,
                                   const struct evl_sample *s, json_t *base,
                                   int version)
{
    struct request *q = calloc(1, sizeof(*q));
    json_t *body = json_object(), *pr = json_object();

    if (q == NULL || body == NULL || pr == NULL) {
        free(q);
        json_decref(body);
        json_decref(pr);
        return NULL;
    }
    json_object_set_new(pr, "name", json_string(rp->prompt));
    json_object_set_new(pr, "version", json_integer(version));
    if (s->variables != NULL)
        json_object_set(pr, "variables", (json_t *)s->variables);
    else
        json_object_set_new(pr, "variables", json_object());
    if (rp->model)
        json_object_set_new(body, "model", json_string(rp->model));
    json_object_set_new(body, "prompt", pr);
    if (s->user)
        json_object_set_new(body, "user", json_string(s->user));
    if (rp->max_tokens > 0)
        json_object_set_new(body, "max_tokens", json_integer(rp->max_tokens));
    q->body = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    q->version = version;
    q->line = s->line;
    q->base = json_incref(base);
    if (q->body == NULL) {
        request_free(q);
        return NULL;
    }
    return q;
}

static int parse_versions(struct replay *rp, const char *s)
{
    char *copy = strdup(s), *tok, *save = NULL, *end;

    if (copy == NULL)
        return -1;
    rp->n_versions = 0;
    for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        long v = strtol(tok, &end, 10);
        if (*end != '\0' || v < 1 || v > 1000000000 ||
            rp->n_versions >= VERSIONS_MAX) {
            free(copy);
            return -1;
        }
        rp->versions[rp->n_versions++] = (int)v;
    }
    free(copy);
    return rp->n_versions > 0 ? 0 : -1;
}

static const char replay_help[] =
    "usage: prompteval replay SAMPLES --gateway URL --key K --prompt NAME\n"
    "                         --versions 3,4 [options]\n"
    "\n"
    "Sends each sample's `variables` through a running promptgate once per\n"
    "version (POST URL/v1/chat/completions with\n"
    "{\"prompt\": {\"name\", \"version\", \"variables\"}, \"user\"}) and writes one\n"
    "new sample per answer: the input's id, user, variables and facts, the\n"
    "version, and the generated `output`. Then score them with\n"
    "`prompteval run`.\n"
    "\n"
    "options:\n"
    "  --gateway URL      base URL of promptgate, e.g. http://127.0.0.1:8080\n"
    "  --key K            virtual key; `env:NAME` reads it from $NAME\n"
    "                     (default: $PROMPTGATE_KEY)\n"
    "  --prompt NAME      registry prompt name\n"
    "  --versions A,B     versions to replay (up to 16)\n"
    "  --out FILE         where to write the new samples (default: stdout)\n"
    "  --concurrency N    requests in flight, 1..256 (default 8)\n"
    "  --retries N        attempts after the first for 429/5xx/transport\n"
    "                     errors (default 5); 429 honours retry-after\n"
    "  --timeout-ms N     per-request timeout (default 120000)\n"
    "  --model M          model to ask for (default: the version's params)\n"
    "  --max-tokens N     max_tokens for each request\n"
    "  --map F=COL,...    as for `run`\n"
    "\n"
    "exit status: 0 all answered, 1 some requests failed or error, 2 usage.\n";

int evl_replay_main(int argc, char **argv)
{
    static const struct option lo[] = {
        {"gateway", required_argument, NULL, 'g'},
        {"key", required_argument, NULL, 'k'},
        {"prompt", required_argument, NULL, 'p'},
        {"versions", required_argument, NULL, 'v'},
        {"out", required_argument, NULL, 'o'},
        {"concurrency", required_argument, NULL, 'c'},
        {"retries", required_argument, NULL, 'r'},
        {"timeout-ms", required_argument, NULL, 't'},
        {"model", required_argument, NULL, 'm'},
        {"max-tokens", required_argument, NULL, 'x'},
        {"map", required_argument, NULL, 'M'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    struct replay rp;
    struct evl_reader *r = NULL;
    struct evl_sample s;
    const char *key = NULL, *versions = NULL, *out = NULL, *map = NULL;
    char *err = NULL, *end;
    json_t *base = NULL;
    int c, next_version = 0, eof = 0, status = 1, rc;
    long n;

    memset(&rp, 0, sizeof(rp));
    rp.concurrency = 8;
    rp.retries = 5;
    rp.timeout_ms = 120000;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (c) {
        case 'g': rp.gateway = optarg; break;
        case 'k': key = optarg; break;
        case 'p': rp.prompt = optarg; break;
        case 'v': versions = optarg; break;
        case 'o': out = optarg; break;
        case 'm': rp.model = optarg; break;
        case 'M': map = optarg; break;
        case 'c': case 'r': case 't': case 'x':
            n = strtol(optarg, &end, 10);
            if (*end != '\0' || n < (c == 'r' ? 0 : 1) ||
                n > (c == 'c' ? CONCURRENCY_MAX : c == 'r' ? 100 : 100000000)) {
                fprintf(stderr, "prompteval: invalid value '%s' for --%s\n",
                        optarg, c == 'c' ? "concurrency" : c == 'r' ? "retries"
                                         : c == 't' ? "timeout-ms" : "max-tokens");
                return 2;
            }
            if (c == 'c')
                rp.concurrency = (int)n;
            else if (c == 'r')
                rp.retries = (int)n;
            else if (c == 't')
                rp.timeout_ms = n;
            else
                rp.max_tokens = (int)n;
            break;
        case 'h': fputs(replay_help, stdout); return 0;
        default:
            fprintf(stderr, "prompteval: see 'prompteval replay --help'\n");
            return 2;
        }
    }
    if (optind != argc - 1 || !rp.gateway || !rp.prompt || !versions) {
        fprintf(stderr, "prompteval: replay needs SAMPLES, --gateway, --prompt "
                "and --versions (see 'prompteval replay --help')\n");
        return 2;
    }
    if (parse_versions(&rp, versions) < 0) {
        fprintf(stderr, "prompteval: invalid --versions '%s': expected up to "
                "%d version numbers like 3,4\n", versions, VERSIONS_MAX);
        return 2;
    }
    if (key && strncmp(key, "env:", 4) == 0)
        key = getenv(key + 4);
    else if (key == NULL)
        key = getenv("PROMPTGATE_KEY");
    if (key == NULL || *key == '\0' || strlen(key) > 1024 ||
        strpbrk(key, "\r\n")) {
        fprintf(stderr, "prompteval: replay needs a key: --key K, --key "
                "env:NAME or $PROMPTGATE_KEY\n");
        return 2;
    }
    if (strlen(rp.gateway) > 1900 || (strncmp(rp.gateway, "http://", 7) != 0 &&
                                      strncmp(rp.gateway, "https://", 8) != 0)) {
        fprintf(stderr, "prompteval: invalid --gateway '%s': expected "
                "http://HOST:PORT\n", rp.gateway);
        return 2;
    }
    snprintf(rp.url, sizeof(rp.url), "%s%s/v1/chat/completions", rp.gateway,
             rp.gateway[strlen(rp.gateway) - 1] == '/' ? "." : "");
    if (asprintf(&rp.auth, "Authorization: Bearer %s", key) < 0) {
        rp.auth = NULL;
        return 1;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK ||
        (rp.multi = curl_multi_init()) == NULL) {
        fprintf(stderr, "prompteval: cannot initialise libcurl\n");
        goto done;
    }
    r = evl_reader_open(argv[optind], -1, map, &err);
    if (r == NULL) {
        fprintf(stderr, "prompteval: %s\n", err);
        goto done;
    }
    if (out) {
        rp.out = fopen(out, "w");
        if (rp.out == NULL) {
            fprintf(stderr, "prompteval: cannot open '%s': %s\n", out,
                    strerror(errno));
            goto done;
        }
        rp.out_owned = 1;
    } else {
        rp.out = stdout;
    }
    rp.total = count_records(argv[optind]) * (unsigned long long)rp.n_versions;
    rp.tty = isatty(STDERR_FILENO);
    rp.t0 = rp.last_progress = now_s();
    for (;;) {
        CURLMsg *msg;
        int left, still;
        double t = now_s(), wait_ms = 1000;
        /* fill free slots: delayed requests first, then new samples */
        while (rp.running < rp.concurrency && rp.delayed && rp.delayed->due <= t) {
            struct request *q = rp.delayed;
            rp.delayed = q->next;
            if (start_request(&rp, q) < 0) {
                fprintf(stderr, "prompteval: cannot start a request\n");
                request_free(q);
                goto done;
            }
        }
        while (rp.running < rp.concurrency && !eof) {
            struct request *q;
            if (base == NULL) {
                rc = evl_reader_next(r, &s, EVL_READ_INPUT, &err);
                if (rc == 0) {
                    eof = 1;
                    break;
                }
                if (rc == -2) {
                    fprintf(stderr, "prompteval: %s\n", err);
                    goto done;
                }
                if (rc < 0) {
                    fprintf(stderr, "prompteval: '%s' %s; skipped\n",
                            argv[optind], err);
                    rp.done += (unsigned long long)rp.n_versions;
                    continue;
                }
                base = sample_base(&s);
                next_version = 0;
            }
            q = new_request(&rp, &s, base, rp.versions[next_version]);
            if (q == NULL || start_request(&rp, q) < 0) {
                fprintf(stderr, "prompteval: cannot start a request: out of "
                        "memory\n");
                request_free(q);
                goto done;
            }
            if (++next_version == rp.n_versions) {
                json_decref(base);
                base = NULL;
            }
        }
        if (eof && rp.running == 0 && rp.delayed == NULL)
            break;
        curl_multi_perform(rp.multi, &still);
        while ((msg = curl_multi_info_read(rp.multi, &left)) != NULL) {
            struct request *q = NULL;
            if (msg->msg != CURLMSG_DONE)
                continue;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&q);
            finish_request(&rp, q, msg->data.result);
        }
        progress(&rp, 0);
        if (rp.delayed) {
            double d = (rp.delayed->due - now_s()) * 1000.0;
            wait_ms = d < 0 ? 0 : (d < wait_ms ? d : wait_ms);
        }
        if (rp.running > 0 || rp.delayed)
            curl_multi_poll(rp.multi, NULL, 0, (int)wait_ms, NULL);
    }
    progress(&rp, 1);
    if (fflush(rp.out) != 0 || ferror(rp.out)) {
        fprintf(stderr, "prompteval: cannot write the new samples: %s\n",
                strerror(errno));
        goto done;
    }
    fprintf(stderr, "prompteval: replayed %llu requests, %llu failed, %llu "
            "retries\n", rp.done, rp.failed, rp.retried);
    status = rp.failed ? 1 : 0;
done:
    while (rp.delayed) {
        struct request *q = rp.delayed;
        rp.delayed = q->next;
        request_free(q);
    }
    if (rp.multi) {
        /* requests still running after an error */
        int i;
        for (i = 0; i < CONCURRENCY_MAX; i++) {
            if (rp.inflight[i] == NULL)
                continue;
            curl_multi_remove_handle(rp.multi, rp.inflight[i]->easy);
            request_free(rp.inflight[i]);
        }
        curl_multi_cleanup(rp.multi);
    }
    json_decref(base);
    evl_reader_free(r);
    if (rp.out_owned)
        fclose(rp.out);
    free(rp.auth);
    free(err);
    curl_global_cleanup();
    return status;
}
