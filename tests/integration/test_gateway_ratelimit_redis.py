"""Rate limits in redis mode (issue 4): two promptgate instances sharing one
real redis-server split one key's limits; headers, retry-after, refunds and
the daily budget across instances; Redis stopped (SIGSTOP: answers nothing,
so every decision times out) and killed (connection refused) mid-test under
on_error "open" (admitted, never slower than the Redis timeout) and "closed"
(429), and the connection re-established in the background.

Latency bounds here are the Redis timeout plus a generous CI margin
(MARGIN_MS); contrib/bench/ratelimit_bar.py measures the real figure."""

import json
import signal
import threading
import time

import pytest

from conftest import Redis
from helpers import chat, in_parallel, wait_until
from test_gateway_keys import (SECRET_A, SECRET_B, Hammer, admitted_in_window_ok, api_log,
                               assert_error, config, countdown_to_refusal, key, post,
                               retry_after, tokens_used)

TIMEOUT_MS = 50
MARGIN_MS = 200


def rconfig(mock, keys, redis, on_error="open", timeout_ms=TIMEOUT_MS):
    return config(mock, keys, rate_limit={"mode": "redis", "on_error": on_error},
                  redis={"url": redis if isinstance(redis, str) else redis.url,
                         "timeout_ms": timeout_ms})


@pytest.fixture
def mock(mockllm):
    m = mockllm()
    m.reset()
    return m


@pytest.fixture
def respawn(request, tmp_path):
    """respawn(redis) -> Redis: a new redis-server on the port (and with the
    argv) of one that was stopped; stopped at teardown."""
    started = []

    def start(old):
        assert not old.alive()
        r = Redis(old.port, old.argv, tmp_path / ("redis-respawn-%d.log" % len(started)))
        started.append(r)
        r._wait_ready(r._pong, "answering PING")
        return r

    yield start
    for r in started:
        if r.alive():
            r.stop()


def commandstats(r):
    """{command: calls} from INFO commandstats."""
    out = {}
    for line in r.cli("info", "commandstats").splitlines():
        if line.startswith("cmdstat_"):
            name, _, rest = line[len("cmdstat_"):].partition(":")
            fields = dict(kv.split("=") for kv in rest.split(","))
            out[name] = int(fields["calls"])
    return out


def timed_post(gw, secret, **kw):
    t0 = time.monotonic()
    r = post(gw, secret, **kw)
    return r, (time.monotonic() - t0) * 1000


def two(gateway, cfg):
    return gateway(cfg), gateway(cfg)


# ---------------------------------------------------------------- shared limits

def test_two_instances_share_rpm(mock, gateway, redis_server):
    """600 rpm across two instances: 10 at once then one per 100 ms in all,
    not per instance; one script call per decision, by SHA."""
    r = redis_server()
    g1, g2 = two(gateway, rconfig(mock, [key("alpha", SECRET_A, rpm=600)], r))
    before = commandstats(r)
    h = Hammer([g1.url, g2.url], SECRET_A, n=4, seconds=4.0).run()
    assert not h.failures, h.failures[:5]
    st = h.statuses()
    assert set(st) <= {(200, None), (429, "rate_limit_exceeded")}, st
    adm = h.admitted()
    expected = 10 + 10 * h.span()
    assert len(h.results) > 4 * len(adm), "not hammering hard enough: %r" % st
    assert abs(len(adm) - expected) <= 3, \
        "admitted %d in %.2f s across two instances, expected %.1f +-3 (%r)" % (
            len(adm), h.span(), expected, st)
    wait_until(lambda: len(api_log(g1)) + len(api_log(g2)) >= len(h.results), timeout=3)
    per = [sum(1 for e in api_log(g) if e["status"] == 200) for g in (g1, g2)]
    assert min(per) > 0 and sum(per) == len(adm), per
    # the window check on the gateways' own clock (a request's start: its
    # log time less its latency), not on the clients', which a loaded
    # machine delays by tens of ms in bursts
    starts = [e["ts"] - e["latency_ms"] / 1000.0 for g in (g1, g2)
              for e in api_log(g) if e["status"] == 200]
    bad = admitted_in_window_ok(starts, 10.0, 10, slack=2)
    assert bad is None, bad
    after = commandstats(r)
    evalsha = after.get("evalsha", 0) - before.get("evalsha", 0)
    # one EVALSHA a decision (a NOSCRIPT at start is followed by an EVAL)
    assert abs(evalsha - len(h.results)) <= 4, \
        "%d EVALSHA calls for %d requests" % (evalsha, len(h.results))


def test_two_instances_share_tpm(mock, gateway, redis_server):
    """60000 tpm across two instances: 1000 tokens a second in all, plus a
    second's tolerance, give or take a request or two per instance (usage
    reaches Redis shortly after each answer)."""
    r = redis_server()
    g1, g2 = two(gateway, rconfig(mock, [key("alpha", SECRET_A, tpm=60000)], r))
    body = chat(max_tokens=16)
    est = len(json.dumps(body).encode()) // 4 + 16
    h = Hammer([g1.url, g2.url], SECRET_A, n=4, seconds=3.0, body=body).run()
    assert not h.failures, h.failures[:5]
    st = h.statuses()
    assert set(st) <= {(200, None), (429, "rate_limit_exceeded")}, st
    used = tokens_used([g1, g2], len(h.admitted()))
    expected = 1000 * h.span() + 1000
    assert abs(used - expected) <= 0.03 * expected + 4 * est, \
        "%d tokens used in %.2f s at 60000 tpm across two instances, expected %.0f " \
        "(est %d a request, %r)" % (used, h.span(), expected, est, st)


def test_settlements_call_the_script_by_sha(mock, gateway, redis_server):
    """Usage settled by the background flush (no next request to carry
    it) calls its script by SHA too: the script text is sent at most once
    per script."""
    r = redis_server()
    g1 = gateway(rconfig(mock, [key("alpha", SECRET_A, tpm=600000)], r))
    before = commandstats(r)
    for _ in range(6):
        assert post(g1, SECRET_A, body=chat(max_tokens=1000)).status == 200
        time.sleep(0.25)  # the refund goes by the flush timer
    after = commandstats(r)
    evals = after.get("eval", 0) - before.get("eval", 0)
    assert evals <= 2, "the script was sent whole %d times" % evals


def test_headers_and_retry_after_across_instances(mock, gateway, redis_server):
    r = redis_server()
    g1, g2 = two(gateway, rconfig(mock, [key("alpha", SECRET_A, rpm=600, tpm=60000),
                                         key("slow", SECRET_B, rpm=6)], r))
    first = post(g1, SECRET_A)
    assert first.status == 200, first
    h = first.headers
    assert h["x-ratelimit-limit-requests"] == "600"
    assert h["x-ratelimit-remaining-requests"] == "599"
    assert h["x-ratelimit-limit-tokens"] == "60000"
    assert int(h["x-ratelimit-remaining-tokens"]) < 60000
    for i in range(9):
        assert post(g1 if i % 2 else g2, SECRET_A).status == 200
    r11 = post(g2, SECRET_A)
    assert_error(r11, 429, "rate_limit_exceeded")
    s, ms = retry_after(r11)
    assert 0 < ms <= 100 and s == 1, (s, ms)
    assert r11.headers["x-ratelimit-remaining-requests"] == "0"
    time.sleep(ms / 1000 + 0.02)
    assert post(g1, SECRET_A).status == 200
    # 6 rpm: one at once, then ten seconds, whichever instance is asked
    assert post(g1, SECRET_B).status == 200
    r2 = post(g2, SECRET_B)
    assert_error(r2, 429, "rate_limit_exceeded")
    s, ms = retry_after(r2)
    assert 9700 <= ms <= 10000 and s == 10, (s, ms)


def test_per_model_rpm_across_instances(mock, gateway, redis_server):
    r = redis_server()
    g1, g2 = two(gateway, rconfig(mock, [key("alpha", SECRET_A, rpm=6000,
                                             model_limits={"gpt-4o-mini": {"rpm": 60}})], r))
    mini = chat(model="gpt-4o-mini", max_tokens=2)
    assert post(g1, SECRET_A, body=mini).status == 200
    resp = post(g2, SECRET_A, body=mini)
    assert_error(resp, 429, "rate_limit_exceeded")
    s, ms = retry_after(resp)
    assert 900 <= ms <= 1000, ms
    for g in (g1, g2, g1):
        assert post(g, SECRET_A).status == 200, "the key's other models were held back"


def test_refunds_in_redis_mode(mock, gateway, redis_server):
    """A 1,000,000-token reservation using ~30 tokens, twenty times in a row
    on one instance: only settlement lets each next one in."""
    r = redis_server()
    g1 = gateway(rconfig(mock, [key("alpha", SECRET_A, tpm=60000)], r))
    for i in range(20):
        resp = post(g1, SECRET_A, body=chat(max_tokens=1000000))
        assert resp.status == 200, "request %d refused: not refunded: %r" % (i, resp)


def test_refund_seen_by_the_other_instance(mock, gateway, redis_server):
    r = redis_server()
    g1, g2 = two(gateway, rconfig(mock, [key("alpha", SECRET_A, tpm=60000)], r))
    resp = post(g1, SECRET_A, body=chat(max_tokens=1000000))
    assert resp.status == 200
    assert resp.json()["usage"]["total_tokens"] < 100
    # a load balancer sends the key's next requests elsewhere
    wait_until(lambda: post(g2, SECRET_A).status == 200, timeout=2,
               message="the other instance still sees a 1,000,000-token reservation "
                       "that used < 100 tokens")


def test_refused_request_credits_no_tokens(mock, gateway, redis_server):
    """60 rpm (one at once) and 60000 tpm (a second of tolerance): after a
    3000-token request the key owes ~3 s of tokens; requests refused for
    rpm meanwhile must not wipe that debt."""
    r = redis_server()
    g1 = gateway(rconfig(mock, [key("alpha", SECRET_A, rpm=60, tpm=60000)], r))
    t0 = time.monotonic()
    big = post(g1, SECRET_A, body=chat(max_tokens=3000), headers={"x-mock-fault": "tokens=3000"})
    assert big.status == 200 and big.json()["usage"]["completion_tokens"] == 3000, big
    for _ in range(3):
        resp = post(g1, SECRET_A, body=chat(max_tokens=100000))
        assert_error(resp, 429, "rate_limit_exceeded")
        assert "requests per minute" in resp.json()["error"]["message"]
    time.sleep(max(0, 1.1 - (time.monotonic() - t0)))
    resp = post(g1, SECRET_A)
    assert resp.status == 429, "admitted while owing ~2 s of tokens: refused requests " \
                               "gave tokens back"
    assert "tokens per minute" in resp.json()["error"]["message"]


def test_daily_budget_shared(mock, gateway, redis_server):
    """Alternating instances until both refuse: the tokens used in all stay
    within the budget (the end comes when the usage, not the estimates,
    reach it)."""
    r = redis_server()
    g1, g2 = two(gateway, rconfig(mock, [key("alpha", SECRET_A, daily_tokens=300)], r))
    used = n = refused = 0
    biggest = 0
    while refused < 2:
        resp = post((g1, g2)[n % 2], SECRET_A, body=chat(max_tokens=10))
        n += 1
        assert n < 60, "budget never ran out: %d tokens used" % used
        if resp.status != 200:
            assert_error(resp, 429, "daily_budget_exceeded")
            refused += 1
            continue
        refused = 0
        last = resp.json()["usage"]["total_tokens"]
        biggest = max(biggest, last)
        used += last
    assert 300 - 2 * biggest <= used < 300 + biggest, (used, biggest, n)
    s, ms = retry_after(resp)
    to_midnight = 86400 - time.time() % 86400
    assert abs(ms / 1000 - to_midnight) < 3, (ms, to_midnight)
    for g in (g1, g2, g1, g2):
        assert post(g, SECRET_A).status == 429


def test_max_concurrent_in_redis_mode(mock, gateway, redis_server):
    """max_concurrent holds in redis mode (per instance: in-flight requests
    are an instance's own resource)."""
    r = redis_server()
    g1 = gateway(rconfig(mock, [key("alpha", SECRET_A, rpm=6000, max_concurrent=2)], r))
    results = in_parallel(lambda: post(g1, SECRET_A, headers={"x-mock-fault": "delay-ms=500"}), 5)
    assert sorted(x.status for x in results) == [200, 200, 429, 429, 429], results
    for x in results:
        if x.status == 429:
            assert_error(x, 429, "concurrency_limit_exceeded")
    assert post(g1, SECRET_A).status == 200


# ---------------------------------------------------------------- Redis failing

def outage(gw, secret, seconds, bound_ms):
    """Sequential requests for `seconds`; returns (statuses, max latency ms).
    Asserts no 5xx and no request slower than bound_ms."""
    statuses, worst = [], 0.0
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end:
        resp, ms = timed_post(gw, secret)
        assert resp.status < 500, "a %d while Redis is down: %r" % (resp.status, resp)
        assert ms <= bound_ms, "a request took %.0f ms (Redis timeout %d ms)" % (ms, TIMEOUT_MS)
        statuses.append(resp.status)
        worst = max(worst, ms)
    return statuses, worst


def test_redis_stopped_on_error_open(mock, gateway, redis_server, respawn):
    r = redis_server()
    gw = gateway(rconfig(mock, [key("alpha", SECRET_A, rpm=600000),
                                key("six", SECRET_B, rpm=6)], r, on_error="open"))
    assert post(gw, SECRET_A).status == 200
    assert int(r.cli("dbsize")) > 0, "no state in Redis: is the mode redis?"
    bound = TIMEOUT_MS + MARGIN_MS

    # Redis alive but not answering: every decision times out, admitted
    r.send_signal(signal.SIGSTOP)
    try:
        st, worst = outage(gw, SECRET_A, 1.0, bound)
    finally:
        r.send_signal(signal.SIGCONT)
    assert st and set(st) == {200}, st
    assert worst >= TIMEOUT_MS * 0.8, "requests did not wait for Redis at all (%.0f ms)" % worst
    wait_until(lambda: timed_post(gw, SECRET_A)[1] < TIMEOUT_MS / 2, timeout=3,
               message="decisions still slow after SIGCONT")

    # Redis gone: refused connections, admitted at once
    r.stop(signal.SIGKILL)
    st, worst = outage(gw, SECRET_A, 1.0, bound)
    assert set(st) == {200}, st
    log = api_log(gw)
    assert not any(e["status"] >= 500 for e in log), [e for e in log if e["status"] >= 500]

    # back on the same port: reconnected in the background, deciding again
    r2 = respawn(r)
    wait_until(lambda: post(gw, SECRET_B).status == 429, timeout=8,
               message="the 6 rpm key is never refused again after Redis came back")
    assert int(r2.cli("dbsize")) > 0


def test_redis_stopped_on_error_closed(mock, gateway, redis_server, respawn):
    r = redis_server()
    gw = gateway(rconfig(mock, [key("alpha", SECRET_A, rpm=600000)], r, on_error="closed"))
    assert post(gw, SECRET_A).status == 200
    bound = TIMEOUT_MS + MARGIN_MS

    r.send_signal(signal.SIGSTOP)
    try:
        st, worst = outage(gw, SECRET_A, 1.0, bound)
        resp = post(gw, SECRET_A)
    finally:
        r.send_signal(signal.SIGCONT)
    assert st and set(st) == {429}, st
    assert resp.status == 429 and resp.json()["error"]["type"] == "rate_limit_error", resp
    retry_after(resp)
    wait_until(lambda: post(gw, SECRET_A).status == 200, timeout=3)

    r.stop(signal.SIGKILL)
    st, worst = outage(gw, SECRET_A, 1.0, bound)
    assert set(st) == {429}, st
    wait_until(lambda: mock.count() == sum(1 for e in api_log(gw) if e["status"] == 200),
               timeout=2, message="the upstream saw requests the limiter refused")

    respawn(r)
    wait_until(lambda: post(gw, SECRET_A).status == 200, timeout=8,
               message="still refusing after Redis came back")


def test_redis_down_at_start(mock, gateway, redis_server, respawn):
    """A gateway starts without Redis (closed: 429 at once) and connects
    when Redis appears."""
    r = redis_server()
    url = r.url
    r.stop()
    gw = gateway(rconfig(mock, [key("alpha", SECRET_A, rpm=600000)], url, on_error="closed"))
    resp, ms = timed_post(gw, SECRET_A)
    assert resp.status == 429 and ms < TIMEOUT_MS + MARGIN_MS, (resp, ms)
    respawn(r)
    wait_until(lambda: post(gw, SECRET_A).status == 200, timeout=8,
               message="never connected to Redis after it started")


def test_remaining_requests_same_as_local_mode(mock, gateway, redis_server):
    """x-ratelimit-remaining-requests means the same in both modes: it
    counts down, and the answer just before a refusal already says 0."""
    r = redis_server()
    g1, g2 = two(gateway, rconfig(mock, [key("alpha", SECRET_A, rpm=600)], r))
    countdown_to_refusal(lambda i: post((g1, g2)[i % 2], SECRET_A))


@pytest.mark.parametrize("start", ["redis", "local"])
def test_reload_to_another_redis(mock, gateway, redis_server, start):
    """A reload that points the limits at another Redis (or turns redis
    mode on) either moves the decisions there or says, like a new listen
    address, that it takes a restart; never silently keeps the old way."""
    ra, rb = redis_server(), redis_server()
    keys = [key("alpha", SECRET_A, rpm=600000)]
    first = rconfig(mock, keys, ra) if start == "redis" else config(mock, keys)
    gw = gateway(first)
    assert post(gw, SECRET_A).status == 200
    gw.reload(rconfig(mock, keys, rb))
    time.sleep(0.3)
    for _ in range(5):
        assert post(gw, SECRET_A).status == 200
    moved = int(rb.cli("dbsize")) > 0
    text = gw.stderr_text().lower()
    warned = "redis" in text and "restart" in text
    assert moved or warned, "after the reload the limits neither use the new Redis nor " \
                            "say that this takes a restart"


def test_reload_storm_keeps_one_redis_connection(mock, gateway, redis_server):
    """Reloads that move the limits between two Redis servers do not pile
    up clients: once its requests are settled, an old connection goes."""
    ra, rb = redis_server(), redis_server()
    keys = [key("alpha", SECRET_A, rpm=600000, tpm=10000000)]
    gw = gateway(rconfig(mock, keys, ra))
    for i in range(10):
        gw.reload(rconfig(mock, keys, (rb, ra)[i % 2]))
        assert post(gw, SECRET_A).status == 200

    def clients(r):
        info = r.cli("info", "clients")
        n = int(info.split("connected_clients:")[1].split()[0])
        return n - 1  # the redis-cli asking
    wait_until(lambda: clients(ra) <= 1 and clients(rb) <= 1, timeout=5,
               message="connections pile up: %d on the current Redis, %d on the other"
                       % (clients(ra), clients(rb)))
    assert post(gw, SECRET_A).status == 200


def test_request_across_reload_settles_on_the_old_redis(mock, gateway, redis_server):
    """A request admitted by one Redis and finishing after a reload moved
    the limits to another gives its unused tokens back to the first one,
    whose connection closes after that."""
    ra, rb = redis_server(), redis_server()
    keys = [key("alpha", SECRET_A, tpm=60000)]
    gw = gateway(rconfig(mock, keys, ra))
    out = {}
    t = threading.Thread(target=lambda: out.update(r=post(
        gw, SECRET_A, body=chat(max_tokens=2000), headers={"x-mock-fault": "delay-ms=700"})))
    t.start()
    wait_until(lambda: ra.cli("get", "pg:rl:alpha:t").strip() != "", timeout=3,
               message="the request was never admitted by the first Redis")
    reserved = float(ra.cli("get", "pg:rl:alpha:t"))
    gw.reload(rconfig(mock, keys, rb))
    t.join(10)
    assert out["r"].status == 200, out["r"]
    wait_until(lambda: float(ra.cli("get", "pg:rl:alpha:t")) < reserved - 1000, timeout=3,
               message="the unused tokens were not given back to the first Redis")

    def clients(r):
        info = r.cli("info", "clients")
        return int(info.split("connected_clients:")[1].split()[0]) - 1
    wait_until(lambda: clients(ra) == 0, timeout=5,
               message="the first Redis's client stayed after its last request settled")
    assert post(gw, SECRET_A).status == 200
    assert rb.cli("get", "pg:rl:alpha:t").strip() != ""


def test_reload_same_redis_keeps_its_connection(mock, gateway, redis_server):
    r = redis_server()
    keys = [key("alpha", SECRET_A, rpm=600000)]
    gw = gateway(rconfig(mock, keys, r))
    for i in range(5):
        keys[0]["rpm"] = 600000 + i
        gw.reload(rconfig(mock, keys, r))
        assert post(gw, SECRET_A).status == 200
    info = r.cli("info", "clients")
    assert int(info.split("connected_clients:")[1].split()[0]) - 1 == 1, info
