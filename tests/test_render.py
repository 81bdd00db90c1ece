"""Human text: every renderer, fed the result data real runs produced (tests/data/render_samples.json,
captured from `--json` on the devstack by tests/data/capture_render_samples.py), reads as text a person
reads: no Python reprs (`{'`, `[{`, `None`, `<… object at …>`). The stack tests check the same on the
live output of remove, audit, buy and default (tests/test_remove_audit.py)."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from buy_x402 import render
from buy_x402.errors import ExitCode
from buy_x402.result import Result
from helpers import assert_no_reprs

SAMPLES = json.loads((Path(__file__).parent / "data" / "render_samples.json").read_text())
assert_readable = assert_no_reprs


def cases():
    for command, samples in sorted(SAMPLES.items()):
        for i, data in enumerate(samples):
            yield pytest.param(command, data, id=f"{command}-{i}")


@pytest.mark.parametrize("command, data", list(cases()))
def test_every_captured_result_renders_without_reprs(command, data):
    data = copy.deepcopy(data)
    code = ExitCode(data.pop("exit_code", 0))
    text = render.render_text(Result(command, data, code))
    assert_readable(text)
    # `process` is silent unless something changed (the cron job delivers stdout); a streamed answer
    # already went to stdout line by line.
    if code == ExitCode.OK and command != "process" and not data.get("streamed"):
        assert text.strip(), f"{command} printed nothing for a successful result"


def test_every_renderer_has_a_captured_sample():
    missing = sorted(set(render.RENDERERS) - set(SAMPLES))
    assert not missing, (f"renderers without a captured sample: {missing}; add the command to "
                         "tests/data/capture_render_samples.py and re-capture")


def test_the_remove_renderer_says_what_happened_in_each_case():
    gone = next(s for s in SAMPLES["remove"] if s.get("revoked"))
    text = render.render_text(Result("remove", gone))
    assert "the PurchaseRequest is gone" in text and "Cancelled on chain:" in text
    assert "No voucher of this purchase can be charged any more (checked on chain)." in text
    draining = dict(copy.deepcopy(gone), state="draining", gone=False)
    text = render.render_text(Result("remove", draining, ExitCode.NOT_READY))
    assert "is deleted but still draining" in text and "is gone" not in text
    forced = copy.deepcopy(gone)
    forced["default"] = {"checked": True, "was_default": True, "restored": False, "model": forced["alias"]}
    assert "which stops answering now" in render.render_text(Result("remove", forced))


def test_buy_and_default_read_as_a_summary():
    adopted = next(s for s in SAMPLES["buy"] if s.get("set_default"))
    text = render.render_text(Result("buy", adopted))
    assert text.startswith(f"Bought {adopted['alias']} as purchase {adopted['name']}: ")
    assert f"The agent now uses {adopted['alias']}" in text and "Roll back: buy.py default restore" in text
    topup = next(s for s in SAMPLES["buy"] if s.get("topup"))
    assert render.render_text(Result("buy", topup)).startswith(f"Topped up {topup['name']}")
    show = next(s for s in SAMPLES["default"] if s.get("adopted_by_buy_x402"))
    text = render.render_text(Result("default", show))
    assert f"The agent chats with {show['model']}." in text and "Roll back:" in text


def test_the_generic_fallback_never_prints_reprs():
    data = {"name": "x", "rows": [{"a": 1, "b": None}, {"a": [1, 2]}], "flag": True, "nested": {"k": None},
            "empty": []}
    text = render.render_text(Result("some-new-command", data))
    assert_readable(text)
    assert "flag: yes" in text and "empty: none" in text and "b: -" in text
