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
* ``"flops"`` (the authors' ``IDiter``, ``prunevgg_IDiter_tsqr`` and ``getK`` in the 2022 code): greedy
  allocation with Z recomputed on the pruned model. Starting dense, every step scores each unit u at its current
  width n_u by the level of the first pivot a cut to k_u = int((1 - step) n_u) would drop, |R_{k,k} / R_{0,0}|
  (0-indexed, from the pivoted QR of u's Z on the *current* pruned and corrected network), per
  0.1 x (parameters of u's producer + parameters of its consumer), at their current widths; the unit with the
  smallest score is cut to k_u by its ID (T folded into the current consumer weight), and every Z from that
  unit on is recomputed before the next step. Steps continue until the FLOPs removed reach ``ratio`` of the
  dense model's FLOPs; the last cut is trimmed to the fewest channels that reach it (the code stops after
  the cut). FLOPs are the workbench's per-layer counts (``torch.utils.flop_counter``), each layer scaled by its
  kept output and input fractions, as ``Workbench.evaluate_plan`` reports them. The path is computed lazily and
  cached, so a sweep walks it once. ``greedy_path()`` lists its steps.

``activations="original"`` (the code's default ``Zorig``; modes fraction and tolerance) computes every Z once, in
``prepare``, on the dense network; ``"pruned"`` recomputes each unit's Z at plan time on the network whose
earlier units are already pruned and corrected (one calibration forward pass per unit per ratio; the kept counts
still come from the dense QR). Mode ``flops`` always recomputes Z, as the authors' IDiter does.
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
            self._start_path(wb)

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

    def _module_params(self, wb: Workbench) -> None:
        """Per unit, the weight and bias sizes of its producer and consumer and the units whose kept fractions
        scale them (the parameters the authors' proxy counts)."""
        modules = dict(wb.model.named_modules())
        out_of = {u.producer: u.group for u in self.units}
        in_of = {u.consumer: u.group for u in self.units}
        self._param_terms = {}
        for u in self.units:
            terms = []
            for name in (u.producer, u.consumer):
                mod = modules[name]
                w = getattr(mod, "weight", None)
                b = getattr(mod, "bias", None)
                terms.append((w.numel() if w is not None else 0, b.numel() if b is not None else 0,
                              out_of.get(name), in_of.get(name)))
            self._param_terms[u.group] = terms

    def unit_params(self, group: str, kept: dict[str, int]) -> float:
        """Parameters of ``group``'s producer and consumer with ``kept[g]`` channels in each unit."""
        sizes = {u.group: u.size for u in self.units}
        total = 0.0
        for w, b, g_out, g_in in self._param_terms[group]:
            out_frac = kept[g_out] / sizes[g_out] if g_out else 1.0
            in_frac = kept[g_in] / sizes[g_in] if g_in else 1.0
            total += w * out_frac * in_frac + b * out_frac
        return total

    def _start_path(self, wb: Workbench) -> None:
        self._module_params(wb)
        alive = {u.group: torch.arange(u.size) for u in self.units}
        self._states = [{"alive": alive, "weights": dict(self._consumer_weights), "removed": 0.0}]
        self._steps: list[dict] = []
        self._alive_qr: dict[str, ColumnPivotedQR] = {}
        self._stale = 0  # units from this index on need their Z recomputed
        self._exhausted = False

    def _alive_qrs(self, state: dict, units: list[Unit]) -> dict[str, ColumnPivotedQR]:
        """Pivoted QR of each unit's Z restricted to its alive channels, on the network ``state`` describes."""
        wb = self._wb
        reducers = {u.group: RowReducer(len(state["alive"][u.group])) for u in units}
        by_consumer = {u.consumer: u for u in units}

        def add(name: str, t: torch.Tensor) -> None:
            u = by_consumer[name]
            reducers[u.group].add(channel_matrix(u, t)[:, state["alive"][u.group].to(t.device)])

        with wb.applied(self._state_plan(state, 0.0)) as model:
            stream_inputs(model, list(by_consumer), wb.calib_x, add, wb.batch_size)
        return {g: ColumnPivotedQR.of_reduced(red.r, red.rows, self.rank_tol) for g, red in reducers.items()}

    def _state_plan(self, state: dict, ratio: float) -> Plan:
        pruned, corrections = {}, {}
        for u in self.units:
            alive = state["alive"][u.group]
            if len(alive) < u.size:
                keep = torch.zeros(u.size, dtype=torch.bool)
                keep[alive] = True
                pruned[u.group] = (~keep).nonzero().squeeze(1)
                if self.correction:
                    corrections[f"{u.consumer}.weight"] = state["weights"][u.consumer].clone()
        for u in self.units:  # a corrected consumer that is a later unit's producer: its removed rows stay zero
            name = f"{u.producer}.weight"
            if name in corrections and u.group in pruned:
                corrections[name][pruned[u.group].to(corrections[name].device)] = 0
        return Plan(self.key, ratio, "structured", pruned_channels=pruned, corrections=corrections)

    def _cut(self, state: dict, unit: Unit, qr: ColumnPivotedQR, k: int) -> dict:
        """``state`` with ``unit`` cut to its first k pivots (of its alive channels) and T folded in."""
        alive = state["alive"][unit.group]
        kept = alive[torch.from_numpy(qr.pivots[:k].copy())]
        t = torch.zeros(k, unit.size, dtype=torch.float64)
        t[:, alive] = torch.from_numpy(qr.interpolation(k))
        weights = dict(state["weights"])
        weights[unit.consumer] = fold_into_consumer(state["weights"][unit.consumer], unit, kept, t)
        new_alive = {**state["alive"], unit.group: torch.sort(kept).values}
        counts = {g: len(a) for g, a in new_alive.items()}
        return {"alive": new_alive, "weights": weights, "removed": self.dense_flops - self.flops(counts)}

    def _extend_path(self, target: float) -> None:
        """Walk the authors' greedy steps until the FLOPs removed reach ``target`` or no unit can be cut."""
        while self._states[-1]["removed"] < target - 1e-9 * self.dense_flops and not self._exhausted:
            state = self._states[-1]
            self._alive_qr.update(self._alive_qrs(state, self.units[self._stale:]))
            counts = {g: len(a) for g, a in state["alive"].items()}
            best = None
            for i, u in enumerate(self.units):
                n = counts[u.group]
                if n <= 1:
                    continue
                k = min(max(1, int((1.0 - self.step) * n)), n - 1)
                level = float(self._alive_qr[u.group].diag_ratio[k])
                proxy = 0.1 * self.unit_params(u.group, counts)
                score = level / proxy if proxy > 0 else float("inf")
                if best is None or score < best[0]:
                    best = (score, i, k, level, proxy)
            if best is None:
                self._exhausted = True
                break
            score, i, k, level, proxy = best
            u = self.units[i]
            new = self._cut(state, u, self._alive_qr[u.group], k)
            self._steps.append({"step": len(self._steps) + 1, "group": u.group, "kept_before": counts[u.group],
                                "kept_after": k, "level": level, "params_proxy": proxy, "score": score,
                                "flops_removed": new["removed"] / self.dense_flops, "qr": self._alive_qr[u.group]})
            self._states.append(new)
            self._stale = i

    def greedy_path(self) -> pd.DataFrame:
        """The ``"flops"`` mode's steps walked so far (``plan(ratio)`` walks as far as ``ratio`` needs): the unit
        cut, its width before and after, the level |R_kk / R_11| it dropped, the parameter proxy, the score and
        the fraction of the dense FLOPs removed after the step."""
        if self.mode != "flops" or self._wb is None:
            raise PlanError(f"{self.label}: the greedy path exists after prepare() in mode='flops'")
        columns = ["step", "group", "kept_before", "kept_after", "level", "params_proxy", "score", "flops_removed"]
        return pd.DataFrame([{k: s[k] for k in columns} for s in self._steps], columns=columns)

    def _flops_plan(self, ratio: float) -> Plan:
        target = ratio * self.dense_flops
        self._extend_path(target)
        removed = [st["removed"] for st in self._states]
        i = int(np.searchsorted(removed, target - 1e-9 * self.dense_flops))
        reached = i < len(self._states)
        if not reached:
            state = self._states[-1]
        elif i == 0:
            state = self._states[0]
        else:
            step, before = self._steps[i - 1], self._states[i - 1]
            unit = next(u for u in self.units if u.group == step["group"])
            for k in range(step["kept_before"] - 1, step["kept_after"] - 1, -1):  # trim the last cut
                counts = {g: len(a) for g, a in before["alive"].items()}
                if self.dense_flops - self.flops({**counts, unit.group: k}) >= target - 1e-9 * self.dense_flops:
                    break
            state = self._cut(before, unit, step["qr"], k)
        plan = self._state_plan(state, ratio)
        kept = {g: len(a) for g, a in state["alive"].items()}
        plan.details.update({"mode": self.mode, "correction": self.correction, "target_flops_removed": ratio,
                             "target_reached": reached, "steps": max(i, 0) if reached else len(self._steps),
                             "kept": kept, "channels": {u.group: u.size for u in self.units},
                             "flops_fraction": self.flops(kept) / self.dense_flops if self.dense_flops else 1.0})
        return plan

    # ----- per ratio ---------------------------------------------------------------------------------------------
    def _plan(self, ratio: float) -> Plan:
        details: dict = {}
        if self.mode == "fraction":
            kept = {u.group: kept_count(u.size, ratio) for u in self.units}
        elif self.mode == "tolerance":
            kept, tol = self._kept_for_removed(round(ratio * sum(u.size for u in self.units)))
            details["tolerance"] = tol
        else:
            return self._flops_plan(ratio)
        return self._build(kept, ratio, details)

    def _kept_for_removed(self, n: int) -> tuple[dict[str, int], float]:
        kept = {u.group: u.size for u in self.units}
        n = min(n, len(self._tol_values))
        for g in self._tol_groups[:n]:
            kept[g] -= 1
        tolerance = float(self._tol_values[n - 1]) if n > 0 else 0.0
        return kept, tolerance

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
    MethodSpec("id-flops", "ID, the authors' greedy FLOPs allocation (IDiter, structured)", "structured",
               InterpolativePruning, {"mode": "flops"},
               "Interpolative decomposition with the authors' IDiter rule: each step cuts 5% of the unit whose "
               "dropped pivot level |R_kk / R_11| per 0.1 x (its two layers' parameters) is smallest, recomputing "
               "Z on the pruned model, until ratio x dense FLOPs are removed (ratio = FLOPs removed).",
               paper=PAPER, needs=UNIT_NEEDS,
               exempt={"kept-fraction": "ratio is the fraction of FLOPs removed, allocated greedily across units"}),
]
