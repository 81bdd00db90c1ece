"""Property-based fuzzing (hypothesis) of everything that reads outside input: the 402 parsers (body and
header), the option choice, amounts, seller URLs and endpoint normalisation, the Hermes config
pre-flight and the adoption record. No exception escapes but the documented `BuyError`s, and what is
accepted is what an independent oracle (eth_utils for EIP-55) accepts.

`test_nothing_is_signed_for_a_rejected_offer` runs the real `pay` command against a loopback seller
serving generated 402s, with the devstack's signer and chain behind it: a signature is requested
only for an offer the oracle accepts.
"""
from __future__ import annotations

import base64
import io
import json
import os
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from eth_utils import is_checksum_address, is_hex_address
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from buy_x402 import cli
from buy_x402.agent.hermes import HermesRuntime
from buy_x402.agent.record import MAX_HISTORY, AdoptionRecord
from buy_x402.amounts import MAX_ATOMIC, check_money_syntax, parse_money
from buy_x402.errors import AgentConfigError, BuyError, PaymentChoiceError, SellerError, UsageError
from buy_x402.offer import chain_or_none
from buy_x402.settings import Settings
from buy_x402.urls import has_credentials, seller_url
from buy_x402.x402 import chat_url, choose_option, normalize_endpoint, parse_payment_required

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
USDC = "0x036CbD53842c5426634e7929541eC2318f3dCF7e"
PAY_TO = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
BAD_CHECKSUM = PAY_TO[:-1] + PAY_TO[-1].lower()   # 'C8' → 'c8': mixed case, wrong checksum

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**30, 10**30) | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=12)
addresses = st.one_of(st.sampled_from([USDC, USDC.lower(), PAY_TO, PAY_TO.lower(), PAY_TO.upper().replace("0X", "0x"),
                                       BAD_CHECKSUM, "0x" + "12" * 20, "0x123", "", "not-an-address"]),
                      st.text(max_size=44), st.integers(), st.none())
amounts = st.one_of(st.sampled_from(["1000", "0", "-1", "1e3", "١٠٠٠", "1000.0", str(MAX_ATOMIC), str(MAX_ATOMIC + 1),
                                     " 1000", ""]),
                    st.integers(-10, 10**80), st.floats(), st.text(max_size=8), st.none(), st.booleans())
networks = st.one_of(st.sampled_from(["eip155:84532", "base-sepolia", "Base-Sepolia", "eip155:1", "solana:devnet", ""]),
                     st.text(max_size=10), st.integers(), st.none())
extras = st.one_of(st.none(), st.just({"name": "USDC", "version": "2"}), st.dictionaries(st.text(max_size=6), json_values,
                   max_size=3), st.text(max_size=6), st.integers(), st.lists(st.integers(), max_size=2))
entries = st.one_of(
    st.fixed_dictionaries({"scheme": st.sampled_from(["exact", "upto", "", None]), "network": networks,
                           "asset": addresses, "payTo": addresses, "amount": amounts},
                          optional={"extra": extras, "maxTimeoutSeconds": st.one_of(st.integers(-10, 10**20),
                                                                                      st.floats(), st.text(max_size=4)),
                                    "maxAmountRequired": amounts}),
    json_values)
offers = st.one_of(
    st.fixed_dictionaries({"accepts": st.one_of(st.lists(entries, max_size=3), json_values)},
                          optional={"x402Version": st.one_of(st.integers(-5, 10**40), st.floats(), st.text(max_size=3),
                                                             st.none()),
                                    "extensions": json_values, "resource": json_values, "error": json_values}),
    json_values)


def oracle_payable(entry: dict) -> bool:
    """Whether an accepts[] entry may be signed for, decided without the skill's own address code."""
    def evm_address(value) -> bool:
        if not (isinstance(value, str) and is_hex_address(value) and value.startswith("0x")):
            return False
        digits = value[2:]
        return digits in (digits.lower(), digits.upper()) or is_checksum_address(value)
    amount = str(entry.get("amount", entry.get("maxAmountRequired")))
    return (chain_or_none(str(entry["network"])) is not None
            and str(entry.get("scheme") or "exact") == "exact"
            and amount.isascii() and amount.isdigit() and 0 < int(amount) <= MAX_ATOMIC
            and (entry.get("extra") is None or isinstance(entry.get("extra"), dict))
            and evm_address(entry["payTo"]) and evm_address(entry["asset"]))


def distinct_payments(accepts: list) -> list:
    """The entries a reader lists as options: one equal to an earlier one but for its spelling of the
    same known chain (`eip155:84532` / `base-sepolia`, the Obol seller's alias copies) is the same payment."""
    seen, out = set(), []
    for entry in accepts:
        chain = chain_or_none(str(entry["network"]))
        key = (chain, json.dumps({k: v for k, v in entry.items() if k != "network"}, sort_keys=True))
        if chain is not None and key in seen:
            continue
        seen.add(key)
        out.append(entry)
    return out


def check_offer(parsed, doc) -> None:
    accepts = distinct_payments(doc["accepts"])
    assert len(parsed.accepts) == len(accepts)
    for option, entry in zip(parsed.accepts, accepts):
        assert option.payable == oracle_payable(entry), (entry, option.defect)
        if option.payable:
            assert isinstance(option.extra, dict) and 0 < option.amount <= MAX_ATOMIC


TWICE = {"scheme": "exact", "network": "eip155:84532", "asset": USDC, "payTo": PAY_TO, "amount": "1000"}


@FUZZ
@given(doc=offers, raw=st.one_of(st.none(), st.binary(max_size=64)))
@example(doc={"accepts": [TWICE, {**TWICE, "network": "base-sepolia"}, TWICE, {**TWICE, "amount": "7"}]}, raw=None)
def test_402_body_parser(doc, raw):
    body = raw if raw is not None else json.dumps(doc).encode()
    try:
        parsed = parse_payment_required(402, {}, body)
    except SellerError:
        return
    check_offer(parsed, json.loads(body))


@FUZZ
@given(doc=offers, mangle=st.sampled_from(["none", "urlsafe", "unpadded", "garbage", "spaces"]))
def test_402_header_parser(doc, mangle):
    text = json.dumps(doc)
    value = {"none": base64.b64encode(text.encode()).decode(),
             "urlsafe": base64.urlsafe_b64encode(text.encode()).decode(),
             "unpadded": base64.b64encode(text.encode()).decode().rstrip("="),
             "garbage": text, "spaces": " " + base64.b64encode(text.encode()).decode() + " "}[mangle]
    try:
        parsed = parse_payment_required(402, {"PAYMENT-REQUIRED": value}, b"{}")
    except SellerError:
        return
    check_offer(parsed, json.loads(text))


@FUZZ
@given(accepts=st.lists(entries, min_size=1, max_size=4), index=st.one_of(st.none(), st.integers(-2, 6)),
       token=st.one_of(st.none(), st.sampled_from(["USDC", "usdc", USDC, "OBOL", ""])),
       network=st.one_of(st.none(), st.sampled_from(["base-sepolia", "eip155:84532", "mainnet", "nowhere"])))
def test_the_choice_never_picks_a_refused_option(accepts, index, token, network):
    try:
        parsed = parse_payment_required(402, {}, json.dumps({"accepts": accepts}).encode())
    except SellerError:
        return
    try:
        choice = choose_option(parsed.accepts, index=index, token=token, network=network,
                               balance_of=lambda option: 10**9)
    except PaymentChoiceError:
        return
    assert choice.option.payable


@FUZZ
@given(text=st.one_of(st.text(max_size=30), st.from_regex(r"\$?\s*[0-9]{0,90}(\.[0-9]{0,30})?\s*[A-Za-z]{0,5}",
                                                           fullmatch=True)),
       decimals=st.sampled_from([None, 0, 6, 18]), symbol=st.sampled_from([None, "USDC", "OBOL"]))
def test_amount_parsing(text, decimals, symbol):
    try:
        check_money_syntax(text)
        syntax_ok = True
    except UsageError:
        syntax_ok = False
    try:
        value = parse_money(text, decimals=decimals, symbol=symbol)
    except (UsageError, PaymentChoiceError):
        return
    assert syntax_ok  # the command line's early check never lets through what the parser refuses as syntax
    assert isinstance(value, int) and 1 <= value <= MAX_ATOMIC


@FUZZ
@given(url=st.one_of(st.text(max_size=60),
                     st.from_regex(r"(https?|ftp)://([a-z]{0,4}(:[a-z]{0,4})?@)?(\[[0-9a-f:]{0,6}\]?|[a-z0-9.]{0,12})"
                                   r"(:[0-9]{0,6})?(/[a-z0-9/ ._%-]{0,30})?(\?[a-z=&]{0,8})?", fullmatch=True)))
def test_seller_urls_and_endpoint_normalisation(url):
    try:
        checked = seller_url(url, "--endpoint")
    except UsageError as err:
        assert "@" not in err.message or "****" in err.message or not has_credentials(url)
        return
    assert not has_credentials(checked)
    base = normalize_endpoint(checked)
    assert chat_url(base).endswith("/v1/chat/completions")
    assert not has_credentials(base)


yaml_texts = st.one_of(
    st.binary(max_size=80),
    st.text(max_size=120),
    json_values.map(lambda v: json.dumps({"model": v, "terminal": {"backend": "local"}})),
    st.sampled_from(["model: &a [*a]", "a: &a [x]\nb: [*a, *a]\nmodel: {default: x}", "model: !!python/object:os.system x",
                     "model: {default: 1e5}", "model: .nan", "? [a, b]\n: c", "model: {default: x}\n---\nother: 1",
                     "\ufeffmodel: {default: x}"]))


@FUZZ
@given(text=yaml_texts)
def test_hermes_config_preflight(text):
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "hermes"
        home.mkdir()
        (home / "config.yaml").write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "replace"))
        rt = HermesRuntime(Settings(agent_home=str(home), home=tmp, agent_cli=None))
        config = rt.resolve()
        try:
            snapshot = rt.preflight(config)
        except AgentConfigError:
            return
        assert isinstance(snapshot.data, dict) and isinstance(snapshot.data["model"], (dict, str))
        rt.current_default(snapshot)
        rt.model_endpoint(snapshot)


entry_values = st.one_of(st.fixed_dictionaries({"adopted": st.one_of(st.text(max_size=6), json_values),
                                                "previous": st.one_of(st.none(), st.text(max_size=6), json_values),
                                                "purchase": st.one_of(st.none(), st.text(max_size=6), json_values),
                                                "at": st.one_of(st.none(), st.text(max_size=6)),
                                                "status": st.sampled_from(["pending", "applied", "other", None])}),
                         json_values)
states = st.one_of(st.binary(max_size=40), json_values.map(json.dumps),
                   st.fixed_dictionaries({"version": st.sampled_from([1, 2, "1"]),
                                          "history": st.one_of(st.lists(entry_values, max_size=70), json_values)},
                                         optional={"events": st.one_of(st.lists(json_values, max_size=3),
                                                                       json_values)}).map(json.dumps))


@FUZZ
@given(state=states, current=st.sampled_from([None, "qwen", "paid/a", ""]))
def test_state_record(state, current):
    with tempfile.TemporaryDirectory() as tmp:
        record = AdoptionRecord(Path(tmp) / "buy-x402")
        record.directory.mkdir()
        record.path.write_bytes(state if isinstance(state, bytes) else state.encode())
        try:
            last = record.last(current)
        except AgentConfigError:
            last = "refused"
        try:
            entry = record.record_pending(adopted="paid/new", previous=current, purchase="p", at="t")
        except AgentConfigError:
            assert last == "refused"  # writers refuse only what readers refuse too
            return
        written = json.loads(record.path.read_text())
        assert written["version"] == 1 and len(written["history"]) <= MAX_HISTORY
        assert written["history"][-1] == entry
        assert record.last("paid/new")["adopted"] == "paid/new"
        record.drop(entry)
        assert entry not in json.loads(record.path.read_text())["history"]


@FUZZ
@given(flag=st.sampled_from(["--timeout", "--count", "--refill-threshold", "--refill-count", "--payment-option",
                             "--auth-ttl", "--budget", "--cost-cap"]),
       value=st.one_of(st.text(max_size=20), st.floats().map(repr), st.integers().map(str)))
def test_numbers_from_the_command_line(flag, value):
    try:
        args = cli.build_parser().parse_args(["buy", "n", "--endpoint", "http://s/services/x", "--model", "m",
                                              f"{flag}={value}"])
    except BuyError as err:
        assert err.exit_code == 2
        return
    if flag == "--timeout":
        assert 0 < args.timeout <= 86400


# --- the pay pipeline: nothing is signed on a rejected offer -------------------------------------------

class _Seller(BaseHTTPRequestHandler):
    """Answers with the current generated 402; a paid request is refused (nothing ever settles)."""
    offer: bytes = b"{}"

    def _answer(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        paid = self.headers.get("PAYMENT-SIGNATURE") or self.headers.get("X-PAYMENT")
        body = b'{"error": "this seller never settles"}' if paid else type(self).offer
        self.send_response(402)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args):
        pass


class _SignerProxy(BaseHTTPRequestHandler):
    """Forwards to the devstack's remote signer and counts signature requests."""
    upstream = ""
    signed = 0

    def _forward(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.command == "POST" and "/sign/" in self.path:
            type(self).signed += 1
        resp = requests.request(self.command, type(self).upstream + self.path, data=body or None,
                                headers={"Content-Type": self.headers.get("Content-Type", "application/json")},
                                timeout=30)
        self.send_response(resp.status_code)
        self.send_header("Content-Type", resp.headers.get("Content-Type", "application/json"))
        self.send_header("Content-Length", str(len(resp.content)))
        self.end_headers()
        self.wfile.write(resp.content)

    do_GET = do_POST = _forward

    def log_message(self, *args):
        pass


@pytest.fixture()
def fuzz_peers(stack):
    servers = []
    for handler in (_Seller, _SignerProxy):
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    _SignerProxy.upstream = stack.env["REMOTE_SIGNER_URL"]
    yield [f"http://127.0.0.1:{s.server_address[1]}" for s in servers]
    for server in servers:
        server.shutdown()


single_offers = st.fixed_dictionaries({
    "x402Version": st.just(1),
    "accepts": st.lists(st.fixed_dictionaries({
        "scheme": st.sampled_from(["exact", "exact", "upto"]),
        "network": st.sampled_from(["base-sepolia", "base-sepolia", "eip155:84532", "solana:devnet"]),
        "asset": st.sampled_from([USDC, USDC, USDC.lower(), USDC[:-1] + "E", "0x" + "ab" * 20]),
        "payTo": st.sampled_from([PAY_TO, PAY_TO.lower(), BAD_CHECKSUM, "not-an-address"]),
        "maxAmountRequired": st.sampled_from(["1000", "1000", "0", "1e3", "١٠٠٠"]),
        "resource": st.just("http://seller/x"),
        "extra": st.sampled_from([{"name": "USDC", "version": "2"}, {"name": "USDC", "version": "2"}, "USDC", None, 7])}),
        min_size=1, max_size=1)})


VALID = {"x402Version": 1, "accepts": [{"scheme": "exact", "network": "base-sepolia", "asset": USDC, "payTo": PAY_TO,
                                       "maxAmountRequired": "1000", "resource": "http://seller/x",
                                       "extra": {"name": "USDC", "version": "2"}}]}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(offer=single_offers)
@example(offer=VALID)  # the accepted path is always exercised: the proxy does see a signature then
@example(offer={**VALID, "accepts": [{**VALID["accepts"][0], "payTo": BAD_CHECKSUM}]})
@example(offer={**VALID, "accepts": [{**VALID["accepts"][0], "extra": "USDC"}]})
def test_nothing_is_signed_for_a_rejected_offer(stack, fuzz_peers, tmp_path, offer):
    seller, signer = fuzz_peers
    _Seller.offer = json.dumps(offer).encode()
    _SignerProxy.signed = 0
    env = {**stack.env, "PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "REMOTE_SIGNER_URL": signer}
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(["pay", seller + "/paid", "--json"], stdout=out, stderr=err, environ=env)
    assert "Traceback" not in err.getvalue()
    doc = json.loads(out.getvalue())
    entry = offer["accepts"][0]
    if oracle_payable(entry) and entry["asset"].lower() == USDC.lower():  # the only token the wallet holds
        # Signed once, sent once, refused by this seller: the failure says the voucher may be spent.
        assert _SignerProxy.signed == 1 and code == 1 and doc["error"]["code"] == "payment_failed", doc
    else:
        assert _SignerProxy.signed == 0, doc
        expected = ("seller", "payment_option") if not oracle_payable(entry) else ("chain", "wallet")
        assert code == 1 and doc["error"]["code"] in expected, doc
