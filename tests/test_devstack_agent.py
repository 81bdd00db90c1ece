"""The devstack's agent chain for real: free upstream → LiteLLM proxy → Hermes gateway API server.

One small stack (upstream, litellm, hermes) for this module; no buyer, so paid calls fail downstream
of LiteLLM, which is enough to see which model the agent asked for.
"""
from __future__ import annotations

import json
import os
import stat
import subprocess
import uuid
from pathlib import Path

import pytest
import requests
import yaml

from devstack import config
from devstack.stack import Stack, down, up

PAID = "paid/qwen3.6-35b"


@pytest.fixture(scope="module")
def agent_stack(tmp_path_factory) -> Stack:
    directory = str(tmp_path_factory.mktemp("agent-stack"))
    started = up(directory, ["upstream", "litellm", "hermes"])
    yield started
    down(directory)


def upstream_requests(stack: Stack) -> list[dict]:
    lines = Path(stack.info["upstream"]["log"]).read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def hermes(stack: Stack, *args: str) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ.get("PATH", ""), "HERMES_HOME": stack.env["HERMES_HOME"],
           "HOME": str(Path(stack.env["HERMES_HOME"]) / "home")}
    return subprocess.run([stack.env["HERMES_BIN"], *args], env=env, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)


def chat_with_agent(stack: Stack, text: str, *, timeout: float = 90) -> requests.Response:
    """A chat as a user sends it: no model named, so the agent uses its model.default."""
    return requests.post(f"{stack.env['HERMES_API_URL']}/chat/completions",
                         headers={"Authorization": f"Bearer {stack.env['HERMES_API_KEY']}"},
                         json={"messages": [{"role": "user", "content": text}], "max_tokens": 16},
                         timeout=timeout)


def litellm_models(stack: Stack, headers: dict[str, str]) -> requests.Response:
    return requests.get(f"{stack.env['LITELLM_URL']}/v1/models", headers=headers, timeout=10)


def test_litellm_lists_the_free_model_and_exactly_the_listed_paid_models(agent_stack):
    response = litellm_models(agent_stack, {"Authorization": f"Bearer {config.LITELLM_MASTER_KEY}"})
    assert response.status_code == 200
    ids = [m["id"] for m in response.json()["data"]]
    expected = [config.FREE_MODEL] + [f"paid/{o['model']}" for o in config.OFFERS if o["listed"]]
    assert sorted(ids) == sorted(expected)
    assert "paid/hidden-model" not in ids


def test_litellm_without_a_key_is_401(agent_stack):
    assert litellm_models(agent_stack, {}).status_code == 401


def test_upstream_streams_sse_and_404s_what_it_does_not_serve(agent_stack):
    base = agent_stack.info["upstream"]["url"]
    streamed = requests.post(f"{base}/v1/chat/completions", timeout=10, json={
        "model": config.FREE_MODEL, "stream": True, "messages": [{"role": "user", "content": "sse?"}]})
    events = [line[len("data: "):] for line in streamed.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    text = "".join(json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-1])
    assert text == f"free answer from {config.FREE_MODEL}"
    last = upstream_requests(agent_stack)[-1]
    assert (last["model"], last["user"], last["stream"]) == (config.FREE_MODEL, "sse?", True)
    missing = requests.post(f"{base}/api/show", json={"model": config.FREE_MODEL}, timeout=10)
    assert missing.status_code == 404 and "error" in missing.json()


def test_hermes_home_is_obol_shaped_and_private(agent_stack):
    home = Path(agent_stack.env["HERMES_HOME"])
    path = home / "config.yaml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    cfg = yaml.safe_load(path.read_text())
    assert list(cfg) == ["model", "skills", "terminal"]
    assert cfg["model"] == {"api_key": config.LITELLM_MASTER_KEY,
                            "base_url": f"{agent_stack.env['LITELLM_URL']}/v1",
                            "default": config.FREE_MODEL, "provider": "custom"}
    assert list(cfg["model"]) == sorted(cfg["model"])
    assert cfg["skills"] == {"external_dirs": [agent_stack.env["OBOL_SKILLS_DIR"]]}
    assert cfg["terminal"]["cwd"] == str(home / "workspace")
    assert (home / "obol-skills").is_dir() and (home / "workspace").is_dir()
    assert Path(agent_stack.env["HERMES_BIN"]).is_absolute()


def test_hermes_cli_reads_the_free_model_as_default(agent_stack):
    result = hermes(agent_stack, "config", "get", "model.default")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == config.FREE_MODEL


def test_agent_api_needs_its_key_and_shows_the_pod_label(agent_stack):
    url = f"{agent_stack.env['HERMES_API_URL']}/models"
    assert requests.get(url, timeout=10).status_code == 401
    listed = requests.get(url, headers={"Authorization": f"Bearer {agent_stack.env['HERMES_API_KEY']}"},
                          timeout=10)
    # API_SERVER_MODEL_NAME, as Obol renders it: a label, not the model a turn uses.
    assert [m["id"] for m in listed.json()["data"]] == [config.FREE_MODEL]


def test_agent_answers_a_chat_with_its_free_model(agent_stack):
    before = len(upstream_requests(agent_stack))
    marker = f"hello {uuid.uuid4().hex[:8]}"
    response = chat_with_agent(agent_stack, marker)
    assert response.status_code == 200, response.text
    assert "free answer from" in response.json()["choices"][0]["message"]["content"]
    new = upstream_requests(agent_stack)[before:]
    assert len(new) >= 1
    assert all(r["model"] == config.FREE_MODEL for r in new)
    assert any(marker in r["user"] for r in new)


def stream_chat_with_agent(stack: Stack, text: str, *, timeout: float = 120) -> list[dict]:
    """The same chat, streamed: Hermes reports a failed turn as an SSE chunk with `error`.

    (Non-streamed, Hermes 0.19.0 puts the multi-line error into an X-Hermes-Error header, aiohttp
    refuses it, and the client just sees the connection close.)
    """
    response = requests.post(f"{stack.env['HERMES_API_URL']}/chat/completions",
                             headers={"Authorization": f"Bearer {stack.env['HERMES_API_KEY']}"},
                             json={"messages": [{"role": "user", "content": text}], "max_tokens": 16,
                                   "stream": True}, timeout=timeout)
    events = [line[len("data: "):] for line in response.text.splitlines() if line.startswith("data: ")]
    assert events and events[-1] == "[DONE]", response.text
    return [json.loads(e) for e in events[:-1]]


def test_agent_follows_model_default_on_the_next_turn_without_restart(agent_stack):
    """`hermes config set model.default` re-routes the very next chat; setting it back restores it."""
    pid = agent_stack.pid("hermes")
    litellm_log = Path(agent_stack.logs / "litellm.log")
    try:
        assert hermes(agent_stack, "config", "set", "model.default", PAID).returncode == 0
        upstream_before = len(upstream_requests(agent_stack))
        log_before = litellm_log.stat().st_size
        # No buyer in this stack: LiteLLM accepts the paid model and fails it downstream.
        chunks = stream_chat_with_agent(agent_stack, "paid please")
        errors = [c["error"]["message"] for c in chunks if c.get("error")]
        assert errors and f"model group '{PAID}'" in errors[0]
        assert PAID.encode() in litellm_log.read_bytes()[log_before:]
        assert len(upstream_requests(agent_stack)) == upstream_before  # nothing reached the free model
    finally:
        assert hermes(agent_stack, "config", "set", "model.default", config.FREE_MODEL).returncode == 0
    before = len(upstream_requests(agent_stack))
    response = chat_with_agent(agent_stack, "free again?")
    assert response.status_code == 200, response.text
    assert "free answer from" in response.json()["choices"][0]["message"]["content"]
    assert [r["model"] for r in upstream_requests(agent_stack)[before:]][:1] == [config.FREE_MODEL]
    assert agent_stack.pid("hermes") == pid and agent_stack.alive("hermes")
