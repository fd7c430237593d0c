"""The i-SpaSP README's figure "Synthetic Pruning Experiments on Two-Layer Networks" (Wolfe & Kyrillidis, arXiv
2112.04905; methods.md §10): random two-layer ReLU networks whose hidden representation is p-compressible, pruned
by i-SpaSP at every width, and the decay of the output residual with the pruned width."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..algorithms.cosamp import ispasp_select
from . import Progress, ShouldStop


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
                         step: int = 1, signed: bool = True, seed: int = 0, random_seeds: int = 3,
                         quick: bool = False,
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

    The baseline: ``random_seeds`` (3) uniformly random kept sets of the same width (nested per seed), whose
    mean residual is ``random_residual`` (``random_relative``): random selection decays faster for smaller p as
    well (the hidden units' magnitudes follow the same power law), so only a comparison with it can tell a
    recovery that works from one that does not.

    ``quick``: half the widths (50, 100 by default), every 3rd pruned width, 128 samples (tests). Returns a tidy
    frame with columns width, sparsity, pruned_width, residual, relative (residual / ||Y||^2), settled (the
    fixed-point iteration, -1 if none), random_residual, random_relative.
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
            dense = layer2(hidden)
            start = float(dense.pow(2).sum())
            g = torch.Generator().manual_seed(seed + 1)
            orders = [torch.randperm(width, generator=g) for _ in range(random_seeds)]
            rows.append({"width": width, "sparsity": p, "pruned_width": 0, "residual": start, "relative": 1.0,
                         "settled": 0, "random_residual": start, "random_relative": 1.0})
            for s in range(step, width, step):
                sel = ispasp_select(hidden, layer2, s, iterations, signed, affine=True)
                rnd = float(np.mean([_residual(hidden, layer2, dense, order[:s]) for order in orders]))
                rows.append({"width": width, "sparsity": p, "pruned_width": s, "residual": sel.residuals[-1],
                             "relative": sel.residuals[-1] / start,
                             "settled": sel.settled if sel.settled is not None else -1,
                             "random_residual": rnd, "random_relative": rnd / start})
            done += 1
            if progress is not None:
                progress(0.5 * done / total, f"synthetic: width {width}, p = {p}")
    return pd.DataFrame(rows)


def _residual(hidden: torch.Tensor, layer2: nn.Module, dense: torch.Tensor, kept: torch.Tensor) -> float:
    mask = torch.zeros(hidden.shape[1], dtype=hidden.dtype)
    mask[kept] = 1
    return float((dense - layer2(hidden * mask)).pow(2).sum())


def decay_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per (width, sparsity) of a ``synthetic_experiment`` frame: ``mean_log10_drop`` = the mean over pruned
    widths s >= 1 of log10(residual(s) / residual(0)) (the area under the log-residual curve; more negative =
    faster decay), and ``exponent`` = the least-squares slope of log residual against log s over
    1 <= s <= width/2 (the polynomial degree; the power-law tail sum predicts about 1 - 2/p); with the random
    baseline's columns also ``random_mean_log10_drop``, and ``gap`` = mean over s of log10(i-SpaSP residual /
    random residual) (negative: i-SpaSP recovers the output better than random selection)."""
    rows = []
    for (width, p), df in frame.groupby(["width", "sparsity"], sort=True):
        df = df.sort_values("pruned_width")
        tail = df[df.pruned_width >= 1]
        logs = np.log10(np.maximum(tail.relative.to_numpy(float), 1e-300))
        fit = tail[tail.pruned_width <= width / 2]
        slope = (np.polyfit(np.log(fit.pruned_width.to_numpy(float)),
                            np.log(np.maximum(fit.residual.to_numpy(float), 1e-300)), 1)[0]
                 if len(fit) >= 2 else float("nan"))
        row = {"width": int(width), "sparsity": float(p), "mean_log10_drop": float(logs.mean()),
               "exponent": float(slope), "predicted_exponent": 1.0 - 2.0 / float(p),
               "last_relative": float(tail.relative.iloc[-1]) if len(tail) else float("nan")}
        if "random_relative" in tail:
            rnd = np.log10(np.maximum(tail.random_relative.to_numpy(float), 1e-300))
            row.update(random_mean_log10_drop=float(rnd.mean()), gap=float((logs - rnd).mean()))
        rows.append(row)
    return pd.DataFrame(rows)


__all__ = ["decay_summary", "synthetic_experiment", "synthetic_network"]
