"""What one pruning decision touches: for a channel group (``structure.groups``, DepGraph's coupling: Fang et al.,
"DepGraph: Towards Any Structural Pruning", CVPR 2023, Sec. 3), every tensor slice that goes with one of its
channels, and what removing one channel of each group saves.

``group_footprint(wb, group)`` lists the group's member tensors with their role (the producing layer's output
rows, a residual partner's, a norm's, a consumer's input columns, through a flatten or at a concatenation offset)
and the entries one channel removes from each. ``group_costs(wb)`` gives, per group, the parameters and FLOPs that
removing one channel saves, counted exactly as a sweep counts a plan (``Workbench.plan_cost``), so a residual
stream's channel, which spans every block it runs through, is seen to cost more than a block's inner channel.
"""

from __future__ import annotations

import math

import pandas as pd
import torch
from torch import nn

from .plan import Plan
from .structure.groups import ChannelGroup
from .structure.slicing import BATCH_NORMS
from .structure.units import norm_producers
from .workbench import Workbench

NORMS = (*BATCH_NORMS, nn.LayerNorm)
ROLES = ("producer output", "residual partner", "norm", "consumer input", "depthwise (in = out)")
FOOTPRINT_COLUMNS = ["module", "tensor", "name", "module_type", "role", "dim", "entries_per_channel",
                     "removed_per_channel", "kind", "note"]
COST_COLUMNS = ["group", "channels", "producers", "consumers", "residual", "params_per_channel",
                "flops_per_channel", "params_share", "flops_share", "uniform", "layers"]


def _channel_note(member, size: int) -> tuple[float | int, str]:
    """Entries per channel along the member's dim (``target_idx`` per channel) and how channels map to them."""
    counts = torch.bincount(member.root_idx, minlength=size)
    low, high = int(counts.min()), int(counts.max())
    per = low if low == high else float(counts.float().mean())
    if high > 1:  # a producer's rows per channel (an attention head's q, k and v rows) or a consumer's inputs
        what = "rows per channel" if member.dim == 0 else "inputs per channel (a flatten's positions or a head's width)"
        note = f"{low} {what}" if low == high else f"{low}-{high} {what}"
    elif not torch.equal(member.target_idx, member.root_idx):
        offsets = torch.unique(member.target_idx - member.root_idx)
        note = (f"concatenated: channel k is input k{int(offsets[0]):+d}" if len(offsets) == 1
                else f"concatenated: channels map to inputs {int(member.target_idx.min())}-"
                     f"{int(member.target_idx.max())}")
    else:
        note = ""
    return per, note


def group_footprint(wb: Workbench, group: str | ChannelGroup) -> pd.DataFrame:
    """One row per tensor slice set one channel of ``group`` spans (``FOOTPRINT_COLUMNS``):

    * ``module``, ``tensor`` (the parameter or buffer name in its module), ``name`` (``module.tensor``),
      ``module_type``, ``dim`` (the dimension the channel indexes), ``kind`` ("parameter" or "buffer").
    * ``role``: "producer output" (dim 0 of the weight and bias of the layer the group is rooted at, or of its
      only producer), "residual partner" (the other producers of a group with several, whose outputs are added
      to it, and their norms), "norm" (BatchNorm/LayerNorm scale, shift and running statistics of the channel),
      "consumer input" (dim 1 of a layer that reads the channel), "depthwise (in = out)" (a depthwise conv).
    * ``entries_per_channel``: indices along ``dim`` one channel owns (16 for a 4x4 map flattened into a Linear;
      the mean when channels differ); ``removed_per_channel``: entries of the tensor one channel removes,
      ``numel / shape[dim] * entries_per_channel``.
    * ``note``: a flatten's inputs per channel, a concatenation's offset, whose norm it is, running statistics.
    """
    g = group if isinstance(group, ChannelGroup) else wb.groups.by_name[group]
    modules = dict(wb.model.named_modules())
    tensors = {**dict(wb.model.named_parameters()), **dict(wb.model.named_buffers())}
    norm_of = norm_producers(wb.model, wb.example_input)
    residual = len(g.producers) > 1
    rows = []
    for m in g.members:
        mod = modules[m.module]
        t = tensors[f"{m.module}.{m.param}"]
        per, note = _channel_note(m, g.size)
        notes = [note] if note else []
        if isinstance(mod, NORMS):
            source = norm_of.get(m.module)
            role = "residual partner" if residual and source in g.producers and source != g.name else "norm"
            notes.append(f"norm of {source}" if source else "norm on the summed stream")
            if m.is_buffer:
                notes.append("running statistic: sliced away, not masked")
        elif m.dim == 0 and (m.module == g.name or g.producers == [m.module]):
            role = "producer output"
        elif m.dim == 0 and m.module in g.producers:
            role = "residual partner"
            notes.append(f"output added to {g.name}'s")
        elif m.dim == 0:
            role = "depthwise (in = out)"
        else:
            role = "consumer input"
        rows.append({"module": m.module, "tensor": m.param, "name": f"{m.module}.{m.param}",
                     "module_type": type(mod).__name__, "role": role, "dim": m.dim, "entries_per_channel": per,
                     "removed_per_channel": t.numel() // t.shape[m.dim] * per,
                     "kind": "buffer" if m.is_buffer else "parameter", "note": "; ".join(notes)})
    return pd.DataFrame(rows, columns=FOOTPRINT_COLUMNS)


def one_channel_plan(group: str, channel: int = 0) -> Plan:
    """The structured plan that removes channel ``channel`` of ``group`` and nothing else."""
    return Plan("one-channel", 0.0, "structured", pruned_channels={group: torch.tensor([channel])},
                details={"group": group, "channel": channel})


def exact_kept_fractions(wb: Workbench, plan: Plan) -> dict[str, float]:
    """Kept fraction of every prunable weight under a structured ``plan`` as an exact float64 quotient of the
    counts (``kept_count_by_tensor``), so that one channel's FLOPs come out exact to the unit (the workbench's
    float32 fractions can round a large layer's count)."""
    prunable = wb.prunable
    counts = wb.groups.kept_count_by_tensor(plan.pruned_channels, {k: p.shape for k, p in prunable.items()})
    return {k: (counts[k][0] / counts[k][1] if k in counts else 1.0) for k in prunable}


def group_costs(wb: Workbench) -> pd.DataFrame:
    """One row per channel group (``COST_COLUMNS``): its channels, number of producers and consumers, whether it
    is a residual stream (more than one producer), and the parameters and FLOPs (batch 1, ``metrics.count_flops``'s
    convention) that removing its channel 0 alone saves, as a sweep would count that plan: the dense count less
    ``Workbench.plan_cost`` of ``one_channel_plan`` (parameters: every entry the plan zeroes, i.e. the sliced
    model's count; FLOPs: ``metrics.flops_with_density`` with the exact kept fractions). ``params_share`` and
    ``flops_share``: of the dense model. ``uniform``: every channel spans as many entries (then any channel costs
    the same as channel 0). ``layers``: the producers, root first."""
    total_flops, _ = wb.dense_flops
    rows = []
    for g in wb.groups.groups:
        plan = one_channel_plan(g.name)
        params, flops = wb.plan_cost(plan, kept=exact_kept_fractions(wb, plan))
        uniform = all(bool((c := torch.bincount(m.root_idx, minlength=g.size)).min() == c.max())
                      for m in g.members)
        dp, df = wb.dense_params - params, total_flops - flops
        # a traced group is named for its root producer; a group a model supplies (heads) has a name of its own
        layers = [g.name, *[p for p in g.producers if p != g.name]] if g.name in g.producers else list(g.producers)
        rows.append({"group": g.name, "channels": g.size, "producers": len(g.producers),
                     "consumers": len(g.consumers), "residual": len(g.producers) > 1, "params_per_channel": dp,
                     "flops_per_channel": df, "params_share": dp / wb.dense_params,
                     "flops_share": df / total_flops if total_flops else math.nan, "uniform": uniform,
                     "layers": ", ".join(layers)})
    return pd.DataFrame(rows, columns=COST_COLUMNS)


__all__ = ["COST_COLUMNS", "FOOTPRINT_COLUMNS", "ROLES", "exact_kept_fractions", "group_costs", "group_footprint",
           "norm_producers", "one_channel_plan"]
