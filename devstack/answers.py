"""What a seller's model answers once paid: one canned chat completion, plain or as OpenAI SSE.

Shared by the Obol-shaped seller (devstack/sim/seller.py) and the foreign reference-SDK seller
(devstack/foreign_seller.py), so a test can tell from the text which model a paid call reached.
"""
from __future__ import annotations

import json
import time
import uuid
from typing import Iterator


def paid_text(model: str) -> str:
    return f"paid answer from {model} via x402"


def completion(model: str, request_body: dict) -> dict:
    content = paid_text(model)
    messages = request_body.get("messages") if isinstance(request_body.get("messages"), list) else []
    prompt = " ".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))
    prompt_tokens, completion_tokens = max(1, len(prompt.split())), len(content.split())
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion", "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


def sse_events(answer: dict) -> Iterator[str]:
    """The completion as OpenAI SSE chunks: role, content, finish, then [DONE]."""
    base = {"id": answer["id"], "object": "chat.completion.chunk", "created": answer["created"],
            "model": answer["model"]}
    deltas = [({"role": "assistant"}, None), ({"content": answer["choices"][0]["message"]["content"]}, None),
              ({}, "stop")]
    for delta, finish in deltas:
        chunk = dict(base, choices=[{"index": 0, "delta": delta, "finish_reason": finish}])
        yield f"data: {json.dumps(chunk)}\n\n"
    yield "data: [DONE]\n\n"
