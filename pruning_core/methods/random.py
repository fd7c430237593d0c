"""Random pruning: the baseline every criterion must beat (e.g. Blalock et al., "What is the State of
Neural Network Pruning?", MLSys 2020, which reports it for every comparison). Seeded, so a sweep is
reproducible; the same seed gives the same ranking for every ratio, so masks are nested as the ratio grows."""

from __future__ import annotations

import torch

from ..importance.random import random_channel_scores, random_weight_scores
from ..workbench import Workbench
from .base import MethodSpec, RankedChannels, RankedUnstructured


class RandomUnstructured(RankedUnstructured):

    def scores(self, wb: Workbench) -> dict[str, torch.Tensor]:
        return random_weight_scores(wb, self.seed)


class RandomChannels(RankedChannels):

    def channel_scores(self, wb: Workbench) -> dict[str, torch.Tensor]:
        return random_channel_scores(wb, self.seed)


SPECS = [
    MethodSpec("random", "Random (unstructured)", "unstructured", RandomUnstructured, {"scope": "global"},
               "Uniformly random weights; the baseline."),
    MethodSpec("random-channels", "Random channels (structured)", "structured", RandomChannels, {},
               "Uniformly random channels of every group; the structured baseline.", needs=("channel groups",)),
]
