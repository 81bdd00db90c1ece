"""Client of the x402-buyer's `/status`: the live pool of every purchase (remaining, spent)."""
from __future__ import annotations

from typing import Any

import requests

from .errors import X402BuyerError, TransportError
from .http import send


class BuyerClient:
    def __init__(self, session: requests.Session, base_url: str) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/")

    def status(self, *, timeout: float = 5.0) -> dict[str, dict[str, Any]]:
        """`{purchase: {remaining, spent, public_model, remote_model, url, network}}`."""
        url = f"{self.base_url}/status"
        resp = send(self.session, "GET", url, peer="x402-buyer", timeout=timeout)
        if resp.status_code != 200:
            raise X402BuyerError(f"x402-buyer /status answered HTTP {resp.status_code}",
                             hint=f"check the x402-buyer at {self.base_url}")
        try:
            data = resp.json()
        except ValueError as exc:
            raise X402BuyerError("x402-buyer /status did not answer JSON",
                             hint=f"check the x402-buyer at {self.base_url}") from exc
        if not isinstance(data, dict):
            raise X402BuyerError("x402-buyer /status is not a JSON object",
                             hint=f"check the x402-buyer at {self.base_url}")
        return data

    def remove(self, name: str, *, timeout: float = 5.0) -> None:
        """`POST /admin/remove?name=`: the buyer stops spending `name` now. Memory only: its next reload
        (every 5 s) brings the purchase back while the controller's files for it exist."""
        url = f"{self.base_url}/admin/remove"
        resp = send(self.session, "POST", url, peer="x402-buyer", timeout=timeout, params={"name": name})
        if resp.status_code != 200:
            raise X402BuyerError(f"x402-buyer /admin/remove answered HTTP {resp.status_code}: {resp.text[:200]}",
                                 hint=f"check the x402-buyer at {self.base_url}")

    def try_status(self) -> dict[str, dict[str, Any]] | None:
        """The status, or None when the buyer cannot be asked (for display-only callers)."""
        try:
            return self.status()
        except (X402BuyerError, TransportError):
            return None
