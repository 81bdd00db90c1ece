"""The agent's free model: a tiny OpenAI-compatible server that answers canned text.

It stands in for the local Ollama model of an Obol stack, so a chat turn costs no GPU and is
deterministic. Every chat request is appended as one JSON line to the log file, so tests can count
the requests that reached the free model (and see which model name LiteLLM forwarded).

    python -m devstack.upstream --port P --log FILE
"""
from __future__ import annotations

import argparse
import json
import threading
import time
import uuid
from pathlib import Path
from .loopback import LoopbackHandler, make_server

try:
    from .config import FREE_MODEL
except ImportError:  # run as a plain script
    from devstack.config import FREE_MODEL  # type: ignore[no-redef]

_log_lock = threading.Lock()


def answer_text(model: str) -> str:
    return f"free answer from {model}"


def first_user_message(messages: object) -> str:
    """The first user message as text (content may be a string or a list of parts)."""
    for message in messages if isinstance(messages, list) else []:
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            return str(content)
    return ""


class Handler(LoopbackHandler):
    server_version = "devstack-upstream/1"
    log_path: Path

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        print(f"{self.address_string()} {format % args}", flush=True)

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        if self.path.rstrip("/") == "/v1/models":
            self.send_json(200, {"object": "list", "data": [
                {"id": FREE_MODEL, "object": "model", "created": 0, "owned_by": "devstack"}]})
        else:
            self.send_json(404, {"error": {"message": f"not found: {self.path}", "code": 404}})

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.path.rstrip("/") != "/v1/chat/completions":
            self.send_json(404, {"error": {"message": f"not found: {self.path}", "code": 404}})
            return
        try:
            body = json.loads(raw or b"{}")
            if not isinstance(body, dict):
                raise ValueError("body is not an object")
        except ValueError as exc:
            self.send_json(400, {"error": {"message": f"bad JSON: {exc}", "code": 400}})
            return
        model = str(body.get("model") or "")
        stream = bool(body.get("stream"))
        record = {"at": time.time(), "model": model, "user": first_user_message(body.get("messages")),
                  "stream": stream}
        with _log_lock, open(self.log_path, "a") as log:
            log.write(json.dumps(record) + "\n")
        if stream:
            self._stream(model)
        else:
            self.send_json(200, completion(model))

    def _stream(self, model: str) -> None:
        """SSE in the OpenAI shape: a role chunk, a content chunk, a finish chunk, [DONE]."""
        cid, created = f"chatcmpl-{uuid.uuid4().hex[:12]}", int(time.time())

        def chunk(delta: dict, finish: str | None) -> bytes:
            event = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                     "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            return f"data: {json.dumps(event)}\n\n".encode()

        payload = b"".join([
            chunk({"role": "assistant", "content": ""}, None),
            chunk({"content": answer_text(model)}, None),
            chunk({}, "stop"),
            b"data: [DONE]\n\n",
        ])
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def completion(model: str) -> dict:
    text = answer_text(model)
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion",
        "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": len(text.split()),
                  "total_tokens": 1 + len(text.split())},
    }


def serve(port: int, log_path: Path) -> None:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.touch()
    server = make_server(port, Handler, log_path=log_path)
    print(f"upstream serving {FREE_MODEL} on 127.0.0.1:{port}, log {log_path}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.upstream", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", required=True, help="JSON-lines file of chat requests")
    args = parser.parse_args(argv)
    serve(args.port, Path(args.log))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
