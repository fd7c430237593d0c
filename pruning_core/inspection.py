"""What a model's layers look like to a pruning criterion: per-channel importance maps, weight matrices with a
plan's mask, per-layer importance distributions. Plain numpy / pandas out, for the Layers screen, the CLI and
notebooks.

Importance here is magnitude: the group L_p norm of DepGraph (Fang et al., CVPR 2023, Sec. 3.3), the same
score ``group-l1`` / ``group-l2`` rank channels by (``importance.group_channel_norms``); for models
without channel groups, the L_p norm of each output row of every prunable weight.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from .importance.magnitude import group_channel_norms, output_row_norms
from .plan import Plan
from .structure import GroupError
from .workbench import Workbench


def _per_row_normalised(rows: dict[str, np.ndarray]) -> pd.DataFrame:
    """One row per entry, each divided by its own maximum (so 1 = the strongest channel of that row), padded
    with NaN to the widest row."""
    width = max((len(v) for v in rows.values()), default=0)
    out = np.full((len(rows), width), np.nan)
    for i, v in enumerate(rows.values()):
        peak = float(np.max(v)) if len(v) else 0.0
        out[i, :len(v)] = v / peak if peak > 0 else v
    return pd.DataFrame(out, index=list(rows), columns=range(width))


def channel_importance_table(wb: Workbench, p: int = 1) -> tuple[pd.DataFrame, str]:
    """Relative channel importance, rows normalised to [0, 1], NaN-padded: (table, what the rows are).

    With channel groups: one row per group (index = group name), values = group L_p norm of each channel.
    Without (TorchScript, unsupported layers): one row per prunable layer, values = L_p norm of each output row.
    """
    try:
        wb.restore()
        norms = {name: v.numpy() for name, v in group_channel_norms(wb, p).items()}
        return _per_row_normalised(norms), "channel group"
    except GroupError:
        return _per_row_normalised(output_row_norms(wb, p)), "layer"


def score_table(scores: dict[str, torch.Tensor], order: list[str] | None = None) -> pd.DataFrame:
    """Any criterion's channel scores (group -> (channels,)) as the heatmap's table: one row per group (in
    ``order`` when given), each row min-max scaled to [0, 1] when it has negative scores and divided by its
    maximum otherwise (1 = the channel the criterion values most in that group), NaN-padded."""
    names = [g for g in (order or scores) if g in scores]
    rows = {}
    for g in names:
        v = scores[g].detach().to("cpu", torch.float64).numpy()
        low = float(v.min()) if len(v) else 0.0
        rows[g] = v - low if low < 0 else v
    return _per_row_normalised(rows)


def prunable_layers(wb: Workbench) -> list[str]:
    """Names of the prunable weights (conv kernels, linear matrices), in model order."""
    return list(wb.prunable)


def _kept_mask(wb: Workbench, weight: str, plan: Plan | None) -> torch.Tensor:
    shape = wb.prunable[weight].shape
    if plan is None:
        return torch.ones(shape, dtype=torch.bool)
    if plan.is_structured:
        masks = wb.groups.kept_mask_by_tensor(plan.pruned_channels, {weight: shape})
    else:
        masks = plan.masks
    return masks[weight].cpu() if weight in masks else torch.ones(shape, dtype=torch.bool)


def _block_reduce(a: np.ndarray, max_side: int) -> np.ndarray:
    """Average non-overlapping blocks so neither side exceeds ``max_side`` (for drawing very large matrices)."""
    fr, fc = -(-a.shape[0] // max_side), -(-a.shape[1] // max_side)
    if fr == 1 and fc == 1:
        return a
    rows, cols = -(-a.shape[0] // fr) * fr, -(-a.shape[1] // fc) * fc
    padded = np.full((rows, cols), np.nan)
    padded[: a.shape[0], : a.shape[1]] = a
    return np.nanmean(padded.reshape(rows // fr, fr, cols // fc, fc), axis=(1, 3))


def weight_matrix_with_mask(wb: Workbench, weight: str, plan: Plan | None, reduce_kernel: bool = True,
                            max_side: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """The dense weight ``weight`` as a 2-D matrix and the fraction of each entry ``plan`` keeps.

    Linear weights are (out, in) as they are. Conv kernels (out, in, *k) are reduced over the kernel with
    ``reduce_kernel`` (magnitude = L1 norm of each (out, in) kernel, kept = fraction of its entries kept: the
    view for channel plans), or flattened to (out, in * prod(k)) without it (one cell per weight: the view for
    unstructured masks). Matrices larger than ``max_side`` on a side are block-averaged for drawing.
    Returns (magnitude, kept), float arrays of the same shape.
    """
    wb.restore()
    w = wb.prunable[weight].detach().to("cpu", torch.float64)
    mask = _kept_mask(wb, weight, plan).to(torch.float64)
    if reduce_kernel:
        magnitude = w.abs().reshape(w.shape[0], w.shape[1], -1).sum(-1).numpy()
        kept = mask.reshape(w.shape[0], w.shape[1], -1).mean(-1).numpy()
    else:
        magnitude, kept = w.abs().reshape(w.shape[0], -1).numpy(), mask.reshape(w.shape[0], -1).numpy()
    return _block_reduce(magnitude, max_side), _block_reduce(kept, max_side)


def layer_importance(wb: Workbench, weight: str, plan: Plan | None, p: int = 1) -> tuple[pd.DataFrame, str]:
    """Importance scores of one layer's prunable units and whether ``plan`` keeps them: (frame, unit).

    For a structured plan and a layer whose output channels form (part of) a channel group, the unit is the
    channel and the score its group L_p norm; otherwise the unit is the single weight and the score |w|.
    Frame columns: ``importance`` (float), ``kept`` (bool).
    """
    layer = weight[: -len(".weight")] if weight.endswith(".weight") else weight
    if plan is not None and plan.is_structured:
        group = next((g for g in wb.groups.groups if layer in g.producers), None)
        if group is not None:
            wb.restore()
            scores = group_channel_norms(wb, p)[group.name].numpy()
            kept = np.ones(group.size, dtype=bool)
            kept[plan.pruned_channels.get(group.name, torch.empty(0, dtype=torch.long)).cpu().numpy()] = False
            return pd.DataFrame({"importance": scores, "kept": kept}), "channel"
    wb.restore()
    w = wb.prunable[weight].detach().to("cpu", torch.float64).abs().reshape(-1).numpy()
    kept = _kept_mask(wb, weight, plan).reshape(-1).numpy()
    return pd.DataFrame({"importance": w, "kept": kept.astype(bool)}), "weight"


__all__ = ["channel_importance_table", "layer_importance", "prunable_layers", "weight_matrix_with_mask"]
