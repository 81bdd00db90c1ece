#!/usr/bin/env python3
"""buy-x402 skill entry point: `python3 path/to/buy.py <command> ...` from any working directory."""
import os, sys; sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # noqa: E401,E702
from buy_x402.cli import main; raise SystemExit(main())  # noqa: E402,E702
