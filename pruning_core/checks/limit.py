"""Zhang, Zhang, Sun, Liu, "How Sparse Can We Prune a Deep Network: A Fundamental Limit Perspective" (NeurIPS
2024, arXiv 2306.05857): the predicted limit of one-shot global magnitude pruning (``pruning_core.limit``) against
the observed one on the current model. Ratio is the fraction REMOVED (the authors' code's rho; the paper's text
calls the kept fraction the "pruning ratio").

Self-tests (hold whenever the code is right): on a quadratic model whose Hessian is known, Lanczos recovers the
spectrum, Hutchinson's trace lies within its error of the exact trace and SLQ's limit equals the exact one; on
the current model the Hessian-vector product is symmetric and R(rho) is the norm the magnitude plans remove.
Claims, per model, as the code's pipeline judges them (``cal_rate.py``: predicted against "actual"):

* the predicted limit rho* lies within ``AGREEMENT`` (0.05) of the observed collapse, the first ratio on the grid
  whose accuracy is more than one point below the dense model's (the authors' ``cal_rate.py`` uses 0.1 point on
  CIFAR test sets of 10,000 images; on our 540 evaluation images one image is 0.19 point, so we use one point);
  the paper's Theo.-vs-Actual gaps were not available to us (digest §10): 0.05 is five steps of the 0.01 grid;
* the trace bound rho_tr (from Hutchinson's Tr(H)) lies below rho* (Jensen's inequality for a positive
  semi-definite Hessian; digest §3.1).

Descriptions: rho* at epsilon x 0.5, 1, 2, and rho* from a quarter, half and all of the Lanczos steps, which shows
how far the quadrature is from converged: with the tiny epsilon of our overfit demo models the limit depends on
eigenvalues near zero that a few dozen Lanczos steps cannot resolve, and rho* rises with the steps (measured on
digits-mlp: 0.54-0.61 at 40 steps, 0.73 +- 0.01 at 160, 0.716 at 640, over three start vectors).
"""

from __future__ import annotations

import dataclasses
import functools
import time

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..algorithms.spectrum import SpectralDensity, hutchinson_trace, lanczos, slq
from ..experiments import Progress, ShouldStop
from ..limit import (
    DEFAULT_PROBES,
    DEFAULT_SAMPLES,
    LimitEstimate,
    PrunableHessian,
    RemovedNorm,
    estimate_curvature,
    magnitude_accuracy,
    observed_collapse,
    predict,
    predicted_ratio,
    training_samples,
)
from ..workbench import Workbench
from .base import Check, CheckReport, CheckResult

AGREEMENT = 0.05  # |rho* - observed collapse| that counts as agreement (removed fraction)
COLLAPSE_DROP = 0.01  # the observed collapse: the first ratio losing more than one accuracy point
CHECK_RATIOS = tuple(np.round(np.arange(100) / 100, 2))
QUICK_RATIOS = tuple(np.round(np.arange(50) / 50, 2))
QUICK_SETTINGS = {"probes": 5, "lanczos_steps": 30, "samples": 256}
FULL_SETTINGS = {"probes": DEFAULT_PROBES, "lanczos_steps": 128, "samples": DEFAULT_SAMPLES}  # the code's lanczos_iter
SOURCE = "Zhang et al., NeurIPS 2024 (arXiv 2306.05857); code cal_rate.py (predicted vs actual threshold)"


def paper_check(wb: Workbench, quick: bool = False, progress: Progress = None, should_stop: ShouldStop = None
                ) -> CheckReport:
    """The fundamental limit on ``wb``'s model (module docstring). Full: 10 Hutchinson probes, 128 Lanczos steps
    (the authors' ``lanczos_iter``), the Hessian on 512 training samples, accuracy on the 0.01 grid. ``quick``:
    5 probes, 30 steps, 256 samples, the 0.02 grid; the same claims and verdict rules. Frames: the estimate's
    (``LimitEstimate.frames``) and ``accuracy`` (ratio, accuracy, loss, R)."""
    start = time.perf_counter()
    report = CheckReport("limit")
    say = progress or (lambda f, text: None)
    stop = should_stop or (lambda: False)
    say(0.0, "self-test: SLQ and Hutchinson on a quadratic model with a known Hessian")
    report.results.append(quadratic_self_test())
    settings = dict(QUICK_SETTINGS if quick else FULL_SETTINGS)
    curvature = estimate_curvature(wb, **settings, progress=lambda f, text: say(0.05 + 0.45 * f, text))
    estimate = predict(curvature)
    report.frames.update(estimate.frames())
    ratios = QUICK_RATIOS if quick else CHECK_RATIOS
    accuracy = magnitude_accuracy(wb, ratios, progress=lambda f, text: say(0.5 + 0.3 * f, text), should_stop=stop)
    report.frames["accuracy"] = accuracy
    dense = wb.dense_metrics().accuracy
    report.results.append(_removed_norm_result(accuracy, curvature.removed))
    report.results.append(_symmetry_result(wb, settings["samples"]))
    if len(accuracy) < len(ratios):
        report.complete = False
    report.results.append(agreement_result(estimate.ratio, accuracy, dense, report.complete))
    report.results.append(trace_bound_result(estimate))
    sens = estimate.sensitivity
    report.results.append(CheckResult(
        "limit", "How the predicted limit moves with epsilon (the paper: a flatter landscape or smaller weights "
        "change the limit; epsilon sets the loss tolerance)",
        "rho* at epsilon x " + ", ".join(f"{f:g}: {r:.3f}" for f, r in zip(sens["factor"], sens["ratio"], strict=True))
        + f" (epsilon = loss spread {estimate.epsilon:.3g}, mean training loss {curvature.loss:.3g})",
        None, SOURCE, kind="description"))
    conv = estimate.convergence
    report.results.append(CheckResult(
        "limit", "How far the Lanczos quadrature is from converged (more steps resolve the eigenvalues near zero "
        "that decide gw(R) when epsilon is small; the code runs 128)",
        "rho* from the first " + ", ".join(f"{int(k)}: {r:.3f}" for k, r in zip(conv["steps"], conv["ratio"],
                                                                               strict=True)) + " Lanczos steps",
        None, SOURCE, kind="description"))
    report.notes.append(
        f"Ratio = fraction removed. {curvature.weights:,} prunable weights; Hessian on {curvature.samples} training "
        f"samples, {settings['probes']} Hutchinson probes, {settings['lanczos_steps']} Lanczos steps "
        f"({curvature.products} Hessian-vector products, {curvature.seconds:.1f} s); epsilon over training batches "
        f"of {curvature.settings['loss_batch']}; accuracy on {len(wb.eval_y)} evaluation samples, no fine-tuning; "
        "the demo models were trained without the paper's l1 term (LOMP).")
    report.seconds = time.perf_counter() - start
    say(1.0, "done")
    return report


# ----- self-tests -------------------------------------------------------------------------------------------
QUADRATIC_CLAIM = ("On a quadratic model with a known Hessian, Lanczos recovers the spectrum, Hutchinson's trace "
                   "matches the exact trace and SLQ's predicted limit equals the exact one")


def quadratic_self_test(seed: int = 0) -> CheckResult:
    """The synthetic self-test (``quadratic_spectrum_test``, computed once per process), as a fresh result
    labelled ``synthetic`` (it needs no model)."""
    return dataclasses.replace(quadratic_spectrum_test(seed), model="synthetic")


@functools.lru_cache(maxsize=2)
def quadratic_spectrum_test(seed: int = 0) -> CheckResult:
    """A linear layer 24 -> 40 with the squared error: H = (X^T X / N) kron I_40 (960 weights, 24 distinct
    eigenvalues of multiplicity 40). 24 Lanczos steps from one probe span the whole Krylov space: its Ritz values
    are those eigenvalues (to 1e-6 of lambda_max; rounding splits the multiplicities, so the run does not stop by
    itself); SLQ over 4 probes gives rho* within 0.02 of rho* from the exact spectrum (the probes' weights differ
    from 1/24 by sampling); Hutchinson (40 probes) lies within 4 standard errors. Synthetic: run once per
    process (a few milliseconds)."""
    g = torch.Generator().manual_seed(seed)
    n, d_in, d_out = 300, 24, 40
    model = nn.Linear(d_in, d_out, bias=False).double().eval()
    x = torch.randn(n, d_in, generator=g, dtype=torch.float64) * torch.linspace(0.3, 3.0, d_in, dtype=torch.float64)
    y = torch.randn(n, d_out, generator=g, dtype=torch.float64)
    hessian = PrunableHessian(model, ["weight"], x, y, loss=lambda out, t: 0.5 * ((out - t) ** 2).sum(1).mean())
    exact = np.linalg.eigvalsh((x.T @ x / n).numpy())
    run = lanczos(hessian, hessian.dim, d_in, seed=seed)
    eig_error = float(np.max(np.abs(np.sort(run.ritz_values) - exact) / exact.max())) if run.steps == d_in else 1.0
    trace = hutchinson_trace(hessian, hessian.dim, probes=40, seed=seed)
    exact_trace = float(exact.sum()) * d_out
    density = slq(hessian, hessian.dim, d_in, probes=4, seed=seed)
    exact_density = SpectralDensity(exact, np.full(d_in, 1 / d_in), np.zeros(d_in), hessian.dim)
    removed = RemovedNorm.of(model.weight.detach())
    eps = 0.05 * removed.total * float(exact.mean())  # puts the crossing mid-range
    rho, rho_exact = predicted_ratio(density, removed, eps), predicted_ratio(exact_density, removed, eps)
    ok = eig_error < 1e-6 and abs(trace.trace - exact_trace) <= 4 * trace.stderr and abs(rho - rho_exact) <= 0.02
    figure = (f"{d_in} distinct eigenvalues from {run.steps} Lanczos steps, error {eig_error:.1e} of lambda_max; "
              f"trace {trace.trace:.2f} +- {trace.stderr:.2f} vs exact {exact_trace:.2f}; rho* {rho:.3f} (SLQ) vs "
              f"{rho_exact:.3f} (exact spectrum)")
    return CheckResult("limit", QUADRATIC_CLAIM, figure, ok, "Golub & Meurant 2010; Ubaru, Chen & Saad 2017; "
                       "Hutchinson 1990", kind="self-test")


def _removed_norm_result(accuracy: pd.DataFrame, removed: RemovedNorm) -> CheckResult:
    claim = "R(rho) on the continuous scale equals the norm of the weights the global magnitude plans remove"
    if accuracy.empty:
        return CheckResult("limit", claim, "not run (stopped)", None, SOURCE, kind="self-test")
    counts = np.round(accuracy["ratio"].to_numpy() * removed.weights)  # what the plans remove: round(ratio * D)
    expected = removed(counts / removed.weights)
    error = float(np.max(np.abs(accuracy["R"].to_numpy() - expected)) / max(float(np.sqrt(removed.total)), 1e-300))
    return CheckResult("limit", claim, f"max difference {error:.1e} of ||w|| over {len(accuracy)} ratios",
                       error < 1e-6, SOURCE, kind="self-test")


def _symmetry_result(wb: Workbench, samples: int) -> CheckResult:
    """u^T (H v) = v^T (H u) for two random vectors: the Hessian-vector product is a symmetric operator."""
    x, y = training_samples(wb, samples)
    hessian = PrunableHessian(wb.model, list(wb.prunable), x, y)
    g = torch.Generator().manual_seed(1)
    u, v = (torch.randn(hessian.dim, generator=g, dtype=torch.float64) for _ in range(2))
    a, b = float(u @ hessian(v)), float(v @ hessian(u))
    error = abs(a - b) / max(abs(a), abs(b), 1e-30)
    return CheckResult("limit", "The Hessian-vector product on the prunable weights is symmetric: "
                       "u^T (H v) = v^T (H u)", f"{a:.6g} vs {b:.6g} (relative difference {error:.1e})",
                       error < 1e-3, "torch.func: vjp of grad", kind="self-test")


# ----- claims -------------------------------------------------------------------------------------------------
AGREEMENT_CLAIM = ("The predicted limit rho* = gw(R(rho*)) coincides with the actual threshold of one-shot global "
                   f"magnitude pruning (judged within {AGREEMENT:g} of the removed fraction, per model)")


def agreement_result(rho: float, accuracy: pd.DataFrame, dense: float, complete: bool = True) -> CheckResult:
    """The agreement claim: |rho* - observed collapse| <= ``AGREEMENT``; when no ratio of the grid lost a point,
    undecided if rho* lies at the grid's end (or the run stopped), else no."""
    if accuracy.empty:
        return CheckResult("limit", AGREEMENT_CLAIM, "not run (stopped)", None, SOURCE)
    collapse = observed_collapse(accuracy, dense, COLLAPSE_DROP)
    if collapse is None:
        last = float(accuracy["ratio"].max())
        figure = f"rho* = {rho:.3f}; no ratio up to {last:.2f} lost more than one point"
        agrees = None if (rho >= last - AGREEMENT or not complete) else False
        return CheckResult("limit", AGREEMENT_CLAIM, figure, agrees, SOURCE)
    gap = rho - collapse
    figure = (f"rho* = {rho:.3f} removed vs observed collapse {collapse:.2f} (first ratio losing more than one "
              f"point; dense {dense:.1%}): gap {gap:+.3f}")
    return CheckResult("limit", AGREEMENT_CLAIM, figure, bool(abs(gap) <= AGREEMENT), SOURCE)


def trace_bound_result(estimate: LimitEstimate) -> CheckResult:
    """The trace-bound claim: rho_tr <= rho* (undecided when Tr(H) is not positive)."""
    claim = ("The lower bound from the Hessian trace, rho_tr = 1 / (1 + R(rho_tr)^2 Tr(H) / (2 epsilon D)), lies "
             "below the predicted limit")
    s = estimate.summary()
    if not np.isfinite(estimate.trace_bound):
        return CheckResult("limit", claim, f"Tr(H) = {s['trace_hutchinson']:.3g} is not positive: no bound", None,
                           SOURCE)
    figure = (f"rho_tr = {estimate.trace_bound:.3f} vs rho* = {estimate.ratio:.3f} (Tr(H) = "
              f"{s['trace_hutchinson']:.3g} +- {s['trace_stderr']:.2g}; negative spectral mass "
              f"{s['negative_mass']:.1%})")
    return CheckResult("limit", claim, figure, bool(estimate.trace_bound <= estimate.ratio), SOURCE)


def figures(report: CheckReport, dense_accuracy: float | None = None) -> list[dict]:
    """The crossing beside accuracy with the three lines; the eigenvalue density below."""
    from ..charts import limit as charts

    if "summary" not in report.frames:
        return []
    frames = report.frames
    rows = [{"crossing": charts.crossing_chart(frames)}]
    if "accuracy" in frames and len(frames["accuracy"]):
        dense = dense_accuracy if dense_accuracy is not None else float(frames["accuracy"]["accuracy"].iloc[0])
        collapse = observed_collapse(frames["accuracy"], dense, COLLAPSE_DROP)
        rows[0]["accuracy"] = charts.accuracy_limits_chart(frames["accuracy"], frames, collapse, dense_accuracy)
    rows.append({"density": charts.eigen_density_chart(frames)})
    return rows


CHECK = Check(
    "limit", "Fundamental limit of pruning (Zhang et al., 2024)",
    "How many weights can one-shot global magnitude pruning remove before the loss leaves its tolerance "
    "epsilon? The paper's answer is the crossing rho = gw(R(rho)) of the Gaussian width of the loss sublevel set, "
    "computed from the Hessian's spectrum (stochastic Lanczos quadrature), with a cheaper lower bound from its "
    "trace. **rho is the fraction removed.** Checked against the first ratio that loses more than one point.",
    paper_check, figures, auto=False)
