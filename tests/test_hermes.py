"""The Hermes runtime and the adoption transaction against the real Hermes CLI (hermes-agent 0.19.0)
and a tmp HERMES_HOME.

Every write is judged the way the agent would judge it: the real `hermes config get` and Hermes'
own loader (in the Hermes venv, in a subprocess) must read the new model, and everything else in
the file must be as before. Refusals must leave the file byte-for-byte as it was.
"""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from buy_x402.adoption import DefaultSwitch
from buy_x402.agent.configfile import Snapshot
from buy_x402.agent.hermes import HermesRuntime
from buy_x402.agent.record import took_effect
from buy_x402.agent.runtime import WriteResult
from buy_x402.errors import AgentConfigError, UsageError
from buy_x402.settings import Settings

REPO = Path(__file__).resolve().parent.parent
HERMES_BIN = REPO / ".deps" / "hermes" / "bin" / "hermes"
HERMES_PY = REPO / ".deps" / "hermes" / "bin" / "python"
SECRET = "sk-obol-secret123"
NEW_MODEL = "paid/qwen3.6-35b-a3b"

OBOL_CONFIG = f"""\
# Obol Stack agent config (comments are lost on write; that is expected)
model:
  api_key: {SECRET}
  base_url: http://litellm:4000/v1
  default: qwen3.5:9b
  provider: custom
skills:
  external_dirs:
  - /data/.hermes/obol-skills
terminal:
  backend: local
  cwd: /data
"""

@pytest.fixture()
def hermes_cli() -> Path:
    """The real Hermes CLI: required, not optional — `make test` installs it, so its absence is a failure."""
    assert HERMES_BIN.exists(), f"{HERMES_BIN} is missing: run `make deps`"
    return HERMES_BIN


needs_hermes = pytest.mark.usefixtures("hermes_cli")


@pytest.fixture(autouse=True)
def user_home(tmp_path, monkeypatch) -> Path:
    """Hermes children inherit HOME: keep them out of the real ~/.hermes."""
    home = tmp_path / "user"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("HERMES_MANAGED", raising=False)
    return home


def make_home(tmp_path: Path, text: str = OBOL_CONFIG, mode: int = 0o600) -> Path:
    home = tmp_path / "hermes"
    home.mkdir(exist_ok=True)
    config = home / "config.yaml"
    config.write_text(text)
    config.chmod(mode)
    return home


def settings_for(home: Path, user_home: Path, **kw) -> Settings:
    kw.setdefault("agent_cli", str(HERMES_BIN))
    return Settings(agent_home=str(home), home=str(user_home), **kw)


def runtime(settings: Settings, *, timeout_s: float = 30) -> HermesRuntime:
    return HermesRuntime(settings, cli_timeout_s=timeout_s)


def adopt(settings: Settings, model: str, *, timeout_s: float = 30) -> WriteResult:
    """One switch of model.default through the transaction (lock, pre-flight, write, verify, put back)."""
    rt = runtime(settings, timeout_s=timeout_s)
    cfg = rt.resolve()
    with rt.lock(cfg):
        return DefaultSwitch(rt, cfg, rt.preflight(cfg)).write(model)


def current(rt: HermesRuntime, cfg) -> str | None:
    return rt.current_default(rt.read(cfg))


def hermes_env(home: Path, user_home: Path) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "HOME": str(user_home), "HERMES_HOME": str(home),
            "LANG": "C.UTF-8"}


def hermes_get_default(home: Path, user_home: Path) -> str:
    proc = subprocess.run([str(HERMES_BIN), "config", "get", "model.default"], capture_output=True,
                          text=True, env=hermes_env(home, user_home), timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def hermes_loader_default(home: Path, user_home: Path) -> str:
    code = 'from hermes_cli.config import load_config; print(load_config()["model"]["default"])'
    proc = subprocess.run([str(HERMES_PY), "-c", code], capture_output=True, text=True,
                          env=hermes_env(home, user_home), timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def assert_adopted(home: Path, user_home: Path, config: Path, before_text: str, model: str,
                   mode: int, *, loader_home: Path | None = None) -> None:
    """The agent now reads `model`, and nothing else in the file changed.

    The CLI applies active_profile itself; the bare loader needs the profile's home."""
    assert hermes_get_default(home, user_home) == model
    assert hermes_loader_default(loader_home or home, user_home) == model
    expected = yaml.safe_load(before_text)
    if isinstance(expected["model"], str):
        expected["model"] = {}
    expected["model"]["default"] = model
    assert yaml.safe_load(config.read_text()) == expected
    assert stat.S_IMODE(config.stat().st_mode) == mode


def assert_no_secret(error: BaseException) -> None:
    text = " ".join([str(error), str(getattr(error, "hint", "")), repr(getattr(error, "data", ""))])
    assert SECRET not in text


def script(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text(body)
    path.chmod(0o755)
    return str(path)


# --- writes that must verify ---------------------------------------------------------------

@needs_hermes
@pytest.mark.parametrize("mode", [0o600, 0o640])
def test_real_cli_write_is_verified(tmp_path, user_home, mode):
    home = make_home(tmp_path, mode=mode)
    result = adopt(settings_for(home, user_home), NEW_MODEL)
    assert result.method == "hermes-cli"
    assert_adopted(home, user_home, home / "config.yaml", OBOL_CONFIG, NEW_MODEL, mode)


@needs_hermes
def test_real_cli_takes_a_model_starting_with_a_dash(tmp_path, user_home):
    home = make_home(tmp_path)
    result = adopt(settings_for(home, user_home), "-odd/model")
    assert result.method == "hermes-cli"
    assert_adopted(home, user_home, home / "config.yaml", OBOL_CONFIG, "-odd/model", 0o600)


@needs_hermes
@pytest.mark.parametrize("mode", [0o600, 0o640])
@pytest.mark.parametrize("writer", ["unset", "missing", "exits-1", "hangs"])
def test_fallback_writer_is_verified(tmp_path, user_home, mode, writer):
    home = make_home(tmp_path, mode=mode)
    bins = {
        "unset": None,
        "missing": str(tmp_path / "no-such-hermes"),
        "exits-1": script(tmp_path, "fail.sh", "#!/bin/sh\necho 'boom' >&2\nexit 1\n"),
        "hangs": script(tmp_path, "hang.sh", "#!/bin/sh\nsleep 30\n"),
    }
    started = time.monotonic()
    result = adopt(settings_for(home, user_home, agent_cli=bins[writer]), NEW_MODEL, timeout_s=1)
    assert time.monotonic() - started < 10  # the hung CLI was killed, not waited for
    assert result.method == "fallback"
    reason = {"unset": "no Hermes CLI", "missing": "does not exist", "exits-1": "exited 1: boom",
              "hangs": "timed out"}[writer]
    assert reason in result.detail
    assert_adopted(home, user_home, home / "config.yaml", OBOL_CONFIG, NEW_MODEL, mode)


@needs_hermes
@pytest.mark.parametrize("use_cli", [True, False])
def test_plain_string_model_becomes_a_mapping(tmp_path, user_home, use_cli):
    text = "model: qwen3.5:9b\nterminal:\n  backend: local\n"
    home = make_home(tmp_path, text)
    settings = settings_for(home, user_home, agent_cli=str(HERMES_BIN) if use_cli else None)
    result = adopt(settings, NEW_MODEL)
    assert result.method == ("hermes-cli" if use_cli else "fallback")
    assert yaml.safe_load((home / "config.yaml").read_text())["model"] == {"default": NEW_MODEL}
    assert_adopted(home, user_home, home / "config.yaml", text, NEW_MODEL, 0o600)


@needs_hermes
@pytest.mark.parametrize("use_cli", [True, False])
def test_symlinked_config_keeps_the_link(tmp_path, user_home, use_cli):
    home = make_home(tmp_path)
    target_dir = tmp_path / "real"
    target_dir.mkdir()
    target = target_dir / "config.yaml"
    (home / "config.yaml").rename(target)
    (home / "config.yaml").symlink_to(target)
    settings = settings_for(home, user_home, agent_cli=str(HERMES_BIN) if use_cli else None)
    assert runtime(settings).resolve().path == target.resolve()
    adopt(settings, NEW_MODEL)
    assert (home / "config.yaml").is_symlink()
    assert os.readlink(home / "config.yaml") == str(target)
    assert_adopted(home, user_home, target, OBOL_CONFIG, NEW_MODEL, 0o600)


@needs_hermes
def test_active_profile_writes_the_profile_config_only(tmp_path, user_home):
    home = make_home(tmp_path)
    root_bytes = (home / "config.yaml").read_bytes()
    profile = home / "profiles" / "work"
    profile.mkdir(parents=True)
    (profile / "config.yaml").write_text(OBOL_CONFIG)
    (profile / "config.yaml").chmod(0o600)
    (home / "active_profile").write_text("work\n")
    cfg = runtime(settings_for(home, user_home)).resolve()
    assert (cfg.profile, cfg.profile_home, cfg.path) == ("work", profile, profile / "config.yaml")
    assert adopt(settings_for(home, user_home), NEW_MODEL).method == "hermes-cli"
    assert (home / "config.yaml").read_bytes() == root_bytes
    # `hermes` with no -p follows active_profile, as `hermes gateway run` does.
    assert_adopted(home, user_home, profile / "config.yaml", OBOL_CONFIG, NEW_MODEL, 0o600,
                   loader_home=profile)


def test_missing_or_invalid_profile_is_refused(tmp_path, user_home):
    home = make_home(tmp_path)
    (home / "active_profile").write_text("work\n")
    with pytest.raises(AgentConfigError) as err:
        runtime(settings_for(home, user_home)).resolve()
    assert err.value.code == "missing_profile" and "hermes profile create work" in err.value.hint
    (home / "active_profile").write_text("../etc\n")
    with pytest.raises(AgentConfigError) as err:
        runtime(settings_for(home, user_home)).resolve()
    assert err.value.code == "bad_profile"


# --- refusals leave the file exactly as it was ------------------------------------------------

def refuse(settings: Settings, config: Path) -> AgentConfigError:
    before = config.read_bytes()
    with pytest.raises(AgentConfigError) as err:
        adopt(settings, NEW_MODEL)
    assert config.read_bytes() == before
    assert_no_secret(err.value)
    return err.value


@pytest.mark.parametrize("how", ["settings", "marker", "profile-marker"])
def test_managed_mode_is_refused(tmp_path, user_home, how):
    home = make_home(tmp_path)
    settings = settings_for(home, user_home, agent_managed=(how == "settings"))
    if how == "marker":
        (home / ".managed").touch()
    if how == "profile-marker":
        (home / "profiles" / "work").mkdir(parents=True)
        (home / "profiles" / "work" / "config.yaml").write_text(OBOL_CONFIG)
        (home / "active_profile").write_text("work")
        (home / "profiles" / "work" / ".managed").touch()
    config = runtime(settings).resolve().path
    error = refuse(settings, config)
    assert error.code == "managed"
    assert "HERMES_MANAGED" in error.message and ".managed" in error.message
    assert "operator" in error.message and "operator" in error.hint


def test_write_default_never_falls_back_around_managed(tmp_path, user_home):
    home = make_home(tmp_path)
    cfg = runtime(settings_for(home, user_home)).resolve()
    before = runtime(settings_for(home, user_home)).preflight(cfg)
    (home / ".managed").touch()
    rt = runtime(settings_for(home, user_home, agent_cli=None))
    with pytest.raises(AgentConfigError) as err:
        rt.write_default(rt.resolve(), before, NEW_MODEL)
    assert err.value.code == "managed"
    assert (home / "config.yaml").read_bytes() == before.raw


@pytest.mark.parametrize("text, code, words", [
    (f"model:\n  api_key: {SECRET}\n  default: [unclosed\nterminal: {{\n", "config_not_yaml",
     "not valid YAML"),
    ("- model\n- other\n", "config_not_mapping", "not a mapping"),
    ("", "config_not_mapping", "empty"),
    (f"model: 5\napi_key: {SECRET}\n", "config_bad_model", "neither a mapping nor a string"),
    ("terminal:\n  backend: local\n", "config_bad_model", "no `model` key"),
])
def test_bad_config_is_refused(tmp_path, user_home, text, code, words):
    home = make_home(tmp_path, text)
    error = refuse(settings_for(home, user_home), home / "config.yaml")
    assert error.code == code and words in error.message
    assert str(home / "config.yaml") in error.message and error.hint


def test_missing_config_is_refused(tmp_path, user_home):
    home = tmp_path / "empty-home"
    home.mkdir()
    with pytest.raises(AgentConfigError) as err:
        adopt(settings_for(home, user_home), NEW_MODEL)
    assert err.value.code == "config_missing"
    assert not (home / "config.yaml").exists()


@pytest.mark.parametrize("value", ["", " paid/x", "123", "007", "true", "No", "off", "1.5",
                                   "a${HOME}b", "paid/x\n"])
def test_values_hermes_would_coerce_are_refused(value):
    with pytest.raises(UsageError):
        HermesRuntime(Settings()).check_model_name(value)


@pytest.mark.parametrize("value", ["paid/qwen3.5:9b", "-dash", "1e5", "paid/AEON-7/Qwen3.6-35B"])
def test_ordinary_values_pass(value):
    HermesRuntime(Settings()).check_model_name(value)


def test_exit_zero_without_writing_is_caught_and_restored(tmp_path, user_home):
    home = make_home(tmp_path)
    fake = script(tmp_path, "noop.sh", "#!/bin/sh\necho '✓ Set model.default'\nexit 0\n")
    config = home / "config.yaml"
    error = refuse(settings_for(home, user_home, agent_cli=fake), config)
    assert error.code == "write_not_verified"
    assert "model.default is 'qwen3.5:9b'" in error.message


WRITER = """\
#!{python}
import os, sys, yaml
path = os.path.join(os.environ["HERMES_HOME"], "config.yaml")
data = yaml.safe_load(open(path))
data["model"]["default"] = sys.argv[-1]
{change}
with open(path, "w") as f:
    yaml.safe_dump(data, f, sort_keys=False)
{after}
"""


@pytest.mark.parametrize("change, after, named", [
    ('data["terminal"]["backend"] = "docker"', "", "terminal.backend"),
    ('data["model"]["api_key"] = "sk-other"', "", "model.api_key"),
    ('del data["skills"]', "", "skills (removed)"),
    ("", "os.chmod(path, 0o644)", "file mode is 644, was 600"),
])
def test_writer_that_changes_more_is_undone_exactly(tmp_path, user_home, change, after, named):
    home = make_home(tmp_path)
    fake = script(tmp_path, "writer.py", WRITER.format(python=sys.executable, change=change, after=after))
    config = home / "config.yaml"
    error = refuse(settings_for(home, user_home, agent_cli=fake), config)
    assert error.code == "write_not_verified" and named in error.message
    assert "the original file was put back unchanged" in error.message
    assert "sk-other" not in error.message
    assert stat.S_IMODE(config.stat().st_mode) == 0o600


def test_api_key_never_appears_in_cli_output_excerpts(tmp_path, user_home):
    home = make_home(tmp_path)
    fake = script(tmp_path, "leak.sh", f"#!/bin/sh\necho 'key {SECRET} rejected' >&2\nexit 3\n")
    result = adopt(settings_for(home, user_home, agent_cli=fake), NEW_MODEL)
    assert result.method == "fallback" and "exited 3" in result.detail
    assert SECRET not in result.detail


def test_concurrent_writers_serialise_through_the_lock(tmp_path, user_home):
    home = make_home(tmp_path)
    log = tmp_path / "lock.log"
    worker = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(REPO)!r})
        from buy_x402.adoption import DefaultSwitch
        from buy_x402.agent.hermes import HermesRuntime
        from buy_x402.settings import Settings
        model, log = sys.argv[1], sys.argv[2]
        rt = HermesRuntime(Settings(agent_home={str(home)!r}, home={str(user_home)!r}, agent_cli=None))
        cfg = rt.resolve()
        with rt.lock(cfg):
            open(log, "a").write("start " + model + "\\n")
            switch = DefaultSwitch(rt, cfg, rt.preflight(cfg))
            time.sleep(0.4)
            switch.write(model)
            open(log, "a").write("end " + model + "\\n")
    """)
    procs = [subprocess.Popen([sys.executable, "-c", worker, model, str(log)])
             for model in ("paid/a", "paid/b")]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    lines = log.read_text().split()
    pairs = list(zip(lines[0::2], lines[1::2]))
    assert len(lines) == 8
    first, second = lines[1], lines[5]
    assert lines == ["start", first, "end", first, "start", second, "end", second], pairs
    assert yaml.safe_load((home / "config.yaml").read_text())["model"]["default"] == second


# --- the adoption record and the transaction --------------------------------------------------

def test_state_records_pending_applied_and_unwinds_in_order(tmp_path, user_home):
    home = make_home(tmp_path)
    settings = settings_for(home, user_home, agent_cli=None)
    rt = runtime(settings)
    cfg = rt.resolve()
    record = rt.record(cfg)
    assert record.last(current(rt, cfg)) is None

    record.record_pending(adopted="paid/a", previous="qwen3.5:9b", purchase="a", at="2026-01-01T00:00:00+00:00")
    assert record.last(current(rt, cfg)) is None  # pending, and the switch has not happened
    adopt(settings, "paid/a")
    assert record.last(current(rt, cfg))["adopted"] == "paid/a"  # the switch happened: it counts
    # The next adoption settles the earlier one (it took effect: it is the default now) in its one write.
    record.record_pending(adopted="paid/b", previous="paid/a", purchase="b", at="t2")
    adopt(settings, "paid/b")

    state_file = record.path
    assert state_file == cfg.profile_home / "buy-x402" / "state.json"
    assert stat.S_IMODE(state_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(state_file.parent.stat().st_mode) == 0o700
    history = json.loads(state_file.read_text())["history"]
    assert [(h["adopted"], h["previous"], h["status"]) for h in history] == [
        ("paid/a", "qwen3.5:9b", "applied"), ("paid/b", "paid/a", "pending")]

    last = record.last(current(rt, cfg))
    adopt(settings, last["previous"])
    assert record.pop(last)["adopted"] == "paid/b"
    last = record.last(current(rt, cfg))
    assert last["previous"] == "qwen3.5:9b"
    adopt(settings, last["previous"])
    assert record.pop(last)["adopted"] == "paid/a"
    assert record.last(current(rt, cfg)) is None
    with pytest.raises(AgentConfigError) as err:
        record.pop(last)
    assert err.value.code == "nothing_to_restore"


def test_dropped_pending_leaves_history_true(tmp_path, user_home):
    home = make_home(tmp_path)
    rt = runtime(settings_for(home, user_home))
    record = rt.record(rt.resolve())
    entry = record.record_pending(adopted="paid/a", previous="qwen3.5:9b", purchase="a")
    record.drop(entry)
    record.note("default_changed_elsewhere", seen="other/model")
    state = record.read()
    assert state["history"] == []
    assert state["events"][0]["kind"] == "default_changed_elsewhere"
    assert state["events"][0]["seen"] == "other/model"


def test_pop_after_a_crash_after_the_switch(tmp_path, user_home):
    """The process died after the switch: the pending entry is what a restore undoes."""
    home = make_home(tmp_path)
    settings = settings_for(home, user_home, agent_cli=None)
    rt = runtime(settings)
    cfg = rt.resolve()
    record = rt.record(cfg)
    record.record_pending(adopted="paid/a", previous="qwen3.5:9b", purchase="a")
    adopt(settings, "paid/a")
    last = record.last(current(rt, cfg))
    assert (last["adopted"], last["status"]) == ("paid/a", "pending")
    adopt(settings, last["previous"])
    assert record.pop(last)["adopted"] == "paid/a"
    assert record.read()["history"] == []


@pytest.mark.parametrize("content", ["{not json", "[]", '{"version": 1, "history": "x"}'])
def test_corrupt_state_is_an_error_not_a_reset(tmp_path, user_home, content):
    home = make_home(tmp_path)
    rt = runtime(settings_for(home, user_home))
    record = rt.record(rt.resolve())
    record.path.parent.mkdir(parents=True)
    record.path.write_text(content)
    for call in (lambda: record.last("qwen3.5:9b"),
                 lambda: record.record_pending(adopted="paid/a", previous="x", purchase="a")):
        with pytest.raises(AgentConfigError) as err:
            call()
        assert err.value.code == "state_corrupt"
    assert record.path.read_text() == content


def test_a_switch_adopts_and_undoes_with_its_record_in_step(tmp_path, user_home):
    home = make_home(tmp_path)
    rt = runtime(settings_for(home, user_home, agent_cli=None))
    cfg = rt.resolve()
    with rt.lock(cfg):
        write = DefaultSwitch(rt, cfg, rt.preflight(cfg)).adopt(NEW_MODEL, purchase="q", at="t1")
    assert write.method == "fallback" and current(rt, cfg) == NEW_MODEL
    [entry] = rt.record(cfg).read()["history"]
    # Written once, before the switch; the config (the default is its model) says it took effect.
    assert (entry["adopted"], entry["previous"], entry["purchase"], entry["status"]) == \
        (NEW_MODEL, "qwen3.5:9b", "q", "pending")
    assert took_effect(entry, current(rt, cfg)) is True
    with rt.lock(cfg):
        switch = DefaultSwitch(rt, cfg, rt.preflight(cfg))
        assert switch.last_adoption()["adopted"] == NEW_MODEL
        switch.undo(switch.last_adoption())
    assert current(rt, cfg) == "qwen3.5:9b" and rt.record(cfg).read()["history"] == []
    assert yaml.safe_load((home / "config.yaml").read_text()) == yaml.safe_load(OBOL_CONFIG)


def test_a_failed_switch_puts_the_bytes_back_and_leaves_no_record(tmp_path, user_home):
    """A CLI that exits 0 without writing: the read-back refuses, the pending record is dropped."""
    home = make_home(tmp_path)
    fake = script(tmp_path, "noop.sh", "#!/bin/sh\necho '✓ Set model.default'\nexit 0\n")
    rt = runtime(settings_for(home, user_home, agent_cli=fake))
    cfg = rt.resolve()
    before = (home / "config.yaml").read_bytes()
    with rt.lock(cfg), pytest.raises(AgentConfigError) as err:
        DefaultSwitch(rt, cfg, rt.preflight(cfg)).adopt(NEW_MODEL, purchase="q", at="t1")
    assert err.value.code == "write_not_verified"
    assert (home / "config.yaml").read_bytes() == before
    assert rt.record(cfg).read()["history"] == []


def snap(data: dict) -> Snapshot:
    return Snapshot(raw=b"", mode=0o600, uid=0, gid=0, data=data)


def test_current_model_and_endpoint():
    rt = HermesRuntime(Settings())
    data = yaml.safe_load(OBOL_CONFIG)
    assert rt.current_default(snap(data)) == "qwen3.5:9b"
    assert rt.model_endpoint(snap(data)) == ("http://litellm:4000/v1", SECRET)
    assert rt.current_default(snap({"model": "plain"})) == "plain"
    assert rt.current_default(snap({"model": {"model": "alias"}})) == "alias"
    assert rt.model_endpoint(snap({"model": "plain"})) == (None, None)


@needs_hermes
def test_cli_refusal_of_a_pinned_key_is_never_written_around(tmp_path, user_home, monkeypatch):
    """An administrator pin (managed scope) makes the real CLI exit 1: that is a refusal, and the
    fallback writer must not edit the file the pin would override anyway."""
    home = make_home(tmp_path)
    pinned = tmp_path / "etc-hermes"
    pinned.mkdir()
    (pinned / "config.yaml").write_text("model:\n  default: admin/model\n")
    monkeypatch.setenv("HERMES_MANAGED_DIR", str(pinned))
    error = refuse(settings_for(home, user_home), home / "config.yaml")
    assert error.code == "managed" and "administrator" in error.message


def test_missing_home_directory_is_refused(tmp_path, user_home):
    with pytest.raises(AgentConfigError) as err:
        adopt(settings_for(tmp_path / "nowhere", user_home), NEW_MODEL)
    assert err.value.code == "config_missing"


def test_lock_is_opened_when_made_so_callers_can_refuse_before_with(tmp_path, user_home):
    rt = runtime(settings_for(tmp_path / "nowhere", user_home))
    with pytest.raises(AgentConfigError) as err:
        rt.lock(rt.resolve())
    assert err.value.code == "config_missing"
