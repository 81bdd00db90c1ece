"""Simulated x402-buyer: the OpenAI-compatible proxy that spends pre-signed vouchers (§11).

The real buyer (Go, ns `llm`, port 8402) cannot run here; this one keeps its contract: purchases are
`<name>.json` files in a config dir and an auths dir (written by the controller), consumed voucher
ids persist in a state file, `/status` has the exact reference shape, and a chat for `paid/<m>` is
forwarded to the seller, paid on 402 with the first voucher of the pool (FIFO), and counted as spent
only after the paid retry succeeded. It never signs anything: it only holds vouchers.

    python -m devstack.sim.buyer --port P --config-dir D1 --auths-dir D2 --state F
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
from typing import Any

import requests
from ..loopback import LoopbackHandler, make_server

RELOAD_INTERVAL_S = 5.0
UPSTREAM_TIMEOUT_S = 120.0
NETWORK_NAMES = {"eip155:84532": "base-sepolia", "eip155:8453": "base", "eip155:1": "ethereum"}


def log(msg: str) -> None:
    sys.stderr.write(f"{time.strftime('%H:%M:%S')} x402-buyer: {msg}\n")  # one write: threads share the log
    sys.stderr.flush()


def bare_model(model: str) -> str:
    """`paid/openai/paid/m` → `m`: LiteLLM may prepend its provider prefix to the alias."""
    while True:
        for prefix in ("paid/", "openai/"):
            if model.startswith(prefix):
                model = model[len(prefix):]
                break
        else:
            return model


def b64json(value: Any) -> str:
    return base64.b64encode(json.dumps(value, separators=(",", ":")).encode()).decode()


def decode_b64json(text: str | None) -> dict | None:
    if not text:
        return None
    try:
        value = json.loads(base64.b64decode(text))
    except (ValueError, TypeError):
        return None
    return value if isinstance(value, dict) else None


def write_atomic(path: Path, data: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(data)
    os.replace(tmp, path)


class Pools:
    """Purchases, their voucher pools and the persistent consumed/spent state; one lock for all."""

    def __init__(self, config_dir: Path, auths_dir: Path, state_file: Path) -> None:
        self.config_dir, self.auths_dir, self.state_file = config_dir, auths_dir, state_file
        self.lock = threading.Lock()
        self.configs: dict[str, dict] = {}
        self.pools: dict[str, list[dict]] = {}
        self.in_flight: set[str] = set()
        state = self._read_json(state_file) or {}
        self.consumed: set[str] = set(state.get("consumed", []))
        self.spent: dict[str, int] = {k: int(v) for k, v in (state.get("spent") or {}).items()}

    @staticmethod
    def _read_json(path: Path) -> Any:
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def reload(self) -> None:
        """Re-read every purchase; consumed and in-flight vouchers stay out of the pools."""
        configs: dict[str, dict] = {}
        auths: dict[str, list[dict]] = {}
        for f in sorted(self.config_dir.glob("*.json")):
            cfg = self._read_json(f)
            if isinstance(cfg, dict) and cfg.get("url") and cfg.get("remoteModel"):
                configs[f.stem] = cfg
                listed = self._read_json(self.auths_dir / f.name)
                auths[f.stem] = [a for a in listed if isinstance(a, dict) and a.get("id")] \
                    if isinstance(listed, list) else []
        with self.lock:
            before = {n: len(p) for n, p in self.pools.items()}
            self.configs = configs
            self.pools = {name: [a for a in pool if a["id"] not in self.consumed and a["id"] not in self.in_flight]
                          for name, pool in auths.items()}
            after = {n: len(p) for n, p in self.pools.items()}
        if after != before:
            log(f"reloaded: {after or 'no purchases'}")

    def route(self, model: str) -> tuple[str, dict] | None:
        wanted = bare_model(model)
        with self.lock:
            for name, cfg in sorted(self.configs.items()):
                if cfg["remoteModel"] == wanted:
                    return name, cfg
        return None

    def pop(self, name: str) -> dict | None:
        with self.lock:
            pool = self.pools.get(name) or []
            if not pool:
                return None
            auth = pool.pop(0)
            self.in_flight.add(auth["id"])
            return auth

    def release(self, name: str, auth: dict) -> None:
        """The paid retry failed: the voucher was not spent, so it goes back to the front."""
        with self.lock:
            self.in_flight.discard(auth["id"])
            pool = self.pools.get(name)
            if pool is not None and all(a["id"] != auth["id"] for a in pool):
                pool.insert(0, auth)

    def confirm(self, name: str, auth: dict) -> None:
        with self.lock:
            self.in_flight.discard(auth["id"])
            self.consumed.add(auth["id"])
            self.spent[name] = self.spent.get(name, 0) + 1
            state = {"consumed": sorted(self.consumed), "spent": self.spent}
            write_atomic(self.state_file, json.dumps(state, indent=1))

    def status(self) -> dict:
        with self.lock:
            return {name: {"url": cfg["url"], "remote_model": cfg["remoteModel"],
                           "public_model": f"paid/{cfg['remoteModel']}",
                           "remaining": len(self.pools.get(name, [])), "spent": self.spent.get(name, 0),
                           "network": cfg.get("network", "")}
                    for name, cfg in sorted(self.configs.items())}


def payment_header(auth: dict, challenge: requests.Response) -> tuple[str, str]:
    """(header name, value) for the paid retry: v2 PAYMENT-SIGNATURE, or X-PAYMENT for a v1 seller."""
    payment = dict(auth.get("payment") or {})
    required = decode_b64json(challenge.headers.get("PAYMENT-REQUIRED"))
    if required is None:
        try:
            body = challenge.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and body.get("x402Version") == 1:
            accepted = payment.get("accepted") or {}
            network = accepted.get("network", "")
            for option in body.get("accepts") or []:
                if str(option.get("payTo", "")).lower() == str(accepted.get("payTo", "")).lower():
                    network = option.get("network", network)
                    break
            v1 = {"x402Version": 1, "scheme": accepted.get("scheme", "exact"),
                  "network": NETWORK_NAMES.get(network, network), "payload": payment.get("payload")}
            return "X-PAYMENT", b64json(v1)
    if required and "resource" in required:
        payment["resource"] = required["resource"]
    return "PAYMENT-SIGNATURE", b64json(payment)


class Handler(LoopbackHandler):
    server_version = "x402-buyer-sim/1"
    pools: Pools
    sessions = threading.local()  # requests.Session is not thread-safe: one per handler thread

    @property
    def session(self) -> requests.Session:
        if not hasattr(self.sessions, "session"):
            self.sessions.session = requests.Session()
            self.sessions.session.trust_env = False
        return self.sessions.session

    # -- plumbing -----------------------------------------------------------------------------
    def _error(self, status: int, message: str) -> None:
        self.send_json(status, {"error": {"message": message}})

    def _read_body(self) -> bytes:
        """Content-Length or chunked: some HTTP clients stream request bodies."""
        if "chunked" not in self.headers.get("Transfer-Encoding", "").lower():
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))
        chunks = []
        while True:
            size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            chunks.append(self.rfile.read(size))
            self.rfile.readline()

    # -- routes -------------------------------------------------------------------------------
    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            self.send_body(200, b"ok", "text/plain")
        elif path == "/status":
            self.send_json(200, self.pools.status())
        elif path in ("/v1/models", "/models"):
            data = [{"id": s["public_model"], "object": "model", "created": 0, "owned_by": "x402-buyer"}
                    for s in self.pools.status().values()]
            self.send_json(200, {"object": "list", "data": data})
        else:
            self._error(404, "not found")

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        raw = self._read_body()
        if path == "/admin/reload":
            self.pools.reload()
            self.send_json(200, {"status": "reload triggered"})
        elif path in ("/v1/chat/completions", "/chat/completions", "/v1/responses", "/responses"):
            upstream_path = path if path.startswith("/v1/") else "/v1" + path
            self._proxy(raw, upstream_path)
        else:
            self._error(404, "not found")

    # -- the paid proxy -----------------------------------------------------------------------
    def _proxy(self, raw: bytes, upstream_path: str) -> None:
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            self._error(400, "request body is not JSON")
            return
        if not isinstance(body, dict):
            self._error(400, "request body is not a JSON object")
            return
        routed = self.pools.route(str(body.get("model", "")))
        if routed is None:
            self._error(404, "no purchased upstream mapped for requested model")
            return
        name, cfg = routed
        body["model"] = cfg["remoteModel"]
        stream = bool(body.get("stream"))
        url = cfg["url"].rstrip("/") + upstream_path
        payload = json.dumps(body).encode()
        headers = {"Content-Type": "application/json",
                   "Accept": "text/event-stream" if stream else "application/json"}
        try:
            first = self.session.post(url, data=payload, headers=headers, timeout=UPSTREAM_TIMEOUT_S,
                                      allow_redirects=False, stream=stream)
        except requests.RequestException as exc:
            self._error(502, f"upstream {name} unreachable: {exc.__class__.__name__}")
            return
        if first.status_code != 402:
            self._relay(first, stream)
            return
        auth = self.pools.pop(name)
        if auth is None:
            first.close()
            self._error(402, f"no pre-signed authorizations left for {name}")
            return
        header, value = payment_header(auth, first)
        first.close()
        try:
            paid = self.session.post(url, data=payload, headers={**headers, header: value},
                                     timeout=UPSTREAM_TIMEOUT_S, allow_redirects=False, stream=stream)
        except requests.RequestException as exc:
            self.pools.release(name, auth)
            self._error(502, f"upstream {name} unreachable on the paid retry: {exc.__class__.__name__}")
            return
        if 200 <= paid.status_code < 300:
            self.pools.confirm(name, auth)
            log(f"{name}: paid request settled with voucher {auth['id'][:18]}…")
        else:
            self.pools.release(name, auth)
            reason = (decode_b64json(paid.headers.get("PAYMENT-REQUIRED")) or {}).get("error", "")
            log(f"{name}: paid retry answered {paid.status_code} {reason}; voucher put back")
        self._relay(paid, stream)

    def _relay(self, resp: requests.Response, stream: bool) -> None:
        extra = {k: resp.headers[k] for k in ("PAYMENT-RESPONSE", "X-PAYMENT-RESPONSE", "PAYMENT-REQUIRED")
                 if k in resp.headers}
        content_type = resp.headers.get("Content-Type", "application/json")
        if not (stream and resp.status_code == 200 and "text/event-stream" in content_type):
            self.send_body(resp.status_code, resp.content, content_type, extra)
            return
        self.send_response(resp.status_code)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache")
        for key, value in extra.items():
            self.send_header(key, value)
        self.end_headers()
        try:
            for chunk in resp.iter_content(chunk_size=None):
                if chunk:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        finally:
            resp.close()


def serve(port: int, config_dir: Path, auths_dir: Path, state_file: Path) -> None:
    for d in (config_dir, auths_dir, state_file.parent):
        d.mkdir(parents=True, exist_ok=True)
    pools = Pools(config_dir, auths_dir, state_file)
    pools.reload()
    Handler.pools = pools

    def reload_forever() -> None:
        while True:
            time.sleep(RELOAD_INTERVAL_S)
            try:
                pools.reload()
            except Exception as exc:  # a half-written file must not kill the reloader
                log(f"reload failed: {exc!r}")

    threading.Thread(target=reload_forever, daemon=True).start()
    server = make_server(port, Handler)
    log(f"listening on 127.0.0.1:{port}")
    server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.sim.buyer", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--config-dir", type=Path, required=True)
    parser.add_argument("--auths-dir", type=Path, required=True)
    parser.add_argument("--state", type=Path, required=True)
    args = parser.parse_args(argv)
    serve(args.port, args.config_dir, args.auths_dir, args.state)
    return 0


if __name__ == "__main__":
    sys.exit(main())
