"""Changing the agent's default model as one transaction: adopt, restore, and the guardian's rollback.

`DefaultSwitch` is opened under the agent's config lock on a pre-flight snapshot. It commits one
change: record → write → read back → commit the record; on any failure it puts the original bytes
back once, drops the pending record and re-raises. The flows around it are the set-default chain
(DESIGN "The set-default chain", steps 2–9): resolve the file the agent reads → pre-flight → LiteLLM
lists the model and a PurchaseRequest publishes it → one paid canary → warn without auto-refill →
write → verify. Each step can refuse; a refusal raises `DefaultNotChanged` and the config is
byte-for-byte as before. `buy --set-default`, `default set|restore|show` and `process` use them.
"""
from __future__ import annotations

import contextlib
import time
from typing import Any, Iterator, NoReturn

from . import purchases, shutdown
from .agent.configfile import OwnerNotRestored, Snapshot
from .agent.runtime import AgentConfig, AgentRuntime, WriteResult
from .errors import AgentConfigError, BuyError, DefaultNotChanged, LiteLLMError, PurchaseError
from .litellm import LiteLLMClient
from .peers import Peers
from .timings import Timings

PAID_PREFIX = "paid/"
ROLLBACK_COMMAND = "buy.py default restore"


class DefaultSwitch:
    """One change of the agent's default model; made by `open_switch`, committed by `adopt` or `undo`."""

    def __init__(self, agent: AgentRuntime, config: AgentConfig, before: Snapshot,
                 timings: Timings | None = None) -> None:
        self.agent, self.config, self.before = agent, config, before
        self.record = agent.record(config)
        self.timings = timings or Timings()

    @property
    def current(self) -> str | None:
        """The default the agent has now (before this switch)."""
        return self.agent.current_default(self.before)

    def last_adoption(self) -> dict | None:
        """The adoption `undo` would reverse, if the record holds one."""
        return self.record.last(self.current, self.before.identity)

    def adopt(self, model: str, *, purchase: str | None, at: str) -> WriteResult:
        """Record the adoption as pending (so a restore works even if the process dies right after the
        switch), then write and verify: one write of the record. Until it returns, any failure or
        signal undoes it all: the original file back, the pending entry dropped."""
        entry = {"adopted": model, "previous": self.current, "purchase": purchase, "at": at}
        committed = False
        try:
            self.record.record_pending(**entry, config=self.before.identity)
            write = self.write(model)
            shutdown.commit()  # a signal that came (even one whose exception was lost) undoes it here
            committed = True   # the switch stands: a later signal must not report it as undone
            return write
        except BaseException:
            if not committed:
                with shutdown.critical():
                    self._put_back_quietly()
                    self.record.drop(entry)
            raise

    def undo(self, entry: dict) -> WriteResult:
        """Write back the default `entry` (from `last_adoption`) replaced, verify, then forget `entry`;
        a failure or a signal before `entry` is forgotten puts the file back as it was."""
        committed = False
        try:
            write = self.write(entry["previous"])
            with shutdown.critical():
                shutdown.commit()  # a signal that came undoes the write here; from now on the restore stands
                self.record.pop(entry)
                committed = True
            return write
        except BaseException:
            if not committed:
                with shutdown.critical():
                    self._put_back_quietly()
            raise

    def write(self, model: str) -> WriteResult:
        """Write `model` and read it back; on any failure put the original bytes back once and re-raise.
        The record is not touched: `adopt` and `undo` keep it in step."""
        try:
            write = self.agent.write_default(self.config, self.before, model)
            with self.timings.phase("verify"):
                self.agent.verify(self.config, self.before, model)
        except BaseException as err:
            with shutdown.critical():
                self._put_back(err)
        return write

    def _put_back_quietly(self) -> None:
        """The file as it was, if it is not already (an error on the way out is already being raised)."""
        with contextlib.suppress(OSError, OwnerNotRestored):
            self.agent.put_back(self.config, self.before)

    def _put_back(self, err: BaseException) -> NoReturn:
        """A failed or unverified write may have left a changed or damaged file (a CLI that died mid-way):
        put the original bytes back, once, and raise `err` saying whether that worked."""
        path = self.config.path
        try:
            rewrote = self.agent.put_back(self.config, self.before)
        except OwnerNotRestored as exc:
            if not isinstance(err, BuyError):
                raise err
            raise AgentConfigError(
                f"{err.message}; the original bytes and mode were put back, but its owner could NOT be "
                f"restored ({exc}): only root can give the file back",
                hint=f"as root: chown {exc.was[0]}:{exc.was[1]} {path}; then run buy.py as the user that owns it",
                code="owner_not_restored", data={**err.data, "path": str(path)}) from err
        except OSError as exc:
            if not isinstance(err, BuyError):
                raise err
            raise AgentConfigError(
                f"{err.message}; the original could NOT be put back ({exc.strerror}): check {path} by hand",
                hint=f"check model.default in {path} and fix the file by hand", code="restore_failed",
                data={**err.data, "path": str(path)}) from err
        if rewrote and isinstance(err, BuyError):
            raise AgentConfigError(f"{err.message}; the original file was put back unchanged", hint=err.hint,
                                   code=err.code, data=err.data) from err
        raise err


def _refuse(step: str, err: BuyError, model: str) -> DefaultNotChanged:
    return DefaultNotChanged(f"{model} was not adopted ({step}): {err.message}", cause=err,
                             hint=err.hint, data={"step": step})


@contextlib.contextmanager
def open_switch(peers: Peers, what: str) -> Iterator[DefaultSwitch]:
    """Resolve the agent's config, take its lock and run the pre-flight (steps 2–3); `what` names the
    model in a refusal."""
    try:
        agent, config = peers.agent, peers.agent_config
        lock = agent.lock(config)
    except BuyError as err:
        raise _refuse("config", err, what) from err
    with lock:
        try:
            before = agent.preflight(config)
        except BuyError as err:
            raise _refuse("pre-flight", err, what) from err
        yield DefaultSwitch(agent, config, before, peers.timings)


def _litellm(peers: Peers, switch: DefaultSwitch, model: str) -> LiteLLMClient:
    """The LiteLLM the agent talks to (its config says where), to ask whether `model` is selectable."""
    base_url, api_key = switch.agent.model_endpoint(switch.before)
    if not base_url:
        raise LiteLLMError(f"{switch.config.path} has no model.base_url, so LiteLLM cannot be asked whether "
                           f"{model} exists", hint="set model.base_url to the LiteLLM /v1 URL")
    return LiteLLMClient(peers.session, base_url, api_key or "")


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


def _live_spent(peers: Peers, purchase: str | None) -> int | None:
    live = peers.buyer.try_status()
    entry = (live or {}).get(purchase or "")
    return entry.get("spent") if isinstance(entry, dict) else None


def adopt(peers: Peers, model: str, *, purchase: str | None = None, canary: bool = True,
          auto_refill: dict | None = None) -> dict[str, Any]:
    """Make `model` the agent's default, or raise `DefaultNotChanged` leaving the config untouched.
    Its time counts for the phase "write-default" but the canary's round trip ("canary") and the
    read-back ("verify")."""
    with peers.timings.phase("write-default"):
        return _adopt(peers, model, purchase=purchase, canary=canary, auto_refill=auto_refill)


def _adopt(peers: Peers, model: str, *, purchase: str | None, canary: bool,
           auto_refill: dict | None) -> dict[str, Any]:
    ctx = peers.ctx
    is_paid = model.startswith(PAID_PREFIX)
    with open_switch(peers, model) as switch:
        previous = switch.current
        result: dict[str, Any] = {"model": model, "previous": previous, "config": str(switch.config.path),
                                  "profile": switch.config.profile or "default", "purchase": purchase}
        if previous == model:
            result.update(changed=False, canary=None, write=None)
            return result
        try:  # the record must be writable before a voucher is spent on the canary
            switch.record.check()
        except BuyError as err:
            raise _refuse("pre-flight", err, model) from err

        # Step 4: selectable — LiteLLM lists it, and (for paid/) a purchase publishes it.
        try:
            llm = _litellm(peers, switch, model)
            if not llm.is_listed(model):
                raise LiteLLMError(f"LiteLLM at {llm.base_url} does not list {model}",
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
                with peers.timings.phase("canary"):
                    answer = llm.canary(model)
            except BuyError as err:
                raise _refuse("canary", err, model) from err
            result["canary"] = {"status": answer.get("status"), "spent_voucher": True,
                                "spent_before": spent_before, "spent_after": _live_spent(peers, purchase)}

        # Step 7: a paid default without auto-refill bricks every chat once the pool is spent.
        if is_paid and not (auto_refill or {}).get("enabled"):
            ctx.warn(f"auto-refill is off for {purchase}: once its vouchers are spent every chat turn fails. "
                     f"Top up with `buy.py buy {purchase} ...` or re-run with --auto-refill.")

        # Steps 6, 8–9: record, write, read back, verify — or put the original back and refuse.
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        try:
            write = switch.adopt(model, purchase=purchase, at=at)
        except BuyError as err:
            raise _refuse("write", err, model) from err
        result.update(changed=True, at=at, write={"method": write.method, "detail": write.detail},
                      rollback=ROLLBACK_COMMAND)
        return result


def restore_previous_default(peers: Peers) -> dict[str, Any]:
    """Put back the default the last adoption replaced (same pre-flight, selectable check, write, verify).

    `default restore` runs it, and so does the guardian when the adopted model's pool ran dry.
    """
    what = "the previous default"
    with open_switch(peers, what) as switch:
        last = switch.last_adoption()
        if not last:
            raise DefaultNotChanged("there is no adoption by buy-x402 to restore",
                                    hint="set a model explicitly: buy.py default set MODEL")
        current, previous = switch.current, last.get("previous")
        if current != last.get("adopted"):
            raise DefaultNotChanged(
                f"model.default is {current!r}, not {last.get('adopted')!r} that buy-x402 adopted: "
                "someone else changed it since, so it is left alone",
                hint="set the model you want explicitly: buy.py default set MODEL")
        if not previous:
            raise DefaultNotChanged("the last adoption recorded no previous default to put back",
                                    hint="set a model explicitly: buy.py default set MODEL")
        try:
            llm = _litellm(peers, switch, previous)
            if not llm.is_listed(previous):
                raise LiteLLMError(f"LiteLLM at {llm.base_url} does not list {previous}",
                                   hint=f"make {previous} available in LiteLLM, or buy.py default set MODEL")
        except BuyError as err:
            raise _refuse("selectable", err, previous) from err
        try:
            write = switch.undo(last)
        except BuyError as err:
            raise _refuse("write", err, previous) from err
        return {"model": previous, "replaced": current, "config": str(switch.config.path), "changed": True,
                "purchase": last.get("purchase"), "write": {"method": write.method, "detail": write.detail}}


def show(peers: Peers) -> dict[str, Any]:
    """The agent's default now, where it came from, and (if buy-x402 adopted it) the pool behind it."""
    agent, config = peers.agent, peers.agent_config
    snapshot = agent.read(config)
    current = agent.current_default(snapshot)
    data: dict[str, Any] = {"model": current, "config": str(config.path), "profile": config.profile or "default",
                            "managed": config.managed, "adopted_by_buy_x402": False}
    record = agent.record(config)
    try:
        last = record.last(current, snapshot.identity)
    except AgentConfigError as err:  # show is read-only: a broken record is reported, not fatal
        last = None
        peers.ctx.warn(f"{err.message} ({err.hint})")
        data["record_problems"] = [err.message]
    if record.problems:
        data["record_problems"] = list(record.problems)
        peers.ctx.warn(f"{record.path}: " + "; ".join(record.problems[:5]))
    if last and last.get("adopted") == current:
        data.update(adopted_by_buy_x402=True, purchase=last.get("purchase"), at=last.get("at"),
                    previous=last.get("previous"), rollback=ROLLBACK_COMMAND)
        live = peers.buyer.try_status()
        entry = (live or {}).get(last.get("purchase") or "")
        if isinstance(entry, dict):
            data["live"] = {"remaining": entry.get("remaining"), "spent": entry.get("spent")}
        elif live is None:
            data["live"] = None
    return data


__all__ = ["DefaultSwitch", "open_switch", "adopt", "restore_previous_default", "show", "PAID_PREFIX"]
