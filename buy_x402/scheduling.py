"""The upkeep job: `process --all` every 5 minutes, run by the agent's own scheduler.

It keeps an adopted paid model funded (auto-refill) and guarded (the guardian restores the previous
default when the pool runs dry). `process` prints nothing unless something changed, so a scheduler
that delivers the job's output stays silent. `buy --set-default --auto-refill` and `schedule` use it.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from .agent.runtime import ScheduledJob
from .peers import Peers
from .settings import Settings

JOB_NAME = "buy-x402 process"
EVERY_MINUTES = 5
BUY_PY = Path(__file__).resolve().parents[1] / "buy.py"


def upkeep_job(settings: Settings) -> ScheduledJob:
    """The job, with the environment that makes it resolve the settings this run resolved."""
    return ScheduledJob(name=JOB_NAME, every_minutes=EVERY_MINUTES,
                        argv=(sys.executable, str(BUY_PY), "process", "--all"),
                        environment=tuple(settings.exports()),
                        description="`process --all` prints nothing unless something changed (empty stdout = silent).")


def ensure_schedule(peers: Peers) -> dict[str, Any]:
    """Create the job once (verified); already there: only its script is brought up to date."""
    return peers.agent.schedule(peers.agent_config, upkeep_job(peers.settings))


def remove_schedule(peers: Peers) -> dict[str, Any]:
    """Remove every copy of the job (verified)."""
    return peers.agent.unschedule(peers.agent_config, upkeep_job(peers.settings))


__all__ = ["JOB_NAME", "upkeep_job", "ensure_schedule", "remove_schedule"]
