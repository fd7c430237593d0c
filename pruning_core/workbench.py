"""The workbench: one model, its calibration and evaluation data, and a device.

It owns exactly one working copy of the model. ``apply(plan)`` changes that copy in place (masks multiply,
corrections overwrite) and ``restore()`` writes the dense values back into only the tensors the plan touched,
bit for bit. No deep copy per ratio: a sweep over ten ratios costs ten evaluation passes plus a few in-place
tensor operations. Structured plans can instead be evaluated on the physically smaller model that
``ModelGroups.slice_model`` builds from the dense copy (``evaluate_plan(..., structured="sliced")``).
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn

from . import metrics
from .data import DataError, DataSplits
from .plan import Plan, PlanError
from .structure import GroupError, ModelGroups, Unit, build_groups, find_units
from .tasks import infer_task


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass(frozen=True)
class PlanMetrics:
    """What one plan does to the model: the row a sweep streams."""

    accuracy: float
    loss: float
    agreement: float
    params: int
    params_fraction: float  # of the dense model's parameters, kept
    flops: int
    flops_fraction: float
    sparsity: float  # fraction of the prunable weights removed (realised, not nominal)
    eval_seconds: float
    evaluation: str  # "masked" (dense cost) or "sliced" (physically smaller model)
    scores: dict = field(default_factory=dict)  # the task's own metrics beyond accuracy, loss and agreement


MAX_BATCH = 1024
ACTIVATION_BUDGET = 256 * 2**20  # bytes of the largest layer output in one evaluation batch


def auto_batch_size(activation_bytes: int | None) -> int:
    """The evaluation batch: as many samples as keep the largest layer output of one batch under 256 MB (a power
    of two, 8 to 1024; 1024 when it is unknown). 8x8 digits get 1024; a 224x224 EfficientNet (4.8 MB for its widest
    layer) 32, so one pass over a few hundred photos is several batches, each a place where a progress bar moves
    and a stop can land, and the peak stays far below the memory of a whole-split batch."""
    if not activation_bytes:
        return MAX_BATCH
    fits = max(1, ACTIVATION_BUDGET // activation_bytes)
    return int(min(MAX_BATCH, max(8, 2 ** int(np.log2(fits)))))


class Workbench:
    """``Workbench(model, data, device=None, task=None)``: ``model`` is deep-copied once onto ``device`` (CUDA when
    available) and put in eval mode; ``data`` provides the calibration and evaluation splits; ``task`` (a kind of
    ``tasks.TASKS``) says what the model does, by default inferred (``tasks.infer_task``: classification with
    labels, unlabelled classification, or the embedding task a model declares)."""

    def __init__(self, model: nn.Module, data: DataSplits, device: str | torch.device | None = None,
                 name: str = "model", batch_size: int | None = None, task: str | None = None):
        self.name = name
        self.data = data
        self.device = torch.device(device) if device is not None else default_device()
        self.batch_size = batch_size or MAX_BATCH  # None: sized after the first forward pass (_check_fit)
        self.model = copy.deepcopy(model).to(self.device).eval()
        for p in self.model.parameters():
            if p.is_leaf:  # deep copies of TorchScript modules hold non-leaf parameters
                p.requires_grad_(False)
        self.eval_x = data.eval.x.to(self.device)
        self.eval_y = data.eval.y.to(self.device)
        self.calib_x = data.calib.x.to(self.device)
        self.calib_y = data.calib.y.to(self.device)
        self.example_input = self.eval_x[:1]
        self.task = infer_task(self.model, self.eval_y, task)
        activation_bytes = self._check_fit()
        if batch_size is None:
            self.batch_size = auto_batch_size(activation_bytes)
        self.calib_targets = "labels"
        if self.task.kind == "unlabelled":
            # criteria that follow a loss (Taylor, captum's attributions) need a class per calibration sample:
            # without labels, the dense model's own top-1 is the target (what pruning should preserve)
            self.calib_y = metrics.predict(self.model, self.calib_x, self.batch_size).argmax(1)
            self.calib_targets = "the dense model's top-1 classes (the data has no labels)"
        self._dense = {k: v.detach().clone() for k, v in self._tensors().items()}
        self._touched: set[str] = set()
        self._groups: ModelGroups | GroupError | None = None
        self._units: list[Unit] | None = None
        self._dense_eval: metrics.EvalMetrics | None = None
        self._dense_pred: torch.Tensor | None = None
        self._dense_out: torch.Tensor | None = None
        self._flops: tuple[int, dict[str, int]] | None = None
        self.eval_passes = 0  # full passes over the evaluation split, for benchmarks and tests

    # ----- set-up checks -------------------------------------------------------------------------------------
    def _check_fit(self) -> int | None:
        """Run two evaluation samples through the model; a mismatch raises ``DataError`` in the user's terms.
        Returns the largest output of one leaf layer, in bytes per sample (None where hooks cannot be set)."""
        largest = [0]

        def measure(module, inputs, output) -> None:
            if isinstance(output, torch.Tensor) and output.ndim:
                largest[0] = max(largest[0], output.numel() * output.element_size() // max(len(output), 1))

        leaves = [m for m in self.model.modules() if not list(m.children())]
        try:
            hooks = [m.register_forward_hook(measure) for m in leaves]
        except Exception:  # TorchScript and exported programs take no Python hooks
            hooks = None
        try:
            with torch.inference_mode():
                out = self.model(self.eval_x[:2])
        except Exception as e:  # any shape or dtype mismatch surfaces here, in the user's terms
            raise DataError(f"The data does not fit the model: samples of shape {tuple(self.eval_x.shape[1:])} "
                            f"raised {type(e).__name__}: {str(e).splitlines()[0][:300]}") from e
        finally:
            for h in hooks or ():
                h.remove()
        if not isinstance(out, torch.Tensor) or out.ndim != 2:
            what = "embeddings of shape (batch, dimensions)" if self.task.kind == "embedding" else \
                "class scores of shape (batch, classes)"
            raise DataError(f"The model must return {what}; it returned "
                            f"{type(out).__name__}{tuple(out.shape) if isinstance(out, torch.Tensor) else ''}.")
        if self.task.labelled:
            n_classes = max(int(self.eval_y.max()), int(self.calib_y.max())) + 1
            if out.shape[1] < n_classes:
                raise DataError(f"The data has labels up to {n_classes - 1} but the model outputs only "
                                f"{out.shape[1]} classes.")
        return largest[0] if hooks is not None and largest[0] else None

    def _tensors(self) -> dict[str, torch.Tensor]:
        out = dict(self.model.named_parameters())
        out.update({k: v for k, v in self.model.named_buffers()})
        return out

    # ----- structure -----------------------------------------------------------------------------------------
    @property
    def prunable(self) -> dict[str, nn.Parameter]:
        """Weights that unstructured methods prune: every parameter with two or more dimensions
        (conv kernels, linear matrices, embeddings); biases and norm parameters stay dense."""
        return {k: p for k, p in self.model.named_parameters() if p.ndim >= 2}

    @property
    def groups(self) -> ModelGroups:
        """Channel dependency groups, traced once per workbench (raises GroupError when unsupported). A model
        that knows its own structure supplies them through a ``channel_groups()`` method (a BERT encoder's
        attention heads and FFN neurons, ``text.groups``); every other model is traced by Torch-Pruning."""
        if self._groups is None:
            try:
                provider = getattr(self.model, "channel_groups", None)
                self._groups = provider() if callable(provider) else build_groups(self.model, self.example_input)
            except GroupError as e:
                self._groups = e
        if isinstance(self._groups, GroupError):
            raise self._groups
        return self._groups

    @property
    def units(self) -> list[Unit]:
        """Two-layer units (one producer, one consumer: hidden neurons, inner block channels) in forward order,
        for methods that prune a unit's hidden width from its activations (raises GroupError like ``groups``)."""
        if self._units is None:
            self._units = find_units(self.model, self.groups, self.example_input)
        return self._units

    @property
    def supports_structured(self) -> bool:
        try:
            _ = self.groups  # traced on first use; a GroupError says the model cannot be traced
            return True
        except GroupError:
            return False

    @property
    def dense_params(self) -> int:
        return metrics.parameter_count(self.model)

    @property
    def dense_flops(self) -> tuple[int, dict[str, int]]:
        if self._flops is None:
            self._flops = metrics.count_flops(self.model, self.example_input)
        return self._flops

    def dense_metrics(self) -> metrics.EvalMetrics:
        if self._dense_eval is None:
            self.restore()
            self._dense_eval, self._dense_out = metrics.evaluate_task(self.model, self.eval_x, self.eval_y,
                                                                      self.task, None, self.batch_size)
            self._dense_pred = self._dense_out.argmax(1)
            self.eval_passes += 1
        return self._dense_eval

    @property
    def dense_predictions(self) -> torch.Tensor:
        """The dense model's top-1 classes on the evaluation split (for embeddings: the argmax dimension,
        meaningless; use ``dense_outputs``)."""
        self.dense_metrics()
        return self._dense_pred

    @property
    def dense_outputs(self) -> torch.Tensor:
        """The dense model's outputs on the evaluation split (class scores or embeddings), computed once."""
        self.dense_metrics()
        return self._dense_out

    def layer_table(self) -> pd.DataFrame:
        """One row per layer that holds parameters: type, weight shape, parameters and FLOPs (batch 1)."""
        _, flops = self.dense_flops
        rows = []
        for name, mod in self.model.named_modules():
            own = list(mod.named_parameters(recurse=False))
            if not own:
                continue
            w = dict(own).get("weight")
            rows.append({"layer": name, "type": type(mod).__name__,
                         "weight shape": "x".join(map(str, w.shape)) if w is not None else "",
                         "parameters": sum(p.numel() for _, p in own), "FLOPs": flops.get(name, 0)})
        return pd.DataFrame(rows)

    # ----- plans ---------------------------------------------------------------------------------------------
    def apply(self, plan: Plan) -> None:
        """Apply ``plan`` to the working copy in place (the previous plan is restored first)."""
        self.restore()
        tensors = self._tensors()
        with torch.no_grad():
            if plan.is_structured:
                self._touched.update(self.groups.zero_channels_(self.model, plan.pruned_channels))
            for name, mask in plan.masks.items():
                if name not in tensors:
                    raise PlanError(f"the plan masks {name!r}, which this model does not have")
                t = tensors[name]
                if mask.shape != t.shape:
                    raise PlanError(f"the mask for {name!r} has shape {tuple(mask.shape)}, the tensor "
                                    f"{tuple(t.shape)}")
                t.mul_(mask.to(t.device, t.dtype))
                self._touched.add(name)
            for name, value in plan.corrections.items():
                if name not in tensors or tensors[name].shape != value.shape:
                    raise PlanError(f"the correction for {name!r} does not fit the model")
                tensors[name].copy_(value)
                self._touched.add(name)

    def restore(self) -> None:
        """Put the dense values back into every tensor the last plan touched (exactly)."""
        if not self._touched:
            return
        tensors = self._tensors()
        with torch.no_grad():
            for name in self._touched:
                tensors[name].copy_(self._dense[name])
        self._touched.clear()

    @contextmanager
    def applied(self, plan: Plan):
        self.apply(plan)
        try:
            yield self.model
        finally:
            self.restore()

    def sliced_model(self, plan: Plan, share_untouched: bool = True) -> nn.Module:
        """The physically smaller model of a structured plan.

        Plans without masks or corrections are sliced straight from the dense weights. A plan that also
        corrects tensors (interpolative decompositions fold a correction into the next layer) or masks them is
        applied to the working copy first and sliced from there, so the small model equals the masked-plus-
        corrected one; every tensor the plan changed is then copied, never shared with the working copy."""
        if not plan.is_structured:
            raise PlanError("only structured plans make a physically smaller model")
        changed = set(plan.masks) | set(plan.corrections)
        if not changed:
            self.restore()
            return self.groups.slice_model(self.model, plan.pruned_channels, share_untouched)
        with self.applied(plan):
            small = self.groups.slice_model(self.model, plan.pruned_channels, share_untouched)
            if share_untouched:
                working = self._tensors()
                for name, t in list(small.named_parameters()) + list(small.named_buffers()):
                    if name in changed and t.data_ptr() == working[name].data_ptr():
                        module, _, attr = name.rpartition(".")
                        mod = small.get_submodule(module)
                        if attr in mod._parameters:
                            mod._parameters[attr] = nn.Parameter(t.detach().clone(), requires_grad=t.requires_grad)
                        else:
                            mod._buffers[attr] = t.clone()
        return small

    def kept_fraction_by_tensor(self, plan: Plan) -> dict[str, float]:
        """Kept fraction of every prunable weight under ``plan`` (1.0 for untouched ones)."""
        prunable = self.prunable
        counts = self._kept_counts(plan, {k: p.shape for k, p in prunable.items()})
        return {k: (_mask_mean(*counts[k]) if k in counts else 1.0) for k in prunable}

    def _kept_counts(self, plan: Plan, shapes: dict[str, torch.Size]) -> dict[str, tuple[int, int]]:
        """(kept entries, entries) of each tensor named in ``shapes`` that ``plan`` touches, counted without
        building a mask (structured plans: from the removed indices per dimension)."""
        if plan.is_structured:
            return self.groups.kept_count_by_tensor(plan.pruned_channels, shapes)
        return {k: (int(torch.count_nonzero(m)), m.numel()) for k, m in plan.masks.items() if k in shapes}

    def evaluate_plan(self, plan: Plan, structured: str = "sliced", kept: dict[str, float] | None = None
                      ) -> PlanMetrics:
        """Evaluate one plan: in place on the working copy (``masked``), or for structured plans on the
        physically smaller model (``sliced``). Costs exactly one evaluation pass. ``kept``: the plan's
        ``kept_fraction_by_tensor``, if the caller already has it."""
        dense = self.dense_outputs
        total_flops, per_module = self.dense_flops
        prunable = self.prunable
        kept = kept if kept is not None else self.kept_fraction_by_tensor(plan)
        prunable_total = sum(p.numel() for p in prunable.values())
        prunable_kept = sum(kept[k] * p.numel() for k, p in prunable.items())
        density = self._layer_density(plan, kept)
        if plan.is_structured and structured == "sliced":
            small = self.sliced_model(plan)
            ev, _ = metrics.evaluate_task(small, self.eval_x, self.eval_y, self.task, dense, self.batch_size)
            params = metrics.parameter_count(small)
            mode = "sliced"
        else:
            with self.applied(plan) as model:
                ev, _ = metrics.evaluate_task(model, self.eval_x, self.eval_y, self.task, dense, self.batch_size)
                zeroed = self._zeroed_parameter_entries(plan)
            params = self.dense_params - zeroed
            mode = "masked"
        self.eval_passes += 1
        if per_module:
            flops = metrics.flops_with_density(per_module, density)
        else:  # TorchScript / exported programs: no per-layer breakdown, scale the total by the kept weights
            flops = round(total_flops * (prunable_kept / prunable_total if prunable_total else 1.0))
        return PlanMetrics(ev.accuracy, ev.loss, ev.agreement, params, params / self.dense_params, flops,
                           flops / total_flops if total_flops else 1.0,
                           1.0 - prunable_kept / prunable_total if prunable_total else 0.0, ev.seconds, mode,
                           dict(ev.scores))

    def plan_cost(self, plan: Plan, kept: dict[str, float] | None = None) -> tuple[int, int]:
        """(parameters, FLOPs) that ``plan`` keeps, counted without an evaluation pass: the numbers
        ``evaluate_plan`` reports (parameters: the dense count less every entry the plan zeroes, which for a
        structured plan is the sliced model's count; FLOPs: the per-layer FLOPs scaled by each weight's kept
        fraction)."""
        kept = kept if kept is not None else self.kept_fraction_by_tensor(plan)
        total_flops, per_module = self.dense_flops
        density = self._layer_density(plan, kept)
        if per_module:
            flops = metrics.flops_with_density(per_module, density)
        else:
            prunable = self.prunable
            total = sum(p.numel() for p in prunable.values())
            flops = round(total_flops * (sum(kept[k] * p.numel() for k, p in prunable.items()) / total
                                         if total else 1.0))
        return self.dense_params - self._zeroed_parameter_entries(plan), flops

    def _layer_density(self, plan: Plan, kept: dict[str, float]) -> dict[str, float]:
        """Layer -> the fraction of its FLOPs ``plan`` keeps: its weight's kept fraction. Under a structured plan,
        weightless layers whose work shrinks with a group (a ViT's attention matmuls with its heads) follow the
        tensor the groups name for them (``ModelGroups.flops_follow``); zeros in an unstructured plan remove no
        such work."""
        density = {k.rsplit(".", 1)[0]: v for k, v in kept.items() if k.endswith("weight")}
        if plan.is_structured:
            try:
                follow = getattr(self.groups, "flops_follow", None) or {}
            except GroupError:
                follow = {}
            density.update({layer: kept.get(tensor, 1.0) for layer, tensor in follow.items()})
        return density

    def _zeroed_parameter_entries(self, plan: Plan) -> int:
        if plan.is_structured:
            shapes = {k: p.shape for k, p in self.model.named_parameters()}
            counts = self._kept_counts(plan, shapes).values()
        else:
            counts = [(int(torch.count_nonzero(m)), m.numel()) for m in plan.masks.values()]
        return sum(total - kept for kept, total in counts)


def _mask_mean(kept: int, total: int) -> float:
    """``float(mask.float().mean())`` of a bool mask with ``kept`` of ``total`` entries True: the float32 division
    torch does after its float32 sum, so counting instead of masking changes no reported number (bit for bit below
    2**24 entries, where that sum is exact; above, this is the exact count's quotient)."""
    return float(np.float32(kept) / np.float32(total))
