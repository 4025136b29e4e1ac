/*
 * record.h: the ring of the last requests mockllm received, for tests to
 * assert on what a client (the gateway) sent.
 */
#ifndef MOCK_RECORD_H
#define MOCK_RECORD_H

#include <stddef.h>

#include <jansson.h>

struct mock_record;

/* A ring holding the last cap entries; NULL on allocation failure. */
struct mock_record *mock_record_new(size_t cap);
void mock_record_free(struct mock_record *r);

/* Append entry (the reference is stolen), dropping the oldest when full. */
void mock_record_add(struct mock_record *r, json_t *entry);

/* A new array of the entries, oldest first (NULL on allocation failure). */
json_t *mock_record_list(const struct mock_record *r);

void mock_record_clear(struct mock_record *r);

#endif
