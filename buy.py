#!/usr/bin/env python3
"""buy-x402 skill entry point: `python3 path/to/buy.py <command> ...` from any working directory."""
import signal, sys  # noqa: E401  first: a signal during the imports below exits quietly, nothing done yet


def _stopped_early(signum, frame):  # replaced by buy_x402.shutdown once the CLI runs
    raise SystemExit(128 + signum)


for _sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(_sig, _stopped_early)

import os  # noqa: E402
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from buy_x402.cli import main  # noqa: E402
raise SystemExit(main())
