"""Permit2 vouchers cancelled for real: the canonical Permit2 on the devstack chain, vouchers signed by the
remote signer, one settled through Permit2 as the x402 proxy would, the rest invalidated by the scheme's
own revocation sent through eRPC; the nonce bitmap and the events tell settled from cancelled, and a
replay of a cancelled voucher reverts with nothing moved."""
from __future__ import annotations

import time

import pytest
from eth_abi import encode
from eth_utils import keccak

from buy_x402 import abi, voucher_states, revocation, schemes
from buy_x402 import settings as settings_mod
from buy_x402.offer import CHAINS, PaymentOption
from buy_x402.peers import Peers
from buy_x402.result import Context
from buy_x402.schemes import permit2
from conftest import stack_env
from devstack import config
from devstack.parts import chain as chain_part
from helpers import usdc_balance

PERMIT2_CODE_KECCAK = "a1ad0529565c25202190d4ae7f75d4ca08dc432cc760544ee7d0313b68e82ecd"
WITNESS_TYPE_STRING = "Witness witness)TokenPermissions(address token,uint256 amount)Witness(address to,uint256 validAfter)"
PERMIT_WITNESS_TRANSFER_FROM = ("permitWitnessTransferFrom(((address,uint256),uint256,uint256),(address,uint256),"
                                "address,bytes32,string,bytes)")
INVALID_NONCE = "0x756688fe"   # Permit2's InvalidNonce()


def rpc(stack, method, params=None):
    return chain_part.rpc(stack.env["ANVIL_RPC_URL"], method, params)


def peers_for(stack) -> Peers:
    notes: list[str] = []
    ctx = Context(settings=settings_mod.load(stack_env(stack)), notify=notes.append, warn=notes.append,
                  progress=lambda *a: None)
    return Peers(ctx)


def send_as(stack, sender: str, to: str, data: str) -> dict:
    rpc(stack, "anvil_impersonateAccount", [sender])
    try:
        tx = rpc(stack, "eth_sendTransaction", [{"from": sender, "to": to, "data": data}])
        return chain_part.wait_receipt(stack.env["ANVIL_RPC_URL"], tx)
    finally:
        rpc(stack, "anvil_stopImpersonatingAccount", [sender])


def settle_call(auth: dict) -> str:
    """Permit2.permitWitnessTransferFrom for a stored voucher, as the x402 exact proxy sends it."""
    p = auth["payment"]["payload"]["permit2Authorization"]
    witness = keccak(encode(["bytes32", "address", "uint256"],
                            [keccak(text="Witness(address to,uint256 validAfter)"), p["witness"]["to"],
                             int(p["witness"]["validAfter"])]))
    args = encode(["((address,uint256),uint256,uint256)", "(address,uint256)", "address", "bytes32", "string", "bytes"],
                  [((p["permitted"]["token"], int(p["permitted"]["amount"])), int(p["nonce"]), int(p["deadline"])),
                   (p["witness"]["to"], int(p["permitted"]["amount"])), p["from"], witness, WITNESS_TYPE_STRING,
                   bytes.fromhex(auth["payment"]["payload"]["signature"][2:])])
    return "0x" + keccak(text=PERMIT_WITNESS_TRANSFER_FROM)[:4].hex() + args.hex()


def test_the_devstack_chain_has_the_canonical_permit2(stack):
    code = rpc(stack, "eth_getCode", [permit2.PERMIT2_ADDRESS, "latest"])
    assert keccak(bytes.fromhex(code[2:])).hex() == PERMIT2_CODE_KECCAK


def test_permit2_vouchers_are_invalidated_on_chain_and_a_replay_reverts(stack):
    peers = peers_for(stack)
    wallet, pay_to = stack.info["signer"]["address"], stack.info["chain"]["pay_to"]
    option = PaymentOption(index=1, scheme="exact", network=CHAINS["base-sepolia"].caip2, chain=CHAINS["base-sepolia"],
                           amount=1000, asset=config.USDC_ADDRESS, pay_to=pay_to,
                           extra={"name": "USDC", "version": "2", "assetTransferMethod": "permit2"},
                           transfer_method="permit2")
    auths = peers.signer.presign(option, address=wallet, count=3, deadline=int(time.time()) + 3600)
    payment = {"network": "base-sepolia", "asset": config.USDC_ADDRESS, "payTo": pay_to, "price": "1000",
               "assetTransferMethod": "permit2"}
    vouchers = [schemes.identify(a, payment) for a in auths]
    assert [v.scheme for v in vouchers] == ["permit2"] * 3
    assert all(v.authorizer == wallet and v.value == 1000 for v in vouchers)

    # One is settled through Permit2 as the x402 proxy would: tokens move, its nonce bit is set.
    approve = abi.call_data("095ea7b3", abi.address_word(permit2.PERMIT2_ADDRESS), abi.uint_word(abi.UINT256_MAX))
    assert send_as(stack, wallet, config.USDC_ADDRESS, approve)["status"] == "0x1"
    proxy = permit2.X402_EXACT_PERMIT2_PROXY
    rpc(stack, "anvil_setBalance", [proxy, hex(10**18)])
    seller_before = usdc_balance(stack, pay_to)
    assert send_as(stack, proxy, permit2.PERMIT2_ADDRESS, settle_call(auths[0]))["status"] == "0x1"
    assert usdc_balance(stack, pay_to) - seller_before == 1000

    entries = [voucher_states.Entry(i, v.id, v) for i, v in enumerate(vouchers)]
    voucher_states.read_states(peers.chain, entries, now=time.time(), since=time.time() - 60)
    assert [e.state for e in entries] == ["settled", "unused", "unused"]

    # The other two are invalidated by the scheme's revocation, signed by the remote signer, sent via eRPC.
    plans = revocation.plan(peers, [e.voucher for e in entries if e.state == "unused"])
    records = revocation.execute(peers, plans, lambda text: None)
    assert records and all(r["status"] == "mined" for r in records)
    assert sorted(i for r in records for i in r["covers"]) == sorted(v.id for v in vouchers[1:])
    voucher_states.read_states(peers.chain, entries, now=time.time(), since=time.time() - 60)
    assert [e.state for e in entries] == ["settled", "cancelled", "cancelled"]

    # A replay of a cancelled voucher reverts with InvalidNonce; nothing moves.
    balances = (usdc_balance(stack, pay_to), usdc_balance(stack, wallet))
    with pytest.raises(RuntimeError, match=INVALID_NONCE):
        rpc(stack, "eth_estimateGas", [{"from": proxy, "to": permit2.PERMIT2_ADDRESS, "data": settle_call(auths[1])}])
    assert (usdc_balance(stack, pay_to), usdc_balance(stack, wallet)) == balances
    reset = abi.call_data("095ea7b3", abi.address_word(permit2.PERMIT2_ADDRESS), abi.uint_word(0))
    assert send_as(stack, wallet, config.USDC_ADDRESS, reset)["status"] == "0x1"
