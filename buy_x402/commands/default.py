"""`buy.py default show|set|restore`: the agent's default model, adopted and restored safely."""
from __future__ import annotations

from argparse import Namespace

from ..adoption import adopt, restore_previous_default, show
from ..errors import DefaultNotChanged
from ..inputs import model_id
from ..peers import Peers
from ..result import Context, Result


def run(ctx: Context, args: Namespace) -> Result:
    action = getattr(args, "action", None) or "show"
    peers = Peers(ctx)
    if action == "show":
        return Result("default", show(peers))
    if action == "set":
        model_id(args.model, "model")
        peers.agent.check_model_name(args.model)
        try:
            data = adopt(peers, args.model, canary=not args.no_canary)
        except DefaultNotChanged as err:
            return Result("default", {"action": "set", "model": args.model, "timings": peers.timings_report()},
                          err.exit_code, err)
        return Result("default", {"action": "set", **data, "timings": peers.timings_report()})
    try:
        data = restore_previous_default(peers)
    except DefaultNotChanged as err:
        return Result("default", {"action": "restore"}, err.exit_code, err)
    return Result("default", {"action": "restore", **data})
