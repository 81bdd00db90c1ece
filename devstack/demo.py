"""The mission, end to end on the devstack, with every claim checked.

A chat with the agent (no model named) is answered by its free model; `buy ... --set-default`
adopts paid/<model>; the next chat, with no restart, is paid through paid/<model> and settles on the
local chain (the buyer's `spent` goes up, the seller's balance moves by the price); `default restore`
puts the free model back and the next chat is free again.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time

import requests

from . import config
from .parts.chain import token_balance
from .stack import REPO, Stack, down, log, up


class DemoFailed(RuntimeError):
    pass


def check(condition: bool, claim: str) -> None:
    if not condition:
        raise DemoFailed(claim)
    log(f"  ✓ {claim}")


def chat(stack: Stack, text: str) -> str:
    """One chat turn with the running agent through its OpenAI-compatible API server; no model named."""
    url = stack.env["HERMES_API_URL"].rstrip("/") + "/chat/completions"
    resp = requests.post(url, headers={"Authorization": f"Bearer {stack.env['HERMES_API_KEY']}"},
                         json={"messages": [{"role": "user", "content": text}]}, timeout=180)
    resp.raise_for_status()
    return resp.json()["choices"][0]["message"]["content"]


def usdc_balance(stack: Stack, owner: str) -> int:
    return token_balance(stack.env["ANVIL_RPC_URL"], config.USDC_ADDRESS, owner)


def buyer_status(stack: Stack) -> dict:
    return requests.get(stack.env["X402_BUYER_URL"].rstrip("/") + "/status", timeout=5).json()


def buy_py(stack: Stack, *args: str) -> dict:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(stack.dir), "LANG": "C.UTF-8", **stack.env}
    cmd = [sys.executable, str(REPO / "buy.py"), *args, "--json"]
    log("$ buy.py " + " ".join(args))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    sys.stderr.write("".join(f"    | {line}\n" for line in proc.stderr.splitlines()))
    if proc.returncode != 0:
        raise DemoFailed(f"buy.py {args[0]} exited {proc.returncode}: {proc.stdout.strip()}")
    return json.loads(proc.stdout)


def mission(stack: Stack) -> None:
    model = stack.env["SELLER_MODEL"]
    alias = f"paid/{model}"
    price = next(int(o["price"]) for o in config.OFFERS if o["model"] == model)
    pay_to = stack.info["chain"]["pay_to"]

    log("1. A chat with the agent, before buying anything")
    answer = chat(stack, "Hello! Which model are you?")
    log(f"   agent: {answer!r}")
    check("free answer" in answer, "the agent answered with its free model")

    log("2. The agent buys inference and adopts it as its own model")
    result = buy_py(stack, "buy", "demo-qwen", "--endpoint", stack.env["SELLER_URL"], "--model", model,
                    "--count", "5", "--auto-refill", "--set-default")
    check(result["set_default"]["model"] == alias and result["set_default"]["changed"],
          f"buy.py adopted {alias} (verified write, exit 0)")
    shown = buy_py(stack, "default", "show")
    check(shown["model"] == alias, f"default show reports {alias}")
    live = buyer_status(stack)["demo-qwen"]
    check((live["remaining"], live["spent"]) == (4, 1),
          f"the buyer holds 4 vouchers and counts 1 spent, the canary's (got {live['remaining']}, {live['spent']}): "
          "nothing left over from an earlier run")

    log("3. The next chat, no restart, is paid through the x402-buyer and settles on chain")
    spent_before = buyer_status(stack)["demo-qwen"]["spent"]
    balance_before = usdc_balance(stack, pay_to)
    answer = chat(stack, "And now, which model are you?")
    log(f"   agent: {answer!r}")
    check("paid answer" in answer, "the agent answered through the paid model")
    spent_after = buyer_status(stack)["demo-qwen"]["spent"]
    check(spent_after > spent_before, f"the buyer's spent went up ({spent_before} → {spent_after})")
    balance_after = usdc_balance(stack, pay_to)
    moved = balance_after - balance_before
    check(moved == price * (spent_after - spent_before),
          f"the seller's balance on anvil moved by {moved} atomic USDC = price × paid calls")

    log("4. Roll back")
    restored = buy_py(stack, "default", "restore")
    check(restored["model"] == config.FREE_MODEL, f"default restore put back {config.FREE_MODEL}")
    answer = chat(stack, "Back to you?")
    log(f"   agent: {answer!r}")
    check("free answer" in answer, "the next chat is free again")


def run_demo(directory: str) -> int:
    started = time.monotonic()
    stack = up(directory)
    try:
        mission(stack)
    except DemoFailed as exc:
        log(f"DEMO FAILED: {exc}")
        return 1
    finally:
        down(directory)
    log(f"demo done in {time.monotonic() - started:.0f} s")
    return 0
