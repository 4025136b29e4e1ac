"""prompteval: command line, reports, malformed input, the golden report, the
statistics bar (290,000 samples against an independent computation), the
registry (--db) and replay through a stand-in gateway.

Every test runs bin/prompteval as a real process on files in tmp_path.
"""
import json
import math
import os
import pty
import random
import sqlite3
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from statistics import NormalDist

import pytest

from helpers import BIN

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data" / "eval"
PROMPTEVAL = str(BIN / "prompteval")
PROMPTCTL = str(BIN / "promptctl")
Z = NormalDist().inv_cdf(0.975)


def run(*args, check=True, timeout=120, **kw):
    p = subprocess.run([PROMPTEVAL, *map(str, args)], capture_output=True,
                       text=True, timeout=timeout, **kw)
    if check and p.returncode != 0:
        raise AssertionError("prompteval %s -> %d\nstdout:\n%s\nstderr:\n%s"
                             % (args, p.returncode, p.stdout, p.stderr))
    return p


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n")
    return path


def report(out):
    with open(os.path.join(out, "report.json"), encoding="utf-8") as f:
        return json.load(f)


# ---- command line ----------------------------------------------------------

def test_help_teaches_and_usage_errors_exit_2(tmp_path):
    p = run("--help")
    assert "prompteval run SAMPLES" in p.stdout
    p = run("run", "--help")
    for word in ("--control", "--split", "--db", "--map", "--strict",
                 "--max-chars", "impressions"):
        assert word in p.stdout
    assert "--gateway" in run("replay", "--help").stdout
    assert run("run", check=False).returncode == 2
    assert run("frobnicate", check=False).returncode == 2
    p = run("run", tmp_path / "x.jsonl", "--max-chars", "-3", check=False)
    assert p.returncode == 2 and "--max-chars" in p.stderr
    p = run("run", tmp_path / "missing.jsonl", check=False)
    assert p.returncode == 1
    assert "cannot open" in p.stderr and "missing.jsonl" in p.stderr


# ---- golden report ---------------------------------------------------------

def close(a, b, path="$"):
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), "%s: keys %s vs %s" % (
            path, sorted(a), sorted(b))
        for k in a:
            close(a[k], b[k], path + "." + k)
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            close(x, y, "%s[%d]" % (path, i))
    elif isinstance(a, float) or isinstance(b, float):
        assert b is not None and abs(a - b) <= 1e-9 * max(1, abs(a)), "%s: %r vs %r" % (path, a, b)
    else:
        assert a == b, "%s: %r vs %r" % (path, a, b)


def test_golden_report(tmp_path):
    out = tmp_path / "out"
    p = run("run", DATA / "small.jsonl", "--out", out, "--control", "3",
            "--split", "3:1,4:1,5:1", "--max-chars", "20")
    got = report(out)
    assert got.pop("source").endswith("small.jsonl")
    with open(DATA / "small-report.json", encoding="utf-8") as f:
        want = json.load(f)
    close(want, got)
    # hand-checked figures (see tests/data/eval/small.jsonl): version 3 says
    # 4000mAh for a 5000mAh battery twice; 4 says 黑色 for 白色 and names
    # 白色/简约 for a black-red retro skirt; 5 says 1.5公斤 for 1.2kg twice.
    fer = {v["version"]: v["fact_error_rate"] for v in got["versions"]}
    assert (fer["3"]["successes"], fer["4"]["successes"], fer["5"]["successes"]) == (2, 4, 2)
    worst5 = got["versions"][2]["worst_examples"][0]["examples"][0]
    assert worst5 == {"attribute": "重量", "stated": "1.5公斤", "known": "1.2kg"}
    assert "version" in p.stdout and "fact errors" in p.stdout
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "| 3 (control) |" in md and "1.5公斤" in md
    html = (out / "report.html").read_text(encoding="utf-8")
    assert html.count("<svg") >= 3
    for banned in ("<script", "http://", "https://", "@import", "url("):
        if banned == "http://":
            assert html.count(banned) == html.count('xmlns="http://www.w3.org/2000/svg"')
        else:
            assert banned not in html


# ---- malformed input -------------------------------------------------------

def test_malformed_lines_reported_and_skipped_or_fatal_with_strict(tmp_path):
    rows = [
        {"version": "A", "clicks": 1},
        "{not json",
        {"version": "B", "clicks": 5, "impressions": 2},
        {"version": "B", "conversions": 1},
        "[1, 2, 3]",
        {"version": "A", "facts": {"颜色": "白色"}, "output": "黑色"},
        {"id": "no-version"},
        {"version": "B", "facts": {"颜色": {"nested": 1}}, "output": "白色"},
    ]
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    out = tmp_path / "out"
    p = run("run", path, "--out", out)
    for line in (2, 3, 5, 7, 8):
        assert "line %d:" % line in p.stderr, p.stderr
    assert "skipped" in p.stderr
    r = report(out)
    assert r["samples"] == 3 and r["malformed"] == 5
    p = run("run", path, "--out", tmp_path / "strict", "--strict", check=False)
    assert p.returncode == 1
    assert "line 2:" in p.stderr and "--strict" in p.stderr
    assert not (tmp_path / "strict" / "report.json").exists()
    # binary junk and an empty file never crash
    junk = tmp_path / "junk.jsonl"
    junk.write_bytes(bytes(range(256)) * 40 + b"\n\xff\xfe{\"version\":\"x\"}\n")
    p = run("run", junk, "--out", tmp_path / "j", check=False)
    assert p.returncode in (0, 1) and "line" in p.stderr
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    p = run("run", empty, "--out", tmp_path / "e", check=False)
    assert p.returncode == 1 and "no valid samples" in p.stderr


def test_csv_with_map(tmp_path):
    path = tmp_path / "ab.csv"
    lines = ["group,user_id,converted,facts,output"]
    for i in range(40):
        g = "ctl" if i % 2 else "new"
        conv = 1 if (i % 5 == 0) else 0
        lines.append('%s,u%d,%d,"{""颜色"": ""白色""}","%s"' % (
            g, i, conv, "白色，好看" if i % 4 else "黑色, 好看"))
    # a product that is black puts 黑色 into the colour vocabulary
    lines.append('ctl,u99,0,"{""颜色"": ""黑色""}",')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    run("run", path, "--out", out, "--control", "ctl",
        "--map", "version=group,user=user_id,conversions=converted")
    r = report(out)
    assert r["control"] == "ctl"
    v = {x["version"]: x for x in r["versions"]}
    assert v["ctl"]["samples"] == 21 and v["new"]["samples"] == 20
    assert v["new"]["cvr"]["successes"] == 4  # even i with i % 5 == 0: 0, 10, 20, 30
    assert v["new"]["fact_error_rate"]["successes"] == 10  # i % 4 == 0
    assert "vs_control" in v["new"] and "vs_control" not in v["ctl"]
    p = run("run", path, "--out", out, check=False)
    assert p.returncode == 1 and "--map version=" in p.stderr


def test_srm_counts_users_when_every_sample_has_one(tmp_path):
    """Assignment is per user: 500 users in each version, but version 1's
    users each came back three times. By samples that is a 75/25 split (a
    false alarm); by users it is 50/50, and the check counts users."""
    rows = []
    for u in range(1000):
        v = "1" if u % 2 else "2"
        rows += [{"version": v, "user": "u%d" % u}] * (3 if v == "1" else 1)
    path = write_jsonl(tmp_path / "users.jsonl", rows)
    run("run", path, "--out", tmp_path / "a")
    r = report(tmp_path / "a")
    assert r["srm"]["unit"] == "users" and r["srm"]["chi2"] == 0 and not r["srm"]["flagged"]
    assert r["srm"]["users_in_several_versions"] == 0
    assert {v["version"]: (v["samples"], v["users"]) for v in r["versions"]} == \
        {"1": (1500, 500), "2": (500, 500)}
    # one sample without a user: back to samples, and the imbalance shows
    path = write_jsonl(tmp_path / "mixed.jsonl", rows + [{"version": "2"}])
    run("run", path, "--out", tmp_path / "b")
    r = report(tmp_path / "b")
    assert r["srm"]["unit"] == "samples" and r["srm"]["flagged"]


def test_users_in_two_versions_are_reported(tmp_path):
    rows = [{"version": "1", "user": "a"}, {"version": "2", "user": "a"},
            {"version": "2", "user": "a"}, {"version": "1", "user": "b"},
            {"version": "2", "user": "c"}, {"version": "1", "user": "d"},
            {"version": "2", "user": "d"}]
    path = write_jsonl(tmp_path / "leak.jsonl", rows)
    p = run("run", path, "--out", tmp_path / "a")
    r = report(tmp_path / "a")
    assert r["srm"]["users_in_several_versions"] == 2
    assert {v["version"]: v["users"] for v in r["versions"]} == {"1": 3, "2": 1}
    assert "2 users appear in more than one version" in r["verdict"]["text"]
    assert "sample ratio (users)" in p.stdout


def test_srm_flagged_against_split(tmp_path):
    rows = [{"version": "1"}] * 600 + [{"version": "2"}] * 400
    path = write_jsonl(tmp_path / "srm.jsonl", rows)
    run("run", path, "--out", tmp_path / "a")
    r = report(tmp_path / "a")
    assert r["srm"]["flagged"] and r["srm"]["df"] == 1
    assert abs(r["srm"]["chi2"] - 40.0) < 1e-9
    assert abs(r["srm"]["p_value"] - math.erfc(math.sqrt(20.0))) < 1e-15
    run("run", path, "--out", tmp_path / "b", "--split", "1:60,2:40")
    r = report(tmp_path / "b")
    assert not r["srm"]["flagged"] and r["srm"]["chi2"] == 0
    p = run("run", path, "--out", tmp_path / "c", "--split", "1:60", check=False)
    assert p.returncode == 1 and "no weight for version '2'" in p.stderr
    html = (tmp_path / "a" / "report.html").read_text(encoding="utf-8")
    assert "Sample ratio mismatch" in html


# ---- the statistics bar ----------------------------------------------------

def wilson(s, n):
    p = s / n
    d = 1 + Z * Z / n
    c = (p + Z * Z / (2 * n)) / d
    h = Z * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n)) / d
    return p, (0.0 if s == 0 else c - h), (1.0 if s == n else c + h)


def beats(aa, ba, ab, bb, n=200000):
    """P(Xb > Xa) by integrating f_b(x) F_a(x) (Simpson for F_a)."""
    def mv(a, b):
        s = a + b
        return a / s, math.sqrt(a * b / (s * s * (s + 1)))
    ma, sa = mv(aa, ba)
    mb, sb = mv(ab, bb)
    lo = max(1e-12, min(ma - 12 * sa, mb - 12 * sb))
    hi = min(1 - 1e-12, max(ma + 12 * sa, mb + 12 * sb))
    h = (hi - lo) / n
    la = math.lgamma(aa) + math.lgamma(ba) - math.lgamma(aa + ba)
    lb = math.lgamma(ab) + math.lgamma(bb) - math.lgamma(ab + bb)
    fa = lambda x: math.exp((aa - 1) * math.log(x) + (ba - 1) * math.log1p(-x) - la)
    fb = lambda x: math.exp((ab - 1) * math.log(x) + (bb - 1) * math.log1p(-x) - lb)
    F = tot = 0.0
    for i in range(n):
        x0 = lo + i * h
        f0, fm, f1 = fa(x0), fa(x0 + h / 2), fa(x0 + h)
        tot += h * fb(x0 + h / 2) * (F + h / 24 * (5 * f0 + 8 * fm - f1))
        F += h / 6 * (f0 + 4 * fm + f1)
    return tot


def compare(sc, nc, st, nt):
    pc, pt = sc / nc, st / nt
    se = math.sqrt(pc * (1 - pc) / nc + pt * (1 - pt) / nt)
    d = pt - pc
    var_rel = pt * (1 - pt) / nt / pc ** 2 + pt ** 2 * pc * (1 - pc) / nc / pc ** 4
    rel = pt / pc - 1
    pool = (sc + st) / (nc + nt)
    z = d / math.sqrt(pool * (1 - pool) * (1 / nc + 1 / nt))
    return {"diff": d, "diff_ci_low": d - Z * se, "diff_ci_high": d + Z * se,
            "rel_lift": rel, "rel_ci_low": rel - Z * math.sqrt(var_rel),
            "rel_ci_high": rel + Z * math.sqrt(var_rel), "z": z,
            "p_value": 2 * (1 - NormalDist().cdf(abs(z)))}


def test_statistics_bar_290k(tmp_path):
    """The bar: agreement with an independent computation to 1e-6 on a
    290,000-sample two-arm file."""
    rng = random.Random(290000)
    path = tmp_path / "ab290k.jsonl"
    counts = {"3": [0, 0, 0, 0, 0], "4": [0, 0, 0, 0, 0]}  # n, imp, clk, conv, err
    with open(path, "w", encoding="utf-8") as f:
        for i in range(290000):
            v = "4" if rng.random() < 0.5 else "3"
            imp = 1 + (rng.random() < 0.2)
            clk = sum(rng.random() < (0.105 if v == "4" else 0.1) for _ in range(imp))
            conv = int(clk > 0 and rng.random() < (0.32 if v == "4" else 0.3))
            bad = rng.random() < (0.04 if v == "4" else 0.05)
            c = counts[v]
            c[0] += 1; c[1] += imp; c[2] += clk; c[3] += conv; c[4] += bad
            f.write('{"version":"%s","impressions":%d,"clicks":%d,"conversions":%d,'
                    '"facts":{"颜色":"白色"},"output":"%s"}\n'
                    % (v, imp, clk, conv, "黑色上衣" if bad else "白色上衣"))
        f.write('{"version":"3","facts":{"颜色":"黑色"}}\n')  # vocabulary only
    counts["3"][0] += 1
    counts["3"][1] += 1
    out = tmp_path / "out"
    run("run", path, "--out", out, "--control", "3", "--quiet", timeout=300)
    r = report(out)
    v = {x["version"]: x for x in r["versions"]}
    checked = {k: counts[k][0] - (1 if k == "3" else 0) for k in counts}
    tol = 1e-6
    for k, c in counts.items():
        assert v[k]["samples"] == c[0]
        for name, s, n in (("ctr", c[2], c[1]), ("cvr", c[3], c[1]),
                           ("fact_error_rate", c[4], checked[k])):
            got = v[k][name]
            assert (got["successes"], got["trials"]) == (s, n)
            for key, want in zip(("value", "ci_low", "ci_high"), wilson(s, n)):
                assert abs(got[key] - want) < tol, (k, name, key, got[key], want)
    c3, c4 = counts["3"], counts["4"]
    for name, sc, nc, st, nt, higher in (
            ("ctr", c3[2], c3[1], c4[2], c4[1], True),
            ("cvr", c3[3], c3[1], c4[3], c4[1], True),
            ("fact_error_rate", c3[4], checked["3"], c4[4], checked["4"], False)):
        got = v["4"]["vs_control"][name]
        want = compare(sc, nc, st, nt)
        for key, w in want.items():
            assert abs(got[key] - w) < tol, (name, key, got[key], w)
        # one treatment arm: Holm leaves p alone
        assert abs(got["p_value_adjusted"] - want["p_value"]) < tol
        ctb = beats(1 + sc, 1 + nc - sc, 1 + st, 1 + nt - st)
        if not higher:
            ctb = 1 - ctb
        assert abs(got["chance_to_beat"] - ctb) < tol, (name, got["chance_to_beat"], ctb)
    n3, n4 = c3[0], c4[0]
    e = (n3 + n4) / 2
    chi2 = ((n3 - e) ** 2 + (n4 - e) ** 2) / e
    assert abs(r["srm"]["chi2"] - chi2) < tol
    assert abs(r["srm"]["p_value"] - math.erfc(math.sqrt(chi2 / 2))) < tol


def test_holm_three_arms(tmp_path):
    rows = []
    for v, rate in (("1", 0.10), ("2", 0.16), ("3", 0.11)):
        for i in range(1000):
            rows.append({"version": v, "conversions": int(i < rate * 1000)})
    path = write_jsonl(tmp_path / "h.jsonl", rows)
    run("run", path, "--out", tmp_path / "o")
    r = report(tmp_path / "o")
    ps = {x["version"]: x["vs_control"]["cvr"]["p_value"] for x in r["versions"][1:]}
    adj = {x["version"]: x["vs_control"]["cvr"]["p_value_adjusted"] for x in r["versions"][1:]}
    lo, hi = sorted(ps, key=ps.get)
    assert abs(adj[lo] - min(1, 2 * ps[lo])) < 1e-12
    assert abs(adj[hi] - max(adj[lo], min(1, ps[hi]))) < 1e-12
    assert r["verdict"]["winner"] == "2" and r["verdict"]["significant"]


# ---- registry (--db) -------------------------------------------------------

def promptctl(db, *args):
    p = subprocess.run([PROMPTCTL, "--db", str(db), *map(str, args)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, (args, p.stdout, p.stderr)
    return p.stdout


@pytest.mark.skipif(not (BIN / "promptctl").exists(), reason="bin/promptctl not built")
def test_db_weights_and_recorded_runs(tmp_path):
    db = tmp_path / "reg.db"
    promptctl(db, "init")
    for i in range(2):
        f = tmp_path / ("v%d.txt" % i)
        f.write_text("Write copy for {{product}} (variant %d)" % i)
        promptctl(db, "publish", "product_copy", "-f", f)
    promptctl(db, "label", "product_copy", "1", "production")
    promptctl(db, "experiment", "start", "product_copy", "--label", "production",
              "--arm", "1:70", "--arm", "2:30")
    rows = ([{"version": "1", "prompt": "product_copy", "conversions": i % 9 == 0}
             for i in range(700)] +
            [{"version": "2", "prompt": "product_copy", "conversions": i % 7 == 0}
             for i in range(300)])
    for r in rows:
        r["conversions"] = int(r["conversions"])
    path = write_jsonl(tmp_path / "s.jsonl", rows)
    p = run("run", path, "--out", tmp_path / "o", "--db", db)
    r = report(tmp_path / "o")
    assert r["srm"]["expected_from"] == "registry"
    assert r["srm"]["chi2"] == 0 and not r["srm"]["flagged"]
    assert "recorded run" in p.stderr
    con = sqlite3.connect("file:%s?mode=ro" % db, uri=True)
    try:
        got = con.execute("SELECT version, summary FROM eval_runs ORDER BY version").fetchall()
    finally:
        con.close()
    assert [g[0] for g in got] == [1, 2]
    summary = json.loads(got[1][1])
    assert summary["version"]["version"] == "2"
    assert summary["version"]["cvr"]["successes"] == 43
    # a version the registry does not have is a clear error
    bad = write_jsonl(tmp_path / "bad.jsonl",
                      [{"version": "9", "prompt": "product_copy"}] * 3)
    p = run("run", bad, "--out", tmp_path / "o2", "--db", db, "--split", "9:1",
            check=False)
    assert p.returncode == 1 and "version" in p.stderr
    p = run("run", path, "--out", tmp_path / "o3", "--db", tmp_path / "none.db",
            check=False)
    assert p.returncode == 1


# ---- replay ----------------------------------------------------------------

class FakeGateway(BaseHTTPRequestHandler):
    """Stands in for promptgate: answers chat completions with the rendered
    prompt, throttles the first request of every user once with 429."""
    seen = {}
    lock = threading.Lock()
    requests = []

    def log_message(self, *a):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        cls = type(self)
        with cls.lock:
            cls.requests.append((self.headers.get("Authorization"), body))
            key = (body.get("user"), body["prompt"]["version"])
            first = key not in cls.seen
            cls.seen[key] = True
        if first and body.get("user", "").endswith("0"):
            data = b'{"error":{"message":"slow down","type":"rate_limit","code":"rate_limited"}}'
            self.send_response(429)
            self.send_header("retry-after", "1")
        else:
            p = body["prompt"]
            text = "v%d: %s" % (p["version"], p["variables"].get("color", "?"))
            data = json.dumps({"choices": [{"index": 0, "message": {
                "role": "assistant", "content": text}}]}).encode()
            self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def test_replay_through_gateway(tmp_path):
    FakeGateway.seen = {}
    FakeGateway.requests = []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), FakeGateway)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        colours = ("白色", "黑色")
        rows = [{"id": "s%d" % i, "user": "u%d" % i, "facts": {"颜色": colours[i % 2]},
                 "variables": {"color": "白色"}} for i in range(20)]
        src = write_jsonl(tmp_path / "in.jsonl", rows)
        out = tmp_path / "replayed.jsonl"
        t0 = time.time()
        p = run("replay", src, "--gateway", "http://127.0.0.1:%d" % srv.server_port,
                "--key", "env:EVAL_KEY", "--prompt", "product_copy",
                "--versions", "3,4", "--concurrency", "4", "--out", out,
                env=dict(os.environ, EVAL_KEY="sk-test-secret"))
        assert time.time() - t0 >= 1.0  # waited for retry-after
        assert "sk-test-secret" not in p.stderr + p.stdout
        assert "40/40" in p.stderr or "replayed 40 requests" in p.stderr
        lines = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
        assert len(lines) == 40
        assert {(x["id"], x["version"]) for x in lines} == {
            ("s%d" % i, v) for i in range(20) for v in ("3", "4")}
        assert all(x["prompt"] == "product_copy" and
                   x["facts"] == {"颜色": colours[int(x["id"][1:]) % 2]} and
                   x["output"] == "v%s: 白色" % x["version"] for x in lines)
        auth = {a for a, _ in FakeGateway.requests}
        assert auth == {"Bearer sk-test-secret"}
        assert len(FakeGateway.requests) == 40 + 4  # u0, u10 x 2 versions retried
        # the replayed samples score: half the products are black, the copy white
        run("run", out, "--out", tmp_path / "o")
        r = report(tmp_path / "o")
        assert [v["fact_error_rate"]["successes"] for v in r["versions"]] == [10, 10]
    finally:
        srv.shutdown()
        srv.server_close()


def test_replay_gateway_down_fails_cleanly(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "variables": {}}])
    p = run("replay", src, "--gateway", "http://127.0.0.1:9", "--key", "k",
            "--prompt", "p", "--versions", "1", "--retries", "1",
            "--out", tmp_path / "o.jsonl", check=False)
    assert p.returncode == 1
    assert "cannot reach" in p.stderr and "line 1" in p.stderr


def test_replay_progress_bar_on_a_terminal(tmp_path):
    """stderr on a terminal gets a redrawn bar (done/total, rate, ETA)."""
    FakeGateway.seen = {}
    FakeGateway.requests = []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), FakeGateway)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    master, slave = pty.openpty()
    try:
        src = write_jsonl(tmp_path / "in.jsonl",
                          [{"id": "s%d" % i, "user": "x%d1" % i,
                            "variables": {"color": "白色"}} for i in range(30)])
        p = subprocess.Popen(
            [PROMPTEVAL, "replay", str(src), "--gateway",
             "http://127.0.0.1:%d" % srv.server_port, "--key", "k", "--prompt",
             "p", "--versions", "1", "--out", str(tmp_path / "o.jsonl")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave)
        os.close(slave)
        slave = None
        chunks = []
        while True:
            try:
                b = os.read(master, 4096)
            except OSError:
                break
            if not b:
                break
            chunks.append(b)
        assert p.wait(timeout=60) == 0
        text = b"".join(chunks).decode("utf-8", "replace")
        assert "\r[" in text and "30/30" in text and "ETA" in text, text[-500:]
        assert "#" * 30 in text
    finally:
        if slave is not None:
            os.close(slave)
        os.close(master)
        srv.shutdown()
        srv.server_close()
