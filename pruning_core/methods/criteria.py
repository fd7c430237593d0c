"""Structured pruning driven by one channel criterion of ``importance.criteria``: every dependency group removes
its lowest-scored channels (``RankedChannels``), the scores being the criterion's (see each criterion's module
for its paper and equation). One class parameterised by the criterion's key, one spec per criterion:

  * ``group-taylor``: first-order Taylor, Molchanov et al., "Pruning Convolutional Neural Networks for Resource
    Efficient Inference", ICLR 2017, Eq. 8;
  * ``group-conductance``: layer conductance, Dhamdhere et al., "How Important Is a Neuron?", ICLR 2019;
  * ``group-layer-ig``: integrated gradients through a layer, Sundararajan et al., "Axiomatic Attribution for Deep
    Networks", ICML 2017;
  * ``group-grad-x-act``: gradient x activation (Shrikumar et al., "Not Just a Black Box", 2016, at a layer);
  * ``group-activation``: mean |activation| (captum's LayerActivation);
  * ``group-apoz``: 1 - average percentage of zeros, Hu et al., "Network Trimming", 2016.

Costs on the demo models (one thread, measured with ``channel_scores``; README table): the one-pass criteria
score in milliseconds; conductance and layer integrated gradients run ``DEFAULT_STEPS`` passes per producer layer
(about 1-3 s on the digits ResNet).
"""

from __future__ import annotations

import torch

from ..importance.criteria import CRITERIA, channel_scores
from ..workbench import Workbench
from .base import MethodSpec, RankedChannels


class CriterionChannels(RankedChannels):
    """Remove the ``round(ratio * channels)`` lowest-scored channels of every group (at least one kept) under
    ``criterion``, a key of ``importance.criteria.CRITERIA`` (default ``"taylor"``; the paper and equation are the
    criterion's, ``CRITERIA[key].paper``). Scores are computed once in ``prepare`` on the dense model."""

    def __init__(self, criterion: str = "taylor", seed: int = 0):
        super().__init__(seed)
        if criterion not in CRITERIA:
            raise ValueError(f"unknown criterion {criterion!r}; available: {', '.join(CRITERIA)}")
        self.criterion = criterion

    def config(self) -> dict:
        return {"criterion": self.criterion}

    def channel_scores(self, wb: Workbench) -> dict[str, torch.Tensor]:
        scores = channel_scores(wb, self.criterion)
        missing = [g.name for g in wb.groups.groups if g.name not in scores]
        if missing:
            raise ValueError(f"criterion {self.criterion!r} does not score the channel groups {missing}")
        return scores


_CALIB = ("weights", "channel groups", "calibration activations")
_GRADS = (*_CALIB, "gradients")


def _spec(key: str, criterion: str, label: str, description: str, needs: tuple[str, ...]) -> MethodSpec:
    """The spec of the structured method driven by ``criterion``, citing the criterion's paper."""
    return MethodSpec(key, label, "structured", CriterionChannels, {"criterion": criterion}, description,
                      CRITERIA[criterion].paper, needs)


SPECS = [
    _spec("group-taylor", "taylor", "Taylor (structured channels)",
          "Channels with the smallest first-order Taylor estimate of the loss change, summed over the group.",
          _GRADS),
    _spec("group-conductance", "conductance", "Conductance (structured channels)",
          "Channels with the smallest layer conductance of the true-label logit (captum), summed over the group.",
          _GRADS),
    _spec("group-grad-x-act", "grad-x-act", "Gradient x activation (structured channels)",
          "Channels with the smallest |activation x gradient| of the true-label logit (captum).", _GRADS),
    _spec("group-layer-ig", "layer-ig", "Layer integrated gradients (structured channels)",
          "Channels with the smallest layer integrated gradients of the true-label logit (captum).", _GRADS),
    _spec("group-activation", "activation", "Mean |activation| (structured channels)",
          "Channels whose producers' outputs are smallest on average (captum LayerActivation).", _CALIB),
    _spec("group-apoz", "apoz", "APoZ (structured channels)",
          "Channels most often zero in the next layers' input (average percentage of zeros).", _CALIB),
]
