"""`buy.py schedule [--remove]`: the Hermes cron job that runs `process --all` every 5 minutes.

Script mode (`--script … --no-agent`), not an LLM prompt: a job that needs the model to think
cannot rescue an agent whose paid model ran dry. The script is the job; Hermes delivers its stdout
and stays silent when it is empty, which `process` guarantees when nothing changed.
Hermes 0.19.0 `cron create/remove` exit 0 even when they fail, so every change is verified by
listing the jobs afterwards.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from argparse import Namespace
from pathlib import Path
from typing import Any

from .. import hermes
from ..errors import HermesConfigError
from ..result import Context, Result
from ..yamlfile import atomic_write
from .common import Peers

JOB_NAME = "buy-x402 process"
SCRIPT_NAME = "buy-x402-process.sh"
EVERY = "every 5m"
CLI_TIMEOUT_S = 60.0
BUY_PY = Path(__file__).resolve().parents[2] / "buy.py"
_JOB_LINE = re.compile(r"^\s+([0-9a-f]{6,})\s+\[[^\]]*\]\s*$")
_NAME_LINE = re.compile(r"^\s+Name:\s+(.*?)\s*$")


def run(ctx: Context, args: Namespace) -> Result:
    peers = Peers(ctx)
    if args.remove:
        return Result("schedule", remove_schedule(peers))
    return Result("schedule", ensure_schedule(peers))


def _script_env(peers: Peers) -> list[tuple[str, str]]:
    """The settings the cron job's `process --all` needs, as the current run resolved them."""
    s = peers.settings
    kubeconfig = ":".join(os.path.abspath(p) for p in s.kubeconfig.split(":") if p) if s.kubeconfig else None
    pairs = [("HOME", s.home), ("HERMES_HOME", os.path.abspath(s.hermes_home)), ("KUBECONFIG", kubeconfig),
             ("AGENT_NAMESPACE", s.agent_namespace), ("REMOTE_SIGNER_URL", s.remote_signer_url),
             ("ERPC_URL", s.erpc_url), ("ERPC_NETWORK", s.default_chain), ("X402_BUYER_URL", s.x402_buyer_url),
             ("HERMES_BIN", s.hermes_bin), ("OBOL_BUYER_USER_AGENT", s.user_agent),
             ("OBOL_X402_AUTH_TTL", s.auth_ttl), ("BUY_X402_SERVICE_ACCOUNT_DIR", s.service_account_dir)]
    return [(k, str(v)) for k, v in pairs if v not in (None, "")]


def script_text(peers: Peers) -> str:
    lines = ["#!/bin/bash",
             "# Written by `buy.py schedule`: the Hermes cron job \"%s\" runs this %s." % (JOB_NAME, EVERY),
             "# `process --all` prints nothing unless something changed (empty stdout = silent).",
             "set -e"]
    lines += [f"export {key}={shlex.quote(value)}" for key, value in _script_env(peers)]
    lines.append(f"exec {shlex.quote(sys.executable)} {shlex.quote(str(BUY_PY))} process --all")
    return "\n".join(lines) + "\n"


def _cli(peers: Peers, cfg: hermes.HermesConfig, *args: str) -> str:
    """Run `hermes -p PROFILE cron ARGS…` (argv list, timeout, HERMES_HOME explicit); its stdout."""
    binary = peers.settings.hermes_bin
    if not binary:
        raise HermesConfigError("no Hermes CLI found, so the cron job cannot be managed",
                                hint="set HERMES_BIN to the hermes executable", code="no_hermes_cli")
    argv = [binary, "-p", cfg.profile or "default", "cron", *args]
    try:
        code, out, err = hermes.run_cli(cfg, argv, CLI_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise HermesConfigError(f"`hermes cron {args[0]}` did not finish within {CLI_TIMEOUT_S:g} s",
                                code="hermes_cli_timeout") from None
    except OSError as exc:
        raise HermesConfigError(f"cannot run the Hermes CLI {binary}: {exc.strerror}",
                                hint="set HERMES_BIN to the hermes executable", code="no_hermes_cli") from None
    if code != 0:
        raise HermesConfigError(f"`hermes cron {args[0]}` exited {code}: {' '.join((err or out).split())[:300]}",
                                code="hermes_cli_failed")
    return out


def list_jobs(peers: Peers, cfg: hermes.HermesConfig) -> list[tuple[str, str]]:
    """(id, name) of every Hermes cron job of this profile, paused ones included."""
    jobs: list[tuple[str, str]] = []
    job_id = None
    for line in _cli(peers, cfg, "list", "--all").splitlines():
        if m := _JOB_LINE.match(line):
            job_id = m.group(1)
        elif (m := _NAME_LINE.match(line)) and job_id:
            jobs.append((job_id, m.group(1)))
            job_id = None
    return jobs


def _ours(jobs: list[tuple[str, str]]) -> list[str]:
    return [job_id for job_id, name in jobs if name == JOB_NAME]


def ensure_schedule(peers: Peers) -> dict[str, Any]:
    """Write the script and create the cron job once (verified); `buy --set-default --auto-refill` calls this."""
    cfg = peers.hermes_config
    ids = _ours(list_jobs(peers, cfg))  # first: no Hermes CLI means nothing is written
    scripts = cfg.profile_home / "scripts"
    scripts.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = scripts / SCRIPT_NAME
    text = script_text(peers).encode()
    try:
        current = path.read_bytes()
    except OSError:
        current = None
    if current != text:
        atomic_write(path, text, mode=0o700)
    os.chmod(path, 0o700)
    created = False
    if not ids:
        out = _cli(peers, cfg, "create", EVERY, "--name", JOB_NAME, "--script", SCRIPT_NAME, "--no-agent")
        ids = _ours(list_jobs(peers, cfg))
        if not ids:
            raise HermesConfigError(f"Hermes did not create the cron job {JOB_NAME!r}: {' '.join(out.split())[:300]}",
                                    hint=f"run `hermes cron list` and check {path}", code="cron_not_created")
        created = True
    return {"job": JOB_NAME, "id": ids[0], "script": str(path), "schedule": EVERY, "created": created,
            "script_updated": current != text}


def remove_schedule(peers: Peers) -> dict[str, Any]:
    """Remove the cron job (every copy) and its script; verified by listing."""
    cfg = peers.hermes_config
    ids = _ours(list_jobs(peers, cfg))
    for job_id in ids:
        _cli(peers, cfg, "remove", job_id)
    left = _ours(list_jobs(peers, cfg))
    if left:
        raise HermesConfigError(f"Hermes did not remove the cron job {JOB_NAME!r} ({', '.join(left)})",
                                hint="run `hermes cron list` and `hermes cron remove ID`", code="cron_not_removed")
    path = cfg.profile_home / "scripts" / SCRIPT_NAME
    path.unlink(missing_ok=True)
    return {"job": JOB_NAME, "removed": bool(ids), "ids": ids, "script": str(path)}


__all__ = ["run", "ensure_schedule", "remove_schedule", "list_jobs", "script_text", "JOB_NAME", "SCRIPT_NAME"]
