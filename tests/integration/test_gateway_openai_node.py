"""The official OpenAI client library against promptgate, unchanged (issue 2,
"The bar"): the Node library `openai` (the Python one cannot be installed
here) runs tests/integration/openai-node/check.mjs against a gateway in
front of mockllm.  The script prints one line per check; a failure shows
all of them."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers import DEFAULT_MODELS

HERE = Path(__file__).resolve().parent / "openai-node"


# upstream_host: an autouse fixture, imported so that every test here runs
# against both upstream transports (own client and libcurl)
from helpers import start_mock, upstream, upstream_host, upstream_hostname  # noqa: E402,F401


def ensure_node_modules():
    node = shutil.which("node")
    npm = shutil.which("npm")
    assert node and npm, "node and npm are needed for the OpenAI client check (apt-get install nodejs npm)"
    if not (HERE / "node_modules" / "openai" / "package.json").exists():
        r = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=HERE,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, "npm ci failed in %s:\n%s\n%s" % (HERE, r.stdout, r.stderr)
    return node


def test_openai_node_client(mockllm, gateway):
    node = ensure_node_modules()
    mock = start_mock(mockllm)
    key = "sk-backend-for-node-check"
    gw = gateway({"limits": {"max_body_bytes": 1048576, "header_timeout_ms": 5000,
                             "body_timeout_ms": 5000, "idle_timeout_ms": 30000,
                             "drain_timeout_ms": 2000},
                  "backends": [{"name": "mock", "url": upstream(mock), "models": list(DEFAULT_MODELS),
                                "api_key": "env:PG_TEST_NODE_KEY", "timeout_ms": 10000}],
                  "access_log": "stderr"},
                 env={"PG_TEST_NODE_KEY": key})
    env = dict(os.environ)
    env.pop("OPENAI_API_KEY", None)
    env.pop("OPENAI_BASE_URL", None)
    r = subprocess.run([node, "check.mjs", "--base", gw.url + "/v1", "--model", "qwen2.5-7b",
                        "--embed-model", "text-embedding-3-small", "--mock", mock.url,
                        "--backend-key", key],
                       cwd=HERE, capture_output=True, text=True, timeout=120, env=env)
    out = r.stdout + r.stderr
    assert r.returncode == 0, "OpenAI Node client checks failed:\n" + out
    assert "0 failed" in r.stdout, out
    # the gateway is still healthy after the aborted stream
    assert gw.alive()
