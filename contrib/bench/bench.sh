#!/usr/bin/env bash
# make bench: non-streaming chat completions through promptgate, side by
# side in one run with the mock backend alone and nginx proxy_pass (with
# upstream keepalive) in front of the same mock, on the same core budget:
# every server pinned to cpu 0, wrk on cpu 1.
#
# Per target: saturation (wrk -t1 -c$SAT_CONN -d$SAT_DUR) for requests/s,
# p50/p99 and the server's CPU time per request (utime+stime from /proc);
# light load (wrk -t1 -c1 -d$LIGHT_DUR) for p50/p99 latency. Ratios are
# printed against nginx and against the mock alone, and everything is
# written to results/bench-<UTC time>.json.
#
# Targets: direct (the mock alone), nginx, promptgate (nothing on) and
# promptgate_full: the production feature set, a virtual key checked per
# request, local rate limits (rpm, tpm, max_concurrent, daily budget; set
# high enough never to refuse, so every request pays the whole decision
# and settlement), the JSON access log written to a file, and a pool of 3
# backends (round robin, breakers on) as 3 entries on the one mock, so the
# mock's share of the core is the same for every target; metrics on
# (GET /metrics, scraped once after the run to check they counted).
#
# The targets are measured in turns, ROUNDS times (round 1 of every target,
# then round 2, ...), and each figure is the median over the rounds: on a
# shared machine one 10 s window can lose a third of its speed to a
# neighbour, and taking turns spreads that over every target alike.
#
# Knobs: SAT_CONN=32 SAT_DUR=10 LIGHT_DUR=5 WARM_DUR=3 ROUNDS=3 PIN=1 FULL=1
#        POOL=N  promptgate routes over a pool of N mocks (round robin,
#                breakers on), the cost of routing; direct/nginx use one
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE="$ROOT/contrib/bench"
BIN=${BIN:-$ROOT/bin}
SAT_CONN=${SAT_CONN:-32}
SAT_DUR=${SAT_DUR:-10}
LIGHT_DUR=${LIGHT_DUR:-5}
WARM_DUR=${WARM_DUR:-3}
ROUNDS=${ROUNDS:-3}
PIN=${PIN:-1}
POOL=${POOL:-1}
FULL=${FULL:-1}
BENCH_KEY=pk-bench-full-5e6f7a8b9c0d
WORK=$(mktemp -d /tmp/promptgate-bench.XXXXXX)
RESULTS="$ROOT/results"
mkdir -p "$RESULTS"
. "$HERE/lib.sh"
on_exit() { [[ -f $WORK/nginx.pid ]] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true; }

# arrays, not functions: "$!" must be the server itself, not a subshell
SRV=(); CLI=()
if [[ $PIN == 1 ]]; then SRV=(taskset -c 0); CLI=(taskset -c 1); fi

MOCK_PORT=$(free_port); GW_PORT=$(free_port); NGX_PORT=$(free_port); FULL_PORT=$(free_port)
"${SRV[@]}" "$BIN/mockllm" --listen "127.0.0.1:$MOCK_PORT" --no-record --tokens 48 \
    2>"$WORK/mock.log" &
MOCK_PID=$!; PIDS+=("$MOCK_PID")
wait_http "http://127.0.0.1:$MOCK_PORT/v1/models"
BACKENDS="{\"name\": \"mock\", \"url\": \"http://127.0.0.1:$MOCK_PORT/v1\", \"models\": [\"gpt-4o-mini\"]}"
for i in $(seq 2 "$POOL"); do
    P=$(free_port)
    "${SRV[@]}" "$BIN/mockllm" --listen "127.0.0.1:$P" --no-record --tokens 48 \
        2>"$WORK/mock$i.log" &
    PIDS+=("$!")
    wait_http "http://127.0.0.1:$P/v1/models"
    BACKENDS="$BACKENDS, {\"name\": \"mock$i\", \"url\": \"http://127.0.0.1:$P/v1\", \"models\": [\"gpt-4o-mini\"]}"
done

cat >"$WORK/gw.json" <<JSON
{"listen": "127.0.0.1:$GW_PORT", "access_log": "off",
 "backends": [$BACKENDS]}
JSON
"${SRV[@]}" "$BIN/promptgate" -c "$WORK/gw.json" 2>"$WORK/gw.log" &
GW_PID=$!; PIDS+=("$GW_PID")
wait_http "http://127.0.0.1:$GW_PORT/healthz"

if [[ $FULL == 1 ]]; then
    KEY_SHA=$(printf %s "$BENCH_KEY" | sha256sum | cut -d' ' -f1)
    M="http://127.0.0.1:$MOCK_PORT/v1"
    cat >"$WORK/full.json" <<JSON
{"listen": "127.0.0.1:$FULL_PORT", "access_log": "$WORK/access.log",
 "backends": [
  {"name": "mock-a", "url": "$M", "models": ["gpt-4o-mini"]},
  {"name": "mock-b", "url": "$M", "models": ["gpt-4o-mini"]},
  {"name": "mock-c", "url": "$M", "models": ["gpt-4o-mini"]}],
 "models": {"gpt-4o-mini": {"strategy": "round_robin"}},
 "keys": [{"name": "bench", "key_sha256": "$KEY_SHA", "models": ["*"],
           "rpm": 100000000, "tpm": 2000000000, "max_concurrent": 10000,
           "daily_tokens": 1000000000000}],
 "rate_limit": {"mode": "local"},
 "metrics": {"path": "/metrics"}}
JSON
    "${SRV[@]}" "$BIN/promptgate" -c "$WORK/full.json" 2>"$WORK/full.log" &
    FULL_PID=$!; PIDS+=("$FULL_PID")
    wait_http "http://127.0.0.1:$FULL_PORT/healthz"
fi

NGINX=$(command -v nginx || true)
if [[ -n $NGINX ]]; then
    mkdir -p "$WORK/ngx/logs"
    cat >"$WORK/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/ngx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $WORK/ngx/body;
    proxy_temp_path $WORK/ngx/proxy;
    fastcgi_temp_path $WORK/ngx/fastcgi;
    uwsgi_temp_path $WORK/ngx/uwsgi;
    scgi_temp_path $WORK/ngx/scgi;
    keepalive_requests 1000000;
    upstream mock { server 127.0.0.1:$MOCK_PORT; keepalive 64; }
    server {
        listen 127.0.0.1:$NGX_PORT;
        location / {
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
CONF
    "${SRV[@]}" "$NGINX" -p "$WORK/ngx" -c "$WORK/nginx.conf" &
    NGX_PID=$!; PIDS+=("$NGX_PID")
    wait_http "http://127.0.0.1:$NGX_PORT/v1/models"
fi

export BENCH_BODY="$HERE/request.json"
run_wrk() { # conns dur url
    "${CLI[@]}" wrk -t1 -c"$1" -d"$2"s --latency -s "$HERE/post.lua" "$3" 2>&1 |
        sed -n 's/^BENCHJSON //p'
}

measure() { # name url pid... (appends one line per round to the name's files)
    local name=$1 url=$2; shift 2
    local t0=0 t1=0 p j reqs
    [[ -f $WORK/$name.sat ]] || run_wrk "$SAT_CONN" "$WARM_DUR" "$url" >/dev/null
    for p in "$@"; do t0=$((t0 + $(cpu_ticks "$p"))); done
    j=$(run_wrk "$SAT_CONN" "$SAT_DUR" "$url")
    for p in "$@"; do t1=$((t1 + $(cpu_ticks "$p"))); done
    [[ -n $j ]] || die "wrk gave no result for $name"
    [[ $(field "$j" non2xx) == 0 && $(field "$j" socket_errors) == 0 ]] ||
        die "$name: errors under load: $j"
    echo "$j" >>"$WORK/$name.sat"
    reqs=$(field "$j" requests)
    python3 -c "print(round(($t1-$t0)*1e6/$(getconf CLK_TCK)/$reqs, 2))" >>"$WORK/$name.cpu"
    run_wrk 1 "$LIGHT_DUR" "$url" >>"$WORK/$name.light"
}

echo "bench: mock on :$MOCK_PORT, promptgate on :$GW_PORT${NGINX:+, nginx on :$NGX_PORT}; pinned=$PIN, $ROUNDS rounds" >&2
URL=/v1/chat/completions
for r in $(seq "$ROUNDS"); do
    measure direct "http://127.0.0.1:$MOCK_PORT$URL" "$MOCK_PID"
    [[ -n $NGINX ]] && measure nginx "http://127.0.0.1:$NGX_PORT$URL" "$NGX_PID" $(pgrep -P "$NGX_PID" || true)
    measure promptgate "http://127.0.0.1:$GW_PORT$URL" "$GW_PID"
    if [[ $FULL == 1 ]]; then
        BENCH_AUTH=$BENCH_KEY measure promptgate_full "http://127.0.0.1:$FULL_PORT$URL" "$FULL_PID"
        # the access log must really have been written, one line per request
        [[ -s $WORK/access.log ]] || die "promptgate_full wrote no access log"
        : >"$WORK/access.log" # a whole run of lines is no use to keep
    fi
done
if [[ $FULL == 1 ]]; then
    curl -sf "http://127.0.0.1:$FULL_PORT/metrics" |
        grep '^promptgate_requests_total{route="/v1/chat/completions",model="gpt-4o-mini",backend="mock-' >/dev/null ||
        die "promptgate_full: GET /metrics did not count the requests"
fi

TS=$(date -u +%Y%m%dT%H%M%SZ)
OUT="$RESULTS/bench-$TS.json"
python3 - "$OUT" "$WORK" <<PY
import json, os, statistics, sys
w = sys.argv[2]
TARGETS = ("direct", "nginx", "promptgate", "promptgate_full")
names = [n for n in TARGETS if os.path.exists(os.path.join(w, n + ".sat"))]
rd = lambda n, ext: open(os.path.join(w, n + "." + ext)).read()
def med(lines):  # the median of every numeric field over the rounds
    runs = [json.loads(l) for l in lines.splitlines()]
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]
            if isinstance(runs[0][k], (int, float))} | {"rounds": runs}
sat = {n: med(rd(n, "sat")) for n in names}
light = {n: med(rd(n, "light")) for n in names}
cpu = {n: statistics.median(float(x) for x in rd(n, "cpu").split()) for n in names}
order = [n for n in TARGETS if n in sat]
rows = []
print("%-15s %10s %9s %9s %12s %10s %10s %14s" % ("target", "rps", "p50_us", "p99_us",
      "cpu_us/req", "light_p50", "light_p99", "added_p50_us"))
for n in order:
    added = light[n]["p50_us"] - light["direct"]["p50_us"]
    print("%-15s %10.0f %9d %9d %12.2f %10d %10d %14d" % (n, sat[n]["rps"], sat[n]["p50_us"],
          sat[n]["p99_us"], cpu[n], light[n]["p50_us"], light[n]["p99_us"], added))
    rows.append({"target": n, "saturation": sat[n], "light": light[n], "cpu_us_per_req": cpu[n],
                 "added_light_p50_us": added})
ratios = {}
if "nginx" in sat:
    ratios["promptgate_rps_vs_nginx"] = round(sat["promptgate"]["rps"] / sat["nginx"]["rps"], 3)
    ratios["promptgate_cpu_vs_nginx"] = round(cpu["promptgate"] / cpu["nginx"], 3) if cpu["nginx"] else None
    if "promptgate_full" in sat:
        ratios["promptgate_full_rps_vs_nginx"] = round(sat["promptgate_full"]["rps"] / sat["nginx"]["rps"], 3)
if "promptgate_full" in sat:
    ratios["promptgate_full_rps_vs_promptgate"] = round(sat["promptgate_full"]["rps"] / sat["promptgate"]["rps"], 3)
ratios["promptgate_rps_vs_direct"] = round(sat["promptgate"]["rps"] / sat["direct"]["rps"], 3)
print()
for k, v in ratios.items():
    print("%-34s %s" % (k, v))
# the ratios of each round too: how far one round alone may wander
per_round = [{"nginx": sat["nginx"]["rounds"][i]["rps"],
              **{n: sat[n]["rounds"][i]["rps"] for n in ("promptgate", "promptgate_full") if n in sat}}
             for i in range($ROUNDS)] if "nginx" in sat else []
for i, r in enumerate(per_round):
    print("round %d: " % (i + 1) + ", ".join("%s %.3f" % (n, r[n] / r["nginx"])
                                             for n in r if n != "nginx"))
json.dump({"rows": rows, "ratios": ratios, "rounds": $ROUNDS, "sat_conn": $SAT_CONN, "sat_dur_s": $SAT_DUR,
           "light_dur_s": $LIGHT_DUR}, open(sys.argv[1], "w"), indent=1)
print("\nwritten to", sys.argv[1])
PY
