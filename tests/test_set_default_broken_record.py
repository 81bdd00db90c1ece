"""`buy --set-default` with a broken adoption record: a purchase that went through but could not be
adopted is exit 4 with the purchase's facts, whatever broke after it (the record corrupt, a file
where its directory should be, unreadable): never exit 1 without the facts, never a traceback. The config is byte for byte as before, the record as it
was, and the pool holds the vouchers just bought (the wallet paid for nothing it did not get).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from buy_x402.ledger import LEDGER_NAME
from conftest import run_buy, stack_env
from helpers import buyer_status, config_path, ensure_purchase, file_state, kube_get, offer

NAME, MODEL = "t-deepseek", "deepseek-v4-pro"   # after test_set_default.py, which makes it (bought here if alone)


def broken_home(stack, tmp_path: Path, breakage: str) -> tuple[Path, Path]:
    home = tmp_path / "hermes"
    home.mkdir(mode=0o700)
    (home / "config.yaml").write_text(yaml.safe_dump(yaml.safe_load(config_path(stack).read_text()), sort_keys=False))
    (home / "config.yaml").chmod(0o600)
    state = home / "buy-x402"
    if breakage == "not-a-directory":
        state.write_text("a file where the record's directory belongs\n")
        return home, state
    state.mkdir(mode=0o700)
    if breakage == "corrupt":
        (state / "state.json").write_text("garbage{")
    elif breakage == "unreadable":
        (state / "state.json").mkdir()  # read() fails with EISDIR, even for root
    return home, state


SIGNING_RECORD = {LEDGER_NAME, ".signings.lock"}  # the spend caps' signing record shares the directory


def tree_state(path: Path) -> object:
    """The adoption record's directory as it is, but for the signing record a buy legitimately writes."""
    if path.is_dir():
        return sorted((p.name, file_state(p) if p.is_file() else "dir") for p in path.iterdir()
                      if p.name not in SIGNING_RECORD)
    return file_state(path)


@pytest.mark.parametrize("breakage, cause", [("corrupt", "state_corrupt"), ("not-a-directory", "state_unusable"),
                                             ("unreadable", "state_unreadable")])
def test_a_broken_record_after_the_purchase_is_exit_4_with_the_facts(stack, tmp_path, breakage, cause):
    ensure_purchase(stack, NAME, MODEL, "--count", "2")
    home, state = broken_home(stack, tmp_path, breakage)
    config_before, state_before = file_state(home / "config.yaml"), tree_state(state)
    unspent_before = buyer_status(stack)[NAME]["remaining"]
    result = run_buy(["buy", NAME, "--endpoint", offer(stack, MODEL)["url"], "--model", MODEL, "--count", "1",
                      "--set-default", "--json"], stack_env(stack, HERMES_HOME=str(home)))
    assert result.returncode == 4, result.stdout + result.stderr
    doc = result.json
    assert (doc["name"], doc["count"], doc["status"]["ready"]) == (NAME, 1, True)
    assert doc["pool"] == unspent_before + 1  # the unspent vouchers and the one just bought
    assert doc["error"]["code"] == "default_not_changed" and doc["error"]["data"]["cause"]["code"] == cause
    assert doc["error"]["data"]["step"] == "pre-flight"            # refused before a canary was paid
    assert f"buy.py default set paid/{MODEL}" in doc["error"]["hint"]
    assert "Traceback" not in result.stderr
    assert file_state(home / "config.yaml") == config_before
    assert tree_state(state) == state_before
    obj = kube_get(stack, NAME)
    assert len(obj["spec"]["preSignedAuths"]) == doc["pool"]  # bought: the vouchers are in the pool
    assert buyer_status(stack)[NAME]["remaining"] == doc["pool"]
