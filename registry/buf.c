/*
 * buf.c - struct reg_buf, the growable byte buffer of libregistry and its
 * users (the renderers, the exposure writer, the gateway's prompt stage):
 * appended to with reg_buf_add (registry.h), always NUL-terminated, grown
 * by doubling.
 */
#include <stdlib.h>
#include "registry/registry.h"

int reg_buf_reserve(struct reg_buf *b, size_t more)
{
    size_t cap = b->cap ? b->cap : 256;
    char *p;

    if (more > ((size_t)-1 >> 1) - b->len)
        return -1;
    while (cap < b->len + more + 1)
        cap *= 2;
    if (cap == b->cap)
        return 0;
    if ((p = realloc(b->p, cap)) == NULL)
        return -1;
    b->p = p, b->cap = cap;
    return 0;
}

int reg_buf_emit(void *arg, const char *data, size_t len)
{
    return reg_buf_add(arg, data, len);
}
