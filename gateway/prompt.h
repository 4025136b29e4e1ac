/*
 * prompt.h - registry prompts on the request path (issue 7): the snapshot
 * of the registry, resolving a request's "prompt" reference into messages,
 * experiment arms, exposure records and POST /v1/feedback.
 */
#ifndef GW_PROMPT_H
#define GW_PROMPT_H

#include <stdint.h>
#include <stddef.h>
#include "gateway/jscan.h"

struct event_base;
struct gw_gateway;
struct gw_http_req;
struct gw_reqlog;
struct gw_registry_conf;
struct gw_prompts;
struct gw_exposure_stats;
struct reg_value;

/* Variables of a request's prompt the body's scan keeps; a request with
 * more has them looked up by a pass of its own. */
#define GW_PROMPT_SCAN_VARS 16

/*
 * What handle_inference's one scan of a body captures inside its "prompt"
 * object for the stage: the object's name, label, version and variables,
 * and every member of the variables, so that the stage passes over none
 * of them again. gw_prompt_scan_init hooks it onto the "prompt" field
 * before the scan.
 */
struct gw_prompt_scan {
    struct gw_jscan_field f[4];   /* name, label, version, variables */
    struct gw_jscan_sub prompt;   /* f */
    struct gw_jscan_sub vars;     /* var */
    struct gw_jscan_member var[GW_PROMPT_SCAN_VARS];
};

void gw_prompt_scan_init(struct gw_prompt_scan *ps,
                         struct gw_jscan_field *prompt);

/* The variables of a request, as spans of its body found by gw_jscan. */
struct gw_prompt_vars {
    struct gw_jscan_field *f;     /* borrowed */
    size_t n;
};

/* reg_lookup_fn over a struct gw_prompt_vars: the value of variable name
 * as the body spells it (a string's escapes left for the renderer), or -1
 * when the request has none. */
int gw_prompt_lookup_var(void *arg, const char *name, struct reg_value *out);

/* Loads the registry named by conf (borrowed) into a first snapshot, starts
 * the change watch (a timer on base) and the exposure writer. Returns NULL
 * with a message in err when the registry cannot be read or the exposure
 * log cannot be opened. */
struct gw_prompts *gw_prompts_new(struct event_base *base,
                                  const struct gw_registry_conf *conf,
                                  char *err, size_t errlen);

/* Another worker's view of first (made before any worker loop runs):
 * its own snapshot reference, version cache and requests in flight on
 * base, sharing first's watcher thread and exposure writer. Freed with
 * gw_prompts_free before first. */
struct gw_prompts *gw_prompts_view(struct gw_prompts *first,
                                   struct event_base *base);

/* SIGHUP: applies conf's log_outputs and reloads the snapshot now. A new
 * path or exposures target is refused with a warning (it takes a
 * restart). A registry that cannot be read keeps the last good snapshot. */
void gw_prompts_reload(struct gw_prompts *p,
                       const struct gw_registry_conf *conf);

/* promptgate -t: reads the registry conf names (read only, nothing is
 * created) and checks the exposure log can be written. Returns 0 with a
 * summary in msg, or -1 with the problem, naming the config key. */
int gw_prompts_check(const struct gw_registry_conf *conf, char *msg,
                     size_t len);

/* Metrics (metrics.c): the exposure writer's counters, and the registry
 * loads that failed since start (the last good snapshot kept serving). */
void gw_prompts_stats(struct gw_prompts *p, struct gw_exposure_stats *ex,
                      unsigned long *load_errors);

/* Writes every queued exposure, stops the writer and frees. NULL: no-op. */
void gw_prompts_free(struct gw_prompts *p);

/*
 * The resolve-prompt stage of a chat request whose body has a top-level
 * "prompt" object: f[0..n_f) are the request's gw_jscan fields, f[pi] the
 * "prompt" object and f[ui] the "user" field (f[pi] hooked to a
 * gw_prompt_scan before the scan, or not: the stage then scans the prompt
 * object itself); n_members is the number of
 * members of the body (gw_jscan_count), or (size_t)-1 when not counted:
 * when f captured them all, the stage needs no pass over the body to know
 * which of the version's params it sets. After a rewrite, f is
 * scanned again so that it describes the new body for later stages.
 * Renders the version that the label, version or experiment arm names,
 * rewrites req->body into a plain OpenAI request (messages, the version's
 * params where the request sets none, no "prompt"), adds x-prompt-version
 * and x-prompt-experiment, and remembers the request for its exposure
 * record. `model` (model_cap bytes) is the request's model, "" when it
 * sent none: it is filled from the version's params. key_name (may be
 * NULL) is the authenticated key. Returns 0 to go on, or -1 after
 * answering an error (400 bad reference or render error, 404 unknown
 * prompt, label or version).
 */
int gw_prompt_resolve(struct gw_gateway *gw, struct gw_http_req *req,
                      struct gw_reqlog *rl, struct gw_jscan_field *f,
                      size_t n_f, size_t n_members, size_t pi, size_t ui,
                      const char *key_name, char *model, size_t model_cap);

/* The end of a request (called from gw_proxy_log): a request that used a
 * prompt gets its exposure record completed and queued. Cheap otherwise. */
void gw_prompt_finish(struct gw_prompts *p, struct gw_http_req *req,
                      const struct gw_reqlog *rl, int64_t end_us);

/* Upstream answer bytes of a request (a JSON body, or one SSE event's data)
 * for the exposure's output text, when log_outputs is on. */
void gw_prompt_output(struct gw_prompts *p, struct gw_http_req *req,
                      const char *data, size_t len, int sse);

/* Whether gw_prompt_output would keep req's answer (log_outputs on and
 * the request used a prompt): lets a caller skip building it. */
int gw_prompt_wants_output(struct gw_prompts *p, struct gw_http_req *req);

/* POST /v1/feedback {"request_id", "event", "value"}: queues the outcome
 * (idempotent per request id and event in the registry) and answers 202. */
void gw_prompt_feedback(struct gw_gateway *gw, struct gw_http_req *req,
                        struct gw_reqlog *rl);

#endif
