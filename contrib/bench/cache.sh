#!/usr/bin/env bash
# The response cache (issue 5), make-bench style, in one run against one
# mock backend (48 tokens an answer), every server pinned to cpu 0 (redis
# too), wrk on cpu 1:
#   off          promptgate without "cache", a new prompt each request
#   mem-miss     cache on (memory), a new prompt each request: key, miss,
#                upstream, store
#   mem-hit      cache on (memory), the same prompt: every request a hit
#   redis-miss   cache on (redis), a new prompt each request
#   redis-hit    cache on (redis), the same prompt
# Per target: saturation (wrk -t1 -c$SAT_CONN) rps, p50/p99 and the
# gateway's CPU per request; light load (-c1) p50/p99. Ratios hit/miss are
# printed; everything goes to results/bench-cache-<UTC time>.json.
#
# Knobs: SAT_CONN=32 SAT_DUR=10 LIGHT_DUR=5 WARM_DUR=3 PIN=1
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE="$ROOT/contrib/bench"
BIN=${BIN:-$ROOT/bin}
SAT_CONN=${SAT_CONN:-32}
SAT_DUR=${SAT_DUR:-10}
LIGHT_DUR=${LIGHT_DUR:-5}
WARM_DUR=${WARM_DUR:-3}
PIN=${PIN:-1}
WORK=$(mktemp -d /tmp/promptgate-bench-cache.XXXXXX)
RESULTS="$ROOT/results"
mkdir -p "$RESULTS"
. "$HERE/lib.sh"

SRV=(); CLI=()
if [[ $PIN == 1 ]]; then SRV=(taskset -c 0); CLI=(taskset -c 1); fi

MOCK_PORT=$(free_port); REDIS_PORT=$(free_port)
"${SRV[@]}" "$BIN/mockllm" --listen "127.0.0.1:$MOCK_PORT" --no-record --tokens 48 \
    2>"$WORK/mock.log" &
PIDS+=("$!")
wait_http "http://127.0.0.1:$MOCK_PORT/v1/models"
"${SRV[@]}" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" \
    --appendonly no --dir "$WORK" >"$WORK/redis.log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 100); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.05; done

start_gw() { # name cache-json -> sets GW_PID GW_PORT
    GW_PORT=$(free_port)
    cat >"$WORK/$1.json" <<JSON
{"listen": "127.0.0.1:$GW_PORT", "access_log": "off", $2
 "redis": {"url": "redis://127.0.0.1:$REDIS_PORT/0", "timeout_ms": 50},
 "backends": [{"name": "mock", "url": "http://127.0.0.1:$MOCK_PORT/v1", "models": ["gpt-4o-mini"]}]}
JSON
    "${SRV[@]}" "$BIN/promptgate" -c "$WORK/$1.json" 2>"$WORK/$1.log" &
    GW_PID=$!; PIDS+=("$GW_PID")
    wait_http "http://127.0.0.1:$GW_PORT/healthz"
    sleep 0.3 # redis connect
}

run_wrk() { # conns dur url
    "${CLI[@]}" wrk -t1 -c"$1" -d"$2"s --latency -s "$HERE/cache.lua" "$3" 2>&1 |
        sed -n 's/^BENCHJSON //p'
}

measure() { # name unique cache-json
    local name=$1 t0 t1 j
    export BENCH_UNIQUE=$2
    start_gw "$name" "$3"
    local url="http://127.0.0.1:$GW_PORT/v1/chat/completions"
    run_wrk "$SAT_CONN" "$WARM_DUR" "$url" >/dev/null
    t0=$(cpu_ticks "$GW_PID")
    j=$(run_wrk "$SAT_CONN" "$SAT_DUR" "$url")
    t1=$(cpu_ticks "$GW_PID")
    [[ -n $j ]] || die "wrk gave no result for $name"
    [[ $(field "$j" non2xx) == 0 && $(field "$j" socket_errors) == 0 ]] ||
        die "$name: errors under load: $j"
    echo "$j" >"$WORK/$name.sat"
    python3 -c "print(round(($t1-$t0)*1e6/$(getconf CLK_TCK)/$(field "$j" requests), 2))" >"$WORK/$name.cpu"
    run_wrk 1 "$LIGHT_DUR" "$url" >"$WORK/$name.light"
    # the hit runs must really hit
    curl -s -D - -o /dev/null "$url" -H 'Content-Type: application/json' \
        -d '{"model":"gpt-4o-mini","temperature":0,"messages":[{"role":"user","content":"Write a product description for item fixed."}]}' |
        tr -d '\r' | sed -n 's/^x-promptgate-cache: //p' >"$WORK/$name.kind"
    kill "$GW_PID"; wait "$GW_PID" 2>/dev/null || true
}

echo "bench: mock on :$MOCK_PORT, redis on :$REDIS_PORT; pinned=$PIN" >&2
MEM='"cache": {"backend": "memory", "max_bytes": 268435456},'
RDS='"cache": {"backend": "redis"},'
measure off 1 ""
measure mem-miss 1 "$MEM"
measure mem-hit 0 "$MEM"
measure redis-miss 1 "$RDS"
measure redis-hit 0 "$RDS"

TS=$(date -u +%Y%m%dT%H%M%SZ)
OUT="$RESULTS/bench-cache-$TS.json"
python3 - "$OUT" "$WORK" <<PY
import json, os, sys
w = sys.argv[2]
names = ["off", "mem-miss", "mem-hit", "redis-miss", "redis-hit"]
rd = lambda n, ext: open(os.path.join(w, n + "." + ext)).read().strip()
rows = []
print("%-11s %10s %9s %9s %12s %10s %10s %6s" % ("target", "rps", "p50_us", "p99_us",
      "cpu_us/req", "light_p50", "light_p99", "cache"))
for n in names:
    s, l, c = json.loads(rd(n, "sat")), json.loads(rd(n, "light")), float(rd(n, "cpu"))
    print("%-11s %10.0f %9d %9d %12.2f %10d %10d %6s" % (n, s["rps"], s["p50_us"], s["p99_us"],
          c, l["p50_us"], l["p99_us"], rd(n, "kind") or "-"))
    rows.append({"target": n, "saturation": s, "light": l, "cpu_us_per_req": c,
                 "last_answer": rd(n, "kind")})
by = {r["target"]: r for r in rows}
ratios = {
    "mem_hit_rps_vs_miss": round(by["mem-hit"]["saturation"]["rps"] / by["mem-miss"]["saturation"]["rps"], 2),
    "redis_hit_rps_vs_miss": round(by["redis-hit"]["saturation"]["rps"] / by["redis-miss"]["saturation"]["rps"], 2),
    "mem_miss_cpu_vs_off": round(by["mem-miss"]["cpu_us_per_req"] / by["off"]["cpu_us_per_req"], 2),
    "redis_hit_light_p50_ms": by["redis-hit"]["light"]["p50_us"] / 1000,
}
print()
for k, v in ratios.items():
    print("%-28s %s" % (k, v))
json.dump({"rows": rows, "ratios": ratios, "sat_conn": $SAT_CONN, "sat_dur_s": $SAT_DUR,
           "light_dur_s": $LIGHT_DUR}, open(sys.argv[1], "w"), indent=1)
print("\nwritten to", sys.argv[1])
PY
