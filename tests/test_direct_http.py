"""The signer batch's lean HTTP path (buy_x402/direct_http.py) against a real TCP peer on loopback that
answers exactly the bytes each test scripts: the shapes of HTTP/1.1 it must read, the ones it must
refuse, kept-alive connections (reused, closed by the peer, reopened once), its size limit and its
deadline. Every failure is a TransportError, never a parsed half-answer.
"""
from __future__ import annotations

import socket
import threading
import time

import pytest

from buy_x402.direct_http import DirectConnection
from buy_x402.errors import TransportError
from loopback import LoopbackServer, read_request

OK = b'{"signature": "0xab"}'


def answer(status: str = "200 OK", body: bytes = OK, *headers: str) -> bytes:
    head = [f"HTTP/1.1 {status}", "Content-Type: application/json", *headers]
    if not any(h.lower().startswith(("content-length", "transfer-encoding")) for h in headers):
        head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class Peer(LoopbackServer):
    """Reads each request (head + Content-Length body) and plays `script(n, request)`: bytes to send,
    a callable taking the socket, or None to close the connection. Records every request and every
    connection."""

    def __init__(self, script) -> None:
        self.script = script
        self.requests: list[bytes] = []
        super().__init__()

    def handle(self, conn: socket.socket) -> None:
        buffer = b""
        with conn:
            while True:
                read = read_request(conn, buffer)
                if read is None:
                    return
                request, buffer = read
                with self.lock:
                    self.requests.append(request)
                    n = len(self.requests)
                action = self.script(n, request)
                try:
                    if action is None:
                        return
                    if callable(action):
                        action(conn)
                    else:
                        conn.sendall(action)
                except OSError:
                    return


@pytest.fixture()
def peer():
    peers = []

    def start(script) -> Peer:
        peers.append(Peer(script))
        return peers[-1]
    yield start
    for p in peers:
        p.close()


def connection(url: str, **kw) -> DirectConnection:
    return DirectConnection(url + "/base/", peer="remote signer", user_agent="buy-x402-test", **kw)


def test_one_connection_carries_every_exchange_and_the_request_is_well_formed(peer):
    server = peer(lambda n, request: answer(body=b'{"n": %d}' % n))
    conn = connection(server.url)
    answers = [conn.post("/api/v1/sign/0xabc/typed-data", b'{"i": %d}' % i) for i in range(5)]
    conn.close()
    assert answers == [(200, b'{"n": %d}' % (i + 1)) for i in range(5)]
    assert server.connections == 1
    head, _, body = server.requests[0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /base/api/v1/sign/0xabc/typed-data HTTP/1.1"
    port = server.url.rsplit(":", 1)[1]
    assert {b"Host: 127.0.0.1:" + port.encode(), b"User-Agent: buy-x402-test", b"Content-Length: 8",
            b"Content-Type: application/json"} <= set(lines[1:])
    assert body == b'{"i": 0}'


@pytest.mark.parametrize("raw, body", [
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\n{\"a\":\r\n3\r\n 1}\r\n0\r\nX-T: y\r\n\r\n",
     b'{"a": 1}'),
    (b"HTTP/1.1 100 Continue\r\n\r\n" + answer(), OK),
    (b"HTTP/1.1 200 OK\r\ncontent-length:  21 \r\n\r\n" + OK, OK),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 21\r\nContent-Length: 21\r\n\r\n" + OK, OK),
    (b"HTTP/1.1 204 No Content\r\n\r\n", b""),
], ids=["chunked", "interim-100", "spaces", "same-length-twice", "no-content"])
def test_answers_it_reads_and_keeps_the_connection_after(peer, raw, body):
    server = peer(lambda n, request: raw)
    conn = connection(server.url)
    assert conn.post("/x", b"{}")[1] == body
    assert conn.post("/x", b"{}")[1] == body
    assert server.connections == 1


@pytest.mark.parametrize("raw", [
    answer("200 OK", OK, "Connection: close"),
    b"HTTP/1.0 200 OK\r\nContent-Length: 21\r\n\r\n" + OK,
], ids=["connection-close", "http-1.0"])
def test_an_answer_that_ends_the_connection_is_read_and_the_next_exchange_reconnects(peer, raw):
    server = peer(lambda n, request: raw)
    conn = connection(server.url)
    assert conn.post("/x", b"{}") == (200, OK)
    assert conn.post("/x", b"{}") == (200, OK)
    assert server.connections == 2


def test_a_body_that_runs_to_the_close_is_read_whole(peer):
    def close_delimited(sock: socket.socket) -> None:
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n" + OK)
        sock.shutdown(socket.SHUT_WR)
    server = peer(lambda n, request: close_delimited if n == 1 else None)
    conn = connection(server.url)
    assert conn.post("/x", b"{}") == (200, OK)


def test_a_kept_alive_connection_closed_by_the_peer_while_idle_is_reopened_once(peer):
    server = peer(lambda n, request: answer() if n != 2 else None)  # the 2nd request finds the socket closed
    conn = connection(server.url)
    assert conn.post("/x", b"{}") == (200, OK)
    assert conn.post("/x", b"{}") == (200, OK)  # the retry, on a new connection, is the 3rd request
    assert server.connections == 2 and len(server.requests) == 3


def test_a_new_connection_closed_without_an_answer_is_an_error(peer):
    server = peer(lambda n, request: None)
    with pytest.raises(TransportError, match="closed the connection without answering"):
        connection(server.url).post("/x", b"{}")
    assert len(server.requests) == 1  # not retried: the connection was not a kept-alive one


def test_a_peer_that_nobody_listens_on_is_unreachable():
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(TransportError, match="cannot reach the remote signer") as info:
        connection(f"http://127.0.0.1:{port}").post("/x", b"{}")
    assert info.value.hint


@pytest.mark.parametrize("raw, problem", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + OK, "closed in the middle"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"a\":", "closed in the middle"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabcd\r\n0\r\n\r\n", "does not end"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "unsupported Transfer-Encoding"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 21\r\nContent-Length: 22\r\n\r\n" + OK, "two different Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "bad Content-Length"),
    (b"HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\nContent-Length: 21\r\n\r\n" + OK, "malformed header"),
    (b"HTTP/1.1 200 OK\r\nX-A : 1\r\nContent-Length: 21\r\n\r\n" + OK, "malformed header"),
    (b"HTTP/2 200\r\nContent-Length: 21\r\n\r\n" + OK, "bad status line"),
    (b"SSH-2.0-OpenSSH\r\n\r\n", "bad status line"),
], ids=["short-body", "short-chunk", "chunk-size", "chunk-end", "gzip", "two-lengths", "negative-length",
        "folded", "space-before-colon", "http2", "not-http"])
def test_answers_it_refuses(peer, raw, problem):
    server = peer(lambda n, request: (lambda sock: (sock.sendall(raw), sock.shutdown(socket.SHUT_WR))))
    with pytest.raises(TransportError, match=problem) as info:
        connection(server.url).post("/x", b"{}")
    assert info.value.hint


@pytest.mark.parametrize("raw", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 70000\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1000\r\n" + b"x" * 4096 + b"\r\n" + b"1000\r\n",
    b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 5000,
    b"HTTP/1.1 200 OK\r\nX-Big: " + b"x" * 70000,
], ids=["length", "chunked", "to-close", "head"])
def test_an_answer_larger_than_the_limit_is_refused(peer, raw):
    server = peer(lambda n, request: (lambda sock: (sock.sendall(raw), sock.shutdown(socket.SHUT_WR))))
    with pytest.raises(TransportError, match="more than 4096 bytes|larger than"):
        connection(server.url, max_answer=4096).post("/x", b"{}")


@pytest.mark.slow
@pytest.mark.parametrize("head_first", [True, False], ids=["body", "headers"])
def test_a_dripping_peer_is_cut_at_the_deadline(peer, head_first):
    stop = threading.Event()
    stream = answer(body=b" " * 200)
    split = stream.index(b"\r\n\r\n") + 4 if head_first else 0

    def drip(sock: socket.socket) -> None:
        sock.sendall(stream[:split])
        for byte in stream[split:]:
            if stop.wait(0.3):
                return
            sock.sendall(bytes([byte]))
    server = peer(lambda n, request: drip)
    started = time.monotonic()
    try:
        with pytest.raises(TransportError, match="did not answer within 1.5 s") as info:
            connection(server.url, timeout=1.5).post("/x", b"{}")
    finally:
        stop.set()
    assert info.value.code == "timeout"
    assert time.monotonic() - started < 1.5 + 1.0


def test_only_plain_http_origins_without_credentials():
    for url in ("https://signer:9000", "http://user:pw@signer:9000", "ftp://signer"):
        with pytest.raises(ValueError):
            DirectConnection(url, peer="remote signer", user_agent="t")
