"""Every bad input of issue 9, refused in-process through `cli.main` with the network and subprocesses
off: its exit code, its one-line message with the fix, nothing sent or signed (no socket was even
tried), the agent's config byte for byte as before, and no traceback.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import AGENT_CONFIG as CONFIG, BUY
from helpers import file_state

URL = "http://seller.invalid/services/qwen"
SECRET = "s3cretpw"
BUY_ARGS = ["buy", "t-bad", "--endpoint", URL, "--model", "deepseek-v4-pro"]
PAY_ARGS = ["pay", URL, "--type", "inference", "--message", "hi"]


def refused(run_cli, offline, home: Path, argv: list[str], code: int, words: str, **env: str) -> dict:
    """Run `argv --json`; assert the exit code, the words, one line of message, no traceback, nothing
    reached out and the config untouched. The error object."""
    state = file_state(home / "config.yaml")
    result = run_cli([*argv, "--json"], **env)
    assert result.returncode == code, result.stdout + result.stderr
    error = result.json["error"]
    assert words in error["message"], error
    assert "\n" not in error["message"].split(":\n")[0] and error.get("hint"), error
    assert "Traceback" not in result.stderr
    assert offline.attempts == []
    assert file_state(home / "config.yaml") == state
    return error


# --- numbers: finite, in range, usage errors before anything is sent --------------------------------

@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1", "0", "1e308", "1e3", "86401", "", "٣٠", "0x10"])
@pytest.mark.parametrize("argv", [BUY_ARGS, PAY_ARGS], ids=["buy", "pay"])
def test_timeouts_must_be_finite_and_in_range(run_cli, offline, agent_home, argv, value):
    error = refused(run_cli, offline, agent_home, [*argv, f"--timeout={value}"], 2, "--timeout")
    assert "expected seconds above 0 and at most 86400" in error["message"]


@pytest.mark.parametrize("flag, value, words", [
    ("--count", "0", "expected a number >= 1"),
    ("--count", "-5", "expected a whole number"),
    ("--count", "1e3", "expected a whole number"),
    ("--count", "2501", "expected a number <= 2500"),
    ("--count", "9" * 5000, "expected a whole number"),
    ("--count", "١٢", "expected a whole number"),
    ("--count", "1_000", "expected a whole number"),
    ("--refill-threshold", "-1", "expected a whole number"),
    ("--refill-threshold", "99999", "expected a number <= 2500"),
    ("--refill-count", "0", "expected a number >= 1"),
    ("--payment-option", "0", "expected a number >= 1"),
    ("--payment-option", "nan", "expected a whole number"),
    ("--auth-ttl", "1e9", "not a number of seconds or 'never'"),
    ("--auth-ttl", "²", "not a number of seconds or 'never'"),
    ("--auth-ttl", "9" * 400, "not a number of seconds or 'never'"),
    ("--budget", "1e3", "scientific notation"),
    ("--budget", "nan", "is not an amount"),
    ("--budget", "inf USDC", "is not an amount"),
    ("--budget", "-1", "is not an amount"),
    ("--budget", "9" * 79, "larger than any token amount"),
    ("--budget", "1" * 200, "no amount needs more than"),
    ("--cost-cap", "2.5E-3", "scientific notation"),
])
def test_counts_ttls_and_amounts_are_checked_before_the_probe(run_cli, offline, agent_home, flag, value, words):
    error = refused(run_cli, offline, agent_home, [*BUY_ARGS, f"{flag}={value}"], 2, words)
    assert len(error["message"]) < 400  # a 5000-digit number is not echoed whole


def test_budget_in_scientific_notation_names_the_fix(run_cli, offline, agent_home):
    error = refused(run_cli, offline, agent_home, [*BUY_ARGS, "--budget", "1e3"], 2, "scientific notation")
    assert "write the number out, e.g. 1000" in error["message"]
    assert "is in E3" not in error["message"]


# --- credentials in URLs: refused for sellers, masked for peers -------------------------------------

@pytest.mark.parametrize("argv", [
    ["buy", "t-bad", "--endpoint", f"http://user:{SECRET}@seller.invalid/services/qwen", "--model", "m"],
    ["probe", f"https://user:{SECRET}@seller.invalid/services/qwen"],
    ["pay", f"http://user:{SECRET}@seller.invalid/x"],
    ["pay-agent", f"http://user:{SECRET}@seller.invalid/services/qwen", "--message", "hi"],
    ["buy", "t-bad", "--endpoint", f"http://{SECRET}@seller.invalid/services/qwen", "--model", "m"],
], ids=["buy", "probe", "pay", "pay-agent", "token-only"])
def test_seller_urls_with_credentials_are_refused_and_never_echoed(run_cli, offline, agent_home, argv):
    state = file_state(agent_home / "config.yaml")
    result = run_cli([*argv, "--json"])
    assert result.returncode == 2, result.stderr
    assert result.json["error"]["code"] == "url_credentials"
    assert "contains credentials" in result.json["error"]["message"]
    assert "remove the user:password@ part" in result.json["error"]["hint"]
    assert SECRET not in result.stdout + result.stderr
    assert offline.attempts == [] and file_state(agent_home / "config.yaml") == state


@pytest.mark.parametrize("endpoint, words", [
    ("http://[::1/services/x", "cannot be parsed"),
    ("http://seller:99999/services/x", "cannot be parsed"),
    ("http://seller/ services/x", "whitespace"),
    ("http:///services/x", "not an http(s) URL"),
    ("http://s/" + "a" * 3000, "more than 2048"),
])
def test_malformed_endpoints_are_usage_errors(run_cli, offline, agent_home, endpoint, words):
    refused(run_cli, offline, agent_home, ["buy", "t-bad", "--endpoint", endpoint, "--model", "m"], 2, words)


def test_env_masks_credentials_in_peer_urls(run_cli, offline):
    result = run_cli(["env", "--json"], REMOTE_SIGNER_URL=f"http://signer:{SECRET}@127.0.0.1:9",
                     ERPC_URL=f"https://{SECRET}@rpc.invalid/rpc")
    assert result.returncode == 0
    values = {row["env"]: row["value"] for row in result.json["settings"]}
    assert values["REMOTE_SIGNER_URL"] == "http://signer:****@127.0.0.1:9"
    assert values["ERPC_URL"] == "https://****@rpc.invalid/rpc"
    assert SECRET not in result.stdout + result.stderr


@pytest.mark.parametrize("argv, env", [
    (["balance"], "ERPC_URL"),
    (["list"], "X402_BUYER_URL"),
    (PAY_ARGS, "REMOTE_SIGNER_URL"),
])
def test_peer_credentials_are_masked_in_every_error(run_cli, offline, argv, env):
    """The peer cannot be reached (the network is off): the message names it, masked."""
    result = run_cli([*argv, "--json"], **{env: f"http://user:{SECRET}@127.0.0.1:9"})
    assert result.returncode == 1
    assert SECRET not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


# --- names and echoes ------------------------------------------------------------------------------

@pytest.mark.parametrize("argv", [["default", "set", "paid/" + "x" * 100_000],
                                  ["buy", "t-bad", "--endpoint", URL, "--model", "x" * 100_000],
                                  ["buy", "n" * 100_000, "--endpoint", URL, "--model", "m"]],
                         ids=["default-set", "buy-model", "buy-name"])
def test_a_100kb_name_is_refused_and_echoed_truncated(run_cli, offline, agent_home, argv):
    state = file_state(agent_home / "config.yaml")
    result = run_cli([*argv, "--json"])
    assert result.returncode == 2
    assert len(result.stdout) + len(result.stderr) < 4000
    assert "characters)" in result.json["error"]["message"]
    assert offline.attempts == [] and file_state(agent_home / "config.yaml") == state


# --- configs and records that must not be parsed, or not be fatal ----------------------------------

ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8)) + CONFIG


@pytest.mark.parametrize("content, words", [
    (ALIAS_BOMB, "aliases expand to more than"),
    ("model: &m {default: x, self: *m}\n", "refers to a node that contains it"),
    ("model: " + "[" * 5000 + "]" * 5000 + "\n", "nested"),
    ("model: " + "[" * 100 + "]" * 100 + "\n", "nested more than 64 levels deep"),
    ("model:\n  default: x\nwhen: 2001-02-30\n", "cannot be read"),
], ids=["alias-bomb", "recursive-alias", "deep-nesting", "nesting-past-the-limit", "bad-date"])
def test_hostile_yaml_is_refused_before_anything(run_cli, offline, agent_home, content, words):
    (agent_home / "config.yaml").write_text(content)
    error = refused(run_cli, offline, agent_home, ["default", "set", "paid/m"], 4, words)
    assert error["data"]["cause"]["code"] == "config_not_yaml"


def test_a_20mb_config_is_refused_unread(run_cli, offline, agent_home):
    with open(agent_home / "config.yaml", "a") as f:
        f.write("# padding\n" * (2 << 20))
    error = refused(run_cli, offline, agent_home, ["default", "set", "paid/m"], 4, "larger than 1048576 bytes")
    assert error["data"]["cause"]["code"] == "config_too_large"
    shown = run_cli(["default", "show", "--json"])
    assert shown.returncode == 1 and "larger than 1048576 bytes" in shown.json["error"]["message"]


def write_state(home: Path, history: list) -> Path:
    (home / "buy-x402").mkdir(mode=0o700, exist_ok=True)
    path = home / "buy-x402" / "state.json"
    path.write_text(json.dumps({"version": 1, "history": history, "events": []}))
    return path


def test_default_show_reports_a_malformed_history_entry_instead_of_crashing(run_cli, offline, agent_home):
    write_state(agent_home, [
        {"adopted": "qwen3.5:9b", "previous": "free", "purchase": ["not", "a", "name"], "at": "t", "status": "applied"},
        "not an object",
        {"adopted": "qwen3.5:9b", "previous": "x", "purchase": None, "at": "t0", "status": "applied"}])
    result = run_cli(["default", "show", "--json"])
    assert result.returncode == 0, result.stderr
    doc = result.json
    assert doc["model"] == "qwen3.5:9b" and doc["adopted_by_buy_x402"] is True and doc["previous"] == "x"
    assert doc["record_problems"] == ["history entry 1 `purchase` is a list, not a string; it is ignored",
                                      "history entry 2 is a str, not an object; it is ignored"]
    assert any("`purchase` is a list" in w for w in doc["warnings"])
    assert "Traceback" not in result.stderr
    assert doc["live"] is None  # the x402-buyer (off here) is asked for live numbers, nothing else
    assert all("127.0.0.1', 9" in attempt for attempt in offline.attempts)


@pytest.mark.parametrize("state", ["garbage{", "[]", "x" * (2 << 20)])
def test_default_show_survives_a_corrupt_record(run_cli, offline, agent_home, state):
    (agent_home / "buy-x402").mkdir(mode=0o700)
    (agent_home / "buy-x402" / "state.json").write_text(state)
    result = run_cli(["default", "show", "--json"])
    assert result.returncode == 0 and result.json["model"] == "qwen3.5:9b"
    assert result.json["record_problems"] and result.json["warnings"]


@pytest.mark.parametrize("breakage, words", [
    ("file", "is a file, not a directory"),
    ("garbage", "is corrupt"),
])
def test_an_unusable_record_refuses_the_switch_before_litellm_is_asked(run_cli, offline, agent_home, breakage, words):
    """`default set` of a model: the record is checked in the pre-flight, so nothing is spent on a canary
    for a switch that could not be recorded."""
    if breakage == "file":
        (agent_home / "buy-x402").write_text("x")
    else:
        write_state(agent_home, []).write_text("garbage{")
    error = refused(run_cli, offline, agent_home, ["default", "set", "paid/m"], 4, words)
    assert error["data"]["step"] == "pre-flight"


# --- output ---------------------------------------------------------------------------------------

def test_a_closed_stdout_is_not_a_traceback(tmp_path):
    proc = subprocess.run(f"{sys.executable} {BUY} --help | head -c 10", shell=True, capture_output=True,
                          text=True, env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)})
    assert proc.stdout == "usage: buy"
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr


def test_an_internal_error_is_one_line_without_a_traceback(run_cli, offline, monkeypatch):
    from buy_x402.commands import env as env_command
    monkeypatch.setattr(env_command, "run", lambda ctx, args: 1 / 0)
    result = run_cli(["env"])
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "internal error: ZeroDivisionError" in result.stderr and "--traceback" in result.stderr
