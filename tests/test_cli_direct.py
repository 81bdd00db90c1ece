"""Refusals of go and siwx that need no peer (in-process, network off), and the one-line message of a
python3 without the skill's two packages."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import BUY

URL = "http://seller.invalid/services/qwen"


@pytest.mark.parametrize("args, message", [
    (["go", "not-a-url"], "is not an http(s) URL"),
    (["go", URL, "--message", "a", "--data", "{}"], "either --message or --data"),
    (["go", URL, "--payment-option", "0"], "expected a number >= 1"),
    (["go", URL, "--timeout", "-1"], "expected seconds above 0"),
    (["siwx", "ftp://x"], "is not an http(s) URL"),
    (["siwx"], "the following arguments are required: url"),
])
def test_bad_go_and_siwx_input_is_a_usage_error_and_reaches_nothing(run_cli, offline, args, message):
    result = run_cli([*args, "--json"])
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.json["exit_code"] == 2 and message in result.json["error"]["message"]
    assert offline.attempts == []


@pytest.mark.parametrize("args", [["go", URL, "--message", "hi"], ["siwx", URL, "--fetch"], ["pay", URL],
                                  ["balance"], ["list"]])
def test_without_requests_and_pyyaml_one_line_names_the_install_command(args):
    # -S: no site-packages, so neither requests nor PyYAML (a bare python3); -I: no user site, no PYTHON* env.
    proc = subprocess.run([sys.executable, "-I", "-S", BUY, *args], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 1
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: buy.py needs the Python package requests")
    assert lines[0].endswith("pip install requests PyYAML")
    assert "Traceback" not in proc.stderr


def test_without_the_packages_json_mode_keeps_its_one_object():
    proc = subprocess.run([sys.executable, "-I", "-S", BUY, "go", URL, "--json"], capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)
    doc = json.loads(proc.stdout)
    assert proc.returncode == 1 and doc["exit_code"] == 1 and doc["error"]["code"] == "missing_dependency"
    assert "pip install requests PyYAML" in doc["error"]["message"]
