"""The seam between the skill and the agent whose model it switches: the protocol every runtime keeps.

The skill changes one thing in the agent, its default chat model, and schedules one job. A runtime
says where the config the agent itself reads is (`resolve`), refuses what must not be touched
(`preflight`: the operator owns it, the file is unsafe to edit), reads the current default and the
LiteLLM endpoint, writes a new default, verifies the write, puts the original back, keeps the
adoption record beside the config, and runs the upkeep job on its own scheduler.
`buy_x402.adoption` drives these steps as one transaction; nothing outside `agent/` names a runtime.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ContextManager, Protocol

from .configfile import Snapshot
from .record import AdoptionRecord


@dataclass(frozen=True)
class AgentConfig:
    """The one config file the agent itself reads, resolved once and used by every later step."""
    home: Path            # the runtime's home as configured
    profile: str | None   # None: the default profile
    profile_home: Path    # the home the runtime uses for that profile (the record lives there)
    path: Path            # the config file, symlinks followed
    managed: bool         # the operator owns the config: never written


@dataclass(frozen=True)
class WriteResult:
    method: str           # "hermes-cli", "fallback", ...: which writer changed the file
    detail: str


@dataclass(frozen=True)
class ScheduledJob:
    """A command the agent's scheduler runs by itself, every `every_minutes`, with `environment`."""
    name: str
    every_minutes: int
    argv: tuple[str, ...]
    environment: tuple[tuple[str, str], ...]
    description: str = ""


class AgentRuntime(Protocol):
    name: str
    cli_seconds: float  # time spent in the runtime's own CLI this run (for the run's timings)

    def resolve(self) -> AgentConfig:
        """The config file the agent reads, exactly as the runtime itself would pick it."""

    def lock(self, config: AgentConfig) -> ContextManager:
        """Serialise read-check-write-verify of concurrent runs; opening errors raise here."""

    def preflight(self, config: AgentConfig) -> Snapshot:
        """The file as it is, if it may be written: not managed, readable, parsable, the expected shape."""

    def read(self, config: AgentConfig) -> Snapshot:
        """The file as it is, for reading only (no managed-mode refusal)."""

    def current_default(self, snapshot: Snapshot) -> str | None:
        """The model the agent chats with now."""

    def model_endpoint(self, snapshot: Snapshot) -> tuple[str | None, str | None]:
        """(base URL, API key) of the LiteLLM the agent talks to."""

    def check_model_name(self, model: str) -> None:
        """UsageError for a name the runtime would store as something else."""

    def write_default(self, config: AgentConfig, before: Snapshot, model: str) -> WriteResult:
        """Set the default model; exit status is no proof of a write, `verify` decides."""

    def verify(self, config: AgentConfig, before: Snapshot, model: str) -> None:
        """AgentConfigError unless the file says `model` and nothing else changed. Does not undo."""

    def put_back(self, config: AgentConfig, before: Snapshot) -> bool:
        """Make the file exactly `before` again; False when it already was. OSError when it cannot."""

    def record(self, config: AgentConfig) -> AdoptionRecord:
        """The adoption record kept beside this config."""

    def schedule(self, config: AgentConfig, job: ScheduledJob) -> dict:
        """Make the runtime run `job` (once, verified); the facts for the output."""

    def unschedule(self, config: AgentConfig, job: ScheduledJob) -> dict:
        """Stop running `job` (every copy, verified); the facts for the output."""


__all__ = ["AgentRuntime", "AgentConfig", "WriteResult", "ScheduledJob"]
