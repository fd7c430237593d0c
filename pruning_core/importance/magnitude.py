"""Magnitude criteria.

* ``weight_magnitude``: |w|^p of every prunable weight (Han et al., NeurIPS 2015). For single weights every
  p > 0 gives the same ranking.
* ``group_channel_norms``: the group-level importance of DepGraph (Fang et al., CVPR 2023, Sec. 3.3): channel i
  of a dependency group scores the sum, over the group's weight tensors (producer output rows, consumer input
  columns, norm-layer scales), of the L_p norm of each tensor's slice for channel i,

      I(i) = sum_{w in group} || w[slice_i] ||_p          (p = 1 or 2)

  so a channel is judged by everything that would disappear with it, residual partners included.
* ``output_row_norms``: the L_p norm of each output row of every prunable weight, for models without channel
  groups (TorchScript, untraceable layers).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from .base import Importance

if TYPE_CHECKING:
    from ..workbench import Workbench


def weight_magnitude(wb: "Workbench", p: int = 1) -> dict[str, torch.Tensor]:
    """Weight name -> |w|^p, the weight's shape, on the CPU."""
    return {k: w.detach().abs().pow(p).cpu() for k, w in wb.prunable.items()}


def group_channel_norms(wb: "Workbench", p: int) -> dict[str, torch.Tensor]:
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


def output_row_norms(wb: "Workbench", p: int = 1) -> dict[str, np.ndarray]:
    """Layer -> (out,) L_p norm of each output row of its weight (everything but dim 0), for every prunable
    weight, on the dense weights."""
    wb.restore()
    return {name[: -len(".weight")] if name.endswith(".weight") else name:
            w.detach().to("cpu", torch.float64).reshape(w.shape[0], -1).norm(p=p, dim=1).numpy()
            for name, w in wb.prunable.items()}


class WeightMagnitude(Importance):
    target = "weights"

    def __init__(self, p: int = 1):
        self.p = p

    def __call__(self, wb: "Workbench") -> dict[str, torch.Tensor]:
        return weight_magnitude(wb, self.p)


class GroupNorm(Importance):
    target = "channels"

    def __init__(self, p: int = 1):
        self.p = p

    def __call__(self, wb: "Workbench") -> dict[str, torch.Tensor]:
        return group_channel_norms(wb, self.p)


class RowNorm(Importance):
    target = "rows"

    def __init__(self, p: int = 1):
        self.p = p

    def __call__(self, wb: "Workbench") -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(v) for k, v in output_row_norms(wb, self.p).items()}
