"""Chee, Renz, Damle, De Sa, "Pruning Neural Networks with Interpolative Decompositions" (arXiv 2108.00065,
2021): the paper's claims about ID pruning without fine-tuning, reproduced on the current model with
``methods.id.InterpolativePruning`` against the same channels without the correction and against group-L1
magnitude on the same units (``methods.units.UnitGroupMagnitude``)."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import torch

from ..algorithms.pivoted_qr import interpolative_decomposition
from ..experiments import Progress, ShouldStop
from ..methods.id import InterpolativePruning
from ..methods.units import UnitGroupMagnitude
from ..plan import Plan
from ..structure.units import Unit, capture_inputs, channel_matrix
from ..workbench import Workbench
from .base import Check, CheckReport, CheckResult

CHECK_RATIOS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
QUICK_RATIOS = (0.0, 0.25, 0.5, 0.75)
EXACT_TOL = 1e-4  # relative max error of a float32 layer output that still counts as "exact"


def paper_check(wb: Workbench, quick: bool = False, progress: Progress = None, should_stop: ShouldStop = None
                ) -> CheckReport:
    """Chee et al. 2021 on the current model, without fine-tuning, every unit at the same kept fraction:

    (a) ID with the correction T keeps accuracy better than the same selection without T;
    (b) ID beats structured magnitude pruning (group L1 on the same units, the same channel counts);
    self-test: the fold is exact when k equals the rank of Z (max error of the consumer's output on the
        calibration batch, on the units whose Z is rank-deficient; when every unit has full rank, k = rank keeps
        everything, so the identity behind it, ||Z - Z_I T||_F = ||R22||_F, is checked on each unit at k = C/2
        instead). An identity of the algebra, not agreement with the paper;
    description: the authors' IDiter allocation (``id-flops``) at half the dense FLOPs, without fine-tuning
        (the paper's VGG-16 figure, 93.62% at 51% FLOPs removed, is after fine-tuning on CIFAR-10).

    Verdicts (a) and (b): the mean accuracy gap over the ratio grid (ratios > 0) is positive. ``quick`` uses
    three ratios instead of nine. Frames: ``accuracy`` (method, ratio, kept_channels, kept_fraction, accuracy,
    flops_fraction), ``rank_decay`` (unit, k, diag_ratio, sigma_ratio) and ``iditer`` (the IDiter steps)."""
    start = time.perf_counter()
    report = CheckReport("id")
    ratios = QUICK_RATIOS if quick else CHECK_RATIOS
    say = progress or (lambda f, text: None)
    stop = should_stop or (lambda: False)
    say(0.0, "pivoted QR of every unit's activations")
    idm = InterpolativePruning().prepare(wb)
    mag = UnitGroupMagnitude().prepare(wb)
    total = sum(u.size for u in idm.units)
    rows = []
    for i, r in enumerate(ratios):
        if stop():
            report.complete = False
            break
        with_t = idm.plan(r)
        plans = {"id": with_t,
                 "id-nocorrection": Plan("id-nocorrection", r, "structured", pruned_channels=with_t.pruned_channels),
                 "unit-group-l1": mag.plan(r)}
        kept_counts = {m: total - sum(len(v) for v in p.pruned_channels.values()) for m, p in plans.items()}
        if len(set(kept_counts.values())) != 1:
            raise RuntimeError(f"the compared plans keep different channel counts: {kept_counts}")
        for m, p in plans.items():
            ev = wb.evaluate_plan(p, structured="masked")
            rows.append({"method": m, "ratio": r, "kept_channels": kept_counts[m],
                         "kept_fraction": kept_counts[m] / total, "accuracy": ev.accuracy,
                         "flops_fraction": ev.flops_fraction})
        say((i + 1) / (len(ratios) + 1), f"ratio {r:g}: evaluated ID, ID without T, magnitude")
    acc = pd.DataFrame(rows, columns=["method", "ratio", "kept_channels", "kept_fraction", "accuracy",
                                      "flops_fraction"])
    report.frames["accuracy"] = acc
    report.frames["rank_decay"] = idm.rank_profile()[["unit", "k", "diag_ratio", "sigma_ratio"]]
    src = "Chee et al. 2021 (arXiv 2108.00065), pruning without fine-tuning; digest §8 (98.1% with T vs 90.6% without)"
    report.results.append(_gap_result(acc, "id-nocorrection", "ID with the correction T keeps accuracy better than "
                                      "the same channel selection without T (no fine-tuning)", "without T", src))
    report.results.append(_gap_result(acc, "unit-group-l1", "ID pruning beats structured magnitude pruning "
                                      "without fine-tuning, at the same kept channels", "group L1",
                                      "Chee et al. 2021 (arXiv 2108.00065), comparison with magnitude pruning"))
    if stop():
        report.complete = False
        report.results.append(CheckResult("id", _EXACT_CLAIM, "not run (stopped)", None, _EXACT_SOURCE,
                                          kind="self-test"))
    else:
        say(len(ratios) / (len(ratios) + 1), "fold exactness at k = rank")
        report.results.append(_exactness_result(wb, idm))
        say(len(ratios) / (len(ratios) + 1), "the authors' IDiter allocation at half the FLOPs")
        report.results.append(_iditer_description(wb, report))
    report.notes.append(f"{total} unit channels in {len(idm.units)} units ({', '.join(u.title for u in idm.units)}); "
                        f"Z from {len(wb.calib_x)} calibration samples; accuracy on {len(wb.eval_x)} evaluation "
                        "samples, no fine-tuning")
    report.seconds = time.perf_counter() - start
    say(1.0, "done")
    return report


_EXACT_CLAIM = "The fold Z W^T = Z_I (W T^T)^T is exact when k equals the rank of Z"
_EXACT_SOURCE = "Chee et al. 2021 (arXiv 2108.00065) §3: ||Z - Z_I T|| = ||R22||, zero at k = rank"
IDITER_FLOPS = 0.5


def _iditer_description(wb: Workbench, report: CheckReport) -> CheckResult:
    """The authors' IDiter allocation (``id-flops``) at ``IDITER_FLOPS`` of the dense FLOPs removed."""
    method = InterpolativePruning(mode="flops").prepare(wb)
    plan = method.plan(IDITER_FLOPS)
    ev = wb.evaluate_plan(plan, structured="masked")
    report.frames["iditer"] = method.greedy_path()
    kept = ", ".join(f"{g} {k}/{plan.details['channels'][g]}" for g, k in plan.details["kept"].items())
    return CheckResult(
        "id", f"The authors' IDiter allocation (id-flops) at {IDITER_FLOPS:.0%} FLOPs removed, no fine-tuning "
        "(the paper's VGG-16 figure is after fine-tuning)",
        f"accuracy {ev.accuracy:.1%} (dense {wb.dense_metrics().accuracy:.1%}) at {1 - ev.flops_fraction:.1%} FLOPs "
        f"removed after {plan.details['steps']} steps; kept {kept}", None,
        "Chee et al. 2021 abstract (93.62% at 51% FLOPs on VGG-16); code prunevgg_IDiter_tsqr", kind="description")


def _gap_result(acc: pd.DataFrame, other: str, claim: str, other_label: str, source: str) -> CheckResult:
    table = acc[acc.ratio > 0].pivot(index="ratio", columns="method", values="accuracy")
    if table.empty or other not in table:
        return CheckResult("id", claim, "not run (stopped)", None, source)
    gap = (table["id"] - table[other]) * 100
    wins = int((gap > 0).sum())
    half = acc[(acc.ratio == 0.5)].set_index("method")["accuracy"] if 0.5 in table.index else None
    at_half = (f"; at 50% kept {half['id']:.1%} vs {half[other]:.1%}" if half is not None else "")
    figure = (f"ID - {other_label}: mean {gap.mean():+.1f} points over {len(gap)} kept fractions "
              f"(ID ahead at {wins}){at_half}")
    return CheckResult("id", claim, figure, bool(gap.mean() > 0), source)


def _exactness_result(wb: Workbench, idm: InterpolativePruning) -> CheckResult:
    """Prune one rank-deficient unit at a time to k = rank (and k = rank - 1 for contrast); compare the consumer's
    output with the dense one on the calibration batch."""
    worst, contrast, tested = 0.0, [], []
    for u in idm.units:
        qr = idm.qr[u.group]
        if qr.rank >= u.size or qr.rank == 0:
            continue
        dead = int(np.count_nonzero(np.linalg.norm(qr.r, axis=0) == 0))  # all-zero channels (dead ReLUs)
        tested.append(f"{u.group}: rank {qr.rank} of {u.size}, {dead} all-zero")
        dense = _consumer_output(wb, u, None)
        scale = float(dense.abs().max()) or 1.0
        err = float((_consumer_output(wb, u, idm.plan_for_kept({u.group: qr.rank})) - dense).abs().max()) / scale
        worst = max(worst, err)
        if qr.rank > 1:
            below = idm.plan_for_kept({u.group: qr.rank - 1})
            contrast.append(float((_consumer_output(wb, u, below) - dense).abs().max()) / scale)
    if not tested:
        return _error_identity_result(wb, idm)
    figure = (f"max |error| of the next layer's output at k = rank: {worst:.1e} of its max |value| "
              f"({'; '.join(tested)})")
    if contrast:
        figure += f"; at k = rank - 1: {max(contrast):.1e}"
    return CheckResult("id", _EXACT_CLAIM, figure, worst <= EXACT_TOL, _EXACT_SOURCE, kind="self-test")


def _error_identity_result(wb: Workbench, idm: InterpolativePruning) -> CheckResult:
    """Every unit's Z has full rank, so k = rank keeps everything: check the identity behind the claim instead,
    ||Z - Z_I T||_F = ||R22||_F, on each unit's own activations at k = half its width."""
    captured = capture_inputs(wb.model, [u.consumer for u in idm.units], wb.calib_x, wb.batch_size)
    worst, parts = 0.0, []
    for u in idm.units:
        z = channel_matrix(u, captured[u.consumer]).double().cpu()
        k = max(1, u.size // 2)
        dec = interpolative_decomposition(z, k)
        approximation = z[:, torch.as_tensor(dec.selected)] @ torch.as_tensor(dec.interpolation)
        measured = float(torch.linalg.norm(z - approximation))
        gap = abs(measured - float(dec.error)) / max(float(dec.error), 1e-300)
        worst = max(worst, gap)
        parts.append(f"{u.group} k={k}: {measured:.3g} vs {float(dec.error):.3g}")
    figure = ("every unit's Z has full rank (k = rank keeps all); the identity ||Z - Z_I T|| = ||R22|| holds to "
              f"{worst:.1e} relative ({'; '.join(parts)})")
    return CheckResult("id", _EXACT_CLAIM, figure, worst <= 1e-6, _EXACT_SOURCE, kind="self-test")


def _consumer_output(wb: Workbench, unit: Unit, plan: Plan | None) -> torch.Tensor:
    """The consumer layer's output on the calibration batch, under ``plan`` (None: dense)."""
    out = []
    hook = wb.model.get_submodule(unit.consumer).register_forward_hook(lambda m, i, o: out.append(o.detach()))
    try:
        if plan is None:
            wb.restore()
            model = wb.model
            with torch.no_grad():
                for i in range(0, len(wb.calib_x), wb.batch_size):
                    model(wb.calib_x[i:i + wb.batch_size])
        else:
            with wb.applied(plan) as model, torch.no_grad():
                for i in range(0, len(wb.calib_x), wb.batch_size):
                    model(wb.calib_x[i:i + wb.batch_size])
    finally:
        hook.remove()
    return torch.cat(out).double()


def figures(report: CheckReport, dense_accuracy: float | None = None) -> list[dict]:
    """Accuracy against kept channels for ID, ID without T and magnitude, beside the decay of |R_kk / R_11|."""
    from ..charts import id as id_charts

    row = {}
    if "accuracy" in report.frames:
        row["accuracy"] = id_charts.id_accuracy_curves(report.frames["accuracy"], dense_accuracy=dense_accuracy)
    if "rank_decay" in report.frames:
        row["rank_decay"] = id_charts.rank_decay_curves(report.frames["rank_decay"])
    return [row]


CHECK = Check(
    "id", "Interpolative decompositions (Chee et al., 2021)",
    "A column-pivoted QR of each hidden layer's calibration activations picks the channels to keep; the "
    "interpolation matrix is folded into the next layer so it sees nearly the activations it was trained "
    "on. No gradients, no labels, no fine-tuning.",
    paper_check, figures, auto=True)
