"""Per-group pruning ratios from a sensitivity table: how to spread a global budget over the layers.

Given, for every channel group g, the measured cost D_g(k) of removing its k lowest-scored channels alone (the
accuracy drop, or the loss increase, of the group-faithful sensitivity analysis at the grid's ratios; D_g(0) = 0),
find channel counts k_g whose combined plan removes at least a target fraction of the model's FLOPs (or
parameters) while the predicted drop sum_g D_g(k_g) is small. The predicted drop is additive over groups (the
sensitivity table measures each group alone), which is the usual first-order assumption of sensitivity-based
allocation (Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017, Sec. 3.2 and Fig. 2: prune the
sensitive layers less).

Solver: the greedy for the multiple-choice knapsack (Sinha & Zoltners, "The Multiple-Choice Knapsack Problem",
Operations Research 27(3), 1979): from k_g = 0 everywhere, repeatedly take the one move "group g from its current
knot to a later knot" with the smallest predicted drop per unit of budget removed, Delta D / Delta cost, looking
ahead to every later knot of the group (so a group whose curve is flat then steep is handled like its lower convex
hull). The knots are the grid's channel counts, min(round(r * size), size - 1). Costs in that ordering are each
group's own removal measured alone (additive); the moves form one path, computed once, along which the exact
budget of the combined plan (``Workbench.plan_cost``: shared tensors pruned by two groups counted once) is
measured at every knot. A target is met by walking the path to the first knot at or beyond it, then bisecting
the channel count inside that last move: the plan removes at least the target, and one channel fewer of the last
moved group would not (the target is met within one channel). Plans are nested: a larger target extends the path.
A target beyond the path's end (every group at the grid's largest ratio) is reported as not reachable, with the
largest removal the grid allows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from .plan import Plan, PlanError
from .workbench import Workbench

BUDGETS = ("flops", "params")
# "accuracy": the drop of the task's headline metric (accuracy with labels; agreement with the dense model without;
# cosine similarity for embeddings); "loss": the loss increase (labelled data only)
OBJECTIVES = {"accuracy": "drop", "loss": "loss_increase"}


@dataclass(frozen=True)
class Allocation:
    """The channels each group removes for one target, and what that is predicted and measured to cost."""

    target: float  # fraction of the budget to remove
    budget: str  # "flops" or "params"
    removed: dict[str, int]  # group -> channels removed
    achieved: float  # fraction of the budget the combined plan removes (exact)
    predicted_drop: float  # sum over groups of the interpolated sensitivity (the objective's unit)
    reachable: bool  # False: the target lies beyond the grid's largest ratio in every group
    ratios: dict[str, float] = field(default_factory=dict)  # group -> fraction of its channels removed


class Allocator:
    """``Allocator(wb, scores, table, budget="flops", objective="accuracy")``.

    ``scores``: group -> channel scores (low removed first, ties in index order: the order the sensitivity
    analysis pruned them in); ``table``: the sensitivity rows (columns ``group``, ``ratio`` and the objective's
    column: ``accuracy_drop`` or ``loss_increase``). Groups absent from the table keep every channel."""

    def __init__(self, wb: Workbench, scores: dict[str, torch.Tensor], table: pd.DataFrame, budget: str = "flops",
                 objective: str = "accuracy"):
        if budget not in BUDGETS:
            raise ValueError(f"budget must be one of {BUDGETS}, got {budget!r}")
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {tuple(OBJECTIVES)}, got {objective!r}")
        self.wb, self.budget, self.objective = wb, budget, objective
        column = OBJECTIVES[objective]
        if column == "drop" and column not in table:
            column = "accuracy_drop"  # a table made before the headline column existed
        sizes = {g.name: g.size for g in wb.groups.groups}
        self.order = {g: torch.sort(s.detach().float().cpu(), stable=True).indices for g, s in scores.items()
                      if g in sizes}
        self.knots: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for g, rows in table.groupby("group", sort=False):
            if g not in self.order:
                continue
            size = sizes[g]
            by_k: dict[int, list[float]] = {0: [0.0]}
            for r, d in zip(rows["ratio"].to_numpy(float), rows[column].to_numpy(float), strict=True):
                if np.isfinite(d):
                    by_k.setdefault(min(round(r * size), size - 1), []).append(float(d))
            ks = np.array(sorted(by_k))
            self.knots[g] = (ks, np.array([np.mean(by_k[k]) for k in ks]))
        if not self.knots:
            raise PlanError("the sensitivity table has no group this model can prune")
        dense_params, dense_flops = wb.dense_params, wb.dense_flops[0]
        self._total = dense_params if budget == "params" else dense_flops
        self._path = self._greedy_path()

    # ----- costs ---------------------------------------------------------------------------------------------
    def pruned_channels(self, removed: dict[str, int]) -> dict[str, torch.Tensor]:
        """Group -> the indices of its ``removed[g]`` lowest-scored channels, ascending."""
        return {g: torch.sort(self.order[g][:k]).values for g, k in removed.items() if k > 0}

    def removed_fraction(self, removed: dict[str, int]) -> float:
        """Exact fraction of the budget the combined plan removes."""
        plan = Plan("allocation", 0.0, "structured", pruned_channels=self.pruned_channels(removed))
        params, flops = self.wb.plan_cost(plan)
        kept = params if self.budget == "params" else flops
        return 1.0 - kept / self._total if self._total else 0.0

    def predicted(self, g: str, k: float) -> float:
        ks, ds = self.knots[g]
        return float(np.interp(k, ks, ds))

    # ----- the path ------------------------------------------------------------------------------------------
    def _greedy_path(self) -> list[tuple[str, int, int, float]]:
        """The greedy's moves in order: (group, from k, to k, exact removed fraction after the move)."""
        alone = {g: np.array([self.removed_fraction({g: int(k)}) for k in ks]) for g, (ks, _) in self.knots.items()}
        at = dict.fromkeys(self.knots, 0)  # index into each group's knots
        removed = dict.fromkeys(self.knots, 0)
        path = []
        while True:
            best = None
            for g, (ks, ds) in self.knots.items():
                i = at[g]
                for j in range(i + 1, len(ks)):
                    dc = alone[g][j] - alone[g][i]
                    if dc <= 0:
                        continue
                    slope = (ds[j] - ds[i]) / dc
                    if best is None or slope < best[0] - 1e-15:
                        best = (slope, g, j)
            if best is None:
                return path
            _, g, j = best
            k_from = int(self.knots[g][0][at[g]])
            at[g] = j
            removed[g] = int(self.knots[g][0][j])
            path.append((g, k_from, removed[g], self.removed_fraction(removed)))

    @property
    def max_fraction(self) -> float:
        return self._path[-1][3] if self._path else 0.0

    def solve(self, target: float) -> Allocation:
        """The channel counts for removing at least ``target`` of the budget (see the module docstring)."""
        removed = dict.fromkeys(self.knots, 0)
        achieved = 0.0
        reachable = True
        if target > 0:
            for g, k_from, k_to, after in self._path:
                if after >= target - 1e-12:
                    lo, hi = k_from, k_to  # removed_fraction at lo < target <= at hi
                    while hi - lo > 1:
                        mid = (lo + hi) // 2
                        if self.removed_fraction({**removed, g: mid}) >= target - 1e-12:
                            hi = mid
                        else:
                            lo = mid
                    removed[g] = hi
                    break
                removed[g] = k_to
            else:
                reachable = False
            achieved = self.removed_fraction(removed)
        sizes = {g.name: g.size for g in self.wb.groups.groups}
        return Allocation(target, self.budget, removed, achieved,
                          sum(self.predicted(g, k) for g, k in removed.items()), reachable,
                          {g: k / sizes[g] for g, k in removed.items()})

    def plan(self, target: float, key: str = "allocation") -> Plan:
        a = self.solve(target)
        details = {"budget": a.budget, "target": a.target, "achieved": a.achieved, "reachable": a.reachable,
                   "predicted_drop": a.predicted_drop, "objective": self.objective,
                   "group_ratios": {g: round(r, 6) for g, r in a.ratios.items()}}
        return Plan(key, target, "structured", pruned_channels=self.pruned_channels(a.removed), details=details)


__all__ = ["BUDGETS", "OBJECTIVES", "Allocation", "Allocator"]
