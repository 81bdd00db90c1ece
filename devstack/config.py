"""Fixed facts of the devstack every part agrees on (names, chain, accounts, offers)."""
from __future__ import annotations

AGENT_NAMESPACE = "hermes-obol-agent"
CHAIN_NAME = "base-sepolia"
CHAIN_ID = 84532
CAIP2 = f"eip155:{CHAIN_ID}"
# Base Sepolia USDC's address: the token's runtime code is placed here with anvil_setCode.
USDC_ADDRESS = "0x036CbD53842c5426634e7929541eC2318f3dCF7e"
USDC_DECIMALS = 6

# anvil's well-known dev accounts (public test keys, never used outside loopback).
ANVIL_KEYS = [
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",  # 0: facilitator (pays gas)
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",  # 1: the agent's wallet (remote signer)
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",  # 2: the seller's payTo
]
FACILITATOR_KEY, AGENT_KEY, SELLER_KEY = ANVIL_KEYS
AGENT_FUNDING_ATOMIC = 50_000_000  # 50 USDC

# The seller's offers: /services/<offer> sells one model each at `price` atomic USDC per request.
# `listed` False: LiteLLM has no paid/<model> entry for it (the "not selectable" case).
OFFERS = [
    {"offer": "qwen", "model": "qwen3.6-35b", "price": "1000", "listed": True},
    {"offer": "deepseek", "model": "deepseek-v4-pro", "price": "2000", "listed": True},
    {"offer": "llama", "model": "llama-4-scout", "price": "1000", "listed": True},
    {"offer": "mistral", "model": "mistral-large-3", "price": "1500", "listed": True},
    {"offer": "gemma", "model": "gemma-4-27b", "price": "1000", "listed": True},
    {"offer": "phi", "model": "phi-5", "price": "1000", "listed": True},
    {"offer": "kimi", "model": "kimi-k3", "price": "1000", "listed": True},
    {"offer": "glm", "model": "glm-5", "price": "1000", "listed": True},
    {"offer": "hidden", "model": "hidden-model", "price": "1000", "listed": False},
    # The spend-cap and `refill` tests (tests/test_caps.py) own these.
    {"offer": "olmo", "model": "olmo-3", "price": "1000", "listed": True},
    {"offer": "granite", "model": "granite-4", "price": "1000", "listed": True},
    {"offer": "nova", "model": "nova-3", "price": "1000", "listed": True},
    {"offer": "zephyr", "model": "zephyr-2", "price": "1000", "listed": True},
    # One model per lifecycle test (remove, revoke, audit): a purchase one test leaves behind cannot block another.
    {"offer": "aya", "model": "aya-32b", "price": "1000", "listed": True},
    {"offer": "dbrx", "model": "dbrx-2", "price": "2000", "listed": True},
    {"offer": "falcon", "model": "falcon-h2", "price": "1000", "listed": True},
    {"offer": "jamba", "model": "jamba-2", "price": "1000", "listed": True},
    {"offer": "nemo", "model": "nemo-3", "price": "1500", "listed": True},
]

# The agent's free model: LiteLLM routes it to a tiny local upstream that answers canned text.
FREE_MODEL = "qwen3.5:9b"
LITELLM_MASTER_KEY = "sk-obol-devstack"
