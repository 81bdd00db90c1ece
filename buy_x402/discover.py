"""What kind of x402 offer a URL is (agent, chat or plain HTTP) and which model it advertises.

`go` starts from nothing but a URL (obol-wire.md §4): it asks quietly, first GET on the URL as
given, then POST `<base>/v1/chat/completions` with a ping chat body, then the GET again, loudly (its
error is the one reported). Unlike the upstream skill, a 402 counts whether its requirements are in
the JSON body or only in the `PAYMENT-REQUIRED` header (as `probe` reads them).

Classification, in order: **agent** when the first option's `extra` names agentModel, agentRuntime
or agentSkills (Obol agent offers); **chat** when the bazaar extension's example request body has
`messages` (Obol inference offers), or when only the chat-completions probe found the offer (a
seller whose 402 has no bazaar block, such as the reference SDK's, is still a chat endpoint if
that is where it asks to be paid); **http** otherwise.
"""
from __future__ import annotations

from dataclasses import dataclass
import requests

from . import x402
from .errors import BuyError, SellerError
from .offer import PaymentRequired

AGENT_EXTRAS = ("agentModel", "agentRuntime", "agentSkills")
BAZAAR_PLACEHOLDER_MODEL = "your-model-id"   # what Obol's bazaar example says when it knows no model
PING_MODEL = "auto"


@dataclass
class Discovery:
    offer: PaymentRequired
    kind: str          # "agent", "chat" or "http"
    found_by: str      # "GET <url>" or "POST <chat url>": the request that got the 402
    model: str | None  # the model the offer advertises, if any


def bazaar_input(offer: PaymentRequired) -> dict:
    """`extensions.bazaar.info.input` of the 402, or {}."""
    bazaar = (offer.extensions or {}).get("bazaar")
    info = bazaar.get("info") if isinstance(bazaar, dict) else None
    value = info.get("input") if isinstance(info, dict) else None
    return value if isinstance(value, dict) else {}


def advertised_model(offer: PaymentRequired) -> str | None:
    """The model an offer advertises: the first option's `extra.agentModel`, else the model of the
    bazaar example request (unless it is Obol's placeholder)."""
    extra = offer.accepts[0].extra if offer.accepts else {}
    agent_model = extra.get("agentModel") if isinstance(extra, dict) else None
    if isinstance(agent_model, str) and agent_model.strip():
        return agent_model.strip()
    body = bazaar_input(offer).get("body")
    model = body.get("model") if isinstance(body, dict) else None
    if isinstance(model, str) and model.strip() and model != BAZAAR_PLACEHOLDER_MODEL:
        return model.strip()
    return None


def classify(offer: PaymentRequired, *, found_by_chat_probe: bool) -> str:
    extra = offer.accepts[0].extra if offer.accepts else {}
    if isinstance(extra, dict) and any(extra.get(key) for key in AGENT_EXTRAS):
        return "agent"
    body = bazaar_input(offer).get("body")
    if (isinstance(body, dict) and "messages" in body) or found_by_chat_probe:
        return "chat"
    return "http"


def discover(session: requests.Session, url: str, *, method: str | None = None,
             timeout: float = x402.PROBE_TIMEOUT_S) -> Discovery:
    """Find and classify the offer at `url` (quiet GET, chat probe, loud GET). Nothing is paid."""
    get = (method or "GET").upper()
    attempts = [
        (f"{get} {url}", False, lambda: x402.probe(session, url, None, kind="http", method=get, timeout=timeout)),
        (f"POST {x402.chat_url(url)}", True,
         lambda: x402.probe(session, url, PING_MODEL, kind="inference", timeout=timeout)),
    ]
    for found_by, chat_probe, attempt in attempts:
        try:
            offer = attempt()
        except BuyError:
            continue
        return Discovery(offer, classify(offer, found_by_chat_probe=chat_probe), found_by, advertised_model(offer))
    try:  # the GET once more, loudly: its error is the one the user sees
        offer = x402.probe(session, url, None, kind="http", method=get, timeout=timeout)
    except SellerError as exc:
        raise SellerError(f"{exc.message} (and POST {x402.chat_url(url)} asked for no payment either)",
                          hint=exc.hint or "check the URL: it should be an x402 offer (buy.py probe URL)",
                          code=exc.code, data=exc.data) from exc
    return Discovery(offer, classify(offer, found_by_chat_probe=False), f"{get} {url}", advertised_model(offer))


__all__ = ["Discovery", "discover", "classify", "advertised_model", "bazaar_input", "AGENT_EXTRAS"]
