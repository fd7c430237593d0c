"""i-SpaSP: structured pruning by sparse signal recovery (Wolfe & Kyrillidis, "i-SpaSP: Structured Neural
Pruning via Sparse Signal Recovery", arXiv 2112.04905, 2021; code ``wolfecameron/i-SpaSP``,
``prune_resnet34_ispasp.py: prune_basic_block``).

A two-layer unit maps a hidden representation H (the consumer layer's input: post-BN-ReLU channels, or a
flattened feature map) to Y = layer2(H) (the consumer, plus the BatchNorm right after it). i-SpaSP keeps s of
the C hidden channels with a CoSaMP-like loop, T = 20 iterations by default (the code's ``--num-cs-iter``):

    a_j   = sum_{samples, positions} H[:, j]                       (dense activation, once)
    S_0   = {} ;  Y_{S} = layer2(H * mask(S)), and Y_{} = 0        (the code's convention for an empty set)
    for t = 1..T:
        g   = d/dH  1/2 || layer2(H) - Y_{S_{t-1}} ||_F^2  at the dense H      (Y_S detached)
        v_j = sum_{samples, positions} g[:, j]                     (signed, as the code; |v_j| optional)
        Omega = the 2s channels with the largest v (never one with v_j = 0, see "Ties")
        S_t   = the s channels of Omega ∪ S_{t-1} with the largest a_j    (no least-squares re-fit)

and records the residual ||Y - Y_{S_t}||_F^2 after every iteration. The pruned unit simply keeps the dense
weights of S (producer rows, BatchNorm entries including running statistics, consumer columns). For the MLP
form Y = H W2^T the proxy is g = (Y - Y_S) W2 (tested against this closed form).

Ties (not specified by the paper; decided here and tested):

* Sorting is stable, so equal scores keep index order (lower channel index first), for Omega and for the
  threshold by a_j: a run is reproducible bit for bit.
* A channel with exactly zero proxy (v_j = 0, e.g. its consumer weights are all zero, or the residual is zero)
  is never proposed. That is CoSaMP's rule, Omega = supp(proxy_{2s}), which the code's plain ``argsort`` misses:
  there such channels sit between the positive and negative ones and, when fewer than 2s channels have a
  positive proxy, enter Omega and can then win the threshold on activation alone while contributing nothing.
* If Omega ∪ S has fewer than s channels (only at t = 1, when almost every proxy is zero), S is filled up with
  the largest-a_j channels, so exactly s channels are always kept.

Two facts that follow from the definitions and explain what the method does on real models:

* When 2s >= C (keep half or more), Omega holds every channel with a nonzero proxy and S_1 is simply the top-s
  by activation: i-SpaSP then coincides with activation-magnitude pruning (up to zero-proxy channels).
* Residual monotonicity is not guaranteed in general (a counter-example is in the tests). Because S_{t-1} is
  inside the candidate set, the a-values of S_t dominate those of S_{t-1} entry by entry, so the residual is
  non-increasing from iteration 1 on whenever (i) the channels' output contributions Z_j = L(H e_j) (L: the
  linear part of layer 2) are mutually orthogonal, for instance hidden units that never fire on the same sample,
  and (ii) their energies ||Z_j||^2 are a non-decreasing function of a_j: then R(S) = sum_{j not in S} ||Z_j||^2
  and every swap trades a channel for one with a larger a_j, hence a larger ||Z_j||^2. With a bias-free layer 2
  the start ||Y||^2 = R({}) is covered too. Trained networks violate (i) and (ii), and their residual can rise.

Speed, exact (no approximation): Y is computed once; the selection is deterministic in S, so every distinct S
is evaluated once (one forward of layer 2 for Y_S, giving the residual and the proxy together) and a fixed
point or cycle costs nothing more. For an affine layer 2 (conv/linear + eval BatchNorm, which is what
``units.layer_two`` is) the proxy needs no backward pass over the data: sum_n J^T r_n = J^T sum_n r_n, so v is
one vector-Jacobian product of a single sample-sized tensor. (The same identity shows that the signed proxy
depends on the data only through the summed residual.)

Schedules: ``sequential`` (the code's): units are pruned in forward order, each unit's H coming from the
network whose earlier units are already pruned (masked, no fine-tuning in between); ``dense``: every unit's H
from the dense network, captured once. Ratio is always the fraction removed (the code's ``ratio`` is the kept
fraction); each unit keeps s = size - round(ratio * size) channels, at least one.

Deviations from the code, on purpose: BatchNorm running statistics are copied by index and both blocks are in
eval mode (the code rebuilds blocks with default statistics, in train mode, and repairs them by fine-tuning);
no fine-tuning, neither the code's 1 epoch after each block nor the final 90; every unit of ``wb.units`` is
pruned (the code skips the first block of each ResNet stage and, by default, the last); the tie rules above.
Also here: ``synthetic_experiment`` (the README's two-layer figure) and ``paper_check``.
"""

from __future__ import annotations

import math
import time
from abc import abstractmethod
from typing import Callable, NamedTuple

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..checks import CheckReport, CheckResult, Progress, ShouldStop
from ..structure import GroupError
from ..plan import Plan, PlanError
from ..structure.units import (Unit, capture_inputs, channel_sums, dense_unit_inputs, hidden_representation,
                               kept_count, layer_two, require_units)
from ..workbench import Workbench
from .base import Method, MethodSpec

PAPER = "Wolfe & Kyrillidis, i-SpaSP: Structured Neural Pruning via Sparse Signal Recovery (arXiv 2112.04905)"
SCHEDULES = ("sequential", "dense")


# ----- the iteration on one two-layer unit ---------------------------------------------------------------------
class Selection(NamedTuple):
    """What ``ispasp_select`` found for one unit.

    * ``kept``: (s,) long, the kept channel indices, ascending.
    * ``residuals``: T + 1 floats; ``residuals[0] = ||Y||_F^2`` (S = {}, Y_S = 0 as in the code) and
      ``residuals[t] = ||Y - layer2(H * mask(S_t))||_F^2`` after iteration t.
    * ``settled``: the first iteration t with S_t = S_{t-1} (a fixed point: nothing changes afterwards), or
      None if the set was still moving (or cycling) at T.
    """

    kept: torch.Tensor
    residuals: list[float]
    settled: int | None


def ispasp_select(hidden: torch.Tensor, layer2: Callable[[torch.Tensor], torch.Tensor], s: int,
                  iterations: int = 20, signed: bool = True, *, positions: int | None = None,
                  affine: bool = False, chunk: int = 1024) -> Selection:
    """i-SpaSP on one two-layer unit (module docstring; Wolfe & Kyrillidis, Alg. 1 as in ``prune_basic_block``).

    ``hidden``: the dense hidden representation H, (N, C, *spatial) with channels on dim 1 (conv and plain
    linear inputs), or with ``positions=P`` a channel-major flatten (N, C*P) where channel j owns features
    j*P .. j*P+P-1. ``layer2``: H -> Y, applied per sample (chunks of ``chunk`` samples; it is not modified,
    and should be in eval mode). ``s``: channels to keep, 1 <= s <= C. ``signed``: rank Omega by v_j as the
    official code (True) or by |v_j| as textbook CoSaMP (False). ``affine=True`` declares layer 2 affine
    (conv/linear + eval BatchNorm), which lets the proxy skip the backward pass over the data (exact).
    """
    hc = _channel_view(hidden, positions)
    n, c, _ = hc.shape
    if n == 0:
        raise ValueError("i-SpaSP needs at least one calibration sample")
    if not 1 <= int(s) <= c:
        raise ValueError(f"i-SpaSP keeps s channels with 1 <= s <= {c} (the hidden width); got s={s}")
    if int(iterations) < 1:
        raise ValueError(f"i-SpaSP needs at least one iteration; got {iterations}")
    s, iterations = int(s), int(iterations)
    with torch.no_grad():
        a = hc.sum((0, 2), dtype=torch.float64).cpu()
    if not bool(torch.isfinite(a).all()):
        raise ValueError("the hidden representation contains NaN or infinite values")
    run = _UnitProblem(hidden, hc, layer2, positions, affine, chunk)

    empty = torch.zeros(c, dtype=torch.bool)
    support = empty
    residuals = [run.residual(empty)]
    settled = None
    for t in range(1, iterations + 1):
        new = _next_support(run.proxy(support), a, support, s, signed)
        if settled is None and torch.equal(new, support):
            settled = t
        support = new
        residuals.append(run.residual(support, need_proxy=t < iterations))
    return Selection(support.nonzero().squeeze(1), residuals, settled)


def ispasp_proxy(hidden: torch.Tensor, layer2: Callable[[torch.Tensor], torch.Tensor], kept: torch.Tensor, *,
                 positions: int | None = None, affine: bool = False, chunk: int = 1024) -> torch.Tensor:
    """The per-channel proxy of one i-SpaSP iteration for the current set ``kept`` (indices or a (C,) bool mask):
    v_j = sum_{samples, positions} [d/dH 1/2 ||layer2(H) - Y_S||_F^2]_j at the dense H, with Y_S = 0 for an empty
    set. (C,) float64. Shapes and flags as in ``ispasp_select``."""
    problem, support = _problem_and_support(hidden, layer2, kept, positions, affine, chunk)
    return problem.proxy(support)


def output_residual(hidden: torch.Tensor, layer2: Callable[[torch.Tensor], torch.Tensor], kept: torch.Tensor, *,
                    positions: int | None = None, chunk: int = 1024) -> float:
    """||layer2(H) - layer2(H * mask(kept))||_F^2 (||layer2(H)||^2 for an empty set, as in the code): the
    residual i-SpaSP records, for any kept set (e.g. a baseline's)."""
    problem, support = _problem_and_support(hidden, layer2, kept, positions, False, chunk)
    return problem.residual(support, need_proxy=False)


def _problem_and_support(hidden, layer2, kept, positions, affine, chunk):
    hc = _channel_view(hidden, positions)
    kept = torch.as_tensor(kept)
    if kept.dtype == torch.bool:
        if kept.shape != (hc.shape[1],):
            raise ValueError(f"a kept mask must have shape ({hc.shape[1]},); got {tuple(kept.shape)}")
        support = kept.cpu().clone()
    else:
        support = torch.zeros(hc.shape[1], dtype=torch.bool)
        support[kept.long().cpu()] = True
    return _UnitProblem(hidden, hc, layer2, positions, affine, chunk), support


def _channel_view(hidden: torch.Tensor, positions: int | None) -> torch.Tensor:
    """H as (N, C, P): channel on dim 1, every (position) entry of a channel on dim 2."""
    if hidden.ndim < 2:
        raise ValueError(f"the hidden representation must be (samples, channels, ...); got shape "
                         f"{tuple(hidden.shape)}")
    if positions is None:
        return hidden.reshape(hidden.shape[0], hidden.shape[1], -1)
    if hidden.ndim != 2 or hidden.shape[1] % positions:
        raise ValueError(f"a flattened hidden representation must be (N, C*{positions}); got shape "
                         f"{tuple(hidden.shape)}")
    return hidden.reshape(hidden.shape[0], hidden.shape[1] // positions, positions)


def _next_support(v: torch.Tensor, a: torch.Tensor, support: torch.Tensor, s: int, signed: bool) -> torch.Tensor:
    """One CoSaMP step without re-fit: Omega = top-2s nonzero proxies, then the top-s of Omega ∪ S by a."""
    score = v if signed else v.abs()
    order = torch.sort(score, descending=True, stable=True).indices
    omega = order[(v[order] != 0)][: 2 * s]
    candidates = support.clone()
    candidates[omega] = True
    idx = candidates.nonzero().squeeze(1)
    top = idx[torch.sort(a[idx], descending=True, stable=True).indices[:s]]
    new = torch.zeros_like(support)
    new[top] = True
    if len(top) < s:  # fewer than s candidates: fill with the largest activations outside them
        rest = (~new).nonzero().squeeze(1)
        new[rest[torch.sort(a[rest], descending=True, stable=True).indices[: s - len(top)]]] = True
    return new


class _UnitProblem:
    """Y once; residual and proxy per distinct support, memoised (the iteration is deterministic in S)."""

    def __init__(self, hidden, hc, layer2, positions: int | None, affine: bool, chunk: int):
        self.hidden, self.hc, self.layer2, self.affine = hidden.detach(), hc.detach(), layer2, affine
        self.positions = positions
        self.chunk = max(1, int(chunk))
        self.c = hc.shape[1]
        with torch.no_grad():
            self.y = [layer2(self.hidden[i:i + self.chunk]) for i in range(0, len(self.hidden), self.chunk)]
        self._memo: dict[bytes, tuple[float, torch.Tensor | None]] = {}
        self._graphs = None

    def _masked(self, i: int, mask: torch.Tensor) -> torch.Tensor:
        h = self.hc[i:i + self.chunk]
        return (h * mask.view(1, -1, 1)).reshape((len(h),) + self.hidden.shape[1:])

    def _evaluate(self, support: torch.Tensor, need_proxy: bool) -> tuple[float, torch.Tensor | None]:
        key = support.numpy().tobytes()
        known = self._memo.get(key)
        if known is not None and (known[1] is not None or not need_proxy):
            return known
        mask = support.to(self.hc.device, self.hc.dtype)
        total = torch.zeros((), dtype=torch.float64)
        residual_chunks = []
        with torch.no_grad():
            for k, i in enumerate(range(0, len(self.hidden), self.chunk)):
                r = self.y[k] - self.layer2(self._masked(i, mask)) if bool(support.any()) else self.y[k]
                total += r.double().pow(2).sum().cpu()
                residual_chunks.append(r)
        self._memo[key] = (float(total), self._proxy_from(residual_chunks) if need_proxy else None)
        return self._memo[key]

    def _proxy_from(self, residual_chunks: list[torch.Tensor]) -> torch.Tensor:
        """v_j = sum over samples and positions of J^T r (the gradient of 1/2||layer2(H) - Y_S||^2 at H)."""
        with torch.enable_grad():
            if self.affine:  # sum_n J^T r_n = J^T sum_n r_n: one sample-sized vector-Jacobian product
                if self._graphs is None:
                    x0 = torch.zeros((1,) + self.hidden.shape[1:], dtype=self.hidden.dtype,
                                     device=self.hidden.device, requires_grad=True)
                    self._graphs = [(x0, self.layer2(x0))]
                x0, out0 = self._graphs[0]
                r_sum = torch.stack([r.sum(0) for r in residual_chunks]).sum(0, keepdim=True)
                (g,) = torch.autograd.grad(out0, x0, r_sum.to(out0.dtype), retain_graph=True)
                return _channel_view(g, self.positions).sum((0, 2), dtype=torch.float64).cpu()
            if self._graphs is None:  # the dense forward graph, built once and reused every iteration
                self._graphs = []
                for i in range(0, len(self.hidden), self.chunk):
                    h = self.hidden[i:i + self.chunk].clone().requires_grad_(True)
                    self._graphs.append((h, self.layer2(h)))
            v = torch.zeros(self.c, dtype=torch.float64)
            for (h, out), r in zip(self._graphs, residual_chunks):
                (g,) = torch.autograd.grad(out, h, r.to(out.dtype), retain_graph=True)
                v += _channel_view(g, self.positions).sum((0, 2), dtype=torch.float64).cpu()
            return v

    def residual(self, support: torch.Tensor, need_proxy: bool = True) -> float:
        """||Y - Y_S||_F^2; with ``need_proxy`` the proxy of S is computed in the same pass (the loop asks for it
        next)."""
        return self._evaluate(support, need_proxy)[0]

    def proxy(self, support: torch.Tensor) -> torch.Tensor:
        return self._evaluate(support, True)[1]


# ----- methods: i-SpaSP and the two unit baselines -------------------------------------------------------------
class UnitChannels(Method):
    """A structured method that prunes only the workbench's two-layer units, ``kept_count`` channels each."""

    granularity = "structured"
    needs: tuple[str, ...] = ("weights", "calibration activations")

    def _prepare(self, wb: Workbench) -> None:
        self._units = require_units(wb, self.label)

    @abstractmethod
    def _keep(self, counts: tuple[int, ...]) -> tuple[dict[str, torch.Tensor], dict]:
        """Unit group -> kept channel indices (ascending), and plan details, for one kept count per unit."""

    def _plan(self, ratio: float) -> Plan:
        counts = tuple(kept_count(u.size, ratio) for u in self._units)
        kept, details = self._keep(counts)
        pruned = {}
        for u in self._units:
            keep = torch.zeros(u.size, dtype=torch.bool)
            keep[kept[u.group]] = True
            pruned[u.group] = (~keep).nonzero().squeeze(1)
        details = {**details, "kept_channels": {u.group: int(k) for u, k in zip(self._units, counts)}}
        return Plan(self.key, ratio, "structured", pruned_channels=pruned, details=details)


class ActivationMagnitude(UnitChannels):
    """Keep each unit's s channels with the largest mean dense activation a_j / rows (the statistic i-SpaSP's
    threshold step uses, without its residual-driven candidates). Ties: lower channel index first."""


    def config(self) -> dict:
        return {}

    def _prepare(self, wb: Workbench) -> None:
        super()._prepare(wb)
        inputs = dense_unit_inputs(wb, self._units)
        self.scores = {u.group: channel_sums(u, inputs[u.consumer]).double().cpu() for u in self._units}
        self._order = {g: torch.sort(a, descending=True, stable=True).indices for g, a in self.scores.items()}

    def _keep(self, counts):
        return {u.group: torch.sort(self._order[u.group][:k]).values for u, k in zip(self._units, counts)}, {}


class RandomUnits(UnitChannels):
    """Keep s uniformly random channels of each unit (seeded; nested as the ratio grows): the baseline at
    exactly i-SpaSP's kept counts, touching nothing but the units."""

    needs = ("weights",)

    def _prepare(self, wb: Workbench) -> None:
        super()._prepare(wb)
        g = torch.Generator().manual_seed(self.seed)
        self._order = {u.group: torch.randperm(u.size, generator=g) for u in self._units}

    def _keep(self, counts):
        return {u.group: torch.sort(self._order[u.group][:k]).values for u, k in zip(self._units, counts)}, {}


class ISpaSP(UnitChannels):
    """i-SpaSP over every two-layer unit of the workbench (module docstring).

    ``iterations``: T (20, the code's default). ``signed``: rank the proxy by its sign as the official code
    (True) or by magnitude (False). ``schedule``: ``"sequential"`` (the code's: each unit sees the already
    pruned network before it) or ``"dense"`` (every unit's H from the dense network, captured once).
    ``plan.details``: per unit the residual history (``residuals``), the fixed-point iteration
    (``settled``) and the kept count. Selections are cached by kept counts, so ratios that round to the same
    counts cost nothing.
    """

    needs = ("weights", "calibration activations", "gradients")
    paper = PAPER

    def __init__(self, iterations: int = 20, signed: bool = True, schedule: str = "sequential",
                 chunk: int = 1024, seed: int = 0):
        super().__init__(seed)
        if int(iterations) < 1:
            raise ValueError(f"iterations must be at least 1, got {iterations!r}")
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
        self.iterations, self.signed, self.schedule, self.chunk = int(iterations), bool(signed), schedule, chunk

    def config(self) -> dict:
        return {"iterations": self.iterations, "signed": self.signed, "schedule": self.schedule}

    def _prepare(self, wb: Workbench) -> None:
        super()._prepare(wb)
        self._dense_inputs = dense_unit_inputs(wb, self._units)
        self._cache: dict[tuple, Selection] = {}

    def select(self, counts: tuple[int, ...]) -> dict[str, Selection]:
        """Unit group -> Selection for the kept counts ``counts`` (one per unit, in ``wb.units`` order)."""
        wb = self._wb
        if wb is None:
            raise PlanError(f"{self.label}: call prepare(workbench) before select(counts)")
        out: dict[str, Selection] = {}
        pruned: dict[str, torch.Tensor] = {}
        for i, (unit, s) in enumerate(zip(self._units, counts)):
            key = (i, counts[: i + 1]) if self.schedule == "sequential" else (i, s)
            if key not in self._cache:
                if self.schedule == "sequential" and any(len(p) for p in pruned.values()):
                    with wb.applied(Plan(self.key, 0.0, "structured", pruned_channels=dict(pruned))):
                        inputs = capture_inputs(wb.model, [unit.consumer], wb.calib_x, wb.batch_size)
                else:
                    inputs = self._dense_inputs
                hidden, positions = hidden_representation(unit, inputs[unit.consumer])
                wb.restore()
                self._cache[key] = ispasp_select(hidden, layer_two(wb.model, unit), s, self.iterations,
                                                 self.signed, positions=positions, affine=True, chunk=self.chunk)
            sel = self._cache[key]
            out[unit.group] = sel
            keep = torch.zeros(unit.size, dtype=torch.bool)
            keep[sel.kept] = True
            pruned[unit.group] = (~keep).nonzero().squeeze(1)
        return out

    def _keep(self, counts):
        sel = self.select(counts)
        details = {"residuals": {g: [float(r) for r in x.residuals] for g, x in sel.items()},
                   "settled": {g: x.settled for g, x in sel.items()},
                   "units": {u.group: u.title for u in self._units}}
        return {g: x.kept for g, x in sel.items()}, details


# ----- the synthetic two-layer experiment (the README's figure) ------------------------------------------------
def synthetic_network(width: int, p: float, samples: int = 256, input_dim: int = 32, output_dim: int = 10,
                      seed: int = 0) -> tuple[torch.Tensor, nn.Linear]:
    """A random two-layer ReLU network whose hidden representation is p-compressible, and its hidden output.

    X ~ N(0, I) (samples x input_dim); W1 ~ N(0, 1/input_dim); hidden unit j's row of W1 is scaled by
    rank(j)^(-1/p) for a random ranking, so H = ReLU(X W1^T) has per-unit magnitudes decaying as a power law
    (the paper's compressibility assumption |h|_(i) <= R i^(-1/p), smaller p = sparser; by ReLU's positive
    homogeneity this is still an ordinary two-layer ReLU network). Layer 2: Linear(width, output_dim) with
    N(0, 1/width) weights and no bias. Returns (H (samples, width), layer 2), float64.
    """
    if not 0 < p:
        raise ValueError(f"the compressibility p must be positive, got {p}")
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, input_dim, generator=g, dtype=torch.float64)
    w1 = torch.randn(width, input_dim, generator=g, dtype=torch.float64) / math.sqrt(input_dim)
    rank = torch.randperm(width, generator=g) + 1
    w1 = w1 * rank.double().pow(-1.0 / p)[:, None]
    hidden = torch.relu(x @ w1.T)
    layer2 = nn.Linear(width, output_dim, bias=False).double()
    with torch.no_grad():
        layer2.weight.copy_(torch.randn(output_dim, width, generator=g, dtype=torch.float64) / math.sqrt(width))
    layer2.requires_grad_(False)
    return hidden, layer2


def synthetic_experiment(widths: tuple[int, ...] = (100, 200), sparsities: tuple[float, ...] = (0.3, 0.5, 0.7, 0.9),
                         iterations: int = 20, samples: int = 256, input_dim: int = 32, output_dim: int = 10,
                         step: int = 1, signed: bool = True, seed: int = 0, quick: bool = False,
                         progress: Progress = None, should_stop: ShouldStop = None) -> pd.DataFrame:
    """The README's figure "Synthetic Pruning Experiments on Two-Layer Networks" (methods.md §10): for each hidden
    width and compressibility p, the squared Frobenius residual ||Y - Y_S||_F^2 between the pruned and dense
    outputs after i-SpaSP (T iterations) against the pruned width s = 0, step, 2*step, ..., width - 1 (s = 0 is
    ||Y||^2). The repository ships only the image, not the script: the network (``synthetic_network``) is this
    project's reconstruction from the paper's p-compressibility assumption (the figure's legend calls p the
    "sparsity of the dense network's hidden representations"; smaller p decays faster there). The figure's end
    points support it: at s = d - 1 they sit near d^(-2/p), the last unit's share under a power law (about 1e-14,
    1e-8, 1e-6, 1e-5 for p = 0.3 .. 0.9 at d = 100). Sample count, input and output sizes and the residual's
    absolute scale are ours; the claim tested is the shape (polynomial decay whose degree grows as p shrinks).

    ``quick``: half the widths (50, 100 by default), every 3rd pruned width, 128 samples (tests). Returns a tidy
    frame with columns width, sparsity, pruned_width, residual, relative (residual / ||Y||^2), settled (the
    fixed-point iteration, -1 if none).
    """
    if quick:
        widths, step, samples = tuple(max(8, w // 2) for w in widths), max(step, 3), min(samples, 128)
    rows = []
    total = len(widths) * len(sparsities)
    done = 0
    for width in widths:
        for p in sparsities:
            if should_stop is not None and should_stop():
                return pd.DataFrame(rows)
            hidden, layer2 = synthetic_network(width, p, samples, input_dim, output_dim, seed)
            start = float(layer2(hidden).pow(2).sum())
            rows.append({"width": width, "sparsity": p, "pruned_width": 0, "residual": start, "relative": 1.0,
                         "settled": 0})
            for s in range(step, width, step):
                sel = ispasp_select(hidden, layer2, s, iterations, signed, affine=True)
                rows.append({"width": width, "sparsity": p, "pruned_width": s, "residual": sel.residuals[-1],
                             "relative": sel.residuals[-1] / start,
                             "settled": sel.settled if sel.settled is not None else -1})
            done += 1
            if progress is not None:
                progress(0.5 * done / total, f"synthetic: width {width}, p = {p}")
    return pd.DataFrame(rows)


def decay_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per (width, sparsity) of a ``synthetic_experiment`` frame: ``mean_log10_drop`` = the mean over pruned
    widths s >= 1 of log10(residual(s) / residual(0)) (the area under the log-residual curve; more negative =
    faster decay), and ``exponent`` = the least-squares slope of log residual against log s over
    1 <= s <= width/2 (the polynomial degree; the power-law tail sum predicts about 1 - 2/p)."""
    rows = []
    for (width, p), df in frame.groupby(["width", "sparsity"], sort=True):
        df = df.sort_values("pruned_width")
        tail = df[df.pruned_width >= 1]
        logs = np.log10(np.maximum(tail.relative.to_numpy(float), 1e-300))
        fit = tail[tail.pruned_width <= width / 2]
        slope = (np.polyfit(np.log(fit.pruned_width.to_numpy(float)),
                            np.log(np.maximum(fit.residual.to_numpy(float), 1e-300)), 1)[0]
                 if len(fit) >= 2 else float("nan"))
        rows.append({"width": int(width), "sparsity": float(p), "mean_log10_drop": float(logs.mean()),
                     "exponent": float(slope), "predicted_exponent": 1.0 - 2.0 / float(p),
                     "last_relative": float(tail.relative.iloc[-1]) if len(tail) else float("nan")})
    return pd.DataFrame(rows)


# ----- the paper check -----------------------------------------------------------------------------------------
def paper_check(wb: Workbench, quick: bool = False, progress: Progress = None,
                should_stop: ShouldStop = None) -> CheckReport:
    """i-SpaSP's claims on a synthetic two-layer network and on the current model.

    (a) THE check: sparser hidden representations (smaller p) make the residual decay faster with the pruned
        width, at every hidden width: ``mean_log10_drop`` strictly ordered by p (``decay_summary``).
    (b) On ``wb``, with the official settings (sequential schedule, T = 20, signed), over a ratio grid: whether
        every unit's residual is non-increasing over the iterations; whether i-SpaSP's selection leaves a
        smaller unit-output residual than random selections of the same width (the objective it works on; each
        unit on the dense network's hidden representation, judged by the median ratio to the random mean);
        and the accuracy without fine-tuning of i-SpaSP, random unit channels (mean over seeds) and activation
        magnitude at identical kept counts, judged by the mean accuracy over the grid against random's.

    Frames: ``synthetic`` (width, sparsity, pruned_width, residual, ...), ``synthetic_summary``, ``residual``
    (unit, group, ratio, iteration, residual), ``unit_residual`` (unit, ratio, method, seed, residual),
    ``accuracy`` (method, seed, ratio, kept_fraction, accuracy).
    """
    start = time.perf_counter()
    report = CheckReport("ispasp")

    def stopped() -> bool:
        return should_stop is not None and bool(should_stop())

    def tick(fraction: float, text: str) -> None:
        if progress is not None:
            progress(fraction, text)

    synthetic = synthetic_experiment(quick=quick, progress=progress, should_stop=should_stop)
    report.frames["synthetic"] = synthetic
    report.results.append(_synthetic_verdict(synthetic, report))
    tick(0.5, "synthetic experiment done")
    if stopped():
        report.complete = False
        report.seconds = time.perf_counter() - start
        return report

    try:
        units = require_units(wb, "i-SpaSP")
    except PlanError as e:
        report.notes.append(str(e))
        report.results.append(CheckResult("ispasp", "i-SpaSP prunes the model's two-layer units",
                                          "this model has no two-layer units", None, PAPER))
        report.seconds = time.perf_counter() - start
        return report

    ratios = [0.3, 0.6, 0.8] if quick else [round(0.1 * k, 2) for k in range(1, 10)]
    seeds = list(range(2 if quick else 5))
    ispasp, activation = ISpaSP(), ActivationMagnitude()
    methods: list[tuple[str, Method]] = [("ispasp", ispasp), ("activation-magnitude", activation)]
    methods += [("random-units", RandomUnits(seed=k)) for k in seeds]
    for _, m in methods:
        m.prepare(wb)
    dense = {u.group: hidden_representation(u, ispasp._dense_inputs[u.consumer]) for u in units}
    total_size = sum(u.size for u in units)
    residual_rows, unit_rows, acc_rows = [], [], []
    for k, ratio in enumerate(ratios):
        if stopped():
            report.complete = False
            break
        kept_fraction = sum(kept_count(u.size, ratio) for u in units) / total_size
        for key, m in methods:
            plan = m.plan(ratio)
            acc_rows.append({"method": key, "seed": m.seed if key == "random-units" else 0, "ratio": ratio,
                             "kept_fraction": kept_fraction, "accuracy": wb.evaluate_plan(plan).accuracy})
            if key == "ispasp":
                for u in units:
                    residual_rows += [{"unit": u.title, "group": u.group, "ratio": ratio, "iteration": it,
                                       "residual": r} for it, r in enumerate(plan.details["residuals"][u.group])]
        for u in units:  # the unit objective, each unit on the dense network's hidden representation
            hidden, positions = dense[u.group]
            layer2, s = layer_two(wb.model, u), kept_count(u.size, ratio)
            sets = [("ispasp", 0, ispasp_select(hidden, layer2, s, positions=positions, affine=True).kept),
                    ("activation-magnitude", 0, activation._order[u.group][:s])]
            sets += [("random-units", m.seed, m._order[u.group][:s]) for key, m in methods if key == "random-units"]
            unit_rows += [{"unit": u.title, "group": u.group, "ratio": ratio, "method": key, "seed": seed,
                           "residual": output_residual(hidden, layer2, kept, positions=positions)}
                          for key, seed, kept in sets]
        tick(0.5 + 0.5 * (k + 1) / len(ratios), f"i-SpaSP and baselines at ratio {ratio:g}")
    report.frames["residual"] = residual = pd.DataFrame(residual_rows)
    report.frames["unit_residual"] = unit_residual = pd.DataFrame(unit_rows)
    report.frames["accuracy"] = accuracy = pd.DataFrame(acc_rows)
    if not report.complete:
        report.results.append(CheckResult("ispasp", "i-SpaSP on this model", "stopped before the ratio grid "
                                          "finished", None, PAPER))
    else:
        report.results += _model_verdicts(residual, unit_residual, accuracy, len(seeds))
        same = (accuracy[accuracy.method == "ispasp"].set_index("ratio").accuracy
                == accuracy[accuracy.method == "activation-magnitude"].set_index("ratio").accuracy)
        report.notes.append(
            f"i-SpaSP's accuracy equals activation magnitude's at {int(same.sum())} of {len(same)} ratios. With "
            "2s >= width (ratio <= 0.5) the candidate set holds every channel with a nonzero proxy and the "
            "threshold by activation decides alone; the sequential schedule still differs from the dense ranking "
            "because later units are ranked on the already pruned (not fine-tuned) network.")
    report.seconds = time.perf_counter() - start
    return report


def _synthetic_verdict(synthetic: pd.DataFrame, report: CheckReport) -> CheckResult:
    claim = "Sparser hidden representations (smaller p) make the pruning residual decay faster with the pruned width"
    source = "README figure 'Synthetic Pruning Experiments on Two-Layer Networks'; methods.md §10"
    summary = decay_summary(synthetic) if len(synthetic) else pd.DataFrame()
    report.frames["synthetic_summary"] = summary
    complete = (not summary.empty and summary.sparsity.nunique() >= 2
                and len(summary) == synthetic.width.nunique() * synthetic.sparsity.nunique())
    if not complete:
        report.complete = False
        return CheckResult("ispasp", claim, "stopped before the synthetic experiment finished", None, source)
    ordered, parts = True, []
    for width, df in summary.groupby("width"):
        df = df.sort_values("sparsity")
        drops = df.mean_log10_drop.to_numpy()
        ordered &= bool(np.all(np.diff(drops) > 0))
        parts.append(f"d={width}: mean log10(residual/start) " + ", ".join(
            f"p={p:g} {d:.1f}" for p, d in zip(df.sparsity, drops)) + "; decay exponent " + ", ".join(
            f"{e:.1f} (1-2/p: {q:.1f})" for e, q in zip(df.exponent, df.predicted_exponent)))
    verdict = "ordered by p at every width" if ordered else "NOT ordered by p at every width"
    return CheckResult("ispasp", claim, f"{verdict}. " + "; ".join(parts), ordered, source)


def _model_verdicts(residual: pd.DataFrame, unit_residual: pd.DataFrame, accuracy: pd.DataFrame,
                    seeds: int) -> list[CheckResult]:
    out = []
    runs = {key: df.sort_values("iteration").residual.to_numpy() for key, df in residual.groupby(["group", "ratio"])}
    tol = 1e-9 * max(float(residual.residual.max()), 1.0)
    full = {key: bool(np.all(np.diff(r) <= tol)) for key, r in runs.items()}
    from_one = {key: bool(np.all(np.diff(r[1:]) <= tol)) for key, r in runs.items()}
    bad = [f"{g} at {r:g}" for (g, r), ok in full.items() if not ok]
    rises = [float(np.max(np.diff(r[1:]) / r[1:-1])) for r in runs.values() if len(r) > 2 and np.all(r[1:-1] > 0)]
    worst = max(rises, default=0.0)
    out.append(CheckResult(
        "ispasp", "The i-SpaSP iterations drive the residual between pruned and dense unit outputs down",
        f"non-increasing in {sum(full.values())} of {len(full)} (unit, ratio) runs counting the start "
        f"||Y||^2 (Y_S = 0), {sum(from_one.values())} of {len(from_one)} from iteration 1 on"
        + (f"; rises in {', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}" if bad else "")
        + (f"; largest rise after iteration 1: +{worst:.1%} in one step" if worst > 0 else ""),
        all(full.values()), "paper: convergence analysis of Alg. 1; methods.md §1.1"))

    per_run = unit_residual.groupby(["group", "ratio", "method"]).residual.mean().unstack("method")
    to_random = per_run["ispasp"] / per_run["random-units"]  # 0 where i-SpaSP removes only dead channels
    activation_to_random = per_run["activation-magnitude"] / per_run["random-units"]
    out.append(CheckResult(
        "ispasp", "i-SpaSP's selection leaves a smaller residual at the unit output than random units",
        f"i-SpaSP residual below the random mean in {int((to_random < 1).sum())} of {len(to_random)} (unit, ratio) "
        f"runs; median i-SpaSP / random {float(to_random.median()):.2f} (activation magnitude / random "
        f"{float(activation_to_random.median()):.2f})",
        bool(to_random.median() < 1.0), "paper: pruning as sparse recovery of the hidden layer; README"))

    mean = accuracy.groupby(["method", "ratio"]).accuracy.mean().unstack(0)
    isp, rnd, act = mean["ispasp"], mean["random-units"], mean["activation-magnitude"]
    out.append(CheckResult(
        "ispasp", "i-SpaSP finds sub-networks that keep more accuracy than random ones of the same width "
        "(no fine-tuning)",
        f"mean accuracy over ratios {mean.index.min():g}-{mean.index.max():g}: i-SpaSP {isp.mean():.1%}, random "
        f"{rnd.mean():.1%} ({seeds} seeds), activation magnitude {act.mean():.1%}; i-SpaSP >= random at "
        f"{int((isp >= rnd).sum())} of {len(mean)} ratios",
        bool(isp.mean() >= rnd.mean()), "paper §5 (MNIST FFNs, ImageNet; with fine-tuning there)"))
    return out


_UNITS = ("weights", "channel groups", "units", "calibration activations")
_UNITS_RATIO = ("ratio counts the units' hidden channels, which are a subset of the model's groups; the other "
                "groups keep every channel")
SPECS = [
    MethodSpec("ispasp", "i-SpaSP (structured, Wolfe & Kyrillidis 2022)", "structured", ISpaSP,
               {"iterations": 20, "signed": True, "schedule": "sequential"},
               "Sparse-signal-recovery pruning of each two-layer unit's hidden channels: the output residual's "
               "gradient proposes candidates, the dense activation keeps s of them; units in forward order.",
               paper="Wolfe & Kyrillidis: i-SpaSP: Structured Neural Pruning via Sparse Signal Recovery, arXiv 2112.04905 (2022)", needs=_UNITS, exempt={"kept-fraction": _UNITS_RATIO}),
    MethodSpec("ispasp-abs", "i-SpaSP with |proxy| (structured)", "structured", ISpaSP,
               {"iterations": 20, "signed": False, "schedule": "sequential"},
               "i-SpaSP ranking candidates by |proxy| (textbook CoSaMP) instead of the official signed proxy.",
               paper="Wolfe & Kyrillidis: i-SpaSP: Structured Neural Pruning via Sparse Signal Recovery, arXiv 2112.04905 (2022)", needs=_UNITS, exempt={"kept-fraction": _UNITS_RATIO}),
    MethodSpec("activation-magnitude", "Activation magnitude (hidden units)", "structured", ActivationMagnitude, {},
               "Each two-layer unit keeps the channels with the largest mean calibration activation.",
               needs=_UNITS, exempt={"kept-fraction": _UNITS_RATIO}),
    MethodSpec("random-units", "Random (hidden units)", "structured", RandomUnits, {},
               "Uniformly random channels of each two-layer unit, at i-SpaSP's kept counts; the baseline.",
               needs=("channel groups", "units"), exempt={"kept-fraction": _UNITS_RATIO}),
]
