"""Provider adapter "azure" (issue 3, point 5): deployment URLs,
api-version and the api-key header, against a small fake Azure OpenAI
server (stdlib), over both transports; config problems named."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from helpers import chat, http as request

SECRET = "azure-secret-key-123"


class FakeAzure:
    """Answers any POST with a chat completion naming the path it got;
    records (path, headers, body)."""

    def __init__(self):
        seen = self.seen = []

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                n = int(self.headers.get("content-length", "0"))
                body = json.loads(self.rfile.read(n) or b"{}")
                seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                out = json.dumps({"id": "chatcmpl-az", "object": "chat.completion",
                                  "created": 0, "model": "gpt-4o-mini",
                                  "choices": [{"index": 0, "finish_reason": "stop",
                                               "message": {"role": "assistant",
                                                           "content": "path " + self.path}}],
                                  "usage": {"prompt_tokens": 3, "completion_tokens": 2,
                                            "total_tokens": 5}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *a):
                pass

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.srv.server_address[1]
        self.thread = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


@pytest.fixture
def azure():
    a = FakeAzure()
    yield a
    a.close()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"], ids=["native", "curl"])
def test_azure_deployment_url_and_api_key(azure, gateway, host):
    cfg = {"backends": [{"name": "az", "provider": "azure",
                         "url": "http://%s:%d" % (host, azure.port),
                         "api_key": "env:PG_AZ_KEY", "api_version": "2024-06-01",
                         "models": ["gpt-4o-mini", "gpt-4o"],
                         "deployments": {"gpt-4o-mini": "mini-prod"}}],
           "access_log": "stderr"}
    gw = gateway(cfg, env={"PG_AZ_KEY": SECRET})
    r = request("POST", gw.url + "/v1/chat/completions", body=chat(model="gpt-4o-mini"),
                headers={"Authorization": "Bearer client-key"})
    assert r.status == 200, r
    assert r.headers["x-promptgate-backend"] == "az"
    path, headers, body = azure.seen[-1]
    assert path == "/openai/deployments/mini-prod/chat/completions?api-version=2024-06-01"
    assert headers["api-key"] == SECRET
    assert "authorization" not in headers  # neither the client's nor a bearer
    assert body["messages"] == chat()["messages"]
    # a model without a mapping is its own deployment
    r = request("POST", gw.url + "/v1/chat/completions", body=chat(model="gpt-4o"))
    assert r.status == 200
    assert azure.seen[-1][0] == "/openai/deployments/gpt-4o/chat/completions?api-version=2024-06-01"
    assert SECRET not in gw.stderr_text()


@pytest.mark.parametrize("backend, problem", [
    ({"provider": "azure"}, "backends[0].api_version: azure needs its api-version"),
    ({"provider": "azure", "api_version": "2024-06-01", "deployments": {"nope": "x"}},
     "backends[0].deployments.nope: not one of this backend's models"),
    ({"provider": "azure", "api_version": "2024-06-01", "deployments": {"m": "a b"}},
     "backends[0].deployments.m: must be 1-64 characters"),
    ({"api_version": "2024-06-01"}, "are for \"provider\": \"azure\" only"),
    ({"anthropic_version": "2023-06-01"}, "are for \"provider\": \"anthropic\" only"),
    ({"provider": "bedrock"}, "backends[0].provider: must be \"openai\""),
])
def test_provider_config_problems(gateway_check, backend, problem):
    b = {"name": "a", "url": "http://127.0.0.1:9/v1", "models": ["m"]}
    b.update(backend)
    rc, out, err = gateway_check({"backends": [b]})
    assert rc == 1, (out, err)
    assert problem in err, err


def test_azure_url_needs_no_v1(gateway_check):
    rc, out, err = gateway_check({"backends": [{
        "name": "az", "provider": "azure", "url": "https://res.openai.azure.com",
        "api_version": "2024-06-01", "models": ["gpt-4o-mini"]}]})
    assert rc == 0, err
