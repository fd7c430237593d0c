"""Methods that prune only the hidden channels of two-layer units (``structure.units``), and the three baselines
interpolative decompositions (``methods.id``, Chee et al. 2021) and i-SpaSP (``methods.ispasp``, Wolfe &
Kyrillidis 2022) are compared with.

Every unit keeps ``structure.kept_count(size, ratio)`` channels (at least one); channel groups that are not units
(residual streams, the classifier's inputs) keep every channel. A ranked unit method orders each unit's channels
once, most important first, and keeps the first s of that order at every ratio, so plans are nested:

* ``ActivationMagnitude``: the largest dense activation sum a_j (``importance.unit_activation_sums``, the statistic
  i-SpaSP's threshold step uses, without its residual-driven candidates). Ties: lower channel index first.
* ``RandomUnits``: a seeded uniformly random order; the baseline at exactly i-SpaSP's and ID's kept counts.
* ``UnitGroupMagnitude``: the largest group L1 norm (``importance.group_channel_norms``: producer rows, consumer
  columns, BN scales; DepGraph's group importance, Fang et al., CVPR 2023), the structured magnitude baseline
  on the same units and channel counts as ID's fraction mode; no correction.
"""

from __future__ import annotations

from abc import abstractmethod

import torch

from ..importance.activation import unit_activation_sums
from ..importance.magnitude import group_channel_norms
from ..plan import Plan
from ..structure.units import kept_count, require_units
from ..workbench import Workbench
from .base import Method, MethodSpec

UNIT_NEEDS = ("weights", "channel groups", "units", "calibration activations")
UNITS_RATIO = ("ratio counts the units' hidden channels, which are a subset of the model's groups; the other "
               "groups keep every channel")


class UnitChannels(Method):
    """A structured method that prunes only the workbench's two-layer units (``self.units``), ``kept_count``
    channels each; a subclass says which channels with ``kept_channels``."""

    granularity = "structured"

    def _prepare(self, wb: Workbench) -> None:
        self.units = require_units(wb, self.label)

    @abstractmethod
    def kept_channels(self, counts: tuple[int, ...]) -> tuple[dict[str, torch.Tensor], dict]:
        """Unit group -> kept channel indices (ascending), and plan details, for one kept count per unit (in
        ``self.units`` order)."""

    def _plan(self, ratio: float) -> Plan:
        counts = tuple(kept_count(u.size, ratio) for u in self.units)
        kept, details = self.kept_channels(counts)
        pruned = {}
        for u in self.units:
            keep = torch.zeros(u.size, dtype=torch.bool)
            keep[kept[u.group]] = True
            pruned[u.group] = (~keep).nonzero().squeeze(1)
        details = {**details, "kept_channels": {u.group: int(k) for u, k in zip(self.units, counts)}}
        return Plan(self.key, ratio, "structured", pruned_channels=pruned, details=details)


class RankedUnits(UnitChannels):
    """Each unit's channels ordered once in ``prepare`` (``keep_order``: unit group -> channel indices, most
    important first); every ratio keeps the first s of the order."""

    def _prepare(self, wb: Workbench) -> None:
        super()._prepare(wb)
        self.keep_order = self.unit_order(wb)

    @abstractmethod
    def unit_order(self, wb: Workbench) -> dict[str, torch.Tensor]:
        """Unit group -> (size,) long: the unit's channels, the one to keep first first."""

    def kept_channels(self, counts: tuple[int, ...]) -> tuple[dict[str, torch.Tensor], dict]:
        return {u.group: torch.sort(self.keep_order[u.group][:k]).values for u, k in zip(self.units, counts)}, {}


class ActivationMagnitude(RankedUnits):
    """Keep each unit's s channels with the largest dense activation sum a_j (``scores``)."""

    def config(self) -> dict:
        return {}

    def unit_order(self, wb: Workbench) -> dict[str, torch.Tensor]:
        self.scores = unit_activation_sums(wb, self.units)
        return {g: torch.sort(a, descending=True, stable=True).indices for g, a in self.scores.items()}


class RandomUnits(RankedUnits):
    """Keep s uniformly random channels of each unit (seeded; nested as the ratio grows), touching nothing but the
    units."""

    def unit_order(self, wb: Workbench) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed)
        return {u.group: torch.randperm(u.size, generator=g) for u in self.units}


class UnitGroupMagnitude(RankedUnits):
    """Each unit removes its ``size - kept_count`` channels with the smallest group L1 norm (ties: the lower
    channel index goes first)."""

    def unit_order(self, wb: Workbench) -> dict[str, torch.Tensor]:
        scores = group_channel_norms(wb, 1)
        return {u.group: torch.sort(scores[u.group].float().cpu(), stable=True).indices.flip(0) for u in self.units}


SPECS = [
    MethodSpec("unit-group-l1", "Group L1 on hidden units (structured)", "structured", UnitGroupMagnitude, {},
               "Magnitude (group L1) restricted to the hidden channels ID and i-SpaSP prune; their baseline.",
               needs=("weights", "channel groups", "units"), exempt={"kept-fraction": UNITS_RATIO},
               short_label="Group L1 magnitude (same units)"),
    MethodSpec("activation-magnitude", "Activation magnitude (hidden units)", "structured", ActivationMagnitude, {},
               "Each two-layer unit keeps the channels with the largest mean calibration activation.",
               needs=UNIT_NEEDS, exempt={"kept-fraction": UNITS_RATIO}, short_label="activation magnitude"),
    MethodSpec("random-units", "Random (hidden units)", "structured", RandomUnits, {},
               "Uniformly random channels of each two-layer unit, at i-SpaSP's kept counts; the baseline.",
               needs=("channel groups", "units"), exempt={"kept-fraction": UNITS_RATIO}, short_label="random units"),
]
