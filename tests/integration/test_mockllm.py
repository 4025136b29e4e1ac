"""bin/mockllm, tested directly (no gateway): every endpoint, every fault,
the control endpoints, the HTTP/1.1 details the gateway relies on, and the
command line."""

import base64
import http.client as httpclient
import json
import math
import signal
import socket
import struct
import subprocess
import time

import pytest

from helpers import (BIN, DEFAULT_MODELS, chat, completion, embedding, free_port, http,
                     open_stream, sse_events, sse_json, wait_until)

CHAT = "/v1/chat/completions"
COMPL = "/v1/completions"
EMB = "/v1/embeddings"


def fault(spec):
    return {"x-mock-fault": spec}


def raw(port, data, timeout=5, read_until_close=True):
    """Send raw bytes on a new connection and return everything read until
    the server closes it (or timeout: then what was read so far)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        out = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                b = s.recv(65536)
            except socket.timeout:
                break
            if not b:
                break
            out += b
            if not read_until_close:
                break
        return out
    finally:
        s.close()


def post_raw(port, path, body, headers=b"", version=b"HTTP/1.1"):
    data = json.dumps(body).encode() if not isinstance(body, bytes) else body
    return (b"POST " + path.encode() + b" " + version + b"\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: " + str(len(data)).encode()
            + b"\r\n" + headers + b"Connection: close\r\n\r\n" + data)


def assert_openai_error(r, status, code=None):
    assert r.status == status, r
    assert r.headers["content-type"] == "application/json"
    err = r.json()["error"]
    assert isinstance(err["message"], str) and err["message"]
    assert isinstance(err["type"], str) and err["type"]
    if code is not None:
        assert err["code"] == code, err
    return err


# ---------------------------------------------------------------- models

def test_models_list(mockllm):
    m = mockllm()
    r = http("GET", m.base + "/models")
    assert r.status == 200
    body = r.json()
    assert body["object"] == "list"
    assert [d["id"] for d in body["data"]] == DEFAULT_MODELS
    assert all(d["object"] == "model" and d["owned_by"] == "mockllm" for d in body["data"])
    one = http("GET", m.base + "/models/gpt-4o-mini").json()
    assert one["id"] == "gpt-4o-mini" and one["object"] == "model"
    assert_openai_error(http("GET", m.base + "/models/nope"), 404, "model_not_found")


def test_models_option(mockllm):
    m = mockllm("--models", "a,b-2")
    assert [d["id"] for d in http("GET", m.base + "/models").json()["data"]] == ["a", "b-2"]
    assert http("POST", m.base + "/chat/completions", chat("b-2")).status == 200
    assert http("POST", m.base + "/chat/completions", chat("qwen2.5-7b")).status == 404


# ---------------------------------------------------------------- chat

def test_chat_non_stream(mockllm):
    m = mockllm()
    msgs = [{"role": "system", "content": "x" * 40},
            {"role": "user", "content": [{"type": "text", "text": "y" * 20}]}]
    r = http("POST", m.base + "/chat/completions", chat(messages=msgs))
    assert r.status == 200
    assert r.headers["content-type"] == "application/json"
    assert int(r.headers["content-length"]) == len(r.body)
    b = r.json()
    assert b["id"].startswith("chatcmpl-mock-")
    assert b["object"] == "chat.completion"
    assert b["model"] == "qwen2.5-7b"
    assert isinstance(b["created"], int) and abs(b["created"] - time.time()) < 60
    assert len(b["choices"]) == 1
    ch = b["choices"][0]
    assert ch["index"] == 0 and ch["finish_reason"] == "stop"
    assert ch["message"] == {"role": "assistant",
                             "content": " ".join("tok%d" % i for i in range(16))}
    # prompt tokens: 60 bytes of content / 4
    assert b["usage"] == {"prompt_tokens": 15, "completion_tokens": 16, "total_tokens": 31}
    b2 = http("POST", m.base + "/chat/completions", chat()).json()
    assert b2["id"] != b["id"]


def test_chat_max_tokens_and_tokens_option(mockllm):
    m = mockllm("--tokens", "5")
    b = http("POST", m.base + "/chat/completions", chat()).json()
    assert b["choices"][0]["message"]["content"] == "tok0 tok1 tok2 tok3 tok4"
    assert b["usage"]["completion_tokens"] == 5
    b = http("POST", m.base + "/chat/completions", chat(max_tokens=2)).json()
    assert b["choices"][0]["message"]["content"] == "tok0 tok1"
    assert b["usage"]["completion_tokens"] == 2
    b = http("POST", m.base + "/chat/completions", chat(max_completion_tokens=3)).json()
    assert b["usage"]["completion_tokens"] == 3
    # max_tokens above --tokens does not add tokens
    b = http("POST", m.base + "/chat/completions", chat(max_tokens=100)).json()
    assert b["usage"]["completion_tokens"] == 5
    assert b["usage"]["prompt_tokens"] == len("Say hello in one word.") // 4


def check_chat_stream(r, n_tokens, include_usage):
    assert r.status == 200
    assert r.headers["content-type"] == "text/event-stream"
    events = sse_events(r.body)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    first = chunks[0]["choices"][0]
    assert first["delta"] == {"role": "assistant", "content": ""}
    assert first["finish_reason"] is None
    if include_usage:
        usage = chunks[-1]
        assert usage["choices"] == []
        assert usage["usage"]["completion_tokens"] == n_tokens
        assert usage["usage"]["total_tokens"] == (usage["usage"]["prompt_tokens"]
                                                  + n_tokens)
        body = chunks[:-1]
        assert all("usage" in c and c["usage"] is None for c in body)
    else:
        body = chunks
        assert all("usage" not in c for c in body)
    assert body[-1]["choices"][0]["finish_reason"] == "stop"
    assert body[-1]["choices"][0]["delta"] == {}
    tokens = body[1:-1]
    assert len(tokens) == n_tokens
    text = "".join(c["choices"][0]["delta"]["content"] for c in tokens)
    assert text == " ".join("tok%d" % i for i in range(n_tokens))
    return chunks


def test_chat_stream(mockllm):
    m = mockllm()
    r = http("POST", m.base + "/chat/completions", chat(stream=True))
    check_chat_stream(r, 16, include_usage=False)
    assert r.headers.get("transfer-encoding") == "chunked"


def test_chat_stream_include_usage(mockllm):
    m = mockllm()
    r = http("POST", m.base + "/chat/completions",
             chat(stream=True, max_tokens=4, stream_options={"include_usage": True}))
    chunks = check_chat_stream(r, 4, include_usage=True)
    assert chunks[-1]["usage"]["prompt_tokens"] == len("Say hello in one word.") // 4


def test_chat_stream_zero_tokens(mockllm):
    m = mockllm("--tokens", "0")
    r = http("POST", m.base + "/chat/completions", chat(stream=True))
    check_chat_stream(r, 0, include_usage=False)
    b = http("POST", m.base + "/chat/completions", chat()).json()
    assert b["choices"][0]["message"]["content"] == ""


def test_chat_long_stream_is_complete(mockllm):
    """A stream far larger than the mock's output high-water mark is
    produced as the client reads, and arrives whole."""
    m = mockllm()
    r = http("POST", m.base + "/chat/completions", chat(stream=True),
             headers=fault("tokens=30000"), timeout=30)
    chunks = sse_json(r.body)
    assert len(chunks) == 30000 + 2
    assert chunks[-2]["choices"][0]["delta"]["content"] == " tok29999"
    assert sse_events(r.body)[-1] == "[DONE]"


# ---------------------------------------------------------------- completions

def test_completions(mockllm):
    m = mockllm("--tokens", "3")
    b = http("POST", m.base + "/completions", completion(prompt="z" * 12)).json()
    assert b["object"] == "text_completion" and b["id"].startswith("cmpl-mock-")
    assert b["choices"][0]["text"] == "tok0 tok1 tok2"
    assert b["choices"][0]["finish_reason"] == "stop"
    assert b["usage"] == {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}
    b = http("POST", m.base + "/completions", completion(prompt=["abcd", "efgh"])).json()
    assert b["usage"]["prompt_tokens"] == 2


def test_completions_stream(mockllm):
    m = mockllm("--tokens", "3")
    r = http("POST", m.base + "/completions",
             completion(stream=True, stream_options={"include_usage": True}))
    assert r.headers["content-type"] == "text/event-stream"
    ev = sse_events(r.body)
    assert ev[-1] == "[DONE]"
    chunks = [json.loads(e) for e in ev[:-1]]
    assert all(c["object"] == "text_completion" for c in chunks)
    assert "".join(c["choices"][0]["text"] for c in chunks[:3]) == "tok0 tok1 tok2"
    assert chunks[3]["choices"][0]["finish_reason"] == "stop"
    assert chunks[4]["choices"] == [] and chunks[4]["usage"]["completion_tokens"] == 3
    assert all(c["usage"] is None for c in chunks[:4])


# ---------------------------------------------------------------- embeddings

def vec(m, inp, **extra):
    r = http("POST", m.base + "/embeddings", embedding(input=inp, **extra))
    assert r.status == 200, r
    return r.json()


def test_embeddings(mockllm):
    m = mockllm()
    b = vec(m, "hello world")
    assert b["object"] == "list" and b["model"] == "text-embedding-3-small"
    assert len(b["data"]) == 1
    d = b["data"][0]
    assert d["object"] == "embedding" and d["index"] == 0
    assert len(d["embedding"]) == 8
    assert abs(math.sqrt(sum(x * x for x in d["embedding"])) - 1) < 1e-5
    assert b["usage"] == {"prompt_tokens": 2, "total_tokens": 2}
    # deterministic, and different inputs differ
    assert vec(m, "hello world")["data"][0]["embedding"] == d["embedding"]
    other = vec(m, "hello world!")["data"][0]["embedding"]
    assert other != d["embedding"]
    many = vec(m, ["hello world", "hello world!", "x"])
    assert [e["index"] for e in many["data"]] == [0, 1, 2]
    assert many["data"][0]["embedding"] == d["embedding"]
    assert many["data"][1]["embedding"] == other
    assert many["usage"]["prompt_tokens"] == 2 + 3 + 1
    assert len(vec(m, "a", dimensions=32)["data"][0]["embedding"]) == 32
    tok = vec(m, [1, 2, 3])
    assert len(tok["data"]) == 1 and tok["usage"]["prompt_tokens"] == 3
    assert len(vec(m, [[1, 2], [3]])["data"]) == 2


def test_embeddings_base64(mockllm):
    """The official OpenAI Python client asks for base64 by default."""
    m = mockllm()
    floats = vec(m, "abc")["data"][0]["embedding"]
    b = vec(m, "abc", encoding_format="base64")["data"][0]["embedding"]
    decoded = struct.unpack("<8f", base64.b64decode(b))
    assert all(abs(a - x) < 1e-6 for a, x in zip(decoded, floats))
    b = vec(m, "abc", encoding_format="base64", dimensions=3)["data"][0]["embedding"]
    assert len(base64.b64decode(b)) == 12


def test_embeddings_errors(mockllm):
    m = mockllm()
    for body in [embedding(input=""), embedding(input=[]), embedding(input=5),
                 embedding(input=[{"a": 1}]), embedding(dimensions=0),
                 embedding(dimensions=5000), embedding(encoding_format="hex")]:
        assert_openai_error(http("POST", m.base + "/embeddings", body), 400)
    assert_openai_error(http("POST", m.base + "/embeddings", embedding(model="nope")),
                        404, "model_not_found")
    assert_openai_error(http("POST", m.base + "/embeddings", {"input": "a"}), 400,
                        "missing_required_parameter")


# ---------------------------------------------------------------- bad requests

def test_unknown_model(mockllm):
    m = mockllm()
    for path, body in [(CHAT, chat("nope")), (COMPL, completion("nope"))]:
        r = http("POST", m.url + path, body)
        err = assert_openai_error(r, 404, "model_not_found")
        assert err == {"message": "The model 'nope' does not exist",
                       "type": "invalid_request_error", "param": "model",
                       "code": "model_not_found"}


def test_bad_bodies(mockllm):
    m = mockllm()
    url = m.url + CHAT
    assert_openai_error(http("POST", url, b"{not json"), 400, "invalid_json")
    assert_openai_error(http("POST", url, b""), 400, "invalid_json")
    assert_openai_error(http("POST", url, b"[1,2]"), 400, "invalid_json")
    assert_openai_error(http("POST", url, {"messages": [{"role": "user", "content": "x"}]}),
                        400, "missing_required_parameter")
    assert_openai_error(http("POST", url, {"model": "qwen2.5-7b"}), 400,
                        "missing_required_parameter")
    assert_openai_error(http("POST", url, chat(messages=[])), 400,
                        "missing_required_parameter")
    assert_openai_error(http("POST", url, chat(max_tokens=0)), 400, "invalid_value")
    assert_openai_error(http("POST", url, chat(max_tokens="9")), 400, "invalid_value")
    assert_openai_error(http("POST", url, dict(chat(), stream="yes")), 400, "invalid_type")
    assert_openai_error(http("POST", m.url + COMPL, {"model": "qwen2.5-7b"}), 400,
                        "missing_required_parameter")
    # still serving
    assert http("POST", url, chat()).status == 200


def test_routes(mockllm):
    m = mockllm()
    r = http("GET", m.url + CHAT)
    assert_openai_error(r, 405, "method_not_allowed")
    assert r.headers["allow"] == "POST"
    assert_openai_error(http("POST", m.url + "/v1/models", {}), 405)
    assert_openai_error(http("GET", m.url + "/v1/nothing"), 404, "unknown_url")
    assert_openai_error(http("GET", m.url + "/_mock/nothing"), 404, "unknown_url")
    assert_openai_error(http("PATCH", m.url + "/_mock/stats"), 405)
    # a query string does not change the route
    assert http("GET", m.url + "/v1/models?x=1").status == 200


# ---------------------------------------------------------------- faults

def test_fault_status(mockllm):
    m = mockllm()
    for path, body in [(CHAT, chat()), (COMPL, completion()), (EMB, embedding()),
                       ("/v1/models", None)]:
        r = http("POST" if body else "GET", m.url + path, body, headers=fault("status=503"))
        err = assert_openai_error(r, 503)
        assert err["type"] == "server_error" and "503" in err["message"]
        assert "retry-after" not in r.headers
    r = http("POST", m.url + CHAT, chat(), headers=fault("status=429,retry-after=2"))
    err = assert_openai_error(r, 429, "rate_limit_exceeded")
    assert r.headers["retry-after"] == "2"
    assert_openai_error(http("POST", m.url + CHAT, chat(), headers=fault("status=401")),
                        401, "invalid_api_key")
    # a stream request with a status fault gets the JSON error, not SSE
    r = http("POST", m.url + CHAT, chat(stream=True), headers=fault("status=500"))
    assert_openai_error(r, 500)


def test_fault_retry_after_on_success(mockllm):
    m = mockllm()
    r = http("POST", m.url + CHAT, chat(), headers=fault("retry-after=7"))
    assert r.status == 200 and r.headers["retry-after"] == "7"


def test_fault_delay(mockllm):
    m = mockllm()
    t = time.monotonic()
    r = http("POST", m.url + CHAT, chat(), headers=fault("delay-ms=300"))
    assert r.status == 200 and time.monotonic() - t >= 0.3
    # the delay is before the headers, also for streams and errors
    t = time.monotonic()
    conn, resp = open_stream("POST", m.url + CHAT, chat(stream=True),
                             headers=fault("delay-ms=250,status=502"))
    try:
        assert resp.status == 502 and time.monotonic() - t >= 0.25
    finally:
        conn.close()
    # other connections are served meanwhile (timers, not sleep)
    conn, _ = None, None
    s = socket.create_connection(("127.0.0.1", m.port))
    try:
        s.sendall(post_raw(m.port, CHAT, chat(), headers=b"x-mock-fault: delay-ms=2000\r\n"))
        t = time.monotonic()
        assert http("GET", m.base + "/models").status == 200
        assert time.monotonic() - t < 1
    finally:
        s.close()


def test_fault_close_after_chunks_stream(mockllm):
    m = mockllm()
    out = raw(m.port, post_raw(m.port, CHAT, chat(stream=True),
                               headers=b"x-mock-fault: close-after-chunks=3\r\n"))
    head, _, body = out.partition(b"\r\n\r\n")
    assert b" 200 " in head.split(b"\r\n")[0]
    assert b"transfer-encoding: chunked" in head.lower()
    assert body.count(b"data: ") == 3
    assert b"[DONE]" not in body
    assert not body.endswith(b"0\r\n\r\n")  # no last-chunk: the body is truncated
    # http.client sees the truncation as an error, never as a clean end
    with pytest.raises((httpclient.IncompleteRead, ConnectionError)):
        http("POST", m.url + CHAT, chat(stream=True), headers=fault("close-after-chunks=3"))
    # with a token delay the chunks come over time, then the close
    t = time.monotonic()
    out = raw(m.port, post_raw(m.port, CHAT, chat(stream=True),
                               headers=b"x-mock-fault: close-after-chunks=3,token-delay-ms=100\r\n"))
    assert out.count(b"data: ") == 3 and time.monotonic() - t >= 0.18
    # zero: headers only
    out = raw(m.port, post_raw(m.port, CHAT, chat(stream=True),
                               headers=b"x-mock-fault: close-after-chunks=0\r\n"))
    assert b" 200 " in out and b"data: " not in out


def test_fault_close_after_chunks_non_stream(mockllm):
    m = mockllm()
    out = raw(m.port, post_raw(m.port, CHAT, chat(),
                               headers=b"x-mock-fault: close-after-chunks=1\r\n"))
    head, _, body = out.partition(b"\r\n\r\n")
    length = int([h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:")][0]
                 .split(b":")[1])
    assert len(body) == length // 2
    full = http("POST", m.url + CHAT, chat()).body
    # the same answer but for the id number (1 then 2)
    assert len(full) == length and full.replace(b"mock-2", b"mock-1").startswith(body)
    with pytest.raises(httpclient.IncompleteRead):
        http("POST", m.url + CHAT, chat(), headers=fault("close-after-chunks=1"))


def test_fault_hang(mockllm):
    m = mockllm()
    with pytest.raises(socket.timeout):
        http("POST", m.url + CHAT, chat(), headers=fault("hang"), timeout=0.5)
    # the hung connection is released when the client goes away
    wait_until(lambda: m.stats()["open_connections"] == 1)  # the stats request itself
    s = socket.create_connection(("127.0.0.1", m.port))
    s.sendall(post_raw(m.port, CHAT, chat(), headers=b"x-mock-fault: hang\r\n"))
    wait_until(lambda: m.count() == 2)
    assert m.stats()["open_connections"] == 2
    s.close()
    wait_until(lambda: m.stats()["open_connections"] == 1)


def test_fault_reset(mockllm):
    m = mockllm()
    with pytest.raises(ConnectionResetError):
        http("POST", m.url + CHAT, chat(), headers=fault("reset"))
    s = socket.create_connection(("127.0.0.1", m.port), timeout=5)
    try:
        s.sendall(post_raw(m.port, CHAT, chat(), headers=b"x-mock-fault: reset\r\n"))
        with pytest.raises(ConnectionResetError):
            s.recv(100)  # RST, not an orderly FIN (which would return b"")
    finally:
        s.close()
    assert http("POST", m.url + CHAT, chat()).status == 200


def test_fault_tokens(mockllm):
    m = mockllm()
    b = http("POST", m.url + CHAT, chat(), headers=fault("tokens=2")).json()
    assert b["choices"][0]["message"]["content"] == "tok0 tok1"
    # max_tokens still lowers it
    b = http("POST", m.url + CHAT, chat(max_tokens=1), headers=fault("tokens=4")).json()
    assert b["usage"]["completion_tokens"] == 1


def test_fault_token_delay(mockllm):
    m = mockllm()
    conn, resp = open_stream("POST", m.url + CHAT, chat(stream=True),
                             headers=fault("tokens=5,token-delay-ms=100"))
    try:
        t0 = time.monotonic()
        arrivals = []
        buf = b""
        while b"[DONE]" not in buf:
            line = resp.readline()
            assert line, "stream ended early"
            buf += line
            if line.startswith(b"data: ") and b'"content":"' in line \
                    and b'"content":""' not in line:
                arrivals.append(time.monotonic() - t0)
        assert len(arrivals) == 5
        gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
        assert all(g >= 0.07 for g in gaps), gaps
        assert arrivals[-1] >= 0.4
    finally:
        conn.close()
    # non-stream: the answer comes after the generation time
    t = time.monotonic()
    r = http("POST", m.url + CHAT, chat(), headers=fault("tokens=4,token-delay-ms=80"))
    assert r.status == 200 and time.monotonic() - t >= 0.3


def test_token_delay_option(mockllm):
    m = mockllm("--tokens", "3", "--token-delay-ms", "100")
    t = time.monotonic()
    r = http("POST", m.url + CHAT, chat(stream=True))
    # three delays of 100 ms; libevent times them from the loop's cached
    # clock, read a little before the request is handled: a few ms early
    assert len(sse_json(r.body)) == 5 and time.monotonic() - t >= 0.28
    # a per-request override wins
    t = time.monotonic()
    http("POST", m.url + CHAT, chat(stream=True), headers=fault("token-delay-ms=0"))
    assert time.monotonic() - t < 0.25


def test_fault_bad_spec(mockllm):
    m = mockllm()
    for spec, item in [("status=abc", "status=abc"), ("bogus", "bogus"),
                       ("status=503,delay=5", "delay=5"), ("count=2", "count=2"),
                       ("status=200", "status=200"), ("hang=1", "hang=1")]:
        r = http("POST", m.url + CHAT, chat(), headers=fault(spec))
        err = assert_openai_error(r, 400, "invalid_fault")
        assert "'%s'" % item in err["message"], err


def test_runtime_fault_with_count(mockllm):
    m = mockllm()
    m.set_fault("status=503", count=2)
    assert http("GET", m.url + "/_mock/fault").json()["count"] == 2
    assert http("POST", m.url + CHAT, chat()).status == 503
    # a request with its own header does not spend the count
    assert http("POST", m.url + CHAT, chat(), headers=fault("status=418")).status == 418
    assert http("POST", m.url + CHAT, chat()).status == 503
    assert http("POST", m.url + CHAT, chat()).status == 200
    assert http("GET", m.url + "/_mock/fault").json()["fault"] == ""


def test_runtime_fault_precedence_and_clear(mockllm):
    m = mockllm("--fault", "status=500")
    assert http("POST", m.url + CHAT, chat()).status == 500
    m.set_fault("status=502")
    assert http("POST", m.url + CHAT, chat()).status == 502
    assert http("POST", m.url + CHAT, chat()).status == 502  # no count: stays
    assert http("POST", m.url + CHAT, chat(), headers=fault("status=504")).status == 504
    # an empty header means "no fault" for this request
    assert http("POST", m.url + CHAT, chat(), headers=fault("")).status == 200
    # the control endpoints never get the fault
    assert m.stats()["count"] == 5
    m.set_fault("")
    assert http("POST", m.url + CHAT, chat()).status == 500  # back to --fault
    r = http("POST", m.url + "/_mock/fault", body="status=abc")
    assert "'status=abc'" in assert_openai_error(r, 400, "invalid_fault")["message"]
    assert http("GET", m.url + "/_mock/fault").json()["cli_fault"] == "status=500"


def test_runtime_fault_hang_and_reset(mockllm):
    m = mockllm()
    m.set_fault("reset", count=1)
    with pytest.raises(ConnectionResetError):
        http("POST", m.url + CHAT, chat())
    m.set_fault("hang", count=1)
    with pytest.raises(socket.timeout):
        http("POST", m.url + CHAT, chat(), timeout=0.3)
    assert http("POST", m.url + CHAT, chat()).status == 200


# ---------------------------------------------------------------- recording

def test_requests_recorded(mockllm):
    m = mockllm()
    assert m.requests() == [] and m.count() == 0
    http("POST", m.url + CHAT, chat(), headers={"Authorization": "Bearer sk-up",
                                                "X-Custom": "v"})
    http("GET", m.url + "/v1/models?a=b")
    http("POST", m.url + EMB, b"not json", headers={"Content-Type": "text/plain"})
    http("GET", m.url + "/_mock/stats")  # not recorded, not counted
    reqs = m.requests()
    assert m.count() == 3 and len(reqs) == 3
    assert reqs[0]["method"] == "POST" and reqs[0]["path"] == CHAT
    assert reqs[0]["headers"]["authorization"] == "Bearer sk-up"
    assert reqs[0]["headers"]["x-custom"] == "v"
    assert all(k == k.lower() for k in reqs[0]["headers"])
    assert reqs[0]["body"] == chat()
    assert reqs[1]["path"] == "/v1/models" and reqs[1]["query"] == "a=b"
    assert reqs[1]["body"] is None
    assert reqs[2]["body"] == "not json"
    m.reset()
    assert m.requests() == [] and m.count() == 0


def test_requests_ring_keeps_last_256(mockllm):
    m = mockllm()
    s = socket.create_connection(("127.0.0.1", m.port), timeout=10)
    try:
        # 300 pipelined requests on one connection
        one = b"GET /v1/models?i=%d HTTP/1.1\r\nHost: x\r\n\r\n"
        s.sendall(b"".join(one % i for i in range(300)))
        got = b""
        while got.count(b"HTTP/1.1 200") < 300:
            b = s.recv(1 << 20)
            assert b
            got += b
    finally:
        s.close()
    reqs = m.requests()
    assert m.count() == 300 and len(reqs) == 256
    assert reqs[0]["query"] == "i=44" and reqs[-1]["query"] == "i=299"


def test_no_record_keeps_count(mockllm):
    m = mockllm("--no-record")
    for _ in range(3):
        http("POST", m.url + CHAT, chat())
    assert m.count() == 3 and m.requests() == []


# ---------------------------------------------------------------- stats

def test_stats_active_streams(mockllm):
    m = mockllm()
    assert m.stats() == {"count": 0, "open_connections": 1, "active_streams": 0,
                         "stream_events": 0}
    conn, resp = open_stream("POST", m.url + CHAT, chat(stream=True),
                             headers=fault("tokens=50,token-delay-ms=100"))
    try:
        assert resp.status == 200
        wait_until(lambda: m.stats()["active_streams"] == 1)
        assert m.stats()["open_connections"] == 2
    finally:
        conn.close()
    # the client going away ends the stream at once
    wait_until(lambda: m.stats()["active_streams"] == 0, timeout=2)
    wait_until(lambda: m.stats()["open_connections"] == 1)
    # events written by streams are counted (the aborted one wrote a few,
    # 100 ms apart), and stop growing once no stream is alive
    aborted = m.stats()["stream_events"]
    assert 1 <= aborted < 50
    # a finished stream is no longer active; its 16 tokens + role + stop +
    # [DONE] events are counted
    http("POST", m.url + CHAT, chat(stream=True))
    assert m.stats()["active_streams"] == 0
    assert m.stats()["stream_events"] == aborted + 19


# ---------------------------------------------------------------- HTTP

def split_responses(data):
    """Split Content-Length framed HTTP responses: [(status_line, body)] and
    the bytes left over."""
    out = []
    while b"\r\n\r\n" in data:
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        n = int([h for h in lines if h.lower().startswith(b"content-length:")][0].split(b":")[1])
        if len(rest) < n:
            break
        out.append((lines[0], rest[:n]))
        data = rest[n:]
    return out, data


def test_keep_alive_and_pipelining(mockllm):
    m = mockllm("--tokens", "2")
    body = json.dumps(chat()).encode()
    req = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
           % len(body)) + body
    s = socket.create_connection(("127.0.0.1", m.port), timeout=5)
    try:
        # a delayed first answer must still come first
        slow = req.replace(b"Host: x", b"Host: x\r\nx-mock-fault: delay-ms=200")
        s.sendall(slow + b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n" + req)
        got, resps = b"", []
        while len(resps) < 3:
            b = s.recv(65536)
            assert b
            got += b
            resps, _ = split_responses(got)
        assert [r[0] for r in resps] == [b"HTTP/1.1 200 OK"] * 3
        assert json.loads(resps[0][1])["id"] == "chatcmpl-mock-1"
        assert json.loads(resps[1][1])["object"] == "list"
        assert json.loads(resps[2][1])["id"] == "chatcmpl-mock-2"
        assert b"Connection: close" not in got
        assert m.stats()["open_connections"] == 2  # this one stays open
    finally:
        s.close()


def test_http10_and_connection_close(mockllm):
    m = mockllm("--tokens", "2")
    out = raw(m.port, b"GET /v1/models HTTP/1.0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 OK") and out.endswith(b"]}")
    out = raw(m.port, post_raw(m.port, CHAT, chat(stream=True), version=b"HTTP/1.0"))
    assert b"transfer-encoding" not in out.lower() and out.endswith(b"data: [DONE]\n\n")
    out = raw(m.port, post_raw(m.port, CHAT, chat()))
    assert b"Connection: close" in out and out.endswith(b"}}")


def test_chunked_request_body_and_expect(mockllm):
    m = mockllm()
    body = json.dumps(chat()).encode()
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 10]), body[i:i + 10])
                       for i in range(0, len(body), 10)) + b"0\r\n\r\n"
    out = raw(m.port, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
              b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + chunked)
    assert out.startswith(b"HTTP/1.1 200 OK"), out[:200]
    assert m.requests()[-1]["body"] == chat()
    s = socket.create_connection(("127.0.0.1", m.port), timeout=5)
    try:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                  b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body))
        assert s.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        s.sendall(body)
        rest = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            rest += b
        assert b"200 OK" in rest
    finally:
        s.close()


def test_http_limits(mockllm):
    m = mockllm()
    out = raw(m.port, b"GET /v1/models HTTP/1.1\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 431 ")
    out = raw(m.port, b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 413 ")
    out = raw(m.port, b"GARBAGE\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400 ")
    out = raw(m.port, b"GET /v1/models HTTP/2.0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 505 ")
    out = raw(m.port, b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400 ")
    assert http("GET", m.base + "/models").status == 200


# ---------------------------------------------------------------- command line

def run_mock(*args, timeout=5):
    return subprocess.run([str(BIN / "mockllm")] + list(args), capture_output=True,
                          text=True, timeout=timeout)


def test_help():
    r = run_mock("--help")
    assert r.returncode == 0
    for word in ["--listen", "--models", "--tokens", "--token-delay-ms", "--fault",
                 "--no-record", "--any-address", "x-mock-fault", "close-after-chunks",
                 "/_mock/requests", "/_mock/stats", "example"]:
        assert word in r.stdout, word


@pytest.mark.parametrize("args,msg", [
    (["--tokens", "-1"], "bad --tokens '-1'"),
    (["--tokens", "1000001"], "bad --tokens"),
    (["--token-delay-ms", "x"], "bad --token-delay-ms 'x'"),
    (["--models", "ok,bad name"], "bad model name 'bad name'"),
    (["--models", ""], "no models"),
    (["--fault", "status=99"], "bad fault item 'status=99'"),
    (["--fault", "count=1"], "count is only accepted"),
    (["--listen", "nonsense"], "cannot listen on 'nonsense'"),
    (["--bogus"], "mockllm --help"),
    (["extra"], "unexpected argument 'extra'"),
])
def test_bad_options(args, msg):
    r = run_mock(*args)
    assert r.returncode == 2 or (r.returncode == 1 and "cannot listen" in msg)
    assert msg in r.stderr, r.stderr


def test_non_loopback_refused():
    r = run_mock("--listen", "0.0.0.0:%d" % free_port())
    assert r.returncode == 1
    assert "not a loopback address" in r.stderr and "--any-address" in r.stderr


def test_port_in_use(mockllm):
    m = mockllm()
    r = run_mock("--listen", "127.0.0.1:%d" % m.port)
    assert r.returncode == 1 and "in use" in r.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_exits_cleanly_with_work_in_flight(mockllm, sig):
    """Open streams, delayed answers and hung requests are freed on exit
    (under `make asan`, LeakSanitizer checks the exit code)."""
    m = mockllm()
    socks = []
    try:
        for spec in [b"tokens=100,token-delay-ms=200", b"delay-ms=5000", b"hang"]:
            s = socket.create_connection(("127.0.0.1", m.port), timeout=5)
            socks.append(s)
            s.sendall(post_raw(m.port, CHAT, chat(stream=True), headers=b"x-mock-fault: "
                               + spec + b"\r\n"))
        wait_until(lambda: m.stats()["active_streams"] == 1 and m.count() == 3)
        assert m.stop(sig) == 0
        assert "ERROR" not in m.stderr_text()
    finally:
        for s in socks:
            s.close()


def test_ipv6_loopback(mockllm):
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    port = free_port()
    m = mockllm("--listen", "[::1]:%d" % port)
    conn = httpclient.HTTPConnection("::1", port, timeout=5)
    try:
        conn.request("GET", "/v1/models")
        assert conn.getresponse().status == 200
    finally:
        conn.close()
    assert m.proc.poll() is None


def test_sse_events_helper():
    """helpers.sse_events, which every stream test relies on."""
    body = (b": comment\n\nevent: error\ndata: {\"a\":1}\n\n"
            b"data: line1\r\ndata: line2\r\n\r\ndata:nospace\n\ndata: [DONE]")
    ev = sse_events(body)
    assert ev == ['{"a":1}', "line1\nline2", "nospace", "[DONE]"]
    assert ev[0].event == "error" and ev[1].event is None
    assert sse_json(body[:body.index(b"data: line1")]) == [{"a": 1}]


def test_garbage_requests_leave_it_serving(mockllm):
    """Deterministic corruptions of valid requests (head and body): every
    one gets an answer or a close, never a crash (under `make asan` the
    fixture also checks the exit)."""
    import random
    rnd = random.Random(7)
    m = mockllm()
    body = json.dumps(chat(stream=True, stream_options={"include_usage": True})).encode()
    base = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)) + body
    alphabet = b"\r\n :{}[]\",\\0123456789abcdefxyz-\x00\x80\xff"
    for i in range(300):
        data = bytearray(base)
        for _ in range(rnd.randint(1, 6)):
            op = rnd.randint(0, 2)
            at = rnd.randrange(len(data))
            if op == 0:
                data[at] = rnd.choice(alphabet)
            elif op == 1:
                del data[at:at + rnd.randint(1, 8)]
            else:
                data[at:at] = bytes(rnd.choice(alphabet) for _ in range(rnd.randint(1, 8)))
        s = socket.create_connection(("127.0.0.1", m.port), timeout=5)
        try:
            s.sendall(bytes(data))
            s.shutdown(socket.SHUT_WR)
            s.settimeout(0.5)
            try:
                while s.recv(65536):
                    pass
            except (socket.timeout, ConnectionResetError):
                pass  # a half-read request waits for more bytes; reset is a valid end
        finally:
            s.close()
    assert m.proc.poll() is None
    assert http("POST", m.url + CHAT, chat()).status == 200
