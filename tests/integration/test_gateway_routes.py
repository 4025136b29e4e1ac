"""promptgate's HTTP surface against a real mockllm (issue 2, point 4):
routes, OpenAI-shaped errors, request ids, what is sent upstream (body,
Authorization, forwarded headers), model routing and keep-alive."""

import http.client
import json
import re
import socket

import pytest

from helpers import DEFAULT_MODELS, chat, completion, embedding, http as request, wait_until

CHAT = "/v1/chat/completions"


# upstream_host: an autouse fixture, imported so that every test here runs
# against both upstream transports (own client and libcurl)
from helpers import start_mock, upstream, upstream_host, upstream_hostname  # noqa: E402,F401


def config(*backends, **top):
    cfg = {"limits": {"max_body_bytes": 65536, "header_timeout_ms": 2000,
                      "body_timeout_ms": 2000, "idle_timeout_ms": 5000,
                      "drain_timeout_ms": 2000},
           "backends": list(backends), "access_log": "stderr"}
    cfg.update(top)
    return cfg


def backend(mock, name="mock", models=None, **extra):
    b = {"name": name, "url": upstream(mock), "models": list(models or DEFAULT_MODELS),
         "timeout_ms": 5000}
    b.update(extra)
    return b


def assert_openai_error(r, status, code):
    """r is an OpenAI-shaped JSON error with this status and code (None:
    any non-empty code; a tuple: one of them)."""
    assert r.status == status, r
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers
    body = r.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    if code is None:
        assert isinstance(err.get("code"), str) and err["code"], body
    elif isinstance(code, tuple):
        assert err.get("code") in code, body
    else:
        assert err.get("code") == code, body
    assert isinstance(err.get("message"), str) and err["message"], body
    assert isinstance(err.get("type"), str) and err["type"], body
    assert r.headers.get("x-request-id"), r.headers


@pytest.fixture
def mg(mockllm, gateway):
    mock = start_mock(mockllm)
    gw = gateway(config(backend(mock)))
    return mock, gw


# ---------------------------------------------------------------- health

def test_healthz_and_readyz(mg):
    _, gw = mg
    for path in ("/healthz", "/readyz"):
        r = request("GET", gw.url + path)
        assert r.status == 200, (path, r)
        assert r.headers.get("x-request-id"), r.headers


def test_models_lists_every_configured_model(mockllm, gateway):
    a, b = start_mock(mockllm), start_mock(mockllm)
    gw = gateway(config(backend(a, "a", ["qwen2.5-7b", "gpt-4o-mini"]),
                        backend(b, "b", ["gpt-4o-mini", "text-embedding-3-small"])))
    r = request("GET", gw.url + "/v1/models")
    assert r.status == 200, r
    assert r.headers.get("content-type", "").startswith("application/json")
    body = r.json()
    assert body["object"] == "list"
    ids = [m["id"] for m in body["data"]]
    assert sorted(ids) == sorted(DEFAULT_MODELS), ids
    for m in body["data"]:
        assert m["object"] == "model", m
    assert r.headers.get("x-request-id"), r.headers
    # answered by the gateway itself
    assert a.count() == 0 and b.count() == 0


# ---------------------------------------------------------------- proxying

def test_chat_completion_is_proxied(mg):
    mock, gw = mg
    body = chat(max_tokens=5, temperature=0.25, user="u-1",
                messages=[{"role": "system", "content": "be brief"},
                          {"role": "user", "content": "héllo wörld \u2603"}],
                metadata={"nested": {"list": [1, 2.5, None, True]}})
    r = request("POST", gw.url + CHAT, body=body)
    assert r.status == 200, r
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers
    assert r.headers.get("x-promptgate-backend") == "mock", r.headers
    assert r.headers.get("x-request-id")
    out = r.json()
    assert out["object"] == "chat.completion" and out["model"] == "qwen2.5-7b", out
    assert out["id"].startswith("chatcmpl-mock-"), out
    u = out["usage"]
    assert u["completion_tokens"] == 5 and u["total_tokens"] == u["prompt_tokens"] + 5, u
    reqs = mock.requests()
    assert len(reqs) == 1, reqs
    up = reqs[0]
    assert up["method"] == "POST" and up["path"] == CHAT, up
    assert up["body"] == body, "body changed on the way: %r" % up["body"]


def test_answer_body_is_relayed_unchanged(mg):
    """The gateway's answer equals the mock's own answer to the same
    request (apart from the mock's per-request id and timestamp)."""
    mock, gw = mg
    body = chat(max_tokens=7)
    via = request("POST", gw.url + CHAT, body=body).json()
    direct = request("POST", mock.base + "/chat/completions", body=body).json()
    for d in (via, direct):
        d.pop("id")
        d.pop("created")
    assert via == direct


def test_completions_and_embeddings_are_proxied(mg):
    mock, gw = mg
    r = request("POST", gw.url + "/v1/completions", body=completion(max_tokens=3))
    assert r.status == 200, r
    assert r.json()["object"] == "text_completion", r
    assert r.json()["usage"]["completion_tokens"] == 3
    r = request("POST", gw.url + "/v1/embeddings", body=embedding(input=["a", "b"]))
    assert r.status == 200, r
    out = r.json()
    assert out["object"] == "list" and len(out["data"]) == 2, out
    assert all(isinstance(x, float) for x in out["data"][0]["embedding"]), out
    assert r.headers.get("x-promptgate-backend") == "mock"
    paths = [q["path"] for q in mock.requests()]
    assert paths == ["/v1/completions", "/v1/embeddings"], paths


def test_model_picks_the_backend(mockllm, gateway):
    a, b = start_mock(mockllm), start_mock(mockllm)
    gw = gateway(config(backend(a, "alpha", ["qwen2.5-7b"]),
                        backend(b, "beta", ["gpt-4o-mini", "text-embedding-3-small"])))
    r = request("POST", gw.url + CHAT, body=chat("qwen2.5-7b"))
    assert r.status == 200 and r.headers.get("x-promptgate-backend") == "alpha", r
    r = request("POST", gw.url + CHAT, body=chat("gpt-4o-mini"))
    assert r.status == 200 and r.headers.get("x-promptgate-backend") == "beta", r
    assert r.json()["model"] == "gpt-4o-mini"
    r = request("POST", gw.url + "/v1/embeddings", body=embedding())
    assert r.status == 200 and r.headers.get("x-promptgate-backend") == "beta", r
    assert [q["body"]["model"] for q in a.requests()] == ["qwen2.5-7b"]
    assert [q["body"]["model"] for q in b.requests()] == ["gpt-4o-mini", "text-embedding-3-small"]


# ---------------------------------------------------------------- upstream headers

def test_backend_key_replaces_client_key(mockllm, gateway):
    mock = start_mock(mockllm)
    key = "sk-backend-0123456789"
    gw = gateway(config(backend(mock, api_key="env:PG_TEST_BACKEND_KEY")),
                 env={"PG_TEST_BACKEND_KEY": key})
    r = request("POST", gw.url + CHAT, body=chat(),
                headers={"Authorization": "Bearer sk-client-secret-abc"})
    assert r.status == 200, r
    up = mock.requests()[-1]["headers"]
    assert up.get("authorization") == "Bearer " + key, up
    assert "sk-client-secret-abc" not in json.dumps(up)


def test_client_key_not_forwarded_without_backend_key(mg):
    mock, gw = mg
    r = request("POST", gw.url + CHAT, body=chat(),
                headers={"Authorization": "Bearer sk-client-secret-def"})
    assert r.status == 200, r
    up = mock.requests()[-1]["headers"]
    assert "authorization" not in up, up
    assert "sk-client-secret-def" not in json.dumps(up)


def test_literal_api_key(mockllm, gateway):
    mock = start_mock(mockllm)
    gw = gateway(config(backend(mock, api_key="sk-literal-key")))
    assert request("POST", gw.url + CHAT, body=chat()).status == 200
    assert mock.requests()[-1]["headers"].get("authorization") == "Bearer sk-literal-key"


def test_client_headers_are_forwarded(mg):
    mock, gw = mg
    r = request("POST", gw.url + CHAT, body=chat(),
                headers={"x-mock-fault": "tokens=3", "x-custom-thing": "value 42",
                         "openai-organization": "org-1"})
    assert r.status == 200, r
    assert r.json()["usage"]["completion_tokens"] == 3, "x-mock-fault did not reach the mock"
    up = mock.requests()[-1]["headers"]
    assert up.get("x-mock-fault") == "tokens=3", up
    assert up.get("x-custom-thing") == "value 42", up
    assert up.get("openai-organization") == "org-1", up
    assert up.get("content-type", "").startswith("application/json"), up


def test_hop_by_hop_headers_not_forwarded(mg):
    """RFC 9110 7.6.1: Connection, the headers it names, Keep-Alive,
    Proxy-Connection, TE, Upgrade and Proxy-Authorization stay on the
    client's hop; end-to-end headers go through."""
    mock, gw = mg
    r = request("POST", gw.url + CHAT, body=chat(), headers={
        "Connection": "keep-alive, x-drop-me",
        "x-drop-me": "1",
        "Keep-Alive": "timeout=5",
        "Proxy-Connection": "keep-alive",
        "TE": "trailers",
        "Upgrade": "h2c",
        "Proxy-Authorization": "Basic c2VjcmV0",
        "x-keep-me": "2"})
    assert r.status == 200, r
    up = mock.requests()[-1]["headers"]
    for h in ("keep-alive", "proxy-connection", "te", "upgrade", "proxy-authorization"):
        assert h not in up, "hop-by-hop header %r forwarded: %r" % (h, up)
    assert up.get("x-keep-me") == "2", up
    assert "x-drop-me" not in up.get("connection", "").lower(), up
    assert "x-drop-me" not in up, "a header named in Connection was forwarded: %r" % up


# ---------------------------------------------------------------- request ids

def test_request_id_kept_when_given(mg):
    mock, gw = mg
    r = request("POST", gw.url + CHAT, body=chat(), headers={"x-request-id": "req-abc_123.x"})
    assert r.headers.get("x-request-id") == "req-abc_123.x", r.headers
    r = request("GET", gw.url + "/no/such/route", headers={"x-request-id": "req-404"})
    assert r.headers.get("x-request-id") == "req-404", r.headers
    r = request("POST", gw.url + CHAT, body=chat("nope"), headers={"x-request-id": "req-model"})
    assert r.status == 404 and r.headers.get("x-request-id") == "req-model", r.headers


def test_request_id_generated_when_absent(mg):
    _, gw = mg
    ids = set()
    for _ in range(5):
        r = request("POST", gw.url + CHAT, body=chat())
        rid = r.headers.get("x-request-id", "")
        assert re.fullmatch(r"[A-Za-z0-9._:-]{8,128}", rid), rid
        ids.add(rid)
    assert len(ids) == 5, ids


@pytest.mark.parametrize("bad", ["x" * 1000, "has space", "caf\xe9", ""])
def test_insane_request_id_is_replaced(mg, bad):
    _, gw = mg
    r = request("POST", gw.url + CHAT, body=chat(), headers={"x-request-id": bad})
    assert r.status == 200, r
    rid = r.headers.get("x-request-id", "")
    assert rid and rid != bad, rid
    assert len(rid) <= 128, rid


def test_control_character_in_request_id(mg):
    """A control character makes the header invalid (RFC 9110): either the
    request is refused with a 400 in OpenAI's shape, or the id is replaced;
    the bad value is never echoed."""
    _, gw = mg
    r = request("POST", gw.url + CHAT, body=chat(), headers={"x-request-id": "ctl\x01char"})
    if r.status == 400:
        assert_openai_error(r, 400, None)
    else:
        assert r.status == 200, r
    rid = r.headers.get("x-request-id", "")
    assert rid and "\x01" not in rid, rid


# ---------------------------------------------------------------- errors

def test_unknown_route_404(mg):
    mock, gw = mg
    for method, path in (("GET", "/"), ("GET", "/v1/nothing"), ("POST", "/v1/chat"),
                         ("POST", "/v2/chat/completions")):
        r = request(method, gw.url + path, body=chat() if method == "POST" else None)
        assert_openai_error(r, 404, None)
    assert mock.count() == 0


def test_wrong_method_405(mg):
    mock, gw = mg
    for method, path in (("GET", CHAT), ("PUT", CHAT), ("DELETE", "/v1/embeddings"),
                         ("POST", "/v1/models"), ("GET", "/v1/completions")):
        r = request(method, gw.url + path)
        assert r.status == 405, (method, path, r)
        assert r.json()["error"]["message"], r
        assert r.headers.get("content-type", "").startswith("application/json")
        assert r.headers.get("x-request-id"), r.headers
    assert mock.count() == 0


@pytest.mark.parametrize("raw", [b"{", b"not json", b'{"model": "qwen2.5-7b",}', b"",
                                 b'{"model": "qwen2.5-7b"} trailing', b"\xff\xfe"])
def test_malformed_json_400(mg, raw):
    mock, gw = mg
    r = request("POST", gw.url + CHAT, body=raw, headers={"content-type": "application/json"})
    assert_openai_error(r, 400, "invalid_json")
    assert mock.count() == 0


@pytest.mark.parametrize("body", [{"messages": []}, {"model": 42, "messages": []},
                                  {"model": None}, {"model": ["qwen2.5-7b"]}, {"model": ""}])
def test_missing_model_400(mg, body):
    mock, gw = mg
    r = request("POST", gw.url + CHAT, body=json.dumps(body),
                headers={"content-type": "application/json"})
    assert_openai_error(r, 400, "missing_model")
    assert mock.count() == 0


@pytest.mark.parametrize("body", [[1, 2], "str", 3, None])
def test_body_not_an_object_400(mg, body):
    mock, gw = mg
    r = request("POST", gw.url + CHAT, body=json.dumps(body),
                headers={"content-type": "application/json"})
    assert_openai_error(r, 400, ("invalid_json", "missing_model"))
    assert mock.count() == 0


MSG = '"messages": [{"role": "user", "content": "hi"}]'


@pytest.mark.parametrize("raw, status, code", [
    # the model is read from the top level only, escapes decoded
    ('{"messages": [{"role": "user", "content": "x", "model": "qwen2.5-7b"}]}', 400, "missing_model"),
    ('{"metadata": {"model": "qwen2.5-7b"}, %s}' % MSG, 400, "missing_model"),
    ('{"model": "qwen2.5\\u002d7b", %s}' % MSG, 200, None),
    ('{"model": "qwen2.5\\\\-7b", %s}' % MSG, 404, "model_not_found"),
    (' \r\n\t{ "model" :\n"qwen2.5-7b" , %s }\n ' % MSG, 200, None),
    ('{"model": "gpt-4o-mini", "x": {"model": "qwen2.5-7b"}, %s}' % MSG, 200, None),
    ('{"a": "\\"model\\": \\"nope\\"", "model": "qwen2.5-7b", %s}' % MSG, 200, None),
    # broken documents, wherever the break is
    ('{"model": "qwen2.5-7b", %s, "t": tru}' % MSG, 400, "invalid_json"),
    ('{"model": "qwen2.5-7b", %s, "n": 01}' % MSG, 400, "invalid_json"),
    ('{"model": "qwen2.5-7b", %s, "s": "unterminated}' % MSG, 400, "invalid_json"),
    ('{"model": "qwen2.5-7b", %s, "e": "\\x41"}' % MSG, 400, "invalid_json"),
    ('{"model": "qwen2.5-7b", %s, "c": "ctl\x01"}' % MSG, 400, "invalid_json"),
    ('{"model": "qwen2.5-7b", %s}}' % MSG, 400, "invalid_json"),
    ('{"model": "qwen2.5-7b", %s]' % MSG, 400, "invalid_json"),
    ('{"model": "qwen2.5-7b" %s}' % MSG, 400, "invalid_json"),
    ('{"model": "qwen2.5-7b", %s, "deep": %s}' % (MSG, "[" * 40 + "]" * 39), 400, "invalid_json"),
])
def test_json_edge_cases(mg, raw, status, code):
    mock, gw = mg
    r = request("POST", gw.url + CHAT, body=raw.encode(), headers={"content-type": "application/json"})
    if code:
        assert_openai_error(r, status, code)
        assert mock.count() == 0
    else:
        assert r.status == status, r
        # forwarded byte for byte: the mock parsed the same document
        assert mock.requests()[-1]["body"] == json.loads(raw)


def test_invalid_utf8_in_body(mg):
    mock, gw = mg
    raw = b'{"model": "qwen2.5-7b", "messages": [{"role": "user", "content": "\xc3\x28"}]}'
    r = request("POST", gw.url + CHAT, body=raw, headers={"content-type": "application/json"})
    assert_openai_error(r, 400, "invalid_json")
    assert mock.count() == 0


def test_deep_nesting_is_refused_cleanly(mg):
    mock, gw = mg
    raw = '{"model": "qwen2.5-7b", %s, "deep": %s}' % (MSG, "[" * 100000 + "]" * 100000)
    r = request("POST", gw.url + CHAT, body=raw.encode(), headers={"content-type": "application/json"})
    assert r.status in (200, 400, 413), r
    if r.status == 400:
        assert r.json()["error"]["code"] in ("invalid_json", "bad_request"), r
    assert gw.alive()
    assert request("POST", gw.url + CHAT, body=chat()).status == 200


def test_unknown_model_404(mg):
    mock, gw = mg
    for path in (CHAT, "/v1/completions", "/v1/embeddings"):
        r = request("POST", gw.url + path, body={"model": "no-such-model", "input": "x"})
        assert_openai_error(r, 404, "model_not_found")
        assert "no-such-model" in r.json()["error"]["message"]
    assert mock.count() == 0


def test_body_size_limit(mockllm, gateway):
    mock = start_mock(mockllm)
    limit = 4096
    cfg = config(backend(mock))
    cfg["limits"]["max_body_bytes"] = limit

    def body_of(n):
        base = json.dumps(chat(messages=[{"role": "user", "content": ""}]))
        pad = n - len(base)
        return base.replace('"content": ""', '"content": "%s"' % ("a" * pad)).encode()

    gw = gateway(cfg)
    exact = body_of(limit)
    assert len(exact) == limit
    r = request("POST", gw.url + CHAT, body=exact, headers={"content-type": "application/json"})
    assert r.status == 200, "a body of exactly max_body_bytes must pass: %r" % r
    over = body_of(limit + 1)
    r = request("POST", gw.url + CHAT, body=over, headers={"content-type": "application/json"})
    assert_openai_error(r, 413, "body_too_large")
    huge = body_of(limit * 64)
    r = request("POST", gw.url + CHAT, body=huge, headers={"content-type": "application/json"})
    assert_openai_error(r, 413, "body_too_large")
    assert mock.count() == 1
    # still serving
    assert request("POST", gw.url + CHAT, body=chat()).status == 200


def test_chunked_body_over_limit_413(mockllm, gateway):
    """A chunked body that grows over the limit gets a readable 413, even
    though the client sent more than the gateway read (the gateway must not
    reset the connection under the answer: lingering close)."""
    mock = start_mock(mockllm)
    cfg = config(backend(mock))
    cfg["limits"]["max_body_bytes"] = 2048
    gw = gateway(cfg)
    big = json.dumps(chat(messages=[{"role": "user", "content": "b" * 10000}])).encode()
    wire = b"".join(b"%x\r\n%s\r\n" % (len(big[i:i + 1000]), big[i:i + 1000])
                    for i in range(0, len(big), 1000)) + b"0\r\n\r\n"
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
    try:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                  b"content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n" + wire)
        data = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
                head, sep, body = data.partition(b"\r\n\r\n")
                m = re.search(rb"(?i)content-length: *(\d+)", head)
                if sep and m and len(body) >= int(m.group(1)):
                    break
        except ConnectionResetError:
            pytest.fail("connection reset before the 413 could be read (got %r): the gateway "
                        "closes with unread request bytes instead of a lingering close" % data)
    finally:
        s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), data[:300]
    assert json.loads(body)["error"]["code"] == "body_too_large"
    assert mock.count() == 0


def test_chunked_body_over_limit_413_http_client(mockllm, gateway):
    """The same with http.client, which writes each chunk separately and
    reads only once it sent everything: the gateway must keep reading
    (and discarding) after its 413 so the client sees it, not a reset."""
    mock = start_mock(mockllm)
    cfg = config(backend(mock))
    cfg["limits"]["max_body_bytes"] = 2048
    gw = gateway(cfg)
    big = json.dumps(chat(messages=[{"role": "user", "content": "b" * 10000}])).encode()
    for _ in range(5):
        conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
        try:
            conn.request("POST", CHAT, body=iter([big[i:i + 1000] for i in range(0, len(big), 1000)]),
                         encode_chunked=True, headers={"content-type": "application/json",
                                                       "transfer-encoding": "chunked"})
            r = conn.getresponse()
            data = r.read()
            assert r.status == 413, (r.status, data)
            assert json.loads(data)["error"]["code"] == "body_too_large"
        except (ConnectionResetError, BrokenPipeError) as e:
            pytest.fail("%r instead of a readable 413 (no lingering close?)" % e)
        finally:
            conn.close()
    assert mock.count() == 0


# ---------------------------------------------------------------- keep-alive

def test_keep_alive_many_requests_one_connection(mg):
    mock, gw = mg
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    try:
        sock = None
        for i in range(60):
            if i % 3 == 0:
                conn.request("POST", CHAT, body=json.dumps(chat(max_tokens=2)),
                             headers={"content-type": "application/json"})
                want = 200
            elif i % 3 == 1:
                conn.request("GET", "/v1/models")
                want = 200
            else:
                conn.request("POST", CHAT, body=json.dumps(chat("nope")),
                             headers={"content-type": "application/json"})
                want = 404
            r = conn.getresponse()
            data = r.read()
            assert r.status == want, (i, r.status, data)
            assert r.getheader("connection", "").lower() != "close", (i, r.getheaders())
            if sock is None:
                sock = conn.sock
            assert conn.sock is sock, "connection was not reused at request %d" % i
    finally:
        conn.close()
    assert mock.count() == 20


def test_connection_close_is_honoured(mg):
    _, gw = mg
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=5)
    try:
        conn.request("GET", "/healthz", headers={"connection": "close"})
        r = conn.getresponse()
        r.read()
        assert r.status == 200
        assert r.will_close, r.getheaders()
    finally:
        conn.close()


def test_concurrent_requests(mockllm, gateway):
    import threading
    mock = start_mock(mockllm)
    gw = gateway(config(backend(mock)))
    results = []

    def worker():
        for _ in range(10):
            r = request("POST", gw.url + CHAT, body=chat(max_tokens=2),
                        headers={"x-mock-fault": "delay-ms=20"})
            results.append(r.status)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [200] * 80, results
    wait_until(lambda: mock.count() == 80, timeout=2)


# ---------------------------------------------------------------- HTTP/1.1 details

def _read_until_close(s, limit=5):
    s.settimeout(limit)
    data = b""
    while True:
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            raise AssertionError("connection not closed after %ss: %r" % (limit, data[-200:]))
        if not chunk:
            return data
        data += chunk


def test_upstream_host_is_the_backend(mg):
    mock, gw = mg
    r = request("POST", gw.url + CHAT, body=chat(), headers={"Host": "client.example"})
    assert r.status == 200, r
    up = mock.requests()[-1]["headers"]
    assert up.get("host") == "%s:%d" % (upstream_hostname(), mock.port), up


def test_chunked_request_body_is_proxied(mg):
    mock, gw = mg
    body = chat(messages=[{"role": "user", "content": "c" * 3000}])
    raw = json.dumps(body).encode()
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    try:
        conn.request("POST", CHAT, body=iter([raw[i:i + 700] for i in range(0, len(raw), 700)]),
                     encode_chunked=True, headers={"content-type": "application/json",
                                                   "transfer-encoding": "chunked"})
        r = conn.getresponse()
        data = r.read()
        assert r.status == 200, data
    finally:
        conn.close()
    assert mock.requests()[-1]["body"] == body


def test_expect_100_continue(mg):
    """curl sends `Expect: 100-continue` for bodies over 1 KiB and waits up
    to 1 s for the interim answer: the gateway must not make it wait."""
    _, gw = mg
    raw = json.dumps(chat(messages=[{"role": "user", "content": "e" * 3000}])).encode()
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
    try:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
                  b"expect: 100-continue\r\ncontent-length: %d\r\n\r\n" % len(raw))
        s.settimeout(0.5)
        try:
            interim = s.recv(4096)
        except socket.timeout:
            raise AssertionError("no 100 Continue within 0.5 s")
        assert interim.startswith(b"HTTP/1.1 100"), interim
        s.sendall(raw)
        s.settimeout(5)
        data = b""
        while b"\r\n\r\n" not in data:
            data += s.recv(65536)
        assert data.startswith(b"HTTP/1.1 200"), data[:200]
    finally:
        s.close()


def test_pipelined_requests_answered_in_order(mg):
    mock, gw = mg
    raw = json.dumps(chat(max_tokens=2)).encode()
    post = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n" % len(raw) + raw)
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
    try:
        s.sendall(post + b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n" + post +
                  b"GET /healthz HTTP/1.1\r\nHost: x\r\nconnection: close\r\n\r\n")
        data = _read_until_close(s)
    finally:
        s.close()
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", data)
    assert statuses == [b"200", b"404", b"200", b"200"], (statuses, data[-300:])
    assert mock.count() == 2


def test_http10_stream_ends_by_close(mg):
    """An HTTP/1.0 client cannot take chunked encoding: the stream comes
    raw and ends when the gateway closes the connection."""
    _, gw = mg
    raw = json.dumps(chat(stream=True, max_tokens=4)).encode()
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
    try:
        s.sendall(b"POST /v1/chat/completions HTTP/1.0\r\ncontent-type: application/json\r\n"
                  b"content-length: %d\r\n\r\n" % len(raw) + raw)
        data = _read_until_close(s)
    finally:
        s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert re.match(rb"HTTP/1\.[01] 200", head), head
    assert b"chunked" not in head.lower(), head
    assert body.startswith(b"data: "), body[:100]
    assert body.endswith(b"data: [DONE]\n\n"), body[-100:]


def test_http10_non_stream(mg):
    _, gw = mg
    raw = json.dumps(chat(max_tokens=3)).encode()
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
    try:
        s.sendall(b"POST /v1/chat/completions HTTP/1.0\r\ncontent-type: application/json\r\n"
                  b"content-length: %d\r\n\r\n" % len(raw) + raw)
        data = _read_until_close(s)
    finally:
        s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert re.match(rb"HTTP/1\.[01] 200", head), head
    assert json.loads(body)["usage"]["completion_tokens"] == 3


def test_two_backends_serving_one_model(mockllm, gateway):
    """Several backends listing the same model form its pool: every request
    is answered by one of them, and the header says which."""
    a, b = start_mock(mockllm), start_mock(mockllm)
    gw = gateway(config(backend(a, "a", ["qwen2.5-7b"]), backend(b, "b", ["qwen2.5-7b"])))
    seen = []
    for _ in range(20):
        r = request("POST", gw.url + CHAT, body=chat(max_tokens=1))
        assert r.status == 200, r
        seen.append(r.headers.get("x-promptgate-backend"))
    assert set(seen) <= {"a", "b"}, seen
    assert a.count() + b.count() == 20
    assert a.count() == seen.count("a") and b.count() == seen.count("b"), (seen, a.count(), b.count())


def test_large_request_and_answer_bodies(mockllm, gateway):
    """1 MiB in, ~1 MB out: both relayed whole."""
    mock = start_mock(mockllm)
    cfg = config(backend(mock))
    cfg["limits"]["max_body_bytes"] = 2 * 1024 * 1024
    gw = gateway(cfg)
    content = "".join(chr(0x41 + i % 26) for i in range(1024 * 1024))
    body = chat(messages=[{"role": "user", "content": content}])
    r = request("POST", gw.url + CHAT, body=body, headers={"x-mock-fault": "tokens=150000"},
                timeout=30)
    assert r.status == 200, r
    out = r.json()
    assert out["usage"]["completion_tokens"] == 150000
    assert len(out["choices"][0]["message"]["content"].split()) == 150000
    assert len(r.body) > 900000, len(r.body)
    up = mock.requests()[-1]
    assert up["body"]["messages"][0]["content"] == content
