"""Simulated x402-buyer: the OpenAI-compatible reverse proxy that spends pre-signed vouchers.

    python -m devstack.sim.buyer --port P --config-dir D1 --auths-dir D2 --state F [--reload-interval S]

Follows obol-wire.md §1 (proxy.go@2c085aad, main.go@03270f97; the pool rules are in
devstack/sim/buyer_pool.py):
- 1a/1b: the request goes upstream unpaid first and any status but 402 passes through unchanged; on a
  402 only the JSON body is read; the paid retry carries the voucher in `X-PAYMENT` only (standard
  base64 of the JSON payment), with `User-Agent` obol-buy-x402/1.0 (or OBOL_BUYER_USER_AGENT).
- 1d: a body that does not parse, no qualifying entry or an empty pool is a payment error, which the
  reverse proxy answers with 502 (an empty body, as Go's ReverseProxy does); a transport error on the
  retry releases the voucher and is a 502 too; an answer >= 400 releases it unless
  `X-PAYMENT-RESPONSE` decodes to a non-empty `transaction`, and is passed through; any answer < 400
  confirms it.
- 1e: `GET /healthz` (`ok`), `GET /status` (url, remote_model, public_model, remaining, spent,
  network as configured), `POST /admin/reload` (`reload triggered` / `reload already pending`),
  `POST /admin/remove?name=` (memory only; 400 `missing name`), the four model routes and
  `/upstream/<name>/...`; a reload every `--reload-interval` (5 s) and on `/admin/reload`.
- 1f: the model is trimmed and stripped of `paid/`/`openai/`; no match (or a body that is not JSON)
  is 404 `no purchased upstream mapped for requested model`; the body is re-encoded with the bare
  model; the seller URL is the config `url` joined with one slash to the incoming path, query kept.
- 1g: only `X-PAYMENT-RESPONSE` is read; every response header passes through.
It has no `/v1/models` and no signer: it only forwards vouchers it was given. `/metrics` is not served.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import requests

from ..loopback import LoopbackHandler, make_server
from .buyer_pool import Pools, Undecodable, Upstream, parse_requirements

MODEL_ROUTES = ("/v1/chat/completions", "/chat/completions", "/v1/responses", "/responses")
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
              "transfer-encoding", "upgrade", "content-length", "host"}
UPSTREAM_TIMEOUT_S = 120.0
USER_AGENT = os.environ.get("OBOL_BUYER_USER_AGENT") or "obol-buy-x402/1.0 (+https://github.com/ObolNetwork/obol-stack)"


def log(msg: str) -> None:
    sys.stderr.write(f"{time.strftime('%H:%M:%S')} x402-buyer: {msg}\n")  # one write: threads share the log
    sys.stderr.flush()


def join_path(base: str, path: str) -> str:
    """singleJoiningSlash."""
    if base.endswith("/") and path.startswith("/"):
        return base + path[1:]
    if not base.endswith("/") and not path.startswith("/"):
        return base + "/" + path
    return base + path


def settled_transaction(value: str | None) -> str:
    """The `transaction` of an X-PAYMENT-RESPONSE header, or "" when it does not decode."""
    if not value:
        return ""
    try:
        doc = json.loads(base64.b64decode(value))
    except (ValueError, TypeError):
        return ""
    return str(doc.get("transaction") or "") if isinstance(doc, dict) else ""


class Reloader:
    """The reload loop: a tick every interval, plus one pending request from /admin/reload (a 1-slot channel)."""

    def __init__(self, pools: Pools, interval: float) -> None:
        self.pools, self.interval = pools, interval
        self.cond = threading.Condition()
        self.pending = False

    def request(self) -> bool:
        """True when this call queued a reload, False when one was already pending."""
        with self.cond:
            if self.pending:
                return False
            self.pending = True
            self.cond.notify()
            return True

    def run(self) -> None:
        while True:
            with self.cond:
                if not self.pending:
                    self.cond.wait(self.interval)
                self.pending = False
            try:
                self.pools.reload()
            except Exception as exc:  # a bad file set must not kill the loop
                log(f"reload failed: {exc!r}")


class Handler(LoopbackHandler):
    server_version = "x402-buyer-sim/1"
    pools: Pools
    reloader: Reloader
    sessions = threading.local()  # requests.Session is not thread-safe: one per handler thread

    @property
    def session(self) -> requests.Session:
        if not hasattr(self.sessions, "session"):
            self.sessions.session = requests.Session()
            self.sessions.session.trust_env = False
        return self.sessions.session

    def _text(self, status: int, text: str) -> None:
        """http.Error: text/plain with a trailing newline."""
        self.send_body(status, (text + "\n").encode(), "text/plain; charset=utf-8",
                       {"X-Content-Type-Options": "nosniff"})

    def do_GET(self) -> None:  # noqa: N802
        path = urlsplit(self.path).path
        if path == "/healthz":
            self.send_body(200, b"ok", "text/plain; charset=utf-8")
        elif path == "/status":
            self.send_body(200, json.dumps(self.pools.status()).encode() + b"\n", "application/json")
        elif path.startswith("/upstream/"):
            self._compat(path, b"")
        else:
            self._text(404, "404 page not found")

    def do_POST(self) -> None:  # noqa: N802
        parts = urlsplit(self.path)
        body = self.read_body()
        if parts.path == "/admin/reload":
            state = "reload triggered" if self.reloader.request() else "reload already pending"
            self.send_body(200, json.dumps({"status": state}, separators=(",", ":")).encode(), "application/json")
        elif parts.path == "/admin/remove":
            name = (parse_qs(parts.query).get("name") or [""])[0].strip()
            if not name:
                self._text(400, "missing name")
                return
            self.pools.remove(name)
            self.send_body(200, json.dumps({"status": "removed", "name": name}, separators=(",", ":")).encode(),
                           "application/json")
        elif parts.path in MODEL_ROUTES:
            self._model_request(body)
        elif parts.path.startswith("/upstream/"):
            self._compat(parts.path, body)
        else:
            self._text(404, "404 page not found")

    # -- routing --------------------------------------------------------------------------------
    def _model_request(self, body: bytes) -> None:
        try:
            doc = json.loads(body)
        except ValueError:
            doc = None
        model = doc.get("model") if isinstance(doc, dict) else None
        upstream = self.pools.route(model) if isinstance(model, str) else None
        if upstream is None:
            self._text(404, "no purchased upstream mapped for requested model")
            return
        doc["model"] = upstream.remote_model
        self._forward(upstream, self.path, json.dumps(doc, sort_keys=True, separators=(",", ":")).encode())

    def _compat(self, path: str, body: bytes) -> None:
        """/upstream/<name>/... strips its own prefix and forwards as it is (no model rewrite)."""
        name, _, rest = path[len("/upstream/"):].partition("/")
        with self.pools.lock:
            upstream = self.pools.upstreams.get(name)
        if upstream is None:
            self._text(404, "404 page not found")
            return
        query = urlsplit(self.path).query
        self._forward(upstream, "/" + rest + (f"?{query}" if query else ""), body)

    # -- the paid round trip --------------------------------------------------------------------
    def _forward(self, upstream: Upstream, path_and_query: str, body: bytes) -> None:
        parts = urlsplit(path_and_query)
        url = join_path(upstream.config["url"].rstrip("?"), parts.path) + (f"?{parts.query}" if parts.query else "")
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        headers.update({"User-Agent": USER_AGENT, "Content-Type": self.headers.get("Content-Type", "application/json")})
        method = self.command
        try:
            first = self.session.request(method, url, data=body, headers=headers, timeout=UPSTREAM_TIMEOUT_S,
                                         allow_redirects=False, stream=True)
        except requests.RequestException as exc:
            log(f"outbound {method} {url} → transport error: {exc.__class__.__name__}")
            self._bad_gateway()
            return
        if first.status_code != 402:
            self._relay(first)
            return
        raw = first.content
        first.close()
        try:
            requirements = parse_requirements(raw)
        except Undecodable as exc:
            log(f"{upstream.name}: invalid_requirements: {exc}")
            self._bad_gateway()
            return
        held = self.pools.hold(upstream, requirements)
        if held is None:
            log(f"{upstream.name}: no valid signer for the 402 (pool empty or no entry matches)")
            self._bad_gateway()
            return
        payment, auth = held
        value = base64.b64encode(json.dumps(payment, separators=(",", ":")).encode()).decode()
        try:
            paid = self.session.request(method, url, data=body, headers={**headers, "X-PAYMENT": value},
                                        timeout=UPSTREAM_TIMEOUT_S, allow_redirects=False, stream=True)
        except requests.RequestException as exc:
            self.pools.release(upstream, auth)
            log(f"outbound {method} {url} (with X-PAYMENT) → transport error: {exc.__class__.__name__}")
            self._bad_gateway()
            return
        if paid.status_code >= 400:
            tx = settled_transaction(paid.headers.get("X-PAYMENT-RESPONSE"))
            if tx:
                self.pools.confirm(upstream, auth)
                log(f"{upstream.name}: upstream {paid.status_code} but X-PAYMENT-RESPONSE has tx {tx}; marked consumed")
            else:
                self.pools.release(upstream, auth)
                log(f"{upstream.name}: paid retry answered {paid.status_code}; voucher back at the head")
        else:
            self.pools.confirm(upstream, auth)
            if not settled_transaction(paid.headers.get("X-PAYMENT-RESPONSE")):
                log(f"{upstream.name}: upstream answered {paid.status_code} without X-PAYMENT-RESPONSE — "
                    "auth consumed without observed settlement")
        self._relay(paid)

    def _bad_gateway(self) -> None:
        self.send_body(502, b"", "text/plain; charset=utf-8")

    def _relay(self, resp: requests.Response) -> None:
        """Status, headers and body as the seller sent them; streamed bodies chunk by chunk."""
        headers = {k: v for k, v in resp.headers.items() if k.lower() not in HOP_BY_HOP | {"content-encoding"}}
        try:
            if "text/event-stream" not in resp.headers.get("Content-Type", ""):
                self.send_body(resp.status_code, resp.content, resp.headers.get("Content-Type", ""),
                               {k: v for k, v in headers.items() if k.lower() != "content-type"})
                return
            self.start_chunked(resp.status_code, headers)
            for chunk in resp.iter_content(chunk_size=None):
                self.write_chunk(chunk)
            self.end_chunked()
        finally:
            resp.close()


def serve(port: int, config_dir: Path, auths_dir: Path, state_file: Path, interval: float) -> None:
    for directory in (config_dir, auths_dir, state_file.parent):
        directory.mkdir(parents=True, exist_ok=True)
    pools = Pools(config_dir, auths_dir, state_file)
    pools.reload()
    reloader = Reloader(pools, interval)
    threading.Thread(target=reloader.run, name="reload", daemon=True).start()
    Handler.pools, Handler.reloader = pools, reloader
    server = make_server(port, Handler)
    log(f"listening on 127.0.0.1:{port}; {len(pools.upstreams)} upstream(s)")
    server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.sim.buyer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--config-dir", type=Path, required=True)
    parser.add_argument("--auths-dir", type=Path, required=True)
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--reload-interval", type=float, default=5.0)
    args = parser.parse_args(argv)
    serve(args.port, args.config_dir, args.auths_dir, args.state, args.reload_interval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
