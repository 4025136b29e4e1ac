"""The bar of issue 7, tried as a new user would: publish two versions,
start a 50/50 experiment, drive 10,000 requests from 2,000 users through
promptgate against mockllm, post clicks for some, export samples. Each user
saw one version only, the split is within 2 points of 50/50, and every
exposure and click is in the export."""

import http.client as httpclient
import json
import threading
import time
from collections import Counter, defaultdict

from helpers import DEFAULT_MODELS, wait_until
from regtest import Ctl

USERS = 2000
REQUESTS = 10000
THREADS = 8


def test_bar_10000_requests_2000_users(mockllm, gateway, tmp_path):
    ctl = Ctl(tmp_path / "promptgate.db")
    ctl.ok("init")
    (tmp_path / "a.json").write_text(json.dumps({
        "messages": [{"role": "user", "content": "Describe {{product_name}}. Facts: {{facts}}"}],
        "params": {"model": "qwen2.5-7b", "max_tokens": 8}}))
    (tmp_path / "b.json").write_text(json.dumps({
        "messages": [{"role": "system", "content": "Never invent facts."},
                     {"role": "user", "content": "Describe {{product_name}} in 40 words. Facts: {{facts}}"}],
        "params": {"model": "qwen2.5-7b", "max_tokens": 8}}))
    ctl.ok("publish", "product_copy", "-f", str(tmp_path / "a.json"))
    ctl.ok("publish", "product_copy", "-f", str(tmp_path / "b.json"))
    ctl.ok("label", "product_copy", "1", "production")
    ctl.ok("experiment", "start", "product_copy", "--label", "production",
           "--arm", "1:50", "--arm", "2:50", "--salt", "bar-test")

    mock = mockllm("--no-record", "--tokens", "8")
    gw = gateway({"backends": [{"name": "mock", "url": mock.base, "models": DEFAULT_MODELS}],
                  "access_log": "off",
                  "registry": {"path": ctl.db, "log_outputs": True}})
    host, port = "127.0.0.1", gw.port

    seen = defaultdict(set)      # user -> versions served
    served = {}                  # request id -> (user, version)
    errors = []
    lock = threading.Lock()

    def drive(k):
        conn = httpclient.HTTPConnection(host, port, timeout=10)
        try:
            for i in range(k, REQUESTS, THREADS):
                user = "user-%04d" % (i % USERS)
                body = json.dumps({"prompt": {"name": "product_copy", "label": "production",
                                              "variables": {"product_name": "item %d" % i,
                                                            "facts": json.dumps({"重量": "%dg" % (100 + i % 50)})}},
                                   "user": user})
                conn.request("POST", "/v1/chat/completions", body=body,
                             headers={"Content-Type": "application/json",
                                      "x-request-id": "bar-%05d" % i})
                r = conn.getresponse()
                r.read()
                v = r.getheader("x-prompt-version")
                with lock:
                    if r.status != 200:
                        errors.append((i, r.status))
                    else:
                        seen[user].add(v)
                        served["bar-%05d" % i] = (user, v)
        finally:
            conn.close()

    t0 = time.monotonic()
    threads = [threading.Thread(target=drive, args=(k,)) for k in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.monotonic() - t0
    assert not errors, errors[:5]
    assert len(served) == REQUESTS

    # each user saw one version only; the split of users is within 2 points
    assert len(seen) == USERS
    assert all(len(v) == 1 for v in seen.values()), \
        [u for u, v in seen.items() if len(v) > 1][:5]
    users_per_version = Counter(next(iter(v)) for v in seen.values())
    share = users_per_version["product_copy@1"] / USERS
    assert abs(share - 0.5) <= 0.02, users_per_version
    req_share = sum(v == "product_copy@1" for _, v in served.values()) / REQUESTS
    assert abs(req_share - 0.5) <= 0.02, req_share

    # clicks for some: every 7th request, posted twice (idempotent)
    clicked = sorted(rid for rid in served if int(rid[4:]) % 7 == 0)
    fb = httpclient.HTTPConnection(host, port, timeout=10)
    try:
        for rid in clicked + clicked[:100]:
            fb.request("POST", "/v1/feedback", body=json.dumps({"request_id": rid, "event": "click"}),
                       headers={"Content-Type": "application/json"})
            r = fb.getresponse()
            r.read()
            assert r.status == 202
    finally:
        fb.close()

    def exported():
        r = ctl.run("samples", "export", "--experiment", "product_copy@production")
        assert r.rc == 0, r
        s = [json.loads(line) for line in r.out.splitlines()]
        if len(s) < REQUESTS or sum(x["clicks"] for x in s) < len(clicked):
            return None
        return s
    samples = wait_until(exported, timeout=15, interval=0.3,
                         message="every exposure and click exported")
    by_id = {s["id"]: s for s in samples}
    assert len(samples) == REQUESTS and set(by_id) == set(served)
    for rid, (user, v) in served.items():
        s = by_id[rid]
        assert s["user"] == user and "product_copy@%d" % s["version"] == v
        assert s["clicks"] == (1 if rid in set(clicked) else 0)
        assert s["impressions"] == 1 and s["output"].startswith("tok0")
        assert s["facts"] == json.loads(s["variables"]["facts"])
    assert sum(s["clicks"] for s in samples) == len(clicked)
    print("bar: %d requests from %d users in %.1f s (%.0f req/s); users per version %s; "
          "request share of v1 %.4f; %d clicks" % (REQUESTS, USERS, took, REQUESTS / took,
                                                   dict(users_per_version), req_share, len(clicked)))
    assert "dropped" not in gw.stderr_text() or ", 0 dropped" in gw.stderr_text()
