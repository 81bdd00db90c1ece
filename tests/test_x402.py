"""402 parsing (v2 header built by the x402 SDK itself, v1 body), chains, tokens, option choice, probe,
and the JSON-RPC chain client against a real anvil (no devstack needed)."""
from __future__ import annotations

import base64
import json
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from x402.http.utils import encode_payment_required_header
from x402.schemas import PaymentRequired as SdkPaymentRequired
from x402.schemas import PaymentRequiredV1

from buy_x402.chain import ChainClient
from buy_x402 import schemes
from buy_x402.errors import ChainError, PaymentChoiceError, SellerError, TransportError, WalletError
from buy_x402.http import make_session
from buy_x402.offer import CHAINS, resolve_chain, token_meta
from buy_x402.schemes.permit2 import PERMIT2_ADDRESS
from devstack import config as devstack_config
from devstack.parts import chain as chain_part
from devstack.sim.erpc import ErpcHandler
from buy_x402.x402 import choose_option, normalize_endpoint, parse_payment_required, probe

USDC_BASE_SEPOLIA = "0x036CbD53842c5426634e7929541eC2318f3dCF7e"
USDC_BASE = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
OBOL = "0x0B010000b7624eb9B3DfBC279673C76E9D29D5F7"
PAY_TO = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


def sdk_v2_header(accepts: list[dict], **extra) -> str:
    """The PAYMENT-REQUIRED header exactly as the SDK's server encodes it."""
    model = SdkPaymentRequired.model_validate({"x402Version": 2, "error": "Payment required",
                                               "resource": {"url": "http://seller/v1/chat/completions"},
                                               "accepts": accepts, **extra})
    return encode_payment_required_header(model)


def v2_entry(**overrides) -> dict:
    entry = {"scheme": "exact", "network": "eip155:84532", "asset": USDC_BASE_SEPOLIA, "amount": "10000",
             "payTo": PAY_TO, "maxTimeoutSeconds": 300, "extra": {"name": "USDC", "version": "2"}}
    entry.update(overrides)
    return entry


# ------------------------------------------------------------------------------------ normalisation

@pytest.mark.parametrize("url, base", [
    ("http://s:8402", "http://s:8402"),
    ("http://s:8402/", "http://s:8402"),
    ("http://s:8402/v1/chat/completions", "http://s:8402"),
    ("http://s:8402/v1/chat/completions/", "http://s:8402"),
    ("http://s/api/chat/completions", "http://s/api"),
    ("http://s/v1", "http://s/v1"),
    ("http://s/services/qwen", "http://s/services/qwen"),
    ("http://s/services/qwen/v1/chat/completions", "http://s/services/qwen"),
    ("http://s/services/qwen/v1/models?x=1#frag", "http://s/services/qwen"),
    ("http://s/services/qwen?x=1", "http://s/services/qwen?x=1"),
    ("http://s/other/qwen/v1", "http://s/other/qwen/v1"),
])
def test_normalize_endpoint(url, base):
    assert normalize_endpoint(url) == base


# ------------------------------------------------------------------------------------ chains/tokens

@pytest.mark.parametrize("text, name", [
    ("base-sepolia", "base-sepolia"), ("eip155:84532", "base-sepolia"), ("Base-Sepolia", "base-sepolia"),
    ("mainnet", "mainnet"), ("ethereum", "mainnet"), ("eth", "mainnet"), ("eip155:1", "mainnet"),
    ("base", "base"), ("eip155:8453", "base"), ("sepolia", "sepolia"), ("eip155:11155111", "sepolia"),
    ("hoodi", "hoodi"), ("eip155:560048", "hoodi"),
])
def test_resolve_chain(text, name):
    chain = resolve_chain(text)
    assert chain.name == name
    assert chain.caip2 == f"eip155:{chain.chain_id}"


@pytest.mark.parametrize("text", ["polygon", "eip155:137", "", None, "solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp"])
def test_resolve_chain_unknown_names_the_supported(text):
    with pytest.raises(PaymentChoiceError, match=r"Supported: base, base-sepolia, hoodi, mainnet, sepolia"):
        resolve_chain(text)


def test_token_meta():
    base_sepolia, mainnet = CHAINS["base-sepolia"], CHAINS["mainnet"]
    assert token_meta(base_sepolia, USDC_BASE_SEPOLIA.lower(), {}) == ("USDC", 6)
    assert token_meta(mainnet, OBOL, {}) == ("OBOL", 18)
    assert token_meta(base_sepolia, "0x" + "11" * 20, {"name": "Obol Network"}) == ("OBOL", 18)
    # A token calling itself USDC is only trusted at the chain's canonical USDC address.
    assert token_meta(base_sepolia, "0x" + "22" * 20, {"name": "USDC"}) == (None, None)
    assert token_meta(base_sepolia, USDC_BASE, {"name": "USD Coin"}) == (None, None)  # base's USDC, wrong chain
    assert token_meta(None, USDC_BASE_SEPOLIA, {"name": "USDC"}) == (None, None)


# --------------------------------------------------------------------------------------- parsing

def test_parse_sdk_v2_header():
    header = sdk_v2_header([v2_entry()], extensions={"bazaar": {"info": {"a": 1}, "schema": {}}})
    required = parse_payment_required(402, {"payment-required": header, "content-type": "application/json"}, b"{}")
    assert required.source == "header" and required.x402_version == 2
    assert required.resource["url"] == "http://seller/v1/chat/completions"
    assert required.extensions == {"bazaar": {"info": {"a": 1}, "schema": {}}}
    [option] = required.accepts
    assert (option.index, option.scheme, option.network, option.chain.name) == (1, "exact", "eip155:84532", "base-sepolia")
    assert (option.amount, option.asset, option.pay_to, option.max_timeout_seconds) == (10000, USDC_BASE_SEPOLIA, PAY_TO, 300)
    assert (option.symbol, option.decimals, option.transfer_method) == ("USDC", 6, "eip3009")
    assert option.extra == {"name": "USDC", "version": "2"}


def test_header_is_case_insensitive_and_wins_over_body():
    header = sdk_v2_header([v2_entry(amount="777")])
    body = json.dumps({"x402Version": 1, "accepts": [v2_entry(amount="1")]}).encode()
    required = parse_payment_required(402, {"PAYMENT-REQUIRED": header}, body)
    assert required.accepts[0].amount == 777 and required.source == "header"


def test_parse_v1_body_from_sdk_schema():
    v1 = PaymentRequiredV1.model_validate({"x402Version": 1, "error": "pay", "accepts": [{
        "scheme": "exact", "network": "base-sepolia", "maxAmountRequired": "2500", "resource": "http://s/x",
        "payTo": PAY_TO, "maxTimeoutSeconds": 120, "asset": USDC_BASE_SEPOLIA,
        "extra": {"name": "USDC", "version": "2"}}]})
    required = parse_payment_required(402, {}, v1.model_dump_json(by_alias=True).encode())
    assert required.source == "body" and required.x402_version == 1
    [option] = required.accepts
    assert (option.amount, option.network, option.chain.name, option.max_timeout_seconds) == (2500, "base-sepolia", "base-sepolia", 120)


def test_parse_permit2_and_unknown_network_options():
    body = json.dumps({"x402Version": 2, "accepts": [
        v2_entry(network="eip155:1", asset=OBOL, amount="10", extra={"name": "Obol Network", "assetTransferMethod": "permit2"}),
        v2_entry(network="solana:mainnet", asset="So111", scheme="exact"),
        {k: v for k, v in v2_entry().items() if k != "maxTimeoutSeconds"},
    ]}).encode()
    first, solana, defaulted = parse_payment_required(402, {}, body).accepts
    assert (first.transfer_method, first.symbol, first.decimals, first.chain.name) == ("permit2", "OBOL", 18, "mainnet")
    assert solana.chain is None and not solana.payable and solana.network == "solana:mainnet"
    assert defaulted.max_timeout_seconds == 60 and defaulted.index == 3


@pytest.mark.parametrize("status, headers, body, message", [
    (200, {}, b'{"choices": []}', r"HTTP 200 without asking for payment .*\{\"choices\": \[\]\}"),
    (204, {}, b"", "HTTP 204 without asking for payment"),
    (500, {}, b"upstream exploded", "HTTP 500, expected 402 Payment Required: upstream exploded"),
    (404, {}, b"x" * 1000, r"HTTP 404, expected 402 Payment Required: x{200}…$"),
    (402, {}, b"<html>pay me</html>", "no PAYMENT-REQUIRED header and its body is not JSON: <html>pay me</html>"),
    (402, {}, b"{}", r"402 body has no 'accepts' array of payment options: \{\}"),
    (402, {}, b"[1, 2]", r"402 body is not a JSON object"),
    (402, {}, json.dumps({"accepts": []}).encode(), "has no 'accepts' array"),
    (402, {}, json.dumps({"accepts": "all"}).encode(), "has no 'accepts' array"),
    (402, {"Payment-Required": "!!!not-base64!!!"}, b"{}", "PAYMENT-REQUIRED header is not base64-encoded JSON"),
    (402, {"Payment-Required": base64.b64encode(b"not json").decode()}, b"{}", "PAYMENT-REQUIRED header is not base64-encoded JSON"),
    (402, {"Payment-Required": base64.b64encode(b"[1]").decode()}, b"{}", "decodes to list, not an object"),
    (402, {"Payment-Required": base64.b64encode(b'{"x402Version":2}').decode()}, b"{}", "PAYMENT-REQUIRED header has no 'accepts'"),
    (402, {}, json.dumps({"accepts": [{k: v for k, v in v2_entry().items() if k != "payTo"}]}).encode(),
     "payment option 1 in the 402 is missing payTo"),
    (402, {}, json.dumps({"accepts": [v2_entry(), {"scheme": "exact", "network": "base"}]}).encode(),
     "payment option 2 in the 402 is missing payTo, asset, amount"),
    (402, {}, json.dumps({"accepts": [{k: v for k, v in v2_entry().items() if k != "network"}]}).encode(),
     "missing network"),
    (402, {}, json.dumps({"accepts": [v2_entry(amount="1.5")]}).encode(), "amount '1.5', not a positive integer"),
    (402, {}, json.dumps({"accepts": [v2_entry(amount="0")]}).encode(), "amount '0', not a positive integer"),
    (402, {}, json.dumps({"accepts": ["exact"]}).encode(), "payment option 1 in the 402 is str, not an object"),
])
def test_parse_rejects_with_a_message_naming_what_came_back(status, headers, body, message):
    with pytest.raises(SellerError, match=message):
        parse_payment_required(status, headers, body)


# ---------------------------------------------------------------------------------------- choice

def offer(*entries: dict):
    return parse_payment_required(402, {}, json.dumps({"x402Version": 2, "accepts": list(entries)}).encode()).accepts


MULTI = [
    v2_entry(amount="10000"),                                                           # [1] USDC base-sepolia
    v2_entry(network="eip155:8453", asset=USDC_BASE, amount="20000"),                   # [2] USDC base
    v2_entry(network="eip155:1", asset=OBOL, amount="5", extra={"assetTransferMethod": "permit2"}),  # [3] OBOL mainnet
]


def test_listing_names_every_option():
    choice = choose_option(offer(*MULTI))
    assert choice.listing.splitlines() == [
        "[1] 0.01 USDC (10000 atomic) per request in USDC on base-sepolia via eip3009",
        "[2] 0.02 USDC (20000 atomic) per request in USDC on base via eip3009",
        "[3] 0.000000000000000005 OBOL (5 atomic) per request in OBOL on mainnet via permit2",
    ]


def test_choice_by_index_and_out_of_range():
    assert choose_option(offer(*MULTI), index=3).option.symbol == "OBOL"
    for bad in (0, 4, -1):
        with pytest.raises(PaymentChoiceError, match=rf"--payment-option {bad} is out of range; the seller offers 3 option\(s\):\n\[1\]"):
            choose_option(offer(*MULTI), index=bad)


def test_choice_by_token_and_network_filters():
    accepts = offer(*MULTI)
    assert choose_option(accepts, token="obol").option.index == 3
    assert choose_option(accepts, network="base").option.index == 2
    assert choose_option(accepts, token="USDC", network="eip155:84532").option.index == 1
    with pytest.raises(PaymentChoiceError, match=r"2 payment options match --token USDC:\n\[1\].*\n\[2\].*\n\[3\]"):
        choose_option(accepts, token="USDC")
    with pytest.raises(PaymentChoiceError, match="no payment option matches --token DAI"):
        choose_option(accepts, token="DAI")
    with pytest.raises(PaymentChoiceError, match="Unknown chain 'polygon'"):
        choose_option(accepts, network="polygon")


def test_filters_guard_a_single_option_offer():
    single = offer(v2_entry())
    assert choose_option(single).reason == "the seller's only payment option"
    with pytest.raises(PaymentChoiceError, match="no payment option matches --network base:"):
        choose_option(single, network="base")
    with pytest.raises(PaymentChoiceError, match="no payment option matches --token OBOL"):
        choose_option(single, token="OBOL")


def test_affordability_picks_first_affordable():
    balances = {1: 9_999, 2: 50_000, 3: 10**30}
    choice = choose_option(offer(*MULTI), balance_of=lambda o: balances[o.index])
    assert choice.option.index == 2
    assert "can afford" in choice.reason and "0.05 USDC" in choice.reason


def test_affordability_falls_back_to_first_and_says_why():
    choice = choose_option(offer(*MULTI), balance_of=lambda o: 0)
    assert choice.option.index == 1 and "cannot afford any of 3 options" in choice.reason


def test_affordability_skips_options_whose_balance_is_unknown():
    def balance(option):
        if option.index == 1:
            raise ChainError("eth_call on base-sepolia failed")
        return 10**6
    choice = choose_option(offer(*MULTI), balance_of=balance)
    assert choice.option.index == 2


def test_unpayable_options_are_never_chosen():
    accepts = offer(v2_entry(network="solana:mainnet"), v2_entry(amount="3"))
    assert choose_option(accepts).option.index == 2
    with pytest.raises(PaymentChoiceError, match="payment option 1 cannot be paid by this skill"):
        choose_option(accepts, index=1)
    with pytest.raises(PaymentChoiceError, match="cannot be paid by this skill"):
        choose_option(offer(v2_entry(scheme="upto")))


# ----------------------------------------------------------------------------------------- probe

class _Seller(BaseHTTPRequestHandler):
    """A stdlib seller: /v2 answers like the SDK, /v1 like Obol, /moved redirects, /free is free."""
    seen: list = []

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        type(self).seen.append((self.command, self.path, body, self.headers.get("User-Agent")))
        if self.path.startswith("/moved"):
            self.send_response(302)
            self.send_header("Location", "http://evil.example/pay")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path.startswith("/free"):
            payload, status, headers = b'{"ok": true}', 200, {}
        elif self.path.startswith("/v1/"):
            payload, status, headers = json.dumps({"x402Version": 1, "accepts": [v2_entry(amount="42")]}).encode(), 402, {}
        else:
            payload, status, headers = b"{}", 402, {"PAYMENT-REQUIRED": sdk_v2_header([v2_entry()])}
        self.send_response(status)
        for key, value in {**headers, "Content-Type": "application/json", "Content-Length": str(len(payload))}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _answer

    def log_message(self, *args):
        pass


@pytest.fixture()
def seller_url():
    _Seller.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Seller)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_probe_inference_posts_a_ping_to_the_normalised_endpoint(seller_url):
    session = make_session("buy-x402-test/1")
    required = probe(session, f"{seller_url}/services/qwen/v1/chat/completions", "qwen3")
    assert required.source == "header" and required.accepts[0].amount == 10000
    method, path, body, agent = _Seller.seen[-1]
    assert (method, path, agent) == ("POST", "/services/qwen/v1/chat/completions", "buy-x402-test/1")
    assert json.loads(body) == {"model": "qwen3", "messages": [{"role": "user", "content": "ping"}]}
    probe(session, seller_url, None)
    assert json.loads(_Seller.seen[-1][2])["model"] == "test"


def test_probe_http_kind_uses_the_url_and_method(seller_url):
    session = make_session("t")
    required = probe(session, f"{seller_url}/v1/data?q=1", None, kind="http")
    assert required.source == "body" and required.accepts[0].amount == 42
    assert _Seller.seen[-1][:3] == ("GET", "/v1/data?q=1", b"")
    probe(session, f"{seller_url}/v1/data", None, kind="http", method="post")
    assert _Seller.seen[-1][0] == "POST"


def test_probe_never_follows_redirects(seller_url):
    with pytest.raises(SellerError, match=r"redirected \(HTTP 302\) to http://evil.example/pay"):
        probe(make_session("t"), f"{seller_url}/moved", None, kind="http")
    assert len(_Seller.seen) == 1


def test_probe_of_a_free_endpoint_names_the_status_and_url(seller_url):
    with pytest.raises(SellerError, match=r"/free: the seller answered HTTP 200 without asking for payment .*\"ok\""):
        probe(make_session("t"), f"{seller_url}/free", None, kind="http")


# ------------------------------------------------------------ chain client (buy_x402.chain) on anvil

ANVIL = Path(__file__).resolve().parent.parent / ".deps" / "node" / "node_modules" / ".bin" / "anvil"
REVERTER_CODE = "0x60006000fd"  # PUSH1 0 PUSH1 0 REVERT: a contract that reverts every call


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def chain_rpc():
    """A real anvil with the project's USDC-like token, behind the devstack's eRPC-shaped router."""
    port = _free_port()
    anvil_url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([str(ANVIL), "--host", "127.0.0.1", "--port", str(port), "--chain-id", "84532"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    router = None
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                chain_part.rpc(anvil_url, "eth_chainId", timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.05)
        chain_part.place_token(anvil_url, USDC_BASE_SEPOLIA)
        holder = chain_part.address_of(devstack_config.FACILITATOR_KEY)
        chain_part.mint(anvil_url, USDC_BASE_SEPOLIA, holder, 1_234_567)
        chain_part.rpc(anvil_url, "anvil_setCode", [REVERTER, REVERTER_CODE])
        handler = type("Handler", (ErpcHandler,), {"upstream": urlsplit(anvil_url), "chains": {"base-sepolia"}})
        router = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        router.daemon_threads = True
        threading.Thread(target=router.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        yield {"erpc": f"http://127.0.0.1:{router.server_address[1]}/rpc", "anvil": anvil_url, "holder": holder}
    finally:
        if router is not None:
            router.shutdown()
            router.server_close()
        proc.terminate()
        proc.wait(timeout=10)


REVERTER = "0x" + "5e" * 20


def test_chain_code_and_balances(chain_rpc):
    chain = ChainClient(make_session("t"), chain_rpc["erpc"])
    base_sepolia = resolve_chain("base-sepolia")
    assert chain.has_code(base_sepolia, USDC_BASE_SEPOLIA)
    assert not chain.has_code("base-sepolia", PAY_TO)
    assert chain.get_code("base-sepolia", PAY_TO) == "0x"
    assert chain.balance_of(base_sepolia, USDC_BASE_SEPOLIA, chain_rpc["holder"]) == 1_234_567
    assert chain.balance_of(base_sepolia, USDC_BASE_SEPOLIA, PAY_TO) == 0
    with pytest.raises(ChainError, match="returned no value .*is there a token contract"):
        chain.balance_of(base_sepolia, PAY_TO, chain_rpc["holder"])


def test_chain_allowance_follows_an_approve(chain_rpc):
    chain = ChainClient(make_session("t"), chain_rpc["erpc"])
    holder = chain_rpc["holder"]
    assert chain.allowance("base-sepolia", USDC_BASE_SEPOLIA, holder, PERMIT2_ADDRESS) == 0
    tx = chain_part.rpc(chain_rpc["anvil"], "eth_sendTransaction", [{
        "from": holder, "to": USDC_BASE_SEPOLIA,
        "data": chain_part.calldata("approve(address,uint256)", PERMIT2_ADDRESS, 777)}])
    assert int(chain_part.wait_receipt(chain_rpc["anvil"], tx)["status"], 16) == 1
    assert chain.allowance("base-sepolia", USDC_BASE_SEPOLIA, holder, PERMIT2_ADDRESS) == 777


def test_permit2_preflight_needs_an_approval_unless_the_seller_sponsors_gas(chain_rpc):
    """The Permit2 scheme's pre-flight against a real token: no approval and no sponsoring is refused
    before anything is signed; EIP-2612 sponsoring starts the permits at the token's nonce; an
    approval lets plain Permit2 vouchers through."""
    chain = ChainClient(make_session("t"), chain_rpc["erpc"])
    [option] = parse_payment_required(402, {}, json.dumps({"x402Version": 2, "accepts": [
        v2_entry(extra={"name": "USDC", "version": "2", "assetTransferMethod": "permit2"})]}).encode()).accepts
    scheme = schemes.of(option)
    owner = "0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65"  # anvil dev account #4: unlocked, no approval yet
    with pytest.raises(WalletError, match=f"wallet {owner} has not approved Permit2 .*nothing was signed") as info:
        scheme.preflight(chain, option, owner)
    assert "data=0x095ea7b3" in info.value.hint
    sponsored = scheme.preflight(chain, option, owner, offered_extensions={"eip2612GasSponsoring": {"info": {}}})
    assert sponsored.permit_nonce_base == 0
    tx = chain_part.rpc(chain_rpc["anvil"], "eth_sendTransaction", [{
        "from": owner, "to": USDC_BASE_SEPOLIA,
        "data": chain_part.calldata("approve(address,uint256)", PERMIT2_ADDRESS, 2**256 - 1)}])
    assert int(chain_part.wait_receipt(chain_rpc["anvil"], tx)["status"], 16) == 1
    assert scheme.preflight(chain, option, owner).permit_nonce_base is None


def test_chain_nonces(chain_rpc):
    chain = ChainClient(make_session("t"), chain_rpc["erpc"])
    assert chain.nonces("base-sepolia", USDC_BASE_SEPOLIA, PAY_TO) == 0   # EIP-2612 token
    assert chain.nonces("base-sepolia", PAY_TO, PAY_TO) is None           # no code: silent
    assert chain.nonces("base-sepolia", REVERTER, PAY_TO) is None         # reverts


def test_chain_errors_name_chain_and_method(chain_rpc):
    chain = ChainClient(make_session("t"), chain_rpc["erpc"])
    with pytest.raises(ChainError, match="eth_noSuchMethod on base-sepolia failed") as info:
        chain.rpc("base-sepolia", "eth_noSuchMethod", [])
    assert info.value.data["rpc_error"]["code"] == -32601
    with pytest.raises(ChainError, match=r"eth_chainId on mainnet: RPC answered HTTP 404: .*network not supported"):
        chain.rpc("mainnet", "eth_chainId")
    with pytest.raises(ChainError, match="eth_call on base-sepolia failed: .*revert"):
        chain.balance_of("base-sepolia", REVERTER, PAY_TO)
    with pytest.raises(TransportError, match="cannot reach the chain RPC"):
        ChainClient(make_session("t"), f"http://127.0.0.1:{_free_port()}/rpc").rpc("base-sepolia", "eth_chainId")


# ------------------------------------------------------------------------------- cheapest by default

def test_the_cheapest_affordable_option_is_chosen_and_ties_go_to_the_earliest():
    accepts = offer(v2_entry(amount="3000"), v2_entry(amount="1000", payTo="0x" + "22" * 20),
                    v2_entry(amount="1000", payTo="0x" + "33" * 20))
    choice = choose_option(accepts, balance_of=lambda o: 10**6)
    assert choice.option.index == 2
    assert choice.reason.startswith("cheapest the wallet can afford of 3 options (balance 1 USDC")
    # Only what the wallet can afford counts: with 1500 atomic, the 1000 options; with 999, none.
    assert choose_option(accepts, balance_of=lambda o: 1500).option.index == 2
    broke = choose_option(accepts, balance_of=lambda o: 999)
    assert broke.option.index == 2 and "cannot afford any of 3 options; took the cheapest payable one" in broke.reason
    assert choose_option(accepts).option.index == 2   # no balance known: still the cheapest
    assert choose_option(accepts, index=1).option.index == 1   # --payment-option overrides


def test_prices_in_different_tokens_are_not_compared():
    # 5 atomic OBOL is not cheaper than 0.01 USDC: the seller's order ranks tokens, prices rank within one.
    choice = choose_option(offer(*MULTI), balance_of=lambda o: 10**30)
    assert choice.option.index == 1
    assert "options in OBOL are not compared by price" in choice.reason


def test_a_filter_narrows_the_choice_and_is_ignored_when_it_keeps_nothing():
    accepts = offer(v2_entry(amount="3000"), v2_entry(amount="1000", payTo="0x" + "22" * 20))
    first_only = choose_option(accepts, balance_of=lambda o: 10**6, eligible=lambda o: o.index == 1,
                               eligible_reason="the cluster can spend")
    assert first_only.option.index == 1
    assert "of the 1 of 2 options the cluster can spend" in first_only.reason
    # A filter that keeps nothing leaves the choice to price (the caller's own check then refuses it).
    assert choose_option(accepts, balance_of=lambda o: 10**6, eligible=lambda o: False).option.index == 2
