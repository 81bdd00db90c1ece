"""Human text for each command's result. JSON output is rendered in `cli`; this is the text side."""
from __future__ import annotations

from typing import Any, Callable

from .result import Result

_RENDERERS: dict[str, Callable[[dict[str, Any]], str]] = {}


def renderer(command: str) -> Callable[[Callable[[dict[str, Any]], str]], Callable[[dict[str, Any]], str]]:
    def register(func: Callable[[dict[str, Any]], str]) -> Callable[[dict[str, Any]], str]:
        _RENDERERS[command] = func
        return func
    return register


def render_text(result: Result) -> str:
    func = _RENDERERS.get(result.command)
    if func is None:
        return _generic(result.data)
    return func(result.data)


def _generic(data: dict[str, Any], indent: str = "") -> str:
    lines = []
    for key, value in data.items():
        if isinstance(value, dict):
            lines.append(f"{indent}{key}:")
            lines.append(_generic(value, indent + "  "))
        else:
            lines.append(f"{indent}{key}: {value}")
    return "\n".join(line for line in lines if line)


@renderer("env")
def _env(data: dict[str, Any]) -> str:
    rows = data["settings"]
    width = max(len(r["env"]) for r in rows)
    return "\n".join(f"{r['env']:<{width}}  {r['value']}" for r in rows)
