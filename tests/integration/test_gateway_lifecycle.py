"""promptgate's access log, SIGHUP reload and SIGTERM drain (issue 2,
point 4, last item), against a real mockllm."""

import http.client
import json
import signal
import socket
import threading
import time

import pytest

from helpers import DEFAULT_MODELS, chat, http as request, open_stream, sse_events, sse_json, wait_until

CHAT = "/v1/chat/completions"
LOG_KEYS = {"request_id", "method", "path", "model", "backend", "status", "latency_ms",
            "ttfb_ms", "prompt_tokens", "completion_tokens", "total_tokens"}


# upstream_host: an autouse fixture, imported so that every test here runs
# against both upstream transports (own client and libcurl)
from helpers import start_mock, upstream, upstream_host, upstream_hostname  # noqa: E402,F401


def config(mock, models=None, drain_ms=3000, **top):
    cfg = {"limits": {"max_body_bytes": 65536, "header_timeout_ms": 2000,
                      "body_timeout_ms": 2000, "idle_timeout_ms": 10000,
                      "drain_timeout_ms": drain_ms},
           "backends": [{"name": "mock", "url": upstream(mock),
                         "models": list(models or DEFAULT_MODELS), "timeout_ms": 10000}],
           "access_log": "stderr"}
    cfg.update(top)
    return cfg


@pytest.fixture
def mg(mockllm, gateway):
    mock = start_mock(mockllm)
    gw = gateway(config(mock))
    return mock, gw


def log_entry(gw, rid, timeout=3):
    """The one access-log line of request id rid (waits for it)."""
    def find():
        hits = [e for e in gw.access_log() if e.get("request_id") == rid]
        return hits or None
    hits = wait_until(find, timeout=timeout, message="no access log line for %r" % rid)
    assert len(hits) == 1, "request %r logged %d times: %r" % (rid, len(hits), hits)
    e = hits[0]
    assert LOG_KEYS <= set(e), "missing keys %r in %r" % (LOG_KEYS - set(e), e)
    return e


# ---------------------------------------------------------------- access log

def test_access_log_chat(mg):
    _, gw = mg
    r = request("POST", gw.url + CHAT, body=chat(max_tokens=6), headers={"x-request-id": "al-chat"})
    assert r.status == 200
    u = r.json()["usage"]
    e = log_entry(gw, "al-chat")
    assert e["method"] == "POST" and e["path"] == CHAT, e
    assert e["model"] == "qwen2.5-7b" and e["backend"] == "mock" and e["status"] == 200, e
    assert (e["prompt_tokens"], e["completion_tokens"], e["total_tokens"]) == \
        (u["prompt_tokens"], u["completion_tokens"], u["total_tokens"]), (e, u)
    assert isinstance(e["latency_ms"], (int, float)) and e["latency_ms"] >= 0, e
    assert isinstance(e["ttfb_ms"], (int, float)) and 0 <= e["ttfb_ms"] <= e["latency_ms"], e


def test_access_log_latency_and_ttfb(mg):
    _, gw = mg
    r = request("POST", gw.url + CHAT, body=chat(), headers={"x-request-id": "al-delay",
                                                             "x-mock-fault": "delay-ms=300"})
    assert r.status == 200
    e = log_entry(gw, "al-delay")
    assert 300 <= e["ttfb_ms"] <= e["latency_ms"] < 1500, e
    r = request("POST", gw.url + CHAT,
                body=chat(stream=True, stream_options={"include_usage": True}),
                headers={"x-request-id": "al-stream",
                         "x-mock-fault": "tokens=10,token-delay-ms=60"})
    assert sse_events(r.body)[-1] == "[DONE]"
    u = sse_json(r.body)[-1]["usage"]
    e = log_entry(gw, "al-stream")
    assert e["status"] == 200 and e["model"] == "qwen2.5-7b" and e["backend"] == "mock", e
    assert e["latency_ms"] >= 540, e
    assert e["ttfb_ms"] < e["latency_ms"] - 300, "ttfb should be the first chunk, not the end: %r" % e
    assert (e["prompt_tokens"], e["completion_tokens"], e["total_tokens"]) == \
        (u["prompt_tokens"], u["completion_tokens"], u["total_tokens"]), (e, u)


def test_access_log_errors(mg):
    _, gw = mg
    request("POST", gw.url + CHAT, body=chat("nope"), headers={"x-request-id": "al-404"})
    request("POST", gw.url + CHAT, body=b"{", headers={"x-request-id": "al-400",
                                                       "content-type": "application/json"})
    request("POST", gw.url + CHAT, body=chat(), headers={"x-request-id": "al-503",
                                                         "x-mock-fault": "status=503"})
    request("GET", gw.url + "/nowhere", headers={"x-request-id": "al-route"})
    e = log_entry(gw, "al-404")
    assert e["status"] == 404 and e["model"] == "nope" and e["backend"] in (None, ""), e
    e = log_entry(gw, "al-400")
    assert e["status"] == 400 and e["path"] == CHAT, e
    e = log_entry(gw, "al-503")
    assert e["status"] == 503 and e["backend"] == "mock", e
    e = log_entry(gw, "al-route")
    assert e["status"] == 404 and e["method"] == "GET" and e["path"] == "/nowhere", e


def test_access_log_body_too_large(mockllm, gateway):
    """A request refused while its head or body is read (here 413) is a
    request too: it gets its access-log line and its x-request-id."""
    mock = start_mock(mockllm)
    cfg = config(mock)
    cfg["limits"]["max_body_bytes"] = 1024
    gw = gateway(cfg)
    r = request("POST", gw.url + CHAT, body=chat(messages=[{"role": "user", "content": "x" * 4096}]),
                headers={"x-request-id": "al-413"})
    assert r.status == 413, r
    assert r.headers.get("x-request-id") == "al-413", r.headers
    e = log_entry(gw, "al-413")
    assert e["status"] == 413 and e["method"] == "POST" and e["path"] == CHAT, e


def test_access_log_one_line_per_request(mg):
    _, gw = mg
    ids = ["al-n%d" % i for i in range(20)]
    for rid in ids:
        assert request("POST", gw.url + CHAT, body=chat(max_tokens=1),
                       headers={"x-request-id": rid}).status == 200
    for rid in ids:
        log_entry(gw, rid)
    # every access line is one valid JSON object on its own line
    lines = [l for l in gw.stderr_text().splitlines() if '"request_id"' in l]
    for l in lines:
        assert isinstance(json.loads(l), dict), l


def test_secrets_never_in_stderr(mockllm, gateway):
    mock = start_mock(mockllm)
    backend_key = "sk-backend-SECRET-4a1b2c"
    client_key = "sk-client-SECRET-9z8y7x"
    gw = gateway(config(mock) | {"backends": [{"name": "mock", "url": upstream(mock),
                                               "models": list(DEFAULT_MODELS),
                                               "api_key": "env:PG_TEST_SECRET_KEY"}]},
                 env={"PG_TEST_SECRET_KEY": backend_key})
    auth = {"Authorization": "Bearer " + client_key}
    request("POST", gw.url + CHAT, body=chat(), headers=auth)
    request("POST", gw.url + CHAT, body=chat(stream=True), headers=auth)
    request("POST", gw.url + CHAT, body=chat("nope"), headers=auth)
    request("POST", gw.url + CHAT, body=b"{{", headers=auth)
    request("POST", gw.url + CHAT, body=chat(), headers=dict(auth, **{"x-mock-fault": "status=401"}))
    request("POST", gw.url + CHAT, body=chat(), headers=dict(auth, **{"x-mock-fault": "reset"}))
    assert mock.requests()[0]["headers"]["authorization"] == "Bearer " + backend_key
    gw.reload(config(mock) | {"backends": [{"name": "mock", "url": upstream(mock),
                                            "models": ["qwen2.5-7b"],
                                            "api_key": "env:PG_TEST_SECRET_KEY"}],
                              "frobnicate": 1})
    wait_until(lambda: len(gw.access_log()) >= 6, timeout=3)
    text = gw.stderr_text()
    for secret in (backend_key, client_key):
        assert secret not in text, "%r found in stderr" % secret


# ---------------------------------------------------------------- SIGHUP

def test_reload_adds_a_model_without_dropping_a_stream(mockllm, gateway):
    mock = start_mock(mockllm)
    gw = gateway(config(mock, models=["qwen2.5-7b"]))
    r = request("POST", gw.url + CHAT, body=chat("gpt-4o-mini"))
    assert r.status == 404, r

    # a keep-alive connection opened before the reload
    ka = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    ka.request("GET", "/v1/models")
    r0 = ka.getresponse()
    assert [m["id"] for m in json.loads(r0.read())["data"]] == ["qwen2.5-7b"]
    sock = ka.sock

    result = {}

    def stream():
        result["r"] = request("POST", gw.url + CHAT, body=chat(stream=True), timeout=20,
                              headers={"x-mock-fault": "tokens=30,token-delay-ms=50"})

    t = threading.Thread(target=stream)
    t.start()
    try:
        wait_until(lambda: mock.stats()["active_streams"] == 1, timeout=3)
        gw.reload(config(mock, models=["qwen2.5-7b", "gpt-4o-mini"]))
        wait_until(lambda: request("POST", gw.url + CHAT, body=chat("gpt-4o-mini")).status == 200,
                   timeout=3, message="the new model is not served after SIGHUP")
        assert mock.stats()["active_streams"] == 1, "the in-flight stream was cut by the reload"
    finally:
        t.join(20)
    r = result["r"]
    assert r.status == 200
    ev = sse_events(r.body)
    assert ev[-1] == "[DONE]", ev[-3:]
    assert len([c for c in sse_json(r.body) if c["choices"] and c["choices"][0]["delta"].get("content")]) >= 29

    try:
        ka.request("GET", "/v1/models")
        r1 = ka.getresponse()
        ids = sorted(m["id"] for m in json.loads(r1.read())["data"])
        assert ids == ["gpt-4o-mini", "qwen2.5-7b"], ids
        assert ka.sock is sock, "the keep-alive connection was dropped by the reload"
    finally:
        ka.close()
    assert gw.alive()
    assert request("GET", gw.url + "/readyz").status == 200


def test_reload_moves_a_model_to_another_backend(mockllm, gateway):
    a, b = start_mock(mockllm), start_mock(mockllm)
    gw = gateway(config(a))
    assert request("POST", gw.url + CHAT, body=chat()).status == 200
    new = config(b)
    new["backends"][0]["name"] = "other"
    gw.reload(new)
    wait_until(lambda: request("POST", gw.url + CHAT, body=chat()).headers.get("x-promptgate-backend")
               == "other", timeout=3)
    assert b.count() >= 1
    n = a.count()
    request("POST", gw.url + CHAT, body=chat())
    assert a.count() == n, "requests still go to the old backend"


def test_reload_removes_the_backend_of_an_in_flight_stream(mockllm, gateway):
    """The backend serving a stream disappears from the config: the stream
    still ends cleanly (backends outlive the config that named them while a
    request holds them), new requests go to the new backend."""
    a, b = start_mock(mockllm), start_mock(mockllm)
    gw = gateway(config(a))
    result = {}

    def stream():
        result["r"] = request("POST", gw.url + CHAT, body=chat(stream=True), timeout=20,
                              headers={"x-mock-fault": "tokens=20,token-delay-ms=50"})

    t = threading.Thread(target=stream)
    t.start()
    try:
        wait_until(lambda: a.stats()["active_streams"] == 1, timeout=3)
        new = config(b)
        new["backends"][0]["name"] = "b"
        gw.reload(new)
        wait_until(lambda: request("POST", gw.url + CHAT, body=chat()).headers.get(
            "x-promptgate-backend") == "b", timeout=3)
    finally:
        t.join(20)
    r = result["r"]
    assert r.status == 200 and r.headers.get("x-promptgate-backend") == "mock", r
    assert sse_events(r.body)[-1] == "[DONE]"
    assert gw.alive()


def test_reload_storm_under_load(mockllm, gateway):
    """Twenty SIGHUPs while requests and streams flow: every request is
    answered normally and the gateway survives."""
    mock = start_mock(mockllm)
    gw = gateway(config(mock))
    statuses = []
    stop = threading.Event()

    def load():
        while not stop.is_set():
            r = request("POST", gw.url + CHAT, body=chat(stream=len(statuses) % 2 == 0, max_tokens=3),
                        headers={"x-mock-fault": "token-delay-ms=5"})
            ok = r.status == 200 and (b"[DONE]" in r.body or b'"usage"' in r.body)
            statuses.append(r.status if ok else (r.status, r.body[-200:]))

    threads = [threading.Thread(target=load) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for i in range(20):
            models = ["qwen2.5-7b", "gpt-4o-mini"] if i % 2 else ["qwen2.5-7b"]
            gw.reload(config(mock, models=models))
            time.sleep(0.03)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert gw.alive(), "the gateway died during the reloads"
    assert len(statuses) > 20, statuses
    assert all(s == 200 for s in statuses), [s for s in statuses if s != 200][:5]


def test_reload_applies_new_limits(mockllm, gateway):
    mock = start_mock(mockllm)
    gw = gateway(config(mock))
    big = chat(messages=[{"role": "user", "content": "y" * 4000}])
    assert request("POST", gw.url + CHAT, body=big).status == 200
    new = config(mock)
    new["limits"]["max_body_bytes"] = 1024
    gw.reload(new)
    wait_until(lambda: request("POST", gw.url + CHAT, body=big).status == 413, timeout=3,
               message="limits.max_body_bytes from the reloaded config not applied")
    assert request("POST", gw.url + CHAT, body=chat()).status == 200


@pytest.mark.parametrize("bad", ["frobnicate", "badurl", "notjson"])
def test_bad_reload_is_refused_and_old_config_serves(mockllm, gateway, bad):
    mock = start_mock(mockllm)
    gw = gateway(config(mock, models=["qwen2.5-7b"]))
    before = len(gw.stderr_text())
    if bad == "notjson":
        with open(gw.config_path, "w") as f:
            f.write('{"backends": [')
        gw.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: len(gw.stderr_text()) > before, timeout=3,
                   message="nothing logged about the refused reload")
    else:
        new = config(mock, models=["qwen2.5-7b", "gpt-4o-mini"])
        if bad == "frobnicate":
            new["frobnicate"] = 1
        else:
            new["backends"][0]["url"] = "not a url"
        gw.reload(new)
        wait_until(lambda: len(gw.stderr_text()) > before, timeout=3,
                   message="nothing logged about the refused reload")
        said = gw.stderr_text()[before:]
        assert ("frobnicate" if bad == "frobnicate" else "backends[0].url") in said, said
    time.sleep(0.2)
    assert gw.alive(), "the gateway died on a bad reload"
    assert request("POST", gw.url + CHAT, body=chat()).status == 200
    r = request("POST", gw.url + CHAT, body=chat("gpt-4o-mini"))
    assert r.status == 404, "part of the refused config was applied: %r" % r
    assert request("GET", gw.url + "/readyz").status == 200
    # and a good reload afterwards still works
    gw.reload(config(mock, models=["qwen2.5-7b", "gpt-4o-mini"]))
    wait_until(lambda: request("POST", gw.url + CHAT, body=chat("gpt-4o-mini")).status == 200,
               timeout=3)


# ---------------------------------------------------------------- SIGTERM

def _connect_refused(port):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=1)
    except ConnectionRefusedError:
        return True
    try:
        # accepted by a listen backlog nobody reads any more: must not be served
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        s.settimeout(0.5)
        try:
            data = s.recv(100)
        except socket.timeout:
            return False
        return not data.startswith(b"HTTP/1.1 200")
    except OSError:
        return True
    finally:
        s.close()


def test_sigterm_drains_in_flight_request(mg):
    mock, gw = mg
    result = {}

    def slow():
        result["r"] = request("POST", gw.url + CHAT, body=chat(max_tokens=4), timeout=10,
                              headers={"x-mock-fault": "delay-ms=1000"})

    t = threading.Thread(target=slow)
    t.start()
    wait_until(lambda: mock.count() == 1, timeout=2)
    t0 = time.monotonic()
    gw.proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    assert gw.alive(), "exited without waiting for the in-flight request"
    assert _connect_refused(gw.port), "still accepting new connections after SIGTERM"
    t.join(10)
    r = result.get("r")
    assert r is not None and r.status == 200, r
    assert r.json()["usage"]["completion_tokens"] == 4
    rc = gw.proc.wait(5)
    assert rc == 0, rc
    assert time.monotonic() - t0 < 2.5


def test_sigterm_drains_in_flight_stream(mg):
    mock, gw = mg
    conn, resp = open_stream("POST", gw.url + CHAT, body=chat(stream=True),
                             headers={"x-mock-fault": "tokens=20,token-delay-ms=40"})
    try:
        assert resp.status == 200
        resp.readline()
        gw.proc.send_signal(signal.SIGTERM)
        data = resp.read()
    finally:
        conn.close()
    assert b"data: [DONE]" in data, data[-200:]
    assert gw.proc.wait(5) == 0


def test_sigterm_with_idle_keepalive_exits_promptly(mg):
    _, gw = mg
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=5)
    try:
        conn.request("GET", "/healthz")
        conn.getresponse().read()
        t0 = time.monotonic()
        gw.proc.send_signal(signal.SIGTERM)
        assert gw.proc.wait(5) == 0
        assert time.monotonic() - t0 < 1.0, "an idle keep-alive connection held up the exit"
    finally:
        conn.close()


def test_sigterm_drain_deadline(mockllm, gateway):
    mock = start_mock(mockllm)
    gw = gateway(config(mock, drain_ms=500))
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
    try:
        body = json.dumps(chat()).encode()
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nx-mock-fault: hang\r\n"
                  b"content-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
        wait_until(lambda: mock.count() == 1, timeout=2)
        t0 = time.monotonic()
        gw.proc.send_signal(signal.SIGTERM)
        rc = gw.proc.wait(5)
        took = time.monotonic() - t0
    finally:
        s.close()
    assert 0.4 <= took < 2.0, "exit %.2fs after SIGTERM with drain_timeout_ms 500" % took
    assert rc >= 0, "crashed: %d" % rc
