"""Credentials in URLs: refused for sellers, masked for peers, never printed.

A seller is paid with x402 vouchers, never with a password: `user:pass@` in a seller URL is a
mistake (or a trap) and would be stored in the PurchaseRequest, listed and sent to the seller, so
it is refused. A peer URL (REMOTE_SIGNER_URL, ERPC_URL, ...) may legitimately carry basic-auth
credentials; they are used but shown only masked (`user:****@host`) in `env` and every message.
"""
from __future__ import annotations

import re
from urllib.parse import urlsplit

from .errors import UsageError

MAX_URL_CHARS = 2048
MASK = "****"
# scheme://userinfo@ : userinfo cannot hold '/', '?', '#' or '@' (RFC 3986), so this finds it in any text.
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/?#@\s]*)@")


def _masked_userinfo(userinfo: str) -> str:
    if not userinfo:
        return ""
    user, sep, _ = userinfo.partition(":")
    return f"{user}:{MASK}" if sep and user else MASK  # a bare `token@` is the secret itself


def mask(url: str) -> str:
    """The URL with its password (or a lone username, often a token) replaced by ****."""
    return _USERINFO.sub(lambda m: m["scheme"] + _masked_userinfo(m["userinfo"]) + "@", url)


def redact(text: str) -> str:
    """Every URL in `text` masked: the CLI's last line of defence before anything is printed."""
    if "@" not in text:
        return text
    return mask(text)


def has_credentials(url: str) -> bool:
    match = _USERINFO.match(url.strip())
    return bool(match and match["userinfo"])


def shown(text: str, limit: int = 120) -> str:
    """A user-supplied value as a message may echo it: bounded, with its length when cut."""
    text = str(text)
    if len(text) <= limit:
        return repr(text)
    return repr(text[:limit]) + f"… ({len(text)} characters)"


def seller_url(url: str, flag: str) -> str:
    """`url` if it can name a seller: http(s), a host, a valid port, no credentials, no whitespace;
    else UsageError naming `flag`, the problem and the fix (the password is never echoed)."""
    text = url or ""
    example = "e.g. https://seller.example/services/qwen"
    if len(text) > MAX_URL_CHARS:
        raise UsageError(f"{flag} is {len(text)} characters long, more than {MAX_URL_CHARS}",
                         hint=f"pass the seller's offer URL, {example}")
    if has_credentials(text):
        raise UsageError(f"{flag} {shown(mask(text))} contains credentials (user:password@); sellers are paid "
                         "with x402 vouchers, and a password in the URL would be stored and sent along",
                         hint=f"remove the user:password@ part, {example}", code="url_credentials")
    problem = None
    try:
        parts = urlsplit(text)
        port = parts.port  # raises ValueError for a port that is not a number in 0..65535
    except ValueError as exc:
        problem, port, parts = f"cannot be parsed ({exc})", None, None
    if problem is None:
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            problem = "is not an http(s) URL"
        elif any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in text):
            problem = "contains whitespace or control characters"
        elif port == 0:
            problem = "has port 0"
    if problem:
        raise UsageError(f"{flag} {shown(text)} {problem}", hint=f"pass the seller's offer URL, {example}")
    return text


__all__ = ["mask", "redact", "has_credentials", "shown", "seller_url", "MAX_URL_CHARS"]
