"""Stopping cleanly, whatever stops the process: SIGTERM and SIGHUP take the same path as Ctrl-C.

Python ends a process on SIGTERM without unwinding anything: a Hermes CLI child would be left to
write after the config lock is gone, and the adoption record would keep a `pending` entry. `install`
(called by `cli.main`) turns SIGINT, SIGTERM and SIGHUP into an `Interrupted` exception raised in
the main thread, so every `finally`/`except BaseException` on the way out runs: the child is
killed, the config put back, the record settled. Code that must not be cut short once it has begun
(a put-back, settling the record) runs inside `critical()`: a signal that arrives there is held and
raised when the block ends. A second signal while one is being handled is only noted.

The exception a handler raises can be lost: Python swallows exceptions raised inside at-fork hooks
(spawning the Hermes CLI), `__del__` methods and weakref callbacks ("Exception ignored in …"). So a
change commits only through `commit()`, which raises the signal that came if its exception never
arrived; and such a lost `Interrupted` is not printed as an ignored-exception traceback.
"""
from __future__ import annotations

import contextlib
import signal
import sys
import threading
from typing import Any, Iterator

from .errors import Interrupted

SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class _State:
    def __init__(self) -> None:
        self.depth = 0                  # nesting of critical() blocks
        self.held: int | None = None    # a signal that arrived inside a critical block
        self.received: int | None = None  # the first signal this run got (raised or held)
        self.decided = False            # the outcome stands: later signals are ignored


_state = _State()


def _handler(signum: int, frame: Any) -> None:
    if _state.decided or _state.received is not None:
        return  # already on the way out: let the cleanup finish
    _state.received = signum
    if _state.depth:
        _state.held = signum
        return
    raise Interrupted(signum)


def received() -> int | None:
    """The signal this run got, if any (the CLI reports a run that got one as interrupted)."""
    return _state.received


@contextlib.contextmanager
def install(*, restore: bool = True) -> Iterator[None]:
    """Deliver SIGINT/SIGTERM/SIGHUP as `Interrupted` for the duration of the block (main thread
    only; elsewhere, e.g. a test calling `cli.main` from a worker thread, nothing changes). With
    `restore`, the previous handlers come back at the end (an in-process caller); without it, a
    process that called `finishing` keeps ignoring signals until it exits."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in SIGNALS}
    global _state
    saved, _state = _state, _State()
    hook, sys.unraisablehook = sys.unraisablehook, _unraisable(sys.unraisablehook)
    for signum in SIGNALS:
        signal.signal(signum, _handler)
    try:
        yield
    finally:
        if restore:
            for signum, handler in previous.items():
                signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
            sys.unraisablehook = hook
            _state = saved


def finishing() -> None:
    """The run's outcome is decided (only reporting is left): from here a signal is ignored, so it can
    no longer turn a result into "interrupted". The CLI reports a signal that came before as one."""
    _state.decided = True


def commit() -> None:
    """The commit point of a change (call it where undoing is still possible): raise `Interrupted` for a
    signal that came and was not acted on (its exception lost, or held), else decide the outcome, so a
    later signal is ignored and the change stands."""
    if _state.received is not None and not _state.decided:
        signum, _state.held = _state.received, None
        raise Interrupted(signum)
    _state.decided = True


def _unraisable(previous: Any) -> Any:
    """sys.unraisablehook that keeps quiet about a lost `Interrupted` (commit() raises it again)."""
    def hook(unraisable: Any) -> None:
        if isinstance(unraisable.exc_value, Interrupted):
            return
        previous(unraisable)
    return hook


@contextlib.contextmanager
def critical() -> Iterator[None]:
    """Hold signals until the block ends, then raise the one that came (unless the block is already
    raising: that exception goes on, and the CLI still reports the run as interrupted)."""
    _state.depth += 1
    try:
        yield
    except BaseException:
        _state.depth -= 1
        raise
    _state.depth -= 1
    if _state.depth == 0 and _state.held is not None:
        signum, _state.held = _state.held, None
        raise Interrupted(signum)


__all__ = ["install", "finishing", "commit", "critical", "received", "SIGNALS"]
