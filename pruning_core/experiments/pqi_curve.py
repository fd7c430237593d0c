"""PQI of a model under a plan, and along one-shot global magnitude pruning (Diao et al., ICLR 2023, the Fig. 1
intuition): the Sparsity screen's numbers."""

from __future__ import annotations

from typing import Iterable

import pandas as pd
import torch

from ..algorithms.pq_index import check_pq, pqi_all_scopes, scope_summary
from ..methods.magnitude import MagnitudeUnstructured
from ..plan import Plan
from ..workbench import Workbench


def plan_masks(wb: Workbench, plan: Plan | None) -> dict[str, torch.Tensor]:
    """Keep-masks of every prunable weight under ``plan`` (all ones for ``None`` or untouched tensors).

    Unstructured plans carry their masks. For structured plans the removed channels are found by zeroing them in
    an all-ones copy of the weights (so a weight that happens to be exactly 0 in the model is not mistaken for a
    removed one); the workbench's dense values are put back exactly afterwards."""
    prunable = wb.prunable
    masks = {k: torch.ones(v.shape, dtype=torch.bool) for k, v in prunable.items()}
    if plan is None:
        return masks
    if not plan.is_structured:
        masks.update({k: m.detach().to("cpu", torch.bool) for k, m in plan.masks.items() if k in masks})
        return masks
    wb.restore()
    saved = {k: v.detach().clone() for k, v in prunable.items()}
    try:
        with torch.no_grad():
            for v in prunable.values():
                v.fill_(1.0)
        wb.apply(plan)
        masks = {k: (v.detach() != 0).cpu() for k, v in prunable.items()}
    finally:
        wb.restore()
        with torch.no_grad():
            for k, v in prunable.items():
                v.copy_(saved[k])
    return masks


def pqi_magnitude_curve(wb: Workbench, ratios: Iterable[float], p: float = 0.5, q: float = 1.0) -> pd.DataFrame:
    """PQI of the surviving weights and test accuracy after one-shot global magnitude pruning, per ratio
    (fraction removed; no retraining). Columns: ``ratio``, ``remaining``, ``pqi_global``, ``pqi_layer`` (mean over
    layers), ``pqi_neuron`` (mean over rows), ``accuracy``. Removing the smallest weights leaves a flatter
    distribution, so PQI falls as the ratio grows (the paper's Fig. 1 intuition)."""
    p, q = check_pq(p, q)
    wb.restore()
    method = MagnitudeUnstructured(scope="global").prepare(wb)
    total = sum(v.numel() for v in wb.prunable.values())
    rows = []
    for r in ratios:
        plan = method.plan(r)
        scopes = pqi_all_scopes(wb, plan.masks, p, q)
        kept = sum(int(m.sum()) for m in plan.masks.values())
        rows.append({"ratio": float(r), "remaining": kept / total,
                     "pqi_global": scope_summary(scopes, "global"), "pqi_layer": scope_summary(scopes, "layer"),
                     "pqi_neuron": scope_summary(scopes, "neuron"),
                     "accuracy": wb.evaluate_plan(plan).accuracy})
    return pd.DataFrame(rows)


__all__ = ["plan_masks", "pqi_magnitude_curve"]
