"""First-order Taylor criterion (Molchanov, Tyree, Karras, Aila & Kautz, "Pruning Convolutional Neural Networks
for Resource Efficient Inference", ICLR 2017, Sec. 2.2, Eq. 8).

For a feature map z (one output channel of a producer layer) with activations z_m over its M positions, the
change in loss when z is removed is estimated to first order as

    Theta(z) = | (1/M) sum_m  dC/dz_m * z_m |          (Eq. 8)

per sample, averaged over the calibration samples ("computed for each example separately and averaged"). C is
the cross-entropy on each sample's true label (summed over the batch, so dC/dz of a sample is that sample's own
gradient). A group's score is the sum over its producer layers (a residual group adds every conv that writes
into the sum). Deviation: the paper's per-layer L2 normalisation (Eq. 9) is not applied; it rescales a whole
layer, which leaves the ranking inside a one-producer group unchanged.

Hooks: one forward hook per producer keeps its output and hands the rest of the model a clone (so an in-place
activation after it cannot change the kept tensor); removed on exit, however the pass ends. A layer called more
than once per forward pass (shared weights) is scored on its last call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from .activation import channels_first, hooks_restored, producer_sites, sum_into_groups

if TYPE_CHECKING:
    from ..workbench import Workbench


def layer_taylor_scores(wb: "Workbench", layers: list[str] | None = None) -> dict[str, torch.Tensor]:
    """Producer layer -> (output channels,) float64 CPU Theta of Eq. 8 over the calibration split (``layers``:
    default every producer of every group)."""
    if layers is None:
        layers = list(dict.fromkeys(s.layer for s in producer_sites(wb)))
    if not wb.calib_x.is_floating_point():
        raise ValueError(f"the Taylor criterion follows gradients to the input, which needs floating-point samples; "
                         f"these are {wb.calib_x.dtype}")
    if wb.task.kind == "embedding" and True:
        raise ValueError("this criterion follows the gradient of a class score or a classification loss, and this "
                         "model returns embeddings, not class scores: use magnitude, BatchNorm scale, activation or "
                         "APoZ criteria")
    modules = dict(wb.model.named_modules())
    outputs: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def hook(mod, inputs, out):
            outputs[name] = out
            return out.clone()
        return hook

    totals: dict[str, torch.Tensor] = {}
    n = len(wb.calib_x)
    with hooks_restored(wb.model), torch.enable_grad():
        for name in layers:
            modules[name].register_forward_hook(keep(name))
        for i in range(0, n, wb.batch_size):
            x = wb.calib_x[i:i + wb.batch_size].detach().clone().requires_grad_(True)
            loss = F.cross_entropy(wb.model(x).float(), wb.calib_y[i:i + wb.batch_size], reduction="sum")
            grads = torch.autograd.grad(loss, [outputs[name] for name in layers], allow_unused=True)
            for name, g in zip(layers, grads, strict=True):
                a = outputs[name].detach()
                g = torch.zeros_like(a) if g is None else g
                theta = channels_first(a * g, modules[name]).double().mean(2).abs()
                totals[name] = totals.get(name, 0) + theta.sum(0)
            outputs.clear()
    return {name: (t / n).cpu() for name, t in totals.items()}


def group_taylor(wb: "Workbench") -> dict[str, torch.Tensor]:
    """"taylor": group -> (channels,) float64 CPU, the sum over the group's producers of ``layer_taylor_scores``
    added into the group's channels."""
    return sum_into_groups(wb, producer_sites(wb), layer_taylor_scores(wb))
