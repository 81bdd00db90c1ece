"""The adoption record beside the agent's config: what each adoption replaced, so it can be undone.

`<profile home>/buy-x402/state.json` (dir 0700, file 0600):
`{"version": 1, "history": [{adopted, previous, purchase, at, status}], "events": [...]}`.
An adoption is recorded `pending` BEFORE the switch and marked `applied` after the verified write;
a pending entry whose `adopted` is the current default means the process died after the switch, so
it counts as applied. The record never reads the agent's config: callers pass the current default
they hold. A corrupt file is an error, never silently reset: it is the only record of what the
agent used before.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from ..errors import AgentConfigError
from ..yamlfile import atomic_write

STATE_VERSION = 1
STATE_NAME = "state.json"
MAX_EVENTS = 200
_ENTRY_FIELDS = ("adopted", "previous", "purchase", "at")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _newest_pending(history: list[dict]) -> int | None:
    for index in range(len(history) - 1, -1, -1):
        if history[index].get("status") == "pending":
            return index
    return None


class AdoptionRecord:
    """The record in `directory` (created 0700 on first write)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / STATE_NAME

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """Its own lock, not the config lock: callers may hold that one, and flock does not nest."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def read(self) -> dict[str, Any]:
        """The whole record (for `default show` and the guardian's events); AgentConfigError when corrupt."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {"version": STATE_VERSION, "history": [], "events": []}
        except OSError as exc:
            raise AgentConfigError(f"the buy-x402 state file cannot be read ({exc.strerror}): {self.path}",
                                   hint="run as the user that owns the agent's home",
                                   code="state_unreadable", data={"path": str(self.path)}) from None
        try:
            state = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            state = None
        if not (isinstance(state, dict) and state.get("version") == STATE_VERSION
                and isinstance(state.get("history"), list) and isinstance(state.get("events", []), list)
                and all(isinstance(entry, dict) for entry in state["history"])):
            raise AgentConfigError(
                f"the buy-x402 state file is corrupt: {self.path}",
                hint="inspect it and fix or move it aside; it records which default each adoption replaced",
                code="state_corrupt", data={"path": str(self.path)})
        state.setdefault("events", [])
        return state

    def _save(self, state: dict[str, Any]) -> None:
        data = (json.dumps(state, indent=2, sort_keys=False) + "\n").encode("utf-8")
        atomic_write(self.path, data, mode=0o600)

    def record_pending(self, *, adopted: str, previous: str | None, purchase: str | None,
                       at: str | None = None) -> None:
        """Record an adoption before the switch. Older pending entries are settled first: one that
        switched (its model is the current default, `previous`) becomes applied, others are dropped."""
        with self._lock():
            state = self.read()
            history = []
            for entry in state["history"]:
                if entry.get("status") == "pending":
                    if entry.get("adopted") != previous:
                        continue
                    entry["status"] = "applied"
                history.append(entry)
            history.append({"adopted": adopted, "previous": previous, "purchase": purchase,
                            "at": at or _now(), "status": "pending"})
            state["history"] = history
            self._save(state)

    def mark_applied(self) -> None:
        """The verified switch happened: the newest pending adoption becomes applied."""
        self._settle_newest_pending(applied=True)

    def drop_pending(self) -> None:
        """The write was refused or failed: forget the pending adoption so the history stays true."""
        self._settle_newest_pending(applied=False)

    def _settle_newest_pending(self, *, applied: bool) -> None:
        with self._lock():
            state = self.read()
            index = _newest_pending(state["history"])
            if index is None:
                return
            if applied:
                state["history"][index]["status"] = "applied"
            else:
                del state["history"][index]
            self._save(state)

    def last(self, current: str | None) -> dict | None:
        """The adoption a restore would undo, given the agent's `current` default: the newest applied
        one, or a pending one whose model is current (the process died after the switch)."""
        history = self.read()["history"]
        for index in range(len(history) - 1, -1, -1):
            entry = history[index]
            if entry.get("status") == "applied" or (
                    entry.get("status") == "pending" and current is not None and entry.get("adopted") == current):
                return dict(entry)
        return None

    def pop(self, entry: dict) -> dict:
        """After a verified restore: remove `entry` (as `last` returned it) and any stale entries
        after it, so repeated adoptions unwind in order. AgentConfigError when it is no longer there."""
        with self._lock():
            state = self.read()
            history = state["history"]
            matches = [i for i, e in enumerate(history) if all(e.get(f) == entry.get(f) for f in _ENTRY_FIELDS)]
            if not matches:
                raise AgentConfigError("no such adoption is recorded, so there is nothing to restore",
                                       hint="set a default with `buy.py default set MODEL`",
                                       code="nothing_to_restore", data={"path": str(self.path)})
            popped = history[matches[-1]]
            del history[matches[-1]:]
            self._save(state)
            return popped

    def note(self, kind: str, **data: Any) -> None:
        """Note something that happened to the default (e.g. the guardian saw someone else change it)."""
        with self._lock():
            state = self.read()
            state["events"].append({"kind": kind, "at": _now(), **data})
            state["events"] = state["events"][-MAX_EVENTS:]
            self._save(state)


__all__ = ["AdoptionRecord", "STATE_NAME"]
