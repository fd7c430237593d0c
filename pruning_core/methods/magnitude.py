"""Magnitude pruning, unstructured and structured.

Unstructured (Han et al., "Learning both Weights and Connections for Efficient Neural Networks", NeurIPS
2015): remove the weights with the smallest |w|, over all prunable tensors at once (``global``) or the same
fraction of every tensor (``layer``). For single weights the L1 and L2 criteria are the same ranking
(|w|^p is monotone in |w| for every p > 0), so they give identical masks; ``p`` is kept only to say so in
the plan. The global variant removes exactly the weights ``torch.nn.utils.prune.global_unstructured`` with
``L1Unstructured`` removes (tested).

Structured, group magnitude (DepGraph, Fang et al., CVPR 2023, Sec. 3.3 "group-level importance"): the
importance of channel i of a dependency group is the sum, over the group's weight tensors (producer output
rows, consumer input columns, norm-layer scales), of the L_p norm of each tensor's slice for channel i:

    I(i) = sum_{w in group} || w[slice_i] ||_p          (p = 1 or 2)

so a channel is judged by everything that would disappear with it, residual partners included.
"""

from __future__ import annotations

import torch

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
        return {k: p.detach().abs().pow(self.p).cpu() for k, p in wb.prunable.items()}


def group_channel_norms(wb: Workbench, p: int) -> dict[str, torch.Tensor]:
    """I(i) = sum over the group's weight tensors of ||w[slice_i]||_p, for every group (CPU, float64)."""
    params = dict(wb.model.named_parameters())
    out = {}
    for g in wb.groups.groups:
        score = torch.zeros(g.size, dtype=torch.float64)
        for w, m in g.importance_tensors(params):
            moved = w.detach().movedim(m.dim, 0)
            if not torch.equal(m.target_idx, torch.arange(len(moved), device=m.target_idx.device)):
                moved = moved[m.target_idx.to(moved.device)]
            # one float64 copy, laid out (targets, rest...) as the sum reads it; then in place
            per_target = torch.empty(moved.shape, dtype=torch.float64).copy_(moved).abs_()
            if p != 1:
                per_target.pow_(p)
            per_target = per_target.reshape(len(m.target_idx), -1).sum(1)
            # several targets can belong to one channel (flatten: one channel -> h*w linear inputs)
            per_channel = torch.zeros(g.size, dtype=torch.float64).index_add_(0, m.root_idx, per_target)
            score += per_channel.pow(1.0 / p)
        out[g.name] = score
    return out


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
