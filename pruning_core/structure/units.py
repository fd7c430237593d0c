"""Two-layer units: the hidden channels between exactly one producer layer and exactly one consumer layer.

Interpolative decompositions (Chee et al. 2021) and i-SpaSP (Wolfe & Kyrillidis 2022) both prune the hidden
width of such a unit: an MLP's hidden neurons, a plain CNN's conv channels, a residual block's inner channels
(conv1 -> BN -> ReLU -> conv2). Channels that feed a residual sum couple several producers and are not units,
so "prune only the inner channels of each block" falls out of the dependency groups with no ResNet-specific
rule.

A unit is found from the Torch-Pruning channel groups (``groups.py``): a group whose only conv/linear members
are one producer (output channels) and one consumer (input channels), with nothing between them but BatchNorm
and parameter-free ops (activations, pooling, dropout, flatten). What the methods look at is the consumer's
**input**, captured by a forward pre-hook: the post-activation (and post-pooling) tensor that actually feeds
the next layer, which is where the fold of an interpolative decomposition is exact.

The consumer reads the hidden channels in one of three layouts:

* ``conv``: a Conv1d/2d/3d input (N, C, *spatial): one row per (sample, position);
* ``linear``: a Linear input (..., C): one row per sample (and leading position);
* ``flatten``: a Linear fed by a channel-major flatten (N, C*P): channel c owns features c*P .. c*P+P-1, one
  row per (sample, position p).

Every method that prunes units keeps ``kept_count(size, ratio)`` channels of each: the one rule for how many.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..plan import PlanError
from .groups import GroupError, ModelGroups
from .slicing import BATCH_NORMS, CONVS

if TYPE_CHECKING:
    from ..workbench import Workbench


@dataclass(frozen=True)
class Unit:
    group: str  # channel-group name (the producer layer)
    producer: str
    consumer: str
    size: int  # hidden channels
    layout: str  # "conv", "linear" or "flatten"
    positions: int  # flatten: inputs of the consumer per channel (P); otherwise 1
    norms: tuple[str, ...]  # BatchNorm layers on the hidden channels (subselected with them)
    after: str | None  # a BatchNorm applied directly to the consumer's output ("layer 2" = after(consumer(H)))

    @property
    def title(self) -> str:
        return f"{self.producer} → {self.consumer}"


def find_units(model: nn.Module, groups: ModelGroups, example_input: torch.Tensor) -> list[Unit]:
    """Every two-layer unit of ``model`` in forward order (see the module docstring)."""
    modules = dict(model.named_modules())
    following = find_following_norms(model, example_input)
    units = []
    for g in groups.groups:
        if len(g.producers) != 1 or len(g.consumers) != 1:
            continue
        producer, consumer = g.producers[0], g.consumers[0]
        prod, cons = modules[producer], modules[consumer]
        if not _plain(prod) or not _plain(cons):
            continue
        others = {m.module for m in g.members} - {producer, consumer}
        if any(not isinstance(modules[o], BATCH_NORMS) for o in others):
            continue  # e.g. a LayerNorm over the channels mixes them: no per-channel fold
        cons_members = [m for m in g.members if m.module == consumer and m.param == "weight"]
        if len(cons_members) != 1 or cons_members[0].dim != 1:
            continue
        member = cons_members[0]
        in_width = cons.weight.shape[1]
        if isinstance(cons, CONVS) or in_width == g.size:
            if not torch.equal(member.target_idx, torch.arange(g.size)):
                continue
            layout, positions = ("conv" if isinstance(cons, CONVS) else "linear"), 1
        else:
            if in_width % g.size:
                continue
            positions = in_width // g.size
            channel_major = torch.arange(g.size).repeat_interleave(positions)
            if not (torch.equal(member.target_idx, torch.arange(in_width)) and torch.equal(member.root_idx,
                                                                                           channel_major)):
                continue
            layout = "flatten"
        units.append(Unit(g.name, producer, consumer, g.size, layout, positions, tuple(sorted(others)),
                          following.get(consumer)))
    return units


def _plain(mod: nn.Module) -> bool:
    if isinstance(mod, CONVS):
        return mod.groups == 1
    return isinstance(mod, nn.Linear)


def norm_producers(model: nn.Module, example_input: torch.Tensor,
                   norms: tuple[type[nn.Module], ...] = (*BATCH_NORMS, nn.LayerNorm)) -> dict[str, str]:
    """Norm layer name -> the convolution or linear layer whose output it normalises directly, in the order the
    norms run (one forward pass on ``example_input`` with hooks; a norm fed by anything else, e.g. the sum of a
    residual connection, is not listed). Outputs are held until the pass ends, so a freed tensor's id cannot be
    taken for another's."""
    made: dict[int, tuple[str, torch.Tensor]] = {}
    fed: dict[str, int] = {}
    hooks = []
    for name, mod in model.named_modules():
        if isinstance(mod, (*CONVS, nn.Linear)):
            hooks.append(mod.register_forward_hook(
                lambda m, i, o, name=name: made.__setitem__(id(o), (name, o))))
        elif isinstance(mod, norms):
            hooks.append(mod.register_forward_pre_hook(
                lambda m, i, name=name: fed.__setitem__(name, id(i[0]))))
    try:
        with torch.no_grad():
            model(example_input)
    finally:
        for h in hooks:
            h.remove()
    return {norm: made[i][0] for norm, i in fed.items() if i in made}


def find_following_norms(model: nn.Module, example_input: torch.Tensor) -> dict[str, str]:
    """conv/linear layer -> the (first) BatchNorm whose input is exactly that layer's output."""
    found: dict[str, str] = {}
    for norm, producer in norm_producers(model, example_input, BATCH_NORMS).items():
        found.setdefault(producer, norm)
    return found


def stream_inputs(model: nn.Module, layers: list[str], x: torch.Tensor, on_input, batch_size: int = 1024) -> None:
    """Run ``model`` (in eval mode, no gradients) over ``x`` in batches and call ``on_input(layer, tensor)`` with
    the input each of ``layers`` receives, batch by batch (forward pre-hooks, removed afterwards)."""
    modules = dict(model.named_modules())
    hooks = [modules[name].register_forward_pre_hook(
        lambda mod, inputs, name=name: on_input(name, inputs[0].detach())) for name in layers]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for i in range(0, len(x), batch_size):
                model(x[i:i + batch_size])
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)


def capture_inputs(model: nn.Module, layers: list[str], x: torch.Tensor, batch_size: int = 1024
                   ) -> dict[str, torch.Tensor]:
    """The inputs ``layers`` receive when ``model`` (in eval mode) runs on ``x``, concatenated over batches."""
    store: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    stream_inputs(model, layers, x, lambda name, t: store[name].append(t), batch_size)
    return {name: torch.cat(parts) for name, parts in store.items()}


def channel_matrix(unit: Unit, inputs: torch.Tensor) -> torch.Tensor:
    """The consumer's input as a (rows, channels) matrix Z: one column per hidden channel, one row per
    (sample, position) (Chee et al.'s ``transformZconv``; for a flatten, position = the P features of a channel)."""
    if unit.layout == "conv":
        return inputs.movedim(1, -1).reshape(-1, unit.size)
    if unit.layout == "linear":
        return inputs.reshape(-1, unit.size)
    return inputs.reshape(-1, unit.size, unit.positions).transpose(1, 2).reshape(-1, unit.size)


def channel_sums(unit: Unit, inputs: torch.Tensor) -> torch.Tensor:
    """Per hidden channel, the sum of its entries of the consumer's input over samples and positions."""
    return channel_matrix(unit, inputs).sum(0)


def hidden_mask(unit: Unit, keep: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A 0/1 tensor broadcastable against the consumer's input ``like`` that keeps the channels ``keep``
    ((size,) bool)."""
    keep = keep.to(like.device, like.dtype)
    if unit.layout == "conv":
        return keep.reshape(1, -1, *([1] * (like.ndim - 2)))
    if unit.layout == "linear":
        return keep
    return keep.repeat_interleave(unit.positions)


def layer_two(model: nn.Module, unit: Unit):
    """``H -> after(consumer(H))``: the unit's second layer as a function of the consumer's input (with the
    BatchNorm that follows the consumer, in eval mode, when there is one)."""
    modules = dict(model.named_modules())
    consumer = modules[unit.consumer]
    after = modules[unit.after] if unit.after else None

    def forward(h: torch.Tensor) -> torch.Tensor:
        y = consumer(h)
        return after(y) if after is not None else y
    return forward


def fold_into_consumer(weight: torch.Tensor, unit: Unit, kept: torch.Tensor, interpolation: torch.Tensor
                       ) -> torch.Tensor:
    """The consumer weight corrected by an interpolation matrix, at full shape.

    With the hidden activations Z ≈ Z[:, kept] @ T (T: k x C), the consumer's pre-activation Z W^T becomes
    Z[:, kept] (W T^T)^T: the new input columns are ``W'[:, j] = sum_i W[:, i] T[j, i]`` at every kernel tap
    (conv), or for a channel-major flatten the Kronecker form T ⊗ I_P. The result has ``weight``'s shape with
    the corrected columns at the kept channels and zeros at the removed ones, so masking the removed channels
    and writing it equals slicing them off (``Workbench.sliced_model`` does exactly that).
    """
    t = interpolation.to(weight.device, torch.float64)
    w = weight.detach().to(torch.float64)
    out_features = w.shape[0]
    if unit.layout == "flatten":
        w3 = w.reshape(out_features, unit.size, unit.positions)
        folded = torch.einsum("oip,ji->ojp", w3, t)
        full = torch.zeros_like(w3)
        full[:, kept] = folded
        return full.reshape(weight.shape).to(weight.dtype)
    folded = torch.einsum("oi...,ji->oj...", w, t)
    full = torch.zeros_like(w)
    full[:, kept] = folded
    return full.to(weight.dtype)


def kept_count(size: int, ratio: float) -> int:
    """s = size - round(ratio * size), at least one: the channels a unit keeps at removal ratio ``ratio``."""
    return max(1, size - round(ratio * size))


def require_units(wb: "Workbench", who: str) -> list[Unit]:
    """The workbench's two-layer units, or a PlanError that says why there are none (``who``: the method)."""
    try:
        units = wb.units
    except GroupError as e:
        raise PlanError(f"{who} prunes the hidden width of two-layer units, and this model's channel structure "
                        f"could not be traced: {e}") from e
    if not units:
        raise PlanError(f"{who} prunes the hidden width of two-layer units (a layer whose output channels feed "
                        "exactly one next layer: MLP hidden layers, conv -> conv, residual blocks' inner "
                        "channels), and this model has none.")
    return units


def dense_unit_inputs(wb: "Workbench", units: list[Unit]) -> dict[str, torch.Tensor]:
    """Consumer layer -> its input on the workbench's calibration batch, on the dense model."""
    wb.restore()
    return capture_inputs(wb.model, [u.consumer for u in units], wb.calib_x, wb.batch_size)


def hidden_representation(unit: Unit, inputs: torch.Tensor) -> tuple[torch.Tensor, int | None]:
    """The consumer's input as (H, positions) with channels on dim 1, the layout ``algorithms.cosamp`` reads:
    linear inputs with leading dims become rows; a channel-major flatten stays (N, C*P) with ``positions`` P."""
    if unit.layout == "linear":
        return inputs.reshape(-1, unit.size), None
    if unit.layout == "flatten":  # every leading dim is a row (a ViT head's consumer reads (N, tokens, H*d))
        return inputs.reshape(-1, unit.size * unit.positions), unit.positions
    return inputs, None
