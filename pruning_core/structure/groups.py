"""Channel dependency groups: our adapter over Torch-Pruning's DependencyGraph (Fang et al., "DepGraph:
Towards Any Structural Pruning", CVPR 2023).

Torch-Pruning traces the model once and tells, for each prunable channel of a producer layer, every tensor
slice that must go with it: the producer's output rows and bias, its BatchNorm's affine parameters and running
statistics, every consumer's input columns (expanded through flatten: one conv channel -> h*w Linear inputs)
and every residual partner. We read that coupling once into plain index tensors (``ChannelGroup``) and from then
on never call Torch-Pruning again: per ratio we only select indices, then

  * ``zero_channels_`` masks a group in place (outputs identical to physical removal), and
  * ``slice_model`` (``slicing.py``) builds the physically smaller model by ``index_select`` (no re-trace, no
    deepcopy of the weights; untouched tensors may be shared with the source model).

Only the kinds of layer whose slicing we implement are accepted (Conv1d/2d/3d with groups 1 or depthwise,
Linear, BatchNorm, LayerNorm over one dimension); a group touching anything else is left out, with the reason
recorded in ``ModelGroups.skipped``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from .slicing import BATCH_NORMS, CONVS, slice_tensors


class GroupError(ValueError):
    """The model's structure cannot be pruned by channel groups, with a message for the person using it."""


@dataclass(frozen=True)
class Member:
    """One tensor slice set that a group's channels span.

    ``target_idx[k]`` along ``dim`` of ``module.param`` belongs to group channel ``root_idx[k]``.
    ``masked`` is False for BatchNorm running statistics: masking zeroes the affine parameters (which already
    makes the normalised output zero) and leaves the statistics alone; slicing removes them too.
    """

    module: str
    param: str
    dim: int
    target_idx: torch.Tensor
    root_idx: torch.Tensor
    masked: bool = True
    is_buffer: bool = False


@dataclass
class ChannelGroup:
    name: str  # the producer layer the group is rooted at
    size: int  # channels in the group's own index space
    members: list[Member]
    producers: list[str]  # layers whose output channels are in the group
    consumers: list[str]  # layers whose input channels are in the group

    def importance_tensors(self, model_params: dict[str, torch.Tensor]) -> list[tuple[torch.Tensor, Member]]:
        """The weight tensors that group-magnitude criteria look at: conv/linear weights (output rows and input
        columns) and norm-layer scales; biases and running statistics are excluded, as in DepGraph."""
        out = []
        for m in self.members:
            if m.param == "weight" and not m.is_buffer:
                out.append((model_params[f"{m.module}.weight"], m))
        return out


@dataclass
class ModelGroups:
    groups: list[ChannelGroup]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.by_name = {g.name: g for g in self.groups}
        # (module, param) -> list of (dim, member, group): everything one tensor is sliced by
        self._by_tensor: dict[tuple[str, str], list[tuple[Member, ChannelGroup]]] = {}
        for g in self.groups:
            for m in g.members:
                self._by_tensor.setdefault((m.module, m.param), []).append((m, g))
        # members whose k-th target is channel k (convs, norms, most consumers): their removed targets are the
        # removed channels themselves, so removed_indices skips the gather for them
        arange = {g.name: torch.arange(g.size) for g in self.groups}
        self._identity = {id(m) for g in self.groups for m in g.members
                          if torch.equal(m.target_idx, arange[g.name]) and torch.equal(m.root_idx, arange[g.name])}

    @property
    def sizes(self) -> dict[str, int]:
        return {g.name: g.size for g in self.groups}

    def removed_indices(self, pruned: dict[str, torch.Tensor], masked_only: bool = False
                        ) -> dict[tuple[str, str], dict[int, torch.Tensor]]:
        """For a structured plan's ``pruned`` channels: (module, param) -> {dim: removed indices along dim}."""
        out: dict[tuple[str, str], dict[int, list[tuple[torch.Tensor, bool]]]] = {}
        for name, idx in pruned.items():
            if name not in self.by_name:
                raise GroupError(f"the plan names channel group {name!r}, which this model does not have")
            if len(idx) == 0:
                continue
            g = self.by_name[name]
            channels = torch.unique(idx).long()  # sorted
            if int(channels[-1]) >= g.size or int(channels[0]) < 0:
                raise GroupError(f"channel index out of range for group {name!r} of {g.size} channels")
            if len(channels) >= g.size:
                raise GroupError(f"the plan removes every channel of group {name!r}; at least one must stay")
            hit = None
            for m in g.members:
                if masked_only and not m.masked:
                    continue
                if id(m) in self._identity:
                    sel, sorted_unique = channels, True
                else:
                    if hit is None:
                        hit = torch.zeros(g.size, dtype=torch.bool)
                        hit[channels] = True
                    sel, sorted_unique = m.target_idx[hit[m.root_idx]], False
                out.setdefault((m.module, m.param), {}).setdefault(m.dim, []).append((sel, sorted_unique))
        return {k: {d: (v[0][0] if len(v) == 1 and v[0][1] else torch.unique(torch.cat([t for t, _ in v])))
                    for d, v in dims.items()} for k, dims in out.items()}

    def zero_channels_(self, model: nn.Module, pruned: dict[str, torch.Tensor]) -> list[str]:
        """Zero every masked slice of the removed channels in place. Returns the tensor names touched."""
        tensors = dict(model.named_parameters())
        touched = []
        with torch.no_grad():
            for (module, param), dims in self.removed_indices(pruned, masked_only=True).items():
                t = tensors[f"{module}.{param}"]
                for dim, idx in dims.items():
                    t.index_fill_(dim, idx.to(t.device), 0)
                touched.append(f"{module}.{param}")
        return touched

    def kept_mask_by_tensor(self, pruned: dict[str, torch.Tensor], shapes: dict[str, torch.Size]
                            ) -> dict[str, torch.Tensor]:
        """Bool keep-masks (CPU) of the tensors named in ``shapes`` that a structured plan touches, as
        masking would leave them."""
        masks = {}
        for (module, param), dims in self.removed_indices(pruned, masked_only=True).items():
            name = f"{module}.{param}"
            if name not in shapes:
                continue
            keep = torch.ones(shapes[name], dtype=torch.bool)
            for dim, idx in dims.items():
                keep.index_fill_(dim, idx, False)
            masks[name] = keep
        return masks

    def kept_count_by_tensor(self, pruned: dict[str, torch.Tensor], shapes: dict[str, torch.Size]
                             ) -> dict[str, tuple[int, int]]:
        """(kept entries, entries) of the tensors named in ``shapes`` that a structured plan touches, as masking
        would leave them: the counts of ``kept_mask_by_tensor`` without building the masks."""
        counts = {}
        for (module, param), dims in self.removed_indices(pruned, masked_only=True).items():
            name = f"{module}.{param}"
            if name not in shapes:
                continue
            shape = shapes[name]
            total = math.prod(shape)
            kept = total
            for dim, idx in dims.items():  # removing slices along several dims keeps their product
                kept = kept // shape[dim] * (shape[dim] - len(idx))
            counts[name] = (kept, total)
        return counts

    def kept_channels(self, pruned: dict[str, torch.Tensor]) -> dict[str, int]:
        return {g.name: g.size - len(torch.unique(pruned[g.name])) if g.name in pruned else g.size
                for g in self.groups}

    def slice_model(self, model: nn.Module, pruned: dict[str, torch.Tensor], share_untouched: bool = True
                    ) -> nn.Module:
        """The physically smaller model for a structured plan (``slicing.slice_tensors`` over this model's
        removed indices): untouched tensors are shared with ``model`` when ``share_untouched``, cloned otherwise
        (for export)."""
        return slice_tensors(model, self.removed_indices(pruned), share_untouched)


def find_output_layers(model: nn.Module, example_input: torch.Tensor) -> list[str]:
    """Names of the leaf layers whose output is the model's output (the classifier head), which structured
    pruning must never shrink: removing a class logit changes what the model predicts, not how big it is."""
    outputs: dict[int, str] = {}
    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, (*CONVS, nn.Linear)):
            hooks.append(m.register_forward_hook(lambda mod, i, o, name=name: outputs.__setitem__(id(o), name)))
    try:
        with torch.no_grad():
            out = model(example_input)
    finally:
        for h in hooks:
            h.remove()
    found = [outputs[id(out)]] if isinstance(out, torch.Tensor) and id(out) in outputs else []
    if not found:
        # the output is made by a functional op after the last layer: protect the last layer that ran
        found = [list(outputs.values())[-1]] if outputs else []
    return found


def _members_for(module_name: str, mod: nn.Module, is_out: bool, target_idx: torch.Tensor,
                 root_idx: torch.Tensor) -> list[Member]:
    def m(param: str, dim: int, masked: bool = True, is_buffer: bool = False) -> Member:
        return Member(module_name, param, dim, target_idx, root_idx, masked, is_buffer)

    if isinstance(mod, CONVS):
        depthwise = mod.groups > 1 and mod.groups == mod.in_channels == mod.out_channels
        if mod.groups > 1 and not depthwise:
            raise GroupError(f"{module_name}: grouped convolutions (groups={mod.groups}) are not supported")
        if is_out or depthwise:
            return [m("weight", 0)] + ([m("bias", 0)] if mod.bias is not None else [])
        return [m("weight", 1)]
    if isinstance(mod, nn.Linear):
        if is_out:
            return [m("weight", 0)] + ([m("bias", 0)] if mod.bias is not None else [])
        return [m("weight", 1)]
    if isinstance(mod, BATCH_NORMS):
        out = []
        if mod.affine:
            out += [m("weight", 0), m("bias", 0)]
        if mod.track_running_stats:
            out += [m("running_mean", 0, masked=False, is_buffer=True),
                    m("running_var", 0, masked=False, is_buffer=True)]
        if not mod.affine:
            raise GroupError(f"{module_name}: BatchNorm without affine parameters cannot be masked")
        return out
    if isinstance(mod, nn.LayerNorm):
        if len(mod.normalized_shape) != 1 or not mod.elementwise_affine:
            raise GroupError(f"{module_name}: only LayerNorm over one dimension with affine parameters is supported")
        return [m("weight", 0)] + ([m("bias", 0)] if mod.bias is not None else [])
    if any(True for _ in mod.parameters(recurse=False)):
        raise GroupError(f"{module_name}: layers of type {type(mod).__name__} are not supported by channel pruning")
    return []


def build_groups(model: nn.Module, example_input: torch.Tensor, ignored_layers: list[str] | None = None
                 ) -> ModelGroups:
    """Trace ``model`` once with Torch-Pruning and read every channel group into plain index tensors.

    ``example_input``: one batch the model accepts, e.g. shape (1, *sample_shape). ``ignored_layers``: layer
    names whose output channels must not be pruned; default: the layers producing the model's output.
    """
    import torch_pruning as tp

    if not isinstance(model, nn.Module) or isinstance(model, torch.jit.ScriptModule):
        raise GroupError("Channel pruning needs a regular PyTorch module of a known architecture; TorchScript "
                         "and exported programs support unstructured methods only.")
    was_training = model.training
    model.eval()
    names = {m: n for n, m in model.named_modules()}
    ignored = list(ignored_layers) if ignored_layers is not None else find_output_layers(model, example_input)
    ignored_modules = [m for m, n in names.items() if n in ignored]
    # Torch-Pruning follows autograd's grad_fn chain, so the trace needs gradients switched on
    frozen = [p for p in model.parameters() if not p.requires_grad]
    for p in frozen:
        p.requires_grad_(True)
    try:
        with warnings.catch_warnings(), torch.enable_grad():
            warnings.simplefilter("ignore")
            dg = tp.DependencyGraph().build_dependency(model, example_inputs=example_input)
            tp_groups = list(dg.get_all_groups(ignored_layers=ignored_modules))
    except Exception as e:  # Torch-Pruning raises many kinds of error on graphs it cannot trace
        raise GroupError(f"Could not trace the model's channel dependencies: {type(e).__name__}: {e}") from e
    finally:
        model.train(was_training)
        for p in frozen:
            p.requires_grad_(False)

    groups, skipped = [], []
    for g in tp_groups:
        root_module = g[0].dep.target.module
        root_name = names.get(root_module, str(root_module))
        members: list[Member] = []
        producers, consumers = [], []
        size = len(g[0].idxs)
        try:
            for item in g:
                mod = item.dep.target.module
                if not isinstance(mod, nn.Module) or mod not in names:
                    if isinstance(mod, nn.Parameter):
                        raise GroupError(f"{root_name}: a bare nn.Parameter is coupled to these channels")
                    continue  # functional ops (add, relu, flatten ...) carry no tensors
                if item.root_idxs is None or any(r is None for r in item.root_idxs):
                    raise GroupError(f"{root_name}: an index mapping without channel correspondence")
                is_out = dg.is_out_channel_pruning_fn(item.dep.handler)
                is_in = dg.is_in_channel_pruning_fn(item.dep.handler)
                name = names[mod]
                if isinstance(mod, (*CONVS, nn.Linear)):
                    (producers if is_out and not is_in else consumers).append(name)
                members += _members_for(name, mod, is_out and not is_in, torch.as_tensor(item.idxs, dtype=torch.long),
                                        torch.as_tensor(item.root_idxs, dtype=torch.long))
        except GroupError as e:
            skipped.append((root_name, str(e)))
            continue
        if size < 2:
            skipped.append((root_name, "a single channel cannot be pruned"))
            continue
        groups.append(ChannelGroup(root_name, size, members, producers, consumers))
    if not groups:
        reasons = "; ".join(f"{n}: {r}" for n, r in skipped) or "no convolution or linear layer can shrink"
        raise GroupError(f"This model has no prunable channel group ({reasons}).")
    order = {n: i for i, n in enumerate(names.values())}
    groups.sort(key=lambda g: order.get(g.name, 0))
    groups, failed = probe_groups(model, groups, example_input)
    skipped += failed
    if not groups:
        raise GroupError("This model has no prunable channel group (" + "; ".join(f"{n}: {r}" for n, r in skipped)
                         + ").")
    return ModelGroups(groups, skipped, ignored)


def probe_groups(model: nn.Module, groups: list[ChannelGroup], example_input: torch.Tensor
                 ) -> tuple[list[ChannelGroup], list[tuple[str, str]]]:
    """Check the groups on the model before anyone relies on them: remove the last channel of every group at
    once, physically (``slice_model``) and by masking (``zero_channels_``, undone afterwards), and compare the
    two outputs on ``example_input``. The dependency trace can couple channels wrongly on graphs it does not
    understand (a channel zero-padding shortcut read as elementwise; q, k and v rows of a fused projection
    reshaped into heads); such a group makes the sliced model fail or compute something else. When the check
    fails, each group is checked alone and the failing ones are left out, with the reason. Costs one slice and two
    forward passes when every group is right (the model in eval mode; its tensors are restored bit for bit)."""
    def check(subset: list[ChannelGroup]) -> str | None:
        mg = ModelGroups(subset)
        pruned = {g.name: torch.tensor([g.size - 1]) for g in subset}
        saved = {}
        params = dict(model.named_parameters())
        for g in subset:
            for m in g.members:
                name = f"{m.module}.{m.param}"
                if m.masked and name in params and name not in saved:
                    saved[name] = params[name].detach().clone()
        try:
            with torch.no_grad():
                sliced = mg.slice_model(model, pruned)(example_input)
                mg.zero_channels_(model, pruned)
                masked = model(example_input)
        except Exception as e:  # a wrong coupling usually breaks a shape somewhere
            return f"removing a channel breaks the model ({type(e).__name__}: {str(e).splitlines()[0][:160]})"
        finally:
            with torch.no_grad():
                for name, value in saved.items():
                    params[name].copy_(value)
        if not isinstance(sliced, torch.Tensor) or not isinstance(masked, torch.Tensor):
            return None  # outputs we cannot compare (tuples, dicts): trust the trace
        if sliced.shape != masked.shape:
            return f"removing a channel changes the output's shape ({tuple(masked.shape)} -> {tuple(sliced.shape)})"
        scale = float(masked.detach().abs().max()) if masked.numel() else 0.0
        if not torch.allclose(sliced.float(), masked.float(), rtol=1e-3, atol=1e-4 * scale + 1e-5):
            return "the physically smaller model computes something other than the masked one"
        return None

    was_training = model.training
    model.eval()
    try:
        if not groups or check(groups) is None:
            return groups, []
        good, failed = [], []
        for g in groups:
            reason = check([g])
            if reason is None:
                good.append(g)
            else:
                failed.append((g.name, reason))
        return good, failed
    finally:
        model.train(was_training)
