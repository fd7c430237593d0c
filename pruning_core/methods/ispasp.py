"""i-SpaSP: structured pruning by sparse signal recovery (Wolfe & Kyrillidis, "i-SpaSP: Structured Neural
Pruning via Sparse Signal Recovery", arXiv 2112.04905, 2021; code ``wolfecameron/i-SpaSP``,
``prune_resnet34_ispasp.py: prune_basic_block``).

Every two-layer unit (``structure.units``) maps its hidden representation H (the consumer layer's input) to
Y = layer2(H) (the consumer, plus the BatchNorm right after it). i-SpaSP keeps s of the C hidden channels with the
CoSaMP-like iteration of ``algorithms.cosamp.ispasp_select`` (T = 20 by default; the iteration, its tie rules and
when it coincides with activation magnitude are documented there). The pruned unit simply keeps the dense weights
of S (producer rows, BatchNorm entries including running statistics, consumer columns).

Schedules: ``sequential`` (the code's): units are pruned in forward order, each unit's H coming from the
network whose earlier units are already pruned (masked, no fine-tuning in between); ``dense``: every unit's H
from the dense network, captured once. Ratio is always the fraction removed (the code's ``ratio`` is the kept
fraction); each unit keeps s = size - round(ratio * size) channels, at least one.

Deviations from the code, on purpose: BatchNorm running statistics are copied by index and both blocks are in
eval mode (the code rebuilds blocks with default statistics, in train mode, and repairs them by fine-tuning);
no fine-tuning, neither the code's 1 epoch after each block nor the final 90; every unit of ``wb.units`` is
pruned (the code skips the first block of each ResNet stage and, by default, the last); the tie rules of
``algorithms.cosamp``.

The baselines it is compared with are ``methods.units``; the paper's claims and the synthetic experiment are
``checks.ispasp`` and ``experiments.two_layer``.
"""

from __future__ import annotations

import torch

from ..algorithms.cosamp import Selection, ispasp_select
from ..plan import Plan, PlanError
from ..structure.units import capture_inputs, dense_unit_inputs, hidden_representation, layer_two
from ..workbench import Workbench
from .base import MethodSpec
from .units import UNIT_NEEDS, UNITS_RATIO, UnitChannels

PAPER = "Wolfe & Kyrillidis: i-SpaSP: Structured Neural Pruning via Sparse Signal Recovery, arXiv 2112.04905 (2022)"
SCHEDULES = ("sequential", "dense")


class ISpaSP(UnitChannels):
    """i-SpaSP over every two-layer unit of the workbench (module docstring).

    ``iterations``: T (20, the code's default). ``signed``: rank the proxy by its sign as the official code
    (True) or by magnitude (False). ``schedule``: ``"sequential"`` (the code's: each unit sees the already
    pruned network before it) or ``"dense"`` (every unit's H from the dense network, captured once).
    ``plan.details``: per unit the residual history (``residuals``), the fixed-point iteration
    (``settled``) and the kept count. Selections are cached by kept counts, so ratios that round to the same
    counts cost nothing.
    """

    def __init__(self, iterations: int = 20, signed: bool = True, schedule: str = "sequential",
                 chunk: int = 1024, seed: int = 0):
        super().__init__(seed)
        if int(iterations) < 1:
            raise ValueError(f"iterations must be at least 1, got {iterations!r}")
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
        self.iterations, self.signed, self.schedule, self.chunk = int(iterations), bool(signed), schedule, chunk

    def config(self) -> dict:
        return {"iterations": self.iterations, "signed": self.signed, "schedule": self.schedule}

    def _prepare(self, wb: Workbench) -> None:
        super()._prepare(wb)
        self.dense_inputs = dense_unit_inputs(wb, self.units)
        self._cache: dict[tuple, Selection] = {}

    def select(self, counts: tuple[int, ...]) -> dict[str, Selection]:
        """Unit group -> Selection for the kept counts ``counts`` (one per unit, in ``wb.units`` order)."""
        wb = self._wb
        if wb is None:
            raise PlanError(f"{self.label}: call prepare(workbench) before select(counts)")
        out: dict[str, Selection] = {}
        pruned: dict[str, torch.Tensor] = {}
        for i, (unit, s) in enumerate(zip(self.units, counts)):
            key = (i, counts[: i + 1]) if self.schedule == "sequential" else (i, s)
            if key not in self._cache:
                if self.schedule == "sequential" and any(len(p) for p in pruned.values()):
                    with wb.applied(Plan(self.key, 0.0, "structured", pruned_channels=dict(pruned))):
                        inputs = capture_inputs(wb.model, [unit.consumer], wb.calib_x, wb.batch_size)
                else:
                    inputs = self.dense_inputs
                hidden, positions = hidden_representation(unit, inputs[unit.consumer])
                wb.restore()
                self._cache[key] = ispasp_select(hidden, layer_two(wb.model, unit), s, self.iterations,
                                                 self.signed, positions=positions, affine=True, chunk=self.chunk)
            sel = self._cache[key]
            out[unit.group] = sel
            keep = torch.zeros(unit.size, dtype=torch.bool)
            keep[sel.kept] = True
            pruned[unit.group] = (~keep).nonzero().squeeze(1)
        return out

    def kept_channels(self, counts: tuple[int, ...]) -> tuple[dict[str, torch.Tensor], dict]:
        sel = self.select(counts)
        details = {"residuals": {g: [float(r) for r in x.residuals] for g, x in sel.items()},
                   "settled": {g: x.settled for g, x in sel.items()},
                   "units": {u.group: u.title for u in self.units}}
        return {g: x.kept for g, x in sel.items()}, details


SPECS = [
    MethodSpec("ispasp", "i-SpaSP (structured, Wolfe & Kyrillidis 2022)", "structured", ISpaSP,
               {"iterations": 20, "signed": True, "schedule": "sequential"},
               "Sparse-signal-recovery pruning of each two-layer unit's hidden channels: the output residual's "
               "gradient proposes candidates, the dense activation keeps s of them; units in forward order.",
               paper=PAPER, needs=UNIT_NEEDS, exempt={"kept-fraction": UNITS_RATIO}, short_label="i-SpaSP"),
    MethodSpec("ispasp-abs", "i-SpaSP with |proxy| (structured)", "structured", ISpaSP,
               {"iterations": 20, "signed": False, "schedule": "sequential"},
               "i-SpaSP ranking candidates by |proxy| (textbook CoSaMP) instead of the official signed proxy.",
               paper=PAPER, needs=UNIT_NEEDS, exempt={"kept-fraction": UNITS_RATIO},
               short_label="i-SpaSP (|proxy|)"),
]
