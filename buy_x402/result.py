"""What a command returns: data, not text. `cli` renders it once (human text or one JSON object)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import BuyError, ExitCode
from .settings import Settings


@dataclass
class Result:
    command: str
    data: dict[str, Any] = field(default_factory=dict)
    exit_code: ExitCode = ExitCode.OK
    error: BuyError | None = None          # set for partial outcomes (exit 3/4): the facts are still in data
    warnings: list[str] = field(default_factory=list)


@dataclass
class Context:
    """What a command gets from the CLI: resolved settings and the callbacks that report progress.

    `notify` and `progress` write to stderr (the CLI owns them); commands never print. `stream`, when
    set, writes one line to stdout at once (the CLI owns it too).
    """
    settings: Settings
    notify: Callable[[str], None]
    progress: Callable[[str, int, int], None]
    warn: Callable[[str], None]
    stream: Callable[[str], None] | None = None   # stdout, line by line, for output that must not wait (pay-agent)
