"""Loopback helpers shared by the Python load scripts (contrib/bench/
ratelimit_bar.py, tests/soak/soak.py): a free port, and waiting for a
server to answer."""

import http.client
import socket
import time


def free_port():
    """A TCP port free on 127.0.0.1 at the time of the call."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_ok(port, path, timeout=10):
    """True once GET path on 127.0.0.1:port answers 200, False after
    timeout seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            c.request("GET", path)
            if c.getresponse().status == 200:
                return True
        except OSError:
            pass
        time.sleep(0.05)
    return False
