"""The bar of issue 3 under load: three backends behind one model, one of
them killed (SIGKILL) while 200 requests/s run: clients see zero errors.
Then all of them dead: a fast 503 with retry-after."""

import http.client
import json
import signal
import threading
import time

from helpers import chat

CHAT = "/v1/chat/completions"
MODEL = "qwen2.5-7b"
RATE = 200       # requests per second, paced
DURATION = 4.0   # seconds
KILL_AT = 1.5    # seconds into the run
WORKERS = 24


def run_load(port, rate, duration, on_tick=None):
    """Paced load over keep-alive connections: request i is sent at
    t0 + i/rate by whichever worker is free. Returns (results, t0) where
    results is a list of (send time - t0, status or exception text,
    latency)."""
    body = json.dumps(chat(max_tokens=4)).encode()
    total = int(rate * duration)
    nxt = [0]
    lock = threading.Lock()
    results = []
    t0 = time.monotonic() + 0.1

    def worker():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        while True:
            with lock:
                i = nxt[0]
                nxt[0] += 1
            if i >= total:
                break
            at = t0 + i / rate
            d = at - time.monotonic()
            if d > 0:
                time.sleep(d)
            t = time.monotonic()
            try:
                conn.request("POST", CHAT, body=body,
                             headers={"Content-Type": "application/json"})
                r = conn.getresponse()
                data = r.read()
                status = r.status
                if status == 200:
                    json.loads(data)
                if r.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            except Exception as e:  # noqa: BLE001 - every failure counts
                status = "%s: %s" % (type(e).__name__, e)
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            with lock:
                results.append((t - t0, status, time.monotonic() - t))
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(WORKERS)]
    for th in threads:
        th.start()
    if on_tick:
        on_tick(t0)
    for th in threads:
        th.join()
    return results, t0


def test_backend_killed_under_200_rps_zero_client_errors(mockllm, gateway):
    mocks = []
    for _ in range(3):
        m = mockllm("--no-record")
        m.reset()
        mocks.append(m)
    cfg = {"backends": [{"name": "b%d" % i, "url": m.base, "models": [MODEL],
                         "connect_timeout_ms": 500, "timeout_ms": 5000}
                        for i, m in enumerate(mocks)],
           "access_log": "off"}
    gw = gateway(cfg)
    victim = mocks[1]
    victim.check_exit = False

    def killer(t0):
        time.sleep(max(0, t0 + KILL_AT - time.monotonic()))
        victim.proc.send_signal(signal.SIGKILL)

    results, _ = run_load(gw.port, RATE, DURATION, on_tick=lambda t0: threading.Thread(
        target=killer, args=(t0,), daemon=True).start())
    assert len(results) == int(RATE * DURATION)
    errors = [r for r in results if r[1] != 200]
    assert errors == [], errors[:10]
    # the load was really paced at ~200/s and the victim took its share
    # before it died
    span = max(r[0] for r in results)
    assert DURATION - 0.3 < span < DURATION + 1.0, span
    served = [m.count() for m in (mocks[0], mocks[2])]
    assert sum(served) > RATE * DURATION * 0.6, served
    lat = sorted(r[2] for r in results)
    print("\n200 rps, one of 3 backends killed at %.1fs: %d requests, 0 errors, "
          "p50 %.1f ms, p99 %.1f ms, max %.1f ms"
          % (KILL_AT, len(results), lat[len(lat) // 2] * 1000,
             lat[int(len(lat) * 0.99)] * 1000, lat[-1] * 1000))
    assert "breaker closed -> open" in gw.stderr_text()


def test_all_dead_under_load_fast_503(mockllm, gateway):
    mocks = [mockllm("--no-record") for _ in range(3)]
    cfg = {"backends": [{"name": "b%d" % i, "url": m.base, "models": [MODEL],
                         "connect_timeout_ms": 500, "timeout_ms": 5000}
                        for i, m in enumerate(mocks)],
           "access_log": "off"}
    gw = gateway(cfg)
    for m in mocks:
        m.stop()
    results, _ = run_load(gw.port, RATE, 1.5)
    # every answer is a fast 503: the first ones because no backend could
    # be connected to, the rest because the breakers are open
    assert all(r[1] == 503 for r in results), [r for r in results if r[1] != 503][:5]
    lat = sorted(r[2] for r in results)
    p50, p99 = lat[len(lat) // 2], lat[int(len(lat) * 0.99)]
    print("\nall 3 backends dead, %d req/s: %d requests, all 503; p50 %.2f ms, p99 %.2f ms, "
          "max %.2f ms" % (RATE, len(lat), p50 * 1000, p99 * 1000, lat[-1] * 1000))
    assert p99 < 0.05, lat[-5:]
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=5)
    conn.request("POST", CHAT, body=json.dumps(chat()),
                 headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    body = json.loads(r.read())
    conn.close()
    assert r.status == 503 and int(r.getheader("retry-after")) >= 1
    assert body["error"]["code"] == "no_backend_available"
