"""Plain helpers for the promptgate integration tests (stdlib only).

Everything here is a function or a small value class; the pytest fixtures
that start processes live in conftest.py.

    BIN                      Path of the directory holding the binaries
                             (env PROMPTGATE_BIN, default <repo>/bin)
    free_port()              a TCP port free on 127.0.0.1 right now
    http(method, url, ...)   one HTTP/1.1 exchange -> Resp (never raises on
                             4xx/5xx; raises OSError on connection errors)
    open_stream(...)         start a request and return (conn, response) so a
                             test can read an SSE body chunk by chunk or drop
                             the connection half-way
    chat(...), completion(...), embedding(...)
                             request bodies in OpenAI's shape
    sse_events(body)         the `data:` payloads of an SSE body, in order, as
                             SseEvent strings (a str subclass with .event,
                             the `event:` name or None)
    sse_json(body)           the JSON-decoded data payloads, [DONE] left out
    wait_until(pred, ...)    poll until pred() is truthy; returns its value,
                             raises AssertionError on timeout
"""

import pytest
import http.client as httpclient
import json
import os
import socket
import threading
import time
import urllib.parse
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("PROMPTGATE_BIN") or (REPO / "bin"))

DEFAULT_MODELS = ["qwen2.5-7b", "gpt-4o-mini", "text-embedding-3-small"]


def free_port():
    """Return a TCP port that is free on 127.0.0.1 at the time of the call."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Resp:
    """An HTTP answer: .status (int), .reason, .headers (dict, lower-case
    names, repeated headers joined with ", "), .header_list (list of
    (lower-case name, value) in wire order), .body (bytes)."""

    def __init__(self, status, reason, header_list, body):
        self.status = status
        self.reason = reason
        self.header_list = header_list
        self.headers = {}
        for name, value in header_list:
            if name in self.headers:
                self.headers[name] += ", " + value
            else:
                self.headers[name] = value
        self.body = body

    def json(self):
        return json.loads(self.body)

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    def __repr__(self):
        return "Resp(%d, %r)" % (self.status, self.body[:200])


def _encode_body(body, headers):
    if body is None:
        return None
    if isinstance(body, (dict, list)):
        if not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = "application/json"
        return json.dumps(body).encode()
    if isinstance(body, str):
        return body.encode()
    return bytes(body)


def _connect(url, timeout):
    u = urllib.parse.urlsplit(url)
    if u.scheme != "http":
        raise ValueError("only http:// URLs are supported: %r" % url)
    conn = httpclient.HTTPConnection(u.hostname, u.port or 80, timeout=timeout)
    path = u.path or "/"
    if u.query:
        path += "?" + u.query
    return conn, path


def http(method, url, body=None, headers=None, timeout=10):
    """Send one request and read the whole answer.

    body: dict/list (sent as JSON with Content-Type application/json unless
    given), str (UTF-8) or bytes; None sends no body.  Returns a Resp; a
    4xx/5xx status is a normal return.  Connection-level failures (refused,
    reset, timeout, truncated body) raise the OSError/HTTPException they
    cause, so tests of faults can assert on them."""
    headers = dict(headers or {})
    data = _encode_body(body, headers)
    conn, path = _connect(url, timeout)
    try:
        conn.request(method, path, body=data, headers=headers)
        r = conn.getresponse()
        payload = r.read()
        hl = [(k.lower(), v) for k, v in r.getheaders()]
        return Resp(r.status, r.reason, hl, payload)
    finally:
        conn.close()


def open_stream(method, url, body=None, headers=None, timeout=10):
    """Send a request and return (conn, response) once the status line and
    headers are in, without reading the body.  Read with response.read1()
    or response.readline(); call conn.close() to drop the connection (the
    caller owns conn and must close it)."""
    headers = dict(headers or {})
    data = _encode_body(body, headers)
    conn, path = _connect(url, timeout)
    try:
        conn.request(method, path, body=data, headers=headers)
        return conn, conn.getresponse()
    except BaseException:
        conn.close()
        raise


def chat(model="qwen2.5-7b", stream=False, **extra):
    """A chat completion request body; extra keys are merged in (pass
    messages=... to replace the default single user message)."""
    body = {"model": model,
            "messages": [{"role": "user", "content": "Say hello in one word."}]}
    if stream:
        body["stream"] = True
    body.update(extra)
    return body


def completion(model="qwen2.5-7b", stream=False, **extra):
    """A legacy completion request body."""
    body = {"model": model, "prompt": "Say hello in one word."}
    if stream:
        body["stream"] = True
    body.update(extra)
    return body


def embedding(model="text-embedding-3-small", input="hello world", **extra):
    """An embeddings request body."""
    body = {"model": model, "input": input}
    body.update(extra)
    return body


class SseEvent(str):
    """The data of one SSE event (a str, so `e == "[DONE]"` and
    `json.loads(e)` work); .event is the `event:` name or None."""

    event = None

    def __new__(cls, data, event=None):
        s = super().__new__(cls, data)
        s.event = event
        return s

    def __repr__(self):
        if self.event:
            return "SseEvent(%r, event=%r)" % (str(self), self.event)
        return "SseEvent(%r)" % str(self)


def sse_events(body):
    """Parse a text/event-stream body (bytes or str) into the list of its
    events' data, in order.  Each item is an SseEvent: the `data:` lines of
    one event joined with "\\n", with .event set from an `event:` line.
    Comment lines (":...") and events without data are skipped.  A final
    event not terminated by a blank line is kept (a truncated stream shows
    up as a missing "[DONE]", not as a lost event)."""
    if isinstance(body, (bytes, bytearray)):
        body = body.decode("utf-8", "replace")
    body = body.replace("\r\n", "\n").replace("\r", "\n")
    out = []
    data, event = [], None
    for line in body.split("\n") + [""]:
        if line == "":
            if data:
                out.append(SseEvent("\n".join(data), event))
            data, event = [], None
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
    return out


def sse_json(body):
    """The JSON objects of an SSE body's data events, "[DONE]" left out."""
    return [json.loads(e) for e in sse_events(body) if e != "[DONE]"]


def in_parallel(fn, n, during=None):
    """Runs fn() in n threads at once and returns their results; during(),
    when given, runs meanwhile on the caller's thread."""
    results, lock = [], threading.Lock()

    def one():
        r = fn()
        with lock:
            results.append(r)
    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    if during is not None:
        during()
    for t in threads:
        t.join()
    return results


def wait_until(pred, timeout=5, interval=0.02, message=None):
    """Call pred() until it returns a truthy value and return that value.
    Raises AssertionError (with message, or pred's name and its last value)
    when timeout seconds pass first.  Exceptions from pred propagate."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(message or "timed out after %ss waiting for %s (last value %r)"
                                 % (timeout, getattr(pred, "__name__", pred), value))
        time.sleep(interval)


# ------------------------------------------------ both upstream transports

_upstream = {"host": "127.0.0.1"}


@pytest.fixture(autouse=True, params=["127.0.0.1", "localhost"], ids=["native", "curl"])
def upstream_host(request):
    """The gateway reaches a backend at a numeric address with its own HTTP
    client (upconn.c) and a named host with libcurl. Import this fixture
    into a test module (it is autouse) to run every test there against
    both transports."""
    _upstream["host"] = request.param
    yield request.param
    _upstream["host"] = "127.0.0.1"


def upstream_hostname():
    """The backend host of the transport under test."""
    return _upstream["host"]


def upstream(mock):
    """The backend URL of mock, through the transport under test."""
    return "http://%s:%d/v1" % (_upstream["host"], mock.port)


def start_mock(mockllm, *args):
    """Start a mockllm and forget the fixture's readiness probe, so counts
    and recorded requests are only what the gateway sent."""
    m = mockllm(*args)
    m.reset()
    return m
