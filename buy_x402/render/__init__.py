"""Human text for each command's result (JSON output is rendered in `cli`): one module per group of
commands, each registering its renderers; a command without one gets the registry's fallback."""
from __future__ import annotations

from . import adoption, lifecycle, offers, purchases  # noqa: F401  (they register their renderers)
from .offers import paid_summary, settlement_text
from .registry import RENDERERS, generic, render_text, renderer, scalar

__all__ = ["RENDERERS", "generic", "paid_summary", "render_text", "renderer", "scalar", "settlement_text"]
