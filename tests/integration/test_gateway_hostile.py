"""Hostile input at the HTTP/1.1 front of promptgate (issue 10, point 3):
request smuggling shapes (Transfer-Encoding with Content-Length, duplicate
Content-Length, bad transfer codings and chunk framing), malformed heads,
oversized heads and bodies, slowloris heads and slow bodies beside a normal
client, pipelining with a framing error in the middle, a request in tiny
writes and 1,000 requests on one keep-alive connection.

Every case talks raw bytes over a socket to a real bin/promptgate on
127.0.0.1 and checks the answer's bytes, that the connection is closed
when the input can no longer be framed, and that nothing reached the
backend that should not have (the mock records what it got).

The application-level cases (JSON, bounds, keys, prompt names, header
injection, secrets, upstream host, admin) are in
test_gateway_hostile_app.py.
"""

import socket
import threading
import time

import pytest

from conftest import mock_backend_config
from helpers import chat, http, start_mock
import json

CHAT = "/v1/chat/completions"

# Small limits keep the cases fast; each test names the one it probes.
LIMITS = {"max_header_bytes": 4096, "max_body_bytes": 65536,
          "header_timeout_ms": 600, "body_timeout_ms": 600,
          "idle_timeout_ms": 5000}


@pytest.fixture
def hg(mockllm, gateway):
    """(mock, gw): a gateway with LIMITS in front of a mock whose record
    holds only what the gateway sent."""
    mock = start_mock(mockllm)
    cfg = mock_backend_config(mock)
    cfg["limits"] = dict(LIMITS)
    return mock, gateway(cfg)


# ------------------------------------------------------------ raw sockets

class Answer:
    """One HTTP answer parsed from raw bytes: .status, .head (bytes of the
    status line and headers), .headers (list of (lower name, value)),
    .body (bytes, de-chunked)."""

    def __init__(self, status, head, headers, body):
        self.status, self.head, self.headers, self.body = status, head, headers, body

    def header(self, name):
        for k, v in self.headers:
            if k == name:
                return v
        return None

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "Answer(%d, %r, %r)" % (self.status, self.head[:300], self.body[:200])


def connect(gw, timeout=5):
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def send(s, data):
    """sendall that tolerates the server closing first (it may answer and
    close before a long body is in)."""
    try:
        s.sendall(data)
        return True
    except (BrokenPipeError, ConnectionResetError):
        return False


def read_to_eof(s, limit=5.0):
    """Every byte until the server closes. Fails the test when it does not
    close within limit seconds. A reset after the answer counts as a close."""
    s.settimeout(limit)
    data = b""
    deadline = time.monotonic() + limit
    while True:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            return data
        except socket.timeout:
            raise AssertionError("connection still open after %ss; got %r"
                                 % (limit, data[-300:]))
        if not chunk:
            return data
        data += chunk
        if time.monotonic() > deadline:
            raise AssertionError("connection still open after %ss" % limit)


def parse_answers(data):
    """The answers in data, in order (Content-Length or chunked framing)."""
    out = []
    while data:
        end = data.find(b"\r\n\r\n")
        assert end >= 0, "truncated head: %r" % data[:300]
        head, data = data[:end], data[end + 4:]
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ")[1])
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers.append((name.decode("latin-1").lower(),
                            value.strip().decode("latin-1")))
        hd = dict(headers)
        if hd.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                eol = data.index(b"\r\n")
                size = int(data[:eol], 16)
                data = data[eol + 2:]
                body += data[:size]
                data = data[size + 2:]
                if size == 0:
                    break
        else:
            n = int(hd.get("content-length", "0"))
            body, data = data[:n], data[n:]
        out.append(Answer(status, head, headers, body))
    return out


def exchange(gw, data, limit=5.0):
    """Send data on a new connection, read to EOF, return the answers."""
    s = connect(gw, limit)
    try:
        send(s, data)
        return parse_answers(read_to_eof(s, limit))
    finally:
        s.close()


def read_answer(s, limit=5.0):
    """Read exactly one answer from a keep-alive connection."""
    s.settimeout(limit)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        assert chunk, "closed before an answer: %r" % data
        data += chunk
    end = data.index(b"\r\n\r\n") + 4
    head = data[:end].lower()
    n = 0
    for line in head.split(b"\r\n"):
        if line.startswith(b"content-length:"):
            n = int(line.split(b":")[1])
    assert b"transfer-encoding: chunked" not in head, head
    while len(data) < end + n:
        chunk = s.recv(65536)
        assert chunk, "closed inside an answer"
        data += chunk
    assert len(data) == end + n, "more bytes than one answer: %r" % data
    return parse_answers(data)[0]


def post(body, extra=b"", path=CHAT):
    """A well-formed POST of body (bytes) with Content-Length."""
    return (b"POST " + path.encode() + b" HTTP/1.1\r\nHost: gw\r\n"
            b"Content-Type: application/json\r\n" + extra +
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


GOOD = json.dumps(chat()).encode()


def only_error(answers, status, code=None):
    """Exactly one answer, an error in OpenAI's shape that closes."""
    assert len(answers) == 1, answers
    a = answers[0]
    assert a.status == status, a
    assert a.header("connection") == "close", a
    if code:
        assert a.json()["error"]["code"] == code, a
    return a


# ---------------------------------------------------- smuggling and framing

def test_te_and_content_length_together_400_and_close(hg):
    """Transfer-Encoding: chunked with Content-Length is the classic
    smuggling shape: 400, Connection: close, the connection is closed, and
    the request hidden in the body is never run (the backend sees nothing)."""
    mock, gw = hg
    smuggled = post(GOOD)
    body = b"0\r\n\r\n" + smuggled
    data = (b"POST " + CHAT.encode() + b" HTTP/1.1\r\nHost: gw\r\n"
            b"Transfer-Encoding: chunked\r\nContent-Length: " +
            str(len(body)).encode() + b"\r\n\r\n" + body)
    only_error(exchange(gw, data), 400)
    assert mock.count() == 0


def test_te_and_content_length_order_reversed(hg):
    """The same with Content-Length first and a mixed-case coding: 400 and
    close."""
    mock, gw = hg
    data = (b"POST " + CHAT.encode() + b" HTTP/1.1\r\nHost: gw\r\n"
            b"Content-Length: 5\r\nTransfer-Encoding: ChUnKeD\r\n\r\n0\r\n\r\n")
    only_error(exchange(gw, data), 400)
    assert mock.count() == 0


@pytest.mark.parametrize("lines", [
    b"Content-Length: %d\r\nContent-Length: %d\r\n",
    b"Content-Length: %d\r\ncontent-length: 5\r\n",
    b"Content-Length: %d, %d\r\n",
], ids=["equal", "different", "list"])
def test_duplicate_content_length_400_and_close(hg, lines):
    """Two Content-Length fields (equal or not) or one listing two values:
    400 and close, whatever the values (RFC 9112 6.3 lets a server merge
    equal ones; refusing is the safe side behind another proxy)."""
    mock, gw = hg
    n = len(GOOD)
    hdr = lines % ((n, n) if lines.count(b"%d") == 2 else (n,))
    data = (b"POST " + CHAT.encode() + b" HTTP/1.1\r\nHost: gw\r\n" + hdr +
            b"\r\n" + GOOD)
    only_error(exchange(gw, data), 400)
    assert mock.count() == 0


@pytest.mark.parametrize("value", [b"+5", b"-1", b"0x10", b"5 5", b"",
                                   b"99999999999999999999999999"])
def test_malformed_content_length_400(hg, value):
    """A Content-Length that is not plain decimal digits is 400 and close;
    one too large for any counter is 400 or 413, never a wrap-around."""
    mock, gw = hg
    data = (b"POST " + CHAT.encode() + b" HTTP/1.1\r\nHost: gw\r\n"
            b"Content-Length: " + value + b"\r\n\r\n" + GOOD)
    a = exchange(gw, data)
    assert len(a) == 1 and a[0].status in ((400, 413) if value.startswith(b"999") else (400,)), a
    assert a[0].header("connection") == "close"
    assert mock.count() == 0


@pytest.mark.parametrize("coding,status", [
    (b"gzip, chunked", 501),      # chunked last, but gzip is not decoded here
    (b"chunked, gzip", 400),      # chunked not last: no framing (RFC 9112 6.3)
    (b"gzip", 400),               # no chunked at all: no framing
    (b"identity", 400),
    (b"x-unknown", 400),
    (b"chunked, chunked", 400),   # chunked twice (RFC 9112 7.1)
    (b"", 400),
], ids=["gzip-chunked", "chunked-gzip", "gzip", "identity", "unknown",
        "chunked-twice", "empty"])
def test_bad_transfer_coding(hg, coding, status):
    """A Transfer-Encoding the gateway cannot frame is 400 (chunked missing
    or not last, or twice); a chunked body under another coding is 501.
    Either way the connection closes and nothing reaches the backend."""
    mock, gw = hg
    data = (b"POST " + CHAT.encode() + b" HTTP/1.1\r\nHost: gw\r\n"
            b"Transfer-Encoding: " + coding + b"\r\n\r\n0\r\n\r\n")
    only_error(exchange(gw, data), status)
    assert mock.count() == 0


def test_two_transfer_encoding_fields_400(hg):
    """Transfer-Encoding given twice (gzip, then chunked) is 400 and close."""
    mock, gw = hg
    data = (b"POST " + CHAT.encode() + b" HTTP/1.1\r\nHost: gw\r\n"
            b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"0\r\n\r\n")
    only_error(exchange(gw, data), 400)
    assert mock.count() == 0


def chunked_post(chunks):
    return (b"POST " + CHAT.encode() + b" HTTP/1.1\r\nHost: gw\r\n"
            b"Content-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + chunks)


@pytest.mark.parametrize("framing", [
    b"zz\r\n",                       # not hex
    b"-5\r\n",                       # negative
    b"0x5\r\n",                      # C prefix
    b" 5\r\n",                       # leading space
    b"\r\n",                         # empty size line
    b"5\nhello\r\n",                 # bare LF after the size
    b"ffffffffffffffffff\r\n",       # 18 hex digits: past 64 bits
], ids=["hex", "negative", "0x", "space", "empty", "bare-lf", "overflow"])
def test_bad_chunk_size_400(hg, framing):
    """A chunk-size line that is not hex digits (plus optional extensions),
    or that overflows 64 bits, is 400 and close; the backend sees nothing."""
    mock, gw = hg
    only_error(exchange(gw, chunked_post(framing + b"hello\r\n0\r\n\r\n")), 400)
    assert mock.count() == 0


def test_chunk_size_just_under_2_64_is_413(hg):
    """A 16-digit chunk size (2^64 - 1) fits the counter and is over
    max_body_bytes: 413 at once, before any of its data is read."""
    mock, gw = hg
    only_error(exchange(gw, chunked_post(b"ffffffffffffffff\r\nabc")), 413,
               "body_too_large")
    assert mock.count() == 0


def flood_413(hg, head, pieces):
    """Sends head, then each of pieces until the gateway stops reading: the
    one answer is 413 body_too_large, then the close, and nothing reached
    the backend."""
    mock, gw = hg
    s = connect(gw)
    try:
        send(s, head)
        for piece in pieces:
            if not send(s, piece):
                break
        a = parse_answers(read_to_eof(s, 3))
    finally:
        s.close()
    only_error(a, 413, "body_too_large")
    assert mock.count() == 0


def test_chunk_size_wrapping_the_total_is_413(hg):
    """After a first chunk of 10 bytes, a chunk of 2^64 - 10 bytes makes
    "total + size" wrap to 0. The limit must still hold: 413 as soon as the
    size is read, never a body that grows past max_body_bytes (the gateway
    used to take such a body without bound)."""
    # the chunk's size line, then data as a client of that chunk sends it
    flood_413(hg, chunked_post(b"a\r\n0123456789\r\nfffffffffffffff6\r\n"),
              [b"x" * 32768] * 4)


def test_missing_crlf_after_chunk_data_400(hg):
    """A chunk's data must be followed by CRLF: 'hello' then 'XX' where the
    CRLF belongs is 400 and close, and the bytes after it are not read as a
    request."""
    mock, gw = hg
    data = chunked_post(b"5\r\nhelloXX0\r\n\r\n") + post(GOOD)
    only_error(exchange(gw, data), 400)
    assert mock.count() == 0


def test_chunk_longer_than_announced_400(hg):
    """Six bytes where the size said five: 400 and close."""
    mock, gw = hg
    only_error(exchange(gw, chunked_post(b"5\r\nhello!\r\n0\r\n\r\n")), 400)
    assert mock.count() == 0


def test_endless_trailers_413(hg):
    """After the last chunk, trailer lines sent without end (each short)
    are framing, bounded like the body: 413 once they pass max_body_bytes
    (64 KiB), not a connection held for as long as the client likes."""
    flood_413(hg, chunked_post(b"0\r\n"),
              (b"X-T%d: " % i + b"t" * 1000 + b"\r\n" for i in range(200)))


def test_long_extension_on_every_tiny_chunk_413(hg):
    """1-byte chunks each carrying a 3 KB chunk extension: the data stays
    tiny but the framing passes max_body_bytes: 413."""
    flood_413(hg, chunked_post(b""), [b"1;e=" + b"e" * 3000 + b"\r\nx\r\n"] * 40)


def test_chunk_size_line_over_4k_400(hg):
    """A chunk-size line (with its extension) longer than 4 KiB without its
    CRLF is malformed: 400 and close, without buffering it further."""
    mock, gw = hg
    data = chunked_post(b"5;e=" + b"e" * 6000)
    only_error(exchange(gw, data), 400)
    assert mock.count() == 0


def test_transfer_encoding_in_http10_400(hg):
    """Transfer-Encoding in an HTTP/1.0 request (which has no chunked
    coding) is 400 and close (RFC 9112 6.1)."""
    mock, gw = hg
    data = chunked_post(b"0\r\n\r\n").replace(b"HTTP/1.1", b"HTTP/1.0", 1)
    only_error(exchange(gw, data), 400)
    assert mock.count() == 0


def test_well_formed_chunked_body_is_served(hg):
    """The control case: a body in three chunks with an extension and a
    trailer is 200 and reaches the backend whole."""
    mock, gw = hg
    body = GOOD
    parts = [body[:10], body[10:30], body[30:]]
    framing = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in parts)
    s = connect(gw)
    try:
        send(s, chunked_post(framing + b"0\r\nX-Trailer: t\r\n\r\n"))
        a = read_answer(s)
    finally:
        s.close()
    assert a.status == 200, a
    assert mock.requests()[-1]["body"] == chat()


# ------------------------------------------------------------ malformed head

@pytest.mark.parametrize("head", [
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nX-A: 1\r\n folded\r\n",
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nNoColonHere\r\n",
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Length : 5\r\n",
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nX-A: a\x00b\r\n",
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nX-A: a\rb\r\n",
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nX-A: a\nContent-Length: 1\r\n",
    b"POST /v1/chat/completions HTTP/1.1\nHost: gw\r\n",
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nX-A: a\x7fb\r\n",
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\n: empty-name\r\n",
    b"POST /v1/chat/com\x00pletions HTTP/1.1\r\nHost: gw\r\n",
    b"POST /v1/chat/completions  HTTP/1.1\r\nHost: gw\r\n",
    b"post /v1/chat/completions HTTP/1.1\r\nHost: gw\r\n",
], ids=["obs-fold", "no-colon", "space-before-colon", "nul-in-value",
        "bare-cr-in-value", "bare-lf-in-value", "bare-lf-in-request-line",
        "del-in-value", "empty-name", "nul-in-target", "double-space",
        "lower-case-method"])
def test_malformed_head_400_and_close(hg, head):
    """Header lines RFC 9112 forbids (obs-fold, no colon, whitespace before
    the colon, NUL, bare CR or LF, DEL, an empty name) and request lines
    that do not parse are 400 and close, and nothing reaches the backend:
    a lenient reading here is what lets a request be smuggled past a
    stricter proxy in front."""
    mock, gw = hg
    data = head + b"Content-Length: " + str(len(GOOD)).encode() + b"\r\n\r\n" + GOOD
    if b"Content-Length" in head:
        data = head + b"\r\n" + GOOD
    only_error(exchange(gw, data), 400)
    assert mock.count() == 0


def test_absolute_form_target_400(hg):
    """`POST http://evil/v1/chat/completions` (absolute-form, as sent to a
    forward proxy): the gateway is not one and answers 400, so no request
    can name the host it goes to; the backend sees nothing."""
    mock, gw = hg
    data = post(GOOD).replace(b"POST " + CHAT.encode(),
                              b"POST http://evil.example" + CHAT.encode())
    only_error(exchange(gw, data), 400)
    assert mock.count() == 0


def test_unknown_http_version_505(hg):
    """A well-formed version other than 1.0/1.1 is 505 and close."""
    mock, gw = hg
    data = post(GOOD).replace(b"HTTP/1.1", b"HTTP/2.0", 1)
    only_error(exchange(gw, data), 505)


def test_overlong_request_line_431(hg):
    """A request line longer than max_header_bytes (4096) is answered 431
    and closed as soon as that many bytes are in, without waiting for its
    end (the client keeps sending)."""
    mock, gw = hg
    s = connect(gw)
    try:
        send(s, b"GET /" + b"a" * 8000)
        t0 = time.monotonic()
        a = parse_answers(read_to_eof(s, 3))
        assert time.monotonic() - t0 < 0.5
    finally:
        s.close()
    assert only_error(a, 431, "headers_too_large")
    assert "request line" in a[0].json()["error"]["message"]


# -------------------------------------------------------- sizes and timeouts

def test_oversized_head_431(hg):
    """A head over max_header_bytes (one 5000-byte header) is 431 and close."""
    mock, gw = hg
    data = post(GOOD, extra=b"X-Big: " + b"b" * 5000 + b"\r\n")
    only_error(exchange(gw, data), 431, "headers_too_large")
    assert mock.count() == 0


def test_too_many_header_fields_431(hg):
    """More than 128 header fields (each small, the head under the byte
    limit) is 431 and close."""
    mock, gw = hg
    extra = b"".join(b"X-%d: 1\r\n" % i for i in range(200))
    only_error(exchange(gw, post(GOOD, extra=extra)), 431, "headers_too_large")
    assert mock.count() == 0


def test_content_length_over_limit_413_before_the_body(hg):
    """Content-Length over max_body_bytes is 413 as soon as the head is in:
    the client has sent no byte of the body and gets the answer, then the
    close."""
    flood_413(hg, b"POST " + CHAT.encode() + b" HTTP/1.1\r\nHost: gw\r\n"
              b"Content-Length: 1000000\r\n\r\n", [])


def test_chunked_total_over_limit_413(hg):
    """Many small chunks adding up past max_body_bytes (64 KiB): 413 and
    close, never a buffered body over the limit."""
    flood_413(hg, chunked_post(b""), [b"400\r\n" + b"x" * 1024 + b"\r\n"] * 100)


def timed_normal_requests(gw, stop, out):
    """Normal requests one after another on fresh connections until stop
    is set; appends each one's (status, seconds) to out."""
    while not stop.is_set():
        t0 = time.monotonic()
        r = http("POST", gw.url + CHAT, chat(), timeout=5)
        out.append((r.status, time.monotonic() - t0))
        time.sleep(0.02)


def test_slowloris_head_closed_at_header_timeout_others_served(hg):
    """A client trickling its head a byte every 50 ms gets 408 and the close
    at header_timeout_ms (600 ms) from its first byte, not later, however
    steadily it sends; a normal client on other connections is served
    promptly the whole time."""
    mock, gw = hg
    stop, normal = threading.Event(), []
    t = threading.Thread(target=timed_normal_requests, args=(gw, stop, normal))
    t.start()
    s = connect(gw)
    try:
        head = b"POST " + CHAT.encode() + b" HTTP/1.1\r\nHost: gw\r\nX-Slow: " + b"s" * 200
        t0 = time.monotonic()
        closed_at = None
        for b in head:
            if not send(s, bytes([b])):
                break
            time.sleep(0.05)
            s.settimeout(0)
            try:
                got = s.recv(65536)
            except BlockingIOError:
                continue
            except ConnectionResetError:
                got = b""
            s.settimeout(5)
            closed_at = time.monotonic() - t0
            rest = got + read_to_eof(s, 3) if got else b""
            break
        assert closed_at is not None, "still open after the whole head"
        assert 0.5 <= closed_at <= 1.3, closed_at
        only_error(parse_answers(rest), 408, "header_timeout")
    finally:
        s.close()
        stop.set()
        t.join()
    assert len(normal) >= 5, normal
    assert all(st == 200 for st, _ in normal), normal
    assert max(d for _, d in normal) < 0.4, normal


def test_slow_body_closed_at_body_timeout_others_served(hg):
    """A client that sends its head and part of its body, then stalls, gets
    408 body_timeout and the close once no byte came for body_timeout_ms
    (600 ms); the backend never sees the request; a normal client is served
    promptly meanwhile."""
    mock, gw = hg
    stop, normal = threading.Event(), []
    t = threading.Thread(target=timed_normal_requests, args=(gw, stop, normal))
    t.start()
    s = connect(gw)
    try:
        send(s, b"POST " + CHAT.encode() + b" HTTP/1.1\r\nHost: gw\r\n"
             b"Content-Length: " + str(len(GOOD)).encode() + b"\r\n\r\n" + GOOD[:10])
        # a few bytes each 300 ms keep it alive (the timeout is per stall)
        for i in range(3):
            time.sleep(0.3)
            send(s, GOOD[10 + i:11 + i])
        t0 = time.monotonic()
        a = parse_answers(read_to_eof(s, 3))
        waited = time.monotonic() - t0
    finally:
        s.close()
        stop.set()
        t.join()
    only_error(a, 408, "body_timeout")
    assert 0.5 <= waited <= 1.3, waited
    assert all(r["path"] == CHAT and r["body"] == chat() for r in mock.requests())
    assert len(normal) >= 5 and all(st == 200 for st, _ in normal), normal
    assert max(d for _, d in normal) < 0.4, normal


def test_out_of_descriptors_pauses_accepting_without_spinning(hg):
    """More clients than the open files limit: the gateway stops accepting
    for a moment at a time instead of retrying accept(2) in a busy loop
    (it spun a core and logged a line per try): little CPU and one warning
    while over the limit; a queued client is served once descriptors are
    free again."""
    import os
    import subprocess
    mock, gw = hg
    pid = gw.proc.pid
    nfds = len(os.listdir("/proc/%d/fd" % pid))
    subprocess.run(["prlimit", "--pid", str(pid), "--nofile=%d:%d" % (nfds + 8, nfds + 8)],
                   check=True)
    cpu = lambda: sum(int(x) for x in open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()[11:13])
    socks = [connect(gw) for _ in range(40)]
    try:
        time.sleep(0.2)
        c0 = cpu()
        time.sleep(1.0)
        ticks = cpu() - c0
        last = socks[-1]  # queued in the backlog, not accepted yet
        send(last, b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n")
        for s in socks[:-1]:
            s.close()
        a = read_answer(last, 3)
        assert a.status == 200, a
    finally:
        for s in socks:
            s.close()
    assert ticks <= 0.2 * os.sysconf("SC_CLK_TCK"), ticks
    warnings = [l for l in gw.stderr_text().splitlines() if "accept" in l]
    assert len(warnings) == 1 and "open files" in warnings[0], warnings
    assert http("GET", gw.url + "/healthz").status == 200


# ------------------------------------------------------------ pipelining

def test_pipelined_framing_error_in_the_middle(hg):
    """Three requests in one write, the third malformed (Transfer-Encoding
    with Content-Length), a fourth good one after it: the first two are
    answered 200 in order, then one 400 with Connection: close, then the
    connection ends; the fourth is never run (the backend got exactly two)."""
    mock, gw = hg
    bad = (b"POST " + CHAT.encode() + b" HTTP/1.1\r\nHost: gw\r\n"
           b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n")
    first = json.dumps(chat(user="first")).encode()
    second = json.dumps(chat(user="second")).encode()
    fourth = json.dumps(chat(user="fourth")).encode()
    data = post(first) + post(second) + bad + post(fourth)
    a = exchange(gw, data)
    assert [x.status for x in a] == [200, 200, 400], a
    assert a[0].header("connection") is None and a[2].header("connection") == "close"
    users = [r["body"]["user"] for r in mock.requests()]
    assert users == ["first", "second"], users


def test_pipelined_bad_content_length_after_good(hg):
    """A good request then one with a non-numeric Content-Length in the
    same write: 200, then 400 and close."""
    mock, gw = hg
    bad = post(GOOD).replace(b"Content-Length: %d" % len(GOOD), b"Content-Length: 1x")
    a = exchange(gw, post(GOOD) + bad + post(GOOD))
    assert [x.status for x in a] == [200, 400], a
    assert mock.count() == 1


def test_two_thousand_pipelined_requests_in_one_write(hg):
    """2,000 GET /healthz pipelined in one write, the client reading only
    after it has written them all (the gateway stops reading ahead while an
    answer waits, so the writer blocks until the reader drains): 2,000
    answers 200, in order, on the one connection."""
    mock, gw = hg
    n = 2000
    req = b"GET /healthz HTTP/1.1\r\nHost: gw\r\nX-Request-Id: r%d\r\n\r\n"
    s = connect(gw, 10)
    t = threading.Thread(target=send, args=(s, b"".join(req % i for i in range(n))))
    t.start()
    data = b""
    try:
        # each answer is 200 with a 33-byte body: count them as they come
        while data.count(b"HTTP/1.1 ") < n or not data.endswith(b"}"):
            chunk = s.recv(65536)
            assert chunk, "closed after %d answers" % data.count(b"HTTP/1.1 ")
            data += chunk
    finally:
        t.join()
        s.close()
    a = parse_answers(data)
    assert [x.status for x in a] == [200] * n
    assert [x.header("x-request-id") for x in a] == ["r%d" % i for i in range(n)]


def test_nothing_after_connection_close_is_run(hg):
    """A request with Connection: close followed by a second one in the
    same write: the first is answered (with Connection: close), the
    connection ends, and the second never reaches the backend."""
    mock, gw = hg
    first = post(json.dumps(chat(user="first")).encode(), extra=b"Connection: close\r\n")
    a = exchange(gw, first + post(json.dumps(chat(user="second")).encode()))
    assert [x.status for x in a] == [200], a
    assert a[0].header("connection") == "close"
    assert [r["body"]["user"] for r in mock.requests()] == ["first"]


def test_expect_continue_over_limit_gets_413_not_100(hg):
    """Expect: 100-continue with a Content-Length over max_body_bytes: the
    client is told 413 at once and never invited to send the body (no
    100 Continue first)."""
    mock, gw = hg
    s = connect(gw)
    try:
        send(s, b"POST " + CHAT.encode() + b" HTTP/1.1\r\nHost: gw\r\n"
             b"Expect: 100-continue\r\nContent-Length: 9999999\r\n\r\n")
        data = read_to_eof(s, 3)
    finally:
        s.close()
    assert not data.startswith(b"HTTP/1.1 100"), data
    only_error(parse_answers(data), 413, "body_too_large")


def test_request_in_tiny_writes(hg):
    """A request sent one byte per TCP write (Nagle off, a pause every few
    bytes so they arrive as separate segments) is read whole: 200, and the
    backend gets the body intact."""
    mock, gw = hg
    body = json.dumps(chat(user="tiny")).encode()
    s = connect(gw)
    try:
        for i, b in enumerate(post(body)):
            s.sendall(bytes([b]))
            if i % 16 == 0:
                time.sleep(0.001)
        a = read_answer(s)
    finally:
        s.close()
    assert a.status == 200, a
    assert mock.requests()[-1]["body"] == chat(user="tiny")


def test_thousand_keepalive_requests_one_connection(hg):
    """1,000 requests one after another on one keep-alive connection: every
    one is answered 200 with keep-alive (no Connection: close), the backend
    counts 1,000, and the gateway's descriptors are as many after as
    before."""
    mock, gw = hg
    import os
    fds = lambda: len(os.listdir("/proc/%d/fd" % gw.proc.pid))
    before = fds()
    s = connect(gw)
    try:
        req = post(GOOD)
        for i in range(1000):
            s.sendall(req)
            a = read_answer(s)
            assert a.status == 200 and a.header("connection") is None, (i, a)
    finally:
        s.close()
    assert mock.count() == 1000
    # the upstream keep-alive pool may hold a connection or two
    from helpers import wait_until
    wait_until(lambda: fds() <= before + 2, timeout=3)


def test_keepalive_requests_do_not_inherit_each_others_parts(hg):
    """A keep-alive connection reuses its last request's buffers and a
    worker its finished upstream calls: each request on one connection
    still carries only its own path, headers and body upstream, whatever
    the one before it held (a long query and many headers, a refused body,
    a GET)."""
    mock, gw = hg
    many = b"".join(b"X-Test-%d: value-%d\r\n" % (i, i) for i in range(20))
    first = post(json.dumps(chat(user="first")).encode(), extra=many,
                 path=CHAT + "?" + "q" * 300)
    second = post(json.dumps(chat(user="second")).encode())
    models = b"GET /v1/models HTTP/1.1\r\nHost: gw\r\n\r\n"
    s = connect(gw)
    try:
        for i, (req, want) in enumerate([(first, 200), (second, 200),
                                         (models, 200),
                                         (post(b'{"model": '), 400),
                                         (second, 200)]):
            s.sendall(req)
            a = read_answer(s)
            assert a.status == want, (i, a)
    finally:
        s.close()
    got = [r for r in mock.requests() if r["path"].startswith("/v1/chat")]
    assert [r["body"]["user"] for r in got] == ["first", "second", "second"]
    assert "x-test-0" in got[0]["headers"] and "x-test-19" in got[0]["headers"]
    for r in got[1:]:
        assert not any(h.startswith("x-test") for h in r["headers"]), r
        assert "q" * 300 not in r["path"], r
