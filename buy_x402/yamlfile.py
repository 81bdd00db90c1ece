"""Crash-safe file replacement and secret-safe, bounded YAML parsing for the files the skill edits.

Both the agent's config (it holds the LiteLLM key) and the adoption record are replaced the same way:
a temp file in the same directory, the original mode and owner, fsync of the file, `os.replace`,
fsync of the directory. A reader therefore sees the old file or the new one, never half of one.
A writer killed with SIGKILL cannot delete its temp file; `remove_stale_temps` does, for a caller
holding the lock every writer of that file holds (the temp names are ours alone).

Files are read with a size limit before they are parsed, and YAML is refused when its aliases
expand to more than `MAX_YAML_NODES` nodes or refer to themselves (an alias bomb is a few hundred
bytes that take seconds, or forever, to walk).
"""
from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import Any

import yaml

MAX_YAML_NODES = 100_000
MAX_YAML_DEPTH = 64      # an agent config nests a handful of levels; deeper is hostile or broken
TEMP_SUFFIX = ".tmp"


class FileTooLarge(OSError):
    """The file is larger than the reader's limit; it was not read."""


class OwnerNotKept(PermissionError):
    """The file could not be given its owner (only root may give a file away)."""


def read_limited(path: Path, limit: int) -> bytes:
    """The bytes of the regular file `path`, refusing (FileTooLarge) one of more than `limit` bytes
    before reading it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and st.st_size > limit:
            raise FileTooLarge(f"{path} is {st.st_size} bytes, more than {limit}")
        with os.fdopen(os.dup(fd), "rb") as handle:
            data = handle.read(limit + 1)
        if len(data) > limit:
            raise FileTooLarge(f"{path} is more than {limit} bytes")
        return data
    finally:
        os.close(fd)


def _expanded_size(root: yaml.Node) -> int:
    """How many nodes the document has once every alias is expanded; YamlParseError past the limit
    or for an alias that contains itself. Linear in the graph: each node is sized once."""
    sizes: dict[int, int] = {}
    heights: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    open_nodes: set[int] = set()
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            children = _children(node)
            total = 1 + sum(sizes[id(child)] for child in children)
            if total > MAX_YAML_NODES:
                raise YamlParseError(f"its aliases expand to more than {MAX_YAML_NODES} nodes")
            height = 1 + max((heights[id(child)] for child in children), default=0)
            if height > MAX_YAML_DEPTH:
                raise YamlParseError(f"it is nested more than {MAX_YAML_DEPTH} levels deep")
            sizes[key], heights[key] = total, height
            open_nodes.discard(key)
            continue
        if key in sizes:
            continue
        if key in open_nodes:
            raise YamlParseError("an alias refers to a node that contains it")
        open_nodes.add(key)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in open_nodes:
                raise YamlParseError("an alias refers to a node that contains it")
            if id(child) not in sizes:
                stack.append((child, False))
    return sizes[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


class YamlParseError(ValueError):
    """The text is not YAML. The message carries the position only, never the offending line,
    because that line may hold a secret (the config's `api_key`)."""


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader whose scanner refuses nesting past MAX_YAML_DEPTH as it reads it: PyYAML's scanner
    and composer cost grows with the depth (quadratically for `[[[…`), so a deep document would take
    seconds before any later check could refuse it."""

    def fetch_flow_collection_start(self, TokenClass):  # noqa: N803 - PyYAML's name
        if self.flow_level >= MAX_YAML_DEPTH:
            raise YamlParseError(f"it is nested more than {MAX_YAML_DEPTH} levels deep")
        super().fetch_flow_collection_start(TokenClass)

    def add_indent(self, column):
        if len(self.indents) >= MAX_YAML_DEPTH:
            raise YamlParseError(f"it is nested more than {MAX_YAML_DEPTH} levels deep")
        return super().add_indent(column)


def parse_yaml(raw: bytes) -> Any:
    """Parse UTF-8 YAML bytes safely; raise `YamlParseError` without echoing the content."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise YamlParseError(f"not UTF-8 text (byte {exc.start})") from None
    # The pure-Python loader: libyaml's composer recurses in C and crashes the process on deep nesting.
    loader = None
    try:
        loader = _BoundedLoader(text)  # its reader already refuses some characters
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node)
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise YamlParseError(f"{exc.problem or 'invalid YAML'}{where}") from None
    except yaml.YAMLError:
        raise YamlParseError("invalid YAML") from None
    except RecursionError:
        raise YamlParseError("it is nested too deeply") from None
    except (ValueError, TypeError, OverflowError) as exc:  # a constructor choking on a value (a date, a number)
        if isinstance(exc, YamlParseError):
            raise
        raise YamlParseError(f"a value cannot be read ({exc.__class__.__name__})") from None
    finally:
        if loader is not None:
            loader.dispose()


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


def _temp_prefix(path: Path) -> str:
    return f".{path.name}."


def atomic_write(path: Path, data: bytes, *, mode: int, uid: int | None = None,
                 gid: int | None = None, keep_owner: bool = False) -> bool:
    """Replace `path` with `data` atomically, with `mode` and owner `uid:gid`; True when the owner
    was set (or none was asked), False when it could not be (only root may give a file away).
    With `keep_owner`, such a file is not written at all: OwnerNotKept is raised instead.

    `path` must already be the real path: replacing a symlink itself would turn it into a file.
    """
    directory = path.parent
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=_temp_prefix(path), suffix=TEMP_SUFFIX)
    owner_set = True
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            if uid is not None and gid is not None:
                try:
                    os.fchown(handle.fileno(), uid, gid)
                except PermissionError:
                    owner_set = False
                    if keep_owner:
                        raise OwnerNotKept(f"cannot give the new file the owner {uid}:{gid}") from None
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    fsync_dir(directory)
    return owner_set


def remove_stale_temps(path: Path) -> list[str]:
    """Delete the temp files `atomic_write` leaves when it is killed mid-write (only its own names,
    `.<name>.XXXXXXXX.tmp`). Call it only while holding the lock every writer of `path` holds."""
    pattern = re.compile(re.escape(_temp_prefix(path)) + r"[A-Za-z0-9_]{8}" + re.escape(TEMP_SUFFIX))
    removed = []
    try:
        names = os.listdir(path.parent)
    except OSError:
        return removed
    for name in names:
        if pattern.fullmatch(name):
            with contextlib.suppress(FileNotFoundError, IsADirectoryError, PermissionError):
                os.unlink(path.parent / name)
                removed.append(name)
    return removed


__all__ = ["YamlParseError", "parse_yaml", "dump_yaml", "atomic_write", "fsync_dir", "read_limited", "FileTooLarge",
           "OwnerNotKept", "remove_stale_temps", "MAX_YAML_NODES"]
