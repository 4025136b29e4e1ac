"""Routing that survives failing backends (issue 3): pools of several
mockllm instances behind one model, the strategies, retries and fallbacks
before the first byte, circuit breakers, max_inflight overflow, the retry
budget and GET /admin/backends."""

import json
import threading
import time

import pytest

from helpers import chat, free_port, http as request, open_stream, sse_events, wait_until

CHAT = "/v1/chat/completions"
MODEL = "qwen2.5-7b"
ADMIN_KEY = "admin-test-key-0123456789"


def start_mocks(mockllm, n, *args):
    mocks = []
    for _ in range(n):
        m = mockllm(*args)
        m.reset()
        mocks.append(m)
    return mocks


def pool_config(mocks, names=None, models=None, **backend_extra):
    """One backend per mock, all serving MODEL (and gpt-4o-mini)."""
    backends = []
    for i, m in enumerate(mocks):
        b = {"name": (names or {}).get(i, "b%d" % i), "url": m.base,
             "models": [MODEL, "gpt-4o-mini"], "timeout_ms": 3000,
             "connect_timeout_ms": 500}
        b.update(backend_extra)
        backends.append(b)
    cfg = {"backends": backends, "access_log": "stderr",
           "admin_key": "env:PG_TEST_ADMIN"}
    if models:
        cfg["models"] = models
    return cfg


def start_gw(gateway, cfg):
    return gateway(cfg, env={"PG_TEST_ADMIN": ADMIN_KEY})


def admin(gw):
    r = request("GET", gw.url + "/admin/backends",
                headers={"Authorization": "Bearer " + ADMIN_KEY})
    assert r.status == 200, r
    return {b["name"]: b for b in r.json()["backends"]}


def post(gw, **extra):
    return request("POST", gw.url + CHAT, body=chat(max_tokens=2, **extra))


def counts(mocks):
    return [m.count() for m in mocks]


# ------------------------------------------------------------- strategies

def test_weights_spread_over_1000_requests(mockllm, gateway):
    """Smooth weighted round robin: 5:3:2 over 1,000 requests lands within
    1% of 500/300/200, and interleaves (no run of 5 on one backend)."""
    mocks = start_mocks(mockllm, 3, "--no-record")
    cfg = pool_config(mocks)
    for b, w in zip(cfg["backends"], (5, 3, 2)):
        b["weight"] = w
    gw = start_gw(gateway, cfg)
    order = []
    for _ in range(1000):
        r = post(gw)
        assert r.status == 200, r
        order.append(r.headers["x-promptgate-backend"])
    got = counts(mocks)
    for n, want in zip(got, (500, 300, 200)):
        assert abs(n - want) <= 10, got
    assert [order.count("b%d" % i) for i in range(3)] == got
    longest, run = 1, 1
    for a, b in zip(order, order[1:]):
        run = run + 1 if a == b else 1
        longest = max(longest, run)
    assert longest <= 2, order[:20]


def test_least_inflight_avoids_the_busy_backend(mockllm, gateway):
    """With one backend slow (requests pile up there) least_inflight sends
    the next requests to the idle one."""
    slow, fast = start_mocks(mockllm, 2)
    slow.set_fault("delay-ms=800")
    gw = start_gw(gateway, pool_config([slow, fast],
                                       models={MODEL: {"strategy": "least_inflight"}}))
    results = []
    threads = [threading.Thread(target=lambda: results.append(post(gw))) for _ in range(6)]
    for t in threads:
        t.start()
        time.sleep(0.03)
    for t in threads:
        t.join()
    assert all(r.status == 200 for r in results), results
    assert slow.count() == 1, (slow.count(), fast.count())
    assert fast.count() == 5


def test_latency_strategy_prefers_the_fast_backend(mockllm, gateway):
    """Power of two choices over the EWMA of latency: once both have samples,
    the slow backend gets few requests."""
    slow, fast = start_mocks(mockllm, 2)
    slow.set_fault("delay-ms=60")
    gw = start_gw(gateway, pool_config([slow, fast],
                                       models={MODEL: {"strategy": "latency"}}))
    for _ in range(60):
        assert post(gw).status == 200
    st = admin(gw)
    assert st["b0"]["ewma_latency_ms"] > st["b1"]["ewma_latency_ms"], st
    # two candidates, the lower score wins: after warm-up the fast one
    # takes (nearly) everything
    assert fast.count() >= 50, (slow.count(), fast.count())


# ---------------------------------------------------- failures and retries

def test_dead_backend_is_routed_around(mockllm, gateway):
    """One of three backends killed: zero client errors, the answers name a
    live backend, and its breaker opens."""
    mocks = start_mocks(mockllm, 3)
    gw = start_gw(gateway, pool_config(mocks))
    for _ in range(6):
        assert post(gw).status == 200
    mocks[1].stop()
    seen = set()
    for _ in range(60):
        r = post(gw)
        assert r.status == 200, r
        seen.add(r.headers["x-promptgate-backend"])
    assert seen == {"b0", "b2"}
    st = admin(gw)
    assert st["b1"]["state"] == "open", st["b1"]
    assert st["b0"]["state"] == st["b2"]["state"] == "closed"


def test_retry_header_counts_attempts(mockllm, gateway):
    """A 503 from the first backend is retried on the next: the client sees
    the second backend's 200 and x-promptgate-attempts: 2."""
    a, b = start_mocks(mockllm, 2)
    a.set_fault("status=503", count=1)
    gw = start_gw(gateway, pool_config([a, b]))
    r = post(gw)
    assert r.status == 200, r
    assert r.headers["x-promptgate-attempts"] == "2"
    assert r.headers["x-promptgate-backend"] == "b1"
    assert (a.count(), b.count()) == (1, 1)
    r = post(gw)
    assert r.headers["x-promptgate-attempts"] == "1"
    log = wait_until(lambda: [(e["attempts"], e["backend"]) for e in gw.access_log()
                              if e["path"] == CHAT][1:] and
                     [(e["attempts"], e["backend"]) for e in gw.access_log()
                      if e["path"] == CHAT])
    assert [a for a, _ in log] == [2, 1] and log[0][1] == "b1", log


def test_503s_trip_the_breaker_and_it_is_probed_back(mockllm, gateway):
    a, b = start_mocks(mockllm, 2)
    a.set_fault("status=503")
    gw = start_gw(gateway, pool_config([a, b], breaker={"failures": 3, "cooldown_ms": 600}))
    for _ in range(20):
        r = post(gw)
        assert r.status == 200, r
    # 3 failures open it; no request reaches it while open
    assert a.count() == 3, a.count()
    st = admin(gw)["b0"]
    assert st["state"] == "open" and st["opens"] == 1, st
    a.set_fault(None)
    time.sleep(0.7)
    # the next pick that lands on it is a probe; it succeeds and closes it
    for _ in range(4):
        assert post(gw).status == 200
    assert a.count() >= 4
    assert admin(gw)["b0"]["state"] == "closed"


def test_failed_probe_doubles_the_cooldown(mockllm, gateway):
    a, b = start_mocks(mockllm, 2)
    a.set_fault("status=500")
    gw = start_gw(gateway, pool_config([a, b], breaker={"failures": 2, "cooldown_ms": 400}))
    for _ in range(6):
        assert post(gw).status == 200
    assert admin(gw)["b0"]["state"] == "open"
    time.sleep(0.45)
    for _ in range(4):
        assert post(gw).status == 200  # the probe fails, retried on b1
    st = admin(gw)["b0"]
    assert st["state"] == "open" and st["opens"] == 2, st
    assert 500 < st["open_for_ms"] <= 800, st


def test_429_retry_after_is_honoured(mockllm, gateway):
    a, b = start_mocks(mockllm, 2)
    a.set_fault("status=429,retry-after=2", count=1)
    gw = start_gw(gateway, pool_config([a, b]))
    t0 = time.monotonic()
    r = post(gw)
    assert r.status == 200 and r.headers["x-promptgate-backend"] == "b1", r
    st = admin(gw)["b0"]
    assert st["state"] == "open" and 1500 < st["open_for_ms"] <= 2000, st
    while time.monotonic() - t0 < 1.7:
        assert post(gw).headers["x-promptgate-backend"] == "b1"
    assert a.count() == 1
    time.sleep(max(0, 2.1 - (time.monotonic() - t0)))
    names = {post(gw).headers["x-promptgate-backend"] for _ in range(4)}
    assert "b0" in names
    assert admin(gw)["b0"]["state"] == "closed"


def test_all_backends_dead_fast_503_with_retry_after(mockllm, gateway):
    ports = [free_port() for _ in range(3)]
    cfg = {"backends": [{"name": "d%d" % i, "url": "http://127.0.0.1:%d/v1" % p,
                         "models": [MODEL], "connect_timeout_ms": 500,
                         "timeout_ms": 5000} for i, p in enumerate(ports)],
           "access_log": "stderr"}
    gw = gateway(cfg)
    # until their breakers open the gateway tries them, and says so: the
    # same fast 503 + retry-after either way
    for _ in range(5):
        t = time.monotonic()
        r = post(gw)
        assert r.status == 503 and int(r.headers["retry-after"]) >= 1, r
        assert r.json()["error"]["code"] in ("backend_unreachable", "no_backend_available")
        assert time.monotonic() - t < 0.5
    t = time.monotonic()
    r = post(gw)
    took = time.monotonic() - t
    assert r.status == 503, r
    assert r.json()["error"]["code"] == "no_backend_available"
    assert int(r.headers["retry-after"]) >= 1
    assert took < 0.05, took
    r = request("GET", gw.url + "/readyz")
    assert r.status == 503 and r.headers["retry-after"] == "1", r


def test_mid_stream_death_is_an_sse_error_not_a_retry(mockllm, gateway):
    a, b = start_mocks(mockllm, 2)
    a.set_fault("close-after-chunks=3", count=1)
    gw = start_gw(gateway, pool_config([a, b]))
    r = request("POST", gw.url + CHAT, body=chat(stream=True))
    assert r.status == 200
    ev = sse_events(r.body)
    assert ev[-1].event == "error", ev
    assert "[DONE]" not in ev
    assert (a.count(), b.count()) == (1, 0)
    assert r.headers["x-promptgate-attempts"] == "1"


def test_stream_request_retried_before_its_head(mockllm, gateway):
    """A 503 before the stream's head has sent nothing to the client: the
    stream is retried and arrives whole from the other backend."""
    a, b = start_mocks(mockllm, 2)
    a.set_fault("status=503", count=1)
    gw = start_gw(gateway, pool_config([a, b]))
    r = request("POST", gw.url + CHAT, body=chat(stream=True))
    assert r.status == 200, r
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["x-promptgate-attempts"] == "2"
    ev = sse_events(r.body)
    assert ev[-1] == "[DONE]" and not any(e.event == "error" for e in ev), ev


def test_first_byte_timeout_is_retried_elsewhere(mockllm, gateway):
    a, b = start_mocks(mockllm, 2)
    a.set_fault("hang")
    gw = start_gw(gateway, pool_config([a, b], first_byte_timeout_ms=200))
    t = time.monotonic()
    r = post(gw)
    took = time.monotonic() - t
    assert r.status == 200 and r.headers["x-promptgate-backend"] == "b1", r
    assert r.headers["x-promptgate-attempts"] == "2"
    assert 0.19 < took < 1.0, took


def test_fallback_model_after_the_pool(mockllm, gateway):
    """The whole pool of qwen fails: the request goes to the fallback model's
    backend, with the body's model rewritten."""
    local, remote = start_mocks(mockllm, 2)
    local.set_fault("status=503")
    cfg = {"backends": [
        {"name": "local", "url": local.base, "models": [MODEL]},
        {"name": "remote", "url": remote.base, "models": ["gpt-4o-mini"]}],
        "models": {MODEL: {"fallbacks": ["gpt-4o-mini"]}}, "access_log": "stderr"}
    gw = gateway(cfg)
    r = post(gw)
    assert r.status == 200, r
    assert r.headers["x-promptgate-backend"] == "remote"
    sent = remote.requests()[-1]
    body = sent["body"] if isinstance(sent["body"], dict) else json.loads(sent["body"])
    assert body["model"] == "gpt-4o-mini"
    assert body["messages"] == chat()["messages"]


def test_max_inflight_overflow_moves_then_503(mockllm, gateway):
    a, b = start_mocks(mockllm, 2)
    for m in (a, b):
        m.set_fault("delay-ms=500")
    gw = start_gw(gateway, pool_config([a, b], max_inflight=1))
    results = []

    def go():
        t = time.monotonic()
        r = post(gw)
        results.append((r, time.monotonic() - t))

    threads = [threading.Thread(target=go) for _ in range(3)]
    for t in threads:
        t.start()
        time.sleep(0.05)
    for t in threads:
        t.join()
    ok = [r for r, _ in results if r.status == 200]
    busy = [(r, d) for r, d in results if r.status == 503]
    assert len(ok) == 2 and len(busy) == 1, results
    assert {r.headers["x-promptgate-backend"] for r in ok} == {"b0", "b1"}
    r, took = busy[0]
    assert took < 0.2 and r.headers["retry-after"] == "1", (r, took)


def test_retry_budget_holds_at_50_percent_failures(mockllm, gateway):
    """Half the backends fail every request (breaker off so they keep
    failing): retries in flight stay within 20% of the calls (min 3), so
    upstream load stays well under 2x and some failures are answered as
    they came instead of being retried."""
    bad, good = start_mocks(mockllm, 2)
    bad.set_fault("status=503")
    good.set_fault("delay-ms=400")
    cfg = pool_config([bad, good], breaker={"failures": 0, "error_rate_pct": 0})
    cfg["metrics"] = {}
    gw = start_gw(gateway, cfg)
    n = 40
    results = []
    lock = threading.Lock()
    gate = threading.Event()

    def go():
        gate.wait()
        r = post(gw)
        with lock:
            results.append(r)

    threads = [threading.Thread(target=go) for _ in range(n)]
    for t in threads:
        t.start()
    gate.set()
    for t in threads:
        t.join()
    retried = [r for r in results if r.headers.get("x-promptgate-attempts") == "2"]
    failed = [r for r in results if r.status == 503]
    total = bad.count() + good.count()
    # ~20 land on the bad backend first; at most max(3, 40/5) = 8 may be on
    # a retry at once, and the good backend holds each for 400 ms
    assert len(retried) <= 9, (len(retried), len(failed))
    assert len(failed) >= 8, (len(retried), len(failed))
    assert total <= n + 9, total
    assert len(retried) + len(failed) == bad.count()
    # said in the error log, at most once a second
    lines = [ln for ln in gw.stderr_text().splitlines() if "retry budget spent" in ln]
    assert 1 <= len(lines) <= 3, lines
    # and counted, one per failure answered as it came
    m = request("GET", gw.url + "/metrics", headers={"Authorization": "Bearer " + ADMIN_KEY})
    refused = [ln for ln in m.text.splitlines()
               if ln.startswith("promptgate_retries_refused_total ")]
    assert refused == ["promptgate_retries_refused_total %d" % len(failed)], refused


# ------------------------------------------------------------------ admin

def test_admin_backends_needs_the_key(mockllm, gateway):
    mocks = start_mocks(mockllm, 2)
    gw = start_gw(gateway, pool_config(mocks, models={MODEL: {"strategy": "latency",
                                                              "fallbacks": ["gpt-4o-mini"]}}))
    assert request("GET", gw.url + "/admin/backends").status == 401
    r = request("GET", gw.url + "/admin/backends", headers={"Authorization": "Bearer nope"})
    assert r.status == 403
    r = request("GET", gw.url + "/admin/backends",
                headers={"Authorization": "Bearer " + ADMIN_KEY + "x"})
    assert r.status == 403
    post(gw)
    r = request("GET", gw.url + "/admin/backends", headers={"x-admin-key": ADMIN_KEY})
    assert r.status == 200
    doc = r.json()
    assert [b["name"] for b in doc["backends"]] == ["b0", "b1"]
    b0 = doc["backends"][0]
    for k in ("state", "inflight", "ewma_latency_ms", "error_rate", "window_attempts",
              "opens", "max_inflight", "weight"):
        assert k in b0, b0
    pools = {p["model"]: p for p in doc["models"]}
    assert pools[MODEL]["strategy"] == "latency"
    assert pools[MODEL]["fallbacks"] == ["gpt-4o-mini"]
    assert pools[MODEL]["backends"] == ["b0", "b1"]


def test_admin_off_without_admin_key(mock_gateway):
    _, gw = mock_gateway
    r = request("GET", gw.url + "/admin/backends", headers={"Authorization": "Bearer x"})
    assert r.status == 404 and r.json()["error"]["code"] == "admin_disabled"


def test_breaker_state_survives_sighup(mockllm, gateway):
    a, b = start_mocks(mockllm, 2)
    a.set_fault("status=503")
    cfg = pool_config([a, b], breaker={"failures": 2, "cooldown_ms": 60000})
    gw = start_gw(gateway, cfg)
    for _ in range(5):
        assert post(gw).status == 200
    assert admin(gw)["b0"]["state"] == "open"
    cfg2 = dict(cfg)
    cfg2["backends"] = [dict(x, weight=2) for x in cfg["backends"]]
    gw.reload(cfg2)
    wait_until(lambda: "configuration reloaded" in gw.stderr_text())
    st = admin(gw)
    assert st["b0"]["state"] == "open" and st["b0"]["weight"] == 2, st["b0"]
    before = a.count()
    for _ in range(5):
        assert post(gw).status == 200
    assert a.count() == before


@pytest.mark.parametrize("cfg, problem", [
    ({"models": {"nope": {}}}, "models.nope: no backend serves this model"),
    ({"models": {MODEL: {"strategy": "random"}}}, "models.qwen2.5-7b.strategy"),
    ({"models": {MODEL: {"fallbacks": [MODEL]}}}, "models.qwen2.5-7b.fallbacks[0]"),
    ({"models": {MODEL: {"fallbacks": ["x"]}}}, "models.qwen2.5-7b.fallbacks[0]"),
    ({"models": {MODEL: {"cache": 1, "strategy": "latency"}}}, "models.qwen2.5-7b.cache: must be true"),
    ({"breaker": {"failures": -1}}, "backends[0].breaker.failures"),
    ({"breaker": {"cooldown_ms": 5000, "max_cooldown_ms": 100}}, "backends[0].breaker.max_cooldown_ms"),
    ({"health_check": {"path": "models"}}, "backends[0].health_check.path"),
    ({"priority": 101}, "backends[0].priority"),
])
def test_routing_config_errors_name_the_path(gateway_check, cfg, problem):
    base = {"backends": [{"name": "a", "url": "http://127.0.0.1:9/v1", "models": [MODEL]}]}
    for k, v in cfg.items():
        if k == "models":
            base["models"] = v
        else:
            base["backends"][0][k] = v
    rc, out, err = gateway_check(base)
    assert rc == 1, (out, err)
    assert problem in err, err
