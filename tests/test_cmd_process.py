"""`process` (auto-refill reconcile + default guardian) and `schedule`, against the devstack.

Each purchase here owns one model no other test buys (llama-4-scout, mistral-large-3, gemma-4-27b,
drift-model).
Most runs use `process NAME` so purchases of other tests cannot change what is asserted; the guardian
runs use `process --all`, as the cron job does. Two purchases carry a cost cap, so the module runs with
the CRD variant that declares spec.autoRefill.maxUnitPrice (the upstream CRD prunes it; `buy` then
refuses --cost-cap, see tests/test_cluster_refusals.py).
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest

from conftest import run_buy, stack_env
from helpers import (CAPPED, DRIFTED, closed_port, config_bytes, cost_cap_schema, drained_wallet, drift_purchase,
                     ensure_purchase, hermes_default, kube, live, offer, ready_for_its_generation,
                     seller_quotes_the_spec, settled, spend, spend_to, usdc_balance, wait)

REFILL = "refill-llama"
GUARDED = "guard-gemma"
BUYER_DOWN_MESSAGE = "x402-buyer status is unavailable; cannot make safe refill decisions."


# --------------------------------------------------------------------------------- shared helpers

@pytest.fixture(scope="module", autouse=True)
def cost_caps_kept(stack):
    with cost_cap_schema(stack):
        yield


# ------------------------------------------------------------------------------------ auto-refill

def test_auto_refill_tops_up_at_the_threshold_and_not_above(stack):
    env = stack_env(stack)
    ensure_purchase(stack, REFILL, "llama-4-scout", "--count", "3", "--auto-refill",
                    "--refill-threshold", "1", "--refill-count", "2")
    spend_to(stack, REFILL, "llama-4-scout", 2)
    before = settled(stack, REFILL)
    res = run_buy(["process", REFILL], env)
    assert res.returncode == 0, res.stderr
    assert res.stdout == ""  # above the threshold: nothing changed, nothing to deliver
    assert kube(stack).get(REFILL)["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    data = run_buy(["process", REFILL, "--json"], env).json
    assert data["purchases"] == [{"name": REFILL, "action": "skipped", "reason": "remaining 2 above threshold 1"}]

    spend(stack, "llama-4-scout", 1)
    before = settled(stack, REFILL)
    tail = before["spec"]["preSignedAuths"][-1:]
    res = run_buy(["process", REFILL], env)
    assert res.returncode == 0, res.stderr
    assert f"{REFILL}: refilled 2 vouchers" in res.stdout
    after = kube(stack).get(REFILL)
    pool = after["spec"]["preSignedAuths"]
    assert len(pool) == 3 and after["spec"]["count"] == 3  # active tail (1) + 2 new
    assert pool[:1] == tail and all(a not in before["spec"]["preSignedAuths"] for a in pool[1:])
    assert after["spec"]["payment"]["price"] == "1000"
    wait(lambda: live(stack)[REFILL]["remaining"] == 3, what="the refilled pool to go live")
    res = run_buy(["process", REFILL], env)
    assert (res.returncode, res.stdout) == (0, "")


def test_short_balance_skips_the_refill_with_its_reason_then_refills_once_funded(stack):
    env = stack_env(stack)
    ensure_purchase(stack, REFILL, "llama-4-scout", "--count", "3", "--auto-refill",
                    "--refill-threshold", "1", "--refill-count", "2")
    wait(lambda: live(stack)[REFILL]["remaining"] == 3 or live(stack)[REFILL]["remaining"] <= 1, what="stable pool")
    if live(stack)[REFILL]["remaining"] > 1:
        spend_to(stack, REFILL, "llama-4-scout", 1)
    with drained_wallet(stack, keep=1500):  # less than 2 × 1000
        before = settled(stack, REFILL)
        bytes_before = config_bytes(stack)
        res = run_buy(["process", REFILL], env)
        assert res.returncode == 0, res.stderr
        assert res.stdout == ""
        assert (f"{REFILL}: wallet balance 0.0015 USDC (1500 atomic) below refill cost 0.002 USDC (2000 atomic)"
                in res.stderr)
        assert kube(stack).get(REFILL)["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
        assert config_bytes(stack) == bytes_before
        action = run_buy(["process", REFILL, "--json"], env).json["purchases"][0]
        assert action["action"] == "skipped" and action["reason"].startswith("wallet balance 0.0015 USDC")
    res = run_buy(["process", REFILL], env)
    assert res.returncode == 0 and f"{REFILL}: refilled 2 vouchers" in res.stdout, res.stderr


def test_price_above_the_cost_cap_skips_the_refill_with_its_reason(stack):
    env = stack_env(stack)
    ensure_purchase(stack, CAPPED, "mistral-large-3", "--count", "3", "--auto-refill", "--refill-threshold", "1",
                    "--refill-count", "2", "--cost-cap", "0.001 USDC")
    if live(stack)[CAPPED]["remaining"] > 1:
        spend_to(stack, CAPPED, "mistral-large-3", 1)
    before = settled(stack, CAPPED)
    assert before["spec"]["autoRefill"]["maxUnitPrice"] == "1000"
    res = run_buy(["process", CAPPED], env)
    assert res.returncode == 0, res.stderr
    assert res.stdout == ""
    assert (f"{CAPPED}: seller price 0.0015 USDC (1500 atomic) exceeds cost cap 0.001 USDC (1000 atomic); "
            "skipping refill") in res.stderr
    assert kube(stack).get(CAPPED)["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    data = run_buy(["process", CAPPED, "--json"], env).json
    assert data["exit_code"] == 0 and data["refilled"] == 0 and data["changed"] is False
    assert data["purchases"][0]["reason"].startswith("seller price 0.0015 USDC (1500 atomic) exceeds cost cap")


def test_a_moved_seller_price_is_capped_then_followed_and_written_to_the_spec(stack):
    env = stack_env(stack)
    _, price_file = drift_purchase(stack)
    spend_to(stack, DRIFTED, "drift-model", 1)
    before = settled(stack, DRIFTED)
    assert before["spec"]["payment"]["price"] == "1000"
    try:
        price_file.write_text("2500")  # above the cap: the refill waits, nothing is signed or written
        res = run_buy(["process", DRIFTED], env)
        assert (res.returncode, res.stdout) == (0, ""), res.stderr
        assert (f"{DRIFTED}: seller price 0.0025 USDC (2500 atomic) exceeds cost cap 0.002 USDC (2000 atomic); "
                "skipping refill") in res.stderr
        assert kube(stack).get(DRIFTED)["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]

        price_file.write_text("1500")  # under the cap: refill at the seller's new quote
        res = run_buy(["process", DRIFTED, "--json"], env)
        assert res.returncode == 0, res.stderr
        action = res.json["purchases"][0]
        # The unspent voucher signed at 1000 is dropped: the seller now matches 1500 exactly and would refuse
        # it, and the x402-buyer puts a refused voucher back at the head of its pool, blocking the new ones.
        assert action["action"] == "refilled" and action["count"] == 2 and action["pool"] == 2
        assert action["dropped"] == 1
        assert action["price_moved"] == {"from": "1000", "to": "1500"}
        assert action["cost"]["atomic"] == "3000"
        assert (f"{DRIFTED}: seller price moved 0.001 USDC (1000 atomic) → 0.0015 USDC (1500 atomic); "
                "refilling at the seller's quote") in res.stderr
        assert f"{DRIFTED}: dropping 1 unspent voucher(s) signed at another price" in res.stderr
        after = kube(stack).get(DRIFTED)
        pool = after["spec"]["preSignedAuths"]
        assert after["spec"]["payment"]["price"] == "1500"  # so the controller's probe agrees (§18.6)
        assert not {a["id"] for a in pool} & {a["id"] for a in before["spec"]["preSignedAuths"]}
        assert [a["payment"]["payload"]["authorization"]["value"] for a in pool] == ["1500", "1500"]
        assert all(a["payment"]["accepted"]["amount"] == "1500" for a in pool)
        # The controller re-probes the seller for the new generation and finds the price it expects.
        wait(lambda: ready_for_its_generation(kube(stack).get(DRIFTED)), what="Ready for the refilled spec")
        wait(lambda: live(stack)[DRIFTED]["remaining"] == 2, what="the refilled pool to go live")
        # And the cluster can spend it: a paid call settles the new price (spend checks 1 × 1500 on chain).
        spend(stack, "drift-model", 1)
    finally:
        seller_quotes_the_spec(stack)


def _set_refill_threshold(stack, threshold: int) -> dict:
    """Change the purchase's refill threshold and wait until the controller has it Ready again.

    Like every spec change the skill makes, it keeps only the vouchers the buyer has not spent: the
    controller's first Ready for a new generation needs the live pool to equal the spec's vouchers."""
    obj = kube(stack).get(DRIFTED)
    if obj["spec"]["autoRefill"]["threshold"] != threshold:
        obj["spec"]["autoRefill"]["threshold"] = threshold
        remaining = live(stack)[DRIFTED]["remaining"]
        obj["spec"]["preSignedAuths"] = obj["spec"]["preSignedAuths"][len(obj["spec"]["preSignedAuths"]) - remaining:]
        obj["spec"]["count"] = len(obj["spec"]["preSignedAuths"])
        kube(stack).replace(obj)
    wait(lambda: ready_for_its_generation(kube(stack).get(DRIFTED)), what="Ready for the new threshold")
    return settled(stack, DRIFTED)


@pytest.mark.parametrize("quote, message", [
    ("abc", "payment option 1 in the 402 has amount 'abc', not a positive integer of atomic units"),
    (None, "the seller answered HTTP 500, expected 402 Payment Required"),
], ids=["malformed-402", "seller-failing"])
def test_a_failing_seller_fails_the_refill_with_its_message_and_changes_nothing(stack, quote, message):
    env = stack_env(stack)
    _, price_file = drift_purchase(stack)
    seller_quotes_the_spec(stack)
    before = _set_refill_threshold(stack, 1000)  # a refill is due now, whatever the pool holds
    wallet = stack.info["chain"]["agent_address"]
    balance, bytes_before = usdc_balance(stack, wallet), config_bytes(stack)
    try:
        if quote is None:
            price_file.unlink()  # the seller's price lookup raises: it answers 500
        else:
            price_file.write_text(quote)  # the seller's 402 carries an amount that is no number
        res = run_buy(["process", DRIFTED], env)
        assert res.returncode == 1 and res.stdout == "", res.stderr
        assert f"{DRIFTED}: reconcile failed: " in res.stderr and message in res.stderr
        assert f"process failed: {DRIFTED}: reconcile failed: " in res.stderr
        data = run_buy(["process", DRIFTED, "--json"], env).json
        assert data["exit_code"] == 1 and data["refilled"] == 0 and data["changed"] is False
        assert data["purchases"][0]["action"] == "failed" and message in data["purchases"][0]["reason"]
        assert kube(stack).get(DRIFTED)["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
        assert (usdc_balance(stack, wallet), config_bytes(stack)) == (balance, bytes_before)
    finally:
        seller_quotes_the_spec(stack)
        _set_refill_threshold(stack, 1)


def test_buyer_down_fails_with_its_message_and_changes_nothing(stack):
    ensure_purchase(stack, CAPPED, "mistral-large-3", "--count", "3", "--auto-refill", "--refill-threshold", "1",
                    "--refill-count", "2", "--cost-cap", "0.001 USDC")
    env = stack_env(stack, X402_BUYER_URL=f"http://127.0.0.1:{closed_port()}")
    rv = settled(stack, CAPPED)["metadata"]["resourceVersion"]
    bytes_before = config_bytes(stack)
    res = run_buy(["process", "--all"], env)
    assert res.returncode == 1
    assert res.stdout == ""
    assert BUYER_DOWN_MESSAGE in res.stderr
    res = run_buy(["process", "--all", "--json"], env)
    assert res.returncode == 1 and res.json["error"]["message"] == BUYER_DOWN_MESSAGE
    res = run_buy(["maintain"], env)
    assert res.returncode == 1 and "maintain is deprecated; running process --all" in res.stderr
    assert kube(stack).get(CAPPED)["metadata"]["resourceVersion"] == rv
    assert config_bytes(stack) == bytes_before


# ------------------------------------------------------------------------------------- guardian

def test_guardian_restores_the_previous_default_when_the_adopted_pool_is_spent(stack):
    env = stack_env(stack)
    free = hermes_default(stack)
    assert not free.startswith("paid/")
    res = run_buy(["buy", GUARDED, "--endpoint", offer(stack, "gemma-4-27b")["url"], "--model", "gemma-4-27b",
                   "--count", "2", "--set-default"], env)
    assert res.returncode == 0, res.stderr
    assert hermes_default(stack) == "paid/gemma-4-27b"
    wait(lambda: live(stack).get(GUARDED, {}).get("remaining") == 1, what="the canary to spend one voucher")

    bytes_before = config_bytes(stack)
    res = run_buy(["process", GUARDED], env)  # one voucher left: nothing to do
    assert (res.returncode, res.stdout) == (0, ""), res.stderr
    assert config_bytes(stack) == bytes_before

    spend(stack, "gemma-4-27b", 1)
    res = run_buy(["process", "--all", "--json"], env)
    assert res.returncode == 0, res.stderr
    guardian = res.json["guardian"]
    assert guardian["action"] == "restored" and guardian["model"] == free and guardian["purchase"] == GUARDED
    assert "remaining 0" in guardian["reason"]
    assert hermes_default(stack) == free
    res = run_buy(["process", "--all"], env)  # idempotent: nothing more to restore
    assert res.returncode == 0, res.stderr
    assert "default:" not in res.stdout
    assert hermes_default(stack) == free


def test_guardian_leaves_a_default_someone_else_set_alone_and_says_so_once(stack):
    env = stack_env(stack)
    free = hermes_default(stack)
    ensure_purchase(stack, GUARDED, "gemma-4-27b", "--count", "2")
    res = run_buy(["buy", GUARDED, "--endpoint", offer(stack, "gemma-4-27b")["url"], "--model", "gemma-4-27b",
                   "--count", "2"], env)  # top up, then adopt without a canary
    assert res.returncode == 0, res.stderr
    res = run_buy(["default", "set", "paid/gemma-4-27b", "--no-canary"], env)
    assert res.returncode == 0, res.stderr
    subprocess.run([stack.env["HERMES_BIN"], "config", "set", "model.default", free], check=True,
                   capture_output=True, timeout=60, env=env)
    assert hermes_default(stack) == free
    spend_to(stack, GUARDED, "gemma-4-27b", 0)

    bytes_before = config_bytes(stack)
    res = run_buy(["process", "--all"], env)
    assert res.returncode == 0, res.stderr
    assert "set by someone else since buy-x402 adopted 'paid/gemma-4-27b'; left alone" in res.stdout
    assert config_bytes(stack) == bytes_before
    res = run_buy(["process", "--all", "--json"], env)
    assert res.json["guardian"]["action"] == "left_alone" and res.json["guardian"]["recorded"] is False
    res = run_buy(["process", "--all"], env)
    assert res.returncode == 0 and "default:" not in res.stdout
    assert config_bytes(stack) == bytes_before
    state = json.loads((Path(stack.env["HERMES_HOME"]) / "buy-x402" / "state.json").read_text())
    adoption = state["history"][-1]
    assert adoption["adopted"] == "paid/gemma-4-27b"
    events = [e for e in state["events"] if e["kind"] == "default_changed_elsewhere"
              and e["adoption_at"] == adoption["at"]]
    assert len(events) == 1 and events[0]["current"] == free and events[0]["purchase"] == GUARDED


# ------------------------------------------------------------------------------------- schedule

@pytest.fixture
def tmp_hermes_home(stack, tmp_path):
    """A copy of the agent's Hermes home, so the real gateway's cron never runs the test job."""
    home = tmp_path / "hermes"
    home.mkdir()
    shutil.copy2(Path(stack.env["HERMES_HOME"]) / "config.yaml", home / "config.yaml")
    return home


def _cron_names(stack, home: Path) -> list[str]:
    env = stack_env(stack, HERMES_HOME=str(home))
    out = subprocess.run([stack.env["HERMES_BIN"], "cron", "list", "--all"], capture_output=True, text=True,
                         timeout=60, env=env).stdout
    return [line.split(":", 1)[1].strip() for line in out.splitlines() if line.strip().startswith("Name:")]


def _hermes(stack, home: Path, *args: str) -> str:
    res = subprocess.run([stack.env["HERMES_BIN"], *args], capture_output=True, text=True, timeout=120,
                         env=stack_env(stack, HERMES_HOME=str(home)))
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_schedule_creates_one_script_mode_cron_job_and_remove_removes_it(stack, tmp_hermes_home):
    # An empty namespace: when Hermes runs the job below, `process --all` has nothing to change.
    env = stack_env(stack, HERMES_HOME=str(tmp_hermes_home), AGENT_NAMESPACE="buy-x402-empty")
    res = run_buy(["schedule", "--json"], env)
    assert res.returncode == 0, res.stderr
    assert res.json["created"] is True and res.json["job"] == "buy-x402 process"
    script = tmp_hermes_home / "scripts" / "buy-x402-process.sh"
    assert res.json["script"] == str(script)
    assert stat.S_IMODE(script.stat().st_mode) == 0o700
    text = script.read_text()
    assert f"export HERMES_HOME={tmp_hermes_home}" in text
    assert f"export X402_BUYER_URL={stack.env['X402_BUYER_URL']}" in text
    assert text.rstrip().endswith("buy.py process --all")
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    assert _cron_names(stack, tmp_hermes_home) == ["buy-x402 process"]
    jobs = (tmp_hermes_home / "cron" / "jobs.json").read_text()
    assert '"no_agent": true' in jobs and '"script": "buy-x402-process.sh"' in jobs

    # Hermes itself runs the job: the script works from cron's environment and is silent.
    job_id = res.json["id"]
    _hermes(stack, tmp_hermes_home, "cron", "run", job_id)
    _hermes(stack, tmp_hermes_home, "cron", "tick")
    assert "completed" in _hermes(stack, tmp_hermes_home, "cron", "runs", job_id)
    report = sorted((tmp_hermes_home / "cron" / "output" / job_id).glob("*.md"))[-1].read_text()
    assert "silent (empty output)" in report

    res = run_buy(["schedule"], env)
    assert res.returncode == 0, res.stderr
    assert "Already scheduled" in res.stdout
    assert _cron_names(stack, tmp_hermes_home) == ["buy-x402 process"]

    res = run_buy(["schedule", "--remove"], env)
    assert res.returncode == 0, res.stderr
    assert "Removed the Hermes cron job 'buy-x402 process'." in res.stdout
    assert _cron_names(stack, tmp_hermes_home) == [] and not script.exists()
    res = run_buy(["schedule", "--remove", "--json"], env)
    assert res.returncode == 0 and res.json["removed"] is False


def test_schedule_without_a_hermes_cli_fails_and_creates_nothing(stack, tmp_hermes_home):
    env = stack_env(stack, HERMES_HOME=str(tmp_hermes_home), HERMES_BIN=str(tmp_hermes_home / "no-such-hermes"))
    res = run_buy(["schedule"], env)
    assert res.returncode == 1
    assert "cannot run the Hermes CLI" in res.stderr
    assert not (tmp_hermes_home / "cron").exists()
    assert os.listdir(tmp_hermes_home) == ["config.yaml"]


# ------------------------------------------------------------------- spendable (no stack needed)

def _auth(valid_before: int) -> dict:
    return {"id": str(valid_before), "payment": {"payload": {"authorization": {"validBefore": str(valid_before)}}}}


def test_a_pool_whose_remaining_vouchers_all_expired_is_not_spendable():
    from buy_x402.commands.process import _spendable
    now = int(time.time())
    spent, old, fresh = _auth(now - 50), _auth(now - 10), _auth(now + 3600)
    obj = {"spec": {"preSignedAuths": [spent, old, old]}}
    assert _spendable(obj, {"remaining": 2}) == (False, "all 2 remaining vouchers have expired")
    assert _spendable({"spec": {"preSignedAuths": [spent, old, fresh]}}, {"remaining": 2}) == (True, "")
    assert _spendable(obj, {"remaining": 0}) == (False, "its pool is spent: remaining 0")
    assert _spendable(None, None) == (False, "its PurchaseRequest no longer exists")
    never = {"spec": {"preSignedAuths": [_auth(4294967295)]}}  # "never" is not a deadline
    assert _spendable(never, {"remaining": 1}) == (True, "")


def test_process_of_an_unknown_purchase_fails_listing_the_names(stack):
    ensure_purchase(stack, CAPPED, "mistral-large-3", "--count", "3", "--auto-refill", "--refill-threshold", "1",
                    "--refill-count", "2", "--cost-cap", "0.001 USDC")
    res = run_buy(["process", "no-such-purchase"], stack_env(stack))
    assert res.returncode == 1 and res.stdout == ""
    assert "no purchase named 'no-such-purchase'; existing purchases: " in res.stderr and CAPPED in res.stderr
