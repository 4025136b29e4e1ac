#!/usr/bin/env bash
# Streaming at scale (issue 11): N concurrent streaming chat completions,
# mockllm producing $TOKENS chunks $TOKEN_DELAY_MS apart, through
#   direct      the mock alone
#   nginx       proxy_pass, proxy_buffering off, upstream keepalive,
#               multi_accept on (off, it takes one connection a loop turn)
#   promptgate  one worker, nothing on
# every server pinned to cpu 0, the load client (bin/sseload) on cpu 1.
# Each (N, target) run starts a fresh mock and a fresh proxy, so the
# proxy's VmHWM (/proc/PID/status, the process and its children summed) is
# the peak of that run alone.
#
# Per run: streams ok / failed (by reason), TTFT p50/p99 (connect() to the
# first data: event) and the added TTFT over direct, inter-event gap
# p50/p99 and the added gap, the proxy's peak RSS and its growth per
# stream over its idle RSS, the proxy's CPU time per stream and per event
# (utime+stime from /proc), the mock's and the client's CPU time (a client
# near 100% of its core would be measuring itself).
# syn_drops: SYNs the kernel dropped for a full listen queue during the run
# (TcpExt ListenDrops, system-wide): each costs its stream a 1 s retransmit.
# Results: results/bench-streams-<UTC>.json and a table. The issue's bar,
# checked for promptgate at the largest N: every stream complete, added
# TTFT p99 < 5 ms, peak RSS < 100 MB and < 20 KB a stream; the exit status
# is 1 when promptgate misses it (BAR=0: report only).
#
# ROUNDS=3: every (N, target) is run that many times, in turns (round 1 of
# every target, then round 2, ...), and each figure is the median over the
# rounds (ok: the worst round; peak RSS: the highest): the tails of a shared
# 2-core machine move by tens of ms from one run to the next.
#
# cpu0_demand: the events a second that N streams ask for (N x 1000 /
# TOKEN_DELAY_MS) times the CPU per event of the mock (measured in the
# direct run) and of the proxy: above 1.0, cpu 0 cannot keep up with the
# stream rate at all and every latency figure measures the backlog.
#
# Knobs: STREAMS="1000 5000" TARGETS="direct nginx promptgate" ROUNDS=3
#        TOKENS=200 TOKEN_DELAY_MS=20 RAMP_MS=2000 (opens spread over it)
#        TIMEOUT_S=300 PIN=1 BAR=1 BIN=<repo>/bin
# Quick functional run: STREAMS=200 TOKENS=20 ROUNDS=1 contrib/bench/streams.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${BIN:-$ROOT/bin}
STREAMS=${STREAMS:-1000 5000}
TARGETS=${TARGETS:-direct nginx promptgate}
TOKENS=${TOKENS:-200}
TOKEN_DELAY_MS=${TOKEN_DELAY_MS:-20}
RAMP_MS=${RAMP_MS:-2000}
TIMEOUT_S=${TIMEOUT_S:-300}
PIN=${PIN:-1}
BAR=${BAR:-1}
ROUNDS=${ROUNDS:-3}
RESULTS="$ROOT/results"

die() { echo "streams: $*" >&2; exit 2; }
for b in mockllm promptgate sseload; do
    [[ -x $BIN/$b ]] || die "missing $BIN/$b: build it with 'make all bin/sseload' (or make bench-all)"
done
for n in $STREAMS; do
    [[ $n =~ ^[0-9]+$ && $n -ge 1 && $n -le 50000 ]] || die "STREAMS: '$n' is not a count 1..50000"
done
[[ $ROUNDS =~ ^[1-9]$ ]] || die "ROUNDS: '$ROUNDS' is not 1..9"
for t in $TARGETS; do
    [[ $t == direct || $t == nginx || $t == promptgate ]] ||
        die "TARGETS: unknown target '$t' (direct, nginx, promptgate)"
done
[[ " $TARGETS " == *" direct "* ]] || die "TARGETS must include direct (the added figures are over it)"
NGINX=$(command -v nginx || true)
if [[ -z $NGINX && " $TARGETS " == *" nginx "* ]]; then
    echo "streams: nginx is not installed (apt-get install nginx-light): skipping it" >&2
    TARGETS=${TARGETS//nginx/}
fi

# A proxy holds two descriptors a stream (client + upstream), the client
# and the mock one each: raise the soft limit to the hard one for all the
# processes started from here.
MAXN=0; for n in $STREAMS; do ((n > MAXN)) && MAXN=$n; done
NEED=$((2 * MAXN + 256))
HARD=$(ulimit -Hn)
if [[ $HARD != unlimited ]] && ((HARD < NEED)); then
    die "the open files hard limit is $HARD, $NEED are needed for $MAXN streams through a proxy:
  raise it as root (ulimit -Hn $NEED, or nofile in /etc/security/limits.conf), or lower STREAMS"
fi
ulimit -n "$HARD" 2>/dev/null || ulimit -n "$NEED"
NOFILE=$(ulimit -n)

SRV=(); CLI=()
if [[ $PIN == 1 ]]; then
    (($(nproc) >= 2)) || die "PIN=1 needs 2 cpus (PIN=0 to run unpinned)"
    SRV=(taskset -c 0); CLI=(taskset -c 1)
fi
WORK=$(mktemp -d /tmp/promptgate-bench-streams.XXXXXX)
mkdir -p "$RESULTS"
PIDS=()
stop_pids() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    PIDS=()
}
cleanup() { stop_pids; rm -rf "$WORK"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { # url pid
    for _ in $(seq 200); do
        curl -fs -o /dev/null "$1" && return 0
        kill -0 "$2" 2>/dev/null || die "the server for $1 exited at start; see $WORK"
        sleep 0.05
    done
    die "nothing answers at $1"
}
proc_tree() { echo "$1" $(pgrep -P "$1" || true); } # pid and its children
cpu_ticks() { # pids...: utime+stime, all threads
    local p t=0
    for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
    echo "$t"
}
listen_drops() { # SYNs dropped by full listen queues, system-wide (TcpExt ListenDrops)
    awk '$1 == "TcpExt:" { if (!n) { for (i = 2; i <= NF; i++) k[i] = $i; n = 1 }
                           else for (i = 2; i <= NF; i++) if (k[i] == "ListenDrops") print $i }' /proc/net/netstat
}
status_kb() { # field pids...: summed from /proc/PID/status
    local f=$1 p t=0; shift
    for p in "$@"; do t=$((t + $(awk -v f="$f:" '$1 == f {print $2}' "/proc/$p/status"))); done
    echo "$t"
}

start_mock() {
    MOCK_PORT=$(free_port)
    "${SRV[@]}" "$BIN/mockllm" --listen "127.0.0.1:$MOCK_PORT" --no-record \
        --tokens "$TOKENS" --token-delay-ms "$TOKEN_DELAY_MS" 2>"$WORK/mock.log" &
    MOCK_PID=$!; PIDS+=("$MOCK_PID")
    wait_http "http://127.0.0.1:$MOCK_PORT/v1/models" "$MOCK_PID"
}

start_nginx() {
    local port=$1 conns=$((3 * MAXN + 1024))
    rm -rf "$WORK/ngx"; mkdir -p "$WORK/ngx"
    cat >"$WORK/nginx.conf" <<CONF
worker_processes 1;
worker_rlimit_nofile $NOFILE;
daemon off;
pid $WORK/ngx/nginx.pid;
error_log $WORK/ngx/error.log warn;
events { worker_connections $conns; multi_accept on; }
http {
    access_log off;
    client_body_temp_path $WORK/ngx/body;
    proxy_temp_path $WORK/ngx/proxy;
    fastcgi_temp_path $WORK/ngx/fastcgi;
    uwsgi_temp_path $WORK/ngx/uwsgi;
    scgi_temp_path $WORK/ngx/scgi;
    upstream mock { server 127.0.0.1:$MOCK_PORT; keepalive 64; }
    server {
        listen 127.0.0.1:$port backlog=4096;
        location / {
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 120s;
        }
    }
}
CONF
    "${SRV[@]}" "$NGINX" -p "$WORK/ngx" -c "$WORK/nginx.conf" 2>"$WORK/nginx.log" &
    PROXY_PID=$!; PIDS+=("$PROXY_PID")
    wait_http "http://127.0.0.1:$port/v1/models" "$PROXY_PID"
}

start_promptgate() {
    local port=$1
    cat >"$WORK/gw.json" <<JSON
{"listen": "127.0.0.1:$port", "access_log": "off",
 "backends": [{"name": "mock", "url": "http://127.0.0.1:$MOCK_PORT/v1",
               "models": ["gpt-4o-mini"], "timeout_ms": $(((TIMEOUT_S + 10) * 1000))}]}
JSON
    "${SRV[@]}" "$BIN/promptgate" -c "$WORK/gw.json" 2>"$WORK/gw.log" &
    PROXY_PID=$!; PIDS+=("$PROXY_PID")
    wait_http "http://127.0.0.1:$port/healthz" "$PROXY_PID"
}

run_one() { # n target round
    local n=$1 t=$2 k=$3 port url pids c0 c1 m0 m1 d0 d1 rss0 hwm out rc=0
    start_mock
    case $t in
    direct) PROXY_PID=$MOCK_PID; port=$MOCK_PORT ;;
    nginx) port=$(free_port); start_nginx "$port" ;;
    promptgate) port=$(free_port); start_promptgate "$port" ;;
    esac
    url="http://127.0.0.1:$port/v1/chat/completions"
    sleep 0.2
    pids=$(proc_tree "$PROXY_PID")
    rss0=$(status_kb VmRSS $pids)
    c0=$(cpu_ticks $pids); m0=$(cpu_ticks "$MOCK_PID")
    d0=$(listen_drops)
    out=$("${CLI[@]}" "$BIN/sseload" --url "$url" -n "$n" --ramp-ms "$RAMP_MS" \
        --timeout-s "$TIMEOUT_S" 2>"$WORK/sseload.err") || rc=$?
    c1=$(cpu_ticks $pids); m1=$(cpu_ticks "$MOCK_PID")
    d1=$(listen_drops)
    hwm=$(status_kb VmHWM $pids)
    [[ -n $out ]] || die "$t, $n streams: sseload printed nothing (exit $rc): $(cat "$WORK/sseload.err")"
    if ((rc != 0)); then # some streams failed: what the servers said
        local log
        for log in "$WORK/ngx/error.log" "$WORK/gw.log" "$WORK/mock.log"; do
            [[ -s $log && ($log != *ngx* || $t == nginx) && ($log != *gw.log || $t == promptgate) ]] &&
                { echo "streams: $t, $n streams: last lines of $(basename "$log"):"; tail -5 "$log"; } >&2
        done
    fi
    printf '%s\n' "$out" >"$WORK/run-$n-$t-$k.sseload"
    printf '{"n": %d, "target": "%s", "pids": "%s", "idle_rss_kb": %d, "peak_rss_kb": %d, "cpu_ticks": %d, "mock_cpu_ticks": %d, "listen_drops": %d}\n' \
        "$n" "$t" "$pids" "$rss0" "$hwm" $((c1 - c0)) $((m1 - m0)) $((d1 - d0)) >"$WORK/run-$n-$t-$k.proc"
    echo "streams: round $k, $t, $n streams: $(python3 -c 'import json,sys; j=json.loads(sys.argv[1]); print("%d ok, %d failed, ttft p99 %s ms" % (j["ok"], j["failed"], (j["ttft_ms"] or {}).get("p99")))' "$out"), peak rss $((hwm / 1024)) MB" >&2
    stop_pids
    sleep 1 # let the closed sockets settle before the next run
}

echo "streams: STREAMS=\"$STREAMS\" TARGETS=\"$(echo $TARGETS)\" ROUNDS=$ROUNDS tokens=$TOKENS x ${TOKEN_DELAY_MS} ms, ramp ${RAMP_MS} ms, open files $NOFILE, pinned=$PIN" >&2
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for k in $(seq "$ROUNDS"); do
    for n in $STREAMS; do
        for t in $TARGETS; do run_one "$n" "$t" "$k"; done
    done
done

TS=$(date -u +%Y%m%dT%H%M%SZ)
OUT="$RESULTS/bench-streams-$TS.json"
python3 - "$OUT" "$WORK" "$(getconf CLK_TCK)" <<PY
import json, os, sys
out, work, hz = sys.argv[1], sys.argv[2], int(sys.argv[3])
ns = [int(x) for x in "$STREAMS".split()]
targets = "$TARGETS".split()
rounds = $ROUNDS
def med(xs):
    xs = sorted(x for x in xs if x is not None)
    return None if not xs else (xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2)
def one(n, t, k):
    s = json.load(open(os.path.join(work, "run-%d-%s-%d.sseload" % (n, t, k))))
    p = json.load(open(os.path.join(work, "run-%d-%s-%d.proc" % (n, t, k))))
    cpu_s = p["cpu_ticks"] / hz
    return {"client": s, "idle_rss_kb": p["idle_rss_kb"], "peak_rss_kb": p["peak_rss_kb"],
            "rss_kb_per_stream": round((p["peak_rss_kb"] - p["idle_rss_kb"]) / n, 2),
            "cpu_s": cpu_s, "cpu_us_per_stream": round(cpu_s * 1e6 / n, 1),
            "cpu_us_per_event": round(cpu_s * 1e6 / s["events"], 2) if s["events"] else None,
            "mock_cpu_s": p["mock_cpu_ticks"] / hz,
            "listen_drops": p["listen_drops"],
            "mock_cpu_us_per_event": round(p["mock_cpu_ticks"] / hz * 1e6 / s["events"], 2) if s["events"] else None}
rows = []
for n in ns:
    for t in targets:
        rs = [one(n, t, k) for k in range(1, rounds + 1)]
        cs = [r["client"] for r in rs]
        worst = min(cs, key=lambda c: c["ok"])
        client = {"streams": n, "ok": worst["ok"], "failed": worst["failed"], "fail": worst["fail"],
                  "first_error": worst["first_error"],
                  "events": med([c["events"] for c in cs]), "duration_s": med([c["duration_s"] for c in cs]),
                  "client_cpu_s": med([c["client_cpu_s"] for c in cs])}
        for key in ("ttft_ms", "gap_ms"):
            have = [c[key] for c in cs if c[key]]
            client[key] = {q: med([h[q] for h in have]) for q in ("p50", "p99", "max")} if have else None
        row = {"n": n, "target": t, "client": client, "rounds": rs,
               "idle_rss_kb": med([r["idle_rss_kb"] for r in rs]),
               "peak_rss_kb": max(r["peak_rss_kb"] for r in rs),
               "rss_kb_per_stream": max(r["rss_kb_per_stream"] for r in rs)}
        row["listen_drops"] = max(r["listen_drops"] for r in rs)
        for key in ("cpu_s", "cpu_us_per_stream", "cpu_us_per_event", "mock_cpu_s", "mock_cpu_us_per_event"):
            row[key] = med([r[key] for r in rs])
        rows.append(row)
# what the stream rate asks of cpu 0: events/s x (mock + proxy) CPU per event
for r in rows:
    base = next(x for x in rows if x["n"] == r["n"] and x["target"] == "direct")
    rate = r["n"] * 1000.0 / $TOKEN_DELAY_MS if $TOKEN_DELAY_MS > 0 else None
    per = (base["mock_cpu_us_per_event"] or 0) + (0 if r["target"] == "direct" else (r["cpu_us_per_event"] or 0))
    r["events_per_s_asked"] = rate
    r["cpu0_demand"] = round(rate * per / 1e6, 2) if rate else None
def d(a, b):
    return None if a is None or b is None else round(a - b, 3)
def pc(s, k, q):
    return (s.get(k) or {}).get(q)
for r in rows:
    base = next(x for x in rows if x["n"] == r["n"] and x["target"] == "direct")["client"]
    s = r["client"]
    r["added"] = {"ttft_p50_ms": d(pc(s, "ttft_ms", "p50"), pc(base, "ttft_ms", "p50")),
                  "ttft_p99_ms": d(pc(s, "ttft_ms", "p99"), pc(base, "ttft_ms", "p99")),
                  "gap_p50_ms": d(pc(s, "gap_ms", "p50"), pc(base, "gap_ms", "p50")),
                  "gap_p99_ms": d(pc(s, "gap_ms", "p99"), pc(base, "gap_ms", "p99"))}
hdr = ("N", "target", "ok", "ttft_p50", "ttft_p99", "+ttft_p50", "+ttft_p99", "gap_p50",
       "gap_p99", "+gap_p99", "peak_MB", "KB/strm", "cpu_ms/strm", "cpu_us/evt", "client_cpu%", "cpu0_demand", "syn_drops")
fmt = "%-5s %-10s %-10s %8s %8s %9s %9s %7s %7s %8s %7s %7s %11s %10s %11s %11s %9s"
print(fmt % hdr)
f = lambda v: "-" if v is None else ("%.2f" % v)
for r in rows:
    s, a = r["client"], r["added"]
    print(fmt % (r["n"], r["target"], "%d/%d" % (s["ok"], s["streams"]),
                 f(pc(s, "ttft_ms", "p50")), f(pc(s, "ttft_ms", "p99")),
                 f(a["ttft_p50_ms"]) if r["target"] != "direct" else "", f(a["ttft_p99_ms"]) if r["target"] != "direct" else "",
                 f(pc(s, "gap_ms", "p50")), f(pc(s, "gap_ms", "p99")),
                 f(a["gap_p99_ms"]) if r["target"] != "direct" else "",
                 "%.1f" % (r["peak_rss_kb"] / 1024), "%.1f" % r["rss_kb_per_stream"],
                 "%.2f" % (r["cpu_us_per_stream"] / 1000), f(r["cpu_us_per_event"]),
                 "%.0f" % (100 * s["client_cpu_s"] / s["duration_s"]) if s["duration_s"] else "-",
                 f(r["cpu0_demand"]), r["listen_drops"]))
bar = None
pg = [r for r in rows if r["target"] == "promptgate"]
if pg:
    r = max(pg, key=lambda x: x["n"])
    s = r["client"]
    checks = {"all_complete": s["ok"] == s["streams"],
              "added_ttft_p99_under_5ms": r["added"]["ttft_p99_ms"] is not None and r["added"]["ttft_p99_ms"] < 5,
              "peak_rss_under_100mb": r["peak_rss_kb"] < 100 * 1024,
              "under_20kb_per_stream": r["rss_kb_per_stream"] < 20}
    bar = {"n": r["n"], "checks": checks, "pass": all(checks.values())}
    print("\nbar (promptgate, %d streams): %s" % (r["n"], ", ".join(
        "%s %s" % (k, "ok" if v else "FAILED") for k, v in checks.items())))
fails = [(r["n"], r["target"], r["client"]["fail"], r["client"]["first_error"])
         for r in rows if r["client"]["failed"]]
for f_ in fails:
    print("failures %d %s: %s, first: %s" % f_)
print("(medians of %d rounds; ms; + is added over direct; cpu0_demand > 1: the stream rate asks more than cpu 0 has)" % rounds)
json.dump({"params": {"streams": ns, "targets": targets, "rounds": rounds, "tokens": $TOKENS,
                      "token_delay_ms": $TOKEN_DELAY_MS, "ramp_ms": $RAMP_MS,
                      "timeout_s": $TIMEOUT_S, "pinned": $PIN == 1, "open_files": $NOFILE,
                      "loadavg_before": "$LOAD_BEFORE",
                      "loadavg_after": open("/proc/loadavg").read().split()[:3]},
           "rows": rows, "bar": bar}, open(out, "w"), indent=1)
print("\nwritten to", out)
sys.exit(1 if "$BAR" == "1" and bar is not None and not bar["pass"] else 0)
PY
