#!/usr/bin/python3
"""ratelimit_bar.py - issue 4's bar for redis-mode rate limits, measured.

Starts one redis-server, one mockllm and two promptgate instances sharing
the Redis (rate_limit.mode "redis"), with one virtual key limited to RPM
requests per minute, then:

  1. accuracy: CLIENTS processes hammer both instances (each client
     alternates between them over keep-alive connections) for DURATION
     seconds.  Reports the admitted count against RPM * DURATION / 60
     (the bar: within 1%, never more than 2% over), the most admitted in
     any sliding 60 s window (the limit itself, across every window edge),
     and how right retry-after was: for each 429, its retry-after-ms
     against the moment the next request was actually admitted (by any
     client: they hammer, so the first free slot is taken at once), and
     whether the whole-second retry-after was never early and less than a
     second late.
  2. outage: the same load for OUTAGE seconds while Redis is killed
     (SIGKILL), restarted on the same port, then frozen (SIGSTOP) and
     thawed; a separate probe process sends one request every 20 ms and
     times it.  Reports, per phase, statuses, 5xx, and the slowest request
     as the client saw it and as the gateways logged it (latency_ms),
     against the bar: no request waits more than the Redis timeout plus
     10 ms, no 5xx caused by it.
  3. cost: EVALSHA (and EVAL) calls per request, from INFO commandstats
     (the bar: at most one round trip per request).

Stdlib only; uses PROMPTGATE_BIN (default <repo>/bin) for promptgate and
mockllm, and redis-server/redis-cli from PATH.  Exit status 0 when every
bar is met, 1 otherwise, 2 on a setup failure.

usage: ratelimit_bar.py [--duration S] [--outage S] [--rpm N] [--tpm N] [--clients N]
                        [--pace-ms MS] [--timeout-ms MS] [--on-error open|closed]
                        [--json FILE] [--keep]
example (the issue's bar, ~3 minutes):
  contrib/bench/ratelimit_bar.py --duration 120
"""

import argparse
import hashlib
import http.client
import json
import math
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from loopback import free_port, http_ok  # noqa: E402
BIN = Path(os.environ.get("PROMPTGATE_BIN") or ROOT / "bin")
SECRET = "pk-bench-ratelimit-0f1e2d3c4b5a"
CHAT = "/v1/chat/completions"
BODY = json.dumps({"model": "qwen2.5-7b", "max_tokens": 2,
                   "messages": [{"role": "user", "content": "hi"}]}).encode()
HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer " + SECRET}


def wait_http(port, path, timeout=10):
    if not http_ok(port, path, timeout):
        raise SystemExit("ratelimit_bar: nothing answers GET %s on port %d" % (path, port))


class Procs:
    """Children started here, stopped at exit."""

    def __init__(self, work):
        self.work = work
        self.procs = {}

    def start(self, name, argv, **kw):
        log = open(self.work / (name + ".log"), "ab")
        p = subprocess.Popen([str(a) for a in argv], stdin=subprocess.DEVNULL,
                             stdout=log, stderr=log, **kw)
        self.procs[name] = p
        return p

    def stop_all(self):
        for p in self.procs.values():
            if p.poll() is None:
                try:
                    os.kill(p.pid, signal.SIGCONT)
                except OSError:
                    pass
                p.terminate()
        for p in self.procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


def start_redis(procs, port, name="redis"):
    argv = ["redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", procs.work]
    p = procs.start(name, argv)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if redis_cli(port, "ping") == "PONG":
            return p
        time.sleep(0.05)
    raise SystemExit("ratelimit_bar: redis-server did not start (see %s)" % procs.work)


def redis_cli(port, *args):
    r = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port)] + list(args),
                       capture_output=True, timeout=10)
    return r.stdout.decode().strip() if r.returncode == 0 else None


def commandstats(port):
    out = {}
    for line in (redis_cli(port, "info", "commandstats") or "").splitlines():
        if line.startswith("cmdstat_"):
            name, _, rest = line[8:].partition(":")
            out[name] = int(dict(kv.split("=") for kv in rest.split(","))["calls"])
    return out


# ---------------------------------------------------------------- clients

def client(ports, t_start, t_end, q, pace=0.0):
    """Hammers ports in turn until t_end (time.time()), pausing pace s
    after each answer.  Sends back
    admitted times, 429s as (time, retry_after_ms, retry_after_s), and the
    other statuses counted."""
    conns = [None] * len(ports)
    admitted, refused, other, errors, unlimited = [], [], {}, 0, 0
    i = 0
    while time.time() < t_start:
        time.sleep(0.001)
    while True:
        t0 = time.time()
        if t0 >= t_end:
            break
        k = i % len(ports)
        i += 1
        try:
            if conns[k] is None:
                conns[k] = http.client.HTTPConnection("127.0.0.1", ports[k], timeout=10)
            conns[k].request("POST", CHAT, body=BODY, headers=HEADERS)
            r = conns[k].getresponse()
            r.read()
        except (OSError, http.client.HTTPException):
            errors += 1
            if conns[k]:
                conns[k].close()
            conns[k] = None
            continue
        t1 = time.time()
        if pace:
            time.sleep(pace)
        mid = (t0 + t1) / 2
        if r.status == 200:
            admitted.append(mid)
            if r.getheader("x-ratelimit-limit-requests") is None:
                unlimited += 1  # not decided by Redis: on_error "open"
        elif r.status == 429:
            refused.append((mid, int(r.getheader("retry-after-ms") or -1),
                            int(r.getheader("retry-after") or -1)))
        else:
            other[r.status] = other.get(r.status, 0) + 1
    q.put({"admitted": admitted, "refused": refused, "other": other, "errors": errors,
           "unlimited": unlimited})


def probe(port, t_start, t_end, q, every=0.02):
    """One request every `every` s, timed: [(time, ms, status)]."""
    out = []
    c = None
    while time.time() < t_start:
        time.sleep(0.001)
    while time.time() < t_end:
        t0 = time.time()
        try:
            if c is None:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            c.request("POST", CHAT, body=BODY, headers=HEADERS)
            r = c.getresponse()
            r.read()
            status = r.status
        except (OSError, http.client.HTTPException):
            status = -1
            c = None
        t1 = time.time()
        out.append((t0, (t1 - t0) * 1000, status))
        time.sleep(max(0, every - (time.time() - t0)))
    q.put(out)


def run_load(ports, clients, seconds, probe_port=None, pace=0.0):
    q = mp.Queue()
    t_start = time.time() + 0.5
    t_end = t_start + seconds
    ps = [mp.Process(target=client, args=(ports[i % len(ports):] + ports[:i % len(ports)],
                                          t_start, t_end, q, pace)) for i in range(clients)]
    if probe_port:
        ps.append(mp.Process(target=probe, args=(probe_port, t_start, t_end, q)))
    for p in ps:
        p.start()
    return ps, q, t_start, t_end


def collect(ps, q):
    res = [q.get() for _ in ps]
    for p in ps:
        p.join()
    out = {"admitted": [], "refused": [], "other": {}, "errors": 0, "unlimited": 0,
           "probe": []}
    for r in res:
        if isinstance(r, list):
            out["probe"] = r
            continue
        out["admitted"] += r["admitted"]
        out["refused"] += r["refused"]
        out["errors"] += r["errors"]
        out["unlimited"] += r["unlimited"]
        for k, v in r["other"].items():
            out["other"][k] = out["other"].get(k, 0) + v
    out["admitted"].sort()
    out["refused"].sort()
    return out


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(math.ceil(p / 100 * len(xs))) - 1)]


def access_latencies(logpath, t_from, t_to):
    """latency_ms of API requests the gateway logged between two times."""
    out = []
    with open(logpath, "rb") as f:
        for line in f:
            if not line.startswith(b"{"):
                continue
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if e.get("path") == CHAT and t_from <= e.get("ts", 0) <= t_to:
                out.append((e["latency_ms"], e["status"]))
    return out


# ---------------------------------------------------------------- phases

def accuracy(args, gw_ports, rport):
    rate = args.rpm / 60.0
    burst = max(1, int(rate))
    before = commandstats(rport)
    ps, q, t0, t1 = run_load(gw_ports, args.clients, args.duration, pace=args.pace_ms / 1000)
    res = collect(ps, q)
    after = commandstats(rport)
    adm = res["admitted"]
    n_req = len(adm) + len(res["refused"]) + sum(res["other"].values())
    span = t1 - t0
    target = args.rpm * span / 60.0
    # the most admitted in any 60 s window (sliding, every edge)
    j, worst60 = 0, 0
    for i in range(len(adm)):
        while adm[i] - adm[j] >= 60.0:
            j += 1
        worst60 = max(worst60, i - j + 1)
    # retry-after against the next actual admission
    errs, early_s, late_s, n_checked = [], 0, 0, 0
    k = 0
    for t, ra_ms, ra_s in res["refused"]:
        while k < len(adm) and adm[k] <= t:
            k += 1
        if k == len(adm) or ra_ms < 0:
            continue
        true_wait = (adm[k] - t) * 1000
        errs.append(true_wait - ra_ms)
        n_checked += 1
        if ra_s * 1000 < true_wait - 20:     # the header said "sooner" than it was
            early_s += 1
        if ra_s * 1000 - true_wait >= 1000 + 20:
            late_s += 1
    evalsha = after.get("evalsha", 0) - before.get("evalsha", 0)
    evals = after.get("eval", 0) - before.get("eval", 0)
    out = {
        "duration_s": round(span, 3), "rpm": args.rpm, "tpm": args.tpm,
        "clients": args.clients,
        "pace_ms": args.pace_ms, "cpus": os.cpu_count(),
        "requests": n_req, "requests_per_s": round(n_req / span),
        "admitted": len(adm), "target": round(target, 1),
        # 200s without x-ratelimit headers: Redis timed out, on_error admitted
        "admitted_without_redis": res["unlimited"],
        "target_with_burst": round(target + burst, 1),
        "error_pct": round(100.0 * (len(adm) - target) / target, 3),
        "max_in_any_60s": worst60, "limit_60s": args.rpm + burst,
        "other_statuses": res["other"], "connection_errors": res["errors"],
        "retry_after_ms_error": {
            "checked": n_checked,
            "p50": round(pct(errs, 50), 2), "p99": round(pct(errs, 99), 2),
            "min": round(min(errs), 2) if errs else None,
            "max": round(max(errs), 2) if errs else None,
            "within_10ms_pct": round(100.0 * sum(1 for e in errs if abs(e) <= 10)
                                     / max(1, len(errs)), 2)},
        "retry_after_s": {"early": early_s, "late_by_1s_or_more": late_s},
        "script_calls_per_request": round((evalsha + evals) / max(1, n_req), 4),
        "eval_whole_script": evals,
    }
    # the bar as the issue words it: within 1% of the limit, never more
    # than 2% over (at 2 minutes the burst is 0.8% of it)
    ok = (abs(out["error_pct"]) <= 1.0 and len(adm) <= 1.02 * target
          and worst60 <= args.rpm + burst + 1
          and early_s == 0 and late_s == 0
          and not res["other"] and out["script_calls_per_request"] <= 1.001)
    return ok, out


def outage(args, procs, gw_ports, rport, logs):
    """Load while Redis is killed, restarted, frozen and thawed."""
    seconds = args.outage
    marks = {"kill": 0.25, "restart": 0.5, "stop": 0.7, "cont": 0.9}
    ps, q, t0, t1 = run_load(gw_ports, args.clients, seconds, probe_port=gw_ports[0],
                             pace=args.pace_ms / 1000)
    events = {}
    while time.time() < t0:
        time.sleep(0.001)
    for name, frac in sorted(marks.items(), key=lambda x: x[1]):
        time.sleep(max(0, t0 + frac * seconds - time.time()))
        events[name] = time.time()
        r = procs.procs["redis"]
        if name == "kill":
            r.send_signal(signal.SIGKILL)
            r.wait()
        elif name == "restart":
            start_redis(procs, rport)
            events["restart_ready"] = time.time()
        elif name == "stop":
            r.send_signal(signal.SIGSTOP)
        elif name == "cont":
            r.send_signal(signal.SIGCONT)
    res = collect(ps, q)
    time.sleep(0.3)  # the access logs flush
    phases = {"killed": (events["kill"], events["restart"]),
              "frozen": (events["stop"], events["cont"]),
              "whole run": (t0, t1)}
    out = {"timeout_ms": args.timeout_ms, "on_error": args.on_error, "phases": {}}
    ok = True
    bound = args.timeout_ms + 10
    for name, (a, b) in phases.items():
        pr = [x for x in res["probe"] if a <= x[0] <= b]
        lat = []
        for path in logs:
            lat += access_latencies(path, a, b)
        statuses = {}
        for _, _, s in pr:
            statuses[s] = statuses.get(s, 0) + 1
        for _, s in lat:
            statuses["log_%d" % s] = statuses.get("log_%d" % s, 0) + 1
        five = (sum(1 for _, _, s in pr if s >= 500 or s < 0)
                + sum(1 for _, s in lat if s >= 500))
        ph = {"probe_requests": len(pr),
              "probe_max_ms": round(max((x[1] for x in pr), default=0), 2),
              "probe_p99_ms": round(pct([x[1] for x in pr], 99), 2),
              "gateway_logged": len(lat),
              "gateway_max_latency_ms": max((x[0] for x in lat), default=0),
              "gateway_p99_latency_ms": pct([x[0] for x in lat], 99),
              "statuses": {str(k): v for k, v in sorted(statuses.items(), key=str)},
              "5xx_or_failed": five}
        out["phases"][name] = ph
        if five or ph["gateway_max_latency_ms"] > bound:
            ok = False
    out["bar_ms"] = bound
    out["hammer_other_statuses"] = res["other"]
    out["connection_errors"] = res["errors"]
    out["reconnected_after_restart"] = redis_cli(rport, "dbsize") not in (None, "0")
    if res["other"] and any(k >= 500 for k in res["other"]):
        ok = False
    return ok, out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--duration", type=float, default=120, help="accuracy phase, s (120)")
    ap.add_argument("--outage", type=float, default=20, help="outage phase, s (20; 0 skips)")
    ap.add_argument("--rpm", type=int, default=600, help="the key's limit (600)")
    ap.add_argument("--tpm", type=int, default=0,
                    help="also limit the key's tokens per minute (0: no)")
    ap.add_argument("--clients", type=int, default=4, help="hammering processes (4)")
    ap.add_argument("--pace-ms", type=float, default=0,
                    help="pause after each answer, per client (0: flat out); on a small "
                         "machine flat-out clients starve the servers of CPU")
    ap.add_argument("--timeout-ms", type=int, default=50, help="redis.timeout_ms (50)")
    ap.add_argument("--on-error", choices=["open", "closed"], default="open")
    ap.add_argument("--json", help="also write the results to FILE")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    if not (1 <= args.rpm <= 10000000 and 0 <= args.tpm <= 10**10 and 1 <= args.clients <= 64
            and 1 <= args.duration <= 3600 and 0 <= args.outage <= 3600):
        ap.error("--rpm 1..1e7, --tpm 0..1e10, --clients 1..64, --duration 1..3600, --outage 0..3600")
    for exe in ("promptgate", "mockllm"):
        if not (BIN / exe).exists():
            sys.exit("ratelimit_bar: %s not found in %s: run make (or set PROMPTGATE_BIN)"
                     % (exe, BIN))

    work = Path(tempfile.mkdtemp(prefix="promptgate-rlbar."))
    procs = Procs(work)
    try:
        rport, mport = free_port(), free_port()
        start_redis(procs, rport)
        procs.start("mockllm", [BIN / "mockllm", "--listen", "127.0.0.1:%d" % mport,
                                "--no-record"])
        wait_http(mport, "/_mock/stats")
        gw_ports, logs = [], []
        for i in range(2):
            port = free_port()
            cfg = {"listen": "127.0.0.1:%d" % port, "access_log": "stderr",
                   "backends": [{"name": "mock", "url": "http://127.0.0.1:%d/v1" % mport,
                                 "models": ["qwen2.5-7b"]}],
                   "keys": [{"name": "bench", "models": ["*"], "rpm": args.rpm,
                             "tpm": args.tpm,
                             "key_sha256": hashlib.sha256(SECRET.encode()).hexdigest()}],
                   "rate_limit": {"mode": "redis", "on_error": args.on_error},
                   "redis": {"url": "redis://127.0.0.1:%d/0" % rport,
                             "timeout_ms": args.timeout_ms}}
            path = work / ("gw%d.json" % i)
            path.write_text(json.dumps(cfg))
            procs.start("gw%d" % i, [BIN / "promptgate", "-c", path])
            wait_http(port, "/healthz")
            gw_ports.append(port)
            logs.append(work / ("gw%d.log" % i))
        # let the burst of the key's tolerance refill
        time.sleep(1.5)

        results = {}
        print("accuracy: %d clients, %.0f s, %d rpm across 2 instances ..."
              % (args.clients, args.duration, args.rpm), flush=True)
        ok1, results["accuracy"] = accuracy(args, gw_ports, rport)
        print(json.dumps(results["accuracy"], indent=2), flush=True)
        ok2 = True
        if args.outage > 0:
            print("outage: %.0f s, Redis killed at 25%%, restarted at 50%%, frozen 70-90%% ..."
                  % args.outage, flush=True)
            ok2, results["outage"] = outage(args, procs, gw_ports, rport, logs)
            print(json.dumps(results["outage"], indent=2), flush=True)
        results["bar_met"] = {"accuracy": ok1, "outage": ok2}
        print("bar: accuracy %s, outage %s" % ("met" if ok1 else "NOT met",
                                                "met" if ok2 else "NOT met"))
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2))
        return 0 if ok1 and ok2 else 1
    finally:
        procs.stop_all()
        if args.keep:
            print("work directory: %s" % work)
        else:
            subprocess.run(["rm", "-rf", str(work)])


if __name__ == "__main__":
    sys.exit(main())
