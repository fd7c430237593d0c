"""Random scores: the baseline every criterion must beat (Blalock et al., "What is the State of Neural Network
Pruning?", MLSys 2020). Seeded: the same seed gives the same scores, so rankings and masks are reproducible and
nested across ratios."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .base import TARGETS, Importance

if TYPE_CHECKING:
    from ..workbench import Workbench


def random_weight_scores(wb: "Workbench", seed: int = 0) -> dict[str, torch.Tensor]:
    """Weight name -> uniform [0, 1) scores of the weight's shape, drawn in ``wb.prunable`` order."""
    g = torch.Generator().manual_seed(seed)
    return {k: torch.rand(p.shape, generator=g) for k, p in wb.prunable.items()}


def random_channel_scores(wb: "Workbench", seed: int = 0) -> dict[str, torch.Tensor]:
    """Channel group -> (channels,) uniform [0, 1) scores, drawn in group order."""
    g = torch.Generator().manual_seed(seed)
    return {grp.name: torch.rand(grp.size, generator=g) for grp in wb.groups.groups}


class RandomScores(Importance):
    def __init__(self, target: str = "weights", seed: int = 0):
        if target not in ("weights", "channels"):
            raise ValueError(f"random scores are drawn per weight or per channel, got target {target!r} "
                             f"(targets: {TARGETS})")
        self.target, self.seed = target, seed

    def __call__(self, wb: "Workbench") -> dict[str, torch.Tensor]:
        if self.target == "weights":
            return random_weight_scores(wb, self.seed)
        return random_channel_scores(wb, self.seed)
