"""Every mockllm fault through promptgate (issue 2, points 3 and 4): upstream
error answers passed through, delays, broken and hung upstreams mapped to
502/504 in OpenAI's shape, and the gateway serving normally after each."""

import http.client
import json
import time

import pytest

from helpers import DEFAULT_MODELS, chat, completion, embedding, free_port, http as request, sse_events

CHAT = "/v1/chat/completions"
BACKEND_TIMEOUT_MS = 600


# upstream_host: an autouse fixture, imported so that every test here runs
# against both upstream transports (own client and libcurl)
from helpers import start_mock, upstream, upstream_host, upstream_hostname  # noqa: E402,F401


def config(mock_base, **backend_extra):
    b = {"name": "mock", "url": mock_base, "models": list(DEFAULT_MODELS),
         "timeout_ms": BACKEND_TIMEOUT_MS, "connect_timeout_ms": 300}
    b.update(backend_extra)
    return {"limits": {"max_body_bytes": 65536, "header_timeout_ms": 2000,
                       "body_timeout_ms": 2000, "idle_timeout_ms": 5000,
                       "drain_timeout_ms": 2000},
            "backends": [b], "access_log": "stderr"}


@pytest.fixture
def mg(mockllm, gateway):
    mock = start_mock(mockllm)
    gw = gateway(config(upstream(mock)))
    return mock, gw


def fault(spec):
    return {"x-mock-fault": spec}


def assert_error(r, status, code):
    assert r.status == status, r
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers
    err = r.json()["error"]
    assert err["code"] == code, err
    assert err["message"] and err["type"], err
    assert r.headers.get("x-request-id")


def honours_retry_after(gw, seconds):
    """Issue 3: a 429/503 with Retry-After opens the backend's breaker for
    that long; with no other backend the gateway answers a fast 503 with
    retry-after meanwhile, and serves again once the time is over."""
    t = time.monotonic()
    r = request("POST", gw.url + CHAT, body=chat(max_tokens=2))
    assert r.status == 503 and time.monotonic() - t < 0.5, r
    assert 1 <= int(r.headers["retry-after"]) <= seconds, r.headers
    time.sleep(seconds + 0.1)


def still_serves(gw):
    r = request("POST", gw.url + CHAT, body=chat(max_tokens=2))
    assert r.status == 200, "gateway no longer serves after the fault: %r" % r
    assert r.json()["usage"]["completion_tokens"] == 2


@pytest.mark.parametrize("path, body", [(CHAT, chat()), ("/v1/completions", completion()),
                                        ("/v1/embeddings", embedding())])
def test_status_503_passed_through(mg, path, body):
    mock, gw = mg
    r = request("POST", gw.url + path, body=body, headers=fault("status=503"))
    direct = request("POST", mock.url + path, body=body, headers=fault("status=503"))
    assert direct.status == 503
    assert r.status == 503, r
    assert r.json() == direct.json(), "error body changed: %r vs %r" % (r.body, direct.body)
    assert r.headers.get("x-promptgate-backend") == "mock", r.headers
    assert r.headers.get("content-type", "").startswith("application/json")
    still_serves(gw)


@pytest.mark.parametrize("spec, status", [("status=503", 503), ("status=429,retry-after=3", 429)])
def test_error_status_on_a_stream_request(mg, spec, status):
    """An upstream error answered to a stream request is relayed as the
    JSON error it is (not as an SSE stream)."""
    _, gw = mg
    r = request("POST", gw.url + CHAT, body=chat(stream=True), headers=fault(spec))
    assert r.status == status, r
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers
    assert "error" in r.json()
    if status == 429:
        assert r.headers.get("retry-after") == "3", r.headers
        honours_retry_after(gw, 3)
    still_serves(gw)


def test_status_429_with_retry_after_passed_through(mg):
    mock, gw = mg
    r = request("POST", gw.url + CHAT, body=chat(), headers=fault("status=429,retry-after=2"))
    assert r.status == 429, r
    assert r.headers.get("retry-after") == "2", r.headers
    direct = request("POST", mock.url + CHAT, body=chat(), headers=fault("status=429,retry-after=2"))
    assert r.json() == direct.json()
    assert r.headers.get("x-promptgate-backend") == "mock"
    honours_retry_after(gw, 2)
    still_serves(gw)


@pytest.mark.parametrize("status", [400, 401, 404, 500, 502])
def test_other_statuses_passed_through(mg, status):
    mock, gw = mg
    r = request("POST", gw.url + CHAT, body=chat(), headers=fault("status=%d" % status))
    assert r.status == status, r
    assert "error" in r.json(), r
    # one attempt only: the gateway does not retry in this issue
    assert mock.count() == 1


def test_runtime_fault_set_on_the_mock(mg):
    mock, gw = mg
    mock.set_fault("status=503", count=1)
    r = request("POST", gw.url + CHAT, body=chat())
    assert r.status == 503, r
    still_serves(gw)


def test_delay_ms(mg):
    _, gw = mg
    t0 = time.monotonic()
    r = request("POST", gw.url + CHAT, body=chat(), headers=fault("delay-ms=400"))
    elapsed = time.monotonic() - t0
    assert r.status == 200, r
    assert 0.4 <= elapsed < 0.4 + BACKEND_TIMEOUT_MS / 1000.0, elapsed


def test_delay_longer_than_timeout_is_504(mg):
    _, gw = mg
    t0 = time.monotonic()
    r = request("POST", gw.url + CHAT, body=chat(), headers=fault("delay-ms=3000"))
    elapsed = time.monotonic() - t0
    assert_error(r, 504, "backend_timeout")
    assert elapsed < 2.0, elapsed
    still_serves(gw)


def test_delayed_requests_do_not_block_others(mg):
    """One slow upstream answer never holds up another client."""
    import threading
    _, gw = mg
    slow = {}

    def slow_req():
        slow["r"] = request("POST", gw.url + CHAT, body=chat(), headers=fault("delay-ms=500"))

    t = threading.Thread(target=slow_req)
    t.start()
    time.sleep(0.05)
    t0 = time.monotonic()
    r = request("POST", gw.url + CHAT, body=chat())
    fast = time.monotonic() - t0
    t.join(5)
    assert r.status == 200 and slow["r"].status == 200
    assert fast < 0.3, "a fast request waited %.3fs behind a slow one" % fast


def test_hang_is_504_after_backend_timeout(mg):
    mock, gw = mg
    t0 = time.monotonic()
    r = request("POST", gw.url + CHAT, body=chat(), headers=fault("hang"))
    elapsed = time.monotonic() - t0
    assert_error(r, 504, "backend_timeout")
    assert BACKEND_TIMEOUT_MS / 1000.0 * 0.9 <= elapsed < BACKEND_TIMEOUT_MS / 1000.0 + 1.0, elapsed
    assert r.headers.get("x-promptgate-backend") in (None, "mock")
    still_serves(gw)


def test_hang_stream_is_504(mg):
    _, gw = mg
    r = request("POST", gw.url + CHAT, body=chat(stream=True), headers=fault("hang"))
    assert_error(r, 504, "backend_timeout")
    still_serves(gw)


def test_reset_is_502(mg):
    _, gw = mg
    r = request("POST", gw.url + CHAT, body=chat(), headers=fault("reset"))
    assert_error(r, 502, "backend_error")
    still_serves(gw)


def test_reset_stream_is_502(mg):
    _, gw = mg
    r = request("POST", gw.url + CHAT, body=chat(stream=True), headers=fault("reset"))
    assert_error(r, 502, "backend_error")
    still_serves(gw)


def test_unreachable_backend_is_503_with_retry_after(mockllm, gateway):
    """No backend could be connected to: 503 with retry-after, the same
    answer a client gets once the breakers are open (issue 3), so it backs
    off the same way."""
    mock = start_mock(mockllm)
    dead = free_port()   # nothing listens there
    gw = gateway({"backends": [
        {"name": "dead", "url": "http://%s:%d/v1" % (upstream_hostname(), dead), "models": ["gpt-4o-mini"],
         "timeout_ms": 2000, "connect_timeout_ms": 300},
        {"name": "mock", "url": upstream(mock), "models": ["qwen2.5-7b"]}],
        "access_log": "stderr"})
    t0 = time.monotonic()
    r = request("POST", gw.url + CHAT, body=chat("gpt-4o-mini"))
    assert_error(r, 503, "backend_unreachable")
    assert r.headers["retry-after"] == "1"
    assert "'dead'" in r.json()["error"]["message"]
    assert time.monotonic() - t0 < 1.5
    # the other backend is unaffected
    r = request("POST", gw.url + CHAT, body=chat("qwen2.5-7b"))
    assert r.status == 200 and r.headers.get("x-promptgate-backend") == "mock", r


def test_close_after_chunks_non_stream(mg):
    """Headers and half the body, then the upstream closes: the client must
    never get a complete-looking 200.  Either a 502 backend_error (the
    gateway buffered the answer) or a truncated answer that the HTTP client
    detects as such."""
    _, gw = mg
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    try:
        conn.request("POST", CHAT, body=json.dumps(chat()),
                     headers={"content-type": "application/json",
                              "x-mock-fault": "close-after-chunks=3"})
        resp = conn.getresponse()
        try:
            data = resp.read()
        except http.client.IncompleteRead:
            data = None   # truncated, and visibly so: acceptable
        if data is not None:
            assert resp.status == 502, (resp.status, data)
            err = json.loads(data)["error"]
            assert err["code"] == "backend_error", err
    except (http.client.RemoteDisconnected, ConnectionResetError):
        pass   # closed before any header: visibly broken, acceptable
    finally:
        conn.close()
    still_serves(gw)


def test_close_after_chunks_stream_ends_with_error_event(mg):
    _, gw = mg
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    try:
        conn.request("POST", CHAT, body=json.dumps(chat(stream=True)),
                     headers={"content-type": "application/json",
                              "x-mock-fault": "close-after-chunks=3,token-delay-ms=10"})
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.getheader("content-type", "").startswith("text/event-stream")
        try:
            data = resp.read()
        except http.client.IncompleteRead as e:
            data = e.partial
    finally:
        conn.close()
    events = sse_events(data)
    assert "[DONE]" not in events, events
    assert len(events) >= 2, events
    chunks = [e for e in events if e.event is None]
    assert len(chunks) == 3, "want the 3 chunks sent before the close: %r" % events
    for c in chunks:
        assert json.loads(c)["object"] == "chat.completion.chunk"
    last = events[-1]
    assert last.event == "error", "the stream must end with an `event: error`: %r" % events
    err = json.loads(last)["error"]
    assert err["message"], err
    still_serves(gw)


def test_bad_fault_spec_is_the_mocks_400(mg):
    """The gateway relays the mock's own 400 for a bad fault spec."""
    _, gw = mg
    r = request("POST", gw.url + CHAT, body=chat(), headers=fault("frobnicate=1"))
    assert r.status == 400, r
    assert "frobnicate" in r.json()["error"]["message"]


def test_backend_closing_idle_connections(mockllm, gateway):
    """The mock is restarted between two requests: the gateway's pooled
    connection to the old one is dead, and the next request must still
    work (a reused dead connection is retried on a new one, or the error is
    a clean 503 and the request after that works)."""
    mock = start_mock(mockllm)
    port = mock.port
    gw = gateway(config(upstream(mock)))
    assert request("POST", gw.url + CHAT, body=chat()).status == 200
    mock.stop()
    r = request("POST", gw.url + CHAT, body=chat())
    assert_error(r, 503, "backend_unreachable")
    mock2 = start_mock(mockllm, "--listen", "127.0.0.1:%d" % port)
    r = request("POST", gw.url + CHAT, body=chat())
    assert r.status == 200, r
    assert mock2.count() == 1


def test_upstream_sees_one_connection_reused(mg):
    """Connection reuse towards the backend: 20 sequential requests use
    few upstream connections (the mock counts open connections)."""
    mock, gw = mg
    for _ in range(20):
        assert request("POST", gw.url + CHAT, body=chat(max_tokens=1)).status == 200
    st = mock.stats()
    # open_connections counts the stats request's own connection too
    assert st["open_connections"] - 1 <= 1, st
