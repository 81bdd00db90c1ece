"""The lean HTTP path of the signer batch: HTTP/1.1 on one kept-alive socket, no library around it.

A batch sends hundreds of tiny JSON POSTs to the pod's remote signer. Around each of them `requests`
spends ~0.4 ms of CPU (preparing, merging settings, hooks, cookies, urllib3's pool) and `http.client`
~0.15 ms (a buffered reader per answer, headers through the email parser): more than the signer's own
work per signature (bench/presign.py measures both). Here one exchange is one `sendall` and, usually,
one `recv`.

It keeps the rules of `http.py`: no proxies, no redirects (an answer is returned as it came), the
User-Agent, one deadline per exchange (`http.deadline`'s watchdog cuts the socket), an answer of at
most `max_answer` bytes, and every failure as `TransportError`. What it reads is HTTP/1.1 as RFC 9112
has it: interim 1xx answers skipped, a body by `Content-Length`, chunked, or up to the close; anything
else (a bad status line, a folded or malformed header, two lengths) is a refusal, never a guess. A
kept-alive connection the peer closed while idle is reopened once: only idempotent requests belong here.
"""
from __future__ import annotations

import re
import socket
import urllib.parse

from .errors import TransportError
from .http import DEFAULT_TIMEOUT_S, deadline, timed_out
from .urls import mask

MAX_HEAD = 1 << 16
_STATUS_LINE = re.compile(rb"^HTTP/1\.([01]) (\d{3})(?: .*)?$")
_HEADER = re.compile(rb"^([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*(.*?)[ \t]*$")
_CHUNK_SIZE = re.compile(rb"^([0-9A-Fa-f]{1,8})[ \t]*(?:;.*)?$")


class _Stale(Exception):
    """The peer closed a kept-alive connection before sending a byte of the answer."""


class _Broken(Exception):
    """The answer is not HTTP/1.1 this client can read; the text says how."""


class DirectConnection:
    """One kept-alive connection to one http:// origin, used by one thread for exchanges in a row."""

    def __init__(self, base_url: str, *, peer: str, user_agent: str, timeout: float = DEFAULT_TIMEOUT_S,
                 max_answer: int = 1 << 16) -> None:
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname or parts.username or parts.password:
            raise ValueError(f"DirectConnection takes an http:// origin without credentials, not {mask(base_url)}")
        self.url, self.peer, self.timeout, self.max_answer = base_url, peer, timeout, max_answer
        self._address = (parts.hostname, parts.port or 80)
        host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        self._host = host if parts.port is None else f"{host}:{parts.port}"
        self._prefix = parts.path.rstrip("/")
        self._user_agent = user_agent
        self._sock: socket.socket | None = None
        self._buffer = b""

    def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        """POST `body` (JSON) to `path` under the origin; (status, answer body)."""
        request = (f"POST {self._prefix}{path} HTTP/1.1\r\nHost: {self._host}\r\nUser-Agent: {self._user_agent}\r\n"
                   f"Accept: application/json\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                   "\r\n").encode("latin-1") + body
        reused = self._sock is not None
        try:
            return self._exchange(request)
        except _Stale:
            if not reused:
                raise self._unreachable("closed the connection without answering") from None
        try:
            return self._exchange(request)
        except _Stale:
            raise self._unreachable("closed the connection without answering") from None

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock, self._buffer = None, b""

    # -- one exchange ---------------------------------------------------------------------------
    def _exchange(self, request: bytes) -> tuple[int, bytes]:
        with deadline(self.timeout) as exchange:
            try:
                if self._sock is None:
                    self._sock = socket.create_connection(self._address, timeout=self.timeout)
                    self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock = self._sock
                exchange.watch(sock)
                sock.sendall(request)
                status, answer, keep = self._read_answer(sock)
            except _Stale:
                self.close()
                if exchange.expired:
                    raise timed_out(self.peer, self.url, self.timeout) from None
                raise
            except _Broken as exc:
                self.close()
                if exchange.expired:
                    raise timed_out(self.peer, self.url, self.timeout) from None
                raise TransportError(f"the {self.peer} at {mask(self.url)} sent an answer that is not HTTP/1.1: "
                                     f"{exc}", hint=f"check the {self.peer} at {mask(self.url)}") from None
            except OSError as exc:
                self.close()
                if exchange.expired or isinstance(exc, TimeoutError):
                    raise timed_out(self.peer, self.url, self.timeout) from exc
                raise self._unreachable(f"failed ({exc.__class__.__name__})") from exc
            except BaseException:  # an answer too large, a signal: the connection is in no state to reuse
                self.close()
                raise
            if exchange.expired:  # cut short by the deadline, however well it parsed
                self.close()
                raise timed_out(self.peer, self.url, self.timeout)
        if not keep:
            self.close()
        return status, answer

    def _unreachable(self, what: str) -> TransportError:
        return TransportError(f"cannot reach the {self.peer} at {mask(self.url)}: the connection {what}",
                              hint=f"check that the {self.peer} is running and reachable")

    def _recv(self, sock: socket.socket, started: bool) -> None:
        data = sock.recv(65536)
        if not data:
            if not started:
                raise _Stale()
            raise _Broken("the connection closed in the middle of the answer")
        self._buffer += data

    def _read_answer(self, sock: socket.socket) -> tuple[int, bytes, bool]:
        started = bool(self._buffer)
        while True:  # interim 1xx answers come before the real one
            while (end := self._buffer.find(b"\r\n\r\n")) < 0:
                if len(self._buffer) > MAX_HEAD:
                    raise _Broken(f"its header is larger than {MAX_HEAD} bytes")
                self._recv(sock, started)
                started = True
            head, self._buffer = self._buffer[:end], self._buffer[end + 4:]
            minor, status, headers = _parse_head(head)
            if not 100 <= status < 200:
                break
        keep = minor == 1 and "close" not in headers.get("connection", "").lower()
        if "transfer-encoding" in headers:
            if headers["transfer-encoding"].lower() != "chunked":
                raise _Broken(f"unsupported Transfer-Encoding {headers['transfer-encoding'][:40]!r}")
            body = self._read_chunked(sock)
            keep = keep and "content-length" not in headers  # both: the length is ignored, the connection closed
        elif "content-length" in headers:
            if not headers["content-length"].isdigit():
                raise _Broken("a bad Content-Length")
            length = int(headers["content-length"])
            if length > self.max_answer:
                raise self._too_large()
            while len(self._buffer) < length:
                self._recv(sock, True)
            body, self._buffer = self._buffer[:length], self._buffer[length:]
        elif status in (204, 304):
            body = b""
        else:  # the body runs to the close
            keep = False
            while True:
                if len(self._buffer) > self.max_answer:
                    raise self._too_large()
                data = sock.recv(65536)
                if not data:
                    break
                self._buffer += data
            body, self._buffer = self._buffer, b""
        if self._buffer:  # bytes after the answer: nothing was asked for them
            keep = False
        return status, body, keep

    def _read_chunked(self, sock: socket.socket) -> bytes:
        parts: list[bytes] = []
        size_so_far = 0
        while True:
            while (end := self._buffer.find(b"\r\n")) < 0:
                if len(self._buffer) > MAX_HEAD:
                    raise _Broken("a chunk size line is too long")
                self._recv(sock, True)
            line, self._buffer = self._buffer[:end], self._buffer[end + 2:]
            match = _CHUNK_SIZE.match(line)
            if not match:
                raise _Broken("a bad chunk size")
            size = int(match[1], 16)
            if size == 0:
                while (end := self._buffer.find(b"\r\n")) != 0:  # trailers, up to the empty line
                    if end > 0:
                        self._buffer = self._buffer[end + 2:]
                    elif len(self._buffer) > MAX_HEAD:
                        raise _Broken("its trailers are too long")
                    else:
                        self._recv(sock, True)
                self._buffer = self._buffer[2:]
                return b"".join(parts)
            size_so_far += size
            if size_so_far > self.max_answer:
                raise self._too_large()
            while len(self._buffer) < size + 2:
                self._recv(sock, True)
            if self._buffer[size:size + 2] != b"\r\n":
                raise _Broken("a chunk does not end where its size says")
            parts.append(self._buffer[:size])
            self._buffer = self._buffer[size + 2:]

    def _too_large(self) -> TransportError:
        return TransportError(f"the {self.peer} at {mask(self.url)} answered more than {self.max_answer} bytes",
                              hint=f"check the {self.peer} at {mask(self.url)}")


def _parse_head(head: bytes) -> tuple[int, int, dict[str, str]]:
    """(HTTP minor version, status, headers with lower-case names) of an answer's head."""
    lines = head.split(b"\r\n")
    match = _STATUS_LINE.match(lines[0])
    if not match:
        raise _Broken(f"a bad status line {lines[0][:60]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        field = _HEADER.match(line) if b"\r" not in line and b"\n" not in line else None
        if not field:  # obsolete line folding, a space before the colon, a bare CR: refused (RFC 9112 §5)
            raise _Broken(f"a malformed header line {line[:60]!r}")
        name, value = field[1].decode("ascii").lower(), field[2].decode("latin-1")
        if name in headers:
            if name == "content-length" and headers[name] != value:
                raise _Broken("two different Content-Length headers")
            if name not in ("content-length",):
                headers[name] = f"{headers[name]}, {value}"
            continue
        headers[name] = value
    return int(match[1]), int(match[2]), headers


__all__ = ["DirectConnection", "MAX_HEAD"]
