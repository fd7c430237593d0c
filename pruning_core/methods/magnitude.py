"""Magnitude pruning, unstructured and structured.

Unstructured (Han et al., "Learning both Weights and Connections for Efficient Neural Networks", NeurIPS
2015): remove the weights with the smallest |w|, over all prunable tensors at once (``global``) or the same
fraction of every tensor (``layer``). For single weights the L1 and L2 criteria are the same ranking
(|w|^p is monotone in |w| for every p > 0), so they give identical masks; ``p`` is kept only to say so in
the plan. The global variant removes exactly the weights ``torch.nn.utils.prune.global_unstructured`` with
``L1Unstructured`` removes (tested).

Structured, group magnitude (DepGraph, Fang et al., CVPR 2023, Sec. 3.3 "group-level importance"): channels
ranked by ``importance.group_channel_norms``, the summed L_p norm (p = 1 or 2) of everything that would
disappear with the channel, residual partners included.
"""

from __future__ import annotations

import torch

from ..importance.magnitude import group_channel_norms, weight_magnitude
from ..workbench import Workbench
from .base import MethodSpec, RankedChannels, RankedUnstructured


class MagnitudeUnstructured(RankedUnstructured):

    def __init__(self, scope: str = "global", p: int = 1, seed: int = 0):
        super().__init__(scope, seed)
        if p not in (1, 2):
            raise ValueError(f"p must be 1 or 2, got {p!r}")
        self.p = p

    @property
    def label_scoped(self) -> str:
        return f"Magnitude ({self.scope})"

    def config(self) -> dict:
        return {"scope": self.scope, "p": self.p}

    def scores(self, wb: Workbench) -> dict[str, torch.Tensor]:
        return weight_magnitude(wb, self.p)


class GroupMagnitude(RankedChannels):

    def __init__(self, p: int = 1, seed: int = 0):
        super().__init__(seed)
        if p not in (1, 2):
            raise ValueError(f"p must be 1 or 2, got {p!r}")
        self.p = p

    def config(self) -> dict:
        return {"p": self.p}

    def channel_scores(self, wb: Workbench) -> dict[str, torch.Tensor]:
        return group_channel_norms(wb, self.p)


SPECS = [
    MethodSpec("magnitude-global", "Magnitude, global (unstructured)", "unstructured", MagnitudeUnstructured,
               {"scope": "global"}, "Smallest |w| over all weight tensors at once."),
    MethodSpec("magnitude-layer", "Magnitude, per layer (unstructured)", "unstructured", MagnitudeUnstructured,
               {"scope": "layer"}, "Smallest |w| in each weight tensor, the same fraction everywhere."),
    MethodSpec("group-l1", "Group L1 (structured channels)", "structured", GroupMagnitude, {"p": 1},
               "Channels with the smallest summed L1 norm over their whole dependency group.",
               needs=("weights", "channel groups")),
    MethodSpec("group-l2", "Group L2 (structured channels)", "structured", GroupMagnitude, {"p": 2},
               "Channels with the smallest summed L2 norm over their whole dependency group.",
               needs=("weights", "channel groups")),
]
