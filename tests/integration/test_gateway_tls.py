"""TLS on the gateway's listener (issue 9, point 4): "tls": {"cert",
"key", "min_version"}. Clients here verify the gateway's certificate (a
self-signed one made by the openssl command line, for IP 127.0.0.1, is
their CA). Covered: answers and streams over https, keep-alive and
pipelining on one TLS connection, a plain-HTTP client and a silent or
half-done handshake closed (the latter at limits.header_timeout_ms),
certificate reload on SIGHUP (new connections get the new one, a stream in
flight finishes on the old, a bad one is refused), the OpenAI Node client
over https, a 1 MB upload, and backpressure under a reader that takes
nothing."""

import contextlib
import hashlib
import http.client as httpclient
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from helpers import BIN, DEFAULT_MODELS, chat, free_port, sse_events, start_mock, wait_until

CHAT = "/v1/chat/completions"
HEADER_MS = 500
MIB = 1 << 20
NODE_DIR = Path(__file__).resolve().parent / "openai-node"


def openssl(*args, cwd):
    subprocess.run(["openssl"] + [str(a) for a in args], cwd=cwd, check=True,
                   capture_output=True, timeout=60)


def make_cert(d, name, days=30):
    """A self-signed P-256 certificate for 127.0.0.1 and localhost:
    (cert path, key path)."""
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", name + ".key", "-out", name + ".pem", "-days", days,
            "-subj", "/CN=promptgate-" + name,
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", cwd=d)
    return d / (name + ".pem"), d / (name + ".key")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """Two unrelated certificates, "a" and "b", and a bundle trusting both."""
    d = tmp_path_factory.mktemp("pki")
    make_cert(d, "a")
    make_cert(d, "b")
    (d / "both.pem").write_bytes((d / "a.pem").read_bytes() + (d / "b.pem").read_bytes())
    return d


def der_sha256(pem_path):
    der = ssl.PEM_cert_to_DER_cert(Path(pem_path).read_text())
    return hashlib.sha256(der).hexdigest()


def client_ctx(cafile):
    ctx = ssl.create_default_context(cafile=str(cafile))  # verifies name and chain
    return ctx


def tls_config(mock, cert, key, limits=None, **tls):
    t = {"cert": str(cert), "key": str(key)}
    t.update(tls)
    lim = {"header_timeout_ms": HEADER_MS, "body_timeout_ms": 5000, "idle_timeout_ms": 10000,
           "drain_timeout_ms": 3000, "max_body_bytes": 4 * MIB, "max_header_bytes": 8192}
    lim.update(limits or {})
    return {"backends": [{"name": "mock", "url": mock.base, "models": list(DEFAULT_MODELS),
                          "timeout_ms": 60000}],
            "limits": lim, "access_log": "stderr", "tls": t}


def https_conn(gw, cafile, timeout=10):
    return httpclient.HTTPSConnection("127.0.0.1", gw.port, timeout=timeout,
                                      context=client_ctx(cafile))


def https(gw, cafile, method, path, body=None, headers=None, timeout=10):
    """One request on a new TLS connection: (status, headers dict, body
    bytes, sha256 of the certificate the gateway showed)."""
    conn = https_conn(gw, cafile, timeout)
    try:
        hdrs = dict(headers or {})
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        conn.request(method, path, body=data, headers=hdrs)
        r = conn.getresponse()
        payload = r.read()
        fp = hashlib.sha256(conn.sock.getpeercert(binary_form=True)).hexdigest()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, payload, fp
    finally:
        conn.close()


def start_tls_gateway(gateway, config, cafile):
    """The fixture's gateway, waited for over https (its own readiness probe
    speaks plain HTTP)."""
    gw = gateway(config, wait=False)
    gw._wait_ready(lambda: https(gw, cafile, "GET", "/healthz", timeout=2)[0] == 200,
                   "answering GET /healthz 200 over https")
    return gw


@pytest.fixture
def tls_gw(mockllm, gateway, pki):
    """(mock, gw) with certificate "a"."""
    mock = start_mock(mockllm)
    gw = start_tls_gateway(gateway, tls_config(mock, pki / "a.pem", pki / "a.key"), pki / "a.pem")
    return mock, gw


@contextlib.contextmanager
def tls_socket(gw, ctx, timeout=5, session=None):
    """A TLS connection to gw that ctx verifies, closed on the way out,
    also when the handshake or the test fails."""
    raw = socket.create_connection(("127.0.0.1", gw.port), timeout=timeout)
    try:
        s = ctx.wrap_socket(raw, server_hostname="127.0.0.1", session=session)
    except BaseException:
        raw.close()
        raise
    with s:
        yield s


def read_until_closed(s, limit=5.0):
    """Everything s receives until the peer closes (b"" or a reset)."""
    s.settimeout(limit)
    got = b""
    while True:
        try:
            buf = s.recv(65536)
        except (ConnectionResetError, ssl.SSLError):
            return got
        if not buf:
            return got
        got += buf


# ------------------------------------------------------------ serving


def test_chat_and_stream_over_https(tls_gw, pki):
    mock, gw = tls_gw
    status, hdrs, body, fp = https(gw, pki / "a.pem", "POST", CHAT, chat())
    assert status == 200, body
    assert json.loads(body)["choices"][0]["message"]["content"].startswith("tok0")
    assert fp == der_sha256(pki / "a.pem")

    status, hdrs, body, _ = https(gw, pki / "a.pem", "POST", CHAT, chat(stream=True))
    assert status == 200, body
    assert hdrs["content-type"].startswith("text/event-stream")
    events = sse_events(body)
    assert events[-1] == "[DONE]"
    text = "".join(json.loads(e)["choices"][0]["delta"].get("content", "")
                   for e in events[:-1])
    assert text.split() == ["tok%d" % i for i in range(16)]
    assert mock.count() == 2


def test_alpn_is_http11_and_version_floor(tls_gw, pki):
    _, gw = tls_gw
    ctx = client_ctx(pki / "a.pem")
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    with tls_socket(gw, ctx) as s:
        assert s.selected_alpn_protocol() == "http/1.1"
        assert s.version() in ("TLSv1.2", "TLSv1.3")
    # a client that speaks h2 only is refused at the handshake
    ctx = client_ctx(pki / "a.pem")
    ctx.set_alpn_protocols(["h2"])
    with pytest.raises(ssl.SSLError):
        with tls_socket(gw, ctx):
            pass
    assert gw.alive()


def test_min_version_13_refuses_tls12(mockllm, gateway, pki):
    mock = start_mock(mockllm)
    gw = start_tls_gateway(gateway, tls_config(mock, pki / "a.pem", pki / "a.key",
                                               min_version="1.3"), pki / "a.pem")
    ctx = client_ctx(pki / "a.pem")
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError):
        with tls_socket(gw, ctx):
            pass
    with tls_socket(gw, client_ctx(pki / "a.pem")) as s:
        assert s.version() == "TLSv1.3"


def test_keepalive_on_one_tls_connection(tls_gw, pki):
    """Several requests, streams among them, on one connection: one
    handshake, every answer whole."""
    mock, gw = tls_gw
    conn = https_conn(gw, pki / "a.pem")
    try:
        sock = None
        for i in range(12):
            stream = i % 3 == 2
            conn.request("POST", CHAT, body=json.dumps(chat(stream=stream)),
                         headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            body = r.read()
            assert r.status == 200, body
            if stream:
                assert sse_events(body)[-1] == "[DONE]"
            else:
                assert json.loads(body)["object"] == "chat.completion"
            if sock is None:
                sock = conn.sock
            assert conn.sock is sock, "the connection was not kept alive"
    finally:
        conn.close()
    assert mock.count() == 12


def test_pipelined_requests_in_separate_records(tls_gw, pki):
    """Ten requests sent back to back, each its own TLS record, before any
    answer is read: OpenSSL holds the later ones once the first is read,
    and they must be answered without the socket becoming readable again."""
    _, gw = tls_gw
    # 4 KB each: 40 KB in all, more than one read takes (16 KB) and than
    # the gateway reads ahead of the request it answers (max_header_bytes)
    body = json.dumps(chat(messages=[{"role": "user", "content": "y" * 4000}])).encode()
    req = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
           b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)) + body
    ctx = client_ctx(pki / "a.pem")
    with tls_socket(gw, ctx, timeout=10) as s:
        for _ in range(10):
            s.sendall(req)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        got = read_until_closed(s, 10)
    assert got.count(b"HTTP/1.1 200 ") == 11, got[:500]
    assert got.count(b'"object":"chat.completion"') == 10


# ------------------------------------------------------------ hostile


def test_plain_http_client_is_closed(tls_gw, pki):
    _, gw = tls_gw
    # told so in plain HTTP (OpenSSL recognises the method), then closed
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        got = read_until_closed(s)
    head, _, body = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 Bad Request"), got
    assert b"connection: close" in head.lower()
    assert json.loads(body)["error"]["code"] == "plain_http_to_https_port"
    # garbage that is not even HTTP
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as s:
        s.sendall(os.urandom(4096))
        read_until_closed(s)
    assert gw.alive()
    assert https(gw, pki / "a.pem", "GET", "/healthz")[0] == 200


@pytest.mark.parametrize("what", ["nothing", "half a client hello", "handshake, no request"])
def test_unfinished_handshake_closed_at_header_timeout(tls_gw, pki, what):
    _, gw = tls_gw
    raw = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
    try:
        t0 = time.monotonic()
        s = raw
        if what == "half a client hello":
            # a handshake record header announcing 512 bytes, and 4 of them
            raw.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc")
        elif what == "handshake, no request":
            s = client_ctx(pki / "a.pem").wrap_socket(raw, server_hostname="127.0.0.1")
        got = read_until_closed(s, 5)
        took = time.monotonic() - t0
    finally:
        raw.close()
    assert b"HTTP/1.1" not in got
    assert HEADER_MS / 1000.0 * 0.8 <= took < HEADER_MS / 1000.0 + 2.5, took
    assert gw.alive()


# ------------------------------------------------------------ reload


def swap_cert(pki, live, name):
    """Put certificate `name` at live's cert and key paths, as a renewal
    does (each file replaced whole)."""
    for ext in (".pem", ".key"):
        tmp = live / ("tmp" + ext)
        shutil.copyfile(pki / (name + ext), tmp)
        os.replace(tmp, live / ("cert" + ext))


def test_reload_new_cert_for_new_connections_stream_finishes(mockllm, gateway, pki, tmp_path):
    mock = start_mock(mockllm, "--tokens", "60", "--token-delay-ms", "25")
    live = tmp_path / "live"
    live.mkdir()
    swap_cert(pki, live, "a")
    cfg = tls_config(mock, live / "cert.pem", live / "cert.key")
    gw = start_tls_gateway(gateway, cfg, pki / "both.pem")
    fp_a, fp_b = der_sha256(pki / "a.pem"), der_sha256(pki / "b.pem")
    assert https(gw, pki / "both.pem", "GET", "/healthz")[3] == fp_a

    # a stream of 60 tokens, 25 ms apart, in flight on certificate a
    conn = https_conn(gw, pki / "both.pem", timeout=20)
    try:
        conn.request("POST", CHAT, body=json.dumps(chat(stream=True)),
                     headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        assert r.status == 200
        first = r.readline()
        assert first.startswith(b"data: ")
        assert hashlib.sha256(conn.sock.getpeercert(binary_form=True)).hexdigest() == fp_a

        swap_cert(pki, live, "b")
        gw.reload(cfg)
        wait_until(lambda: "tls: certificate reloaded" in gw.stderr_text(), timeout=5)
        # new connections get b, while the stream goes on
        assert wait_until(lambda: https(gw, pki / "both.pem", "GET", "/healthz")[3] == fp_b,
                          timeout=5)
        status, _, body, fp = https(gw, pki / "both.pem", "POST", CHAT, chat(max_tokens=1))
        assert status == 200 and fp == fp_b
        rest = first + r.read()
    finally:
        conn.close()
    events = sse_events(rest)
    assert events[-1] == "[DONE]", rest[-300:]
    text = "".join(json.loads(e)["choices"][0]["delta"].get("content", "")
                   for e in events[:-1])
    assert len(text.split()) == 60
    assert gw.stderr_text().count("tls: certificate reloaded") == 1


def test_bad_cert_on_reload_is_refused(mockllm, gateway, pki, tmp_path):
    mock = start_mock(mockllm)
    cfg = tls_config(mock, pki / "a.pem", pki / "a.key")
    gw = start_tls_gateway(gateway, cfg, pki / "both.pem")
    fp_a = der_sha256(pki / "a.pem")
    (tmp_path / "junk.pem").write_text("-----BEGIN CERTIFICATE-----\nnot base64\n")
    bad = [(tls_config(mock, pki / "a.pem", pki / "b.key"), "tls.key: does not match tls.cert"),
           (tls_config(mock, tmp_path / "gone.pem", pki / "a.key"), "tls.cert: cannot read"),
           (tls_config(mock, tmp_path / "junk.pem", pki / "a.key"), "tls.cert: no PEM certificate")]
    for n, (new, message) in enumerate(bad, 1):
        gw.reload(new)
        wait_until(lambda: gw.stderr_text().count("reload refused") == n, timeout=5)
        assert message in gw.stderr_text()
        status, _, _, fp = https(gw, pki / "both.pem", "POST", CHAT, chat())
        assert status == 200 and fp == fp_a
    assert "tls: certificate reloaded" not in gw.stderr_text()


def test_check_prints_subject_and_expiry(gateway_check, mockllm, pki, tmp_path):
    mock = start_mock(mockllm)
    rc, out, err = gateway_check(tls_config(mock, pki / "a.pem", pki / "a.key"))
    assert rc == 0, err
    assert "subject 'CN=promptgate-a'" in out and "notAfter 20" in out, out
    assert "warning" not in err
    cert, key = make_cert(tmp_path, "soon", days=3)
    rc, out, err = gateway_check(tls_config(mock, cert, key))
    assert rc == 0, err
    assert "warning: tls certificate" in err, err
    assert "expires in 2 days" in err or "expires in 3 days" in err, err
    rc, out, err = gateway_check(tls_config(mock, pki / "a.pem", pki / "b.key"))
    assert rc == 1
    assert "tls.key: does not match tls.cert" in err


# ------------------------------------------------------------ clients and load


def test_openai_node_client_over_https(mockllm, gateway, pki):
    from test_gateway_openai_node import ensure_node_modules
    node = ensure_node_modules()
    mock = start_mock(mockllm)
    key = "sk-backend-for-node-tls"
    cfg = tls_config(mock, pki / "a.pem", pki / "a.key",
                     limits={"header_timeout_ms": 5000, "idle_timeout_ms": 30000})
    cfg["backends"][0]["api_key"] = "env:PG_TEST_NODE_KEY"
    gw = gateway(cfg, env={"PG_TEST_NODE_KEY": key}, wait=False)
    gw._wait_ready(lambda: https(gw, pki / "a.pem", "GET", "/healthz", timeout=2)[0] == 200,
                   "answering over https")
    env = dict(os.environ)
    env.pop("OPENAI_API_KEY", None)
    env.pop("OPENAI_BASE_URL", None)
    env["NODE_EXTRA_CA_CERTS"] = str(pki / "a.pem")
    r = subprocess.run([node, "check.mjs", "--base", "https://127.0.0.1:%d/v1" % gw.port,
                        "--mock", mock.url, "--backend-key", key],
                       cwd=NODE_DIR, capture_output=True, text=True, timeout=120, env=env)
    out = r.stdout + r.stderr
    assert r.returncode == 0 and "0 failed" in r.stdout, out
    assert gw.alive()


def test_big_upload(tls_gw, pki):
    """A 1 MB body over TLS reaches the backend whole (the mock estimates
    prompt tokens as its bytes / 4)."""
    mock, gw = tls_gw
    body = json.dumps(chat(messages=[{"role": "user", "content": "x" * MIB}])).encode()
    status, _, answer, _ = https(gw, pki / "a.pem", "POST", CHAT, body, timeout=30)
    assert status == 200, answer[:300]
    assert json.loads(answer)["usage"]["prompt_tokens"] >= MIB // 4
    got = mock.requests()[-1]["body"]
    assert got["messages"][0]["content"] == "x" * MIB


def _is_asan(exe):
    with open(exe, "rb") as f:
        return b"__asan_init" in f.read()


def test_backpressure_slow_tls_reader(mockllm, gateway, pki):
    """A client reads nothing while a big fast stream flows over TLS: the
    mock's count of written events stops growing (the gateway paused the
    upstream) with the stream still open; then the client reads it all."""
    mock = start_mock(mockllm, "--tokens", "200000", "--token-delay-ms", "0")
    gw = start_tls_gateway(gateway, tls_config(mock, pki / "a.pem", pki / "a.key"),
                           pki / "a.pem")
    per_token = len(https(gw, pki / "a.pem", "POST", CHAT, chat(stream=True),
                          headers={"x-mock-fault": "tokens=100"})[2]) / 100.0
    target = (48 if _is_asan(BIN / "promptgate") else 128) * MIB
    tokens = min(1000000, int(target / per_token))
    events0 = mock.stats()["stream_events"]
    body = json.dumps(chat(stream=True)).encode()
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    raw.settimeout(30)
    raw.connect(("127.0.0.1", gw.port))
    s = client_ctx(pki / "a.pem").wrap_socket(raw, server_hostname="127.0.0.1")
    try:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                  b"content-type: application/json\r\nx-mock-fault: tokens=%d\r\n"
                  b"content-length: %d\r\n\r\n" % (tokens, len(body)) + body)
        time.sleep(1.0)
        held = None
        deadline = time.monotonic() + 15.0
        while time.monotonic() < deadline:
            e1 = mock.stats()["stream_events"]
            time.sleep(0.3)
            if mock.stats()["stream_events"] == e1:
                held = e1 - events0
                break
        assert held is not None, "the mock kept writing while the client read nothing"
        assert mock.stats()["active_streams"] == 1, "the upstream stream should be paused, not done"
        assert held < tokens // 2, "%d of %d events left the mock" % (held, tokens)
        assert held * per_token < 48 * MIB
        # now read everything
        received = 0
        tail = b""
        while True:
            buf = s.recv(1 << 20)
            if not buf:
                break
            received += len(buf)
            tail = (tail + buf)[-64:]
            if tail.endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n"):
                break
    finally:
        s.close()
    assert tail.endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n"), tail
    assert received > tokens * per_token * 0.9
    assert mock.stats()["stream_events"] - events0 >= tokens


def test_client_abort_cancels_upstream(mockllm, gateway, pki):
    """A TLS client that drops a stream half-way: the upstream stream is
    cancelled (on_close), the gateway goes on serving."""
    mock = start_mock(mockllm, "--tokens", "400", "--token-delay-ms", "20")
    gw = start_tls_gateway(gateway, tls_config(mock, pki / "a.pem", pki / "a.key"),
                           pki / "a.pem")
    conn = https_conn(gw, pki / "a.pem")
    try:
        conn.request("POST", CHAT, body=json.dumps(chat(stream=True)),
                     headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        assert r.status == 200
        assert r.readline().startswith(b"data: ")
        wait_until(lambda: mock.stats()["active_streams"] == 1, timeout=5)
    finally:
        conn.sock.close()
        conn.close()
    wait_until(lambda: mock.stats()["active_streams"] == 0, timeout=5,
               message="the upstream stream was not cancelled")
    assert https(gw, pki / "a.pem", "POST", CHAT, chat(max_tokens=2))[0] == 200


def test_upstream_tls_failures_do_not_disturb_the_listener(mockllm, gateway, pki):
    """libcurl's TLS to an upstream shares OpenSSL (and its per-thread
    error queue) with the listener: a backend whose handshake fails (the
    mock speaks plain HTTP on an https:// URL) between requests on one
    keep-alive TLS connection must not break that connection."""
    mock = start_mock(mockllm)
    port = free_port()
    cfg = tls_config(mock, pki / "a.pem", pki / "a.key")
    cfg["listen"] = "127.0.0.1:%d" % port
    # the gateway itself, whose certificate libcurl does not trust
    cfg["backends"] = [
        {"name": "mock", "url": mock.base, "models": ["qwen2.5-7b"]},
        {"name": "broken", "url": "https://localhost:%d/v1" % port,
         "models": ["gpt-4o-mini"], "timeout_ms": 3000}]
    gw = start_tls_gateway(gateway, cfg, pki / "a.pem")
    conn = https_conn(gw, pki / "a.pem")
    try:
        sock = None
        for i in range(6):
            model = "gpt-4o-mini" if i % 2 == 0 else "qwen2.5-7b"
            conn.request("POST", CHAT, body=json.dumps(chat(model=model)),
                         headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            body = r.read()
            if model == "qwen2.5-7b":
                assert r.status == 200, body
            else:
                assert r.status in (502, 503), body
                assert b"certificate" in body.lower(), body
            sock = sock or conn.sock
            assert conn.sock is sock, "the TLS connection was dropped"
    finally:
        conn.close()


def test_two_workers_share_one_context(mockllm, gateway, pki, tmp_path):
    """workers: 2: every connection, whichever worker the kernel hands it
    to, resumes the session of the first (one SSL_CTX, so one ticket key),
    and after a reload every new connection gets the new certificate."""
    mock = start_mock(mockllm)
    live = tmp_path / "live"
    live.mkdir()
    swap_cert(pki, live, "a")
    cfg = tls_config(mock, live / "cert.pem", live / "cert.key")
    cfg["workers"] = 2
    gw = start_tls_gateway(gateway, cfg, pki / "both.pem")
    ctx = client_ctx(pki / "both.pem")
    req = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"

    def connect(session=None):
        with tls_socket(gw, ctx, session=session) as s:
            s.sendall(req)
            got = read_until_closed(s)  # TLS 1.3 tickets arrive with the answer
            assert got.startswith(b"HTTP/1.1 200"), got
            fp = hashlib.sha256(s.getpeercert(binary_form=True)).hexdigest()
            return s.session, s.session_reused, fp

    session, _, fp = connect()
    assert fp == der_sha256(pki / "a.pem")
    reused = [connect(session)[1] for _ in range(16)]
    assert all(reused), reused
    swap_cert(pki, live, "b")
    gw.reload(cfg)
    wait_until(lambda: "tls: certificate reloaded" in gw.stderr_text(), timeout=5)
    fp_b = der_sha256(pki / "b.pem")
    # both workers applied it (the second through its mailbox)
    wait_until(lambda: all(connect()[2] == fp_b for _ in range(16)), timeout=5)
    assert gw.stderr_text().count("tls: certificate reloaded") == 1


def test_no_descriptor_leaks_from_broken_clients(tls_gw, pki):
    """Clients that reset during the handshake, after it, or mid-answer,
    send garbage or nothing: every connection's descriptor and SSL are
    released (the count of open descriptors comes back)."""
    _, gw = tls_gw
    fd_dir = "/proc/%d/fd" % gw.proc.pid
    assert https(gw, pki / "a.pem", "GET", "/healthz")[0] == 200
    base = len(os.listdir(fd_dir))
    ctx = client_ctx(pki / "a.pem")
    linger0 = b"\x01\x00\x00\x00\x00\x00\x00\x00"  # SO_LINGER 0: close sends RST
    for i in range(60):
        raw = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger0)
        kind = i % 4
        try:
            if kind == 0:
                raw.sendall(b"\x16\x03\x01\x00\x05\x01\x00")  # a bit of a hello
            elif kind == 1:
                s = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
                raw = s
            elif kind == 2:
                s = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
                s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                          b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
                raw = s
            else:
                raw.sendall(os.urandom(300))
        finally:
            raw.close()
    wait_until(lambda: len(os.listdir(fd_dir)) <= base, timeout=5,
               message="descriptors left open by broken TLS clients")
    assert https(gw, pki / "a.pem", "POST", CHAT, chat())[0] == 200
