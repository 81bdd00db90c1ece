"""The local chain: anvil as Base Sepolia (84532) with the USDC-like token at USDC's real address.

The token's runtime code (devstack/contracts/TestUSDC.json, compiled once and committed) is placed
with anvil_setCode, so nothing compiles at start-up; so is the canonical Permit2 (Permit2.runtime.hex),
which every real chain has at its canonical address. The agent is funded by the token's open mint.
anvil serves JSON-RPC only on `/`, so an eRPC-like router (devstack/sim/erpc.py) gives buy.py the
`POST <ERPC_URL>/base-sepolia` shape it uses in a pod.
"""
from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

from eth_account import Account
from eth_utils import keccak

from .. import config
from ..stack import Stack

IDLE_BLOCK_SECONDS = 5
ARTIFACT = Path(__file__).resolve().parent.parent / "contracts" / "TestUSDC.json"
PERMIT2_CODE = Path(__file__).resolve().parent.parent / "contracts" / "Permit2.runtime.hex"
PERMIT2_ADDRESS = "0x000000000022D473030F116dDEE9F6B43aC78BA3"


def rpc(url: str, method: str, params: list | None = None, timeout: float = 10.0):
    """One JSON-RPC call; a JSON-RPC error raises RuntimeError with its message."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        answer = json.loads(resp.read())
    if answer.get("error"):
        raise RuntimeError(f"{method}: {answer['error']}")
    return answer["result"]


def address_of(key: str) -> str:
    return Account.from_key(key).address


def calldata(signature: str, *words: int | str) -> str:
    """ABI-encode a call whose arguments are all static 32-byte words (addresses, uints)."""
    out = "0x" + keccak(text=signature)[:4].hex()
    for word in words:
        value = int(word, 16) if isinstance(word, str) else word
        out += f"{value:064x}"
    return out


def token_balance(url: str, token: str, owner: str) -> int:
    return int(rpc(url, "eth_call", [{"to": token, "data": calldata("balanceOf(address)", owner)}, "latest"]), 16)


def place_token(url: str, address: str) -> None:
    """Put the token's runtime code at `address` (its domain separator follows the address)."""
    runtime = json.loads(ARTIFACT.read_text())["deployedBytecode"]
    rpc(url, "anvil_setCode", [address, runtime])


def place_permit2(url: str) -> None:
    """Put the canonical Permit2 code at its canonical address, where every real chain has it
    (devstack/contracts/Permit2.md says where the code comes from)."""
    rpc(url, "anvil_setCode", [PERMIT2_ADDRESS, "0x" + PERMIT2_CODE.read_text().strip()])


def mint(url: str, token: str, to: str, amount: int) -> None:
    """Mint from the facilitator account (unlocked on anvil) and fail if the receipt says so."""
    tx = rpc(url, "eth_sendTransaction", [{"from": address_of(config.FACILITATOR_KEY), "to": token,
                                           "data": calldata("mint(address,uint256)", to, amount)}])
    receipt = wait_receipt(url, tx)
    if int(receipt["status"], 16) != 1:
        raise RuntimeError(f"mint to {to} failed: {receipt}")


def wait_receipt(url: str, tx: str, timeout: float = 10.0) -> dict:
    """The receipt of `tx`; anvil may answer eth_sendTransaction before the block is mined."""
    deadline = time.monotonic() + timeout
    while True:
        receipt = rpc(url, "eth_getTransactionReceipt", [tx])
        if receipt is not None:
            return receipt
        if time.monotonic() > deadline:
            raise RuntimeError(f"no receipt for {tx} after {timeout:g}s")
        time.sleep(0.02)


def up(stack: Stack) -> None:
    anvil_port, erpc_port = stack.free_port(), stack.free_port()
    anvil_url = f"http://127.0.0.1:{anvil_port}"
    stack.spawn("anvil", [str(stack.deps / "node" / "node_modules" / ".bin" / "anvil"),
                          "--host", "127.0.0.1", "--port", str(anvil_port),
                          "--chain-id", str(config.CHAIN_ID),
                          # Transactions still mine at once; an idle chain also mines every few
                          # seconds so simulations at "latest" see a current block.timestamp.
                          "--mixed-mining", "--block-time", str(IDLE_BLOCK_SECONDS)])
    stack.wait_until("anvil", lambda: int(rpc(anvil_url, "eth_chainId", timeout=2), 16) == config.CHAIN_ID,
                     timeout=30, interval=0.05)

    place_token(anvil_url, config.USDC_ADDRESS)
    place_permit2(anvil_url)
    agent = address_of(config.AGENT_KEY)
    mint(anvil_url, config.USDC_ADDRESS, agent, config.AGENT_FUNDING_ATOMIC)
    # On a fresh anvil eth_call at "latest" sees block.timestamp 1; a freshly mined block fixes that.
    rpc(anvil_url, "evm_mine")

    erpc_base = f"http://127.0.0.1:{erpc_port}/rpc"
    stack.spawn("erpc", [stack.python, "-m", "devstack.sim.erpc", "--port", str(erpc_port),
                         "--upstream", anvil_url, "--chain", f"{config.CHAIN_NAME}={config.CHAIN_ID}"],
                cwd=stack.repo)
    stack.wait_until("erpc", lambda: int(rpc(f"{erpc_base}/{config.CHAIN_NAME}", "eth_chainId", timeout=2),
                                         16) == config.CHAIN_ID, timeout=30)

    stack.env.update(ERPC_URL=erpc_base, ERPC_NETWORK=config.CHAIN_NAME, ANVIL_RPC_URL=anvil_url,
                     USDC_ADDRESS=config.USDC_ADDRESS)
    stack.info["chain"] = {
        "rpc": anvil_url,
        "chain_id": config.CHAIN_ID,
        "usdc": config.USDC_ADDRESS,
        "agent_address": agent,
        "pay_to": address_of(config.SELLER_KEY),
        "erpc": erpc_base,
    }
