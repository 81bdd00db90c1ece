"""Whatever stops buy.py, nothing is lost: the Hermes CLI child dies with it and never writes after the
lock is released; SIGTERM/SIGINT undo the change in progress; temp files of killed writers are
cleaned under the lock; the config's owner is kept or the message says it could not be; a `pay`
stopped after its voucher left says the voucher may have been spent.

The writer here is a stand-in Hermes CLI that writes late (so a child that outlives buy.py would be
seen writing); the same runs against the real Hermes CLI are in tests/test_soak.py. The owner tests
switch to uid 65534 for real (tests run as root).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from buy_x402.adoption import DefaultSwitch
from buy_x402.agent.hermes import HermesRuntime
from buy_x402.settings import Settings

pytestmark = pytest.mark.slow  # real time: deadlines, signals and subprocesses

REPO = Path(__file__).resolve().parent.parent
CONFIG = "model:\n  api_key: sk-secret\n  base_url: http://127.0.0.1:9/v1\n  default: qwen3.5:9b\nterminal:\n  backend: local\n"

# A Hermes CLI that notes its pid, waits, then writes model.default: alive too long, it would write.
SLOW_CLI = """#!{python}
import os, sys, time, yaml
open(os.environ["PID_FILE"], "w").write(str(os.getpid()))
time.sleep(float(os.environ.get("CLI_DELAY", "1.5")))
path = os.path.join(os.environ["HERMES_HOME"], "config.yaml")
data = yaml.safe_load(open(path))
data["model"]["default"] = sys.argv[-1]
with open(path, "w") as f:
    yaml.safe_dump(data, f, sort_keys=False)
"""

# What cli.main does around a switch: the signal handlers, the lock, the pre-flight, the transaction.
DRIVER = """
import sys
sys.path.insert(0, {repo!r})
from buy_x402 import shutdown
from buy_x402.adoption import DefaultSwitch
from buy_x402.agent.hermes import HermesRuntime
from buy_x402.errors import Interrupted
from buy_x402.settings import Settings
rt = HermesRuntime(Settings(agent_home={home!r}, home={user!r}, agent_cli={cli!r}))
cfg = rt.resolve()
with shutdown.install():
    try:
        with rt.lock(cfg):
            DefaultSwitch(rt, cfg, rt.preflight(cfg)).adopt("paid/new", purchase="p", at="t")
    except Interrupted as exc:
        sys.exit(int(exc.exit_code))
"""


@pytest.fixture()
def world(tmp_path):
    home = tmp_path / "hermes"
    home.mkdir(mode=0o700)
    (home / "config.yaml").write_text(CONFIG)
    (home / "config.yaml").chmod(0o600)
    cli = tmp_path / "slow-hermes"
    cli.write_text(SLOW_CLI.format(python=sys.executable))
    cli.chmod(0o755)
    driver = DRIVER.format(repo=str(REPO), home=str(home), user=str(tmp_path), cli=str(cli))
    env = {**os.environ, "PID_FILE": str(tmp_path / "cli.pid"), "HOME": str(tmp_path)}
    return home, driver, env, tmp_path / "cli.pid"


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def start_and_wait_for_cli(driver: str, env: dict, pid_file: Path) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-c", driver], env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not (pid_file.exists() and pid_file.read_text()):
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "the Hermes CLI never started"
        time.sleep(0.01)
    return proc, int(pid_file.read_text())


def history(home: Path) -> list:
    path = home / "buy-x402" / "state.json"
    return json.loads(path.read_text())["history"] if path.exists() else []


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130), (signal.SIGHUP, 129)])
def test_a_signal_stops_the_cli_undoes_the_switch_and_leaves_no_pending_entry(world, sig, code):
    home, driver, env, pid_file = world
    before = (home / "config.yaml").read_bytes()
    proc, child = start_and_wait_for_cli(driver, env, pid_file)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == code, err
    assert "Traceback" not in err
    assert not alive(child)
    time.sleep(2.0)  # past the moment the stand-in CLI would have written, had it survived
    assert (home / "config.yaml").read_bytes() == before
    assert history(home) == []


def test_sigkill_of_buy_py_kills_the_cli_before_it_can_write(world):
    home, driver, env, pid_file = world
    before = (home / "config.yaml").read_bytes()
    proc, child = start_and_wait_for_cli(driver, env, pid_file)
    proc.kill()
    proc.wait(timeout=30)
    deadline = time.monotonic() + 1.0
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not alive(child), "the Hermes CLI outlived buy.py"
    time.sleep(2.0)
    assert (home / "config.yaml").read_bytes() == before
    # The pending entry of the killed run is there, but it is not taken for an adoption that happened.
    rt = HermesRuntime(Settings(agent_home=str(home), home=str(home.parent)))
    cfg = rt.resolve()
    snapshot = rt.read(cfg)
    assert rt.record(cfg).last(rt.current_default(snapshot), snapshot.identity) is None


def test_the_cli_child_holds_the_config_lock_while_it_runs(world):
    """flock is per open file: the child's inherited descriptor keeps the lock held until it exits."""
    home, driver, env, pid_file = world
    proc, child = start_and_wait_for_cli(driver, env, pid_file)
    try:
        fds = [os.readlink(f"/proc/{child}/fd/{fd}") for fd in os.listdir(f"/proc/{child}/fd")]
        assert str(home / ".buy-x402.lock") in fds
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


def test_stale_temp_files_of_killed_writers_are_removed_under_the_lock(tmp_path):
    home = tmp_path / "hermes"
    home.mkdir()
    (home / "config.yaml").write_text(CONFIG)
    (home / "buy-x402").mkdir()
    ours = [home / ".config.yaml.ab_12cd9.tmp", home / "buy-x402" / ".state.json.x1y2z3w4.tmp"]
    others = [home / ".config_k2j3h4.tmp", home / ".config.yaml.toolongname.tmp", home / "config.yaml.tmp",
              home / "buy-x402" / ".state.json.short.tmp"]
    for path in ours + others:
        path.write_text("left by a killed writer")
    rt = HermesRuntime(Settings(agent_home=str(home), home=str(tmp_path), agent_cli=None))
    cfg = rt.resolve()
    with rt.lock(cfg):
        DefaultSwitch(rt, cfg, rt.preflight(cfg)).adopt("paid/new", purchase=None, at="t")
    assert [p.name for p in ours if p.exists()] == []
    assert [p.name for p in others if not p.exists()] == []  # not ours (Hermes' own among them): kept
    assert yaml.safe_load((home / "config.yaml").read_text())["model"]["default"] == "paid/new"


# --- the owner: kept, or said to be lost ------------------------------------------------------------

NOBODY = 65534
OWNER_DRIVER = """
import sys
sys.path.insert(0, {repo!r})
from buy_x402.adoption import DefaultSwitch
from buy_x402.agent.hermes import HermesRuntime
from buy_x402.errors import AgentConfigError
from buy_x402.settings import Settings
rt = HermesRuntime(Settings(agent_home={home!r}, home={user!r}, agent_cli={cli!r}))
cfg = rt.resolve()
with rt.lock(cfg):
    switch = DefaultSwitch(rt, cfg, rt.read(cfg))   # past the owner pre-flight, as a writer racing it would be
    try:
        switch.write("paid/new")
    except AgentConfigError as err:
        print(err.code)
        print(err.message)
        print(err.hint)
"""


@pytest.fixture()
def nobody_home():
    """A Hermes home owned by uid 65534 holding a root-owned 0644 config, reachable by that uid."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.fail("the owner tests switch uid for real: they need root and setpriv (util-linux)")
    base = Path(tempfile.mkdtemp(prefix="buy-x402-owner-"))
    base.chmod(0o755)
    home = base / "hermes"
    home.mkdir()
    os.chown(home, NOBODY, NOBODY)
    (home / "config.yaml").write_text(CONFIG)
    (home / "config.yaml").chmod(0o644)
    os.chown(base, NOBODY, NOBODY)
    yield home
    shutil.rmtree(base)


def as_nobody(argv: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *argv],
                          env=env, capture_output=True, text=True, timeout=120)


def owner_state(path: Path) -> tuple:
    st = os.stat(path)
    return path.read_bytes(), st.st_mode & 0o7777, st.st_uid, st.st_gid


def test_a_switch_that_would_change_the_owner_is_refused_before_writing(nobody_home, tmp_path):
    """buy.py as uid 65534, the config root's: the pre-flight refuses, file and owner untouched."""
    before = owner_state(nobody_home / "config.yaml")
    env = {"PATH": os.environ["PATH"], "HOME": str(nobody_home.parent), "HERMES_HOME": str(nobody_home),
           "HERMES_BIN": "/nonexistent", "KUBECONFIG": "/nonexistent", "REMOTE_SIGNER_URL": "http://127.0.0.1:9",
           "X402_BUYER_URL": "http://127.0.0.1:9", "BUY_X402_SERVICE_ACCOUNT_DIR": "/nonexistent"}
    result = as_nobody([sys.executable, str(REPO / "buy.py"), "default", "set", "paid/new", "--json"], env)
    assert result.returncode == 4, result.stderr
    error = json.loads(result.stdout)["error"]
    assert error["data"]["cause"]["code"] == "owner_would_change"
    assert "owned by 0:0 and buy.py runs as 65534:65534" in error["message"]
    assert "run buy.py as the user that owns the Hermes config (uid 0)" in error["hint"]
    assert owner_state(nobody_home / "config.yaml") == before
    assert "Traceback" not in result.stderr


def test_a_put_back_that_cannot_restore_the_owner_says_so(nobody_home, tmp_path):
    """A writer that replaced the file (as uid 65534) with other content: the read-back refuses, the put-back
    restores bytes and mode, and the message says the owner could not be given back to root."""
    cli = nobody_home.parent / "replacing-hermes"
    cli.write_text('#!/bin/sh\nprintf "model: {default: paid/new}\\n" > "$HERMES_HOME/config.yaml.new"\n'
                   'mv "$HERMES_HOME/config.yaml.new" "$HERMES_HOME/config.yaml"\n')
    cli.chmod(0o755)
    before = owner_state(nobody_home / "config.yaml")
    driver = OWNER_DRIVER.format(repo=str(REPO), home=str(nobody_home), user=str(nobody_home.parent), cli=str(cli))
    result = as_nobody([sys.executable, "-c", driver], {"PATH": os.environ["PATH"], "HOME": str(nobody_home.parent)})
    assert result.returncode == 0, result.stderr
    code, message, hint = result.stdout.splitlines()[:3]
    assert code == "owner_not_restored"
    assert "the original bytes and mode were put back, but its owner could NOT be restored" in message
    assert "owner is 65534:65534, was 0:0" in message
    assert hint.startswith(f"as root: chown 0:0 {nobody_home / 'config.yaml'}")
    raw, mode, uid, gid = owner_state(nobody_home / "config.yaml")
    assert (raw, mode) == before[:2] and (uid, gid) == (NOBODY, NOBODY)  # what the message says, exactly


# --- a stop after the voucher left: said, not hidden -------------------------------------------------

class _SlowSeller(BaseHTTPRequestHandler):
    """A v1 x402 seller: the 402 at once; a paid request gets its headers, then nothing for a long time."""

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.headers.get("X-PAYMENT"):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.flush()
            time.sleep(30)
            return
        body = json.dumps({"x402Version": 1, "accepts": [{
            "scheme": "exact", "network": "base-sepolia", "maxAmountRequired": "1000", "resource": "http://s/x",
            "asset": "0x036CbD53842c5426634e7929541eC2318f3dCF7e", "payTo": "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
            "extra": {"name": "USDC", "version": "2"}}]}).encode()
        self.send_response(402)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_pay_stopped_after_its_voucher_left_says_it_may_be_spent(stack, tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SlowSeller)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = {**stack.env, "PATH": os.environ["PATH"], "HOME": str(tmp_path)}
        proc = subprocess.Popen([sys.executable, str(REPO / "buy.py"), "pay", f"http://127.0.0.1:{server.server_address[1]}/x",
                                 "--type", "inference", "--message", "hi", "--json"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        err = ""
        while "Paying" not in err:  # the voucher is signed and on its way
            assert time.monotonic() < deadline and proc.poll() is None
            err += proc.stderr.readline()
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        out, rest = proc.communicate(timeout=30)
    finally:
        server.shutdown()
    assert proc.returncode == 143, err + rest
    doc = json.loads(out)
    assert doc["voucher_sent"] is True and doc["price"]["atomic"] == "1000"
    assert "may have been spent" in doc["error"]["message"] and "buy.py balance" in doc["error"]["message"]
    assert "Traceback" not in err + rest
