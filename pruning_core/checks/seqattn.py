"""Yasuda et al., "SequentialAttention++ for Block Sparsification" (NeurIPS 2024, arXiv 2402.17902): its claim
against block magnitude pruning, judged with the same training budget, and the identities its construction rests on,
on the current model (``experiments.seqattn``; maths in ``algorithms.block_sparsity``)."""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import torch

from ..algorithms.block_sparsity import MIN_BLOCKS, blocks_removed, training_phases
from ..experiments import Progress, ShouldStop
from ..experiments.seqattn import BlockRun, attach_block_scaling, run_block_sparsification
from ..experiments.training import trainable_copy
from ..methods.block import DEFAULT_BLOCK, pruned_layers
from ..plan import PlanError
from ..workbench import Workbench
from .base import Check, CheckReport, CheckResult
from .sap import threads_for

PAPER = "Yasuda et al., SequentialAttention++ (NeurIPS 2024, arXiv 2402.17902)"
CLAIM_MODELS = ("digits-mlp",)  # the training claim runs here by default (the paper's Criteo MLP analogue)
SPARSITY = 0.9
# (epochs of schedule, epochs of fine-tune), first seeds, most seeds, the curve's other sparsities
MODES = {"quick": {"settings": {"epochs": 10, "finetune_epochs": 3}, "seeds": 3, "max_seeds": 3, "curve": ()},
         "default": {"settings": {"epochs": 20, "finetune_epochs": 5}, "seeds": 3, "max_seeds": 5,
                     "curve": (0.5, 0.7, 0.8)},
         "long": {"settings": {"epochs": 40, "finetune_epochs": 10}, "seeds": 5, "max_seeds": 8,
                  "curve": (0.5, 0.7, 0.8, 0.95)}}
FIGURE_RUN = {"quick": {"epochs": 2, "finetune_epochs": 0}, "default": {"epochs": 20, "finetune_epochs": 5}}
MAX_DEFICIT = 0.01  # "not worse": the mean paired gap is above -2 standard errors and above -1 point
IDENTITY_TOL = 1e-6


def paired_verdict(first: list[float], second: list[float]) -> tuple[bool | None, float, float, bool]:
    """Is ``first`` not worse than ``second`` (accuracies paired by seed)? Returns (verdict, mean gap, standard
    error of the mean gap, whether the gap is within noise: |gap| <= 2 SE). Not worse: mean gap >= -2 SE and
    >= -``MAX_DEFICIT``; None with fewer than two pairs."""
    gaps = np.asarray(first, dtype=float) - np.asarray(second, dtype=float)
    if len(gaps) < 2:
        return None, float(gaps.mean()) if len(gaps) else math.nan, math.nan, True
    mean, se = float(gaps.mean()), float(gaps.std(ddof=1) / math.sqrt(len(gaps)))
    return bool(mean >= -2 * se and mean >= -MAX_DEFICIT), mean, se, abs(mean) <= 2 * se


def paper_check(wb: Workbench, quick: bool = False, progress: Progress = None, should_stop: ShouldStop = None,
                long: bool = False) -> CheckReport:
    """SequentialAttention++ on the current model, 4x4 blocks, layers with fewer than 100 blocks not pruned.

    * claim (MLP by default; every model with ``long``): at 90% block sparsity SA++ is not worse than one-shot block
      magnitude fine-tuned for the same number of steps (the paper's Table 2: SA++ ahead of magnitude at every block
      size). Paired by seed (same batch order); 3 seeds, more (up to 5) while the gap is within noise (|gap| <= 2
      standard errors); not worse when the mean gap >= -2 SE and >= -1 point (``paired_verdict``).
    * claim, same rule: SA++ is not worse than ACDC with block magnitude support (Table 1; the paper: ahead).
    * self-test: with equal logits the attention-scaled weights W (.) N softmax(L) equal W, and so do the outputs.
    * self-test: the SA++ run's block masks reach exactly round(0.9 N) removed blocks per layer at the end of every
      sparsify phase and keep it through the sparse phases and the fine-tune.
    * descriptions: the realised sparsity of all prunable weights (skipped layers stay dense), the SA++ run length.

    Other models run the identities and one SA++ run for the figures (default: 20 + 5 epochs; quick: 2 epochs) and
    say that the training claim ran on the MLP only. ``quick``: 10 + 3 epochs, 3 seeds, no curve (other models: a
    2-epoch SA++ run, enough for the schedule's self-test, not for accuracy). Time on one CPU thread: about 25 s
    default and 6 s quick over the three demo models; ``long`` see ``CHECK.long``.
    Frames: ``accuracy`` (procedure, sparsity, seed, accuracy, realised_sparsity, seconds), ``schedule`` (procedure,
    step, phase, scheduled, block_sparsity, loss, accuracy; ACDC's from its seed-0 run or, without one, its
    schedule alone), ``attention`` (layer, row, col, attention, kept) for the largest pruned layer."""
    with threads_for(wb):  # the project's rule: one torch thread while training a model as small as the digits MLP
        return _run(wb, quick, progress, should_stop, long)


def _run(wb: Workbench, quick: bool, progress: Progress, should_stop: ShouldStop, long: bool) -> CheckReport:
    start = time.perf_counter()
    report = CheckReport("seqattn")
    mode = "long" if long else ("quick" if quick else "default")
    say = progress or (lambda f, text: None)

    def stopped() -> bool:
        return should_stop is not None and bool(should_stop())

    try:
        grids, skipped = pruned_layers(wb, DEFAULT_BLOCK, MIN_BLOCKS)
    except PlanError as e:
        report.results.append(CheckResult("seqattn", "SA++ block sparsification of this model",
                                          f"skipped: {e}", None, PAPER, kind="description"))
        report.seconds = time.perf_counter() - start
        return report
    say(0.0, "attention scaling at initialisation")
    report.results.append(_identity_result(wb, grids))
    claim_here = long or wb.name in CLAIM_MODELS
    runs: dict[tuple[str, int, float], BlockRun] = {}
    settings = MODES[mode]["settings"]

    def run(procedure: str, seed: int, sparsity: float, fraction: float, **extra) -> BlockRun | None:
        if stopped():
            return None
        say(fraction, f"{procedure} at {sparsity:.0%} block sparsity, seed {seed}")
        r = run_block_sparsification(wb, procedure, sparsity, seed, should_stop=should_stop,
                                     **{**settings, **extra})
        if r.complete:
            runs[(procedure, seed, sparsity)] = r
        return r if r.complete else None

    if claim_here:
        _claim_runs(run, MODES[mode], report)
    else:
        run("seqattn", 0, SPARSITY, 0.3, **FIGURE_RUN["quick" if quick else "default"])
        for claim in (_CLAIM_MAGNITUDE, _CLAIM_ACDC):
            report.results.append(CheckResult("seqattn", claim, "not run on this model: the training claim runs on "
                                              f"{', '.join(CLAIM_MODELS)} to keep the check's time (long=True runs "
                                              "it here)", None, _SOURCE))
    report.complete = not stopped()
    sa = runs.get(("seqattn", 0, SPARSITY))
    report.results.append(_schedule_result(sa, grids))
    report.frames["accuracy"] = pd.DataFrame(
        [{"procedure": p, "sparsity": s, "seed": seed, "accuracy": r.accuracy, "realised_sparsity":
          r.realised_sparsity, "seconds": r.seconds} for (p, seed, s), r in runs.items()],
        columns=["procedure", "sparsity", "seed", "accuracy", "realised_sparsity", "seconds"])
    report.frames["schedule"] = _schedule_frame(sa, runs.get(("acdc", 0, SPARSITY)))
    if sa is not None:
        layer = max(sa.attention, key=lambda k: sa.attention[k].numel())
        a, kept = sa.attention[layer], sa.block_masks[layer]
        rows, cols = np.meshgrid(np.arange(a.shape[0]), np.arange(a.shape[1]), indexing="ij")
        report.frames["attention"] = pd.DataFrame({"layer": layer, "row": rows.ravel(), "col": cols.ravel(),
                                                   "attention": a.numpy().ravel(), "kept": kept.numpy().ravel()})
        short = " (a short run for the schedule and the figures, not for accuracy)" if sa.config["epochs"] < 5 else ""
        report.results.append(CheckResult(
            "seqattn", "Realised sparsity at 90% block sparsity (layers with < 100 blocks stay dense)",
            f"{sa.realised_sparsity:.1%} of the prunable weights removed; pruned: {', '.join(grids)}; not pruned: "
            f"{', '.join(f'{k} ({v})' for k, v in skipped.items()) or 'none'}; SA++ run of {len(sa.records)} steps "
            f"({sa.config['epochs']} + {sa.config['finetune_epochs']} epochs) in {sa.seconds:.1f} s, accuracy "
            f"{sa.accuracy:.1%} after this run{short}", None, _SOURCE, kind="description"))
    report.notes.append(f"4x4 blocks; pruned layers: {', '.join(f'{k} {g[0]}x{g[1]} blocks' for k, g in grids.items())}"
                        f"; training from the model's trained weights, Adam lr 1e-3, {settings['epochs']} + "
                        f"{settings['finetune_epochs']} epochs per run ({mode})")
    report.seconds = time.perf_counter() - start
    say(1.0, "done")
    return report


_CLAIM_MAGNITUDE = ("At 90% block sparsity SA++ is not worse than one-shot block magnitude fine-tuned with the same "
                    "training budget")
_CLAIM_ACDC = "At 90% block sparsity SA++ is not worse than ACDC (block magnitude support), same schedule and budget"
_SOURCE = f"{PAPER}, Table 2 (Criteo MLP, magnitude) and Table 1 (ResNet-50, ACDC)"


def _claim_runs(run, mode: dict, report: CheckReport) -> None:
    """Paired seeds for SA++, block magnitude and ACDC at 90%, more seeds while a gap is within noise; then the
    accuracy curve at the other sparsities (seed 0)."""
    procedures = ("seqattn", "block-magnitude", "acdc")
    acc: dict[str, list[float]] = {p: [] for p in procedures}
    seed, total = 0, mode["max_seeds"] * 3 + len(mode["curve"]) * 3
    done = 0
    while seed < mode["max_seeds"]:
        results = [run(p, seed, SPARSITY, done / total + i / total) for i, p in enumerate(procedures)]
        done += 3
        if any(r is None for r in results):
            break
        for p, r in zip(procedures, results, strict=True):
            acc[p].append(r.accuracy)
        seed += 1
        if seed >= mode["seeds"]:
            noisy = [paired_verdict(acc["seqattn"], acc[b])[3] for b in ("block-magnitude", "acdc")]
            if not any(noisy):
                break
    for claim, other, name in ((_CLAIM_MAGNITUDE, "block-magnitude", "block magnitude"), (_CLAIM_ACDC, "acdc",
                                                                                          "ACDC")):
        agrees, gap, se, noisy = paired_verdict(acc["seqattn"], acc[other])
        if agrees is None:
            report.results.append(CheckResult("seqattn", claim, "not run (stopped)", None, _SOURCE))
            continue
        figure = (f"SA++ {np.mean(acc['seqattn']):.1%} vs {name} {np.mean(acc[other]):.1%} over {len(acc[other])} "
                  f"seeds: gap {gap * 100:+.1f} +- {se * 100:.1f} points (SE){', within noise' if noisy else ''}")
        report.results.append(CheckResult("seqattn", claim, figure, agrees, _SOURCE))
    for s in mode["curve"]:
        for p in procedures:
            if run(p, 0, s, done / total) is None:
                return
            done += 1


def _identity_result(wb: Workbench, grids: dict) -> CheckResult:
    """Attach zero-logit block attention to a copy of the model: the scaled weights and the outputs must equal the
    plain ones (A = N softmax(0) = 1)."""
    plain = trainable_copy(wb.model)
    scaled = trainable_copy(wb.model)
    attach_block_scaling(scaled, grids, DEFAULT_BLOCK, attention=True)
    named = dict(scaled.named_modules())
    plain_params = dict(plain.named_parameters())
    worst = 0.0
    with torch.no_grad():
        for name in grids:
            module, _, attr = name.rpartition(".")
            w, w_hat = plain_params[name], getattr(named[module], attr)
            worst = max(worst, float((w_hat - w).abs().max() / w.abs().max().clamp_min(1e-30)))
        x = wb.eval_x[:256]
        out, out_hat = plain.eval()(x), scaled.eval()(x)
        out_gap = float((out_hat - out).abs().max() / out.abs().max().clamp_min(1e-30))
    figure = (f"max |W (.) A - W| / max |W| = {worst:.1e} over {len(grids)} layers; outputs differ by {out_gap:.1e} "
              "relative (without the factor N they would shrink N-fold)")
    return CheckResult("seqattn", "With equal logits, W (.) N softmax(L) equals W: the scaled model computes what "
                       "the plain one does", figure, worst <= IDENTITY_TOL and out_gap <= 10 * IDENTITY_TOL,
                       f"{PAPER}, Algorithm 1 and the normalisation pitfall", kind="self-test")


def _schedule_result(sa: BlockRun | None, grids: dict) -> CheckResult:
    claim = ("The sparsify phases end at the target block sparsity (round(0.9 N) blocks of every pruned layer), kept "
             "through the sparse phases and the fine-tune")
    if sa is None:
        return CheckResult("seqattn", claim, "not run (stopped)", None, PAPER, kind="self-test")
    frame = sa.frame()
    n = sum(g[0] * g[1] for g in grids.values())
    target = sum(blocks_removed(g[0] * g[1], SPARSITY) for g in grids.values()) / n
    ends = [p.end - 1 for p in sa.phases if p.kind == "sparsify"]
    at_ends = frame.set_index("step").loc[ends, "block_sparsity"].to_numpy()
    sparse_steps = frame[frame.phase.isin(["sparse", "finetune"])].block_sparsity.to_numpy()
    per_layer = {k: int((~m).sum()) == blocks_removed(m.numel(), SPARSITY) for k, m in sa.block_masks.items()}
    ok = (bool(np.allclose(at_ends, target, rtol=0, atol=1e-12)) and bool(np.allclose(sparse_steps, target, rtol=0,
                                                                                        atol=1e-12))
          and all(per_layer.values()))
    figure = (f"block sparsity at the end of the {len(ends)} sparsify phases: "
              f"{', '.join(f'{v:.4f}' for v in at_ends)} (target {target:.4f}); sparse and fine-tune steps "
              f"{sparse_steps.min():.4f}-{sparse_steps.max():.4f}; final masks exact in "
              f"{sum(per_layer.values())} of {len(per_layer)} layers")
    return CheckResult("seqattn", claim, figure, ok, f"{PAPER} §3.1 (c = 4)", kind="self-test")


def _schedule_frame(sa: BlockRun | None, acdc: BlockRun | None) -> pd.DataFrame:
    """Scheduled and realised block sparsity per step for SA++ and ACDC (ACDC's schedule alone when it did not
    run: its phases at SA++'s step count)."""
    frames = [r.frame() for r in (sa, acdc) if r is not None]
    if sa is not None and acdc is None:
        steps = sa.phases[-1].end
        phases = training_phases("acdc", steps, sa.config["cycles"])
        kinds = {s: p.kind for p in phases for s in range(p.start, p.end)}
        frames.append(pd.DataFrame({"procedure": "acdc", "seed": 0, "step": range(steps),
                                    "phase": [kinds[s] for s in range(steps)],
                                    "scheduled": [SPARSITY if kinds[s] == "sparse" else 0.0 for s in range(steps)],
                                    "block_sparsity": math.nan, "loss": math.nan, "accuracy": math.nan}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def figures(report: CheckReport, dense_accuracy: float | None = None) -> list[dict]:
    """The sparsity schedule of SA++ and ACDC over steps beside accuracy against block sparsity for the three;
    below, the block attention of one layer with its final mask."""
    from ..charts import seqattn as charts

    frames, rows, row = report.frames, [], {}
    if len(frames.get("schedule", [])):
        row["schedule"] = charts.sparsity_schedule(frames["schedule"])
    if len(frames.get("accuracy", [])) and frames["accuracy"].procedure.nunique() > 1:  # a comparison, not one run
        row["accuracy"] = charts.accuracy_by_sparsity(frames["accuracy"], dense_accuracy=dense_accuracy)
    if row:
        rows.append(row)
    if len(frames.get("attention", [])):
        rows.append({"attention": charts.attention_heatmap(frames["attention"])})
    return rows


CHECK = Check(
    "seqattn", "SequentialAttention++ block sparsification (Yasuda et al., 2024)",
    "One softmax attention logit per 4x4 block scales the weights (A = N softmax(L)); training alternates dense "
    "phases with sparsify phases that drop the blocks of lowest attention along an exponential schedule (c = 4), "
    "then sparse phases, and ends with a fine-tune. Compared with ACDC (block magnitude support) and one-shot block "
    "magnitude, all trained for the same number of steps.",
    paper_check, figures,
    long="the training claim on every model (not only the MLP) with 40 + 10 epochs, 5 to 8 seeds and the curve at "
         "50-95% block sparsity: about 1 minute on the digits MLP, 4 on the CNN and 10 on the residual CNN (one CPU "
         "thread)")
