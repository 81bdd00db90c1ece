"""A signal whose exception Python swallowed still decides the run.

Python drops an exception raised inside an at-fork hook, a `__del__` or a weakref callback ("Exception
ignored in …"); the soak caught a SIGTERM that landed in the at-fork hook of the Hermes CLI's spawn, so
the switch went on, committed, and the run still exited 143 with the config changed. These tests lose
the handler's `Interrupted` the same way (raised and swallowed) and check that the commit point undoes
the change, and that a lost `Interrupted` prints no ignored-exception traceback.
"""
from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from buy_x402 import shutdown
from buy_x402.adoption import DefaultSwitch
from buy_x402.agent.hermes import HermesRuntime
from buy_x402.errors import Interrupted
from buy_x402.settings import Settings
from conftest import AGENT_CONFIG
from helpers import file_state


@pytest.fixture()
def runtime(tmp_path):
    home = tmp_path / "hermes"
    home.mkdir(mode=0o700)
    (home / "config.yaml").write_text(AGENT_CONFIG)
    (home / "config.yaml").chmod(0o600)
    rt = HermesRuntime(Settings(agent_home=str(home), home=str(tmp_path), agent_cli=str(tmp_path / "no-cli")))
    return rt, rt.resolve(), home


def lose_a_signal(signum: int = signal.SIGTERM) -> None:
    """What an at-fork hook or a __del__ does to the handler's exception: it never arrives."""
    try:
        shutdown._handler(signum, None)
    except Interrupted:
        pass


def test_a_lost_signal_undoes_the_switch_at_its_commit_point(runtime):
    rt, cfg, home = runtime
    before = file_state(home / "config.yaml")
    with shutdown.install():
        with rt.lock(cfg):
            switch = DefaultSwitch(rt, cfg, rt.preflight(cfg))
            lose_a_signal()
            with pytest.raises(Interrupted) as caught:
                switch.adopt("paid/new", purchase="p", at="t")
    assert caught.value.exit_code == 143
    assert file_state(home / "config.yaml") == before      # written, verified, then put back
    assert rt.record(cfg).last(rt.current_default(rt.read(cfg))) is None  # no pending entry left


def test_a_lost_signal_undoes_a_restore_at_its_commit_point(runtime):
    rt, cfg, home = runtime
    with shutdown.install():
        with rt.lock(cfg):
            DefaultSwitch(rt, cfg, rt.preflight(cfg)).adopt("paid/new", purchase="p", at="t")
    adopted = file_state(home / "config.yaml")
    with shutdown.install():
        with rt.lock(cfg):
            switch = DefaultSwitch(rt, cfg, rt.preflight(cfg))
            last = switch.last_adoption()
            lose_a_signal(signal.SIGINT)
            with pytest.raises(Interrupted) as caught:
                switch.undo(last)
    assert caught.value.exit_code == 130
    assert file_state(home / "config.yaml") == adopted     # the restore was undone: still paid/new
    assert rt.record(cfg).last("paid/new")["adopted"] == "paid/new"


def test_without_a_signal_the_switch_commits_and_a_later_signal_is_ignored(runtime):
    rt, cfg, home = runtime
    with shutdown.install():
        with rt.lock(cfg):
            DefaultSwitch(rt, cfg, rt.preflight(cfg)).adopt("paid/new", purchase="p", at="t")
        shutdown._handler(signal.SIGTERM, None)  # after the commit: ignored, nothing raised
        assert shutdown.received() is None
    assert rt.current_default(rt.read(cfg)) == "paid/new"


LOSE_IN_DEL = """
import gc, signal, sys
sys.path.insert(0, {repo!r})
from buy_x402 import shutdown
from buy_x402.errors import Interrupted

class Raises:
    def __init__(self, exc):
        self.exc = exc
    def __del__(self):
        raise self.exc

with shutdown.install():
    Raises(Interrupted(signal.SIGTERM))
    gc.collect()
    print("lost-interrupted-done", file=sys.stderr, flush=True)
    Raises(ValueError("a real bug"))
    gc.collect()
"""


def test_a_lost_interrupted_prints_no_ignored_exception_traceback():
    """In a process of its own: pytest replaces the unraisable hook inside tests."""
    code = LOSE_IN_DEL.format(repo=str(Path(__file__).resolve().parent.parent))
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stderr
    lost, other = err.split("lost-interrupted-done", 1)
    assert "Exception ignored" not in lost and "Interrupted" not in lost
    assert "Exception ignored" in other and "ValueError: a real bug" in other  # other bugs still speak
