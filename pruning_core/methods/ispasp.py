"""i-SpaSP: structured pruning by sparse signal recovery (Wolfe & Kyrillidis, "i-SpaSP: Structured Neural
Pruning via Sparse Signal Recovery", arXiv 2112.04905, 2021; code ``wolfecameron/i-SpaSP``,
``prune_resnet34_ispasp.py: prune_basic_block``).

Every two-layer unit (``structure.units``) maps its hidden representation H (the consumer layer's input) to
Y = layer2(H) (the consumer, plus the BatchNorm right after it). i-SpaSP keeps s of the C hidden channels with the
CoSaMP-like iteration of ``algorithms.cosamp.ispasp_select`` (T = 20 by default; the iteration, its tie rules and
when it coincides with activation magnitude are documented there). The pruned unit simply keeps the dense weights
of S (producer rows, BatchNorm entries including running statistics, consumer columns).

Schedules (``methods.units``): ``sequential`` (the paper's, ``prune_resnet34_ispasp.py``): units are pruned in
forward order, each unit's H coming from the network whose earlier units are already pruned and fine-tuned, with
one epoch of fine-tuning after each pruned unit (``block_epochs``) and a final fine-tune (``final_epochs``, 3 here
against the paper's 90 ImageNet epochs; SGD lr 0.01, Nesterov, weight decay 5e-4); ``dense`` (a variant, no
training): every unit's H from the dense network, captured once, and the dense weights of S kept as they are.
Ratio is always the fraction removed (the code's ``ratio`` is the kept fraction); each unit keeps
s = size - round(ratio * size) channels, at least one. At ratio <= 0.5 (2s >= size) the candidate set holds every
channel, and on the dense schedule i-SpaSP keeps exactly the top-s channels by activation (activation magnitude).

Deviations from the code, on purpose: BatchNorm running statistics are copied by index and both blocks are in
eval mode during the selection (the code rebuilds blocks with default statistics, in train mode, and repairs them
by fine-tuning); 3 final epochs instead of 90 and no label smoothing; every unit of ``wb.units`` is pruned (the
code skips the first block of each ResNet stage and, by default, the last); the tie rules of ``algorithms.cosamp``.

The baselines it is compared with are ``methods.units``; the paper's claims and the synthetic experiment are
``checks.ispasp`` and ``experiments.two_layer``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..algorithms.cosamp import Selection, ispasp_select
from ..structure.units import Unit, capture_inputs, dense_unit_inputs, hidden_representation, layer_two
from ..workbench import Workbench
from .base import MethodSpec
from .units import FINAL_EPOCHS, UNIT_NEEDS, UNITS_RATIO, UnitChannels

PAPER = "Wolfe & Kyrillidis: i-SpaSP: Structured Neural Pruning via Sparse Signal Recovery, arXiv 2112.04905 (2022)"


class ISpaSP(UnitChannels):
    """i-SpaSP over every two-layer unit of the workbench (module docstring).

    ``iterations``: T (20, the code's default). ``signed``: rank the proxy by its sign as the official code
    (True) or by magnitude (False). ``schedule``: ``"sequential"`` (the paper's, fine-tuned) or ``"dense"``
    (variant, no training); ``block_epochs`` (1) and ``final_epochs`` (3) for the sequential schedule.
    ``plan.details``: per unit the residual history (``residuals``), the fixed-point iteration (``settled``)
    and the kept count. Dense selections are cached by kept count, so ratios that round to the same counts
    cost nothing.
    """

    def __init__(self, iterations: int = 20, signed: bool = True, schedule: str = "sequential",
                 block_epochs: int = 1, final_epochs: int = FINAL_EPOCHS, chunk: int = 1024, seed: int = 0):
        super().__init__(seed, schedule, block_epochs, final_epochs)
        if int(iterations) < 1:
            raise ValueError(f"iterations must be at least 1, got {iterations!r}")
        self.iterations, self.signed, self.chunk = int(iterations), bool(signed), chunk

    def config(self) -> dict:
        return {"iterations": self.iterations, "signed": self.signed, **super().config()}

    def _prepare(self, wb: Workbench) -> None:
        super()._prepare(wb)
        self.dense_inputs = dense_unit_inputs(wb, self.units)
        self._cache: dict[tuple, Selection] = {}

    def _select(self, unit: Unit, s: int, model: nn.Module, inputs: torch.Tensor) -> Selection:
        hidden, positions = hidden_representation(unit, inputs)
        return ispasp_select(hidden, layer_two(model, unit), s, self.iterations, self.signed, positions=positions,
                             affine=True, chunk=self.chunk)

    def kept_channels(self, counts: tuple[int, ...]) -> tuple[dict[str, torch.Tensor], dict]:
        """The dense schedule: every unit on the dense network's H."""
        wb = self._wb
        wb.restore()
        sel = {}
        for i, (unit, s) in enumerate(zip(self.units, counts, strict=True)):
            if (i, s) not in self._cache:
                self._cache[(i, s)] = self._select(unit, s, wb.model, self.dense_inputs[unit.consumer])
            sel[unit.group] = self._cache[(i, s)]
        details = {"residuals": {g: [float(r) for r in x.residuals] for g, x in sel.items()},
                   "settled": {g: x.settled for g, x in sel.items()},
                   "units": {u.group: u.title for u in self.units}}
        return {g: x.kept for g, x in sel.items()}, details

    def choose(self, unit: Unit, s: int, model: nn.Module) -> tuple[torch.Tensor, dict]:
        """The sequential schedule: one unit on the current (pruned and fine-tuned) network's H."""
        inputs = capture_inputs(model, [unit.consumer], self._wb.calib_x, self._wb.batch_size)[unit.consumer]
        sel = self._select(unit, s, model, inputs)
        return sel.kept, {"residuals": [float(r) for r in sel.residuals], "settled": sel.settled}


SPECS = [
    MethodSpec("ispasp", "i-SpaSP (structured, Wolfe & Kyrillidis 2022)", "structured", ISpaSP,
               {"iterations": 20, "signed": True, "schedule": "sequential", "block_epochs": 1,
                "final_epochs": FINAL_EPOCHS},
               "Sparse-signal-recovery pruning of each two-layer unit's hidden channels: the output residual's "
               "gradient proposes candidates, the dense activation keeps s of them; units in forward order, one "
               "epoch of fine-tuning after each and 3 at the end (the paper's pipeline).",
               paper=PAPER, needs=(*UNIT_NEEDS, "training"), exempt={"kept-fraction": UNITS_RATIO},
               short_label="i-SpaSP"),
    MethodSpec("ispasp-dense", "i-SpaSP, dense schedule without fine-tuning (structured, variant)", "structured",
               ISpaSP, {"iterations": 20, "signed": True, "schedule": "dense"},
               "i-SpaSP choosing every unit on the dense network and keeping the dense weights, no training: a "
               "variant of ours (the paper fine-tunes).",
               paper=PAPER, needs=UNIT_NEEDS, exempt={"kept-fraction": UNITS_RATIO},
               short_label="i-SpaSP (dense, no fine-tuning)"),
    MethodSpec("ispasp-abs", "i-SpaSP with |proxy| (structured)", "structured", ISpaSP,
               {"iterations": 20, "signed": False, "schedule": "sequential", "block_epochs": 1,
                "final_epochs": FINAL_EPOCHS},
               "i-SpaSP ranking candidates by |proxy| (textbook CoSaMP) instead of the official signed proxy.",
               paper=PAPER, needs=(*UNIT_NEEDS, "training"), exempt={"kept-fraction": UNITS_RATIO},
               short_label="i-SpaSP (|proxy|)"),
]
