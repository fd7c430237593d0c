"""Which methods the session's model can use, and the plans the screens draw."""

from __future__ import annotations

from pruning_core import REGISTRY, GroupError, Plan, Workbench
from pruning_core.methods import Method

from .state import state


def available_methods(wb: Workbench) -> list[str]:
    """Registry keys usable on this model: structured ones only when it has channel groups, unit methods
    (ID, i-SpaSP) only when it has two-layer units: what each spec's ``unavailable`` says."""
    return [k for k, s in REGISTRY.items() if s.unavailable(wb) is None]


def method_label(key: str) -> str:
    return REGISTRY[key].label if key in REGISTRY else key


def structured_note(wb: Workbench) -> str | None:
    """Why structured methods are unavailable, or None when they are available."""
    try:
        _ = wb.groups  # traced on first use; raises GroupError when the model has none
    except GroupError as e:
        return f"Structured (channel) methods are unavailable for this model: {e}"
    return None


def prepared(key: str) -> Method:
    """The method ``key`` prepared on this session's workbench (ratio-independent work done once)."""
    return state().method(key)


def plan_for(key: str, ratio: float) -> Plan:
    return prepared(key).plan(ratio)


def choice() -> tuple[str, float]:
    """The (method, ratio) Layers, Sparsity and Export default to, valid for the current model."""
    s = state()
    methods = available_methods(s.workbench)
    method = s.choice.method if s.choice.method in methods else "group-l1" if "group-l1" in methods else methods[0]
    return method, s.choice.ratio
