/*
 * record.c: a fixed-size ring of jansson values.
 *
 * Invariant: slots [start, start+len) modulo cap hold one reference each;
 * every other slot is NULL.
 */
#include "contrib/mockllm/record.h"

#include <stdlib.h>

struct mock_record {
    json_t **slots; /* owned: cap entries, each an owned reference or NULL */
    size_t cap, start, len;
};

struct mock_record *
mock_record_new(size_t cap)
{
    struct mock_record *r = calloc(1, sizeof(*r));

    if (!r)
        return NULL;
    r->slots = calloc(cap ? cap : 1, sizeof(*r->slots));
    if (!r->slots) {
        free(r);
        return NULL;
    }
    r->cap = cap ? cap : 1;
    return r;
}

void
mock_record_clear(struct mock_record *r)
{
    size_t i;

    for (i = 0; i < r->cap; i++) {
        json_decref(r->slots[i]);
        r->slots[i] = NULL;
    }
    r->start = 0;
    r->len = 0;
}

void
mock_record_free(struct mock_record *r)
{
    if (!r)
        return;
    mock_record_clear(r);
    free(r->slots);
    free(r);
}

void
mock_record_add(struct mock_record *r, json_t *entry)
{
    if (!entry)
        return;
    if (r->len == r->cap) {
        json_decref(r->slots[r->start]);
        r->slots[r->start] = entry;
        r->start = (r->start + 1) % r->cap;
        return;
    }
    r->slots[(r->start + r->len) % r->cap] = entry;
    r->len++;
}

json_t *
mock_record_list(const struct mock_record *r)
{
    json_t *a = json_array();
    size_t i;

    if (!a)
        return NULL;
    for (i = 0; i < r->len; i++)
        json_array_append(a, r->slots[(r->start + i) % r->cap]);
    return a;
}
