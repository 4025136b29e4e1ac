"""Registry prompts through promptgate (issue 7): resolution by label and by
version, render errors, params, hot relabel, experiments (stickiness and
split), exposures with and without outputs (streamed too), feedback
idempotency and the samples export."""

import ctypes
import errno
import http.client as httpclient
import json
import os
import platform
import signal
import sqlite3
import threading
import time

import pytest

from helpers import DEFAULT_MODELS, http, sse_json, wait_until
from regtest import Ctl

CHAT = "/v1/chat/completions"

V1 = "Write a product description for {{product_name}}.\n"
V2 = {"messages": [{"role": "system", "content": "You write copy for a shop. Never invent facts."},
                   {"role": "user", "content": "Describe {{product_name}}. Facts: {{facts}}"}],
      "params": {"model": "qwen2.5-7b", "temperature": 0.7, "max_tokens": 12}}
V3 = {"messages": [{"role": "system", "content": "Short copy. At most 60 words."},
                   {"role": "user", "content": "Describe {{product_name}}. Facts: {{facts}}"}],
      "params": {"model": "gpt-4o-mini", "temperature": 0.2}}


@pytest.fixture
def registry(tmp_path):
    """A registry with product_copy v1 (text), v2, v3; production -> 2."""
    ctl = Ctl(tmp_path / "reg.db")
    ctl.ok("init")
    (tmp_path / "v1.txt").write_text(V1)
    (tmp_path / "v2.json").write_text(json.dumps(V2))
    (tmp_path / "v3.json").write_text(json.dumps(V3))
    for v in ("v1.txt", "v2.json", "v3.json"):
        ctl.ok("publish", "product_copy", "-f", str(tmp_path / v))
    ctl.ok("label", "product_copy", "2", "production")
    return ctl


def gw_config(mock, ctl, **registry):
    reg = {"path": ctl.db}
    reg.update(registry)
    return {"limits": {"max_body_bytes": 1 << 20, "drain_timeout_ms": 2000},
            "backends": [{"name": "mock", "url": mock.base, "models": list(DEFAULT_MODELS),
                          "timeout_ms": 5000}],
            "access_log": "stderr", "registry": reg}


@pytest.fixture
def served(mockllm, gateway, registry):
    """(mock, gw, ctl): a gateway on the registry, exposures in the db."""
    mock = mockllm()
    mock.reset()
    gw = gateway(gw_config(mock, registry))
    return mock, gw, registry


def ask(gw, prompt, headers=None, **extra):
    body = {"prompt": prompt}
    body.update(extra)
    return http("POST", gw.url + CHAT, body, headers=headers)


def exposures(db, n=None, timeout=5):
    """Rows of the exposures table as dicts (waits until there are n)."""
    def rows():
        con = sqlite3.connect(db)
        con.row_factory = sqlite3.Row
        try:
            r = [dict(x) for x in con.execute("SELECT * FROM exposures ORDER BY id")]
        finally:
            con.close()
        return r if n is None or len(r) >= n else None
    return wait_until(rows, timeout=timeout, message="exposures written") if n else rows()


def export(ctl, *args):
    r = ctl.run("samples", "export", *args)
    assert r.rc == 0, r
    return [json.loads(line) for line in r.out.splitlines()]


# ------------------------------------------------------------ resolution

def test_label_renders_messages_params_and_header(served):
    mock, gw, ctl = served
    r = ask(gw, {"name": "product_copy", "label": "production",
                 "variables": {"product_name": "Kettle", "facts": "1.7 l"}},
            user="u1")
    assert r.status == 200, r
    assert r.headers["x-prompt-version"] == "product_copy@2"
    assert "x-prompt-experiment" not in r.headers
    up = mock.requests()[-1]["body"]
    assert "prompt" not in up
    assert up["messages"] == [
        {"role": "system", "content": "You write copy for a shop. Never invent facts."},
        {"role": "user", "content": "Describe Kettle. Facts: 1.7 l"}]
    # the version's params, where the request sets none; the request's own
    # members kept
    assert up["model"] == "qwen2.5-7b" and up["temperature"] == 0.7
    assert up["max_tokens"] == 12 and up["user"] == "u1"


def capture_backend():
    """A one-connection backend that keeps the raw request bytes and answers
    a canned chat completion: (url, thread, box); box["raw"] after join."""
    import socket
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    box = {}
    answer = json.dumps({"id": "c", "object": "chat.completion", "created": 0, "model": "m",
                         "choices": [{"index": 0, "finish_reason": "stop", "message": {
                             "role": "assistant", "content": "ok"}}],
                         "usage": {"prompt_tokens": 1, "completion_tokens": 1,
                                   "total_tokens": 2}}).encode()

    def serve():
        srv.settimeout(10)
        c, _ = srv.accept()
        data = b""
        while b"\r\n\r\n" not in data:
            data += c.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        n = int([l.split(b":")[1] for l in head.split(b"\r\n")
                 if l.lower().startswith(b"content-length:")][0])
        while len(body) < n:
            body += c.recv(65536)
        box["raw"] = body
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                  b"Connection: close\r\n\r\n%s" % (len(answer), answer))
        c.close()
        srv.close()

    t = threading.Thread(target=serve)
    t.start()
    return "http://127.0.0.1:%d/v1" % srv.getsockname()[1], t, box


def test_params_numbers_forwarded_as_published(gateway, registry, tmp_path):
    """0.7 goes upstream as 0.7, not as the double's 17 digits
    (0.69999999999999996): what the prompt engineer wrote, and what
    backends' fast JSON paths take; 2.0 stays a real."""
    v = {"messages": [{"role": "user", "content": "hi {{x}}"}],
         "params": {"model": "qwen2.5-7b", "temperature": 0.7, "top_p": 0.95,
                    "frequency_penalty": 2.0, "presence_penalty": 1e-05, "max_tokens": 12}}
    (tmp_path / "nums.json").write_text(json.dumps(v))
    registry.ok("publish", "nums", "-f", str(tmp_path / "nums.json"))
    url, t, box = capture_backend()
    cfg = {"backends": [{"name": "cap", "url": url, "models": ["qwen2.5-7b"], "timeout_ms": 5000}],
           "access_log": "stderr", "registry": {"path": registry.db}}
    gw = gateway(cfg)
    r = ask(gw, {"name": "nums", "variables": {"x": "there"}})
    t.join(10)
    assert r.status == 200, r
    raw = box["raw"]
    for want in (b'"temperature":0.7,', b'"top_p":0.95,', b'"frequency_penalty":2.0,',
                 b'"presence_penalty":1e-05,', b'"max_tokens":12'):
        assert want in raw, (want, raw)
    assert json.loads(raw)["temperature"] == 0.7


def test_request_params_win_over_the_versions(served):
    mock, gw, _ = served
    r = ask(gw, {"name": "product_copy", "label": "production",
                 "variables": {"product_name": "K", "facts": "f"}},
            model="gpt-4o-mini", temperature=0, max_tokens=3)
    assert r.status == 200, r
    up = mock.requests()[-1]["body"]
    assert up["model"] == "gpt-4o-mini" and up["temperature"] == 0 and up["max_tokens"] == 3
    assert list(up).count("model") == 1


def test_version_and_latest(served):
    mock, gw, _ = served
    r = ask(gw, {"name": "product_copy", "version": 1,
                 "variables": {"product_name": "Lamp"}}, model="qwen2.5-7b")
    assert r.status == 200 and r.headers["x-prompt-version"] == "product_copy@1"
    assert mock.requests()[-1]["body"]["messages"] == [
        {"role": "user", "content": "Write a product description for Lamp."}]
    r = ask(gw, {"name": "product_copy", "variables": {"product_name": "x", "facts": "y"}})
    assert r.status == 200 and r.headers["x-prompt-version"] == "product_copy@3"
    assert mock.requests()[-1]["body"]["model"] == "gpt-4o-mini"


@pytest.mark.parametrize("prompt,status,code,words", [
    ({"name": "nope", "label": "production"}, 404, "prompt_not_found", "unknown prompt 'nope'"),
    ({"name": "product_copy", "label": "staging"}, 404, "prompt_not_found", "no label 'staging'"),
    ({"name": "product_copy", "version": 9}, 404, "prompt_not_found", "no version 9"),
    ({"name": "product_copy", "label": "production", "version": 2}, 400, "invalid_prompt", "give one"),
    ({"name": "product_copy", "label": "production", "variables": {"product_name": "x"}},
     400, "prompt_render_error", "missing variable 'facts'"),
    ({"name": "Bad Name"}, 400, "invalid_prompt", "prompt.name"),
    ({"name": "product_copy", "version": "2"}, 400, "invalid_prompt", "prompt.version"),
    ({"name": "product_copy", "variables": [1]}, 400, "invalid_prompt", "prompt.variables"),
    ({"label": "production"}, 400, "invalid_prompt", "prompt.name"),
])
def test_errors_name_the_problem(served, prompt, status, code, words):
    mock, gw, ctl = served
    r = ask(gw, prompt, model="qwen2.5-7b")
    assert r.status == status, r
    err = r.json()["error"]
    assert err["code"] == code and words in err["message"], err
    assert mock.count() == 0


def test_messages_and_prompt_both_is_400(served):
    mock, gw, _ = served
    r = ask(gw, {"name": "product_copy", "version": 1, "variables": {"product_name": "x"}},
            model="qwen2.5-7b", messages=[{"role": "user", "content": "hi"}])
    assert r.status == 400 and "not both" in r.json()["error"]["message"]


@pytest.mark.parametrize("extra", [0, 20], ids=["captured", "many"])
def test_variables_as_a_parser_reads_them(served, extra):
    """The body's scan keeps a prompt's variables (up to 16; more are
    looked up by a pass of their own): keys written with escapes match by
    their value, a variable or prompt member given twice is a 400 that
    names it, and a duplicate the version does not use is harmless."""
    mock, gw, _ = served
    pad = "".join(',"unused_%d":%d' % (i, i) for i in range(extra))
    def raw(prompt):
        return http("POST", gw.url + CHAT,
                    '{"model":"qwen2.5-7b","prompt":%s}' % prompt,
                    headers={"Content-Type": "application/json"})
    r = raw('{"name":"product_copy","version":1,"variables":'
            '{"x":1,"x":2,"product\\u005fname":"Lamp \\"L\\""%s}}' % pad)
    assert r.status == 200, r
    assert mock.requests()[-1]["body"]["messages"] == [
        {"role": "user", "content": 'Write a product description for Lamp "L".'}]
    r = raw('{"name":"product_copy","version":1,"variables":'
            '{"product_name":"a"%s,"product_name":"b"}}' % pad)
    assert r.status == 400, r
    err = r.json()["error"]
    assert err["code"] == "invalid_prompt" and "duplicate key 'product_name'" in err["message"], err
    r = raw('{"name":"product_copy","n\\u0061me":"other","version":1,'
            '"variables":{"product_name":"a"%s}}' % pad)
    assert r.status == 400 and "duplicate key 'name'" in r.json()["error"]["message"], r
    assert mock.count() == 1


def test_object_params_with_a_rescan(served, tmp_path):
    """A version param whose value is an object, which the request sets
    itself beside members the body's scan does not capture (the stage then
    scans the body for the params): the request's value wins."""
    mock, gw, ctl = served
    (tmp_path / "fmt.json").write_text(json.dumps(
        {"messages": [{"role": "user", "content": "Describe {{product_name}}."}],
         "params": {"model": "qwen2.5-7b", "response_format": {"type": "json_object"},
                    "temperature": 0.5}}))
    ctl.ok("publish", "fmt_copy", "-f", str(tmp_path / "fmt.json"))
    ctl.ok("label", "fmt_copy", "1", "production")
    body = {"prompt": {"name": "fmt_copy", "label": "production",
                       "variables": {"product_name": "Lamp"}},
            "response_format": {"type": "text"}, "top_p": 0.5, "seed": 7}
    r = wait_until(lambda: (lambda x: x if x.status != 404 else None)(
        http("POST", gw.url + CHAT, body)), timeout=5, message="fmt_copy served")
    assert r.status == 200, r
    raw = mock.requests()[-1]["body"]
    assert raw["response_format"] == {"type": "text"} and raw["temperature"] == 0.5
    assert raw["top_p"] == 0.5 and raw["seed"] == 7
    assert raw["messages"] == [{"role": "user", "content": "Describe Lamp."}]


def test_no_model_anywhere_is_400(served):
    _, gw, _ = served
    r = ask(gw, {"name": "product_copy", "version": 1, "variables": {"product_name": "x"}})
    assert r.status == 400 and r.json()["error"]["code"] == "missing_model"


def test_prompt_without_registry_is_400(mockllm, gateway):
    mock = mockllm()
    gw = gateway({"backends": [{"name": "mock", "url": mock.base, "models": DEFAULT_MODELS}]})
    r = ask(gw, {"name": "product_copy"}, model="qwen2.5-7b")
    assert r.status == 400 and r.json()["error"]["code"] == "registry_not_configured"
    # a plain completions prompt string is not a registry reference
    r = http("POST", gw.url + "/v1/completions", {"model": "qwen2.5-7b", "prompt": "hi"})
    assert r.status == 200


def test_bad_registry_config(gateway_check, tmp_path):
    base = {"backends": [{"name": "m", "url": "http://127.0.0.1:9/v1", "models": ["a"]}]}
    rc, out, err = gateway_check(dict(base, registry={"path": ""}))
    assert rc == 1 and "registry.path" in err
    rc, out, err = gateway_check(dict(base, registry={"path": "x.db", "log_outputs": "yes",
                                                      "exposure": "db"}))
    assert rc == 1 and "registry.log_outputs" in err and "registry.exposure: unknown key" in err


# ------------------------------------------------------------ snapshot

def test_relabel_is_served_within_2s_under_load(served):
    mock, gw, ctl = served
    prompt = {"name": "product_copy", "label": "production",
              "variables": {"product_name": "K", "facts": "f"}}
    stop = threading.Event()
    seen, bad = set(), []

    def load():
        while not stop.is_set():
            r = ask(gw, prompt, model="qwen2.5-7b")
            if r.status != 200:
                bad.append(r)
            else:
                seen.add(r.headers["x-prompt-version"])
    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.3)
        t0 = time.monotonic()
        ctl.ok("label", "product_copy", "3", "production")
        wait_until(lambda: "product_copy@3" in seen, timeout=2,
                   message="the new label served within 2 s")
        took = time.monotonic() - t0
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not bad, bad[:3]
    assert seen == {"product_copy@2", "product_copy@3"}
    assert took < 2


def test_unreadable_registry_keeps_last_snapshot(served, tmp_path):
    mock, gw, ctl = served
    prompt = {"name": "product_copy", "label": "production",
              "variables": {"product_name": "K", "facts": "f"}}
    import os
    os.rename(ctl.db, str(tmp_path / "moved.db"))
    time.sleep(0.6)
    r = ask(gw, prompt)
    assert r.status == 200 and r.headers["x-prompt-version"] == "product_copy@2"
    assert "still serving the previous snapshot" in gw.stderr_text()
    os.rename(str(tmp_path / "moved.db"), ctl.db)
    ctl.ok("label", "product_copy", "1", "production")
    wait_until(lambda: ask(gw, dict(prompt, label="production"), model="qwen2.5-7b")
               .headers.get("x-prompt-version") == "product_copy@1", timeout=3)


def test_sighup_reloads_the_registry(served):
    mock, gw, ctl = served
    gw.reload(gw_config(mock, ctl))
    wait_until(lambda: "snapshot of" in gw.stderr_text() and "(reload)" in gw.stderr_text())


def same_file_table(tid1, tid2):
    """kcmp(2) KCMP_FILES: do two threads share one file table?"""
    nr = {"x86_64": 312, "aarch64": 272}.get(platform.machine())
    if nr is None:
        pytest.skip("kcmp(2)'s number is not known on %s" % platform.machine())
    libc = ctypes.CDLL(None, use_errno=True)
    r = libc.syscall(nr, tid1, tid2, 2, 0, 0)  # KCMP_FILES
    if r < 0:
        e = ctypes.get_errno()
        if e in (errno.ENOSYS, errno.EPERM, errno.EACCES):
            pytest.skip("kcmp(2) unavailable here: %s" % os.strerror(e))
        raise OSError(e, os.strerror(e))
    return r == 0


def test_loop_has_a_file_table_of_its_own(served):
    """The loop leaves the table the writer and the watcher share, and each
    side still does its work with its own descriptors: exposures are
    written, a reload loads a snapshot, SIGTERM writes what is queued and
    exits 0."""
    mock, gw, ctl = served
    pid = gw.proc.pid
    others = [int(t) for t in os.listdir("/proc/%d/task" % pid) if int(t) != pid]
    assert len(others) >= 2, "the writer and the watcher threads"
    for t in others:
        assert not same_file_table(pid, t), "the loop shares thread %d's file table" % t
    assert all(same_file_table(others[0], t) for t in others[1:])
    for i in range(20):
        assert ask(gw, {"name": "product_copy", "label": "production",
                        "variables": {"product_name": "Kettle", "facts": "1.7 l"}},
                   user="u%d" % i).status == 200
    assert len(exposures(ctl.db, 20)) == 20
    gw.reload(gw_config(mock, ctl))
    wait_until(lambda: "(reload)" in gw.stderr_text())
    for i in range(30):
        assert ask(gw, {"name": "product_copy", "version": 3,
                        "variables": {"product_name": "Kettle", "facts": "1.7 l"}},
                   user="v%d" % i).status == 200
    gw.proc.send_signal(signal.SIGTERM)
    assert gw.proc.wait(10) == 0
    assert len(exposures(ctl.db, 50)) == 50
    assert "0 dropped, 0 failed" in gw.stderr_text()


# ------------------------------------------------------------ experiments

def start_split(gw, ctl):
    """Starts a 50/50 experiment of versions 2 and 3 on
    product_copy@production and waits until the gateway serves it; returns
    the prompt to ask for."""
    ctl.ok("experiment", "start", "product_copy", "--label", "production",
           "--arm", "2:50", "--arm", "3:50")
    prompt = {"name": "product_copy", "label": "production",
              "variables": {"product_name": "K", "facts": "f"}}
    wait_until(lambda: "x-prompt-experiment" in ask(gw, prompt, user="probe").headers, timeout=3)
    return prompt


def rendered_version(ctl, user):
    """The version promptctl render serves user from start_split's prompt."""
    return ctl.json("render", "product_copy@production", "--user", user,
                    "--var", "product_name=K", "--var", "facts=f")["version"]


def test_experiment_sticky_split_and_headers(served):
    mock, gw, ctl = served
    prompt = start_split(gw, ctl)
    versions = {}
    for i in range(400):
        u = "user-%d" % i
        r = ask(gw, prompt, user=u)
        assert r.status == 200
        exp = r.headers["x-prompt-experiment"]
        v = r.headers["x-prompt-version"]
        assert exp.startswith("product_copy@production; arm=")
        assert exp.endswith("arm=0") == (v == "product_copy@2")
        # promptctl render --user says the same arm
        versions[u] = v
    for u in ("user-1", "user-2", "user-3"):
        for how in ({"user": u}, {"headers": {"x-user-id": u}}):
            r = ask(gw, prompt, **how)
            assert r.headers["x-prompt-version"] == versions[u]
        assert "product_copy@%d" % rendered_version(ctl, u) == versions[u]
    share = sum(v == "product_copy@2" for v in versions.values()) / len(versions)
    assert 0.40 < share < 0.60, share


def test_user_ids_long_and_too_long(served):
    """A user id up to 256 bytes is served (past 120 the arm memo does not
    keep it: the same arm as promptctl's); a longer one is a 400 that names
    the limit, from the body's "user" and from x-user-id alike."""
    mock, gw, ctl = served
    prompt = start_split(gw, ctl)
    for n in (120, 121, 256):
        for i in range(3):
            u = ("u%d-" % i) + "x" * (n - 3)
            assert len(u) == n
            want = rendered_version(ctl, u)
            for how in ({"user": u}, {"headers": {"x-user-id": u}}):
                for _ in range(2):  # the second may come from the memo
                    r = ask(gw, prompt, **how)
                    assert r.status == 200, r
                    assert r.headers["x-prompt-version"] == "product_copy@%d" % want
    sent = mock.count()
    for how in ({"user": "y" * 257}, {"headers": {"x-user-id": "y" * 257}}):
        r = ask(gw, prompt, **how)
        assert r.status == 400, r
        err = r.json()["error"]
        assert err["code"] == "invalid_user" and "256 bytes" in err["message"], err
    assert mock.count() == sent


# ------------------------------------------------------------ exposures

def test_exposure_recorded_without_output(served):
    mock, gw, ctl = served
    r = ask(gw, {"name": "product_copy", "label": "production",
                 "variables": {"product_name": "Kettle", "facts": "1.7 l"}},
            user="alice", headers={"x-request-id": "req-1"})
    assert r.status == 200
    e = exposures(ctl.db, 1)[0]
    assert e["request_id"] == "req-1" and e["user_id"] == "alice"
    assert e["prompt"] == "product_copy" and e["version"] == 2 and e["label"] == "production"
    assert e["model"] == "qwen2.5-7b" and e["backend"] == "mock" and e["status"] == 200
    assert e["latency_ms"] > 0 and e["completion_tokens"] > 0 and e["stream"] == 0
    assert json.loads(e["variables"]) == {"product_name": "Kettle", "facts": "1.7 l"}
    assert e["output"] is None and e["experiment_id"] is None


def test_10000_exposures_all_written_after_sigterm(mockllm, gateway, registry):
    """10,000 answered requests, SIGTERM right after the last answer: the
    writer drains its queue before the exit, so every one is in the
    registry (chunks and the exposures view), none dropped."""
    mock = mockllm("--no-record", "--tokens", "4")
    cfg = gw_config(mock, registry)
    cfg["access_log"] = "off"
    cfg["limits"]["drain_timeout_ms"] = 5000
    gw = gateway(cfg)
    total, threads, failed = 10000, 8, []

    def drive(k):
        conn = httpclient.HTTPConnection("127.0.0.1", gw.port, timeout=10)
        try:
            for i in range(k, total, threads):
                body = json.dumps({"prompt": {"name": "product_copy", "label": "production",
                                              "variables": {"product_name": "item %d" % i,
                                                            "facts": "x"}},
                                   "user": "u%d" % (i % 500)})
                conn.request("POST", CHAT, body=body,
                             headers={"Content-Type": "application/json",
                                      "x-request-id": "term-%05d" % i})
                r = conn.getresponse()
                r.read()
                if r.status != 200:
                    failed.append((i, r.status))
        finally:
            conn.close()

    ts = [threading.Thread(target=drive, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not failed, failed[:5]
    assert gw.stop() == 0
    assert "10000 records written, 0 dropped, 0 failed" in gw.stderr_text(), gw.stderr_tail()
    con = sqlite3.connect(registry.db)
    try:
        n_view, n_distinct = con.execute(
            "SELECT count(*), count(DISTINCT request_id) FROM exposures"
            " WHERE request_id LIKE 'term-%'").fetchone()
        n_chunks = con.execute("SELECT sum(n) FROM exposure_chunks").fetchone()[0]
    finally:
        con.close()
    assert n_view == n_distinct == n_chunks == total


def test_exposure_output_logged_buffered_and_streamed(mockllm, gateway, registry):
    mock = mockllm("--tokens", "5")
    gw = gateway(gw_config(mock, registry, log_outputs=True))
    prompt = {"name": "product_copy", "label": "production",
              "variables": {"product_name": "K", "facts": "f"}}
    r = ask(gw, prompt, headers={"x-request-id": "plain"})
    assert r.status == 200
    text = r.json()["choices"][0]["message"]["content"]
    r = ask(gw, prompt, stream=True, headers={"x-request-id": "streamed"})
    assert r.status == 200
    streamed = "".join(c["choices"][0]["delta"].get("content", "")
                       for c in sse_json(r.body) if c.get("choices"))
    rows = {e["request_id"]: e for e in exposures(registry.db, 2)}
    assert rows["plain"]["output"] == text and text
    assert rows["streamed"]["output"] == streamed and streamed
    assert rows["streamed"]["stream"] == 1


def test_exposures_of_cache_hits_say_so_and_keep_the_output(mockllm, gateway, registry):
    """A prompt request answered from the response cache is still an
    exposure: its cache field says hit (miss for the first), and with
    log_outputs on it records the text served, in either form."""
    mock = mockllm("--tokens", "5")
    cfg = gw_config(mock, registry, log_outputs=True)
    cfg["cache"] = {"backend": "memory"}
    gw = gateway(cfg)
    prompt = {"name": "product_copy", "label": "production",
              "variables": {"product_name": "K", "facts": "f"}}
    r1 = ask(gw, prompt, temperature=0, user="u1", headers={"x-request-id": "first"})
    r2 = ask(gw, prompt, temperature=0, user="u1", headers={"x-request-id": "again"})
    r3 = ask(gw, prompt, temperature=0, user="u1", stream=True, headers={"x-request-id": "sse"})
    assert [r.headers.get("x-promptgate-cache") for r in (r1, r2, r3)] == ["miss", "hit", "hit"]
    text = r1.json()["choices"][0]["message"]["content"]
    assert text and r2.json()["choices"][0]["message"]["content"] == text
    rows = {e["request_id"]: e for e in exposures(registry.db, 3)}
    assert [rows[k]["cache"] for k in ("first", "again", "sse")] == ["miss", "hit", "hit"]
    assert [rows[k]["output"] for k in ("first", "again", "sse")] == [text] * 3
    assert len(mock.requests()) == 1


def test_exposures_to_a_jsonl_file(mockllm, gateway, registry, tmp_path):
    mock = mockllm()
    log = tmp_path / "exposures.jsonl"
    gw = gateway(gw_config(mock, registry, exposures=str(log), log_outputs=True))
    r = ask(gw, {"name": "product_copy", "version": 1, "variables": {"product_name": "P"}},
            model="qwen2.5-7b", headers={"x-request-id": "f1"})
    assert r.status == 200
    assert http("POST", gw.url + "/v1/feedback", {"request_id": "f1", "event": "click"}).status == 202
    lines = wait_until(lambda: [json.loads(x) for x in log.read_text().splitlines()]
                       if log.exists() and len(log.read_text().splitlines()) >= 2 else None)
    ex = [x for x in lines if x["type"] == "exposure"][0]
    assert ex["request_id"] == "f1" and ex["version"] == 1 and ex["output"]
    assert ex["variables"] == {"product_name": "P"}
    fb = [x for x in lines if x["type"] == "feedback"][0]
    assert fb["request_id"] == "f1" and fb["event"] == "click" and fb["value"] == 1
    assert exposures(registry.db) == []


def test_failed_upstream_is_an_exposure_too(served):
    mock, gw, ctl = served
    mock.set_fault("status=500", count=10)
    r = ask(gw, {"name": "product_copy", "label": "production",
                 "variables": {"product_name": "K", "facts": "f"}},
            headers={"x-request-id": "bad-1"})
    assert r.status >= 500
    e = exposures(ctl.db, 1)[0]
    assert e["request_id"] == "bad-1" and e["status"] == r.status


# ------------------------------------------------------------ feedback

def test_feedback_idempotent_and_validated(served):
    mock, gw, ctl = served
    fb = gw.url + "/v1/feedback"
    for _ in range(3):
        r = http("POST", fb, {"request_id": "r-9", "event": "click", "value": 1})
        assert r.status == 202 and r.json()["status"] == "accepted"
    assert http("POST", fb, {"request_id": "r-9", "event": "conversion"}).status == 202
    assert http("POST", fb, {"request_id": "r-9", "event": "click", "value": 0}).status == 202

    def rows():
        con = sqlite3.connect(ctl.db)
        try:
            got = con.execute("SELECT request_id, event, value FROM feedback ORDER BY event").fetchall()
        finally:
            con.close()
        return got if len(got) == 2 else None
    assert wait_until(rows) == [("r-9", "click", 1.0), ("r-9", "conversion", 1.0)]
    for body, words in [({"event": "click"}, "request_id"),
                        ({"request_id": "a b", "event": "click"}, "request_id"),
                        ({"request_id": "r", "event": "Click!"}, "event"),
                        ({"request_id": "r", "event": "click", "value": "1"}, "value"),
                        ("[1]", "JSON")]:
        r = http("POST", fb, body)
        assert r.status == 400 and words in r.json()["error"]["message"], (body, r)
    assert http("GET", fb).status == 405


# ------------------------------------------------------------ samples export

def test_samples_export_format(served):
    mock, gw, ctl = served
    ctl.ok("experiment", "start", "product_copy", "--label", "production",
           "--arm", "2:50", "--arm", "3:50")
    facts = {"颜色": "白色", "容量": "1.7L"}
    prompt = {"name": "product_copy", "label": "production",
              "variables": {"product_name": "Kettle", "facts": json.dumps(facts, ensure_ascii=False)}}
    wait_until(lambda: "x-prompt-experiment" in ask(gw, prompt, user="probe",
                                                     headers={"x-request-id": "probe"}).headers,
               timeout=3)
    ids = []
    for i in range(20):
        r = ask(gw, prompt, user="u%d" % i, headers={"x-request-id": "x%d" % i})
        assert r.status == 200
        ids.append("x%d" % i)
    for i in range(0, 20, 4):
        http("POST", gw.url + "/v1/feedback", {"request_id": "x%d" % i, "event": "click"})
    http("POST", gw.url + "/v1/feedback", {"request_id": "x0", "event": "conversion", "value": 1})
    http("POST", gw.url + "/v1/feedback", {"request_id": "x0", "event": "add_to_cart", "value": 2})
    exposures(ctl.db, 21)

    def feedback_in():
        con = sqlite3.connect(ctl.db)
        try:
            return con.execute("SELECT count(*) FROM feedback").fetchone()[0] == 7
        finally:
            con.close()
    wait_until(feedback_in)
    samples = export(ctl, "--experiment", "product_copy@production")
    by_id = {s["id"]: s for s in samples}
    assert set(ids) <= set(by_id)
    s = by_id["x0"]
    assert s["clicks"] == 1 and s["conversions"] == 1 and s["impressions"] == 1
    assert s["outcomes"] == {"click": 1, "conversion": 1, "add_to_cart": 2}
    assert s["facts"] == facts and s["variables"]["product_name"] == "Kettle"
    assert s["user"] == "u0" and s["version"] in (2, 3) and s["prompt"] == "product_copy"
    assert s["experiment"] == "product_copy@production"
    assert by_id["x1"]["clicks"] == 0 and by_id["x1"]["outcomes"] == {}
    assert sum(by_id[i]["clicks"] for i in ids) == 5
    # --since after everything: nothing; an unknown experiment: a clear error
    assert export(ctl, "--experiment", "product_copy@production", "--since", "9999") == []
    r = ctl.run("samples", "export", "--experiment", "product_copy@staging")
    assert r.rc == 1 and "no experiment 'product_copy@staging'" in r.err
    r = ctl.run("samples", "export")
    assert r.rc == 1 and "--experiment" in r.err


# ------------------------------------------------------------ keys

def test_keys_feedback_authenticated_and_key_is_the_default_user(mockllm, gateway, registry):
    mock = mockllm()
    cfg = gw_config(mock, registry)
    cfg["keys"] = [{"name": "shop-copy", "key": "env:PG_TEST_SHOP_KEY", "models": ["*"]}]
    gw = gateway(cfg, env={"PG_TEST_SHOP_KEY": "sk-shop-123"})
    auth = {"Authorization": "Bearer sk-shop-123"}
    registry.ok("experiment", "start", "product_copy", "--label", "production",
                "--arm", "2:50", "--arm", "3:50")
    prompt = {"name": "product_copy", "label": "production",
              "variables": {"product_name": "K", "facts": "f"}}
    assert ask(gw, prompt).status == 401
    r = wait_until(lambda: (lambda r: r if "x-prompt-experiment" in r.headers else None)(
        ask(gw, prompt, headers=dict(auth, **{"x-request-id": "k1"}))), timeout=3)
    # no user field, no x-user-id: the key's name picks the arm
    rendered = registry.json("render", "product_copy@production", "--user", "shop-copy",
                             "--var", "product_name=K", "--var", "facts=f")
    assert r.headers["x-prompt-version"] == "product_copy@%d" % rendered["version"]
    e = [x for x in exposures(registry.db, 1) if x["request_id"] == "k1"]
    e = e or [x for x in exposures(registry.db, 2) if x["request_id"] == "k1"]
    assert e[0]["key_name"] == "shop-copy" and e[0]["user_id"] == "shop-copy"
    fb = gw.url + "/v1/feedback"
    assert http("POST", fb, {"request_id": "k1", "event": "click"}).status == 401
    assert http("POST", fb, {"request_id": "k1", "event": "click"}, headers=auth).status == 202


@pytest.mark.parametrize("raw", [
    '{"prompt":%s}',
    '{ "prompt" : %s , "user" : "u" }',
    '{"user":"u",\n  "prompt":\t%s\n}',
    '{"stream":false,"prompt":%s,"max_tokens":5,"metadata":{"a":[1,{"b":"c"}]}}',
    '{"temperature":1,"prompt":%s}',
    '  {"x":"\\u00e9\\"","prompt":%s,"y":[]}  ',
    # larger than the chain the body arrived in, and than a read buffer:
    # the rewritten body spans chains until it is made contiguous
    '{"metadata":{"n":"' + "x" * 1500 + '"},"prompt":%s}',
    '{"prompt":%s,"metadata":{"n":"' + "y" * 20000 + '"}}',
])
def test_body_shapes_rewritten(served, raw):
    mock, gw, _ = served
    ref = json.dumps({"name": "product_copy", "label": "production",
                      "variables": {"product_name": "K \"q\" \\ \u00e9", "facts": 1.5}})
    text = raw % ref
    r = http("POST", gw.url + CHAT, text.encode(), headers={"Content-Type": "application/json"})
    assert r.status == 200, r
    up = mock.requests()[-1]["body"]
    sent = json.loads(text)
    del sent["prompt"]
    for k, v in sent.items():
        assert up[k] == v, (k, up)
    for k, v in V2["params"].items():
        assert up[k] == sent.get(k, v)
    assert up["messages"][1]["content"] == 'Describe K "q" \\ \u00e9. Facts: 1.5'
    assert set(up) == set(sent) | set(V2["params"]) | {"messages"}


def test_samples_export_from_a_jsonl_log(mockllm, gateway, registry, tmp_path):
    mock = mockllm()
    log = tmp_path / "exposures.jsonl"
    registry.ok("experiment", "start", "product_copy", "--label", "production",
                "--arm", "2:50", "--arm", "3:50")
    gw = gateway(gw_config(mock, registry, exposures=str(log), log_outputs=True))
    prompt = {"name": "product_copy", "label": "production",
              "variables": {"product_name": "K", "facts": "{\"size\": \"M\"}"}}
    for i in range(6):
        assert ask(gw, prompt, user="u%d" % i, headers={"x-request-id": "j%d" % i}).status == 200
    for rid, ev in (("j1", "click"), ("j1", "click"), ("j2", "conversion")):
        assert http("POST", gw.url + "/v1/feedback", {"request_id": rid, "event": ev}).status == 202
    wait_until(lambda: log.exists() and len(log.read_text().splitlines()) == 9)
    samples = {s["id"]: s for s in export(registry, "--experiment", "product_copy@production",
                                          "--from", str(log))}
    assert sorted(samples) == ["j%d" % i for i in range(6)]
    assert samples["j1"]["clicks"] == 1 and samples["j2"]["conversions"] == 1
    assert samples["j0"]["clicks"] == 0 and samples["j0"]["facts"] == {"size": "M"}
    assert all(s["output"].startswith("tok0") for s in samples.values())
    assert {s["version"] for s in samples.values()} <= {2, 3}



def test_check_reads_the_registry(gateway_check, registry, tmp_path):
    base = {"backends": [{"name": "m", "url": "http://127.0.0.1:9/v1", "models": ["a"]}]}
    rc, out, err = gateway_check(dict(base, registry={"path": registry.db}))
    assert rc == 0 and "1 prompts, 3 versions" in out, (out, err)
    rc, out, err = gateway_check(dict(base, registry={"path": str(tmp_path / "none.db")}))
    assert rc == 1 and "registry.path: cannot open" in err
    assert not (tmp_path / "none.db").exists()
    rc, out, err = gateway_check(dict(base, registry={"path": registry.db,
                                                      "exposures": "/nonexistent/x.jsonl"}))
    assert rc == 1 and "registry.exposures: cannot write '/nonexistent/x.jsonl'" in err


def test_a_failed_answer_is_exported_without_an_impression(served):
    mock, gw, ctl = served
    ctl.ok("experiment", "start", "product_copy", "--label", "production",
           "--arm", "2:50", "--arm", "3:50")
    prompt = {"name": "product_copy", "label": "production",
              "variables": {"product_name": "K", "facts": "f"}}
    wait_until(lambda: "x-prompt-experiment" in ask(gw, prompt, user="w",
                                                     headers={"x-request-id": "ok"}).headers,
               timeout=3)
    mock.set_fault("status=500", count=10)
    assert ask(gw, prompt, user="v", headers={"x-request-id": "bad"}).status >= 500
    exposures(ctl.db, 2)
    wait_until(lambda: {s["id"] for s in export(ctl, "--experiment", "product_copy@production")}
               >= {"ok", "bad"})
    by_id = {s["id"]: s for s in export(ctl, "--experiment", "product_copy@production")}
    assert by_id["bad"]["impressions"] == 0 and by_id["bad"]["status"] >= 500
    assert by_id["ok"]["impressions"] == 1


def test_key_model_check_uses_the_prompts_model(mockllm, gateway, registry, monkeypatch):
    """A prompt-only request takes its model from the version's params; a
    key limited to some models is checked against that model, after the
    prompt is resolved (production -> v2 -> qwen2.5-7b; v3 -> gpt-4o-mini)."""
    mock = mockllm()
    cfg = gw_config(mock, registry)
    cfg["keys"] = [{"name": "copy", "key": "env:PG_TEST_COPY_KEY", "models": ["qwen2.5-7b"]}]
    gw = gateway(cfg, env={"PG_TEST_COPY_KEY": "sk-copy-only-qwen"})
    auth = {"Authorization": "Bearer sk-copy-only-qwen"}
    ok = ask(gw, {"name": "product_copy", "label": "production",
                  "variables": {"product_name": "杯子", "facts": "316"}}, headers=auth)
    assert ok.status == 200, ok
    assert ok.headers["x-prompt-version"] == "product_copy@2"
    denied = ask(gw, {"name": "product_copy", "version": 3,
                      "variables": {"product_name": "杯子", "facts": "316"}}, headers=auth)
    assert denied.status == 403, denied
    assert denied.json()["error"]["code"] == "model_not_allowed"
    assert "gpt-4o-mini" in denied.json()["error"]["message"]
