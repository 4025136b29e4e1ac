#!/usr/bin/env bash
# Worker scaling (issue 9's bar: "workers": 2 on two cores gives at least
# 1.7x the requests/s of one worker, same run). The gateway may use both
# cores (taskset -c 0,1) and runs with 1 then 2 workers, in turns
# (ROUNDS times each, the median is kept), under the same load:
#   hit    the production feature set on the cache-hit path: a virtual key
#          checked per request, local rate limits (high enough never to
#          refuse: every request pays the decision), the memory cache
#          (shared by the workers), the JSON access log to a file, metrics.
#          wrk pipelines BENCH_DEPTH=16 requests a write so that it needs
#          little of the two cores the gateway uses; the mock answers
#          only the first request.
#   proxy  plain proxying to the mock (no pipelining): the mock and wrk
#          share the same two cores, so this ratio is bounded by their
#          CPU, not by the gateway; printed for information.
# CPU time per request (utime+stime from /proc) is printed for each, so a
# noisy machine does not hide a regression, with the cores the gateway and
# wrk got: on a 2-core machine wrk's share (mostly the kernel's loopback
# TCP work done in its system calls) is what 2 workers cannot have, so
# the requests per gateway CPU second, 2 workers against 1, are printed
# too: 1.0 means the workers add no cost of their own (locks, cache lines).
# Results: results/bench-workers-<UTC>.json and a table.
# Knobs: ROUNDS=2 SAT_CONN=64 SAT_DUR=10 WARM_DUR=2 DEPTH=16 SCENARIOS="hit proxy"
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE="$ROOT/contrib/bench"
BIN=${BIN:-$ROOT/bin}
ROUNDS=${ROUNDS:-2}
SAT_CONN=${SAT_CONN:-64}
SAT_DUR=${SAT_DUR:-10}
WARM_DUR=${WARM_DUR:-2}
DEPTH=${DEPTH:-16}
SCENARIOS=${SCENARIOS:-hit proxy}
KEY=pk-bench-workers-1a2b3c4d5e
WORK=$(mktemp -d /tmp/promptgate-bench-workers.XXXXXX)
RESULTS="$ROOT/results"
mkdir -p "$RESULTS"
. "$HERE/lib.sh"
CPUS=(taskset -c 0,1)

[[ $(nproc) -ge 2 ]] || die "needs 2 cores (this machine has $(nproc))"

MOCK_PORT=$(free_port)
"${CPUS[@]}" "$BIN/mockllm" --listen "127.0.0.1:$MOCK_PORT" --no-record --tokens 48 \
    2>"$WORK/mock.log" &
PIDS+=("$!")
wait_http "http://127.0.0.1:$MOCK_PORT/v1/models"
KEY_SHA=$(printf '%s' "$KEY" | sha256sum | cut -d' ' -f1)

start_gw() { # scenario workers -> GW_PID GW_PORT
    local extra=""
    GW_PORT=$(free_port)
    if [[ $1 == hit ]]; then
        extra=$(cat <<JSON
 "cache": {"backend": "memory", "max_bytes": 67108864},
 "metrics": {},
 "access_log": "$WORK/access-$1-$2.log",
 "keys": [{"name": "bench", "key_sha256": "$KEY_SHA", "models": ["*"],
           "rpm": 100000000, "tpm": 100000000000, "max_concurrent": 100000}],
JSON
)
    else
        extra='"access_log": "off",'
    fi
    cat >"$WORK/gw.json" <<JSON
{"listen": "127.0.0.1:$GW_PORT", "workers": $2, $extra
 "backends": [{"name": "mock", "url": "http://127.0.0.1:$MOCK_PORT/v1", "models": ["gpt-4o-mini"]}]}
JSON
    "${CPUS[@]}" "$BIN/promptgate" -c "$WORK/gw.json" 2>"$WORK/gw-$1-$2.log" &
    GW_PID=$!; PIDS+=("$GW_PID")
    wait_http "http://127.0.0.1:$GW_PORT/healthz"
}

run_wrk() { # dur depth url: the BENCHJSON line, with wrk's own CPU seconds
    BENCH_DEPTH=$2 BENCH_KEY=$KEY python3 -c '
import json, resource, subprocess, sys
out = subprocess.run(sys.argv[1:], capture_output=True, text=True).stdout
r = resource.getrusage(resource.RUSAGE_CHILDREN)
for line in out.splitlines():
    if line.startswith("BENCHJSON "):
        j = json.loads(line[10:])
        j["client_cpu_s"] = round(r.ru_utime + r.ru_stime, 3)
        print(json.dumps(j))' "${CPUS[@]}" wrk -t2 -c"$SAT_CONN" -d"$1"s --latency \
        -s "$HERE/workers.lua" "$3"
}

measure() { # scenario workers round
    local depth=$DEPTH t0 t1 j
    [[ $1 == proxy ]] && depth=1
    start_gw "$1" "$2"
    local url="http://127.0.0.1:$GW_PORT/v1/chat/completions"
    run_wrk "$WARM_DUR" "$depth" "$url" >/dev/null
    t0=$(cpu_ticks "$GW_PID")
    j=$(run_wrk "$SAT_DUR" "$depth" "$url")
    t1=$(cpu_ticks "$GW_PID")
    [[ -n $j ]] || die "wrk gave no result for $1 workers=$2"
    [[ $(field "$j" non2xx) == 0 && $(field "$j" socket_errors) == 0 ]] ||
        die "$1 workers=$2: errors under load: $j"
    python3 - "$j" "$t0" "$t1" "$(getconf CLK_TCK)" >"$WORK/$1-$2-$3.json" <<'PY'
import json, sys
j = json.loads(sys.argv[1])
j["cpu_us_per_req"] = round((int(sys.argv[3]) - int(sys.argv[2])) * 1e6 / int(sys.argv[4]) / j["requests"], 2)
j["gateway_cores"] = round((int(sys.argv[3]) - int(sys.argv[2])) / int(sys.argv[4]) / j["duration_s"], 2)
j["client_cores"] = round(j["client_cpu_s"] / j["duration_s"], 2)
print(json.dumps(j))
PY
    kill "$GW_PID"; wait "$GW_PID" 2>/dev/null || true
}

echo "bench: workers 1 vs 2, gateway/mock/wrk on cpus 0-1, $ROUNDS rounds" >&2
for s in $SCENARIOS; do
    for r in $(seq "$ROUNDS"); do
        measure "$s" 1 "$r"
        measure "$s" 2 "$r"
    done
done

TS=$(date -u +%Y%m%dT%H%M%SZ)
OUT="$RESULTS/bench-workers-$TS.json"
python3 - "$OUT" "$WORK" "$ROUNDS" "$SCENARIOS" <<'PY'
import json, os, statistics, sys
out, w, rounds, scen = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].split()
res = {}
print("%-6s %8s %10s %14s %9s %11s %9s %9s" % ("case", "workers", "rps(med)", "rps(all)", "p99_us",
      "cpu_us/req", "gw_cores", "wrk_cores"))
for s in scen:
    res[s] = {}
    for n in (1, 2):
        runs = [json.load(open(os.path.join(w, "%s-%d-%d.json" % (s, n, r)))) for r in range(1, rounds + 1)]
        rps = statistics.median(r["rps"] for r in runs)
        res[s][n] = {"runs": runs, "rps_median": rps}
        print("%-6s %8d %10.0f %14s %9d %11.2f %9.2f %9.2f" % (s, n, rps,
              "/".join("%.0f" % r["rps"] for r in runs),
              statistics.median(r["p99_us"] for r in runs),
              statistics.median(r["cpu_us_per_req"] for r in runs),
              statistics.median(r["gateway_cores"] for r in runs),
              statistics.median(r["client_cores"] for r in runs)))
    res[s]["ratio_2_vs_1"] = round(res[s][2]["rps_median"] / res[s][1]["rps_median"], 3)
    # requests per gateway CPU second, 2 workers against 1: how well the
    # workers scale apart from how much CPU the machine left them
    eff = lambda n: statistics.median(1.0 / r["cpu_us_per_req"] for r in res[s][n]["runs"])
    res[s]["per_core_2_vs_1"] = round(eff(2) / eff(1), 3)
print()
for s in scen:
    print("%-6s 2 workers / 1 worker = %.2fx%s; requests per gateway CPU second %.2fx"
          % (s, res[s]["ratio_2_vs_1"],
             "  (bar 1.7)" if s == "hit" else "  (mock and wrk on the same cores)",
             res[s]["per_core_2_vs_1"]))
json.dump(res, open(out, "w"), indent=1)
print("\nwritten to", out)
PY
