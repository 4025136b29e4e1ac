"""Upstream TLS (issue 9, point 4): a backend over https is verified by
default: its certificate must be signed by a CA the gateway trusts (the
system's, or the backend's ca_file) and name the host; a certificate that
fails is an error answer, never a silent downgrade. The backend here is a
small Python HTTPS server with a certificate from a throwaway CA made by
the openssl command line, on 127.0.0.1."""

import json
import ssl
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from helpers import chat, http

CHAT = "/v1/chat/completions"
ANSWER = {"id": "chatcmpl-tls", "object": "chat.completion", "created": 0, "model": "m",
          "choices": [{"index": 0, "finish_reason": "stop",
                       "message": {"role": "assistant", "content": "over tls"}}],
          "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}}


def openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True, capture_output=True,
                   timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, a server certificate it signs for IP 127.0.0.1, and a second
    CA that signed nothing here."""
    d = tmp_path_factory.mktemp("pki")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
            "ca.pem", "-days", "2", "-subj", "/CN=promptgate test CA", cwd=d)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "other.key", "-out",
            "other.pem", "-days", "2", "-subj", "/CN=another CA", cwd=d)
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "srv.key", "-out", "srv.csr",
            "-subj", "/CN=backend", cwd=d)
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "srv.pem", "-days", "2", "-extfile", "ext.cnf", cwd=d)
    return d


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        n = int(self.headers.get("content-length", 0))
        self.server.seen.append((self.path, self.rfile.read(n)))
        body = json.dumps(ANSWER).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


@pytest.fixture
def https_backend(pki):
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.seen = []
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(pki / "srv.pem"), str(pki / "srv.key"))
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def cfg(srv, **backend):
    b = {"name": "tls", "url": "https://127.0.0.1:%d/v1" % srv.server_address[1],
         "models": ["qwen2.5-7b"], "timeout_ms": 5000}
    b.update(backend)
    return {"backends": [b], "access_log": "stderr"}


def test_backend_signed_by_its_ca_file(gateway, https_backend, pki):
    gw = gateway(cfg(https_backend, ca_file=str(pki / "ca.pem")))
    r = http("POST", gw.url + CHAT, body=chat())
    assert r.status == 200, r
    assert r.json()["choices"][0]["message"]["content"] == "over tls"
    assert https_backend.seen and https_backend.seen[0][0] == "/v1/chat/completions"


@pytest.mark.parametrize("ca", [None, "other.pem"])
def test_unverified_certificate_is_refused(gateway, https_backend, pki, ca):
    """Without the CA (the system's bundle does not know it), or with the
    wrong one: no request reaches the backend, the client gets an error."""
    extra = {"ca_file": str(pki / ca)} if ca else {}
    gw = gateway(cfg(https_backend, **extra))
    r = http("POST", gw.url + CHAT, body=chat())
    assert r.status in (502, 503), r
    assert https_backend.seen == []
    assert "certificate" in (r.json()["error"]["message"] + gw.stderr_text()).lower()


def test_ca_file_checked_by_t(gateway_check, tmp_path, pki):
    rc, _, err = gateway_check({"backends": [
        {"name": "a", "url": "https://127.0.0.1:1/v1", "models": ["m"],
         "ca_file": str(tmp_path / "missing.pem")},
        {"name": "b", "url": "http://127.0.0.1:1/v1", "models": ["m"],
         "ca_file": str(pki / "ca.pem")}]})
    assert rc == 1
    assert "backends[0].ca_file: cannot read" in err
    assert "backends[1].ca_file: only for an https:// url" in err
