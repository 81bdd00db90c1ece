"""Shared fixtures: one devstack per test session, and a runner for buy.py as the agent runs it.

Integration tests take the `stack` fixture (started once, stopped at the end). `run_buy` runs
`python buy.py ...` as a subprocess with exactly the environment DIR/env exports, so every test
exercises the same path an agent in a pod does.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from devstack.stack import Stack, down, up  # noqa: E402

BUY = str(REPO / "buy.py")


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
