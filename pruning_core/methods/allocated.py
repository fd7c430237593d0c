"""Sensitivity-allocated channel pruning: per-group ratios chosen from each group's measured sensitivity.

Li et al., "Pruning Filters for Efficient ConvNets" (ICLR 2017), Sec. 3.2 and Fig. 2, prune each layer alone to
measure its sensitivity and then prune sensitive layers less. Here the layer is the whole dependency group (a
residual stream is pruned with all its partners, as a real prune would), the measurement is the group-faithful
sensitivity analysis (``pruning_core.sensitivity``) on the **calibration** split (training data: the evaluation
split the sweep reports is never used to choose), at the ratios ``grid``, and the ratios are allocated by the
greedy multiple-choice knapsack of ``pruning_core.allocation`` so that the combined plan removes ``ratio`` of the
model's FLOPs (``budget="flops"``, default) or parameters (``budget="params"``), with the smallest predicted
accuracy drop (``objective="accuracy"``, default; ``"loss"``: the calibration loss increase). Within a group,
channels go lowest ``criterion`` score first (default ``"l1"``, the group L1 norm of ``group-l1``), so at equal
realised FLOPs the difference from ``group-l1`` is the allocation alone.

``ratio`` is therefore the fraction of FLOPs (parameters) removed, not of channels; a target beyond what the grid's
largest ratio in every group removes is capped there, and the plan says so (``details["reachable"]``).
"""

from __future__ import annotations

from ..allocation import Allocator
from ..importance.criteria import channel_scores
from ..plan import Plan
from ..workbench import Workbench
from .base import Method, MethodSpec

GRID = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


class AllocatedChannels(Method):
    granularity = "structured"

    def __init__(self, criterion: str = "l1", budget: str = "flops", objective: str = "accuracy",
                 grid: tuple[float, ...] | list[float] = GRID, seed: int = 0):
        super().__init__(seed)
        self.criterion, self.budget, self.objective = criterion, budget, objective
        self.grid = tuple(float(r) for r in grid)
        if not self.grid or any(not 0 < r < 1 for r in self.grid):
            raise ValueError(f"the sensitivity grid needs ratios strictly between 0 and 1, got {self.grid}")

    def config(self) -> dict:
        return {"criterion": self.criterion, "budget": self.budget, "objective": self.objective,
                "grid": list(self.grid)}

    def _prepare(self, wb: Workbench) -> None:
        from ..sensitivity import sensitivity_table

        scores = channel_scores(wb, self.criterion)
        self.table = sensitivity_table(wb, scores, list(self.grid), split="calib")
        self.allocator = Allocator(wb, scores, self.table, self.budget, self.objective)

    def _plan(self, ratio: float) -> Plan:
        plan = self.allocator.plan(ratio, self.key)
        return plan


_EXEMPT = {"kept-fraction": "ratio is the fraction of FLOPs (or parameters) removed, spread over the groups by "
                            "their measured sensitivity; no group follows the ratio in channels"}

SPECS = [
    MethodSpec("allocated-flops", "Sensitivity-allocated, FLOPs target (structured)", "structured",
               AllocatedChannels, {"criterion": "l1", "budget": "flops", "objective": "accuracy"},
               "Per-group ratios from each group's measured sensitivity (pruned alone on the calibration split), "
               "chosen so the model loses `ratio` of its FLOPs with the least predicted accuracy drop; group L1 "
               "order within a group.",
               paper="Li et al.: Pruning Filters for Efficient ConvNets, ICLR 2017 (sensitivity, Sec. 3.2)",
               needs=("weights", "channel groups", "calibration activations"), exempt=_EXEMPT,
               short_label="allocated (FLOPs)"),
    MethodSpec("allocated-params", "Sensitivity-allocated, parameter target (structured)", "structured",
               AllocatedChannels, {"criterion": "l1", "budget": "params", "objective": "accuracy"},
               "As the FLOPs target, but `ratio` is the fraction of parameters removed.",
               paper="Li et al.: Pruning Filters for Efficient ConvNets, ICLR 2017 (sensitivity, Sec. 3.2)",
               needs=("weights", "channel groups", "calibration activations"), exempt=_EXEMPT,
               short_label="allocated (params)"),
]

__all__ = ["GRID", "SPECS", "AllocatedChannels"]
