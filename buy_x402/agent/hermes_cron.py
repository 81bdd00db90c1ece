"""The Hermes cron job that runs the upkeep (`process --all`), for `HermesRuntime.schedule`.

`hermes cron create/remove` exit 0 even when they fail, so every change is verified by listing the
jobs afterwards. The job runs in script mode (`--script … --no-agent`): a job that needs the model
to think cannot rescue an agent whose paid model ran dry. Hermes delivers the script's stdout and
stays silent when it is empty. `runtime` is the HermesRuntime: its `cli` and `run_cli`.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

from ..errors import AgentConfigError
from ..yamlfile import atomic_write
from .configfile import excerpt
from .runtime import AgentConfig, ScheduledJob

CRON_TIMEOUT_S = 60.0
# `hermes cron list --all`: a job is an id line, then indented fields including its name.
_JOB_LINE = re.compile(r"^\s+([0-9a-f]{6,})\s+\[[^\]]*\]\s*$")
_NAME_LINE = re.compile(r"^\s+Name:\s+(.*?)\s*$")


def _cron(runtime: Any, config: AgentConfig, *args: str) -> str:
    """`hermes -p PROFILE cron ARGS…`; its stdout. Failures name the command."""
    if not runtime.cli:
        raise AgentConfigError("no Hermes CLI found, so the cron job cannot be managed",
                               hint="set HERMES_BIN to the hermes executable", code="no_hermes_cli")
    try:
        code, out, err = runtime.run_cli(config, ["cron", *args], CRON_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise AgentConfigError(f"`hermes cron {args[0]}` did not finish within {CRON_TIMEOUT_S:g} s",
                               code="hermes_cli_timeout") from None
    except OSError as exc:
        raise AgentConfigError(f"cannot run the Hermes CLI {runtime.cli}: {exc.strerror}",
                               hint="set HERMES_BIN to the hermes executable", code="no_hermes_cli") from None
    if code != 0:
        raise AgentConfigError(f"`hermes cron {args[0]}` exited {code}: {excerpt(err or out)}",
                               code="hermes_cli_failed")
    return out

def _job_ids(runtime: Any, config: AgentConfig, name: str) -> list[str]:
    """Ids of this profile's cron jobs called `name`, paused ones included."""
    ids, job_id = [], None
    for line in _cron(runtime, config, "list", "--all").splitlines():
        if m := _JOB_LINE.match(line):
            job_id = m.group(1)
        elif (m := _NAME_LINE.match(line)) and job_id:
            if m.group(1) == name:
                ids.append(job_id)
            job_id = None
    return ids

def _script_path(config: AgentConfig, job: ScheduledJob) -> Path:
    """Hermes runs scripts by file name from `<profile home>/scripts`; the name follows the job's."""
    return config.profile_home / "scripts" / (job.name.replace(" ", "-") + ".sh")

def _script_text(job: ScheduledJob) -> bytes:
    every = f"every {job.every_minutes}m"
    lines = ["#!/bin/bash", f"# Written by `buy.py schedule`: the Hermes cron job \"{job.name}\" runs this {every}."]
    lines += [f"# {job.description}"] if job.description else []
    lines.append("set -e")
    lines += [f"export {key}={shlex.quote(value)}" for key, value in job.environment]
    lines.append("exec " + " ".join(shlex.quote(arg) for arg in job.argv))
    return ("\n".join(lines) + "\n").encode()

def schedule(runtime: Any, config: AgentConfig, job: ScheduledJob) -> dict[str, Any]:
    """Write the job's script and create the cron job once (verified by listing)."""
    ids = _job_ids(runtime, config, job.name)  # first: no Hermes CLI means nothing is written
    path = _script_path(config, job)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    text = _script_text(job)
    try:
        current = path.read_bytes()
    except OSError:
        current = None
    if current != text:
        atomic_write(path, text, mode=0o700)
    os.chmod(path, 0o700)
    every = f"every {job.every_minutes}m"
    created = False
    if not ids:
        out = _cron(runtime, config, "create", every, "--name", job.name, "--script", path.name, "--no-agent")
        ids = _job_ids(runtime, config, job.name)
        if not ids:
            raise AgentConfigError(f"Hermes did not create the cron job {job.name!r}: {excerpt(out)}",
                                   hint=f"run `hermes cron list` and check {path}", code="cron_not_created")
        created = True
    return {"job": job.name, "id": ids[0], "script": str(path), "schedule": every, "created": created,
            "script_updated": current != text}

def unschedule(runtime: Any, config: AgentConfig, job: ScheduledJob) -> dict[str, Any]:
    """Remove the cron job (every copy) and its script; verified by listing."""
    ids = _job_ids(runtime, config, job.name)
    for job_id in ids:
        _cron(runtime, config, "remove", job_id)
    left = _job_ids(runtime, config, job.name)
    if left:
        raise AgentConfigError(f"Hermes did not remove the cron job {job.name!r} ({', '.join(left)})",
                               hint="run `hermes cron list` and `hermes cron remove ID`", code="cron_not_removed")
    path = _script_path(config, job)
    path.unlink(missing_ok=True)
    return {"job": job.name, "removed": bool(ids), "ids": ids, "script": str(path)}


__all__ = ["schedule", "unschedule", "CRON_TIMEOUT_S"]
