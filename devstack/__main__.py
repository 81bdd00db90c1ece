"""`python -m devstack up|down|status|demo --dir DIR`: the command line only.

`up` starts every part on 127.0.0.1 in dependency order, waits until each answers and writes
DIR/env; it is idempotent (a healthy stack is left as it is), and whenever it starts processes it
starts from an empty DIR (no buyer state, buyer files or etcd of an earlier run survive). `down` stops every process it started,
by PID. `demo` brings the stack up, runs the mission end to end and takes it down. The work is done
in `stack.py` (up, down) and `demo.py`.
"""
from __future__ import annotations

import argparse
import sys

from .stack import PartFailed, Stack, down, healthy, log, up


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
