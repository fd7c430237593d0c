"""Wolfe & Kyrillidis, "i-SpaSP: Structured Neural Pruning via Sparse Signal Recovery" (arXiv 2112.04905, 2022):
the paper's claims on a synthetic two-layer network (``experiments.two_layer``) and on the current model, with
``methods.ispasp.ISpaSP`` against the unit baselines of ``methods.units`` through the identical pipeline."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import torch

from ..experiments import Progress, ShouldStop
from ..experiments.two_layer import decay_summary, synthetic_experiment
from ..methods.ispasp import ISpaSP
from ..methods.units import FINAL_EPOCHS, ActivationMagnitude, RandomUnits
from ..plan import PlanError
from ..structure.units import kept_count, require_units
from ..workbench import Workbench
from .base import Check, CheckReport, CheckResult

PAPER = "Wolfe & Kyrillidis, i-SpaSP: Structured Neural Pruning via Sparse Signal Recovery (arXiv 2112.04905)"
# The paper's keep ratios (0.3-0.4 kept on ResNet-34, 0.3 on MobileNetV2) lie at removal ratios 0.6-0.9; below
# 0.5 removed, i-SpaSP's candidate set holds every channel and it is activation magnitude (the self-test).
RATIOS = {"quick": (0.7, 0.9), "default": (0.6, 0.7, 0.8, 0.9)}
FINAL = {"quick": 1, "default": FINAL_EPOCHS}
SEEDS = 3  # random units through the identical pipeline: the paper-like minimum
MARGIN = 0.01  # "more accuracy" means ahead by more than a point (and more than random's standard error)
IDENTITY_RATIOS = (0.3, 0.5)
SYNTHETIC_MARGIN = -1.0  # i-SpaSP's residual at least one decade below random selection's, on average over widths
_synthetic_cache: dict[bool, pd.DataFrame] = {}  # the synthetic experiment needs no model: run once per process


def synthetic(quick: bool, progress: Progress = None, should_stop: ShouldStop = None) -> pd.DataFrame:
    """``synthetic_experiment(quick=quick)``, run once per process and argument (it does not depend on the
    model, and ``check`` runs every check on three models)."""
    if quick not in _synthetic_cache:
        frame = synthetic_experiment(quick=quick, progress=progress, should_stop=should_stop)
        if should_stop is not None and should_stop():
            return frame
        _synthetic_cache[quick] = frame
    return _synthetic_cache[quick]


def paper_check(wb: Workbench, quick: bool = False, progress: Progress = None,
                should_stop: ShouldStop = None) -> CheckReport:
    """i-SpaSP's claims on a synthetic two-layer network and on the current model.

    * claim (synthetic, the repository's figure): sparser hidden representations (smaller p) make i-SpaSP's
      residual decay faster with the pruned width, beyond random selection of the same width: at every hidden
      width, i-SpaSP's mean log10 residual relative to random selection's (``gap``) is strictly ordered by p and
      at most ``SYNTHETIC_MARGIN`` (a decade below random) for every p. Random selection alone decays faster
      for smaller p as well, so the ordering of i-SpaSP's own residual could not fail.
    * claim (model, the paper's pipeline): after the official pipeline (sequential, one epoch of fine-tuning
      after each unit, a final fine-tune), i-SpaSP keeps more test accuracy than random units of the same widths
      through the identical pipeline (``SEEDS`` seeds), at ratios 0.6-0.9 (``RATIOS``): the mean accuracy gap
      over the ratios exceeds one standard error of random's mean (over seeds) and one point (``MARGIN``;
      retraining moves accuracies by about that between runs). Activation magnitude through the same pipeline
      is reported beside them.
    * self-test: at ratio <= 0.5 (2s >= width) the candidate set holds every channel, so on the dense schedule
      i-SpaSP keeps exactly the s largest activation sums: activation magnitude (compared by the kept a-values,
      so ties among equal activations, e.g. dead channels, do not count).
    * descriptions: accuracy without fine-tuning (dense schedule, no training: the paper always fine-tunes),
      and the residual per iteration (the paper claims no monotone decrease for this no-refit variant).

    ``quick``: two ratios and one final epoch. Frames: ``synthetic``, ``synthetic_summary``, ``accuracy``
    (method, seed, ratio, kept_fraction, accuracy; after fine-tuning), ``accuracy_untuned`` (the same without
    training), ``residual`` (unit, group, ratio, iteration, residual; dense schedule)."""
    start = time.perf_counter()
    report = CheckReport("ispasp")
    mode = "quick" if quick else "default"

    def stopped() -> bool:
        return should_stop is not None and bool(should_stop())

    def tick(fraction: float, text: str) -> None:
        if progress is not None:
            progress(fraction, text)

    tick(0.0, "synthetic two-layer experiment (once per run)")
    report.frames["synthetic"] = frame = synthetic(quick, should_stop=should_stop)
    report.results.append(synthetic_verdict(frame, report))
    if stopped():
        return _finish(report, start, complete=False)
    try:
        units = require_units(wb, "i-SpaSP")
    except PlanError as e:
        report.notes.append(str(e))
        report.results.append(CheckResult("ispasp", CLAIM_MODEL, "this model has no two-layer units", None, PAPER))
        return _finish(report, start)

    ratios = RATIOS[mode]
    pipeline = {"block_epochs": 1, "final_epochs": FINAL[mode], "schedule": "sequential"}
    tuned = [("ispasp", ISpaSP(**pipeline)), ("activation-magnitude", ActivationMagnitude(**pipeline))]
    tuned += [("random-units", RandomUnits(seed=k, **pipeline)) for k in range(SEEDS)]
    untuned = [("ispasp", ISpaSP(schedule="dense")), ("activation-magnitude", ActivationMagnitude())]
    untuned += [("random-units", RandomUnits(seed=k)) for k in range(SEEDS)]
    for _, m in tuned + untuned:
        m.prepare(wb)
    total_size = sum(u.size for u in units)
    acc_rows, raw_rows, residual_rows = [], [], []
    steps = len(ratios) * len(tuned)
    for i, ratio in enumerate(ratios):
        kept_fraction = sum(kept_count(u.size, ratio) for u in units) / total_size
        for j, (key, m) in enumerate(tuned):
            if stopped():
                report.notes.append("stopped before every fine-tuned run finished")
                return _finish(report, start, complete=False)
            acc_rows.append({"method": key, "seed": m.seed, "ratio": ratio, "kept_fraction": kept_fraction,
                             "accuracy": wb.evaluate_plan(m.plan(ratio)).accuracy})
            tick(0.05 + 0.9 * (i * len(tuned) + j + 1) / steps, f"ratio {ratio:g}: {key} (seed {m.seed}) "
                 f"fine-tuned, accuracy {acc_rows[-1]['accuracy']:.1%}")
        for key, m in untuned:
            plan = m.plan(ratio)
            raw_rows.append({"method": key, "seed": m.seed, "ratio": ratio, "kept_fraction": kept_fraction,
                             "accuracy": wb.evaluate_plan(plan).accuracy})
            if key == "ispasp":
                titles = plan.details["units"]
                residual_rows += [{"unit": titles[g], "group": g, "ratio": ratio, "iteration": it, "residual": r}
                                  for g, hist in plan.details["residuals"].items() for it, r in enumerate(hist)]
    report.frames["accuracy"] = accuracy = pd.DataFrame(acc_rows)
    report.frames["accuracy_untuned"] = raw = pd.DataFrame(raw_rows)
    report.frames["residual"] = residual = pd.DataFrame(residual_rows)
    report.results.append(accuracy_verdict(accuracy))
    report.results.append(identity_result(untuned[0][1], untuned[1][1]))
    report.results.append(untuned_description(raw))
    report.results.append(residual_description(residual))
    report.notes.append(f"Pipeline: units in forward order, each chosen on the already pruned and fine-tuned "
                        f"network, 1 epoch of fine-tuning after each unit and {FINAL[mode]} at the end (SGD lr "
                        "0.01, Nesterov, weight decay 5e-4); the paper fine-tunes 90 epochs at the end on ImageNet.")
    tick(1.0, "done")
    return _finish(report, start)


def _finish(report: CheckReport, start: float, complete: bool = True) -> CheckReport:
    report.complete = report.complete and complete
    report.seconds = time.perf_counter() - start
    return report


CLAIM_SYNTHETIC = ("Sparser hidden representations (smaller p) make the pruning residual decay faster with the pruned "
                   "width, beyond random selection of the same width")
SRC_SYNTHETIC = "README figure 'Synthetic Pruning Experiments on Two-Layer Networks'; methods.md §10"
CLAIM_MODEL = ("After the paper's fine-tuning, i-SpaSP keeps more accuracy than random units of the same widths "
               "(ratios 0.6-0.9)")
SRC_MODEL = "paper §5 (MNIST FFNs, ImageNet ResNet-34 / MobileNetV2), prune_resnet34_ispasp.py pipeline"
IDENTITY = "At ratio <= 0.5 (2s >= width) i-SpaSP keeps the s largest activations: it equals activation magnitude"


def synthetic_verdict(frame: pd.DataFrame, report: CheckReport) -> CheckResult:
    """The synthetic claim from a ``synthetic_experiment`` frame (``paper_check``)."""
    summary = decay_summary(frame) if len(frame) else pd.DataFrame()
    report.frames["synthetic_summary"] = summary
    complete = (not summary.empty and summary.sparsity.nunique() >= 2 and "gap" in summary
                and len(summary) == frame.width.nunique() * frame.sparsity.nunique())
    if not complete:
        report.complete = False
        return CheckResult("ispasp", CLAIM_SYNTHETIC, "stopped before the synthetic experiment finished", None,
                           SRC_SYNTHETIC, model="synthetic")
    ordered = below = True
    parts = []
    for width, df in summary.groupby("width"):
        df = df.sort_values("sparsity")
        gaps = df.gap.to_numpy()
        ordered &= bool(np.all(np.diff(gaps) > 0))
        below &= bool(np.all(gaps <= SYNTHETIC_MARGIN))
        parts.append(f"d={width}: mean log10(i-SpaSP / random residual) " + ", ".join(
            f"p={p:g} {g:.1f}" for p, g in zip(df.sparsity, gaps, strict=True)) + "; i-SpaSP's own decay "
            + ", ".join(f"{d:.1f}" for d in df.mean_log10_drop) + ", random's " + ", ".join(
            f"{d:.1f}" for d in df.random_mean_log10_drop))
    verdict = ("ordered by p at every width" if ordered else "NOT ordered by p at every width") + (
        f", at least {-SYNTHETIC_MARGIN:g} decade below random everywhere" if below else
        f", NOT {-SYNTHETIC_MARGIN:g} decade below random everywhere")
    return CheckResult("ispasp", CLAIM_SYNTHETIC, f"{verdict}. " + "; ".join(parts), ordered and below,
                       SRC_SYNTHETIC, model="synthetic")


def accuracy_verdict(accuracy: pd.DataFrame) -> CheckResult:
    """The model claim from the fine-tuned ``accuracy`` frame: i-SpaSP's mean accuracy over the ratios minus
    random's (mean over seeds) must exceed one standard error of random's mean (over seeds) and ``MARGIN``."""
    mean = accuracy.groupby(["method", "ratio"]).accuracy.mean().unstack(0)
    per_seed = accuracy[accuracy.method == "random-units"].groupby("seed").accuracy.mean()
    isp, rnd, act = mean["ispasp"], mean["random-units"], mean["activation-magnitude"]
    gap = float(isp.mean() - rnd.mean())
    se = float(per_seed.std(ddof=1) / np.sqrt(len(per_seed))) if len(per_seed) > 1 else float("nan")
    verdict = None if np.isnan(se) else bool(gap > max(se, MARGIN))
    figure = (f"mean accuracy over ratios {mean.index.min():g}-{mean.index.max():g}, fine-tuned: i-SpaSP "
              f"{isp.mean():.1%}, random {rnd.mean():.1%} ({len(per_seed)} seeds, standard error {se:.1%}), "
              f"activation magnitude {act.mean():.1%}; gap {gap * 100:+.1f} points (needs > "
              f"{max(se, MARGIN) * 100:.1f}); per ratio " + ", ".join(
                  f"{r:g}: {isp[r]:.1%} vs {rnd[r]:.1%}" for r in mean.index))
    return CheckResult("ispasp", CLAIM_MODEL, figure, verdict, SRC_MODEL)


def identity_result(ispasp: ISpaSP, activation: ActivationMagnitude) -> CheckResult:
    """The self-test: on the dense schedule at ``IDENTITY_RATIOS`` every unit keeps channels whose activation
    sums are exactly the s largest (``activation.scores``)."""
    same, total, parts = 0, 0, []
    for ratio in IDENTITY_RATIOS:
        counts = tuple(kept_count(u.size, ratio) for u in ispasp.units)
        kept, _ = ispasp.kept_channels(counts)
        for u, s in zip(ispasp.units, counts, strict=True):
            a = activation.scores[u.group]
            ours = torch.sort(a[kept[u.group]], descending=True).values
            top = torch.sort(a, descending=True).values[:s]
            total += 1
            if torch.equal(ours, top):
                same += 1
            else:
                parts.append(f"{u.group} at {ratio:g}")
    figure = (f"kept activation sums equal the top-s in {same} of {total} (unit, ratio) cases at ratios "
              + ", ".join(f"{r:g}" for r in IDENTITY_RATIOS) + (f"; differs: {', '.join(parts)}" if parts else ""))
    return CheckResult("ispasp", IDENTITY, figure, same == total, "algorithms.cosamp; methods.md §11",
                       kind="self-test")


def untuned_description(raw: pd.DataFrame) -> CheckResult:
    mean = raw.groupby(["method", "ratio"]).accuracy.mean().unstack(0)
    figure = (f"mean over ratios {mean.index.min():g}-{mean.index.max():g}: i-SpaSP {mean['ispasp'].mean():.1%}, "
              f"random {mean['random-units'].mean():.1%}, activation magnitude "
              f"{mean['activation-magnitude'].mean():.1%}")
    return CheckResult("ispasp", "Accuracy without fine-tuning (dense schedule, no training: a variant; the paper "
                       "always fine-tunes)", figure, None, PAPER, kind="description")


def residual_description(residual: pd.DataFrame) -> CheckResult:
    runs = {key: df.sort_values("iteration").residual.to_numpy() for key, df in residual.groupby(["group", "ratio"])}
    tol = 1e-9 * max(float(residual.residual.max()), 1.0)
    falling = sum(bool(np.all(np.diff(r) <= tol)) for r in runs.values())
    return CheckResult("ispasp", "Residual between pruned and dense unit outputs per iteration (dense schedule; "
                       "the paper claims no monotone decrease for this no-refit loop)",
                       f"non-increasing in {falling} of {len(runs)} (unit, ratio) runs; see the figure", None,
                       "methods.md §11", kind="description")


def figures(report: CheckReport, dense_accuracy: float | None = None) -> list[dict]:
    """The synthetic residual decay with random selection dotted; below it the residual per iteration beside
    accuracy after fine-tuning and without it against the ratio."""
    from plotly.colors import sample_colorscale

    from ..charts import ispasp as ispasp_charts

    frames, rows = report.frames, []
    if "synthetic" in frames and len(frames["synthetic"]):
        synthetic_frame = frames["synthetic"]
        fig = ispasp_charts.synthetic_residual(synthetic_frame)
        if "random_residual" in synthetic_frame:
            widths, ps = sorted(synthetic_frame.width.unique()), sorted(synthetic_frame.sparsity.unique())
            shades = sample_colorscale("Plasma", [0.05 + 0.8 * i / max(len(ps) - 1, 1) for i in range(len(ps))])
            for (width, p), df in synthetic_frame.groupby(["width", "sparsity"]):
                fig.add_scatter(x=df.pruned_width, y=df.random_residual, mode="lines", name=f"random, p = {p:g}",
                                line=dict(dash="dot", width=1.5, color=shades[ps.index(p)]),
                                showlegend=bool(width == widths[0] and p == ps[0]), legendgroup="random",
                                row=1, col=widths.index(width) + 1)
            fig.update_layout(title_text=fig.layout.title.text + "; dotted: random selection (mean of 3 seeds)")
        rows.append({"synthetic": fig})
    row = {}
    if "residual" in frames and len(frames["residual"]):
        row["residual"] = ispasp_charts.residual_by_iteration(frames["residual"])
    for name, title in (("accuracy", "after the paper's fine-tuning"), ("accuracy_untuned", "without fine-tuning")):
        if name in frames and len(frames[name]):
            fig = ispasp_charts.accuracy_by_ratio(frames[name], dense_accuracy=dense_accuracy)
            fig.update_yaxes(title_text=f"accuracy, {title}")
            fig.update_layout(title_text=f"Accuracy against ratio, {title}")
            row[name] = fig
    return rows + [row]


CHECK = Check(
    "ispasp", "i-SpaSP (Wolfe & Kyrillidis, 2022)",
    "Each two-layer unit's hidden channels are chosen by a CoSaMP-style loop: the gradient of the output "
    "residual proposes candidates, the dense activation picks among them; the paper prunes units in order and "
    "fine-tunes after each. The synthetic experiment tests the theory (faster decay for sparser hidden "
    "representations, against random selection); on the model, i-SpaSP, random units and activation magnitude "
    "go through the identical fine-tuned pipeline.",
    paper_check, figures, auto=True)
