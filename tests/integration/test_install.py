"""make install (issue 9): the layout, the systemd unit (paths of the
prefix, hardening, verified by systemd-analyze when it is there), the
logrotate snippet, and an operator's config never overwritten."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def make_install(prefix, *extra):
    binx = Path(os.environ.get("PROMPTGATE_BIN") or ROOT / "bin").resolve()
    args = ["make", "--no-print-directory", "-C", str(ROOT), "install", "PREFIX=%s" % prefix]
    if binx != (ROOT / "bin").resolve():  # e.g. the asan build: install what was tested
        args += ["BIN=%s" % binx, "BUILD=%s" % binx.parent]
    r = subprocess.run(args + list(extra), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def test_layout_unit_and_config(tmp_path):
    prefix = tmp_path / "opt"
    make_install(prefix)
    for name in ("promptgate", "promptctl", "prompteval", "mockllm"):
        exe = prefix / "bin" / name
        assert exe.is_file() and os.access(exe, os.X_OK), exe
        r = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=10)
        assert r.returncode == 0 and "usage" in (r.stdout + r.stderr).lower(), name
    conf = prefix / "etc" / "promptgate" / "promptgate.json"
    r = subprocess.run([str(prefix / "bin" / "promptgate"), "-t", "-c", str(conf)],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 0 and "ok" in r.stdout, r.stdout + r.stderr
    unit = (prefix / "lib" / "systemd" / "system" / "promptgate.service").read_text()
    assert "@PREFIX@" not in unit and "@SYSCONFDIR@" not in unit
    assert "ExecStart=%s/bin/promptgate -c %s" % (prefix, conf) in unit
    for opt in ("NoNewPrivileges=yes", "ProtectSystem=strict", "User=promptgate",
                "ExecReload=/bin/kill -HUP $MAINPID", "KillSignal=SIGTERM"):
        assert opt in unit, opt
    rot = (prefix / "etc" / "logrotate.d" / "promptgate").read_text()
    assert "SIGUSR1" in rot
    assert (prefix / "share" / "doc" / "promptgate" / "README.md").is_file()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_unit_verifies(tmp_path):
    prefix = tmp_path / "opt"
    make_install(prefix)
    unit = prefix / "lib" / "systemd" / "system" / "promptgate.service"
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "promptgate.service" not in r.stderr, r.stderr  # no warnings about it


def test_reinstall_keeps_the_operators_config(tmp_path):
    prefix = tmp_path / "opt"
    make_install(prefix)
    conf = prefix / "etc" / "promptgate" / "promptgate.json"
    conf.write_text('{"listen": "127.0.0.1:9999", "backends": []}\n')
    make_install(prefix)
    assert "9999" in conf.read_text()
    # the pristine example is still there to compare with
    assert "8080" in (prefix / "share" / "promptgate" / "promptgate.json").read_text()
