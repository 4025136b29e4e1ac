/*
 * claim.h - deterministic fact checking of generated copy.
 *
 * A vocabulary maps every categorical value to the attributes it is a
 * value of (built from the facts of every sample in the file, plus an
 * optional lexicon). The checker finds in an output the vocabulary values
 * it names (longest match first: 米白色 is not 白色) and the quantities it
 * states (unit.h), and sorts each claim against the product's own facts:
 *
 *   supported      the product has that value (or an equal quantity)
 *   contradicted   the value belongs to attribute A, the product has facts
 *                  for A, the value is not one of them, and the copy leaves
 *                  at least one of the product's values of A unstated: it
 *                  names another value in place of the real one
 *   unverifiable   the product has no fact for the attribute, or the copy
 *                  states every real value of A and names one more (copy
 *                  often adds a style or a paired item; the facts are not a
 *                  closed list), or the value follows a pairing cue in the
 *                  same clause (搭配黑色短裤, "pair with black shorts": the
 *                  shorts are another item)
 *
 * A value that is part of one of the product's own values of the same
 * attribute (木耳 for 木耳边) is supported: naming part of a true value is
 * not a contradiction.
 *
 * Quantities follow the same rule per dimension (mass, length, ...).
 */
#ifndef EVL_CLAIM_H
#define EVL_CLAIM_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include "evaluator/unit.h"

#define EVL_VOCAB_VALUES_MAX 100000  /* distinct categorical values */
#define EVL_VOCAB_BYTES_MAX  (1 << 20) /* their total text: bounds the matcher */
#define EVL_VOCAB_ATTRS_MAX  4096    /* distinct attributes */
#define EVL_VALUE_BYTES_MAX  128     /* longer values are not vocabulary */
#define EVL_ATTR_BYTES_MAX   128     /* attribute name bytes */
#define EVL_FACTS_MAX        256     /* facts (attribute values) per sample */
#define EVL_CLAIMS_MAX       1024    /* claims looked at per output */
#define EVL_DETAILS_MAX      16      /* contradictions kept per output */
#define EVL_MIN_CHARS        1       /* default shortest value matched */

struct evl_vocab;

/* A new empty vocabulary matching values of at least min_chars code points. */
struct evl_vocab *evl_vocab_new(int min_chars);
void evl_vocab_free(struct evl_vocab *v);

/*
 * Add every categorical value of a sample's `facts` object (borrowed):
 * strings, numbers without unit, and arrays of those. Quantities with a
 * unit are compared numerically and are not vocabulary. Returns -1 with
 * `err` (malloc'd) when a limit is exceeded or facts is not an object.
 */
int evl_vocab_add_facts(struct evl_vocab *v, const json_t *facts, char **err);

/*
 * The same from the facts' JSON text, without building a JSON tree (the
 * first pass over a big file): objects of strings, numbers and arrays of
 * them are scanned directly; anything else goes through jansson and
 * evl_vocab_add_facts. Returns -1 with err for invalid facts.
 */
int evl_vocab_add_facts_text(struct evl_vocab *v, const char *text,
                             size_t len, char **err);

/* Add one value of one attribute. */
int evl_vocab_add(struct evl_vocab *v, const char *attr, const char *value,
                  char **err);

/*
 * Load a lexicon: UTF-8 text, one `attribute<TAB>value` per line, `#`
 * comments and blank lines ignored. Errors name the file and line.
 */
int evl_vocab_load_lexicon(struct evl_vocab *v, const char *path, char **err);

/* Freeze: build the matcher. Required before evl_check. */
int evl_vocab_build(struct evl_vocab *v, char **err);

/* 1 when adding failed on a limit (the vocabulary is incomplete). */
int evl_vocab_full(const struct evl_vocab *v);

size_t evl_vocab_n_attrs(const struct evl_vocab *v);
size_t evl_vocab_n_values(const struct evl_vocab *v);
/* Attribute name by id (borrowed from v); NULL when out of range. */
const char *evl_vocab_attr_name(const struct evl_vocab *v, size_t id);
/* Normalised value text by id (borrowed from v); NULL when out of range. */
const char *evl_vocab_value_text(const struct evl_vocab *v, size_t id);
/* Attribute id by name, -1 when unknown. */
long evl_vocab_attr_id(const struct evl_vocab *v, const char *name);

/* One contradiction, for the report's worst examples. */
struct evl_contradiction {
    uint32_t attr;                     /* attribute id */
    char stated[EVL_VALUE_BYTES_MAX];  /* what the copy says */
    char known[EVL_VALUE_BYTES_MAX];   /* the product's values of attr */
};

struct evl_check_result {
    unsigned supported, contradicted, unverifiable;   /* distinct claims */
    unsigned facts, facts_mentioned;                  /* for coverage */
    size_t n_attrs_present;                           /* product attributes */
    uint32_t attrs_present[EVL_FACTS_MAX];
    size_t n_attrs_contradicted;
    uint32_t attrs_contradicted[EVL_FACTS_MAX];
    size_t n_details;
    struct evl_contradiction details[EVL_DETAILS_MAX];
};

struct evl_checker;

/* Scratch space for evl_check, reused across samples (constant memory). */
struct evl_checker *evl_checker_new(const struct evl_vocab *v, double rel_tol);
void evl_checker_free(struct evl_checker *c);

/*
 * Check `text` (UTF-8, len bytes) against `facts` (object, borrowed; NULL
 * means no facts). Returns 0, or -1 with `err` for facts beyond the limits
 * or of the wrong type (a malformed sample).
 */
int evl_check(struct evl_checker *c, const json_t *facts, const char *text,
              size_t len, struct evl_check_result *out, char **err);

#endif
