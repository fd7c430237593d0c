"""Network slimming (Liu et al., "Learning Efficient Convolutional Networks through Network Slimming", ICCV 2017).

Each channel's importance is the scaling factor gamma of the BatchNorm on it (Sec. 3.2, Eq. 1 trains with the
penalty lambda * sum |gamma| so that unimportant channels' gammas go to zero). Channels are then pruned "with a
global threshold across all layers, defined as a certain percentile of all the scaling factor values" (Sec. 3.3):
here ``ratio`` is that percentile, the fraction of all BatchNorm-scaled channels removed, lowest |gamma| first,
wherever they are. Defaults and choices:

  * the score of a channel is ``importance.group_bn_scale``: |gamma|, summed over a residual group's BatchNorms
    (the channels of a residual stream are removed together, so their gammas are weighed together, as DepGraph
    sums a group; Torch-Pruning's ``BNScaleImportance(group_reduction="sum")`` gives the same numbers, tested);
  * every group keeps at least its highest-scored channel (the paper's percentile can empty a layer; an empty
    layer computes nothing), and groups without a BatchNorm (linear layers) keep every channel;
  * no sparsity-regularised training here: this is the one-shot baseline on the trained weights (the paper's
    Table 1 "pruned" rows retrain; the L1 penalty belongs to training, not to the pruning rule). Ties in |gamma|
    are removed in group order, then channel order (a stable sort).
"""

from __future__ import annotations

import torch

from ..importance.bn_scale import group_bn_scale
from ..plan import Plan
from ..structure.slicing import BATCH_NORMS
from ..workbench import Workbench
from .base import Method, MethodSpec


class NetworkSlimming(Method):
    granularity = "structured"

    def _prepare(self, wb: Workbench) -> None:
        scores = group_bn_scale(wb)
        names = list(scores)
        score = torch.cat([scores[n] for n in names]) if names else torch.zeros(0, dtype=torch.float64)
        group = torch.cat([torch.full((len(scores[n]),), i) for i, n in enumerate(names)]) if names else \
            torch.zeros(0, dtype=torch.long)
        channel = torch.cat([torch.arange(len(scores[n])) for n in names]) if names else \
            torch.zeros(0, dtype=torch.long)
        order = torch.sort(score, stable=True).indices
        # each group's last channel in that order is never removed: the removal order leaves it out
        last = {int(group[i]): i for i in order.tolist()}
        keep_last = torch.zeros(len(score), dtype=torch.bool)
        keep_last[list(last.values())] = True
        order = order[~keep_last[order]]
        self._names, self._group, self._channel, self._order = names, group, channel, order
        self._total = len(score)

    def _plan(self, ratio: float) -> Plan:
        k = min(round(ratio * self._total), len(self._order))
        chosen = self._order[:k]
        pruned = {}
        for i, name in enumerate(self._names):
            idx = self._channel[chosen[self._group[chosen] == i]]
            pruned[name] = torch.sort(idx).values
        return Plan(self.key, ratio, "structured", pruned_channels=pruned,
                    details={"bn_channels": self._total, "bn_channels_removed": int(k)})


def _has_batchnorm(wb: Workbench) -> str | None:
    if any(isinstance(m, BATCH_NORMS) and m.affine for m in wb.model.modules()):
        return None
    return "the model has no BatchNorm layer with a learned scale (gamma), which network slimming ranks channels by"


SPECS = [
    MethodSpec("network-slimming", "Network slimming, BN |gamma| (structured, Liu et al. 2017)", "structured",
               NetworkSlimming, {}, "Channels with the smallest BatchNorm scale |gamma| over the whole network "
               "(one global percentile), each group keeping at least one; layers without BatchNorm are untouched.",
               paper="Liu et al.: Learning Efficient Convolutional Networks through Network Slimming, ICCV 2017",
               needs=("weights", "channel groups"), requires=_has_batchnorm,
               exempt={"kept-fraction": "one global |gamma| percentile: each layer loses what its scales say, and "
                                        "layers without BatchNorm keep every channel; only the total follows the "
                                        "ratio"}),
]

__all__ = ["SPECS", "NetworkSlimming"]
