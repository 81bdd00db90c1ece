"""How an agent's YAML config file is read, locked, compared and put back, whatever the runtime.

A runtime module (e.g. `hermes.py`) decides what its file must contain and words the refusals; this
module holds the mechanics every runtime needs to change one key safely: a snapshot of the exact
bytes, mode and owner; an exclusive lock shared by concurrent runs; a read-back that names every
difference (paths only, never values: the file holds the LiteLLM key); and an atomic put-back.
"""
from __future__ import annotations

import fcntl
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..yamlfile import YamlParseError, atomic_write, parse_yaml


@dataclass(frozen=True)
class Snapshot:
    """The config as it was before a write: what a put-back restores and what verify compares."""
    raw: bytes
    mode: int
    uid: int
    gid: int
    data: dict


class NotARegularFile(OSError):
    """The config path names a directory, a device or a socket."""


def read_file(path: Path) -> tuple[bytes, os.stat_result]:
    """The bytes and the stat of a regular file, from one open; OSError (FileNotFoundError,
    PermissionError, NotARegularFile, ...) when it cannot be read."""
    fd = os.open(path, os.O_RDONLY)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotARegularFile(f"{path} is not a regular file")
        with os.fdopen(os.dup(fd), "rb") as handle:
            return handle.read(), st
    finally:
        os.close(fd)


def snapshot(raw: bytes, st: os.stat_result, data: dict) -> Snapshot:
    return Snapshot(raw=raw, mode=stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid, data=data)


class ConfigLock:
    """An exclusive flock on a lock file beside the config, shared by concurrent buy.py runs (the
    runtimes themselves take no such lock). The file is opened when the object is made, so a missing
    or unwritable directory raises OSError there, before `with` waits for the lock."""

    def __init__(self, lock_path: Path) -> None:
        self._fd: int | None = None
        self._fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)

    def __enter__(self) -> "ConfigLock":
        assert self._fd is not None, "a ConfigLock is used once"
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock
            self._fd = None

    def __del__(self) -> None:
        self.close()


def differences(before: Any, after: Any, prefix: str = "") -> list[str]:
    """Dotted paths that differ between two parsed configs; names only, never values."""
    if isinstance(before, dict) and isinstance(after, dict):
        paths = []
        for key in list(before) + [k for k in after if k not in before]:
            where = f"{prefix}.{key}" if prefix else str(key)
            if key not in after:
                paths.append(f"{where} (removed)")
            elif key not in before:
                paths.append(f"{where} (added)")
            else:
                paths.extend(differences(before[key], after[key], where))
        return paths
    if before != after or type(before) is not type(after):
        return [prefix or "(top level)"]
    return []


class ReadBackError(Exception):
    """The file cannot be read or parsed back after a write; the message says which."""


def read_back(path: Path, before: Snapshot) -> tuple[Any, list[str]]:
    """(the file parsed now, how its mode or owner changed since `before`); ReadBackError when it
    cannot be read or is no longer YAML."""
    try:
        st = os.stat(path)
        raw = path.read_bytes()
    except OSError as exc:
        raise ReadBackError(f"the file cannot be read back ({exc.strerror})") from None
    try:
        data = parse_yaml(raw)
    except YamlParseError as exc:
        raise ReadBackError(f"the file is no longer valid YAML ({exc})") from None
    problems = []
    mode = stat.S_IMODE(st.st_mode)
    if mode != before.mode:
        problems.append(f"file mode is {mode:o}, was {before.mode:o}")
    if (st.st_uid, st.st_gid) != (before.uid, before.gid):
        problems.append(f"owner is {st.st_uid}:{st.st_gid}, was {before.uid}:{before.gid}")
    return data, problems


def put_back(path: Path, before: Snapshot) -> bool:
    """Make the file exactly the snapshot again (bytes, mode, owner), atomically. False when it
    already was, so nothing was written; OSError when it could not be written."""
    try:
        st = os.stat(path)
        if (path.read_bytes() == before.raw and stat.S_IMODE(st.st_mode) == before.mode
                and (st.st_uid, st.st_gid) == (before.uid, before.gid)):
            return False
    except OSError:
        pass
    atomic_write(path, before.raw, mode=before.mode, uid=before.uid, gid=before.gid)
    return True


__all__ = ["Snapshot", "NotARegularFile", "read_file", "snapshot", "ConfigLock", "differences", "ReadBackError",
           "read_back", "put_back"]
