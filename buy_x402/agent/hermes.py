"""The Hermes boundary: which config file, pre-flight, the write, the read-back, the restore.

Only this module touches the Hermes config and spawns the Hermes CLI. The rules come from
hermes-agent 0.19.0 (see reference/hermes-config.md): `hermes config set` exits 0 in managed mode
without writing, silently wipes an unparseable file and coerces `123`/`yes`/`1.5` to non-strings.
So every write is preceded by a pre-flight that refuses those cases and followed by a read-back
that compares the whole parsed file; a mismatch puts the original bytes back.
"""
from __future__ import annotations

import contextlib
import copy
import fcntl
import os
import re
import signal
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .errors import HermesConfigError, UsageError
from .settings import Settings
# The adoption record (set-default step 6) lives in statefile.py and is reached through this module.
from .statefile import (
    drop_pending, last_adoption, mark_applied, pop_adoption, read_state, record_event,
    record_pending, state_path,
)
from .yamlfile import YamlParseError, atomic_write, dump_yaml, parse_yaml

CONFIG_NAME = "config.yaml"
LOCK_NAME = ".buy-x402.lock"
MANAGED_MARKER = ".managed"
DEFAULT_CLI_TIMEOUT_S = 30.0
# Hermes' own profile id rule and reserved names (hermes_cli/profiles.py, 0.19.0).
_PROFILE_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_RESERVED_PROFILES = frozenset({"hermes", "test", "tmp", "root", "sudo"})
# Values `hermes config set` would store as bool (hermes_cli/config.py:set_config_value).
_COERCED_WORDS = frozenset({"true", "false", "yes", "no", "on", "off"})


@dataclass(frozen=True)
class HermesConfig:
    """The one config file Hermes itself reads, resolved once and used by every later step."""
    home: Path            # HERMES_HOME as configured
    profile: str | None   # None: the default profile
    profile_home: Path    # the home Hermes uses for that profile
    path: Path            # profile_home/config.yaml, symlinks followed
    managed: bool         # HERMES_MANAGED or a .managed marker: the operator owns the config


@dataclass(frozen=True)
class Snapshot:
    """The config as it was before a write: what a restore puts back and what verify compares."""
    raw: bytes
    mode: int
    uid: int
    gid: int
    data: dict


@dataclass(frozen=True)
class WriteResult:
    method: Literal["hermes-cli", "fallback"]
    detail: str


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


def resolve_config(settings: Settings) -> HermesConfig:
    """Resolve the config file exactly as `hermes` would for this HERMES_HOME (step 2).

    Raises HermesConfigError when the active profile is invalid or missing, or when the layout
    would make the CLI and the gateway read different files.
    """
    home = Path(settings.hermes_home)
    if home.parent.name == "profiles":
        # HERMES_HOME already names a profile: Hermes uses it as is and ignores active_profile.
        profile: str | None = home.name
        profile_home = home
    else:
        root = _hermes_root(home, Path(settings.home))
        if root.resolve() != home.resolve():
            raise HermesConfigError(
                f"HERMES_HOME {home} lies inside {root} without being it or a profile of it; "
                f"Hermes would read profiles from {root}, so the config it uses is ambiguous",
                hint=f"set HERMES_HOME to {root} or to {root}/profiles/<name>",
                code="ambiguous_home", data={"path": str(home)})
        profile = _read_active_profile(root)
        profile_home = home
        if profile is not None:
            if not _PROFILE_ID_RE.match(profile) or profile in _RESERVED_PROFILES:
                raise HermesConfigError(
                    f"{root / 'active_profile'} names {profile!r}, which is not a valid Hermes profile",
                    hint="run `hermes profile use default` or fix the active_profile file",
                    code="bad_profile", data={"path": str(root / "active_profile")})
            profile_home = home / "profiles" / profile
            if not profile_home.is_dir():
                raise HermesConfigError(
                    f"the active Hermes profile {profile!r} has no directory {profile_home}",
                    hint=f"create it with `hermes profile create {profile}` or switch back with "
                         "`hermes profile use default`",
                    code="missing_profile", data={"path": str(profile_home)})
    path = Path(os.path.realpath(profile_home / CONFIG_NAME))
    managed = (settings.hermes_managed or (home / MANAGED_MARKER).exists()
               or (profile_home / MANAGED_MARKER).exists())
    return HermesConfig(home=home, profile=profile, profile_home=profile_home, path=path,
                        managed=managed)


def _refuse(cfg: HermesConfig, problem: str, hint: str, code: str) -> HermesConfigError:
    return HermesConfigError(f"{problem}: {cfg.path}", hint=hint, code=code,
                             data={"path": str(cfg.path)})


def check_managed(cfg: HermesConfig) -> None:
    """Managed mode means the operator owns the config: never write around it."""
    if cfg.managed:
        raise HermesConfigError(
            f"Hermes runs in managed mode (HERMES_MANAGED is set or a {MANAGED_MARKER} file exists "
            f"in {cfg.profile_home}); the operator owns {cfg.path} and it is not changed",
            hint="ask the operator to change model.default in the managed configuration",
            code="managed", data={"path": str(cfg.path)})


def load_snapshot(cfg: HermesConfig) -> Snapshot:
    """Read and validate the config without the managed check (used by restore and verify)."""
    try:
        fd = os.open(cfg.path, os.O_RDONLY)
    except FileNotFoundError:
        raise _refuse(cfg, "the Hermes config does not exist",
                      "check HERMES_HOME and the active profile; Hermes must have been set up",
                      "config_missing") from None
    except PermissionError:
        raise _refuse(cfg, "the Hermes config cannot be read (permission denied)",
                      "run as the user that owns the Hermes home", "config_unreadable") from None
    except OSError as exc:
        raise _refuse(cfg, f"the Hermes config cannot be opened ({exc.strerror})",
                      "check HERMES_HOME and the file", "config_unreadable") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _refuse(cfg, "the Hermes config is not a regular file",
                          "point HERMES_HOME at a directory holding config.yaml", "config_unreadable")
        with os.fdopen(os.dup(fd), "rb") as handle:
            raw = handle.read()
    except OSError as exc:
        raise _refuse(cfg, f"the Hermes config cannot be read ({exc.strerror})",
                      "check the file permissions", "config_unreadable") from None
    finally:
        os.close(fd)
    try:
        data = parse_yaml(raw)
    except YamlParseError as exc:
        raise _refuse(cfg, f"the Hermes config is not valid YAML ({exc})",
                      "fix the file by hand; `hermes config set` would silently replace it",
                      "config_not_yaml") from None
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}, not a mapping"
        raise _refuse(cfg, f"the Hermes config is {kind}",
                      "restore a config.yaml whose top level is a mapping with a `model` key",
                      "config_not_mapping")
    model = data.get("model")
    if not isinstance(model, (dict, str)):
        what = "has no `model` key" if model is None else "has a `model` that is neither a mapping nor a string"
        raise _refuse(cfg, f"the Hermes config {what}",
                      "set `model:` with `default`, `base_url` and `api_key` in config.yaml",
                      "config_bad_model")
    return Snapshot(raw=raw, mode=stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid, data=data)


def read_snapshot(cfg: HermesConfig) -> Snapshot:
    """Pre-flight (step 3): not managed, exists, readable, YAML, mapping root, usable `model`."""
    check_managed(cfg)
    return load_snapshot(cfg)


def current_model(data: dict) -> str | None:
    """The model Hermes chats with: `model` as a string, else model.default, else model.model."""
    model = data.get("model")
    if isinstance(model, str):
        return model or None
    if isinstance(model, dict):
        for key in ("default", "model"):
            value = model.get(key)
            if isinstance(value, str) and value:
                return value
    return None


def litellm_endpoint(data: dict) -> tuple[str | None, str | None]:
    """(model.base_url, model.api_key): the LiteLLM the agent talks to and its key."""
    model = data.get("model")
    if not isinstance(model, dict):
        return None, None
    base_url, api_key = model.get("base_url"), model.get("api_key")
    return (base_url if isinstance(base_url, str) and base_url else None,
            api_key if isinstance(api_key, str) and api_key else None)


def check_model_value(model: str) -> None:
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
        raise UsageError(f"model name {model!r} {problem}",
                         hint="pass the exact model id, e.g. paid/<remote-model>", code="bad_model_name")


def expected_after(before: Snapshot, model: str) -> dict:
    """The parsed config a correct write leaves: only model.default differs."""
    data = copy.deepcopy(before.data)
    if isinstance(data.get("model"), dict):
        data["model"]["default"] = model
    else:
        data["model"] = {"default": model}
    return data


class ConfigLock:
    """An exclusive flock on `<config dir>/.buy-x402.lock`, shared by concurrent buy.py runs.

    The lock file is opened when the object is made, so a missing or unwritable directory is
    reported by `config_lock(cfg)` itself; `with` then waits for the lock.
    """

    def __init__(self, cfg: HermesConfig) -> None:
        lock_path = cfg.path.parent / LOCK_NAME
        self._fd: int | None = None
        try:
            self._fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except FileNotFoundError:
            raise _refuse(cfg, "the Hermes config directory does not exist",
                          "check HERMES_HOME and the active profile; Hermes must have been set up",
                          "config_missing") from None
        except OSError as exc:
            raise _refuse(cfg, f"cannot create the lock file {lock_path} ({exc.strerror})",
                          "run as the user that owns the Hermes home", "config_unwritable") from None

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


def config_lock(cfg: HermesConfig) -> ConfigLock:
    """Serialise buy.py runs around read-check-write-verify (Hermes itself takes no such lock)."""
    return ConfigLock(cfg)


def _cli_argv(cfg: HermesConfig, hermes_bin: str, model: str) -> list[str]:
    # `-p` pins the file the CLI writes to the one resolved here; `--` lets a name start with "-".
    return [hermes_bin, "-p", cfg.profile or "default", "config", "set", "--", "model.default", model]


def run_cli(cfg: HermesConfig, argv: list[str], timeout_s: float) -> tuple[int, str, str]:
    """Run the Hermes CLI in its own process group so a timeout kills it and its children."""
    env = dict(os.environ)  # the child's environment, not a setting: HERMES_HOME must be the resolved home
    env["HERMES_HOME"] = str(cfg.home)
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, errors="replace",
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except BaseException:  # a timeout, or Ctrl-C, which its own session does not receive
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return proc.returncode, out, err


def _excerpt(text: str, secret: str | None = None, limit: int = 300) -> str:
    """One line of CLI output for a message, with the LiteLLM key masked should it appear."""
    text = " ".join(text.split())
    if secret:
        text = text.replace(secret, "****")
    return text if len(text) <= limit else text[:limit] + "…"


def write_default(cfg: HermesConfig, before: Snapshot, model: str, *, hermes_bin: str | None,
                  timeout_s: float = DEFAULT_CLI_TIMEOUT_S) -> WriteResult:
    """Step 8: set model.default with the Hermes CLI, else with the fallback writer.

    Call under `config_lock`, after `read_snapshot`. Exit 0 is not proof of a write (managed mode
    exits 0 too): `verify_write` decides. A managed-scope refusal by the CLI is never written around.
    """
    check_managed(cfg)
    check_model_value(model)
    secret = litellm_endpoint(before.data)[1]
    if not hermes_bin:
        why = "no Hermes CLI found (HERMES_BIN unset, none installed)"
    else:
        try:
            rc, out, err = run_cli(cfg, _cli_argv(cfg, hermes_bin, model), timeout_s)
        except FileNotFoundError:
            why = f"Hermes CLI {hermes_bin} does not exist"
        except PermissionError:
            why = f"Hermes CLI {hermes_bin} is not executable"
        except subprocess.TimeoutExpired:
            why = f"Hermes CLI timed out after {timeout_s:g} s"
        else:
            if "Cannot set" in err:
                raise HermesConfigError(
                    f"the Hermes CLI refused to set model.default: {_excerpt(err, secret)}",
                    hint="the operator pins this setting; ask them to change it",
                    code="managed", data={"path": str(cfg.path)})
            if rc == 0:
                return WriteResult("hermes-cli", _excerpt(out, secret) or "exit 0")
            why = f"Hermes CLI exited {rc}: {_excerpt(err or out, secret)}"
    try:
        _write_fallback(cfg, before, model)
    except OSError as exc:
        raise _refuse(cfg, f"{why}, and the direct edit failed too ({exc.strerror}); the file is "
                      "unchanged", "run as the user that owns the Hermes home", "write_failed") from None
    return WriteResult("fallback", why)


def _write_fallback(cfg: HermesConfig, before: Snapshot, model: str) -> None:
    """Edit config.yaml directly: re-read it, set model.default, replace it atomically."""
    current = load_snapshot(cfg)
    data = expected_after(current, model)
    atomic_write(cfg.path, dump_yaml(data), mode=before.mode, uid=before.uid, gid=before.gid)


def _diff(before: Any, after: Any, prefix: str = "") -> list[str]:
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
                paths.extend(_diff(before[key], after[key], where))
        return paths
    if before != after or type(before) is not type(after):
        return [prefix or "(top level)"]
    return []


def _read_back(cfg: HermesConfig, before: Snapshot, model: str) -> list[str]:
    """Everything that differs from a correct write of `model`."""
    try:
        st = os.stat(cfg.path)
        raw = cfg.path.read_bytes()
    except OSError as exc:
        return [f"the file cannot be read back ({exc.strerror})"]
    try:
        data = parse_yaml(raw)
    except YamlParseError as exc:
        return [f"the file is no longer valid YAML ({exc})"]
    differences = []
    actual = current_model(data) if isinstance(data, dict) else None
    if not (isinstance(data, dict) and isinstance(data.get("model"), dict)
            and data["model"].get("default") == model):
        differences.append(f"model.default is {actual!r}, expected {model!r}")
    expected = expected_after(before, model)
    differences += [p for p in _diff(expected, data) if p != "model.default"]
    mode = stat.S_IMODE(st.st_mode)
    if mode != before.mode:
        differences.append(f"file mode is {mode:o}, was {before.mode:o}")
    if (st.st_uid, st.st_gid) != (before.uid, before.gid):
        differences.append(f"owner is {st.st_uid}:{st.st_gid}, was {before.uid}:{before.gid}")
    return differences


def verify_write(cfg: HermesConfig, before: Snapshot, model: str) -> None:
    """Step 9: the file says model.default == model and nothing else changed; else restore it.

    Raises HermesConfigError(code="write_not_verified") after putting the original bytes back.
    """
    differences = _read_back(cfg, before, model)
    if not differences:
        return
    try:
        restore_bytes(cfg, before)
    except OSError as exc:
        raise HermesConfigError(
            f"the write to {cfg.path} did not verify ({'; '.join(differences)}) and the original "
            f"could NOT be put back ({exc.strerror})",
            hint="check model.default with `hermes config get model.default` and fix the file by hand",
            code="restore_failed", data={"path": str(cfg.path), "differences": differences}) from None
    raise HermesConfigError(
        f"the write to {cfg.path} did not verify ({'; '.join(differences)}); "
        "the original file was put back unchanged",
        hint="check who else writes the Hermes config, then retry",
        code="write_not_verified", data={"path": str(cfg.path), "differences": differences})


def restore_bytes(cfg: HermesConfig, before: Snapshot) -> None:
    """Put the snapshot back exactly: bytes, mode and owner, atomically."""
    try:
        st = os.stat(cfg.path)
        if (cfg.path.read_bytes() == before.raw and stat.S_IMODE(st.st_mode) == before.mode
                and (st.st_uid, st.st_gid) == (before.uid, before.gid)):
            return
    except OSError:
        pass
    atomic_write(cfg.path, before.raw, mode=before.mode, uid=before.uid, gid=before.gid)


__all__ = [
    "drop_pending", "last_adoption", "mark_applied", "pop_adoption", "read_state", "record_event",
    "record_pending", "state_path", "ConfigLock",
    "HermesConfig", "Snapshot", "WriteResult", "resolve_config", "read_snapshot", "load_snapshot",
    "check_managed", "current_model", "litellm_endpoint", "check_model_value", "expected_after",
    "config_lock", "write_default", "verify_write", "restore_bytes",
]
