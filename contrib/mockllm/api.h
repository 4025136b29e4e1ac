/*
 * api.h: the OpenAI-compatible endpoints, the faults and the /_mock/
 * control endpoints of mockllm, as a handler for http.h.
 */
#ifndef MOCK_API_H
#define MOCK_API_H

#include <stddef.h>

#include "contrib/mockllm/http.h"

struct event_base;
struct mock_api;

#define MOCK_MAX_MODELS 64
#define MOCK_MAX_MODEL_LEN 128
#define MOCK_RECORD_CAP 256

struct mock_api_options {
    const char *models;   /* borrowed: comma-separated model names */
    int tokens;           /* completion tokens per answer */
    int token_delay_ms;   /* delay between streamed tokens */
    const char *fault;    /* borrowed: --fault SPEC, or NULL */
    int record;           /* keep the last requests, not only the count */
    const char *api_key;  /* borrowed: --api-key, or NULL: no auth */
};

/*
 * Check opt and build the API state.  Returns NULL with a message in err
 * (e.g. "bad model name 'x': ...", "bad fault item ...").
 */
struct mock_api *mock_api_new(struct event_base *base,
                              const struct mock_api_options *opt,
                              char *err, size_t errlen);

/* Free the API state; call after mock_http_free() (jobs end with conns). */
void mock_api_free(struct mock_api *api);

/* Tell the API its server, for GET /_mock/stats (borrowed). */
void mock_api_set_http(struct mock_api *api, struct mock_http *http);

/* The http.h handler; arg is the struct mock_api. */
void mock_api_handle(struct mock_http_conn *conn, const struct mock_http_req *req,
                     void *arg);

#endif
