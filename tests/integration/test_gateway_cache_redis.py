"""The response cache (issue 5) on Redis: the checks of cache_common.py
against a real redis-server, then what only Redis has: entries are
"pg:c:" + 64 hex digits with the TTL set (no payload in the key), two
gateways share entries, a slow Redis costs at most redis.timeout_ms (a
miss, never a 5xx), a killed Redis leaves the gateway serving misses and
it reconnects in the background, purge by namespace in Redis."""

import re
import signal
import subprocess
import time

import pytest

import cache_common as cc
from cache_common import *  # noqa: F401,F403 (the shared tests)
from conftest import mock_backend_config
from helpers import chat, http, wait_until


def redis_conf(redis, timeout_ms=200):
    return {"url": redis.url, "timeout_ms": timeout_ms}


@pytest.fixture
def rds(redis_server):
    return redis_server()


@pytest.fixture
def setup(mockllm, gateway, rds):
    def start(cache_conf, keys=None, models=None, mock_args=(), rate_limit=None):
        mock = mockllm(*mock_args)
        cfg = mock_backend_config(mock)
        if rate_limit:
            cfg["rate_limit"] = rate_limit
        cfg["cache"] = dict({"backend": "redis"}, **cache_conf)
        cfg["redis"] = redis_conf(rds)
        cfg["admin_key"] = "env:PG_TEST_ADMIN_KEY"
        if keys:
            cfg["keys"] = keys
        if models:
            cfg["models"] = models
        gw = gateway(cfg, env={"PG_TEST_ADMIN_KEY": cc.ADMIN_KEY})
        wait_until(lambda: "connected to redis" in gw.stderr_text(), timeout=5)
        return mock, gw
    return start


def test_keys_are_short_and_expire(setup, rds):
    mock, gw = setup({"ttl_s": 120})
    secret_text = "a secret prompt nobody should see in redis keys"
    r = cc.post(gw, chat(messages=[{"role": "user", "content": secret_text}]))
    assert cc.cache_of(r) == "miss"
    keys = wait_until(lambda: [k for k in rds.cli("--scan", "--pattern", "pg:c:*").split()])
    assert len(keys) == 1 and re.fullmatch(r"pg:c:[0-9a-f]{64}", keys[0]), keys
    ttl = int(rds.cli("TTL", keys[0]))
    assert 100 < ttl <= 120
    assert rds.cli("SMEMBERS", "pg:cn:default") == keys[0]


def test_two_gateways_share_entries(mockllm, gateway, rds):
    mock = mockllm()
    cfg = mock_backend_config(mock)
    cfg["cache"] = {"backend": "redis"}
    cfg["redis"] = redis_conf(rds)
    g1, g2 = gateway(dict(cfg)), gateway(dict(cfg))
    for g in (g1, g2):
        wait_until(lambda: "connected to redis" in g.stderr_text(), timeout=5)
    body = chat(messages=[{"role": "user", "content": "shared"}])
    assert cc.cache_of(cc.post(g1, body)) == "miss"
    wait_until(lambda: rds.cli("DBSIZE") != "0")
    r = cc.post(g2, body)
    assert cc.cache_of(r) == "hit"
    assert mock.count() == 1


def test_slow_redis_is_a_miss_within_the_timeout(setup, rds):
    mock, gw = setup({})
    body = chat(messages=[{"role": "user", "content": "slow"}])
    assert cc.cache_of(cc.post(gw, body)) == "miss"
    assert cc.cache_of(cc.post(gw, body)) == "hit"
    # Redis hangs (stopped): the lookup gives up after 200 ms
    rds.proc.send_signal(signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        r = cc.post(gw, body)
        took = time.monotonic() - t0
        assert r.status == 200 and cc.cache_of(r) == "miss"
        assert 0.15 < took < 1.0, took
    finally:
        rds.proc.send_signal(signal.SIGCONT)
    wait_until(lambda: cc.cache_of(cc.post(gw, body)) == "hit", timeout=3)
    assert cc.stats(gw)["errors"] >= 1
    # what Redis owed was answered once it woke: nothing left queued
    wait_until(lambda: cc.stats(gw)["redis_pending"] == 0, timeout=3)


def test_redis_killed_then_back(setup, rds, redis_server):
    mock, gw = setup({})
    body = chat(messages=[{"role": "user", "content": "kill"}])
    assert cc.cache_of(cc.post(gw, body)) == "miss"
    assert cc.cache_of(cc.post(gw, body)) == "hit"
    rds.check_exit = False
    rds.proc.kill()
    rds.proc.wait()
    for _ in range(5):
        t0 = time.monotonic()
        r = cc.post(gw, body)
        assert r.status == 200 and cc.cache_of(r) == "miss", r
        assert time.monotonic() - t0 < 1.0
    st = cc.stats(gw)
    assert st["errors"] >= 5 and st["connected"] is False, st
    # a new redis on the same port: the gateway reconnects by itself
    argv = ["redis-server", "--port", str(rds.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no"]
    again = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: gw.stderr_text().count("connected to redis") >= 2, timeout=10)
        assert cc.cache_of(cc.post(gw, body)) == "miss"
        wait_until(lambda: cc.cache_of(cc.post(gw, body)) == "hit", timeout=3)
    finally:
        again.terminate()
        again.wait(10)


def test_purge_when_redis_is_down(setup, rds):
    mock, gw = setup({})
    rds.check_exit = False
    rds.proc.kill()
    rds.proc.wait()
    wait_until(lambda: "lost redis" in gw.stderr_text(), timeout=5)
    r = http("POST", gw.url + "/admin/cache/purge", body={"namespace": "default"},
             headers={"Authorization": "Bearer " + cc.ADMIN_KEY})
    assert r.status == 503 and r.headers.get("retry-after") == "1"


def test_with_redis_rate_limits(setup):
    """Both stages wait on Redis in turn (the limit's decision, then the
    lookup): a hit still answers with the limit headers, hits count against
    rpm, a limited request is a 429 with x-promptgate-cache: bypass."""
    keys = cc.keys()
    keys[0].update({"rpm": 240, "tpm": 1000000})
    mock, gw = setup({}, keys=keys, rate_limit={"mode": "redis"})
    body = chat(messages=[{"role": "user", "content": "limited"}])
    assert cc.cache_of(cc.post(gw, body, secret=cc.SECRET_A)) == "miss"
    r = cc.post(gw, dict(body, stream=True), secret=cc.SECRET_A)
    assert r.status == 200 and cc.cache_of(r) == "hit", r
    assert r.headers.get("x-ratelimit-limit-requests") == "240"
    # hits count against rpm like any request: soon a 429, a bypass
    for _ in range(20):
        r = cc.post(gw, body, secret=cc.SECRET_A)
        if r.status == 429:
            break
        assert cc.cache_of(r) == "hit"
    assert r.status == 429 and cc.cache_of(r) == "bypass"
