"""Refusals that need no peer, run in-process through `cli.main` with the network and subprocesses off.

Each asserts the message, the exit code (and the JSON envelope), and that nothing was touched: the
run reached no socket and started no process, so no purchase, wallet or LiteLLM changed, and the
agent's config (where one is given) is byte-for-byte as before.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from helpers import file_state

URL = "http://seller.invalid/services/qwen"


# --- buy: names, URLs and flags that conflict (were stack tests in test_buy.py) ------------------

@pytest.mark.parametrize("args,code,message", [
    (["--count", "0"], 2, "expected a number >= 1"),
    (["--no-canary"], 2, "--no-canary only applies with --set-default"),
])
def test_bad_buy_arguments_are_refused_before_anything_is_signed(run_cli, offline, args, code, message):
    result = run_cli(["buy", "t-bad", "--endpoint", URL, "--model", "deepseek-v4-pro", *args, "--json"])
    assert result.returncode == code, result.stdout + result.stderr
    assert result.json["exit_code"] == code
    assert message in result.json["error"]["message"] + result.json["error"].get("hint", "")
    assert offline.attempts == []


@pytest.mark.parametrize("name,endpoint,message", [
    ("Bad_Name", URL, "not a valid Kubernetes name"),
    ("t-bad", "ftp://seller", "not an http(s) URL"),
])
def test_bad_buy_names_and_endpoints(run_cli, offline, name, endpoint, message):
    result = run_cli(["buy", name, "--endpoint", endpoint, "--model", "deepseek-v4-pro", "--json"])
    assert result.returncode in (1, 2)
    assert message in result.json["error"]["message"]
    assert offline.attempts == []


# --- pay and pay-agent (were stack tests in test_cmd_pay.py) -------------------------------------

@pytest.mark.parametrize("args, message", [
    (["pay", URL, "--type", "inference"], "needs --message TEXT or --data JSON"),
    (["pay", URL, "--type", "inference", "--data", "[1]"], "--data must be a JSON object"),
    (["pay", URL, "--type", "inference", "--message", "a", "--data", "{}"], "either --message or --data"),
    (["pay-agent", URL, "--type", "http", "--message", "a"], "--type http is for `pay`"),
    (["pay", "not-a-url"], "is not an http(s) URL"),
])
def test_pay_bad_input_is_a_usage_error_and_pays_nothing(run_cli, offline, args, message):
    result = run_cli(args)
    assert result.returncode == 2
    assert message in result.stderr
    assert offline.attempts == []


# --- process, balance (were stack tests in test_cmd_process.py and test_cmd_pay.py) --------------

def test_process_needs_a_name_or_all(run_cli, offline):
    res = run_cli(["process"])
    assert res.returncode == 2
    assert "give one purchase NAME or --all" in res.stderr
    assert offline.attempts == []


def test_balance_of_a_chain_without_known_tokens_fails(run_cli, offline):
    result = run_cli(["balance", "--chain", "sepolia"])
    assert result.returncode == 1
    assert "no known tokens on sepolia" in result.stderr
    unknown = run_cli(["balance", "--chain", "nowhere"])
    assert unknown.returncode == 1 and "Unknown chain 'nowhere'" in unknown.stderr
    assert offline.attempts == []


# --- default set: refusals before LiteLLM is asked (were stack tests in test_set_default.py) -----

def refused(run_cli, home: Path, *args: str, **env: str) -> dict:
    state = file_state(home / "config.yaml")
    result = run_cli(["default", "set", *args, "--json"], **env)
    assert result.returncode == 4, result.stdout + result.stderr
    assert file_state(home / "config.yaml") == state
    assert result.json["error"]["code"] == "default_not_changed"
    return result.json["error"]


def test_refuses_in_managed_mode(run_cli, offline, agent_home):
    assert "managed" in refused(run_cli, agent_home, "paid/deepseek-v4-pro", HERMES_MANAGED="1")["message"]
    (agent_home / ".managed").write_text("")
    assert "managed" in refused(run_cli, agent_home, "paid/deepseek-v4-pro")["message"]
    assert offline.attempts == []


@pytest.mark.parametrize("text,words", [("model: [unclosed\n  default: x", "YAML"),
                                        ("- a\n- b\n", "mapping"),
                                        ("model: 42\n", "model")])
def test_refuses_a_config_it_cannot_safely_edit(run_cli, offline, agent_home, text, words):
    (agent_home / "config.yaml").write_text(text)
    assert words in refused(run_cli, agent_home, "paid/deepseek-v4-pro")["message"]
    assert offline.attempts == []


@pytest.mark.parametrize("model", ["true", "123", " paid/x", "a${HOME}b"])
def test_default_set_refuses_a_name_hermes_would_coerce(run_cli, offline, agent_home, model):
    state = file_state(agent_home / "config.yaml")
    result = run_cli(["default", "set", model, "--json"])
    assert result.returncode == 2 and result.json["error"]["code"] == "bad_model_name"
    assert file_state(agent_home / "config.yaml") == state
    assert offline.attempts == []


def test_the_offline_guard_sees_a_run_that_tries_the_network(run_cli, offline):
    """The guard the refusals above rely on: a command that does reach out is caught doing so."""
    result = run_cli(["probe", URL, "--json"])
    assert result.returncode == 1 and offline.attempts


def test_default_show_reads_a_managed_config_without_writing_or_reaching_out(run_cli, offline, agent_home):
    """show is read-only, so managed mode (which refuses every write) does not stop it; it says so."""
    (agent_home / ".managed").write_text("")
    state = file_state(agent_home / "config.yaml")
    result = run_cli(["default", "show", "--json"])
    assert result.returncode == 0, result.stderr
    doc = result.json
    assert (doc["model"], doc["managed"], doc["adopted_by_buy_x402"]) == ("qwen3.5:9b", True, False)
    assert doc["config"] == str((agent_home / "config.yaml").resolve())
    assert file_state(agent_home / "config.yaml") == state and offline.attempts == []
