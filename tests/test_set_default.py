"""`buy --set-default` and `default show|set|restore` against the real Hermes agent, LiteLLM and devstack."""
from __future__ import annotations

import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from conftest import run_buy, stack_env
from devstack import config
from helpers import (DRIFTED, agent_chat, buyer_status, config_path, cost_cap_schema, drift_purchase, file_state,
                     kube_get, litellm_chat, offer, seller_quotes_the_spec, usdc_balance)

MODEL = "deepseek-v4-pro"
ALIAS = f"paid/{MODEL}"
NAME = "t-deepseek"


def hermes_get(stack, home: str | None = None) -> str:
    env = stack_env(stack, HERMES_HOME=home) if home else stack_env(stack)
    proc = subprocess.run([stack.env["HERMES_BIN"], "config", "get", "model.default"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def hermes_loader(stack) -> str:
    """The model as Hermes' own config loader (in its own venv) resolves it, in a fresh process."""
    python = str(Path(stack.env["HERMES_BIN"]).parent / "python")
    code = ("from hermes_cli.config import load_config; m = load_config()['model']; "
            "print(m.get('default') if isinstance(m, dict) else m)")
    proc = subprocess.run([python, "-c", code], env=stack_env(stack), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1]


def test_the_mission_adopt_chat_paid_restore_chat_free(stack):
    path = config_path(stack)
    before_bytes = path.read_bytes()
    before = yaml.safe_load(before_bytes)
    mode_before = file_state(path)[1]
    assert hermes_get(stack) == config.FREE_MODEL
    assert "free answer" in agent_chat(stack, "hello")
    pay_to, price = stack.info["chain"]["pay_to"], int(offer(stack, MODEL)["price"])
    seller_at_start = usdc_balance(stack, pay_to)

    result = run_buy(["buy", NAME, "--endpoint", offer(stack, MODEL)["url"], "--model", MODEL, "--count", "4",
                      "--auto-refill", "--set-default", "--json"], stack_env(stack))
    assert result.returncode == 0, result.stderr
    adopted = result.json["set_default"]
    assert adopted["model"] == ALIAS and adopted["previous"] == config.FREE_MODEL and adopted["changed"]
    assert adopted["canary"]["spent_voucher"] is True
    assert adopted["rollback"] == "buy.py default restore"
    assert "spends one voucher" in result.stderr
    # Where the time went: every phase, none negative, their sum within the total; the Hermes CLI's runs
    # (config set, cron list/create) inside write-default and schedule.
    timings = assert_sane_timings(result.json["timings"], ["probe", "wallet", "write", "sign", "ready",
                                                            "write-default", "canary", "verify", "schedule"])
    assert 0 < timings["agent_cli"] <= timings["write-default"] + timings["schedule"]

    # Hermes itself now reads the paid model; nothing else in the file moved.
    assert hermes_get(stack) == ALIAS
    assert hermes_loader(stack) == ALIAS
    after = yaml.safe_load(path.read_bytes())
    assert after["model"].pop("default") == ALIAS
    before["model"].pop("default")
    assert after == before
    assert file_state(path)[1] == mode_before == 0o600
    # The canary spent exactly one voucher.
    live = buyer_status(stack)[NAME]
    assert live["spent"] == 1 and live["remaining"] == 3
    assert usdc_balance(stack, pay_to) - seller_at_start == price  # the canary, settled on chain

    # The live proof: the next chat with the running agent is paid and settles on chain.
    seller_before = usdc_balance(stack, pay_to)
    answer = agent_chat(stack, "which model answers now?")
    assert f"paid answer from {MODEL}" in answer
    spent = buyer_status(stack)[NAME]["spent"]
    assert spent >= 2
    assert usdc_balance(stack, pay_to) - seller_before == price * (spent - 1)

    shown = run_buy(["default", "show", "--json"], stack_env(stack))
    assert shown.returncode == 0
    assert shown.json["model"] == ALIAS and shown.json["adopted_by_buy_x402"] is True
    assert shown.json["purchase"] == NAME and shown.json["previous"] == config.FREE_MODEL
    assert shown.json["live"]["spent"] == spent

    restored = run_buy(["default", "restore", "--json"], stack_env(stack))
    assert restored.returncode == 0, restored.stderr
    assert restored.json["model"] == config.FREE_MODEL and restored.json["replaced"] == ALIAS
    assert hermes_get(stack) == config.FREE_MODEL
    assert yaml.safe_load(path.read_bytes()) == yaml.safe_load(before_bytes)
    assert "free answer" in agent_chat(stack, "and now?")
    # A second restore is refused and changes nothing. Which refusal depends on the history other tests
    # left: none at all, or an older adoption whose default someone else has changed since.
    state = file_state(path)
    history = [h for h in read_state_file(stack).get("history", []) if h.get("status") == "applied"]
    again = run_buy(["default", "restore", "--json"], stack_env(stack))
    assert again.returncode == 4
    expected = "left alone" if history else "no adoption"
    assert expected in again.json["error"]["message"]
    assert file_state(path) == state

    # --auto-refill with --set-default scheduled the guardian; remove it so it cannot act mid-suite.
    assert result.json["schedule"]["job"] == "buy-x402 process"
    removed = run_buy(["schedule", "--remove", "--json"], stack_env(stack))
    assert removed.returncode == 0 and removed.json["removed"], removed.stderr


# --- refusals: each exits 4, names its cause, and leaves the file Hermes reads byte for byte -----------

@pytest.fixture()
def bought(stack):
    """paid/deepseek-v4-pro is published by a serving purchase (the mission test makes it; alone, buy it)."""
    if kube_get(stack, NAME) is None:
        result = run_buy(["buy", NAME, "--endpoint", offer(stack, MODEL)["url"], "--model", MODEL, "--count", "2",
                          "--json"], stack_env(stack))
        assert result.returncode == 0, result.stderr
    return ALIAS


def assert_sane_timings(timings: dict, phases: list[str]) -> dict:
    """`timings` has exactly `phases` (in the order they began), each a non-negative number of seconds,
    and a total no smaller than their sum; `agent_cli` (optional) is not counted as a phase."""
    assert [k for k in timings if k not in ("total", "agent_cli")] == phases, timings
    assert all(isinstance(v, (int, float)) and v >= 0 for v in timings.values()), timings
    assert sum(timings[p] for p in phases) <= timings["total"] + 0.005 * len(phases), timings
    return timings


def read_state_file(stack) -> dict:
    import json
    path = Path(stack.env["HERMES_HOME"]) / "buy-x402" / "state.json"
    return json.loads(path.read_text()) if path.exists() else {}


def tmp_home(stack, tmp_path: Path, text: str | None = None, **model_overrides) -> Path:
    """A HERMES_HOME holding a copy of the agent's config (optionally changed), mode 0600."""
    home = tmp_path / "hermes"
    home.mkdir(mode=0o700)
    data = yaml.safe_load(config_path(stack).read_text())
    data["model"].update(model_overrides)
    (home / "config.yaml").write_text(text if text is not None else yaml.safe_dump(data, sort_keys=False))
    (home / "config.yaml").chmod(0o600)
    return home


def refused(stack, home: Path, *args: str, **env) -> dict:
    state = file_state(home / "config.yaml")
    result = run_buy(["default", "set", *args, "--json"], stack_env(stack, HERMES_HOME=str(home), **env))
    assert result.returncode == 4, result.stdout + result.stderr
    assert file_state(home / "config.yaml") == state
    assert result.json["error"]["code"] == "default_not_changed"
    assert result.json["timings"]["total"] >= 0  # a refusal says where its time went too
    return result.json["error"]


class _Answer(BaseHTTPRequestHandler):
    status, body = 500, b"boom"

    def do_GET(self):  # noqa: N802
        self.send_response(self.status)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    do_POST = do_GET

    def log_message(self, *a):
        pass


@pytest.fixture()
def broken_llm():
    """A real HTTP peer answering like a broken LiteLLM (5xx or garbage), on loopback."""
    servers = []

    def start(status: int, body: bytes) -> str:
        handler = type("H", (_Answer,), {"status": status, "body": body})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/v1"
    yield start
    for server in servers:
        server.shutdown()


# Managed mode and a config it cannot safely edit are refused before LiteLLM is asked: test_cli.py.

def test_refuses_when_litellm_is_unreachable(stack, tmp_path):
    home = tmp_home(stack, tmp_path, base_url="http://127.0.0.1:9/v1")
    assert "LiteLLM" in refused(stack, home, ALIAS)["message"] or "reach" in refused(stack, home, ALIAS)["message"]


def test_refuses_on_litellm_401_without_leaking_the_key(stack, tmp_path):
    home = tmp_home(stack, tmp_path, api_key="")
    err = refused(stack, home, ALIAS)
    assert "401" in err["message"]
    assert config.LITELLM_MASTER_KEY not in str(err)


@pytest.mark.parametrize("status,body,words", [(500, b"boom", "500"), (200, b"<html>not json", "JSON")])
def test_refuses_on_litellm_5xx_or_garbage(stack, tmp_path, broken_llm, status, body, words):
    home = tmp_home(stack, tmp_path, base_url=broken_llm(status, body))
    assert words in refused(stack, home, ALIAS)["message"]


def test_refuses_a_model_litellm_does_not_list(stack, tmp_path):
    home = tmp_home(stack, tmp_path)
    assert "does not list paid/hidden-model" in refused(stack, home, "paid/hidden-model")["message"]


def test_refuses_a_listed_model_nobody_bought(stack, tmp_path):
    home = tmp_home(stack, tmp_path)
    assert "no PurchaseRequest" in refused(stack, home, "paid/kimi-k3")["message"]


def test_refuses_when_the_canary_fails_on_an_empty_pool(stack, tmp_path):
    result = run_buy(["buy", "t-glm", "--endpoint", offer(stack, "glm-5")["url"], "--model", "glm-5",
                      "--count", "1", "--json"], stack_env(stack))
    assert result.returncode == 0, result.stderr
    assert litellm_chat(stack, "paid/glm-5").status_code == 200   # spends the only voucher
    assert buyer_status(stack)["t-glm"]["remaining"] == 0
    home = tmp_home(stack, tmp_path)
    assert "canary" in refused(stack, home, "paid/glm-5")["message"]


def test_refuses_when_the_canary_fails_on_a_failing_seller(stack, tmp_path):
    with cost_cap_schema(stack):  # the shared drift purchase is bought with a cost cap
        _, price_file = drift_purchase(stack)
    seller_quotes_the_spec(stack)
    assert buyer_status(stack)[DRIFTED]["remaining"] > 0  # vouchers to spend: only the seller is wrong
    spent = buyer_status(stack)[DRIFTED]["spent"]
    home = tmp_home(stack, tmp_path)
    price_file.unlink()  # the seller's price lookup raises: every request to this offer gets a 500
    try:
        error = refused(stack, home, "paid/drift-model")
    finally:
        seller_quotes_the_spec(stack)
    assert error["data"]["step"] == "canary" and "paid/drift-model answered HTTP 500" in error["message"]
    assert buyer_status(stack)[DRIFTED]["spent"] == spent  # nothing was paid for


def test_adopting_through_the_fallback_writer_when_the_hermes_cli_is_missing(stack, tmp_path, bought):
    home = tmp_home(stack, tmp_path)
    mode = file_state(home / "config.yaml")[1]
    result = run_buy(["default", "set", ALIAS, "--no-canary", "--json"],
                     stack_env(stack, HERMES_HOME=str(home), HERMES_BIN=str(tmp_path / "no-hermes")))
    assert result.returncode == 0, result.stderr
    assert result.json["write"]["method"] == "fallback"
    timings = assert_sane_timings(result.json["timings"], ["write-default", "verify"])  # no canary was sent
    assert "agent_cli" not in timings  # no Hermes CLI ran
    assert hermes_get(stack, str(home)) == ALIAS
    assert file_state(home / "config.yaml")[1] == mode


def test_not_ready_leaves_the_config_untouched(stack):
    import os
    import signal
    state = file_state(config_path(stack))
    controller = stack.pid("controller")
    os.kill(controller, signal.SIGSTOP)
    try:
        result = run_buy(["buy", "t-kimi", "--endpoint", offer(stack, "kimi-k3")["url"], "--model", "kimi-k3",
                          "--count", "1", "--timeout", "2", "--set-default", "--json"], stack_env(stack))
    finally:
        os.kill(controller, signal.SIGCONT)
    assert result.returncode == 3
    assert file_state(config_path(stack)) == state
    assert kube_get(stack, "t-kimi") is not None


def test_refuses_when_the_cli_and_the_fallback_both_fail(stack, tmp_path, bought):
    """An immutable Hermes home: the CLI cannot write its temp file and neither can the fallback."""
    home = tmp_home(stack, tmp_path)
    (home / ".buy-x402.lock").touch()              # the lock and the state record live outside the
    (home / "buy-x402").mkdir(mode=0o700)          # immutable directory's own entries
    subprocess.run(["chattr", "+i", str(home)], check=True)
    try:
        err = refused(stack, home, ALIAS, "--no-canary")
    finally:
        subprocess.run(["chattr", "-i", str(home)], check=True)
    assert "Hermes CLI exited" in err["message"] and "direct edit failed too" in err["message"]


def test_a_cli_that_dies_mid_write_is_undone(stack, tmp_path, bought):
    """The CLI leaves a broken file and exits 1; the fallback cannot parse it; the original comes back."""
    home = tmp_home(stack, tmp_path)
    fake = tmp_path / "hermes-dies"
    fake.write_text('#!/bin/sh\nprintf "model: [garbage" > "$HERMES_HOME/config.yaml"\nexit 1\n')
    fake.chmod(0o755)
    err = refused(stack, home, ALIAS, "--no-canary", HERMES_BIN=str(fake))
    assert "YAML" in err["message"]
