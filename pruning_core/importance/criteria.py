"""Channel criteria by name: one registry that the Layers heatmap, the rank-correlation matrix, the sensitivity
analysis and the per-criterion structured methods all read.

A criterion scores every channel of every dependency group, low scores removed first: ``channel_scores(wb, key)``
-> group name -> (channels,) float64 on the CPU. A criterion that cannot score a group (BatchNorm scale on a group
without BatchNorm) leaves it out of the dict; callers treat a missing group as "this criterion says nothing here".
Adding a criterion: its function (in its own module of this package) and one ``CriterionSpec`` in ``_specs()``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import torch

if TYPE_CHECKING:
    from ..workbench import Workbench


@dataclass(frozen=True)
class CriterionSpec:
    """``key``: the criterion's one name (CLI, cache keys, JSON). ``label``: what people read. ``score``:
    ``score(wb)`` -> group -> (channels,) scores. ``needs``: what it reads ("weights", "batchnorm", "calibration
    activations", "gradients"). ``cost``: "instant" (weights only), "one pass" (a forward/backward over the
    calibration split) or "many passes" (path integrals: n_steps passes)."""

    key: str
    label: str
    score: Callable[["Workbench"], dict[str, torch.Tensor]]
    description: str = ""
    paper: str = ""
    needs: tuple[str, ...] = ("weights",)
    cost: str = "instant"
    options: dict = field(default_factory=dict)


def _specs() -> list[CriterionSpec]:
    from .bn_scale import group_bn_scale
    from .magnitude import group_channel_norms
    from .random import random_channel_scores

    return [
        CriterionSpec("l1", "Magnitude L1 (group)", lambda wb: group_channel_norms(wb, 1),
                      "Sum over the group's tensors of each channel's L1 norm (DepGraph group norm).",
                      "Fang et al.: DepGraph: Towards Any Structural Pruning, CVPR 2023"),
        CriterionSpec("l2", "Magnitude L2 (group)", lambda wb: group_channel_norms(wb, 2),
                      "Sum over the group's tensors of each channel's L2 norm (DepGraph group norm).",
                      "Fang et al.: DepGraph: Towards Any Structural Pruning, CVPR 2023"),
        CriterionSpec("bn-scale", "BatchNorm scale |gamma|", group_bn_scale,
                      "|gamma| of the BatchNorm layers on the channel, summed over a residual group.",
                      "Liu et al.: Learning Efficient Convolutional Networks through Network Slimming, ICCV 2017",
                      needs=("weights", "batchnorm")),
        CriterionSpec("random", "Random", lambda wb: random_channel_scores(wb, 0),
                      "Seeded uniform scores: the baseline every criterion must beat.",
                      "Blalock et al.: What is the State of Neural Network Pruning?, MLSys 2020", needs=()),
    ]


CRITERIA: dict[str, CriterionSpec] = {s.key: s for s in _specs()}


def channel_scores(wb: "Workbench", key: str) -> dict[str, torch.Tensor]:
    """Group -> (channels,) float64 CPU scores of criterion ``key`` on ``wb``'s dense model (the working copy
    is restored first and left restored)."""
    if key not in CRITERIA:
        raise KeyError(f"unknown criterion {key!r}; available: {', '.join(CRITERIA)}")
    wb.restore()
    out = CRITERIA[key].score(wb)
    wb.restore()
    return {g: s.detach().to("cpu", torch.float64) for g, s in out.items()}
