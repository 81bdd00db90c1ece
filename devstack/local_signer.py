"""The devstack signer's key signing in the calling process: the signer simulation's own code, no HTTP.

For set-up that needs many vouchers quickly (bench/scale.py, the concurrency tests): a `SignerClient`
whose every signature is what `devstack.sim.signer` would answer over HTTP.
"""
from __future__ import annotations

import json

from eth_account import Account

from buy_x402.signer import SignerClient
from devstack import config
from devstack.sim.signer import sign_request


class InProcessSigner(SignerClient):
    def __init__(self) -> None:
        super().__init__(None, "")
        self.account = Account.from_key(config.AGENT_KEY)

    def sign_typed_data(self, address: str, typed: dict) -> str:
        status, answer = sign_request(self.account, "typed-data", json.dumps(typed).encode())
        assert status == 200, answer
        return answer["signature"]
