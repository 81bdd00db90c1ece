"""The renderer registry and the fallback every command without its own text gets."""
from __future__ import annotations

from typing import Any, Callable

from ..result import Result

RENDERERS: dict[str, Callable[[dict[str, Any]], str]] = {}


def renderer(command: str) -> Callable[[Callable[[dict[str, Any]], str]], Callable[[dict[str, Any]], str]]:
    def register(func: Callable[[dict[str, Any]], str]) -> Callable[[dict[str, Any]], str]:
        RENDERERS[command] = func
        return func
    return register


def render_text(result: Result) -> str:
    func = RENDERERS.get(result.command)
    if func is None:
        return generic(result.data)
    return func(result.data)


def generic(data: dict[str, Any], indent: str = "") -> str:
    """Any command without its own renderer: nested keys, lists as items; never a Python repr."""
    lines = []
    for key, value in data.items():
        if isinstance(value, dict):
            lines.append(f"{indent}{key}:")
            lines.append(generic(value, indent + "  "))
        elif isinstance(value, list):
            lines.append(f"{indent}{key}:" + ("" if value else " none"))
            for item in value:
                if isinstance(item, dict):
                    lines.append(generic(item, indent + "  - ").replace(f"\n{indent}  - ", f"\n{indent}    "))
                else:
                    lines.append(f"{indent}  - {scalar(item)}")
        else:
            lines.append(f"{indent}{key}: {scalar(value)}")
    return "\n".join(line for line in lines if line)


def scalar(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"
