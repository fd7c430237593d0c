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
    from .activation import group_activation_mean, group_apoz_scores
    from .attribution import DEFAULT_STEPS, group_attribution
    from .bn_scale import group_bn_scale
    from .magnitude import group_channel_norms
    from .random import random_channel_scores
    from .taylor import group_taylor

    calib, grads = ("calibration activations",), ("calibration activations", "gradients")
    steps = {"n_steps": DEFAULT_STEPS}

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
        CriterionSpec("taylor", "First-order Taylor", group_taylor,
                      "|mean over positions of activation x dLoss/dactivation| at the producers' outputs, averaged "
                      "over samples (cross-entropy on the true label), summed over the group's producers.",
                      "Molchanov et al.: Pruning Convolutional Neural Networks for Resource Efficient Inference, "
                      "ICLR 2017, Eq. 8", needs=grads, cost="one pass"),
        CriterionSpec("conductance", "Conductance (captum)", lambda wb: group_attribution(wb, "conductance"),
                      "Layer conductance of the true-label logit from a zero input, per channel |sum over positions| "
                      "averaged over samples, summed over the group's producers.",
                      "Dhamdhere et al.: How Important Is a Neuron?, ICLR 2019", needs=grads, cost="many passes",
                      options=steps),
        CriterionSpec("grad-x-act", "Gradient x activation (captum)", lambda wb: group_attribution(wb, "grad-x-act"),
                      "activation x d(true-label logit)/d(activation) at the producers' outputs, per channel |sum "
                      "over positions| averaged over samples.",
                      "Shrikumar et al.: Not Just a Black Box: Learning Important Features Through Propagating "
                      "Activation Differences, arXiv 2016", needs=grads, cost="one pass"),
        CriterionSpec("activation", "Mean |activation| at the output (captum)",
                      lambda wb: group_attribution(wb, "activation"),
                      "Mean |output| of each producer channel over samples and positions (captum LayerActivation), "
                      "summed over the group's producers.", "", needs=calib, cost="one pass"),
        CriterionSpec("layer-ig", "Layer integrated gradients (captum)", lambda wb: group_attribution(wb, "layer-ig"),
                      "Integrated gradients of the true-label logit through each producer's output (zero input "
                      "baseline), per channel |sum over positions| averaged over samples.",
                      "Sundararajan et al.: Axiomatic Attribution for Deep Networks, ICML 2017", needs=grads,
                      cost="many passes", options=steps),
        CriterionSpec("activation-mean", "Mean activation read by the next layer", group_activation_mean,
                      "Mean |x| of each channel of the consumers' inputs (after BatchNorm, ReLU and pooling), summed "
                      "over the group's consumers.", "", needs=calib, cost="one pass"),
        CriterionSpec("apoz", "1 - APoZ (average percentage of zeros)", group_apoz_scores,
                      "1 - the fraction of zero entries of each channel of the consumers' inputs (post-ReLU), summed "
                      "over the group's consumers: mostly-zero channels go first.",
                      "Hu et al.: Network Trimming: A Data-Driven Neuron Pruning Approach towards Efficient Deep "
                      "Architectures, arXiv 2016", needs=calib, cost="one pass"),
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
