"""Cancel unspent vouchers on chain, so that no copy of them can ever be charged.

A signed voucher stays spendable until its deadline by whoever holds a copy (the seller has seen
every voucher the buyer sent; the cluster stores the rest). The only way to take one back is to use
its nonce up: EIP-3009 `cancelAuthorization` (the authorizer signs a CancelAuthorization), Permit2
`invalidateUnorderedNonces` (sent by the owner). Each payment scheme builds its own calls
(`PaymentScheme.revocations`); this module sends them as ordinary transactions, signed by the remote
signer and broadcast through eRPC. The wallet pays their gas in ETH, which an x402 buyer otherwise
never needs, so `plan` signs and estimates everything and checks the balance before anything is sent.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from . import schemes
from .amounts import format_amount
from .errors import ChainError, SignerError, WalletError
from .offer import resolve_chain
from .schemes import OnChainVoucher, Revocation

GAS_MARGIN = 1.2   # estimate × 1.2, as the wallet skill's send-tx does
ALREADY_USED = "used or canceled"   # FiatTokenV2's revert when the nonce went meanwhile


def eth(wei: int) -> str:
    return format_amount(int(wei), 18, "ETH")


@dataclass
class Planned:
    revocation: Revocation
    gas_limit: int


@dataclass
class Plan:
    """Everything needed to send, checked: one chain, one wallet, fees fixed, the balance enough."""
    chain: str
    chain_id: int
    wallet: str
    txs: list[Planned]
    max_fee: int
    tip: int
    cost_wei: int
    balance_wei: int
    used_meanwhile: list[str] = field(default_factory=list)   # voucher ids whose nonce went while planning

    def view(self) -> dict[str, Any]:
        return {"chain": self.chain, "wallet": self.wallet, "transactions": len(self.txs),
                "vouchers": sum(len(p.revocation.covers) for p in self.txs),
                "gas": sum(p.gas_limit for p in self.txs), "max_fee_per_gas": str(self.max_fee),
                "max_cost_wei": str(self.cost_wei), "max_cost": eth(self.cost_wei),
                "balance_wei": str(self.balance_wei), "balance": eth(self.balance_wei)}


def plan(peers, vouchers: list[OnChainVoucher]) -> list[Plan]:
    """Sign the cancellations, estimate their gas and check the wallet can pay it; raise before sending.

    Signing a cancellation commits nothing (it only lets anyone cancel), so a refusal here changes
    nothing on chain.
    """
    if not vouchers:
        return []
    wallet = peers.signer.address()
    foreign = sorted({v.authorizer for v in vouchers if v.authorizer.lower() != wallet.lower()})
    if foreign:
        raise WalletError(f"vouchers signed by {', '.join(foreign)} cannot be cancelled with this wallet ({wallet}): "
                          "only their signer can cancel them; nothing was sent",
                          hint="run this where the remote signer holds that key")
    plans = []
    for chain_name in sorted({v.chain for v in vouchers}):
        plans.append(_plan_chain(peers, wallet, chain_name, [v for v in vouchers if v.chain == chain_name]))
    return plans


def _plan_chain(peers, wallet: str, chain_name: str, vouchers: list[OnChainVoucher]) -> Plan:
    chain = resolve_chain(chain_name)
    answered = peers.chain.chain_id(chain_name)
    if answered != chain.chain_id:
        raise ChainError(f"the RPC for {chain_name} answers chain id {answered}, not {chain.chain_id}; nothing was sent",
                         hint=f"check that ERPC_URL routes {chain_name} to the right chain")
    revocations: list[Revocation] = []
    for name in sorted({v.scheme for v in vouchers}):
        members = [v for v in vouchers if v.scheme == name]
        try:
            revocations += schemes.SCHEMES[name].revocations(members, peers.signer.sign_typed_data)
        except SignerError as err:
            raise SignerError(f"cannot sign the cancellation of {len(members)} voucher(s): {err.message}; "
                              "nothing was sent", hint=err.hint, data=err.data) from err
    estimates = peers.chain.batch(chain_name, [("eth_estimateGas", [{"from": wallet, "to": r.to, "data": r.data}])
                                               for r in revocations])
    txs, used = [], []
    for revocation, estimate in zip(revocations, estimates):
        if isinstance(estimate, ChainError):
            if ALREADY_USED in estimate.message:
                used += revocation.covers
                continue
            raise ChainError(f"cancelling voucher(s) {', '.join(revocation.covers)} would fail on {chain_name}: "
                             f"{estimate.message}; nothing was sent", data=estimate.data)
        txs.append(Planned(revocation, int(int(str(estimate), 16) * GAS_MARGIN) + 1))
    max_fee, tip = peers.chain.fees(chain_name)
    cost = sum(p.gas_limit for p in txs) * max_fee
    balance = peers.chain.eth_balance(chain_name, wallet)
    result = Plan(chain_name, chain.chain_id, wallet, txs, max_fee, tip, cost, balance, used)
    if balance < cost:
        raise WalletError(
            f"wallet {wallet} holds {eth(balance)} on {chain_name}; cancelling {len(vouchers)} voucher(s) takes "
            f"{len(txs)} transaction(s) and up to {eth(cost)} of gas; nothing was sent",
            hint=f"send at least {eth(cost - balance)} to {wallet} on {chain_name}, then re-run",
            code="insufficient_gas", data=result.view())
    return result


def execute(peers, plans: list[Plan], notify: Callable[[str], None]) -> list[dict[str, Any]]:
    """Sign and send every planned transaction with consecutive nonces, then wait for each receipt.

    Returns one record per transaction (hash, covered vouchers, status). A failure to sign or send
    stops sending; the ones already sent are still waited for, then ChainError carries them in `data`.
    """
    records: list[dict[str, Any]] = []
    for p in plans:
        nonce = peers.chain.transaction_count(p.chain, p.wallet)
        failure = None
        for offset, planned in enumerate(p.txs):
            tx = {"chain_id": p.chain_id, "to": planned.revocation.to, "nonce": nonce + offset,
                  "gas_limit": planned.gas_limit, "max_fee_per_gas": p.max_fee, "max_priority_fee_per_gas": p.tip,
                  "value": "0x0", "data": planned.revocation.data}
            try:
                raw = peers.signer.sign_transaction(p.wallet, tx)
                tx_hash = peers.chain.send_raw_transaction(p.chain, raw)
            except (ChainError, SignerError) as err:
                failure = err
                break
            records.append({"chain": p.chain, "transaction": tx_hash, "covers": list(planned.revocation.covers),
                            "to": planned.revocation.to, "status": "sent"})
            notify(f"  sent {tx_hash} cancelling {len(planned.revocation.covers)} voucher(s)")
        for record in records:
            if record["chain"] == p.chain and record["status"] == "sent":
                receipt = peers.chain.wait_receipt(p.chain, record["transaction"])
                record["status"] = "mined" if receipt.get("status") == "0x1" else "reverted"
                record["gasUsed"] = int(str(receipt.get("gasUsed") or "0x0"), 16)
        if failure is not None:
            raise ChainError(f"sending the cancellations stopped after {len(records)} transaction(s): {failure.message}",
                             hint="re-run the same command: it cancels only what is still unused",
                             data={"transactions": records})
    return records


__all__ = ["Plan", "plan", "execute", "eth"]
