"""Crash-safe file replacement and secret-safe YAML parsing for the files the skill edits.

Both the agent's config (it holds the LiteLLM key) and the adoption record are replaced the same way:
a temp file in the same directory, the original mode and owner, fsync of the file, `os.replace`,
fsync of the directory. A reader therefore sees the old file or the new one, never half of one,
and a crash leaves no stray temp file behind.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml


class YamlParseError(ValueError):
    """The text is not YAML. The message carries the position only, never the offending line,
    because that line may hold a secret (the config's `api_key`)."""


def parse_yaml(raw: bytes) -> Any:
    """Parse UTF-8 YAML bytes safely; raise `YamlParseError` without echoing the content."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise YamlParseError(f"not UTF-8 text (byte {exc.start})") from None
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise YamlParseError(f"{exc.problem or 'invalid YAML'}{where}") from None
    except yaml.YAMLError:
        raise YamlParseError("invalid YAML") from None


def dump_yaml(data: Any) -> bytes:
    """Block style, key order kept, like the agent runtime's own writer (comments cannot survive PyYAML)."""
    text = yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)
    return text.encode("utf-8")


def fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, *, mode: int, uid: int | None = None,
                 gid: int | None = None) -> None:
    """Replace `path` with `data` atomically, with `mode` and (best effort) owner `uid:gid`.

    `path` must already be the real path: replacing a symlink itself would turn it into a file.
    """
    directory = path.parent
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            if uid is not None and gid is not None:
                with contextlib.suppress(PermissionError):  # only root may give a file away
                    os.fchown(handle.fileno(), uid, gid)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    fsync_dir(directory)


__all__ = ["YamlParseError", "parse_yaml", "dump_yaml", "atomic_write", "fsync_dir"]
