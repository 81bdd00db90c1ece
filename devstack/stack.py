"""The devstack's life cycle and its process bookkeeping: `up`/`down` of the parts, free ports,
spawning with logs and PID files, readiness.

Every part module (`devstack/parts/<name>.py`) exposes `up(stack: Stack) -> None`; it starts its
processes with `stack.spawn`, waits until they answer, and records what others need in `stack.info`
(JSON-able, saved to DIR/stack.json) and what buy.py needs in `stack.env` (written to DIR/env).
"""
from __future__ import annotations

import importlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
DEPS = REPO / ".deps"
DEVSTACK_MARKERS = ("env", "stack.json", "pids", "logs")  # what every earlier `up` left in its DIR


class PartFailed(RuntimeError):
    """A part did not come up; the message names the part and where its log is."""


class Stack:
    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.dir = Path(directory).resolve()
        self.logs = self.dir / "logs"
        self.pids = self.dir / "pids"
        self.repo = REPO
        self.deps = DEPS
        self.python = str(DEPS / "venv" / "bin" / "python")
        self.env: dict[str, str] = {}
        self.info: dict[str, Any] = {}
        self._ports: set[int] = set()

    # -- layout -------------------------------------------------------------------------------
    def path(self, *parts: str) -> Path:
        p = self.dir.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def free_port(self) -> int:
        """A loopback port that is free now and not handed out before in this run."""
        while True:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            if port not in self._ports:
                self._ports.add(port)
                return port

    def start_clean(self) -> None:
        """Empty DIR for a fresh start; refuse a non-empty DIR that is not a devstack's (never wipe a
        directory someone passed by mistake, e.g. their home)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        entries = list(self.dir.iterdir())
        if entries and not any((self.dir / marker).exists() for marker in DEVSTACK_MARKERS):
            raise PartFailed(f"{self.dir} is not empty and holds no devstack (none of {', '.join(DEVSTACK_MARKERS)}); "
                             "pass an empty or new directory")
        for entry in entries:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()

    # -- processes ----------------------------------------------------------------------------
    def spawn(self, name: str, argv: list[str], *, env: dict[str, str] | None = None,
              cwd: str | os.PathLike[str] | None = None, inherit_env: bool = True) -> int:
        """Start `argv` in its own session, output to logs/<name>.log, PID to pids/<name>.pid."""
        self.logs.mkdir(parents=True, exist_ok=True)
        self.pids.mkdir(parents=True, exist_ok=True)
        child_env = dict(os.environ) if inherit_env else {"PATH": os.environ.get("PATH", "")}
        child_env.update(env or {})
        log = open(self.logs / f"{name}.log", "ab")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=child_env, cwd=str(cwd) if cwd else None, start_new_session=True)
        log.close()
        (self.pids / f"{name}.pid").write_text(str(proc.pid))
        return proc.pid

    def alive(self, name: str) -> bool:
        pid = self.pid(name)
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        # A zombie child of this process still answers kill(0); reap it if so.
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
            return done == 0
        except ChildProcessError:
            return True

    def pid(self, name: str) -> int | None:
        f = self.pids / f"{name}.pid"
        try:
            return int(f.read_text().strip())
        except (OSError, ValueError):
            return None

    def wait_until(self, name: str, check: Callable[[], bool], *, timeout: float = 60.0,
                   interval: float = 0.1) -> None:
        """Poll `check` until it returns True; fail naming the part if its process died or time ran out."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                if check():
                    return
            except Exception as exc:  # readiness probes fail in many ways until the server is up
                last = exc
            if self.pid(name) is not None and not self.alive(name):
                raise PartFailed(f"{name} exited during start-up; see {self.logs / (name + '.log')}\n"
                                 f"{self.tail(name)}")
            time.sleep(interval)
        raise PartFailed(f"{name} did not come up within {timeout:g} s (last error: {last}); "
                         f"see {self.logs / (name + '.log')}\n{self.tail(name)}")

    def wait_http(self, name: str, url: str, *, timeout: float = 60.0,
                  headers: dict[str, str] | None = None, method: str = "GET",
                  ok: Callable[[int], bool] = lambda status: status < 500) -> None:
        """Wait until `url` answers with a status `ok` accepts."""
        def check() -> bool:
            req = urllib.request.Request(url, headers=headers or {}, method=method)
            try:
                with urllib.request.urlopen(req, timeout=2) as resp:
                    return ok(resp.status)
            except urllib.error.HTTPError as err:
                return ok(err.code)
        self.wait_until(name, check, timeout=timeout)

    def tail(self, name: str, lines: int = 15) -> str:
        try:
            text = (self.logs / f"{name}.log").read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join("    " + line for line in text[-lines:])

    def stop_all(self, grace: float = 5.0) -> list[str]:
        """Stop every process recorded in pids/ (whole process group), SIGTERM then SIGKILL."""
        stopped = []
        if not self.pids.is_dir():
            return stopped
        names = sorted(self.pids.glob("*.pid"), key=lambda p: p.stat().st_mtime, reverse=True)
        for f in names:
            name = f.stem
            pid = self.pid(name)
            if pid is not None and self.alive(name):
                _signal_group(pid, signal.SIGTERM)
                deadline = time.monotonic() + grace
                while time.monotonic() < deadline and self.alive(name):
                    time.sleep(0.05)
                if self.alive(name):
                    _signal_group(pid, signal.SIGKILL)
                stopped.append(name)
            f.unlink(missing_ok=True)
        return stopped

    # -- results ------------------------------------------------------------------------------
    def save(self) -> None:
        (self.dir / "stack.json").write_text(json.dumps(self.info, indent=2, sort_keys=True))
        lines = [f"export {k}={_shell_quote(v)}" for k, v in sorted(self.env.items())]
        (self.dir / "env").write_text("\n".join(lines) + "\n")

    def load(self) -> bool:
        try:
            self.info = json.loads((self.dir / "stack.json").read_text())
        except (OSError, ValueError):
            return False
        self.env = {}
        for line in (self.dir / "env").read_text().splitlines():
            if line.startswith("export ") and "=" in line:
                k, v = line[len("export "):].split("=", 1)
                self.env[k] = _shell_unquote(v)
        return True


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _shell_quote(value: str) -> str:
    return "'" + str(value).replace("'", "'\"'\"'") + "'"


def _shell_unquote(value: str) -> str:
    if value.startswith("'") and value.endswith("'"):
        return value[1:-1].replace("'\"'\"'", "'")
    return value


def log(msg: str) -> None:
    print(f"devstack: {msg}", file=sys.stderr, flush=True)


# Dependency order: each part may read what earlier parts put into stack.info.
PARTS = ["kube", "chain", "signer", "seller", "foreign", "upstream", "buyer", "litellm", "controller", "hermes"]


def up(directory: str, parts: list[str] | None = None) -> Stack:
    """Start `parts` (default: all, in order); a healthy stack already there is reused. Whenever it
    starts processes it starts from an empty DIR: no state of an earlier run survives."""
    stack = Stack(directory)
    if stack.load() and healthy(stack):
        log(f"already up; env: {stack.dir / 'env'}")
        return stack
    stack.stop_all()
    stack = Stack(directory)
    stack.start_clean()  # nothing from an earlier run (buyer state, etcd, files) leaks into this one
    log(f"starting in {stack.dir} (logs: {stack.logs})")
    stack.env.update(DEVSTACK_DIR=str(stack.dir))
    started = time.monotonic()
    try:
        for name in parts or PARTS:
            t0 = time.monotonic()
            importlib.import_module(f"devstack.parts.{name}").up(stack)
            stack.info.setdefault("parts", []).append(name)
            log(f"{name} up in {time.monotonic() - t0:.1f} s")
            stack.save()
    except BaseException:
        stack.stop_all()
        raise
    stack.info["ready"] = True
    stack.save()
    log(f"stack up in {time.monotonic() - started:.1f} s; source {stack.dir / 'env'}")
    return stack


def healthy(stack: Stack) -> bool:
    if not stack.info.get("ready"):
        return False
    names = [p.stem for p in stack.pids.glob("*.pid")] if stack.pids.is_dir() else []
    return bool(names) and all(stack.alive(n) for n in names)


def down(directory: str) -> None:
    stack = Stack(directory)
    stopped = stack.stop_all()
    (stack.dir / "stack.json").unlink(missing_ok=True)
    log(f"stopped {', '.join(stopped) or 'nothing'}")
