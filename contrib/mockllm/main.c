/*
 * main.c: bin/mockllm, an OpenAI-compatible model server with fault
 * injection, for tests, demos and benchmarks.
 *
 * Parses the options, builds the API state (api.c) and the HTTP server
 * (http.c) on one libevent loop, and runs until SIGTERM or SIGINT, after
 * which everything is freed so that LeakSanitizer stays quiet.  Nothing is
 * logged per request: the mock is the baseline of the benchmarks.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "contrib/mockllm/api.h"
#include "contrib/mockllm/fault.h"
#include "contrib/mockllm/http.h"

#define DEFAULT_LISTEN "127.0.0.1:8000"
#define DEFAULT_MODELS "qwen2.5-7b,gpt-4o-mini,text-embedding-3-small"

static void
usage(FILE *out)
{
    fputs(
"usage: mockllm [--listen HOST:PORT] [--models a,b,...] [--tokens N]\n"
"               [--token-delay-ms D] [--fault SPEC] [--api-key KEY] [--no-record]\n"
"               [--any-address]\n"
"\n"
"An OpenAI-compatible model server for tests, demos and benchmarks. Answers are\n"
"deterministic: N words \"tok0 tok1 ...\", usage estimated as prompt bytes / 4.\n"
"\n"
"options:\n"
"  --listen HOST:PORT    address to serve (default " DEFAULT_LISTEN "); only\n"
"                        loopback addresses unless --any-address\n"
"  --models a,b,...      model names served (default\n"
"                        " DEFAULT_MODELS ")\n"
"  --tokens N            completion tokens per answer, 0..1000000 (default 16);\n"
"                        a request's max_tokens lowers it\n"
"  --token-delay-ms D    delay before each streamed token, 0..60000 (default 0);\n"
"                        a non-stream answer waits N x D\n"
"  --fault SPEC          default fault for every request (see below)\n"
"  --api-key KEY         require KEY on /v1/: 'Authorization: Bearer KEY' on the\n"
"                        OpenAI routes, 'x-api-key: KEY' on /v1/messages (and\n"
"                        either on GET /v1/models; 401 without it); default:\n"
"                        no key needed\n"
"  --no-record           keep only the request count, not the last 256 requests\n"
"  --any-address         allow a non-loopback --listen address\n"
"  -h, --help            this text\n"
"\n"
"endpoints:\n"
"  POST /v1/chat/completions   stream, stream_options.include_usage, max_tokens\n"
"  POST /v1/completions        same, legacy text completions\n"
"  POST /v1/embeddings         input string or array; dimensions (default 8);\n"
"                              encoding_format float or base64\n"
"  GET  /v1/models, /v1/models/ID\n"
"  POST /v1/messages           Anthropic's Messages API: needs anthropic-version\n"
"                              and max_tokens; system, stop_sequences (a stop\n"
"                              sequence \"tokK\" ends the answer before tokK),\n"
"                              stream (Anthropic's events), tools (answers with\n"
"                              tool_use until the last turn holds tool_result);\n"
"                              unknown fields: 400\n"
"  GET  /_mock/requests        {\"count\", \"requests\": last 256 requests}\n"
"  DELETE /_mock/requests      forget them and zero the count\n"
"  POST /_mock/fault           body SPEC[,count=K]: default fault (next K requests\n"
"                              only with count); empty body clears; GET shows it\n"
"  GET  /_mock/stats           {\"count\", \"open_connections\" (this one included),\n"
"                              \"active_streams\", \"stream_events\": SSE events\n"
"                              written by all streams so far}\n"
"\n"
"faults: the header 'x-mock-fault: SPEC' (an empty value means none) wins over\n"
"the default set by POST /_mock/fault, which wins over --fault. SPEC items:\n"
"  status=N              answer N (400..599) with an OpenAI error body\n"
"                        (Anthropic's error body on /v1/messages)\n"
"  retry-after=S         add Retry-After: S\n"
"  delay-ms=D            wait D ms before the response headers\n"
"  close-after-chunks=K  stream: close after K SSE events (no [DONE]);\n"
"                        non-stream: send the headers and half the body, close\n"
"  hang                  read the request, never answer\n"
"  reset                 close the connection with a TCP RST\n"
"  error-after-chunks=K  stream: an `event: error` after K events, then the end\n"
"                        (overloaded_error on /v1/messages)\n"
"  tokens=N, token-delay-ms=D   per-request overrides\n"
"A stream is: (chat) a role event, one event per token, a finish event, the\n"
"usage event if include_usage, then [DONE]. A Messages stream is message_start,\n"
"content_block_start, ping, one content_block_delta per token,\n"
"content_block_stop, message_delta (stop_reason, output_tokens), message_stop.\n"
"\n"
"example:\n"
"  mockllm --listen 127.0.0.1:8000 &\n"
"  curl -s 127.0.0.1:8000/v1/chat/completions -H 'x-mock-fault: status=429,retry-after=2' \\\n"
"       -d '{\"model\":\"qwen2.5-7b\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}'\n",
        out);
}

static int
parse_num(const char *opt, const char *s, long lo, long hi, int *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "mockllm: bad %s '%s': expected an integer %ld..%ld\n",
                opt, s, lo, hi);
        return -1;
    }
    *out = (int)v;
    return 0;
}

static void
on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)sig;
    (void)what;
    event_base_loopbreak(arg);
}

int
main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"listen", required_argument, NULL, 'l'},
        {"models", required_argument, NULL, 'm'},
        {"tokens", required_argument, NULL, 't'},
        {"token-delay-ms", required_argument, NULL, 'd'},
        {"fault", required_argument, NULL, 'f'},
        {"no-record", no_argument, NULL, 'n'},
        {"api-key", required_argument, NULL, 'k'},
        {"any-address", no_argument, NULL, 'a'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct mock_api_options opt = {DEFAULT_MODELS, 16, 0, NULL, 1, NULL};
    const char *listen_addr = DEFAULT_LISTEN;
    int any_address = 0, c, rc = 1;
    struct event_base *base = NULL;
    struct event *sigterm = NULL, *sigint = NULL;
    struct mock_api *api = NULL;
    struct mock_http *http = NULL;
    char err[512];

    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'l': listen_addr = optarg; break;
        case 'm': opt.models = optarg; break;
        case 't':
            if (parse_num("--tokens", optarg, 0, 1000000, &opt.tokens) < 0)
                return 2;
            break;
        case 'd':
            if (parse_num("--token-delay-ms", optarg, 0, 60000, &opt.token_delay_ms) < 0)
                return 2;
            break;
        case 'f': opt.fault = optarg; break;
        case 'n': opt.record = 0; break;
        case 'k':
            if (optarg[0] == '\0' || strlen(optarg) > 256) {
                fprintf(stderr, "mockllm: bad --api-key: expected 1..256 bytes\n");
                return 2;
            }
            opt.api_key = optarg;
            break;
        case 'a': any_address = 1; break;
        case 'h': usage(stdout); return 0;
        default:
            fprintf(stderr, "mockllm: see 'mockllm --help'\n");
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "mockllm: unexpected argument '%s': see 'mockllm --help'\n",
                argv[optind]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);

    base = event_base_new();
    if (!base) {
        fprintf(stderr, "mockllm: cannot create the event loop\n");
        goto out;
    }
    api = mock_api_new(base, &opt, err, sizeof(err));
    if (!api) {
        fprintf(stderr, "mockllm: %s\n", err);
        rc = 2;
        goto out;
    }
    http = mock_http_new(base, listen_addr, any_address, mock_api_handle, api,
                         err, sizeof(err));
    if (!http) {
        fprintf(stderr, "mockllm: %s\n", err);
        goto out;
    }
    mock_api_set_http(api, http);
    sigterm = evsignal_new(base, SIGTERM, on_signal, base);
    sigint = evsignal_new(base, SIGINT, on_signal, base);
    if (!sigterm || !sigint || evsignal_add(sigterm, NULL) < 0 ||
        evsignal_add(sigint, NULL) < 0) {
        fprintf(stderr, "mockllm: cannot install signal handlers\n");
        goto out;
    }
    fprintf(stderr, "mockllm: listening on %s (models %s, %d tokens, token delay %d ms%s%s)\n",
            listen_addr, opt.models, opt.tokens, opt.token_delay_ms,
            opt.fault ? ", fault " : "", opt.fault ? opt.fault : "");
    if (event_base_dispatch(base) < 0) {
        fprintf(stderr, "mockllm: event loop failed\n");
        goto out;
    }
    rc = 0;
out:
    mock_http_free(http);
    mock_api_free(api);
    if (sigterm)
        event_free(sigterm);
    if (sigint)
        event_free(sigint);
    if (base)
        event_base_free(base);
    return rc;
}
