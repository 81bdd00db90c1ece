"""`buy.py remove NAME [--revoke] [--force]`: stop a purchase, never leaving the agent on a dead model.

Order (each step can refuse; a refusal before step 4 changes nothing):
1. read the purchase, the buyer's pool and every voucher's nonce on chain (money truth);
2. with --revoke, sign the cancellations, estimate their gas and check the wallet can pay it;
3. a server-side dry run of the delete (permission);
4. if the agent's default is this purchase's model, put the previous default back (verified), or stop
   with exit 4 (--force: go on, and say the agent stays on a model that is about to stop answering);
5. with --revoke, cancel every unspent voucher on chain and check each nonce is used up;
6. delete the PurchaseRequest, then tell the x402-buyer to stop spending it (`/admin/remove`, again
   whenever its 5 s reload brings it back) so the controller's drain finds an empty pool and removes
   the finalizer; wait until the object is gone (exit 3 when it is still there after --timeout).
Without that stop the controller keeps a deleted purchase `Deleting/Draining`, still serving
`paid/<model>`, until the buyer has spent every voucher (obol-wire.md §3).
"""
from __future__ import annotations

import time
from argparse import Namespace
from typing import Any

from .. import purchases, revocation, voucher_states
from ..adoption import restore_previous_default
from ..amounts import format_amount
from ..errors import BuyError, DefaultNotChanged, ExitCode, KubeApiError, NotReadyError, PurchaseError
from ..offer import chain_or_none, token_meta
from ..peers import Peers
from ..result import Context, Result

POLL_S = 0.5


def run(ctx: Context, args: Namespace) -> Result:
    peers = Peers(ctx)
    obj = _get(peers, args.name)
    name, spec, status = args.name, obj.get("spec") or {}, obj.get("status") or {}
    alias = status.get("publicModel") or purchases.alias_for(spec.get("model") or "")
    deleting = bool(obj["metadata"].get("deletionTimestamp"))
    money = _money(spec)
    live = peers.buyer.try_status()
    if live is None:
        ctx.warn("the x402-buyer does not answer: it cannot be told to stop spending this purchase")

    # 1-3. Everything that can refuse without changing anything.
    try:
        entries, truth, plans = _check_before_any_change(peers, ctx, obj, args, deleting)
    except BuyError as err:
        if "nothing" not in err.message:
            err.message += f"; {name} was not removed and nothing changed"
        raise
    data: dict[str, Any] = {"name": name, "alias": alias, "namespace": peers.kube.config.namespace,
                            "price": money(int((spec.get("payment") or {}).get("price") or 0)),
                            "payTo": (spec.get("payment") or {}).get("payTo"), "was_deleting": deleting}

    # 4. Never leave the agent on the model that is about to go.
    data["default"] = _release_default(peers, ctx, name, alias, args.force)

    # 5. Cancel on chain, then read every nonce again: the chain says whether it worked.
    if args.revoke:
        data["revoked"] = _revoke(peers, ctx, entries, plans, obj, name, data)

    # 6. Delete, stop the buyer, wait until gone.
    if not deleting:
        peers.kube.delete(name)
        ctx.notify(f"Deleted PurchaseRequest {data['namespace']}/{name}; waiting until the controller lets it go ...")
    gone, waited, removals, last = _wait_gone(peers, name, args.timeout)
    data.update(gone=gone, waited_s=round(waited, 1), buyer_removals=removals)
    data["vouchers"] = _voucher_report(entries, truth, live, obj, money)
    if not gone:
        draining = next((c for c in (last.get("status") or {}).get("conditions") or []
                         if c.get("type") == "Deleting"), {})
        data["state"] = "draining" if draining.get("status") == "True" else "deleting"
        why = f" ({draining.get('reason')}: {draining.get('message')})" if draining else ""
        err = NotReadyError(
            f"PurchaseRequest {name} is deleted but still there after {args.timeout:g} s{why}; the x402-buyer was "
            f"told {removals} time(s) to stop spending it, and the controller removes it once its drain finds no pool",
            code="not_gone", hint=f"re-run `buy.py remove {name}` to keep waiting; `buy.py status {name}` shows it")
        return Result("remove", data, ExitCode.NOT_READY, err)
    data["state"] = "gone"
    buyer_now = peers.buyer.try_status()
    data["buyer_serving"] = None if buyer_now is None else name in buyer_now
    if data["buyer_serving"]:
        ctx.warn(f"the x402-buyer still lists {name} although its PurchaseRequest is gone")
    return Result("remove", data)


def _check_before_any_change(peers: Peers, ctx: Context, obj: dict, args: Namespace, deleting: bool):
    """Steps 1-3: read every nonce on chain, plan (and pay for) the revocation, check the delete is allowed."""
    name = args.name
    entries = voucher_states.entries_of(obj)
    truth = _read_chain(peers, ctx, entries, args.revoke, since=voucher_states.created_at(obj))
    plans: list[revocation.Plan] = []
    if args.revoke:
        unknown = [e.id for e in entries if e.state == voucher_states.UNKNOWN]
        if unknown:
            raise PurchaseError(f"{len(unknown)} voucher(s) of {name} cannot be read on chain, so they cannot be "
                                f"shown cancelled: {', '.join(unknown[:5])}",
                                hint="check the chain RPC (ERPC_URL) and re-run")
        plans = revocation.plan(peers, [e.voucher for e in entries if e.state == voucher_states.UNUSED])
    if not deleting:
        peers.kube.delete(name, dry_run=True)
    return entries, truth, plans


def _get(peers: Peers, name: str) -> dict:
    try:
        return peers.kube.get(name)
    except KubeApiError as err:
        if err.reason != "NotFound":
            raise
    return purchases.find(peers.kube.list(), name)  # raises, naming the purchases that exist


def _money(spec: dict):
    payment = spec.get("payment") or {}
    symbol, decimals = payment.get("assetSymbol"), payment.get("assetDecimals")
    if symbol is None or decimals is None:
        known = token_meta(chain_or_none(payment.get("network")), payment.get("asset"), None)
        symbol, decimals = symbol or known[0], decimals if decimals is not None else known[1]

    def money(atomic: int) -> dict[str, Any]:
        return {"atomic": str(atomic), "display": format_amount(atomic, decimals, symbol)}
    return money


def _read_chain(peers: Peers, ctx: Context, entries: list[voucher_states.Entry], required: bool, *,
                since: float | None) -> dict[str, Any]:
    """Read every nonce; without --revoke a chain that does not answer is a warning, not a failure."""
    try:
        warnings = voucher_states.read_states(peers.chain, entries, now=time.time(), since=since)
    except BuyError as err:
        if required:
            raise BuyError(f"the vouchers' state on chain cannot be read ({err.message})",
                           code=err.code, hint=err.hint or "check ERPC_URL and re-run") from err
        ctx.warn(f"the vouchers' state on chain cannot be read ({err.message}); the unspent count below is the "
                 "x402-buyer's word")
        return {"source": "x402-buyer", "error": err.message}
    for warning in warnings:
        ctx.warn(warning)
    return {"source": "chain"}


def _release_default(peers: Peers, ctx: Context, name: str, alias: str, force: bool) -> dict[str, Any]:
    """Restore the previous default when the agent uses this purchase's model; exit 4 when that fails."""
    try:
        agent, config = peers.agent, peers.agent_config
        current = agent.current_default(agent.read(config))
    except BuyError as err:
        if not force:
            raise DefaultNotChanged(f"cannot tell whether the agent uses {alias} ({err.message}); {name} was not "
                                    "removed and nothing changed", cause=err,
                                    hint="fix the agent's config, or pass --force") from err
        ctx.warn(f"--force: removing {name} without knowing whether the agent uses {alias} ({err.message})")
        return {"checked": False, "error": err.message}
    if current != alias:
        return {"checked": True, "was_default": False, "model": current}
    try:
        restored = restore_previous_default(peers)
    except DefaultNotChanged as err:
        if not force:
            raise DefaultNotChanged(
                f"{alias} is the agent's default and the previous one cannot be put back ({err.message}); "
                f"{name} was not removed and nothing changed", cause=err.cause or err,
                hint=f"{err.hint or 'fix the cause'}; or set another model first (buy.py default set MODEL); "
                     "--force removes it anyway and leaves the agent on a model that stops answering") from err
        ctx.warn(f"--force: the agent's default stays {alias}, which stops answering once {name} is gone; "
                 "set another with `buy.py default set MODEL`")
        return {"checked": True, "was_default": True, "restored": False, "model": alias, "error": err.message}
    ctx.notify(f"Agent default: {restored['model']} again (it was {alias})")
    return {"checked": True, "was_default": True, "restored": True, "model": restored["model"], "replaced": alias,
            "write": restored.get("write")}


def _revoke(peers: Peers, ctx: Context, entries: list[voucher_states.Entry], plans: list, obj: dict, name: str,
            data: dict) -> dict[str, Any]:
    wanted = [e for e in entries if e.state == voucher_states.UNUSED]
    report: dict[str, Any] = {"wanted": len(wanted), "plans": [p.view() for p in plans], "transactions": []}
    try:
        if wanted:
            ctx.notify(f"Cancelling {len(wanted)} unspent voucher(s) of {name} on chain ...")
            report["transactions"] = revocation.execute(peers, plans, ctx.notify)
        voucher_states.read_states(peers.chain, wanted, now=time.time(), since=voucher_states.created_at(obj), classify=True)
    except BuyError as err:
        err.message = f"{err.message}; {name} was not deleted{_default_note(data['default'])}"
        err.data = {**err.data, "default": data["default"], "revoked": report}
        raise
    report["cancelled"] = [e.id for e in wanted if e.state == voucher_states.CANCELLED]
    report["settled_meanwhile"] = [e.id for e in wanted if e.state == voucher_states.SETTLED]
    report["used_unclassified"] = [e.id for e in wanted if e.state == voucher_states.USED]   # used up; logs unreadable
    left = [e.id for e in wanted if e.state in (voucher_states.UNUSED, voucher_states.UNKNOWN)]
    if left:
        raise PurchaseError(f"{len(left)} voucher(s) of {name} are still not shown cancelled on chain after the "
                            f"cancellation: {', '.join(left[:5])}; {name} was not deleted{_default_note(data['default'])}",
                            hint=f"re-run `buy.py remove {name} --revoke`",
                            data={"revoked": report, "default": data["default"]})
    return report


def _default_note(default: dict) -> str:
    return f" (the agent's default was already put back to {default['model']})" if default.get("restored") else ""


def _wait_gone(peers: Peers, name: str, timeout: float) -> tuple[bool, float, int, dict]:
    """Poll until the object is gone, telling the buyer to drop the purchase whenever it lists it."""
    started = time.monotonic()
    removals, last = 0, {}
    while True:
        try:
            last = peers.kube.get(name)
        except KubeApiError as err:
            if err.reason == "NotFound":
                return True, time.monotonic() - started, removals, last
            raise
        live = peers.buyer.try_status()
        if live is not None and name in live:
            try:
                peers.buyer.remove(name)
                removals += 1
            except BuyError:
                pass  # a buyer that cannot be reached serves nothing the controller would wait for
        if time.monotonic() - started >= timeout:
            return False, time.monotonic() - started, removals, last
        time.sleep(POLL_S)


def _voucher_report(entries: list[voucher_states.Entry], truth: dict, live: dict | None, obj: dict, money) -> dict[str, Any]:
    held, source = voucher_states.held_split(obj, (live or {}).get(obj["metadata"]["name"]))
    if truth.get("source") == "chain":
        summary = voucher_states.summary(entries)
        still = summary["still_valid"]
        head = None if held is None else len(entries) - held
        seen = None if head is None else sum(1 for e in entries if e.state == voucher_states.UNUSED and e.index < head)
        still.update(display=money(int(still["value"]))["display"], seen_by_seller=seen,
                     ids=[e.id for e in entries if e.state == voucher_states.UNUSED])
        return {"in_spec": len(entries), "source": "chain", "counts": summary["counts"], "still_valid": still}
    tail = entries[len(entries) - held:] if held else []
    value = sum(e.voucher.value for e in tail if e.voucher)
    deadlines = [e.voucher.deadline for e in tail if e.voucher and e.voucher.deadline is not None]
    latest = max(deadlines) if deadlines else None
    return {"in_spec": len(entries), "source": source, "counts": None,
            "still_valid": {"count": len(tail), "value": str(value), "display": money(value)["display"],
                            "latest_expiry": voucher_states.deadline_text(latest) if latest else None,
                            "latest_expiry_unix": latest, "seen_by_seller": None, "ids": [e.id for e in tail]}}
