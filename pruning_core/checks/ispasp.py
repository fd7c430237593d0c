"""Wolfe & Kyrillidis, "i-SpaSP: Structured Neural Pruning via Sparse Signal Recovery" (arXiv 2112.04905, 2022):
the paper's claims on a synthetic two-layer network (``experiments.two_layer``) and on the current model, with
``methods.ispasp.ISpaSP`` against the unit baselines of ``methods.units``."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from ..algorithms.cosamp import ispasp_select, output_residual
from ..experiments import Progress, ShouldStop
from ..experiments.two_layer import decay_summary, synthetic_experiment
from ..methods.base import Method
from ..methods.ispasp import ISpaSP
from ..methods.units import ActivationMagnitude, RandomUnits
from ..plan import PlanError
from ..structure.units import hidden_representation, kept_count, layer_two, require_units
from ..workbench import Workbench
from .base import Check, CheckReport, CheckResult

PAPER = "Wolfe & Kyrillidis, i-SpaSP: Structured Neural Pruning via Sparse Signal Recovery (arXiv 2112.04905)"


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
    dense = {u.group: hidden_representation(u, ispasp.dense_inputs[u.consumer]) for u in units}
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
                    ("activation-magnitude", 0, activation.keep_order[u.group][:s])]
            sets += [("random-units", m.seed, m.keep_order[u.group][:s]) for key, m in methods if key == "random-units"]
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


def figures(report: CheckReport, dense_accuracy: float | None = None) -> list[dict]:
    """The synthetic residual decay; below it the residual per iteration beside accuracy against the ratio."""
    from ..charts import ispasp as ispasp_charts

    frames, rows = report.frames, []
    if "synthetic" in frames:
        rows.append({"synthetic": ispasp_charts.synthetic_residual(frames["synthetic"])})
    row = {}
    if "residual" in frames:
        row["residual"] = ispasp_charts.residual_by_iteration(frames["residual"])
    if "accuracy" in frames:
        row["accuracy"] = ispasp_charts.accuracy_by_ratio(frames["accuracy"], dense_accuracy=dense_accuracy)
    return rows + [row]


CHECK = Check(
    "ispasp", "i-SpaSP (Wolfe & Kyrillidis, 2022)",
    "Each two-layer unit's hidden channels are chosen by a CoSaMP-style loop: the gradient of the output "
    "residual proposes candidates, the dense activation picks among them. The paper's theory says the "
    "error decays faster the sparser the hidden representation; the synthetic experiment tests that.",
    paper_check, figures, auto=True)
