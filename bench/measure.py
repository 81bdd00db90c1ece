"""What the benchmarks share: CPU time of this process and of another, medians, verdict lines.

Benchmarks are never timed tests: each prints its figures and a verdict, and exits non-zero on a miss.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Iterable

_TICK = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """Seconds of CPU (user + system) `pid` has used so far, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def own_cpu() -> float:
    """Seconds of CPU this process (all its threads) has used so far."""
    times = os.times()
    return times.user + times.system


# Forks the command from a small interpreter and reports its peak RSS. Not from the benchmark itself: a
# child forked from a big parent counts the parent's resident pages until it execs, so its ru_maxrss
# would be the benchmark's size, not the command's.
_LAUNCHER = ("import os, sys\n"
             "pid = os.fork()\n"
             "if pid == 0:\n"
             "    os.execv(sys.argv[2], sys.argv[2:])\n"
             "_, status, usage = os.wait4(pid, 0)\n"
             "open(sys.argv[1], 'w').write(f'{os.waitstatus_to_exitcode(status)} {usage.ru_maxrss}')\n")


class Run:
    """One run of a command: exit code, stdout, stderr, wall time, peak RSS (MB, from wait4)."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            report = os.path.join(tmp, "rusage")
            started = time.perf_counter()
            proc = subprocess.run([sys.executable, "-S", "-c", _LAUNCHER, report, *argv], env=env,
                                  capture_output=True, text=True, stdin=subprocess.DEVNULL)
            self.wall = time.perf_counter() - started
            with open(report) as f:
                code, rss_kb = f.read().split()
        self.code, self.stdout, self.stderr = int(code), proc.stdout, proc.stderr
        self.rss_mb = int(rss_kb) / 1024

    @property
    def json(self):
        return json.loads(self.stdout)


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def verdict(ok: bool) -> str:
    return "OK" if ok else "MISSED"


def stamp() -> str:
    return time.strftime("%Y-%m-%d %H:%M %Z")


__all__ = ["process_cpu", "own_cpu", "Run", "median", "verdict", "stamp"]
