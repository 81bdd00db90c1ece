"""SIWX (Sign-In-With-X, EIP-4361) on the simulated Obol gateway's `gate: auth` routes, without I/O.

Follows obol-wire.md §4 (siwx.go@80dc8b49, authgate.go@80dc8b49):
- credentials, in this order: a `SIGN-IN-WITH-X` header (the x402 SDK's base64-JSON payload, EVM
  only, the EIP-4361 text rebuilt as the SDK's FormatSIWEMessage lays it out), then
  `Authorization: SIWX <base64 message>.<base64 signature>`;
- message rules: line 1 "<domain> wants you to sign in with your Ethereum account:", line 2 a 0x
  address, then "Key: value" lines: URI (required), Version (must be 1), Nonce (required), Issued At
  (RFC 3339, required), Expiration Time (optional); Statement, Chain ID and Resources ignored;
- verification: domain = the request host (X-Forwarded-Host, else Host), case-insensitively; Issued At
  within [now - 10 min, now + 2 min]; not expired; EIP-191 personal_sign over the exact text, 65 bytes
  hex, v 27/28 or 0/1, recovering the message's address; each nonce once (in memory); the wallet in
  lower case, passed upstream as `X-Verified-Wallet` (a client's own value is stripped);
- the 401 challenge: `WWW-Authenticate: SIWX realm="<offer>", domain="<host>", window="600"` and the
  JSON body `{error: authentication_required, detail, auth{…}, extensions{"sign-in-with-x": {info,
  supportedChains, schema}}}` with a fresh nonce per challenge.
Not served (no devstack client uses them): session tokens (`Authorization: Bearer`, the `obol_siwx`
cookie, `POST <offer>/auth/verify`), the `<offer>/auth` page, the HTML challenge for browsers.
"""
from __future__ import annotations

import base64
import binascii
import json
import secrets
import threading
from datetime import datetime, timedelta, timezone

from eth_account import Account
from eth_account.messages import encode_defunct
from x402.extensions.sign_in_with_x import build_siwx_schema, parse_siwx_header

WINDOW_S = 600
SKEW_S = 120
HEADER_SUFFIX = " wants you to sign in with your Ethereum account:"
SUPPORTED_CHAINS = ("eip155:8453", "eip155:84532")
NONCE_CACHE_MAX = 100_000


class Refused(Exception):
    """Why a credential does not authenticate (the challenge's `detail`)."""


def request_host(headers) -> str:
    return headers.get("X-Forwarded-Host") or headers.get("Host") or ""


def _rfc3339(value: str) -> datetime:
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError("no time zone")
    return parsed


def parse_message(text: str) -> dict:
    """ParseSIWXMessage: strict about what verification needs, blind to the rest."""
    lines = text.replace("\r\n", "\n").split("\n")
    if len(lines) < 2:
        raise Refused("siwx: message too short")
    if not lines[0].endswith(HEADER_SUFFIX):
        raise Refused("siwx: first line is not an EIP-4361 header")
    msg = {"domain": lines[0][: -len(HEADER_SUFFIX)], "address": lines[1].strip()}
    if not msg["domain"]:
        raise Refused("siwx: empty domain")
    address = msg["address"]
    try:
        ok = len(address) == 42 and address.startswith("0x") and bytes.fromhex(address[2:]) is not None
    except ValueError:
        ok = False
    if not ok:
        raise Refused("siwx: line 2 is not an 0x address")
    for line in lines[2:]:
        key, sep, value = line.partition(": ")
        if not sep:
            continue
        value = value.strip()
        if key in ("Issued At", "Expiration Time"):
            try:
                msg[key] = _rfc3339(value)
            except ValueError as exc:
                raise Refused(f"siwx: invalid {key}: {exc}") from None
        elif key in ("URI", "Version", "Nonce"):
            msg[key] = value
    if msg.get("Version") != "1":
        raise Refused(f"siwx: unsupported Version {json.dumps(msg.get('Version', ''))} (want 1)")
    for key in ("URI", "Nonce", "Issued At"):
        if not msg.get(key):
            raise Refused(f"siwx: missing {key}")
    return msg


def recover_personal_sign(message: str, signature: str) -> str:
    try:
        sig = bytes.fromhex(signature.strip().removeprefix("0x"))
    except ValueError as exc:
        raise Refused(f"siwx: signature is not hex: {exc}") from None
    if len(sig) != 65:
        raise Refused(f"siwx: signature must be 65 bytes, got {len(sig)}")
    v = sig[64] - 27 if sig[64] >= 27 else sig[64]
    if v not in (0, 1):
        raise Refused(f"siwx: invalid recovery id {sig[64]} (EIP-1271 contract-wallet signatures are not supported "
                      "yet — use an EOA)")
    try:
        return Account.recover_message(encode_defunct(text=message),
                                       vrs=(v + 27, int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:64], "big")))
    except Exception as exc:  # eth-keys raises several types for an unrecoverable signature
        raise Refused(f"siwx: recover signer: {exc}") from None


def format_siwe_message(payload: dict) -> str:
    """The x402 SDK's FormatSIWEMessage (go/extensions/signinwithx/message.go) for an EVM payload."""
    chain = str(payload.get("chainId") or "")
    if not chain.startswith("eip155:") or not chain[7:].isdigit() or int(chain[7:]) <= 0:
        raise Refused(f"siwx: invalid EVM chainId format: {chain}. Expected eip155:<number>")
    out = f"{payload['domain']}{HEADER_SUFFIX}\n{payload['address']}\n\n"
    if payload.get("statement"):
        out += f"{payload['statement']}\n\n"
    out += (f"URI: {payload['uri']}\nVersion: {payload['version']}\nChain ID: {int(chain[7:])}\n"
            f"Nonce: {payload['nonce']}\nIssued At: {payload['issuedAt']}")
    for key, label in (("expirationTime", "Expiration Time"), ("notBefore", "Not Before"), ("requestId", "Request ID")):
        if payload.get(key):
            out += f"\n{label}: {payload[key]}"
    if payload.get("resources"):
        out += "\nResources:" + "".join(f"\n- {r}" for r in payload["resources"])
    return out


class Authenticator:
    """One per gateway process: the window and the replay cache of nonces."""

    def __init__(self, window_s: int = WINDOW_S) -> None:
        self.window_s = window_s
        self._nonces: dict[str, float] = {}
        self._lock = threading.Lock()

    def verify_message(self, text: str, signature: str, expected_domain: str, now: float) -> str:
        msg = parse_message(text)
        if msg["domain"].lower() != expected_domain.lower():
            raise Refused(f"siwx: message domain {json.dumps(msg['domain'])} does not match request host "
                          f"{json.dumps(expected_domain)}")
        issued = msg["Issued At"].timestamp()
        if issued < now - self.window_s:
            raise Refused(f"siwx: message issued more than {self.window_s // 60}m0s ago — re-sign with a fresh Issued At")
        if issued > now + SKEW_S:
            raise Refused("siwx: message Issued At is in the future — check client clock")
        expires = msg.get("Expiration Time")
        if expires is not None and now > expires.timestamp():
            raise Refused(f"siwx: message expired at {expires.strftime('%Y-%m-%dT%H:%M:%SZ')}")
        recovered = recover_personal_sign(text, signature)
        if recovered.lower() != msg["address"].lower():
            raise Refused(f"siwx: signature recovers {recovered}, message claims {msg['address']}")
        if not self._consume(msg["Nonce"], now):
            raise Refused("siwx: nonce already used — sign a fresh message")
        return recovered.lower()

    def _consume(self, nonce: str, now: float) -> bool:
        with self._lock:
            cutoff = now - self.window_s - SKEW_S
            for seen_nonce, seen_at in list(self._nonces.items()):
                if seen_at < cutoff:
                    del self._nonces[seen_nonce]
            if nonce in self._nonces:
                return False
            if len(self._nonces) >= NONCE_CACHE_MAX:
                del self._nonces[min(self._nonces, key=self._nonces.get)]
            self._nonces[nonce] = now
            return True

    def authenticate(self, headers, expected_domain: str, now: float) -> str:
        """The wallet a request's credential proves, or Refused naming what to send."""
        spec = headers.get("SIGN-IN-WITH-X")
        if spec:
            return self._verify_spec_header(spec, expected_domain, now)
        auth = headers.get("Authorization") or ""
        if auth.startswith("SIWX "):
            msg_b64, dot, sig_b64 = auth[5:].strip().partition(".")
            if not dot:
                raise Refused("siwx: Authorization SIWX credential must be <base64 message>.<base64 signature>")
            try:
                message = base64.b64decode(msg_b64, validate=True).decode("utf-8")
            except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
                raise Refused(f"siwx: message part is not base64: {exc}") from None
            try:
                signature = base64.b64decode(sig_b64, validate=True).decode("ascii")
            except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
                raise Refused(f"siwx: signature part is not base64: {exc}") from None
            return self.verify_message(message, signature.strip(), expected_domain, now)
        raise Refused("siwx: no credential — sign in at the offer's /auth page, send the SIGN-IN-WITH-X header, or "
                      "Authorization: SIWX <b64 message>.<b64 signature>")

    def _verify_spec_header(self, header: str, expected_domain: str, now: float) -> str:
        try:
            payload = parse_siwx_header(header).model_dump(by_alias=True, exclude_none=True)
        except ValueError as exc:
            raise Refused(f"siwx: {exc}") from None
        if not str(payload.get("chainId", "")).startswith("eip155:"):
            raise Refused(f"siwx: unsupported chain {json.dumps(payload.get('chainId'))} — this server verifies EVM "
                          "(eip155) EOA signatures only")
        return self.verify_message(format_siwe_message(payload), payload["signature"], expected_domain, now)

    def challenge(self, offer: str, host: str, resource_uri: str, reason: str) -> tuple[dict, bytes]:
        """(headers, JSON body) of the 401 for an unauthenticated request to a gate:auth route."""
        now = datetime.now(timezone.utc).replace(microsecond=0)
        stamp = lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: E731 (Go's RFC3339 of a UTC time)
        auth_path = f"/services/{offer}/auth"
        body = {
            "error": "authentication_required", "detail": reason,
            "auth": {"scheme": "siwx", "version": "eip4361", "domain": host, "windowSeconds": self.window_s,
                     "signInUrl": f"https://{host}{auth_path}", "verifyUrl": f"https://{host}{auth_path}/verify",
                     "hint": "Sign an EIP-4361 message (domain must equal the host above, Version 1, fresh Nonce, "
                             "Issued At within the window) with EIP-191 personal_sign, then send "
                             "`Authorization: SIWX <base64 message>.<base64 signature>`. Or POST {message, signature} "
                             "to verifyUrl to mint a reusable session token (also set as the obol_siwx cookie)."},
            "extensions": {"sign-in-with-x": {
                "info": {"domain": host, "uri": resource_uri, "version": "1", "nonce": secrets.token_hex(8),
                         "issuedAt": stamp(now), "expirationTime": stamp(now + timedelta(seconds=self.window_s)),
                         "statement": f"Sign in to {offer}", "resources": [resource_uri]},
                "supportedChains": [{"chainId": c, "type": "eip191"} for c in SUPPORTED_CHAINS],
                "schema": build_siwx_schema()}},
        }
        headers = {"WWW-Authenticate": f'SIWX realm="{offer}", domain="{host}", window="{self.window_s}"'}
        # Go's json.Encoder: maps with sorted keys, <, > and & escaped, and a trailing newline.
        text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
        return headers, text.encode() + b"\n"
