"""The PQ Index (Diao, Wang, Zhang, Yang, Ding, Tarokh, "Pruning Deep Neural Networks from a Sparsity
Perspective", ICLR 2023, arXiv 2302.05601, Def. 1; authors' ``src/modules/sparsity_index.py``).

For w in R^d, w != 0, and 0 < p < q:

    I_{p,q}(w) = 1 - d^{1/q - 1/p} ||w||_p / ||w||_q = 1 - (sum|w_i|^p / d)^{1/p} / (sum|w_i|^q / d)^{1/q}

0 <= I <= 1 - d^{1/q-1/p}; larger means sparser (mass concentrated on fewer entries); I = 0 when every |w_i| is
equal. Defaults p = 0.5, q = 1 (the paper's second setting is p = 1, q = 2). Under a pruning mask, d is the number
of **unpruned** entries and pruned entries are left out. Scopes (paper Sec. 4): ``neuron`` = one value per output
row of every weight tensor with more than one dimension; ``layer`` = one per such tensor; ``global`` = all of them
concatenated. Biases and normalisation parameters are never included.

Pure tensor maths: the weights come as a dict name -> tensor, a module, or anything with a ``prunable`` dict of
weights (a ``Workbench``).
"""

from __future__ import annotations

import math
from typing import Mapping

import pandas as pd
import torch
from torch import nn

SCOPES = ("neuron", "layer", "global")
REFERENCE_PQ = (0.5, 1.0)  # the common yardstick runs with other (p, q) are also measured with

TensorDict = Mapping[str, torch.Tensor]


def check_pq(p: float, q: float) -> tuple[float, float]:
    """Validate the PQI exponents (paper Def. 1 needs 0 < p < q); returns them as floats."""
    try:
        p, q = float(p), float(q)
    except (TypeError, ValueError) as e:
        raise ValueError(f"p and q must be numbers with 0 < p < q, got p={p!r}, q={q!r}") from e
    if not (math.isfinite(p) and math.isfinite(q)) or not 0 < p < q:
        raise ValueError(f"The PQ Index needs 0 < p < q (finite), got p={p:g}, q={q:g}. "
                         "The paper's settings are p=0.5, q=1 and p=1, q=2.")
    return p, q


def abs_power(a: torch.Tensor, e: float) -> torch.Tensor:
    """a^e of nonnegative magnitudes ``a`` (|w|^e), without a general pow for the exponents the paper uses."""
    if e == 1.0:
        return a
    if e == 2.0:
        return a * a
    if e == 0.5:
        return a.sqrt()
    return a.pow(e)


def index_from_sums(sp: torch.Tensor, sq: torch.Tensor, d: torch.Tensor, p: float, q: float) -> torch.Tensor:
    """PQI from the power sums of (rescaled) magnitudes, the code's mean form
    1 - (sp/d)^{1/p} / (sq/d)^{1/q}. Empty units (d = 0), all-zero units (sq = 0), non-finite results (the
    code's -inf guard, and NaN weights) give 0; round-off negatives are clipped to 0 (as the code does)."""
    with torch.no_grad():
        safe_d = torch.where(d > 0, d, torch.ones_like(d))
        ratio = (sp / safe_d).pow(1.0 / p) / (sq / safe_d).pow(1.0 / q)
        index = 1.0 - ratio
        ok = (d > 0) & (sq > 0) & torch.isfinite(index)
        return torch.where(ok, index, torch.zeros_like(index)).clamp_min(0.0)


def row_sums(w: torch.Tensor, mask: torch.Tensor | None, p: float, q: float):
    """Per output row of ``w`` (rows, ...): power sums of |w|/scale over unpruned entries, the number d of
    unpruned entries and the scale (the row's largest unpruned |w|). Rescaling by the row maximum keeps the sums
    finite for any d and any magnitude; PQI is scale invariant, so the index is unchanged. float64, CPU."""
    rows = w.shape[0] if w.ndim > 0 else 1
    a = w.detach().reshape(rows, -1).to("cpu", torch.float64).abs()
    if mask is not None:
        m = mask.detach().reshape(rows, -1).to("cpu", torch.bool)
        a = torch.where(m, a, torch.zeros((), dtype=torch.float64))  # a pruned NaN never leaks into the sums
        d = m.sum(1, dtype=torch.float64)
    else:
        d = torch.full((rows,), float(a.shape[1]), dtype=torch.float64)
    if a.shape[1] == 0:
        zeros = torch.zeros(rows, dtype=torch.float64)
        return zeros, zeros.clone(), d, zeros.clone()
    scale = a.amax(1)
    a = a / torch.where(scale > 0, scale, torch.ones_like(scale))[:, None]
    return abs_power(a, p).sum(1), abs_power(a, q).sum(1), d, scale


def pool_sums(sp: torch.Tensor, sq: torch.Tensor, d: torch.Tensor, scale: torch.Tensor, p: float, q: float):
    """Combine the sums of several units (rows -> tensor, tensors -> global) onto the largest scale."""
    if scale.numel() == 0:
        z = torch.zeros((), dtype=torch.float64)
        return z, z.clone(), z.clone(), z.clone()
    top = scale.max()
    f = scale / top if bool(top > 0) else torch.zeros_like(scale)
    return (sp * abs_power(f, p)).sum(), (sq * abs_power(f, q)).sum(), d.sum(), top


def scope_params(wb_or_params) -> dict[str, torch.Tensor]:
    """The weights PQI is defined on: a workbench's prunable weights (anything with a ``prunable`` dict), or the
    tensors with ndim > 1 of a module or a dict."""
    if hasattr(wb_or_params, "prunable"):
        return dict(wb_or_params.prunable)
    if isinstance(wb_or_params, nn.Module):
        return {k: v for k, v in wb_or_params.named_parameters() if v.ndim > 1}
    return {k: v for k, v in dict(wb_or_params).items() if v.ndim > 1}


def pq_index(w: torch.Tensor, p: float = 0.5, q: float = 1.0, mask: torch.Tensor | None = None) -> float:
    """PQ Index I_{p,q}(w) of one vector (paper Def. 1; defaults p = 0.5, q = 1):

        I = 1 - d^{1/q-1/p} ||w||_p / ||w||_q = 1 - (mean |w|^p)^{1/p} / (mean |w|^q)^{1/q}

    ``w``: a tensor of any shape, read as one vector. ``mask`` (bool, w's shape, True = unpruned): only unpruned
    entries count and d is their number (the code's convention). Computed in float64 from magnitudes rescaled by
    their maximum, so it is stable for any d. Returns 0 for an empty mask, an all-zero vector or a non-finite
    result (NaN or infinite weights), and clips round-off negatives to 0. Raises ValueError unless 0 < p < q."""
    p, q = check_pq(p, q)
    w = torch.as_tensor(w)
    flat = w.reshape(1, -1)
    m = None if mask is None else torch.as_tensor(mask).reshape(1, -1)
    if m is not None and m.shape != flat.shape:
        raise ValueError(f"mask has {m.numel()} entries but w has {flat.numel()}")
    sp, sq, d, _ = row_sums(flat, m, p, q)
    return float(index_from_sums(sp, sq, d, p, q)[0])


def pqi_all_scopes(wb_or_params, masks: TensorDict | None = None, p: float = 0.5, q: float = 1.0) -> dict:
    """PQI in every scope at once (paper Sec. 4 scopes; defaults p = 0.5, q = 1), one vectorised pass per tensor.

    ``wb_or_params``: a ``Workbench`` (its prunable weights), a module, or a dict name -> tensor (tensors with
    ndim <= 1 are ignored: biases and norm parameters are never part of PQI). ``masks``: name -> bool keep-mask
    (missing names are unpruned). Returns ``{"neuron": {name: (rows,) tensor}, "layer": {name: 0-d tensor},
    "global": {"global": 0-d tensor}, "d": {"neuron": {...}, "layer": {...}, "global": {...}}}``, float64 on
    the CPU, where ``"d"`` holds the number of unpruned weights of every unit."""
    p, q = check_pq(p, q)
    params = scope_params(wb_or_params)
    masks = masks or {}
    out: dict = {"neuron": {}, "layer": {}, "global": {}, "d": {"neuron": {}, "layer": {}, "global": {}}}
    pooled = []
    for name, w in params.items():
        sp, sq, d, scale = row_sums(w, masks.get(name), p, q)
        out["neuron"][name] = index_from_sums(sp, sq, d, p, q)
        out["d"]["neuron"][name] = d
        lsp, lsq, ld, lscale = pool_sums(sp, sq, d, scale, p, q)
        out["layer"][name] = index_from_sums(lsp, lsq, ld, p, q)
        out["d"]["layer"][name] = ld
        pooled.append((lsp, lsq, ld, lscale))
    if pooled:
        gsp, gsq, gd, _ = pool_sums(*(torch.stack(col) for col in zip(*pooled, strict=True)), p, q)
    else:
        gsp = gsq = gd = torch.zeros((), dtype=torch.float64)
    out["global"]["global"] = index_from_sums(gsp, gsq, gd, p, q)
    out["d"]["global"]["global"] = gd
    return out


def pqi_by_scope(wb_or_params, masks: TensorDict | None = None, p: float = 0.5, q: float = 1.0,
                 scope: str = "layer") -> dict[str, torch.Tensor]:
    """PQI per scope unit (paper Sec. 4; defaults p = 0.5, q = 1, scope ``layer``).

    * ``neuron``: name -> (rows,) tensor, one value per output row of each weight tensor with ndim > 1;
    * ``layer``: name -> 0-d tensor, one value per such tensor;
    * ``global``: ``{"global": 0-d tensor}`` over all of them concatenated.

    Only unpruned entries count (``masks``: name -> bool, True = kept) and d is their number. float64, CPU.
    Vectorised per tensor: no Python loop over rows."""
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    return pqi_all_scopes(wb_or_params, masks, p, q)[scope]


def scope_summary(all_scopes: dict, scope: str) -> float:
    """One number per scope of a ``pqi_all_scopes`` result, for charts: the global value, or the mean over the
    scope's units that still hold weights (layers, or neurons)."""
    if scope == "global":
        return float(all_scopes["global"]["global"])
    values = [v.reshape(-1)[d.reshape(-1) > 0] for v, d in zip(all_scopes[scope].values(),
                                                                 all_scopes["d"][scope].values(), strict=True)]
    values = torch.cat(values) if values else torch.zeros(0, dtype=torch.float64)
    return float(values.mean()) if values.numel() else 0.0


def pqi_table(wb_or_params, masks: TensorDict | None = None, p: float = 0.5, q: float = 1.0
              ) -> tuple[pd.DataFrame, float]:
    """Per-layer PQI table and the global PQI (paper Def. 1, defaults p = 0.5, q = 1).

    One row per weight tensor: ``layer``, ``shape``, ``weights``, ``kept`` (unpruned count), ``pqi`` (layer
    scope), ``pqi_neuron_mean`` / ``pqi_neuron_min`` / ``pqi_neuron_max`` (over rows that keep weights) and
    ``bound`` = 1 - d^{1/q-1/p}, the largest value possible for the layer's d."""
    p, q = check_pq(p, q)
    params = scope_params(wb_or_params)
    scopes = pqi_all_scopes(params, masks, p, q)
    rows = []
    for name, w in params.items():
        neuron, d_rows = scopes["neuron"][name], scopes["d"]["neuron"][name]
        live = neuron[d_rows > 0]
        d = float(scopes["d"]["layer"][name])
        rows.append({"layer": name, "shape": "x".join(map(str, w.shape)), "weights": w.numel(), "kept": int(d),
                     "pqi": float(scopes["layer"][name]),
                     "pqi_neuron_mean": float(live.mean()) if live.numel() else 0.0,
                     "pqi_neuron_min": float(live.min()) if live.numel() else 0.0,
                     "pqi_neuron_max": float(live.max()) if live.numel() else 0.0,
                     "bound": 1.0 - d ** (1.0 / q - 1.0 / p) if d > 0 else 0.0})
    return pd.DataFrame(rows), float(scopes["global"]["global"])


__all__ = ["REFERENCE_PQ", "SCOPES", "abs_power", "check_pq", "index_from_sums", "pool_sums", "pq_index",
           "pqi_all_scopes", "pqi_by_scope", "pqi_table", "row_sums", "scope_params", "scope_summary"]
