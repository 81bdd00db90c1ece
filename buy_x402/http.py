"""The one place HTTP sessions are built: timeouts, User-Agent, no redirects, one deadline per exchange.

Redirects are never followed by default: a paid request that follows a redirect could hand a signed
voucher to a host the agent never priced. Transport failures become `TransportError` here.

A `requests` timeout bounds each socket read, not the exchange: a peer that sends its headers and
then one byte every few seconds would hold a run forever. So every exchange has one deadline
(`deadline`): the connections it uses are registered with a watchdog thread, which shuts their
sockets down when the deadline passes; the blocked read returns at once and the exchange is
reported as timed out, even if the truncated answer happened to parse.

An answer from a peer nobody vouches for (a seller's 402) is read with `max_bytes`: past that size the
exchange stops and fails, so a hostile body cannot fill the pod's memory within its deadline.
"""
from __future__ import annotations

import contextlib
import heapq
import itertools
import socket
import threading
import time
from typing import Any, Iterator

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from .errors import TransportError
from .urls import mask

DEFAULT_TIMEOUT_S = 15.0
MAX_CHALLENGE_BYTES = 1024 * 1024  # a 402/401 challenge is a few KB; a larger answer is not read whole


# ------------------------------------------------------------------------------------ deadlines

class Exchange:
    """One request and its answer, which must be over by `due` (time.monotonic())."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.due = time.monotonic() + timeout
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._open = True

    def watch(self, sock: socket.socket) -> None:
        """Cut `sock` at the deadline. The socket itself, not its connection: http.client hands the
        socket over to the response and forgets it when the peer said `Connection: close`."""
        with self._lock:
            if not self._open:
                return
            self._sockets.append(sock)
            expired = self.expired
        if expired:
            _shut(sock)

    def expire(self) -> None:
        with self._lock:
            if not self._open:
                return
            self.expired = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shut(sock)

    def close(self) -> None:
        with self._lock:
            self._open = False
            self._sockets.clear()

    def left(self) -> float:
        return self.due - time.monotonic()


def _shut(sock: socket.socket) -> None:
    """Wake up a read blocked on `sock` (the base class method also works for a TLS socket)."""
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Watchdog:
    """One daemon thread that expires exchanges when their deadline passes."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Exchange]] = []
        self._counter = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def add(self, exchange: Exchange) -> None:
        """Wake the thread only when `exchange` is due before everything it already waits for: in a
        batch every exchange is due later than the one before, so the thread sleeps through it (a
        wake-up per exchange was a thread switch per signature: bench/presign.py)."""
        with self._cond:
            earliest = self._heap[0][0] if self._heap else None
            heapq.heappush(self._heap, (exchange.due, next(self._counter), exchange))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="http-deadlines", daemon=True)
                self._thread.start()
            if earliest is None or exchange.due < earliest:
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap:
                    self._cond.wait()
                due, _, exchange = self._heap[0]
                wait = due - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
            exchange.expire()


_watchdog = _Watchdog()
_current = threading.local()


@contextlib.contextmanager
def deadline(timeout: float) -> Iterator[Exchange]:
    """Every connection used in this thread inside the block is cut when `timeout` seconds have
    passed since it began; check `exchange.expired` afterwards."""
    exchange = Exchange(timeout)
    active = _current.__dict__.setdefault("exchanges", [])
    active.append(exchange)  # nested deadlines (a watch around its request) all watch the sockets
    _watchdog.add(exchange)
    try:
        yield exchange
    finally:
        exchange.close()
        active.remove(exchange)


def _register(connection: Any) -> None:
    sock = getattr(connection, "sock", None)
    if sock is not None:
        for exchange in getattr(_current, "exchanges", ()):
            exchange.watch(sock)


class _Watched:
    """A urllib3 connection that puts itself under the current exchange's deadline."""

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        _register(self)

    def request(self, *args: Any, **kwargs: Any) -> Any:
        _register(self)  # a kept-alive connection: its socket exists already
        return super().request(*args, **kwargs)  # type: ignore[misc]


class _HTTPConnection(_Watched, HTTPConnection):
    pass


class _HTTPSConnection(_Watched, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class _Adapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}


# -------------------------------------------------------------------------------------- sessions

def make_session(user_agent: str, *, pool_size: int = 10) -> requests.Session:
    """A session with a connection pool big enough for bounded-concurrency signing."""
    session = requests.Session()
    session.headers["User-Agent"] = user_agent
    session.trust_env = False  # no proxies/netrc from the environment: the pod talks to its peers directly
    adapter = _Adapter(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def timed_out(peer: str, url: str, timeout: float) -> TransportError:
    return TransportError(f"{peer} at {mask(url)} did not answer within {timeout:g} s",
                          hint=f"check that the {peer} is running and reachable", code="timeout")


def send(session: requests.Session, method: str, url: str, *, peer: str,
         timeout: float = DEFAULT_TIMEOUT_S, allow_redirects: bool = False,
         max_bytes: int | None = None, **kwargs: Any) -> requests.Response:
    """Send one request and read its answer within `timeout` seconds in all (with `stream=True`, only
    until the headers are in: the caller reads the body). With `max_bytes`, a body larger than that
    (after decompression) fails with `TransportError` code `too_large` and is never held whole.
    Connection failures and timeouts become `TransportError` naming `peer`; a URL's credentials never
    appear in a message."""
    total = timeout[-1] if isinstance(timeout, tuple) else timeout
    if max_bytes is not None:
        kwargs["stream"] = True
    with deadline(float(total)) as exchange:
        try:
            response = session.request(method, url, timeout=timeout, allow_redirects=allow_redirects, **kwargs)
            if max_bytes is not None:
                _read_at_most(response, max_bytes, peer, url)
        except requests.Timeout as exc:
            raise timed_out(peer, url, total) from exc
        except requests.RequestException as exc:
            if exchange.expired:
                raise timed_out(peer, url, total) from exc
            raise TransportError(f"cannot reach the {peer} at {mask(url)}: {exc.__class__.__name__}",
                                 hint=f"check that the {peer} is running and reachable") from exc
        if exchange.expired:  # the answer was cut short by the deadline, however well it parsed
            response.close()
            raise timed_out(peer, url, total)
    return response


def _read_at_most(response: requests.Response, max_bytes: int, peer: str, url: str) -> None:
    """Read the body into `response.content`, or stop one chunk past `max_bytes` and refuse."""
    body = bytearray()
    for chunk in response.iter_content(chunk_size=64 * 1024):
        body += chunk
        if len(body) > max_bytes:
            response.close()
            raise TransportError(f"the {peer} at {mask(url)} sent an answer larger than {max_bytes:,} bytes; "
                                 "it was not read further",
                                 hint=f"this is not an answer the skill can use: check the URL of the {peer}",
                                 code="too_large", data={"max_bytes": max_bytes})
    response._content = bytes(body)  # what `requests` itself stores once a streamed body is read


__all__ = ["make_session", "send", "MAX_CHALLENGE_BYTES", "deadline", "Exchange", "timed_out", "DEFAULT_TIMEOUT_S"]
