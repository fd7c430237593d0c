"""The interface every pruning method implements.

A method is configured by its constructor's keyword arguments (plain values: they go into the JSON plan),
declares what it needs from the workbench, does its ratio-independent work once in ``prepare`` and then
answers ``plan(ratio)`` for any ratio. Ratio is always the fraction **removed**.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable, ClassVar

import numpy as np
import torch

from ..plan import Plan, PlanError, check_ratio
from ..workbench import Workbench

# What a method can ask of the workbench; ``MethodSpec.needs`` lists them, and the UI and the conformance
# suite read them ("units": two-layer units, "channel groups": the Torch-Pruning dependency groups).
NEEDS = ("weights", "channel groups", "units", "calibration activations", "gradients", "curvature", "training")
# The conformance suite's properties (tests/unit/test_conformance.py); a spec may exempt itself from one, saying why.
PROPERTIES = ("ratio-zero-identity", "kept-fraction", "masked-equals-sliced", "deterministic", "plan-json",
              "finite-outputs", "exact-restore")


@dataclass(frozen=True)
class MethodSpec:
    """Everything the registry, the UI, the command line and the conformance suite know about one method.

    ``key`` is the method's one name: registry key, ``plan.method``, JSON, CLI and the sweep's ``method`` column.
    ``label`` is what people read (``short_label``, when set, inside one paper's figures). ``factory`` is the
    class, built with ``defaults`` (plain keyword values that go into the plan's JSON). ``paper``: the citation a
    research method reproduces ("" for baselines). ``needs``: from ``NEEDS``. ``exempt``: conformance property ->
    why this method cannot meet it. ``requires``: the method's own availability check beyond ``needs`` (a
    BatchNorm to read, say), returning the reason or None.
    """

    key: str
    label: str
    granularity: str  # "unstructured" or "structured"
    factory: type["Method"]
    defaults: dict = field(default_factory=dict)
    description: str = ""
    paper: str = ""
    needs: tuple[str, ...] = ("weights",)
    exempt: dict = field(default_factory=dict)
    requires: Callable[[Workbench], str | None] | None = None  # a method's own check: why it cannot run, or None
    short_label: str = ""  # a legend's name inside one paper's figure, where the paper is already named

    def __post_init__(self):
        unknown = [n for n in self.needs if n not in NEEDS] + [p for p in self.exempt if p not in PROPERTIES]
        if unknown or self.granularity not in ("unstructured", "structured"):
            raise ValueError(f"method spec {self.key!r}: unknown need, property or granularity {unknown}")

    def build(self, **overrides) -> "Method":
        """A configured instance (``overrides`` replace the defaults; the instance's spec is the registry entry
        its settings match, this one when only the seed changes)."""
        method = self.factory(**{**self.defaults, **overrides})
        method._spec = self if set(overrides) <= {"seed"} else spec_for(method)
        return method

    def unavailable(self, wb: Workbench) -> str | None:
        """Why this method cannot run on ``wb``'s model, or None when it can."""
        if ("channel groups" in self.needs or self.granularity == "structured") and not wb.supports_structured:
            return "the model's channel groups could not be traced (TorchScript, torch.export or a tracing error)"
        if "units" in self.needs and not wb.units:
            return "the model has no two-layer units (hidden channels between exactly one producer and one consumer)"
        return self.requires(wb) if self.requires is not None else None


def spec_for(method: "Method") -> MethodSpec:
    """The first registry spec whose class and defaults match ``method``'s configuration; for an instance
    configured as no spec is, a spec named after the first spec of its class and the settings that differ."""
    from . import REGISTRY

    config, cls = method.config(), type(method)
    for spec in REGISTRY.values():
        if cls is spec.factory and all(config.get(k) == v for k, v in spec.defaults.items()):
            return spec
    base = next((s for s in REGISTRY.values() if s.factory is cls), None)
    if base is None:
        return MethodSpec(cls.__name__.lower(), cls.__name__, cls.granularity, cls, dict(config))
    changed = ",".join(f"{k}={v}" for k, v in sorted(config.items()) if k != "seed" and base.defaults.get(k) != v)
    return MethodSpec(f"{base.key}[{changed}]", f"{base.label} ({changed})", base.granularity, cls, dict(config),
                      base.description, base.paper, base.needs, base.exempt)


class Method(ABC):
    """A pruning method. Its name, label and requirements live in its ``spec`` (see ``MethodSpec``): an instance
    from ``make_method`` carries the registry's, and one constructed directly finds it by its settings."""

    granularity: ClassVar[str]

    def __init__(self, seed: int = 0):
        self.seed = seed
        self._wb: Workbench | None = None
        self._spec: MethodSpec | None = None

    @property
    def spec(self) -> MethodSpec:
        if self._spec is None:
            self._spec = spec_for(self)
        return self._spec

    @property
    def key(self) -> str:
        return self.spec.key

    @property
    def label(self) -> str:
        return self.spec.label

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
        plan.method = self.key
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
        return Plan(self.key, ratio, "unstructured", masks=masks)


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
        return Plan(self.key, ratio, "structured", pruned_channels=pruned)
