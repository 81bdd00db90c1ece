"""The agent runtimes the skill can switch, and the one this pod runs.

A runtime implements `runtime.AgentRuntime` in one module; a second runtime is that module and one
entry in `RUNTIMES` (plus the settings it reads). Obol agent pods run Hermes.
"""
from __future__ import annotations

from ..settings import Settings
from .hermes import HermesRuntime
from .runtime import AgentRuntime

RUNTIMES = {HermesRuntime.name: HermesRuntime}
DEFAULT_RUNTIME = HermesRuntime.name


def runtime_for(settings: Settings) -> AgentRuntime:
    """The runtime of the agent this skill serves, configured from `settings`."""
    return RUNTIMES[DEFAULT_RUNTIME](settings)


__all__ = ["RUNTIMES", "runtime_for"]
