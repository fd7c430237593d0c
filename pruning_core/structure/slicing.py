"""Physically removing channels: a module tree copied without copying its tensors, each touched tensor replaced
by its ``index_select``-ed slice, and the layers' size attributes brought in line with their new tensors.

The layer kinds here (``CONVS``, ``BATCH_NORMS``, Linear, one-dimensional LayerNorm) are the ones whose slicing we
implement; ``groups.build_groups`` accepts only channel groups made of them.
"""

from __future__ import annotations

import torch
from torch import nn

CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def slice_tensors(model: nn.Module, removed: dict[tuple[str, str], dict[int, torch.Tensor]],
                  share_untouched: bool = True) -> nn.Module:
    """The physically smaller model: ``removed`` maps (module, tensor name) -> {dim: indices removed along dim}
    (``ModelGroups.removed_indices``).

    The module tree is copied without copying tensors; every touched tensor is replaced by its
    ``index_select``-ed slice and the layers' size attributes are updated. With ``share_untouched`` the
    small model shares the tensors the plan does not touch with ``model`` (fine for evaluation, cheap);
    without it every tensor is cloned (for export).
    """
    small = structure_copy(model)
    modules = dict(small.named_modules())
    kept: dict[tuple[int, int], torch.Tensor] = {}  # one group's removed indices slice many of its tensors
    for (module, param), dims in removed.items():
        mod = modules[module]
        t = getattr(mod, param)
        new = t.detach()
        for dim, idx in sorted(dims.items()):  # rows first: whole-row copies that shrink what dim 1 gathers
            key = (id(idx), new.shape[dim])
            if key not in kept:
                keep = torch.ones(new.shape[dim], dtype=torch.bool)
                keep[idx] = False
                kept[key] = keep.nonzero().squeeze(1)
            new = new.index_select(dim, kept[key].to(new.device))
        if param in mod._parameters:
            mod._parameters[param] = nn.Parameter(new, requires_grad=t.requires_grad)
        else:
            mod._buffers[param] = new
    if not share_untouched:
        for mod in modules.values():
            for k, p in mod._parameters.items():
                if p is not None:
                    mod._parameters[k] = nn.Parameter(p.detach().clone(), requires_grad=p.requires_grad)
            for k, b in mod._buffers.items():
                if b is not None:
                    mod._buffers[k] = b.clone()
    for mod in modules.values():
        fix_size_attributes(mod)
    return small


def structure_copy(module: nn.Module) -> nn.Module:
    """A copy of the module tree whose parameter and buffer dicts are new but hold the same tensors."""
    state = dict(module.__dict__)
    state["_parameters"] = dict(module._parameters)
    state["_buffers"] = dict(module._buffers)
    state["_modules"] = {k: (structure_copy(m) if m is not None else None) for k, m in module._modules.items()}
    for hooks in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_state_dict_hooks",
                  "_load_state_dict_pre_hooks"):
        if hooks in state:
            state[hooks] = state[hooks].copy()
    new = type(module).__new__(type(module))  # as copy.copy would, minus its reduce protocol
    new.__dict__ = state
    return new


def fix_size_attributes(mod: nn.Module) -> None:
    """Make a layer's size attributes agree with its (sliced) tensors."""
    if isinstance(mod, CONVS):
        w = mod.weight
        depthwise = mod.groups > 1 and mod.groups == mod.in_channels == mod.out_channels
        mod.out_channels = w.shape[0]
        if depthwise:
            mod.groups = mod.in_channels = w.shape[0]
        else:
            mod.in_channels = w.shape[1] * mod.groups
    elif isinstance(mod, nn.Linear):
        mod.out_features, mod.in_features = mod.weight.shape
    elif isinstance(mod, BATCH_NORMS):
        ref = mod.weight if mod.weight is not None else mod.running_mean
        mod.num_features = ref.shape[0]
    elif isinstance(mod, nn.LayerNorm) and mod.weight is not None:
        mod.normalized_shape = (mod.weight.shape[0],)
