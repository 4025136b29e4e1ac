"""Active health checks (issue 3, point 4): a backend whose health check
fails has its breaker opened without any traffic, and closed again by a
passing check (long before its cool-down), over both transports."""

import time

import pytest

from helpers import chat, http as request, wait_until

ADMIN_KEY = "health-admin-key"
MODEL = "qwen2.5-7b"


@pytest.fixture(params=["127.0.0.1", "localhost"], ids=["native", "curl"])
def host(request):
    return request.param


def start(mockllm, gateway, host, **check):
    a, b = mockllm(), mockllm()
    hc = {"path": "/models", "interval_ms": 100, "timeout_ms": 300}
    hc.update(check)
    cfg = {"backends": [
        {"name": "a", "url": "http://%s:%d/v1" % (host, a.port), "models": [MODEL],
         "health_check": hc, "breaker": {"cooldown_ms": 60000}},
        {"name": "b", "url": "http://%s:%d/v1" % (host, b.port), "models": [MODEL]}],
        "admin_key": "env:PG_HC_ADMIN", "access_log": "stderr"}
    gw = gateway(cfg, env={"PG_HC_ADMIN": ADMIN_KEY})
    return a, b, gw


def state(gw, name):
    r = request("GET", gw.url + "/admin/backends", headers={"Authorization": "Bearer " + ADMIN_KEY})
    assert r.status == 200, r
    return {x["name"]: x for x in r.json()["backends"]}[name]["state"]


def test_failing_check_opens_passing_check_closes(mockllm, gateway, host):
    a, b, gw = start(mockllm, gateway, host)
    time.sleep(0.3)
    assert state(gw, "a") == "closed"
    seen = {x["path"] for x in a.requests()}
    assert "/v1/models" in seen, seen
    a.set_fault("status=503")
    wait_until(lambda: state(gw, "a") == "open", timeout=2)
    a.reset()
    for _ in range(6):
        r = request("POST", gw.url + "/v1/chat/completions", body=chat(max_tokens=2))
        assert r.status == 200 and r.headers["x-promptgate-backend"] == "b", r
    # no chat request reached a while its check failed
    assert all(x["path"] == "/v1/models" for x in a.requests())
    a.set_fault(None)
    wait_until(lambda: state(gw, "a") == "closed", timeout=2)  # not 60 s
    names = {request("POST", gw.url + "/v1/chat/completions", body=chat(max_tokens=2))
             .headers["x-promptgate-backend"] for _ in range(4)}
    assert names == {"a", "b"}
    assert "health check fails" in gw.stderr_text()
    assert "health check passes" in gw.stderr_text()


def test_check_timeout_and_dead_backend(mockllm, gateway, host):
    a, b, gw = start(mockllm, gateway, host, timeout_ms=100)
    time.sleep(0.25)
    a.set_fault("delay-ms=400")
    wait_until(lambda: state(gw, "a") == "open", timeout=2)
    a.set_fault(None)
    wait_until(lambda: state(gw, "a") == "closed", timeout=2)
    a.stop()
    wait_until(lambda: state(gw, "a") == "open", timeout=2)
    assert "no answer within 100 ms" in gw.stderr_text()


def test_reload_removes_the_check(mockllm, gateway):
    a, b, gw = start(mockllm, gateway, "127.0.0.1")
    time.sleep(0.3)
    cfg = {"backends": [
        {"name": "a", "url": a.base, "models": [MODEL]},
        {"name": "b", "url": b.base, "models": [MODEL]}],
        "admin_key": "env:PG_HC_ADMIN", "access_log": "stderr"}
    gw.reload(cfg)
    wait_until(lambda: "configuration reloaded" in gw.stderr_text())
    n = len([x for x in a.requests() if x["path"] == "/v1/models"])
    time.sleep(0.4)
    assert len([x for x in a.requests() if x["path"] == "/v1/models"]) == n
