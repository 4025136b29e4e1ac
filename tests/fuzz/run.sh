#!/bin/sh
# Runs every libFuzzer target for a fixed time (make fuzz).
#
#   tests/fuzz/run.sh SECONDS BUILD NAME...
#
# Each $BUILD/fuzz_NAME runs -max_total_time=SECONDS on two corpus
# directories: $BUILD/corpus/NAME, writable, kept from run to run, where
# libFuzzer adds the inputs it finds, and the seeds, tests/fuzz/corpus/NAME,
# only read (the repository is not polluted). A crash, leak, sanitizer report
# or timeout stops that target: its input is saved as
# $BUILD/fuzz_NAME-crash-* (-leak-, -timeout-, -oom-), the other targets
# still run, and the script fails naming the input. Fix the bug, then copy
# the input into tests/fuzz/corpus/NAME so that every later run replays it.
set -u
secs=$1
build=$2
shift 2
fail=0
summary=""
failed=""
for name in "$@"; do
    bin="$build/fuzz_$name"
    seeds="tests/fuzz/corpus/$name"
    work="$build/corpus/$name"
    log="$build/fuzz_$name.log"
    mkdir -p "$work"
    [ -d "$seeds" ] || seeds=""
    rm -f "$build/fuzz_$name"-crash-* "$build/fuzz_$name"-leak-* \
          "$build/fuzz_$name"-timeout-* "$build/fuzz_$name"-oom-*
    echo "== fuzz_$name (${secs}s)"
    # -rss_limit_mb: the default 2 GB; -timeout: one input taking 10 s is a
    # hang; -print_final_stats for execs/s and coverage
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$build/fuzz_$name-" \
        "$work" ${seeds:+"$seeds"} >"$log" 2>&1
    rc=$?
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$')
    speed=$(grep -o 'exec/s: [0-9]*' "$log" | tail -1)
    line=$(printf '%-10s %-12s %-14s execs %s' "$name" "$cov" "$speed" "${execs:-?}")
    summary="$summary$line
"
    if [ "$rc" != 0 ]; then
        # the report, then which input did it
        tail -n 60 "$log" >&2
        art=$(grep -o "Test unit written to [^ ]*" "$log" | sed 's/.* //')
        failed="${failed}fuzz_$name FAILED (exit $rc): input ${art:-not saved}; log $log
  replay: $bin ${art:-INPUT}
"
        fail=1
    fi
done
printf '%s' "$summary"
printf '%s' "$failed" >&2
exit $fail
