"""The agent's LiteLLM, seen the way the agent sees it: is a model selectable, and does it answer?

Both checks run before the agent's default is switched (set-default steps 4 and 5). Any doubt is a
refusal: unlike the upstream skill, an unreachable or failing LiteLLM never counts as "probably fine".
The key is sent as a Bearer token and never appears in an error.
"""
from __future__ import annotations

import time
from typing import Any, Callable

import requests

from .errors import LiteLLMError, TransportError
from .http import send

DEFAULT_LIST_TIMEOUT_S = 10.0
CANARY_PROMPT = "Reply with OK."
_EXCERPT_CHARS = 200


class LiteLLMClient:
    """`base_url` is the config's `model.base_url` (it already ends in /v1)."""

    def __init__(self, session: requests.Session, base_url: str, api_key: str | None, *,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._session = session
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key or ""
        self._sleep = sleep

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    def _excerpt(self, text: str) -> str:
        text = " ".join(text.split())
        if self._api_key:
            text = text.replace(self._api_key, "****")
        return text[:_EXCERPT_CHARS] + ("…" if len(text) > _EXCERPT_CHARS else "")

    def _request(self, method: str, path: str, *, timeout: float, **kwargs: Any) -> requests.Response:
        url = f"{self.base_url}{path}"
        try:
            return send(self._session, method, url, peer="LiteLLM", timeout=timeout,
                        headers=self._headers(), **kwargs)
        except TransportError as exc:
            raise LiteLLMError(exc.message, hint="check model.base_url in the agent's config and that "
                               "LiteLLM is running", code="litellm_unreachable",
                               data={"url": url}) from exc

    def _http_error(self, response: requests.Response, what: str, *,
                    code_override: str | None = None) -> LiteLLMError:
        """`code_override` replaces the code the status implies (e.g. every failed canary is `canary_failed`)."""
        status = response.status_code
        if status == 402:
            hint = "the paid model could not pay the seller; check the purchase with `buy.py status NAME`"
            code = "litellm_payment"
        elif status in (401, 403):
            hint = "model.api_key in the agent's config is not accepted by LiteLLM"
            code = "litellm_auth"
        elif status >= 500:
            hint = "LiteLLM or the model behind it failed; check its logs and retry"
            code = "litellm_error"
        else:
            hint = "check the model name and LiteLLM's configuration"
            code = "litellm_error"
        body = self._excerpt(response.text or "")
        return LiteLLMError(f"LiteLLM {what} answered HTTP {status}" + (f": {body}" if body else ""),
                            hint=hint, code=code_override or code, data={"status": status, "url": response.url})

    def list_models(self) -> list[str]:
        """Model ids from GET /models. Raises LiteLLMError on any failure or unexpected shape."""
        response = self._request("GET", "/models", timeout=DEFAULT_LIST_TIMEOUT_S)
        if response.status_code != 200:
            raise self._http_error(response, "GET /models")
        try:
            payload = response.json()
        except ValueError:
            payload = None
            shape = "a body that is not JSON"
        else:
            shape = "JSON that is not an OpenAI model list (`data: [{id}]`)"
        items = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(items, list) or not all(isinstance(i, dict) and isinstance(i.get("id"), str)
                                                  for i in items):
            raise LiteLLMError(
                f"LiteLLM GET /models answered 200 with {shape}: {self._excerpt(response.text)}",
                hint="check that model.base_url points at LiteLLM's /v1", code="litellm_bad_response",
                data={"status": response.status_code, "url": response.url})
        return [item["id"] for item in items]

    def is_listed(self, model: str, *, retries: int = 3, delay_s: float = 0.5) -> bool:
        """Exact match in /models, asked up to `retries` times to cover the publication lag.
        False when every listing lacks it; errors propagate."""
        for attempt in range(max(1, retries)):
            if attempt:
                self._sleep(delay_s)
            if model in self.list_models():
                return True
        return False

    def canary(self, model: str, *, max_tokens: int = 8, timeout_s: float = 60) -> dict:
        """One real completion through `model` (it spends one voucher). Raises LiteLLMError unless
        LiteLLM answers 200 with at least one choice."""
        body = {"model": model, "messages": [{"role": "user", "content": CANARY_PROMPT}],
                "max_tokens": max_tokens}
        response = self._request("POST", "/chat/completions", timeout=timeout_s, json=body)
        if response.status_code != 200:
            raise self._http_error(response, f"canary completion with {model}", code_override="canary_failed")
        try:
            payload = response.json()
        except ValueError:
            payload = None
        choices = payload.get("choices") if isinstance(payload, dict) else None
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise LiteLLMError(
                f"LiteLLM canary completion with {model} returned no choice: {self._excerpt(response.text)}",
                hint="the model answered without content; check the seller and the x402-buyer",
                code="canary_failed", data={"status": response.status_code, "url": response.url})
        message = choices[0].get("message")
        content = message.get("content") if isinstance(message, dict) else None
        return {"status": response.status_code, "model": model,
                "content": content if isinstance(content, str) else ""}


__all__ = ["LiteLLMClient", "CANARY_PROMPT"]
