#!/usr/bin/env bash
# The cost of registry prompts (issue 7), make-bench style, in one run:
# the same mock backend behind
#   core     promptgate without a registry, the plain bench request
#            (contrib/bench/request.json)
#   prompt   promptgate with a registry: the request names a prompt whose
#            version renders to the same messages and params, a 50/50
#            experiment runs on its label, users vary (BENCH_USERS), and
#            every request writes an exposure to the registry database
#   outputs  the same with log_outputs on (the generated text recorded)
# Every server pinned to cpu 0, wrk on cpu 1, as in bench.sh (the exposure
# writer thread too: it shares the core). Prints rps, latency, the
# gateway's CPU per request (all threads) and its event loop's alone (the
# main thread) for each, the ratios against
# core, checks that every request left an exposure, and writes
# results/bench-prompt-<UTC time>.json.
#
# The three are measured in turns, ROUNDS times, and the median of each
# figure is kept, so a machine busy with other work skews them alike; each
# round's own ratios and their median are printed too.
#
# Knobs: SAT_CONN=32 SAT_DUR=10 WARM_DUR=3 ROUNDS=3 PIN=1 BENCH_USERS=2000
#        BENCH_TMP=/tmp (where the registry database and the exposure file
#        live: /dev/shm takes the disk, and on a VM its I/O, out of it)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE="$ROOT/contrib/bench"
BIN=${BIN:-$ROOT/bin}
SAT_CONN=${SAT_CONN:-32}
SAT_DUR=${SAT_DUR:-10}
WARM_DUR=${WARM_DUR:-3}
ROUNDS=${ROUNDS:-3}
PIN=${PIN:-1}
export BENCH_USERS=${BENCH_USERS:-2000}
WORK=$(mktemp -d "${BENCH_TMP:-/tmp}/promptgate-bench-prompt.XXXXXX")
RESULTS="$ROOT/results"
mkdir -p "$RESULTS"

SRV=(); CLI=()
if [[ $PIN == 1 ]]; then SRV=(taskset -c 0); CLI=(taskset -c 1); fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
die() { echo "bench-prompt: $*" >&2; exit 1; }
PIDS=()
cleanup() {
    [[ -n ${KEEP:-} ]] && { echo "kept $WORK; servers left running: ${PIDS[*]}" >&2; return; }
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
wait_http() {
    for _ in $(seq 100); do curl -fs -o /dev/null "$1" && return 0; sleep 0.05; done
    die "nothing answers at $1"
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
loop_ticks() { awk '{print $14 + $15}' "/proc/$1/task/$1/stat"; } # main thread

# the registry: a version that renders to request.json's messages
export PROMPTGATE_DB="$WORK/reg.db"
"$BIN/promptctl" init >/dev/null
cat >"$WORK/v.json" <<'JSON'
{"messages": [{"role": "system", "content": "你是一名资深电商文案策划，擅长撰写简洁有力的中文商品卖点。"},
              {"role": "user", "content": "请为一款{{product}}写一段60字以内的商品详情页文案，突出{{points}}。"}],
 "params": {"model": "gpt-4o-mini", "temperature": 0.7, "max_tokens": 48}}
JSON
"$BIN/promptctl" publish bench_copy -f "$WORK/v.json" >/dev/null
sed 's/60字/50字/' "$WORK/v.json" >"$WORK/v2.json"
"$BIN/promptctl" publish bench_copy -f "$WORK/v2.json" >/dev/null
"$BIN/promptctl" label bench_copy 1 production >/dev/null
"$BIN/promptctl" experiment start bench_copy --label production --arm 1:50 --arm 2:50 >/dev/null
cat >"$WORK/body-prompt.json" <<'JSON'
{"prompt":{"name":"bench_copy","label":"production","variables":{"product":"316不锈钢真空保温杯","points":"保温时长、轻便和单手开盖"}},"stream":false,"user":"USER"}
JSON

MOCK_PORT=$(free_port)
"${SRV[@]}" "$BIN/mockllm" --listen "127.0.0.1:$MOCK_PORT" --no-record --tokens 48 \
    2>"$WORK/mock.log" &
MOCK_PID=$!; PIDS+=("$MOCK_PID")
wait_http "http://127.0.0.1:$MOCK_PORT/v1/models"

start_gw() { # name registry-json
    local port; port=$(free_port)
    cat >"$WORK/$1.json" <<JSON
{"listen": "127.0.0.1:$port", "access_log": "off",
 "backends": [{"name": "mock", "url": "http://127.0.0.1:$MOCK_PORT/v1",
               "models": ["gpt-4o-mini"]}] $2}
JSON
    "${SRV[@]}" "$BIN/promptgate" -c "$WORK/$1.json" 2>"$WORK/$1.log" &
    local pid=$!
    wait_http "http://127.0.0.1:$port/healthz"
    echo "$pid $port"
}
read -r CORE_PID CORE_PORT < <(start_gw core "")
read -r PR_PID PR_PORT < <(start_gw prompt ", \"registry\": {\"path\": \"$PROMPTGATE_DB\"}")
read -r OUT_PID OUT_PORT < <(start_gw outputs ", \"registry\": {\"path\": \"$PROMPTGATE_DB\", \"exposures\": \"$WORK/outputs.jsonl\", \"log_outputs\": true}")
PIDS+=("$CORE_PID" "$PR_PID" "$OUT_PID") # start_gw ran in a subshell

run_wrk() { # conns dur url lua body
    BENCH_BODY=$5 "${CLI[@]}" wrk -t1 -c"$1" -d"$2"s --latency -s "$4" "$3" 2>&1 |
        sed -n 's/^BENCHJSON //p'
}
field() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }
URL=/v1/chat/completions
measure() { # name port pid lua body round
    local j t0 t1 l0 l1 reqs
    if [[ $6 == 1 ]]; then
        run_wrk "$SAT_CONN" "$WARM_DUR" "http://127.0.0.1:$2$URL" "$4" "$5" >"$WORK/$1.warm"
    fi
    local m0 m1 i0 i1
    t0=$(cpu_ticks "$3"); l0=$(loop_ticks "$3"); m0=$(cpu_ticks "$MOCK_PID")
    i0=$(awk '/^cpu0 /{print $5}' /proc/stat)
    j=$(run_wrk "$SAT_CONN" "$SAT_DUR" "http://127.0.0.1:$2$URL" "$4" "$5")
    t1=$(cpu_ticks "$3"); l1=$(loop_ticks "$3"); m1=$(cpu_ticks "$MOCK_PID")
    i1=$(awk '/^cpu0 /{print $5}' /proc/stat)
    [[ -n $j ]] || die "wrk gave no result for $1"
    [[ $(field "$j" non2xx) == 0 && $(field "$j" socket_errors) == 0 ]] ||
        die "$1: errors under load: $j"
    echo "$j" >>"$WORK/$1.sat"
    reqs=$(field "$j" requests)
    python3 -c "print(round(($t1-$t0)*1e6/$(getconf CLK_TCK)/$reqs, 2))" >>"$WORK/$1.cpu"
    python3 -c "print(round(($l1-$l0)*1e6/$(getconf CLK_TCK)/$reqs, 2))" >>"$WORK/$1.loop"
    python3 -c "print(round(($m1-$m0)*1e6/$(getconf CLK_TCK)/$reqs, 2))" >>"$WORK/$1.mock"
    python3 -c "print(round(($i1-$i0)/$(getconf CLK_TCK)/$SAT_DUR, 3))" >>"$WORK/$1.idle"
}
echo "bench-prompt: mock :$MOCK_PORT core :$CORE_PORT prompt :$PR_PORT outputs :$OUT_PORT; pinned=$PIN, $ROUNDS rounds" >&2
for r in $(seq "$ROUNDS"); do
    measure core "$CORE_PORT" "$CORE_PID" "$HERE/post.lua" "$HERE/request.json" "$r"
    measure prompt "$PR_PORT" "$PR_PID" "$HERE/prompt.lua" "$WORK/body-prompt.json" "$r"
    measure outputs "$OUT_PORT" "$OUT_PID" "$HERE/prompt.lua" "$WORK/body-prompt.json" "$r"
done

# every request answered must have left an exposure (after the writers flush)
kill -TERM "$PR_PID" "$OUT_PID"
wait "$PR_PID" "$OUT_PID" 2>/dev/null || true
EXPOSED_DB=$(python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('select count(*) from exposures').fetchone()[0])" "$PROMPTGATE_DB")
EXPOSED_FILE=$(wc -l <"$WORK/outputs.jsonl")
DROPPED=$(cat "$WORK/prompt.log" "$WORK/outputs.log" | sed -n 's/.*written, \([0-9]*\) dropped.*/\1/p' | paste -sd+ | bc)

TS=$(date -u +%Y%m%dT%H%M%SZ)
OUT="$RESULTS/bench-prompt-$TS.json"
python3 - "$OUT" "$WORK" "$EXPOSED_DB" "$EXPOSED_FILE" "${DROPPED:-0}" <<PY
import json, os, sys
out, w, ex_db, ex_file, dropped = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
import statistics
rd = lambda n, ext: open(os.path.join(w, n + "." + ext)).read()
names = ["core", "prompt", "outputs"]
runs = {n: [json.loads(l) for l in rd(n, "sat").splitlines()] for n in names}
med = lambda xs: statistics.median(xs)
sat = {n: {k: med([r[k] for r in runs[n]]) for k in ("rps", "p50_us", "p99_us")} for n in names}
warm = {n: json.loads(rd(n, "warm")) for n in names}
cpu = {n: med([float(x) for x in rd(n, "cpu").split()]) for n in names}
loop = {n: med([float(x) for x in rd(n, "loop").split()]) for n in names}
mock = {n: med([float(x) for x in rd(n, "mock").split()]) for n in names}
idle = {n: med([float(x) for x in rd(n, "idle").split()]) for n in names}
print("%-8s %10s %9s %9s %12s %13s %13s %10s" % ("target", "rps", "p50_us", "p99_us",
      "cpu_us/req", "loop_us/req", "mock_us/req", "cpu0_idle"))
for n in names:
    print("%-8s %10.0f %9d %9d %12.2f %13.2f %13.2f %10.3f" % (n, sat[n]["rps"], sat[n]["p50_us"],
          sat[n]["p99_us"], cpu[n], loop[n], mock[n], idle[n]))
ratios = {"prompt_rps_vs_core": round(sat["prompt"]["rps"] / sat["core"]["rps"], 3),
          "outputs_rps_vs_core": round(sat["outputs"]["rps"] / sat["core"]["rps"], 3),
          "prompt_added_cpu_us": round(cpu["prompt"] - cpu["core"], 2),
          "outputs_added_cpu_us": round(cpu["outputs"] - cpu["core"], 2),
          "prompt_added_loop_us": round(loop["prompt"] - loop["core"], 2),
          "outputs_added_loop_us": round(loop["outputs"] - loop["core"], 2)}
# each round's own ratio (the three measured minutes apart at most): the
# host's slow and fast spells shift a round's figures together
for n in ("prompt", "outputs"):
    rr = [round(a["rps"] / b["rps"], 3) for a, b in zip(runs[n], runs["core"])]
    ratios[n + "_vs_core_each_round"] = rr
    ratios[n + "_vs_core_median_of_rounds"] = round(med(rr), 3)
sent_db = sum(r["requests"] for r in runs["prompt"]) + warm["prompt"]["requests"]
sent_file = sum(r["requests"] for r in runs["outputs"]) + warm["outputs"]["requests"]
checks = {"exposures_db": ex_db, "requests_db": sent_db,
          "exposures_file": ex_file, "requests_file": sent_file, "dropped": dropped}
print()
for k, v in list(ratios.items()) + list(checks.items()):
    print("%-24s %s" % (k, v))
json.dump({"mock_cpu_us_per_req": mock, "cpu0_idle_share": idle, "runs": runs, "median": sat, "cpu_us_per_req": cpu, "loop_cpu_us_per_req": loop, "ratios": ratios, "exposures": checks,
           "sat_conn": $SAT_CONN, "sat_dur_s": $SAT_DUR, "rounds": $ROUNDS}, open(out, "w"), indent=1)
print("\nwritten to", out)
PY
