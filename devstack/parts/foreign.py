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


def foreign_offers() -> list[dict]:
    return [
        {"offer": "sdk", "model": "sdk-model", "price": SDK_PRICE, "listed": True, "x402Version": 2},
        {"offer": "legacy", "model": "legacy-model", "price": LEGACY_PRICE, "listed": True, "x402Version": 1},
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
    sdk, legacy = offers
    stack.env.update(FOREIGN_SELLER_BASE_URL=base, FOREIGN_SELLER_URL=sdk["url"], FOREIGN_SELLER_MODEL=sdk["model"],
                     FOREIGN_V1_SELLER_URL=legacy["url"], FOREIGN_V1_SELLER_MODEL=legacy["model"])
