"""Hostile input above the HTTP framing (issue 10, points 3 and 5): invalid
UTF-8 and 100,000-deep JSON, huge numbers and n/max_tokens against
limits.max_n / limits.max_tokens, SQL and NUL bytes in keys and prompt
names, header injection through every value the gateway copies into an
answer header (the request id, the model, the prompt name, an upstream's
Retry-After and Content-Type), and the security checks: a backend's
api_key never leaves for another host nor shows in answers or stderr,
nothing in a request chooses the upstream host, admin endpoints need the
admin key.

Raw-socket helpers and the framing cases are in test_gateway_hostile.py.
"""

import hashlib
import json
import re
import socket
import sqlite3
import threading
import time

import pytest

from conftest import mock_backend_config
from helpers import DEFAULT_MODELS, chat, free_port, http, start_mock, wait_until
from regtest import Ctl
from test_gateway_hostile import connect, only_error, parse_answers, post, read_answer, read_to_eof, send

CHAT = "/v1/chat/completions"


@pytest.fixture
def mg(mockllm, gateway):
    """(mock, gw): a plain gateway in front of a mock with an empty record."""
    mock = start_mock(mockllm)
    return mock, gateway(mock_backend_config(mock))


def raw_post(gw, body, extra=b""):
    """POST body (bytes) on its own connection; returns the one answer."""
    s = connect(gw)
    try:
        send(s, post(body, extra=extra))
        return read_answer(s)
    finally:
        s.close()


def clean_head(a):
    """The answer's head holds only visible ASCII, spaces and tabs on
    CRLF-ended lines, and no Set-Cookie: nothing injected split it."""
    for line in a.head.split(b"\r\n"):
        assert re.fullmatch(rb"[\x20-\x7e\t]*", line), (line, a.head)
    assert b"set-cookie" not in a.head.lower(), a.head


# ------------------------------------------------------------------ JSON

@pytest.mark.parametrize("bad", [
    b"\xff", b"\xc0\xaf", b"\xe0\x80\xaf", b"\xed\xa0\x80", b"\xe2\x82",
    b"\x80", b"\xf4\x90\x80\x80", b"\xf8\x88\x80\x80\x80",
], ids=["ff", "overlong-2", "overlong-3", "surrogate", "truncated",
        "lone-continuation", "above-10ffff", "5-byte"])
def test_invalid_utf8_400(mg, bad):
    """Invalid UTF-8 in a string of the body is 400 invalid_json, and the
    backend sees nothing. OpenAI's API rejects such bodies with 400 too
    ("could not parse the JSON body"), so this is what a client would get
    from it; passing the bytes on would only move the failure upstream."""
    mock, gw = mg
    body = b'{"model":"qwen2.5-7b","messages":[{"role":"user","content":"a' + bad + b'b"}]}'
    a = raw_post(gw, body)
    assert a.status == 400 and a.json()["error"]["code"] == "invalid_json", a
    assert mock.count() == 0


def test_invalid_utf8_in_a_key_400(mg):
    """Invalid UTF-8 in an object key (not only in values): 400 too."""
    mock, gw = mg
    a = raw_post(gw, b'{"model":"qwen2.5-7b","\xc3":1,"messages":[]}')
    assert a.status == 400 and a.json()["error"]["code"] == "invalid_json", a
    assert mock.count() == 0


@pytest.mark.parametrize("shape", ["arrays", "objects", "unclosed"])
def test_json_nested_100000_deep_400_fast(mg, shape):
    """A body nested 100,000 levels deep (arrays, objects, or arrays never
    closed) is 400 invalid_json naming the depth limit, answered within a
    second (the scanner is iterative, no recursion), and the gateway serves
    the next request normally."""
    mock, gw = mg
    depth = 100000
    if shape == "arrays":
        inner = b"[" * depth + b"]" * depth
    elif shape == "objects":
        inner = b'{"a":' * depth + b"1" + b"}" * depth
    else:
        inner = b"[" * depth
    body = b'{"model":"qwen2.5-7b","messages":[],"x":' + inner + b"}"
    t0 = time.monotonic()
    a = raw_post(gw, body)
    assert time.monotonic() - t0 < 1.0
    assert a.status == 400 and a.json()["error"]["code"] == "invalid_json", a
    assert "nested deeper" in a.json()["error"]["message"] or shape == "unclosed"
    assert mock.count() == 0
    assert http("POST", gw.url + CHAT, chat()).status == 200


@pytest.mark.parametrize("num", [b"1e999999", b"-1e999999", b"9" * 5000,
                                 b"0.00000000000000000000000000000000001e-400"])
def test_huge_number_in_a_field_the_gateway_does_not_read(mg, num):
    """A huge number where the gateway has no reason to look (temperature)
    is passed on byte for byte: the backend decides (the mock, like
    OpenAI, parses it or refuses it) and the gateway relays its answer."""
    mock, gw = mg
    body = b'{"model":"qwen2.5-7b","messages":[{"role":"user","content":"x"}],"temperature":' + num + b"}"
    a = raw_post(gw, body)
    assert a.status in (200, 400), a
    assert mock.count() == 1
    got = mock.requests()[-1]["body"]
    raw = got if isinstance(got, str) else None
    if raw is not None:
        assert num.decode() in raw
    else:  # the mock parsed it: the value arrived as a number
        assert isinstance(got["temperature"], (int, float))


@pytest.fixture
def bounded(mockllm, gateway):
    mock = start_mock(mockllm)
    cfg = mock_backend_config(mock)
    cfg["limits"] = {"max_n": 4, "max_tokens": 1000}
    return mock, gateway(cfg)


@pytest.mark.parametrize("field,value", [
    ("n", b"5"), ("n", b"99999999999999999999999999999"), ("n", b"1e400"),
    ("n", b"-1"), ("n", b"2.5"),
    ("max_tokens", b"1001"), ("max_tokens", b"1" + b"0" * 400),
    ("max_tokens", b"1E3"), ("max_completion_tokens", b"4294967297"),
])
def test_n_and_max_tokens_over_the_bound_400(bounded, field, value):
    """n above limits.max_n (4 here), max_tokens or max_completion_tokens
    above limits.max_tokens (1000 here), or either written as anything but a
    plain non-negative integer (negative, fraction, exponent, more digits
    than any counter holds) is 400 integer_above_max_value, type
    invalid_request_error, naming the field and the bound; the backend sees
    nothing."""
    mock, gw = bounded
    body = b'{"model":"qwen2.5-7b","messages":[],"' + field.encode() + b'":' + value + b"}"
    a = raw_post(gw, body)
    assert a.status == 400, a
    err = a.json()["error"]
    assert err["type"] == "invalid_request_error" and err["code"] == "integer_above_max_value"
    bound = "limits.max_n" if field == "n" else "limits.max_tokens"
    assert "'%s'" % field in err["message"] and bound in err["message"], err
    assert str(4 if field == "n" else 1000) in err["message"], err
    assert mock.count() == 0


@pytest.mark.parametrize("body", [
    b'{"model":"qwen2.5-7b","mod\\u0065l":"gpt-4o-mini","messages":[]}',
    b'{"model":"qwen2.5-7b","messages":[],"max_tokens":5,"max_tok\\u0065ns":5000}',
    b'{"model":"qwen2.5-7b","messages":[],"\\u006e":1,"n":1000}',
    b'{"model":"qwen2.5-7b","messages":[],"n":1,"n":1000}',
    b'{"model":"qwen2.5-7b","stream":false,"str\\u0065am":true,"messages":[]}',
], ids=["model", "max_tokens", "n", "plain-n", "stream"])
def test_duplicate_keys_written_with_escapes_400(bounded, body):
    """A field the gateway reads (model, n, max_tokens, stream) given twice,
    the second time written with escapes ("mod\\u0065l"): a backend's
    parser reads both as the same key and keeps the last, so the gateway
    must see them as one key too. It answers 400 invalid_json (duplicate
    key), and nothing reaches the backend. Before, it checked and routed
    the first value while the backend served the second: a key limited to
    one model got another, and max_tokens slipped past limits.max_tokens."""
    mock, gw = bounded
    a = raw_post(gw, body)
    assert a.status == 400 and a.json()["error"]["code"] == "invalid_json", a
    assert "duplicate key" in a.json()["error"]["message"], a
    assert mock.count() == 0


def test_escaped_key_alone_is_read_as_that_key(bounded):
    """A lone escaped key is the key it decodes to: "mod\\u0065l" routes
    like "model" (200, the backend gets that model), and "max_tok\\u0065ns"
    over the bound is refused like "max_tokens"."""
    mock, gw = bounded
    a = raw_post(gw, b'{"mod\\u0065l":"gpt-4o-mini","messages":[{"role":"user","content":"x"}]}')
    assert a.status == 200, a
    assert mock.requests()[-1]["body"]["model"] == "gpt-4o-mini"
    a = raw_post(gw, b'{"model":"qwen2.5-7b","messages":[],"max_tok\\u0065ns":5000}')
    assert a.status == 400 and a.json()["error"]["code"] == "integer_above_max_value", a
    assert mock.count() == 1


def test_n_and_max_tokens_at_the_bound_pass(bounded):
    """At the bound (n 4, max_tokens 1000), and null, the request is served."""
    mock, gw = bounded
    for extra in ({"n": 4, "max_tokens": 1000}, {"n": 0, "max_completion_tokens": 1000},
                  {"n": None, "max_tokens": None}):
        r = http("POST", gw.url + CHAT, chat(**extra))
        assert r.status == 200, (extra, r)
    assert mock.count() == 3


def test_default_bounds(mg):
    """Without limits.*: n up to 128 (OpenAI's own bound) and max_tokens up
    to 1,000,000 pass; 129 and 1,000,001 are 400."""
    mock, gw = mg
    assert http("POST", gw.url + CHAT, chat(n=128, max_tokens=1000000)).status == 200
    for extra in ({"n": 129}, {"max_tokens": 1000001}):
        r = http("POST", gw.url + CHAT, chat(**extra))
        assert r.status == 400 and r.json()["error"]["code"] == "integer_above_max_value", r
    assert mock.count() == 1


def test_bounds_config_checked(gateway_check, mockllm):
    """promptgate -t refuses bounds out of range, naming the key."""
    mock = mockllm()
    cfg = mock_backend_config(mock)
    cfg["limits"] = {"max_n": 0, "max_tokens": "many"}
    rc, out, err = gateway_check(cfg)
    assert rc == 1
    assert "limits.max_n: must be an integer from 1" in err + out
    assert "limits.max_tokens: must be an integer from 1" in err + out


# ------------------------------------------------------- keys and registry

SECRET = "sk-virtual-key-0123456789"


def sha(s):
    return hashlib.sha256(s.encode()).hexdigest()


@pytest.fixture
def keyed(mockllm, gateway):
    mock = start_mock(mockllm)
    cfg = mock_backend_config(mock)
    cfg["keys"] = [{"name": "shop", "key_sha256": sha(SECRET), "models": ["*"]}]
    return mock, gateway(cfg)


@pytest.mark.parametrize("header", [
    "Authorization: Bearer x' OR '1'='1",
    "Authorization: Bearer ' OR 1=1;--",
    "Authorization: Bearer %s' --" % SECRET,
    "Authorization: Bearer %s;DROP TABLE keys" % SECRET,
    "x-api-key: ' UNION SELECT key FROM keys--",
    "Authorization: Bearer %s\\0" % SECRET,
    "Authorization: Bearer %s%%00" % SECRET,
    "Authorization: Bearer " + SECRET[:-1],
    "Authorization: Bearer " + SECRET + " ",
], ids=["or", "comment", "key-then-quote", "key-then-sql", "x-api-key-union",
        "escaped-nul", "percent-nul", "prefix", "trailing-space"])
def test_sql_in_keys_401(keyed, header):
    """A key holding SQL, quotes, a written-out NUL, or a prefix of the real
    key is 401 invalid_api_key (keys are compared by SHA-256 against the
    config, no SQL anywhere), the error does not echo what was sent, and
    the real key still works afterwards. A trailing space is trimmed by
    the HTTP parser (RFC 9112 OWS), so that one is the real key: 200."""
    mock, gw = keyed
    a = raw_post(gw, json.dumps(chat()).encode(), extra=header.encode() + b"\r\n")
    if header.endswith(SECRET + " "):
        assert a.status == 200, a
        return
    assert a.status == 401 and a.json()["error"]["code"] == "invalid_api_key", a
    given = header.split(":", 1)[1].strip()
    assert given.encode() not in a.body and SECRET.encode() not in a.body
    assert mock.count() == 0
    r = http("POST", gw.url + CHAT, chat(), headers={"Authorization": "Bearer " + SECRET})
    assert r.status == 200, r


def test_escaped_model_key_cannot_pass_a_keys_model_list(mockllm, gateway):
    """A virtual key allowed only qwen2.5-7b: "mod\\u0065l": "gpt-4o-mini"
    is read as the model it names, so 403 model_not_allowed; given beside a
    plain "model" it is a duplicate, 400. The backend sees neither."""
    mock = start_mock(mockllm)
    cfg = mock_backend_config(mock)
    cfg["keys"] = [{"name": "shop", "key_sha256": sha(SECRET), "models": ["qwen2.5-7b"]}]
    gw = gateway(cfg)
    auth = b"Authorization: Bearer " + SECRET.encode() + b"\r\n"
    a = raw_post(gw, b'{"mod\\u0065l":"gpt-4o-mini","messages":[]}', extra=auth)
    assert a.status == 403 and a.json()["error"]["code"] == "model_not_allowed", a
    a = raw_post(gw, b'{"model":"qwen2.5-7b","mod\\u0065l":"gpt-4o-mini","messages":[]}',
                 extra=auth)
    assert a.status == 400 and "duplicate key" in a.json()["error"]["message"], a
    assert mock.count() == 0


def test_nul_byte_in_key_header_400(keyed):
    """A real NUL byte in the Authorization header never reaches the key
    check: the HTTP parser answers 400 and closes."""
    mock, gw = keyed
    s = connect(gw)
    try:
        send(s, post(json.dumps(chat()).encode(),
                     extra=b"Authorization: Bearer " + SECRET.encode() + b"\x00x\r\n"))
        a = parse_answers(read_to_eof(s))
    finally:
        s.close()
    only_error(a, 400)
    assert mock.count() == 0


@pytest.fixture
def registry(tmp_path):
    ctl = Ctl(tmp_path / "reg.db")
    ctl.ok("init")
    (tmp_path / "v.json").write_text(json.dumps({
        "messages": [{"role": "user", "content": "Describe {{product_name}}."}],
        "params": {"model": "qwen2.5-7b", "max_tokens": 12}}))
    ctl.ok("publish", "product_copy", "-f", str(tmp_path / "v.json"))
    ctl.ok("label", "product_copy", "1", "production")
    (tmp_path / "big.json").write_text(json.dumps({
        "messages": [{"role": "user", "content": "Long."}],
        "params": {"model": "qwen2.5-7b", "max_tokens": 5000}}))
    ctl.ok("publish", "long_copy", "-f", str(tmp_path / "big.json"))
    return ctl


@pytest.fixture
def reg_gw(mockllm, gateway, registry):
    mock = start_mock(mockllm)
    cfg = mock_backend_config(mock)
    cfg["registry"] = {"path": registry.db}
    cfg["limits"] = {"max_tokens": 1000}
    return mock, gateway(cfg), registry


def registry_intact(ctl):
    con = sqlite3.connect(ctl.db)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        names = [r[0] for r in con.execute("SELECT name FROM prompts ORDER BY name")]
        assert names == ["long_copy", "product_copy"], names
        # exposures is a view over exposure_chunks since migration 0005
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master"
                                            " WHERE type IN ('table', 'view')")}
        assert {"prompts", "versions", "labels", "exposures", "exposure_chunks"} <= tables, tables
    finally:
        con.close()
    assert "product_copy" in ctl.ok("list").out


@pytest.mark.parametrize("prompt,status,code", [
    ({"name": "x'; DROP TABLE prompts;--"}, 400, "invalid_prompt"),
    ({"name": "product_copy' OR '1'='1"}, 400, "invalid_prompt"),
    ({"name": "product_copy\u0000"}, 400, "invalid_prompt"),
    ({"name": "product_copy\r\nSet-Cookie: x"}, 400, "invalid_prompt"),
    ({"name": "product_copy", "label": "production' OR 1=1--"}, 400, "invalid_prompt"),
    ({"name": "product_copy", "version": "1 OR 1=1"}, 400, "invalid_prompt"),
    ({"name": "product_copy", "version": 10 ** 400}, 400, "invalid_prompt"),
    ({"name": "drop_table_prompts"}, 404, "prompt_not_found"),
    ({"name": "product_copy", "label": "staging"}, 404, "prompt_not_found"),
], ids=["drop-table", "or", "nul", "crlf", "label-sql", "version-sql",
        "version-huge", "unknown-name", "unknown-label"])
def test_sql_nul_and_crlf_in_prompt_references(reg_gw, prompt, status, code):
    """Prompt references are checked against the registry's name and label
    grammar ([a-z0-9_.-]) before any lookup, and the lookup is in the
    in-memory snapshot (no SQL per request): SQL, NUL (\\u0000) or CR/LF
    in a name or label is 400 invalid_prompt, a well-formed unknown name or
    label 404 prompt_not_found. No header carries the bad name, the
    backend sees nothing, the registry is intact afterwards, and the real
    prompt is still served."""
    mock, gw, ctl = reg_gw
    body = json.dumps({"prompt": dict(prompt, variables={"product_name": "K"})}).encode()
    a = raw_post(gw, body)
    assert a.status == status and a.json()["error"]["code"] == code, a
    clean_head(a)
    assert a.header("x-prompt-version") is None
    assert mock.count() == 0
    registry_intact(ctl)
    r = http("POST", gw.url + CHAT, {"prompt": {"name": "product_copy", "label": "production",
                                               "variables": {"product_name": "K"}}})
    assert r.status == 200 and r.headers["x-prompt-version"] == "product_copy@1", r


def test_sql_in_user_id_is_stored_as_data(reg_gw):
    """The caller id (x-user-id) is written to the exposures table: SQL in
    it is stored as the literal string (parameterised SQL), and the
    registry keeps its tables."""
    mock, gw, ctl = reg_gw
    uid = "u'); DROP TABLE exposures;--"
    r = http("POST", gw.url + CHAT, {"prompt": {"name": "product_copy", "label": "production",
                                               "variables": {"product_name": "K"}}},
             headers={"x-user-id": uid, "x-request-id": "sql-user-1"})
    assert r.status == 200, r

    def row():
        con = sqlite3.connect(ctl.db)
        try:
            return con.execute("SELECT user_id FROM exposures WHERE request_id = ?",
                               ("sql-user-1",)).fetchone()
        finally:
            con.close()
    assert wait_until(row)[0] == uid
    registry_intact(ctl)


def test_prompt_version_params_held_to_max_tokens(reg_gw):
    """A version whose params set max_tokens 5000, above limits.max_tokens
    (1000): the rendered request is refused 400 like a request's own."""
    mock, gw, ctl = reg_gw
    r = http("POST", gw.url + CHAT, {"prompt": {"name": "long_copy", "version": 1}})
    assert r.status == 400 and r.json()["error"]["code"] == "integer_above_max_value", r
    assert mock.count() == 0


# ------------------------------------------------------- header injection

def test_request_id_with_crlf_payload(mg):
    """x-request-id is echoed only when it is short and plain
    ([A-Za-z0-9._:-]); written with CRLF + Set-Cookie (which on the wire
    makes a second request header), percent-encoded CRLF, a tab or
    non-ASCII, it is replaced by a fresh id. No answer carries Set-Cookie."""
    mock, gw = mg
    body = json.dumps(chat()).encode()
    for extra, echoed in [
            (b"X-Request-Id: abc\r\nSet-Cookie: x=1\r\n", "abc"),
            (b"X-Request-Id: abc%0d%0aSet-Cookie:%20x=1\r\n", None),
            (b"X-Request-Id: abc\tSet-Cookie: x=1\r\n", None),
            (b"X-Request-Id: abc\xc2\x85Set-Cookie: x=1\r\n", None)]:
        a = raw_post(gw, body, extra=extra)
        assert a.status == 200, a
        clean_head(a)
        rid = a.header("x-request-id")
        if echoed:
            assert rid == echoed, a
        else:
            assert re.fullmatch(r"[0-9a-f]{16}", rid), a


def test_model_with_crlf_payload(mg):
    """A model name holding CR/LF (JSON-escaped) is 404 model_not_found: it
    appears only JSON-escaped in the body, never in a header."""
    mock, gw = mg
    a = raw_post(gw, json.dumps(chat(model="qwen2.5-7b\r\nSet-Cookie: x=1")).encode())
    assert a.status == 404 and a.json()["error"]["code"] == "model_not_found", a
    clean_head(a)
    assert b"\r" not in a.body and b"\n" not in a.body, a.body
    assert b"\\u000d\\nSet-Cookie" in a.body, a.body
    assert mock.count() == 0


def test_access_log_and_errors_cannot_be_forged(mg):
    """What a client controls and the gateway writes into its access log
    and error bodies (the path, with quotes and invalid UTF-8; the model,
    with a newline and a fake log line; the method) stays inside its JSON
    string: every access log line parses as JSON, one per request, and
    every error body is valid UTF-8 JSON."""
    mock, gw = mg
    fake = '"}\n{"ts":1,"request_id":"forged","status":200}'
    sent = [
        post(json.dumps(chat()).encode()).replace(
            CHAT.encode(), b'/v1/"x\\\xff\xfe\xc0\xaf', 1),
        post(json.dumps(chat(model="m" + fake)).encode()),
        post(json.dumps(chat(model="\u2028\u2029\x7f\x1b[31m")).encode()),
        post(json.dumps(chat()).encode()).replace(b"POST", b"PURGE", 1),
    ]
    for data in sent:
        s = connect(gw)
        try:
            send(s, data)
            a = read_answer(s)
        finally:
            s.close()
        assert a.status in (404, 405), a
        json.loads(a.body.decode("utf-8"))
        clean_head(a)
    # split on LF only: U+2028/U+2029 are line ends to str.splitlines but
    # plain characters inside a JSON string; the log is written in batches
    def log_lines():
        got = [l for l in gw.stderr_text().split("\n") if l.startswith("{")]
        return got if len(got) >= len(sent) + 1 else None
    lines = wait_until(log_lines, timeout=3)
    logs = [json.loads(l) for l in lines]
    assert all(isinstance(o, dict) and o.get("request_id") for o in logs), lines
    assert not any(o["request_id"] == "forged" for o in logs), lines
    posts = [o for o in logs if o["path"] != "/healthz"]
    assert len(posts) == len(sent), lines
    assert "forged" in posts[1]["model"]


@pytest.mark.parametrize("name", ["m\r\nSet-Cookie: x=1", "m\x0bx", "m x", ""])
def test_backend_name_cannot_carry_a_header(gateway_check, mockllm, name):
    """A backend's name is copied into x-promptgate-backend: the config
    refuses any name outside [A-Za-z0-9_.-] (1-64 bytes), so none can carry
    CR, LF or another control byte."""
    mock = mockllm()
    cfg = mock_backend_config(mock)
    cfg["backends"][0]["name"] = name
    rc, out, err = gateway_check(cfg)
    assert rc == 1 and "backends[0].name: must be 1-64 characters" in err + out, (out, err)


class FakeUpstream:
    """A backend that answers every request with the same raw bytes and
    closes: for answers a real server would never send."""

    def __init__(self, answer):
        self.answer = answer
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.seen = []
        self.stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        self.sock.settimeout(0.2)
        while not self.stop:
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with c:
                c.settimeout(2)
                data = b""
                try:
                    while b"\r\n\r\n" not in data:
                        chunk = c.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                    head, _, rest = data.partition(b"\r\n\r\n")
                    m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
                    n = int(m.group(1)) if m else 0
                    while len(rest) < n:
                        chunk = c.recv(65536)
                        if not chunk:
                            break
                        rest += chunk
                    self.seen.append(head)
                    c.sendall(self.answer)
                except OSError:
                    pass

    def close(self):
        self.stop = True
        self.sock.close()
        self.thread.join()


BODY = json.dumps({"id": "x", "object": "chat.completion", "choices": [],
                   "usage": {"prompt_tokens": 1, "completion_tokens": 1,
                             "total_tokens": 2}}).encode()


def fake_answer(status, headers):
    return (b"HTTP/1.1 %d X\r\n" % status + headers +
            b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(BODY) + BODY)


FAKE_KEY = "sk-fake-backend-key-99"


@pytest.fixture(params=["127.0.0.1", "localhost"], ids=["native", "curl"])
def fake_gw(request, gateway):
    """start(answer) -> (fake, gw): a gateway whose one backend is a
    FakeUpstream, reached by the native client (numeric host) or libcurl
    (named host)."""
    fakes = []

    def start(answer):
        fake = FakeUpstream(answer)
        fakes.append(fake)
        cfg = {"backends": [{"name": "fake", "url": "http://%s:%d/v1" % (request.param, fake.port),
                             "models": list(DEFAULT_MODELS), "timeout_ms": 3000,
                             "api_key": "env:PG_FAKE_KEY"}],
               "access_log": "stderr"}
        return fake, gateway(cfg, env={"PG_FAKE_KEY": FAKE_KEY})
    yield start
    for f in fakes:
        f.close()


@pytest.mark.parametrize("status,headers", [
    (429, b"Retry-After: 1\rSet-Cookie: injected=1\r\n"),
    (429, b"Retry-After: 1\x0bSet-Cookie: injected=1\r\n"),
    (429, b"Retry-After: 1\x00Set-Cookie: injected=1\r\n"),
    (200, b"Content-Type: application/json\rSet-Cookie: injected=1\r\n"),
    (200, b"Content-Type: application/json\x0cSet-Cookie: injected=1\r\n"),
    (200, b"Content-Type: application/json\x00\r\nSet-Cookie: injected=1\r\n"),
    (200, b"Set-Cookie: injected=1\r\nContent-Type: application/json\r\n"),
], ids=["retry-after-cr", "retry-after-vt", "retry-after-nul", "ctype-cr",
        "ctype-ff", "ctype-nul-then-cookie", "plain-set-cookie"])
def test_upstream_header_values_cannot_split_the_answer(fake_gw, status, headers):
    """The gateway copies an upstream's Retry-After and Content-Type into
    its answer. Values holding a bare CR, another control byte or a NUL
    (with Set-Cookie after it) must not reach the client as such: the
    answer's head has only clean CRLF lines and no Set-Cookie, whichever
    transport read the upstream. Upstream headers the gateway does not copy
    (its own Set-Cookie) are not relayed at all."""
    fake, gw = fake_gw(fake_answer(status, headers))
    a = raw_post(gw, json.dumps(chat()).encode())
    clean_head(a)
    assert a.status in (status, 502, 503), a
    assert fake.seen, "the fake upstream was never reached"


def test_clean_upstream_headers_are_copied(fake_gw):
    """The control case for the test above: a clean Retry-After and a clean
    Content-Type from the upstream do reach the client."""
    fake, gw = fake_gw(fake_answer(429, b"Retry-After: 7\r\n"
                                        b"Content-Type: application/json; charset=utf-8\r\n"))
    a = raw_post(gw, json.dumps(chat()).encode())
    assert a.status == 429, a
    assert a.header("retry-after") == "7", a
    assert a.header("content-type") == "application/json; charset=utf-8", a


# ------------------------------------------------------------ security

@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_upstream_redirect_is_not_followed_with_the_key(fake_gw, mockllm, status):
    """A backend answering a redirect to another host: the gateway never
    follows it (which would carry the request, and the provider key, to
    that host); the client gets the backend's answer or a gateway error,
    and the other host sees nothing."""
    evil = start_mock(mockllm)
    fake, gw = fake_gw(b"HTTP/1.1 %d Moved\r\nLocation: http://127.0.0.1:%d/v1/chat/completions\r\n"
                       b"Content-Length: 0\r\nConnection: close\r\n\r\n" % (status, evil.port))
    a = raw_post(gw, json.dumps(chat()).encode())
    clean_head(a)
    assert a.status in (status, 502, 503), a
    assert fake.seen and FAKE_KEY.encode() in fake.seen[0]  # its own backend
    assert FAKE_KEY.encode() not in a.head + a.body
    time.sleep(0.2)
    assert evil.count() == 0


PROVIDER_KEY = "sk-provider-SECRET-7f3a9c1e"


def test_provider_key_never_leaves_for_another_host_nor_shows(mockllm, gateway):
    """The api_key of backend "keyed" goes to that backend only (as
    Authorization: Bearer), never to backend "plain" of another model, and
    never appears in any answer (success, stream, 404, upstream error,
    upstream down, /v1/models, /readyz, /metrics, /admin/backends) nor in the
    gateway's stderr (access log and diagnostics), up to its exit."""
    keyed = start_mock(mockllm, "--models", "qwen2.5-7b")
    plain = start_mock(mockllm, "--models", "gpt-4o-mini")
    dead = free_port()
    cfg = {"backends": [
        {"name": "keyed", "url": keyed.base, "models": ["qwen2.5-7b"], "api_key": "env:PG_PROVIDER_KEY"},
        {"name": "plain", "url": plain.base, "models": ["gpt-4o-mini"]},
        {"name": "down", "url": "http://127.0.0.1:%d/v1" % dead, "models": ["text-embedding-3-small"],
         "api_key": "env:PG_PROVIDER_KEY", "connect_timeout_ms": 500}],
        "admin_key": "env:PG_ADMIN_KEY", "access_log": "stderr"}
    gw = gateway(cfg, env={"PG_PROVIDER_KEY": PROVIDER_KEY, "PG_ADMIN_KEY": "admin-k"})
    seen = []
    for method, path, body, hdrs in [
            ("POST", CHAT, chat(), {}),
            ("POST", CHAT, chat(stream=True), {}),
            ("POST", CHAT, chat(model="gpt-4o-mini"), {}),
            ("POST", CHAT, chat(model="nope"), {}),
            ("POST", CHAT, chat(), {"x-mock-fault": "status=500"}),
            ("POST", CHAT, chat(), {"x-mock-fault": "status=401"}),
            ("POST", "/v1/embeddings", {"model": "text-embedding-3-small", "input": "x"}, {}),
            ("POST", CHAT, b"{bad json", {}),
            ("GET", "/v1/models", None, {}),
            ("GET", "/readyz", None, {}),
            ("GET", "/metrics", None, {}),
            ("GET", "/admin/backends", None, {"Authorization": "Bearer admin-k"})]:
        r = http(method, gw.url + path, body, headers=hdrs)
        seen.append((path, r.status))
        text = r.body + repr(r.header_list).encode()
        assert PROVIDER_KEY.encode() not in text and b"SECRET" not in text, (path, r)
    assert seen[0][1] == 200 and seen[2][1] == 200 and seen[3][1] == 404, seen
    assert seen[6][1] in (502, 503, 504), seen
    got = [q["headers"].get("authorization") for q in keyed.requests()]
    assert got and all(a == "Bearer " + PROVIDER_KEY for a in got), got
    for q in plain.requests():
        assert PROVIDER_KEY not in json.dumps(q), q
    assert gw.stop() == 0
    assert PROVIDER_KEY not in gw.stderr_text() and "SECRET" not in gw.stderr_text()


def test_key_not_printed_by_config_check(mockllm, gateway_check):
    """promptgate -t on a config with a provider key (and a problem to
    report) prints neither the key nor any part of it."""
    mock = mockllm()
    cfg = mock_backend_config(mock, api_key="env:PG_PROVIDER_KEY", weight="x")
    rc, out, err = gateway_check(cfg, env={"PG_PROVIDER_KEY": PROVIDER_KEY})
    assert rc == 1 and "weight" in err + out
    assert "SECRET" not in out + err


def test_nothing_in_a_request_chooses_the_upstream_host(mockllm, gateway):
    """Host, X-Forwarded-Host, Forwarded, a model naming a URL or
    host:port, and paths with // or a query holding a URL: the request goes
    to the configured backend (its own Host header) or is refused; the
    other server never sees a byte."""
    mock = start_mock(mockllm)
    evil = start_mock(mockllm)
    gw = gateway(mock_backend_config(mock))
    evil_host = "127.0.0.1:%d" % evil.port
    ok = [
        (CHAT, chat(), {"Host": evil_host}),
        (CHAT, chat(), {"X-Forwarded-Host": evil_host, "Forwarded": "host=" + evil_host}),
        (CHAT + "?url=http://" + evil_host + "/v1", chat(), {}),
    ]
    refused = [
        (CHAT, chat(model="http://%s/v1/chat/completions" % evil_host), {}),
        (CHAT, chat(model="//%s/v1" % evil_host), {}),
        (CHAT, chat(model="qwen2.5-7b@%s" % evil_host), {}),
        ("//" + evil_host + CHAT, chat(), {}),
        ("/v1/chat/completions/../../" + evil_host, chat(), {}),
    ]
    for path, body, hdrs in ok:
        r = http("POST", gw.url + path, body, headers=hdrs)
        assert r.status == 200, (path, hdrs, r)
        q = mock.requests()[-1]
        assert q["headers"]["host"] == "127.0.0.1:%d" % mock.port, q
        assert q["path"] == CHAT, q
    for path, body, hdrs in refused:
        r = http("POST", gw.url + path, body, headers=hdrs)
        assert r.status == 404, (path, r)
    assert mock.count() == len(ok)
    assert evil.count() == 0


ADMIN = "admin-key-42"


@pytest.mark.parametrize("method,path", [
    ("GET", "/admin/backends"), ("GET", "/admin/cache"),
    ("POST", "/admin/cache/purge")])
def test_admin_endpoints_need_the_admin_key(mockllm, gateway, method, path):
    """Each admin endpoint: no key (or an empty Bearer) 401; a wrong key, a prefix or extension
    of the real one, SQL, the client's virtual key, or the admin key in the
    wrong header 403; the admin key (Bearer or x-admin-key) 200. Without
    admin_key in the config every admin endpoint is 404 (off)."""
    mock = start_mock(mockllm)
    cfg = mock_backend_config(mock)
    cfg.update(admin_key="env:PG_ADMIN_KEY", cache={"backend": "memory"},
               keys=[{"name": "shop", "key_sha256": sha(SECRET), "models": ["*"]}])
    gw = gateway(cfg, env={"PG_ADMIN_KEY": ADMIN})
    body = {"namespace": "default"} if method == "POST" else None

    def call(headers):
        return http(method, gw.url + path, body, headers=headers)
    r = call({})
    assert r.status == 401 and r.json()["error"]["code"] == "missing_admin_key", r
    for h in [{"Authorization": "Bearer wrong"}, {"Authorization": "Bearer " + ADMIN[:-1]},
              {"Authorization": "Bearer " + ADMIN + "x"}, {"Authorization": "Bearer ' OR 1=1--"},
              {"Authorization": "Bearer " + SECRET}, {"x-admin-key": ADMIN + "\t"},
              {"x-api-key": ADMIN}, {"Authorization": "Bearer "}]:
        r = call(h)
        if "x-api-key" in h or h.get("Authorization") == "Bearer ":
            # not an admin key header / "Bearer" with nothing after it
            assert r.status == 401, (h, r)
            continue
        if h.get("x-admin-key") == ADMIN + "\t":
            assert r.status == 200, (h, r)  # OWS trimmed by the HTTP parser
            continue
        assert r.status == 403 and r.json()["error"]["code"] == "invalid_admin_key", (h, r)
        assert ADMIN.encode() not in r.body
    for h in [{"Authorization": "Bearer " + ADMIN}, {"x-admin-key": ADMIN}]:
        assert call(h).status == 200, h

    gw.stop()
    cfg.pop("admin_key")
    gw2 = gateway(cfg)
    r = http(method, gw2.url + path, body, headers={"Authorization": "Bearer " + ADMIN})
    assert r.status == 404 and r.json()["error"]["code"] == "admin_disabled", r
