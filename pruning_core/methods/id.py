"""Pruning with interpolative decompositions (Chee, Renz, Damle, De Sa, "Pruning Neural Networks with
Interpolative Decompositions", arXiv 2108.00065, 2021; official code ``jerry-chee/ModelPreserveCompressionNN``).

**One unit.** For a two-layer unit (``structure.units``: one producer, one consumer, the hidden channels between them)
let Z ∈ R^{rows x C} be the consumer's input on the calibration batch, one column per hidden channel and one row
per (sample, position) (the code's ``transformZconv``). A column-pivoted QR

    Z Π = Q [[R11, R12], [0, R22]],    R11 ∈ R^{k x k}

gives the kept channels I = Π[:k] and the interpolation matrix T = [I_k, R11^{-1} R12] Π^T ∈ R^{k x C}, with

    Z ≈ Z[:, I] T,        ||Z - Z[:, I] T||_F = ||R22||_F        (the ID error).

The producer keeps its output channels I (BatchNorm entries with them) and the consumer's weight W (out x C in
PyTorch's convention, per kernel tap for a conv, T ⊗ I_P for a channel-major flatten) becomes W T^T, so the next
pre-activation Z W^T ≈ Z_I (W T^T)^T: exactly equal when k is the rank of Z (``structure.fold_into_consumer``).

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

The decomposition itself (TSQR, the pivoted QR in float64, the rank-deficient case) is
``algorithms.pivoted_qr``. Defaults: ``step=0.05``, ``rank_tol=1e-6``. The paper's claims are ``checks.id``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..algorithms.pivoted_qr import RANK_TOL, ColumnPivotedQR, RowReducer
from ..plan import Plan, PlanError
from ..structure import GroupError
from ..structure.units import Unit, channel_matrix, fold_into_consumer, kept_count, stream_inputs
from ..workbench import Workbench
from .base import Method, MethodSpec
from .units import UNIT_NEEDS, UNITS_RATIO

PAPER = ("Chee, Renz, Damle, De Sa: Pruning neural networks with interpolative decompositions, arXiv 2108.00065 "
         "(2021)")


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


class InterpolativePruning(Method):
    granularity = "structured"
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
            kept = {u.group: kept_count(u.size, ratio) for u in self.units}
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


SPECS = [
    MethodSpec("id", "Interpolative decomposition (structured, Chee et al. 2021)", "structured",
               InterpolativePruning, {"mode": "fraction", "correction": True},
               "Keeps the hidden channels a pivoted QR of their calibration activations selects and folds the "
               "interpolation matrix into the next layer; every unit removes the same fraction.",
               paper=PAPER, needs=UNIT_NEEDS, exempt={"kept-fraction": UNITS_RATIO},
               short_label="ID with correction T"),
    MethodSpec("id-nocorrection", "ID channels without the correction (structured)", "structured",
               InterpolativePruning, {"mode": "fraction", "correction": False},
               "The same channel selection as ID, without folding the interpolation matrix.",
               paper=PAPER, needs=UNIT_NEEDS, exempt={"kept-fraction": UNITS_RATIO},
               short_label="Same channels, no correction"),
    MethodSpec("id-tolerance", "ID, shared error tolerance (structured)", "structured", InterpolativePruning,
               {"mode": "tolerance"}, "Interpolative decomposition; every unit keeps the smallest k with "
               "|R_k+1,k+1 / R_11| <= one tolerance shared by all units, the tolerance that removes ratio x the "
               "units' channels (so layers with faster-decaying activations lose more).",
               paper=PAPER, needs=UNIT_NEEDS,
               exempt={"kept-fraction": "one tolerance for all units: each unit keeps what the tolerance allows, "
                                         "only the total follows the ratio"}),
    MethodSpec("id-flops", "ID, greedy FLOPs allocation (structured)", "structured", InterpolativePruning,
               {"mode": "flops"}, "Interpolative decomposition; cuts the unit whose ID error grows least per FLOP "
               "saved until ratio x dense FLOPs are removed (ratio = FLOPs removed).",
               paper=PAPER, needs=UNIT_NEEDS,
               exempt={"kept-fraction": "ratio is the fraction of FLOPs removed, allocated greedily across units"}),
]
