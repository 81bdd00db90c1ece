"""`buy.py default show|set|restore` and the adoption chain `buy --set-default` reuses.

The chain (DESIGN "The set-default chain", steps 2–9): resolve the file Hermes reads → pre-flight →
LiteLLM lists the model and a PurchaseRequest publishes it → one paid canary → record the adoption →
warn without auto-refill → write (Hermes CLI, else the fallback writer) → read back and verify.
Each step can refuse; a refusal raises `DefaultNotChanged` and the config is byte-for-byte as before.
"""
from __future__ import annotations

import time
from argparse import Namespace
from typing import Any

from .. import hermes
from ..errors import BuyError, DefaultNotChanged, LiteLLMError, PurchaseError
from ..litellm import LiteLLMClient
from .. import purchases
from ..purchases import alias_for
from ..result import Context, Result
from .common import Peers

PAID_PREFIX = "paid/"


def run(ctx: Context, args: Namespace) -> Result:
    action = getattr(args, "action", None) or "show"
    peers = Peers(ctx)
    if action == "show":
        return Result("default", show(peers))
    if action == "set":
        hermes.check_model_value(args.model)
        try:
            data = adopt(peers, args.model, canary=not args.no_canary)
        except DefaultNotChanged as err:
            return Result("default", {"action": "set", "model": args.model}, err.exit_code, err)
        return Result("default", {"action": "set", **data})
    try:
        data = restore(peers)
    except DefaultNotChanged as err:
        return Result("default", {"action": "restore"}, err.exit_code, err)
    return Result("default", {"action": "restore", **data})


def _refuse(step: str, err: BuyError, model: str) -> DefaultNotChanged:
    return DefaultNotChanged(f"{model} was not adopted ({step}): {err.message}", cause=err,
                             hint=err.hint, data={"step": step})


def _paid_purchase(peers: Peers, model: str, purchase: str | None) -> dict[str, Any]:
    """The PurchaseRequest that publishes `model`: LiteLLM's listing alone can name unbought models."""
    items = [peers.kube.get(purchase)] if purchase else peers.kube.list()
    for item in items:
        status = item.get("status") or {}
        if status.get("publicModel") == model:
            if not purchases.is_serving(item):
                raise PurchaseError(f"PurchaseRequest {item['metadata']['name']} publishes {model} but is not Ready",
                                    hint=f"check it: buy.py status {item['metadata']['name']}")
            return item
    raise PurchaseError(f"no PurchaseRequest in this namespace publishes {model}",
                        hint=f"buy it first: buy.py buy NAME --endpoint URL --model {model[len(PAID_PREFIX):]}")


def adopt(peers: Peers, model: str, *, purchase: str | None = None, canary: bool = True,
          auto_refill: dict | None = None) -> dict[str, Any]:
    """Make `model` the agent's default, or raise `DefaultNotChanged` leaving the config untouched."""
    ctx = peers.ctx
    is_paid = model.startswith(PAID_PREFIX)
    try:
        cfg = peers.hermes_config
        lock = hermes.config_lock(cfg)
    except BuyError as err:
        raise _refuse("config", err, model) from err
    with lock:
        try:
            before = hermes.read_snapshot(cfg)
        except BuyError as err:
            raise _refuse("pre-flight", err, model) from err
        previous = hermes.current_model(before.data)
        result: dict[str, Any] = {"model": model, "previous": previous, "config": str(cfg.path),
                                  "profile": cfg.profile or "default", "purchase": purchase}
        if previous == model:
            result.update(changed=False, canary=None, write=None)
            return result

        # Step 4: selectable — LiteLLM lists it, and (for paid/) a purchase publishes it.
        base_url, api_key = hermes.litellm_endpoint(before.data)
        if not base_url:
            raise _refuse("selectable", LiteLLMError(
                f"{cfg.path} has no model.base_url, so LiteLLM cannot be asked whether {model} exists",
                hint="set model.base_url to the LiteLLM /v1 URL"), model)
        llm = LiteLLMClient(peers.session, base_url, api_key or "")
        try:
            if not llm.is_listed(model):
                raise LiteLLMError(f"LiteLLM at {base_url} does not list {model}",
                                   hint="wait for the purchase to be published (buy.py status NAME), then retry")
            if is_paid:
                item = _paid_purchase(peers, model, purchase)
                purchase = item["metadata"]["name"]
                result["purchase"] = purchase
                if auto_refill is None:
                    auto_refill = (item.get("spec") or {}).get("autoRefill")
        except BuyError as err:
            raise _refuse("selectable", err, model) from err

        # Step 5: one real paid request through LiteLLM.
        result["canary"] = None
        if canary and is_paid:
            ctx.notify(f"Canary: one paid request through LiteLLM as {model} (spends one voucher) ...")
            spent_before = _live_spent(peers, purchase)
            try:
                answer = llm.canary(model)
            except BuyError as err:
                raise _refuse("canary", err, model) from err
            result["canary"] = {"status": answer.get("status"), "spent_voucher": True,
                                "spent_before": spent_before, "spent_after": _live_spent(peers, purchase)}

        # Step 6: record before the switch, so a restore works even if we die right after it.
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        hermes.record_pending(cfg, adopted=model, previous=previous, purchase=purchase, at=at)

        # Step 7: a paid default without auto-refill bricks every chat once the pool is spent.
        if is_paid and not (auto_refill or {}).get("enabled"):
            ctx.warn(f"auto-refill is off for {purchase}: once its vouchers are spent every chat turn fails. "
                     f"Top up with `buy.py buy {purchase} ...` or re-run with --auto-refill.")

        # Steps 8–9: write, read back, verify (restores the original bytes itself on a mismatch).
        try:
            write = hermes.write_default(cfg, before, model, hermes_bin=peers.settings.hermes_bin)
            hermes.verify_write(cfg, before, model)
        except BuyError as err:
            _put_back(cfg, before, err)
            hermes.drop_pending(cfg)
            raise _refuse("write", err, model) from err
        hermes.mark_applied(cfg)
        result.update(changed=True, at=at, write={"method": write.method, "detail": write.detail},
                      rollback="buy.py default restore")
        return result


def restore(peers: Peers) -> dict[str, Any]:
    """Put back the default the last adoption replaced (same pre-flight, selectable check, write, verify)."""
    try:
        cfg = peers.hermes_config
        lock = hermes.config_lock(cfg)
    except BuyError as err:
        raise _refuse("config", err, "the previous default") from err
    with lock:
        try:
            before = hermes.read_snapshot(cfg)
        except BuyError as err:
            raise _refuse("pre-flight", err, "the previous default") from err
        last = hermes.last_adoption(cfg)
        if not last:
            raise DefaultNotChanged("there is no adoption by buy-x402 to restore",
                                    hint="set a model explicitly: buy.py default set MODEL")
        current = hermes.current_model(before.data)
        previous = last.get("previous")
        if current != last.get("adopted"):
            raise DefaultNotChanged(
                f"model.default is {current!r}, not {last.get('adopted')!r} that buy-x402 adopted: "
                "someone else changed it since, so it is left alone",
                hint="set the model you want explicitly: buy.py default set MODEL")
        if not previous:
            raise DefaultNotChanged("the last adoption recorded no previous default to put back",
                                    hint="set a model explicitly: buy.py default set MODEL")
        base_url, api_key = hermes.litellm_endpoint(before.data)
        try:
            if not base_url:
                raise LiteLLMError(f"{cfg.path} has no model.base_url", hint="set model.base_url")
            if not LiteLLMClient(peers.session, base_url, api_key or "").is_listed(previous):
                raise LiteLLMError(f"LiteLLM at {base_url} does not list {previous}",
                                   hint=f"make {previous} available in LiteLLM, or buy.py default set MODEL")
        except BuyError as err:
            raise _refuse("selectable", err, previous) from err
        try:
            write = hermes.write_default(cfg, before, previous, hermes_bin=peers.settings.hermes_bin)
            hermes.verify_write(cfg, before, previous)
        except BuyError as err:
            _put_back(cfg, before, err)
            raise _refuse("write", err, previous) from err
        hermes.pop_adoption(cfg)
        return {"model": previous, "replaced": current, "config": str(cfg.path), "changed": True,
                "purchase": last.get("purchase"), "write": {"method": write.method, "detail": write.detail}}


def show(peers: Peers) -> dict[str, Any]:
    cfg = peers.hermes_config
    snapshot = hermes.read_snapshot(cfg)
    current = hermes.current_model(snapshot.data)
    data: dict[str, Any] = {"model": current, "config": str(cfg.path), "profile": cfg.profile or "default",
                            "managed": cfg.managed, "adopted_by_buy_x402": False}
    last = hermes.last_adoption(cfg)
    if last and last.get("adopted") == current:
        data.update(adopted_by_buy_x402=True, purchase=last.get("purchase"), at=last.get("at"),
                    previous=last.get("previous"), rollback="buy.py default restore")
        live = peers.buyer.try_status()
        entry = (live or {}).get(last.get("purchase") or "")
        if entry:
            data["live"] = {"remaining": entry.get("remaining"), "spent": entry.get("spent")}
        elif live is None:
            data["live"] = None
    return data


def _put_back(cfg, before, err: BuyError) -> None:
    """A failed write may have left a damaged file (a CLI that died mid-way, then a failed fallback):
    put the original bytes back. A no-op when the file is intact."""
    try:
        hermes.restore_bytes(cfg, before)
    except OSError as exc:
        err.message += f"; the original could NOT be put back ({exc.strerror}): check {cfg.path} by hand"


def _live_spent(peers: Peers, purchase: str | None) -> int | None:
    live = peers.buyer.try_status()
    entry = (live or {}).get(purchase or "")
    return entry.get("spent") if entry else None


__all__ = ["adopt", "restore", "show", "run", "alias_for"]
