"""Shared checks of the response cache (issue 5), run against the memory
backend (test_gateway_cache.py) and the Redis backend
(test_gateway_cache_redis.py): each check takes a `setup(cache_conf,
**extra)` callable that starts a mockllm and a gateway and returns
(mock, gw)."""

import hashlib
import json
import threading
import time

from helpers import chat, completion, embedding, http, sse_events, sse_json

CHAT = "/v1/chat/completions"
ADMIN_KEY = "pg-admin-0a1b2c3d4e5f"
SECRET_A = "pk-cache-alpha-1111"
SECRET_B = "pk-cache-bravo-2222"
SECRET_C = "pk-cache-charlie-3333"


def sha(s):
    return hashlib.sha256(s.encode()).hexdigest()


def keys(ns_a=None, ns_b=None, ns_c=None):
    out = []
    for name, secret, ns in (("a", SECRET_A, ns_a), ("b", SECRET_B, ns_b),
                             ("c", SECRET_C, ns_c)):
        k = {"name": name, "key_sha256": sha(secret), "models": ["*"]}
        if ns:
            k["cache_namespace"] = ns
        out.append(k)
    return out


def post(gw, body, path=CHAT, secret=None, headers=None):
    h = dict(headers or {})
    if secret:
        h["Authorization"] = "Bearer " + secret
    return http("POST", gw.url + path, body=body, headers=h)


def cache_of(r):
    return r.headers.get("x-promptgate-cache")


def stats(gw):
    r = http("GET", gw.url + "/admin/cache",
             headers={"Authorization": "Bearer " + ADMIN_KEY})
    assert r.status == 200, r
    return r.json()


def content_of_stream(body):
    text = ""
    for ev in sse_json(body):
        for ch in ev.get("choices", []):
            text += (ch.get("delta") or {}).get("content") or ch.get("text") or ""
    return text


# ------------------------------------------------------------------ checks

def check_miss_then_hit(setup):
    mock, gw = setup({})
    body = chat(temperature=0)
    r1 = post(gw, body)
    assert r1.status == 200 and cache_of(r1) == "miss", r1.headers
    assert "age" not in r1.headers
    n = mock.count()
    r2 = post(gw, body)
    assert r2.status == 200 and cache_of(r2) == "hit", r2.headers
    assert r2.headers["age"] in ("0", "1")
    assert r2.headers["content-type"].startswith("application/json")
    assert r2.json() == r1.json()
    assert mock.count() == n, "a hit must not go upstream"
    # a request that differs only in fields that do not change the answer
    # (user, metadata), in key order and whitespace, is the same entry
    same = json.dumps({"messages": body["messages"], "user": "u-42",
                       "metadata": {"x": "y"}, "temperature": 0,
                       "model": body["model"]}, indent=3)
    r3 = post(gw, same, headers={"Content-Type": "application/json"})
    assert cache_of(r3) == "hit" and r3.json() == r1.json()
    # a different prompt is another entry
    r4 = post(gw, chat(temperature=0, messages=[{"role": "user", "content": "other"}]))
    assert cache_of(r4) == "miss"
    assert mock.count() == n + 1
    st = stats(gw)
    assert (st["hits"], st["misses"], st["stores"]) == (2, 2, 2), st


def check_stream_then_both_hits(setup):
    mock, gw = setup({})
    body = chat(stream=True, messages=[{"role": "user", "content": "stream me"}])
    r1 = post(gw, body)
    assert r1.status == 200 and cache_of(r1) == "miss"
    ev1 = sse_events(r1.body)
    assert ev1[-1] == "[DONE]"
    # the client did not ask for usage: the live stream has none
    assert not any(e.get("usage") for e in sse_json(r1.body))
    text = content_of_stream(r1.body)
    assert text.startswith("tok0 tok1")
    n = mock.count()
    r2 = post(gw, body)
    assert r2.status == 200 and cache_of(r2) == "hit" and "age" in r2.headers
    assert r2.headers["content-type"].startswith("text/event-stream")
    assert r2.body == r1.body, "a stream hit replays the stored events"
    # with stream_options.include_usage the stored usage chunk comes too
    r3 = post(gw, dict(body, stream_options={"include_usage": True}))
    assert cache_of(r3) == "hit"
    chunks = sse_json(r3.body)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 16
    assert sse_events(r3.body)[-1] == "[DONE]"
    # the same entry answers a non-stream request as one JSON body
    nb = dict(body)
    del nb["stream"]
    r4 = post(gw, nb)
    assert r4.status == 200 and cache_of(r4) == "hit"
    doc = r4.json()
    assert doc["object"] == "chat.completion"
    assert doc["choices"][0]["message"] == {"role": "assistant", "content": text}
    assert doc["choices"][0]["finish_reason"] == "stop"
    assert doc["usage"]["completion_tokens"] == 16
    assert mock.count() == n


def check_json_then_stream_hit(setup):
    mock, gw = setup({})
    body = chat(messages=[{"role": "user", "content": "json first"}])
    r1 = post(gw, body)
    assert cache_of(r1) == "miss"
    msg = r1.json()["choices"][0]["message"]["content"]
    n = mock.count()
    r2 = post(gw, dict(body, stream=True))
    assert r2.status == 200 and cache_of(r2) == "hit"
    chunks = sse_json(r2.body)
    assert sse_events(r2.body)[-1] == "[DONE]"
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert content_of_stream(r2.body) == msg
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert not any(c.get("usage") for c in chunks)
    r3 = post(gw, dict(body, stream=True, stream_options={"include_usage": True}))
    assert sse_json(r3.body)[-1]["usage"] == r1.json()["usage"]
    # legacy completions both ways too
    c1 = post(gw, completion(), path="/v1/completions")
    assert cache_of(c1) == "miss"
    c2 = post(gw, completion(stream=True), path="/v1/completions")
    assert cache_of(c2) == "hit"
    assert content_of_stream(c2.body) == c1.json()["choices"][0]["text"]
    # embeddings are cached as JSON
    e1 = post(gw, embedding(), path="/v1/embeddings")
    e2 = post(gw, embedding(), path="/v1/embeddings")
    assert (cache_of(e1), cache_of(e2)) == ("miss", "hit")
    assert e2.json() == e1.json()
    assert mock.count() == n + 2


def check_bypass_rules(setup):
    mock, gw = setup({}, models={"gpt-4o-mini": {"cache": False},
                                 "text-embedding-3-small": {"cache": True}})
    # sampling: not cached, both go upstream
    for _ in range(2):
        r = post(gw, chat(temperature=0.7))
        assert r.status == 200 and cache_of(r) == "bypass"
    r = post(gw, chat(top_p=0.5))
    assert cache_of(r) == "bypass"
    # a seed with n 1 makes it deterministic
    assert cache_of(post(gw, chat(temperature=0.7, seed=7))) == "miss"
    assert cache_of(post(gw, chat(temperature=0.7, seed=7, n=1))) == "miss"  # n:1 is in the key
    assert cache_of(post(gw, chat(temperature=0.7, seed=7))) == "hit"
    assert cache_of(post(gw, chat(temperature=0.7, seed=7, n=2))) == "bypass"
    # the model's switch
    assert cache_of(post(gw, chat(model="gpt-4o-mini"))) == "bypass"
    assert cache_of(post(gw, chat(model="gpt-4o-mini"))) == "bypass"
    # unknown model: 404, bypass
    r = post(gw, chat(model="nope"))
    assert r.status == 404 and cache_of(r) == "bypass"
    # bad request before the cache stage: bypass
    r = post(gw, "{not json", headers={"Content-Type": "application/json"})
    assert r.status == 400 and cache_of(r) == "bypass"
    # other routes carry no cache header
    assert "x-promptgate-cache" not in http("GET", gw.url + "/v1/models").headers


def check_model_all(setup):
    mock, gw = setup({}, models={"qwen2.5-7b": {"cache": "all"}})
    assert cache_of(post(gw, chat(temperature=0.9))) == "miss"
    assert cache_of(post(gw, chat(temperature=0.9))) == "hit"


def check_tenants(setup):
    mock, gw = setup({}, keys=keys(ns_a=None, ns_b=None, ns_c="b"))
    body = chat(temperature=0)
    assert cache_of(post(gw, body, secret=SECRET_A)) == "miss"
    assert cache_of(post(gw, body, secret=SECRET_A)) == "hit"
    # another key, its own namespace (its name): a miss
    assert cache_of(post(gw, body, secret=SECRET_B)) == "miss"
    # a key whose config names b's namespace shares b's entries
    assert cache_of(post(gw, body, secret=SECRET_C)) == "hit"
    # 401 before the cache stage is a bypass
    r = post(gw, body, secret="pk-nobody")
    assert r.status == 401 and cache_of(r) == "bypass"


def check_cache_control(setup):
    mock, gw = setup({})
    body = chat(messages=[{"role": "user", "content": "cc"}])
    # no-store: neither looked up nor stored
    r = post(gw, body, headers={"Cache-Control": "no-store"})
    assert r.status == 200 and cache_of(r) == "bypass"
    assert cache_of(post(gw, body)) == "miss"
    assert cache_of(post(gw, body)) == "hit"
    # no-cache: goes upstream although there is an entry, and stores anew
    n = mock.count()
    r = post(gw, body, headers={"Cache-Control": "no-cache"})
    assert cache_of(r) == "miss" and mock.count() == n + 1
    fresh = r.json()["id"]
    r = post(gw, body)
    assert cache_of(r) == "hit" and r.json()["id"] == fresh
    r = post(gw, body, headers={"Cache-Control": "max-age=0, no-store"})
    assert cache_of(r) == "bypass"


def check_failures_not_stored(setup):
    mock, gw = setup({})
    body = chat(messages=[{"role": "user", "content": "fail first"}])
    r = post(gw, body, headers={"x-mock-fault": "status=500"})
    assert r.status == 500 and cache_of(r) == "miss"
    r = post(gw, body, headers={"x-mock-fault": "status=400"})
    assert r.status == 400
    sbody = chat(stream=True, messages=[{"role": "user", "content": "cut"}])
    r = post(gw, sbody, headers={"x-mock-fault": "close-after-chunks=3"})
    assert r.status == 200 and sse_events(r.body)[-1].event == "error"
    time.sleep(0.2)
    n = mock.count()
    assert cache_of(post(gw, body)) == "miss"
    assert cache_of(post(gw, sbody)) == "miss"
    assert mock.count() == n + 2
    assert cache_of(post(gw, sbody)) == "hit"


def check_entry_size_limit(setup):
    mock, gw = setup({"max_entry_bytes": 400}, mock_args=("--tokens", "200"))
    small = chat(max_tokens=2, messages=[{"role": "user", "content": "s"}])
    big = chat(max_tokens=200, messages=[{"role": "user", "content": "b"}])
    assert cache_of(post(gw, small)) == "miss"
    assert cache_of(post(gw, small)) == "hit"
    assert cache_of(post(gw, big)) == "miss"
    assert cache_of(post(gw, big)) == "miss"
    sbig = dict(big, stream=True)
    assert cache_of(post(gw, sbig)) == "miss"
    assert cache_of(post(gw, sbig)) == "miss"


def check_ttl(setup):
    mock, gw = setup({"ttl_s": 1})
    body = chat(messages=[{"role": "user", "content": "ttl"}])
    assert cache_of(post(gw, body)) == "miss"
    assert cache_of(post(gw, body)) == "hit"
    time.sleep(2.2)
    assert cache_of(post(gw, body)) == "miss"


def check_purge(setup):
    mock, gw = setup({}, keys=keys(ns_b="shop"))
    body = chat(temperature=0)
    for s in (SECRET_A, SECRET_B):
        assert cache_of(post(gw, body, secret=s)) == "miss"
        assert cache_of(post(gw, body, secret=s)) == "hit"
    url = gw.url + "/admin/cache/purge"
    assert http("POST", url, body={"namespace": "shop"}).status == 401
    assert http("POST", url, body={"namespace": "shop"},
                headers={"Authorization": "Bearer wrong"}).status == 403
    auth = {"Authorization": "Bearer " + ADMIN_KEY}
    r = http("POST", url, body={"namespace": "bad name"}, headers=auth)
    assert r.status == 400 and "namespace" in r.json()["error"]["message"]
    r = http("POST", url, body={"namespace": "shop"}, headers=auth)
    assert r.status == 200, r
    assert r.json()["purged"] == 1 and r.json()["namespace"] == "shop"
    assert cache_of(post(gw, body, secret=SECRET_B)) == "miss"
    assert cache_of(post(gw, body, secret=SECRET_A)) == "hit"


def check_coalescing(setup, n=100):
    mock, gw = setup({}, mock_args=("--token-delay-ms", "50"))
    body = chat(messages=[{"role": "user", "content": "burst"}], max_tokens=10)
    before = mock.count()
    results = [None] * n
    go = threading.Event()

    def one(i):
        go.wait()
        try:
            results[i] = post(gw, body)
        except Exception as e:  # noqa: BLE001 - reported below
            results[i] = e

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    go.set()
    for t in threads:
        t.join(30)
    assert all(not isinstance(r, Exception) and r.status == 200 for r in results), \
        [r for r in results if isinstance(r, Exception) or r.status != 200][:3]
    assert mock.count() == before + 1, "identical misses must go upstream once"
    kinds = [cache_of(r) for r in results]
    assert kinds.count("miss") == 1 and kinds.count("hit") == n - 1, kinds
    assert len({r.body for r in results}) == 1
    st = stats(gw)
    assert st["coalesced"] == n - 1 and st["hits"] == n - 1 and st["misses"] == 1, st


def check_coalescing_leader_fails(setup, n=20):
    """The request that went upstream for a burst fails: nothing is stored,
    the ones that waited go upstream on their own (and succeed)."""
    mock, gw = setup({})
    body = chat(messages=[{"role": "user", "content": "burst that fails"}])
    mock.set_fault("status=500,delay-ms=400", count=1)
    before = mock.count()
    results = [None] * n
    go = threading.Event()

    def one(i):
        go.wait()
        if i:
            time.sleep(0.1)  # after the leader
        results[i] = post(gw, body)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    go.set()
    for t in threads:
        t.join(30)
    assert results[0].status == 500 and cache_of(results[0]) == "miss"
    assert all(r.status == 200 and cache_of(r) in ("miss", "hit") for r in results[1:]), \
        [(r.status, cache_of(r)) for r in results]
    assert stats(gw)["coalesced"] >= n - 1
    assert mock.count() - before >= 2


# ---- the checks as tests ----------------------------------------------
# Every backend passes these: its test module imports them (from
# cache_common import *) and defines the `setup` fixture they take.

def test_miss_then_hit(setup):
    check_miss_then_hit(setup)


def test_stream_miss_then_stream_and_json_hits(setup):
    check_stream_then_both_hits(setup)


def test_json_miss_then_stream_hit(setup):
    check_json_then_stream_hit(setup)


def test_bypass_rules(setup):
    check_bypass_rules(setup)


def test_tenants_never_share(setup):
    check_tenants(setup)


def test_cache_control(setup):
    check_cache_control(setup)


def test_errors_and_truncated_streams_not_stored(setup):
    check_failures_not_stored(setup)


def test_entry_size_limit(setup):
    check_entry_size_limit(setup)


def test_ttl(setup):
    check_ttl(setup)


def test_purge(setup):
    check_purge(setup)


def test_coalescing_100_identical_misses_one_upstream(setup):
    check_coalescing(setup, 100)


def test_coalescing_leader_fails(setup):
    check_coalescing_leader_fails(setup, 20)


__all__ = [n for n in dir() if n.startswith("test_")]
