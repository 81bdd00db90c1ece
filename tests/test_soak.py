"""The soak's runs at test size, on the session devstack with the real Hermes CLI: dozens of kills of
`default set` and `buy --set-default` at random points (SIGKILL, SIGTERM, SIGINT; both writers), and
concurrent writers. `make soak` runs the same code (soak/faults.py) with hundreds of kills.
"""
from __future__ import annotations

import random
import signal
import subprocess
import sys
import time

import pytest

from devstack import config
from helpers import ensure_purchase, offer
from soak import faults
from soak.observe import BUY, agent_home, buy, config_state, hermes_children, run_env

NAME, MODEL = "t-deepseek", "deepseek-v4-pro"   # the purchase test_set_default makes (bought here if alone)


@pytest.fixture(scope="module")
def paid(stack):
    ensure_purchase(stack, NAME, MODEL, "--count", "2")
    return NAME, offer(stack, MODEL)["url"], MODEL


def held(tally: faults.Tally) -> None:
    assert tally.tried > 0
    assert tally.held == tally.tried, "\n" + faults.table([tally])


@pytest.mark.parametrize("fallback", [False, True], ids=["hermes-cli", "fallback-writer"])
def test_killing_default_set_at_random_points_loses_nothing(stack, paid, tmp_path, fallback):
    models = (config.FREE_MODEL, f"paid/{MODEL}")
    held(faults.crash_default_set(stack.env, tmp_path, models, kills=16, terms=6, ints=3, fallback=fallback,
                                  rng=random.Random(9 + fallback)))


@pytest.mark.parametrize("fallback", [False, True], ids=["hermes-cli", "fallback-writer"])
def test_killing_buy_set_default_at_random_points_loses_nothing(stack, paid, tmp_path, fallback):
    name, url, model = paid
    held(faults.crash_buy(stack.env, tmp_path, name, url, model, config.FREE_MODEL, kills=4, terms=2,
                          fallback=fallback, rng=random.Random(19 + fallback)))


def test_concurrent_default_set_leaves_one_written_value(stack, paid, tmp_path):
    held(faults.concurrent_default_set(stack.env, tmp_path, [config.FREE_MODEL, f"paid/{MODEL}"], 8))


def test_concurrent_buys_of_one_name_lose_and_duplicate_no_voucher(stack, paid):
    name, url, model = paid
    held(faults.concurrent_buys(stack.env, name, url, model, 5))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_the_issue_reproduction_no_orphaned_writer_undoes_a_later_set(stack, paid, tmp_path, sig):
    """Issue 9, defect 1, as reported: stop `default set paid/…` while the Hermes CLI writes, then at once
    `default set <old>`. That one says the config holds <old>, and 2 s later it still does."""
    home = agent_home(stack.env, tmp_path)
    env = run_env(stack.env, home, fallback=False)
    old, new = config.FREE_MODEL, f"paid/{MODEL}"
    for _ in range(4):
        proc = subprocess.Popen([sys.executable, BUY, "default", "set", new, "--no-canary"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while not hermes_children(home):
            assert proc.poll() is None and time.monotonic() < deadline, "the Hermes CLI never started"
            time.sleep(0.005)
        time.sleep(0.05)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == (143 if sig == signal.SIGTERM else -9), err
        again = buy(["default", "set", old, "--no-canary", "--json"], env)
        assert again.returncode == 0, again.stderr
        time.sleep(2.0)
        assert config_state(home).model == old   # no orphan wrote after the lock was released
        assert hermes_children(home) == []
