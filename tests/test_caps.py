"""Unit tests of the spend caps (buy_x402.caps), the signing record (buy_x402.ledger), the caps in the
auto-refill policy, and the vouchers' signing date: pure logic and local files, no stack needed."""
from __future__ import annotations

import json
import os
import stat
import time

import pytest

from buy_x402 import caps, purchases, refill, schemes
from buy_x402.caps import Caps, History, Signing
from buy_x402.errors import AgentConfigError, ExitCode, PurchaseError, UsageError
from buy_x402.ledger import SigningLedger

NOW = 1_800_000_000
DAY = caps.WINDOW_S
PRICE = 1000


def fmt(atomic: int) -> str:
    return f"{atomic} atomic"


def signing(sid: str, ago: int, count: int = 2, price: int = PRICE) -> Signing:
    return Signing(id=sid, at=NOW - ago, count=count, atomic=count * price, by="test")


def history(*signings: Signing, extra_count: int = 0, extra_atomic: int = 0) -> History:
    return History(sum(s.count for s in signings) + extra_count, sum(s.atomic for s in signings) + extra_atomic,
                   tuple(signings))


def use(**kw) -> caps.Usage:
    args = dict(record=None, annotation=None, vouchers=[], dropped_spent=0, price=PRICE, now=NOW)
    args.update(kw)
    return caps.usage(**args)


# --------------------------------------------------------------------------------- usage, sources

def test_the_window_holds_only_the_last_24_hours_and_the_total_everything():
    record = history(signing("a", DAY + 60), signing("b", 3600), signing("c", 60), extra_count=10, extra_atomic=10_000)
    found = use(record=record)
    assert (found.total, found.day, found.source) == (16_000, 4000, "record")
    assert found.frees_at == NOW - 3600 + DAY  # when "b" leaves the window


def test_record_and_annotation_are_merged_by_signing_id_and_the_record_time_wins():
    moved = signing("a", DAY + 10)                       # the record says: older than a day
    annotation = history(signing("a", 100), signing("x", 50))  # "x" was signed where this record was not kept
    found = use(record=history(moved), annotation=annotation)
    assert found.day == 2000 and {s.id for s in found.window} == {"x"}
    assert found.total == 4000 and found.source == "record+annotation"


def test_a_lost_record_does_not_reset_the_window_the_annotation_keeps_it():
    annotation = history(signing("a", 7200), signing("b", 60))
    found = use(record=None, annotation=annotation)
    assert (found.day, found.total, found.source) == (4000, 4000, "annotation")


def test_without_any_history_the_vouchers_date_themselves():
    vouchers = [(1000, NOW - 60), (1000, NOW - 60), (1000, NOW - DAY - 5), (1000, None)]
    found = use(vouchers=vouchers, dropped_spent=3)
    assert found.source == "vouchers" and found.day == 2000
    # Total: the spec's vouchers plus the spent ones a top-up dropped, at today's price.
    assert found.total == 4000 + 3 * PRICE


def test_the_buyers_spent_count_only_fills_in_without_history():
    record = history(signing("a", 60))
    assert use(record=record, vouchers=[(1000, NOW - 60)] * 2, dropped_spent=50).total == 2000


def test_the_total_is_never_below_the_vouchers_in_the_spec():
    found = use(annotation=history(signing("a", 60, count=1)), vouchers=[(1000, None)] * 3)
    assert found.total == 3000


def test_exclude_leaves_one_signing_out_of_every_source():
    own = signing("own", 5)
    found = use(record=history(signing("a", 60), own), annotation=history(signing("a", 60)), exclude="own")
    assert (found.day, found.total) == (2000, 2000)


def test_voucher_signings_are_read_from_validAfter_of_both_schemes():
    signed_at = NOW - 1000
    after = schemes.valid_after_for(signed_at)
    assert after == signed_at - schemes.SIGNING_MARGIN_S
    eip = {"payment": {"accepted": {"amount": "1500"},
                       "payload": {"authorization": {"validAfter": str(after), "value": "1500"}}}}
    permit = {"payment": {"payload": {"permit2Authorization": {"permitted": {"amount": "7"},
                                                               "witness": {"validAfter": str(after)}}}}}
    undated = {"payment": {"payload": {"authorization": {"validAfter": "0", "value": "5"}}}}
    assert purchases.voucher_facts([eip, permit, undated]) == [(1500, signed_at), (7, signed_at), (5, None)]


# ------------------------------------------------------------------------------------------- fit

@pytest.mark.parametrize("limits, record, wanted, count, words", [
    (Caps(), history(signing("a", 60)), 5, 5, None),
    (Caps(max_total=8000), history(signing("a", 60, 3)), 2, 2, None),
    (Caps(max_total=8000), history(signing("a", 60, 6)), 5, 2, "maxTotal 8000 atomic nearly reached: 6000 atomic"),
    (Caps(max_total=8000), history(signing("a", 60, 8)), 2, 0, "maxTotal 8000 atomic reached: 8000 atomic signed"),
    (Caps(max_total=8500), history(signing("a", 60, 8)), 2, 0, "maxTotal 8500 atomic reached"),  # 500 < one price
    (Caps(max_per_day=4000), history(signing("a", 60, 4)), 2, 0,
     "maxSpendPerDay 4000 atomic reached: 4000 atomic signed in the last 24 h; more from"),
    (Caps(max_per_day=4000), history(signing("a", DAY + 1, 4)), 2, 2, None),
    (Caps(max_total=100_000, max_per_day=3000), history(signing("a", 60, 2)), 5, 1, "maxSpendPerDay 3000 atomic nearly"),
])
def test_fit_signs_only_what_fits_under_both_caps(limits, record, wanted, count, words):
    found = caps.fit(limits, use(record=record), PRICE, wanted, fmt)
    assert found.count == count
    if words is None:
        assert found.reason is None
    else:
        assert words in found.reason


# -------------------------------------------------------------------------------- stored caps, flags

def test_caps_of_a_stored_policy_and_back():
    found = Caps.of({"enabled": True, "maxTotal": 8000, "maxSpendPerDay": "4000"})
    assert found == Caps(8000, 4000) and found.any
    assert found.policy_fields() == {"maxTotal": 8000, "maxSpendPerDay": "4000"}
    assert Caps.of(None) == Caps() and not Caps.of({"enabled": True}).any


@pytest.mark.parametrize("policy", [{"maxTotal": -5}, {"maxSpendPerDay": "abc"}, {"maxSpendPerDay": "0"},
                                    {"maxTotal": True}, {"maxTotal": 1.5}])
def test_a_broken_stored_cap_is_an_error_not_no_cap(policy):
    with pytest.raises(PurchaseError, match="its spend cap cannot be applied, so nothing was signed"):
        Caps.of(policy, "p")


@pytest.mark.parametrize("limits, first, words", [
    (Caps(max_total=999), None, "--max-total 999 atomic is less than one request's price 1000 atomic"),
    (Caps(max_per_day=10), None, "--max-spend-per-day 10 atomic is less than one request's price"),
    (Caps(max_total=2 ** 63), None, "more than spec.autoRefill.maxTotal can hold (9223372036854775807 atomic"),
    (Caps(max_total=2500), 3, "--max-total 2500 atomic is less than the first batch of 3 vouchers (3000 atomic)"),
    (Caps(max_per_day=2000), 3, "--max-spend-per-day 2000 atomic is less than the first batch"),
])
def test_check_flags_refuses_caps_that_cannot_work(limits, first, words):
    with pytest.raises(UsageError) as err:
        caps.check_flags(limits, price=PRICE, first_batch=first, fmt=fmt)
    assert words in err.value.message and err.value.exit_code == ExitCode.USAGE


def test_check_flags_accepts_a_first_batch_that_fits():
    caps.check_flags(Caps(max_total=3000, max_per_day=3000), price=PRICE, first_batch=3, fmt=fmt)


def resolve(**kw):
    args = dict(auto_refill=None, threshold=None, count=None, cost_cap=None, desired_count=2, existing=None)
    args.update(kw)
    return refill.resolve_auto_refill(**args)


def test_policy_stores_the_caps_as_the_crd_types_them_and_keeps_them_on_top_ups():
    policy = resolve(auto_refill=True, count=2, threshold=0, max_total=8000, max_spend_per_day=4000)
    assert policy == {"enabled": True, "threshold": 0, "count": 2, "maxTotal": 8000, "maxSpendPerDay": "4000"}
    assert resolve(existing=policy) == policy                                    # a top-up without flags
    assert resolve(existing=policy, count=5) == {**policy, "count": 5}           # other flags: caps kept
    assert resolve(existing=policy, max_total=9000) == {**policy, "maxTotal": 9000}  # changed
    # Switching auto-refill off keeps the caps: `refill NAME` can still top the purchase up.
    assert resolve(existing=policy, auto_refill=False) == {"enabled": False, "maxTotal": 8000,
                                                           "maxSpendPerDay": "4000"}


@pytest.mark.parametrize("kw, flag", [
    (dict(max_total=8000), "--max-total"),
    (dict(max_spend_per_day=8000, auto_refill=False), "--max-spend-per-day"),
    (dict(max_total=8000, existing={"enabled": False, "maxTotal": 5000}), "--max-total"),
])
def test_a_cap_without_auto_refill_is_a_usage_error(kw, flag):
    with pytest.raises(UsageError) as err:
        resolve(**kw)
    assert err.value.message == f"{flag} requires --auto-refill: it caps what auto-refill (and `refill`) may sign"


def test_a_cap_on_an_enabled_purchase_needs_no_flag_again():
    existing = {"enabled": True, "threshold": 1, "count": 2}
    assert resolve(existing=existing, max_spend_per_day=3000) == {**existing, "maxSpendPerDay": "3000"}


# ------------------------------------------------------------------------------------- annotation

def test_the_annotation_keeps_the_lifetime_total_and_one_day_of_signings():
    obj = {"metadata": {"name": "p"}}
    caps.annotate(obj, signing("a", DAY + 100))
    caps.annotate(obj, signing("b", 10))
    found = caps.annotation_of(obj)
    assert (found.count, found.atomic) == (4, 4000)
    assert [s.id for s in found.signings] == ["b"]  # "a" is older than a day before "b": the total keeps it
    raw = json.loads(obj["metadata"]["annotations"][caps.ANNOTATION])
    assert raw["signings"][0]["at"].endswith("Z") and raw["atomic"] == "4000"


def test_an_unreadable_annotation_is_an_error():
    obj = {"metadata": {"name": "p", "annotations": {caps.ANNOTATION: "{not json"}}}
    with pytest.raises(PurchaseError, match="annotation buy-x402.obol.org/signed is unreadable"):
        caps.annotation_of(obj)
    assert caps.annotation_of({"metadata": {"name": "p"}}) is None


def test_build_and_topup_carry_the_signing_in_the_same_object():
    auth = {"id": "1", "payment": {"accepted": {"amount": "1000"}, "payload": {}}}
    payment = {"network": "base-sepolia", "payTo": "0xp", "asset": "0xa", "price": "1000"}
    first = purchases.build_purchase("p", "ns", endpoint="http://s/x", model="m", payment=payment, auths=[auth],
                                     auto_refill=None, signing=signing("one", 0, count=1))
    assert caps.annotation_of(first).atomic == 1000
    second = purchases.topup_object(first, new_auths=[dict(auth, id="2")], live_remaining=1, payment=payment,
                                    auto_refill=None, signing=signing("two", 0, count=1))
    assert caps.annotation_of(second).atomic == 2000 and caps.annotation_of(first).atomic == 1000


# ----------------------------------------------------------------------------------------- ledger

def test_ledger_reserve_release_and_file_modes(tmp_path):
    ledger = SigningLedger(tmp_path / "buy-x402")
    assert ledger.history("ns", "p") is None
    ledger.reserve("ns", "p", signing("a", 60))
    ledger.reserve("ns", "p", signing("b", 30))
    assert ledger.history("ns", "p").atomic == 4000
    ledger.release("ns", "p", "b")
    assert ledger.history("ns", "p") == History(2, 2000, (signing("a", 60),))
    assert stat.S_IMODE(os.stat(ledger.path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(ledger.directory).st_mode) == 0o700
    assert ledger.history("other-ns", "p") is None


def test_ledger_check_sees_other_reservations_under_the_lock(tmp_path):
    ledger = SigningLedger(tmp_path)
    ledger.reserve("ns", "p", signing("a", 60))

    def refuse(current):
        assert current.atomic == 2000
        raise PurchaseError("no room")
    with pytest.raises(PurchaseError, match="no room"):
        ledger.reserve("ns", "p", signing("b", 0), check=refuse)
    assert ledger.history("ns", "p").atomic == 2000  # refused: nothing recorded


def test_a_new_purchase_of_the_same_name_starts_a_fresh_history(tmp_path):
    ledger = SigningLedger(tmp_path)
    ledger.reserve("ns", "p", signing("old", 60, count=5))
    ledger.reserve("ns", "p", signing("new", 0), new_purchase=True)
    assert ledger.history("ns", "p").atomic == 2000


def test_ledger_forgets_old_signings_but_not_their_totals(tmp_path):
    ledger = SigningLedger(tmp_path)
    ledger.reserve("ns", "p", Signing(id="ancient", at=int(time.time()) - 8 * DAY, count=3, atomic=3000))
    ledger.reserve("ns", "p", signing("now", 0))
    found = ledger.history("ns", "p")
    assert [s.id for s in found.signings] == ["now"] and found.atomic == 5000


@pytest.mark.parametrize("content", [b"{", b'{"version": 1}', b'{"version": 2, "purchases": {}}',
                                     b'{"version": 1, "purchases": {"ns/p": {"count": 1}}}'])
def test_a_corrupt_ledger_is_an_error_never_reset(tmp_path, content):
    ledger = SigningLedger(tmp_path)
    ledger.path.write_bytes(content)
    with pytest.raises(AgentConfigError, match="signing record is corrupt") as err:
        ledger.reserve("ns", "p", signing("a", 0))
    assert err.value.code == "signings_corrupt"
    assert ledger.path.read_bytes() == content


# ------------------------------------------------------------------- racing runs (spending.py)

def capped_purchase(*signings: Signing) -> dict:
    obj = {"metadata": {"name": "p", "namespace": "ns"}, "spec": {"preSignedAuths": []}}
    for one in signings:
        caps.annotate(obj, one)
    return obj


def test_of_two_runs_racing_on_one_purchase_the_second_finds_no_room(tmp_path):
    from buy_x402 import spending
    ledger = SigningLedger(tmp_path)
    obj = capped_purchase(Signing("buy", int(time.time()) - 60, 2, 2000))
    limits = Caps(max_total=4000)
    first, second = (caps.new_signing(2, PRICE, by="process") for _ in range(2))
    spending.reserve(ledger, obj, None, first, limits=limits, price=PRICE, fmt=fmt, namespace="ns")
    with pytest.raises(PurchaseError, match="another signing was recorded meanwhile .* room for 0 voucher"):
        spending.reserve(ledger, obj, None, second, limits=limits, price=PRICE, fmt=fmt, namespace="ns")
    assert [s.id for s in ledger.history("ns", "p").signings] == [first.id]


def test_after_a_conflict_a_batch_that_no_longer_fits_is_not_written(tmp_path):
    from buy_x402 import spending
    ledger = SigningLedger(tmp_path)
    now = int(time.time())
    mine = caps.new_signing(2, PRICE, by="refill", now=now)
    ledger.reserve("ns", "p", mine)
    recheck = spending.conflict_recheck(ledger, mine, limits=Caps(max_per_day=4000), price=PRICE, fmt=fmt,
                                        namespace="ns")
    recheck(capped_purchase(Signing("buy", now - 60, 2, 2000)), None)  # still fits: mine is not counted twice
    elsewhere = capped_purchase(Signing("buy", now - 60, 2, 2000), Signing("other-host", now - 5, 2, 2000))
    with pytest.raises(PurchaseError, match="topped up by another run meanwhile .* vouchers just signed were discarded"):
        recheck(elsewhere, None)


def test_the_total_counts_signings_only_one_source_holds_once():
    buy_batch, lost_era, pending = signing("buy", 3 * DAY), signing("while-lost", 60), signing("pending", 5)
    # The record was lost after the first batch (rebuilt since), the annotation has not seen `pending` yet.
    record = history(pending)
    annotation = History(4, 4000, (lost_era,))  # its total keeps `buy`, its list only the last day
    assert use(record=record, annotation=annotation).total == 6000
    # A record signing older than what the annotation keeps is in the annotation's total already.
    record = history(buy_batch, lost_era, pending)
    assert use(record=record, annotation=annotation).total == 6000
