"""The SAP pruning rule (Diao et al., ICLR 2023, Algorithm 1; authors' ``make_bound_si`` and
``Compression.compress``) and the paper's 20%-per-round magnitude baselines, on plain tensors.

After retraining, with d_t surviving weights in a scope unit and their PQ Index I_t,

    r_t = ceil( d_t (1 + eta_r)^{-q/(q-p)} (1 - I_t)^{qp/(q-p)} )      (lower bound on the weights to keep)
    c_t = floor( d_t min( gamma (1 - r_t / d_t), beta ) )             (weights to prune now)

and the c_t smallest-magnitude unpruned weights of the unit are removed. Defaults (code ``si-0.5-1-0-1`` runs):
p = 0.5, q = 1, eta_r = 0, gamma = 1, beta = 0.9.

``SortedUnits`` answers the rule applied again and again to fixed weights (no retraining) in O(1) per unit and
round; ``methods.sap.SAPSchedule`` reads a removal order off it.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import torch

from .pq_index import SCOPES, TensorDict, abs_power, check_pq, index_from_sums, pqi_all_scopes, scope_params


def check_sap(p: float, q: float, eta_r: float, gamma: float, beta: float) -> None:
    """Validate the SAP hyper-parameters (ValueError with the reason)."""
    check_pq(p, q)
    if not eta_r > -1 or not math.isfinite(eta_r):
        raise ValueError(f"eta_r must be a finite number above -1 (the paper uses eta_r >= 0), got {eta_r:g}")
    if not gamma > 0 or not math.isfinite(gamma):
        raise ValueError(f"gamma must be positive, got {gamma:g}")
    if not 0 < beta <= 1:
        raise ValueError(f"beta (the largest fraction pruned in one round) must be in (0, 1], got {beta:g}")


def sap_prune_count(d, pqi, p: float = 0.5, q: float = 1.0, eta_r: float = 0.0, gamma: float = 1.0,
                    beta: float = 0.9):
    """SAP's keep bound and prune count for scope units with ``d`` unpruned weights and PQ Index ``pqi``
    (paper Algorithm 1, code ``make_bound_si``; defaults p = 0.5, q = 1, eta_r = 0, gamma = 1, beta = 0.9):

        r_t = ceil( d (1 + eta_r)^{-q/(q-p)} (1 - pqi)^{qp/(q-p)} )
        c_t = floor( d * min( gamma (1 - r_t/d), beta ) )        (clamped at 0, as the code's ``clamp``)

    c_t is evaluated as floor(min(gamma (d - r_t), beta d)), the same quantity without the division: the code's
    float ``d * (1 - r_t/d)`` can land just below an integer and prune one weight fewer than the formula says.

    Returns ``(r_t, c_t)``: Python ints for scalar inputs, int64 tensors for tensor inputs (one per unit).

    Derived shortcut: with p = 0.5, q = 1, eta_r = 0 and gamma = 1 the exponent qp/(q-p) is 1, so
    r_t = ceil(d (1 - pqi)) and c_t = d - r_t = floor(d * pqi) (below the beta cap): SAP prunes a fraction PQI of
    the surviving weights. With p = 1, q = 2 it prunes d (1 - (1 - pqi)^2), about twice as much."""
    check_sap(p, q, eta_r, gamma, beta)
    scalar = not isinstance(d, torch.Tensor) and not isinstance(pqi, torch.Tensor)
    d_t = torch.as_tensor(d, dtype=torch.float64)
    i_t = torch.as_tensor(pqi, dtype=torch.float64).clamp(0.0, 1.0)
    bound = d_t * (1.0 + eta_r) ** (-q / (q - p)) * (1.0 - i_t) ** (q * p / (q - p))
    r = torch.ceil(bound)
    c = torch.floor(torch.minimum(gamma * (d_t - r), beta * d_t)).clamp_min(0.0)
    if scalar:
        return int(r), int(c)
    return r.long(), c.long()


def remove_smallest(params: TensorDict, masks: TensorDict, counts: dict, scope: str) -> dict[str, torch.Tensor]:
    """New keep-masks removing exactly ``counts`` of the smallest-|w| unpruned weights per scope unit.

    ``counts``: neuron -> name: (rows,) int64; layer -> name: int; global -> {"global": int}. Ties in |w| are
    broken by position (row-major within a tensor, tensors in order), so exactly the count goes. (The authors'
    code instead removes ``|w| < pivot`` with pivot the sorted value at index c_t, which removes fewer than c_t
    weights when magnitudes tie at the pivot.) Already-pruned entries and NaN magnitudes sort last."""
    inf = torch.tensor(float("inf"), dtype=torch.float64)
    new = {}
    if scope == "global":
        keys, shapes = [], []
        for name, w in params.items():
            a = w.detach().to("cpu", torch.float64).abs().reshape(-1)
            keep = masks[name].to("cpu", torch.bool).reshape(-1)
            keys.append(torch.where(keep & ~torch.isnan(a), a, inf))
            shapes.append(w.shape)
        flat = torch.cat(keys) if keys else torch.zeros(0, dtype=torch.float64)
        c = int(counts["global"])
        remove = torch.zeros(flat.numel(), dtype=torch.bool)
        if c > 0:
            remove[torch.sort(flat, stable=True).indices[:c]] = True
        start = 0
        for name, shape in zip(params, shapes, strict=True):
            n = int(np.prod(shape))
            new[name] = masks[name].to("cpu", torch.bool) & ~remove[start:start + n].reshape(shape)
            start += n
        return new
    for name, w in params.items():
        keep = masks[name].to("cpu", torch.bool)
        rows = w.shape[0] if scope == "neuron" else 1
        a = w.detach().to("cpu", torch.float64).abs().reshape(rows, -1)
        k = keep.reshape(rows, -1)
        key = torch.where(k & ~torch.isnan(a), a, inf)
        c = torch.as_tensor(counts[name], dtype=torch.long).reshape(-1)
        if c.numel() == 0 or int(c.max()) <= 0:
            new[name] = keep.clone()
            continue
        order = torch.sort(key, dim=1, stable=True).indices
        rank = torch.empty_like(order)
        rank.scatter_(1, order, torch.arange(key.shape[1]).expand_as(order).contiguous())
        new[name] = (k & ~(rank < c[:, None])).reshape(keep.shape)
    return new


def sap_step(params, masks: TensorDict | None = None, scope: str = "layer", p: float = 0.5, q: float = 1.0,
             eta_r: float = 0.0, gamma: float = 1.0, beta: float = 0.9, return_details: bool = False):
    """One SAP pruning step (paper Algorithm 1 steps 3-5; defaults scope ``layer``, p = 0.5, q = 1, eta_r = 0,
    gamma = 1, beta = 0.9): the PQI of every scope unit on its unpruned weights, c_t from ``sap_prune_count``,
    then exactly c_t of the unit's smallest-|w| unpruned weights removed (neuron: per output row; layer: per
    tensor; global: all tensors together). Ties are broken by position so exactly c_t go; the authors' code
    prunes ``|w| < pivot`` and can remove fewer when magnitudes tie.

    ``params``: a ``Workbench``, module, or name -> tensor (ndim > 1 only). ``masks``: name -> bool, True = kept
    (missing: all kept). Returns the new masks (CPU bool), and with ``return_details`` also a dict with the
    units' ``d``, ``pqi``, ``r`` and ``c`` (same structure as ``pqi_by_scope``)."""
    check_sap(p, q, eta_r, gamma, beta)
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    params = scope_params(params)
    masks = {k: (masks or {}).get(k, torch.ones(v.shape, dtype=torch.bool)) for k, v in params.items()}
    scopes = pqi_all_scopes(params, masks, p, q)
    pqi, d = scopes[scope], scopes["d"][scope]
    r, c = {}, {}
    for unit in pqi:
        r[unit], c[unit] = sap_prune_count(d[unit], pqi[unit], p, q, eta_r, gamma, beta)
    new = remove_smallest(params, masks, c, scope)
    if return_details:
        return new, {"d": d, "pqi": pqi, "r": r, "c": c}
    return new


def magnitude_step(params, masks: TensorDict | None = None, scope: str = "layer", fraction: float = 0.2,
                   return_details: bool = False):
    """The paper's baselines' pruning step (code ``prune_mode`` ``os-0.2`` / ``lt-0.2``; default 20%): in every
    scope unit with d unpruned weights remove the c = ceil(fraction * (d - 1)) smallest-|w| ones. That is the
    number of distinct magnitudes strictly below the linearly interpolated ``fraction`` quantile, which is what
    the code's ``|w| < quantile(|w|, fraction)`` removes (ties broken by position here, as in ``sap_step``)."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction:g}")
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    params = scope_params(params)
    masks = {k: (masks or {}).get(k, torch.ones(v.shape, dtype=torch.bool)) for k, v in params.items()}
    d = unit_counts(params, masks, scope)
    c = {unit: torch.ceil(fraction * (dn - 1)).clamp_min(0).long() for unit, dn in d.items()}
    new = remove_smallest(params, masks, c, scope)
    if return_details:
        return new, {"d": d, "c": c}
    return new


def unit_counts(params: TensorDict, masks: TensorDict, scope: str) -> dict[str, torch.Tensor]:
    """Unpruned weights per scope unit, float64 (neuron: (rows,) per tensor; layer: 0-d; global: 0-d)."""
    if scope == "neuron":
        return {k: masks[k].reshape(v.shape[0], -1).sum(1, dtype=torch.float64) for k, v in params.items()}
    layer = {k: masks[k].sum(dtype=torch.float64) for k in params}
    if scope == "layer":
        return layer
    return {"global": torch.stack(list(layer.values())).sum() if layer else torch.zeros((), dtype=torch.float64)}


def unit_positions(shapes: Mapping[str, torch.Size], scope: str) -> list[torch.Tensor]:
    """Flat positions (in the concatenation of all tensors) of every scope unit, as (units, unit size) blocks:
    one block per tensor for ``neuron`` (one row per output row) and ``layer`` (one row), one for ``global``."""
    blocks, start = [], 0
    for shape in shapes.values():
        n = int(np.prod(shape))
        rows = shape[0] if scope == "neuron" else 1
        blocks.append(torch.arange(start, start + n).reshape(rows, -1))
        start += n
    return [torch.cat([b.reshape(-1) for b in blocks]).reshape(1, -1)] if scope == "global" else blocks


class SortedUnits:
    """Scope units of equal size, each sorted once by magnitude (stable), with suffix power sums of the
    magnitudes rescaled by the unit's largest, so that the PQI of any surviving suffix is two lookups."""

    def __init__(self, magnitude: torch.Tensor, positions: torch.Tensor, p: float, q: float):
        values = magnitude[positions]
        order = torch.sort(values, dim=1, stable=True).indices
        self.positions = positions.gather(1, order)
        values = values.gather(1, order)
        top = values[:, -1:] if values.shape[1] else values.new_ones((values.shape[0], 1))
        scaled = values / torch.where(top > 0, top, torch.ones_like(top))
        zero = torch.zeros((values.shape[0], 1), dtype=torch.float64)
        self.sp = torch.cat([abs_power(scaled, p).flip(1).cumsum(1).flip(1), zero], 1)
        self.sq = torch.cat([abs_power(scaled, q).flip(1).cumsum(1).flip(1), zero], 1)
        self.size = values.shape[1]
        self.pruned = torch.zeros(values.shape[0], dtype=torch.long)  # each unit's removed prefix length

    def prune_round(self, p: float, q: float, eta_r: float, gamma: float, beta: float) -> torch.Tensor:
        """Apply the SAP rule once to every unit; returns the flat positions removed."""
        d = (self.size - self.pruned).to(torch.float64)
        k = self.pruned[:, None]
        pqi = index_from_sums(self.sp.gather(1, k)[:, 0], self.sq.gather(1, k)[:, 0], d, p, q)
        _, c = sap_prune_count(d, pqi, p, q, eta_r, gamma, beta)
        if not bool((c > 0).any()):
            return torch.zeros(0, dtype=torch.long)
        end = self.pruned + c
        lo, hi = int(self.pruned.min()), int(end.max())  # only the columns some unit removes from
        j = torch.arange(lo, hi)[None, :]
        removed = self.positions[:, lo:hi][(j >= k) & (j < end[:, None])]
        self.pruned = end
        return removed

    def survivors(self) -> torch.Tensor:
        j = torch.arange(self.size)[None, :]
        return self.positions[j >= self.pruned[:, None]]


__all__ = ["SortedUnits", "check_sap", "magnitude_step", "remove_smallest", "sap_prune_count", "sap_step",
           "unit_counts", "unit_positions"]
