#!/usr/bin/env bash
# promptgate beside nginx and the Portkey gateway (issue 11), in the shared
# side-by-side harness (../shared/bench/run.sh, read-only: never edited).
# The harness starts its own mock upstream (nginx `return 200`, port
# 18000), nginx proxy_pass (18001) and Portkey (node, 18002), all on cpu 0
# with wrk on cpu 1; GATEWAY_CMD adds promptgate (one worker, nothing on)
# on a config written at start from the harness's BENCH_UPSTREAM_URL and the
# model of its conf/request.json. The harness's result JSON goes to
# results/bench-peers-<UTC>.json with promptgate's ratios added, and the
# ratios are printed: promptgate's requests/s over Portkey's (the issue's
# bar: at least 40x) and over nginx's.
#
# Where the harness is: $SHARED_BENCH, else ../shared/bench beside the
# repository (CI clones shared/ there). Portkey needs `npm ci` in its
# peers/ folder; when that folder is read-only and has no node_modules, the
# harness is copied to build/shared-bench (node_modules kept there across
# runs, installed again when package-lock.json changes) and the copy runs.
#
# Knobs: SHARED_BENCH=path  GATEWAY_PORT=free port  BAR=1 (exit 1 below 40x)
#        and the harness's own: SAT_CONN SAT_DUR LIGHT_DUR WARM_DUR PIN
#        SERVER_CPUS CLIENT_CPUS SKIP_PORTKEY (passed through)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${BIN:-$ROOT/bin}
BAR=${BAR:-1}
RESULTS="$ROOT/results"
SRC=${SHARED_BENCH:-$ROOT/../shared/bench}

die() { echo "peers: $*" >&2; exit 2; }
[[ -x $BIN/promptgate ]] || die "missing $BIN/promptgate: run 'make' first"
if [[ ! -f $SRC/run.sh ]]; then
    die "the shared bench harness is not at '$SRC' (no run.sh there).
  It lives in the team's shared repository, cloned beside this one as
  ../shared (CI does this). Clone or copy it there, or point to it:
    SHARED_BENCH=/path/to/shared/bench contrib/bench/peers.sh"
fi
SRC=$(cd "$SRC" && pwd)
for t in jq curl; do command -v "$t" >/dev/null || die "missing tool: $t (apt-get install -y $t)"; done

PORTKEY_REL=peers/node_modules/@portkey-ai/gateway/build/start-server.js
HARNESS=$SRC
if [[ ${SKIP_PORTKEY:-0} != 1 && ! -f $SRC/$PORTKEY_REL && ! -w $SRC/peers ]]; then
    # read-only and Portkey not installed: run a copy, with its own node_modules
    HARNESS=$ROOT/build/shared-bench
    mkdir -p "$HARNESS"
    stamp=$(sha256sum "$SRC/peers/package-lock.json" | cut -d' ' -f1)
    if [[ $(cat "$HARNESS/.lock-sha256" 2>/dev/null || true) != "$stamp" ]]; then
        rm -rf "$HARNESS/peers/node_modules"
    fi
    cp -r "$SRC/." "$HARNESS/"
    chmod -R u+w "$HARNESS"
    if [[ ! -f $HARNESS/$PORTKEY_REL ]]; then
        command -v npm >/dev/null || die "Portkey is not installed and npm is missing (apt-get install -y nodejs npm)"
        echo "peers: installing Portkey in the copy $HARNESS/peers (npm ci)" >&2
        (cd "$HARNESS/peers" && npm ci --no-audit --no-fund >"$HARNESS/npm.log" 2>&1) ||
            die "npm ci failed in $HARNESS/peers; see $HARNESS/npm.log"
    fi
    echo "$stamp" >"$HARNESS/.lock-sha256"
    echo "peers: $SRC is read-only; running the copy in $HARNESS" >&2
fi

MODEL=$(jq -r .model "$HARNESS/conf/request.json")
[[ $MODEL =~ ^[A-Za-z0-9._:/-]{1,128}$ ]] || die "unexpected model '$MODEL' in $HARNESS/conf/request.json"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
GATEWAY_PORT=${GATEWAY_PORT:-$(free_port)}
WORK=$(mktemp -d /tmp/promptgate-bench-peers.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$RESULTS" "$WORK/results" "$WORK/state"

# The harness gives the command BENCH_UPSTREAM_URL (its mock); the config is
# written from it at start, then promptgate replaces the shell (exec) so the
# harness's process group and CPU accounting hold promptgate itself.
cat >"$WORK/gw.sh" <<SH
#!/usr/bin/env bash
set -eu
printf '{"listen": "127.0.0.1:%s", "access_log": "off",\n "backends": [{"name": "bench", "url": "%s/v1", "models": ["%s"]}]}\n' \\
    "\$GATEWAY_PORT" "\$BENCH_UPSTREAM_URL" "$MODEL" >"$WORK/gw.json"
exec "$BIN/promptgate" -c "$WORK/gw.json"
SH
chmod +x "$WORK/gw.sh"

echo "peers: harness $HARNESS, promptgate on 127.0.0.1:$GATEWAY_PORT" >&2
GATEWAY_NAME=promptgate GATEWAY_PORT=$GATEWAY_PORT GATEWAY_CMD="$WORK/gw.sh" \
    BENCH_RESULTS="$WORK/results" BENCH_STATE="$WORK/state" \
    "$HARNESS/run.sh" || die "the harness failed (its output above; logs were in $WORK/state)"

RES=$(ls "$WORK"/results/*.json 2>/dev/null | head -1)
[[ -n $RES ]] || die "the harness wrote no result JSON"
TS=$(date -u +%Y%m%dT%H%M%SZ)
OUT="$RESULTS/bench-peers-$TS.json"
jq '
  def rps(n): (.targets[] | select(.target == n) | .saturation.rps) // null;
  def ratio(a; b): if a != null and b != null and b > 0 then ((a / b) * 100 | round) / 100 else null end;
  . + {promptgate_ratios: {
        rps_vs_portkey: ratio(rps("promptgate"); rps("portkey")),
        rps_vs_nginx: ratio(rps("promptgate"); rps("nginx")),
        rps_vs_direct: ratio(rps("promptgate"); rps("direct")),
        bar_rps_vs_portkey_min: 40}}' "$RES" >"$OUT"
cp "${RES%.json}.wrk.txt" "$RESULTS/bench-peers-$TS.wrk.txt" 2>/dev/null || true

jq -r '.promptgate_ratios | "promptgate rps / portkey rps: \(.rps_vs_portkey // "n/a")  (bar: >= 40)\npromptgate rps / nginx rps:   \(.rps_vs_nginx // "n/a")"' "$OUT"
jq -r '.targets[] | "  \(.target): \(.saturation.rps | round) rps, \(.server_cpu.target_cpu_us_per_req * 10 | round / 10) us CPU/request, light p50 \(.light.latency_us.p50) us"' "$OUT"
echo "written to $OUT"
if [[ $BAR == 1 ]]; then
    jq -e '.promptgate_ratios.rps_vs_portkey == null or .promptgate_ratios.rps_vs_portkey >= 40' "$OUT" >/dev/null ||
        { echo "peers: below the bar (40x Portkey's requests/s)" >&2; exit 1; }
fi
