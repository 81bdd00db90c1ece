"""How an agent's YAML config file is read, locked, compared and put back, whatever the runtime.

A runtime module (e.g. `hermes.py`) decides what its file must contain and words the refusals; this
module holds the mechanics every runtime needs to change one key safely: a snapshot of the exact
bytes, mode and owner; an exclusive lock shared by concurrent runs; a read-back that names every
difference (paths only, never values: the file holds the LiteLLM key); and an atomic put-back.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import os
import signal
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..yamlfile import FileTooLarge, YamlParseError, atomic_write, parse_yaml


@dataclass(frozen=True)
class Snapshot:
    """The config as it was before a write: what a put-back restores and what verify compares."""
    raw: bytes
    mode: int
    uid: int
    gid: int
    data: dict
    identity: str = ""   # device, inode and mtime: any rewrite of the file changes it


def identity_of(st: os.stat_result) -> str:
    return f"{st.st_dev}:{st.st_ino}:{st.st_mtime_ns}"


class NotARegularFile(OSError):
    """The config path names a directory, a device or a socket."""


MAX_CONFIG_BYTES = 1 << 20  # an agent config is a few KB; 1 MiB parses in well under a second


def read_file(path: Path, limit: int = MAX_CONFIG_BYTES) -> tuple[bytes, os.stat_result]:
    """The bytes and the stat of a regular file, from one open; OSError (FileNotFoundError,
    PermissionError, NotARegularFile, FileTooLarge, ...) when it cannot be read. The size is
    checked before anything is read."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not block the open
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotARegularFile(f"{path} is not a regular file")
        if st.st_size > limit:
            raise FileTooLarge(f"{path} is {st.st_size} bytes, more than {limit}")
        with os.fdopen(os.dup(fd), "rb") as handle:
            data = handle.read(limit + 1)
        if len(data) > limit:
            raise FileTooLarge(f"{path} is more than {limit} bytes")
        return data, st
    finally:
        os.close(fd)


def owner_can_be_kept(uid: int, gid: int) -> bool:
    """Whether a rewrite by this process can give the file back its owner and group: root can;
    another user only for its own file and a group it belongs to (chown(2))."""
    if os.geteuid() == 0:
        return True
    return uid == os.geteuid() and (gid == os.getegid() or gid in os.getgroups())


def snapshot(raw: bytes, st: os.stat_result, data: dict) -> Snapshot:
    return Snapshot(raw=raw, mode=stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid, data=data,
                    identity=identity_of(st))


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
        self._held = True
        return self

    def fileno(self) -> int | None:
        """The locked descriptor while the lock is held (a child that inherits it holds the lock
        too), else None."""
        return self._fd if getattr(self, "_held", False) else None

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._fd is not None:
            self._held = False
            os.close(self._fd)  # closing releases the flock (once no child holds a copy)
            self._fd = None

    def __del__(self) -> None:
        self.close()


def _load_prctl():
    """libc's prctl on Linux, else None (the child then only dies by the process-group kill)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()
_PR_SET_PDEATHSIG = 1


def die_with_parent():
    """A `preexec_fn` that makes the child get SIGKILL when this process dies, however it dies; None
    where the platform cannot. Everything it needs is looked up before the fork."""
    if _PRCTL is None:
        return None
    parent = os.getpid()
    prctl, kill, getppid, sigkill = _PRCTL, os.kill, os.getppid, int(signal.SIGKILL)

    def in_child() -> None:
        prctl(_PR_SET_PDEATHSIG, sigkill, 0, 0, 0)
        if getppid() != parent:  # the parent died before prctl took effect
            kill(os.getpid(), sigkill)
    return in_child


def excerpt(text: str, secret: str | None = None, limit: int = 300) -> str:
    """One line of CLI output for a message, with the LiteLLM key masked should it appear."""
    text = " ".join(text.split())
    if secret:
        text = text.replace(secret, "****")
    return text if len(text) <= limit else text[:limit] + "…"


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
    if type(before) is not type(after) or (before != after and not _both_nan(before, after)):
        return [prefix or "(top level)"]
    return []


def _both_nan(a: Any, b: Any) -> bool:
    return isinstance(a, float) and isinstance(b, float) and a != a and b != b


class ReadBackError(Exception):
    """The file cannot be read or parsed back after a write; the message says which."""


def read_back(path: Path, before: Snapshot) -> tuple[Any, list[str]]:
    """(the file parsed now, how its mode or owner changed since `before`); ReadBackError when it
    cannot be read or is no longer YAML."""
    try:
        raw, st = read_file(path)
    except OSError as exc:
        raise ReadBackError(f"the file cannot be read back ({exc.strerror or exc})") from None
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


class OwnerNotRestored(Exception):
    """The bytes and the mode were put back, but not the owner (only root may give a file away)."""

    def __init__(self, now: tuple[int, int], was: tuple[int, int]) -> None:
        super().__init__(f"owner is {now[0]}:{now[1]}, was {was[0]}:{was[1]}")
        self.now, self.was = now, was


def put_back(path: Path, before: Snapshot) -> bool:
    """Make the file exactly the snapshot again (bytes, mode, owner), atomically. False when it
    already was, so nothing was written; OSError when it could not be written; OwnerNotRestored
    when the bytes and mode are back but the owner could not be given back."""
    try:
        raw, st = read_file(path)
        if (raw == before.raw and stat.S_IMODE(st.st_mode) == before.mode
                and (st.st_uid, st.st_gid) == (before.uid, before.gid)):
            return False
    except OSError:
        pass
    if not atomic_write(path, before.raw, mode=before.mode, uid=before.uid, gid=before.gid):
        st = os.stat(path)
        raise OwnerNotRestored((st.st_uid, st.st_gid), (before.uid, before.gid))
    return True


__all__ = ["Snapshot", "identity_of", "NotARegularFile", "read_file", "owner_can_be_kept", "OwnerNotRestored", "MAX_CONFIG_BYTES",
           "die_with_parent", "excerpt", "snapshot", "ConfigLock", "differences", "ReadBackError",
           "read_back", "put_back"]
