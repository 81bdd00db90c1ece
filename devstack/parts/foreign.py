"""Foreign sellers the in-cluster buyer cannot pay: the reference x402 SDK seller (devstack/foreign_seller.py).

On its own port, like any other seller on the internet. Its `sdk` offer is x402 v2 as the reference
SDK serves it (requirements only in the `PAYMENT-REQUIRED` header, payment read only from
`PAYMENT-SIGNATURE`); its `legacy` offer speaks only x402 v1 (requirements in the JSON body, payment
in `X-PAYMENT` with top-level scheme/network). `buy.py pay`/`pay-agent` can pay both, one request at
a time; `buy` refuses both before signing (obol-wire.md "mismatch cases"). Both are listed in LiteLLM
so a test can place their vouchers in a PurchaseRequest by hand and watch the cluster fail.
"""
from __future__ import annotations

from eth_account import Account

from .. import config
from ..stack import Stack
from .seller import answers_402

SDK_PRICE = "1000"
LEGACY_PRICE = "1000"


# An extension no x402 client implements, declared required: what a seller that needs the future
# looks like (the SDK passes any declared extension through to the 402).
UNKNOWN_EXTENSION = "x-escrow-receipt"


def foreign_offers() -> list[dict]:
    """`sdk` and `legacy` (above); `pid` is an SDK offer that requires the x402 payment-identifier
    extension (declared with the SDK's declare_payment_identifier_extension(required=True), enforced
    with its validate_payment_identifier_requirement before verification); `future` requires an
    extension no client implements. Unlisted: the cluster cannot pay header-only sellers anyway."""
    return [
        {"offer": "sdk", "model": "sdk-model", "price": SDK_PRICE, "listed": True, "x402Version": 2},
        {"offer": "legacy", "model": "legacy-model", "price": LEGACY_PRICE, "listed": True, "x402Version": 1},
        {"offer": "pid", "model": "pid-model", "price": SDK_PRICE, "listed": False, "x402Version": 2,
         "requires": "payment-identifier"},
        {"offer": "future", "model": "future-model", "price": SDK_PRICE, "listed": False, "x402Version": 2,
         "requires": UNKNOWN_EXTENSION},
    ]


def up(stack: Stack) -> None:
    port = stack.free_port()
    base = f"http://127.0.0.1:{port}"
    stack.spawn("foreign", [stack.python, "-m", "uvicorn", "--factory", "devstack.foreign_seller:create_app",
                            "--host", "127.0.0.1", "--port", str(port), "--no-access-log"],
                env={"SELLER_RPC_URL": stack.info["chain"]["rpc"]}, cwd=stack.repo)
    stack.wait_until("foreign", lambda: answers_402(f"{base}/services/sdk/v1/chat/completions"),
                     timeout=60, interval=0.2)
    offers = [{"offer": o["offer"], "model": o["model"], "price": o["price"], "url": f"{base}/services/{o['offer']}",
               "listed": o["listed"], "x402_version": o["x402Version"]} for o in foreign_offers()]
    stack.info["foreign"] = {"url": base, "pay_to": Account.from_key(config.SELLER_KEY).address, "offers": offers}
    sdk, legacy = offers[:2]
    stack.env.update(FOREIGN_SELLER_BASE_URL=base, FOREIGN_SELLER_URL=sdk["url"], FOREIGN_SELLER_MODEL=sdk["model"],
                     FOREIGN_V1_SELLER_URL=legacy["url"], FOREIGN_V1_SELLER_MODEL=legacy["model"])
