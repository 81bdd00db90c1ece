"""The real Hermes agent: an Obol-shaped HERMES_HOME and `hermes gateway run` serving its API server.

The gateway re-reads `model.default` from config.yaml on every message, which is what
`buy.py --set-default` relies on; its OpenAI-compatible API server (HERMES_API_URL, Bearer
HERMES_API_KEY) is "chatting with the agent": a request that names no model runs one agent turn with
whatever `model.default` says, through LiteLLM.

HERMES_API_URL ends in /v1 (`http://127.0.0.1:P/v1`): chat with `POST $HERMES_API_URL/chat/completions`.
The config is exactly Obol's keys; offline guards are environment variables, not config keys.
"""
from __future__ import annotations

import json
import os
import secrets
import urllib.request
from pathlib import Path

import yaml

from .. import config
from ..stack import Stack


def obol_config(home: Path, litellm_url: str) -> dict:
    """The config Obol's generateConfig writes (yaml.v3, keys sorted), for this HERMES_HOME."""
    return {
        "model": {"api_key": config.LITELLM_MASTER_KEY, "base_url": f"{litellm_url}/v1",
                  "default": config.FREE_MODEL, "provider": "custom"},
        "skills": {"external_dirs": [str(home / "obol-skills")]},
        "terminal": {"backend": "local", "cwd": str(home / "workspace"),
                     "docker_mount_cwd_to_workspace": False, "lifetime_seconds": 300, "timeout": 180},
    }


def write_home(home: Path, litellm_url: str) -> Path:
    """Create HERMES_HOME (0700) and a fresh config.yaml (0600: it holds the LiteLLM key), as Obol does."""
    home.mkdir(parents=True, exist_ok=True)
    home.chmod(0o700)
    for sub in ("obol-skills", "workspace", "home"):
        (home / sub).mkdir(exist_ok=True)
    path = home / "config.yaml"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(obol_config(home, litellm_url), f, sort_keys=True, default_flow_style=False)
    path.chmod(0o600)
    return path


def _models_ok(api_url: str, key: str) -> bool:
    request = urllib.request.Request(f"{api_url}/models", headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request, timeout=3) as response:
        return response.status == 200 and bool(json.loads(response.read()).get("data"))


# A closed loopback port: any internet request Hermes still makes (it fetches OpenRouter's model
# catalogue once per process for context lengths) fails at once instead of waiting on DNS/connect.
OFFLINE_PROXY = "http://127.0.0.1:9"


def gateway_env(home: Path, port: int, key: str) -> dict[str, str]:
    """The pod's environment (obol-buy-x402.md §12) bound to loopback, plus offline guards."""
    return {
        "HERMES_HOME": str(home),
        "HOME": str(home / "home"),
        "API_SERVER_ENABLED": "true",
        "API_SERVER_HOST": "127.0.0.1",
        "API_SERVER_PORT": str(port),
        "API_SERVER_KEY": key,
        # As in the pod: the primary at render time, a cosmetic label that set-default does not change.
        "API_SERVER_MODEL_NAME": config.FREE_MODEL,
        "OBOL_SKILLS_DIR": str(home / "obol-skills"),
        "PYTHONUNBUFFERED": "1",
        # No download of the tirith command scanner from GitHub at start-up.
        "TIRITH_ENABLED": "false",
        "HTTP_PROXY": OFFLINE_PROXY, "HTTPS_PROXY": OFFLINE_PROXY, "ALL_PROXY": OFFLINE_PROXY,
        "http_proxy": OFFLINE_PROXY, "https_proxy": OFFLINE_PROXY, "all_proxy": OFFLINE_PROXY,
        "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
    }


def up(stack: Stack) -> None:
    home = stack.dir / "hermes"
    config_path = write_home(home, stack.info["litellm"]["url"])
    port = stack.free_port()
    key = secrets.token_hex(24)
    hermes_bin = str(stack.deps / "hermes" / "bin" / "hermes")
    stack.spawn("hermes", [hermes_bin, "gateway", "run"], env=gateway_env(home, port, key),
                cwd=home / "workspace")
    api_url = f"http://127.0.0.1:{port}/v1"
    stack.wait_until("hermes", lambda: _models_ok(api_url, key), timeout=90, interval=0.25)
    stack.info["hermes"] = {"home": str(home), "config": str(config_path), "api_url": api_url,
                            "api_key": key, "bin": hermes_bin}
    stack.env.update(HERMES_HOME=str(home), HERMES_BIN=hermes_bin, HERMES_API_URL=api_url,
                     HERMES_API_KEY=key, OBOL_SKILLS_DIR=str(home / "obol-skills"))
