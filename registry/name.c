/*
 * name.c - the shapes of prompt names, labels and references
 * ("name", "name@label", "name@3"). Pure functions, no database.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "registry/internal.h"

int reg_name_valid(const char *s)
{
    size_t n;

    if (s == NULL || (n = strlen(s)) == 0 || n > REG_NAME_MAX)
        return 0;
    if (!((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= '0' && s[0] <= '9')))
        return 0;
    for (size_t i = 1; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'
              || c == '.' || c == '-'))
            return 0;
    }
    return 1;
}

int reg_label_valid(const char *s)
{
    size_t n;

    if (s == NULL || (n = strlen(s)) == 0 || n > REG_LABEL_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'
              || c == '-'))
            return 0;
    }
    return 1;
}

int reg_ref_parse(const char *ref, char name[REG_NAME_MAX + 1],
                  char label[REG_LABEL_MAX + 1], int *version, char **err)
{
    const char *at;
    size_t nlen;

    name[0] = label[0] = '\0';
    *version = 0;
    if (ref == NULL || *ref == '\0') {
        reg_err(err, "empty prompt reference: want NAME, NAME@LABEL or NAME@VERSION");
        return -1;
    }
    at = strchr(ref, '@');
    nlen = at ? (size_t)(at - ref) : strlen(ref);
    if (nlen > REG_NAME_MAX) {
        reg_err(err, "prompt name is longer than %d bytes", REG_NAME_MAX);
        return -1;
    }
    memcpy(name, ref, nlen);
    name[nlen] = '\0';
    if (!reg_name_valid(name)) {
        reg_err(err, "invalid prompt name '%s': want [a-z0-9][a-z0-9_.-]*", name);
        return -1;
    }
    if (at == NULL)
        return 0;
    at++;
    if (*at >= '0' && *at <= '9') {
        char *end;
        long v = strtol(at, &end, 10);
        if (*end != '\0' || v < 1 || v > 1000000000) {
            reg_err(err, "invalid version '%s' in '%s': want a number >= 1", at, ref);
            return -1;
        }
        *version = (int)v;
        return 0;
    }
    if (!reg_label_valid(at)) {
        reg_err(err, "invalid label '%s' in '%s': want [a-z0-9_-]+", at, ref);
        return -1;
    }
    snprintf(label, REG_LABEL_MAX + 1, "%s", at);
    return 0;
}
