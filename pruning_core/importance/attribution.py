"""Attribution criteria through captum, at the output of every producer layer of every dependency group.

For each producer layer (a conv/linear layer whose output channels are a group's channels) captum attributes the
model's logit of each calibration sample's **true label** to the layer's output neurons, from a **zero input
baseline**:

* ``"conductance"``: ``LayerConductance`` (Dhamdhere, Sundararajan & Yan, "How Important Is a Neuron?", ICLR 2019,
  Eq. 2: the flow of integrated gradients through neuron y, sum over the path of dF/dy * dy/dalpha), with
  ``method="riemann_trapezoid"`` so the path's first and last points are the baseline and the input and the
  neurons' conductances add up to F(x) - F(0) whenever every path from input to output crosses the layer;
* ``"grad-x-act"``: ``LayerGradientXActivation``, a * dF/da at the layer's output (one backward pass);
* ``"activation"``: ``LayerActivation``, the layer's output itself (one forward pass);
* ``"layer-ig"``: ``LayerIntegratedGradients`` (Sundararajan, Taly & Yan, "Axiomatic Attribution for Deep
  Networks", ICML 2017, Eq. 1, applied to the layer's output: the output is moved along the straight line from
  its value at the zero input to its value at the input while the rest of the model sees the input; captum's
  Gauss-Legendre rule).

One score per channel (documented aggregation, the same for the three attribution criteria): for each sample the
attribution is **summed over the channel's positions** (the channel's total attribution; for conductance and
layer IG these totals carry the completeness property), its **absolute value** taken (a channel that moves the
logit a lot either way matters), then **averaged over the calibration samples**. ``"activation"`` is the mean of
|a| over samples and positions. A group's score is the sum of its producers' channel scores (a residual group
adds up every conv that writes into the sum), like the group magnitude criteria.

Cost: conductance and layer IG run ``n_steps`` (default ``DEFAULT_STEPS`` = 16) forward and backward passes over
the calibration split per producer layer; the calibration split is fed in chunks so each captum call sees at most
``wb.batch_size`` rows. Gradients flow through a clone of the input that requires grad (the working copy's
parameters keep ``requires_grad=False``); every captum hook is removed and every module's mode put back on exit.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import torch
from torch import nn

from .activation import channels_first, hooks_restored, producer_sites, sum_into_groups

if TYPE_CHECKING:
    from ..workbench import Workbench

DEFAULT_STEPS = 16
LAYER_METHODS = ("conductance", "grad-x-act", "activation", "layer-ig")
INPUT_METHODS = ("integrated-gradients", "saliency", "input-x-gradient")


def _rows_per_sample(method: str, n_steps: int) -> int:
    """Rows captum evaluates per input sample (path points, plus layer IG's two endpoint passes)."""
    return {"conductance": n_steps + 1, "layer-ig": n_steps + 2}.get(method, 1)


@contextlib.contextmanager
def inplace_off(model: nn.Module):
    """Inside the block every module with an ``inplace`` flag (``nn.ReLU(inplace=True)``, ReLU6, Hardswish, Dropout)
    computes out of place; on exit the flags are put back. Layer IG replaces the hooked layer's output by a leaf
    tensor that requires grad, and an in-place activation right after the layer (VGG's classifier, torchvision's
    ResNets) cannot write into it: autograd refuses. Out of place, the values and gradients are the same."""
    flagged = [m for m in model.modules() if getattr(m, "inplace", None) is True]
    try:
        for m in flagged:
            m.inplace = False
        yield model
    finally:
        for m in flagged:
            m.inplace = True


def layer_attributions(wb: "Workbench", method: str, layers: list[str], x: torch.Tensor, y: torch.Tensor,
                       n_steps: int = DEFAULT_STEPS) -> list[torch.Tensor]:
    """captum's raw attributions of ``method`` (one of ``LAYER_METHODS``) at each of ``layers``' outputs for the
    batch ``x`` (N, ...) with targets ``y`` (N,): one tensor per layer, of the layer output's shape (N, ...), before
    any aggregation. The caller owns the hooks' clean-up (``hooks_restored``) and gradient mode."""
    modules = dict(wb.model.named_modules())
    mods = [modules[n] for n in layers]
    with inplace_off(wb.model):
        return _layer_attributions(wb.model, method, mods, x, y, n_steps)


def _layer_attributions(model: nn.Module, method: str, mods: list[nn.Module], x: torch.Tensor, y: torch.Tensor,
                        n_steps: int) -> list[torch.Tensor]:
    from captum.attr import LayerActivation, LayerConductance, LayerGradientXActivation, LayerIntegratedGradients

    if method == "activation":
        out = LayerActivation(model, mods).attribute(x)
    elif method == "grad-x-act":
        out = LayerGradientXActivation(model, mods).attribute(x, target=y)
    elif method == "conductance":  # captum's conductance takes one layer at a time
        out = [LayerConductance(model, m).attribute(x, baselines=0.0, target=y, n_steps=n_steps,
                                                    method="riemann_trapezoid") for m in mods]
    elif method == "layer-ig":  # one layer at a time: captum requires independent layers in one call
        out = [LayerIntegratedGradients(model, m).attribute(x, baselines=torch.zeros_like(x), target=y,
                                                             n_steps=n_steps) for m in mods]
    else:
        raise ValueError(f"unknown layer attribution {method!r}; available: {', '.join(LAYER_METHODS)}")
    return list(out) if isinstance(out, (list, tuple)) else [out]


def layer_attribution_scores(wb: "Workbench", method: str, n_steps: int = DEFAULT_STEPS,
                             layers: list[str] | None = None) -> dict[str, torch.Tensor]:
    """Producer layer -> (output channels,) float64 CPU score of ``method`` (see the module docstring for the
    aggregation), over the calibration split. ``layers``: default every producer layer of every group."""
    if layers is None:
        layers = list(dict.fromkeys(s.layer for s in producer_sites(wb)))
    gradients = method != "activation"
    if gradients and not wb.calib_x.is_floating_point():
        raise ValueError(f"{method} follows gradients to the input, which needs floating-point samples; these are "
                         f"{wb.calib_x.dtype}")
    if wb.task.kind == "embedding" and gradients:
        raise ValueError("this criterion follows the gradient of a class score or a classification loss, and this "
                         "model returns embeddings, not class scores: use magnitude, BatchNorm scale, activation or "
                         "APoZ criteria")
    modules = dict(wb.model.named_modules())
    chunk = max(1, wb.batch_size // _rows_per_sample(method, n_steps))
    n = len(wb.calib_x)
    totals: dict[str, torch.Tensor] = {}
    with hooks_restored(wb.model), torch.enable_grad():
        for i in range(0, n, chunk):
            x = wb.calib_x[i:i + chunk].detach().clone().requires_grad_(gradients)
            y = wb.calib_y[i:i + chunk]
            for name, attr in zip(layers, layer_attributions(wb, method, layers, x, y, n_steps), strict=True):
                per = channels_first(attr.detach(), modules[name]).double()
                per = per.abs().mean(2) if method == "activation" else per.sum(2).abs()
                totals[name] = totals.get(name, 0) + per.sum(0)
    return {name: (t / n).cpu() for name, t in totals.items()}


def group_attribution(wb: "Workbench", method: str, n_steps: int = DEFAULT_STEPS) -> dict[str, torch.Tensor]:
    """Group -> (channels,) float64 CPU: ``layer_attribution_scores`` of every producer of the group, summed into
    the group's channels through the producers' ``root_idx``."""
    sites = producer_sites(wb)
    return sum_into_groups(wb, sites, layer_attribution_scores(wb, method, n_steps))


def input_attribution(wb: "Workbench", index: int, split: str = "eval", method: str = "integrated-gradients",
                      n_steps: int = 64) -> tuple[torch.Tensor, int, float, int]:
    """Attribution of sample ``index`` of ``split`` ("eval" or "calib") to its input features, w.r.t. the class
    the model predicts: (attribution (the sample's shape, float32 CPU), predicted class, its softmax probability,
    true label).

    ``method``: ``"integrated-gradients"`` (captum ``IntegratedGradients``, Sundararajan et al. 2017, Eq. 1, zero
    baseline, ``n_steps`` Gauss-Legendre points: the attributions add up to F(x) - F(0) for the predicted logit),
    ``"saliency"`` (|dF/dx|, Simonyan et al. 2014) or ``"input-x-gradient"`` (x * dF/dx)."""
    from captum.attr import InputXGradient, IntegratedGradients, Saliency

    if split not in ("eval", "calib"):
        raise ValueError(f"split must be 'eval' or 'calib', got {split!r}")
    xs, ys = (wb.eval_x, wb.eval_y) if split == "eval" else (wb.calib_x, wb.calib_y)
    if not 0 <= index < len(xs):
        raise IndexError(f"sample {index} is out of range: the {split} split has {len(xs)} samples")
    wb.restore()
    x = xs[index:index + 1].detach().clone()
    with torch.no_grad():
        probs = torch.softmax(wb.model(x).float(), dim=1)[0]
    predicted = int(probs.argmax())
    with hooks_restored(wb.model), torch.enable_grad():
        x.requires_grad_(True)
        if method == "integrated-gradients":
            attr = IntegratedGradients(wb.model).attribute(x, baselines=torch.zeros_like(x), target=predicted,
                                                           n_steps=n_steps)
        elif method == "saliency":
            attr = Saliency(wb.model).attribute(x, target=predicted)
        elif method == "input-x-gradient":
            attr = InputXGradient(wb.model).attribute(x, target=predicted)
        else:
            raise ValueError(f"unknown input attribution {method!r}; available: {', '.join(INPUT_METHODS)}")
    return attr.detach()[0].float().cpu(), predicted, float(probs[predicted]), int(ys[index])
