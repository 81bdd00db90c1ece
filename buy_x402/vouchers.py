"""Voucher work shared by `buy`, `process` and `pay`: pre-signing, the Permit2 pre-flight, and the
top-up write that retries on Conflict with a fresh read."""
from __future__ import annotations

from .. import purchases
from ..errors import KubeApiError, WalletError
from ..result import Context
from .common import Peers

SIGNING_WORKERS = 8
CONFLICT_RETRIES = 5


def presign(peers: Peers, ctx: Context, option, wallet: str, count: int, valid_before: int, offer,
            permit_nonce_base: int | None = None, signing_workers: int = SIGNING_WORKERS) -> list:
    """Sign `count` vouchers for `option` through the remote signer, with progress on stderr."""
    def progress(done: int, total: int) -> None:
        ctx.progress("signed", done, total)
    if option.transfer_method == "permit2":
        return peers.signer.presign_permit2(option, address=wallet, count=count, deadline=valid_before,
                                            permit_nonce_base=permit_nonce_base,
                                            extensions=offer.extensions, on_progress=progress,
                                            workers=signing_workers)
    return peers.signer.presign_erc3009(option, address=wallet, count=count, valid_before=valid_before,
                                        extensions=offer.extensions, on_progress=progress,
                                        workers=signing_workers)


def check_permit2_allowance(peers: Peers, option, wallet: str) -> None:
    from ..signing import PERMIT2_ADDRESS
    allowance = peers.chain.allowance(option.chain.name, option.asset, wallet, PERMIT2_ADDRESS)
    if allowance == 0:
        data = "0x095ea7b3" + PERMIT2_ADDRESS[2:].lower().rjust(64, "0") + "f" * 64
        raise WalletError(f"wallet {wallet} has not approved Permit2 ({PERMIT2_ADDRESS}) to spend {option.asset} "
                          f"on {option.chain.name}",
                          hint=f"send once from {wallet}: to={option.asset} data={data}")


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
