"""`python -m devstack up|down|status|demo --dir DIR`.

`up` starts every part on 127.0.0.1 in dependency order, waits until each answers and writes
DIR/env; it is idempotent (a healthy stack is left as it is), and whenever it starts processes it
starts from an empty DIR: no state of an earlier run (buyer consumed.json, buyer files, etcd) survives. `down` stops every process it started,
by PID. `demo` brings the stack up, runs the mission end to end and takes it down.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import time

from .stack import PartFailed, Stack, log

# Dependency order: each part may read what earlier parts put into stack.info.
PARTS = ["kube", "chain", "signer", "seller", "foreign", "upstream", "buyer", "litellm", "controller", "hermes"]


def up(directory: str, parts: list[str] | None = None) -> Stack:
    """Start `parts` (default: all, in order); a healthy stack already there is reused."""
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("up", "down", "status", "demo"):
        p = sub.add_parser(name)
        p.add_argument("--dir", required=True, help="state directory (logs, pids, env)")
        if name == "up":
            p.add_argument("--parts", help="comma-separated subset, in order (for developing one part)")
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            up(args.dir, args.parts.split(",") if args.parts else None)
        elif args.command == "down":
            down(args.dir)
        elif args.command == "status":
            stack = Stack(args.dir)
            ok = stack.load() and healthy(stack)
            print("up" if ok else "down")
            return 0 if ok else 1
        elif args.command == "demo":
            from .demo import run_demo
            return run_demo(args.dir)
    except PartFailed as exc:
        log(f"FAILED: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
