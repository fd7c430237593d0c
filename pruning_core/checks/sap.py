"""Diao, Wang, Zhang, Yang, Ding, Tarokh, "Pruning Deep Neural Networks from a Sparsity Perspective" (ICLR 2023,
arXiv 2302.05601): the paper's claims about SAP, reproduced on the current model by running its retraining loop
(``experiments.sap``) for SAP and the 20%-per-round baselines in every scope."""

from __future__ import annotations

import math
import time
from contextlib import contextmanager

import numpy as np
import pandas as pd
import torch

from .. import metrics
from ..algorithms.pq_index import SCOPES
from ..algorithms.sap_rule import sap_step
from ..experiments import Progress, ShouldStop
from ..experiments.sap import PAPER_RUNS, SAPRun, initial_state, run_sap, runs_frame, training_split, weight_decay_for
from ..experiments.training import train_masked, trainable_copy
from ..workbench import Workbench
from .base import Check, CheckReport, CheckResult

# The authors' retraining recipe (``train_classifier.py``): SGD with Nesterov momentum 0.9, the gradient norm clipped
# at 1, a cosine schedule, rewinding to the initialisation each round; the weight decay is set so that the decay
# accumulated per round, sum over the steps of lr x wd, is 1, as in the paper's CIFAR runs (200 epochs x 200 steps
# at lr 0.1, wd 5e-4). Our round is shorter (25 epochs at batch 256: 125 steps on the digits) at a larger lr; the
# lr is the one of LEARNING_RATES whose dense retraining from the initialisation scores best on the calibration
# split (measured: the digits MLP needs 0.8, 0.4 leaves it at 83%; the residual CNN reaches 91% at 0.2 and 50% at
# 0.8; the CNN takes any), as the authors tuned theirs per dataset.
RECIPE = {"optimizer": "sgd", "clip_grad_norm": 1.0, "batch_size": 256, "epochs": 25}
LEARNING_RATES = (0.8, 0.4, 0.2)
ACCUMULATED_DECAY = 1.0
# Rounds (the paper: T = 30 for MLP and CNN) and the training FLOPs the comparison may cost (9-10 runs x rounds x
# 3 x forward FLOPs x training samples x epochs). Above the budget the comparison is not run and both claims are
# undecided; the PQI-rule self-test still runs. The MLP fits the default (30 rounds), the CNN and the residual CNN
# need ``long``.
BUDGETS = {"quick": {"rounds": 12, "flops": 5e11, "sap12": False},
           "default": {"rounds": 30, "flops": 2.5e12, "sap12": True},
           "long": {"rounds": 30, "flops": float("inf"), "sap12": True}}
# Below this many forward FLOPs per sample (the digits MLP: 34k) a training step is so small that a second torch
# thread only adds synchronisation: measured 49 s with 2 threads against 18 s with 1 for the quick comparison on
# the digits MLP (2 cores), so the comparison runs on one thread there.
SMALL_MODEL_FLOPS = 1e5
FLOPS_PER_SECOND = 2e10  # training throughput measured on the digits models, 2 CPU cores: for the time estimates
# "When few weights remain": the paper's figures compare the methods at a few percent of the weights. A comparison
# point above this remaining fraction does not test the claim, so the verdict is left undecided.
FEW_REMAINING = 0.10
# Where the claims are judged: the mean accuracy over these remaining fractions that every compared run reaches.
# Not the deepest common point: 30 rounds of 20% take the baselines to 0.1%, where every run is at chance.
COMPARE_AT = (0.10, 0.05, 0.02)
# Accuracies within one point are level: retraining differs by about that between runs (another thread count
# reorders float sums), and the paper's curves are compared by eye. Level decides neither way.
LEVEL = 0.01
RULE_TOLERANCE = 1.0 + 1e-9  # |c_t - d_t * PQI_t| <= 1 weight: floor() plus float round-off in ceil()
RULE_ROUNDS = 5  # prune-only rounds of the self-test, in every scope, on the trained weights
LONG = ("SAP's 30 rounds (rewind, retrain 25 epochs) for SAP(0.5,1), SAP(1,2) and both 20% baselines in every "
        "scope on any model: about 1 min on the digits MLP, 8 min on the CNN (measured) and 20 min on the residual CNN "
        "(2 CPU cores)")


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
    """Per scope, the comparison points: each of ``COMPARE_AT`` (10%, 5%, 2% remaining) that every ``compared``
    run reaches, or when none is reached the smallest remaining fraction they all reach (the largest of their
    minima, above 10%: ``judge`` leaves that undecided). Every run's accuracy is interpolated there on a
    log-remaining axis (NaN for a run that stops above it). Columns: ``scope``, ``run``, ``remaining`` (the
    point), ``accuracy``, ``min_remaining``, ``final_pqi`` (the run's PQI in its scope at its last round)."""
    rows = []
    for scope, group in frame.groupby("scope", sort=False):
        runs = dict(tuple(group.groupby("run", sort=False)))
        minima = [g["remaining"].min() for k, g in runs.items() if k in compared]
        if not minima:
            continue
        reach = float(max(minima))
        targets = [t for t in COMPARE_AT if t >= reach - 1e-12] or [reach]
        for run, g in runs.items():
            last = g.sort_values("round").iloc[-1]
            rows += [{"scope": scope, "run": run, "remaining": target, "accuracy": accuracy_at_remaining(g, target),
                      "min_remaining": float(g["remaining"].min()), "final_pqi": float(last["pqi"])}
                     for target in targets]
    return pd.DataFrame(rows)


@contextmanager
def threads_for(wb: Workbench):
    """One torch thread while training a model below ``SMALL_MODEL_FLOPS``; the caller's count afterwards."""
    before = torch.get_num_threads()
    if wb.dense_flops[0] < SMALL_MODEL_FLOPS and before > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def comparison_cost(wb: Workbench, rounds: int, runs: int) -> float:
    """Training FLOPs of the comparison: ``runs`` runs x ``rounds`` retrainings of ``RECIPE['epochs']`` epochs
    over the training split, a training step costing about 3 forward passes."""
    x, _ = training_split(wb)
    return 3.0 * float(wb.dense_flops[0]) * len(x) * RECIPE["epochs"] * rounds * runs


def choose_lr(wb: Workbench, init: dict[str, torch.Tensor]) -> tuple[float, dict[float, float]]:
    """The lr of ``LEARNING_RATES`` whose dense retraining from ``init`` with the recipe (and the weight decay
    that accumulates ``ACCUMULATED_DECAY`` at that lr) scores best on the calibration split; ties: the larger.
    Returns it and every candidate's calibration accuracy."""
    x, y = training_split(wb)
    scores = {}
    for lr in LEARNING_RATES:
        model = trainable_copy(wb.model)
        model.load_state_dict(init)
        wd = weight_decay_for(ACCUMULATED_DECAY, lr, RECIPE["epochs"], len(x), RECIPE["batch_size"])
        train_masked(model, None, x, y, RECIPE["epochs"], lr, RECIPE["batch_size"], 0, wd, RECIPE["optimizer"],
                     wb.device, clip_grad_norm=RECIPE["clip_grad_norm"])
        scores[lr] = metrics.evaluate(model, wb.calib_x, wb.calib_y, None, wb.batch_size)[0].accuracy
    return max(LEARNING_RATES, key=lambda lr: (scores[lr], lr)), scores


def rule_self_test(wb: Workbench, rounds: int = RULE_ROUNDS) -> pd.DataFrame:
    """SAP's step on the trained weights, ``rounds`` prune-only rounds in every scope (p = 0.5, q = 1, eta_r = 0,
    gamma = 1, beta = 0.9): per round and scope, the largest |c_t - d_t min(PQI_t, beta)| over units and whether
    exactly sum c_t weights were removed (``algorithms.sap_rule``). Cheap: no retraining."""
    wb.restore()
    params = {k: v.detach() for k, v in wb.prunable.items()}
    rows = []
    for scope in SCOPES:
        masks = None
        for t in range(1, rounds + 1):
            before = sum(int(m.sum()) for m in masks.values()) if masks else sum(v.numel() for v in params.values())
            new, info = sap_step(params, masks, scope, 0.5, 1.0, 0.0, 1.0, 0.9, return_details=True)
            planned = int(sum(int(c.sum()) for c in info["c"].values()))
            gap = max(float((c.double() - info["d"][u] * info["pqi"][u].clamp(max=0.9)).abs().max())
                      if c.numel() else 0.0 for u, c in info["c"].items())
            removed = before - sum(int(m.sum()) for m in new.values())
            rows.append({"scope": scope, "round": t, "rule_gap": gap, "planned": planned, "removed": removed})
            masks = new
    return pd.DataFrame(rows)


def paper_check(wb: Workbench, quick: bool = False, progress: Progress = None,
                should_stop: ShouldStop = None, long: bool = False) -> CheckReport:
    """Reproduce the paper's claims about SAP on the current model (Diao et al., ICLR 2023, Sec. 4, the retrained
    CNN / ResNet figures and the poster; the rule from Algorithm 1).

    Runs the paper's loop (``run_sap``, mode ``rewind``) in each scope (neuron, layer, global) for SAP(0.5,1) and
    the 20%-per-round one-shot and lottery-ticket baselines (plus SAP(1,2) in the global scope, plotted, not
    judged), retraining with the authors' recipe (``RECIPE``: SGD, Nesterov, gradient clipping at 1, cosine) at
    the lr ``choose_lr`` picks and the weight decay that accumulates ``ACCUMULATED_DECAY`` = 1 per round
    (``weight_decay_for``). Rounds and
    budget (``BUDGETS``): quick 12 rounds, default and ``long`` 30 (the paper's T for MLP and CNN); the
    comparison runs only when its training FLOPs fit the mode's budget (default: the digits MLP, about 1 min;
    ``long``: any model, about 8 min on the digits CNN). Results:

    * self-test: with p = 0.5, q = 1, eta_r = 0, gamma = 1, SAP prunes a PQI-sized fraction: in every round and
      scope unit |c_t - d_t min(PQI_t, beta)| <= 1 and exactly c_t weights are removed (``rule_self_test`` on
      the trained weights, plus every round of the SAP runs when they ran);
    * claim (b): neuron- and layer-wise SAP(0.5,1) hold accuracy better than both 20% baselines when few
      weights remain;
    * claim (c): global SAP(0.5,1) does worse than both baselines when few weights remain.

    (b) and (c) compare runs at matched remaining fractions: within a scope, test accuracy interpolated against
    log(remaining) at each of ``COMPARE_AT`` (10%, 5%, 2%) that every compared run reaches, averaged, SAP
    against each baseline; within one point (``LEVEL``) they are level. When a run stops above 10% (it stalls,
    or the rounds run out), or SAP is level with the baseline that decides, the claim is undecided and the
    figure says why. Frames: ``curves`` (every run's
    records, long format), ``layers`` (per-layer PQI per round), ``matched`` (the comparison points), ``rule``
    (the self-test's rounds)."""
    start = time.perf_counter()
    mode = "long" if long else ("quick" if quick else "default")
    budget = BUDGETS[mode]
    x, _ = training_split(wb)
    plan = [(scope, name, baseline, p, q) for scope in SCOPES for name, baseline, p, q in PAPER_RUNS
            if not (name == "SAP(1,2)" and (scope != "global" or not budget["sap12"]))]
    cost = comparison_cost(wb, budget["rounds"], len(plan))
    report = CheckReport("sap", notes=[
        "PQI is measured on each round's retrained model, as in the paper's code; the paper keeps the best-test "
        "checkpoint of each round, we keep the last epoch.",
        f"'Few weights remain' is taken as at most {FEW_REMAINING:.0%} of the prunable weights."])
    rule = rule_self_test(wb)
    report.frames["rule"] = rule
    runs: list[SAPRun] = []
    stopped = False
    ran = cost <= budget["flops"]
    if not ran:
        report.notes.append(f"The comparison was not run: {len(plan)} runs x {budget['rounds']} rounds would take "
                            f"about {cost / FLOPS_PER_SECOND / 60:.0f} min here; "
                            + ("run it with the long option." if mode != "long" else ""))
    else:
        if progress is not None:
            progress(0.0, "choosing the learning rate: a dense retraining at each of " + ", ".join(
                f"{lr:g}" for lr in LEARNING_RATES))
        with threads_for(wb):
            init, _ = initial_state(wb, trainable_copy(wb.model), None, 0)
            lr, scores = choose_lr(wb, init)
        wd = weight_decay_for(ACCUMULATED_DECAY, lr, RECIPE["epochs"], len(x), RECIPE["batch_size"])
        report.notes.insert(0, (
            f"Loop: rewind to the initialisation and retrain {RECIPE['epochs']} epochs per round with the authors' "
            f"recipe (SGD, Nesterov, gradient norm clipped at 1, cosine, batch {RECIPE['batch_size']}) at lr {lr:g} "
            "(dense retraining on the calibration split: " + ", ".join(f"lr {k:g} {v:.1%}" for k, v in
                                                                     scores.items())
            + f") and weight decay {wd:.3g}, so the decay accumulated per round (lr x wd summed over the steps) is "
            f"{ACCUMULATED_DECAY:g}, as in the paper's CIFAR runs; {budget['rounds']} rounds; round 0 is the "
            "trained model itself."))
        total_rounds = len(plan) * (budget["rounds"] + 1)
        done = 0
        for scope, name, baseline, p, q in plan:
            run = run_sap(wb, "rewind", scope, p, q, rounds=budget["rounds"], epochs=RECIPE["epochs"],
                          lr=lr, baseline=baseline, should_stop=should_stop, weight_decay=wd,
                          optimizer=RECIPE["optimizer"], batch_size=RECIPE["batch_size"],
                          clip_grad_norm=RECIPE["clip_grad_norm"])
            runs.append(run)
            with threads_for(wb):  # the rounds train while the run is iterated
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
    report.frames.update({"curves": curves, "layers": pd.DataFrame([row for r in runs for row in r.layer_rows])})
    report.complete = not stopped
    matched = matched_comparison(curves) if not curves.empty and not stopped else pd.DataFrame()
    if not matched.empty:
        report.frames["matched"] = matched
    report.results = [rule_result(rule, runs)] + judge(matched, ran, stopped)
    report.seconds = time.perf_counter() - start
    return report


SRC_RULE = "paper Algorithm 1 / code make_bound_si; the shortcut is derived"
SRC_FIG = "paper Sec. 4 retrained-pruned figures (CNN, ResNet-18) and poster"
RULE = "SAP with p=0.5, q=1, eta_r=0, gamma=1 prunes a PQI-sized fraction of the surviving weights each round"
CLAIM_B = ("Neuron- and layer-wise SAP hold accuracy better than the 20%-per-round one-shot and lottery baselines "
           "when few weights remain")
CLAIM_C = "Global SAP does worse than the 20%-per-round baselines when few weights remain"


def rule_result(rule: pd.DataFrame, runs: list[SAPRun]) -> CheckResult:
    """The self-test: the shortcut |c_t - d_t min(PQI_t, beta)| <= 1 and removed = c_t in every round, on the
    prune-only rounds of ``rule_self_test`` and on every round of the SAP(0.5,1) runs."""
    rounds = [rec for r in runs if r.method == "SAP(0.5,1)" for rec in r.records if rec["round"] > 0]
    gaps = list(rule["rule_gap"]) + [rec["rule_gap"] for rec in rounds]
    exact = bool((rule["removed"] == rule["planned"]).all()) and all(rec["removed"] == rec["planned"]
                                                                      for rec in rounds)
    gap = max(gaps) if gaps else float("nan")
    figure = (f"{len(rule)} prune-only rounds on the trained weights and {len(rounds)} retrained SAP rounds over "
              f"3 scopes: max |c_t - d_t*PQI_t| = {gap:.4f} weight(s), removed = c_t in every round: "
              f"{'yes' if exact else 'no'}")
    return CheckResult("sap", RULE, figure, bool(gap <= RULE_TOLERANCE and exact), SRC_RULE, kind="self-test")


def judge(matched: pd.DataFrame, ran: bool = True, stopped: bool = False) -> list[CheckResult]:
    """Claims (b) and (c) from the matched comparison (``matched_comparison``; empty when the comparison did
    not run or was stopped). A scope whose runs do not all reach ``FEW_REMAINING``, or accuracies within
    ``LEVEL`` (one point) of each other, leave the claim undecided; one scope decided against claim (b) is
    enough to say no."""
    if matched.empty:
        why = ("the run was stopped before every curve finished" if stopped else
               "not run on this model at this budget (see the notes; the long option runs it)" if not ran else
               "no comparison point")
        return [CheckResult("sap", c, why, None, SRC_FIG) for c in (CLAIM_B, CLAIM_C)]

    def at(scope: str) -> tuple[bool, float, float, float, str]:
        rows = matched[matched.scope == scope]
        points = sorted(rows.remaining.unique(), reverse=True)
        few = all(p <= FEW_REMAINING + 1e-12 for p in points)
        mean = rows.groupby("run").accuracy.mean()
        s, o, lt = (float(mean[k]) for k in ("SAP(0.5,1)", "one-shot 20%", "lottery 20%"))
        where = "at " + ", ".join(f"{p:.0%}" if p >= 0.01 else f"{p:.1%}" for p in points) + " remaining"
        text = f"{scope}: mean accuracy {where}: SAP {s:.1%} vs one-shot {o:.1%}, lottery {lt:.1%}"
        if not few:
            sap = rows[rows.run == "SAP(0.5,1)"].iloc[0]
            compared = rows[rows.run.isin(("SAP(0.5,1)", "one-shot 20%", "lottery 20%"))]
            stalled = max(compared.groupby("run").min_remaining.min().items(), key=lambda kv: kv[1])
            text += (f" (the runs do not all reach {FEW_REMAINING:.0%}: {stalled[0]} stops at {stalled[1]:.1%}; "
                     f"SAP's PQI fell to {sap['final_pqi']:.3f})")
        return few, s, o, lt, text

    def better(a: float, b: float) -> bool | None:  # a above b by more than LEVEL: True; below: False
        return True if a > b + LEVEL else (False if a < b - LEVEL else None)

    undecided = (f"undecided: a scope whose runs do not all reach {FEW_REMAINING:.0%}, or SAP level (within "
                 f"{LEVEL:.0%}) with the better baseline. ")
    parts, verdicts = [], []
    for scope in ("neuron", "layer"):
        few, s, o, lt, text = at(scope)
        parts.append(text)
        verdicts.append(better(s, max(o, lt)) if few else None)
    verdict_b = False if False in verdicts else (None if None in verdicts else True)
    results = [CheckResult("sap", CLAIM_B, ("" if verdict_b is not None else undecided) + "; ".join(parts),
                           verdict_b, SRC_FIG)]
    few, s, o, lt, text = at("global")
    verdict_c = better(min(o, lt), s) if few else None
    results.append(CheckResult("sap", CLAIM_C, ("" if verdict_c is not None else undecided) + text, verdict_c,
                               SRC_FIG))
    return results


def figures(report: CheckReport, dense_accuracy: float | None = None) -> list[dict]:
    """The SAP panel: remaining weights, PQI and accuracy per round, every run in every scope."""
    from ..charts import sparsity as sparsity_charts

    curves = report.frames.get("curves")
    return [{"panel": sparsity_charts.sap_panel(curves)}] if curves is not None and not curves.empty else []


CHECK = Check(
    "sap", "PQ Index and SAP (Diao et al., ICLR 2023)",
    "PQ Index (PQI) measures how sparse, i.e. how compressible, a weight vector is; SAP prunes each round "
    "the fraction its rule derives from the PQI, then rewinds and retrains with the authors' recipe (SGD, "
    "Nesterov, gradient clipping, weight decay accumulating about 1 per round). The PQI plots and the SAP loop "
    "itself are on the **Sparsity** screen; this tab runs the paper's comparison with the 20%-per-round "
    "baselines in three scopes. By default it runs where it fits the budget (the digits MLP, 30 rounds, about "
    "1 min); the long version runs it on any model (about 8 min on the digits CNN). Pressing anything on the "
    "page while it runs cancels it.",
    paper_check, figures, long=LONG)
