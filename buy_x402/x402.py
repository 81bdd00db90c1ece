"""x402 payment requirements: endpoint normalisation, 402 parsing, the probe, option choice.

A v2 seller (the reference SDK) puts its requirements only in the base64 `PAYMENT-REQUIRED` header
and answers `{}` as the body; v1 sellers put them in the JSON body; Obol sellers do both. All are read
into the same `offer.PaymentRequired`, keeping each option's fields as the seller wrote them (the
voucher must echo them), and keeping the JSON body as it came (`body`), since the in-cluster buyer
reads only that; the payment scheme of each option is the one its extras select (`schemes`). An Obol
seller advertises each option twice, under the CAIP-2 network and its legacy alias; options that
differ only in how the network is spelled are one option here (the first spelling kept).
"""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit, urlunsplit

import requests

from . import schemes
from .address import address_problem
from .amounts import MAX_ATOMIC, format_amount
from .errors import BuyError, PaymentChoiceError, SellerError
from .http import MAX_CHALLENGE_BYTES, send
from .offer import PaymentOption, PaymentRequired, chain_or_none, resolve_chain, token_meta
from .urls import mask, shown

BODY_PREVIEW_BYTES = 200
PROBE_TIMEOUT_S = 15.0
PAYMENT_REQUIRED_HEADER = "payment-required"
MAX_OPTION_TIMEOUT_S = 7 * 24 * 3600  # a seller's maxTimeoutSeconds, clamped: it dates one-shot vouchers
CHAT_PATH = "/v1/chat/completions"   # where an inference offer takes requests, below its base URL


# ---------------------------------------------------------------------------------------- endpoints

def normalize_endpoint(url: str) -> str:
    """The seller's base URL: what the PurchaseRequest stores and the buyer appends paths to."""
    url = url.strip().rstrip("/")
    for suffix in (CHAT_PATH, "/chat/completions"):
        if url.endswith(suffix):
            url = url[: -len(suffix)].rstrip("/")
            break
    parts = urlsplit(url)
    segments = parts.path.split("/")
    # "/services/<seg>/<more…>" → "/services/<seg>"; query and fragment belong to the dropped part.
    if len(segments) > 3 and segments[0] == "" and segments[1] == "services" and segments[2]:
        url = urlunsplit((parts.scheme, parts.netloc, "/services/" + segments[2], "", ""))
    return url


def chat_url(url: str) -> str:
    """The chat completions URL of an inference offer: its normalized base plus CHAT_PATH."""
    return normalize_endpoint(url) + CHAT_PATH


def _preview(body: bytes | str | None) -> str:
    if body is None:
        return ""
    if isinstance(body, str):
        body = body.encode("utf-8", "replace")
    text = body[:BODY_PREVIEW_BYTES].decode("utf-8", "replace")
    return text + ("…" if len(body) > BODY_PREVIEW_BYTES else "")


def _doc_preview(doc: Any) -> str:
    try:
        return _preview(json.dumps(doc))
    except (ValueError, TypeError, RecursionError):
        return f"({type(doc).__name__})"


def _header(headers: Mapping[str, str] | None, name: str) -> str | None:
    for key, value in (headers or {}).items():
        if key.lower() == name:
            return value
    return None


def decode_b64_json(value: str) -> Any:
    """An x402 header value: base64 (standard or URL-safe, padding optional) of JSON.
    Raises ValueError (binascii.Error is one) when it is not."""
    text = value.strip()
    decoded = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_" if ("-" in text or "_" in text) else None,
                               validate=True)
    return load_json(decoded)


def load_json(data: bytes | str) -> Any:
    """json.loads for a peer's document; ValueError (never RecursionError) for anything that is not JSON."""
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def _decode_header(value: str) -> dict:
    text = value.strip()
    try:
        doc = decode_b64_json(text)
    except ValueError as exc:
        raise SellerError(f"the seller's PAYMENT-REQUIRED header is not base64-encoded JSON ({exc.__class__.__name__}): "
                          f"{_preview(text)}", hint="the seller's x402 setup is broken; tell its operator") from exc
    if not isinstance(doc, dict):
        raise SellerError(f"the seller's PAYMENT-REQUIRED header decodes to {type(doc).__name__}, not an object: "
                          f"{_doc_preview(doc)}")
    return doc


def _parse_option(index: int, entry: Any) -> PaymentOption:
    if not isinstance(entry, dict):
        raise SellerError(f"payment option {index} in the 402 is {type(entry).__name__}, not an object")
    missing = [name for name in ("payTo", "asset") if not entry.get(name)]
    amount_text = entry.get("amount", entry.get("maxAmountRequired"))
    if amount_text in (None, ""):
        missing.append("amount")
    if not entry.get("network"):
        missing.append("network")
    if missing:
        raise SellerError(f"payment option {index} in the 402 is missing {', '.join(missing)}",
                          data={"option": index, "missing": missing})
    amount_digits = str(amount_text)
    amount = int(amount_digits) if amount_digits.isascii() and amount_digits.isdigit() and len(amount_digits) <= 78 \
        else -1
    if amount <= 0 or amount > MAX_ATOMIC:
        raise SellerError(f"payment option {index} in the 402 has amount {amount_text!r}, not a positive integer "
                          "of atomic units")
    extra = entry.get("extra") if isinstance(entry.get("extra"), dict) else {}
    network = str(entry["network"])
    chain = chain_or_none(network)
    symbol, decimals = token_meta(chain, str(entry["asset"]), extra)
    defect = _option_defect(entry, chain)
    try:
        timeout = min(max(int(entry.get("maxTimeoutSeconds") or 60), 1), MAX_OPTION_TIMEOUT_S)
    except (TypeError, ValueError, OverflowError):
        timeout = 60
    return PaymentOption(
        index=index, scheme=str(entry.get("scheme") or "exact"), network=network, chain=chain,
        amount=amount, asset=str(entry["asset"]), pay_to=str(entry["payTo"]), max_timeout_seconds=timeout,
        extra=dict(extra), transfer_method=schemes.for_extra(extra).name,
        symbol=symbol, decimals=decimals, raw=dict(entry), defect=defect)


def _option_defect(entry: dict, chain: Any) -> str | None:
    """Why an option cannot be signed for as the seller wrote it (it is still listed by `probe`).
    The voucher echoes the option verbatim, so `extra` must be an object; on an EVM chain the payee
    and the token must be addresses, with a valid EIP-55 checksum when mixed-case."""
    if entry.get("extra") is not None and not isinstance(entry.get("extra"), dict):
        return f"its `extra` is a {type(entry['extra']).__name__}, not an object"
    if chain is not None:
        for key in ("payTo", "asset"):
            problem = address_problem(entry[key]) if isinstance(entry[key], str) else "is not a string"
            if problem:
                return f"its {key} {shown(str(entry[key]), 50)} {problem}"
    return None


def parse_payment_required(status: int, headers: Mapping[str, str] | None, body_bytes: bytes | str | None) -> PaymentRequired:
    """Read a seller's 402: the v2 `PAYMENT-REQUIRED` header first, else a JSON body with `accepts`."""
    if 200 <= status < 300:
        raise SellerError(f"the seller answered HTTP {status} without asking for payment (no x402 pricing): "
                          f"{_preview(body_bytes)}", data={"status": status})
    if status != 402:
        raise SellerError(f"the seller answered HTTP {status}, expected 402 Payment Required: {_preview(body_bytes)}",
                          data={"status": status})
    body = _json_object(body_bytes)
    header = _header(headers, PAYMENT_REQUIRED_HEADER)
    if header and header.strip():
        doc, source = _decode_header(header), "header"
    else:
        try:
            doc = load_json(body_bytes or b"")
        except ValueError:
            raise SellerError(f"the 402 has no PAYMENT-REQUIRED header and its body is not JSON: "
                              f"{_preview(body_bytes)}") from None
        if not isinstance(doc, dict):
            raise SellerError(f"the 402 body is not a JSON object: {_preview(body_bytes)}")
        source = "body"
    accepts = doc.get("accepts")
    if not isinstance(accepts, list) or not accepts:
        where = "PAYMENT-REQUIRED header" if source == "header" else "402 body"
        raise SellerError(f"the {where} has no 'accepts' array of payment options: {_doc_preview(doc)}")
    options = _merge_spellings([_parse_option(i, entry) for i, entry in enumerate(accepts, start=1)])
    try:
        version = int(doc.get("x402Version") or (2 if source == "header" else 1))
    except (TypeError, ValueError, OverflowError):
        version = 2 if source == "header" else 1
    extensions = doc.get("extensions") if isinstance(doc.get("extensions"), dict) else None
    return PaymentRequired(x402_version=version, accepts=options, resource=doc.get("resource"),
                           extensions=extensions, source=source, raw=doc, error=doc.get("error"), body=body)


def _json_object(body_bytes: bytes | str | None) -> dict | None:
    try:
        doc = load_json(body_bytes or b"")
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def _merge_spellings(options: list[PaymentOption]) -> list[PaymentOption]:
    """One option per payment: an entry equal to an earlier one but for the network's spelling of the
    same chain (`eip155:84532` / `base-sepolia`) is folded into it; the rest are renumbered from 1."""
    merged: list[PaymentOption] = []
    for option in options:
        same = next((m for m in merged if m.chain is not None and m.chain == option.chain
                     and _without_network(m.raw) == _without_network(option.raw)), None)
        if same is not None:
            if option.network not in [same.network, *same.also_as]:
                same.also_as.append(option.network)
            continue
        option.index = len(merged) + 1
        merged.append(option)
    return merged


def _without_network(entry: dict) -> str:
    return json.dumps({k: v for k, v in entry.items() if k != "network"}, sort_keys=True)


def probe(session: requests.Session, endpoint: str, model_id: str | None, *, kind: str = "inference",
          method: str | None = None, timeout: float = PROBE_TIMEOUT_S) -> PaymentRequired:
    """Ask the seller its price: an unpaid request that must come back 402. Redirects are not followed."""
    if kind in ("inference", "agent"):
        url = chat_url(endpoint)
        body = {"model": model_id or "test", "messages": [{"role": "user", "content": "ping"}]}
        response = send(session, method or "POST", url, peer="seller", timeout=timeout, json=body,
                        max_bytes=MAX_CHALLENGE_BYTES)
    elif kind == "http":
        url = endpoint
        response = send(session, (method or "GET").upper(), url, peer="seller", timeout=timeout,
                        max_bytes=MAX_CHALLENGE_BYTES)
    else:
        raise SellerError(f"unknown probe type {kind!r}; use inference, http or agent")
    if 300 <= response.status_code < 400:
        location = response.headers.get("Location", "(no Location header)")
        raise SellerError(f"the seller at {mask(url)} redirected (HTTP {response.status_code}) to {mask(location)}; "
                          "redirects are not followed for payments",
                          hint="use the final URL as --endpoint if you trust it", data={"location": location})
    try:
        return parse_payment_required(response.status_code, response.headers, response.content)
    except SellerError as exc:
        raise SellerError(f"{mask(url)}: {exc.message}", hint=exc.hint, code=exc.code,
                          data={"url": mask(url), **exc.data}) from exc


# ----------------------------------------------------------------------------------- option choice

@dataclass
class Choice:
    option: PaymentOption
    reason: str
    listing: str


def option_listing(accepts: list[PaymentOption]) -> str:
    return "\n".join(option.describe() for option in accepts)


def _matches_token(option: PaymentOption, token: str) -> bool:
    wanted = token.strip().lower()
    return (option.symbol or "").lower() == wanted or option.asset.lower() == wanted


def _token_key(option: PaymentOption) -> str:
    """Options priced in the same token (by symbol when known, else by address) compare by price."""
    return (option.symbol or option.asset).lower()


def _units(option: PaymentOption) -> Fraction:
    """The price in token units (atomic when the decimals are unknown), for comparing same-token prices."""
    return Fraction(option.amount, 10 ** option.decimals) if option.decimals is not None else Fraction(option.amount)


def cheapest(options: list[PaymentOption]) -> tuple[PaymentOption, str]:
    """The cheapest of `options` (ties: the earliest), and what it was compared with.

    Prices compare only within one token: the token of the first option decides (the seller's order
    ranks tokens, since 1 OBOL and 1 USDC are not the same money); options in other tokens are named.
    """
    key = _token_key(options[0])
    same = [o for o in options if _token_key(o) == key]
    best = min(same, key=lambda o: (_units(o), o.index))
    others = sorted({(o.symbol or o.asset) for o in options if _token_key(o) != key})
    note = f"; options in {', '.join(others)} are not compared by price" if others else ""
    return best, note


def choose_option(accepts: list[PaymentOption], *, index: int | None = None, token: str | None = None,
                  network: str | None = None,
                  balance_of: Callable[[PaymentOption], int] | None = None,
                  eligible: Callable[[PaymentOption], bool] | None = None,
                  eligible_reason: str = "") -> Choice:
    """Pick the option to pay with (non-interactive); `reason` says why, for the output.

    `--payment-option`, then `--token`/`--network`, decide when given. Otherwise: the cheapest option
    the wallet can afford (ties: the earliest), among the options `eligible` keeps when it keeps any
    (e.g. those the cluster can spend; `eligible_reason` says so in the reason); with no affordable
    option, the cheapest payable one (the balance check that follows then names the shortfall).
    """
    listing = option_listing(accepts)
    data = {"options": [option.describe() for option in accepts]}
    if not accepts:
        raise PaymentChoiceError("the seller offered no payment options", data=data)

    def usable(option: PaymentOption, why: str) -> Choice:
        if option.defect:
            raise PaymentChoiceError(f"payment option {option.index} is refused: {option.defect}; nothing was "
                                     f"signed:\n{listing}", hint="tell the seller's operator, or pick another "
                                     "--payment-option", data=data)
        if not option.payable:
            raise PaymentChoiceError(f"payment option {option.index} cannot be paid by this skill "
                                     f"(network {option.network!r}, scheme {option.scheme!r}):\n{listing}", data=data)
        return Choice(option, why, listing)

    if index is not None:
        if not 1 <= int(index) <= len(accepts):
            raise PaymentChoiceError(f"--payment-option {index} is out of range; the seller offers "
                                     f"{len(accepts)} option(s):\n{listing}", data=data)
        return usable(accepts[int(index) - 1], f"--payment-option {index}")

    if token or network:
        wanted_chain = resolve_chain(network) if network else None
        matches = [o for o in accepts
                   if (not token or _matches_token(o, token))
                   and (wanted_chain is None or (o.chain is not None and o.chain.name == wanted_chain.name))]
        asked = " and ".join(f"{flag} {value}" for flag, value in (("--token", token), ("--network", network)) if value)
        if len(matches) != 1:
            what = "no payment option matches" if not matches else f"{len(matches)} payment options match"
            raise PaymentChoiceError(f"{what} {asked}:\n{listing}",
                                     hint="pick one with --payment-option N", data=data)
        return usable(matches[0], f"the only option matching {asked}")

    if len(accepts) == 1:
        return usable(accepts[0], "the seller's only payment option")

    payable = [o for o in accepts if o.payable]
    if not payable:
        raise PaymentChoiceError(f"none of the seller's payment options can be paid by this skill:\n{listing}", data=data)
    among = f"{len(accepts)} options"
    if eligible is not None:
        kept = [o for o in payable if eligible(o)]
        if kept and len(kept) < len(payable):
            payable = kept
            among = f"the {len(kept)} of {len(accepts)} options {eligible_reason or 'eligible'}"
    if balance_of is None:
        option, note = cheapest(payable)
        return Choice(option, f"cheapest payable of {among}{note}", listing)
    unknown, affordable, balances = [], [], {}
    for option in payable:
        try:
            balances[option.index] = int(balance_of(option))
        except BuyError as exc:
            unknown.append(f"[{option.index}] {exc.message}")
            continue
        if balances[option.index] >= option.amount:
            affordable.append(option)
    skipped = f"; balance unknown for {', '.join(unknown)}" if unknown else ""
    if affordable:
        option, note = cheapest(affordable)
        balance = format_amount(balances[option.index], option.decimals, option.symbol)
        return Choice(option, f"cheapest the wallet can afford of {among} (balance {balance}){note}{skipped}", listing)
    option, note = cheapest(payable)
    return Choice(option, f"the wallet cannot afford any of {among}; took the cheapest payable one{note}{skipped}",
                  listing)


# ------------------------------------------------------------------------------------- JSON views

def option_view(option: PaymentOption) -> dict[str, Any]:
    """One option as the JSON output pins it (camelCase, atomic amounts as strings), with the EIP-712
    domain a voucher for it would be signed with (None when it cannot be paid)."""
    return {
        "index": option.index, "scheme": option.scheme, "network": option.network,
        "chain": option.chain.name if option.chain else None,
        "chainId": option.chain.chain_id if option.chain else None,
        "payable": option.payable,
        "price": {"atomic": str(option.amount), "display": option.price_text(), "symbol": option.symbol,
                  "decimals": option.decimals},
        "asset": option.asset, "payTo": option.pay_to, "transferMethod": option.transfer_method,
        "signingDomain": schemes.of(option).domain(option) if option.chain is not None else None,
        "maxTimeoutSeconds": option.max_timeout_seconds, "extra": option.extra,
    }


def offer_view(offer: PaymentRequired) -> dict[str, Any]:
    return {"x402Version": offer.x402_version, "source": offer.source, "resource": offer.resource,
            "sellerMessage": offer.error, "extensions": sorted(offer.extensions or {}),
            "options": [option_view(o) for o in offer.accepts]}


__all__ = ["normalize_endpoint", "chat_url", "CHAT_PATH", "decode_b64_json", "parse_payment_required", "probe",
           "Choice", "choose_option", "cheapest", "option_listing", "option_view", "offer_view"]
