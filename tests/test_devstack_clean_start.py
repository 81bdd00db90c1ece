"""`devstack up` always starts clean: nothing of an earlier run in the same directory survives (issue 8).

Re-running the demo once showed "Sidecar: 5 remaining, 2 spent" before any paid call: the buyer's
consumed state of the previous run was still in the directory.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from devstack.stack import PartFailed, down, up

pytestmark = pytest.mark.stack  # starts a devstack part


def test_a_second_up_in_the_same_directory_keeps_nothing_of_the_first(tmp_path):
    directory = tmp_path / "stack"
    first = up(str(directory), ["buyer"])
    state = Path(first.info["buyer"]["state"])
    down(str(directory))
    # What an earlier run leaves behind: consumed vouchers, a purchase's buyer files, any other file.
    state.write_text(json.dumps({"consumed": {"demo-qwen": ["0x01", "0x02"]}}))
    (Path(first.info["buyer"]["config_dir"]) / "demo-qwen.json").write_text(json.dumps(
        {"url": "http://127.0.0.1:9", "network": "base-sepolia", "payTo": "0x1", "price": "1", "asset": "0x2",
         "remoteModel": "m"}))
    (directory / "kube").mkdir()
    (directory / "kube" / "etcd-leftover").write_text("old")
    second = up(str(directory), ["buyer"])
    try:
        assert requests.get(second.env["X402_BUYER_URL"] + "/status", timeout=5).json() == {}
        assert not state.exists() and not (directory / "kube").exists()
    finally:
        down(str(directory))


def test_a_directory_that_is_not_a_devstack_is_refused_and_left_alone(tmp_path):
    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(PartFailed, match="not empty and holds no devstack"):
        up(str(precious), ["buyer"])
    assert sorted(p.name for p in precious.iterdir()) == ["notes.txt"]
