"""Diao, Wang, Zhang, Yang, Ding, Tarokh, "Pruning Deep Neural Networks from a Sparsity Perspective" (ICLR 2023,
arXiv 2302.05601): the paper's claims about SAP, reproduced on the current model by running its retraining loop
(``experiments.sap``) for SAP and the 20%-per-round baselines in every scope."""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd

from ..algorithms.pq_index import SCOPES
from ..experiments import Progress, ShouldStop
from ..experiments.sap import PAPER_RUNS, SAPRun, run_sap, runs_frame
from ..workbench import Workbench
from .base import Check, CheckReport, CheckResult

# Rounds and epochs per round. Every round rewinds to the initialisation and retrains with the demo recipe; full
# mode retrains as long as the demo models were trained (40 epochs) for the paper's ResNet T (15 rounds).
BUDGETS = {True: {"rounds": 12, "epochs": 15}, False: {"rounds": 15, "epochs": 40}}
# "When few weights remain": the paper's figures compare the methods at a few percent of the weights. A comparison
# point above this remaining fraction does not test the claim, so the verdict is left undecided.
FEW_REMAINING = 0.10
RULE_TOLERANCE = 1.0 + 1e-9  # |c_t - d_t * PQI_t| <= 1 weight: floor() plus float round-off in ceil()


def accuracy_at_remaining(curve: pd.DataFrame, remaining: float, column: str = "accuracy") -> float:
    """``column`` interpolated linearly against log(remaining fraction) at ``remaining`` (NaN outside the range
    the curve covers)."""
    curve = curve.sort_values("remaining")
    x = np.log(curve["remaining"].to_numpy(dtype=float))
    y = curve[column].to_numpy(dtype=float)
    target = math.log(remaining)
    if not len(x) or target < x[0] - 1e-12 or target > x[-1] + 1e-12:
        return float("nan")
    return float(np.interp(target, x, y))


def matched_comparison(frame: pd.DataFrame, compared: tuple[str, ...] = ("SAP(0.5,1)", "one-shot 20%",
                                                                        "lottery 20%")) -> pd.DataFrame:
    """Per scope: the smallest remaining fraction every ``compared`` run reaches (the largest of their minima),
    and every run's accuracy interpolated there on a log-remaining axis (NaN for a run that stops above it).
    Columns: ``scope``, ``run``, ``remaining`` (the matched point), ``accuracy``, ``min_remaining``, ``final_pqi``
    (the run's PQI in its scope at its last round)."""
    rows = []
    for scope, group in frame.groupby("scope", sort=False):
        runs = dict(tuple(group.groupby("run", sort=False)))
        minima = [g["remaining"].min() for k, g in runs.items() if k in compared]
        if not minima:
            continue
        target = float(max(minima))
        for run, g in runs.items():
            last = g.sort_values("round").iloc[-1]
            rows.append({"scope": scope, "run": run, "remaining": target,
                         "accuracy": accuracy_at_remaining(g, target),
                         "min_remaining": float(g["remaining"].min()), "final_pqi": float(last["pqi"])})
    return pd.DataFrame(rows)


def paper_check(wb: Workbench, quick: bool = False, progress: Progress = None,
                should_stop: ShouldStop = None) -> CheckReport:
    """Reproduce the paper's claims about SAP on the current model (Diao et al., ICLR 2023, Sec. 4, the retrained
    CNN / ResNet figures and the poster; the rule from Algorithm 1).

    Runs the paper's loop (``run_sap``, mode ``rewind``) in each scope (neuron, layer, global) for SAP(0.5,1),
    SAP(1,2) and the 20%-per-round one-shot and lottery-ticket baselines, retraining with the demo recipe
    (Adam 3e-3, cosine, batch 64). Budget (``BUDGETS``): ``quick`` 12 rounds x 15 epochs, with SAP(1,2) in the
    global scope only (it is plotted, not judged); full 15 rounds x 40 epochs. Claims:

    (a) with p = 0.5, q = 1, eta_r = 0, gamma = 1, SAP prunes a PQI-sized fraction each round: in every round
        and scope unit |c_t - d_t min(PQI_t, beta)| <= 1 and exactly c_t weights are removed;
    (b) neuron- and layer-wise SAP(0.5,1) hold accuracy better than both 20% baselines when few weights remain;
    (c) global SAP(0.5,1) does worse than both baselines when few weights remain.

    (b) and (c) compare runs at matched remaining fraction: within a scope, at the smallest remaining fraction
    every compared run reaches, test accuracy interpolated against log(remaining). The verdict is taken only
    when that point is at most ``FEW_REMAINING`` (10%) of the weights; above it the claim is not tested (the
    verdict is None and the figure says where the runs stopped). ``frames``: ``curves`` (every run's records,
    long format: run, scope, round, remaining, pqi, accuracy, ...), ``layers`` (per-layer PQI per round),
    ``matched`` (the comparison points)."""
    start = time.perf_counter()
    budget = BUDGETS[bool(quick)]
    plan = [(scope, name, baseline, p, q) for scope in SCOPES for name, baseline, p, q in PAPER_RUNS
            if not (quick and name == "SAP(1,2)" and scope != "global")]
    total_rounds = len(plan) * (budget["rounds"] + 1)
    report = CheckReport("sap", notes=[
        f"Loop: rewind to the initialisation and retrain {budget['epochs']} epochs per round (Adam 3e-3, cosine, "
        f"batch 64), {budget['rounds']} rounds; round 0 is the trained model itself.",
        "PQI is measured on each round's retrained model, as in the paper's code; the paper keeps the best-test "
        "checkpoint of each round, we keep the last epoch.",
        f"'Few weights remain' is taken as at most {FEW_REMAINING:.0%} of the prunable weights."])
    runs: list[SAPRun] = []
    done = 0
    stopped = False
    for scope, name, baseline, p, q in plan:
        run = run_sap(wb, "rewind", scope, p, q, rounds=budget["rounds"], epochs=budget["epochs"],
                      baseline=baseline, should_stop=should_stop)
        runs.append(run)
        for record in run:
            done += 1
            if progress is not None:
                progress(done / total_rounds, f"{name} ({scope}) round {record['round']}: "
                         f"{record['remaining']:.1%} remaining, accuracy {record['accuracy']:.1%}")
        if not run.finished:
            stopped = True
            break
    if runs:
        report.notes.append(f"Rewinding to: {runs[0].config['init']}.")
    curves = runs_frame(runs)
    report.frames = {"curves": curves, "layers": pd.DataFrame([row for r in runs for row in r.layer_rows])}
    report.complete = not stopped
    matched = matched_comparison(curves) if not curves.empty and not stopped else pd.DataFrame()
    if not matched.empty:
        report.frames["matched"] = matched
    report.results = _judge(runs, matched)
    report.seconds = time.perf_counter() - start
    return report


def _judge(runs: list[SAPRun], matched: pd.DataFrame) -> list[CheckResult]:
    """The three verdicts from the finished runs and the matched comparison (empty when the run stopped)."""
    src_rule = "paper Algorithm 1 / code make_bound_si; the shortcut is derived"
    src_fig = "paper Sec. 4 retrained-pruned figures (CNN, ResNet-18) and poster"
    claims = {
        "a": "SAP with p=0.5, q=1, eta_r=0, gamma=1 prunes a PQI-sized fraction of the surviving weights each round",
        "b": "Neuron- and layer-wise SAP hold accuracy better than the 20%-per-round one-shot and lottery "
             "baselines when few weights remain",
        "c": "Global SAP does worse than the 20%-per-round baselines when few weights remain",
    }
    results = []
    sap = [r for r in runs if r.method == "SAP(0.5,1)"]
    rounds = [rec for r in sap for rec in r.records if rec["round"] > 0]
    if rounds:
        gap = max(rec["rule_gap"] for rec in rounds)
        exact = all(rec["removed"] == rec["planned"] for rec in rounds)
        glob = [r for r in sap if r.config["scope"] == "global"]
        pairs = [(r.records[t]["pruned_fraction"], r.records[t - 1]["pqi_global"])
                 for r in glob for t in range(1, len(r.records))]
        fraction = np.mean([a for a, _ in pairs]) if pairs else float("nan")
        pqi = np.mean([b for _, b in pairs]) if pairs else float("nan")
        figure = (f"{len(rounds)} rounds over {len({r.config['scope'] for r in sap})} scopes: max |c_t - "
                  f"d_t*PQI_t| = {gap:.4f} weight(s), removed = c_t in every round: {'yes' if exact else 'no'}; "
                  f"global: mean pruned fraction {fraction:.4f} vs mean PQI {pqi:.4f}")
        results.append(CheckResult("sap", claims["a"], figure, bool(gap <= RULE_TOLERANCE and exact), src_rule))
    else:
        results.append(CheckResult("sap", claims["a"], "no SAP round finished", None, src_rule))
    if matched.empty:
        return results + [CheckResult("sap", claims[k], "the run was stopped before every curve finished", None,
                                      src_fig) for k in ("b", "c")]
    table = matched.set_index(["scope", "run"])

    def at(scope: str) -> tuple[float, float, float, float, str]:
        rows = table.loc[scope]
        rho = float(rows["remaining"].iloc[0])
        s, o, lt = (float(rows.loc[k, "accuracy"]) for k in ("SAP(0.5,1)", "one-shot 20%", "lottery 20%"))
        text = (f"{scope}: at {rho:.1%} remaining SAP {s:.1%} vs one-shot {o:.1%}, lottery {lt:.1%}"
                + ("" if rho <= FEW_REMAINING else
                   f" (SAP stopped at {rows.loc['SAP(0.5,1)', 'min_remaining']:.1%} remaining, its PQI fell to "
                   f"{rows.loc['SAP(0.5,1)', 'final_pqi']:.3f})"))
        return rho, s, o, lt, text

    parts, verdicts = [], []
    for scope in ("neuron", "layer"):
        rho, s, o, lt, text = at(scope)
        parts.append(text)
        verdicts.append(None if rho > FEW_REMAINING else s > max(o, lt))
    verdict_b = None if None in verdicts else all(verdicts)
    prefix = "" if verdict_b is not None else f"not tested, comparison above {FEW_REMAINING:.0%} remaining. "
    results.append(CheckResult("sap", claims["b"], prefix + "; ".join(parts), verdict_b, src_fig))
    rho, s, o, lt, text = at("global")
    verdict_c = None if rho > FEW_REMAINING else s < min(o, lt)
    prefix = "" if verdict_c is not None else f"not tested, comparison above {FEW_REMAINING:.0%} remaining. "
    results.append(CheckResult("sap", claims["c"], prefix + text, verdict_c, src_fig))
    return results


def figures(report: CheckReport, dense_accuracy: float | None = None) -> list[dict]:
    """The SAP panel: remaining weights, PQI and accuracy per round, every run in every scope."""
    from ..charts import sparsity as sparsity_charts

    return [{"panel": sparsity_charts.sap_panel(report.frames["curves"])}] if "curves" in report.frames else []


CHECK = Check(
    "sap", "PQ Index and SAP (Diao et al., ICLR 2023)",
    "PQ Index (PQI) measures how sparse, i.e. how compressible, a weight vector is; SAP prunes each round "
    "the fraction its rule derives from the PQI, then retrains. The PQI plots and the SAP loop itself are "
    "on the **Sparsity** screen; this tab runs the paper's comparison, which **retrains** the model "
    "round after round for four runs in three scopes (quick: 12 rounds x 15 epochs each). That takes "
    "about 20 s for the digits MLP and minutes for convolutional models on a CPU; pressing anything on "
    "the page while it runs cancels it.",
    paper_check, figures)
