"""The interface every pruning method implements.

A method is configured by its constructor's keyword arguments (plain values: they go into the JSON plan),
declares what it needs from the workbench, does its ratio-independent work once in ``prepare`` and then
answers ``plan(ratio)`` for any ratio. Ratio is always the fraction **removed**.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

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
    """Unstructured pruning from a fixed score per weight: the ranking is computed once (one sort), and each
    ratio is answered by comparing precomputed ranks with a threshold (no sort per ratio).

    ``scope="global"`` ranks all prunable weights together and removes ``round(ratio * total)`` of them (the
    count ``torch.nn.utils.prune.global_unstructured`` uses); ``scope="layer"`` removes
    ``round(ratio * numel)`` from every tensor.
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
        scores = self.scores(wb)
        self._shapes = {k: s.shape for k, s in scores.items()}
        self._ranks: dict[str, torch.Tensor] = {}
        if self.scope == "global":
            flat = torch.cat([s.reshape(-1) for s in scores.values()])
            order = torch.sort(flat, stable=True).indices
            ranks = torch.empty_like(order, dtype=torch.int64)
            ranks[order] = torch.arange(len(order), device=order.device)
            self._total = len(order)
            for (k, s), r in zip(scores.items(), ranks.split([s.numel() for s in scores.values()])):
                self._ranks[k] = r.view(s.shape)
        else:
            for k, s in scores.items():
                order = torch.sort(s.reshape(-1), stable=True).indices
                r = torch.empty_like(order)
                r[order] = torch.arange(len(order), device=order.device)
                self._ranks[k] = r.view(s.shape)

    def _plan(self, ratio: float) -> Plan:
        if self.scope == "global":
            k = round(ratio * self._total)
            masks = {name: r >= k for name, r in self._ranks.items()}
        else:
            masks = {name: r >= round(ratio * r.numel()) for name, r in self._ranks.items()}
        return Plan(self.name, ratio, "unstructured", masks=masks)


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
