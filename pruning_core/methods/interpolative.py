"""Pruning with interpolative decompositions (Chee, Renz, Damle, De Sa, "Pruning Neural Networks with
Interpolative Decompositions", arXiv 2108.00065, 2021; official code ``jerry-chee/ModelPreserveCompressionNN``).

**One unit.** For a two-layer unit (``units.py``: one producer, one consumer, the hidden channels between them)
let Z ∈ R^{rows x C} be the consumer's input on the calibration batch, one column per hidden channel and one row
per (sample, position) (the code's ``transformZconv``). A column-pivoted QR

    Z Π = Q [[R11, R12], [0, R22]],    R11 ∈ R^{k x k}

gives the kept channels I = Π[:k] and the interpolation matrix T = [I_k, R11^{-1} R12] Π^T ∈ R^{k x C}, with

    Z ≈ Z[:, I] T,        ||Z - Z[:, I] T||_F = ||R22||_F        (the ID error).

The producer keeps its output channels I (BatchNorm entries with them) and the consumer's weight W (out x C in
PyTorch's convention, per kernel tap for a conv, T ⊗ I_P for a channel-major flatten) becomes W T^T, so the next
pre-activation Z W^T ≈ Z_I (W T^T)^T: exactly equal when k is the rank of Z (``units.fold_into_consumer``).

**Whole network.** Units are processed first to last. The number of kept channels per unit comes from one of
three rules (``mode``), always computed from the QR of the dense network's activations:

* ``"fraction"`` (the code's ``mode='frac'``): every unit removes ``round(ratio * C)`` channels, keeping >= 1.
* ``"tolerance"`` (paper §3, |R_{k+1,k+1}| / |R_11| <= τ): ``plan_for_tolerance(τ)`` keeps per unit the smallest
  k with |R_{k+1,k+1}| / |R_11| <= τ. ``plan(ratio)`` chooses the one tolerance τ shared by all units that removes
  ``round(ratio * total unit channels)`` channels (a global threshold on |R_jj / R_11|, trailing pivots first),
  so a ratio sweep is a tolerance sweep parametrised by what it removes; the τ used is in ``plan.details``.
* ``"flops"`` (the 2022 code's ``iditer``): greedy allocation. Starting dense, repeatedly cut the unit whose
  relative ID error increase per FLOP saved, [e(k - s) - e(k)] / ΔFLOPs with e(k) = ||R22(k)||_F / ||Z||_F, is
  smallest, by s = max(1, round(step * current width)) channels, until the FLOPs removed reach ``ratio`` of the
  dense model's FLOPs (the last cut is trimmed to the fewest channels that reach it). FLOPs are the workbench's
  per-layer counts (``torch.utils.flop_counter``), each layer scaled by its kept output and input fractions,
  exactly how ``Workbench.evaluate_plan`` reports them. The whole greedy path is computed once in ``prepare``;
  ``plan(ratio)`` looks its ratio up on it. Differences from the code: the code scores |R_kk / R_11| at the new
  width against a 0.1 x parameters proxy; we score the error increase against the exact FLOPs saved, which
  prefers cutting dead channels (no error increase) and layers that cost many FLOPs per channel.

``activations="original"`` (the code's default ``Zorig``) computes every Z once, in ``prepare``, on the dense
network; ``"pruned"`` recomputes each unit's Z at plan time on the network whose earlier units are already pruned
and corrected (one calibration forward pass per unit per ratio; the kept counts still come from the dense QR).
``correction=False`` keeps the same channels without folding T (the paper's "without T" comparison).

Numerics. The QR runs in float64. Z is reduced by TSQR (block rows QR'd as they stream out of the calibration
forward pass, ``torch.linalg.qr(mode="r")``, merged into one C x C factor with the same column norms and R up to
row signs), then ``scipy.linalg.qr(pivoting=True)`` (LAPACK geqp3) runs on that small factor; torch has no pivoted
QR. Dead ReLUs make Z rank-deficient: when R11 has a pivot below ``rank_tol * |R_11|`` the block R11^{-1} R12 is the
minimum-norm least-squares solution truncated at that relative tolerance (as the code's ``pinv``), so T stays
finite and channels with no signal get zero coefficients. Defaults: ``step=0.05``, ``rank_tol=1e-6`` (float32
activations fix a channel only to about 1e-7 relative).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.linalg
import torch

from ..checks import CheckReport, CheckResult, Progress, ShouldStop
from ..structure import GroupError
from ..plan import Plan, PlanError
from ..structure.units import Unit, capture_inputs, channel_matrix, fold_into_consumer, stream_inputs
from ..workbench import Workbench
from .base import Method, MethodSpec
from .magnitude import group_channel_norms

RANK_TOL = 1e-6


# ----- the decomposition -----------------------------------------------------------------------------------------
class RowReducer:
    """Streaming TSQR: the R factor of a tall matrix fed in blocks of rows, without ever holding the matrix.

    ``add(block)`` QRs [R; block] (float64) and keeps its R (at most C x C), so ``r`` always satisfies
    R^T R = Z^T Z for the rows seen so far: the same column norms and Gram matrix as Z, hence the same pivots and
    the same R (up to row signs) in exact arithmetic."""

    def __init__(self, columns: int):
        self.columns = columns
        self.rows = 0
        self._r: torch.Tensor | None = None

    def add(self, block: torch.Tensor) -> None:
        block = block.detach().to(torch.float64).reshape(-1, self.columns)
        if block.shape[0] == 0:
            return
        self.rows += block.shape[0]
        stacked = block if self._r is None else torch.cat([self._r, block])
        self._r = torch.linalg.qr(stacked, mode="r").R

    @property
    def r(self) -> torch.Tensor:
        """(C, C) float64: the reduced factor, zero-padded when fewer than C rows were seen."""
        out = torch.zeros(self.columns, self.columns, dtype=torch.float64)
        if self._r is not None:
            r = self._r.cpu()
            out[:r.shape[0]] = r
        return out


@dataclass
class InterpolativeDecomposition:
    """Z ≈ Z[:, selected] @ interpolation, from a column-pivoted QR of Z (rows x C)."""

    selected: torch.Tensor  # (k,) long: the kept columns Π[:k], in pivot order (the rows of T)
    interpolation: torch.Tensor  # (k, C) float64: T = [I_k, R11^+ R12] Π^T; T[:, selected] = I_k
    diag: torch.Tensor  # (C,) float64: |R_jj| in pivot order (non-increasing)
    error: float  # ||Z - Z[:, selected] T||_F = ||R22||_F
    relative_error: float  # error / ||Z||_F (0 for Z = 0)
    rank: int  # numerical rank: pivots with |R_jj| > rank_tol * |R_11|


@dataclass
class ColumnPivotedQR:
    """Z Π = Q R for one Z (rows x C), kept so that an ID for any k costs one small triangular solve.

    ``r``: (C, C) float64 upper-triangular; ``pivots``: (C,) int64, column j of R is channel ``pivots[j]``;
    ``errors[k]`` = ||R22||_F when k columns are kept (k = 0..C), from one reverse cumulative sum of R**2."""

    r: np.ndarray
    pivots: np.ndarray
    rows: int
    rank_tol: float = RANK_TOL
    errors: np.ndarray = field(init=False)
    norm: float = field(init=False)

    def __post_init__(self) -> None:
        sq = self.r ** 2
        tail = sq[::-1, ::-1].cumsum(0).cumsum(1)[::-1, ::-1]  # tail[i, j] = sum of sq[i:, j:]
        c = self.r.shape[1]
        self.errors = np.sqrt(np.append(np.diag(tail), 0.0)) if c else np.zeros(1)
        self.norm = float(self.errors[0])

    @classmethod
    def of_matrix(cls, z: torch.Tensor | np.ndarray, rank_tol: float = RANK_TOL) -> "ColumnPivotedQR":
        """From Z itself (rows x C): the TSQR reduction (one float64 QR, torch) then a pivoted QR of the C x C R."""
        z = torch.as_tensor(z)
        if z.ndim != 2:
            raise ValueError(f"Z must be a matrix (rows x channels), got shape {tuple(z.shape)}")
        reducer = RowReducer(z.shape[1])
        reducer.add(z)
        return cls.of_reduced(reducer.r, reducer.rows, rank_tol)

    @classmethod
    def of_reduced(cls, r: torch.Tensor, rows: int, rank_tol: float = RANK_TOL) -> "ColumnPivotedQR":
        """From any R with R^T R = Z^T Z (a TSQR factor, or Z itself)."""
        a = r.detach().cpu().to(torch.float64).numpy()
        if not np.all(np.isfinite(a)):
            raise ValueError("the activations contain NaN or inf; an interpolative decomposition needs finite values")
        rr, piv = scipy.linalg.qr(a, mode="r", pivoting=True, check_finite=False)
        c = a.shape[1]
        square = np.zeros((c, c))
        square[:min(rr.shape[0], c)] = rr[:c]
        return cls(square, piv.astype(np.int64), rows, rank_tol)

    @property
    def size(self) -> int:
        return self.r.shape[1]

    @property
    def diag(self) -> np.ndarray:
        return np.abs(np.diag(self.r))

    @property
    def diag_ratio(self) -> np.ndarray:
        """|R_jj / R_11| for j = 1..C (all zero for Z = 0)."""
        d = self.diag
        return d / d[0] if d[0] > 0 else np.zeros_like(d)

    @property
    def rank(self) -> int:
        d = self.diag
        return int(np.count_nonzero(d > self.rank_tol * d[0])) if d[0] > 0 else 0

    def relative_error(self, k: int) -> float:
        return float(self.errors[k] / self.norm) if self.norm > 0 else 0.0

    def interpolation(self, k: int) -> np.ndarray:
        """T (k x C) float64 with T[:, pivots[:k]] = I_k and T[:, pivots[k:]] = R11^{-1} R12."""
        c = self.size
        if not 1 <= k <= c:
            raise ValueError(f"k must be between 1 and {c} (the number of columns), got {k}")
        r11, r12 = self.r[:k, :k], self.r[:k, k:]
        d = np.abs(np.diag(r11))
        if k == c:
            coeff = np.zeros((k, 0))
        elif d[0] > 0 and d.min() > self.rank_tol * d[0]:
            coeff = scipy.linalg.solve_triangular(r11, r12, check_finite=False)
        else:  # rank-deficient R11 (dead or duplicated channels): minimum-norm solution at the same tolerance
            coeff = scipy.linalg.lstsq(r11, r12, cond=self.rank_tol, check_finite=False)[0]
        t = np.zeros((k, c))
        t[np.arange(k), self.pivots[:k]] = 1.0
        t[:, self.pivots[k:]] = coeff
        return t

    def decomposition(self, k: int) -> InterpolativeDecomposition:
        return InterpolativeDecomposition(torch.from_numpy(self.pivots[:k].copy()),
                                          torch.from_numpy(self.interpolation(k)), torch.from_numpy(self.diag),
                                          float(self.errors[k]), self.relative_error(k), self.rank)

    def singular_values(self) -> np.ndarray:
        """σ_1 >= ... >= σ_C of Z (those of R)."""
        return scipy.linalg.svdvals(self.r, check_finite=False)


def interpolative_decomposition(z: torch.Tensor | np.ndarray, k: int, rank_tol: float = RANK_TOL
                                ) -> InterpolativeDecomposition:
    """The rank-k column interpolative decomposition Z ≈ Z[:, I] T of Z (rows x C), Chee et al. 2021 eq. (ID):
    column-pivoted QR in float64 after a TSQR reduction; see ``ColumnPivotedQR``."""
    return ColumnPivotedQR.of_matrix(z, rank_tol).decomposition(k)


def unit_qrs(model: torch.nn.Module, units: list[Unit], x: torch.Tensor, batch_size: int = 1024,
             rank_tol: float = RANK_TOL) -> dict[str, ColumnPivotedQR]:
    """Group name -> pivoted QR of each unit's Z on ``model`` (eval mode) over ``x``: forward pre-hooks on the
    consumers feed each batch's channel matrix into a streaming TSQR, so no Z is ever stored whole."""
    reducers = {u.group: RowReducer(u.size) for u in units}
    by_consumer = {u.consumer: u for u in units}
    stream_inputs(model, list(by_consumer), x,
                  lambda name, t: reducers[by_consumer[name].group].add(channel_matrix(by_consumer[name], t)),
                  batch_size)
    return {g: ColumnPivotedQR.of_reduced(red.r, red.rows, rank_tol) for g, red in reducers.items()}


# ----- the method ------------------------------------------------------------------------------------------------
class InterpolativePruning(Method):
    granularity = "structured"
    needs = ("weights", "calibration activations")
    paper = "Chee, Renz, Damle, De Sa, Pruning Neural Networks with Interpolative Decompositions, arXiv 2108.00065"
    modes = ("fraction", "tolerance", "flops")
    activation_sources = ("original", "pruned")

    def __init__(self, mode: str = "fraction", activations: str = "original", correction: bool = True,
                 step: float = 0.05, rank_tol: float = RANK_TOL, seed: int = 0):
        super().__init__(seed)
        if mode not in self.modes:
            raise ValueError(f"mode must be one of {self.modes}, got {mode!r}")
        if activations not in self.activation_sources:
            raise ValueError(f"activations must be one of {self.activation_sources}, got {activations!r}")
        if not 0.0 < step < 1.0:
            raise ValueError(f"step is the fraction of a unit's width cut per greedy step, in (0, 1); got {step!r}")
        if not 0.0 <= rank_tol < 1.0:
            raise ValueError(f"rank_tol is a relative tolerance in [0, 1), got {rank_tol!r}")
        self.mode, self.activations, self.correction = mode, activations, bool(correction)
        self.step, self.rank_tol = float(step), float(rank_tol)

    def config(self) -> dict:
        return {"mode": self.mode, "activations": self.activations, "correction": self.correction,
                "step": self.step, "rank_tol": self.rank_tol}

    # ----- ratio-independent work --------------------------------------------------------------------------------
    def _prepare(self, wb: Workbench) -> None:
        units = wb.units
        if not units:
            raise GroupError(f"{wb.name}: no two-layer unit to prune. Interpolative decompositions prune the hidden "
                             "channels between one producer layer and one consumer layer (an MLP's hidden neurons, a "
                             "CNN's conv channels, a residual block's inner channels); this model has none.")
        wb.restore()
        self.units = units
        self.qr = unit_qrs(wb.model, units, wb.calib_x, wb.batch_size, self.rank_tol)
        self._consumer_weights = {u.consumer: wb.model.get_submodule(u.consumer).weight.detach().clone()
                                  for u in units}
        self._flops_model(wb)
        if self.mode == "tolerance":
            self._tolerance_order()
        elif self.mode == "flops":
            self._greedy_path()

    def _flops_model(self, wb: Workbench) -> None:
        """Per-layer FLOPs as a function of the kept channels: a layer's count scales with its kept output
        fraction (as a unit's producer, or a BatchNorm on its channels) times its kept input fraction (as a
        consumer), the way ``Workbench.evaluate_plan`` scales it."""
        total, per_module = wb.dense_flops
        self.dense_flops = float(total)
        out_of = {}
        for u in self.units:
            out_of[u.producer] = u.group
            out_of.update({n: u.group for n in u.norms})
        in_of = {u.consumer: u.group for u in self.units}
        self._flops_terms = [(float(f), out_of.get(m), in_of.get(m)) for m, f in per_module.items()
                             if m in out_of or m in in_of]
        self._flops_fixed = float(total) - sum(f for f, _, _ in self._flops_terms)

    def flops(self, kept: dict[str, int]) -> float:
        """FLOPs of the model with ``kept[group]`` channels in each unit (missing groups: dense)."""
        sizes = {u.group: u.size for u in self.units}
        out = self._flops_fixed
        for f, g_out, g_in in self._flops_terms:
            frac = 1.0
            if g_out is not None:
                frac *= kept.get(g_out, sizes[g_out]) / sizes[g_out]
            if g_in is not None:
                frac *= kept.get(g_in, sizes[g_in]) / sizes[g_in]
            out += f * frac
        return out

    def _tolerance_order(self) -> None:
        """Every removable pivot (all but each unit's first) by its running-minimum |R_jj / R_11|, ascending:
        removing the first n of this order is the global tolerance that removes n channels."""
        values, groups = [], []
        for u in self.units:
            ratio = np.minimum.accumulate(self.qr[u.group].diag_ratio)[1:]
            values.append(ratio)
            groups += [u.group] * len(ratio)
        values = np.concatenate(values) if values else np.zeros(0)
        order = np.lexsort((-np.arange(len(values)), values))  # ties: the later pivot goes first
        self._tol_values = values[order]
        self._tol_groups = [groups[i] for i in order]

    def _greedy_path(self) -> None:
        """The whole IDiter path from dense to one channel per unit: (group, width before, width after, FLOPs
        removed after the step) per step, and the kept widths after each step."""
        kept = {u.group: u.size for u in self.units}
        current = self.flops(kept)
        self._path: list[tuple[str, int, int, float]] = []
        self._path_kept: list[dict[str, int]] = []
        while True:
            best = None
            for u in self.units:
                k = kept[u.group]
                if k <= 1:
                    continue
                new_k = k - min(max(1, round(self.step * k)), k - 1)
                saved = current - self.flops({**kept, u.group: new_k})
                if saved <= 0:  # a unit whose layers cost no counted FLOPs is never cut for FLOPs
                    continue
                qr = self.qr[u.group]
                increase = max(qr.relative_error(new_k) - qr.relative_error(k), 0.0)
                key = (increase / saved, -saved)
                if best is None or key < best[0]:
                    best = (key, u.group, k, new_k)
            if best is None:
                break
            _, g, k, new_k = best
            kept[g] = new_k
            current = self.flops(kept)
            self._path.append((g, k, new_k, self.dense_flops - current))
            self._path_kept.append(dict(kept))

    def greedy_path(self) -> pd.DataFrame:
        """The ``"flops"`` mode's greedy steps from dense to one channel per unit: which unit was cut, its width
        before and after, the relative ID error increase e(after) - e(before), and the fraction of the dense
        FLOPs removed after the step. ``plan(ratio)`` stops at the first step that reaches ``ratio``."""
        if self.mode != "flops" or self._wb is None:
            raise PlanError(f"{self.label}: the greedy path exists after prepare() in mode='flops'")
        rows = [{"step": i + 1, "group": g, "kept_before": before, "kept_after": after,
                 "error_increase": self.qr[g].relative_error(after) - self.qr[g].relative_error(before),
                 "flops_removed": removed / self.dense_flops}
                for i, (g, before, after, removed) in enumerate(self._path)]
        return pd.DataFrame(rows, columns=["step", "group", "kept_before", "kept_after", "error_increase",
                                           "flops_removed"])

    # ----- per ratio ---------------------------------------------------------------------------------------------
    def _plan(self, ratio: float) -> Plan:
        details: dict = {}
        if self.mode == "fraction":
            kept = {u.group: max(1, u.size - round(ratio * u.size)) for u in self.units}
        elif self.mode == "tolerance":
            kept, tol = self._kept_for_removed(round(ratio * sum(u.size for u in self.units)))
            details["tolerance"] = tol
        else:
            kept, reached = self._kept_for_flops(ratio * self.dense_flops)
            details["target_flops_removed"] = ratio
            details["target_reached"] = reached
        return self._build(kept, ratio, details)

    def _kept_for_removed(self, n: int) -> tuple[dict[str, int], float]:
        kept = {u.group: u.size for u in self.units}
        n = min(n, len(self._tol_values))
        for g in self._tol_groups[:n]:
            kept[g] -= 1
        tolerance = float(self._tol_values[n - 1]) if n > 0 else 0.0
        return kept, tolerance

    def _kept_for_flops(self, target: float) -> tuple[dict[str, int], bool]:
        kept = {u.group: u.size for u in self.units}
        if target <= 0:
            return kept, True
        removed = [step[3] for step in self._path]
        i = int(np.searchsorted(removed, target - 1e-9 * self.dense_flops))
        if i >= len(self._path):
            return (dict(self._path_kept[-1]) if self._path else kept), False
        g, before, after, _ = self._path[i]
        kept = dict(self._path_kept[i - 1]) if i > 0 else kept
        for new_k in range(before - 1, after - 1, -1):  # trim the last cut to the fewest channels that reach it
            kept[g] = new_k
            if self.dense_flops - self.flops(kept) >= target - 1e-9 * self.dense_flops:
                break
        return kept, True

    def plan_for_tolerance(self, tolerance: float) -> Plan:
        """Per unit, keep the smallest k with |R_{k+1,k+1}| / |R_11| <= ``tolerance`` (at least 1); paper §3.
        ``plan.ratio`` is the fraction of unit channels this removes."""
        if self._wb is None:
            raise PlanError(f"{self.label}: call prepare(workbench) before plan_for_tolerance(tolerance)")
        if not tolerance >= 0:
            raise PlanError(f"the tolerance is a ratio |R_kk / R_11| >= 0, got {tolerance!r}")
        kept = {}
        for u in self.units:
            running = np.minimum.accumulate(self.qr[u.group].diag_ratio)
            kept[u.group] = max(1, int(np.count_nonzero(running > tolerance)))
        total = sum(u.size for u in self.units)
        plan = self._build(kept, 1.0 - sum(kept.values()) / total, {"tolerance": float(tolerance)})
        plan.method = self.key
        plan.details.setdefault("config", self.config())
        return plan

    def plan_for_kept(self, kept: dict[str, int]) -> Plan:
        """A plan keeping exactly ``kept[group]`` channels of each unit (missing units stay dense)."""
        if self._wb is None:
            raise PlanError(f"{self.label}: call prepare(workbench) before plan_for_kept(kept)")
        sizes = {u.group: u.size for u in self.units}
        for g, k in kept.items():
            if g not in sizes:
                raise PlanError(f"{g!r} is not a unit of this model; units: {', '.join(sizes)}")
            if not 1 <= int(k) <= sizes[g]:
                raise PlanError(f"unit {g!r} has {sizes[g]} channels; keep between 1 and {sizes[g]}, got {k}")
        full = {**sizes, **{g: int(k) for g, k in kept.items()}}
        plan = self._build(full, 1.0 - sum(full.values()) / sum(sizes.values()), {})
        plan.method = self.key
        plan.details.setdefault("config", self.config())
        return plan

    def _build(self, kept: dict[str, int], ratio: float, details: dict) -> Plan:
        pruned: dict[str, torch.Tensor] = {}
        corrections: dict[str, torch.Tensor] = {}
        errors: dict[str, float] = {}
        wb = self._wb
        for u in self.units:
            k = kept[u.group]
            if k >= u.size:
                errors[u.group] = 0.0
                continue
            if self.activations == "pruned":
                partial = Plan(self.key, ratio, "structured", pruned_channels=dict(pruned),
                               corrections=dict(corrections))
                with wb.applied(partial) as model:
                    qr = unit_qrs(model, [u], wb.calib_x, wb.batch_size, self.rank_tol)[u.group]
            else:
                qr = self.qr[u.group]
            selected = torch.from_numpy(qr.pivots[:k].copy())
            pruned[u.group] = torch.sort(torch.from_numpy(qr.pivots[k:].copy())).values
            errors[u.group] = qr.relative_error(k)
            if self.correction:
                corrections[f"{u.consumer}.weight"] = fold_into_consumer(
                    self._consumer_weights[u.consumer], u, selected, torch.from_numpy(qr.interpolation(k)))
        # a corrected consumer that is also a later unit's producer: its removed output rows stay zero, so the
        # masked model holds exactly the weights the sliced one keeps
        for u in self.units:
            name = f"{u.producer}.weight"
            if name in corrections and u.group in pruned:
                corrections[name][pruned[u.group].to(corrections[name].device)] = 0
        details.update({"mode": self.mode, "activations": self.activations, "correction": self.correction,
                        "kept": {u.group: int(kept[u.group]) for u in self.units},
                        "channels": {u.group: u.size for u in self.units},
                        "relative_error": errors,
                        "flops_fraction": self.flops(kept) / self.dense_flops if self.dense_flops else 1.0})
        return Plan(self.key, ratio, "structured", pruned_channels=pruned, corrections=corrections, details=details)

    # ----- plot data ---------------------------------------------------------------------------------------------
    def rank_profile(self, singular_values: bool = True) -> pd.DataFrame:
        """Per unit and k = 1..C: |R_kk / R_11|, σ_k / σ_1 (optional) and the relative ID error
        ||R22|| / ||Z|| when keeping k channels, on the dense network's calibration activations
        (the decay curves of the code's ``accVsErr.ipynb``)."""
        if self._wb is None:
            raise PlanError(f"{self.label}: call prepare(workbench) before rank_profile()")
        frames = []
        for u in self.units:
            qr = self.qr[u.group]
            row = {"unit": u.title, "group": u.group, "k": np.arange(1, u.size + 1), "channels": u.size,
                   "diag_ratio": qr.diag_ratio, "relative_error": qr.errors[1:] / qr.norm if qr.norm else 0.0}
            if singular_values:
                s = qr.singular_values()
                row["sigma_ratio"] = s / s[0] if s[0] > 0 else np.zeros_like(s)
            frames.append(pd.DataFrame(row))
        return pd.concat(frames, ignore_index=True)


class UnitGroupMagnitude(Method):
    """The structured magnitude baseline on the same units and channel counts as ``InterpolativePruning``
    (fraction mode): each unit removes its ``round(ratio * C)`` channels with the smallest group L1 norm
    (DepGraph group importance, ``magnitude.group_channel_norms``: producer rows, consumer columns, BN scales);
    no correction. Other channel groups (residual streams) are left alone, so kept channels match ID exactly."""

    granularity = "structured"

    def _prepare(self, wb: Workbench) -> None:
        self.units = wb.units
        if not self.units:
            raise GroupError(f"{wb.name}: no two-layer unit to prune")
        scores = group_channel_norms(wb, 1)
        self._order = {u.group: torch.sort(scores[u.group].float().cpu(), stable=True).indices for u in self.units}

    def _plan(self, ratio: float) -> Plan:
        pruned = {}
        for u in self.units:
            n = min(round(ratio * u.size), u.size - 1)
            if n > 0:
                pruned[u.group] = torch.sort(self._order[u.group][:n]).values
        return Plan(self.key, ratio, "structured", pruned_channels=pruned)


# ----- the paper check ---------------------------------------------------------------------------------------------
CHECK_RATIOS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
QUICK_RATIOS = (0.0, 0.25, 0.5, 0.75)
EXACT_TOL = 1e-4  # relative max error of a float32 layer output that still counts as "exact"


def paper_check(wb: Workbench, quick: bool = False, progress: Progress = None, should_stop: ShouldStop = None
                ) -> CheckReport:
    """Chee et al. 2021 on the current model, without fine-tuning, every unit at the same kept fraction:

    (a) ID with the correction T keeps accuracy better than the same selection without T;
    (b) ID beats structured magnitude pruning (group L1 on the same units, the same channel counts);
    (c) the fold is exact when k equals the rank of Z (max error of the consumer's output on the calibration
        batch, on the units whose Z is rank-deficient; when every unit has full rank, k = rank keeps everything,
        so the identity behind it, ||Z - Z_I T||_F = ||R22||_F, is checked on each unit at k = C/2 instead).

    Verdicts (a) and (b): the mean accuracy gap over the ratio grid (ratios > 0) is positive. ``quick`` uses
    three ratios instead of nine. Frames: ``accuracy`` (method, ratio, kept_channels, kept_fraction, accuracy,
    flops_fraction) and ``rank_decay`` (unit, k, diag_ratio, sigma_ratio)."""
    start = time.perf_counter()
    report = CheckReport("id")
    ratios = QUICK_RATIOS if quick else CHECK_RATIOS
    say = progress or (lambda f, text: None)
    stop = should_stop or (lambda: False)
    say(0.0, "pivoted QR of every unit's activations")
    idm = InterpolativePruning().prepare(wb)
    mag = UnitGroupMagnitude().prepare(wb)
    total = sum(u.size for u in idm.units)
    rows = []
    for i, r in enumerate(ratios):
        if stop():
            report.complete = False
            break
        with_t = idm.plan(r)
        plans = {"id": with_t,
                 "id-nocorrection": Plan("id-nocorrection", r, "structured", pruned_channels=with_t.pruned_channels),
                 "unit-group-l1": mag.plan(r)}
        kept_counts = {m: total - sum(len(v) for v in p.pruned_channels.values()) for m, p in plans.items()}
        if len(set(kept_counts.values())) != 1:
            raise RuntimeError(f"the compared plans keep different channel counts: {kept_counts}")
        for m, p in plans.items():
            ev = wb.evaluate_plan(p, structured="masked")
            rows.append({"method": m, "ratio": r, "kept_channels": kept_counts[m],
                         "kept_fraction": kept_counts[m] / total, "accuracy": ev.accuracy,
                         "flops_fraction": ev.flops_fraction})
        say((i + 1) / (len(ratios) + 1), f"ratio {r:g}: evaluated ID, ID without T, magnitude")
    acc = pd.DataFrame(rows, columns=["method", "ratio", "kept_channels", "kept_fraction", "accuracy",
                                      "flops_fraction"])
    report.frames["accuracy"] = acc
    report.frames["rank_decay"] = idm.rank_profile()[["unit", "k", "diag_ratio", "sigma_ratio"]]
    src = "Chee et al. 2021 (arXiv 2108.00065), pruning without fine-tuning; digest §8 (98.1% with T vs 90.6% without)"
    report.results.append(_gap_result(acc, "id-nocorrection", "ID with the correction T keeps accuracy better than "
                                      "the same channel selection without T (no fine-tuning)", "without T", src))
    report.results.append(_gap_result(acc, "unit-group-l1", "ID pruning beats structured magnitude pruning "
                                      "without fine-tuning, at the same kept channels", "group L1",
                                      "Chee et al. 2021 (arXiv 2108.00065), comparison with magnitude pruning"))
    if stop():
        report.complete = False
        report.results.append(CheckResult("id", _EXACT_CLAIM, "not run (stopped)", None, _EXACT_SOURCE))
    else:
        say(len(ratios) / (len(ratios) + 1), "fold exactness at k = rank")
        report.results.append(_exactness_result(wb, idm))
    report.notes.append(f"{total} unit channels in {len(idm.units)} units ({', '.join(u.title for u in idm.units)}); "
                        f"Z from {len(wb.calib_x)} calibration samples; accuracy on {len(wb.eval_x)} evaluation "
                        "samples, no fine-tuning")
    report.seconds = time.perf_counter() - start
    say(1.0, "done")
    return report


_EXACT_CLAIM = "The fold Z W^T = Z_I (W T^T)^T is exact when k equals the rank of Z"
_EXACT_SOURCE = "Chee et al. 2021 (arXiv 2108.00065) §3: ||Z - Z_I T|| = ||R22||, zero at k = rank"


def _gap_result(acc: pd.DataFrame, other: str, claim: str, other_label: str, source: str) -> CheckResult:
    table = acc[acc.ratio > 0].pivot(index="ratio", columns="method", values="accuracy")
    if table.empty or other not in table:
        return CheckResult("id", claim, "not run (stopped)", None, source)
    gap = (table["id"] - table[other]) * 100
    wins = int((gap > 0).sum())
    half = acc[(acc.ratio == 0.5)].set_index("method")["accuracy"] if 0.5 in table.index else None
    at_half = (f"; at 50% kept {half['id']:.1%} vs {half[other]:.1%}" if half is not None else "")
    figure = (f"ID - {other_label}: mean {gap.mean():+.1f} points over {len(gap)} kept fractions "
              f"(ID ahead at {wins}){at_half}")
    return CheckResult("id", claim, figure, bool(gap.mean() > 0), source)


def _exactness_result(wb: Workbench, idm: InterpolativePruning) -> CheckResult:
    """Prune one rank-deficient unit at a time to k = rank (and k = rank - 1 for contrast); compare the consumer's
    output with the dense one on the calibration batch."""
    worst, contrast, tested = 0.0, [], []
    for u in idm.units:
        qr = idm.qr[u.group]
        if qr.rank >= u.size or qr.rank == 0:
            continue
        dead = int(np.count_nonzero(np.linalg.norm(qr.r, axis=0) == 0))  # all-zero channels (dead ReLUs)
        tested.append(f"{u.group}: rank {qr.rank} of {u.size}, {dead} all-zero")
        dense = _consumer_output(wb, u, None)
        scale = float(dense.abs().max()) or 1.0
        err = float((_consumer_output(wb, u, idm.plan_for_kept({u.group: qr.rank})) - dense).abs().max()) / scale
        worst = max(worst, err)
        if qr.rank > 1:
            below = idm.plan_for_kept({u.group: qr.rank - 1})
            contrast.append(float((_consumer_output(wb, u, below) - dense).abs().max()) / scale)
    if not tested:
        return _error_identity_result(wb, idm)
    figure = (f"max |error| of the next layer's output at k = rank: {worst:.1e} of its max |value| "
              f"({'; '.join(tested)})")
    if contrast:
        figure += f"; at k = rank - 1: {max(contrast):.1e}"
    return CheckResult("id", _EXACT_CLAIM, figure, worst <= EXACT_TOL, _EXACT_SOURCE)


def _error_identity_result(wb: Workbench, idm: InterpolativePruning) -> CheckResult:
    """Every unit's Z has full rank, so k = rank keeps everything: check the identity behind the claim instead,
    ||Z - Z_I T||_F = ||R22||_F, on each unit's own activations at k = half its width."""
    captured = capture_inputs(wb.model, [u.consumer for u in idm.units], wb.calib_x, wb.batch_size)
    worst, parts = 0.0, []
    for u in idm.units:
        z = channel_matrix(u, captured[u.consumer]).double().cpu()
        k = max(1, u.size // 2)
        dec = interpolative_decomposition(z, k)
        measured = float(torch.linalg.norm(z - z[:, torch.as_tensor(dec.selected)] @ torch.as_tensor(dec.interpolation)))
        gap = abs(measured - float(dec.error)) / max(float(dec.error), 1e-300)
        worst = max(worst, gap)
        parts.append(f"{u.group} k={k}: {measured:.3g} vs {float(dec.error):.3g}")
    figure = ("every unit's Z has full rank (k = rank keeps all); the identity ||Z - Z_I T|| = ||R22|| holds to "
              f"{worst:.1e} relative ({'; '.join(parts)})")
    return CheckResult("id", _EXACT_CLAIM, figure, worst <= 1e-6, _EXACT_SOURCE)


def _consumer_output(wb: Workbench, unit: Unit, plan: Plan | None) -> torch.Tensor:
    """The consumer layer's output on the calibration batch, under ``plan`` (None: dense)."""
    out = []
    hook = wb.model.get_submodule(unit.consumer).register_forward_hook(lambda m, i, o: out.append(o.detach()))
    try:
        if plan is None:
            wb.restore()
            model = wb.model
            with torch.no_grad():
                for i in range(0, len(wb.calib_x), wb.batch_size):
                    model(wb.calib_x[i:i + wb.batch_size])
        else:
            with wb.applied(plan) as model, torch.no_grad():
                for i in range(0, len(wb.calib_x), wb.batch_size):
                    model(wb.calib_x[i:i + wb.batch_size])
    finally:
        hook.remove()
    return torch.cat(out).double()


_UNITS = ("weights", "channel groups", "units", "calibration activations")
_UNITS_RATIO = ("ratio counts the units' hidden channels, which are a subset of the model's groups; the other "
                "groups keep every channel")
SPECS = [
    MethodSpec("id", "Interpolative decomposition (structured, Chee et al. 2021)", "structured",
               InterpolativePruning, {"mode": "fraction", "correction": True},
               "Keeps the hidden channels a pivoted QR of their calibration activations selects and folds the "
               "interpolation matrix into the next layer; every unit removes the same fraction.",
               paper="Chee, Renz, Damle, De Sa: Pruning neural networks with interpolative decompositions, arXiv 2108.00065 (2021)", needs=_UNITS, exempt={"kept-fraction": _UNITS_RATIO}),
    MethodSpec("id-nocorrection", "ID channels without the correction (structured)", "structured",
               InterpolativePruning, {"mode": "fraction", "correction": False},
               "The same channel selection as ID, without folding the interpolation matrix.",
               paper="Chee, Renz, Damle, De Sa: Pruning neural networks with interpolative decompositions, arXiv 2108.00065 (2021)", needs=_UNITS, exempt={"kept-fraction": _UNITS_RATIO}),
    MethodSpec("id-tolerance", "ID, shared error tolerance (structured)", "structured", InterpolativePruning,
               {"mode": "tolerance"}, "Interpolative decomposition; every unit keeps the smallest k with "
               "|R_k+1,k+1 / R_11| <= one tolerance shared by all units, the tolerance that removes ratio x the "
               "units' channels (so layers with faster-decaying activations lose more).",
               paper="Chee, Renz, Damle, De Sa: Pruning neural networks with interpolative decompositions, arXiv 2108.00065 (2021)", needs=_UNITS,
               exempt={"kept-fraction": "one tolerance for all units: each unit keeps what the tolerance allows, "
                                         "only the total follows the ratio"}),
    MethodSpec("id-flops", "ID, greedy FLOPs allocation (structured)", "structured", InterpolativePruning,
               {"mode": "flops"}, "Interpolative decomposition; cuts the unit whose ID error grows least per FLOP "
               "saved until ratio x dense FLOPs are removed (ratio = FLOPs removed).",
               paper="Chee, Renz, Damle, De Sa: Pruning neural networks with interpolative decompositions, arXiv 2108.00065 (2021)", needs=_UNITS,
               exempt={"kept-fraction": "ratio is the fraction of FLOPs removed, allocated greedily across units"}),
    MethodSpec("unit-group-l1", "Group L1 on hidden units (structured)", "structured", UnitGroupMagnitude, {},
               "Magnitude (group L1) restricted to the hidden channels ID and i-SpaSP prune; their baseline.",
               needs=("weights", "channel groups", "units"), exempt={"kept-fraction": _UNITS_RATIO}),
]
