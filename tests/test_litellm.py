"""LiteLLMClient against a small stdlib HTTP server that answers like (or unlike) LiteLLM.

The real LiteLLM proxy is exercised by the devstack integration tests; here every failure mode a
refusal depends on is produced on purpose, and the key must never show up in an error.
"""
from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from buy_x402.errors import LiteLLMError
from buy_x402.http import make_session
from buy_x402.litellm import CANARY_PROMPT, LiteLLMClient

KEY = "sk-obol-secret123"


class FakeLiteLLM(ThreadingHTTPServer):
    """Answers from `routes[(method, path)] = (status, body)` and records what it received."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.routes: dict[tuple[str, str], list[tuple[int, str]]] = {}
        self.requests: list[dict] = []

    def answer(self, method: str, path: str, *replies: tuple[int, object]) -> None:
        """Queue replies; the last one repeats."""
        self.routes[(method, path)] = [(status, body if isinstance(body, str) else json.dumps(body))
                                       for status, body in replies]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class Handler(BaseHTTPRequestHandler):
    server: FakeLiteLLM

    def _reply(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.requests.append({"method": method, "path": self.path,
                                     "auth": self.headers.get("Authorization"),
                                     "json": json.loads(body) if body else None})
        replies = self.server.routes.get((method, self.path), [(404, '{"error": "not found"}')])
        status, text = replies.pop(0) if len(replies) > 1 else replies[0]
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        self._reply("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._reply("POST")

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    srv = FakeLiteLLM()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


@pytest.fixture
def client(server) -> LiteLLMClient:
    return LiteLLMClient(make_session("test"), server.base_url + "/", KEY, sleep=lambda s: None)


def models(*ids: str) -> dict:
    return {"object": "list", "data": [{"id": i, "object": "model"} for i in ids]}


def assert_secret_free(error: LiteLLMError) -> None:
    assert KEY not in f"{error} {error.hint} {error.data!r}"


def test_list_models_sends_the_key_as_bearer(server, client):
    server.answer("GET", "/v1/models", (200, models("qwen3.5:9b", "paid/qwen")))
    assert client.list_models() == ["qwen3.5:9b", "paid/qwen"]
    assert server.requests[0]["auth"] == f"Bearer {KEY}"


@pytest.mark.parametrize("status, code, words", [
    (401, "litellm_auth", "api_key"),
    (403, "litellm_auth", "api_key"),
    (500, "litellm_error", "logs"),
])
def test_list_models_http_failures(server, client, status, code, words):
    server.answer("GET", "/v1/models", (status, {"error": f"bad key {KEY}"}))
    with pytest.raises(LiteLLMError) as err:
        client.list_models()
    assert err.value.code == code
    assert f"HTTP {status}" in err.value.message and words in err.value.hint
    assert err.value.data["status"] == status
    assert_secret_free(err.value)


@pytest.mark.parametrize("body, words", [("<html>gateway</html>", "not JSON"),
                                         ('{"data": "nope"}', "not an OpenAI model list"),
                                         ('[1, 2]', "not an OpenAI model list"),
                                         ('{"data": [{"name": "x"}]}', "not an OpenAI model list")])
def test_list_models_garbage_is_refused(server, client, body, words):
    server.answer("GET", "/v1/models", (200, body))
    with pytest.raises(LiteLLMError) as err:
        client.list_models()
    assert err.value.code == "litellm_bad_response" and words in err.value.message
    assert_secret_free(err.value)


def test_unreachable_litellm(server):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = LiteLLMClient(make_session("test"), f"http://127.0.0.1:{port}/v1", KEY)
    with pytest.raises(LiteLLMError) as err:
        client.list_models()
    assert err.value.code == "litellm_unreachable"
    assert str(port) in err.value.message
    assert_secret_free(err.value)


def test_is_listed_retries_for_publication_lag(server, client):
    server.answer("GET", "/v1/models", (200, models("qwen3.5:9b")), (200, models("qwen3.5:9b", "paid/q")))
    assert client.is_listed("paid/q") is True
    assert len(server.requests) == 2


def test_is_listed_false_after_the_retries_and_exact_match_only(server, client):
    server.answer("GET", "/v1/models", (200, models("paid/q-big", "paid/*")))
    assert client.is_listed("paid/q", retries=3) is False
    assert len(server.requests) == 3


def test_is_listed_propagates_errors(server, client):
    server.answer("GET", "/v1/models", (401, "{}"))
    with pytest.raises(LiteLLMError):
        client.is_listed("paid/q")
    assert len(server.requests) == 1


def test_canary_ok(server, client):
    server.answer("POST", "/v1/chat/completions",
                  (200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": "OK"}}]}))
    assert client.canary("paid/q") == {"status": 200, "model": "paid/q", "content": "OK"}
    sent = server.requests[0]
    assert sent["auth"] == f"Bearer {KEY}"
    assert sent["json"] == {"model": "paid/q", "messages": [{"role": "user", "content": CANARY_PROMPT}],
                            "max_tokens": 8}


@pytest.mark.parametrize("status, body, words", [
    (402, {"error": "payment required", "echo": KEY}, "HTTP 402"),
    (500, {"error": "upstream failed"}, "HTTP 500: {\"error\": \"upstream failed\"}"),
    (200, {"choices": []}, "no choice"),
    (200, "not json", "no choice"),
])
def test_canary_failures(server, client, status, body, words):
    server.answer("POST", "/v1/chat/completions", (status, body))
    with pytest.raises(LiteLLMError) as err:
        client.canary("paid/q")
    assert err.value.code == "canary_failed"
    assert words in err.value.message and "paid/q" in err.value.message
    assert err.value.data["status"] == status
    assert_secret_free(err.value)
