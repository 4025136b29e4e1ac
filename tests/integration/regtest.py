"""Helpers for the promptctl integration tests (stdlib only).

    Ctl(db_path)         runs BIN/promptctl against one registry file
      .run(*args, input=None, env=None, db=True) -> Result
      .ok(*args, ...)    run, assert exit 0 and an empty stderr, return Result
      .fail(*args, ...)  run, assert exit 1 and exactly one stderr line
      .json(*args)       ok(*args, "--json") parsed
    Result: .rc .out .err
"""

import json
import os
import subprocess
from pathlib import Path

from helpers import BIN

PROMPTCTL = Path(BIN) / "promptctl"
TIMEOUT = 60


class Result:
    def __init__(self, proc):
        self.rc = proc.returncode
        self.out = proc.stdout
        self.err = proc.stderr

    def __repr__(self):
        return f"Result(rc={self.rc}, out={self.out!r}, err={self.err!r})"


class Ctl:
    def __init__(self, db_path):
        self.db = str(db_path)

    def run(self, *args, input=None, env=None, db=True, cwd=None):
        argv = [str(PROMPTCTL)]
        if db:
            argv += ["--db", self.db]
        argv += [str(a) for a in args]
        full_env = dict(os.environ)
        full_env.pop("PROMPTGATE_DB", None)
        full_env["PROMPTCTL_AUTHOR"] = "tester"
        if env:
            full_env.update(env)
        proc = subprocess.run(argv, input=input, capture_output=True, text=True,
                              env=full_env, timeout=TIMEOUT, cwd=cwd)
        return Result(proc)

    def ok(self, *args, **kw):
        r = self.run(*args, **kw)
        assert r.rc == 0, r
        assert r.err == "", r
        return r

    def fail(self, *args, **kw):
        r = self.run(*args, **kw)
        assert r.rc == 1, r
        lines = r.err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("promptctl: "), r
        return r

    def json(self, *args, **kw):
        return json.loads(self.ok(*args, "--json", **kw).out)
