"""The few PurchaseRequest REST calls the controller simulation makes (no kubernetes client)."""
from __future__ import annotations

import json
import threading

import requests

GROUP_PATH = "/apis/obol.org/v1alpha1"


class Conflict(Exception):
    pass


class KubeClient:
    """Just the PurchaseRequest calls the controller makes, over requests with the given CA."""

    def __init__(self, server: str, token: str, ca: str, namespace: str) -> None:
        self.base = f"{server.rstrip('/')}{GROUP_PATH}/namespaces/{namespace}/purchaserequests"
        self.local = threading.local()
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.verify = ca or True

    @property
    def session(self) -> requests.Session:
        if not hasattr(self.local, "s"):
            self.local.s = requests.Session()
            self.local.s.trust_env = False
            self.local.s.headers.update(self.headers)
            self.local.s.verify = self.verify
        return self.local.s

    def _check(self, resp: requests.Response) -> dict:
        if resp.status_code == 409:
            raise Conflict(resp.text)
        resp.raise_for_status()
        return resp.json()

    def list(self) -> dict:
        return self._check(self.session.get(self.base, timeout=30))

    def get(self, name: str) -> dict | None:
        resp = self.session.get(f"{self.base}/{name}", timeout=30)
        return None if resp.status_code == 404 else self._check(resp)

    def replace(self, obj: dict) -> dict:
        return self._check(self.session.put(f"{self.base}/{obj['metadata']['name']}", json=obj, timeout=30))

    def replace_status(self, obj: dict) -> dict:
        return self._check(self.session.put(f"{self.base}/{obj['metadata']['name']}/status", json=obj, timeout=30))

    def watch(self, resource_version: str):
        """Yield watch events until the server ends the stream."""
        params = {"watch": "true", "resourceVersion": resource_version, "timeoutSeconds": "300"}
        with requests.Session() as s:
            s.trust_env = False
            with s.get(self.base, params=params, headers=self.headers, verify=self.verify,
                       stream=True, timeout=(10, 330)) as resp:
                resp.raise_for_status()
                for line in resp.iter_lines():
                    if line:
                        yield json.loads(line)
