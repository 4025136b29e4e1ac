"""Issue 9 point 3: "workers": N event-loop threads sharing the listening
address (SO_REUSEPORT), each with its own upstream connections and Redis
client, sharing the limiter, backend states, registry snapshot, memory
cache and metrics.

Each test runs a gateway with 2 workers and checks that the work really
spreads (both worker threads, named pg-worker-N in /proc, use CPU) and
that what must be shared stays exact across them."""

import concurrent.futures
import hashlib
import json
import os
import signal
import threading
import time

from helpers import chat, http, start_mock, upstream, wait_until
from regtest import Ctl

CHAT = "/v1/chat/completions"
SECRET = "pk-workers-5e6f7a8b"
AUTH = {"authorization": "Bearer " + SECRET}


def base_config(mock, **extra):
    cfg = {"workers": 2,
           "backends": [{"name": "mock", "url": upstream(mock),
                         "models": ["qwen2.5-7b", "gpt-4o-mini"]}],
           "limits": {"drain_timeout_ms": 5000}}
    cfg.update(extra)
    return cfg


def threads(pid):
    """{comm: cpu ticks (utime + stime)} of pid's threads."""
    out = {}
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                stat = f.read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        out[comm] = out.get(comm, 0) + int(fields[11]) + int(fields[12])
    return out


def hammer(url, n, conns, body=None, headers=None, path=CHAT):
    """n POSTs over `conns` threads, each on new connections; statuses."""
    body = body or chat()

    def one(_):
        return http("POST", url + path, body=body, headers=headers, timeout=20).status

    with concurrent.futures.ThreadPoolExecutor(conns) as ex:
        return list(ex.map(one, range(n)))


def test_two_workers_share_the_load(mockllm, gateway):
    mock = start_mock(mockllm)
    gw = gateway(base_config(mock))
    names = threads(gw.proc.pid)
    assert "pg-worker-1" in names, names
    before = threads(gw.proc.pid)
    statuses = hammer(gw.url, 3000, 16)
    assert statuses.count(200) == 3000, {s: statuses.count(s) for s in set(statuses)}
    after = threads(gw.proc.pid)
    busy0 = after["promptgate"] - before["promptgate"]
    busy1 = after["pg-worker-1"] - before["pg-worker-1"]
    # connections are spread by the kernel's hash of the 4-tuple: both
    # workers must have had a real share of 3,000 connections
    assert busy0 > 0 and busy1 > 0, (busy0, busy1)
    assert min(busy0, busy1) * 4 > max(busy0, busy1), (busy0, busy1)
    assert mock.count() >= 3000


def test_check_names_the_workers(mockllm, gateway_check):
    mock = start_mock(mockllm)
    rc, out, err = gateway_check(base_config(mock, workers=3))
    assert rc == 0 and "3 workers" in out, (out, err)
    rc, out, err = gateway_check(base_config(mock, workers=65))
    assert rc != 0 and "workers" in out + err


def test_rate_limit_exact_across_workers(mockllm, gateway):
    """One key, rpm 600 (10 at once, then one per 100 ms): 200 requests at
    once over 40 connections spread over both workers admit exactly the
    burst, as one worker would: the limiter is shared, not per worker."""
    mock = start_mock(mockllm)
    key = {"name": "svc", "key_sha256": hashlib.sha256(SECRET.encode()).hexdigest(),
           "models": ["*"], "rpm": 600}
    gw = gateway(base_config(mock, keys=[key]))
    t0 = time.monotonic()
    statuses = hammer(gw.url, 200, 40, headers=AUTH)
    elapsed = time.monotonic() - t0
    ok = statuses.count(200)
    assert statuses.count(429) + ok == 200, set(statuses)
    # 10 of burst plus one per 100 ms that the run lasted
    assert 10 <= ok <= 10 + int(elapsed * 10) + 1, (ok, elapsed)


def test_concurrency_limit_across_workers(mockllm, gateway):
    """max_concurrent 4: streams of ~0.4 s from 20 threads over both
    workers; the mock never has more than 4 streams alive at once (its
    active_streams, polled), and does reach 4."""
    mock = start_mock(mockllm, "--token-delay-ms", "20")
    key = {"name": "svc", "key_sha256": hashlib.sha256(SECRET.encode()).hexdigest(),
           "models": ["*"], "max_concurrent": 4}
    gw = gateway(base_config(mock, keys=[key]))
    peak = [0]
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            peak[0] = max(peak[0], mock.stats()["active_streams"])
            time.sleep(0.005)

    t = threading.Thread(target=watch)
    t.start()
    try:
        statuses = hammer(gw.url, 60, 20, body=chat(stream=True),
                          headers=dict(AUTH, **{"x-mock-fault": "tokens=20"}))
    finally:
        stop.set()
        t.join()
    assert statuses.count(200) >= 4, statuses
    assert statuses.count(200) + statuses.count(429) == 60, set(statuses)
    assert peak[0] == 4, peak[0]


def test_memory_cache_shared_and_purged_for_all(mockllm, gateway):
    mock = start_mock(mockllm)
    cfg = base_config(mock, cache={"backend": "memory"}, admin_key="env:PG_ADMIN")
    gw = gateway(cfg, env={"PG_ADMIN": "adm-123456789"})
    body = chat(temperature=0)
    r = http("POST", gw.url + CHAT, body=body)
    assert r.headers.get("x-promptgate-cache") == "miss"
    # 200 more on new connections (both workers): all hits of that one entry
    statuses = []

    def one(_):
        r = http("POST", gw.url + CHAT, body=body)
        return r.status, r.headers.get("x-promptgate-cache")

    with concurrent.futures.ThreadPoolExecutor(16) as ex:
        res = list(ex.map(one, range(200)))
    assert res.count((200, "hit")) == 200, set(res)
    assert mock.count() == 1
    st = http("GET", gw.url + "/admin/cache",
              headers={"authorization": "Bearer adm-123456789"}).json()
    assert st["hits"] == 200 and st["misses"] == 1 and st["entries"] == 1, st
    r = http("POST", gw.url + "/admin/cache/purge", body={"namespace": "default"},
             headers={"authorization": "Bearer adm-123456789"})
    assert r.status == 200 and r.json()["purged"] == 1, r.body
    with concurrent.futures.ThreadPoolExecutor(16) as ex:
        res = list(ex.map(one, range(32)))
    # after the purge, exactly one request misses per worker at most (two
    # may lead their own flight), the rest hit
    assert all(s == 200 for s, _ in res)
    assert mock.count() in (2, 3), mock.count()


def test_reload_reaches_every_worker(mockllm, gateway):
    mock = start_mock(mockllm)
    cfg = base_config(mock)
    gw = gateway(cfg)
    statuses = hammer(gw.url, 64, 16, body=chat(model="text-embedding-3-small"))
    assert set(statuses) == {404}, set(statuses)
    cfg["backends"][0]["models"].append("text-embedding-3-small")
    gw.reload(cfg)
    wait_until(lambda: "configuration reloaded" in gw.stderr_text())
    # every new connection, whichever worker takes it, sees the new model
    statuses = hammer(gw.url, 64, 16, body=chat(model="text-embedding-3-small"))
    assert set(statuses) == {200}, set(statuses)


def test_streams_finish_on_both_workers_when_draining(mockllm, gateway):
    mock = start_mock(mockllm, "--token-delay-ms", "20")
    gw = gateway(base_config(mock))
    body = chat(stream=True)
    results = []

    def stream(_):
        r = http("POST", gw.url + CHAT, body=body,
                 headers={"x-mock-fault": "tokens=40"}, timeout=20)
        return r.status, b"[DONE]" in r.body

    with concurrent.futures.ThreadPoolExecutor(16) as ex:
        futs = [ex.submit(stream, i) for i in range(16)]
        wait_until(lambda: mock.stats()["active_streams"] >= 16, timeout=10)
        gw.proc.send_signal(signal.SIGTERM)
        results = [f.result() for f in futs]
    assert results == [(200, True)] * 16, results
    assert gw.proc.wait(timeout=10) == 0
    assert "drained, exiting" in gw.stderr_text()


def test_usr1_reopens_the_log_on_every_worker(mockllm, gateway, tmp_path):
    mock = start_mock(mockllm)
    log = tmp_path / "access.log"
    gw = gateway(base_config(mock, access_log=str(log)))
    hammer(gw.url, 100, 16)
    wait_until(lambda: log.exists() and len(log.read_text().splitlines()) >= 101)
    os.rename(log, tmp_path / "access.log.1")
    gw.proc.send_signal(signal.SIGUSR1)
    wait_until(lambda: log.exists(), message="no new log after SIGUSR1")
    hammer(gw.url, 200, 16)
    wait_until(lambda: len(log.read_text().splitlines()) >= 200)
    old = (tmp_path / "access.log.1").read_text().splitlines()
    new = log.read_text().splitlines()
    # whole lines in both files, none lost, none in the old one after
    for line in old + new:
        json.loads(line)
    assert len(new) == 200 and len(old) == 101, (len(old), len(new))


def test_registry_label_seen_by_every_worker(mockllm, gateway, tmp_path):
    """Each worker keeps its own snapshot reference: a label moved by
    promptctl is served by every worker within 2 s."""
    ctl = Ctl(tmp_path / "reg.db")
    ctl.ok("init")
    for n in (1, 2):
        (tmp_path / ("v%d.txt" % n)).write_text("Version %d for {{product_name}}.\n" % n)
        ctl.ok("publish", "copy", "-f", str(tmp_path / ("v%d.txt" % n)))
    ctl.ok("label", "copy", "1", "production")
    mock = start_mock(mockllm)
    gw = gateway(base_config(mock, registry={"path": ctl.db}))
    body = {"model": "qwen2.5-7b", "prompt": {"name": "copy", "label": "production",
                                              "variables": {"product_name": "Kettle"}}}

    def versions(n=64):
        def one(_):
            r = http("POST", gw.url + CHAT, body=body)
            assert r.status == 200, r.body
            return r.headers.get("x-prompt-version")
        with concurrent.futures.ThreadPoolExecutor(16) as ex:
            return set(ex.map(one, range(n)))

    assert versions() == {"copy@1"}
    ctl.ok("label", "copy", "2", "production")
    time.sleep(2.0)  # the issue: served within 2 s without a restart
    assert versions() == {"copy@2"}


def test_access_log_lines_stay_whole_on_a_pipe(mockllm, tmp_path):
    """Both workers write the access log to the same pipe (stderr under
    systemd is one), read slowly so that it fills: every line read from it
    is one whole JSON object and none is lost. (Two writes can only split
    each other's lines when a flush holds more than PIPE_BUF bytes, which
    this load makes now and then, not every run: accesslog.c writes whole
    lines in pieces of at most PIPE_BUF to a pipe.)"""
    import subprocess
    from helpers import BIN, free_port
    mock = start_mock(mockllm)
    port = free_port()
    cfg = base_config(mock, listen="127.0.0.1:%d" % port, access_log="stderr")
    path = tmp_path / "gw.json"
    path.write_text(json.dumps(cfg))
    proc = subprocess.Popen([str(BIN / "promptgate"), "-c", str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    chunks = []

    def read_slowly():
        # a slow reader keeps the pipe full, where a write of more than
        # PIPE_BUF bytes goes in parts that another worker's can split
        while True:
            b = os.read(proc.stderr.fileno(), 8192)
            if not b:
                return
            chunks.append(b)
            time.sleep(0.002)

    reader = threading.Thread(target=read_slowly)
    reader.start()
    try:
        url = "http://127.0.0.1:%d" % port
        def up():
            try:
                return http("GET", url + "/healthz", timeout=2).status == 200
            except OSError:
                return False
        wait_until(up, timeout=10)
        # long lines (a 1,000-character user id each) in big bursts
        statuses = hammer(url, 2000, 32, body=chat(user="u" * 1000))
        assert statuses.count(200) == 2000
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=15)
        reader.join(timeout=5)
    assert rc == 0
    logged = 0
    for line in b"".join(chunks).decode().splitlines():
        if line.startswith("{"):
            obj = json.loads(line)  # a split or interleaved line fails here
            logged += obj.get("path") == CHAT
    assert logged == 2000, logged


def test_metrics_add_up_the_workers(mockllm, gateway):
    """Every scrape, whichever worker answers it, counts the requests of
    both workers."""
    mock = start_mock(mockllm)
    gw = gateway(base_config(mock, metrics={}))
    assert hammer(gw.url, 500, 16).count(200) == 500

    def chat_2xx(text):
        total = 0
        for line in text.splitlines():
            if (line.startswith("promptgate_requests_total{") and
                    'route="/v1/chat/completions"' in line and 'status_class="2xx"' in line):
                total += int(float(line.rsplit(" ", 1)[1]))
        return total

    # a request is counted when it is logged, just after its answer went
    # out: let the last ones settle, then every scrape must agree
    wait_until(lambda: chat_2xx(http("GET", gw.url + "/metrics").body.decode()) == 500)
    seen = set()
    for _ in range(20):
        r = http("GET", gw.url + "/metrics")
        assert r.status == 200
        seen.add(chat_2xx(r.body.decode()))
    assert seen == {500}, seen

    def inflight():
        text = http("GET", gw.url + "/metrics").body.decode()
        return [int(float(l.split()[1])) for l in text.splitlines()
                if l.startswith("promptgate_inflight_requests ")]
    # the scrape itself (the one before may not be logged yet on the other
    # worker): the workers' gauges add up to it once all is settled
    wait_until(lambda: inflight() == [1])
    assert mock.count() == 500
