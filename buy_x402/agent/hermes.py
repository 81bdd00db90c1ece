"""The Hermes agent runtime (hermes-agent 0.19.0): its config file and profiles, writer and cron.

The rules come from hermes-agent 0.19.0 (see reference/hermes-config.md): `hermes config set` exits
0 in managed mode without writing, silently wipes an unparseable file and coerces `123`/`yes`/`1.5`
to non-strings. So every write is preceded by a pre-flight that refuses those cases and followed by
a read-back that compares the whole parsed file. The CLI child is stopped together with buy.py,
whatever stops it (`run_cli`). The upkeep cron job is in `hermes_cron.py`.
"""
from __future__ import annotations

import contextlib
import copy
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from .. import shutdown
from ..errors import AgentConfigError, UsageError
from ..settings import Settings
from ..urls import shown
from ..yamlfile import FileTooLarge, YamlParseError, atomic_write, dump_yaml, parse_yaml, remove_stale_temps
from . import configfile, hermes_cron
from .configfile import ConfigLock, Snapshot, die_with_parent, excerpt
from .record import AdoptionRecord
from .runtime import AgentConfig, ScheduledJob, WriteResult

CONFIG_NAME = "config.yaml"
LOCK_NAME = ".buy-x402.lock"
MANAGED_MARKER = ".managed"
STATE_DIR = "buy-x402"
DEFAULT_CLI_TIMEOUT_S = 30.0
# Hermes' own profile id rule and reserved names (hermes_cli/profiles.py, 0.19.0).
_PROFILE_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_RESERVED_PROFILES = frozenset({"hermes", "test", "tmp", "root", "sudo"})
# Values `hermes config set` would store as bool (hermes_cli/config.py:set_config_value).
_COERCED_WORDS = frozenset({"true", "false", "yes", "no", "on", "off"})


def _hermes_root(home: Path, user_home: Path) -> Path:
    """Where Hermes looks for `active_profile` (hermes_constants.get_default_hermes_root)."""
    native = user_home / ".hermes"
    try:
        home.resolve().relative_to(native.resolve())
        return native
    except ValueError:
        pass
    if home.parent.name == "profiles":
        return home.parent.parent
    return home


def _read_active_profile(root: Path) -> str | None:
    """The sticky profile name, or None for the default; Hermes skips an unreadable file."""
    try:
        name = (root / "active_profile").read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    if not name or name.casefold() == "default":
        return None
    return name.lower()


def _refuse(config: AgentConfig, problem: str, hint: str, code: str) -> AgentConfigError:
    return AgentConfigError(f"{problem}: {config.path}", hint=hint, code=code, data={"path": str(config.path)})


def _expected_after(before: Snapshot, model: str) -> dict:
    """The parsed config a correct write leaves: only model.default differs."""
    data = copy.deepcopy(before.data)
    if isinstance(data.get("model"), dict):
        data["model"]["default"] = model
    else:
        data["model"] = {"default": model}
    return data


class HermesRuntime:
    """The `AgentRuntime` of a Hermes agent, from HERMES_HOME / HERMES_BIN / HERMES_MANAGED (settings)."""

    name = "hermes"

    def __init__(self, settings: Settings, *, cli_timeout_s: float = DEFAULT_CLI_TIMEOUT_S) -> None:
        self.settings = settings
        self.cli = settings.agent_cli
        self.cli_timeout_s = cli_timeout_s
        self._lock: ConfigLock | None = None
        self.cli_seconds = 0.0  # spent in the Hermes CLI's own runs (the run's timings report it)

    # --- which file (set-default step 2) ---------------------------------------------------------

    def resolve(self) -> AgentConfig:
        """The config file exactly as `hermes` would pick it for this HERMES_HOME.

        AgentConfigError when the active profile is invalid or missing, or when the layout would
        make the CLI and the gateway read different files.
        """
        home = Path(self.settings.agent_home)
        if home.parent.name == "profiles":
            # HERMES_HOME already names a profile: Hermes uses it as is and ignores active_profile.
            profile: str | None = home.name
            profile_home = home
        else:
            root = _hermes_root(home, Path(self.settings.home))
            if root.resolve() != home.resolve():
                raise AgentConfigError(
                    f"HERMES_HOME {home} lies inside {root} without being it or a profile of it; "
                    f"Hermes would read profiles from {root}, so the config it uses is ambiguous",
                    hint=f"set HERMES_HOME to {root} or to {root}/profiles/<name>",
                    code="ambiguous_home", data={"path": str(home)})
            profile = _read_active_profile(root)
            profile_home = home
            if profile is not None:
                if not _PROFILE_ID_RE.match(profile) or profile in _RESERVED_PROFILES:
                    raise AgentConfigError(
                        f"{root / 'active_profile'} names {profile!r}, which is not a valid Hermes profile",
                        hint="run `hermes profile use default` or fix the active_profile file",
                        code="bad_profile", data={"path": str(root / "active_profile")})
                profile_home = home / "profiles" / profile
                if not profile_home.is_dir():
                    raise AgentConfigError(
                        f"the active Hermes profile {profile!r} has no directory {profile_home}",
                        hint=f"create it with `hermes profile create {profile}` or switch back with "
                             "`hermes profile use default`",
                        code="missing_profile", data={"path": str(profile_home)})
        path = Path(os.path.realpath(profile_home / CONFIG_NAME))
        managed = (self.settings.agent_managed or (home / MANAGED_MARKER).exists()
                   or (profile_home / MANAGED_MARKER).exists())
        return AgentConfig(home=home, profile=profile, profile_home=profile_home, path=path, managed=managed)

    def record(self, config: AgentConfig) -> AdoptionRecord:
        return AdoptionRecord(config.profile_home / STATE_DIR)

    # --- pre-flight (step 3) ---------------------------------------------------------------------

    def _check_managed(self, config: AgentConfig) -> None:
        """Managed mode means the operator owns the config: never write around it."""
        if config.managed:
            raise AgentConfigError(
                f"Hermes runs in managed mode (HERMES_MANAGED is set or a {MANAGED_MARKER} file exists "
                f"in {config.profile_home}); the operator owns {config.path} and it is not changed",
                hint="ask the operator to change model.default in the managed configuration",
                code="managed", data={"path": str(config.path)})

    def preflight(self, config: AgentConfig) -> Snapshot:
        """Not managed, exists, readable, YAML, mapping root, usable `model`, and an owner a rewrite
        can keep. Called under `lock`, so temp files of a writer killed earlier are removed here."""
        self._check_managed(config)
        remove_stale_temps(config.path)
        before = self.read(config)
        if not configfile.owner_can_be_kept(before.uid, before.gid):
            me = f"{os.geteuid()}:{os.getegid()}"
            raise _refuse(config, f"the Hermes config is owned by {before.uid}:{before.gid} and buy.py runs as "
                          f"{me}, so any rewrite would leave it owned by {me}",
                          f"run buy.py as the user that owns the Hermes config (uid {before.uid})",
                          "owner_would_change")
        return before

    def read(self, config: AgentConfig) -> Snapshot:
        """The file validated as `preflight` does, without the managed refusal (read-only callers)."""
        try:
            raw, st = configfile.read_file(config.path)
        except FileNotFoundError:
            raise _refuse(config, "the Hermes config does not exist",
                          "check HERMES_HOME and the active profile; Hermes must have been set up",
                          "config_missing") from None
        except PermissionError:
            raise _refuse(config, "the Hermes config cannot be read (permission denied)",
                          "run as the user that owns the Hermes home", "config_unreadable") from None
        except configfile.NotARegularFile:
            raise _refuse(config, "the Hermes config is not a regular file",
                          "point HERMES_HOME at a directory holding config.yaml", "config_unreadable") from None
        except FileTooLarge:
            raise _refuse(config, f"the Hermes config is larger than {configfile.MAX_CONFIG_BYTES} bytes, so it is "
                          "not read", "an agent config is a few KB: check what filled it, and trim it by hand",
                          "config_too_large") from None
        except OSError as exc:
            raise _refuse(config, f"the Hermes config cannot be read ({exc.strerror})",
                          "check HERMES_HOME and the file", "config_unreadable") from None
        try:
            data = parse_yaml(raw)
        except YamlParseError as exc:
            raise _refuse(config, f"the Hermes config is not valid YAML ({exc})",
                          "fix the file by hand; `hermes config set` would silently replace it",
                          "config_not_yaml") from None
        if not isinstance(data, dict):
            kind = "empty" if data is None else f"a {type(data).__name__}, not a mapping"
            raise _refuse(config, f"the Hermes config is {kind}",
                          "restore a config.yaml whose top level is a mapping with a `model` key",
                          "config_not_mapping")
        model = data.get("model")
        if not isinstance(model, (dict, str)):
            what = "has no `model` key" if model is None else "has a `model` that is neither a mapping nor a string"
            raise _refuse(config, f"the Hermes config {what}",
                          "set `model:` with `default`, `base_url` and `api_key` in config.yaml",
                          "config_bad_model")
        return configfile.snapshot(raw, st, data)

    def current_default(self, snapshot: Snapshot) -> str | None:
        """`model` as a string, else model.default, else model.model (as Hermes reads it)."""
        return _current_model(snapshot.data)

    def model_endpoint(self, snapshot: Snapshot) -> tuple[str | None, str | None]:
        """(model.base_url, model.api_key): the LiteLLM the agent talks to and its key."""
        model = snapshot.data.get("model")
        if not isinstance(model, dict):
            return None, None
        base_url, api_key = model.get("base_url"), model.get("api_key")
        return (base_url if isinstance(base_url, str) and base_url else None,
                api_key if isinstance(api_key, str) and api_key else None)

    def check_model_name(self, model: str) -> None:
        """Refuse names Hermes 0.19.0 would store as a non-string or rewrite when loading."""
        problem = None
        if not model or not model.strip():
            problem = "is empty"
        elif model != model.strip() or any(ord(ch) < 32 or ord(ch) == 127 for ch in model):
            problem = "has surrounding whitespace or control characters"
        elif model.lower() in _COERCED_WORDS:
            problem = "would be stored as a boolean by `hermes config set`"
        elif model.isdigit() or model.replace(".", "", 1).isdigit():
            problem = "would be stored as a number by `hermes config set`"
        elif "${" in model:
            problem = "contains `${`, which Hermes expands as an environment variable"
        if problem:
            raise UsageError(f"model name {shown(model, 60)} {problem}",
                             hint="pass the exact model id, e.g. paid/<remote-model>", code="bad_model_name")

    # --- write, verify, put back (steps 8-9) -----------------------------------------------------

    def lock(self, config: AgentConfig) -> ConfigLock:
        """The config lock; while it is held, a Hermes CLI child holds it too (see `run_cli`)."""
        lock_path = config.path.parent / LOCK_NAME
        try:
            self._lock = ConfigLock(lock_path)
        except FileNotFoundError:
            raise _refuse(config, "the Hermes config directory does not exist",
                          "check HERMES_HOME and the active profile; Hermes must have been set up",
                          "config_missing") from None
        except OSError as exc:
            raise _refuse(config, f"cannot create the lock file {lock_path} ({exc.strerror})",
                          "run as the user that owns the Hermes home", "config_unwritable") from None
        return self._lock

    def run_cli(self, config: AgentConfig, args: list[str], timeout_s: float) -> tuple[int, str, str]:
        """`hermes -p PROFILE ARGS…`, stopped together with buy.py whatever stops it.

        The child runs in its own process group (a timeout or a signal kills it and its children),
        dies with SIGKILL the moment buy.py dies (PR_SET_PDEATHSIG, even on SIGKILL of buy.py), and
        inherits the config lock's descriptor: flock is released only when the last holder exits,
        so a child can never write after the lock is released. `-p` pins the profile resolved
        here; HERMES_HOME is the resolved home."""
        assert self.cli, "callers check that a Hermes CLI is configured"
        argv = [self.cli, "-p", config.profile or "default", *args]
        env = dict(os.environ)  # the child's environment, not a setting: HERMES_HOME must be the resolved home
        env["HERMES_HOME"] = str(config.home)
        held = self._lock.fileno() if self._lock is not None else None
        started = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, errors="replace", start_new_session=True,
                                pass_fds=(held,) if held is not None else (), preexec_fn=die_with_parent())
        try:
            out, err = proc.communicate(timeout=timeout_s)
        except BaseException:  # a timeout, or a signal (its own session receives none from the terminal)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with shutdown.critical():  # reap it before the lock can be released
                proc.communicate()
            raise
        finally:
            self.cli_seconds += time.perf_counter() - started
        return proc.returncode, out, err

    def write_default(self, config: AgentConfig, before: Snapshot, model: str) -> WriteResult:
        """`hermes config set -- model.default MODEL`, else the fallback writer.

        Call under `lock`, after `preflight`. Exit 0 is not proof of a write (managed mode exits 0
        too): `verify` decides. A managed-scope refusal by the CLI is never written around.
        """
        self._check_managed(config)
        self.check_model_name(model)
        secret = self.model_endpoint(before)[1]
        if not self.cli:
            why = "no Hermes CLI found (HERMES_BIN unset, none installed)"
        else:
            try:  # `--` lets a model name start with "-"
                rc, out, err = self.run_cli(config, ["config", "set", "--", "model.default", model],
                                            self.cli_timeout_s)
            except FileNotFoundError:
                why = f"Hermes CLI {self.cli} does not exist"
            except PermissionError:
                why = f"Hermes CLI {self.cli} is not executable"
            except subprocess.TimeoutExpired:
                why = f"Hermes CLI timed out after {self.cli_timeout_s:g} s"
            else:
                if "Cannot set" in err:
                    raise AgentConfigError(
                        f"the Hermes CLI refused to set model.default: {excerpt(err, secret)}",
                        hint="the operator pins this setting; ask them to change it",
                        code="managed", data={"path": str(config.path)})
                if rc == 0:
                    return WriteResult("hermes-cli", excerpt(out, secret) or "exit 0")
                why = f"Hermes CLI exited {rc}: {excerpt(err or out, secret)}"
        try:
            self._write_fallback(config, before, model)
        except OSError as exc:
            raise _refuse(config, f"{why}, and the direct edit failed too ({exc.strerror or exc}); the file is "
                          "unchanged", "run as the user that owns the Hermes home", "write_failed") from None
        return WriteResult("fallback", why)

    def _write_fallback(self, config: AgentConfig, before: Snapshot, model: str) -> None:
        """Edit config.yaml directly: re-read it, set model.default, replace it atomically (mode, owner kept)."""
        data = _expected_after(self.read(config), model)
        atomic_write(config.path, dump_yaml(data), mode=before.mode, uid=before.uid, gid=before.gid,
                     keep_owner=True)

    def verify(self, config: AgentConfig, before: Snapshot, model: str) -> None:
        """model.default == model and every other key, the mode and the owner as before."""
        try:
            data, mode_owner = configfile.read_back(config.path, before)
        except configfile.ReadBackError as exc:
            differences = [str(exc)]
        else:
            differences = []
            if not (isinstance(data, dict) and isinstance(data.get("model"), dict)
                    and data["model"].get("default") == model):
                actual = _current_model(data) if isinstance(data, dict) else None
                differences.append(f"model.default is {actual!r}, expected {model!r}")
            differences += [p for p in configfile.differences(_expected_after(before, model), data)
                            if p != "model.default"]
            differences += mode_owner
        if differences:
            raise AgentConfigError(
                f"the write to {config.path} did not verify ({'; '.join(differences)})",
                hint="check who else writes the Hermes config, then retry",
                code="write_not_verified", data={"path": str(config.path), "differences": differences})

    def put_back(self, config: AgentConfig, before: Snapshot) -> bool:
        return configfile.put_back(config.path, before)

    # --- the upkeep job: a Hermes cron job in script mode (hermes_cron.py) -------------------------

    def schedule(self, config: AgentConfig, job: ScheduledJob) -> dict[str, Any]:
        """Write the job's script and create the cron job once (verified by listing)."""
        return hermes_cron.schedule(self, config, job)

    def unschedule(self, config: AgentConfig, job: ScheduledJob) -> dict[str, Any]:
        """Remove the cron job (every copy) and its script; verified by listing."""
        return hermes_cron.unschedule(self, config, job)


def _current_model(data: dict) -> str | None:
    model = data.get("model")
    if isinstance(model, str):
        return model or None
    if isinstance(model, dict):
        for key in ("default", "model"):
            value = model.get(key)
            if isinstance(value, str) and value:
                return value
    return None


__all__ = ["HermesRuntime", "CONFIG_NAME", "LOCK_NAME", "MANAGED_MARKER"]
