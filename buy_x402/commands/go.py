"""`buy.py go URL [--message T | --data JSON] ...`: from a storefront URL to a paid answer.

Finds the offer and its kind (buy_x402/discover.py: agent, chat or plain HTTP), then pays the right
way through the flow `pay`/`pay-agent` use (buy_x402/paying.py): a chat or agent offer gets one
streamed chat completion with the model --model names, else the model the offer advertises, else
"auto"; an HTTP offer gets the request as given (--method, else POST with --data, else GET).
A chat or agent offer without --message/--data is not paid: the options and the exact follow-up
command are shown (and, for a chat offer the cluster's x402-buyer can pay, how to buy vouchers for
it). Never creates state.
"""
from __future__ import annotations

import re
import shlex
from argparse import Namespace
from typing import Any

from .. import cluster, discover, x402
from ..errors import UsageError
from ..paying import Ask, pay
from ..peers import Peers
from ..result import Context, Result
from ..urls import seller_url

PLACEHOLDER_MESSAGE = "your question"


def purchase_name(model: str | None) -> str:
    """A Kubernetes name for `buy`, from the model id (e.g. qwen3.6-35b → qwen3-6-35b)."""
    name = re.sub(r"[^a-z0-9]+", "-", (model or "").lower()).strip("-")[:53].strip("-")
    return name or "paid-model"


def run(ctx: Context, args: Namespace) -> Result:
    seller_url(args.url, "the go URL")
    if args.message is not None and args.data is not None:
        raise UsageError("give either --message or --data, not both")
    peers = Peers(ctx)
    ctx.notify(f"Looking at {args.url} ...")
    found = discover.discover(peers.session, args.url, method=args.method)
    facts: dict[str, Any] = {"kind": found.kind, "foundBy": found.found_by, "advertisedModel": found.model}
    common = dict(model=args.model, payment_option=args.payment_option, token=args.token, network=args.network,
                  auth_ttl=ctx.settings.auth_ttl, timeout=args.timeout, command="go")

    if found.kind in ("agent", "chat"):
        if args.message is None and args.data is None:
            return Result("go", {**facts, **_options(args, found), "paid": False})
        ask = Ask(url=args.url, kind="inference", agent=True, data=args.data, message=args.message, **common)
    else:
        if args.message is not None:
            raise UsageError(f"{args.url} is a plain HTTP offer, not a chat: --message does not apply; nothing was "
                             "paid", hint="send a request body with --data (and --method), or none for a GET")
        ask = Ask(url=args.url, kind="http", method=args.method, data=args.data, **common)
    ctx.notify(f"{args.url}: {found.kind} offer (x402 v{found.offer.x402_version}, found by {found.found_by})")
    paid = pay(ctx, ask, json_mode=args.json, peers=peers, answer_only=True)
    data = {**facts, **paid.data, "paid": True}
    if paid.failure is not None:
        return Result("go", data, paid.failure.exit_code, paid.failure, paid.warnings)
    return Result("go", data, warnings=paid.warnings)


def _options(args: Namespace, found: discover.Discovery) -> dict[str, Any]:
    """What a chat/agent offer costs and the exact commands that use it; nothing is paid."""
    url = shlex.quote(args.url)
    model = args.model or found.model
    flags = "".join(f" {flag} {shlex.quote(str(value))}" for flag, value in (
        ("--model", args.model), ("--payment-option", args.payment_option), ("--token", args.token),
        ("--network", args.network)) if value is not None)
    out: dict[str, Any] = {
        "x402Version": found.offer.x402_version, "options": [x402.option_view(o) for o in found.offer.accepts],
        "model": model, "next": f"buy.py go {url}{flags} --message {shlex.quote(PLACEHOLDER_MESSAGE)}", "buy": None,
    }
    if found.kind == "chat" and any(cluster.can_spend(found.offer, o) for o in found.offer.accepts):
        endpoint = x402.normalize_endpoint(args.url)
        out["buy"] = (f"buy.py buy {purchase_name(model)} --endpoint {shlex.quote(endpoint)} "
                      f"--model {shlex.quote(model) if model else 'MODEL_ID'} --count 10")
    return out
