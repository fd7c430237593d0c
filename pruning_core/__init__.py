"""Pruning Explorer's engine: pure Python + torch, no UI. Usable from a notebook, the CLI, the app and tests.

    from pruning_core import Workbench, load_builtin, load_digits, run_sweep
    wb = Workbench(load_builtin("digits-resnet"), load_digits())
    result = run_sweep(wb, ["magnitude-global", "group-l1"], [0.0, 0.5, 0.9])
"""

from .data import DataError, DataSplits, load_digits, load_npz
from .methods import REGISTRY, Method, make_method
from .plan import Plan, PlanError, check_ratio
from .structure import GroupError, ModelGroups, build_groups
from .sweep import SweepResult, ratio_grid, run_sweep, sweep
from .workbench import Workbench, default_device


def load_builtin(name: str):
    """A built-in architecture with its trained weights (committed demo weights, or published ones from an
    installed package), randomly initialised if it has none; on the CPU, in eval mode."""
    from .models import ARCHITECTURES

    return ARCHITECTURES[name].load()


__all__ = ["REGISTRY", "DataError", "DataSplits", "GroupError", "Method", "ModelGroups", "Plan", "PlanError",
           "SweepResult", "Workbench", "build_groups", "check_ratio", "default_device", "load_builtin",
           "load_digits", "load_npz", "make_method", "ratio_grid", "run_sweep", "sweep"]
