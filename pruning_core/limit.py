"""The fundamental limit of pruning: Zhang, Zhang, Sun, Liu, "How Sparse Can We Prune a Deep Network: A
Fundamental Limit Perspective", NeurIPS 2024 (arXiv 2306.05857); code ``QiaozheZhang/Global-One-shot-Pruning``
(``cal_rate.py``, ``utils.cal_loss``). Digest: ../shared/reference/methods.md §3 and §10.

**Ratio is the fraction REMOVED** (rho), as in the authors' code; the paper's text calls the kept fraction the
"pruning ratio" (digest §10). Every figure here is a removed fraction unless its name says ``kept``.

With w* the trained prunable weights (D of them: every parameter with two or more dimensions, as the
workbench's ``prunable``; biases and norm parameters are neither pruned nor differentiated), H the Hessian of the
mean training loss restricted to those weights, and epsilon the loss tolerance:

* **epsilon** = the standard deviation of the per-mini-batch training loss at w* (``utils.cal_loss``: np.std,
  ddof 0, over the training loader's batches; the paper's configs use batch 128). Our demo models were trained
  without the paper's l1 term, so no l1 term is added.
* **R(rho)** = ||w* - P_rho(w*)||_2, the norm of what global magnitude pruning removes at ratio rho, on a
  continuous scale: R(rho)^2 = C[k] + (rho D - k) s[k] with s the squared magnitudes in ascending order, C their
  cumulative sums and k = floor(rho D), so at rho = k/D it is exactly the norm of the k smallest weights (the
  code rounds R to integers, far too coarse for small nets: digest §3.5).
* **gw(R)** = sum_j tau_j / (1 + R^2 |theta_j| / (2 epsilon)) over the SLQ quadrature (theta_j, tau_j) of H's
  spectrum (``cal_rate.cal_gw`` with r_j^2 = 2 epsilon / |theta_j|; eigenvalues are taken in absolute value, as
  the code does; the Ritz pairs replace the code's Gaussian-smoothed grid of 100,000 bins, digest §3.2).
* **The predicted limit** rho* solves rho = gw(R(rho)) (the code scans rho = i/1000 for the smallest
  |gw(R_i) - rho_i|; gw(R(rho)) - rho falls strictly from 1 at rho = 0, so bisection finds the one root).
* **The trace lower bound** rho_tr solves rho = 1 / (1 + R(rho)^2 Tr(H) / (2 epsilon D)): by Jensen's inequality
  on the convex x -> 1/(1 + c x), gw(R) >= 1/(1 + R^2 mean|lambda| / (2 epsilon)), so rho_tr <= rho* whenever
  Tr(H) = sum|lambda| (a positive semi-definite H); Tr(H) is Hutchinson's estimate (digest §3.1, [derived]).

Defaults (the digest's interactive setting, §8): 10 Hutchinson probes, 40 Lanczos steps from 1 probe (the code's
``lanczos_num``; its ``lanczos_iter`` is 128), Hessian on the first 512 samples of the training split, epsilon
over batches of 128. Deviations from the authors' code: no l1 training (LOMP), no extra mass for near-zero
eigenvalues (``gradient.py``; the code skips it for fully connected nets too), the Hessian on a subset rather
than the whole training loader, R on a continuous scale.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vjp

from .algorithms.spectrum import SpectralDensity, TraceEstimate, hutchinson_trace, slq
from .experiments import Progress, ShouldStop
from .workbench import Workbench

DEFAULT_PROBES = 10
DEFAULT_LANCZOS_STEPS = 40
DEFAULT_LANCZOS_PROBES = 1
DEFAULT_SAMPLES = 512
DEFAULT_LOSS_BATCH = 128
EPSILON_FACTORS = (0.5, 1.0, 2.0)  # the sensitivity the screens show: rho* at epsilon x 0.5, 1, 2
CURVE_POINTS = 1000  # the code's grid rho = i / 1000
REMOVED_NORM_POINTS = 200_001  # R(rho) is kept exactly up to this many weights, interpolated beyond
FLOAT64_BASIS_BYTES = 256 * 2 ** 20  # a larger Lanczos basis is kept in float32


class LimitError(ValueError):
    """The limit cannot be estimated for this model or these settings; the message says why."""


def training_samples(wb: Workbench, samples: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The training split on the workbench's device (the first ``samples`` of it; None: all). The digits
    training split is already shuffled; an uploaded dataset's is its calibration split."""
    train = wb.data.train
    if len(train) == 0:
        raise LimitError("the dataset has no training samples to measure the loss and its curvature on")
    n = len(train) if samples is None else max(1, min(int(samples), len(train)))
    return train.x[:n].to(wb.device), train.y[:n].to(wb.device)


def loss_spread(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = DEFAULT_LOSS_BATCH
                ) -> tuple[float, float]:
    """(mean training loss over the samples, standard deviation of the per-batch mean loss) over consecutive
    mini-batches of ``batch_size`` (the authors' ``utils.cal_loss``: np.std with ddof 0). That standard
    deviation is the paper's epsilon. Needs at least two batches."""
    if batch_size < 1:
        raise LimitError(f"the loss batch size must be at least 1, got {batch_size}")
    if len(x) < 2 * batch_size:
        batch_size = max(1, len(x) // 2)
    if len(x) < 2:
        raise LimitError("epsilon is the spread of the loss over mini-batches: at least two training samples "
                         "are needed")
    losses, total = [], 0.0
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            loss = float(F.cross_entropy(model(x[i:i + batch_size]).float(), y[i:i + batch_size]))
            losses.append(loss)
            total += loss * len(x[i:i + batch_size])
    spread = float(np.std(losses))
    if not np.isfinite(spread) or not np.isfinite(total):
        raise LimitError("the training loss is NaN or infinite at these weights")
    return total / len(x), spread


class PrunableHessian:
    """Hessian-vector products of the mean loss on (x, y) (``loss(outputs, y)``, cross-entropy by default),
    restricted to the weights ``names`` (the prunable ones): H v with H = d^2 L / dw^2 over those weights only,
    the rest of the model fixed.

    ``torch.func``: the gradient function ``grad(L)`` is linearised once with ``vjp`` (reverse over reverse)
    and its vector-Jacobian product is H^T v = H v (H is symmetric); on the CPU this measured faster than
    forward-over-reverse (``jvp`` of ``grad``). Data larger than ``chunk`` samples is split into chunks whose
    weighted Hessians are summed, each linearised anew per product to bound memory. BatchNorm uses its running
    statistics (the model must be in eval mode). Vectors are flat, in the order of ``names``, any float dtype
    on the CPU; products come back as float64 on the CPU."""

    def __init__(self, model: nn.Module, names: list[str], x: torch.Tensor, y: torch.Tensor,
                 chunk: int = DEFAULT_SAMPLES, loss=F.cross_entropy):
        if isinstance(model, torch.jit.ScriptModule):
            raise LimitError("the limit needs Hessian-vector products, which torch.func cannot take through a "
                             "TorchScript model; load the model as a state dict or a pickled module")
        params = dict(model.named_parameters())
        missing = [n for n in names if n not in params]
        if not names or missing:
            raise LimitError("the model has no prunable weights (parameters with two or more dimensions)" if not
                             names else f"the model has no parameter {missing[0]!r}")
        if model.training:
            raise LimitError("the model must be in eval mode (BatchNorm on its running statistics)")
        self.model, self.names, self.loss = model, list(names), loss
        self.weights = {n: params[n].detach() for n in self.names}
        self.shapes = [self.weights[n].shape for n in self.names]
        self.sizes = [self.weights[n].numel() for n in self.names]
        self.dim = sum(self.sizes)
        self.dtype, self.device = self.weights[self.names[0]].dtype, self.weights[self.names[0]].device
        n = len(x)
        self.chunks = [(x[i:i + chunk], y[i:i + chunk], min(chunk, n - i) / n) for i in range(0, n, max(1, chunk))]
        self.products = 0
        self._linearised = self._linearise(*self.chunks[0]) if len(self.chunks) == 1 else None

    def _linearise(self, x: torch.Tensor, y: torch.Tensor, share: float):
        def loss(w: dict[str, torch.Tensor]) -> torch.Tensor:
            return self.loss(functional_call(self.model, w, (x,)), y) * share

        try:
            _, product = vjp(grad(loss), self.weights)
        except Exception as e:  # an operation torch.func cannot differentiate twice, in the user's words
            raise LimitError(f"torch.func could not differentiate this model twice: {type(e).__name__}: "
                             f"{str(e).splitlines()[0][:300]}") from e
        return product

    def unflatten(self, v: torch.Tensor) -> dict[str, torch.Tensor]:
        parts = v.to(self.device, self.dtype).split(self.sizes)
        return {n: p.view(s) for n, p, s in zip(self.names, parts, self.shapes, strict=True)}

    def flatten(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([tensors[n].reshape(-1) for n in self.names]).to("cpu", torch.float64)

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        if v.numel() != self.dim:
            raise ValueError(f"the vector has {v.numel()} entries, the prunable weights {self.dim}")
        tangent = self.unflatten(v)
        self.products += 1
        if self._linearised is not None:
            return self.flatten(self._linearised(tangent)[0])
        total = None
        for x, y, share in self.chunks:
            part = self._linearise(x, y, share)(tangent)[0]
            total = part if total is None else {n: total[n] + part[n] for n in self.names}
        return self.flatten(total)


@dataclass(frozen=True)
class RemovedNorm:
    """R(rho)^2 of global magnitude pruning on a continuous scale (module docstring), as the table
    (``ratios``, ``squared``) linearly interpolated: exact (every breakpoint k/D) up to ``REMOVED_NORM_POINTS``
    weights, sampled evenly beyond. ``total``: ||w*||^2; ``weights``: D."""

    ratios: np.ndarray
    squared: np.ndarray
    weights: int

    @classmethod
    def of(cls, weights: torch.Tensor, max_points: int = REMOVED_NORM_POINTS) -> RemovedNorm:
        sq = np.sort(weights.detach().to("cpu", torch.float64).reshape(-1).numpy() ** 2)
        if sq.size == 0:
            raise LimitError("there are no prunable weights")
        if not np.isfinite(sq).all():
            raise LimitError("the prunable weights hold NaN or infinite values")
        cumulative = np.concatenate([[0.0], np.cumsum(sq)])
        ratios = np.arange(sq.size + 1) / sq.size
        if sq.size + 1 > max_points:
            grid = np.linspace(0.0, 1.0, max_points)
            cumulative, ratios = np.interp(grid, ratios, cumulative), grid
        return cls(ratios, cumulative, int(sq.size))

    @property
    def total(self) -> float:
        return float(self.squared[-1])

    def squared_at(self, ratio) -> np.ndarray:
        """R(rho)^2 at ``ratio`` (scalar or array; the fraction removed)."""
        return np.interp(np.asarray(ratio, dtype=float), self.ratios, self.squared)

    def __call__(self, ratio) -> np.ndarray:
        return np.sqrt(self.squared_at(ratio))


def gaussian_width_ratio(r_squared, nodes: np.ndarray, weights: np.ndarray, epsilon: float) -> np.ndarray:
    """gw(R) = sum_j tau_j / (1 + R^2 |theta_j| / (2 epsilon)) (``cal_rate.cal_gw``) at every R^2 in
    ``r_squared``; a zero eigenvalue contributes its full weight (always prunable)."""
    r2 = np.atleast_1d(np.asarray(r_squared, dtype=float))
    return (weights[None, :] / (1.0 + r2[:, None] * np.abs(nodes)[None, :] / (2.0 * epsilon))).sum(axis=1)


def trace_width_ratio(r_squared, trace: float, dim: int, epsilon: float) -> np.ndarray:
    """The trace bound's curve 1 / (1 + R^2 Tr(H) / (2 epsilon D)), Jensen's lower bound of gw(R)."""
    return 1.0 / (1.0 + np.atleast_1d(np.asarray(r_squared, dtype=float)) * trace / (2.0 * epsilon * dim))


def solve_crossing(width, removed: RemovedNorm, iterations: int = 40) -> float:
    """The rho in [0, 1] where rho = width(R(rho)^2) (``width`` takes an array of R^2 and decreases in it, with
    width(0) = 1 > 0, so width(R(rho)^2) - rho falls strictly and crosses zero once): bracketed on the grid
    rho = i / 1000 in one vectorised evaluation, then bisection (to ~1e-15)."""
    grid = np.linspace(0.0, 1.0, CURVE_POINTS + 1)
    values = width(removed.squared_at(grid))
    if values[-1] >= 1.0 - 1e-12:
        return 1.0  # nothing curves the loss: every weight is removable
    above = values > grid
    i = int(np.argmin(above))  # the first grid point at or below the line; above[0] holds (width(0) = 1)
    lo, hi = float(grid[i - 1]), float(grid[i])
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        if float(width(removed.squared_at(mid))[0]) > mid:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def check_epsilon(epsilon) -> float:
    try:
        eps = float(epsilon)
    except (TypeError, ValueError) as e:
        raise LimitError(f"epsilon must be a positive number, got {epsilon!r}") from e
    if not np.isfinite(eps) or eps <= 0:
        raise LimitError(f"epsilon (the loss tolerance) must be a positive, finite number, got {eps:g}")
    return eps


def predicted_ratio(density: SpectralDensity, removed: RemovedNorm, epsilon: float) -> float:
    """rho* solving rho = gw(R(rho)): the predicted limit, as the fraction removed."""
    eps = check_epsilon(epsilon)
    return solve_crossing(lambda r2: gaussian_width_ratio(r2, density.nodes, density.weights, eps), removed)


def trace_bound_ratio(trace: float, removed: RemovedNorm, epsilon: float) -> float:
    """rho_tr solving rho = 1 / (1 + R(rho)^2 Tr(H) / (2 epsilon D)); NaN when the trace is not positive
    (the bound needs a positive curvature)."""
    eps = check_epsilon(epsilon)
    if not trace > 0:
        return float("nan")
    return solve_crossing(lambda r2: trace_width_ratio(r2, trace, removed.weights, eps), removed)


@dataclass(frozen=True)
class Curvature:
    """What the limit needs from the model, computed once (epsilon-independent but for ``loss_spread``):
    the SLQ ``density`` and Hutchinson ``trace`` of the Hessian on the prunable weights, the ``removed`` norm
    table, the mean training ``loss`` and its spread over mini-batches. ``settings``: how it was estimated."""

    model: str
    density: SpectralDensity
    trace: TraceEstimate
    removed: RemovedNorm
    loss: float
    loss_spread: float
    samples: int
    settings: dict
    seconds: float
    products: int  # Hessian-vector products taken
    prefixes: tuple[SpectralDensity, ...] = ()  # the quadrature after a quarter and half of the Lanczos steps

    @classmethod
    def prefixes_of(cls, density: SpectralDensity) -> tuple[SpectralDensity, ...]:
        """The quadratures after a quarter and half of ``density``'s Lanczos steps (from its runs, no product)."""
        steps = max((r.steps for r in density.runs), default=0)
        return tuple(density.truncated(k) for k in sorted({max(2, steps // 4), max(2, steps // 2)}) if k < steps)

    @property
    def weights(self) -> int:
        return self.removed.weights

    def spectrum(self) -> pd.DataFrame:
        """The Ritz pairs: ``eigenvalue``, ``weight`` (tau / probes), ``probe``."""
        return pd.DataFrame({"eigenvalue": self.density.nodes, "weight": self.density.weights,
                             "probe": self.density.probe})

    def density_curve(self, points: int = 800) -> pd.DataFrame:
        """The Gaussian-smoothed eigenvalue density (``eigenvalue``, ``density``) on a grid spanning the Ritz
        values, each spread over 1% of that span (PyHessian's plot; its fixed sigma^2 = 1e-5 assumes larger
        nets' scales)."""
        lo, hi = float(self.density.nodes.min()), float(self.density.nodes.max())
        span = max(hi - lo, 1e-12)
        grid = np.linspace(lo - 0.05 * span, hi + 0.05 * span, points)
        return pd.DataFrame({"eigenvalue": grid, "density": self.density.smoothed(grid, 0.01 * span)})


@dataclass(frozen=True)
class LimitEstimate:
    """The predicted limit of one model at one epsilon. ``ratio``: rho*, the fraction REMOVED (``kept`` is
    1 - rho*); ``trace_bound``: rho_tr (NaN when Tr(H) <= 0); ``epsilon`` and whether it is the measured loss
    spread; ``sensitivity``: rho* and rho_tr at epsilon x ``EPSILON_FACTORS``; ``convergence``: rho* from the
    first quarter, half and all of the Lanczos steps (prefixes of the same runs: no new product; a rho* still
    rising says more steps would raise it); ``curve``: on rho = i / 1000, R(rho), gw(R(rho)) and the trace
    bound's curve; ``curvature``: the spectrum and trace behind it."""

    ratio: float
    trace_bound: float
    epsilon: float
    epsilon_measured: bool
    sensitivity: pd.DataFrame
    convergence: pd.DataFrame
    curve: pd.DataFrame = field(repr=False)
    curvature: Curvature = field(repr=False)

    @property
    def kept(self) -> float:
        return 1.0 - self.ratio

    @property
    def model(self) -> str:
        return self.curvature.model

    def summary(self) -> dict:
        """The figures as plain values (for tables, JSON, the command line and the charts): the predicted limit
        and the trace bound (removed fractions) with the norms R removed there, epsilon, the loss, the trace
        (Hutchinson and SLQ), the largest Ritz value, the negative spectral mass and how it was estimated."""
        c = self.curvature
        bound = self.trace_bound
        return {"model": c.model, "predicted_limit": self.ratio, "kept_at_limit": self.kept,
                "trace_bound": bound, "R_at_limit": float(c.removed(self.ratio)),
                "R_at_trace_bound": float(c.removed(bound)) if np.isfinite(bound) else float("nan"),
                "epsilon": self.epsilon, "epsilon_measured": self.epsilon_measured, "loss": c.loss,
                "loss_spread": c.loss_spread, "weights": c.weights, "trace_hutchinson": c.trace.trace,
                "trace_stderr": c.trace.stderr, "trace_slq": c.density.trace,
                "lambda_max": float(c.density.nodes.max()), "negative_mass": c.density.negative_mass,
                "products": c.products, "seconds": c.seconds, **c.settings}

    def frames(self) -> dict[str, pd.DataFrame]:
        """Everything the charts draw, as frames: ``summary`` (one row, ``summary()``), ``curve``,
        ``sensitivity``, ``convergence``, ``spectrum`` (the Ritz pairs) and ``density`` (smoothed)."""
        return {"summary": pd.DataFrame([self.summary()]), "curve": self.curve, "sensitivity": self.sensitivity,
                "convergence": self.convergence, "spectrum": self.curvature.spectrum(),
                "density": self.curvature.density_curve()}


def predict(curvature: Curvature, epsilon: float | None = None) -> LimitEstimate:
    """The limit at ``epsilon`` (None: the measured loss spread) from a ``curvature`` already estimated: no
    Hessian-vector product, a few milliseconds, so changing epsilon on a screen costs nothing."""
    measured = epsilon is None
    eps = check_epsilon(curvature.loss_spread if measured else epsilon)
    density, removed, trace = curvature.density, curvature.removed, curvature.trace.trace
    rows = [{"factor": f, "epsilon": eps * f, "ratio": predicted_ratio(density, removed, eps * f),
             "trace_bound": trace_bound_ratio(trace, removed, eps * f)} for f in EPSILON_FACTORS]
    sensitivity = pd.DataFrame(rows)
    at_one = sensitivity[sensitivity["factor"] == 1.0].iloc[0]
    convergence = pd.DataFrame([{"steps": max(r.steps for r in d.runs), "ratio": predicted_ratio(d, removed, eps)}
                                for d in (*curvature.prefixes, density) if d.runs], columns=["steps", "ratio"])
    grid = np.arange(CURVE_POINTS) / CURVE_POINTS
    r2 = removed.squared_at(grid)
    curve = pd.DataFrame({"ratio": grid, "R": np.sqrt(r2),
                          "gw": gaussian_width_ratio(r2, density.nodes, density.weights, eps),
                          "trace_gw": trace_width_ratio(r2, trace, removed.weights, eps) if trace > 0 else np.nan})
    return LimitEstimate(float(at_one["ratio"]), float(at_one["trace_bound"]), eps, measured, sensitivity,
                         convergence, curve, curvature)


def estimate_curvature(wb: Workbench, probes: int = DEFAULT_PROBES, lanczos_steps: int = DEFAULT_LANCZOS_STEPS,
                       lanczos_probes: int = DEFAULT_LANCZOS_PROBES, samples: int | None = DEFAULT_SAMPLES,
                       loss_batch: int = DEFAULT_LOSS_BATCH, seed: int = 0, progress: Progress = None) -> Curvature:
    """The expensive part of the estimate on the workbench's dense model: the loss spread over the whole
    training split, then ``probes`` Hutchinson products and ``lanczos_probes`` x ``lanczos_steps`` Lanczos
    products of the Hessian of the loss on the first ``samples`` training samples (module docstring).
    Measured: about 4 s on the residual CNN (digits-resnet) on 2 CPU threads with the defaults."""
    for name, value, low in (("Hutchinson probes", probes, 1), ("Lanczos steps", lanczos_steps, 2),
                             ("Lanczos probes", lanczos_probes, 1)):
        if int(value) != value or value < low:
            raise LimitError(f"{name} must be a whole number of at least {low}, got {value!r}")
    say = progress or (lambda f, text: None)
    start = time.perf_counter()
    wb.restore()
    model = wb.model
    x_all, y_all = training_samples(wb)
    say(0.0, "loss spread over the training mini-batches")
    loss, spread = loss_spread(model, x_all, y_all, loss_batch)
    x, y = x_all[:samples] if samples else x_all, y_all[:samples] if samples else y_all
    names = list(wb.prunable)
    hessian = PrunableHessian(model, names, x, y)
    removed = RemovedNorm.of(torch.cat([wb.prunable[n].detach().reshape(-1) for n in names]))
    dtype = torch.float64 if hessian.dim * lanczos_steps * 8 <= FLOAT64_BASIS_BYTES else torch.float32
    total = probes + lanczos_probes * lanczos_steps

    def counted(v: torch.Tensor) -> torch.Tensor:
        out = hessian(v)
        say(hessian.products / total, f"Hessian-vector product {hessian.products} of {total}")
        return out

    trace = hutchinson_trace(counted, hessian.dim, int(probes), seed=seed)
    density = slq(counted, hessian.dim, int(lanczos_steps), int(lanczos_probes), seed=seed + 10_000, dtype=dtype)
    settings = {"probes": int(probes), "lanczos_steps": int(lanczos_steps), "lanczos_probes": int(lanczos_probes),
                "samples": len(x), "loss_batch": int(loss_batch), "seed": int(seed)}
    say(1.0, "done")
    return Curvature(wb.name, density, trace, removed, loss, spread, len(x), settings, time.perf_counter() - start,
                     hessian.products, Curvature.prefixes_of(density))


def estimate_limit(wb: Workbench, epsilon: float | None = None, progress: Progress = None, **settings
                   ) -> LimitEstimate:
    """The predicted limit of global magnitude pruning on ``wb``'s model: ``estimate_curvature(wb, **settings)``
    then ``predict`` at ``epsilon`` (None: the measured loss spread)."""
    return predict(estimate_curvature(wb, progress=progress, **settings), epsilon)


def magnitude_accuracy(wb: Workbench, ratios, progress: Progress = None, should_stop: ShouldStop = None
                       ) -> pd.DataFrame:
    """Accuracy and loss of one-shot global magnitude pruning (the registry's ``magnitude-global``, no
    fine-tuning) at every ratio, with the norm of the removed weights (R, measured from the plan's masks).
    Columns: ratio, accuracy, loss, R. Stops early, returning what it has, when ``should_stop()``."""
    from .methods import make_method

    method = make_method("magnitude-global").prepare(wb)
    prunable = {k: p.detach() for k, p in wb.prunable.items()}
    rows = []
    for i, r in enumerate(ratios):
        if should_stop is not None and should_stop():
            break
        plan = method.plan(float(r))
        ev = wb.evaluate_plan(plan, structured="masked")
        removed = sum(float((prunable[k].double()[~m.to(prunable[k].device)] ** 2).sum())
                      for k, m in plan.masks.items())
        rows.append({"ratio": float(r), "accuracy": ev.accuracy, "loss": ev.loss, "R": removed ** 0.5})
        if progress is not None:
            progress((i + 1) / len(ratios), f"global magnitude at ratio {float(r):.2f}: accuracy {ev.accuracy:.1%}")
    return pd.DataFrame(rows, columns=["ratio", "accuracy", "loss", "R"])


def observed_collapse(accuracy: pd.DataFrame, dense_accuracy: float, drop: float = 0.01) -> float | None:
    """The first ratio of ``accuracy`` (``magnitude_accuracy``) whose accuracy is more than ``drop`` (one point)
    below the dense model's; None when no ratio on the grid loses that much."""
    below = accuracy[accuracy["accuracy"] < dense_accuracy - drop].sort_values("ratio")
    return float(below["ratio"].iloc[0]) if len(below) else None


__all__ = ["CURVE_POINTS", "DEFAULT_LANCZOS_PROBES", "DEFAULT_LANCZOS_STEPS", "DEFAULT_LOSS_BATCH", "DEFAULT_PROBES",
           "DEFAULT_SAMPLES", "EPSILON_FACTORS", "Curvature", "LimitError", "LimitEstimate", "PrunableHessian",
           "RemovedNorm", "check_epsilon", "estimate_curvature", "estimate_limit", "gaussian_width_ratio",
           "loss_spread", "magnitude_accuracy", "observed_collapse", "predict", "predicted_ratio", "solve_crossing",
           "trace_bound_ratio", "trace_width_ratio", "training_samples"]
