"""Methods that prune only the hidden channels of two-layer units (``structure.units``), and the three baselines
interpolative decompositions (``methods.id``, Chee et al. 2021) and i-SpaSP (``methods.ispasp``, Wolfe &
Kyrillidis 2022) are compared with.

Every unit keeps ``structure.kept_count(size, ratio)`` channels (at least one); channel groups that are not units
(residual streams, the classifier's inputs) keep every channel.

Schedules (``schedule``): ``"dense"`` (default) chooses every unit's channels on the dense network, no training;
``"sequential"`` is i-SpaSP's official pipeline (``prune_resnet34_ispasp.py``) for any of these methods: units are
pruned in forward order, each chosen on the network whose earlier units are already pruned and fine-tuned, one
epoch of fine-tuning after each pruned unit (``block_epochs``) and a final fine-tune (``final_epochs``; the paper
runs 90 on ImageNet, we run ``FINAL_EPOCHS``) with the authors' recipe (``FINETUNE``: SGD lr 0.01, Nesterov
momentum 0.9, weight decay 5e-4; no label smoothing), pruned channels held at zero. The plan then carries every
fine-tuned weight and BatchNorm statistic as corrections. So i-SpaSP, random units and activation magnitude can
be compared through the identical pipeline. A ranked unit method orders each unit's channels
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
from torch import nn

from ..experiments.training import train_masked, trainable_copy
from ..importance.activation import unit_activation_sums
from ..importance.magnitude import group_channel_norms
from ..plan import Plan, PlanError
from ..structure.units import Unit, capture_inputs, channel_sums, kept_count, require_units
from ..workbench import Workbench
from .base import Method, MethodSpec

SCHEDULES = ("dense", "sequential")
FINETUNE = {"lr": 0.01, "weight_decay": 5e-4, "batch_size": 64, "optimizer": "sgd"}
FINAL_EPOCHS = 3
TUNED_CACHE = 8  # fine-tuned plans kept per method instance (each holds a copy of the model's tensors)

UNIT_NEEDS = ("weights", "channel groups", "units", "calibration activations")
UNITS_RATIO = ("ratio counts the units' hidden channels, which are a subset of the model's groups; the other "
               "groups keep every channel")


class UnitChannels(Method):
    """A structured method that prunes only the workbench's two-layer units (``self.units``), ``kept_count``
    channels each; a subclass says which channels with ``kept_channels`` (dense schedule) and ``choose`` (one
    unit on the current network, for the fine-tuned schedule)."""

    granularity = "structured"

    def __init__(self, seed: int = 0, schedule: str = "dense", block_epochs: int = 1,
                 final_epochs: int = FINAL_EPOCHS):
        super().__init__(seed)
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
        if int(block_epochs) < 0 or int(final_epochs) < 0:
            raise ValueError(f"fine-tuning epochs must be >= 0, got {block_epochs} and {final_epochs}")
        self.schedule, self.block_epochs, self.final_epochs = schedule, int(block_epochs), int(final_epochs)

    def config(self) -> dict:
        out = {"seed": self.seed, "schedule": self.schedule}
        if self.schedule == "sequential":
            out.update(block_epochs=self.block_epochs, final_epochs=self.final_epochs)
        return out

    def _prepare(self, wb: Workbench) -> None:
        self.units = require_units(wb, self.label)
        self._tuned: dict[tuple[int, ...], tuple] = {}

    @abstractmethod
    def kept_channels(self, counts: tuple[int, ...]) -> tuple[dict[str, torch.Tensor], dict]:
        """Unit group -> kept channel indices (ascending), and plan details, for one kept count per unit (in
        ``self.units`` order), chosen on the dense network."""

    def choose(self, unit: Unit, s: int, model: nn.Module) -> tuple[torch.Tensor, dict]:
        """The ``s`` channels of ``unit`` to keep on ``model`` (the current, partly pruned and fine-tuned
        network) and details; by default the dense choice."""
        counts = tuple(s if u.group == unit.group else u.size for u in self.units)
        kept, _ = self.kept_channels(counts)
        return kept[unit.group], {}

    def _plan(self, ratio: float) -> Plan:
        counts = tuple(kept_count(u.size, ratio) for u in self.units)
        if self.schedule == "sequential":
            if counts not in self._tuned:  # deterministic for the counts: a sweep or a repeated ratio trains once
                if len(self._tuned) >= TUNED_CACHE:
                    self._tuned.pop(next(iter(self._tuned)))
                self._tuned[counts] = self.finetuned(counts)
            pruned, corrections, details = (dict(part) for part in self._tuned[counts])
        else:
            kept, details = self.kept_channels(counts)
            pruned, corrections = {}, {}
            for u in self.units:
                keep = torch.zeros(u.size, dtype=torch.bool)
                keep[kept[u.group]] = True
                pruned[u.group] = (~keep).nonzero().squeeze(1)
        details = {**details, "kept_channels": {u.group: int(k) for u, k in zip(self.units, counts, strict=True)}}
        return Plan(self.key, ratio, "structured", pruned_channels=pruned, corrections=corrections, details=details)

    def finetuned(self, counts: tuple[int, ...]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict]:
        """The official pipeline (module docstring) on a copy of the model: per unit in forward order, choose on
        the current network, prune, fine-tune ``block_epochs``; then ``final_epochs``. Returns the pruned
        channels, the fine-tuned tensors (corrections) and per-unit details. Nothing pruned: nothing trained."""
        wb = self._wb
        if wb is None:
            raise PlanError(f"{self.label}: call prepare(workbench) before plan(ratio)")
        wb.restore()
        model = trainable_copy(wb.model)
        split = wb.data.train if len(wb.data.train) > 0 else wb.data.calib
        names = dict(model.named_parameters())
        shapes = {k: v.shape for k, v in names.items()}
        pruned: dict[str, torch.Tensor] = {}
        details: dict = {}
        masks: dict[str, torch.Tensor] = {}

        def tune(epochs: int, seed: int) -> None:
            if epochs:
                train_masked(model, masks, split.x, split.y, epochs, FINETUNE["lr"], FINETUNE["batch_size"], seed,
                             FINETUNE["weight_decay"], FINETUNE["optimizer"], wb.device)

        for i, (unit, s) in enumerate(zip(self.units, counts, strict=True)):
            if s >= unit.size:
                continue
            kept, info = self.choose(unit, s, model.eval())
            for key, value in info.items():
                details.setdefault(key, {})[unit.group] = value
            keep = torch.zeros(unit.size, dtype=torch.bool)
            keep[kept] = True
            pruned[unit.group] = (~keep).nonzero().squeeze(1)
            with torch.no_grad():
                wb.groups.zero_channels_(model, {unit.group: pruned[unit.group]})
            masks = {k: m for k, m in wb.groups.kept_mask_by_tensor(pruned, shapes).items() if k in names}
            tune(self.block_epochs, self.seed + i)
        if not pruned:
            return {}, {}, details
        tune(self.final_epochs, self.seed + len(self.units))
        state = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}
        return pruned, state, details


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
        return {u.group: torch.sort(self.keep_order[u.group][:k]).values
                for u, k in zip(self.units, counts, strict=True)}, {}


class ActivationMagnitude(RankedUnits):
    """Keep each unit's s channels with the largest dense activation sum a_j (``scores``)."""

    def config(self) -> dict:
        return {k: v for k, v in super().config().items() if k != "seed"}

    def unit_order(self, wb: Workbench) -> dict[str, torch.Tensor]:
        self.scores = unit_activation_sums(wb, self.units)
        return {g: torch.sort(a, descending=True, stable=True).indices for g, a in self.scores.items()}

    def choose(self, unit: Unit, s: int, model: nn.Module) -> tuple[torch.Tensor, dict]:
        """The s largest activation sums on the current network (the statistic i-SpaSP thresholds by)."""
        inputs = capture_inputs(model, [unit.consumer], self._wb.calib_x, self._wb.batch_size)[unit.consumer]
        a = channel_sums(unit, inputs).double().cpu()
        return torch.sort(torch.sort(a, descending=True, stable=True).indices[:s]).values, {}


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
    MethodSpec("unit-group-l1", "Group L1 on hidden units (structured)", "structured", UnitGroupMagnitude,
               {"schedule": "dense"},
               "Magnitude (group L1) restricted to the hidden channels ID and i-SpaSP prune; their baseline.",
               needs=("weights", "channel groups", "units"), exempt={"kept-fraction": UNITS_RATIO},
               short_label="Group L1 magnitude (same units)"),
    MethodSpec("activation-magnitude", "Activation magnitude (hidden units)", "structured", ActivationMagnitude,
               {"schedule": "dense"},
               "Each two-layer unit keeps the channels with the largest mean calibration activation.",
               needs=UNIT_NEEDS, exempt={"kept-fraction": UNITS_RATIO}, short_label="activation magnitude"),
    MethodSpec("random-units", "Random (hidden units)", "structured", RandomUnits, {"schedule": "dense"},
               "Uniformly random channels of each two-layer unit, at i-SpaSP's kept counts; the baseline.",
               needs=("channel groups", "units"), exempt={"kept-fraction": UNITS_RATIO}, short_label="random units"),
]
