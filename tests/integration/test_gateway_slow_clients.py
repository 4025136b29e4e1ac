"""Slow and idle clients against promptgate (issue 2, point 4, "header and
idle timeouts against slow clients"): stalled headers, stalled bodies and
idle keep-alive connections are closed on time while other clients are
served normally."""

import socket
import time

import pytest

from helpers import DEFAULT_MODELS, chat, http as request

CHAT = "/v1/chat/completions"
HEADER_MS = 400
BODY_MS = 400
IDLE_MS = 500


def start_mock(mockllm, *args):
    """Start a mockllm and forget the fixture's readiness probe, so counts
    and recorded requests are only what the gateway sent."""
    m = mockllm(*args)
    m.reset()
    return m


@pytest.fixture
def mg(mockllm, gateway):
    mock = start_mock(mockllm)
    gw = gateway({"limits": {"max_body_bytes": 65536, "header_timeout_ms": HEADER_MS,
                             "body_timeout_ms": BODY_MS, "idle_timeout_ms": IDLE_MS,
                             "drain_timeout_ms": 1000},
                  "backends": [{"name": "mock", "url": mock.base,
                                "models": list(DEFAULT_MODELS)}],
                  "access_log": "stderr"})
    return mock, gw


def connect(gw):
    return socket.create_connection(("127.0.0.1", gw.port), timeout=5)


def closed_after(s, limit=5.0):
    """Seconds until the peer closes s (EOF or reset); whatever it sends
    before closing (e.g. a 408) is returned too."""
    t0 = time.monotonic()
    s.settimeout(limit)
    got = b""
    while True:
        try:
            data = s.recv(4096)
        except ConnectionResetError:
            break
        except socket.timeout:
            raise AssertionError("connection still open after %.1fs (received %r)" % (limit, got))
        if not data:
            break
        got += data
    return time.monotonic() - t0, got


def served_quickly(gw):
    t0 = time.monotonic()
    r = request("POST", gw.url + CHAT, body=chat(max_tokens=2))
    took = time.monotonic() - t0
    assert r.status == 200, r
    assert took < 0.3, "a normal request took %.3fs while slow clients were connected" % took


def read_one_response(s):
    """Read one HTTP response with a content-length from s; return its status."""
    s.settimeout(5)
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = s.recv(4096)
        assert data, "closed before a full response: %r" % buf
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = None
    for l in lines[1:]:
        k, _, v = l.partition(":")
        if k.strip().lower() == "content-length":
            length = int(v.strip())
    assert length is not None, "want a content-length: %r" % head
    while len(rest) < length:
        data = s.recv(4096)
        assert data, "closed mid-body"
        rest += data
    return status


def test_half_headers_closed_after_header_timeout(mg):
    _, gw = mg
    s = connect(gw)
    try:
        t0 = time.monotonic()
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\ncontent-type: appl")
        time.sleep(0.1)
        served_quickly(gw)
        _, got = closed_after(s)
        took = time.monotonic() - t0
    finally:
        s.close()
    assert HEADER_MS / 1000.0 * 0.75 <= took <= HEADER_MS / 1000.0 + 1.0, took
    assert not got or got.startswith(b"HTTP/1.1 408") or got.startswith(b"HTTP/1.1 400"), got


def test_silent_connection_is_closed(mg):
    _, gw = mg
    s = connect(gw)
    try:
        took, got = closed_after(s)
    finally:
        s.close()
    assert took <= max(HEADER_MS, IDLE_MS) / 1000.0 + 1.0, took
    assert not got or got.startswith(b"HTTP/1.1 408"), got


def test_trickling_headers_are_cut_at_header_timeout(mg):
    """Slowloris: one header byte every 50 ms keeps the socket busy but the
    headers never end; the header timeout counts from the first byte."""
    _, gw = mg
    s = connect(gw)
    t0 = time.monotonic()
    closed_at = None
    try:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        for _ in range(60):
            try:
                s.sendall(b"X")
            except OSError:
                closed_at = time.monotonic() - t0
                break
            s.settimeout(0.05)
            try:
                data = s.recv(4096)
                if not data or not data.startswith(b"HTTP/1.1 200"):
                    closed_at = time.monotonic() - t0
                    break
            except socket.timeout:
                pass
            except ConnectionResetError:
                closed_at = time.monotonic() - t0
                break
    finally:
        s.close()
    assert closed_at is not None, "still open after 3 s of trickled headers"
    assert closed_at <= HEADER_MS / 1000.0 + 1.0, closed_at


def test_stalled_body_closed_after_body_timeout(mg):
    mock, gw = mg
    s = connect(gw)
    try:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                  b"content-type: application/json\r\ncontent-length: 200\r\n\r\n{\"model\": ")
        took, got = closed_after(s)
    finally:
        s.close()
    assert BODY_MS / 1000.0 * 0.75 <= took <= BODY_MS / 1000.0 + 1.0, took
    assert not got or got.startswith(b"HTTP/1.1 408") or got.startswith(b"HTTP/1.1 400"), got
    assert mock.count() == 0


def test_idle_keepalive_closed_after_idle_timeout(mg):
    _, gw = mg
    s = connect(gw)
    try:
        for _ in range(3):
            # requests closer together than the idle timeout keep it open
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_one_response(s) == 200
            time.sleep(IDLE_MS / 1000.0 * 0.5)
        s.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_one_response(s) == 200
        took, got = closed_after(s)
    finally:
        s.close()
    assert IDLE_MS / 1000.0 * 0.75 <= took <= IDLE_MS / 1000.0 + 1.0, took
    assert got == b"", got


def test_many_slow_clients_do_not_starve_others(mg):
    _, gw = mg
    socks = []
    try:
        for i in range(64):
            s = connect(gw)
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n" if i % 2
                      else b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                      b"content-length: 1000\r\n\r\n{")
            socks.append(s)
        for _ in range(5):
            served_quickly(gw)
        # all of them are closed by the timeouts
        deadline = time.monotonic() + max(HEADER_MS, BODY_MS) / 1000.0 + 1.5
        for s in socks:
            s.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                while s.recv(4096):
                    pass
            except ConnectionResetError:
                pass
            except socket.timeout:
                raise AssertionError("a slow connection outlived its timeout")
    finally:
        for s in socks:
            s.close()
    served_quickly(gw)


def test_garbage_request_line(mg):
    mock, gw = mg
    s = connect(gw)
    try:
        s.sendall(b"\x16\x03\x01\x02\x00garbage that is not http\r\n\r\n")
        took, got = closed_after(s, limit=3)
    finally:
        s.close()
    assert not got or got.startswith(b"HTTP/1.1 400") or got.startswith(b"HTTP/1.0 400"), got
    served_quickly(gw)


def test_huge_header_is_refused(mg):
    _, gw = mg
    try:
        r = request("GET", gw.url + "/healthz", headers={"x-big": "a" * 200000})
        assert r.status in (400, 413, 431), r
    except (ConnectionResetError, BrokenPipeError):
        pass   # refused by closing: acceptable
    served_quickly(gw)
