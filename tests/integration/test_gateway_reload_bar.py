"""Issue 9's reload bar: SIGHUP 20 times while 200 requests/s run, half of
them streams, through a keyed, rate-limited, two-backend gateway whose
config changes on every reload (models, weights, keys, limits, timeouts):
zero failed requests, and no file descriptor leaked: the gateway's open
descriptors after the run equal those after a warm-up at the same load,
apart from idle keep-alive connections to the backends, which its pools
keep (up to 256 an address, closed after 60 s idle) and which are counted
apart and bounded by the load's concurrency.

Paced, not flat out: RATE requests a second are scheduled across WORKERS
threads, each on a new connection, so the figure is the issue's and does
not depend on the machine's speed. Prints the figures with -s."""

import os
import threading
import time

import pytest

from helpers import chat, http, start_mock, upstream, wait_until

# both upstream transports: the own HTTP/1.1 client and libcurl
from helpers import upstream_host  # noqa: E402,F401

CHAT = "/v1/chat/completions"
RATE = 200          # requests a second
WORKERS = 40
RELOADS = 20
SECRET = "pk-reload-bar-1a2b3c4d"


def config(mocks, i, workers=1):
    """The i-th config: every reload changes something a request uses."""
    import hashlib
    models = ["qwen2.5-7b", "gpt-4o-mini"] + (["text-embedding-3-small"] if i % 2 else [])
    return {
        "workers": workers,
        "limits": {"max_body_bytes": 65536 + i, "drain_timeout_ms": 5000},
        "backends": [{"name": "m%d" % k, "url": upstream(m), "models": models,
                      "weight": 1 + (i + k) % 3, "timeout_ms": 10000 + i}
                     for k, m in enumerate(mocks)],
        "keys": [{"name": "svc", "key_sha256": hashlib.sha256(SECRET.encode()).hexdigest(),
                  "models": ["*"], "rpm": 1000000 - i, "tpm": 100000000}]
                + [{"name": "other%d" % i, "key_sha256": "%064x" % (i + 1), "models": ["*"]}],
        "access_log": "off",
    }


def fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def upstream_conns(pid, mocks):
    """The gateway's established connections to the mocks (its pools)."""
    import subprocess
    ports = {str(m.port) for m in mocks}
    ss = subprocess.run(["ss", "-tanp"], capture_output=True, text=True).stdout
    return sum(1 for l in ss.splitlines()
               if "pid=%d," % pid in l and l.split()[0] == "ESTAB"
               and l.split()[4].rsplit(":", 1)[-1] in ports)


def other_fds(pid, mocks):
    return fds(pid) - upstream_conns(pid, mocks)


def describe_fds(pid):
    """What the descriptors are, for a failure message: targets of the
    links, and the gateway's TCP connections (ss) by peer port."""
    import collections
    import subprocess
    kinds = collections.Counter()
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            kinds[os.readlink("/proc/%d/fd/%s" % (pid, fd)).split(":")[0]] += 1
        except OSError:
            pass
    ss = subprocess.run(["ss", "-tanp"], capture_output=True, text=True).stdout
    mine = [l.split()[:5] for l in ss.splitlines() if "pid=%d," % pid in l]
    return "%r; tcp: %r" % (dict(kinds), collections.Counter((c[0], c[4].rsplit(":", 1)[-1]) for c in mine))


def run_load(gw, seconds, results):
    """RATE req/s for seconds; results gets (ok, what) per request."""
    t0 = time.monotonic() + 0.05
    n = int(RATE * seconds)

    def worker(k):
        for i in range(k, n, WORKERS):
            delay = t0 + i / RATE - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            stream = i % 2 == 0
            try:
                r = http("POST", gw.url + CHAT, timeout=15,
                         body=chat(stream=stream, max_tokens=8),
                         headers={"Authorization": "Bearer " + SECRET,
                                  "x-mock-fault": "token-delay-ms=10", "Connection": "close"})
                ok = r.status == 200 and (b"data: [DONE]" in r.body if stream
                                          else b'"usage"' in r.body)
                results.append((ok, r.status if ok else (r.status, r.body[-300:])))
            except Exception as e:  # a connection error is a failed request too
                results.append((False, repr(e)))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(WORKERS)]
    for t in threads:
        t.start()
    return threads


@pytest.mark.parametrize("workers", [1, 2])
def test_twenty_reloads_at_200_rps_half_streams(mockllm, gateway, workers):
    """With one worker, and with two (each reload handed to the second
    worker through its mailbox while both serve)."""
    mocks = [start_mock(mockllm), start_mock(mockllm)]
    gw = gateway(config(mocks, 0, workers))
    pid = gw.proc.pid

    warm = []
    for t in run_load(gw, 2, warm):
        t.join(30)
    assert all(ok for ok, _ in warm), [w for ok, w in warm if not ok][:3]
    time.sleep(0.3)
    before = other_fds(pid, mocks)

    results = []
    threads = run_load(gw, 10, results)
    t_start = time.monotonic()
    for i in range(1, RELOADS + 1):
        time.sleep(max(0, t_start + i * 0.45 - time.monotonic()))
        gw.reload(config(mocks, i, workers))
    for t in threads:
        t.join(60)
    failed = [w for ok, w in results if not ok]
    streams = sum(1 for i in range(len(results)) if i % 2 == 0)
    # the connections of the last requests close; the upstream pools keep
    # what they kept after the warm-up
    try:
        wait_until(lambda: other_fds(pid, mocks) <= before, timeout=5)
    except AssertionError:
        raise AssertionError("descriptors besides upstream connections: %d after the run, "
                             "%d after the warm-up: %s"
                             % (other_fds(pid, mocks), before, describe_fds(pid)))
    after = other_fds(pid, mocks)
    pooled = upstream_conns(pid, mocks)
    reloaded = gw.stderr_text().count("configuration reloaded")
    print("\nreload bar (%d worker%s): %d requests (%d streams) at %d/s, %d reloads, %d failed; "
          "descriptors besides upstream connections %d after warm-up, %d after the run; "
          "%d idle upstream connections pooled"
          % (workers, "s" if workers > 1 else "", len(results), streams, RATE, reloaded, len(failed), before, after, pooled))
    assert pooled <= WORKERS * len(mocks) * workers, describe_fds(pid)
    assert reloaded >= RELOADS, gw.stderr_tail()
    assert len(results) == RATE * 10
    assert not failed, failed[:5]
    assert gw.alive()
