"""One deadline per HTTP exchange: a peer that drips its answer (a byte every second or so) cannot hold
a run past the timeout, whether it drips the body or the headers, and a body cut at the deadline is
never taken for a whole one.

The slow peer is a real TCP server on loopback; the clients are the skill's own (probe, the paid
request, a peer client), and `buy.py probe` runs as a subprocess with its default 15 s deadline.
"""
from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time

import pytest

from buy_x402 import payment, x402
from buy_x402.buyer import BuyerClient
from buy_x402.errors import TransportError
from buy_x402.http import make_session
from conftest import BUY
from loopback import LoopbackServer, read_request

pytestmark = pytest.mark.slow  # real time: deadlines, signals and subprocesses

DRIP_EVERY_S = 1.0


class DripServer(LoopbackServer):
    """Answers every request with `head` at once, then one byte of `body` every DRIP_EVERY_S seconds
    (or, with `drip_head`, the head itself byte by byte)."""

    def __init__(self, head: bytes, body: bytes = b" " * 1000, drip_head: bool = False) -> None:
        self.head, self.body, self.drip_head = head, body, drip_head
        self.stop = threading.Event()
        super().__init__()

    def handle(self, conn: socket.socket) -> None:
        with conn:
            try:
                read_request(conn)
                if self.drip_head:
                    stream = self.head + self.body
                else:
                    conn.sendall(self.head)
                    stream = self.body
                for byte in stream:
                    if self.stop.wait(DRIP_EVERY_S):
                        return
                    conn.sendall(bytes([byte]))
            except OSError:
                return

    def close(self) -> None:
        self.stop.set()
        super().close()


@pytest.fixture()
def drip():
    servers = []

    def start(head: bytes, **kw) -> DripServer:
        server = DripServer(head, **kw)
        servers.append(server)
        return server
    yield start
    for server in servers:
        server.close()


HEAD_402 = b"HTTP/1.1 402 Payment Required\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
HEAD_200_UNBOUNDED = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n"


def timed(call) -> tuple[BaseException | None, float]:
    started = time.monotonic()
    try:
        call()
    except BaseException as exc:  # noqa: BLE001 - the test inspects it
        return exc, time.monotonic() - started
    return None, time.monotonic() - started


@pytest.mark.parametrize("drip_head", [False, True], ids=["body", "headers"])
def test_probe_stops_at_its_deadline(drip, drip_head):
    server = drip(HEAD_402, drip_head=drip_head)
    error, took = timed(lambda: x402.probe(make_session("t"), server.url + "/services/x", "m", timeout=3))
    assert isinstance(error, TransportError) and error.code == "timeout", error
    assert "did not answer within 3 s" in error.message
    assert took < 3 + 2 * DRIP_EVERY_S


def test_a_body_cut_at_the_deadline_is_not_taken_for_a_whole_one(drip):
    """No Content-Length: the body ends when the socket does. The deadline's shutdown ends it, and the
    cut answer must still be a timeout, not a parsed (truncated) success."""
    server = drip(HEAD_200_UNBOUNDED, body=b'{"ok": true}' + b" " * 100)
    session = make_session("t")
    error, took = timed(lambda: BuyerClient(session, server.url).status(timeout=2))
    assert isinstance(error, TransportError) and error.code == "timeout", error
    assert took < 2 + 2 * DRIP_EVERY_S


def test_a_paid_request_stops_at_its_deadline_and_says_the_voucher_may_be_spent(drip):
    server = drip(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n")
    request = payment.PaidRequest(method="POST", url=server.url + "/v1/chat/completions", body=b"{}",
                                  content_type="application/json")
    error, took = timed(lambda: payment.send_paid(make_session("t"), request, "PAYMENT-SIGNATURE", "x", timeout=2))
    assert isinstance(error, TransportError) and error.code == "timeout", error
    assert "may have been spent" in error.message and error.data["voucher_sent"] is True
    assert took < 2 + 2 * DRIP_EVERY_S


def test_a_streamed_paid_request_stops_at_its_deadline(drip):
    server = drip(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 5000\r\n\r\n"
                  b"data: first\n", body=b"data: x\n" * 600)
    request = payment.PaidRequest(method="POST", url=server.url + "/v1/chat/completions", body=b"{}",
                                  content_type="application/json", stream=True)
    lines: list[str] = []
    error, took = timed(lambda: payment.send_paid(make_session("t"), request, "PAYMENT-SIGNATURE", "x", timeout=2,
                                                  on_line=lines.append))
    assert isinstance(error, TransportError) and error.code == "timeout", error
    assert took < 2 + 2 * DRIP_EVERY_S
    assert lines  # what arrived before the deadline was streamed


def test_buy_py_probe_of_a_dripping_seller_ends_at_its_15s_deadline(drip, tmp_path):
    server = drip(HEAD_402)
    started = time.monotonic()
    proc = subprocess.run([sys.executable, BUY, "probe", server.url + "/services/x", "--json"],
                          capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin",
                                                                             "HOME": str(tmp_path)})
    took = time.monotonic() - started
    assert proc.returncode == 1, proc.stderr
    assert "did not answer within 15 s" in proc.stderr
    assert took < 15 + 5  # the run went past 75 s; start-up and exit are the 5 s
