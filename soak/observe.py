"""What the soak looks at after each run: the agent's config, the adoption record, the processes
started with its HERMES_HOME, temp files; and the environment a run gets. See faults.py."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from buy_x402.agent.configfile import identity_of  # noqa: E402
from buy_x402.agent.record import AdoptionRecord  # noqa: E402

BUY = str(REPO / "buy.py")
OUR_TEMPS = re.compile(r"^\.(config\.yaml|state\.json)\.[A-Za-z0-9_]{8}\.tmp$")
HERMES_TEMPS = re.compile(r"^\.config_.*\.tmp$")


# ----------------------------------------------------------------------------------- environment

def agent_home(stack_env: dict[str, str], directory: Path) -> Path:
    """A HERMES_HOME of its own holding a copy of the stack agent's config (0700 / 0600)."""
    home = directory / "hermes"
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True, mode=0o700)
    shutil.copyfile(Path(stack_env["HERMES_HOME"]) / "config.yaml", home / "config.yaml")
    (home / "config.yaml").chmod(0o600)
    return home


def run_env(stack_env: dict[str, str], home: Path, *, fallback: bool) -> dict[str, str]:
    """The pod's environment for buy.py, with the Hermes CLI writer or (a missing CLI) the fallback."""
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home.parent), "LANG": "C.UTF-8", **stack_env,
           "HERMES_HOME": str(home)}
    if fallback:
        env["HERMES_BIN"] = str(home.parent / "no-hermes-cli")
    return env


def buy(args: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, BUY, *args], env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


# ------------------------------------------------------------------------------------ observations

@dataclass(frozen=True)
class ConfigState:
    raw: bytes
    mode: int
    uid: int
    gid: int
    data: Any

    @property
    def model(self) -> Any:
        model = self.data.get("model") if isinstance(self.data, dict) else None
        return model.get("default") if isinstance(model, dict) else model


def config_state(home: Path) -> ConfigState:
    path = home / "config.yaml"
    st = os.stat(path)
    raw = path.read_bytes()
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError:
        data = None
    return ConfigState(raw, st.st_mode & 0o7777, st.st_uid, st.st_gid, data)


def config_problems(before: ConfigState, after: ConfigState, allowed: set[str]) -> list[str]:
    problems = []
    if not isinstance(after.data, dict):
        return ["the config no longer parses as a YAML mapping"]
    if (after.mode, after.uid, after.gid) != (before.mode, before.uid, before.gid):
        problems.append(f"mode/owner {after.mode:o} {after.uid}:{after.gid}, was {before.mode:o} {before.uid}:{before.gid}")
    if after.model not in allowed:
        problems.append(f"model.default is {after.model!r}, expected one of {sorted(allowed)}")
    rest_before, rest_after = json.loads(json.dumps(before.data)), json.loads(json.dumps(after.data))
    for doc in (rest_before, rest_after):
        if isinstance(doc.get("model"), dict):
            doc["model"].pop("default", None)
    if rest_before != rest_after:
        problems.append("keys other than model.default changed")
    return problems


def last_adoption(home: Path, current: str | None) -> Any:
    """The adoption a restore would undo now (its status aside: settling pending → applied is no change)."""
    try:
        last = AdoptionRecord(home / "buy-x402").last(current, identity_of(os.stat(home / "config.yaml")))
    except Exception as exc:  # a corrupt record is itself a broken invariant
        return f"unreadable record: {exc}"
    return None if last is None else {k: last.get(k) for k in ("adopted", "previous", "purchase", "at")}


def before_start(rc: int, sig: int, err: str) -> bool:
    """The signal came before buy.py's first line ran (Python's own start-up): the interpreter's
    default action applies (killed by SIGTERM; a KeyboardInterrupt traceback from the standard
    library's imports) and nothing of the skill ran. Not preventable from the skill."""
    return rc == 1 and sig == signal.SIGINT and "KeyboardInterrupt" in err and "/buy_x402/" not in err \
        and "buy.py" not in err


def record_problems(home: Path) -> list[str]:
    record = AdoptionRecord(home / "buy-x402")
    try:
        record.read()
    except Exception as exc:
        return [f"the adoption record cannot be read: {exc}"]
    return [f"malformed record entries: {record.problems}"] if record.problems else []


def hermes_children(home: Path) -> list[int]:
    """Live processes (not zombies) started with HERMES_HOME=home, other than a gateway."""
    marker = f"HERMES_HOME={home}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
            if state in (b"Z", b"X"):
                continue
            with open(f"/proc/{entry}/environ", "rb") as f:
                environ = f.read().split(b"\0")
        except OSError:
            continue
        if marker in environ and int(entry) != os.getpid():
            found.append(int(entry))
    return found


def our_temps(home: Path) -> list[str]:
    names = os.listdir(home) + (os.listdir(home / "buy-x402") if (home / "buy-x402").is_dir() else [])
    return [n for n in names if OUR_TEMPS.match(n)]


def hermes_temps(home: Path) -> list[str]:
    return [n for n in os.listdir(home) if HERMES_TEMPS.match(n)]
