"""The serviceoffer-controller (simulated, devstack/sim/controller.py) reconciling PurchaseRequests.

It talks to the real API server with the devstack's token, handed over in a 0600 file (like a
service account's) rather than on the command line where `ps` would show it, and writes the buyer's
files; its
/healthz answers once its first list of PurchaseRequests succeeded, so a purchase created after
`up` returns is seen by the watch.
"""
from __future__ import annotations

from ..stack import Stack


def up(stack: Stack) -> None:
    kube, buyer = stack.info["kube"], stack.info["buyer"]
    port = stack.free_port()
    token_file = stack.path("kube", "controller-token")
    token_file.touch(mode=0o600)
    token_file.chmod(0o600)
    token_file.write_text(kube["token"])
    stack.spawn("controller", [
        stack.python, "-m", "devstack.sim.controller", "--server", kube["server"],
        "--token-file", str(token_file), "--ca", kube["ca"], "--namespace", kube["namespace"],
        "--buyer-url", buyer["url"], "--config-dir", buyer["config_dir"], "--auths-dir", buyer["auths_dir"],
        "--health-port", str(port),
    ], cwd=stack.repo)
    url = f"http://127.0.0.1:{port}"
    stack.wait_http("controller", f"{url}/healthz", timeout=30, ok=lambda status: status == 200)
    stack.info["controller"] = {"health_url": url}
