"""The adoption record beside the Hermes config: what each adoption replaced, so it can be undone.

`<profile_home>/buy-x402/state.json` (dir 0700, file 0600):
`{"version": 1, "history": [{adopted, previous, purchase, at, status}], "events": [...]}`.
An adoption is recorded `pending` BEFORE the switch and marked `applied` after the verified write;
a pending entry whose `adopted` is the current model.default means the process died after the
switch, so it counts as applied. A corrupt file is an error, never silently reset: it is the only
record of what the agent used before.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from .errors import HermesConfigError
from .yamlfile import YamlParseError, atomic_write, parse_yaml

if TYPE_CHECKING:  # hermes re-exports this module's functions, so no runtime import back
    from .hermes import HermesConfig

STATE_VERSION = 1
STATE_DIR = "buy-x402"
STATE_NAME = "state.json"
MAX_EVENTS = 200


def state_path(cfg: HermesConfig) -> Path:
    return cfg.profile_home / STATE_DIR / STATE_NAME


@contextlib.contextmanager
def _state_lock(cfg: HermesConfig) -> Iterator[None]:
    """Own lock (not config_lock): callers may already hold that one, and flock does not nest."""
    directory = state_path(cfg).parent
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _load(cfg: HermesConfig) -> dict[str, Any]:
    path = state_path(cfg)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {"version": STATE_VERSION, "history": [], "events": []}
    except OSError as exc:
        raise HermesConfigError(f"the buy-x402 state file cannot be read ({exc.strerror}): {path}",
                                hint="run as the user that owns the Hermes home",
                                code="state_unreadable", data={"path": str(path)}) from None
    try:
        state = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        state = None
    if not (isinstance(state, dict) and state.get("version") == STATE_VERSION
            and isinstance(state.get("history"), list) and isinstance(state.get("events", []), list)
            and all(isinstance(entry, dict) for entry in state["history"])):
        raise HermesConfigError(
            f"the buy-x402 state file is corrupt: {path}",
            hint="inspect it and fix or move it aside; it records which default each adoption replaced",
            code="state_corrupt", data={"path": str(path)})
    state.setdefault("events", [])
    return state


def _save(cfg: HermesConfig, state: dict[str, Any]) -> None:
    data = (json.dumps(state, indent=2, sort_keys=False) + "\n").encode("utf-8")
    atomic_write(state_path(cfg), data, mode=0o600)


def _current_default(cfg: HermesConfig) -> str | None:
    """model.default as the file says now; None when it cannot be read (nothing then matches)."""
    try:
        data = parse_yaml(cfg.path.read_bytes())
    except (OSError, YamlParseError):
        return None
    from .hermes import current_model
    return current_model(data) if isinstance(data, dict) else None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_state(cfg: HermesConfig) -> dict[str, Any]:
    """The whole record (for `default show`); raises HermesConfigError when corrupt."""
    return _load(cfg)


def record_pending(cfg: HermesConfig, *, adopted: str, previous: str | None, purchase: str | None,
                   at: str | None = None) -> None:
    """Record an adoption before the switch. Older pending entries are settled first: one that
    switched (its model is the current default, `previous`) becomes applied, others are dropped."""
    with _state_lock(cfg):
        state = _load(cfg)
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
        _save(cfg, state)


def _newest_pending(history: list[dict]) -> int | None:
    for index in range(len(history) - 1, -1, -1):
        if history[index].get("status") == "pending":
            return index
    return None


def mark_applied(cfg: HermesConfig) -> None:
    """The verified switch happened: the newest pending adoption becomes applied."""
    with _state_lock(cfg):
        state = _load(cfg)
        index = _newest_pending(state["history"])
        if index is not None:
            state["history"][index]["status"] = "applied"
            _save(cfg, state)


def drop_pending(cfg: HermesConfig) -> None:
    """The write was refused or failed: forget the pending adoption so the history stays true."""
    with _state_lock(cfg):
        state = _load(cfg)
        index = _newest_pending(state["history"])
        if index is not None:
            del state["history"][index]
            _save(cfg, state)


def _last_index(history: list[dict], current: str | None, *, restored: bool = False) -> int | None:
    """Index of the adoption to undo. Before a restore, a pending entry counts when its model is
    the current default; after one (`restored`), when its previous model is."""
    for index in range(len(history) - 1, -1, -1):
        entry = history[index]
        if entry.get("status") == "applied":
            return index
        key = "previous" if restored else "adopted"
        if entry.get("status") == "pending" and current is not None and entry.get(key) == current:
            return index
    return None


def last_adoption(cfg: HermesConfig) -> dict | None:
    """The adoption a restore would undo: the newest applied one, or a pending one whose model is
    the current default (the process died after the switch). None when there is none."""
    state = _load(cfg)
    index = _last_index(state["history"], _current_default(cfg))
    return dict(state["history"][index]) if index is not None else None


def pop_adoption(cfg: HermesConfig, entry: dict | None = None) -> dict:
    """After a verified restore: remove and return the adoption it undid (`entry`, as returned by
    `last_adoption`, or else found from the restored default) and any stale entries after it, so
    repeated adoptions unwind in order."""
    with _state_lock(cfg):
        state = _load(cfg)
        history = state["history"]
        index = None
        if entry is not None:
            fields = ("adopted", "previous", "purchase", "at")
            matches = [i for i, e in enumerate(history) if all(e.get(f) == entry.get(f) for f in fields)]
            index = matches[-1] if matches else None
        if index is None:
            index = _last_index(history, _current_default(cfg), restored=True)
        if index is None:
            raise HermesConfigError("no adoption is recorded, so there is nothing to restore",
                                    hint="set a default with `buy.py default set MODEL`",
                                    code="nothing_to_restore", data={"path": str(state_path(cfg))})
        popped = history[index]
        del history[index:]
        _save(cfg, state)
        return popped


def record_event(cfg: HermesConfig, kind: str, **data: Any) -> None:
    """Note something that happened to the default (e.g. the guardian saw someone else change it)."""
    with _state_lock(cfg):
        state = _load(cfg)
        state["events"].append({"kind": kind, "at": _now(), **data})
        state["events"] = state["events"][-MAX_EVENTS:]
        _save(cfg, state)


__all__ = ["state_path", "read_state", "record_pending", "mark_applied", "drop_pending",
           "last_adoption", "pop_adoption", "record_event"]
