"""Sign-In-With-X (EIP-4361) for wallet-gated resources: the message, its signature, the credential.

An Obol `gate: auth` route answers an unauthenticated request with 401, `WWW-Authenticate: SIWX …`
and a JSON body whose `extensions["sign-in-with-x"].info` carries the message parameters the server
wants (domain, uri, a fresh nonce, issuedAt, expirationTime, statement, resources) and
`supportedChains` (obol-wire.md §4). The upstream skill ignores that challenge and invents every
field; here the challenge's values are used, after checking that they are bound to the URL asked
(domain = its host, uri on its host): a server must not get a signature valid for another site.
Without a challenge the message is built from the URL, as upstream does.

The message is laid out as the x402 SDK's `FormatSIWEMessage` (EIP-4361), signed with EIP-191
personal_sign through the remote signer's `/message` endpoint, and sent as
`Authorization: SIWX <base64 message>.<base64 signature>`.
"""
from __future__ import annotations

import base64
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Mapping
from urllib.parse import urlsplit

from .errors import BuyError, TransportError
from .http import MAX_CHALLENGE_BYTES, send

EXTENSION = "sign-in-with-x"
UPSTREAM_STATEMENT = "Sign in to access a wallet-gated resource."
_NONCE = re.compile(r"^[A-Za-z0-9]{8,}$")   # EIP-4361: at least 8 alphanumeric characters


class SignInRefused(BuyError):
    """The server's sign-in challenge cannot be signed safely (or at all); nothing was signed."""
    code = "siwx"


@dataclass
class Challenge:
    """What a 401 asked for: the extension's `info`, the EIP-155 chains it takes, the header."""
    status: int
    info: dict = field(default_factory=dict)
    chain_ids: list[int] = field(default_factory=list)
    www_authenticate: str | None = None
    detail: str | None = None


def read_challenge(status: int, headers: Mapping[str, str], body: bytes) -> Challenge | None:
    """The sign-in challenge of a 401 answer (None for any other status)."""
    if status != 401:
        return None
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        doc = json.loads(body or b"")
    except ValueError:
        doc = None
    doc = doc if isinstance(doc, dict) else {}
    extension = (doc.get("extensions") or {}).get(EXTENSION) if isinstance(doc.get("extensions"), dict) else None
    extension = extension if isinstance(extension, dict) else {}
    info = extension.get("info") if isinstance(extension.get("info"), dict) else {}
    chain_ids = []
    for chain in extension.get("supportedChains") or []:
        if not isinstance(chain, dict) or chain.get("type", "eip191") != "eip191":
            continue
        match = re.match(r"^eip155:(\d+)$", str(chain.get("chainId") or ""))
        if match:
            chain_ids.append(int(match.group(1)))
    detail = doc.get("detail") if isinstance(doc.get("detail"), str) else None
    return Challenge(status, dict(info), chain_ids, lowered.get("www-authenticate"), detail)


def _utc(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def message_fields(url: str, address: str, challenge: Challenge | None, *, chain_id: int,
                   now: float | None = None) -> dict[str, Any]:
    """The EIP-4361 fields to sign: the challenge's where it gives them (bound to `url`), else upstream's."""
    parts = urlsplit(url)
    host = parts.netloc.lower()
    info = challenge.info if challenge is not None else {}
    now = time.time() if now is None else now
    domain = str(info.get("domain") or host)
    if domain.lower() != host:
        raise SignInRefused(f"the sign-in challenge of {url} is for domain {domain!r}, not {host!r}: a signature "
                            "for it would sign you in elsewhere; nothing was signed",
                            hint="only sign in where you sent the request; check the URL")
    uri = str(info.get("uri") or url)
    if urlsplit(uri).netloc.lower() != host or urlsplit(uri).scheme not in ("http", "https"):
        raise SignInRefused(f"the sign-in challenge of {url} names uri {uri!r}, which is not on {host}; nothing "
                            "was signed", hint="only sign in where you sent the request; check the URL")
    nonce = str(info.get("nonce") or "")
    if not _NONCE.match(nonce):
        nonce = secrets.token_hex(12)   # 24 hex characters, as upstream
    if challenge is not None and challenge.chain_ids and chain_id not in challenge.chain_ids:
        chain_id = challenge.chain_ids[0]
    resources = info.get("resources")
    return {
        "domain": domain, "address": address,
        "statement": str(info["statement"]) if info.get("statement") else (None if info else UPSTREAM_STATEMENT),
        "uri": uri, "version": "1", "chainId": chain_id, "nonce": nonce,
        "issuedAt": str(info.get("issuedAt") or _utc(now)),
        "expirationTime": str(info["expirationTime"]) if info.get("expirationTime") else None,
        "resources": [str(r) for r in resources] if isinstance(resources, list) else None,
        "fromChallenge": bool(info),
    }


def format_message(fields: Mapping[str, Any]) -> str:
    """The EIP-4361 text, laid out as the x402 SDK's FormatSIWEMessage."""
    lines = [f"{fields['domain']} wants you to sign in with your Ethereum account:", fields["address"], ""]
    if fields.get("statement"):
        lines += [fields["statement"], ""]
    lines += [f"URI: {fields['uri']}", f"Version: {fields['version']}", f"Chain ID: {fields['chainId']}",
              f"Nonce: {fields['nonce']}", f"Issued At: {fields['issuedAt']}"]
    if fields.get("expirationTime"):
        lines.append(f"Expiration Time: {fields['expirationTime']}")
    if fields.get("resources"):
        lines.append("Resources:")
        lines += [f"- {resource}" for resource in fields["resources"]]
    return "\n".join(lines)


def authorization(message: str, signature: str) -> str:
    """The `Authorization` header value: `SIWX <base64 message>.<base64 signature text>`."""
    return ("SIWX " + base64.b64encode(message.encode("utf-8")).decode() + "."
            + base64.b64encode(signature.encode("ascii")).decode())


__all__ = ["Challenge", "SignIn", "sign_in", "SignInRefused", "read_challenge", "message_fields", "format_message", "authorization",
           "EXTENSION", "UPSTREAM_STATEMENT"]


@dataclass
class SignIn:
    wallet: str
    fields: dict[str, Any]
    message: str
    header: str                    # the Authorization value
    challenge: Challenge | None
    probe_status: int | None       # the unauthenticated request's HTTP status (None: it did not answer)
    probe_error: str | None = None


def sign_in(peers, url: str, method: str, *, chain_id: int, timeout: float = 15.0) -> SignIn:
    """Ask `url` unauthenticated for its challenge, then build and sign the message for it.

    A server that cannot be reached still gets a credential built from the URL (upstream's way),
    with the reason in `probe_error`; the caller decides whether that is good enough.
    """
    wallet = peers.signer.address()
    challenge, status, error = None, None, None
    try:
        response = send(peers.session, method, url, peer="server", timeout=timeout, max_bytes=MAX_CHALLENGE_BYTES)
        status = response.status_code
        challenge = read_challenge(status, response.headers, response.content)
    except TransportError as exc:
        error = exc.message
    fields = message_fields(url, wallet, challenge, chain_id=chain_id)
    message = format_message(fields)
    signature = peers.signer.sign_message(wallet, message)
    return SignIn(wallet, fields, message, authorization(message, signature), challenge, status, error)
