"""Virtual keys and local rate limits (issue 4): 401/403 in OpenAI's shape,
the three ways a client sends its key, rpm accuracy under hammering (GCRA,
no double burst), retry-after, the x-ratelimit-* headers, token
reservations settled from the upstream's usage, max_concurrent, the daily
budget, the access log's "key" and no secret anywhere in stderr.

The hammering helpers (Hammer, admitted_in_window_ok) are imported by
test_gateway_ratelimit_redis.py too."""

import hashlib
import http.client
import json
import math
import re
import socket
import threading
import time

import pytest

from helpers import DEFAULT_MODELS, chat, http as request, in_parallel, wait_until

CHAT = "/v1/chat/completions"

SECRET_A = "pk-alpha-7f3c2e91d04b4c55a1e6"
SECRET_B = "pk-bravo-b8d1f0a2c39e47d6b5aa"
SECRET_WRONG = "pk-wrong-00c0ffee00c0ffee00c0"
ENV = {"PG_TEST_KEY_A": SECRET_A}

RESET_RE = re.compile(r"^(\d+ms|\d+(\.\d+)?s|(\d+h)?\d+m\d+(\.\d+)?s)$")


def sha(secret):
    return hashlib.sha256(secret.encode()).hexdigest()


def key(name, secret=None, env=None, models=("*",), **limits):
    """A keys[] entry: by env:NAME when env is given, else by key_sha256."""
    k = {"name": name, "models": list(models)}
    if env:
        k["key"] = "env:" + env
    else:
        k["key_sha256"] = sha(secret)
    k.update(limits)
    return k


def config(mock, keys, **top):
    cfg = {"backends": [{"name": "mock", "url": mock.base,
                         "models": list(DEFAULT_MODELS), "timeout_ms": 10000}],
           "access_log": "stderr", "keys": keys}
    cfg.update(top)
    return cfg


def bearer(secret):
    return {"Authorization": "Bearer " + secret}


def post(gw, secret=None, body=None, headers=None, timeout=10):
    h = dict(bearer(secret) if secret else {})
    h.update(headers or {})
    return request("POST", gw.url + CHAT, body=body or chat(max_tokens=4),
                   headers=h, timeout=timeout)


def assert_error(r, status, code):
    assert r.status == status, r
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers
    err = r.json()["error"]
    assert err["code"] == code, err
    assert err["message"] and err["type"], err


def retry_after(r):
    """(seconds, ms) from a 429; asserts that the seconds are the ms rounded
    up.  (That there is one retry-after header only is
    test_one_retry_after_header's business.)"""
    ra = [v for k, v in r.header_list if k == "retry-after"]
    ra_ms = [v for k, v in r.header_list if k == "retry-after-ms"]
    assert len(ra) >= 1, "no retry-after header: %r" % r.header_list
    assert len(ra_ms) == 1, "expected one retry-after-ms header, got %r" % ra_ms
    s, ms = int(ra[0]), int(ra_ms[0])
    assert ms > 0, r.header_list
    assert s == math.ceil(ms / 1000), "retry-after %d is not ceil(%d ms)" % (s, ms)
    return s, ms


def parse_reset(text):
    """An x-ratelimit-reset-* value ("20ms", "1.5s", "6m0s", "1h2m3s") in ms."""
    assert RESET_RE.match(text), "reset %r is not in OpenAI's duration format" % text
    if text.endswith("ms"):
        return float(text[:-2])
    total = 0.0
    for num, unit in re.findall(r"(\d+(?:\.\d+)?)([hms])", text):
        total += float(num) * {"h": 3600000, "m": 60000, "s": 1000}[unit]
    return total


def api_log(gw, n=0):
    """The access log lines of API requests (not the fixture's /healthz);
    with n, waits until there are at least n (a line is written after its
    answer)."""
    def lines():
        out = [e for e in gw.access_log() if e.get("path") == CHAT]
        return out if len(out) >= n else None
    return wait_until(lines, timeout=3) if n else lines()


@pytest.fixture
def mock(mockllm):
    m = mockllm()
    m.reset()
    return m


# ---------------------------------------------------------------- hammering

class Hammer:
    """n threads sending chat requests as fast as they can for `seconds`,
    each over its own keep-alive connection, round-robin over urls.  Every
    answer is kept as (t_sent, t_done, status, headers dict, error code)
    with monotonic times."""

    def __init__(self, urls, secret, n=4, seconds=5.0, body=None, headers=None):
        self.urls = list(urls)
        self.secret = secret
        self.n = n
        self.seconds = seconds
        self.body = json.dumps(body or chat(max_tokens=2)).encode()
        self.headers = {"Content-Type": "application/json",
                        "Authorization": "Bearer " + secret}
        self.headers.update(headers or {})
        self.results = []
        self.failures = []
        self.lock = threading.Lock()

    def _conn(self, url):
        host, port = url.split("//", 1)[1].rsplit(":", 1)
        return http.client.HTTPConnection(host, int(port), timeout=10)

    def _run(self, i, t_end):
        url = self.urls[i % len(self.urls)]
        conn = self._conn(url)
        out = []
        try:
            while time.monotonic() < t_end:
                t0 = time.monotonic()
                try:
                    conn.request("POST", CHAT, body=self.body, headers=self.headers)
                    r = conn.getresponse()
                    data = r.read()
                except (OSError, http.client.HTTPException) as e:
                    with self.lock:
                        self.failures.append("%s: %r" % (url, e))
                    conn.close()
                    conn = self._conn(url)
                    continue
                t1 = time.monotonic()
                code = None
                if r.status != 200:
                    try:
                        code = json.loads(data)["error"]["code"]
                    except (ValueError, KeyError, TypeError):
                        code = "?"
                hd = {k.lower(): v for k, v in r.getheaders()}
                out.append((t0, t1, r.status, hd, code))
        finally:
            conn.close()
            with self.lock:
                self.results.extend(out)

    def run(self):
        t_end = time.monotonic() + self.seconds
        threads = [threading.Thread(target=self._run, args=(i, t_end)) for i in range(self.n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.results.sort(key=lambda x: x[1])
        return self

    def admitted(self):
        return [x for x in self.results if x[2] == 200]

    def span(self):
        """Seconds from the first request sent to the last answer."""
        return max(x[1] for x in self.results) - min(x[0] for x in self.results)

    def statuses(self):
        out = {}
        for x in self.results:
            out[(x[2], x[4])] = out.get((x[2], x[4]), 0) + 1
        return out


def admitted_in_window_ok(times, rate_per_s, burst, slack=1):
    """GCRA's promise: between any two admissions a and b, at most
    (b - a) * rate + burst + slack were admitted (no window edges, so no
    double burst).  Returns None or a description of the worst pair."""
    times = sorted(times)
    for i in range(len(times)):
        for j in range(i + 1, len(times)):
            count = j - i + 1
            allowed = (times[j] - times[i]) * rate_per_s + burst + slack
            if count > allowed:
                return "%d admitted within %.3f s (bound %.1f)" % (
                    count, times[j] - times[i], allowed)
    return None


# ---------------------------------------------------------------- keys

def test_missing_and_wrong_key_401_never_reach_upstream(mock, gateway):
    gw = gateway(config(mock, [key("alpha", SECRET_A)]))
    assert_error(post(gw), 401, "missing_api_key")
    assert_error(post(gw, headers={"Authorization": "Basic dXNlcjpwdw=="}), 401,
                 "missing_api_key")
    assert_error(post(gw, headers={"Authorization": "Bearer "}), 401, "missing_api_key")
    assert_error(post(gw, SECRET_WRONG), 401, "invalid_api_key")
    assert_error(post(gw, SECRET_A + "x"), 401, "invalid_api_key")
    assert_error(post(gw, SECRET_A[:-1]), 401, "invalid_api_key")
    assert_error(post(gw, headers={"api-key": SECRET_WRONG}), 401, "invalid_api_key")
    assert mock.count() == 0, "an unauthenticated request reached the upstream"
    r = post(gw, SECRET_A)
    assert r.status == 200, r
    assert mock.count() == 1


@pytest.mark.parametrize("style", ["bearer", "bearer-lowercase", "api-key", "x-api-key"])
def test_key_header_styles(mock, gateway, style):
    gw = gateway(config(mock, [key("alpha", SECRET_A)]))
    h = {"bearer": {"Authorization": "Bearer " + SECRET_A},
         "bearer-lowercase": {"authorization": "bearer " + SECRET_A},
         "api-key": {"api-key": SECRET_A},
         "x-api-key": {"x-api-key": SECRET_A}}[style]
    r = post(gw, headers=h)
    assert r.status == 200, r
    assert r.json()["usage"]["completion_tokens"] == 4


def test_key_from_env_and_from_sha256(mock, gateway):
    gw = gateway(config(mock, [key("alpha", env="PG_TEST_KEY_A"), key("bravo", SECRET_B)]),
                 env=ENV)
    assert post(gw, SECRET_A).status == 200
    assert post(gw, SECRET_B).status == 200
    # the env var's name is not a key
    assert_error(post(gw, "PG_TEST_KEY_A"), 401, "invalid_api_key")
    names = [e.get("key") for e in api_log(gw, 3) if e["status"] == 200]
    assert names == ["alpha", "bravo"], api_log(gw)


def test_model_not_allowed_403(mock, gateway):
    gw = gateway(config(mock, [key("alpha", SECRET_A, models=["gpt-4o-mini"]),
                               key("bravo", SECRET_B, models=["*"])]))
    r = post(gw, SECRET_A, body=chat(model="qwen2.5-7b", max_tokens=2))
    assert_error(r, 403, "model_not_allowed")
    assert "qwen2.5-7b" in r.json()["error"]["message"]
    assert mock.count() == 0
    assert post(gw, SECRET_A, body=chat(model="gpt-4o-mini", max_tokens=2)).status == 200
    assert post(gw, SECRET_B, body=chat(model="qwen2.5-7b", max_tokens=2)).status == 200
    # an unknown model for a "*" key is still the router's 404
    assert_error(post(gw, SECRET_B, body=chat(model="nope", max_tokens=2)), 404,
                 "model_not_found")


def test_no_keys_runs_open_and_t_says_so(mock, gateway, gateway_check):
    cfg = config(mock, [])
    del cfg["keys"]
    rc, out, err = gateway_check(cfg)
    assert rc == 0, err
    assert "runs open" in out, out
    gw = gateway(cfg)
    r = post(gw)
    assert r.status == 200, r
    assert not any(k.startswith("x-ratelimit") for k in r.headers), r.headers

    rc, out, err = gateway_check(config(mock, [key("alpha", SECRET_A, rpm=5)]))
    assert rc == 0, err
    assert "runs open" not in out, out
    assert "1 virtual keys" in out or "1 virtual key" in out, out


@pytest.mark.parametrize("entry, words", [
    ({"name": "a", "key": SECRET_A, "models": ["*"]}, "leaked"),
    ({"name": "a", "key_sha256": "abc", "models": ["*"]}, "64 hex"),
    ({"name": "a", "key_sha256": "g" * 64, "models": ["*"]}, "hex"),
    ({"name": "a", "models": ["*"]}, "exactly one"),
    ({"name": "a", "key_sha256": sha(SECRET_A), "key": "env:X", "models": ["*"]}, "exactly one"),
    ({"name": "a", "key": "env:PG_TEST_UNSET_VARIABLE", "models": ["*"]}, "not set"),
    ({"name": "a", "key_sha256": sha(SECRET_A)}, "models"),
    ({"name": "a", "key_sha256": sha(SECRET_A), "models": []}, "models"),
    ({"name": "a", "key_sha256": sha(SECRET_A), "models": ["*"], "rpm": -1}, "rpm"),
    ({"name": "a", "key_sha256": sha(SECRET_A), "models": ["*"], "rpn": 5}, "rpn"),
    ({"name": "a b", "key_sha256": sha(SECRET_A), "models": ["*"]}, "name"),
    ({"name": "a", "key_sha256": sha(SECRET_A), "models": ["*"],
      "model_limits": {"gpt-4o-mini": {"rpm": 1, "burst": 2}}}, "burst"),
])
def test_bad_key_config_refused(mock, gateway_check, entry, words):
    rc, out, err = gateway_check(config(mock, [entry]))
    assert rc != 0, out
    assert "keys[0]" in err and words in err, err
    assert SECRET_A not in err + out, "the -t output repeats a secret"


def test_bad_rate_limit_and_redis_config_refused(mock, gateway_check):
    k = [key("alpha", SECRET_A, rpm=5)]
    for top, words in [({"rate_limit": {"mode": "cluster"}}, "rate_limit.mode"),
                       ({"rate_limit": {"on_error": "maybe"}}, "rate_limit.on_error"),
                       ({"rate_limit": {"mode": "local", "x": 1}}, "rate_limit"),
                       ({"redis": {"url": "http://127.0.0.1:1/0"}}, "redis.url"),
                       ({"redis": {"url": "redis://127.0.0.1:99999/0"}}, "redis.url"),
                       ({"redis": {"url": "redis://127.0.0.1:6379/0", "timeout_ms": 0}},
                        "redis.timeout_ms")]:
        rc, out, err = gateway_check(config(mock, k, **top))
        assert rc != 0, (top, out)
        assert words in err, (top, err)
    rc, out, err = gateway_check(config(mock, [key("a", SECRET_A), key("b", SECRET_A)]))
    assert rc != 0 and "same key" in err, err
    rc, out, err = gateway_check(config(mock, [key("a", SECRET_A), key("a", SECRET_B)]))
    assert rc != 0 and "already used" in err, err


def test_secrets_never_in_stderr(mock, gateway):
    gw = gateway(config(mock, [key("alpha", env="PG_TEST_KEY_A", rpm=600),
                               key("bravo", SECRET_B, models=["gpt-4o-mini"], rpm=1)]),
                 env=ENV)
    assert post(gw, SECRET_A).status == 200
    assert post(gw, headers={"x-api-key": SECRET_B},
                body=chat(model="gpt-4o-mini", max_tokens=2)).status == 200
    assert post(gw, SECRET_B, body=chat(model="gpt-4o-mini", max_tokens=2)).status == 429
    assert post(gw, SECRET_B).status == 403
    assert post(gw, SECRET_WRONG).status == 401
    assert post(gw, headers={"api-key": SECRET_WRONG + "2"}).status == 401
    gw.reload(config(mock, [key("alpha", env="PG_TEST_KEY_A", rpm=600)]))
    wait_until(lambda: post(gw, SECRET_B).status == 401)
    log = api_log(gw, 7)
    assert {e.get("key") for e in log if e["status"] in (200, 403, 429)} == {"alpha", "bravo"}, log
    assert all(e.get("key") is None for e in log if e["status"] == 401), log
    text = gw.stderr_text()
    for s in (SECRET_A, SECRET_B, SECRET_WRONG, SECRET_WRONG + "2", SECRET_A[4:20],
              SECRET_B[4:20], SECRET_WRONG[4:20]):
        assert s not in text, "stderr holds (part of) a key: %r" % s


# ---------------------------------------------------------------- requests per minute

def test_rpm_accuracy_under_hammering(mock, gateway):
    """600 rpm: 10 at once, then one every 100 ms; 4 threads for 5 s."""
    gw = gateway(config(mock, [key("alpha", SECRET_A, rpm=600)]))
    h = Hammer([gw.url], SECRET_A, n=4, seconds=5.0).run()
    assert not h.failures, h.failures[:5]
    st = h.statuses()
    assert set(st) <= {(200, None), (429, "rate_limit_exceeded")}, st
    adm = h.admitted()
    expected = 10 + 10 * h.span()
    assert len(h.results) > 4 * len(adm), "not hammering hard enough: %r" % st
    assert abs(len(adm) - expected) <= 2, \
        "admitted %d in %.2f s, expected %.1f +-2 (%r)" % (len(adm), h.span(), expected, st)
    bad = admitted_in_window_ok([x[1] for x in adm], 10.0, 10, slack=2)
    assert bad is None, bad
    assert mock.count() == len(adm)


def tokens_used(gateways, n_admitted):
    """Total usage.total_tokens the gateways logged for admitted requests."""
    logs = lambda: [e for g in gateways for e in api_log(g) if e["status"] == 200]
    wait_until(lambda: len(logs()) >= n_admitted, timeout=3)
    return sum(e["total_tokens"] for e in logs())


def test_tpm_accuracy_under_hammering(mock, gateway):
    """60000 tpm is 1000 tokens a second, with a second's tolerance: over
    T seconds of hammering the tokens used are 1000 * T + 1000, give or
    take one request (its estimate is charged before its usage is known)."""
    gw = gateway(config(mock, [key("alpha", SECRET_A, tpm=60000)]))
    body = chat(max_tokens=16)
    est = len(json.dumps(body).encode()) // 4 + 16
    h = Hammer([gw.url], SECRET_A, n=4, seconds=3.0, body=body).run()
    assert not h.failures, h.failures[:5]
    st = h.statuses()
    assert set(st) <= {(200, None), (429, "rate_limit_exceeded")}, st
    used = tokens_used([gw], len(h.admitted()))
    expected = 1000 * h.span() + 1000
    assert abs(used - expected) <= 0.03 * expected + 2 * est, \
        "%d tokens used in %.2f s at 60000 tpm, expected %.0f (est %d a request, %r)" % (
            used, h.span(), expected, est, st)


def test_retry_after_is_right(mock, gateway):
    gw = gateway(config(mock, [key("alpha", SECRET_A, rpm=600), key("slow", SECRET_B, rpm=6)]))
    codes = [post(gw, SECRET_A).status for _ in range(10)]
    assert codes == [200] * 10, codes
    r = post(gw, SECRET_A)
    assert_error(r, 429, "rate_limit_exceeded")
    s, ms = retry_after(r)
    assert 0 < ms <= 100 and s == 1, (s, ms)
    assert r.headers["x-ratelimit-limit-requests"] == "600"
    assert r.headers["x-ratelimit-remaining-requests"] == "0"
    # asking again at once: still refused, and the wait does not grow
    r2 = post(gw, SECRET_A)
    assert r2.status == 429
    assert retry_after(r2)[1] <= ms
    time.sleep(retry_after(r2)[1] / 1000 + 0.015)
    r3 = post(gw, SECRET_A)
    assert r3.status == 200, "refused after waiting retry-after-ms: %r" % r3
    # a 6 rpm key: one at once, then ten seconds
    assert post(gw, SECRET_B).status == 200
    r = post(gw, SECRET_B)
    assert r.status == 429
    s, ms = retry_after(r)
    assert 9800 <= ms <= 10000 and s == 10, (s, ms)
    assert 9800 <= parse_reset(r.headers["x-ratelimit-reset-requests"]) <= 20000, r.headers


def test_one_retry_after_header(mock, gateway):
    """A client reads one retry-after; a second, different one (a budget
    429 saying both '35000' and '1') makes it retry at the wrong time."""
    gw = gateway(config(mock, [key("alpha", SECRET_A, rpm=6),
                               key("bravo", SECRET_B, daily_tokens=1)]))
    assert post(gw, SECRET_A).status == 200
    assert post(gw, SECRET_B).status == 200
    for r in (post(gw, SECRET_A), post(gw, SECRET_B)):
        assert r.status == 429, r
        ra = [v for k, v in r.header_list if k == "retry-after"]
        assert len(ra) == 1, "expected one retry-after header, got %r" % ra


def test_refused_requests_do_not_count(mock, gateway):
    """A 429 charges nothing: hammering a limited key does not push its
    next admission further out."""
    gw = gateway(config(mock, [key("alpha", SECRET_A, rpm=60)]))
    assert post(gw, SECRET_A).status == 200
    t0 = time.monotonic()
    while time.monotonic() - t0 < 0.9:
        assert post(gw, SECRET_A).status == 429
    wait_until(lambda: post(gw, SECRET_A).status == 200, timeout=1.5, interval=0.01)
    assert time.monotonic() - t0 < 1.3


def test_per_model_rpm(mock, gateway):
    gw = gateway(config(mock, [key("alpha", SECRET_A, rpm=6000,
                                   model_limits={"gpt-4o-mini": {"rpm": 60}})]))
    mini = chat(model="gpt-4o-mini", max_tokens=2)
    assert post(gw, SECRET_A, body=mini).status == 200
    r = post(gw, SECRET_A, body=mini)
    assert_error(r, 429, "rate_limit_exceeded")
    assert "model" in r.json()["error"]["message"]
    s, ms = retry_after(r)
    assert 900 <= ms <= 1000, ms
    # the other models of the key are not held back
    for _ in range(5):
        assert post(gw, SECRET_A).status == 200


def test_limits_survive_reload(mock, gateway):
    gw = gateway(config(mock, [key("alpha", SECRET_A, rpm=6)]))
    assert post(gw, SECRET_A).status == 200
    assert post(gw, SECRET_A).status == 429
    gw.reload(config(mock, [key("alpha", SECRET_A, rpm=6), key("bravo", SECRET_B)]))
    wait_until(lambda: post(gw, SECRET_B).status == 200)
    assert post(gw, SECRET_A).status == 429, "a reload reset the key's counters"


# ---------------------------------------------------------------- headers

def test_ratelimit_headers(mock, gateway):
    gw = gateway(config(mock, [key("both", SECRET_A, rpm=600, tpm=60000),
                               key("rpmonly", SECRET_B, rpm=600),
                               key("free", SECRET_WRONG)]))
    body = chat(max_tokens=100)
    est = len(json.dumps(body).encode()) // 4 + 100
    r = post(gw, SECRET_A, body=body)
    assert r.status == 200, r
    h = r.headers
    assert h["x-ratelimit-limit-requests"] == "600"
    assert h["x-ratelimit-remaining-requests"] == "599"
    assert 90 <= parse_reset(h["x-ratelimit-reset-requests"]) <= 100, h
    assert h["x-ratelimit-limit-tokens"] == "60000"
    # tpm 60000 is one token a millisecond: the reservation is est tokens
    assert h["x-ratelimit-remaining-tokens"] == str(60000 - est), (h, est)
    assert est - 10 <= parse_reset(h["x-ratelimit-reset-tokens"]) <= est, (h, est)
    for name in ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"):
        assert RESET_RE.match(h[name]), h[name]

    r = post(gw, SECRET_B)
    assert "x-ratelimit-limit-requests" in r.headers
    assert not any(k.endswith("-tokens") and k.startswith("x-ratelimit") for k in r.headers), \
        r.headers
    r = post(gw, SECRET_WRONG)
    assert r.status == 200
    assert not any(k.startswith("x-ratelimit") for k in r.headers), r.headers


def countdown_to_refusal(send, tries=12):
    """Requests send(i) of a key with rpm 600 (a burst of 10) until the
    first 429: x-ratelimit-remaining-requests counts down and the answer
    just before the refusal already says 0. The (status, remaining) pairs."""
    seen = []
    for i in range(tries):
        r = send(i)
        seen.append((r.status, int(r.headers["x-ratelimit-remaining-requests"])))
        if r.status == 429:
            break
    statuses = [s for s, _ in seen]
    assert statuses.count(200) in (10, 11) and statuses[-1] == 429, seen
    rem = [n for _, n in seen]
    assert rem == sorted(rem, reverse=True), "remaining went up: %r" % seen
    assert rem[-2] == 0 and rem[-1] == 0, seen
    return seen


def test_remaining_requests_counts_down_to_zero_at_refusal(mock, gateway):
    gw = gateway(config(mock, [key("alpha", SECRET_A, rpm=600)]))
    seen = countdown_to_refusal(lambda i: post(gw, SECRET_A))
    assert all(n > 0 for s, n in seen[:-2]), seen


# ---------------------------------------------------------------- tokens

def test_tokens_refunded_from_usage(mock, gateway):
    """tpm 60000 (a token a millisecond, a second of tolerance): each
    request reserves ~1,000,000 tokens (17 minutes of the key) but uses
    ~30; only settlement lets the next ones in."""
    gw = gateway(config(mock, [key("alpha", SECRET_A, tpm=60000)]))
    body = chat(max_tokens=1000000)
    for i in range(20):
        r = post(gw, SECRET_A, body=body)
        assert r.status == 200, "request %d refused: the reservation was not refunded: %r" % (
            i, r)
        used = r.json()["usage"]["total_tokens"]
        assert used < 100, used
    log = [e for e in api_log(gw, 20) if e["status"] == 200]
    assert len(log) == 20 and all(e["total_tokens"] < 100 for e in log)


def test_refused_request_credits_no_tokens(mock, gateway):
    """60 rpm (one at once) and 60000 tpm (a second of tolerance): after a
    3000-token request the key owes ~3 s of tokens; requests refused for
    rpm meanwhile must not wipe that debt."""
    gw = gateway(config(mock, [key("alpha", SECRET_A, rpm=60, tpm=60000)]))
    t0 = time.monotonic()
    big = post(gw, SECRET_A, body=chat(max_tokens=3000), headers={"x-mock-fault": "tokens=3000"})
    assert big.status == 200 and big.json()["usage"]["completion_tokens"] == 3000, big
    for _ in range(3):
        r = post(gw, SECRET_A, body=chat(max_tokens=100000))
        assert_error(r, 429, "rate_limit_exceeded")
        assert "requests per minute" in r.json()["error"]["message"]
    time.sleep(max(0, 1.1 - (time.monotonic() - t0)))
    r = post(gw, SECRET_A)
    assert r.status == 429, "admitted while owing ~2 s of tokens"
    assert "tokens per minute" in r.json()["error"]["message"]


def test_tokens_reserved_while_in_flight(mock, gateway):
    """While a request with a big max_tokens is in flight its reservation
    holds the key; when it ends, the unused part comes back."""
    gw = gateway(config(mock, [key("alpha", SECRET_A, tpm=60000)]))
    out = {}

    def slow():
        out["r"] = post(gw, SECRET_A, body=chat(max_tokens=100000),
                        headers={"x-mock-fault": "delay-ms=700"})
    t = threading.Thread(target=slow)
    t.start()
    try:
        wait_until(lambda: mock.stats()["open_connections"] >= 2 or mock.count() >= 1, timeout=3)
        time.sleep(0.1)
        r = post(gw, SECRET_A)
        assert_error(r, 429, "rate_limit_exceeded")
        assert "tokens" in r.json()["error"]["message"]
        s, ms = retry_after(r)
        assert ms > 60000, "a 100k-token reservation should hold the key for minutes: %d" % ms
        assert int(r.headers["x-ratelimit-remaining-tokens"]) == 0, r.headers
    finally:
        t.join()
    assert out["r"].status == 200, out["r"]
    wait_until(lambda: post(gw, SECRET_A).status == 200, timeout=2)


def test_stream_settled_from_final_usage(mock, gateway):
    """A stream whose client did not ask for usage is still settled: the
    gateway asks upstream for include_usage and strips that chunk."""
    gw = gateway(config(mock, [key("alpha", SECRET_A, tpm=60000)]))
    body = chat(stream=True, max_tokens=1000000)
    for i in range(5):
        r = post(gw, SECRET_A, body=body)
        assert r.status == 200, "stream %d refused: not settled: %r" % (i, r)
        events = [e for e in r.text.split("\n\n") if e.startswith("data:")]
        assert events[-1].strip() == "data: [DONE]"
        assert not any('"usage":{' in e.replace(" ", "") for e in events), \
            "the usage chunk the client did not ask for reached it"


def test_stream_with_include_usage_settled(mock, gateway):
    gw = gateway(config(mock, [key("alpha", SECRET_A, tpm=60000)]))
    body = chat(stream=True, max_tokens=1000000, stream_options={"include_usage": True})
    for i in range(5):
        r = post(gw, SECRET_A, body=body)
        assert r.status == 200, "stream %d refused: not settled: %r" % (i, r)
        assert '"usage"' in r.text


# ---------------------------------------------------------------- concurrency

def test_max_concurrent(mock, gateway):
    gw = gateway(config(mock, [key("alpha", SECRET_A, max_concurrent=2), key("bravo", SECRET_B)]))

    def other_key():
        time.sleep(0.3)
        # another key is not held back by alpha's slots
        assert post(gw, SECRET_B).status == 200
    results = in_parallel(lambda: post(gw, SECRET_A, headers={"x-mock-fault": "delay-ms=600"}),
                          6, during=other_key)
    ok = [r for r in results if r.status == 200]
    refused = [r for r in results if r.status != 200]
    assert len(ok) == 2, [r.status for r in results]
    for r in refused:
        assert_error(r, 429, "concurrency_limit_exceeded")
        retry_after(r)
    # the slots are free again
    assert post(gw, SECRET_A).status == 200


def test_concurrency_slot_freed_on_every_ending(mock, gateway):
    """Upstream errors, timeouts, clients leaving and unknown models each
    end a request: none may leak the key's slot."""
    cfg = config(mock, [key("alpha", SECRET_A, max_concurrent=1)])
    cfg["backends"][0]["timeout_ms"] = 300
    gw = gateway(cfg)
    for spec in ("status=500", "status=429", "reset", "hang", "close-after-chunks=1"):
        r = post(gw, SECRET_A, body=chat(max_tokens=4, stream=spec.startswith("close")),
                 headers={"x-mock-fault": spec})
        assert r.status != 429 or spec == "status=429", (spec, r)
        assert post(gw, SECRET_A).status == 200, "slot leaked after %s" % spec
    assert post(gw, SECRET_A, body=chat(model="nope")).status == 404
    assert post(gw, SECRET_A).status == 200, "slot leaked after a 404"
    # a client that leaves mid-request
    s = socket.create_connection(("127.0.0.1", gw.port))
    body = json.dumps(chat(max_tokens=4)).encode()
    s.sendall(b"POST " + CHAT.encode() + b" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
              + SECRET_A.encode() + b"\r\nx-mock-fault: delay-ms=400\r\nContent-Type: "
              b"application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n"
              + body)
    time.sleep(0.1)
    assert post(gw, SECRET_A).status == 429
    s.close()
    wait_until(lambda: post(gw, SECRET_A).status == 200, timeout=2,
               message="slot not freed after the client left")


# ---------------------------------------------------------------- daily budget

def test_daily_budget(mock, gateway):
    gw = gateway(config(mock, [key("alpha", SECRET_A, daily_tokens=200)]))
    used = last = n = 0
    while True:
        r = post(gw, SECRET_A, body=chat(max_tokens=10))
        if r.status != 200:
            break
        last = r.json()["usage"]["total_tokens"]
        used += last
        n += 1
        assert n < 50, "budget never ran out"
    assert_error(r, 429, "daily_budget_exceeded")
    # admitted while under budget, counted from usage (not the estimate)
    assert used >= 200 and used - last < 200, (used, last, n)
    s, ms = retry_after(r)
    now = time.time()
    to_midnight = 86400 - now % 86400
    assert abs(ms / 1000 - to_midnight) < 3, (ms, to_midnight)
    assert post(gw, SECRET_A).status == 429
