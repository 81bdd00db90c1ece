"""Where the time of one run goes: seconds per phase, for the `timings` of a JSON result.

A run moves from phase to phase (`switch`); a step inside a phase that must be told apart (the canary
inside the adoption) is a nested `phase`, and its time counts for it alone, so the phases never
overlap and their sum is the time spent in any of them (`total` less their sum: time in none).
"""
from __future__ import annotations

import contextlib
import time
from typing import Callable, Iterator


class Timings:
    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self.started = clock()
        self._current: str | None = None
        self._since = self.started
        self.phases: dict[str, float] = {}

    def switch(self, name: str | None) -> str | None:
        """From now on the time counts for phase `name` (None: for none); the phase it leaves."""
        now = self._clock()
        if self._current is not None:
            self.phases[self._current] = self.phases.get(self._current, 0.0) + (now - self._since)
        previous, self._current, self._since = self._current, name, now
        return previous

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """The block's time counts for `name`; afterwards for the phase that was running."""
        previous = self.switch(name)
        try:
            yield
        finally:
            self.switch(previous)

    def report(self, **inside: float) -> dict[str, float]:
        """Seconds per phase in the order first entered, the `total` since the start, and `inside`:
        parts of those phases measured on their own (e.g. the agent's CLI), shown when not zero."""
        self.switch(self._current)
        out = {name: round(seconds, 3) for name, seconds in self.phases.items()}
        out["total"] = round(self._clock() - self.started, 3)
        out.update({name: round(seconds, 3) for name, seconds in inside.items() if seconds})
        return out


__all__ = ["Timings"]
