"""The real LiteLLM proxy with an Obol-shaped config: the free model plus explicit `paid/<m>` routes.

Obol's own config has a `paid/*` wildcard; here every paid model is an explicit entry instead,
because LiteLLM expands the wildcard from its bundled OpenAI catalogue into ~210 phantom names.
Paid entries route to the x402-buyer, which strips `paid/`/`openai/` and pays the seller.
"""
from __future__ import annotations

import json
import urllib.request

import yaml

from .. import config
from ..stack import Stack


def paid_models(stack: Stack) -> list[str]:
    """Listed offers of the devstack config and of the running sellers, in order, without repeats."""
    offers = (list(config.OFFERS) + list(stack.info.get("seller", {}).get("offers", []))
              + list(stack.info.get("foreign", {}).get("offers", [])))
    names: list[str] = []
    for offer in offers:
        if offer.get("listed") and offer.get("model") and offer["model"] not in names:
            names.append(offer["model"])
    return names


def litellm_config(free_api_base: str, buyer_api_base: str, paid: list[str]) -> dict:
    model_list = [{"model_name": config.FREE_MODEL,
                   "litellm_params": {"model": f"openai/{config.FREE_MODEL}", "api_base": free_api_base,
                                      "api_key": "unused"}}]
    for name in paid:
        model_list.append({"model_name": f"paid/{name}",
                           "litellm_params": {"model": f"openai/paid/{name}", "api_base": buyer_api_base,
                                              "api_key": "unused"}})
    return {"model_list": model_list,
            "general_settings": {"master_key": config.LITELLM_MASTER_KEY},
            "litellm_settings": {"drop_params": True, "cache": False}}


def _models_ok(url: str) -> bool:
    request = urllib.request.Request(f"{url}/v1/models",
                                     headers={"Authorization": f"Bearer {config.LITELLM_MASTER_KEY}"})
    with urllib.request.urlopen(request, timeout=3) as response:
        return response.status == 200 and "data" in json.loads(response.read())


def up(stack: Stack) -> None:
    buyer = stack.info.get("buyer", {}).get("url")
    if not buyer:  # developing without the buyer part: paid calls fail with a connection error
        buyer = f"http://127.0.0.1:{stack.free_port()}"
    upstream = stack.info["upstream"]["url"]
    cfg = litellm_config(f"{upstream}/v1", f"{buyer.rstrip('/')}/v1", paid_models(stack))
    config_path = stack.path("litellm", "config.yaml")
    config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    config_path.chmod(0o600)

    port = stack.free_port()
    env = {
        # Bundled copies instead of fetches from GitHub (cost map, beta headers, blog, presets).
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS": "True",
        "LITELLM_LOCAL_BLOG_POSTS": "True",
        "LITELLM_LOCAL_POLICY_TEMPLATES": "True",
        "LITELLM_LOCAL_AUTOROUTER_PRESETS": "True",
        "LITELLM_TELEMETRY_DISABLED": "true",
        "LITELLM_LOG": "INFO",
        "NO_DOCS": "True",
        "DISABLE_ADMIN_UI": "True",
        "PYTHONUNBUFFERED": "1",
    }
    litellm_bin = str(stack.deps / "litellm" / "bin" / "litellm")
    stack.spawn("litellm", [litellm_bin, "--config", str(config_path), "--host", "127.0.0.1",
                            "--port", str(port)], env=env, cwd=stack.path("litellm"))
    url = f"http://127.0.0.1:{port}"
    stack.wait_until("litellm", lambda: _models_ok(url), timeout=90, interval=0.25)
    stack.info["litellm"] = {"url": url, "master_key": config.LITELLM_MASTER_KEY,
                             "config": str(config_path), "log": str(stack.logs / "litellm.log")}
    stack.env["LITELLM_URL"] = url
