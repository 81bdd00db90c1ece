"""The agent's remote signer (simulated, API-faithful) holding the agent's key.

The key goes to a 0600 file, not the command line, so it never shows in `ps`.
"""
from __future__ import annotations

import os

from eth_account import Account

from .. import config
from ..stack import Stack


def up(stack: Stack) -> None:
    key_file = stack.path("secrets", "agent.key")
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(config.AGENT_KEY + "\n")
    os.chmod(key_file, 0o600)

    port = stack.free_port()
    url = f"http://127.0.0.1:{port}"
    stack.spawn("signer", [stack.python, "-m", "devstack.sim.signer", "--port", str(port),
                           "--key-file", str(key_file)], cwd=stack.repo)
    stack.wait_http("signer", f"{url}/healthz", timeout=30, ok=lambda status: status == 200)
    stack.env["REMOTE_SIGNER_URL"] = url
    stack.info["signer"] = {"url": url, "address": Account.from_key(config.AGENT_KEY).address}
