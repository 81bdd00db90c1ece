"""Spend caps of a purchase without I/O: `spec.autoRefill.maxTotal` and `maxSpendPerDay`, what was
signed against them, and how many vouchers a refill may still sign.

Units. Both caps are atomic units of the purchase's token, as `spec.payment.price` is. `maxSpendPerDay`
is the CRD's string; `maxTotal` is the CRD's integer (int64 on the API server, so at most
9223372036854775807 atomic: 9.2 units of an 18-decimal token). `maxTotal` is the most the purchase may
ever sign, the first batch included; `maxSpendPerDay` the most it may sign in any 24 h (a rolling
window). The upstream CRD describes `maxTotal` as "Cap total auths ever signed" without any code that
reads it; this skill caps money, because a count of vouchers means another amount each time the
seller's price moves.

What was signed comes from three places, because any one may be lost:
- the signing record beside the agent's adoption record (`ledger.py`): every signing with its time;
- the PurchaseRequest's annotation `buy-x402.obol.org/signed`, written in the same PUT that delivers
  the vouchers (so it can never disagree with them): the lifetime total and the last 24 h of signings;
- the vouchers in the spec: their amounts, and their signing time (`validAfter` + the signing margin).
The lifetime total is the record's and the annotation's taken together (each one's total plus the
signings only the other holds) and never less than the vouchers in the spec; when
neither the record nor the annotation knows the purchase (bought by another tool), it is the vouchers in
the spec plus those the buyer spent that a top-up already dropped, valued at today's price: a lower
bound, said as such (`usage().source` names it). The 24 h window is the
union, by signing id, of the record's and the annotation's signings (the record's time wins for an id
both hold); only when neither knows the purchase is it rebuilt from the vouchers' own signing times,
which misses vouchers a top-up dropped after they were spent: a lower bound, said as such.
"""
from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Mapping

from .errors import PurchaseError, UsageError

WINDOW_S = 24 * 3600
ANNOTATION = "buy-x402.obol.org/signed"
MAX_TOTAL_LIMIT = 2 ** 63 - 1   # the API server stores spec.autoRefill.maxTotal as int64
FLAGS = {"maxTotal": "--max-total", "maxSpendPerDay": "--max-spend-per-day"}


# --------------------------------------------------------------------------------------- signings

def iso(ts: float) -> str:
    return datetime.fromtimestamp(int(ts), timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_time(text: Any) -> int:
    """Unix seconds of an ISO-8601 time (as `iso` writes it); ValueError for anything else."""
    if not isinstance(text, str):
        raise ValueError(f"not a time: {text!r}")
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if when.tzinfo is None:
        raise ValueError(f"time without a zone: {text!r}")
    return int(when.timestamp())


@dataclass(frozen=True)
class Signing:
    """One batch of vouchers signed for a purchase: when, how many, their value."""
    id: str
    at: int          # unix seconds
    count: int
    atomic: int
    by: str = ""     # the command that signed: buy, process, refill

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "at": iso(self.at), "count": self.count, "atomic": str(self.atomic)}
        if self.by:
            out["by"] = self.by
        return out

    @classmethod
    def from_json(cls, data: Any) -> "Signing":
        if not isinstance(data, Mapping):
            raise ValueError("a signing is not an object")
        count, atomic = int(data["count"]), int(str(data["atomic"]))
        if count < 0 or atomic < 0 or not isinstance(data["id"], str):
            raise ValueError("a signing has a negative count or amount, or no id")
        return cls(id=data["id"], at=parse_time(data["at"]), count=count, atomic=atomic, by=str(data.get("by") or ""))


def new_signing(count: int, price: int, *, by: str, now: float | None = None) -> Signing:
    return Signing(id=secrets.token_hex(8), at=int(time.time() if now is None else now), count=int(count),
                   atomic=int(count) * int(price), by=by)


@dataclass(frozen=True)
class History:
    """What one source knows a purchase signed: the lifetime totals and (at least) the recent signings."""
    count: int = 0
    atomic: int = 0
    signings: tuple[Signing, ...] = ()

    def plus(self, signing: Signing, *, keep_after: float) -> "History":
        """This history with `signing` added; signings at or before `keep_after` are forgotten (the
        totals keep them)."""
        kept = tuple(s for s in self.signings if s.at > keep_after) + (signing,)
        return History(self.count + signing.count, self.atomic + signing.atomic, kept)

    def minus(self, signing_id: str) -> "History":
        """This history without the signing `signing_id` (its write never happened)."""
        gone = [s for s in self.signings if s.id == signing_id]
        if not gone:
            return self
        return History(self.count - gone[0].count, self.atomic - gone[0].atomic,
                       tuple(s for s in self.signings if s.id != signing_id))

    def to_json(self) -> dict[str, Any]:
        return {"count": self.count, "atomic": str(self.atomic), "signings": [s.to_json() for s in self.signings]}

    @classmethod
    def from_json(cls, data: Any) -> "History":
        if not isinstance(data, Mapping) or not isinstance(data.get("signings"), list):
            raise ValueError("a signing history is not an object with a list of signings")
        count, atomic = int(data["count"]), int(str(data["atomic"]))
        if count < 0 or atomic < 0:
            raise ValueError("a signing history has a negative total")
        return cls(count, atomic, tuple(Signing.from_json(s) for s in data["signings"]))


# ------------------------------------------------------------------------------------- annotation

def annotation_of(obj: Mapping[str, Any]) -> History | None:
    """The signing history a PurchaseRequest carries, None when it carries none.

    An annotation that is not ours to read is an error, not "nothing signed": a cap must not open up
    because someone edited it. The fix is to repair or delete it (then the vouchers are the fallback).
    """
    raw = ((obj.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION)
    if raw is None:
        return None
    try:
        return History.from_json(json.loads(raw))
    except (TypeError, ValueError, KeyError) as err:
        name = (obj.get("metadata") or {}).get("name", "?")
        raise PurchaseError(f"PurchaseRequest {name}'s annotation {ANNOTATION} is unreadable ({err}); its spend "
                            "caps cannot be checked, so nothing was signed",
                            hint=f"repair the annotation, or remove it: the vouchers' own signing times are "
                                 "the fallback", code="signed_annotation", data={"name": name}) from None


def annotate(obj: dict[str, Any], signing: Signing) -> None:
    """Add `signing` to the history `obj` (about to be written) carries; kept: the last 24 h of signings."""
    history = annotation_of(obj) or History()
    updated = history.plus(signing, keep_after=signing.at - WINDOW_S)
    annotations = obj.setdefault("metadata", {}).setdefault("annotations", {})
    annotations[ANNOTATION] = json.dumps(updated.to_json(), separators=(",", ":"))


# ------------------------------------------------------------------------------------------- caps

@dataclass(frozen=True)
class Caps:
    max_total: int | None = None
    max_per_day: int | None = None

    @property
    def any(self) -> bool:
        return self.max_total is not None or self.max_per_day is not None

    @classmethod
    def of(cls, policy: Mapping[str, Any] | None, name: str = "?") -> "Caps":
        """The caps a stored `spec.autoRefill` sets; a value that is no positive amount is an error
        (a cap must not silently stop applying)."""
        policy = policy or {}
        values: dict[str, int | None] = {}
        for key in ("maxTotal", "maxSpendPerDay"):
            raw = policy.get(key)
            if raw in (None, ""):
                values[key] = None
                continue
            text = str(raw).strip()
            if isinstance(raw, bool) or not text.isdigit() or int(text) <= 0:
                raise PurchaseError(f"PurchaseRequest {name} has spec.autoRefill.{key} {raw!r}, not a positive "
                                    "number of atomic units; its spend cap cannot be applied, so nothing was signed",
                                    hint=f"set it again: buy.py buy {name} ... {FLAGS[key]} AMOUNT",
                                    code="bad_cap", data={"name": name, "field": key})
            values[key] = int(text)
        return cls(values["maxTotal"], values["maxSpendPerDay"])

    def policy_fields(self) -> dict[str, Any]:
        """The fields as `spec.autoRefill` stores them (maxTotal an integer, maxSpendPerDay a string)."""
        out: dict[str, Any] = {}
        if self.max_total is not None:
            out["maxTotal"] = int(self.max_total)
        if self.max_per_day is not None:
            out["maxSpendPerDay"] = str(self.max_per_day)
        return out


def check_flags(caps: Caps, *, price: int, first_batch: int | None, fmt: Callable[[int], str]) -> None:
    """UsageError for caps that cannot work: beyond the CRD's integer, below one voucher, or (for a new
    purchase, `first_batch` vouchers) below the first batch, which counts against both caps."""
    if caps.max_total is not None and caps.max_total > MAX_TOTAL_LIMIT:
        raise UsageError(f"--max-total {fmt(caps.max_total)} is more than spec.autoRefill.maxTotal can hold "
                         f"({MAX_TOTAL_LIMIT} atomic, the API server's int64)", hint="give a smaller --max-total")
    for value, flag in ((caps.max_total, "--max-total"), (caps.max_per_day, "--max-spend-per-day")):
        if value is None:
            continue
        if value < price:
            raise UsageError(f"{flag} {fmt(value)} is less than one request's price {fmt(price)}: no voucher "
                             "could ever be signed under it", hint=f"raise {flag} to at least {fmt(price)}")
        if first_batch is not None and first_batch * price > value:
            raise UsageError(f"{flag} {fmt(value)} is less than the first batch of {first_batch} vouchers "
                             f"({fmt(first_batch * price)}), which counts against it",
                             hint=f"raise {flag}, or buy fewer (--count/--budget)")


# ------------------------------------------------------------------------------------------ usage

@dataclass(frozen=True)
class Usage:
    total: int              # atomic signed over the purchase's life (the bound used, see the module doc)
    day: int                # atomic signed in the last 24 h
    source: str             # where the window came from: record, annotation, record+annotation, vouchers, none
    frees_at: int | None    # when the oldest signing in the window leaves it
    window: tuple[Signing, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {"total": str(self.total), "last24h": str(self.day), "source": self.source,
                "freesAt": iso(self.frees_at) if self.frees_at else None}


def voucher_signings(vouchers: Iterable[tuple[int, int | None]]) -> tuple[Signing, ...]:
    """Signings rebuilt from vouchers' (amount, signing time): one per distinct time; undated ones skipped."""
    by_time: dict[int, list[int]] = {}
    for amount, signed_at in vouchers:
        if signed_at is not None:
            by_time.setdefault(signed_at, []).append(amount)
    return tuple(Signing(id=f"vouchers@{at}", at=at, count=len(amounts), atomic=sum(amounts))
                 for at, amounts in sorted(by_time.items()))


def _lifetime(record: History | None, annotation: History | None) -> int:
    """The lifetime total of two histories that may each miss signings the other holds: the record misses
    what was signed while it was lost (or elsewhere); the annotation misses a signing reserved but not
    yet written. Each total plus the other's signings it lacks; of the record's, only those younger
    than what the annotation keeps (older ones it dropped from its list, not from its total)."""
    if record is None or annotation is None:
        return (record or annotation).atomic  # type: ignore[union-attr]
    in_record = {s.id for s in record.signings}
    in_annotation = {s.id for s in annotation.signings}
    kept_after = max((s.at for s in annotation.signings), default=None)
    kept_after = None if kept_after is None else kept_after - WINDOW_S
    from_record = record.atomic + sum(s.atomic for s in annotation.signings if s.id not in in_record)
    from_annotation = annotation.atomic + sum(s.atomic for s in record.signings if s.id not in in_annotation
                                              and (kept_after is None or s.at > kept_after))
    return max(from_record, from_annotation)


def usage(*, record: History | None, annotation: History | None, vouchers: list[tuple[int, int | None]],
          dropped_spent: int, price: int, now: float, exclude: str | None = None) -> Usage:
    """What a purchase signed, from every source there is (see the module doc).

    `vouchers` are the spec's vouchers as (amount, signing time or None); `dropped_spent` is how many
    vouchers the buyer spent that are no longer in the spec (valued at `price`). `exclude` leaves one
    signing out (the caller's own, while it re-checks after a conflict).
    """
    if exclude:
        record, annotation = (h.minus(exclude) if h is not None else None for h in (record, annotation))
    histories = [h for h in (record, annotation) if h is not None]
    in_spec = sum(amount for amount, _ in vouchers)
    if histories:
        total = max(in_spec, _lifetime(record, annotation))
    else:  # the buyer's `spent` counts by purchase name, so it only fills in when no history exists
        total = in_spec + max(0, dropped_spent) * price
    if histories:
        merged: dict[str, Signing] = {}
        for history in reversed(histories):  # the record last: its time wins for a signing both hold
            merged.update({s.id: s for s in history.signings})
        signings = tuple(merged.values())
        source = "+".join(n for n, h in (("record", record), ("annotation", annotation)) if h is not None)
    else:
        signings, source = voucher_signings(vouchers), "vouchers" if vouchers else "none"
    window = tuple(sorted((s for s in signings if s.at > now - WINDOW_S), key=lambda s: s.at))
    frees_at = window[0].at + WINDOW_S if window else None
    return Usage(total=total, day=sum(s.atomic for s in window), source=source, frees_at=frees_at, window=window)


@dataclass(frozen=True)
class Fit:
    count: int              # vouchers that may be signed now (≤ wanted)
    reason: str | None      # the binding cap, when it holds the count below what was wanted


def fit(caps: Caps, use: Usage, price: int, wanted: int, fmt: Callable[[int], str]) -> Fit:
    """How many of `wanted` vouchers at `price` fit under both caps, and the binding cap's one-line reason."""
    count, reason = int(wanted), None
    if caps.max_total is not None:
        room = max(0, caps.max_total - use.total) // price
        if room < count:
            count, reason = room, (f"maxTotal {fmt(caps.max_total)} {'reached' if room == 0 else 'nearly reached'}: "
                                   f"{fmt(use.total)} signed so far")
    if caps.max_per_day is not None:
        room = max(0, caps.max_per_day - use.day) // price
        if room < count:
            later = f"; more from {iso(use.frees_at)}" if use.frees_at else ""
            count, reason = room, (f"maxSpendPerDay {fmt(caps.max_per_day)} "
                                   f"{'reached' if room == 0 else 'nearly reached'}: {fmt(use.day)} signed in "
                                   f"the last 24 h{later}")
    return Fit(count, reason)


def report(caps: Caps, use: Usage, fmt: Callable[[int], str]) -> dict[str, Any]:
    """The caps and how much of each is used, for `status` and `list`."""
    out: dict[str, Any] = {"signed": use.to_json()}
    if caps.max_total is not None:
        left = max(0, caps.max_total - use.total)
        out["maxTotal"] = {"atomic": str(caps.max_total), "display": fmt(caps.max_total),
                           "used": str(use.total), "usedDisplay": fmt(use.total),
                           "left": str(left), "leftDisplay": fmt(left)}
    if caps.max_per_day is not None:
        left = max(0, caps.max_per_day - use.day)
        out["maxSpendPerDay"] = {"atomic": str(caps.max_per_day), "display": fmt(caps.max_per_day),
                                 "used": str(use.day), "usedDisplay": fmt(use.day),
                                 "left": str(left), "leftDisplay": fmt(left),
                                 "freesAt": iso(use.frees_at) if use.frees_at else None}
    return out


__all__ = ["WINDOW_S", "ANNOTATION", "MAX_TOTAL_LIMIT", "Signing", "History", "Caps", "Usage", "Fit", "new_signing",
           "annotation_of", "annotate", "check_flags", "usage", "fit", "report", "voucher_signings", "iso"]
