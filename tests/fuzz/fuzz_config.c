/*
 * fuzz_config.c - libFuzzer target: the gateway's configuration loader
 * (gateway/config.c, gw_config_parse: what gw_config_load and
 * `promptgate -t` run on a file's text).
 *
 * The input is the file. A config that loads is looked up as the request
 * path does (a backend for a model, a key by digest, the key's model
 * check) and released; one that does not must say why, one line per
 * problem, each non-empty. Every allocation must be freed (LeakSanitizer).
 */
#include "gateway/config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void die(const char *what)
{
    fprintf(stderr, "fuzz_config: %s\n", what);
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const unsigned char zero[32];
    struct gw_config *c;
    char *err = NULL;
    size_t i;

    c = gw_config_parse((const char *)data, size, &err);
    if (c == NULL) {
        const char *p;
        if (err == NULL || err[0] == '\0')
            die("refused without saying why");
        for (p = err; *p; p = strchr(p, '\n') + 1) {
            if (*p == '\n')
                die("an empty problem line");
            if (strchr(p, '\n') == NULL)
                break;
        }
        free(err);
        return 0;
    }
    if (err != NULL)
        die("a config that loads came with an error text");
    gw_config_backend_for(c, "gpt-4o-mini");
    gw_config_backend_for(c, "");
    gw_config_key_by_digest(c, zero);
    for (i = 0; i < c->n_keys; i++)
        gw_key_allows(&c->keys[i], "gpt-4o-mini");
    gw_config_unref(gw_config_ref(c));
    gw_config_unref(c);
    return 0;
}
