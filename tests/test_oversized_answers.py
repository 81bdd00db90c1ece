"""A seller's 402 is read only up to `MAX_CHALLENGE_BYTES`: a hostile body (huge, endless, or a gzip
bomb) is refused as soon as it passes the cap, instead of being held whole in the pod's memory for as
long as the deadline allows. The seller is a real TCP server on loopback.
"""
from __future__ import annotations

import gzip
import json
import socket
import subprocess
import sys

import pytest

from buy_x402 import x402
from buy_x402.errors import TransportError
from buy_x402.http import MAX_CHALLENGE_BYTES, make_session
from conftest import BUY
from loopback import LoopbackServer, read_request

CHUNK = b" " * 65536
PAYMENT = {"scheme": "exact", "network": "eip155:84532", "amount": "1000", "payTo": "0x" + "11" * 20,
           "asset": "0x036CbD53842c5426634e7929541eC2318f3dCF7e", "maxTimeoutSeconds": 60,
           "extra": {"name": "USDC", "version": "2"}}


class FloodServer(LoopbackServer):
    """Answers every request with `head`, then `body`, then (with `endless`) blanks until the client
    hangs up. `sent` counts the body bytes the client took before it hung up."""

    def __init__(self, head: bytes, body: bytes = b"", endless: bool = False) -> None:
        self.head, self.body, self.endless, self.sent = head, body, endless, 0
        super().__init__()

    def handle(self, conn: socket.socket) -> None:
        with conn:
            try:
                read_request(conn)
                conn.sendall(self.head)
                for start in range(0, len(self.body), len(CHUNK)):
                    piece = self.body[start:start + len(CHUNK)]
                    conn.sendall(piece)
                    self.sent += len(piece)
                while self.endless:
                    conn.sendall(CHUNK)
                    self.sent += len(CHUNK)
            except OSError:
                return


@pytest.fixture()
def flood():
    servers: list[FloodServer] = []

    def start(head: bytes, **kw) -> FloodServer:
        servers.append(FloodServer(head, **kw))
        return servers[-1]
    yield start
    for server in servers:
        server.close()


def head_402(length: int | None = None, *extra: str) -> bytes:
    lines = ["HTTP/1.1 402 Payment Required", "Content-Type: application/json", *extra]
    lines.append(f"Content-Length: {length}" if length is not None else "Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def probe(server: FloodServer):
    return x402.probe(make_session("t"), server.url + "/services/x", "m", timeout=20)


def refused_as_too_large(call) -> TransportError:
    with pytest.raises(TransportError) as caught:
        call()
    assert caught.value.code == "too_large", caught.value.message
    assert f"larger than {MAX_CHALLENGE_BYTES:,} bytes" in caught.value.message
    return caught.value


def test_a_402_body_past_the_cap_is_refused_not_read_whole(flood):
    body = b" " * (16 * MAX_CHALLENGE_BYTES)
    server = flood(head_402(len(body)), body=body)
    refused_as_too_large(lambda: probe(server))
    assert server.sent < len(body) // 2  # the client hung up long before the end


def test_an_endless_402_body_is_refused_at_the_cap_not_at_the_deadline(flood):
    server = flood(head_402(None), endless=True)
    error = refused_as_too_large(lambda: probe(server))
    assert "did not answer within" not in error.message


def test_a_gzip_bomb_is_capped_after_decompression(flood):
    bomb = gzip.compress(b" " * (16 * MAX_CHALLENGE_BYTES))
    assert len(bomb) < MAX_CHALLENGE_BYTES  # small on the wire: only the decoded size trips the cap
    server = flood(head_402(len(bomb), "Content-Encoding: gzip"), body=bomb)
    refused_as_too_large(lambda: probe(server))


def test_a_402_just_under_the_cap_is_still_read(flood):
    """The cap refuses only what is over it: a valid challenge padded to just under it parses."""
    document = json.dumps({"x402Version": 2, "accepts": [PAYMENT]}).encode()
    body = document + b" " * (MAX_CHALLENGE_BYTES - len(document))
    assert len(body) == MAX_CHALLENGE_BYTES
    server = flood(head_402(len(body)), body=body)
    required = probe(server)
    assert [option.raw["amount"] for option in required.accepts] == ["1000"]


@pytest.mark.slow  # a subprocess: the interpreter's start-up
def test_buy_py_probe_of_an_oversized_402_exits_1_with_the_reason(flood, tmp_path):
    server = flood(head_402(None), endless=True)
    proc = subprocess.run([sys.executable, BUY, "probe", server.url + "/services/x"], capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert proc.returncode == 1, proc.stderr
    assert f"sent an answer larger than {MAX_CHALLENGE_BYTES:,} bytes" in proc.stderr
    assert "check the URL of the seller" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
