"""Logs for operators (issue 9): the JSON-lines access log in a file,
reopened on SIGUSR1 after logrotate moved it (nothing lost, nothing
written twice), sent to syslog, and its fields."""

import json
import os
import signal

from helpers import chat, http, upstream, wait_until

CHAT = "/v1/chat/completions"


def cfg(mock, access_log):
    return {"backends": [{"name": "mock", "url": upstream(mock), "models": ["gpt-4o-mini"]}],
            "access_log": access_log}


def lines(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip()]


def ask(gw, rid):
    r = http("POST", gw.url + CHAT, body=chat("gpt-4o-mini"), headers={"x-request-id": rid})
    assert r.status == 200, r
    return r


def test_sigusr1_reopens_the_access_log_after_logrotate(mockllm, gateway, tmp_path):
    """logrotate's move-then-signal: lines before the signal stay in the
    moved file, lines after it go to a new file at the configured path."""
    mock = mockllm()
    path = str(tmp_path / "access.log")
    gw = gateway(cfg(mock, path))
    for i in range(3):
        ask(gw, "before-%d" % i)
    wait_until(lambda: len([e for e in lines(path) if e["path"] == CHAT]) == 3, timeout=3,
               message="three lines in the access log")
    rotated = str(tmp_path / "access.log.1")
    os.rename(path, rotated)
    ask(gw, "between")  # still written to the moved file: the fd is the same
    gw.send_signal(signal.SIGUSR1)
    wait_until(lambda: "access log reopened" in gw.stderr_text(), timeout=3,
               message="the gateway saying it reopened the log")
    for i in range(2):
        ask(gw, "after-%d" % i)
    wait_until(lambda: len(lines(path)) >= 2, timeout=3, message="lines in the new file")
    old = [e["request_id"] for e in lines(rotated) if e["path"] == CHAT]
    new = [e["request_id"] for e in lines(path) if e["path"] == CHAT]
    assert old == ["before-0", "before-1", "before-2", "between"]
    assert new == ["after-0", "after-1"]


def test_reopen_failure_keeps_the_old_file(mockllm, gateway, tmp_path):
    """When the path cannot be opened again (its directory went away), the
    gateway says why and keeps logging to the file it has."""
    mock = mockllm()
    d = tmp_path / "logs"
    d.mkdir()
    path = str(d / "access.log")
    gw = gateway(cfg(mock, path))
    ask(gw, "one")
    wait_until(lambda: len(lines(path)) >= 1, timeout=3, message="a line")
    moved = str(tmp_path / "moved.log")
    os.rename(path, moved)
    os.rmdir(str(d))
    gw.send_signal(signal.SIGUSR1)
    wait_until(lambda: "cannot reopen access log" in gw.stderr_text(), timeout=3,
               message="an error naming the problem")
    ask(gw, "two")
    wait_until(lambda: [e["request_id"] for e in lines(moved) if e["path"] == CHAT] == ["one", "two"],
               timeout=3, message="the second line in the old file")


def test_syslog_access_log_serves(mockllm, gateway):
    """"syslog" is a valid destination; without a syslog daemon (as in CI)
    the lines are lost, never the requests."""
    mock = mockllm()
    gw = gateway(cfg(mock, "syslog"))
    for i in range(5):
        ask(gw, "s-%d" % i)
    assert gw.alive()
    assert not [e for e in gw.access_log() if e.get("path") == CHAT]


def test_access_log_fields(mockllm, gateway, tmp_path):
    mock = mockllm()
    path = str(tmp_path / "access.log")
    gw = gateway(cfg(mock, path))
    ask(gw, "f-1")
    e = wait_until(lambda: next((e for e in lines(path) if e.get("request_id") == "f-1"), None),
                   timeout=3, message="the line")
    for k in ("ts", "request_id", "method", "path", "model", "backend", "key", "status",
              "stream", "latency_ms", "ttfb_ms", "prompt_tokens", "completion_tokens",
              "total_tokens", "bytes_out", "cache", "error"):
        assert k in e, (k, e)
    assert e["status"] == 200 and e["backend"] == "mock" and e["model"] == "gpt-4o-mini"
    assert e["latency_ms"] >= e["ttfb_ms"] >= 0 and e["total_tokens"] > 0
