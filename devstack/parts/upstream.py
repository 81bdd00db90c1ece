"""The free model's upstream (devstack/upstream.py): what LiteLLM routes the free model to."""
from __future__ import annotations

from ..stack import Stack


def up(stack: Stack) -> None:
    port = stack.free_port()
    log = stack.path("upstream", "requests.jsonl")
    stack.spawn("upstream", [stack.python, "-m", "devstack.upstream", "--port", str(port),
                             "--log", str(log)], cwd=stack.repo)
    url = f"http://127.0.0.1:{port}"
    stack.wait_http("upstream", f"{url}/v1/models", timeout=20, ok=lambda status: status == 200)
    stack.info["upstream"] = {"url": url, "log": str(log)}
