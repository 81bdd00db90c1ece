"""Real TCP servers on loopback for the tests that need a peer to misbehave at the byte level (drip,
flood, scripted answers): one accept loop, one thread per connection, and a request reader that takes
the whole request, body included (closing with unread bytes would reset the connection and throw away
an answer the client has not read yet)."""
from __future__ import annotations

import socket
import threading


class LoopbackServer:
    """Listens on 127.0.0.1 (a free port, `url`) and runs `handle(conn)` in a thread per connection."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections = 0
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()

    def handle(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.sock.close()


def read_request(conn: socket.socket, buffer: bytes = b"") -> tuple[bytes, bytes] | None:
    """One request (head and Content-Length body) and what followed it, or None when the client hung up."""
    while b"\r\n\r\n" not in buffer:
        data = conn.recv(65536)
        if not data:
            return None
        buffer += data
    head, _, buffer = buffer.partition(b"\r\n\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(buffer) < length:
        data = conn.recv(65536)
        if not data:
            return None
        buffer += data
    return head + b"\r\n\r\n" + buffer[:length], buffer[length:]
