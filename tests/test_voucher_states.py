"""The vouchers on chain without a chain: the ABI constants, each scheme's identity, state read, cancellation
and event parsing, and the audit's classification against the buyer's count (pure functions; the same
paths run against anvil in tests/test_remove_audit.py and tests/test_revoke_permit2.py)."""
from __future__ import annotations

import dataclasses
import json

import pytest
from eth_abi import encode
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak

from buy_x402 import abi, voucher_states, schemes
from buy_x402.schemes import eip3009, permit2
from buy_x402.x402 import parse_payment_required

KEY = "0x" + "42" * 32
ACCOUNT = Account.from_key(KEY)
USDC = "0x036CbD53842c5426634e7929541eC2318f3dCF7e"
PAY_TO = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
PAYMENT = {"network": "base-sepolia", "payTo": PAY_TO, "price": "1000", "asset": USDC,
           "assetTransferMethod": "eip3009", "eip712Name": "USDC", "eip712Version": "2"}


def option(extra=None):
    entry = {"scheme": "exact", "network": "eip155:84532", "asset": USDC, "amount": "1000", "payTo": PAY_TO,
             "maxTimeoutSeconds": 300, "extra": extra or {"name": "USDC", "version": "2"}}
    return parse_payment_required(402, {}, json.dumps({"x402Version": 2, "accepts": [entry]}).encode()).accepts[0]


def sign(address: str, typed: dict) -> str:
    assert address == ACCOUNT.address
    return "0x" + bytes(Account.sign_typed_data(KEY, full_message=typed).signature).hex()


def eip3009_voucher(deadline=1_900_000_000):
    scheme = eip3009.SCHEME
    return scheme.sign(sign, option(), payer=ACCOUNT.address, deadline=deadline, index=0,
                       plan=schemes.SigningPlan(), extensions=None)


def permit2_voucher(nonce: int):
    opt = option({"name": "USDC", "version": "2", "assetTransferMethod": "permit2"})
    typed = permit2.SCHEME.typed_data(opt, payer=ACCOUNT.address, nonce=nonce, deadline=1_900_000_000)
    return permit2.SCHEME.auth_object(opt, typed, sign(ACCOUNT.address, typed), payer=ACCOUNT.address)


@pytest.mark.parametrize("constant, text", [
    (abi.AUTHORIZATION_STATE, "authorizationState(address,bytes32)"),
    (abi.CANCEL_AUTHORIZATION, "cancelAuthorization(address,bytes32,uint8,bytes32,bytes32)"),
    (abi.TRANSFER_WITH_AUTHORIZATION,
     "transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,uint8,bytes32,bytes32)"),
    (abi.NONCE_BITMAP, "nonceBitmap(address,uint256)"),
    (abi.INVALIDATE_UNORDERED_NONCES, "invalidateUnorderedNonces(uint256,uint256)"),
])
def test_selectors_are_the_keccak_of_their_signatures(constant, text):
    assert constant == keccak(text=text)[:4].hex()


@pytest.mark.parametrize("constant, text", [
    (abi.TOPIC_AUTHORIZATION_USED, "AuthorizationUsed(address,bytes32)"),
    (abi.TOPIC_AUTHORIZATION_CANCELED, "AuthorizationCanceled(address,bytes32)"),
    (abi.TOPIC_UNORDERED_NONCE_INVALIDATION, "UnorderedNonceInvalidation(address,uint256,uint256)"),
    (abi.TOPIC_TRANSFER, "Transfer(address,address,uint256)"),
])
def test_event_topics_are_the_keccak_of_their_signatures(constant, text):
    assert constant == "0x" + keccak(text=text).hex()


def test_eip3009_identify_state_call_and_cancellation_match_the_token():
    auth = eip3009_voucher()
    voucher = schemes.identify(auth, PAYMENT)
    a = auth["payment"]["payload"]["authorization"]
    assert (voucher.scheme, voucher.authorizer, voucher.nonce, voucher.value, voucher.deadline) == (
        "eip3009", ACCOUNT.address, int(a["nonce"], 16), 1000, 1_900_000_000)
    assert voucher.domain == {"name": "USDC", "version": "2", "chainId": 84532, "verifyingContract": USDC}
    to, data = eip3009.SCHEME.state_call(voucher)
    assert to == USDC and data == "0x" + abi.AUTHORIZATION_STATE + encode(
        ["address", "bytes32"], [ACCOUNT.address, bytes.fromhex(a["nonce"][2:])]).hex()
    assert eip3009.SCHEME.is_used(voucher, "0x" + "0" * 63 + "1") is True
    assert eip3009.SCHEME.is_used(voucher, "0x" + "0" * 64) is False

    # The CancelAuthorization is signed in the voucher's own domain and recovers the authorizer; the
    # calldata is cancelAuthorization(authorizer, nonce, v, r, s) with exactly that signature.
    typed = eip3009.SCHEME.cancel_typed_data(voucher)
    assert typed["primaryType"] == "CancelAuthorization" and typed["domain"] == voucher.domain
    [revocation] = eip3009.SCHEME.revocations([voucher], sign)
    signature = sign(ACCOUNT.address, typed)
    assert Account.recover_message(encode_typed_data(full_message=typed), signature=signature) == ACCOUNT.address
    v, r, s = abi.split_signature(signature)
    assert revocation.to == USDC and revocation.covers == (auth["id"],)
    assert revocation.data == "0x" + abi.CANCEL_AUTHORIZATION + encode(
        ["address", "bytes32", "uint8", "bytes32", "bytes32"],
        [ACCOUNT.address, bytes.fromhex(a["nonce"][2:]), v, bytes.fromhex(r), bytes.fromhex(s)]).hex()


def test_eip3009_cancellations_are_read_from_the_canceled_events_only():
    auth = eip3009_voucher()
    voucher = schemes.identify(auth, PAYMENT)
    [query] = eip3009.SCHEME.event_queries([voucher])
    assert query.address.lower() == USDC.lower()
    assert query.topics == [[abi.TOPIC_AUTHORIZATION_USED, abi.TOPIC_AUTHORIZATION_CANCELED],
                            abi.topic_address(ACCOUNT.address)]
    nonce_topic = "0x" + abi.bytes32_word(voucher.nonce)
    used = {"address": USDC, "topics": [abi.TOPIC_AUTHORIZATION_USED, abi.topic_address(ACCOUNT.address), nonce_topic]}
    cancelled = dict(used, topics=[abi.TOPIC_AUTHORIZATION_CANCELED, *used["topics"][1:]])
    other_token = dict(cancelled, address="0x" + "11" * 20)
    assert eip3009.SCHEME.cancelled_nonces([voucher], [used]) == set()
    assert eip3009.SCHEME.cancelled_nonces([voucher], [used, other_token]) == set()
    assert eip3009.SCHEME.cancelled_nonces([voucher], [cancelled]) == {voucher.id}


def test_permit2_revocation_groups_nonces_by_word_and_reads_the_bitmap():
    nonces = [(7 << 8) | 3, (7 << 8) | 200, (9 << 8) | 0]
    vouchers = [schemes.identify(permit2_voucher(n), dict(PAYMENT, assetTransferMethod="permit2")) for n in nonces]
    assert [v.scheme for v in vouchers] == ["permit2"] * 3 and vouchers[0].pay_to == PAY_TO
    revocations = permit2.SCHEME.revocations(vouchers, sign)
    assert [(r.to, r.data, r.covers) for r in revocations] == [
        (permit2.PERMIT2_ADDRESS, "0x" + abi.INVALIDATE_UNORDERED_NONCES + encode(
            ["uint256", "uint256"], [7, (1 << 3) | (1 << 200)]).hex(), (str(nonces[0]), str(nonces[1]))),
        (permit2.PERMIT2_ADDRESS, "0x" + abi.INVALIDATE_UNORDERED_NONCES + encode(
            ["uint256", "uint256"], [9, 1]).hex(), (str(nonces[2]),)),
    ]
    to, data = permit2.SCHEME.state_call(vouchers[1])
    assert to == permit2.PERMIT2_ADDRESS
    assert data == "0x" + abi.NONCE_BITMAP + encode(["address", "uint256"], [ACCOUNT.address, 7]).hex()
    assert permit2.SCHEME.is_used(vouchers[1], "0x" + format(1 << 200, "064x")) is True
    assert permit2.SCHEME.is_used(vouchers[0], "0x" + format(1 << 200, "064x")) is False
    log = {"address": permit2.PERMIT2_ADDRESS,
           "topics": [abi.TOPIC_UNORDERED_NONCE_INVALIDATION, abi.topic_address(ACCOUNT.address)],
           "data": "0x" + encode(["uint256", "uint256"], [7, 1 << 3]).hex()}
    assert permit2.SCHEME.cancelled_nonces(vouchers, [log]) == {str(nonces[0])}


def test_a_voucher_no_scheme_knows_is_unknown_not_guessed():
    assert schemes.identify({"id": "x", "payment": {"payload": {"something": {}}}}, PAYMENT) is None
    obj = {"metadata": {"name": "p"}, "spec": {"payment": PAYMENT, "preSignedAuths": [{"id": "x", "payment": {}}]}}
    [entry] = voucher_states.entries_of(obj)
    assert entry.voucher is None and entry.state == voucher_states.UNKNOWN


def test_legacy_flat_auths_are_identified_with_the_spec_domain():
    auth = eip3009_voucher()
    flat = dict(auth["payment"]["payload"]["authorization"], signature=auth["payment"]["payload"]["signature"])
    voucher = schemes.identify(flat, PAYMENT)
    assert voucher.scheme == "eip3009" and voucher.domain["name"] == "USDC" and voucher.id == flat["nonce"]


def entries(states: list[str]) -> list[voucher_states.Entry]:
    out = []
    for i, state in enumerate(states):
        v = schemes.identify(eip3009_voucher(), PAYMENT)
        out.append(voucher_states.Entry(i, v.id, v, state))
    return out


def purchase(n: int, remaining: int | None = None, spent: int | None = None) -> dict:
    status = {} if remaining is None else {"remaining": remaining, "spent": spent}
    return {"metadata": {"name": "p"}, "spec": {"preSignedAuths": [{}] * n}, "status": status}


def test_audit_flags_what_the_buyer_and_the_chain_disagree_on():
    # Spec of 6: the buyer spent the first 3 (FIFO) and holds the last 3.
    group = entries([voucher_states.SETTLED, voucher_states.UNUSED, voucher_states.CANCELLED, voucher_states.SETTLED, voucher_states.CANCELLED,
                     voucher_states.UNUSED])
    row = voucher_states.audit_row(purchase(6), {"remaining": 3, "spent": 5}, group)
    kinds = [(d["index"], d["kind"]) for d in row["discrepancies"]]
    assert kinds == [(1, "spent_not_settled"), (2, "spent_then_cancelled"), (3, "settled_not_counted"),
                     (4, "cancelled_in_pool")]
    assert row["ok"] is False and row["remaining_source"] == "x402-buyer"
    assert row["not_in_spec"] == 2          # spent 5, only 3 of them are still in the spec
    assert row["counts"]["settled"] == 2 and row["values"]["settled"] == "2000"
    assert row["still_valid"]["count"] == 2 and row["still_valid"]["latest_expiry"] == "2030-03-17T17:46:40Z"
    assert [v["held_by_buyer"] for v in row["vouchers"]] == [False] * 3 + [True] * 3


def test_audit_of_a_quiet_purchase_is_ok_and_takes_the_status_when_the_buyer_is_silent():
    group = entries([voucher_states.SETTLED, voucher_states.UNUSED, voucher_states.UNUSED])
    row = voucher_states.audit_row(purchase(3, remaining=2, spent=1), None, group)
    assert row["ok"] is True and row["discrepancies"] == [] and row["remaining_source"] == "status"
    unknown = voucher_states.audit_row(purchase(3), None, group)
    assert unknown["remaining"] is None and unknown["remaining_source"] == "unknown"
    assert all(v["held_by_buyer"] is None for v in unknown["vouchers"])
    assert voucher_states.audit_row(purchase(3), None, entries([voucher_states.UNKNOWN] * 3))["ok"] is False


def test_never_expiring_vouchers_say_so():
    group = entries([voucher_states.UNUSED])
    group[0].voucher = dataclasses.replace(group[0].voucher, deadline=4294967295)
    assert voucher_states.summary(group)["still_valid"]["latest_expiry"] == "never"
