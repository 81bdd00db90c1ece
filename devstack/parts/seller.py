"""The devstack's main seller: the Obol-shaped gateway (simulated, devstack/sim/seller.py) on its own port.

It sells every offer the agent buys in the tests and the demo (config.OFFERS, plus `multi` and
`drift` below) and settles on the local chain through the x402 SDK's facilitator. `SELLER_URL`,
`SELLER_MODEL` and `SELLER_BASE_URL` point at it. The reference-SDK and x402 v1 offers, which the
in-cluster buyer cannot pay, are another seller on another port (devstack/parts/foreign.py).
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request

from eth_account import Account

from .. import config
from ..stack import Stack

MULTI_PRICES = ("3000", "1000")
DRIFT_PRICE = "1000"
AGENT_PRICE = "2000"
HTTP_PRICE = "500"
PRICES_DIR = "seller-prices"  # under the stack dir: one file per movable offer, holding its atomic price


def extra_offers() -> list[dict]:
    """Offers beyond config.OFFERS: `multi` has two payment options (payment-choice tests), unlisted so
    LiteLLM does not publish it; `drift`, listed, quotes whatever its price file says at each request
    (a seller whose price moves, or that fails); `agent` is an agent offer (agentModel/agentRuntime/
    agentSkills in its options' extra); `weather` is a plain HTTP offer (any path, a JSON answer);
    `members` is a SIWX-gated (`gate: auth`) route, free once signed in."""
    return [
        {"offer": "multi", "model": "multi-model", "price": MULTI_PRICES[0], "prices": list(MULTI_PRICES),
         "listed": False},
        {"offer": "drift", "model": "drift-model", "price": DRIFT_PRICE, "listed": True, "movable": True},
        {"offer": "agent", "model": "agent-model", "type": "agent", "skills": ["addresses", "gas"],
         "price": AGENT_PRICE, "listed": False},
        {"offer": "members", "model": "members-data", "gate": "auth", "price": "0", "listed": False},
        {"offer": "weather", "model": "weather-api", "type": "http", "price": HTTP_PRICE, "listed": False},
    ]


def all_offers() -> list[dict]:
    return [dict(o) for o in config.OFFERS] + extra_offers()


def answers_402(url: str) -> bool:
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
    served = []
    for offer in all_offers():
        entry = {"offer": offer["offer"], "model": offer["model"],
                 **{key: offer[key] for key in ("type", "skills", "gate") if key in offer}}
        if offer.get("movable"):
            (prices / offer["offer"]).write_text(offer["price"])
            entry["price_file"] = str(prices / offer["offer"])
        else:
            entry["prices"] = offer.get("prices") or [offer["price"]]
        served.append(entry)
    offers_file = stack.path("seller", "offers.json")
    offers_file.write_text(json.dumps(served, indent=1))
    stack.spawn("seller", [stack.python, "-m", "devstack.sim.seller", "--port", str(port),
                           "--rpc", stack.info["chain"]["rpc"], "--offers", str(offers_file)], cwd=stack.repo)
    first = config.OFFERS[0]
    stack.wait_until("seller", lambda: answers_402(f"{base}/services/{first['offer']}/v1/chat/completions"),
                     timeout=60, interval=0.2)

    offers = [{"offer": o["offer"], "model": o["model"], "price": o["price"], "url": f"{base}/services/{o['offer']}",
               "listed": o["listed"], "x402_version": 2,
               "type": o.get("type", "http" if o.get("gate") else "inference"), **({"prices": o["prices"]} if "prices" in o else {}),
               **({"price_file": str(prices / o["offer"])} if o.get("movable") else {})}
              for o in all_offers()]
    stack.info["seller"] = {"url": base, "pay_to": Account.from_key(config.SELLER_KEY).address, "offers": offers,
                            "kind": "obol"}
    stack.env.update(SELLER_URL=f"{base}/services/{first['offer']}", SELLER_MODEL=first["model"],
                     SELLER_BASE_URL=base)
