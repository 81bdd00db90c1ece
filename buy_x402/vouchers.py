"""Voucher work shared by `buy`, `process` and `pay`: choosing the option to pay with (and saying
which), the payment scheme's pre-flight, pre-signing, the dry run of a write before anything is
signed, and the top-up write that retries on Conflict."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Mapping

from . import cluster, purchases, schemes, x402
from .errors import KubeApiError
from .offer import PaymentOption, PaymentRequired
from .peers import Peers
from .schemes import SigningPlan

SIGNING_WORKERS = 8
CONFLICT_RETRIES = 5


def choose(peers: Peers, offer: PaymentRequired, wallet: str, *, index: int | None, token: str | None,
           network: str | None) -> x402.Choice:
    """The option to pay with (by the flags, else the first the wallet can afford), announced when the
    seller offers more than one, with the listing the choice was made from."""
    choice = x402.choose_option(offer.accepts, index=index, token=token, network=network,
                                balance_of=lambda o: peers.chain.balance_of(o.chain.name, o.asset, wallet))
    if len(offer.accepts) > 1:
        peers.ctx.notify(f"This seller accepts {len(offer.accepts)} payment options; using [{choice.option.index}] "
                         f"({choice.reason}).\n{choice.listing}")
    return choice


def preflight(peers: Peers, option: PaymentOption, wallet: str, *,
              offered_extensions: Mapping[str, Any] | None = None) -> SigningPlan:
    """The payment scheme's checks before anything is signed (e.g. the Permit2 approval)."""
    return schemes.of(option).preflight(peers.chain, option, wallet, offered_extensions=offered_extensions)


def presign(peers: Peers, option: PaymentOption, wallet: str, count: int, deadline: int, offer: PaymentRequired,
            plan: SigningPlan | None = None, signing_workers: int = SIGNING_WORKERS) -> list:
    """Sign `count` vouchers for `option` through the remote signer, with progress on stderr."""
    def progress(done: int, total: int) -> None:
        peers.ctx.progress("signed", done, total)
    return peers.signer.presign(option, address=wallet, count=count, deadline=deadline, plan=plan,
                                extensions=offer.extensions, on_progress=progress, workers=signing_workers)


PLACEHOLDER_SIGNATURE = "0x" + "00" * 64 + "1b"


def placeholder_auths(option: PaymentOption, wallet: str, count: int, deadline: int, offer: PaymentRequired,
                      plan: SigningPlan | None = None) -> list:
    """`count` vouchers of exactly the shape `presign` makes, with a zero signature: nothing is signed."""
    from .signer import SignerClient

    class Unsigned(SignerClient):
        def sign_typed_data(self, address: str, typed: dict) -> str:
            return PLACEHOLDER_SIGNATURE

    quiet = SimpleNamespace(signer=Unsigned(None, ""), ctx=SimpleNamespace(progress=lambda *_: None))
    return presign(quiet, option, wallet, count, deadline, offer, plan)


def dry_run_write(peers: Peers, obj: dict, *, replace: bool) -> None:
    """Ask the API server to validate the write to come (placeholder vouchers); refuse what it would
    reject or prune. Raises before anything is signed."""
    cluster.check_schema(peers.kube, obj, replace=replace)


def replace_with_retry(peers: Peers, name: str, existing: dict, live_entry: dict, auths: list,
                       payment: dict, policy: dict | None, endpoint: str | None = None) -> dict:
    """PUT the merged pool; on Conflict re-read, re-check and merge again with the fresh live tail."""
    for attempt in range(CONFLICT_RETRIES):
        obj = purchases.topup_object(existing, new_auths=auths, live_remaining=live_entry["remaining"],
                                     payment=payment, auto_refill=policy, endpoint=endpoint)
        try:
            return peers.kube.replace(obj)
        except KubeApiError as err:
            if err.reason != "Conflict" or attempt == CONFLICT_RETRIES - 1:
                raise
        existing = peers.kube.get(name)
        live_entry = peers.buyer.status().get(name)
        purchases.check_topup_allowed(existing, live_entry)
    raise AssertionError("unreachable")
