"""A tiny eRPC-like JSON-RPC router: `POST <base>/<chain>` forwards to anvil for our one chain.

anvil answers JSON-RPC only on `/` (any other path is a 404), while buy.py talks to the chain as
`POST <ERPC_URL>/<chain-name>` like it does to eRPC in a pod. This proxy accepts any path whose last
segment is the chain's name or id and answers a JSON-RPC error (HTTP 404) for every other chain.

    python -m devstack.sim.erpc --port P --upstream http://127.0.0.1:8545 --chain base-sepolia=84532
"""
from __future__ import annotations

import argparse
import http.client
import json
import threading
import urllib.parse

from ..loopback import LoopbackHandler, make_server


class ErpcHandler(LoopbackHandler):
    upstream: urllib.parse.SplitResult
    chains: set[str]
    _local = threading.local()

    def _rpc_error(self, status: int, code: int, message: str, request_id=None) -> None:
        body = {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}
        self.send_body(status, json.dumps(body).encode())

    def do_GET(self) -> None:
        if self.path.rstrip("/") in ("/healthcheck", "/healthz"):
            self.send_body(200, b'{"status":"ok"}')
        else:
            self._rpc_error(405, -32600, "use POST with a JSON-RPC body")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        segment = urllib.parse.urlsplit(self.path).path.rstrip("/").rsplit("/", 1)[-1]
        if segment not in self.chains:
            request_id = None
            try:
                request_id = json.loads(body).get("id")
            except (ValueError, AttributeError):
                pass
            self._rpc_error(404, -32004, f"network not supported: {segment or '(none)'}", request_id)
            return
        try:
            status, answer = self._forward(body)
        except (OSError, http.client.HTTPException) as exc:
            self._rpc_error(502, -32603, f"upstream unreachable: {exc}")
            return
        self.send_body(status, answer)

    def _forward(self, body: bytes) -> tuple[int, bytes]:
        """POST to anvil over this thread's persistent connection (reconnect once if it dropped)."""
        for attempt in (1, 2):
            conn = getattr(self._local, "conn", None)
            if conn is None:
                conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=30)
                self._local.conn = conn
            try:
                conn.request("POST", "/", body=body, headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                return resp.status, resp.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                self._local.conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


def serve(port: int, upstream: str, chains: set[str]) -> None:
    make_server(port, ErpcHandler, upstream=urllib.parse.urlsplit(upstream), chains=chains).serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="anvil's JSON-RPC URL")
    parser.add_argument("--chain", action="append", required=True,
                        help="NAME=ID of a chain routed to the upstream (repeatable)")
    args = parser.parse_args()
    chains: set[str] = set()
    for item in args.chain:
        name, _, chain_id = item.partition("=")
        chains.update(x for x in (name, chain_id) if x)
    serve(args.port, args.upstream, chains)


if __name__ == "__main__":
    main()
