"""A reverse proxy that counts the requests going through it: how many API calls a command makes, seen
from the wire rather than taken from the code (bench/scale.py), and how many were in flight at once
(tests/test_process_concurrency.py).

One proxy stands in front of one peer (the kube API, the x402-buyer, eRPC, the seller, the signer);
the command under test is pointed at the proxy. Only requests whose User-Agent starts with
`counted_agent` are counted, so the controller's and the buyer's own traffic through a shared peer
(the seller) is not taken for the skill's. Each request is counted as `METHOD shape`, where the shape
is the path with names and addresses folded (`/…/purchaserequests/{name}`), plus the JSON-RPC
methods of an eRPC body. Answers are buffered whole (no command measured here streams). `delay_s`
holds each counted answer that long (a peer far away), so requests sent side by side are seen in flight
together.
"""
from __future__ import annotations

import collections
import json
import re
import threading
import time
from http.server import ThreadingHTTPServer

import requests

from .loopback import LoopbackHandler

_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
        "content-length", "content-encoding", "host"}
_SHAPES = [
    (re.compile(r"^/apis/obol\.org/[^/]+/namespaces/[^/]+/purchaserequests"), "/purchaserequests"),
    (re.compile(r"(/purchaserequests)/[^/?]+"), r"\1/{name}"),
    (re.compile(r"/api/v1/sign/0x[0-9a-fA-F]{40}/"), "/api/v1/sign/{address}/"),
    (re.compile(r"/services/[^/?]+"), "/services/{offer}"),
]


def shape(method: str, path: str, query: str, body: bytes) -> str:
    for pattern, replacement in _SHAPES:
        path = pattern.sub(replacement, path)
    flags = sorted(key for key in ("dryRun", "watch", "labelSelector") if key + "=" in query)
    text = f"{method} {path}" + (f"?{'&'.join(flags)}" if flags else "")
    if body[:1] in (b"{", b"[") and b'"jsonrpc"' in body:
        try:
            calls = json.loads(body)
            calls = calls if isinstance(calls, list) else [calls]
            methods = collections.Counter(str(c.get("method")) for c in calls if isinstance(c, dict))
            text += " [" + ", ".join(f"{m}x{n}" if n > 1 else m for m, n in sorted(methods.items())) + "]"
        except ValueError:
            pass
    return text


class CountingProxy:
    def __init__(self, name: str, upstream: str, *, counted_agent: str, verify: str | bool = True,
                 delay_s: float = 0.0) -> None:
        self.name, self.upstream = name, upstream.rstrip("/")
        self.counted_agent, self.verify, self.delay_s = counted_agent, verify, delay_s
        self.counts: collections.Counter[str] = collections.Counter()
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        self.local = threading.local()
        proxy = self

        class Handler(LoopbackHandler):
            def _forward(self) -> None:
                proxy.forward(self)
            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _forward  # noqa: N815

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def session(self) -> requests.Session:
        if not hasattr(self.local, "session"):
            self.local.session = requests.Session()
            self.local.session.trust_env = False
        return self.local.session

    def forward(self, handler: LoopbackHandler) -> None:
        body = handler.read_body()
        path, _, query = handler.path.partition("?")
        counted = handler.headers.get("User-Agent", "").startswith(self.counted_agent)
        if counted:
            with self.lock:
                self.counts[shape(handler.command, path, query, body)] += 1
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            self._answer(handler, body, counted)
        finally:
            if counted:
                with self.lock:
                    self.in_flight -= 1

    def _answer(self, handler: LoopbackHandler, body: bytes, counted: bool) -> None:
        if counted and self.delay_s:
            time.sleep(self.delay_s)
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in _HOP}
        try:
            answer = self.session().request(handler.command, self.upstream + handler.path, data=body or None,
                                            headers=headers, verify=self.verify, allow_redirects=False, timeout=60)
        except requests.RequestException as exc:
            handler.send_body(502, json.dumps({"error": f"proxy: {exc.__class__.__name__}"}).encode())
            return
        out = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP}
        handler.send_body(answer.status_code, answer.content, out.pop("Content-Type", "application/json"), out)

    def take(self) -> collections.Counter[str]:
        """The counts so far, and zero again."""
        with self.lock:
            counts, self.counts = self.counts, collections.Counter()
        return counts

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


__all__ = ["CountingProxy", "shape"]
