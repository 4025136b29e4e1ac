"""Integration tests of bin/promptctl: every verb, errors, help, the new
user's walkthrough of issue 6, and two publishers racing on one database."""

import json
import re
import sqlite3
import subprocess
import threading

import pytest

from regtest import PROMPTCTL, Ctl

VERBS = ["init", "migrate", "publish", "list", "show", "versions", "diff",
         "label", "rollback", "log", "render", "experiment", "export",
         "import", "help"]

V2 = {"messages": [{"role": "system", "content": "You write shop copy."},
                   {"role": "user", "content": "Describe {{product_name}} for {{audience}}."}],
      "params": {"model": "qwen2.5-7b", "temperature": 0.7, "max_tokens": 256}}


@pytest.fixture
def ctl(tmp_path):
    return Ctl(tmp_path / "reg.db")


@pytest.fixture
def filled(ctl, tmp_path):
    """A registry with product_copy v1..v3 and production -> 2."""
    (tmp_path / "v1.txt").write_text("Write a description of {{product_name}}.\n")
    (tmp_path / "v2.json").write_text(json.dumps(V2))
    v3 = json.loads(json.dumps(V2))
    v3["messages"][0]["content"] = "You write short shop copy."
    (tmp_path / "v3.json").write_text(json.dumps(v3))
    ctl.ok("init")
    for i, f in enumerate(["v1.txt", "v2.json", "v3.json"], 1):
        assert ctl.ok("publish", "product_copy", "-f", tmp_path / f, "-m", f"v{i}").out \
            == f"published product_copy@{i}\n"
    ctl.ok("label", "product_copy", "2", "production")
    return ctl


# ---- help -------------------------------------------------------------------

def test_help_lists_every_verb(ctl):
    out = ctl.ok("help").out
    for verb in VERBS:
        assert re.search(rf"^\s+(promptctl )?{verb}\b", out, re.M), verb
    assert "--db PATH" in out and "--json" in out and "PROMPTGATE_DB" in out
    for verb in VERBS:
        r = ctl.ok("help", verb)
        assert r.out.startswith(f"usage: promptctl {verb}"), r
        assert ctl.ok(verb, "--help").out == r.out


def test_no_verb_and_unknown_verb(ctl):
    r = ctl.run()
    assert r.rc == 1 and "usage: promptctl" in r.err
    r = ctl.fail("frobnicate")
    assert "no verb 'frobnicate'" in r.err
    r = ctl.fail("help", "frobnicate")
    r = ctl.fail("publish", "x", "-f")
    assert "needs a value" in r.err and "promptctl help publish" in r.err


# ---- the bar: a new user with nothing but `promptctl help` --------------------

def test_new_user_walkthrough(ctl, tmp_path):
    """Follows the 'a first session' lines of `promptctl help` verbatim: three
    versions, production label, a 50/50 experiment, rollback, export."""
    out = ctl.ok("help").out
    session = out.split("a first session:\n", 1)[1].split("\n(", 1)[0]
    lines = [line.strip() for line in session.strip().splitlines()]
    assert [line.split()[1] for line in lines] == [
        "init", "publish", "publish", "publish", "label", "label", "experiment",
        "render", "experiment", "rollback", "export"]
    (tmp_path / "v1.txt").write_text("Describe {{product_name}}.\n")
    (tmp_path / "v2.json").write_text(json.dumps({"messages": [
        {"role": "system", "content": "You write shop copy."},
        {"role": "user", "content": "Describe {{product_name}}."}]}))
    (tmp_path / "v3.json").write_text(json.dumps({"messages": [
        {"role": "system", "content": "You write short shop copy."},
        {"role": "user", "content": "Describe {{product_name}}."}],
        "params": {"max_tokens": 64}}))
    outs = []
    for line in lines:
        line = line.replace("promptctl", f"{PROMPTCTL} --db {ctl.db}", 1)
        p = subprocess.run(line, shell=True, cwd=tmp_path, capture_output=True,
                           text=True, timeout=60)
        assert p.returncode == 0, (line, p.stderr)
        outs.append(p.stdout)
    assert outs[3] == "published product_copy@3\n"
    assert "experiment product_copy@production started: v2 50% v3 50%" in outs[6]
    assert re.match(r"# product_copy@[23] \(experiment product_copy@production", outs[7])
    assert outs[9] == "product_copy@production rolled back: version 2 -> 1\n"
    assert ctl.json("show", "product_copy@production")["version"] == 1
    backup = json.loads((tmp_path / "backup.json").read_text())
    p = backup["prompts"][0]
    assert p["name"] == "product_copy" and len(p["versions"]) == 3
    assert p["labels"] == {"production": 1}
    assert p["experiments"][0]["arms"] == [{"version": 2, "weight": 50},
                                           {"version": 3, "weight": 50}]
    assert p["experiments"][0]["status"] == "stopped"
    assert [h["action"] for h in p["label_history"]] == ["set", "set", "rollback"]


# ---- publish ----------------------------------------------------------------

def test_publish_text_json_and_unchanged(filled, tmp_path):
    ctl = filled
    r = ctl.ok("publish", "product_copy", "-f", tmp_path / "v3.json")
    assert r.out == "unchanged: product_copy@3 already has this content\n"
    j = ctl.json("publish", "product_copy", "-f", tmp_path / "v3.json")
    assert j == {"name": "product_copy", "version": 3, "created": False}
    j = ctl.json("publish", "other", "-f", "-", "-m", "from stdin", input="Hi {{who}}\n")
    assert j == {"name": "other", "version": 1, "created": True}
    show = ctl.json("show", "other")
    assert show["messages"] == [{"role": "user", "content": "Hi {{who}}"}]
    assert show["variables"] == ["who"] and show["author"] == "tester"
    assert show["message"] == "from stdin"


@pytest.mark.parametrize("args,text,needle", [
    (["Bad-Name"], "x", "invalid prompt name 'Bad-Name'"),
    (["ok"], '{"messages": [', "invalid JSON"),
    (["ok"], '{"messages": [{"role": "robot", "content": "x"}]}', "'robot' is not one of"),
    (["ok"], '{"mesages": []}', "unknown key 'mesages'"),
    (["ok"], "", "empty"),
])
def test_publish_errors(ctl, tmp_path, args, text, needle):
    f = tmp_path / "p.txt"
    f.write_text(text)
    r = ctl.fail("publish", *args, "-f", f)
    assert needle in r.err
    assert ctl.run("list").out.startswith("no prompts") or "ok" not in ctl.run("list").out


def test_publish_usage_errors(ctl, tmp_path):
    assert "missing -f FILE" in ctl.fail("publish", "x").err
    assert "missing prompt NAME" in ctl.fail("publish", "-f", "x").err
    assert "no such file" in ctl.fail("publish", "x", "-f", tmp_path / "nope").err
    big = tmp_path / "big.txt"
    big.write_text("x" * (1024 * 1024 + 10))
    assert "larger than" in ctl.fail("publish", "x", "-f", big).err
    assert "unknown option '--bogus'" in ctl.fail("publish", "x", "--bogus").err


@pytest.mark.parametrize("args,needle", [
    (["show"], "show: missing NAME, NAME@LABEL or NAME@VERSION"),
    (["versions"], "versions: missing prompt NAME"),
    (["diff", "p", "1"], "diff: want NAME A B (versions or labels)"),
    (["label", "p", "1"], "label: want NAME VERSION LABEL"),
    (["rollback", "p"], "rollback: want NAME LABEL"),
    (["log"], "log: missing prompt NAME"),
    (["experiment", "stop"], "experiment: stop wants NAME or NAME@LABEL"),
    (["import"], "import: missing FILE"),
    (["versions", "a", "b"], "versions: "),
])
def test_positional_usage_errors(filled, args, needle):
    # a verb short of (or past) its arguments says which, and where help is
    r = filled.fail(*args)
    assert needle in r.err, r.err
    assert "(see 'promptctl help %s')" % args[0] in r.err, r.err


# ---- reading ----------------------------------------------------------------

def test_list_show_versions(filled):
    ctl = filled
    out = ctl.ok("list").out
    assert re.search(r"^product_copy\s+3\s+production=2", out, re.M), out
    lst = ctl.json("list")
    assert lst[0]["name"] == "product_copy" and lst[0]["latest"] == 3
    assert lst[0]["labels"] == {"production": 2}
    assert ctl.json("show", "product_copy@production")["version"] == 2
    assert ctl.json("show", "product_copy@1")["version"] == 1
    s = ctl.json("show", "product_copy")
    assert s["version"] == 3 and s["labels"] == ["latest"]
    assert s["params"]["temperature"] == 0.7
    assert s["variables"] == ["product_name", "audience"]
    text = ctl.ok("show", "product_copy@production").out
    assert text.startswith("product_copy@2  (production)")
    assert "variables: product_name audience" in text
    assert "[system]\nYou write shop copy." in text
    vs = ctl.json("versions", "product_copy")
    assert [(v["version"], v["message"]) for v in vs] == [(1, "v1"), (2, "v2"), (3, "v3")]
    assert "production" in vs[1]["labels"]
    assert re.search(r"^\s+2\s+\S+\s+tester\s+production\s+v2$", ctl.ok("versions", "product_copy").out, re.M)
    assert "has no version 7" in ctl.fail("show", "product_copy@7").err
    assert "has no label 'canary'" in ctl.fail("show", "product_copy@canary").err
    assert "unknown prompt 'nope'" in ctl.fail("show", "nope").err
    assert "unknown prompt 'nope'" in ctl.fail("versions", "nope").err


def test_every_read_verb_has_json(filled, tmp_path):
    ctl = filled
    ctl.ok("experiment", "start", "product_copy", "--label", "production",
           "--arm", "2:50", "--arm", "3:50")
    for args in (["list"], ["show", "product_copy"], ["versions", "product_copy"],
                 ["diff", "product_copy", "1", "2"], ["log", "product_copy"],
                 ["render", "product_copy@1", "--var", "product_name=x"],
                 ["experiment", "list"], ["migrate", "--status"], ["init"],
                 ["export"]):
        json.loads(ctl.ok(*args, "--json").out)


def test_diff(filled):
    ctl = filled
    out = ctl.ok("diff", "product_copy", "2", "3").out
    assert out.startswith("--- product_copy@2\n+++ product_copy@3\n@@ -1,")
    assert "\n-You write shop copy.\n+You write short shop copy.\n" in out
    out = ctl.ok("diff", "product_copy", "1", "production").out
    assert '\n+  "temperature": 0.7' in out and "\n+[system]\n" in out
    assert ctl.ok("diff", "product_copy", "2", "2").out == \
        "product_copy@2 and product_copy@2 are identical\n"
    j = ctl.json("diff", "product_copy", "2", "3")
    assert j["from"] == 2 and j["to"] == 3 and not j["same"]
    assert "has no version 9" in ctl.fail("diff", "product_copy", "2", "9").err


# ---- labels -----------------------------------------------------------------

def test_label_rollback_log(filled):
    ctl = filled
    assert ctl.ok("label", "product_copy", "3", "production").out == \
        "product_copy@production -> version 3\n"
    ctl.ok("label", "product_copy", "1", "staging", "--author", "ann")
    assert ctl.ok("rollback", "product_copy", "production").out == \
        "product_copy@production rolled back: version 3 -> 2\n"
    assert ctl.json("show", "product_copy@production")["version"] == 2
    r = ctl.fail("rollback", "product_copy", "production")
    assert "no earlier version to roll back to" in r.err
    log = ctl.json("log", "product_copy")
    assert [(e["label"], e["from"], e["to"], e["action"]) for e in log] == [
        ("production", None, 2, "set"), ("production", 2, 3, "set"),
        ("staging", None, 1, "set"), ("production", 3, 2, "rollback")]
    assert log[2]["actor"] == "ann" and log[0]["actor"] == "tester"
    text = ctl.ok("log", "product_copy").out
    assert re.search(r"production\s+rollback\s+3->2\s+tester", text)
    assert "'latest' is built in" in ctl.fail("label", "product_copy", "1", "latest").err
    assert "invalid label 'Prod'" in ctl.fail("label", "product_copy", "1", "Prod").err
    assert "VERSION must be a version number" in ctl.fail("label", "product_copy", "x", "p").err
    assert "has no version 8" in ctl.fail("label", "product_copy", "8", "p").err


# ---- render -----------------------------------------------------------------

def test_render(filled, tmp_path):
    ctl = filled
    out = ctl.ok("render", "product_copy@production", "--var", "product_name=Trail shoe",
                 "--var", "audience={{product_name}} fans").out
    assert out == ("# product_copy@2\n[system]\nYou write shop copy.\n[user]\n"
                   "Describe Trail shoe for {{product_name}} fans.\n")
    r = ctl.fail("render", "product_copy@production", "--var", "product_name=x")
    assert r.err == "promptctl: cannot render product_copy@2: missing variable 'audience'\n"
    (tmp_path / "vars.json").write_text(json.dumps({"product_name": "Käse 🧀", "audience": 3}))
    j = ctl.json("render", "product_copy@2", "--vars", tmp_path / "vars.json")
    assert j["messages"][1]["content"] == "Describe Käse 🧀 for 3."
    assert j["params"]["model"] == "qwen2.5-7b"
    (tmp_path / "bad.json").write_text("[1]")
    assert "want a JSON object" in ctl.fail("render", "product_copy", "--vars", tmp_path / "bad.json").err
    assert "--var wants NAME=VALUE" in ctl.fail("render", "product_copy", "--var", "novalue").err


# ---- experiments ------------------------------------------------------------

def test_experiments(filled):
    ctl = filled
    assert "sum to 90" in ctl.fail("experiment", "start", "product_copy", "--label",
                                   "production", "--arm", "2:50", "--arm", "3:40").err
    assert "missing --label" in ctl.fail("experiment", "start", "product_copy",
                                         "--arm", "2:50", "--arm", "3:50").err
    assert "has no label 'canary'" in ctl.fail("experiment", "start", "product_copy@canary",
                                              "--arm", "2:50", "--arm", "3:50").err
    r = ctl.ok("experiment", "start", "product_copy@production", "--arm", "2:50",
               "--arm", "3:50", "--salt", "s1")
    assert r.out == "experiment product_copy@production started: v2 50% v3 50% (salt s1)\n"
    assert "already has a running experiment" in ctl.fail(
        "experiment", "start", "product_copy", "--label", "production",
        "--arm", "1:50", "--arm", "3:50").err
    exps = ctl.json("experiment", "list")
    assert len(exps) == 1 and exps[0]["status"] == "running"
    assert exps[0]["arms"] == [{"version": 2, "weight": 50}, {"version": 3, "weight": 50}]
    # render --user follows the experiment like the gateway; sticky per user
    seen = set()
    for u in range(40):
        j = ctl.json("render", "product_copy@production", "--user", f"user{u}",
                     "--var", "product_name=x", "--var", "audience=y")
        assert j["experiment"]["name"] == "product_copy@production"
        assert j["version"] == [2, 3][j["experiment"]["arm"]]
        seen.add(j["version"])
        again = ctl.json("render", "product_copy@production", "--user", f"user{u}",
                         "--var", "product_name=x", "--var", "audience=y")
        assert again["version"] == j["version"]
    assert seen == {2, 3}
    assert ctl.ok("experiment", "stop", "product_copy").out == \
        "experiment on product_copy stopped\n"
    assert "no running experiment" in ctl.fail("experiment", "stop", "product_copy@production").err
    assert ctl.json("experiment", "list", "--running") == []
    assert ctl.json("experiment", "list", "product_copy")[0]["status"] == "stopped"


# ---- export / import --------------------------------------------------------

def test_export_import(filled, tmp_path):
    ctl = filled
    ctl.ok("experiment", "start", "product_copy", "--label", "production",
           "--arm", "2:50", "--arm", "3:50")
    ctl.ok("label", "product_copy", "3", "production")
    r = ctl.run("export", "-o", tmp_path / "dump.json")
    assert r.rc == 0 and "exported 1 prompts" in r.err
    dump = json.loads((tmp_path / "dump.json").read_text())
    assert dump == json.loads(ctl.ok("export").out)
    other = Ctl(tmp_path / "copy.db")
    assert other.ok("import", tmp_path / "dump.json").out == \
        "imported 1 prompts, 3 versions, 1 label moves, 1 experiments\n"
    assert other.ok("import", tmp_path / "dump.json").out == \
        "imported 0 prompts, 0 versions, 0 label moves, 0 experiments\n"
    assert json.loads(other.ok("export").out)["prompts"] == dump["prompts"]
    # rollback works on the restored copy: history came along
    assert other.ok("rollback", "product_copy", "production").out.endswith("3 -> 2\n")
    # a changed version is a conflict; nothing is imported
    dump["prompts"][0]["versions"][0]["messages"][0]["content"] = "tampered"
    (tmp_path / "bad.json").write_text(json.dumps(dump))
    r = other.fail("import", tmp_path / "bad.json")
    assert "import conflict: 'product_copy' version 1 exists with other content" in r.err
    (tmp_path / "junk.json").write_text("{")
    assert "invalid JSON" in other.fail("import", tmp_path / "junk.json").err


# ---- database handling ------------------------------------------------------

def test_db_path_and_missing_db(tmp_path):
    db = tmp_path / "env.db"
    ctl = Ctl(db)
    r = ctl.fail("list")
    assert "no such registry" in r.err and "promptctl init" in r.err
    assert not db.exists()
    ctl.run("init", db=False, env={"PROMPTGATE_DB": str(db)})
    assert db.exists()
    r = ctl.ok("list", db=False, env={"PROMPTGATE_DB": str(db)})
    assert r.out.startswith("no prompts yet")
    # default is ./promptgate.db in the working directory
    ctl.ok("init", db=False, cwd=tmp_path)
    assert (tmp_path / "promptgate.db").exists()


def test_migrate_status_and_refusals(ctl):
    ctl.ok("init")
    st = ctl.json("migrate", "--status")
    assert st["db_version"] == st["binary_version"] >= 2
    assert all(m["applied"] and m["checksum_ok"] for m in st["migrations"])
    assert [m["name"] for m in st["migrations"]][:2] == ["0001_init", "0002_eval_runs"]
    bv = st["binary_version"]
    assert "schema version %d, this binary speaks %d" % (bv, bv) in ctl.ok("migrate", "--status").out
    con = sqlite3.connect(ctl.db)
    con.execute("UPDATE schema_migrations SET checksum = 'x' WHERE version = 1")
    con.commit()
    assert "0001_init differs" in ctl.fail("list").err
    r = ctl.fail("migrate", "--status")
    assert "CHANGED after it was applied" in r.out and "was changed" in r.err
    con.execute("UPDATE schema_migrations SET checksum = ? WHERE version = 1",
                (st["migrations"][0]["checksum"],))
    con.execute("INSERT INTO schema_migrations (version, name, checksum) VALUES (99, '0099_x', 'y')")
    con.commit()
    con.close()
    r = ctl.fail("publish", "x", "-f", "-", input="hi")
    assert "newer than this binary" in r.err
    # --status still shows where it stands, and says why it is refused
    r = ctl.fail("migrate", "--status")
    assert "schema version 99, this binary speaks %d" % bv in r.out
    assert "its schema is newer" in r.err
    assert ctl.run("migrate", "--status", "--json").rc == 1


def test_migrate_applies_pending(ctl, tmp_path):
    # a registry at version 1 only, as an older promptctl left it
    ctl.ok("init")
    con = sqlite3.connect(ctl.db)
    con.execute("DROP TABLE eval_runs")
    con.execute("DROP VIEW exposures")          # 0005 made it a view
    con.execute("DROP TABLE exposure_chunks")
    con.execute("DROP TABLE feedback")
    con.execute("DELETE FROM schema_migrations WHERE version >= 2")
    con.commit()
    con.close()
    st = ctl.json("migrate", "--status")
    assert st["db_version"] == 1 and not st["migrations"][1]["applied"]
    assert "run 'promptctl migrate'" in ctl.ok("migrate", "--status").out
    ctl.ok("migrate")
    st = ctl.json("migrate", "--status")
    assert st["db_version"] == len(st["migrations"]) and st["migrations"][1]["applied"]


OLD_EXPOSURES = """
CREATE TABLE exposures (
    id INTEGER PRIMARY KEY, request_id TEXT NOT NULL, at TEXT NOT NULL,
    key_name TEXT, user_id TEXT, prompt TEXT NOT NULL, version INTEGER NOT NULL,
    label TEXT, experiment_id INTEGER, experiment TEXT, arm INTEGER, model TEXT,
    backend TEXT, status INTEGER NOT NULL, stream INTEGER NOT NULL DEFAULT 0,
    latency_ms REAL, prompt_tokens INTEGER, completion_tokens INTEGER,
    total_tokens INTEGER, cache TEXT, variables TEXT NOT NULL DEFAULT '{}',
    output TEXT);
CREATE INDEX exposures_experiment ON exposures(experiment_id, at);
"""


def test_migration_0005_keeps_the_exposures_written_before(filled):
    """A registry at version 4 (exposures a table, a row each) moves its rows
    into chunks: the view shows them as they were, the export finds them
    and their feedback."""
    filled.ok("experiment", "start", "product_copy", "--label", "production",
              "--arm", "2:50", "--arm", "3:50")
    exp_id = filled.json("experiment", "list")[0]["id"]
    con = sqlite3.connect(filled.db)
    con.executescript("DROP VIEW exposures; DROP TABLE exposure_chunks;" + OLD_EXPOSURES)
    rows = [
        ("r1", "2026-11-28T10:00:00.000Z", "shop", "u1", "product_copy", 2, "production",
         exp_id, "product_copy@production", 0, "m", "b", 200, 0, 12.5, 3, 4, 7, "miss",
         '{"product_name":"Kettle","facts":{"w":"1kg"}}', "the \"text\"\n"),
        ("r2", "2026-11-28T10:00:01.000Z", None, "u2", "product_copy", 3, "production",
         exp_id, "product_copy@production", 1, "m", "b", 502, 1, None, None, None, None,
         None, "{}", None),
        ("r3", "2026-11-28T10:00:02.000Z", None, None, "product_copy", 1, None,
         None, None, None, None, None, 404, 0, 1.0, None, None, None, "bypass",
         "not json", None),
    ]
    con.executemany("INSERT INTO exposures (request_id, at, key_name, user_id, prompt, version,"
                    " label, experiment_id, experiment, arm, model, backend, status, stream,"
                    " latency_ms, prompt_tokens, completion_tokens, total_tokens, cache,"
                    " variables, output) VALUES (" + ",".join("?" * 21) + ")", rows)
    con.execute("INSERT INTO feedback (request_id, event, value, at) VALUES"
                " ('r1', 'click', 1, '2026-11-28T10:01:00.000Z')")
    con.execute("DELETE FROM schema_migrations WHERE version >= 5")
    con.commit()
    con.close()

    filled.ok("migrate")
    con = sqlite3.connect(filled.db)
    try:
        got = con.execute("SELECT request_id, at, key_name, user_id, prompt, version, label,"
                          " experiment_id, experiment, arm, model, backend, status, stream,"
                          " latency_ms, prompt_tokens, completion_tokens, total_tokens, cache,"
                          " variables, output FROM exposures ORDER BY id").fetchall()
        kinds = {r[0] for r in con.execute("SELECT type FROM sqlite_master WHERE name = 'exposures'")}
    finally:
        con.close()
    assert kinds == {"view"}
    assert [g[:19] for g in got] == [r[:19] for r in rows]
    assert json.loads(got[0][19]) == json.loads(rows[0][19])
    assert [g[19:] for g in got[1:]] == [r[19:] for r in rows[1:]]
    assert got[0][20] == rows[0][20]
    r = filled.run("samples", "export", "--experiment", "product_copy@production")
    assert r.rc == 0, r
    samples = [json.loads(x) for x in r.out.splitlines()]
    assert [(s["id"], s["clicks"], s["impressions"]) for s in samples] == [("r1", 1, 1), ("r2", 0, 0)]
    assert samples[0]["facts"] == {"w": "1kg"} and samples[0]["output"] == 'the "text"\n'


def test_versions_immutable_in_database(filled):
    con = sqlite3.connect(filled.db)
    with pytest.raises(sqlite3.DatabaseError, match="versions are immutable"):
        con.execute("UPDATE versions SET messages = '[]' WHERE version = 1")
    with pytest.raises(sqlite3.DatabaseError, match="versions are immutable"):
        con.execute("DELETE FROM versions")
    con.close()


# ---- concurrency ------------------------------------------------------------

def test_two_publishers_race(ctl):
    ctl.ok("init")
    results = {0: [], 1: []}

    def publisher(n):
        for i in range(100):
            results[n].append(ctl.run("publish", "raced", "-f", "-", "--json",
                                      input=f"publisher {n} text {i}\n"))

    threads = [threading.Thread(target=publisher, args=(n,)) for n in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    versions = []
    for n in (0, 1):
        for r in results[n]:
            assert r.rc == 0, r
            assert "locked" not in r.err and r.err == "", r
            versions.append(json.loads(r.out)["version"])
    assert sorted(versions) == list(range(1, 201))
    assert len(ctl.json("versions", "raced")) == 200
