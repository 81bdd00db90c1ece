"""The signing record beside the adoption record: every batch of vouchers signed, per purchase.

`<profile home>/buy-x402/signings.json` (dir 0700, file 0600), written like the adoption record
(temp file, fsync, rename, under its own lock):
`{"version": 1, "purchases": {"<namespace>/<name>": {"count", "atomic", "signings": [{id, at, count, atomic, by}]}}}`.
`count`/`atomic` are lifetime totals; signings older than `KEEP_S` are forgotten (the totals keep them).
A signing is reserved BEFORE the vouchers are signed and released only when their write failed, so a
process that dies in between leaves an over-count, never an under-count. The spend caps (`caps.py`)
read it; the PurchaseRequest's own annotation and the vouchers are the fallbacks when it is lost.
A corrupt file is an error, never silently reset: resetting it would reopen the caps.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from .caps import History, Signing
from .errors import AgentConfigError
from .yamlfile import atomic_write

LEDGER_VERSION = 1
LEDGER_NAME = "signings.json"
KEEP_S = 7 * 24 * 3600


def key(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


class SigningLedger:
    """The signing record in `directory` (created 0700 on first write)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / LEDGER_NAME

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.directory / ".signings.lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise self._error(f"cannot be locked ({exc.strerror})", "unwritable") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _error(self, problem: str, code: str) -> AgentConfigError:
        return AgentConfigError(f"the buy-x402 signing record {problem}: {self.path}",
                                hint="run as the user that owns the agent's home; a corrupt file must be "
                                     "repaired or moved aside (the purchases' annotations keep the totals)",
                                code=f"signings_{code}", data={"path": str(self.path)})

    def read(self) -> dict[str, History]:
        """Every purchase's history; AgentConfigError when the file cannot be read or is corrupt."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise self._error(f"cannot be read ({exc.strerror})", "unreadable") from None
        try:
            state = json.loads(raw.decode("utf-8"))
            if not (isinstance(state, dict) and state.get("version") == LEDGER_VERSION
                    and isinstance(state.get("purchases"), dict)):
                raise ValueError("not a signing record")
            return {name: History.from_json(value) for name, value in state["purchases"].items()}
        except (UnicodeDecodeError, ValueError, KeyError, TypeError):
            raise self._error("is corrupt", "corrupt") from None

    def history(self, namespace: str, name: str) -> History | None:
        """What this record holds for the purchase; None when it holds nothing (lost, or signed elsewhere)."""
        return self.read().get(key(namespace, name))

    def _save(self, purchases: dict[str, History]) -> None:
        state: dict[str, Any] = {"version": LEDGER_VERSION,
                                 "purchases": {name: h.to_json() for name, h in sorted(purchases.items())}}
        try:
            atomic_write(self.path, (json.dumps(state, indent=2) + "\n").encode("utf-8"), mode=0o600)
        except OSError as exc:
            raise self._error(f"cannot be written ({exc.strerror})", "unwritable") from None

    def reserve(self, namespace: str, name: str, signing: Signing, *, new_purchase: bool = False,
                check: Callable[[History | None], None] | None = None) -> None:
        """Record `signing` before its vouchers are signed. `check` sees the history under the lock
        (another run's reservation included) and raises to refuse; `new_purchase` starts the purchase's
        history afresh (the name's earlier purchase no longer exists)."""
        with self._lock():
            purchases = self.read()
            current = None if new_purchase else purchases.get(key(namespace, name))
            if check is not None:
                check(current)
            keep_after = time.time() - KEEP_S
            purchases[key(namespace, name)] = (current or History()).plus(signing, keep_after=keep_after)
            self._save(purchases)

    def release(self, namespace: str, name: str, signing_id: str) -> None:
        """Forget a reserved signing whose vouchers were never written (discarded)."""
        with self._lock():
            purchases = self.read()
            current = purchases.get(key(namespace, name))
            if current is None:
                return
            purchases[key(namespace, name)] = current.minus(signing_id)
            self._save(purchases)


__all__ = ["SigningLedger", "LEDGER_NAME", "KEEP_S"]
