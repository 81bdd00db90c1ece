"""x402 v2 extensions in vouchers, checked with the x402 SDK's own payment-identifier and server code:
a fresh identifier per voucher (buy's pre-signed batches included), and refusal before signing of an
extension a seller requires that the skill does not implement."""
from __future__ import annotations

import json

import pytest
from x402 import x402ResourceServer
from x402.extensions.payment_identifier import (PAYMENT_IDENTIFIER, declare_payment_identifier_extension,
                                                extract_payment_identifier, is_valid_payment_id,
                                                validate_payment_identifier, validate_payment_identifier_requirement)
from x402.schemas import PaymentPayload, PaymentRequired

from buy_x402 import extensions
from buy_x402.errors import SellerError
from buy_x402.vouchers import placeholder_auths
from buy_x402.x402 import parse_payment_required

PAY_TO = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
WALLET = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
ENTRY = {"scheme": "exact", "network": "eip155:84532", "asset": "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
         "amount": "1000", "payTo": PAY_TO, "maxTimeoutSeconds": 300, "extra": {"name": "USDC", "version": "2"}}


def offer(declared: dict):
    doc = {"x402Version": 2, "resource": {"url": "http://seller/x"}, "accepts": [ENTRY], "extensions": declared}
    return parse_payment_required(402, {}, json.dumps(doc).encode()), doc


def test_each_voucher_of_a_batch_carries_its_own_valid_payment_identifier():
    parsed, doc = offer({PAYMENT_IDENTIFIER: declare_payment_identifier_extension(required=True),
                         "bazaar": {"info": {"input": {"type": "http"}}, "schema": {"type": "object"}}})
    vouchers = placeholder_auths(parsed.accepts[0], WALLET, 5, 1_900_000_000, parsed)   # what `buy` signs
    ids = [v["payment"]["extensions"][PAYMENT_IDENTIFIER]["info"]["id"] for v in vouchers]
    assert len(set(ids)) == 5 and all(i.startswith("pay_") and is_valid_payment_id(i) for i in ids)
    server = x402ResourceServer()
    required = PaymentRequired.model_validate(doc)
    for voucher in vouchers:
        sent = PaymentPayload.model_validate({**voucher["payment"], "resource": doc["resource"]})
        # The SDK's own checks: the extension is well formed, the requirement met, the echo of every
        # declared field intact (the schema half is dropped, as upstream does; `bazaar` echoed as is).
        assert validate_payment_identifier(voucher["payment"]["extensions"][PAYMENT_IDENTIFIER]).valid
        assert validate_payment_identifier_requirement(sent, server_required=True).valid
        assert server.validate_extensions(required, sent).valid
        assert extract_payment_identifier(sent) == extensions.payment_id(voucher["payment"]["extensions"])
        assert voucher["payment"]["extensions"]["bazaar"] == {"info": {"input": {"type": "http"}}}


def test_no_declaration_no_identifier():
    parsed, _ = offer({})
    [voucher] = placeholder_auths(parsed.accepts[0], WALLET, 1, 1_900_000_000, parsed)
    assert "extensions" not in voucher["payment"]
    assert extensions.for_voucher({"bazaar": {"schema": {}}}) is None


@pytest.mark.parametrize("declared, missing", [
    ({"x-escrow-receipt": {"info": {"required": True}}}, ["x-escrow-receipt"]),
    ({"a": {"info": {"required": True}}, "b": {"info": {"required": True}}}, ["a", "b"]),
    ({"eip2612GasSponsoring": {"info": {"required": True}}}, ["eip2612GasSponsoring"]),
])
def test_a_required_extension_the_skill_cannot_supply_is_refused_naming_it(declared, missing):
    with pytest.raises(SellerError) as caught:
        extensions.check_satisfiable(declared, url="http://seller/x")
    assert caught.value.code == "extension_unsupported" and caught.value.data["extensions"] == missing
    assert all(name in caught.value.message for name in missing) and "nothing was signed" in caught.value.message


@pytest.mark.parametrize("declared", [
    {},
    {PAYMENT_IDENTIFIER: declare_payment_identifier_extension(required=True)},
    {"bazaar": {"info": {"required": True}}},
    {"x-optional": {"info": {"required": False}}, "x-shapeless": {"schema": {}}, "x-odd": "text"},
])
def test_what_the_skill_supplies_or_what_is_optional_passes(declared):
    extensions.check_satisfiable(declared, url="http://seller/x")


def test_gas_sponsoring_is_satisfied_only_when_the_vouchers_carry_a_permit():
    declared = {"eip2612GasSponsoring": {"info": {"required": True}}}
    extensions.check_satisfiable(declared, url="http://seller/x", sponsored=True)
    with pytest.raises(SellerError):
        extensions.check_satisfiable(declared, url="http://seller/x", sponsored=False)


def test_buy_and_refill_signing_refuses_an_unsupported_required_extension_before_any_signature():
    parsed, _ = offer({"x-escrow-receipt": {"info": {"required": True}}})
    with pytest.raises(SellerError, match="requires the x402 extension x-escrow-receipt"):
        placeholder_auths(parsed.accepts[0], WALLET, 3, 1_900_000_000, parsed)   # buy's dry run comes first
