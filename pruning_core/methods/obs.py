"""One-shot OBS / SparseGPT pruning, layer by layer: round 1 of the Iterative Optimal Brain Surgeon (Wu, Modoranu,
Safaryan, Kuznedelev, Alistarh, "The Iterative Optimal Brain Surgeon", NeurIPS 2024, arXiv 2408.17163, §4.2 and
App. A.1), whose projection is SparseGPT (Frantar & Alistarh, ICML 2023, Algorithm 1).

For every prunable weight (a ``nn.Linear`` or ``nn.Conv2d`` weight; a conv is read as the (C_out, C_in * kh * kw)
matrix against its unfolded inputs, one column per sample and output position), with X the layer's input on the
workbench's calibration split (forward pre-hooks on the dense model, ``structure.units.stream_inputs``):

    min_{W'} ||W X - W' X||_F^2   s.t. the sparsity pattern,    H = X X^T / n + lambda I,
    lambda = damp * mean(diag(X X^T / n)),  damp = 0.01 (SparseGPT's percdamp; diagonal only)

solved by ``algorithms.obs.sparsegpt_prune`` (the column sweep with the Cholesky factor of H^-1, blocks of 128
columns, masks chosen per block by the saliency w^2 / [U]_jj^2). The plan's masks are the chosen supports and its
corrections the updated weights (zero where masked). ``prepare`` captures the inputs, builds every H and
factorises it once; ``plan(ratio)`` runs the sweeps (milliseconds on the demo models).

Patterns:

* ``obs`` (unstructured, ``scope="layer"``): every prunable tensor removes round(ratio * numel), the same
  per-layer sparsity as ``magnitude-layer`` (SparseGPT's uniform sparsity). ``scope="row"``: each row instead.
* ``obs-nm`` (N:M semi-structured along the input columns, in the flattened (C_in, kh, kw) order SparseGPT uses
  for convs): M = 4 and N = clip(round((1 - ratio) * M), 1, M) kept per group, so ratio 0.5 is 2:4 (N:M fixes
  the sparsity at 1 - N/M; 0.75 is 1:4; ratios below 0.125 keep every weight). A tensor whose width is not a
  multiple of M stays dense (NVIDIA's ASP skips such layers too); ``plan.details`` lists it.

* ``obs-global``: every tensor removes what ``magnitude-global`` removes there at the same ratio
  (``allocation="global-magnitude"``), solved sequentially (below): the comparison with global magnitude at the
  same per-layer sparsity that ``checks.iobs`` judges.

``inputs="dense"`` (``obs``, ``obs-nm``): every layer's X comes from the dense model, prepared once, so any ratio
is answered without a forward pass. ``inputs="pruned"`` (``obs-global``; SparseGPT's own procedure): layers in
forward order, each solved on the inputs of the model whose earlier layers are already pruned and corrected (one
calibration pass per layer per ratio, on a copy of the model). ``refit=True`` replaces SparseGPT's sequential update
by the exact least-squares re-fit on the chosen support (``algorithms.obs.refit``, on the dampened H). The first
and last layers are pruned like the others. The paper's iterative
variant (fresh calibration batch each round, a gradient step between rounds) is ``experiments.iobs``; its claims
are ``checks.iobs``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ..algorithms.obs import (
    BLOCKSIZE,
    DAMP,
    dampen,
    inverse_hessian_factor,
    reconstruction_error,
    refit,
    sparsegpt_prune,
)
from ..plan import Plan, PlanError
from ..structure.units import stream_inputs
from ..workbench import Workbench
from .base import Method, MethodSpec
from .magnitude import MagnitudeUnstructured

PAPER = ("Wu, Modoranu, Safaryan, Kuznedelev, Alistarh: The Iterative Optimal Brain Surgeon: Faster Sparse Recovery "
         "by Leveraging Second-Order Information, NeurIPS 2024 (arXiv 2408.17163); projection: SparseGPT (Frantar & "
         "Alistarh, ICML 2023)")
M_DEFAULT = 4


@dataclass
class LayerProblem:
    """One prunable weight's least-squares problem: ``weight`` (rows, d) float64, ``hessian`` X X^T / n
    (undampened, d x d), ``factor`` the upper Cholesky factor of the dampened H^-1, ``shape`` of the parameter."""

    module: str
    weight: torch.Tensor
    hessian: torch.Tensor
    factor: torch.Tensor
    shape: torch.Size
    dtype: torch.dtype
    device: torch.device


def unsupported_reason(model: nn.Module, prunable: list[str]) -> str | None:
    """Why OBS cannot prune every prunable tensor of ``model`` (None when it can): each must be the weight of a
    ``nn.Linear`` or an ungrouped, zero-padded ``nn.Conv2d`` with numeric padding."""
    if not prunable:
        return "the model has no weight matrix or conv kernel to prune"
    modules = dict(model.named_modules())
    for name in prunable:
        module_name, _, attr = name.rpartition(".")
        mod = modules.get(module_name)
        if attr != "weight" or not isinstance(mod, (nn.Linear, nn.Conv2d)):
            kind = type(mod).__name__ if mod is not None else "no module"
            return (f"OBS solves each layer's least squares against its inputs; {name!r} belongs to a {kind}, and "
                    "only nn.Linear and nn.Conv2d weights are supported")
        if mod.weight.numel() == 0:
            return f"{name!r} is an empty layer (shape {tuple(mod.weight.shape)}): there is nothing to prune or re-fit"
        if isinstance(mod, nn.Conv2d) and (mod.groups != 1 or isinstance(mod.padding, str)
                                           or mod.padding_mode != "zeros"):
            return f"{name!r} is a grouped conv or uses string / non-zero padding, which OBS does not unfold"
    return None


def layer_inputs_matrix(mod: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """The layer's input as X (d, n): a Linear's features by samples (and leading positions), a Conv2d's
    ``F.unfold`` columns (C_in * kh * kw by samples x output positions), matching ``weight.reshape(C_out, -1)``."""
    if isinstance(mod, nn.Conv2d):
        cols = F.unfold(inputs, mod.kernel_size, mod.dilation, mod.padding, mod.stride)  # (N, d, L)
        return cols.transpose(0, 1).reshape(cols.shape[1], -1)
    return inputs.reshape(-1, inputs.shape[-1]).T


def layer_problems(model: nn.Module, prunable: list[str], x: torch.Tensor, damp: float = DAMP,
                   batch_size: int = 1024) -> dict[str, LayerProblem]:
    """Parameter name -> ``LayerProblem`` for every name in ``prunable``, with X X^T accumulated in float64 over
    ``x`` (batches of ``batch_size``) on ``model`` as it is (eval mode, hooks removed afterwards)."""
    reason = unsupported_reason(model, prunable)
    if reason:
        raise PlanError(reason)
    if len(x) == 0:
        raise PlanError("OBS needs calibration samples to build each layer's Hessian; the calibration split is empty")
    modules = dict(model.named_modules())
    owner = {name.rpartition(".")[0]: name for name in prunable}
    sums: dict[str, torch.Tensor] = {}
    counts = dict.fromkeys(owner, 0)

    def add(module_name: str, t: torch.Tensor) -> None:
        cols = layer_inputs_matrix(modules[module_name], t).double()
        sums[module_name] = sums.get(module_name, 0) + cols @ cols.T
        counts[module_name] += cols.shape[1]

    stream_inputs(model, list(owner), x, add, batch_size)
    problems = {}
    for module_name, param in owner.items():
        if module_name not in sums:
            raise PlanError(f"the layer {module_name!r} was not called on the calibration samples")
        h = sums[module_name] / max(counts[module_name], 1)
        if not bool(torch.isfinite(h).all()):
            raise PlanError(f"the calibration inputs of {module_name!r} hold NaN or infinite values")
        weight = modules[module_name].weight.detach()
        if not bool(torch.isfinite(weight).all()):
            raise PlanError(f"the weight {param!r} holds NaN or infinite values; OBS cannot prune it")
        try:
            factor = inverse_hessian_factor(dampen(h, damp))
        except ValueError as e:
            raise PlanError(f"{module_name}: {e}") from e
        problems[param] = LayerProblem(module_name, weight.reshape(weight.shape[0], -1).double().cpu(), h.cpu(),
                                       factor.cpu(), weight.shape, weight.dtype, weight.device)
    return problems


def n_kept_of_m(ratio: float, m: int) -> int:
    """N of an N:M pattern for a removal ratio: clip(round((1 - ratio) * M), 1, M) (ratio 0.5, M = 4: 2:4)."""
    return min(max(round((1.0 - ratio) * m), 1), m)


def project(problems: dict[str, LayerProblem], ratio: float | dict[str, float], pattern: str = "unstructured",
            scope: str = "layer", m: int = M_DEFAULT, blocksize: int = BLOCKSIZE, exact_refit: bool = False,
            damp: float = DAMP) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict]:
    """The OBS projection of every layer at ``ratio`` (fraction removed; one float, or one per tensor name):
    (masks, corrected weights, details). ``details``: ``pattern`` ("unstructured" or "N:M"), ``relative_error``
    per tensor (||W X - W' X||^2 / ||W X||^2 on the calibration inputs, undampened) and ``dense_tensors`` (N:M
    widths not divisible by M)."""
    masks, corrections, errors, dense, label = {}, {}, {}, [], "unstructured"
    for name, p in problems.items():
        r = ratio[name] if isinstance(ratio, dict) else ratio
        n = n_kept_of_m(r, m) if pattern == "n:m" else None
        label = f"{n}:{m}" if n is not None else label
        if r == 0.0 or n == m or (n is not None and p.weight.shape[1] % m):
            masks[name] = torch.ones(p.shape, dtype=torch.bool, device=p.device)
            if n is not None and n < m:
                dense.append(name)
            continue
        if r >= 1.0:  # global magnitude's allocation can empty a layer: nothing is left to correct
            masks[name] = torch.zeros(p.shape, dtype=torch.bool, device=p.device)
            corrections[name] = torch.zeros(p.shape, dtype=p.dtype, device=p.device)
            errors[name] = 1.0
            continue
        w, keep = sparsegpt_prune(p.weight, p.factor, r, scope, (n, m) if n is not None else None, blocksize)
        if exact_refit:
            w = refit(p.weight, dampen(p.hessian, damp), keep)
        total = float(((p.weight @ p.hessian) * p.weight).sum())
        errors[name] = reconstruction_error(p.weight, w, p.hessian) / total if total > 0 else 0.0
        masks[name] = keep.reshape(p.shape).to(p.device)
        corrections[name] = w.reshape(p.shape).to(device=p.device, dtype=p.dtype)
    return masks, corrections, {"pattern": label, "relative_error": errors, "dense_tensors": dense}


def forward_order(model: nn.Module, prunable: list[str], example: torch.Tensor) -> list[str]:
    """``prunable`` in the order their modules are first called on ``example`` (never-called ones last)."""
    owner = {name.rpartition(".")[0]: name for name in prunable}
    seen: list[str] = []
    stream_inputs(model, list(owner), example, lambda module, _: seen.append(module) if module not in seen else None)
    return [owner[mod] for mod in seen] + [n for mod, n in owner.items() if mod not in seen]


def sequential_projection(model: nn.Module, prunable: list[str], x: torch.Tensor, ratio: float | dict[str, float],
                          pattern: str = "unstructured", scope: str = "layer", m: int = M_DEFAULT,
                          blocksize: int = BLOCKSIZE, exact_refit: bool = False, damp: float = DAMP,
                          batch_size: int = 1024) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict]:
    """SparseGPT's sequential procedure: layers in forward order, each solved against its inputs on the model
    whose earlier layers are already pruned and corrected. Writes every corrected weight into ``model`` (in place)
    and returns what ``project`` returns."""
    masks, corrections, details = {}, {}, {"pattern": "unstructured", "relative_error": {}, "dense_tensors": []}
    params = dict(model.named_parameters())
    for name in forward_order(model, prunable, x[:1]):
        problem = layer_problems(model, [name], x, damp, batch_size)
        mk, corr, det = project(problem, ratio, pattern, scope, m, blocksize, exact_refit, damp)
        masks.update(mk)
        corrections.update(corr)
        details["relative_error"].update(det["relative_error"])
        details["dense_tensors"] += det["dense_tensors"]
        details["pattern"] = det["pattern"] if name in det["relative_error"] else details["pattern"]
        if name in corr:
            with torch.no_grad():
                params[name].copy_(corr[name])
    return masks, corrections, details


class OBSPruning(Method):
    granularity = "unstructured"
    patterns = ("unstructured", "n:m")
    allocations = ("uniform", "global-magnitude")
    input_sources = ("dense", "pruned")

    def __init__(self, pattern: str = "unstructured", scope: str = "layer", allocation: str = "uniform",
                 inputs: str = "dense", m: int = M_DEFAULT, damp: float = DAMP, blocksize: int = BLOCKSIZE,
                 refit: bool = False, seed: int = 0):
        super().__init__(seed)
        if pattern not in self.patterns:
            raise ValueError(f"pattern must be one of {self.patterns}, got {pattern!r}")
        if scope not in ("layer", "row"):
            raise ValueError(f"scope must be 'layer' or 'row', got {scope!r}")
        if allocation not in self.allocations:
            raise ValueError(f"allocation must be one of {self.allocations}, got {allocation!r}")
        if inputs not in self.input_sources:
            raise ValueError(f"inputs must be one of {self.input_sources}, got {inputs!r}")
        if not (isinstance(m, int) and m >= 2 and blocksize % m == 0):
            raise ValueError(f"M must be an integer >= 2 dividing blocksize {blocksize}, got {m!r}")
        if not damp > 0 or blocksize < 1:
            raise ValueError(f"need damp > 0 and blocksize >= 1, got {damp} and {blocksize}")
        self.pattern, self.scope, self.allocation, self.inputs, self.m = pattern, scope, allocation, inputs, m
        self.damp, self.blocksize, self.refit = float(damp), int(blocksize), bool(refit)

    def config(self) -> dict:
        return {"pattern": self.pattern, "scope": self.scope, "allocation": self.allocation, "inputs": self.inputs,
                "m": self.m, "damp": self.damp, "blocksize": self.blocksize, "refit": self.refit}

    def _prepare(self, wb: Workbench) -> None:
        wb.restore()
        self.prunable = list(wb.prunable)
        reason = unsupported_reason(wb.model, self.prunable)
        if reason:
            raise PlanError(reason)
        if self.inputs == "dense":
            self.problems = layer_problems(wb.model, self.prunable, wb.calib_x, self.damp, wb.batch_size)
        if self.allocation == "global-magnitude":
            self.magnitude = MagnitudeUnstructured(scope="global").prepare(wb)

    def layer_ratios(self, ratio: float) -> float | dict[str, float]:
        """The removal ratio of every tensor: ``ratio`` (uniform) or what global magnitude removes there."""
        if self.allocation == "uniform" or ratio == 0.0:
            return ratio
        masks = self.magnitude.plan(ratio).masks
        return {name: 1.0 - int(mask.count_nonzero()) / mask.numel() for name, mask in masks.items()}

    def _plan(self, ratio: float) -> Plan:
        settings = (self.pattern, self.scope, self.m, self.blocksize, self.refit, self.damp)
        ratios = self.layer_ratios(ratio)
        if self.inputs == "dense" or ratio == 0.0:
            problems = self.problems if self.inputs == "dense" else {}
            masks, corrections, details = project(problems, ratios, *settings)
            masks.update({n: torch.ones_like(p, dtype=torch.bool) for n, p in self._wb.prunable.items()
                          if n not in masks})
        else:
            working = copy.deepcopy(self._wb.model)
            masks, corrections, details = sequential_projection(working, self.prunable, self._wb.calib_x, ratios,
                                                                *settings, batch_size=self._wb.batch_size)
        if isinstance(ratios, dict):
            details["layer_ratios"] = ratios
        return Plan(self.key, ratio, "unstructured", masks=masks, corrections=corrections, details=details)


def _obs_unavailable(wb: Workbench) -> str | None:
    return unsupported_reason(wb.model, list(wb.prunable))


_UNIFORM = {"pattern": "unstructured", "scope": "layer", "allocation": "uniform", "inputs": "dense", "refit": False}
SPECS = [
    MethodSpec("obs", "OBS / SparseGPT, per layer (unstructured, Wu et al. 2024)", "unstructured", OBSPruning,
               _UNIFORM,
               "Each layer's weights are pruned and the survivors corrected to keep the layer's output on the "
               "calibration data (least squares with the layer Hessian X X^T, SparseGPT's sweep); the same fraction "
               "in every layer, every layer solved against the dense model's inputs. One-shot: round 1 of the "
               "Iterative OBS.",
               paper=PAPER, needs=("weights", "calibration activations"), requires=_obs_unavailable,
               short_label="OBS (SparseGPT)"),
    MethodSpec("obs-global", "OBS / SparseGPT at global magnitude's layer sparsities (sequential)", "unstructured",
               OBSPruning, {**_UNIFORM, "allocation": "global-magnitude", "inputs": "pruned"},
               "SparseGPT's sequential procedure (each layer solved on the inputs of the already pruned layers "
               "before it) with every layer removing what global magnitude removes there, so it compares with "
               "magnitude (global) at the same per-layer sparsity.",
               paper=PAPER, needs=("weights", "calibration activations"), requires=_obs_unavailable,
               short_label="OBS, global allocation"),
    MethodSpec("obs-nm", "OBS / SparseGPT, N:4 semi-structured (2:4 at ratio 0.5)", "unstructured", OBSPruning,
               {**_UNIFORM, "pattern": "n:m"},
               "SparseGPT's sweep keeping N of every 4 consecutive input weights (N = round(4 x kept fraction), "
               "1 to 4): 2:4 at ratio 0.5, 1:4 at 0.75. Layers whose input width is not a multiple of 4 stay dense.",
               paper=PAPER, needs=("weights", "calibration activations"), requires=_obs_unavailable,
               short_label="OBS N:M (SparseGPT)",
               exempt={"kept-fraction": "N:M keeps N of every 4 weights, so only ratios on the grid 0.25, 0.5, 0.75 "
                                        "are met exactly, and a layer whose input width is not a multiple of 4 (a "
                                        "first conv with 1 x 3 x 3 inputs) stays dense"}),
]

__all__ = ["SPECS", "LayerProblem", "OBSPruning", "forward_order", "layer_inputs_matrix", "layer_problems",
           "n_kept_of_m", "project", "sequential_projection", "unsupported_reason"]
