#!/bin/sh
# Throughput and memory bar of prompteval (issue 8):
#   scoring N samples must run at least half as fast as merely parsing the
#   same file with jansson, with peak RSS under 64 MB whatever the size.
#
#   evaluator/bench/bench.sh [N] [DIR]     (default N=1000000, DIR=$TMPDIR)
#
# Generates DIR/samples-N.jsonl (realistic: AdvertiseGen products, two arms)
# and DIR/samples-N-distinct.jsonl (every line's facts text distinct), then
# times `prompteval bench-parse` (getline + json_loadb + json_decref per line)
# against `prompteval run` with /usr/bin/time -v. Needs bin/prompteval.
set -eu
cd "$(dirname "$0")/../.."
N=${1:-1000000}
DIR=${2:-${TMPDIR:-/tmp}}
BIN=${PROMPTGATE_BIN:-bin}
PY=/usr/bin/python3
[ -x "$BIN/prompteval" ] || { echo "bench: build $BIN/prompteval first (make $BIN/prompteval)" >&2; exit 1; }
command -v /usr/bin/time >/dev/null 2>&1 || { echo "bench: /usr/bin/time is needed (Debian package 'time')" >&2; exit 1; }

measure() { # label cmd... -> "label wall_s user_s maxrss_kb"
    label=$1; shift
    out=$(mktemp)
    /usr/bin/time -f "%e %U %M" -o "$out" "$@" >/dev/null 2>&1
    echo "$label $(cat "$out")"
    rm -f "$out"
}

for kind in plain distinct; do
    f="$DIR/samples-$N.jsonl"
    flag=""
    if [ $kind = distinct ]; then f="$DIR/samples-$N-distinct.jsonl"; flag="--distinct-facts"; fi
    if [ ! -s "$f" ]; then
        echo "bench: generating $f" >&2
        $PY evaluator/bench/gen_samples.py "$N" "$f" $flag
    fi
    cat "$f" >/dev/null # warm the page cache for both runs
    for i in 1 2 3; do
        measure "parse-$kind" "$BIN/prompteval" bench-parse "$f"
        measure "score-$kind" "$BIN/prompteval" run "$f" --out "$DIR/bench-report" --quiet
    done
done | $PY -c '
import sys, collections
best = {}
for line in sys.stdin:
    label, wall, user, rss = line.split()
    w, u, r = float(wall), float(user), int(rss)
    b = best.get(label)
    best[label] = (min(w, b[0]), min(u, b[1]), max(r, b[2])) if b else (w, u, r)
print("%-16s %9s %9s %12s" % ("run (best of 3)", "wall s", "user s", "peak RSS MB"))
for k in sorted(best):
    w, u, r = best[k]
    print("%-16s %9.2f %9.2f %12.1f" % (k, w, u, r / 1024))
for kind in ("plain", "distinct"):
    p, s = best["parse-" + kind], best["score-" + kind]
    print("%s: scoring speed / parse speed = %.2f (wall), %.2f (cpu); bar >= 0.50"
          % (kind, p[0] / s[0], p[1] / s[1]))
'
