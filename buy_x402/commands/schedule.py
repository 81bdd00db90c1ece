"""`buy.py schedule [--remove]`: ensure (or remove) the upkeep job that runs `process --all`."""
from __future__ import annotations

from argparse import Namespace

from ..peers import Peers
from ..result import Context, Result
from ..scheduling import ensure_schedule, remove_schedule


def run(ctx: Context, args: Namespace) -> Result:
    peers = Peers(ctx)
    if args.remove:
        return Result("schedule", remove_schedule(peers))
    return Result("schedule", ensure_schedule(peers))
