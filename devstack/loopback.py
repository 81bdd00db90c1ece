"""The HTTP plumbing every simulated server of the devstack shares.

Keep-alive (HTTP/1.1 with Content-Length on every answer) because the skill reuses connections, and
TCP_NODELAY because headers and body leave in separate writes: without it a kept-alive connection
stalls ~40 ms per answer on Nagle + delayed ACK (the presign benchmark found this). Loopback only.
"""
from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class LoopbackHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, fmt: str, *args: Any) -> None:  # request lines are noise in the part logs
        pass

    def send_body(self, status: int, body: bytes, content_type: str = "application/json",
                  headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def send_json(self, status: int, value: Any, headers: dict[str, str] | None = None) -> None:
        self.send_body(status, json.dumps(value).encode(), headers=headers)

    def read_body(self) -> bytes:
        """The request body, sent with Content-Length or chunked (some HTTP clients stream bodies)."""
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

    def start_chunked(self, status: int, headers: dict[str, str]) -> None:
        """Status and headers of a chunked answer; then `write_chunk` each piece and `end_chunked`."""
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def write_chunk(self, data: bytes) -> None:
        if data:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

    def end_chunked(self, trailers: dict[str, str] | None = None) -> None:
        lines = "".join(f"{key}: {value}\r\n" for key, value in (trailers or {}).items())
        self.wfile.write(b"0\r\n" + lines.encode() + b"\r\n")
        self.wfile.flush()


def make_server(port: int, handler: type[BaseHTTPRequestHandler], **attrs: Any) -> ThreadingHTTPServer:
    """A threaded server on 127.0.0.1:`port`; `attrs` become class attributes of a handler subclass."""
    bound = type(handler.__name__, (handler,), attrs) if attrs else handler
    server = ThreadingHTTPServer(("127.0.0.1", port), bound)
    server.daemon_threads = True
    return server
