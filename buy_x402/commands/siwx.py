"""`buy.py siwx URL [--fetch] [--method M]`: sign in with the agent's wallet (EIP-4361) where a
resource is wallet-gated. The message follows the server's own challenge when it sends one
(buy_x402/siwx.py); without --fetch the credential is shown, with --fetch it is used once."""
from __future__ import annotations

import shlex
from argparse import Namespace

from .. import siwx
from ..errors import BuyError
from ..http import send
from ..offer import resolve_chain
from ..peers import Peers
from ..result import Context, Result
from ..urls import seller_url

FETCH_TIMEOUT_S = 100.0
BODY_LIMIT_CHARS = 64_000


def run(ctx: Context, args: Namespace) -> Result:
    seller_url(args.url, "the siwx URL")
    method = (args.method or "GET").upper()
    peers = Peers(ctx)
    chain_id = resolve_chain(ctx.settings.default_chain).chain_id
    signed = siwx.sign_in(peers, args.url, method, chain_id=chain_id)
    if signed.probe_error:
        if args.fetch:
            raise BuyError(f"cannot sign in: {signed.probe_error}", code="unreachable",
                           hint="check the URL and that the server is running")
        ctx.warn(f"{signed.probe_error}; the message was built from the URL, not from the server's challenge")
    elif signed.challenge is None:
        ctx.notify(f"{args.url} answered HTTP {signed.probe_status} without a sign-in challenge; "
                   "the message was built from the URL")
    header = f"Authorization: {signed.header}"
    data = {"url": args.url, "method": method, "wallet": signed.wallet, "domain": signed.fields["domain"],
            "message": signed.message, "fields": signed.fields, "fromChallenge": signed.fields["fromChallenge"],
            "header": header, "fetched": bool(args.fetch),
            "curl": f"curl -X {method} -H {shlex.quote(header)} {shlex.quote(args.url)}"}
    if not args.fetch:
        return Result("siwx", data)
    response = send(peers.session, method, args.url, peer="server", timeout=FETCH_TIMEOUT_S,
                    headers={"Authorization": signed.header})
    text = response.content.decode("utf-8", "replace")
    data.update(status=response.status_code, body=text[:BODY_LIMIT_CHARS], bodyTruncated=len(text) > BODY_LIMIT_CHARS,
                contentType=response.headers.get("Content-Type"))
    ctx.notify(f"HTTP {response.status_code}")
    if response.status_code >= 400:
        refused = siwx.read_challenge(response.status_code, response.headers, response.content)
        why = (refused.detail if refused and refused.detail else text[:300]) or "(empty body)"
        return Result("siwx", data, error=BuyError(
            f"{args.url} answered HTTP {response.status_code} to the signed request: {why}", code="siwx_refused",
            hint="run siwx again for a fresh message (each nonce works once, for 10 minutes)"),
            exit_code=BuyError.exit_code)
    return Result("siwx", data)
