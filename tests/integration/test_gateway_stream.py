"""Streaming through promptgate (issue 2, point 4, streaming item): SSE
relayed event by event as it arrives, usage chunks, client disconnects
cancelling the upstream, and backpressure against a client that does not
read.  Upstream death mid-stream is in test_gateway_faults.py."""

import json
import socket
import threading
import time

import pytest

from helpers import (BIN, DEFAULT_MODELS, chat, completion, http as request, open_stream,
                     sse_events, sse_json, wait_until)

CHAT = "/v1/chat/completions"
MIB = 1024 * 1024


# upstream_host: an autouse fixture, imported so that every test here runs
# against both upstream transports (own client and libcurl)
from helpers import start_mock, upstream, upstream_host, upstream_hostname  # noqa: E402,F401


def config(mock, **top):
    cfg = {"limits": {"max_body_bytes": 65536, "header_timeout_ms": 2000,
                      "body_timeout_ms": 2000, "idle_timeout_ms": 10000,
                      "drain_timeout_ms": 2000},
           "backends": [{"name": "mock", "url": upstream(mock), "models": list(DEFAULT_MODELS),
                         "timeout_ms": 30000}],
           "access_log": "stderr"}
    cfg.update(top)
    return cfg


@pytest.fixture
def mg(mockllm, gateway):
    mock = start_mock(mockllm)
    gw = gateway(config(mock))
    return mock, gw


def strip_ids(objs):
    """Drop the per-request fields (id, created) so two streams compare."""
    out = []
    for o in objs:
        o = dict(o)
        o.pop("id", None)
        o.pop("created", None)
        out.append(o)
    return out


def post_stream(url, body, headers=None):
    h = {"x-mock-fault": "tokens=8"}
    h.update(headers or {})
    return request("POST", url, body=body, headers=h)


def test_chat_stream(mg):
    mock, gw = mg
    body = chat(stream=True)
    r = post_stream(gw.url + CHAT, body)
    assert r.status == 200, r
    assert r.headers.get("content-type", "").startswith("text/event-stream"), r.headers
    assert r.headers.get("x-promptgate-backend") == "mock"
    assert r.headers.get("x-request-id")
    events = sse_events(r.body)
    assert events[-1] == "[DONE]", events[-3:]
    assert events.count("[DONE]") == 1
    assert all(e.event is None for e in events), events
    chunks = sse_json(r.body)
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text, chunks
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop", chunks[-1]
    assert all(c.get("usage") is None for c in chunks), "usage without include_usage"
    # same events as the mock sends directly
    direct = post_stream(mock.url + CHAT, body)
    assert strip_ids(chunks) == strip_ids(sse_json(direct.body))
    # what went upstream asked for a stream
    assert mock.requests()[0]["body"] == body


def test_chat_stream_include_usage(mg):
    mock, gw = mg
    body = chat(stream=True, stream_options={"include_usage": True})
    r = post_stream(gw.url + CHAT, body)
    assert r.status == 200, r
    assert sse_events(r.body)[-1] == "[DONE]"
    chunks = sse_json(r.body)
    last = chunks[-1]
    assert last["choices"] == [], last
    u = last["usage"]
    assert u["completion_tokens"] == 8 and u["total_tokens"] == u["prompt_tokens"] + 8, u
    assert all(c["usage"] is None for c in chunks[:-1])
    direct = post_stream(mock.url + CHAT, body)
    assert strip_ids(chunks) == strip_ids(sse_json(direct.body))
    assert mock.requests()[0]["body"]["stream_options"] == {"include_usage": True}


def test_completions_stream(mg):
    mock, gw = mg
    body = completion(stream=True, stream_options={"include_usage": True})
    r = post_stream(gw.url + "/v1/completions", body)
    assert r.status == 200, r
    assert r.headers.get("content-type", "").startswith("text/event-stream")
    assert sse_events(r.body)[-1] == "[DONE]"
    direct = post_stream(mock.url + "/v1/completions", body)
    assert strip_ids(sse_json(r.body)) == strip_ids(sse_json(direct.body))


def test_events_are_relayed_as_they_arrive(mg):
    """10 tokens 150 ms apart: the first event reaches the client long before
    the last one is produced (no buffering of the whole answer)."""
    _, gw = mg
    t0 = time.monotonic()
    conn, resp = open_stream("POST", gw.url + CHAT, body=chat(stream=True),
                             headers={"x-mock-fault": "tokens=10,token-delay-ms=150"})
    try:
        assert resp.status == 200
        times = []
        lines = []
        while True:
            line = resp.readline()
            if not line:
                break
            if line.startswith(b"data:"):
                times.append(time.monotonic() - t0)
                lines.append(line)
    finally:
        conn.close()
    assert lines[-1].strip() == b"data: [DONE]", lines[-2:]
    assert times[0] < 0.4, "first event after %.3fs" % times[0]
    assert times[-1] >= 1.3, "stream finished after %.3fs: tokens were not paced" % times[-1]
    # events spread over time, not delivered in one burst at the end
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert sum(1 for g in gaps if g > 0.08) >= 7, ["%.3f" % g for g in gaps]


def test_keep_alive_after_a_stream(mg):
    import http.client
    _, gw = mg
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    try:
        for i in range(6):
            stream = i % 2 == 0
            conn.request("POST", CHAT, body=json.dumps(chat(stream=stream, max_tokens=3)),
                         headers={"content-type": "application/json"})
            r = conn.getresponse()
            data = r.read()
            assert r.status == 200, (i, data)
            if stream:
                assert sse_events(data)[-1] == "[DONE]"
            else:
                assert json.loads(data)["usage"]["completion_tokens"] == 3
            if i == 0:
                sock = conn.sock
            assert conn.sock is sock, "connection not reused after request %d" % i
    finally:
        conn.close()


def test_concurrent_streams(mg):
    _, gw = mg
    results = [None] * 12

    def one(i):
        r = request("POST", gw.url + CHAT,
                    body=chat(stream=True, messages=[{"role": "user", "content": "n%d" % i}],
                              stream_options={"include_usage": True}),
                    headers={"x-mock-fault": "tokens=20,token-delay-ms=10"}, timeout=20)
        results[i] = r

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(results))]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    elapsed = time.monotonic() - t0
    for i, r in enumerate(results):
        assert r is not None and r.status == 200, (i, r)
        ev = sse_events(r.body)
        assert ev[-1] == "[DONE]", (i, ev[-3:])
        assert sse_json(r.body)[-1]["usage"]["completion_tokens"] == 20
    # 12 streams of 20 x 10 ms run side by side, not one after another
    assert elapsed < 2.0, elapsed


def test_client_disconnect_cancels_upstream(mg):
    mock, gw = mg
    conn, resp = open_stream("POST", gw.url + CHAT, body=chat(stream=True),
                             headers={"x-mock-fault": "tokens=5000,token-delay-ms=10"})
    try:
        assert resp.status == 200
        n = 0
        while n < 3:
            line = resp.readline()
            assert line, "stream ended early"
            if line.startswith(b"data:"):
                n += 1
        assert mock.stats()["active_streams"] == 1, mock.stats()
    finally:
        try:
            conn.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        resp.close()
        conn.close()
    # the upstream stream would run 50 s more; cancelled, it ends at once
    # (5 s: room for a loaded machine, not a speed measurement)
    wait_until(lambda: mock.stats()["active_streams"] == 0, timeout=5,
               message="the upstream stream still runs 5 s after the client left")
    r = request("POST", gw.url + CHAT, body=chat(max_tokens=2))
    assert r.status == 200, r


def test_many_disconnects_leave_nothing_behind(mg):
    mock, gw = mg
    for _ in range(10):
        conn, resp = open_stream("POST", gw.url + CHAT, body=chat(stream=True),
                                 headers={"x-mock-fault": "tokens=5000,token-delay-ms=5"})
        resp.readline()
        resp.close()
        conn.close()
    wait_until(lambda: mock.stats()["active_streams"] == 0, timeout=3)
    r = post_stream(gw.url + CHAT, chat(stream=True))
    assert sse_events(r.body)[-1] == "[DONE]"


def test_disconnect_before_first_byte_cancels_upstream(mg):
    """The client leaves while the upstream has not answered yet (delay):
    the upstream request is abandoned and the gateway keeps serving."""
    mock, gw = mg
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
    body = json.dumps(chat()).encode()
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
              b"x-mock-fault: delay-ms=800\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
    wait_until(lambda: mock.count() == 1, timeout=2)
    s.close()
    r = request("POST", gw.url + CHAT, body=chat())
    assert r.status == 200
    # the upstream connection of the abandoned request is closed, not left
    # open (open_connections counts the stats request's own connection too)
    wait_until(lambda: mock.stats()["open_connections"] - 1 <= 1, timeout=2,
               message="the abandoned upstream request was not cancelled")


def _rss_bytes(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS for pid %d" % pid)


def _is_asan(exe):
    with open(exe, "rb") as f:
        return b"__asan_init" in f.read()


def test_backpressure_slow_reader(mockllm, gateway):
    """A client reads nothing for 2 s while a big fast stream flows: the
    gateway must pause the upstream, not buffer it.  Then the client reads
    everything and gets the whole stream, [DONE] included."""
    mock = start_mock(mockllm, "--tokens", "200000", "--token-delay-ms", "0")
    gw = gateway(config(mock))
    # learn the size of one chunk to make the stream far bigger than the bound
    sample = request("POST", mock.url + CHAT, body=chat(stream=True),
                     headers={"x-mock-fault": "tokens=100"}).body
    per_token = len(sample) / 100.0
    asan = _is_asan(BIN / "promptgate")
    # 160 MiB (64 MiB under ASan, which relays 10x slower); the mock caps at 1e6
    target = (64 if asan else 160) * MIB
    tokens = min(1000000, max(200000, int(target / per_token)))
    total_expected = tokens * per_token
    assert request("POST", gw.url + CHAT, body=chat()).status == 200
    pid = gw.proc.pid
    base = _rss_bytes(pid)
    events0 = mock.stats()["stream_events"]

    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        # a small receive window, so the gateway meets a full socket soon
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        s.settimeout(30)
        s.connect(("127.0.0.1", gw.port))
        body = json.dumps(chat(stream=True)).encode()
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                  b"content-type: application/json\r\nx-mock-fault: tokens=%d\r\n"
                  b"content-length: %d\r\n\r\n" % (tokens, len(body)) + body)
        peak = base
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            peak = max(peak, _rss_bytes(pid))
            time.sleep(0.05)
        # the exact signal: the mock stops writing events once the kernel's
        # buffers and the gateway's bounded one are full (ASan's quarantine
        # keeps freed memory, so RSS says nothing there)
        held = None
        still = time.monotonic() + 10.0
        while time.monotonic() < still:
            e1 = mock.stats()["stream_events"]
            time.sleep(0.3)
            peak = max(peak, _rss_bytes(pid))
            if mock.stats()["stream_events"] == e1:
                held = e1 - events0
                break
        assert held is not None, "the mock kept writing while the client read nothing: no backpressure"
        assert mock.stats()["active_streams"] == 1, "the upstream stream should be paused, not gone"
        # kernel buffers on both sides hold at most ~16 MiB on loopback
        assert held * per_token < 32 * MIB, ("%.1f MiB left the mock while the client did not read "
                                             "(%.0f MiB stream): no backpressure"
                                             % (held * per_token / MIB, total_expected / MIB))
        if not asan:
            growth = peak - base
            assert growth < 32 * MIB, ("gateway RSS grew by %.1f MiB while the client did not read "
                                       "(%.0f MiB stream): no backpressure"
                                       % (growth / MIB, total_expected / MIB))
            assert peak < 64 * MIB, "gateway VmRSS %.1f MiB" % (peak / MIB)
        # now read it all
        received = 0
        tail = b""
        ndata = 0
        while True:
            buf = s.recv(1 << 20)
            if not buf:
                break
            received += len(buf)
            ndata += (tail[-5:] + buf).count(b"data:") - tail[-5:].count(b"data:")
            tail = (tail + buf)[-64:]
            # the connection stays open (keep-alive): stop at the last chunk
            if tail.endswith(b"0\r\n\r\n") and b"[DONE]" in tail:
                break
        assert b"[DONE]" in tail, "stream did not end with [DONE]: %r" % tail
        assert ndata >= tokens, (ndata, tokens)
        assert received >= total_expected * 0.95, (received, total_expected)
    finally:
        s.close()
    wait_until(lambda: mock.stats()["active_streams"] == 0, timeout=3)
    assert request("POST", gw.url + CHAT, body=chat()).status == 200
