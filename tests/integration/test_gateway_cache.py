"""The response cache (issue 5) on its memory backend: hit/miss/bypass
headers and age, a streamed miss answering both stream and JSON hits from
one entry (and the other way round), deterministic-only by default, the
per-model switch, tenants that never share unless their config names the
same namespace, cache-control no-cache/no-store, errors and truncated
streams never stored, the entry size limit, TTL, purge by namespace,
request coalescing, and the LRU's byte bound.  The same checks run on
Redis in test_gateway_cache_redis.py (cache_common.py)."""

import pytest

import cache_common as cc
from cache_common import *  # noqa: F401,F403 (the shared tests)
from conftest import mock_backend_config
from helpers import chat, http, wait_until


@pytest.fixture
def setup(mockllm, gateway):
    def start(cache_conf, keys=None, models=None, mock_args=()):
        mock = mockllm(*mock_args)
        cfg = mock_backend_config(mock)
        cfg["cache"] = dict({"backend": "memory"}, **cache_conf)
        cfg["admin_key"] = "env:PG_TEST_ADMIN_KEY"
        if keys:
            cfg["keys"] = keys
        if models:
            cfg["models"] = models
        gw = gateway(cfg, env={"PG_TEST_ADMIN_KEY": cc.ADMIN_KEY})
        return mock, gw
    return start


def test_model_cache_all(setup):
    cc.check_model_all(setup)


def test_lru_bounded_in_bytes(setup):
    mock, gw = setup({"max_bytes": 8192, "max_entry_bytes": 4096})
    bodies = [chat(messages=[{"role": "user", "content": "lru %d" % i}]) for i in range(40)]
    for b in bodies:
        assert cc.cache_of(cc.post(gw, b)) == "miss"
    # 40 entries of ~0.7 KiB in 8 KiB: the oldest were evicted, the newest kept
    assert cc.cache_of(cc.post(gw, bodies[-1])) == "hit"
    assert cc.cache_of(cc.post(gw, bodies[0])) == "miss"
    st = cc.stats(gw)
    assert st["bytes"] <= 8192 and st["evictions"] >= 20, st
    assert st["entries"] + st["evictions"] == 40 + 1, st  # bodies[0] again


def test_purge_needs_admin_key_config(mockllm, gateway):
    mock = mockllm()
    cfg = mock_backend_config(mock)
    cfg["cache"] = {}
    gw = gateway(cfg)
    r = http("POST", gw.url + "/admin/cache/purge", body={"namespace": "default"})
    assert r.status == 404 and r.json()["error"]["code"] == "admin_disabled"
    # a gateway without keys keeps its entries in "default"
    assert cc.cache_of(cc.post(gw, chat())) == "miss"
    assert cc.cache_of(cc.post(gw, chat())) == "hit"


def test_cache_off_has_no_header(mock_gateway):
    mock, gw = mock_gateway
    r = cc.post(gw, chat())
    assert r.status == 200 and "x-promptgate-cache" not in r.headers


def test_large_body_key(setup):
    """Bodies over 64 KiB are canonicalized by jansson: still insensitive to
    key order and whitespace, still exact on content."""
    mock, gw = setup({})
    big = "x" * 70000
    a = '{"model": "qwen2.5-7b", "messages": [{"role": "user", "content": "%s"}]}' % big
    b = '{"messages":[{"content":"%s","role":"user"}],\n "model":"qwen2.5-7b"}' % big
    c = '{"model": "qwen2.5-7b", "messages": [{"role": "user", "content": "%sy"}]}' % big
    h = {"Content-Type": "application/json"}
    assert cc.cache_of(cc.post(gw, a, headers=h)) == "miss"
    assert cc.cache_of(cc.post(gw, b, headers=h)) == "hit"
    assert cc.cache_of(cc.post(gw, c, headers=h)) == "miss"


def test_reload(mockllm, gateway):
    """SIGHUP: the cache can be turned on and off, max_bytes applies at once
    (evicting), a new backend is warned about and not taken."""
    mock = mockllm()
    cfg = mock_backend_config(mock)
    cfg["admin_key"] = "env:PG_TEST_ADMIN_KEY"
    gw = gateway(cfg, env={"PG_TEST_ADMIN_KEY": cc.ADMIN_KEY})
    assert "x-promptgate-cache" not in cc.post(gw, chat()).headers
    cfg["cache"] = {"backend": "memory"}
    gw.reload(cfg)
    wait_until(lambda: cc.cache_of(cc.post(gw, chat())) == "hit")
    for i in range(20):
        cc.post(gw, chat(messages=[{"role": "user", "content": "r %d" % i}]))
    assert cc.stats(gw)["entries"] >= 20
    cfg["cache"] = {"backend": "memory", "max_bytes": 4096, "max_entry_bytes": 2048}
    gw.reload(cfg)
    st = wait_until(lambda: (lambda s: s if s["bytes"] <= 4096 else None)(cc.stats(gw)))
    assert st["max_bytes"] == 4096 and st["evictions"] > 0, st
    cfg["cache"] = {"backend": "redis"}
    cfg["redis"] = {"url": "redis://127.0.0.1:1/0"}
    gw.reload(cfg)
    wait_until(lambda: "a new cache.backend takes a restart" in gw.stderr_text())
    assert cc.stats(gw)["backend"] == "memory"
    del cfg["cache"], cfg["redis"]
    gw.reload(cfg)
    wait_until(lambda: "x-promptgate-cache" not in cc.post(gw, chat()).headers)


def test_openai_node_client_on_hits(mockllm, gateway):
    """The official OpenAI Node client's checks pass with the cache on: its
    streams (with and without include_usage) are hits replayed from the
    JSON entry its non-stream request stored, parsed by the client's own
    SSE reader and compared with the non-stream answer."""
    import os
    import subprocess
    from test_gateway_openai_node import HERE, ensure_node_modules
    node = ensure_node_modules()
    mock = mockllm()
    mock.reset()
    cfg = mock_backend_config(mock)
    cfg["cache"] = {"backend": "memory"}
    cfg["admin_key"] = "env:PG_TEST_ADMIN_KEY"
    gw = gateway(cfg, env={"PG_TEST_ADMIN_KEY": cc.ADMIN_KEY})
    env = dict(os.environ)
    env.pop("OPENAI_API_KEY", None)
    env.pop("OPENAI_BASE_URL", None)
    r = subprocess.run([node, "check.mjs", "--base", gw.url + "/v1", "--model", "qwen2.5-7b",
                        "--embed-model", "text-embedding-3-small", "--mock", mock.url],
                       cwd=HERE, capture_output=True, text=True, timeout=120, env=env)
    out = r.stdout + r.stderr
    assert r.returncode == 0 and "0 failed" in r.stdout, out
    assert cc.stats(gw)["hits"] >= 2, cc.stats(gw)


def test_prompt_version_is_part_of_the_key(mockllm, gateway, tmp_path):
    """Two registry versions that render the same request are two entries:
    the resolved prompt version is in the key."""
    import json
    from regtest import Ctl
    ctl = Ctl(tmp_path / "reg.db")
    ctl.ok("init")
    v = {"messages": [{"role": "user", "content": "Describe {{product_name}}."}],
         "params": {"model": "qwen2.5-7b", "temperature": 0}}
    (tmp_path / "v.json").write_text(json.dumps(v))
    ctl.ok("publish", "copy", "-f", str(tmp_path / "v.json"))
    # another template that renders the same text
    v["messages"][0]["content"] = "Describe {{ product_name }}."
    (tmp_path / "v.json").write_text(json.dumps(v))
    ctl.ok("publish", "copy", "-f", str(tmp_path / "v.json"))
    ctl.ok("label", "copy", "1", "production")
    mock = mockllm()
    cfg = mock_backend_config(mock)
    cfg["cache"] = {"backend": "memory"}
    cfg["registry"] = {"path": ctl.db}
    gw = gateway(cfg)
    body = {"prompt": {"name": "copy", "label": "production",
                       "variables": {"product_name": "a lamp"}}}

    def ask():
        r = cc.post(gw, body)
        assert r.status == 200, r
        return r.headers["x-prompt-version"], cc.cache_of(r)

    assert ask() == ("copy@1", "miss")
    assert ask() == ("copy@1", "hit")
    ctl.ok("label", "copy", "2", "production")
    wait_until(lambda: ask()[0] == "copy@2", timeout=5)
    assert ask() == ("copy@2", "hit")  # the first copy@2 answer was a miss, stored
    ctl.ok("label", "copy", "1", "production")
    wait_until(lambda: ask()[0] == "copy@1", timeout=5)
    assert ask() == ("copy@1", "hit")
    # upstream saw exactly the two misses, with the same body
    reqs = [r for r in mock.requests() if r.get("path", "").endswith("/chat/completions")]
    assert len(reqs) == 2, reqs
    assert reqs[0]["body"] == reqs[1]["body"], reqs
