/*
 * fuzz_csv.c - libFuzzer target: the evaluator's CSV sample reader
 * (evaluator/sample.c, RFC 4180 records, a header row, JSON cells). The
 * driver is fuzz_sample.c's, compiled here for CSV; see there.
 */
#define FUZZ_CSV 1
#include "tests/fuzz/fuzz_sample.c"
