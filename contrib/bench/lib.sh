# Sourced by the contrib/bench scripts: what every run needs to start
# servers on free loopback ports and stop them whatever happens.
#   BENCH_NAME  the prefix of error messages (default "bench")
#   WORK        a temporary directory, removed at exit
#   PIDS        servers started in the background, killed at exit
#   on_exit     a function the script may define: run at exit, first
BENCH_NAME=${BENCH_NAME:-bench}
PIDS=()

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
die() { echo "$BENCH_NAME: $*" >&2; exit 1; }

cleanup() {
    declare -F on_exit >/dev/null && on_exit
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

wait_http() { # url: a 2xx within 5 s, or die
    for _ in $(seq 100); do curl -fs -o /dev/null "$1" && return 0; sleep 0.05; done
    die "nothing answers at $1"
}
# utime + stime of a process, in clock ticks (getconf CLK_TCK a second)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# one field of a JSON object given as text
field() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }
