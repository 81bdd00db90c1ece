"""`buy.py pay URL` and `buy.py pay-agent URL`: one paid request with ONE freshly signed voucher.

The flow (checks before signing, one voucher, the settlement verified on chain) is
buy_x402/paying.py, shared with `go`; this module only maps the flags onto it.
"""
from __future__ import annotations

from argparse import Namespace

from ..paying import Ask, pay
from ..result import Context, Result


def run_pay(ctx: Context, args: Namespace) -> Result:
    return _run(ctx, args, agent=False)


def run_pay_agent(ctx: Context, args: Namespace) -> Result:
    return _run(ctx, args, agent=True)


def _run(ctx: Context, args: Namespace, *, agent: bool) -> Result:
    command = "pay-agent" if agent else "pay"
    ask = Ask(url=args.url, kind=args.type, agent=agent, method=args.method, data=args.data, message=args.message,
              model=args.model, payment_option=args.payment_option, token=args.token, network=args.network,
              auth_ttl=args.auth_ttl or ctx.settings.auth_ttl, timeout=args.timeout, command=command)
    paid = pay(ctx, ask, json_mode=args.json)
    if paid.failure is not None:
        return Result(command, paid.data, paid.failure.exit_code, paid.failure, paid.warnings)
    return Result(command, paid.data, warnings=paid.warnings)
