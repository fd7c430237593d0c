"""Activation criteria, and where a dependency group's channels appear in the layers around it.

* ``unit_activation_sums``: how strongly each hidden channel of a two-layer unit fires on the calibration batch,
  a_j = the sum of channel j's entries of the consumer's input over samples and positions (the statistic i-SpaSP's
  threshold step ranks by, Wolfe & Kyrillidis 2022; post-activation, so nonnegative after a ReLU).
* ``group_activation_mean`` ("activation-mean") and ``group_apoz_scores`` ("apoz", Hu et al., "Network Trimming: A
  Data-Driven Neuron Pruning Approach towards Efficient Deep Architectures", arXiv:1607.03250, 2016, Eq. 1) read
  each group's channels where the next layers read them: the **input of every consumer** (conv/linear layer whose
  input columns are in the group), i.e. after the BatchNorm, the activation and any pooling or flatten between.
  After a ReLU that is the post-ReLU output APoZ is defined on (for the digits CNN's last conv, after the max-pool
  too, which leaves fewer zeros: what the next layer actually receives). A channel that reaches a Linear through a
  flatten owns several input features; its statistics pool all of them.

Channel sites: ``producer_sites`` (a producer's output channels, the member of its weight along dim 0) and
``consumer_sites`` (a consumer's input channels, its weight along dim 1) map a layer's channel indices
(``target_idx``) to the group's channels (``root_idx``); ``sum_into_groups`` adds per-layer channel scores up
into each group, as the magnitude criteria add a group's tensors. ``hooks_restored`` guarantees that no hook a
criterion (or a library it calls) registered outlives it.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..structure.units import Unit, channel_sums, dense_unit_inputs, stream_inputs
from .base import Importance

if TYPE_CHECKING:
    from ..workbench import Workbench

HOOK_DICTS = ("_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks",
              "_forward_pre_hooks_with_kwargs", "_backward_hooks", "_backward_pre_hooks")


def unit_activation_sums(wb: "Workbench", units: list[Unit] | None = None) -> dict[str, torch.Tensor]:
    """Unit group -> (hidden channels,) float64 a_j on the dense model (``units``: default every unit)."""
    units = wb.units if units is None else units
    inputs = dense_unit_inputs(wb, units)
    return {u.group: channel_sums(u, inputs[u.consumer]).double().cpu() for u in units}


class ActivationSum(Importance):
    target = "units"

    def __call__(self, wb: "Workbench") -> dict[str, torch.Tensor]:
        return unit_activation_sums(wb)


@dataclass(frozen=True)
class ChannelSite:
    """Channels of group ``group`` in layer ``layer``'s output (producer) or input (consumer): the layer's channel
    ``target_idx[k]`` is the group's channel ``root_idx[k]``."""

    group: str
    layer: str
    target_idx: torch.Tensor
    root_idx: torch.Tensor


def producer_sites(wb: "Workbench") -> list[ChannelSite]:
    """One site per (group, producer layer): the conv/linear layers whose output channels are the group's."""
    return [ChannelSite(g.name, m.module, m.target_idx, m.root_idx) for g in wb.groups.groups for m in g.members
            if m.module in g.producers and m.param == "weight" and m.dim == 0]


def consumer_sites(wb: "Workbench") -> list[ChannelSite]:
    """One site per (group, consumer layer): the conv/linear layers whose input channels are the group's."""
    return [ChannelSite(g.name, m.module, m.target_idx, m.root_idx) for g in wb.groups.groups for m in g.members
            if m.module in g.consumers and m.param == "weight" and m.dim == 1]


def channels_first(t: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """A layer's output, input or attribution as (N, channels, positions): a conv's channels are dim 1, a Linear's
    the last dim (leading dims after the batch become positions)."""
    if isinstance(module, nn.Linear):
        t = t.movedim(-1, 1)
    return t.reshape(t.shape[0], t.shape[1], -1)


def sum_into_groups(wb: "Workbench", sites: list[ChannelSite], per_layer: dict[str, torch.Tensor]
                    ) -> dict[str, torch.Tensor]:
    """Group -> (channels,) float64 CPU: the sum over the group's ``sites`` of ``per_layer[layer][target_idx]``
    added into channel ``root_idx`` (a residual group sums its producers). Groups with no site are left out."""
    sizes = wb.groups.sizes
    out: dict[str, torch.Tensor] = {}
    for s in sites:
        score = out.setdefault(s.group, torch.zeros(sizes[s.group], dtype=torch.float64))
        score.index_add_(0, s.root_idx, per_layer[s.layer].detach().to("cpu", torch.float64)[s.target_idx])
    return out


@contextmanager
def hooks_restored(model: nn.Module):
    """On exit, however it is left, remove every module hook registered inside the block and put back every
    module's train/eval mode: a criterion's hooks (its own or a library's) never outlive it."""
    before = [(m, {d: set(getattr(m, d, {})) for d in HOOK_DICTS}, m.training) for m in model.modules()]
    try:
        yield model
    finally:
        for m, hooks, training in before:
            for d, keys in hooks.items():
                registered = getattr(m, d, None)
                for k in [k for k in (registered or {}) if k not in keys]:
                    del registered[k]
            m.training = training


def consumer_input_statistics(wb: "Workbench") -> dict[str, dict[str, torch.Tensor]]:
    """Consumer layer -> {"abs_sum", "zeros", "count"}: per input channel (features, for a Linear), over the
    calibration split, the sum of |x|, the number of exact zeros and the number of entries (float64, CPU)."""
    modules = dict(wb.model.named_modules())
    layers = sorted({s.layer for s in consumer_sites(wb)})
    stats: dict[str, dict[str, torch.Tensor]] = {}

    def on_input(layer: str, x: torch.Tensor) -> None:
        z = channels_first(x, modules[layer])
        acc = stats.setdefault(layer, {k: torch.zeros(z.shape[1], dtype=torch.float64, device=z.device)
                                       for k in ("abs_sum", "zeros", "count")})
        acc["abs_sum"] += z.abs().sum((0, 2), dtype=torch.float64)
        acc["zeros"] += (z == 0).sum((0, 2)).double()
        acc["count"] += z.shape[0] * z.shape[2]

    with hooks_restored(wb.model):
        stream_inputs(wb.model, layers, wb.calib_x, on_input, wb.batch_size)
    return {layer: {k: v.cpu() for k, v in acc.items()} for layer, acc in stats.items()}


def _pooled_ratio(wb: "Workbench", numerator: str, complement: bool) -> dict[str, torch.Tensor]:
    """Per group, the sum over its consumers of (numerator / count) pooled over each channel's entries (all the
    features of a flattened channel together); ``complement``: of 1 - that ratio."""
    stats = consumer_input_statistics(wb)
    sizes = wb.groups.sizes
    out: dict[str, torch.Tensor] = {}
    for s in consumer_sites(wb):
        num = torch.zeros(sizes[s.group], dtype=torch.float64).index_add_(0, s.root_idx,
                                                                          stats[s.layer][numerator][s.target_idx])
        den = torch.zeros(sizes[s.group], dtype=torch.float64).index_add_(0, s.root_idx,
                                                                          stats[s.layer]["count"][s.target_idx])
        ratio = num / den
        out[s.group] = out.get(s.group, 0) + (1 - ratio if complement else ratio)
    return out


def group_activation_mean(wb: "Workbench") -> dict[str, torch.Tensor]:
    """"activation-mean": group -> (channels,) float64, the mean of |x| over samples and positions of each channel
    of every consumer's input (post-activation; = the mean activation after a ReLU), summed over the group's
    consumers. Groups without a conv/linear consumer are left out."""
    return _pooled_ratio(wb, "abs_sum", complement=False)


def group_apoz_scores(wb: "Workbench") -> dict[str, torch.Tensor]:
    """"apoz": group -> (channels,) float64, 1 - APoZ with APoZ_c = (zero entries of channel c in a consumer's
    input over the calibration samples and positions) / (its entries) (Hu et al. 2016, Eq. 1; a channel that is
    mostly zero scores low and is removed first), summed over the group's consumers."""
    return _pooled_ratio(wb, "zeros", complement=True)
