"""The interface every pruning method implements.

A method is configured by its constructor's keyword arguments (plain values: they go into the JSON plan),
declares what it needs from the workbench, does its ratio-independent work once in ``prepare`` and then
answers ``plan(ratio)`` for any ratio. Ratio is always the fraction **removed**.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np
import torch

from ..plan import Plan, PlanError, check_ratio
from ..workbench import Workbench

# What a method can ask of the workbench.
NEEDS = ("weights", "calibration activations", "gradients", "curvature", "training")


class Method(ABC):
    name: ClassVar[str]
    label: ClassVar[str]
    granularity: ClassVar[str]  # "unstructured" or "structured"
    needs: ClassVar[tuple[str, ...]] = ("weights",)
    paper: ClassVar[str] = ""

    def __init__(self, seed: int = 0):
        self.seed = seed
        self._wb: Workbench | None = None

    def config(self) -> dict:
        return {"seed": self.seed}

    def prepare(self, wb: Workbench) -> "Method":
        """Ratio-independent work on ``wb`` (scores, rankings), done once per model."""
        self._wb = wb
        self._prepare(wb)
        return self

    @abstractmethod
    def _prepare(self, wb: Workbench) -> None: ...

    def plan(self, ratio: float) -> Plan:
        if self._wb is None:
            raise PlanError(f"{self.label}: call prepare(workbench) before plan(ratio)")
        ratio = check_ratio(ratio)
        plan = self._plan(ratio)
        plan.method = getattr(self, "key", self.name)
        plan.details.setdefault("config", self.config())
        return plan

    @abstractmethod
    def _plan(self, ratio: float) -> Plan: ...


class RankedUnstructured(Method):
    """Unstructured pruning from a fixed score per weight: the scores are sorted once, and each ratio is
    answered by comparing every score with the k-th smallest (no sort and no rank table per ratio).

    ``scope="global"`` ranks all prunable weights together and removes the ``round(ratio * total)`` lowest (the
    count ``torch.nn.utils.prune.global_unstructured`` uses); ``scope="layer"`` removes ``round(ratio * numel)``
    from every tensor. Ties at the threshold are removed in flat order (tensors in ``scores`` order, then
    row-major), so the removed weights are exactly the first k of a stable ascending sort.
    """

    granularity = "unstructured"
    scopes = ("global", "layer")

    def __init__(self, scope: str = "global", seed: int = 0):
        super().__init__(seed)
        if scope not in self.scopes:
            raise ValueError(f"scope must be one of {self.scopes}, got {scope!r}")
        self.scope = scope

    def config(self) -> dict:
        return {"scope": self.scope, "seed": self.seed}

    @abstractmethod
    def scores(self, wb: Workbench) -> dict[str, torch.Tensor]:
        """Importance of every prunable weight (same shapes); low scores are removed first."""

    def _prepare(self, wb: Workbench) -> None:
        scores = {k: _nan_last(s.detach()) for k, s in self.scores(wb).items()}
        if self.scope == "global":
            flat = torch.cat([s.reshape(-1) for s in scores.values()])
            self._scores = {k: s.to(flat.dtype) for k, s in scores.items()}
            self._ascending = _ascending(flat)
        else:
            self._scores = scores
            self._ascending_by_tensor = {k: _ascending(s.reshape(-1)) for k, s in scores.items()}

    def _plan(self, ratio: float) -> Plan:
        if self.scope == "global":
            masks = _remove_lowest(self._scores, self._ascending, round(ratio * len(self._ascending)))
        else:
            masks = {}
            for name, s in self._scores.items():
                masks.update(_remove_lowest({name: s}, self._ascending_by_tensor[name], round(ratio * s.numel())))
        return Plan(self.name, ratio, "unstructured", masks=masks)


def _nan_last(s: torch.Tensor) -> torch.Tensor:
    """NaN never compares equal or less, so a NaN score is ranked as +inf: removed last, where a sort puts it."""
    if s.is_floating_point() and bool(torch.isnan(s).any()):
        return torch.nan_to_num(s, nan=float("inf"), posinf=float("inf"), neginf=float("-inf"))
    return s


def _ascending(flat: torch.Tensor) -> torch.Tensor:
    """``flat`` (1-D) sorted ascending. numpy's SIMD sort is many times faster than ``torch.sort`` on CPU."""
    if flat.device.type == "cpu" and flat.dtype in (torch.float32, torch.float64):
        return torch.from_numpy(np.sort(flat.numpy()))
    return torch.sort(flat).values


def _remove_lowest(scores: dict[str, torch.Tensor], ascending: torch.Tensor, k: int) -> dict[str, torch.Tensor]:
    """Keep-masks (True = kept) that remove the ``k`` lowest of ``scores`` read as one flat sequence, ties in
    sequence order: the first ``k`` of a stable ascending sort. ``ascending``: all those scores, sorted."""
    if k <= 0:
        return {name: torch.ones_like(s, dtype=torch.bool) for name, s in scores.items()}
    threshold = ascending[k - 1]
    below = int(torch.searchsorted(ascending, threshold))
    ties_left = int(torch.searchsorted(ascending, threshold, right=True)) - below
    ties_to_remove = k - below  # of the scores equal to the threshold, the first this many go
    masks = {}
    for name, s in scores.items():
        if ties_to_remove == 0:
            masks[name] = s >= threshold
        elif ties_to_remove == ties_left:
            masks[name] = s > threshold
        else:  # the cut falls among the ties: only here do we need to find them
            tie = (s == threshold).reshape(-1)
            n_ties = int(tie.count_nonzero())
            keep = s > threshold
            if n_ties > ties_to_remove:
                first_kept = int(tie.nonzero()[ties_to_remove])
                keep.view(-1)[first_kept:] |= tie[first_kept:]
                n_ties = ties_to_remove
            masks[name] = keep
            ties_to_remove -= n_ties
            ties_left -= n_ties
    return masks


class RankedChannels(Method):
    """Structured pruning from a fixed score per channel of every dependency group.

    Every group removes ``round(ratio * channels)`` of its lowest-scored channels, always keeping at least one,
    so each group's kept fraction is within one channel of ``1 - ratio``.
    """

    granularity = "structured"

    @abstractmethod
    def channel_scores(self, wb: Workbench) -> dict[str, torch.Tensor]:
        """Group name -> (channels,) importance; low scores are removed first."""

    def _prepare(self, wb: Workbench) -> None:
        self._groups = wb.groups
        self._order = {name: torch.sort(s.detach().float().cpu(), stable=True).indices
                       for name, s in self.channel_scores(wb).items()}

    def _plan(self, ratio: float) -> Plan:
        pruned = {}
        for g in self._groups.groups:
            n = min(round(ratio * g.size), g.size - 1)
            pruned[g.name] = torch.sort(self._order[g.name][:n]).values
        return Plan(self.name, ratio, "structured", pruned_channels=pruned)
