"""Widgets whose values outlive the page they are on, and the plan picker the screens share.

Streamlit drops a widget's own key when the widget is not drawn, so a value that must survive a page switch
lives elsewhere and is copied into the widget on every run: a page's own picks under a plain session-state key
(``keep``), values the whole session shares in the typed state (``bind``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

from pruning_core import PlanError, check_ratio

from .plans import available_methods, choice, method_label
from .state import state


def keep(key: str, default, options=None, on_change=None) -> dict:
    """Widget kwargs for a page's own value that survives page switches: the value lives under ``key``, the
    widget under ``_key``, copied both ways. ``options`` clamps a stale value (a method this model lacks, a
    ratio no longer swept) to ``default``."""
    ss = st.session_state
    value = ss.get(key, default)
    if options is not None:
        if isinstance(value, list):
            value = [v for v in value if v in options]
        elif value not in options:
            value = default
    ss[key] = value
    ss["_" + key] = value

    def store() -> None:
        ss[key] = ss["_" + key]
        if on_change is not None:
            on_change()

    return {"key": "_" + key, "on_change": store}


def bind(key: str, value, store: Callable[[Any], None]) -> dict:
    """Widget kwargs for a value that lives in the typed session state: the widget (key ``_key``) shows
    ``value`` on every run, and ``store(new value)`` runs when the person changes it."""
    ss = st.session_state
    ss["_" + key] = value
    return {"key": "_" + key, "on_change": lambda: store(ss["_" + key])}


def plan_picker() -> tuple[str, float]:
    """Method and ratio pickers shared by Layers and Export; they start from the session's plan choice (the
    Sweep screen sets it) and changing them changes it for the other screens too."""
    s = state()
    methods = available_methods(s.workbench)
    method, ratio = choice()
    ratio = min(max(ratio, 0.0), 0.99)  # within the slider's range
    s.choose(method=method, ratio=ratio)
    left, right = st.columns(2)
    method = left.selectbox("Method", methods, format_func=method_label,
                            **bind("choice_method", method, lambda v: s.choose(method=v)))
    ratio = right.slider("Ratio (fraction removed)", 0.0, 0.99, step=0.01,
                         **bind("choice_ratio", ratio, lambda v: s.choose(ratio=v)))
    return method, float(ratio)


def parse_ratios(text: str) -> list[float]:
    """A comma (or space) separated list of ratios, each validated, rounded to 4 decimals, sorted and with repeats
    merged; raises PlanError with the reason, also for more ratios than one sweep may have (counted first)."""
    from pruning_core.limits import max_ratios, too_many_ratios

    parts = [p for p in text.replace(";", ",").replace(" ", ",").split(",") if p.strip()]
    if not parts:
        raise PlanError("Enter at least one ratio, for example 0, 0.3, 0.5, 0.7, 0.9.")
    if len(parts) > max_ratios():
        raise PlanError(too_many_ratios(len(parts)))
    # checked again after rounding: 0.99996 rounds to 1
    return sorted({check_ratio(round(check_ratio(p.strip()), 4)) for p in parts})
