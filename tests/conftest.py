"""Shared fixtures: one devstack per test session, a runner for buy.py as the agent runs it, and an
in-process runner for refusals that need no peer at all.

Integration tests take the `stack` fixture (started once, stopped at the end). `run_buy` runs
`python buy.py ...` as a subprocess with exactly the environment DIR/env exports, so every test
exercises the same path an agent in a pod does. `run_cli` calls `cli.main` in this process with the
network and subprocesses switched off: a refusal that needs neither is tested without a stack.

Every test that needs real components outside this process (the devstack or a part of it, or the
Hermes CLI from .deps) is marked `stack` at collection, from the fixtures it uses:
`pytest -m "not stack"` is the unit suite; `make test` runs everything.
"""
from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from buy_x402 import cli  # noqa: E402
from devstack.stack import Stack, down, up  # noqa: E402

BUY = str(REPO / "buy.py")
# Fixtures that start devstack parts (anvil included) or run the real Hermes CLI; a test using one is
# a stack test. A new such fixture belongs here.
STACK_FIXTURES = frozenset({"stack", "kube_stack", "agent_stack", "devstack", "cluster", "chain_rpc", "hermes_cli",
                            "obol", "buyer"})


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "stack: needs the devstack (or a part of it) or the real Hermes CLI; "
                                       "deselect with -m 'not stack' for the unit suite")
    config.addinivalue_line("markers", "slow: real time without the stack (deadlines, signals, subprocesses); "
                                       "the unit suite is -m 'not stack and not slow'")


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if STACK_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.stack)


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def json(self) -> dict:
        return json.loads(self.stdout)


@pytest.fixture(scope="session")
def stack(tmp_path_factory) -> Stack:
    directory = os.environ.get("DEVSTACK_TEST_DIR") or str(tmp_path_factory.mktemp("devstack"))
    started = up(directory)
    yield started
    if not os.environ.get("DEVSTACK_KEEP"):
        down(directory)


def stack_env(stack: Stack, **overrides: str | None) -> dict[str, str]:
    """The environment of an agent pod on the devstack; an override of None removes the variable."""
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8"}
    env.update(stack.env)
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def run_buy(args: list[str], env: dict[str, str], *, timeout: float = 300) -> Result:
    proc = subprocess.run([sys.executable, BUY, *args], env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    return Result(proc.returncode, proc.stdout, proc.stderr)


class Offline:
    """What a run tried to reach: every name lookup, socket connect and subprocess start is refused
    and noted."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.attempts: list[str] = []

        def refuse(what: str):
            def refused(*args, **kwargs):
                self.attempts.append(f"{what}: {args!r:.120}")
                raise OSError(f"no {what} in an in-process refusal test")
            return refused

        monkeypatch.setattr(socket, "getaddrinfo", refuse("name lookup"))
        monkeypatch.setattr(socket.socket, "connect", refuse("connect"))
        monkeypatch.setattr(socket.socket, "connect_ex", refuse("connect"))
        monkeypatch.setattr(subprocess.Popen, "__init__", refuse("subprocess"))


@pytest.fixture()
def offline(monkeypatch) -> Offline:
    return Offline(monkeypatch)


AGENT_CONFIG = """\
model:
  api_key: sk-test-secret
  base_url: http://127.0.0.1:9/v1
  default: qwen3.5:9b
  provider: custom
terminal:
  backend: local
"""


@pytest.fixture()
def agent_home(tmp_path) -> Path:
    """The HERMES_HOME `run_cli` points at, with an Obol-shaped config (mode 0600)."""
    home = tmp_path / "hermes"
    home.mkdir(mode=0o700)
    (home / "config.yaml").write_text(AGENT_CONFIG)
    (home / "config.yaml").chmod(0o600)
    return home


@pytest.fixture()
def run_cli(offline, tmp_path):
    """`run_cli(argv, **env)`: buy.py's `cli.main` in this process, offline, with an agent pod's
    environment pointing at peers that must never be reached and a HERMES_HOME in tmp_path."""
    home = tmp_path / "hermes"

    def run(argv: list[str], **overrides: str) -> Result:
        env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "HERMES_HOME": str(home),
               "HERMES_BIN": str(tmp_path / "no-hermes"), "KUBECONFIG": str(tmp_path / "no-kubeconfig"),
               "BUY_X402_SERVICE_ACCOUNT_DIR": str(tmp_path / "no-sa"),
               "REMOTE_SIGNER_URL": "http://127.0.0.1:9", "ERPC_URL": "http://127.0.0.1:9",
               "X402_BUYER_URL": "http://127.0.0.1:9", **overrides}
        stdout, stderr = io.StringIO(), io.StringIO()
        code = cli.main(argv, stdout=stdout, stderr=stderr, environ=env)
        return Result(code, stdout.getvalue(), stderr.getvalue())
    return run
