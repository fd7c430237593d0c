"""BatchNorm scale criterion: |gamma| of the BatchNorm layers on a channel (network slimming, Liu et al.,
"Learning Efficient Convolutional Networks through Network Slimming", ICCV 2017, Sec. 3.2: the scaling factor of
each channel's BatchNorm is its importance, driven towards zero by an L1 penalty during training)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..structure.slicing import BATCH_NORMS
from .base import Importance

if TYPE_CHECKING:
    from ..workbench import Workbench


def group_bn_scale(wb: "Workbench") -> dict[str, torch.Tensor]:
    """Channel group -> (channels,) float64 on the CPU: sum over the group's BatchNorm layers of |gamma| at each
    channel. A plain conv -> BN group has one BatchNorm and the score is exactly |gamma|; a residual group couples
    several (one per block), which are summed as DepGraph sums a group's tensors. Groups with no affine
    BatchNorm (Linear-only MLPs, LayerNorm, ``affine=False``) have no such score and are left out of the dict."""
    modules = dict(wb.model.named_modules())
    params = dict(wb.model.named_parameters())
    out = {}
    for g in wb.groups.groups:
        score, found = torch.zeros(g.size, dtype=torch.float64), False
        for m in g.members:
            if m.param != "weight" or m.is_buffer or not isinstance(modules.get(m.module), BATCH_NORMS):
                continue
            gamma = params[f"{m.module}.weight"].detach().to("cpu", torch.float64).abs()
            score.index_add_(0, m.root_idx, gamma[m.target_idx])
            found = True
        if found:
            out[g.name] = score
    return out


class BNScale(Importance):
    target = "channels"

    def __call__(self, wb: "Workbench") -> dict[str, torch.Tensor]:
        return group_bn_scale(wb)
