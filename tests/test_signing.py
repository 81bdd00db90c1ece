"""The payment schemes' EIP-712 typed data: signed with eth-account, recovered, and checked with the x402
SDK's own verifiers; pre-signing through a real (tiny, threaded) remote signer over HTTP."""
from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from x402.mechanisms.evm.eip712 import hash_eip3009_authorization
from x402.mechanisms.evm.exact.permit2_utils import _build_permit2_typed_data
from x402.mechanisms.evm.types import ExactEIP3009Payload, ExactPermit2Payload
from x402.mechanisms.evm.verify import _hash_typed_data, verify_eoa_signature

from buy_x402 import schemes
from buy_x402.errors import SignerError
from buy_x402.http import make_session
from buy_x402.schemes import SigningPlan, echo_extensions, eip3009, permit2
from buy_x402.signer import SignerClient, normalize_signature
from buy_x402.x402 import parse_payment_required

KEY = "0x" + "42" * 32  # a test key that is not the seller (PAY_TO is anvil account 1)
ACCOUNT = Account.from_key(KEY)
USDC_BASE_SEPOLIA = "0x036CbD53842c5426634e7929541eC2318f3dCF7e"
USDC_BASE = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
OTHER_TOKEN = "0x" + "ab" * 20
PAY_TO = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
DEADLINE = 1_900_000_000


def option(**overrides):
    entry = {"scheme": "exact", "network": "eip155:84532", "asset": USDC_BASE_SEPOLIA, "amount": "10000",
             "payTo": PAY_TO, "maxTimeoutSeconds": 300, "extra": {"name": "USDC", "version": "2"}}
    entry.update(overrides)
    return parse_payment_required(402, {}, json.dumps({"x402Version": 2, "accepts": [entry]}).encode()).accepts[0]


def sign(typed: dict) -> str:
    return "0x" + bytes(Account.sign_typed_data(KEY, full_message=typed).signature).hex()


def recover(typed: dict, signature: str) -> str:
    return Account.recover_message(encode_typed_data(full_message=typed), signature=signature)


# ----------------------------------------------------------------------------------------- domains

@pytest.mark.parametrize("overrides, name, version", [
    ({}, "USDC", "2"),                                                                   # base-sepolia table
    ({"network": "eip155:8453", "asset": USDC_BASE}, "USD Coin", "2"),                   # base table
    ({"network": "base", "asset": USDC_BASE, "extra": {"name": "USDC", "version": "9"}}, "USD Coin", "2"),
    ({"asset": OTHER_TOKEN, "extra": {"name": "Fancy", "version": "7"}}, "USDC", "2"),  # extra.name alone: ignored
    ({"asset": OTHER_TOKEN, "extra": {"eip712Domain": {"name": "Fancy", "version": "7"}}}, "Fancy", "7"),
    ({"extra": {"eip712Domain": {"name": "Override", "version": "3"}}}, "Override", "3"),
    ({"asset": OTHER_TOKEN, "extra": {"eip712Domain": {"name": "Half"}}}, "USDC", "2"),  # incomplete: fallback
])
def test_eip3009_domain(overrides, name, version):
    opt = option(**overrides)
    assert eip3009.SCHEME.domain(opt) == {"name": name, "version": version, "chainId": opt.chain.chain_id,
                                           "verifyingContract": opt.asset}


# ---------------------------------------------------------------------------------------- ERC-3009

def test_transfer_with_authorization_recovers_and_passes_the_sdk_verifier():
    opt = option()
    nonce = eip3009.new_nonce()
    typed = eip3009.SCHEME.typed_data(opt, payer=ACCOUNT.address, nonce=nonce, deadline=DEADLINE)
    assert typed["message"] == {"from": ACCOUNT.address, "to": PAY_TO, "value": "10000", "validAfter": "0",
                                "validBefore": str(DEADLINE), "nonce": nonce}
    assert re.fullmatch(r"0x[0-9a-f]{64}", nonce)
    signature = sign(typed)
    assert recover(typed, signature) == ACCOUNT.address

    auth = eip3009.SCHEME.auth_object(opt, typed, signature)
    assert auth["id"] == nonce
    payment = auth["payment"]
    assert payment["x402Version"] == 2 and "extensions" not in payment
    assert payment["accepted"] == {"scheme": "exact", "network": "eip155:84532", "amount": "10000",
                                   "asset": USDC_BASE_SEPOLIA, "payTo": PAY_TO, "maxTimeoutSeconds": 300,
                                   "extra": {"name": "USDC", "version": "2"}}
    # The SDK facilitator's offline check: digest from its own code, ecrecover against `from`.
    payload = ExactEIP3009Payload.from_dict(payment["payload"])
    digest = hash_eip3009_authorization(payload.authorization, 84532, USDC_BASE_SEPOLIA, "USDC", "2")
    assert verify_eoa_signature(digest, bytes.fromhex(payload.signature[2:]), ACCOUNT.address)
    assert not verify_eoa_signature(digest, bytes.fromhex(payload.signature[2:]), PAY_TO)
    # A wrong domain (what trusting a bogus extra.name would do) does not verify.
    wrong = hash_eip3009_authorization(payload.authorization, 84532, USDC_BASE_SEPOLIA, "USD Coin", "2")
    assert not verify_eoa_signature(wrong, bytes.fromhex(payload.signature[2:]), ACCOUNT.address)


def test_accepted_network_is_kept_as_the_seller_wrote_it():
    opt = option(network="base-sepolia")
    typed = eip3009.SCHEME.typed_data(opt, payer=ACCOUNT.address, nonce=eip3009.new_nonce(), deadline=1)
    assert typed["domain"]["chainId"] == 84532
    assert eip3009.SCHEME.auth_object(opt, typed, "0x")["payment"]["accepted"]["network"] == "base-sepolia"


# ------------------------------------------------------------------------------------------ Permit2

def test_permit2_witness_transfer_matches_the_sdk_and_recovers():
    opt = option(network="eip155:1", asset="0x0B010000b7624eb9B3DfBC279673C76E9D29D5F7", amount="5",
                 extra={"name": "Obol Network", "assetTransferMethod": "permit2"})
    nonce = permit2.new_nonce()
    typed = permit2.SCHEME.typed_data(opt, payer=ACCOUNT.address, nonce=nonce, deadline=DEADLINE)
    assert typed["domain"] == {"name": "Permit2", "chainId": 1, "verifyingContract": permit2.PERMIT2_ADDRESS}
    assert typed["message"]["spender"] == permit2.X402_EXACT_PERMIT2_PROXY
    signature = sign(typed)
    assert recover(typed, signature) == ACCOUNT.address

    auth = permit2.SCHEME.auth_object(opt, typed, signature, payer=ACCOUNT.address)
    assert auth["id"] == str(nonce)
    permit = auth["payment"]["payload"]["permit2Authorization"]
    assert permit == {"permitted": {"token": opt.asset, "amount": "5"}, "from": ACCOUNT.address,
                      "spender": permit2.X402_EXACT_PERMIT2_PROXY, "nonce": str(nonce), "deadline": str(DEADLINE),
                      "witness": {"to": PAY_TO, "validAfter": "0"}}
    # The SDK's own Permit2 typed data from the stored payload → same digest → our signer recovered.
    sdk = ExactPermit2Payload.from_dict(auth["payment"]["payload"])
    digest = _hash_typed_data(*_build_permit2_typed_data(sdk.permit2_authorization, 1))
    assert verify_eoa_signature(digest, bytes.fromhex(signature[2:]), ACCOUNT.address)


def test_permit2_auth_needs_the_payer():
    opt = option(extra={"assetTransferMethod": "permit2"})
    typed = permit2.SCHEME.typed_data(opt, payer=ACCOUNT.address, nonce=1, deadline=DEADLINE)
    with pytest.raises(ValueError, match="needs the payer"):
        permit2.SCHEME.auth_object(opt, typed, "0x", payer="")


def test_eip2612_permit_recovers_and_makes_the_sdk_extension():
    opt = option(extra={"name": "USDC", "version": "2", "assetTransferMethod": "permit2"})
    typed = permit2.eip2612_permit(opt, owner=ACCOUNT.address, nonce=7, deadline=DEADLINE)
    assert typed["domain"] == {"name": "USDC", "version": "2", "chainId": 84532, "verifyingContract": USDC_BASE_SEPOLIA}
    assert typed["message"] == {"owner": ACCOUNT.address, "spender": permit2.PERMIT2_ADDRESS, "value": "10000",
                                "nonce": "7", "deadline": str(DEADLINE)}
    signature = sign(typed)
    assert recover(typed, signature) == ACCOUNT.address
    ext = permit2.eip2612_extension(typed, signature)
    # The field set of x402's Eip2612GasSponsoringInfo.to_dict() (its package needs jsonschema to import).
    assert ext == {"eip2612GasSponsoring": {"info": {
        "from": ACCOUNT.address, "asset": USDC_BASE_SEPOLIA, "spender": permit2.PERMIT2_ADDRESS, "amount": "10000",
        "nonce": "7", "deadline": str(DEADLINE), "signature": signature, "version": "1"}}}


def test_echo_extensions_keeps_only_info():
    source = {"bazaar": {"info": {"input": {"body": {"messages": []}}}, "schema": {"big": True}},
              "noinfo": {"schema": {}}, "scalar": 3}
    echoed = echo_extensions(source)
    assert echoed == {"bazaar": {"info": {"input": {"body": {"messages": []}}}}}
    echoed["bazaar"]["info"]["input"]["body"]["messages"].append(1)
    assert source["bazaar"]["info"]["input"]["body"]["messages"] == []  # a deep copy
    assert echo_extensions({"x": {"schema": {}}}) is None
    assert echo_extensions(None) is None


def test_nonces_are_fresh():
    assert len({eip3009.new_nonce() for _ in range(200)}) == 200
    assert len({permit2.new_nonce() for _ in range(200)}) == 200


def test_normalize_signature_v():
    body = "11" * 64
    assert normalize_signature("0x" + body + "00") == "0x" + body + "1b"
    assert normalize_signature(body + "01") == "0x" + body + "1c"
    assert normalize_signature("0x" + body + "1c") == "0x" + body + "1c"


# ---------------------------------------------------------------------------------- remote signer

class _Signer(BaseHTTPRequestHandler):
    """The remote-signer API over one eth-account key; knobs make it fail like a broken signer."""
    protocol_version = "HTTP/1.1"
    keys: list = [ACCOUNT.address]
    fail_on: int | None = None       # the Nth sign request (1-based) answers an error
    mode = "error"                   # error | empty | v01
    lock = threading.Lock()
    count = 0
    peers: set = set()

    def log_message(self, *args):
        pass

    def _json(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/api/v1/keys":
            return self._json(200, {"keys": type(self).keys})
        self._json(404, {"error": "not found", "code": "BAD_REQUEST"})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        cls = type(self)
        with cls.lock:
            cls.count += 1
            n = cls.count
            cls.peers.add(self.client_address[1])
        address = self.path.split("/")[4]
        if address.lower() != ACCOUNT.address.lower():
            return self._json(404, {"error": f"no key {address}", "code": "SIGNER_NOT_FOUND", "address": address})
        if cls.fail_on == n and cls.mode == "error":
            return self._json(500, {"error": "hsm unavailable", "code": "SIGNING_ERROR", "address": address})
        if cls.fail_on == n and cls.mode == "empty":
            return self._json(200, {"signature": ""})
        signature = bytes(Account.sign_typed_data(KEY, full_message=body).signature)
        if cls.mode == "v01":
            signature = signature[:64] + bytes([signature[64] - 27])
        self._json(200, {"signature": "0x" + signature.hex()})


@pytest.fixture()
def signer_url():
    _Signer.keys, _Signer.fail_on, _Signer.mode, _Signer.count, _Signer.peers = [ACCOUNT.address], None, "error", 0, set()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Signer)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def client(url: str, workers: int = 4) -> SignerClient:
    return SignerClient(make_session("t", pool_size=workers), url)


def test_address_and_no_keys(signer_url):
    assert client(signer_url).address() == ACCOUNT.address
    _Signer.keys = []
    with pytest.raises(SignerError, match="no signing keys in remote-signer"):
        client(signer_url).address()


def test_sign_typed_data_errors_carry_the_signer_code(signer_url):
    typed = eip3009.SCHEME.typed_data(option(), payer=PAY_TO, nonce=eip3009.new_nonce(), deadline=1)
    with pytest.raises(SignerError, match="no key .*SIGNER_NOT_FOUND") as info:
        client(signer_url).sign_typed_data(PAY_TO, typed)
    assert info.value.data["signer_code"] == "SIGNER_NOT_FOUND" and info.value.data["status"] == 404


def test_presign_erc3009_in_order_with_progress_over_pooled_connections(signer_url):
    opt = option()
    progress = []
    auths = client(signer_url, workers=4).presign(
        opt, address=ACCOUNT.address, count=40, deadline=DEADLINE,
        extensions={"bazaar": {"info": {"k": 1}, "schema": {}}}, on_progress=lambda d, t: progress.append((d, t)),
        workers=4)
    assert len(auths) == 40 and len({a["id"] for a in auths}) == 40
    assert progress == [(i, 40) for i in range(1, 41)]
    assert len(_Signer.peers) <= 4  # one pooled session: at most `workers` connections for 40 requests
    for auth in auths:
        payment = auth["payment"]
        assert payment["extensions"] == {"bazaar": {"info": {"k": 1}}}
        assert payment["payload"]["authorization"]["nonce"] == auth["id"]
        p = ExactEIP3009Payload.from_dict(payment["payload"])
        digest = hash_eip3009_authorization(p.authorization, 84532, USDC_BASE_SEPOLIA, "USDC", "2")
        assert verify_eoa_signature(digest, bytes.fromhex(p.signature[2:]), ACCOUNT.address)


def test_presign_normalizes_v_to_27_28(signer_url):
    _Signer.mode = "v01"
    [auth] = client(signer_url).presign(option(), address=ACCOUNT.address, count=1, deadline=DEADLINE)
    assert auth["payment"]["payload"]["signature"][-2:] in ("1b", "1c")


@pytest.mark.parametrize("mode, message", [("error", "hsm unavailable"), ("empty", "no usable signature")])
def test_presign_aborts_the_whole_batch_on_one_failure(signer_url, mode, message):
    _Signer.fail_on, _Signer.mode = 7, mode
    progress = []
    with pytest.raises(SignerError, match=rf"pre-signing aborted after \d+/30 signatures: .*{message}"):
        client(signer_url).presign(option(), address=ACCOUNT.address, count=30, deadline=DEADLINE,
                                   on_progress=lambda d, t: progress.append(d))
    assert len(progress) < 30


def test_presign_permit2_with_eip2612(signer_url):
    opt = option(extra={"name": "USDC", "version": "2", "assetTransferMethod": "permit2"})
    auths = client(signer_url).presign(opt, address=ACCOUNT.address, count=5, deadline=DEADLINE,
                                       plan=SigningPlan(permit_nonce_base=10))
    assert _Signer.count == 10  # one Permit2 + one EIP-2612 signature per voucher
    for i, auth in enumerate(auths):
        payload = auth["payment"]["payload"]
        sdk = ExactPermit2Payload.from_dict(payload)
        digest = _hash_typed_data(*_build_permit2_typed_data(sdk.permit2_authorization, 84532))
        assert verify_eoa_signature(digest, bytes.fromhex(payload["signature"][2:]), ACCOUNT.address)
        info = auth["payment"]["extensions"]["eip2612GasSponsoring"]["info"]
        assert info["nonce"] == str(10 + i)  # permit nonces follow the voucher order
        permit = permit2.eip2612_permit(opt, owner=ACCOUNT.address, nonce=10 + i, deadline=DEADLINE)
        assert recover(permit, info["signature"]) == ACCOUNT.address


def test_presign_permit2_without_eip2612(signer_url):
    opt = option(extra={"assetTransferMethod": "permit2"})
    auths = client(signer_url).presign(opt, address=ACCOUNT.address, count=3, deadline=DEADLINE)
    assert _Signer.count == 3 and all("extensions" not in a["payment"] for a in auths)
    assert all(a["payment"]["payload"]["permit2Authorization"]["from"] == ACCOUNT.address for a in auths)


# ------------------------------------------------------------------------------------------ registry

@pytest.mark.parametrize("extra, name", [({}, "eip3009"), ({"assetTransferMethod": "eip3009"}, "eip3009"),
                                         ({"assetTransferMethod": "permit2"}, "permit2"),
                                         ({"assetTransferMethod": "something-else"}, "eip3009")])
def test_an_options_extras_select_its_scheme(extra, name):
    opt = option(extra=extra)
    assert opt.transfer_method == name and schemes.of(opt) is schemes.SCHEMES[name]
    assert (schemes.SCHEMES["eip3009"].max_auths, schemes.SCHEMES["permit2"].max_auths) == (1000, 500)


def test_a_stored_vouchers_deadline_is_read_whichever_scheme_signed_it():
    assert schemes.deadline_of({"authorization": {"validBefore": "7"}}) == "7"
    assert schemes.deadline_of({"permit2Authorization": {"deadline": "9"}}) == "9"
    assert schemes.deadline_of({"other": {}}) is None


def test_presign_to_a_signer_url_the_lean_path_does_not_take_goes_through_the_session(signer_url):
    """The lean path takes plain http:// origins only; credentials in the URL (or https) go through the
    session, one call at a time, and the batch is the same."""
    url = signer_url.replace("http://", "http://user:secret@")
    auths = client(url).presign(option(), address=ACCOUNT.address, count=3, deadline=DEADLINE, workers=2)
    assert len({a["id"] for a in auths}) == 3 and _Signer.count == 3
