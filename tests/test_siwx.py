"""Sign-In-With-X: the message the skill builds (from the server's challenge, bound to the URL), and the
devstack's SIWX-gated route verifying it for real over HTTP, both credential forms, both ways."""
from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest
import requests
from eth_account import Account
from eth_account.messages import encode_defunct
from x402.extensions.sign_in_with_x import SIWxPayload, encode_siwx_header

from buy_x402 import siwx
from conftest import run_buy, stack_env
from devstack import config

ADDRESS = Account.from_key(config.AGENT_KEY).address


# ------------------------------------------------------------------------------- the message (unit)

CHALLENGE = {"domain": "seller.example:8443", "uri": "https://seller.example:8443/services/m/data", "version": "1",
             "nonce": "0123456789abcdef", "issuedAt": "2026-01-02T03:04:05Z", "expirationTime": "2026-01-02T03:14:05Z",
             "statement": "Sign in to m", "resources": ["https://seller.example:8443/services/m/data"]}


def challenge(**info) -> siwx.Challenge:
    return siwx.Challenge(401, {**CHALLENGE, **info}, [8453, 84532])


def test_the_message_uses_the_challenge_and_is_laid_out_as_eip_4361():
    fields = siwx.message_fields("http://seller.example:8443/services/m/data", ADDRESS, challenge(), chain_id=84532)
    assert siwx.format_message(fields) == (
        f"seller.example:8443 wants you to sign in with your Ethereum account:\n{ADDRESS}\n\nSign in to m\n\n"
        "URI: https://seller.example:8443/services/m/data\nVersion: 1\nChain ID: 84532\nNonce: 0123456789abcdef\n"
        "Issued At: 2026-01-02T03:04:05Z\nExpiration Time: 2026-01-02T03:14:05Z\n"
        "Resources:\n- https://seller.example:8443/services/m/data")
    # A chain the server does not list is replaced by the first it does.
    assert siwx.message_fields("http://seller.example:8443/x", ADDRESS, challenge(), chain_id=1)["chainId"] == 8453


def test_without_a_challenge_the_message_is_built_from_the_url_as_upstream_does():
    fields = siwx.message_fields("http://h:1/p?q=1", ADDRESS, None, chain_id=84532, now=0)
    assert (fields["domain"], fields["uri"], fields["statement"], fields["issuedAt"]) == \
        ("h:1", "http://h:1/p?q=1", siwx.UPSTREAM_STATEMENT, "1970-01-01T00:00:00Z")
    assert len(fields["nonce"]) == 24 and fields["expirationTime"] is None and not fields["fromChallenge"]


@pytest.mark.parametrize("info, what", [
    ({"domain": "bank.example"}, "is for domain 'bank.example'"),
    ({"uri": "https://bank.example/login"}, "names uri 'https://bank.example/login'"),
    ({"uri": "ftp://seller.example:8443/x"}, "names uri"),
])
def test_a_challenge_for_another_site_is_refused_before_signing(info, what):
    with pytest.raises(siwx.SignInRefused, match=what) as caught:
        siwx.message_fields("http://seller.example:8443/services/m/data", ADDRESS, challenge(**info), chain_id=84532)
    assert "nothing was signed" in caught.value.message


def test_read_challenge_takes_the_extension_and_ignores_other_answers():
    body = json.dumps({"error": "authentication_required", "detail": "siwx: no credential",
                       "extensions": {"sign-in-with-x": {"info": CHALLENGE, "supportedChains": [
                           {"chainId": "eip155:84532", "type": "eip191"}, {"chainId": "solana:x", "type": "ed25519"}]}}})
    read = siwx.read_challenge(401, {"WWW-Authenticate": 'SIWX realm="m"'}, body.encode())
    assert (read.info, read.chain_ids, read.detail, read.www_authenticate) == \
        (CHALLENGE, [84532], "siwx: no credential", 'SIWX realm="m"')
    assert siwx.read_challenge(200, {}, body.encode()) is None
    assert siwx.read_challenge(401, {}, b"<html>").info == {}


# ---------------------------------------------------------------- the gated route, for real over HTTP

def gated(stack, path: str = "/data") -> str:
    return f"{stack.env['SELLER_BASE_URL']}/services/members{path}"


def message(stack, *, domain: str | None = None, issued: datetime | None = None, nonce: str | None = None,
            expires: datetime | None = None) -> str:
    host = urlsplit(stack.env["SELLER_BASE_URL"]).netloc
    issued = issued or datetime.now(timezone.utc)
    lines = [f"{domain or host} wants you to sign in with your Ethereum account:", ADDRESS, "",
             f"URI: {gated(stack)}", "Version: 1", "Chain ID: 84532", f"Nonce: {nonce or secrets.token_hex(8)}",
             f"Issued At: {issued.strftime('%Y-%m-%dT%H:%M:%SZ')}"]
    if expires:
        lines.append(f"Expiration Time: {expires.strftime('%Y-%m-%dT%H:%M:%SZ')}")
    return "\n".join(lines)


def sign(text: str, *, v_offset: int = 0) -> str:
    sig = bytearray(Account.sign_message(encode_defunct(text=text), config.AGENT_KEY).signature)
    sig[64] -= v_offset
    return "0x" + sig.hex()


def authorization(text: str, signature: str) -> dict:
    return {"Authorization": f"SIWX {base64.b64encode(text.encode()).decode()}.{base64.b64encode(signature.encode()).decode()}"}


def get(stack, headers: dict) -> requests.Response:
    return requests.get(gated(stack), headers=headers, timeout=10)


def test_an_unauthenticated_request_gets_the_obol_challenge(stack):
    resp = get(stack, {})
    host = urlsplit(stack.env["SELLER_BASE_URL"]).netloc
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"] == f'SIWX realm="members", domain="{host}", window="600"'
    body = resp.json()
    assert body["error"] == "authentication_required" and body["auth"]["domain"] == host
    info = body["extensions"]["sign-in-with-x"]["info"]
    assert (info["domain"], info["version"], info["uri"]) == (host, "1", f"https://{host}/services/members/data")
    issued = datetime.fromisoformat(info["issuedAt"].replace("Z", "+00:00"))
    assert abs((datetime.now(timezone.utc) - issued).total_seconds()) < 60
    assert info["nonce"] != get(stack, {}).json()["extensions"]["sign-in-with-x"]["info"]["nonce"]   # fresh each time


def test_a_good_sign_in_passes_once_and_the_replay_is_refused(stack):
    text = message(stack)
    first = get(stack, authorization(text, sign(text)))
    assert first.status_code == 200, first.text
    assert first.json()["verifiedWallet"] == ADDRESS.lower()
    replay = get(stack, authorization(text, sign(text)))
    assert replay.status_code == 401 and "nonce already used" in replay.json()["detail"]


def test_v_as_0_or_1_is_accepted_as_obol_does(stack):
    text = message(stack)
    assert get(stack, authorization(text, sign(text, v_offset=27))).status_code == 200


@pytest.mark.parametrize("case, detail", [
    ("wrong domain", "does not match request host"),
    ("stale issued at", "issued more than 10m0s ago"),
    ("future issued at", "Issued At is in the future"),
    ("expired", "message expired"),
    ("bad signature", "signature recovers"),
    ("not a signature", "signature must be 65 bytes"),
])
def test_bad_sign_ins_are_refused_with_401(stack, case, detail):
    now = datetime.now(timezone.utc)
    text = {"wrong domain": lambda: message(stack, domain="evil.example"),
            "stale issued at": lambda: message(stack, issued=now - timedelta(minutes=11)),
            "future issued at": lambda: message(stack, issued=now + timedelta(minutes=3)),
            "expired": lambda: message(stack, issued=now - timedelta(minutes=2), expires=now - timedelta(minutes=1)),
            }.get(case, lambda: message(stack))()
    signature = sign(text)
    if case == "bad signature":
        signature = sign(text + " tampered")
    elif case == "not a signature":
        signature = "0x1234"
    resp = get(stack, authorization(text, signature))
    assert resp.status_code == 401 and detail in resp.json()["detail"], resp.text
    assert resp.json()["error"] == "authentication_required"


def test_x_forwarded_host_is_the_domain_when_a_proxy_sets_it(stack):
    text = message(stack, domain="public.example")
    assert get(stack, {**authorization(text, sign(text)), "X-Forwarded-Host": "public.example"}).status_code == 200
    text = message(stack)   # the Host no longer counts once a proxy names the public host
    assert get(stack, {**authorization(text, sign(text)), "X-Forwarded-Host": "public.example"}).status_code == 401


def test_the_sign_in_with_x_header_form(stack):
    host = urlsplit(stack.env["SELLER_BASE_URL"]).netloc
    fields = {"domain": host, "address": ADDRESS, "uri": gated(stack), "version": "1", "chainId": "eip155:84532",
              "type": "eip191", "nonce": secrets.token_hex(8),
              "issuedAt": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "statement": "Sign in"}
    # The EIP-4361 text the SDK's FormatSIWEMessage makes of these fields, signed by the wallet.
    text = (f"{host} wants you to sign in with your Ethereum account:\n{ADDRESS}\n\nSign in\n\nURI: {gated(stack)}\n"
            f"Version: 1\nChain ID: 84532\nNonce: {fields['nonce']}\nIssued At: {fields['issuedAt']}")
    header = encode_siwx_header(SIWxPayload.model_validate({**fields, "signature": sign(text)}))
    resp = get(stack, {"SIGN-IN-WITH-X": header})
    assert resp.status_code == 200 and resp.json()["verifiedWallet"] == ADDRESS.lower()
    assert get(stack, {"SIGN-IN-WITH-X": header}).status_code == 401   # its nonce is spent too
    forged = encode_siwx_header(SIWxPayload.model_validate({**fields, "nonce": secrets.token_hex(8),
                                                            "signature": sign(text)}))
    assert get(stack, {"SIGN-IN-WITH-X": forged}).status_code == 401


# ------------------------------------------------------------------------------ buy.py siwx, end to end

def test_siwx_fetch_signs_in_through_the_remote_signer(stack):
    res = run_buy(["siwx", gated(stack), "--fetch", "--json"], stack_env(stack))
    assert res.returncode == 0, res.stderr
    doc = res.json
    assert doc["status"] == 200 and doc["fromChallenge"] is True
    assert json.loads(doc["body"])["verifiedWallet"] == stack.info["signer"]["address"].lower()
    text = run_buy(["siwx", gated(stack), "--fetch"], stack_env(stack))
    assert text.returncode == 0 and "HTTP 200" in text.stderr and json.loads(text.stdout)["verifiedWallet"]


def test_siwx_without_fetch_prints_a_credential_that_works_once(stack):
    res = run_buy(["siwx", gated(stack)], stack_env(stack))
    assert res.returncode == 0, res.stderr
    host = urlsplit(stack.env["SELLER_BASE_URL"]).netloc
    lines = dict(line.split(": ", 1) for line in res.stdout.splitlines() if ": " in line)
    assert lines["Wallet"] == stack.info["signer"]["address"] and lines["Domain"].startswith(host)
    name, value = lines["Header"].split(": ", 1)
    assert name == "Authorization" and value.startswith("SIWX ")
    assert "curl -X GET -H 'Authorization: SIWX " in res.stdout
    assert requests.get(gated(stack), headers={name: value}, timeout=10).status_code == 200
    assert requests.get(gated(stack), headers={name: value}, timeout=10).status_code == 401


def test_siwx_fetch_of_a_refused_request_exits_1_with_the_reason(stack):
    paid = f"{stack.env['SELLER_BASE_URL']}/services/qwen/v1/chat/completions"   # a paid offer: 402, not 401
    res = run_buy(["siwx", paid, "--fetch", "--json"], stack_env(stack))
    assert res.returncode == 1
    assert res.json["status"] == 402 and "answered HTTP 402 to the signed request" in res.json["error"]["message"]


class _Phisher(BaseHTTPRequestHandler):
    """A server whose challenge asks for a signature valid at another site."""

    def do_GET(self) -> None:  # noqa: N802
        body = json.dumps({"error": "authentication_required", "extensions": {"sign-in-with-x": {"info": {
            "domain": "bank.example", "uri": "https://bank.example/", "version": "1", "nonce": "abcdef0123456789",
            "issuedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}}}}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_siwx_refuses_a_challenge_bound_to_another_site(stack):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Phisher)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        res = run_buy(["siwx", f"http://127.0.0.1:{server.server_port}/x", "--json"], stack_env(stack))
    finally:
        server.shutdown()
        server.server_close()
    assert res.returncode == 1
    assert res.json["error"]["code"] == "siwx" and "'bank.example'" in res.json["error"]["message"]
    assert "header" not in res.json


def test_siwx_fetch_of_an_unreachable_server_exits_1(stack):
    from helpers import closed_port
    res = run_buy(["siwx", f"http://127.0.0.1:{closed_port()}/x", "--fetch", "--json"], stack_env(stack))
    assert res.returncode == 1 and res.json["error"]["code"] == "unreachable"
