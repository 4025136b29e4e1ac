"""pytest fixtures for the promptgate integration tests.

Each fixture is a factory: call it to start a process on a free port on
127.0.0.1.  Everything a factory started is stopped at teardown, even when
the test fails.  Each process writes its stderr to a file under tmp_path;
when a test fails, those files are attached to the failure report.

    mockllm         start(*args) -> Mock          (bin/mockllm)
    gateway         start(config, env=None, wait=True) -> Gateway
    gateway_check   check(config) -> (returncode, stdout, stderr)
    redis_server    start() -> Redis
    mock_gateway    (mock, gw): one mockllm and a gateway with one backend
                    "mock" serving the three default models

Exit checks: at teardown a process still running gets SIGTERM and must exit
0 within 10 s (so `make asan` catches leaks: LeakSanitizer makes the exit
code non-zero); a process that already died on its own is checked for a
crash signal or a sanitizer report.  A test that kills a process on
purpose sets `obj.check_exit = False` (or calls obj.stop(), whose return
code is then the test's business).
"""

import json
import os
import signal
import subprocess
import time

import pytest

from helpers import BIN, DEFAULT_MODELS, free_port, http, wait_until

START_TIMEOUT = float(os.environ.get("PROMPTGATE_TEST_START_TIMEOUT", "15"))
STOP_TIMEOUT = 10
LOG_TAIL = 20000
CRASH_SIGNALS = {-signal.SIGSEGV, -signal.SIGABRT, -signal.SIGBUS,
                 -signal.SIGFPE, -signal.SIGILL}
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                   "runtime error:", "ERROR: UndefinedBehaviorSanitizer",
                   "WARNING: ThreadSanitizer")


# ---------------------------------------------------------------- reporting

@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for proc in getattr(item, "_pg_procs", []):
            try:
                text = proc.stderr_tail()
            except OSError as e:
                text = "(cannot read: %s)" % e
            report.sections.append(("%s stderr (%s)" % (proc.name, proc.stderr_path), text))


def _register(request, proc):
    request.node.__dict__.setdefault("_pg_procs", []).append(proc)


# ---------------------------------------------------------------- processes

class _Proc:
    """A child process with its stderr in a file.  Base of Mock, Gateway and
    Redis."""

    name = "process"

    def __init__(self, argv, stderr_path, env=None, merge_stdout=False):
        self.argv = [str(a) for a in argv]
        self.stderr_path = stderr_path
        self.check_exit = True
        self.stopped_by_test = False
        self._err = open(stderr_path, "wb")
        full_env = dict(os.environ)
        if env:
            full_env.update({k: str(v) for k, v in env.items()})
        try:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                         stdout=self._err if merge_stdout else subprocess.DEVNULL,
                                         stderr=self._err,
                                         env=full_env)
        except BaseException:
            self._close_files()
            raise

    def _close_files(self):
        self._err.close()

    def stderr_text(self):
        """All stderr so far, decoded."""
        with open(self.stderr_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stderr_tail(self):
        text = self.stderr_text()
        if len(text) > LOG_TAIL:
            text = "[...]\n" + text[-LOG_TAIL:]
        return text

    def alive(self):
        return self.proc.poll() is None

    def send_signal(self, sig):
        """Send sig if the process is still running."""
        if self.alive():
            self.proc.send_signal(sig)

    def stop(self, sig=signal.SIGTERM, timeout=STOP_TIMEOUT):
        """Send sig and wait for the exit; SIGKILL after timeout seconds.
        Returns the return code (negative: killed by that signal)."""
        self.stopped_by_test = True
        return self._stop(sig, timeout)

    def _stop(self, sig, timeout):
        if self.alive():
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self._close_files()
                raise AssertionError("%s did not exit within %ss of signal %d"
                                     % (self.name, timeout, sig))
        self._close_files()
        return self.proc.returncode

    def _teardown(self):
        """Stop the process; return a problem description or None."""
        was_alive = self.alive()
        try:
            rc = self._stop(signal.SIGTERM, STOP_TIMEOUT)
        except AssertionError as e:
            return str(e)
        if not self.check_exit or self.stopped_by_test:
            return None
        text = self.stderr_text()
        for mark in SANITIZER_MARKS:
            if mark in text:
                return "%s stderr has a sanitizer report (%r)" % (self.name, mark)
        if was_alive and rc != 0:
            return "%s exited %d on SIGTERM (expected 0)" % (self.name, rc)
        if not was_alive and rc in CRASH_SIGNALS:
            return "%s died during the test with signal %d" % (self.name, -rc)
        return None

    def _wait_ready(self, ready, what):
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if not self.alive():
                raise AssertionError("%s exited %s before %s; stderr:\n%s"
                                     % (self.name, self.proc.returncode, what,
                                        self.stderr_tail()))
            try:
                if ready():
                    return
            except OSError:
                pass
            time.sleep(0.02)
        raise AssertionError("%s not %s after %ss; stderr:\n%s"
                             % (self.name, what, START_TIMEOUT, self.stderr_tail()))


class _Factory:
    """Keeps what a fixture started and stops it all at teardown."""

    def __init__(self, request, tmp_path):
        self.request = request
        self.tmp_path = tmp_path
        self.started = []
        self.n = 0

    def path(self, stem, suffix):
        self.n += 1
        return self.tmp_path / ("%s-%d%s" % (stem, self.n, suffix))

    def add(self, proc):
        self.started.append(proc)
        _register(self.request, proc)
        return proc

    def close(self):
        problems = []
        for p in reversed(self.started):
            problem = p._teardown()
            if problem:
                problems.append(problem)
        if problems:
            pytest.fail("; ".join(problems), pytrace=False)


# ---------------------------------------------------------------- mockllm

class Mock(_Proc):
    """A running bin/mockllm.  .port .url ("http://127.0.0.1:P") .base
    (url + "/v1") .proc"""

    name = "mockllm"

    def __init__(self, port, argv, stderr_path, env=None, host="127.0.0.1"):
        self.port = port
        self.url = "http://%s:%d" % (host, port)
        self.base = self.url + "/v1"
        super().__init__(argv, stderr_path, env)

    def requests(self):
        """The recorded requests (last 256), oldest first."""
        return self._get("/_mock/requests")["requests"]

    def count(self):
        """Total API requests served (the /_mock/ endpoints are not
        counted)."""
        return self._get("/_mock/requests")["count"]

    def reset(self):
        """Forget the recorded requests and zero the count."""
        r = http("DELETE", self.url + "/_mock/requests")
        assert r.status == 200, r

    def set_fault(self, spec, count=None):
        """Set the runtime default fault (SPEC as for --fault); spec ""/None
        clears it; count=K applies it to the next K API requests only."""
        spec = spec or ""
        if count is not None:
            spec = (spec + "," if spec else "") + "count=%d" % count
        r = http("POST", self.url + "/_mock/fault", body=spec)
        assert r.status == 200, r
        return r.json()

    def stats(self):
        """{"count", "open_connections", "active_streams"}.  open_connections
        includes the connection of this very request, and any keep-alive
        connection a client (the gateway's pool) holds; active_streams counts
        SSE answers in progress (a client closing ends its stream at once)."""
        return self._get("/_mock/stats")

    def _get(self, path):
        r = http("GET", self.url + path)
        assert r.status == 200, r
        return r.json()


@pytest.fixture
def mockllm(request, tmp_path):
    """Factory: start(*args) -> Mock.  args are extra mockllm options;
    --listen 127.0.0.1:<free port> is added unless args hold --listen."""
    fac = _Factory(request, tmp_path)

    def start(*args, env=None):
        args = [str(a) for a in args]
        exe = BIN / "mockllm"
        for attempt in range(5):
            host = "127.0.0.1"
            if "--listen" in args:
                host, _, port = args[args.index("--listen") + 1].rpartition(":")
                port = int(port)
                argv = [exe] + args
            else:
                port = free_port()
                argv = [exe, "--listen", "127.0.0.1:%d" % port] + args
            m = fac.add(Mock(port, argv, fac.path("mockllm", ".stderr"), env, host))
            try:
                m._wait_ready(lambda: http("GET", m.url + "/_mock/stats", timeout=2).status == 200,
                              "answering GET /_mock/stats")
                return m
            except AssertionError:
                # a free port can be taken between free_port() and bind: retry
                if "--listen" in args or m.alive() or "in use" not in m.stderr_text():
                    raise
                m.check_exit = False
        raise AssertionError("mockllm: no free port after 5 attempts")

    yield start
    fac.close()


# ---------------------------------------------------------------- gateway

class Gateway(_Proc):
    """A running bin/promptgate.  .port .url .config_path .proc"""

    name = "promptgate"

    def __init__(self, port, config_path, argv, stderr_path, env=None):
        self.port = port
        self.url = "http://127.0.0.1:%d" % port
        self.config_path = config_path
        super().__init__(argv, stderr_path, env)

    def access_log(self):
        """The JSON lines of stderr that carry a "request_id" key, parsed."""
        out = []
        for line in self.stderr_text().splitlines():
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict) and "request_id" in obj:
                out.append(obj)
        return out

    def reload(self, new_config):
        """Rewrite the config file (keeping this gateway's listen unless
        new_config sets one) and send SIGHUP.  Returns once the gateway has
        written something to stderr about it, or after 2 s; tests assert on
        the behaviour that should follow (wait_until)."""
        cfg = dict(new_config)
        cfg.setdefault("listen", "127.0.0.1:%d" % self.port)
        _write_json(self.config_path, cfg)
        before = len(self.stderr_text())
        self.proc.send_signal(signal.SIGHUP)
        try:
            wait_until(lambda: len(self.stderr_text()) > before, timeout=2)
        except AssertionError:
            pass


def _write_json(path, obj):
    tmp = str(path) + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)


def _port_of(listen):
    return int(str(listen).rsplit(":", 1)[1])


@pytest.fixture
def gateway(request, tmp_path):
    """Factory: start(config, env=None, wait=True) -> Gateway.  Writes config
    (a dict) as JSON under tmp_path, with listen 127.0.0.1:<free port>
    unless config sets it, runs `promptgate -c FILE` and, if wait, waits for
    GET /healthz 200.  A missing bin/promptgate fails the test."""
    fac = _Factory(request, tmp_path)

    def start(config, env=None, wait=True):
        exe = BIN / "promptgate"
        assert exe.exists(), "%s does not exist: run make" % exe
        for attempt in range(5):
            cfg = dict(config)
            given = "listen" in cfg
            if not given:
                cfg["listen"] = "127.0.0.1:%d" % free_port()
            path = fac.path("promptgate", ".json")
            _write_json(path, cfg)
            port = _port_of(cfg["listen"])
            gw = fac.add(Gateway(port, path, [exe, "-c", path],
                                 fac.path("promptgate", ".stderr"), env))
            if not wait:
                return gw
            try:
                gw._wait_ready(lambda: http("GET", gw.url + "/healthz", timeout=2).status == 200,
                               "answering GET /healthz 200")
                return gw
            except AssertionError:
                if given or gw.alive() or "in use" not in gw.stderr_text():
                    raise
                gw.check_exit = False
        raise AssertionError("promptgate: no free port after 5 attempts")

    yield start
    fac.close()


@pytest.fixture
def gateway_check(tmp_path):
    """check(config) -> (returncode, stdout, stderr) of `promptgate -t -c FILE`.
    config is a dict (written as JSON) or a str/bytes (written verbatim)."""
    n = [0]

    def check(config, env=None, timeout=20):
        exe = BIN / "promptgate"
        assert exe.exists(), "%s does not exist: run make" % exe
        n[0] += 1
        path = tmp_path / ("check-%d.json" % n[0])
        if isinstance(config, (dict, list)):
            _write_json(path, config)
        else:
            path.write_bytes(config.encode() if isinstance(config, str) else config)
        full_env = dict(os.environ)
        if env:
            full_env.update({k: str(v) for k, v in env.items()})
        r = subprocess.run([str(exe), "-t", "-c", str(path)], capture_output=True,
                           env=full_env, timeout=timeout)
        return r.returncode, r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace")

    return check


# ---------------------------------------------------------------- redis

class Redis(_Proc):
    """A running redis-server.  .port .url ("redis://127.0.0.1:P/0")"""

    name = "redis-server"

    def __init__(self, port, argv, log_path):
        self.port = port
        self.url = "redis://127.0.0.1:%d/0" % port
        super().__init__(argv, log_path, merge_stdout=True)

    def cli(self, *args):
        """Run redis-cli against this server; returns its stdout, stripped.
        Raises AssertionError if redis-cli fails."""
        r = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(self.port)]
                           + [str(a) for a in args], capture_output=True, timeout=10)
        assert r.returncode == 0, "redis-cli %s: %s" % (args, r.stderr.decode())
        return r.stdout.decode("utf-8", "replace").strip()


    def _pong(self):
        r = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), "ping"],
                           capture_output=True, timeout=10)
        return r.returncode == 0 and r.stdout.strip() == b"PONG"


@pytest.fixture
def redis_server(request, tmp_path):
    """Factory: start() -> Redis, a throw-away redis-server on a free port
    (no persistence, working directory under tmp_path)."""
    fac = _Factory(request, tmp_path)

    def start():
        for attempt in range(5):
            port = free_port()
            workdir = fac.path("redis", ".d")
            workdir.mkdir()
            argv = ["redis-server", "--port", port, "--bind", "127.0.0.1",
                    "--save", "", "--appendonly", "no", "--dir", workdir]
            r = fac.add(Redis(port, argv, fac.path("redis", ".log")))
            try:
                r._wait_ready(r._pong, "answering PING")
                return r
            except AssertionError:
                if r.alive():
                    raise
                r.check_exit = False
        raise AssertionError("redis-server: no free port after 5 attempts")

    yield start
    fac.close()


# ---------------------------------------------------------------- both

def mock_backend_config(mock, models=None, **extra):
    """The gateway config for one backend "mock" pointing at mock."""
    backend = {"name": "mock", "url": mock.base, "models": list(models or DEFAULT_MODELS)}
    backend.update(extra)
    return {"backends": [backend], "access_log": "stderr"}


@pytest.fixture
def mock_gateway(mockllm, gateway):
    """(mock, gw): a default mockllm and a gateway in front of it."""
    mock = mockllm()
    gw = gateway(mock_backend_config(mock))
    return mock, gw
