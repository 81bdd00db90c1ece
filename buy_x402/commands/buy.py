"""`buy.py buy NAME --endpoint URL --model ID ...`: probe, pre-sign, PurchaseRequest, Ready, adopt.

Nothing is signed before every check that can fail without spending has passed (arguments, seller
price, payment option, a seller the cluster's x402-buyer can pay (buy_x402/cluster.py), amounts,
wallet, ownership of the model, top-up guards, auto-refill policy, the spend caps (caps.py: a first
batch or a top-up that does not fit under --max-total / --max-spend-per-day is refused, never cut),
and a server-side dry run of the exact PurchaseRequest write, so a field the cluster's schema would
drop is refused, not lost). The signing is recorded before it happens (spending.py).
"""
from __future__ import annotations

import re
import time
from argparse import Namespace
from typing import Any

from .. import caps, cluster, purchases, refill, schemes, spending, x402
from ..adoption import adopt
from ..amounts import auth_count, auth_expiry, format_amount, parse_money
from ..errors import (BuyError, DefaultNotChanged, ExitCode, Interrupted, KubeApiError, NotReadyError,
                      PurchaseError, UsageError, WalletError)
from ..kube import WaitTimeout
from ..peers import Peers
from ..inputs import model_id
from ..result import Context, Result
from ..scheduling import ensure_schedule
from ..urls import seller_url, shown
from ..vouchers import (SIGNING_WORKERS, choose, dry_run_write, placeholder_auths, preflight, presign,
                        replace_with_retry)

NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def validate_args(args: Namespace) -> None:
    if len(args.name) > 253 or not NAME_RE.match(args.name):
        raise UsageError(f"purchase name {shown(args.name, 60)} is not a valid Kubernetes name",
                         hint="use lower-case letters, digits and '-', e.g. qwen-paid")
    seller_url(args.endpoint, "--endpoint")
    model_id(args.model, "--model")
    if not args.model.strip() or args.model.startswith("paid/"):
        raise UsageError(f"--model {shown(args.model, 60)} must be the seller's model id (without paid/)",
                         hint="e.g. --model qwen3.6-35b; it is published as paid/qwen3.6-35b")
    if args.no_canary and not args.set_default:
        raise UsageError("--no-canary only applies with --set-default", hint="add --set-default or drop --no-canary")


def run(ctx: Context, args: Namespace) -> Result:
    validate_args(args)
    peers = Peers(ctx, pool_size=SIGNING_WORKERS + 2)
    alias = purchases.alias_for(args.model)
    endpoint = x402.normalize_endpoint(args.endpoint)

    # 1. Price. (The run's phases, for `timings`: probe, wallet, write, sign, write, ready, and the
    # adoption's write-default, canary, verify; then schedule.)
    timings = peers.timings
    timings.switch("probe")
    ctx.notify(f"Probing {endpoint} ...")
    offer = x402.probe(peers.session, endpoint, args.model)
    timings.switch("wallet")
    wallet = peers.signer.address()
    option = choose(peers, offer, wallet, index=args.payment_option, token=args.token, network=args.network,
                    eligible=lambda o: cluster.can_spend(offer, o), eligible_reason="the cluster can spend").option
    cluster.check_spendable(offer, option, network=option.chain.name, url=purchases.chat_endpoint(endpoint))
    price = option.amount
    price_text = format_amount(price, option.decimals, option.symbol)

    # 2. Amounts.
    budget = cost_cap = None
    if args.budget is not None:
        budget = parse_money(args.budget, decimals=option.decimals, symbol=option.symbol)
        ctx.notify(f"Budget: {format_amount(budget, option.decimals, option.symbol)}")
    if args.cost_cap is not None:
        cost_cap = parse_money(args.cost_cap, decimals=option.decimals, symbol=option.symbol)
        ctx.notify(f"Cost cap: {format_amount(cost_cap, option.decimals, option.symbol)} per request")
    count = auth_count(price, budget=budget, count=args.count, cap=schemes.of(option).max_auths)
    valid_before = auth_expiry(args.auth_ttl or ctx.settings.auth_ttl, int(time.time()))

    def fmt(atomic: int) -> str:
        return format_amount(atomic, option.decimals, option.symbol)

    asked = caps.Caps(*(parse_money(text, decimals=option.decimals, symbol=option.symbol, what=flag)
                        if text is not None else None
                        for text, flag in ((args.max_total, "--max-total"),
                                           (args.max_spend_per_day, "--max-spend-per-day"))))
    caps.check_flags(asked, price=price, first_batch=None, fmt=fmt)
    if asked.any:
        ctx.notify("Spend caps: " + ", ".join(f"{name} {fmt(value)}" for name, value in
                                              (("maxTotal", asked.max_total), ("maxSpendPerDay", asked.max_per_day))
                                              if value is not None))

    # 3. Wallet.
    chain_name = option.chain.name
    if not peers.chain.has_code(chain_name, option.asset):
        raise WalletError(f"no token contract at {option.asset} on {chain_name}",
                          hint="check the seller's asset and the eRPC network")
    balance = peers.chain.balance_of(chain_name, option.asset, wallet)
    total = count * price
    if balance < total:
        message = (f"wallet {wallet} holds {format_amount(balance, option.decimals, option.symbol)}, "
                   f"{count} vouchers cost {format_amount(total, option.decimals, option.symbol)}")
        if not args.force:
            raise WalletError(message, hint=f"fund {wallet}, buy fewer (--count/--budget), or pass --force")
        ctx.warn(message + " (--force: signing anyway)")
    # The scheme's own checks; a purchase may use what the seller offers to sponsor (e.g. EIP-2612 permits).
    plan = preflight(peers, option, wallet, offered_extensions=offer.extensions)

    # 4. Cluster state: one owner per model; a top-up only of a live, converged purchase.
    timings.switch("write")
    items = peers.kube.list()
    owner = purchases.model_owner_conflict(items, args.name, args.model)
    if owner:
        raise PurchaseError(f"model {args.model} is already owned by PurchaseRequest {owner}",
                            hint=f"top up the existing purchase instead: buy.py buy {owner} ...")
    existing = next((i for i in items if i["metadata"]["name"] == args.name), None)
    live_entry = None
    if existing is not None:
        live_entry = peers.buyer.status().get(args.name)
        purchases.check_topup_allowed(existing, live_entry, model=args.model)
    tail = purchases.active_tail((existing or {}).get("spec", {}).get("preSignedAuths", []),
                                 live_entry["remaining"]) if existing is not None else []
    policy = refill.resolve_auto_refill(
        auto_refill=args.auto_refill, threshold=args.refill_threshold, count=args.refill_count,
        cost_cap=cost_cap, desired_count=len(tail) + count,
        existing=(existing or {}).get("spec", {}).get("autoRefill"),
        max_total=asked.max_total, max_spend_per_day=asked.max_per_day)
    limits = caps.Caps.of(policy, args.name)
    namespace = peers.kube.config.namespace
    ledger = spending.open_ledger(peers, required=limits.any)
    if existing is None:
        caps.check_flags(asked, price=price, first_batch=count, fmt=fmt)
    elif limits.any:
        use = spending.usage_of(existing, live_entry, spending.record_of(ledger, existing, namespace), price)
        room = caps.fit(limits, use, price, count, fmt)
        if room.count < count:
            raise PurchaseError(f"{args.name}: a top-up of {count} vouchers ({fmt(count * price)}) does not fit under "
                                f"its spend caps ({room.reason}); nothing was signed",
                                hint=(f"buy at most {room.count} now (--count {room.count}), or raise the cap "
                                      "(--max-total / --max-spend-per-day)") if room.count else
                                     "raise the cap (--max-total / --max-spend-per-day), or wait for the window",
                                code="cap_reached", data={"caps": caps.report(limits, use, fmt)})
    payment = purchases.build_payment_spec(option, chain_name=chain_name, symbol=option.symbol,
                                           decimals=option.decimals)
    if existing is not None:
        purchases.check_same_payment(existing, tail, payment)
        stale = purchases.stale_vouchers(tail, payment)
        if stale:
            ctx.notify(f"{args.name}: dropping {len(stale)} unspent voucher(s) signed at another price; the seller "
                       f"now asks {price_text} and would refuse them")
        old_endpoint = existing.get("spec", {}).get("endpoint")
        if old_endpoint != purchases.chat_endpoint(endpoint):
            ctx.notify(f"{args.name} moves from {old_endpoint} to {purchases.chat_endpoint(endpoint)}")

    # 5. The exact write to come, validated by the API server with placeholder vouchers.
    signed_at = int(time.time())
    signing = caps.new_signing(count, price, by="buy", now=signed_at)
    placeholders = placeholder_auths(option, wallet, count, valid_before, offer, plan, signed_at=signed_at)
    if existing is None:
        dry_run_write(peers, purchases.build_purchase(args.name, namespace, endpoint=endpoint,
                                                      model=args.model, payment=payment, auths=placeholders,
                                                      auto_refill=policy, signing=signing), replace=False)
    else:
        dry_run_write(peers, purchases.topup_object(existing, new_auths=placeholders,
                                                    live_remaining=live_entry["remaining"], payment=payment,
                                                    auto_refill=policy, endpoint=endpoint, signing=signing),
                      replace=True)

    # 6. Record, then sign (the only step that commits the wallet).
    reservation = spending.reserve(ledger, existing or {"metadata": {"name": args.name}}, live_entry, signing,
                                   limits=limits, price=price, fmt=fmt, namespace=namespace,
                                   new_purchase=existing is None, notify=ctx.notify)
    try:
        timings.switch("sign")
        ctx.notify(f"Signing {count} authorizations at {price_text} each (total {fmt(total)}) ...")
        auths = presign(peers, option, wallet, count, valid_before, offer, plan, signed_at=signed_at)
    except BaseException:
        reservation.release()  # nothing was written: the signed vouchers are discarded
        raise
    timings.switch("write")

    # 7. Declare.
    recheck = None if existing is None else spending.conflict_recheck(ledger, signing, limits=limits, price=price,
                                                                      fmt=fmt, namespace=namespace)
    try:
        written = _declare(peers, ctx, args, existing, live_entry, auths, payment, policy, endpoint,
                           signing=signing, recheck=recheck)
    except (KubeApiError, PurchaseError):
        reservation.release()  # the API server refused the write: nothing was declared
        raise
    except Interrupted as exc:  # the request may have reached the API server before the stop
        exc.note = (f"the PurchaseRequest {args.name} may have been written with the {count} vouchers just signed: "
                    f"check it with `buy.py status {args.name}` before buying again")
        raise  # the signing stays recorded: the caps over-count, never under-count

    data: dict[str, Any] = {
        "name": args.name, "alias": alias, "model": args.model, "endpoint": endpoint,
        "price": {"atomic": str(price), "display": price_text, "symbol": option.symbol,
                  "decimals": option.decimals, "asset": option.asset},
        "chain": chain_name, "count": count, "pool": len(written["spec"]["preSignedAuths"]),
        "topup": existing is not None, "wallet": wallet, "autoRefill": policy,
        "namespace": namespace, "set_default": None,
    }
    if limits.any:
        data["caps"] = caps.report(limits, spending.usage_of(written, live_entry,
                                                             spending.record_of(ledger, written, namespace), price), fmt)

    # From here the purchase exists and is funded: whatever breaks or stops the run, its facts are
    # reported (exit 3 or 4, or the signal's code), never lost behind a bare error.
    try:
        result = _after_purchase(peers, ctx, args, written, data, alias, policy)
        data["timings"] = peers.timings_report()
        return result
    except Interrupted as exc:
        exc.data = {**data, **exc.data}
        exc.note = exc.note or (f"PurchaseRequest {args.name} was written and is funded with {data['pool']} vouchers; "
                                f"check it with `buy.py status {args.name}`")
        raise


def _declare(peers: Peers, ctx: Context, args: Namespace, existing: dict | None, live_entry: dict | None,
             auths: list, payment: dict, policy: dict | None, endpoint: str, *, signing, recheck) -> dict:
    """Create the PurchaseRequest, or top the existing one up; the object the API server stored."""
    namespace = peers.kube.config.namespace
    if existing is None:
        obj = purchases.build_purchase(args.name, namespace, endpoint=endpoint, model=args.model,
                                       payment=payment, auths=auths, auto_refill=policy, signing=signing)
        try:
            written = peers.kube.create(obj)
        except KubeApiError as err:
            if err.reason == "AlreadyExists":
                raise PurchaseError(f"PurchaseRequest {args.name} was created by someone else meanwhile; "
                                    "nothing was written and the signed vouchers were discarded",
                                    hint=f"re-run the same command to top {args.name} up") from err
            raise
        ctx.notify(f"Created PurchaseRequest {namespace}/{args.name}")
        return written
    written = replace_with_retry(peers, args.name, existing, live_entry, auths, payment, policy, endpoint,
                                 signing=signing, recheck=recheck)
    ctx.notify(f"Updated PurchaseRequest {namespace}/{args.name} "
               f"({len(written['spec']['preSignedAuths'])} active vouchers)")
    return written


def _after_purchase(peers: Peers, ctx: Context, args: Namespace, written: dict, data: dict[str, Any],
                    alias: str, policy: dict | None) -> Result:
    # 8. Wait for Ready (watch, not poll).
    peers.timings.switch("ready")
    ctx.notify("Waiting for the controller to reconcile the PurchaseRequest ...")
    try:
        obj, failure = _wait_ready(peers, ctx, written, args.timeout)
    except Exception as exc:  # the purchase is written whatever the watch says: report it as not Ready
        obj, failure = written, f"the wait failed: {_describe(exc)}"
    state = purchases.readiness(obj)
    data["status"] = {"ready": state.ready, "remaining": state.remaining, "publicModel": state.public_model,
                      "message": state.message, "conditions": obj.get("status", {}).get("conditions", [])}
    if not state.ready:
        reason = failure or state.message or "no status yet"
        nxt = f"buy.py status {args.name}"
        if args.set_default:
            nxt += f", then buy.py default set {alias}"
        err = NotReadyError(
            f"PurchaseRequest {args.name} exists and is funded with {data['pool']} vouchers but is not Ready "
            f"after {args.timeout:g} s ({reason}). Re-running `buy` with this name would top it up and spend more."
            + (" The agent's default model was not touched." if args.set_default else ""),
            hint=f"check it with: {nxt}", data={"next": nxt})
        return Result("buy", data, ExitCode.NOT_READY, err)

    # 9. Adopt.
    peers.timings.switch(None)
    if args.set_default:
        try:
            data["set_default"] = adopt(peers, alias, purchase=args.name, canary=not args.no_canary,
                                        auto_refill=policy)
        except DefaultNotChanged as err:
            return Result("buy", data, ExitCode.DEFAULT_NOT_CHANGED, _bought_but_not_adopted(args.name, alias, err))
        except Exception as exc:  # anything else that broke after the purchase: still bought, not adopted
            cause = exc if isinstance(exc, BuyError) else BuyError(_describe(exc), code="internal")
            err = DefaultNotChanged(f"{alias} was not adopted: {cause.message}", cause=cause,
                                    hint=cause.hint or "fix the cause shown", data={"step": "adopt"})
            return Result("buy", data, ExitCode.DEFAULT_NOT_CHANGED, _bought_but_not_adopted(args.name, alias, err))
        if (policy or {}).get("enabled"):
            with peers.timings.phase("schedule"):
                data["schedule"] = _ensure_schedule(peers, ctx)
    return Result("buy", data)


def _describe(exc: BaseException) -> str:
    text = exc.message if isinstance(exc, BuyError) else f"{exc.__class__.__name__}: {exc}"
    return text[:300]


def _bought_but_not_adopted(name: str, alias: str, err: DefaultNotChanged) -> DefaultNotChanged:
    """The refusal said as exit 4 of `buy`: the purchase exists, and the one command that adopts it later."""
    nxt = f"buy.py default set {alias}"
    wrapped = DefaultNotChanged(
        f"PurchaseRequest {name} is Ready and funded, but the agent's default was not changed: {err.message}. "
        "Re-running `buy` with this name would top it up and spend more.",
        cause=err.cause, hint=f"fix the cause ({err.hint or 'see above'}), then: {nxt}",
        data={**err.data, "next": nxt})
    wrapped.__cause__ = err
    return wrapped


def _ensure_schedule(peers: Peers, ctx: Context) -> dict | None:
    """Keep the adopted model funded: the upkeep job that runs `process --all`. Its failure does not
    undo a verified adoption; it is reported with the command that finishes the job."""
    try:
        return ensure_schedule(peers)
    except Exception as err:  # the adoption is verified and stays; the job is finished by hand
        ctx.warn(f"the auto-refill cron job could not be set up ({_describe(err)}); "
                 "run `buy.py schedule` so the pool is topped up and the default guarded")
        return None


def _wait_ready(peers: Peers, ctx: Context, written: dict, timeout: float) -> tuple[dict, str | None]:
    """Watch until Ready or a terminal failure condition; show each condition change once."""
    seen: set[tuple] = set()
    last: dict[str, Any] = {"obj": written}

    def on_change(obj: dict) -> None:
        last["obj"] = obj
        if obj["metadata"].get("generation") != obj.get("status", {}).get("observedGeneration"):
            return
        for cond in purchases.condition_summary(obj):
            if cond not in seen:
                seen.add(cond)
                ctype, status, reason, message = cond
                ctx.notify(f"  {ctype}={status}" + (f" ({reason})" if reason else "") +
                           (f": {message}" if message else ""))

    def done(obj: dict) -> bool:
        return purchases.readiness(obj).ready or purchases.failed_reason(obj) is not None

    name = written["metadata"]["name"]
    try:
        obj = peers.kube.wait_for(name, done, timeout_s=timeout, on_change=on_change)
    except WaitTimeout:
        obj = last["obj"]
    return obj, purchases.failed_reason(obj)
