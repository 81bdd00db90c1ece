"""Fault injection on the devstack: kill buy.py at random points, run writers concurrently, and check
after every run that nothing was lost.

Shared by `make soak` (`python -m soak`: hundreds of runs, a table of tried / held) and by
`tests/test_soak.py` (dozens of runs inside `make test`). Every scenario returns a `Tally`; a run
"held" when every invariant below was true after it:

- the Hermes config parses, its mode and owner are as before, every key but `model.default` is as
  before, and `model.default` is the value before or the one being written (nothing else);
- no Hermes CLI child of the run is alive once buy.py is gone (it must not write later);
- SIGTERM/SIGINT end with 143/130 and the config byte-for-byte as before and the adoption record
  saying what it said before — or with 0 if the run had finished; SIGKILL may leave either value,
  but the record must agree with the config (a restore would undo exactly what is there);
- no traceback on stderr; no temp file of ours left once the next locked run has been through;
- for purchases: every voucher id is unique, `spec.count` equals the pool, no unspent voucher is lost,
  and the pool grew by exactly the vouchers the successful runs reported.
"""
from __future__ import annotations

import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from buy_x402 import settings as settings_mod  # noqa: E402
from buy_x402.kube import KubeClient  # noqa: E402
from soak.observe import (BUY, agent_home, before_start, buy, config_problems,  # noqa: E402
                          config_state, hermes_children, hermes_temps, last_adoption, our_temps, record_problems,
                          run_env)

EXPECTED_ON_SIGNAL = {signal.SIGTERM: 143, signal.SIGINT: 130}


@dataclass
class Tally:
    scenario: str
    tried: int = 0
    held: int = 0
    notes: dict[str, int] = field(default_factory=dict)
    broken: list[str] = field(default_factory=list)

    def run(self, problems: list[str], label: str) -> None:
        self.tried += 1
        if problems:
            self.broken.append(f"{label}: " + "; ".join(problems))
        else:
            self.held += 1

    def note(self, key: str, n: int = 1) -> None:
        self.notes[key] = self.notes.get(key, 0) + n


# --------------------------------------------------------------------------------------- one kill

def kill_run(env: dict[str, str], home: Path, argv: list[str], target: str, sig: int, delay: float,
             tally: Tally) -> tuple[list[str], str]:
    """Start buy.py, send `sig` after `delay` seconds; the broken invariants and a label for the run."""
    before = config_state(home)
    last_before = last_adoption(home, before.model)
    proc = subprocess.Popen([sys.executable, BUY, *argv], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    time.sleep(delay)
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        return ["buy.py did not stop within 120 s of the signal"], f"{argv[0]} {signal.Signals(sig).name}"
    rc = proc.returncode
    problems = []
    deadline = time.monotonic() + 2.0
    while (alive := hermes_children(home)) and time.monotonic() < deadline:
        time.sleep(0.02)
    if alive:
        problems.append(f"Hermes CLI processes {alive} outlived buy.py")
        for pid in alive:
            with_suppressed_kill(pid)
    after = config_state(home)
    problems += config_problems(before, after, {before.model, target})
    early = sig != signal.SIGKILL and (rc == -sig or before_start(rc, sig, err))
    if "Traceback" in err and not early:
        problems.append("a traceback reached stderr")
    last_after = last_adoption(home, after.model)
    if isinstance(last_after, str):
        problems.append(last_after)
    name = signal.Signals(sig).name
    if sig == signal.SIGKILL:
        tally.note("killed: config kept" if after.model == before.model else "killed: switch had landed")
        if after.model == target and target != before.model and not (
                isinstance(last_after, dict) and last_after.get("adopted") == target):
            problems.append("the switch landed but the record does not know it (a restore could not undo it)")
        if after.model == before.model and last_after != last_before:
            problems.append("the config was kept but the record now claims another adoption")
    elif early:
        # Outside the skill's handlers: Python's start-up, or its finalisation after the run was over.
        tally.note(f"{name}: came during Python's start-up or exit (exit {rc})")
        kept = after.raw == before.raw and last_after == last_before
        landed = after.model == target and isinstance(last_after, dict) and last_after.get("adopted") == target
        if not (kept or landed):
            problems.append(f"killed by {name} outside the skill's handlers (exit {rc}), and the config and the "
                            "record disagree")
    elif rc == EXPECTED_ON_SIGNAL[sig]:
        tally.note(f"{name}: stopped cleanly ({rc})")
        if after.raw != before.raw:
            problems.append(f"exit {rc} but the config is not byte-for-byte as before")
        if last_after != last_before:
            problems.append(f"exit {rc} but the adoption record changed ({last_before} -> {last_after})")
    elif rc == 0:
        tally.note(f"{name}: had already finished (0)")
        if after.model != target:
            problems.append(f"exit 0 but model.default is {after.model!r}, not {target!r}")
    else:
        problems.append(f"exit {rc} after {name} (expected {EXPECTED_ON_SIGNAL[sig]} or 0): {err.strip()[-300:]}")
    return problems, f"{argv[0]} {name} at {delay:.3f}s"


def with_suppressed_kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def clean_run(env: dict[str, str], home: Path, model: str, tally: Tally) -> None:
    """An un-killed `default set`: it must succeed and leave no temp file of ours behind."""
    before = config_state(home)
    result = buy(["default", "set", model, "--no-canary", "--json"], env)
    after = config_state(home)
    problems = config_problems(before, after, {before.model, model})
    if result.returncode != 0:
        problems.append(f"clean run exited {result.returncode}: {result.stderr.strip()[-300:]}")
    elif after.model != model:
        problems.append(f"clean run exit 0 but model.default is {after.model!r}")
    leftovers = our_temps(home)
    if leftovers:
        problems.append(f"temp files survived a locked run: {leftovers}")
    problems += record_problems(home)
    tally.run(problems, "clean run")


def median_duration(env: dict[str, str], home: Path, argv_for, samples: int = 3) -> float:
    durations = []
    for i in range(samples):
        started = time.monotonic()
        result = buy(argv_for(i), env)
        durations.append(time.monotonic() - started)
        if result.returncode != 0:
            raise RuntimeError(f"the un-killed run failed ({result.returncode}): {result.stderr[-500:]}")
    return statistics.median(durations)


# ------------------------------------------------------------------------------ the crash loops

def crash_default_set(stack_env: dict[str, str], workdir: Path, models: tuple[str, str], *, kills: int,
                      terms: int, ints: int, fallback: bool, rng: random.Random) -> Tally:
    """`default set` between two models, killed at random points (SIGKILL, SIGTERM, SIGINT)."""
    writer = "fallback writer" if fallback else "Hermes CLI"
    tally = Tally(f"kill default set ({writer})")
    home = agent_home(stack_env, workdir / ("fallback" if fallback else "cli"))
    env = run_env(stack_env, home, fallback=fallback)

    def argv(i: int) -> list[str]:
        return ["default", "set", models[i % 2], "--no-canary", "--json"]
    span = median_duration(env, home, argv, samples=4) * 1.1
    signals = [signal.SIGKILL] * kills + [signal.SIGTERM] * terms + [signal.SIGINT] * ints
    rng.shuffle(signals)
    for i, sig in enumerate(signals):
        current = config_state(home).model
        target = models[0] if current == models[1] else models[1]
        tally.run(*kill_run(env, home, ["default", "set", target, "--no-canary", "--json"], target, sig,
                            rng.uniform(0, span), tally))
        if i % 25 == 24:
            clean_run(env, home, models[i % 2], tally)
    clean_run(env, home, models[0], tally)
    tally.note("Hermes temp files left (.config_*.tmp, not ours to delete)", len(hermes_temps(home)))
    return tally


def owner(stack_env: dict[str, str], model: str) -> str | None:
    """The PurchaseRequest that buys `model`, if one does."""
    kube = KubeClient.from_settings(settings_mod.load(stack_env))
    return next((o["metadata"]["name"] for o in kube.list() if (o.get("spec") or {}).get("model") == model), None)


def purchase(stack_env: dict[str, str], name: str) -> tuple[dict, dict | None]:
    kube = KubeClient.from_settings(settings_mod.load(stack_env))
    obj = kube.get(name)
    live = requests.get(stack_env["X402_BUYER_URL"] + "/status", timeout=10).json().get(name)
    return obj, live


def converged(stack_env: dict[str, str], name: str, timeout: float = 60) -> tuple[dict, dict]:
    """The purchase once the controller and the buyer agree on it (a top-up is allowed again)."""
    deadline = time.monotonic() + timeout
    while True:
        obj, live = purchase(stack_env, name)
        status = obj.get("status") or {}
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
        if (ready and live is not None and status.get("observedGeneration") == obj["metadata"].get("generation")
                and live.get("remaining") == status.get("remaining")):
            return obj, live
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not converge within {timeout:g} s")
        time.sleep(0.2)


def pool_problems(obj: dict) -> list[str]:
    spec = obj.get("spec") or {}
    pool = spec.get("preSignedAuths") or []
    ids = [a.get("id") for a in pool]
    problems = []
    if len(set(ids)) != len(ids):
        problems.append("duplicate voucher ids in the pool")
    nonces = [json.dumps((a.get("payment") or {}).get("payload", {}).get("authorization", {}).get("nonce")) for a in pool]
    if len(set(nonces)) != len(nonces):
        problems.append("duplicate voucher nonces in the pool")
    if spec.get("count") != len(pool):
        problems.append(f"spec.count {spec.get('count')} != pool {len(pool)}")
    return problems


def crash_buy(stack_env: dict[str, str], workdir: Path, name: str, url: str, model: str, free_model: str, *,
              kills: int, terms: int, fallback: bool, rng: random.Random) -> Tally:
    """`buy NAME --set-default` (a top-up of one purchase), killed at random points."""
    writer = "fallback writer" if fallback else "Hermes CLI"
    tally = Tally(f"kill buy --set-default ({writer})")
    home = agent_home(stack_env, workdir / ("buy-fallback" if fallback else "buy-cli"))
    env = run_env(stack_env, home, fallback=fallback)
    alias = f"paid/{model}"
    argv = ["buy", name, "--endpoint", url, "--model", model, "--count", "1", "--set-default", "--no-canary",
            "--json"]

    def reset() -> None:
        converged(stack_env, name)
        if config_state(home).model != free_model:
            clean_run(env, home, free_model, tally)

    def timed(_: int) -> list[str]:
        reset()
        return argv
    span = median_duration(env, home, timed, samples=3) * 1.1
    signals = [signal.SIGKILL] * kills + [signal.SIGTERM] * terms
    rng.shuffle(signals)
    for sig in signals:
        reset()
        before_obj, before_live = converged(stack_env, name)
        before_tail = [a["id"] for a in before_obj["spec"]["preSignedAuths"]][-before_live["remaining"]:] \
            if before_live["remaining"] else []
        problems, label = kill_run(env, home, argv, alias, sig, rng.uniform(0, span), tally)
        obj, _ = converged(stack_env, name)
        problems += pool_problems(obj)
        ids = [a["id"] for a in obj["spec"]["preSignedAuths"]]
        if not set(before_tail) <= set(ids):
            problems.append("unspent vouchers were lost from the pool")
        grew = len(ids) - len(before_obj["spec"]["preSignedAuths"])
        tally.note("pool grew by 1 (the top-up landed)" if grew == 1 else f"pool grew by {grew}")
        tally.run(problems, label)
    reset()
    return tally


# ---------------------------------------------------------------------------------- concurrency

def concurrent_default_set(stack_env: dict[str, str], workdir: Path, models: list[str], n: int,
                           *, fallback: bool = False) -> Tally:
    """`n` runs of `default set` at once, over `models`: each exits 0, the config stays valid and holds
    one of the written values, and the record stays readable."""
    tally = Tally(f"{n} concurrent default set")
    home = agent_home(stack_env, workdir / "concurrent")
    env = run_env(stack_env, home, fallback=fallback)
    before = config_state(home)
    with ThreadPoolExecutor(max_workers=n) as pool:
        results = list(pool.map(lambda i: buy(["default", "set", models[i % len(models)], "--no-canary", "--json"],
                                              env), range(n)))
    after = config_state(home)
    shared = config_problems(before, after, set(models) | {before.model}) + record_problems(home)
    for result in results:
        problems = list(shared)
        if result.returncode != 0:
            problems.append(f"exit {result.returncode}: {result.stderr.strip()[-300:]}")
        if "Traceback" in result.stderr:
            problems.append("a traceback reached stderr")
        tally.run(problems, "concurrent default set")
    return tally


def concurrent_buys(stack_env: dict[str, str], name: str, url: str, model: str, n: int) -> Tally:
    """`n` top-ups of one purchase at once: no voucher lost or duplicated; the pool grows by exactly
    the vouchers the successful runs report; refusals (a racing top-up) sign nothing into the pool."""
    tally = Tally(f"{n} concurrent buy of one name")
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8",
           **stack_env}
    before_obj, before_live = converged(stack_env, name)
    remaining = before_live["remaining"]
    tail = [a["id"] for a in before_obj["spec"]["preSignedAuths"]][-remaining:] if remaining else []
    argv = ["buy", name, "--endpoint", url, "--model", model, "--count", "2", "--json"]
    with ThreadPoolExecutor(max_workers=n) as pool:
        results = list(pool.map(lambda _: buy(argv, env), range(n)))
    obj, live = converged(stack_env, name)
    pool_now = [a["id"] for a in obj["spec"]["preSignedAuths"]]
    added = 0
    shared = pool_problems(obj)
    if pool_now[:len(tail)] != tail:
        shared.append("the unspent vouchers from before are not kept in order at the head of the pool")
    for result in results:
        problems = list(shared)
        if "Traceback" in result.stderr:
            problems.append("a traceback reached stderr")
        try:
            doc = json.loads(result.stdout)
        except ValueError:
            doc = {}
        if result.returncode in (0, 3):
            added += int(doc.get("count") or 0)
            tally.note("topped up")
        elif result.returncode == 1:
            tally.note("refused while another top-up converged (nothing signed into the pool)")
        else:
            problems.append(f"exit {result.returncode}: {result.stderr.strip()[-300:]}")
        tally.run(problems, "concurrent buy")
    totals = []
    if len(pool_now) != remaining + added:
        totals.append(f"pool is {len(pool_now)} vouchers, expected {remaining} unspent + {added} reported")
    if live.get("remaining") != len(pool_now):
        totals.append(f"x402-buyer holds {live.get('remaining')} vouchers, the pool {len(pool_now)}")
    tally.run(totals, "the pool after all runs")
    return tally


def table(tallies: list[Tally]) -> str:
    width = max(len(t.scenario) for t in tallies) + 2
    lines = [f"{'scenario':<{width}}{'tried':>7}{'held':>7}", "-" * (width + 14)]
    for t in tallies:
        lines.append(f"{t.scenario:<{width}}{t.tried:>7}{t.held:>7}")
        for key, value in sorted(t.notes.items()):
            lines.append(f"    {key}: {value}")
        for broken in t.broken[:10]:
            lines.append(f"    BROKEN {broken}")
    total_tried, total_held = sum(t.tried for t in tallies), sum(t.held for t in tallies)
    lines += ["-" * (width + 14), f"{'total':<{width}}{total_tried:>7}{total_held:>7}"]
    return "\n".join(lines)


__all__ = ["Tally", "owner", "crash_default_set", "crash_buy", "concurrent_default_set", "concurrent_buys", "table",
           "converged", "agent_home"]
