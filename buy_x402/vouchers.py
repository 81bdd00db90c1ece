"""Voucher work shared by `buy`, `process` and `pay`: choosing the option to pay with (and saying
which), the payment scheme's pre-flight, pre-signing, the dry run of a write before anything is
signed, and the top-up write that retries on Conflict."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Callable, Mapping

from . import cluster, extensions, purchases, schemes, x402
from .caps import Signing
from .errors import KubeApiError
from .offer import PaymentOption, PaymentRequired
from .peers import Peers
from .schemes import SigningPlan

SIGNING_WORKERS = 8
CONFLICT_RETRIES = 5


def choose(peers: Peers, offer: PaymentRequired, wallet: str, *, index: int | None, token: str | None,
           network: str | None, eligible=None, eligible_reason: str = "") -> x402.Choice:
    """The option to pay with (by the flags, else the cheapest the wallet can afford among those
    `eligible` keeps), announced when the seller offers more than one, with the listing it was chosen from."""
    choice = x402.choose_option(offer.accepts, index=index, token=token, network=network,
                                balance_of=lambda o: peers.chain.balance_of(o.chain.name, o.asset, wallet),
                                eligible=eligible, eligible_reason=eligible_reason)
    if len(offer.accepts) > 1:
        peers.ctx.notify(f"This seller accepts {len(offer.accepts)} payment options; using [{choice.option.index}] "
                         f"({choice.reason}).\n{choice.listing}")
    return choice


def preflight(peers: Peers, option: PaymentOption, wallet: str, *,
              offered_extensions: Mapping[str, Any] | None = None) -> SigningPlan:
    """The payment scheme's checks before anything is signed (e.g. the Permit2 approval)."""
    return schemes.of(option).preflight(peers.chain, option, wallet, offered_extensions=offered_extensions)


def presign(peers: Peers, option: PaymentOption, wallet: str, count: int, deadline: int, offer: PaymentRequired,
            plan: SigningPlan | None = None, signing_workers: int = SIGNING_WORKERS, *, signed_at: int = 0) -> list:
    """Sign `count` vouchers for `option` through the remote signer, with progress on stderr. A seller
    that requires an extension these vouchers cannot carry is refused first (buy's dry run comes here
    with placeholder signatures, so that is before anything is signed).

    With `signed_at` (unix seconds) the vouchers carry their signing time as `validAfter` (less the
    scheme's margin), so the spend caps can date them when the signing record is gone."""
    resource = offer.resource.get("url") if isinstance(offer.resource, dict) else offer.resource
    extensions.check_satisfiable(offer.extensions, url=str(resource or "the seller"),
                                 sponsored=bool(plan and plan.permit_nonce_base is not None))

    def progress(done: int, total: int) -> None:
        peers.ctx.progress("signed", done, total)
    return peers.signer.presign(option, address=wallet, count=count, deadline=deadline, plan=plan,
                                extensions=offer.extensions, on_progress=progress, workers=signing_workers,
                                valid_after=schemes.valid_after_for(signed_at) if signed_at else 0)


PLACEHOLDER_SIGNATURE = "0x" + "00" * 64 + "1b"


def placeholder_auths(option: PaymentOption, wallet: str, count: int, deadline: int, offer: PaymentRequired,
                      plan: SigningPlan | None = None, *, signed_at: int = 0) -> list:
    """`count` vouchers of exactly the shape `presign` makes, with a zero signature: nothing is signed."""
    from .signer import SignerClient

    class Unsigned(SignerClient):
        def sign_typed_data(self, address: str, typed: dict) -> str:
            return PLACEHOLDER_SIGNATURE

    quiet = SimpleNamespace(signer=Unsigned(None, ""), ctx=SimpleNamespace(progress=lambda *_: None))
    return presign(quiet, option, wallet, count, deadline, offer, plan, signed_at=signed_at)


def dry_run_write(peers: Peers, obj: dict, *, replace: bool) -> None:
    """Ask the API server to validate the write to come (placeholder vouchers); refuse what it would
    reject or prune. Raises before anything is signed."""
    cluster.check_schema(peers.kube, obj, replace=replace)


def replace_with_retry(peers: Peers, name: str, existing: dict, live_entry: dict, auths: list,
                       payment: dict, policy: dict | None, endpoint: str | None = None, *,
                       signing: Signing | None = None,
                       recheck: Callable[[dict, dict | None], None] | None = None) -> dict:
    """PUT the merged pool; on Conflict re-read, re-check and merge again with the fresh live tail.

    `signing` goes into the signing history the object carries, in the same write; `recheck` sees the
    fresh object and live entry after a Conflict and raises when the batch may no longer be written
    (e.g. another run signed meanwhile and the spend caps have no room left)."""
    for attempt in range(CONFLICT_RETRIES):
        obj = purchases.topup_object(existing, new_auths=auths, live_remaining=live_entry["remaining"],
                                     payment=payment, auto_refill=policy, endpoint=endpoint, signing=signing)
        try:
            return peers.kube.replace(obj)
        except KubeApiError as err:
            if err.reason != "Conflict" or attempt == CONFLICT_RETRIES - 1:
                raise
        existing = peers.kube.get(name)
        live_entry = peers.buyer.status().get(name)
        purchases.check_topup_allowed(existing, live_entry)
        if recheck is not None:
            recheck(existing, live_entry)
    raise AssertionError("unreachable")
