"""Prometheus metrics (issue 9, points 1 and 7): exact values after a
scripted sequence of requests (answers, an upstream 500, an unknown model,
a bad key, a rate-limited key, a cache miss and hit, a cancelled stream, a
stream with usage), in-flight back to 0 after cancelled streams, nothing of
a request (ids, prompt text, keys) in the output, bounded labels (a
thousand unknown model names make one series), the text format itself,
the bearer token, the admin listener, counters across SIGHUP, and the
Grafana dashboard using only exported names."""

import http.client
import json
import re
from pathlib import Path

import pytest

from helpers import chat, http as request, open_stream, sse_json, wait_until

CHAT = "/v1/chat/completions"
REPO = Path(__file__).resolve().parents[2]
ALPHA = "sk-alpha-0123456789abcdef"
LIMITED = "sk-limited-0123456789abcdef"
METRICS_TOKEN = "prom-token-0123456789"
ENV = {"PG_T_ALPHA": ALPHA, "PG_T_LIMITED": LIMITED, "PG_T_METRICS": METRICS_TOKEN}

LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')


def parse(text):
    """The text format 0.0.4 -> ({(name, frozenset(labels)): float},
    {family: type}). Checks the shape of every line on the way."""
    samples, types, helps = {}, {}, set()
    assert text.endswith("\n")
    for line in text.splitlines():
        assert line, "empty line in the output"
        if line.startswith("# HELP "):
            name = line.split(" ")[2]
            assert name not in helps, "HELP twice for %s" % name
            helps.add(name)
            continue
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(" ")
            assert name in helps, "TYPE before HELP for %s" % name
            assert typ in ("counter", "gauge", "histogram"), line
            assert name not in types, "TYPE twice for %s" % name
            types[name] = typ
            continue
        m = LINE.match(line)
        assert m, "not a sample line: %r" % line
        name, labels = m.group(1), {}
        if m.group(3):
            pos = 0
            body = m.group(3)
            while pos < len(body):
                lm = LABEL.match(body, pos)
                assert lm, "bad labels in %r" % line
                labels[lm.group(1)] = (lm.group(2).replace("\\n", "\n")
                                       .replace('\\"', '"').replace("\\\\", "\\"))
                pos = lm.end()
        family = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in types or family in types, "sample before its TYPE: %r" % line
        key = (name, frozenset(labels.items()))
        assert key not in samples, "duplicate series %r" % line
        samples[key] = float(m.group(4))
    return samples, types


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())))


def series(samples, name):
    return {k[1]: v for k, v in samples.items() if k[0] == name}


def scrape(gw, token=METRICS_TOKEN, url=None):
    r = request("GET", (url or gw.url) + "/metrics",
                headers={"Authorization": "Bearer " + token} if token else {})
    assert r.status == 200, r
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4"), r.headers
    return r.text


def base_config(mock, **metrics):
    return {
        "backends": [{"name": "mock", "url": mock.base,
                      "models": ["qwen2.5-7b", "gpt-4o-mini"], "timeout_ms": 5000}],
        "keys": [{"name": "alpha", "key": "env:PG_T_ALPHA", "models": ["*"]},
                 {"name": "limited", "key": "env:PG_T_LIMITED", "models": ["*"],
                  "rpm": 1}],
        "cache": {"backend": "memory"},
        "metrics": dict({"bearer_token": "env:PG_T_METRICS"}, **metrics),
        "access_log": "stderr",
    }


def auth(key):
    return {"Authorization": "Bearer " + key}


def test_scripted_sequence(mockllm, gateway):
    mock = mockllm()
    gw = gateway(base_config(mock), env=ENV)
    ids, tokens = [], {"prompt": 0, "completion": 0}

    def use(r):
        ids.append(r.headers["x-request-id"])
        return r

    # 3 answers, each a cache miss (different text), one repeated: a hit
    bodies = [chat(max_tokens=4, messages=[{"role": "user", "content": "secret prompt %d" % i}])
              for i in range(3)]
    for b in bodies:
        r = use(request("POST", gw.url + CHAT, body=b, headers=auth(ALPHA)))
        assert r.status == 200 and r.headers["x-promptgate-cache"] == "miss", r
        tokens["prompt"] += r.json()["usage"]["prompt_tokens"]
        tokens["completion"] += r.json()["usage"]["completion_tokens"]
    r = use(request("POST", gw.url + CHAT, body=bodies[0], headers=auth(ALPHA)))
    assert r.status == 200 and r.headers["x-promptgate-cache"] == "hit", r
    # an upstream 500 (not cached; one backend: no retry)
    r = use(request("POST", gw.url + CHAT, body=chat(max_tokens=3), headers=dict(
        auth(ALPHA), **{"x-mock-fault": "status=500"})))
    assert r.status == 500, r
    # an unknown model, a bad key
    r = use(request("POST", gw.url + CHAT, body=chat(model="no-such-model"), headers=auth(ALPHA)))
    assert r.status == 404, r
    r = use(request("POST", gw.url + CHAT, body=chat(), headers=auth("sk-wrong-key")))
    assert r.status == 401, r
    # rpm 1: the second request of "limited" is refused
    r = use(request("POST", gw.url + CHAT, body=chat(model="gpt-4o-mini", max_tokens=2,
                                                     messages=[{"role": "user", "content": "lim"}]),
                    headers=auth(LIMITED)))
    assert r.status == 200, r
    tokens_limited = r.json()["usage"]
    r = use(request("POST", gw.url + CHAT, body=chat(model="gpt-4o-mini", max_tokens=2),
                    headers=auth(LIMITED)))
    assert r.status == 429 and r.json()["error"]["code"] == "rate_limit_exceeded", r
    # a stream the client drops half-way
    conn, resp = open_stream("POST", gw.url + CHAT,
                             body=chat(stream=True, temperature=0.7,
                                       messages=[{"role": "user", "content": "abort me"}]),
                             headers=dict(auth(ALPHA), **{"x-mock-fault": "tokens=40,token-delay-ms=50"}))
    assert resp.status == 200
    ids.append(resp.getheader("x-request-id"))
    assert resp.read1(64)
    conn.close()
    wait_until(lambda: any(l.get("status") == 499 for l in gw.access_log()), timeout=5)
    # a stream with usage
    r = use(request("POST", gw.url + CHAT, body=chat(
        stream=True, max_tokens=5, temperature=0.5, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "stream me"}]), headers=auth(ALPHA)))
    assert r.status == 200, r
    usage = [e["usage"] for e in sse_json(r.body) if e.get("usage")][-1]
    tokens["prompt"] += usage["prompt_tokens"]
    tokens["completion"] += usage["completion_tokens"]

    text = scrape(gw)
    s, types = parse(text)
    # the scrape's own line is written once it is answered
    wait_until(lambda: gw.access_log()[-1]["path"] == "/metrics", timeout=5)
    log = gw.access_log()
    by_status = {}
    for l in log:
        by_status.setdefault(l["status"], []).append(l)

    req = "promptgate_requests_total"
    ok = dict(route=CHAT, model="qwen2.5-7b", backend="mock")
    # 3 misses + the usage stream; the hit had no backend
    assert value(s, req, status_class="2xx", **ok) == 4, series(s, req)
    assert value(s, req, route=CHAT, model="qwen2.5-7b", backend="", status_class="2xx") == 1
    assert value(s, req, status_class="5xx", **ok) == 1
    # the cancelled stream (499), the 401 (no backend yet)
    assert value(s, req, status_class="4xx", **ok) == 1
    assert value(s, req, route=CHAT, model="qwen2.5-7b", backend="", status_class="4xx") == 1
    assert value(s, req, route=CHAT, model="other", backend="", status_class="4xx") == 1
    assert value(s, req, route=CHAT, model="gpt-4o-mini", backend="mock", status_class="2xx") == 1
    assert value(s, req, route=CHAT, model="gpt-4o-mini", backend="", status_class="4xx") == 1
    # the fixture's readiness probes
    healthz = value(s, req, route="/healthz", model="", backend="", status_class="2xx")
    assert healthz == len([l for l in log if l["path"] == "/healthz"]) >= 1
    # every logged request but the scrape itself (logged once answered)
    assert log[-1]["path"] == "/metrics"
    assert sum(v for k, v in series(s, req).items()) == len(log) - 1, (series(s, req), len(log))
    assert types[req] == "counter"

    # tokens by key: the hit cost nothing; the cancelled stream had no usage
    assert value(s, "promptgate_tokens_total", kind="prompt", key="alpha") == tokens["prompt"]
    assert value(s, "promptgate_tokens_total", kind="completion", key="alpha") == tokens["completion"]
    assert value(s, "promptgate_tokens_total", kind="completion", key="limited") == \
        tokens_limited["completion_tokens"]
    assert value(s, "promptgate_ratelimit_rejections_total", key="limited", reason="rate") == 1
    assert value(s, "promptgate_ratelimit_rejections_total", key="alpha", reason="rate") is None

    # cache: 3 misses, the 500's (looked up, not stored), limited's; 1 hit;
    # the 404, 401, 429 and the sampling streams bypass it
    assert value(s, "promptgate_cache_requests_total", result="hit") == 1
    assert value(s, "promptgate_cache_requests_total", result="miss") == \
        len([l for l in log if l.get("cache") == "miss"]) == 5
    assert value(s, "promptgate_cache_requests_total", result="bypass") == \
        len([l for l in log if l.get("cache") == "bypass"])

    # in flight: only this scrape
    assert value(s, "promptgate_inflight_requests") == 1
    assert types["promptgate_inflight_requests"] == "gauge"
    assert value(s, "promptgate_upstream_calls_inflight") == 0
    assert value(s, "promptgate_upstream_inflight", backend="mock") == 0

    # histograms: the duration of every chat request, TTFT of the streams
    dur = "promptgate_request_duration_seconds"
    assert types[dur] == "histogram"
    n_chat = len([l for l in log if l["path"] == CHAT])
    assert value(s, dur + "_count", route=CHAT) == n_chat
    assert value(s, dur + "_bucket", route=CHAT, le="+Inf") == n_chat
    assert value(s, dur + "_sum", route=CHAT) > 0
    buckets = sorted(((float(dict(k)["le"]), v) for k, v in series(s, dur + "_bucket").items()
                      if dict(k)["route"] == CHAT))
    assert [v for _, v in buckets] == sorted(v for _, v in buckets), "buckets not cumulative"
    ttft = "promptgate_time_to_first_token_seconds"
    assert value(s, ttft + "_count", model="qwen2.5-7b") == 2  # both streams

    # the backend: 3 misses, limited's and the usage stream answered, the
    # 500 failed; the cancelled stream is no outcome (breaker neutral)
    att = "promptgate_upstream_attempts_total"
    assert value(s, att, backend="mock", result="ok") == 5
    assert value(s, att, backend="mock", result="error") == 1
    assert value(s, "promptgate_backend_up", backend="mock") == 1
    assert value(s, "promptgate_breaker_state", backend="mock", state="closed") == 1
    assert value(s, "promptgate_build_info", version=value_label(s, "promptgate_build_info")) == 1
    assert value(s, "process_open_fds") > 0
    assert value(s, "process_resident_memory_bytes") > 1 << 20

    # nothing of a request in the output: ids, prompt text, keys
    for rid in ids:
        assert rid and rid not in text, rid
    for secret in (ALPHA, LIMITED, METRICS_TOKEN, "sk-wrong-key", "secret prompt",
                   "no-such-model", "stream me"):
        assert secret not in text, secret


def value_label(s, name):
    for k in s:
        if k[0] == name:
            return dict(k[1])["version"]
    raise AssertionError("no %s" % name)


def test_inflight_after_cancelled_streams(mockllm, gateway):
    mock = mockllm()
    gw = gateway(base_config(mock), env=ENV)
    conns = []
    for i in range(5):
        conn, resp = open_stream("POST", gw.url + CHAT,
                                 body=chat(stream=True, temperature=1,
                                           messages=[{"role": "user", "content": "c%d" % i}]),
                                 headers=dict(auth(ALPHA), **{"x-mock-fault": "tokens=100,token-delay-ms=50"}))
        assert resp.status == 200
        resp.read1(32)
        conns.append(conn)
    s, _ = parse(scrape(gw))
    assert value(s, "promptgate_inflight_requests") == 6  # 5 streams + the scrape
    assert value(s, "promptgate_upstream_calls_inflight") == 5
    assert value(s, "promptgate_upstream_inflight", backend="mock") == 5
    for c in conns:
        c.close()
    wait_until(lambda: len([l for l in gw.access_log() if l["status"] == 499]) == 5, timeout=5)
    s, _ = parse(scrape(gw))
    assert value(s, "promptgate_inflight_requests") == 1
    assert value(s, "promptgate_upstream_calls_inflight") == 0
    assert value(s, "promptgate_upstream_inflight", backend="mock") == 0
    assert value(s, "promptgate_requests_total", route=CHAT, model="qwen2.5-7b",
                 backend="mock", status_class="4xx") == 5
    # a cancelled attempt is no outcome for the breaker
    assert value(s, "promptgate_upstream_attempts_total", backend="mock", result="error") == 0


def test_unknown_models_one_series(mockllm, gateway):
    mock = mockllm()
    gw = gateway(base_config(mock), env=ENV)
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    try:
        for i in range(1000):
            body = json.dumps(chat(model="model-%04d" % i)).encode()
            conn.request("POST", CHAT, body=body, headers=dict(
                auth(ALPHA), **{"Content-Type": "application/json"}))
            r = conn.getresponse()
            r.read()
            assert r.status == 404
    finally:
        conn.close()
    text = scrape(gw)
    s, _ = parse(text)
    assert value(s, "promptgate_requests_total", route=CHAT, model="other", backend="",
                 status_class="4xx") == 1000
    assert "model-0" not in text
    assert len(series(s, "promptgate_requests_total")) <= 3  # + /healthz, /metrics
    assert len(text) < 16384, len(text)


def test_token_and_disabled(mockllm, gateway):
    mock = mockllm()
    gw = gateway(base_config(mock), env=ENV)
    r = request("GET", gw.url + "/metrics")
    assert r.status == 401 and r.headers.get("www-authenticate") == "Bearer", r
    r = request("GET", gw.url + "/metrics", headers=auth("nope"))
    assert r.status == 401
    assert r.json()["error"]["code"] == "invalid_metrics_token"
    r = request("POST", gw.url + "/metrics", headers=auth(METRICS_TOKEN))
    assert r.status == 405
    s, _ = parse(scrape(gw))
    # the refused scrapes are counted like any request
    assert value(s, "promptgate_requests_total", route="/metrics", model="", backend="",
                 status_class="4xx") == 3

    # without "metrics" the path is an unknown route; the admin key guards
    # the metrics when no bearer_token is set
    cfg = base_config(mock)
    del cfg["metrics"]
    gw2 = gateway(cfg, env=ENV)
    assert request("GET", gw2.url + "/metrics").status == 404
    cfg = base_config(mock)
    cfg["metrics"] = {"path": "/prom"}
    cfg["admin_key"] = "env:PG_T_ADMIN"
    gw3 = gateway(cfg, env=dict(ENV, PG_T_ADMIN="admin-key-0123456789"))
    assert request("GET", gw3.url + "/prom").status == 401
    r = request("GET", gw3.url + "/prom", headers=auth("admin-key-0123456789"))
    assert r.status == 200 and "promptgate_build_info" in r.text
    assert request("GET", gw3.url + "/metrics").status == 404
    cfg["metrics"] = {"path": "/prom", "enabled": False}
    gw3.reload(cfg)
    wait_until(lambda: request("GET", gw3.url + "/prom").status == 404, timeout=5)


def test_admin_listener(mockllm, gateway):
    from helpers import free_port
    mock = mockllm()
    port = free_port()
    gw = gateway(base_config(mock, listen="127.0.0.1:%d" % port), env=ENV)
    admin = "http://127.0.0.1:%d" % port
    assert request("POST", gw.url + CHAT, body=chat(max_tokens=2), headers=auth(ALPHA)).status == 200
    # the main listener no longer answers the path
    assert request("GET", gw.url + "/metrics", headers=auth(METRICS_TOKEN)).status == 404
    assert request("GET", admin + "/metrics").status == 401
    assert request("GET", admin + "/v1/models").status == 404
    s, _ = parse(scrape(gw, url=admin))
    assert value(s, "promptgate_requests_total", route=CHAT, model="qwen2.5-7b",
                 backend="mock", status_class="2xx") == 1


def test_counters_survive_reload(mockllm, gateway):
    mock = mockllm()
    cfg = base_config(mock)
    cfg["backends"].append({"name": "spare", "url": mock.base, "models": ["gpt-4o-mini"]})
    gw = gateway(cfg, env=ENV)
    for _ in range(3):
        assert request("POST", gw.url + CHAT, body=chat(max_tokens=2, temperature=1),
                       headers=auth(ALPHA)).status == 200
    s, _ = parse(scrape(gw))
    assert value(s, "promptgate_backend_up", backend="spare") == 1
    assert value(s, "promptgate_config_reloads_total", result="ok") == 0
    assert value(s, "promptgate_config_last_reload_successful") == 1
    # a refused reload
    gw.reload(dict(cfg, workers="many"))
    wait_until(lambda: value(parse(scrape(gw))[0], "promptgate_config_reloads_total",
                             result="error") == 1, timeout=5)
    s, _ = parse(scrape(gw))
    assert value(s, "promptgate_config_last_reload_successful") == 0
    assert value(s, "promptgate_backend_up", backend="spare") == 1
    cfg["backends"].pop()
    gw.reload(cfg)
    wait_until(lambda: 'backend="spare"' not in scrape(gw), timeout=5)
    assert request("POST", gw.url + CHAT, body=chat(max_tokens=2, temperature=1),
                   headers=auth(ALPHA)).status == 200
    s, _ = parse(scrape(gw))
    assert value(s, "promptgate_requests_total", route=CHAT, model="qwen2.5-7b",
                 backend="mock", status_class="2xx") == 4
    assert value(s, "promptgate_upstream_attempts_total", backend="mock", result="ok") == 4
    assert value(s, "promptgate_config_reloads_total", result="ok") == 1
    assert value(s, "promptgate_config_reloads_total", result="error") == 1
    assert value(s, "promptgate_config_last_reload_successful") == 1


def test_breaker_opens(mockllm, gateway):
    mock = mockllm()
    gw = gateway(base_config(mock), env=ENV)
    for _ in range(5):
        r = request("POST", gw.url + CHAT, body=chat(max_tokens=2),
                    headers=dict(auth(ALPHA), **{"x-mock-fault": "status=500"}))
        assert r.status == 500
    s, _ = parse(scrape(gw))
    assert value(s, "promptgate_breaker_state", backend="mock", state="open") == 1
    assert value(s, "promptgate_breaker_state", backend="mock", state="closed") == 0
    assert value(s, "promptgate_breaker_transitions_total", backend="mock", to="open") == 1
    assert value(s, "promptgate_backend_up", backend="mock") == 0
    assert value(s, "promptgate_upstream_attempts_total", backend="mock", result="error") == 5


def test_dashboard_uses_exported_names(mockllm, gateway):
    """Every metric name in contrib/grafana/promptgate.json's expressions is
    one the gateway exports (histograms by their _bucket/_sum/_count)."""
    mock = mockllm()
    gw = gateway(base_config(mock), env=ENV)
    # one of each kind of request, so that every family has series
    request("POST", gw.url + CHAT, body=chat(stream=True, max_tokens=2), headers=auth(ALPHA))
    request("POST", gw.url + CHAT, body=chat(max_tokens=2), headers=auth(LIMITED))
    request("POST", gw.url + CHAT, body=chat(max_tokens=2), headers=auth(LIMITED))
    s, types = parse(scrape(gw))
    exported = {k[0] for k in s} | set(types)
    dash = json.loads((REPO / "contrib/grafana/promptgate.json").read_text())
    exprs = []

    def walk(o):
        if isinstance(o, dict):
            for k, v in o.items():
                if k in ("expr", "query") and isinstance(v, str):
                    exprs.append(v)
                else:
                    walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)
    walk(dash)
    assert len(exprs) >= 8, exprs
    used = set()
    for e in exprs:
        used |= set(re.findall(r"\b((?:promptgate|process)_[a-z0-9_]+)", e))
    assert used, exprs
    missing = sorted(u for u in used if u not in exported)
    assert not missing, "dashboard names not exported: %s" % missing
    # and the important families are on it
    for name in ("promptgate_requests_total", "promptgate_request_duration_seconds_bucket",
                 "promptgate_time_to_first_token_seconds_bucket", "promptgate_tokens_total",
                 "promptgate_cache_requests_total", "promptgate_ratelimit_rejections_total",
                 "promptgate_breaker_state", "promptgate_inflight_requests"):
        assert name in used, name


class Blackhole:
    """A TCP listener that accepts and never answers: a Redis that hangs."""

    def __init__(self):
        import socket
        import threading
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        self.sock.settimeout(0.1)
        while not self.stop:
            try:
                c, _ = self.sock.accept()
                self.conns.append(c)
            except OSError:
                pass

    def close(self):
        self.stop = True
        self.thread.join()
        for c in self.conns:
            c.close()
        self.sock.close()


@pytest.fixture
def blackhole():
    b = Blackhole()
    yield b
    b.close()


def test_redis_errors(mockllm, gateway, blackhole):
    mock = mockllm()
    cfg = base_config(mock)
    cfg["redis"] = {"url": "redis://127.0.0.1:%d/0" % blackhole.port, "timeout_ms": 50}
    cfg["rate_limit"] = {"mode": "redis", "on_error": "open"}
    cfg["cache"] = {"backend": "redis"}
    gw = gateway(cfg, env=ENV)
    for i in range(3):
        r = request("POST", gw.url + CHAT, body=chat(max_tokens=2, messages=[
            {"role": "user", "content": "r%d" % i}]), headers=auth(ALPHA))
        assert r.status == 200, r  # on_error open; the cache lookup a miss
    s, _ = parse(scrape(gw))
    assert value(s, "promptgate_redis_errors_total", use="ratelimit") == 3
    # each lookup timed out and each store found no answer either
    assert value(s, "promptgate_redis_errors_total", use="cache") >= 3
    assert value(s, "promptgate_cache_requests_total", result="miss") == 3


def test_exposure_and_registry_errors(mockllm, gateway, tmp_path):
    import os
    import signal
    from regtest import Ctl
    ctl = Ctl(tmp_path / "reg.db")
    ctl.ok("init")
    (tmp_path / "v1.txt").write_text("Describe {{product_name}}.\n")
    ctl.ok("publish", "product_copy", "-f", str(tmp_path / "v1.txt"))
    ctl.ok("label", "product_copy", "1", "production")
    mock = mockllm()
    cfg = base_config(mock)
    cfg["registry"] = {"path": ctl.db, "exposures": str(tmp_path / "exp.jsonl")}
    gw = gateway(cfg, env=ENV)
    s, _ = parse(scrape(gw))
    assert value(s, "promptgate_exposure_written_total") == 0
    assert value(s, "promptgate_registry_reload_errors_total") == 0
    for i in range(3):
        r = request("POST", gw.url + CHAT, headers=auth(ALPHA), body={
            "model": "qwen2.5-7b", "max_tokens": 2,
            "prompt": {"name": "product_copy", "label": "production",
                       "variables": {"product_name": "p%d" % i}}})
        assert r.status == 200, r
    wait_until(lambda: value(parse(scrape(gw))[0], "promptgate_exposure_written_total") == 3,
               timeout=5)
    assert value(parse(scrape(gw))[0], "promptgate_exposure_dropped_total") == 0
    # a registry that cannot be read: the reload fails and is counted
    os.replace(str(tmp_path / "v1.txt"), str(ctl.db))
    gw.send_signal(signal.SIGHUP)
    wait_until(lambda: value(parse(scrape(gw))[0],
                             "promptgate_registry_reload_errors_total") >= 1, timeout=5)


def test_retries_counted(mockllm, gateway):
    bad, good = mockllm("--fault", "status=500"), mockllm()
    cfg = base_config(good)
    cfg["backends"] = [{"name": "bad", "url": bad.base, "models": ["qwen2.5-7b"], "priority": 0},
                       {"name": "good", "url": good.base, "models": ["qwen2.5-7b"], "priority": 1}]
    gw = gateway(cfg, env=ENV)
    for i in range(2):
        r = request("POST", gw.url + CHAT, body=chat(max_tokens=2, temperature=1), headers=auth(ALPHA))
        assert r.status == 200 and r.headers["x-promptgate-backend"] == "good", r
    s, _ = parse(scrape(gw))
    assert value(s, "promptgate_upstream_retries_total", backend="good") == 2
    assert value(s, "promptgate_upstream_retries_total", backend="bad") == 0
    assert value(s, "promptgate_upstream_attempts_total", backend="bad", result="error") == 2
    assert value(s, "promptgate_upstream_attempts_total", backend="good", result="ok") == 2
    assert value(s, "promptgate_requests_total", route=CHAT, model="qwen2.5-7b", backend="good",
                 status_class="2xx") == 2
    assert value(s, "promptgate_retries_inflight") == 0
