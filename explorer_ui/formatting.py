"""How numbers, names from the person's machine and errors are shown."""

from __future__ import annotations

import logging

import streamlit as st

from pruning_core import DataError, GroupError, PlanError
from pruning_core.export import ExportError
from pruning_core.loading import ModelLoadError
from pruning_core.ray_runner import RayUnavailable

_log = logging.getLogger(__name__)
# our own errors: their message is written for the person
EXPLAINED_ERRORS = (ModelLoadError, DataError, GroupError, PlanError, ExportError, RayUnavailable)


def fmt_count(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f}"


def fmt_bytes(n: int) -> str:
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def plain(name: str, limit: int = 120) -> str:
    """A name from the person's machine (an uploaded file's) made safe to show in Streamlit markdown: control
    characters removed, markdown punctuation escaped (no links, images or emphasis), shortened."""
    text = "".join(c for c in str(name) if c.isprintable())
    text = text if len(text) <= limit else text[:limit - 1] + "…"
    return "".join("\\" + c if c in "\\`*_{}[]()<>#+-.!|~:$&" else c for c in text)


def show_error(error: Exception, what: str = "") -> None:
    """A message the person can act on. Our own errors carry one; anything else is named plainly."""
    prefix = f"{what}: " if what else ""
    if isinstance(error, EXPLAINED_ERRORS):
        st.error(f"{prefix}{error}", icon="⚠️")
    else:  # a defect, or a library failing on an unusual model: say so, and keep the traceback in the log
        _log.error("unexpected error shown to the user", exc_info=error)
        st.error(f"{prefix}unexpected {type(error).__name__}: {error}", icon="⚠️")
