"""The x402 seller (devstack/seller.py) under uvicorn, settling on the local chain."""
from __future__ import annotations

import json
import urllib.error
import urllib.request

from eth_account import Account

from .. import config
from ..stack import Stack


MULTI_PRICES = ("3000", "1000")
LEGACY_PRICE = "1000"
DRIFT_PRICE = "1000"
PRICES_DIR = "seller-prices"  # under the stack dir: one file per movable offer, holding its atomic price


def extra_offers() -> list[dict]:
    """Offers beyond config.OFFERS: `multi` has two payment options (payment-choice tests) and
    `legacy` speaks x402 v1, both unlisted so LiteLLM does not publish them; `drift`, listed, quotes
    whatever its price file says at each request (a seller whose price moves, or that fails)."""
    return [
        {"offer": "multi", "model": "multi-model", "price": MULTI_PRICES[0], "prices": list(MULTI_PRICES),
         "listed": False, "x402Version": 2},
        {"offer": "legacy", "model": "legacy-model", "price": LEGACY_PRICE, "listed": False, "x402Version": 1},
        {"offer": "drift", "model": "drift-model", "price": DRIFT_PRICE, "listed": True, "x402Version": 2,
         "movable": True},
    ]


def all_offers() -> list[dict]:
    """Every offer the seller serves (devstack/seller.py builds its routes from this)."""
    return [dict(o, x402Version=2) for o in config.OFFERS] + extra_offers()


def _answers_402(url: str) -> bool:
    body = json.dumps({"model": "probe", "messages": [{"role": "user", "content": "ping"}]}).encode()
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5):
            return False
    except urllib.error.HTTPError as err:
        return err.code == 402


def up(stack: Stack) -> None:
    port = stack.free_port()
    base = f"http://127.0.0.1:{port}"
    prices = stack.dir / PRICES_DIR
    prices.mkdir(exist_ok=True)
    for offer in all_offers():
        if offer.get("movable"):
            (prices / offer["offer"]).write_text(offer["price"])
    stack.spawn("seller", [stack.python, "-m", "uvicorn", "--factory", "devstack.seller:create_app",
                           "--host", "127.0.0.1", "--port", str(port), "--no-access-log"],
                env={"SELLER_RPC_URL": stack.info["chain"]["rpc"], "SELLER_PRICES_DIR": str(prices)},
                cwd=stack.repo)
    first = config.OFFERS[0]
    stack.wait_until("seller", lambda: _answers_402(f"{base}/services/{first['offer']}/v1/chat/completions"),
                     timeout=60, interval=0.2)

    offers = [{"offer": o["offer"], "model": o["model"], "price": o["price"],
               "url": f"{base}/services/{o['offer']}", "listed": o["listed"],
               "x402_version": o["x402Version"], **({"prices": o["prices"]} if "prices" in o else {}),
               **({"price_file": str(prices / o["offer"])} if o.get("movable") else {})}
              for o in all_offers()]
    stack.info["seller"] = {"url": base, "pay_to": Account.from_key(config.SELLER_KEY).address, "offers": offers}
    stack.env.update(SELLER_URL=f"{base}/services/{first['offer']}", SELLER_MODEL=first["model"],
                     SELLER_BASE_URL=base)
