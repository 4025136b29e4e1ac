"""Provider adapter "anthropic" (issue 3, point 5): clients speak OpenAI's
chat completions, the backend Anthropic's Messages API (mockllm's POST
/v1/messages, which checks its input as strictly as the real API).  Both
ways of the translation (bodies as the mock received them, headers, the
answer, streams), finish reasons, usage, error mapping, a 529 retried on an
OpenAI backend of the same pool, tool calls both ways (streamed too),
refused fields and endpoints, tpm settlement, the cache and the official
OpenAI Node client; every test runs over both upstream transports."""

import json
import os
import subprocess
from pathlib import Path

import pytest

import cache_common as cc
from helpers import (chat, completion, embedding, free_port, http, sse_events, sse_json,
                     wait_until)
# upstream_host: autouse, so that every test here runs on both transports
from helpers import start_mock, upstream, upstream_host, upstream_hostname  # noqa: F401

KEY = "sk-ant-mock-key-0123"
CLIENT_KEY = "sk-client-key-never-upstream"
MODEL = "claude-x"
CHAT = "/v1/chat/completions"
NODE_DIR = Path(__file__).resolve().parent / "openai-node"


def anth_backend(mock, name="claude", models=(MODEL,), **extra):
    b = {"name": name, "provider": "anthropic", "url": upstream(mock),
         "api_key": "env:PG_TEST_ANTH_KEY", "models": list(models), "timeout_ms": 10000}
    b.update(extra)
    return b


def start_anthropic(mockllm, *args):
    return start_mock(mockllm, "--models", MODEL + ",qwen2.5-7b", "--api-key", KEY,
                      "--tokens", "5", *args)


@pytest.fixture
def anth(mockllm, gateway):
    """(mock, gw): a mockllm speaking Messages with --api-key, and a gateway
    whose only backend is it, provider anthropic."""
    mock = start_anthropic(mockllm)
    gw = gateway({"backends": [anth_backend(mock)], "access_log": "stderr"},
                 env={"PG_TEST_ANTH_KEY": KEY})
    return mock, gw


def post(gw, body, path=CHAT, headers=None):
    h = {"Authorization": "Bearer " + CLIENT_KEY}
    h.update(headers or {})
    return http("POST", gw.url + path, body=body, headers=h)


def last_upstream(mock):
    reqs = mock.requests()
    assert reqs, "the mock received nothing"
    return reqs[-1]


def prompt_tokens(*texts):
    return max(1, sum(len(t.encode()) for t in texts) // 4)


def assert_openai_error(r, status, code, needle=None):
    assert r.status == status, r
    err = r.json()["error"]
    assert set(err) >= {"message", "type", "code"}, err
    assert err["code"] == code, err
    if needle:
        assert needle in err["message"], err


# ------------------------------------------------------------ request/answer

def test_nonstream_translation_both_ways(anth):
    mock, gw = anth
    msgs = [{"role": "system", "content": "You write copy."},
            {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
            {"role": "user", "content": "Name a shoe."},
            {"role": "assistant", "content": "Which kind?"},
            {"role": "user", "content": [{"type": "text", "text": "Running."}]}]
    r = post(gw, chat(model=MODEL, messages=msgs, stop="tok9", temperature=0.5,
                      top_p=0.9, user="u-7", seed=1),
             headers={"anthropic-version": "1999-01-01", "anthropic-beta": "some-beta",
                      "x-api-key": "sk-client-x"})
    assert r.status == 200, r
    assert r.headers["x-promptgate-backend"] == "claude"
    up = last_upstream(mock)
    assert up["path"] == "/v1/messages" and up["method"] == "POST"
    assert up["body"] == {
        "model": MODEL, "max_tokens": 4096,
        "system": "You write copy.\n\nBe brief.",
        "messages": [{"role": "user", "content": "Name a shoe."},
                     {"role": "assistant", "content": "Which kind?"},
                     {"role": "user", "content": [{"type": "text", "text": "Running."}]}],
        "stop_sequences": ["tok9"], "temperature": 0.5, "top_p": 0.9,
        "metadata": {"user_id": "u-7"}}, up["body"]
    h = up["headers"]
    assert h["x-api-key"] == KEY
    # the version is the config's (the client's is dropped), other
    # anthropic-* headers pass, the client's keys never do
    assert h["anthropic-version"] == "2023-06-01"
    assert h["anthropic-beta"] == "some-beta"
    assert h["content-type"] == "application/json"
    assert "sk-client-x" not in json.dumps(h)
    assert "authorization" not in h, "no bearer header may reach Anthropic"
    assert CLIENT_KEY not in json.dumps(h)
    doc = r.json()
    assert doc["object"] == "chat.completion" and doc["model"] == MODEL
    assert doc["id"].startswith("msg_mock_")
    assert isinstance(doc["created"], int) and doc["created"] > 1600000000
    assert doc["choices"] == [{"index": 0, "logprobs": None, "finish_reason": "stop",
                               "message": {"role": "assistant",
                                           "content": "tok0 tok1 tok2 tok3 tok4"}}]
    p = prompt_tokens("You write copy.\n\nBe brief.", "Name a shoe.", "Which kind?", "Running.")
    assert doc["usage"] == {"prompt_tokens": p, "completion_tokens": 5, "total_tokens": p + 5}
    line = [e for e in gw.access_log() if e["path"] == CHAT][-1]
    assert (line["status"], line["backend"], line["total_tokens"]) == (200, "claude", p + 5)
    assert KEY not in gw.stderr_text()


def test_max_tokens_and_config_default(mockllm, gateway):
    mock = start_anthropic(mockllm)
    gw = gateway({"backends": [anth_backend(mock, default_max_tokens=77,
                                            anthropic_version="2024-02-02")]},
                 env={"PG_TEST_ANTH_KEY": KEY})
    assert post(gw, chat(model=MODEL)).status == 200
    up = last_upstream(mock)
    assert up["body"]["max_tokens"] == 77
    assert up["headers"]["anthropic-version"] == "2024-02-02"
    assert post(gw, chat(model=MODEL, max_tokens=9)).status == 200
    assert last_upstream(mock)["body"]["max_tokens"] == 9
    # max_completion_tokens, the newer name, wins
    assert post(gw, chat(model=MODEL, max_tokens=9, max_completion_tokens=3)).status == 200
    assert last_upstream(mock)["body"]["max_tokens"] == 3


@pytest.mark.parametrize("extra, finish, content", [
    ({}, "stop", "tok0 tok1 tok2 tok3 tok4"),                     # end_turn
    ({"max_tokens": 2}, "length", "tok0 tok1"),                   # max_tokens
    ({"stop": ["tok3", "zzz"]}, "stop", "tok0 tok1 tok2"),        # stop_sequence
])
def test_finish_reason_mapping(anth, extra, finish, content):
    mock, gw = anth
    r = post(gw, chat(model=MODEL, **extra))
    assert r.status == 200, r
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == finish
    assert choice["message"]["content"] == content
    assert r.json()["usage"]["completion_tokens"] == len(content.split())
    # and the same through a stream
    r = post(gw, chat(model=MODEL, stream=True, **extra))
    chunks = sse_json(r.body)
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == finish
    assert cc.content_of_stream(r.body) == content


def test_stream_translation(anth):
    mock, gw = anth
    body = chat(model=MODEL, stream=True, stream_options={"include_usage": True},
                messages=[{"role": "system", "content": "sys"},
                          {"role": "user", "content": "stream it"}])
    r = post(gw, body)
    assert r.status == 200, r
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["x-promptgate-backend"] == "claude"
    assert r.headers["x-promptgate-attempts"] == "1"
    up = last_upstream(mock)
    assert up["body"] == {"model": MODEL, "max_tokens": 4096, "system": "sys",
                          "messages": [{"role": "user", "content": "stream it"}],
                          "stream": True}, up["body"]
    events = sse_events(r.body)
    assert events[-1] == "[DONE]" and events[-1].event is None
    assert all(e.event is None for e in events), "Anthropic's event names must not leak"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["model"] == MODEL
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [c["choices"][0]["delta"].get("content") for c in chunks[1:6]] == \
        ["tok0", " tok1", " tok2", " tok3", " tok4"]
    assert chunks[6]["choices"][0]["finish_reason"] == "stop"
    p = prompt_tokens("sys", "stream it")
    assert chunks[7]["choices"] == [] and chunks[7]["usage"] == {
        "prompt_tokens": p, "completion_tokens": 5, "total_tokens": p + 5}
    assert len(chunks) == 8
    line = [e for e in gw.access_log() if e["path"] == CHAT][-1]
    assert line["stream"] and line["total_tokens"] == p + 5
    # without include_usage there is no usage chunk
    r = post(gw, chat(model=MODEL, stream=True))
    assert sse_events(r.body)[-1] == "[DONE]"
    assert not any("usage" in c for c in sse_json(r.body))


def test_mid_stream_error_event_no_retry(anth):
    mock, gw = anth
    r = post(gw, chat(model=MODEL, stream=True), headers={"x-mock-fault": "error-after-chunks=4"})
    assert r.status == 200
    events = sse_events(r.body)
    assert events[-1].event == "error" and "[DONE]" not in events
    err = json.loads(events[-1])["error"]
    assert err["code"] == "stream_interrupted"
    assert "overloaded_error" in err["message"], err
    # the text before the break went out, translated
    assert cc.content_of_stream("\n\n".join("data: " + e for e in events[:-1])) == "tok0"
    assert mock.count() == 1, "a stream that sent bytes is never retried"
    # an error event before message_start: nothing reached the client, so
    # the answer is the error itself (with another backend, a retry)
    r = post(gw, chat(model=MODEL, stream=True), headers={"x-mock-fault": "error-after-chunks=0"})
    assert_openai_error(r, 529, "overloaded_error", "stream failed before its first event")
    assert r.headers["x-promptgate-backend"] == "claude"
    assert mock.count() == 2
    # a stream cut without message_stop is an error too
    r = post(gw, chat(model=MODEL, stream=True), headers={"x-mock-fault": "close-after-chunks=5"})
    events = sse_events(r.body)
    assert events[-1].event == "error" and "[DONE]" not in events
    err = json.loads(events[-1])["error"]
    assert err["code"] == "stream_interrupted" and "stream ended early" in err["message"], err
    assert cc.content_of_stream("\n\n".join("data: " + e for e in events[:-1])) == "tok0 tok1"
    assert mock.count() == 3


# ------------------------------------------------------------------ errors

@pytest.mark.parametrize("status, code, typ", [
    (400, "invalid_request_error", "invalid_request_error"),
    (429, "rate_limit_error", "rate_limit_error"),
    (529, "overloaded_error", "server_error"),
    (500, "api_error", "server_error"),
])
def test_error_mapping(anth, status, code, typ):
    mock, gw = anth
    r = post(gw, chat(model=MODEL), headers={"x-mock-fault": "status=%d" % status})
    assert_openai_error(r, status, code, "mock fault: status %d" % status)
    assert r.json()["error"]["type"] == typ
    assert r.headers["x-promptgate-backend"] == "claude"


def test_wrong_key_is_401(mockllm, gateway):
    mock = start_anthropic(mockllm)
    gw = gateway({"backends": [anth_backend(mock)]}, env={"PG_TEST_ANTH_KEY": "sk-wrong"})
    r = post(gw, chat(model=MODEL))
    assert_openai_error(r, 401, "authentication_error", "invalid x-api-key")
    assert r.json()["error"]["type"] == "authentication_error"


def test_529_retried_on_openai_backend_of_the_pool(mockllm, gateway):
    """An anthropic backend overloaded before its first byte: the request
    goes to the OpenAI backend of the same pool (tier 1), which gets the
    client's own OpenAI body; the 529 counts as a failure."""
    a = start_anthropic(mockllm)
    o = start_mock(mockllm, "--models", MODEL)
    gw = gateway({"backends": [anth_backend(a, priority=0),
                               {"name": "oai", "url": upstream(o), "models": [MODEL],
                                "priority": 1, "timeout_ms": 10000}],
                  "admin_key": "env:PG_TEST_ADMIN", "access_log": "stderr"},
                 env={"PG_TEST_ANTH_KEY": KEY, "PG_TEST_ADMIN": "adm-1"})
    for stream, fault in ((False, "status=529"), (True, "status=529"),
                          (True, "error-after-chunks=0")):
        # error-after-chunks=0: a 200 stream whose first event is an
        # overloaded_error, as Anthropic sends them: still before any byte
        a.set_fault(fault, count=1)
        body = chat(model=MODEL, stream=stream)
        r = post(gw, body)
        assert r.status == 200, r
        assert r.headers["x-promptgate-backend"] == "oai"
        assert r.headers["x-promptgate-attempts"] == "2"
        assert last_upstream(a)["path"] == "/v1/messages"
        up = last_upstream(o)
        assert up["path"] == "/v1/chat/completions"
        assert up["body"]["messages"] == body["messages"] and up["body"]["model"] == MODEL
        if stream:
            assert sse_events(r.body)[-1] == "[DONE]"
        else:
            assert r.json()["choices"][0]["message"]["content"].startswith("tok0")
    assert (a.count(), o.count()) == (3, 3)
    st = http("GET", gw.url + "/admin/backends", headers={"Authorization": "Bearer adm-1"})
    by_name = {b["name"]: b for b in st.json()["backends"]}
    # each 529 is a failure of the anthropic backend (breaker, error rate)
    assert (by_name["claude"]["attempts"], by_name["claude"]["failures"]) == (3, 3), by_name
    assert by_name["oai"]["failures"] == 0
    # the anthropic backend answers again once the fault is spent
    r = post(gw, chat(model=MODEL))
    assert r.status == 200 and r.headers["x-promptgate-backend"] == "claude", r


# ---------------------------------------------------- refused fields, routes

@pytest.mark.parametrize("extra, needle", [
    ({"functions": [{"name": "f", "parameters": {}}]},
     "this backend's provider (anthropic) does not support 'functions' through promptgate yet"),
    ({"tools": [{"type": "custom", "custom": {"name": "f"}}]}, "tools of type 'custom'"),
    ({"n": 2}, "'n' other than 1"),
    ({"logprobs": True}, "'logprobs'"),
    ({"response_format": {"type": "json_object"}}, "'response_format'"),
])
def test_unsupported_field_is_400(anth, extra, needle):
    mock, gw = anth
    r = post(gw, chat(model=MODEL, **extra))
    assert_openai_error(r, 400, "unsupported_parameter", needle)
    assert mock.count() == 0, "a refused request must not reach the backend"
    # the backend is not blamed for the client's request
    assert post(gw, chat(model=MODEL)).status == 200


def test_unknown_fields_and_bad_tool_calls_are_400(anth):
    mock, gw = anth
    r = post(gw, chat(model=MODEL, frobnicate=True))
    assert_openai_error(r, 400, "unknown_parameter", "unknown field 'frobnicate'")
    r = post(gw, chat(model=MODEL, messages=[
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "1", "type": "function",
                         "function": {"name": "f", "arguments": "not json"}}]},
        {"role": "tool", "tool_call_id": "1", "content": "42"}], tools=TOOLS))
    assert_openai_error(r, 400, "invalid_value", "arguments: must be a JSON object")
    r = post(gw, chat(model=MODEL, tool_choice="required"))
    assert_openai_error(r, 400, "invalid_value", "has no 'tools'")
    assert mock.count() == 0


# ------------------------------------------------------------------- tools

TOOLS = [{"type": "function",
          "function": {"name": "get_weather", "description": "weather of a city",
                       "parameters": {"type": "object",
                                      "properties": {"query": {"type": "string"}},
                                      "required": ["query"]}}},
         {"type": "function", "function": {"name": "now"}}]
ANTH_TOOLS = [{"name": "get_weather", "description": "weather of a city",
               "input_schema": {"type": "object",
                                "properties": {"query": {"type": "string"}},
                                "required": ["query"]}},
              {"name": "now", "input_schema": {"type": "object"}}]


def test_tools_round_trip(anth):
    """tools out, tool_use back as tool_calls, the results sent back as
    tool_result blocks (the mock refuses results that answer no tool_use
    of the turn before)."""
    mock, gw = anth
    ask = [{"role": "user", "content": "Weather in Paris, and the time?"}]
    r = post(gw, chat(model=MODEL, messages=ask, tools=TOOLS))
    assert r.status == 200, r
    assert last_upstream(mock)["body"]["tools"] == ANTH_TOOLS
    assert "tool_choice" not in last_upstream(mock)["body"]  # auto: the default
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    msg = choice["message"]
    assert msg["content"] == "tok0"  # auto: the mock says a word first
    calls = msg["tool_calls"]
    assert [(c["type"], c["function"]["name"], json.loads(c["function"]["arguments"]))
            for c in calls] == [("function", "get_weather", {"query": "tok0"}),
                                ("function", "now", {"query": "tok1"})]
    # the conversation goes on with the results
    convo = ask + [msg] + [{"role": "tool", "tool_call_id": c["id"], "content": "result %d" % i}
                           for i, c in enumerate(calls)]
    r = post(gw, chat(model=MODEL, messages=convo, tools=TOOLS))
    assert r.status == 200, r
    assert r.json()["choices"][0]["message"] == {"role": "assistant",
                                                 "content": "tok0 tok1 tok2 tok3 tok4"}
    sent = last_upstream(mock)["body"]["messages"]
    assert sent[1] == {"role": "assistant", "content": [
        {"type": "text", "text": "tok0"},
        {"type": "tool_use", "id": calls[0]["id"], "name": "get_weather",
         "input": {"query": "tok0"}},
        {"type": "tool_use", "id": calls[1]["id"], "name": "now", "input": {"query": "tok1"}}]}
    assert sent[2] == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": calls[0]["id"], "content": "result 0"},
        {"type": "tool_result", "tool_use_id": calls[1]["id"], "content": "result 1"}]}
    assert len(sent) == 3


def test_tools_stream_and_choice(anth):
    mock, gw = anth
    r = post(gw, chat(model=MODEL, stream=True, tools=TOOLS, tool_choice="required",
                      parallel_tool_calls=False))
    assert r.status == 200, r
    assert last_upstream(mock)["body"]["tool_choice"] == {"type": "any",
                                                          "disable_parallel_tool_use": True}
    chunks = sse_json(r.body)
    assert sse_events(r.body)[-1] == "[DONE]"
    calls = {}
    for c in chunks:
        for tc in (c["choices"][0]["delta"].get("tool_calls") or []) if c["choices"] else []:
            slot = calls.setdefault(tc["index"], {"id": None, "name": None, "args": ""})
            if "id" in tc:
                slot["id"], slot["name"] = tc["id"], tc["function"]["name"]
            slot["args"] += tc["function"].get("arguments", "")
    assert list(calls) == [0], calls  # parallel use off: one call
    assert calls[0]["name"] == "get_weather" and calls[0]["id"].startswith("toolu_mock_")
    assert json.loads(calls[0]["args"]) == {"query": "tok0"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert cc.content_of_stream(r.body) == ""  # required: no text first
    # a named tool
    r = post(gw, chat(model=MODEL, tools=TOOLS,
                      tool_choice={"type": "function", "function": {"name": "now"}}))
    assert last_upstream(mock)["body"]["tool_choice"] == {"type": "tool", "name": "now"}
    msg = r.json()["choices"][0]["message"]
    assert msg["content"] is None and [c["function"]["name"] for c in msg["tool_calls"]] == ["now"]
    # none: a plain answer
    r = post(gw, chat(model=MODEL, tools=TOOLS, tool_choice="none"))
    assert last_upstream(mock)["body"]["tool_choice"] == {"type": "none"}
    assert r.json()["choices"][0]["message"] == {"role": "assistant",
                                                 "content": "tok0 tok1 tok2 tok3 tok4"}


@pytest.mark.parametrize("path, body", [
    ("/v1/embeddings", embedding(model=MODEL)),
    ("/v1/completions", completion(model=MODEL)),
])
def test_other_endpoints_are_400(anth, path, body):
    mock, gw = anth
    r = post(gw, body, path=path)
    assert_openai_error(r, 400, "unsupported_endpoint",
                        "only /v1/chat/completions, not %s" % path)
    assert mock.count() == 0


def test_config_checks(gateway_check):
    b = {"name": "c", "provider": "anthropic", "url": "https://api.anthropic.com/v1",
         "models": [MODEL]}
    rc, out, err = gateway_check({"backends": [b]})
    assert rc == 0, err
    rc, out, err = gateway_check({"backends": [dict(b, url="https://api.anthropic.com",
                                                    default_max_tokens=0,
                                                    anthropic_version="x y")]})
    assert rc == 1
    assert "backends[0].url: must be the OpenAI-compatible base URL ending in /v1" in err
    assert "backends[0].default_max_tokens" in err
    assert "backends[0].anthropic_version: must be the anthropic-version header's value" in err


# ------------------------------------------------------------- limits, cache

def key(name, secret, **limits):
    k = {"name": name, "key_sha256": cc.sha(secret), "models": ["*"]}
    k.update(limits)
    return k


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_tpm_settled_from_anthropic_usage(mockllm, gateway, stream):
    """tpm 60000 with a second of tolerance: each request reserves ~1M
    tokens (max_tokens) and uses ~10; only settlement from the translated
    usage lets the next ones in. A stream is settled from the usage chunk
    the gateway asked for and stripped."""
    mock = start_anthropic(mockllm)
    gw = gateway({"backends": [anth_backend(mock)], "access_log": "stderr",
                  "keys": [key("alpha", "pk-alpha-1", tpm=60000)]},
                 env={"PG_TEST_ANTH_KEY": KEY})
    body = chat(model=MODEL, stream=stream, max_tokens=1000000)
    for i in range(5):
        r = http("POST", gw.url + CHAT, body=body, headers={"x-api-key": "pk-alpha-1"})
        assert r.status == 200, "request %d refused: not settled: %r" % (i, r)
        if stream:
            assert sse_events(r.body)[-1] == "[DONE]"
            assert not any("usage" in c for c in sse_json(r.body)), \
                "the usage chunk the client did not ask for reached it"
    up = last_upstream(mock)
    assert "x-api-key" in up["headers"] and up["headers"]["x-api-key"] == KEY, \
        "the client's key must not reach upstream"
    lines = [e for e in gw.access_log() if e["path"] == CHAT]
    assert len(lines) == 5 and all(e["total_tokens"] == prompt_tokens(
        "Say hello in one word.") + 5 for e in lines), lines


@pytest.fixture
def cache_setup(mockllm, gateway):
    """cache_common's setup, with the backend speaking Messages."""
    def start(cache_conf, keys=None, models=None, mock_args=()):
        mock = start_mock(mockllm, "--api-key", KEY, *mock_args)
        cfg = {"backends": [anth_backend(mock, models=("qwen2.5-7b",))],
               "access_log": "stderr",
               "cache": dict({"backend": "memory"}, **cache_conf),
               "admin_key": "env:PG_TEST_ADMIN_KEY"}
        if keys:
            cfg["keys"] = keys
        if models:
            cfg["models"] = models
        gw = gateway(cfg, env={"PG_TEST_ADMIN_KEY": cc.ADMIN_KEY, "PG_TEST_ANTH_KEY": KEY})
        return mock, gw
    return start


def test_cache_miss_then_hit(cache_setup):
    cc.check_miss_then_hit(cache_setup)


def test_cache_stream_miss_then_stream_and_json_hits(cache_setup):
    cc.check_stream_then_both_hits(cache_setup)


def test_cache_failures_not_stored(cache_setup):
    cc.check_failures_not_stored(cache_setup)


# ------------------------------------------------------ the OpenAI Node client

NODE_SCRIPT = r"""
import OpenAI from 'openai';
const [base, model] = process.argv.slice(1);
const client = new OpenAI({ baseURL: base, apiKey: 'sk-node-client', maxRetries: 0, timeout: 10000 });
const stream = await client.chat.completions.create({
    model, stream: true, stream_options: { include_usage: true },
    messages: [{ role: 'system', content: 'be brief' }, { role: 'user', content: 'hi' }] });
let text = '', finish = null, usage = null, role = null;
for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
        if (c.delta.role) role = c.delta.role;
        if (c.delta.content) text += c.delta.content;
        if (c.finish_reason) finish = c.finish_reason;
    }
}
const done = await client.chat.completions.create({ model, messages: [{ role: 'user', content: 'hi' }] });
let refused = null;
try {
    await client.chat.completions.create({ model, n: 2, messages: [{ role: 'user', content: 'hi' }] });
} catch (e) { refused = { status: e.status, code: e.code }; }
const tools = [{ type: 'function', function: { name: 'get_weather',
                 parameters: { type: 'object', properties: { query: { type: 'string' } } } } }];
const ask = [{ role: 'user', content: 'weather?' }];
const first = await client.chat.completions.create({ model, messages: ask, tools, tool_choice: 'required' });
const call = first.choices[0].message.tool_calls[0];
const second = await client.chat.completions.create({ model, tools, messages: [...ask,
    first.choices[0].message, { role: 'tool', tool_call_id: call.id, content: 'sunny' }] });
console.log(JSON.stringify({ text, finish, usage, role, json: done.choices[0].message.content,
                             refused, tool: [call.function.name, JSON.parse(call.function.arguments)],
                             after_tool: second.choices[0].message.content }));
"""


def test_openai_node_client_streams_through_anthropic(anth):
    import shutil
    node = shutil.which("node")
    if not node or not (NODE_DIR / "node_modules" / "openai" / "package.json").exists():
        pytest.skip("node or tests/integration/openai-node/node_modules missing "
                    "(test_gateway_openai_node.py installs them)")
    mock, gw = anth
    env = dict(os.environ)
    env.pop("OPENAI_API_KEY", None)
    env.pop("OPENAI_BASE_URL", None)
    r = subprocess.run([node, "--input-type=module", "-e", NODE_SCRIPT, gw.url + "/v1", MODEL],
                       cwd=NODE_DIR, capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["text"] == "tok0 tok1 tok2 tok3 tok4" and out["role"] == "assistant", out
    assert out["finish"] == "stop"
    p = prompt_tokens("be brief", "hi")
    assert out["usage"] == {"prompt_tokens": p, "completion_tokens": 5,
                            "total_tokens": p + 5}, out
    assert out["json"] == "tok0 tok1 tok2 tok3 tok4"
    assert out["refused"] == {"status": 400, "code": "unsupported_parameter"}, out
    assert out["tool"] == ["get_weather", {"query": "tok0"}], out
    assert out["after_tool"] == "tok0 tok1 tok2 tok3 tok4", out
    assert "sk-node-client" not in json.dumps(mock.requests())


# ------------------------------------------------------ the mock's own checks

def test_mock_messages_checks_like_the_real_api(mockllm):
    """mockllm's /v1/messages refuses what the real API refuses, so the
    tests above would see a translation mistake; --api-key guards both
    APIs in their own shapes."""
    m = start_anthropic(mockllm)
    url = m.url + "/v1/messages"
    good = {"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    hdr = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}

    def err(r, status, typ, needle):
        assert r.status == status, r
        doc = r.json()
        assert doc["type"] == "error" and doc["error"]["type"] == typ, doc
        assert needle in doc["error"]["message"], doc

    assert http("POST", url, body=good, headers=hdr).status == 200
    err(http("POST", url, body=good, headers={"anthropic-version": "2023-06-01"}),
        401, "authentication_error", "x-api-key")
    err(http("POST", url, body=good, headers={"x-api-key": KEY}),
        400, "invalid_request_error", "anthropic-version")
    err(http("POST", url, body=dict(good, n=1), headers=hdr),
        400, "invalid_request_error", "n: Extra inputs are not permitted")
    err(http("POST", url, body={k: v for k, v in good.items() if k != "max_tokens"},
             headers=hdr), 400, "invalid_request_error", "max_tokens")
    err(http("POST", url, body=dict(good, messages=[{"role": "system", "content": "x"}]),
             headers=hdr), 400, "invalid_request_error", "messages.0.role")
    err(http("POST", url, body=dict(good, temperature=1.5), headers=hdr),
        400, "invalid_request_error", "temperature")
    err(http("POST", url, body=dict(good, model="nope"), headers=hdr),
        404, "not_found_error", "nope")
    err(http("POST", url, body=good, headers=dict(hdr, **{"x-mock-fault": "status=429"})),
        429, "rate_limit_error", "mock fault")
    # the OpenAI routes ask for a bearer token
    r = http("POST", m.base + "/chat/completions", body=chat(model=MODEL))
    assert r.status == 401 and r.json()["error"]["code"] == "invalid_api_key", r
    r = http("POST", m.base + "/chat/completions", body=chat(model=MODEL),
             headers={"Authorization": "Bearer " + KEY})
    assert r.status == 200, r


# ------------------------------------------------- fallbacks, health checks

def test_fallback_from_a_dead_pool_to_an_anthropic_model(mockllm, gateway):
    """A local model whose only backend is dead falls back to a model
    served by an anthropic backend: the Messages body names that model."""
    a = start_anthropic(mockllm)
    dead = "http://%s:%d/v1" % (upstream_hostname(), free_port())
    gw = gateway({"backends": [{"name": "local", "url": dead, "models": ["qwen-local"],
                                "connect_timeout_ms": 500},
                               anth_backend(a)],
                  "models": {"qwen-local": {"fallbacks": [MODEL]}},
                  "access_log": "stderr"}, env={"PG_TEST_ANTH_KEY": KEY})
    for stream in (False, True):
        r = post(gw, chat(model="qwen-local", stream=stream,
                          messages=[{"role": "system", "content": "s"},
                                    {"role": "user", "content": "u"}]))
        assert r.status == 200, r
        assert r.headers["x-promptgate-backend"] == "claude"
        up = last_upstream(a)
        assert up["body"]["model"] == MODEL and up["body"]["system"] == "s"
        if stream:
            assert cc.content_of_stream(r.body) == "tok0 tok1 tok2 tok3 tok4"
        else:
            assert r.json()["choices"][0]["message"]["content"] == "tok0 tok1 tok2 tok3 tok4"


def test_health_check_of_an_anthropic_backend(mockllm, gateway):
    a = start_anthropic(mockllm)
    gw = gateway({"backends": [anth_backend(a, health_check={
                      "path": "/models", "interval_ms": 100, "timeout_ms": 300})],
                  "admin_key": "env:PG_TEST_ADMIN", "access_log": "stderr"},
                 env={"PG_TEST_ANTH_KEY": KEY, "PG_TEST_ADMIN": "adm-2"})

    def state():
        r = http("GET", gw.url + "/admin/backends", headers={"Authorization": "Bearer adm-2"})
        return r.json()["backends"][0]["state"]

    checks = wait_until(lambda: [x for x in a.requests() if x["path"] == "/v1/models"])
    assert checks[-1]["headers"]["x-api-key"] == KEY
    assert checks[-1]["headers"]["anthropic-version"] == "2023-06-01"
    assert "authorization" not in checks[-1]["headers"]
    assert state() == "closed"
    a.set_fault("status=529")
    wait_until(lambda: state() == "open", timeout=3)
    a.set_fault(None)
    wait_until(lambda: state() == "closed", timeout=3)
    assert post(gw, chat(model=MODEL)).status == 200


# ------------------------------------------------------------ registry prompts

def test_registry_prompt_through_anthropic(mockllm, gateway, tmp_path):
    """A registry prompt (system + user, params) rendered by the gateway and
    sent as Messages; the exposure records the translated output, streamed
    too."""
    from regtest import Ctl
    ctl = Ctl(tmp_path / "reg.db")
    ctl.ok("init")
    version = {"messages": [{"role": "system", "content": "You write copy."},
                            {"role": "user", "content": "Describe {{product_name}}."}],
               "params": {"model": MODEL, "temperature": 0.25, "max_tokens": 3}}
    (tmp_path / "v.json").write_text(json.dumps(version))
    ctl.ok("publish", "copy", "-f", str(tmp_path / "v.json"))
    ctl.ok("label", "copy", "1", "production")
    mock = start_anthropic(mockllm)
    gw = gateway({"backends": [anth_backend(mock)], "access_log": "stderr",
                  "registry": {"path": ctl.db, "log_outputs": True}},
                 env={"PG_TEST_ANTH_KEY": KEY})
    prompt = {"name": "copy", "label": "production", "variables": {"product_name": "a lamp"}}
    r = post(gw, {"prompt": prompt}, headers={"x-request-id": "plain"})
    assert r.status == 200, r
    assert r.headers["x-prompt-version"] == "copy@1"
    assert r.json()["choices"][0] == {"index": 0, "logprobs": None, "finish_reason": "length",
                                      "message": {"role": "assistant",
                                                  "content": "tok0 tok1 tok2"}}
    assert last_upstream(mock)["body"] == {
        "model": MODEL, "max_tokens": 3, "temperature": 0.25, "system": "You write copy.",
        "messages": [{"role": "user", "content": "Describe a lamp."}]}
    r = post(gw, {"prompt": prompt, "stream": True}, headers={"x-request-id": "streamed"})
    assert cc.content_of_stream(r.body) == "tok0 tok1 tok2"

    def rows():
        import sqlite3
        con = sqlite3.connect(ctl.db)
        try:
            got = {row[0]: row[1] for row in
                   con.execute("SELECT request_id, output FROM exposures")}
        finally:
            con.close()
        return got if len(got) >= 2 else None
    assert wait_until(rows) == {"plain": "tok0 tok1 tok2", "streamed": "tok0 tok1 tok2"}
