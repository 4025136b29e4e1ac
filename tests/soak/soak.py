#!/usr/bin/python3
"""soak.py - issue 10's soak: promptgate at a steady rate for a while, with
a mix of everything a day brings, and its memory and descriptors checked.

Starts two mockllm backends and one promptgate (keys with local limits, a
memory cache small enough to evict, a pool of the two mocks plus a backend
that refuses connections, an access log file) and sends RATE requests a
second for SECONDS, from WORKERS threads on keep-alive connections:

  40%  cacheable chat completions (10 bodies: hits after the first)
  10%  unique chat completions (misses; the cache evicts)
  25%  streams (20 chunks, 5 ms apart)
   5%  streams the client abandons after the first chunk (the upstream
       transfer must be cancelled)
   5%  a model whose pool starts with the dead backend (retried)
   5%  answers the backend fails (x-mock-fault status=503: passed on)
   5%  a key limited to 300 requests a minute (429s)
   5%  embeddings, and bad JSON (400)

It samples the gateway's resident memory (VmRSS) and open descriptors every
second. The bar: RSS and descriptors at the end within 5% of their values
after the warm-up (the first WARMUP share of the run), no crash (the
gateway answers to the end and exits 0 on SIGTERM), and no request lost:
every one not abandoned on purpose got an HTTP answer (errors included),
and every stream not abandoned ended with [DONE] or an SSE error event.
Descriptors are counted without established connections (clients' keep-
alive ones, and the idle ones to the mocks that the gateway's pools keep by
design, bounded and closed when idle): what leaks shows in the rest.

Stdlib only. usage: soak.py [--seconds S] [--rate N] [--workers N]
  [--warmup FRACTION] [--json FILE]; exit 0 when the bar is met, 1 if not,
  2 on a setup failure. `make soak` runs it (SOAK_SECONDS, default 600).
"""

import argparse
import hashlib
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "contrib" / "bench"))
from loopback import free_port, http_ok  # noqa: E402
BIN = Path(os.environ.get("PROMPTGATE_BIN") or ROOT / "bin")
CHAT = "/v1/chat/completions"
SECRET = "pk-soak-7d6c5b4a39281706"
TIGHT = "pk-soak-tight-0a1b2c3d4e5f"
WORK = None  # the run's directory: configs and logs


def wait_http(port, path, timeout=10):
    if not http_ok(port, path, timeout):
        print("soak: nothing answers GET %s on port %d (logs: %s)" % (path, port, WORK),
              file=sys.stderr)
        sys.exit(2)


def sha(s):
    return hashlib.sha256(s.encode()).hexdigest()


def body(i, **kw):
    b = {"model": "qwen2.5-7b", "max_tokens": 16,
         "messages": [{"role": "user", "content": "soak %s" % i}]}
    b.update(kw)
    return json.dumps(b).encode()


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.by_kind = {}
        self.lost = []

    def note(self, kind, outcome):
        with self.lock:
            d = self.by_kind.setdefault(kind, {})
            d[outcome] = d.get(outcome, 0) + 1

    def lose(self, kind, what):
        with self.lock:
            self.lost.append((kind, what))
        self.note(kind, "LOST")


class Worker:
    """One client thread: keep-alive connection, reconnects after errors."""

    def __init__(self, port, stats):
        self.port = port
        self.stats = stats
        self.conn = None

    def _conn(self):
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        return self.conn

    def send(self, kind, data, headers, stream=False):
        h = {"Content-Type": "application/json", "Authorization": "Bearer " + SECRET}
        h.update(headers)
        for attempt in (0, 1):
            c = self._conn()
            try:
                c.request("POST", CHAT if kind != "embeddings" else "/v1/embeddings",
                          body=data, headers=h)
                r = c.getresponse()
                payload = r.read()
            except (http.client.RemoteDisconnected, BrokenPipeError,
                    ConnectionResetError) as e:
                # a keep-alive connection the server closed between two
                # requests: the request never got there; send it again once
                c.close()
                self.conn = None
                if attempt == 0:
                    continue
                self.stats.lose(kind, repr(e))
                return
            except Exception as e:
                c.close()
                self.conn = None
                self.stats.lose(kind, repr(e))
                return
            if r.getheader("connection", "").lower() == "close":
                c.close()
                self.conn = None
            if stream and r.status == 200:
                ok = b"data: [DONE]" in payload or b"event: error" in payload
                if not ok:
                    self.stats.lose(kind, "stream ended without [DONE] or an error event")
                    return
                self.stats.note(kind, "200-stream" + ("" if b"[DONE]" in payload else "-error"))
                return
            self.stats.note(kind, str(r.status))
            return

    def abandon_stream(self, data):
        """Send a stream on a fresh connection, read its first chunk, close."""
        s = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        try:
            req = (b"POST " + CHAT.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                   b"Content-Type: application/json\r\nAuthorization: Bearer " +
                   SECRET.encode() + b"\r\nx-mock-fault: token-delay-ms=20\r\n"
                   b"Content-Length: " + str(len(data)).encode() + b"\r\n\r\n" + data)
            s.sendall(req)
            got = b""
            while b"data:" not in got:
                chunk = s.recv(4096)
                if not chunk:
                    self.stats.lose("abandon", "closed before the first chunk")
                    return
                got += chunk
            self.stats.note("abandon", "abandoned")
        except OSError as e:
            self.stats.lose("abandon", repr(e))
        finally:
            s.close()

    def one(self, i, rng):
        k = i % 20
        if k < 8:
            self.send("cached", body("cached-%d" % (i % 10), temperature=0), {})
        elif k < 10:
            self.send("unique", body("unique-%d-%d" % (i, rng.random()), temperature=0), {})
        elif k < 15:
            self.send("stream", body("stream-%d" % i, stream=True, max_tokens=20),
                      {"x-mock-fault": "token-delay-ms=5"}, stream=True)
        elif k == 15:
            self.abandon_stream(body("abandon-%d" % i, stream=True, max_tokens=200))
        elif k == 16:
            self.send("retried", json.dumps({"model": "gpt-4o-mini", "max_tokens": 8, "messages": [
                {"role": "user", "content": "x %d" % i}]}).encode(), {})
        elif k == 17:
            self.send("upstream503", body("fail-%d" % i), {"x-mock-fault": "status=503"})
        elif k == 18:
            self.send("tight", body("tight-%d" % i), {"Authorization": "Bearer " + TIGHT})
        elif i % 40 == 19:
            self.send("embeddings", json.dumps({"model": "text-embedding-3-small",
                                                "input": "soak %d" % i}).encode(), {})
        else:
            self.send("badjson", b'{"model": "qwen2.5-7b", "messages": [', {})


def proc_status(pid):
    rss = 0
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    return rss


def open_conns(pid, ports, listen):
    """The gateway's established connections: to the mocks (its pools) and
    from clients (to its listen port)."""
    out = subprocess.run(["ss", "-tanp"], capture_output=True, text=True).stdout
    n = 0
    for l in out.splitlines():
        f = l.split()
        if "pid=%d," % pid in l and f[0] == "ESTAB" and (
                f[4].rsplit(":", 1)[-1] in ports or f[3].rsplit(":", 1)[-1] == listen):
            n += 1
    return n


def fds(pid, ports, listen):
    """Descriptors besides established connections, whose number follows
    the load (clients connected now, idle keep-alive kept by the pools):
    a leak shows here (a socket left in CLOSE_WAIT, a file, a pipe)."""
    return len(os.listdir("/proc/%d/fd" % pid)) - open_conns(pid, ports, listen)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--rate", type=int, default=200)
    ap.add_argument("--workers", type=int, default=32)
    ap.add_argument("--warmup", type=float, default=0.1)
    ap.add_argument("--json")
    args = ap.parse_args()

    global WORK
    work = WORK = Path(tempfile.mkdtemp(prefix="promptgate-soak."))
    procs = []

    def start(name, argv):
        log = open(work / (name + ".log"), "ab")
        p = subprocess.Popen([str(a) for a in argv], stdin=subprocess.DEVNULL,
                             stdout=log, stderr=log)
        procs.append(p)
        return p

    try:
        m1, m2, dead, gwp = free_port(), free_port(), free_port(), free_port()
        for port in (m1, m2):
            start("mock-%d" % port, [BIN / "mockllm", "--listen", "127.0.0.1:%d" % port,
                                     "--no-record"])
            wait_http(port, "/v1/models")
        models = ["qwen2.5-7b", "text-embedding-3-small", "gpt-4o-mini"]
        cfg = {"listen": "127.0.0.1:%d" % gwp, "access_log": str(work / "access.log"),
               "limits": {"idle_timeout_ms": 5000, "drain_timeout_ms": 5000},
               "backends": [
                   {"name": "dead", "url": "http://127.0.0.1:%d/v1" % dead, "models": ["gpt-4o-mini"],
                    "priority": 0, "connect_timeout_ms": 200},
                   {"name": "m1", "url": "http://127.0.0.1:%d/v1" % m1, "models": models,
                    "priority": 1},
                   {"name": "m2", "url": "http://127.0.0.1:%d/v1" % m2, "models": models,
                    "priority": 1}],
               "keys": [{"name": "soak", "key_sha256": sha(SECRET), "models": ["*"],
                         "rpm": 1000000, "tpm": 1000000000},
                        {"name": "tight", "key_sha256": sha(TIGHT), "models": ["*"],
                         "rpm": 300}],
               "cache": {"backend": "memory", "max_bytes": 262144, "max_entry_bytes": 16384,
                         "ttl_s": 60}}
        (work / "gw.json").write_text(json.dumps(cfg))
        gw = start("promptgate", [BIN / "promptgate", "-c", work / "gw.json"])
        wait_http(gwp, "/healthz")
        ports = {str(m1), str(m2)}

        stats = Stats()
        samples = []
        stop = threading.Event()
        t0 = time.monotonic() + 0.1
        n = int(args.rate * args.seconds)

        def run(k):
            w = Worker(gwp, stats)
            rng = random.Random(k)
            for i in range(k, n, args.workers):
                delay = t0 + i / args.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                if stop.is_set():
                    return
                w.one(i, rng)

        def sampler():
            while not stop.is_set():
                try:
                    samples.append((time.monotonic() - t0, proc_status(gw.pid), fds(gw.pid, ports, str(gwp))))
                except OSError:
                    return
                stop.wait(1)

        threads = [threading.Thread(target=run, args=(k,)) for k in range(args.workers)]
        st = threading.Thread(target=sampler)
        st.start()
        for t in threads:
            t.start()
        warm_at = args.seconds * args.warmup
        while time.monotonic() - t0 < warm_at:
            time.sleep(0.2)
        time.sleep(0.5)
        warm_rss, warm_fds = proc_status(gw.pid), fds(gw.pid, ports, str(gwp))
        last_report = time.monotonic()
        while any(t.is_alive() for t in threads):
            time.sleep(0.5)
            if gw.poll() is not None:
                stop.set()
                break
            if time.monotonic() - last_report >= 60:
                last_report = time.monotonic()
                print("soak: %4.0f s  rss %d KB  fds %d  lost %d" % (
                    time.monotonic() - t0, proc_status(gw.pid), fds(gw.pid, ports, str(gwp)),
                    len(stats.lost)), file=sys.stderr, flush=True)
        stop.set()
        st.join(5)
        alive = gw.poll() is None
        end_rss = end_fds = None
        if alive:
            time.sleep(2)  # abandoned streams' cancels, idle client conns close
            end_rss, end_fds = proc_status(gw.pid), fds(gw.pid, ports, str(gwp))
            gw.send_signal(signal.SIGTERM)
            try:
                code = gw.wait(15)
            except subprocess.TimeoutExpired:
                code = "did not exit within 15 s of SIGTERM"
        else:
            code = gw.returncode
        total = sum(sum(d.values()) for d in stats.by_kind.values())
        peak = max((s[1] for s in samples), default=0)
        res = {
            "seconds": args.seconds, "rate": args.rate, "requests": total,
            "by_kind": stats.by_kind, "lost": len(stats.lost), "lost_examples": stats.lost[:5],
            "rss_kb": {"after_warmup": warm_rss, "end": end_rss, "peak": peak},
            "fds": {"after_warmup": warm_fds, "end": end_fds},
            "exit": code,
            "samples_every_s": [s for s in samples[:: max(1, len(samples) // 60)]],
        }
        ok_rss = end_rss is not None and abs(end_rss - warm_rss) <= 0.05 * warm_rss
        ok_fds = end_fds is not None and abs(end_fds - warm_fds) <= max(1, 0.05 * warm_fds)
        res["bar"] = {"rss_within_5pct": ok_rss, "fds_within_5pct": ok_fds,
                      "no_crash": alive and code == 0, "none_lost": not stats.lost}
        out = json.dumps(res, indent=1)
        print(out)
        if args.json:
            Path(args.json).write_text(out)
        met = all(res["bar"].values())
        if met:
            shutil.rmtree(work, ignore_errors=True)
            print("soak: bar met", file=sys.stderr)
        else:
            print("soak: BAR NOT MET; the gateway's log and access log are in %s" % work,
                  file=sys.stderr)
        return 0 if met else 1
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    sys.exit(main())
