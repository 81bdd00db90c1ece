"""`buy.py env`: the resolved settings, so an operator can see what the skill will talk to."""
from __future__ import annotations

from argparse import Namespace

from ..result import Context, Result


def run(ctx: Context, args: Namespace) -> Result:
    rows = [{"setting": name, "env": env, "value": value} for name, env, value in ctx.settings.describe()]
    return Result("env", {"settings": rows})
