"""How `go` tells an agent offer from a chat offer from a plain HTTP one, and which model an offer names."""
from __future__ import annotations

import json

import pytest

from buy_x402.discover import advertised_model, classify
from buy_x402.x402 import parse_payment_required

ENTRY = {"scheme": "exact", "network": "eip155:84532", "asset": "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
         "amount": "1000", "payTo": "0x70997970C51812dc3A010C7d01b50e0d17dc79C8", "extra": {"name": "USDC"}}
CHAT_BAZAAR = {"bazaar": {"info": {"input": {"type": "http", "method": "POST", "bodyType": "json",
                                             "body": {"model": "qwen", "messages": [{"role": "user"}]}}}}}


def offer(extra: dict | None = None, extensions: dict | None = None):
    doc = {"x402Version": 2, "accepts": [dict(ENTRY, extra={**ENTRY["extra"], **(extra or {})})]}
    if extensions is not None:
        doc["extensions"] = extensions
    return parse_payment_required(402, {}, json.dumps(doc).encode())


@pytest.mark.parametrize("extra, extensions, chat_probe, kind, model", [
    ({"agentModel": "a1", "agentRuntime": "hermes"}, CHAT_BAZAAR, False, "agent", "a1"),
    ({"agentSkills": ["gas"]}, None, False, "agent", None),
    (None, CHAT_BAZAAR, False, "chat", "qwen"),
    (None, None, True, "chat", None),                      # found only by the chat-completions probe
    (None, {"bazaar": {"info": {"input": {"body": {}}}}}, False, "http", None),
    (None, None, False, "http", None),
    # Obol's bazaar example names a placeholder when the offer has no model: not a model.
    (None, {"bazaar": {"info": {"input": {"body": {"model": "your-model-id", "messages": []}}}}}, False, "chat", None),
])
def test_classify_and_advertised_model(extra, extensions, chat_probe, kind, model):
    parsed = offer(extra, extensions)
    assert classify(parsed, found_by_chat_probe=chat_probe) == kind
    assert advertised_model(parsed) == model
