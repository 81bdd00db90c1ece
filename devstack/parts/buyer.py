"""The x402-buyer (simulated, devstack/sim/buyer.py): the runtime proxy LiteLLM routes paid/<m> to.

Its config and auths directories stand in for the ConfigMaps `llm/x402-buyer-config` and
`llm/x402-buyer-auths` that the controller writes; the state file for its PVC `consumed.json`.
"""
from __future__ import annotations

from ..stack import Stack


def up(stack: Stack) -> None:
    root = stack.dir / "buyer"
    config_dir, auths_dir, state = root / "config", root / "auths", root / "state" / "consumed.json"
    for d in (config_dir, auths_dir, state.parent):
        d.mkdir(parents=True, exist_ok=True)
    port = stack.free_port()
    url = f"http://127.0.0.1:{port}"
    stack.spawn("buyer", [stack.python, "-m", "devstack.sim.buyer", "--port", str(port),
                          "--config-dir", str(config_dir), "--auths-dir", str(auths_dir), "--state", str(state)],
                cwd=stack.repo)
    stack.wait_http("buyer", f"{url}/healthz", timeout=30, ok=lambda status: status == 200)
    stack.env["X402_BUYER_URL"] = url
    stack.info["buyer"] = {"url": url, "config_dir": str(config_dir), "auths_dir": str(auths_dir),
                           "state": str(state)}
