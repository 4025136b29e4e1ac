"""promptgate's command line and configuration checking (issue 2, point 4,
first item): `-t` names the JSON path of every problem, `"env:NAME"` values,
unknown keys, `--help`, `--version`, and a bad file refusing to start."""

import json
import os
import re
import subprocess
import time

import pytest

from helpers import BIN, DEFAULT_MODELS, http


def start_mock(mockllm, *args):
    """Start a mockllm and forget the fixture's readiness probe, so counts
    and recorded requests are only what the gateway sent."""
    m = mockllm(*args)
    m.reset()
    return m


def good_config(**top):
    cfg = {
        "listen": "127.0.0.1:18080",
        "workers": 1,
        "limits": {"max_body_bytes": 1048576, "header_timeout_ms": 1000,
                   "body_timeout_ms": 1000, "idle_timeout_ms": 1000,
                   "drain_timeout_ms": 1000},
        "backends": [{"name": "mock", "url": "http://127.0.0.1:8000/v1",
                      "models": list(DEFAULT_MODELS), "weight": 1,
                      "timeout_ms": 5000, "connect_timeout_ms": 500}],
        "access_log": "stderr",
    }
    cfg.update(top)
    return cfg


def with_backend(**fields):
    cfg = good_config()
    cfg["backends"][0].update(fields)
    return cfg


def with_limits(**fields):
    cfg = good_config()
    cfg["limits"].update(fields)
    return cfg


def problem_lines(out, err):
    return [l for l in (out + "\n" + err).splitlines() if l.strip()]


def run(*args, timeout=10):
    r = subprocess.run([str(BIN / "promptgate")] + [str(a) for a in args],
                       capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    return r.returncode, r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace")


def test_good_config_is_ok(gateway_check):
    rc, out, err = gateway_check(good_config())
    assert rc == 0, (out, err)
    assert "ok" in (out + err), (out, err)


def test_minimal_config_is_ok(gateway_check):
    rc, out, err = gateway_check({"backends": [{"name": "b", "url": "http://127.0.0.1:1/v1",
                                                "models": ["m"]}]})
    assert rc == 0, (out, err)


@pytest.mark.parametrize("cfg, path", [
    (with_backend(url="not a url"), "backends[0].url"),
    (with_backend(url="ftp://127.0.0.1:8000/v1"), "backends[0].url"),
    (with_backend(url="http://127.0.0.1:8000/api"), "backends[0].url"),
    (with_backend(url=42), "backends[0].url"),
    (with_backend(models=[]), "backends[0].models"),
    (with_backend(models="qwen2.5-7b"), "backends[0].models"),
    (with_backend(models=["ok", 7]), "backends[0].models"),
    (with_backend(name=""), "backends[0].name"),
    (with_backend(weight=-1), "backends[0].weight"),
    (with_backend(timeout_ms=0), "backends[0].timeout_ms"),
    (with_backend(timeout_ms="fast"), "backends[0].timeout_ms"),
    (with_backend(connect_timeout_ms=-5), "backends[0].connect_timeout_ms"),
    (with_limits(max_body_bytes=0), "limits.max_body_bytes"),
    (with_limits(max_body_bytes=-1), "limits.max_body_bytes"),
    (with_limits(max_body_bytes="big"), "limits.max_body_bytes"),
    (with_limits(max_body_bytes=1.5), "limits.max_body_bytes"),
    (with_limits(header_timeout_ms=0), "limits.header_timeout_ms"),
    (with_limits(idle_timeout_ms=-3), "limits.idle_timeout_ms"),
    (with_limits(body_timeout_ms="x"), "limits.body_timeout_ms"),
    (with_limits(drain_timeout_ms=-1), "limits.drain_timeout_ms"),
    (good_config(listen="nonsense"), "listen"),
    (good_config(listen="127.0.0.1:99999"), "listen"),
    (good_config(listen=8080), "listen"),
    (good_config(workers=0), "workers"),
    (good_config(workers="two"), "workers"),
    (good_config(backends=[]), "backends"),
    (good_config(backends={"name": "x"}), "backends"),
    (good_config(access_log=12), "access_log"),
    (good_config(limits=[]), "limits"),
])
def test_bad_value_names_its_path(gateway_check, cfg, path):
    rc, out, err = gateway_check(cfg)
    assert rc == 1, (rc, out, err)
    lines = problem_lines(out, err)
    named = re.compile(r"(^|\s)" + re.escape(path) + r"(\[\d+\])?:")
    assert any(named.search(l) for l in lines), "no line names %r: %r" % (path, lines)


def test_missing_backends_is_an_error(gateway_check):
    cfg = good_config()
    del cfg["backends"]
    rc, out, err = gateway_check(cfg)
    assert rc == 1, (out, err)
    assert "backends" in out + err


@pytest.mark.parametrize("cfg, path", [
    (good_config(frobnicate=1), "frobnicate"),
    (with_limits(max_bodybytes=10), "limits.max_bodybytes"),
    (with_backend(api_kee="x"), "backends[0].api_kee"),
])
def test_unknown_key_is_an_error(gateway_check, cfg, path):
    rc, out, err = gateway_check(cfg)
    assert rc == 1, (out, err)
    lines = problem_lines(out, err)
    assert any(path + ": unknown key" in l for l in lines), lines


def test_every_problem_gets_its_own_line(gateway_check):
    cfg = good_config(frobnicate=True)
    cfg["limits"]["max_body_bytes"] = 0
    cfg["backends"].append({"name": "second", "url": "nope", "models": ["x"]})
    rc, out, err = gateway_check(cfg)
    assert rc == 1, (out, err)
    lines = problem_lines(out, err)
    for path in ("frobnicate: unknown key", "limits.max_body_bytes:", "backends[1].url:"):
        hits = [l for l in lines if path in l]
        assert len(hits) == 1, "want one line with %r, got %r" % (path, lines)


def test_duplicate_backend_names_are_an_error(gateway_check):
    cfg = good_config()
    cfg["backends"].append(dict(cfg["backends"][0]))
    rc, out, err = gateway_check(cfg)
    assert rc == 1, (out, err)
    assert "backends[1].name" in out + err, (out, err)


def test_env_value_unset_names_the_variable(gateway_check):
    name = "PROMPTGATE_TEST_UNSET_KEY_7741"
    assert name not in os.environ
    rc, out, err = gateway_check(with_backend(api_key="env:" + name))
    assert rc == 1, (out, err)
    text = out + err
    assert name in text, text
    assert "backends[0].api_key" in text, text


def test_env_value_set_is_accepted_and_not_printed(gateway_check):
    name = "PROMPTGATE_TEST_KEY_7742"
    secret = "sk-test-secret-never-printed-0042"
    rc, out, err = gateway_check(with_backend(api_key="env:" + name), env={name: secret})
    assert rc == 0, (out, err)
    assert secret not in out + err


def test_malformed_json_file(gateway_check):
    rc, out, err = gateway_check('{"listen": "127.0.0.1:1", ')
    assert rc == 1, (out, err)
    assert (out + err).strip(), "no message for a malformed file"


def test_top_level_not_an_object(gateway_check):
    rc, out, err = gateway_check("[1, 2]")
    assert rc == 1, (out, err)


def test_missing_file(tmp_path):
    path = tmp_path / "absent.json"
    rc, out, err = run("-t", "-c", path)
    assert rc == 1, (out, err)
    assert "cannot open" in err and str(path) in err, err


def test_help_teaches_the_options():
    rc, out, err = run("-h")
    assert rc == 0, (out, err)
    for opt in ("-c", "-t", "--version"):
        assert opt in out, out
    rc2, out2, _ = run("--help")
    assert rc2 == 0 and out2 == out


def test_version():
    rc, out, err = run("--version")
    assert rc == 0, (out, err)
    assert "promptgate" in out and any(c.isdigit() for c in out), out


def test_unknown_option_is_an_error():
    rc, out, err = run("--frobnicate")
    assert rc != 0
    assert "frobnicate" in err, err


def test_bad_config_refuses_to_start(gateway):
    gw = gateway(good_config(frobnicate=1), wait=False)
    gw.check_exit = False
    rc = gw.proc.wait(10)
    assert rc != 0
    assert "frobnicate" in gw.stderr_text()


def test_listen_port_in_use_is_a_clear_error(gateway, mockllm):
    mock = start_mock(mockllm)
    gw = gateway({"listen": "127.0.0.1:%d" % mock.port,
                  "backends": [{"name": "m", "url": mock.base, "models": ["qwen2.5-7b"]}]},
                 wait=False)
    gw.check_exit = False
    rc = gw.proc.wait(10)
    assert rc != 0
    assert "127.0.0.1:%d" % mock.port in gw.stderr_text(), gw.stderr_text()
    # the mock is unaffected
    assert http("GET", mock.url + "/v1/models").status == 200


def test_access_log_off_and_file(gateway, mockllm, tmp_path):
    mock = start_mock(mockllm)
    logfile = tmp_path / "access.log"
    backends = [{"name": "mock", "url": mock.base, "models": list(DEFAULT_MODELS)}]
    off = gateway({"backends": backends, "access_log": "off"})
    tofile = gateway({"backends": backends, "access_log": str(logfile)})
    for gw, rid in ((off, "log-off-1"), (tofile, "log-file-1")):
        r = http("POST", gw.url + "/v1/chat/completions",
                 body={"model": "qwen2.5-7b", "messages": [{"role": "user", "content": "hi"}]},
                 headers={"x-request-id": rid})
        assert r.status == 200, r
    assert off.access_log() == [] and "log-off-1" not in off.stderr_text()
    assert tofile.access_log() == []

    deadline = time.monotonic() + 5
    entries = []
    while time.monotonic() < deadline:
        if logfile.exists():
            entries = [json.loads(l) for l in logfile.read_text().splitlines() if l.strip()]
            if any(e.get("request_id") == "log-file-1" for e in entries):
                break
        time.sleep(0.05)
    assert any(e.get("request_id") == "log-file-1" and e.get("status") == 200 for e in entries), entries
