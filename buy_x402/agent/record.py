"""The adoption record beside the agent's config: what each adoption replaced, so it can be undone.

`<profile home>/buy-x402/state.json` (dir 0700, file 0600):
`{"version": 1, "history": [{adopted, previous, purchase, at, status}], "events": [...]}`.
An adoption is written once, as `pending`, BEFORE the switch, with the identity of the config file
then (device, inode, mtime: every rewrite changes it). Whether it took effect is read from the
config callers pass in (`current` default and its identity): a pending entry whose `adopted` is
current took effect; one whose `previous` is current in the very file it was recorded against did not
(the run stopped or failed before the switch); anything else means someone changed the default
since. The next adoption settles it (`applied` or dropped) in its own single write, so a `set`
rewrites the file once.

A corrupt file is an error for writers, never silently reset: it is the only record of what the
agent used before. Single malformed entries are skipped and reported (`problems`), so `default show`
still works. History and events are bounded; the file's size is checked before it is parsed.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from .. import shutdown
from ..errors import AgentConfigError
from ..yamlfile import FileTooLarge, atomic_write, read_limited, remove_stale_temps

STATE_VERSION = 1
STATE_NAME = "state.json"
MAX_EVENTS = 200
MAX_HISTORY = 50
MAX_STATE_BYTES = 1 << 20
_ENTRY_FIELDS = ("adopted", "previous", "purchase", "at")
_OPTIONAL = ("previous", "purchase", "at", "config")
_STATUSES = ("pending", "applied")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def entry_problem(entry: Any) -> str | None:
    """Why a history entry cannot be used, or None."""
    if not isinstance(entry, dict):
        return f"is a {type(entry).__name__}, not an object"
    if not isinstance(entry.get("adopted"), str) or not entry["adopted"]:
        return "has no `adopted` model"
    for key in _OPTIONAL:
        if entry.get(key) is not None and not isinstance(entry[key], str):
            return f"`{key}` is a {type(entry[key]).__name__}, not a string"
    if entry.get("status") not in _STATUSES:
        return f"`status` is {str(entry.get('status'))[:40]!r}, not pending or applied"
    return None


def took_effect(entry: dict, current: str | None, identity: str | None = None) -> bool | None:
    """Whether a pending adoption switched the default, judged by the config now: True (its model is
    current), False (its previous default still is, in the file it was recorded against), None
    (someone changed the default since: back to the previous one counts, the file was rewritten)."""
    if current is not None and entry.get("adopted") == current:
        return True
    if entry.get("previous") == current:
        recorded = entry.get("config")
        if recorded and identity and recorded != identity:
            return None
        return False
    return None


def _same(a: dict, b: dict) -> bool:
    return all(a.get(f) == b.get(f) for f in _ENTRY_FIELDS)


class AdoptionRecord:
    """The record in `directory` (created 0700 on first write)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / STATE_NAME
        self.problems: list[str] = []   # malformed entries skipped by the last read

    def _error(self, problem: str, hint: str, code: str, where: Path | None = None) -> AgentConfigError:
        where = where or self.path
        return AgentConfigError(f"the buy-x402 state {problem}: {where}", hint=hint, code=code,
                                data={"path": str(where)})

    def _not_a_directory(self) -> AgentConfigError:
        return self._error("directory is a file, not a directory",
                           "move that file aside; buy-x402 keeps its record in that directory", "state_unusable",
                           where=self.directory)

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """Its own lock, not the config lock: callers may hold that one, and flock does not nest.
        Temp files of a writer that was killed are removed here: every writer holds this lock."""
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        except (FileExistsError, NotADirectoryError):
            raise self._not_a_directory() from None
        except OSError as exc:
            raise self._error(f"directory cannot be used ({exc.strerror})",
                              "run as the user that owns the agent's home", "state_unusable",
                              where=self.directory) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            remove_stale_temps(self.path)
            yield
        finally:
            os.close(fd)

    def check(self) -> None:
        """AgentConfigError now, before anything is spent or switched, if the record could not be
        written later (a file where its directory should be, no permission, a corrupt file).
        Touches nothing: a refused switch leaves the record's directory exactly as it was."""
        if self.directory.exists() and not self.directory.is_dir():
            raise self._not_a_directory()
        self._load()
        existing = self.directory if self.directory.exists() else self.directory.parent
        if not os.access(existing, os.W_OK | os.X_OK):
            raise self._error("directory cannot be written (permission denied)",
                              "run as the user that owns the agent's home", "state_unusable", where=existing)

    def read(self) -> dict[str, Any]:
        """The record with only well-formed history entries and events; `problems` names the ones
        skipped. AgentConfigError when the file as a whole is unreadable or corrupt."""
        state = self._load()
        history, events = state["history"], state["events"]
        state = dict(state, history=[e for e in history if entry_problem(e) is None],
                     events=[e for e in events if isinstance(e, dict)])
        return state

    def _load(self) -> dict[str, Any]:
        """The file as it is (malformed entries kept, so a rewrite does not destroy them)."""
        self.problems = []
        try:
            raw = read_limited(self.path, MAX_STATE_BYTES)
        except FileNotFoundError:
            return {"version": STATE_VERSION, "history": [], "events": []}
        except NotADirectoryError:
            raise self._not_a_directory() from None
        except FileTooLarge:
            raise self._error(f"file is larger than {MAX_STATE_BYTES} bytes",
                              "inspect it and move it aside; a healthy record is a few KB", "state_corrupt") from None
        except OSError as exc:
            raise self._error(f"file cannot be read ({exc.strerror or exc})",
                              "run as the user that owns the agent's home", "state_unreadable") from None
        try:
            state = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            state = None
        if not (isinstance(state, dict) and state.get("version") == STATE_VERSION
                and isinstance(state.get("history"), list) and isinstance(state.get("events", []), list)):
            raise self._error("file is corrupt",
                              "inspect it and fix or move it aside; it records which default each adoption replaced",
                              "state_corrupt")
        state.setdefault("events", [])
        for index, entry in enumerate(state["history"]):
            problem = entry_problem(entry)
            if problem:
                self.problems.append(f"history entry {index + 1} {problem}; it is ignored")
        return state

    def _save(self, state: dict[str, Any]) -> None:
        state["history"] = state["history"][-MAX_HISTORY:]
        state["events"] = state["events"][-MAX_EVENTS:]
        data = (json.dumps(state, indent=2, sort_keys=False) + "\n").encode("utf-8")
        try:
            atomic_write(self.path, data, mode=0o600)
        except OSError as exc:
            raise self._error(f"file cannot be written ({exc.strerror or exc})",
                              "run as the user that owns the agent's home", "state_unwritable") from None

    def record_pending(self, *, adopted: str, previous: str | None, purchase: str | None,
                       at: str | None = None, config: str | None = None) -> dict:
        """Record an adoption before the switch, in one write that also settles the pending entries of
        earlier runs against `previous` (the default now) and `config` (the file's identity now).
        Returns the entry, for `drop`."""
        entry = {"adopted": adopted, "previous": previous, "purchase": purchase, "at": at or _now(),
                 "status": "pending", "config": config}
        with self._lock():
            state = self._load()
            history = []
            for old in state["history"]:
                if entry_problem(old) is None and old["status"] == "pending":
                    if took_effect(old, previous, config) is False:
                        continue  # it never switched the default: forget it
                    old["status"] = "applied"
                history.append(old)
            state["history"] = history + [entry]
            self._save(state)
        return dict(entry)

    def drop(self, entry: dict) -> None:
        """The switch `entry` was recorded for did not happen (refused, failed or stopped): forget it.
        Runs to the end even if a signal comes (the CLI reports that signal afterwards)."""
        with shutdown.critical(), self._lock():
            state = self._load()
            history = state["history"]
            for index in range(len(history) - 1, -1, -1):
                if isinstance(history[index], dict) and _same(history[index], entry) \
                        and history[index].get("status") == "pending":
                    del history[index]
                    self._save(state)
                    return

    def last(self, current: str | None, identity: str | None = None) -> dict | None:
        """The adoption a restore would undo, given the agent's `current` default (and its config
        file's `identity`): the newest one that took effect or that someone changed the default away
        from since."""
        history = self.read()["history"]
        for index in range(len(history) - 1, -1, -1):
            entry = history[index]
            if entry["status"] == "applied" or took_effect(entry, current, identity) is not False:
                return dict(entry)
        return None

    def pop(self, entry: dict) -> dict:
        """After a verified restore: remove `entry` (as `last` returned it) and any stale entries
        after it, so repeated adoptions unwind in order. AgentConfigError when it is no longer there."""
        with self._lock():
            state = self._load()
            history = state["history"]
            matches = [i for i, e in enumerate(history) if entry_problem(e) is None and _same(e, entry)]
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
            state = self._load()
            state["events"].append({"kind": kind, "at": _now(), **data})
            self._save(state)


__all__ = ["AdoptionRecord", "STATE_NAME", "MAX_HISTORY", "entry_problem", "took_effect"]
