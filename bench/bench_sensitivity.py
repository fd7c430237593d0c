"""Sensitivity benchmark: the suffix engine against full passes, and against the best any suffix scheme can do.

For each model, a 5-ratio grid (0.1 .. 0.9) over every channel group (criterion l1), both engines of
``sensitivity_table`` timed in interleaved rounds (the order alternates each round; the median is reported):

  * naive: one full evaluation pass per cell (apply the group plan, forward over the split, restore);
  * ours: the suffix engine (dense prefix once, then per cell only the layers from the group's first one on);
  * ideal: naive x (sum over cells of the suffix FLOPs / sum over cells of the whole model's FLOPs), with FLOPs
    per layer from ``Workbench.dense_flops`` (``sensitivity.suffix_fractions``): what a suffix scheme would take if
    time followed FLOPs and the dense prefix, tracing and checks were free. Target: ours <= 1.2 x ideal.

Both engines must give the same table (max |difference| of accuracy and loss printed). One-time work (dependency
trace, dense predictions, FLOP count, channel scores) happens before the clocks start.

Models: digits-resnet (committed weights, the 539-image digits evaluation split) and resnet18-cifar (random
weights, seed 0, synthetic 3x32x32 images).

Run from the repository root:  python bench/bench_sensitivity.py [--model all] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import sys

from blas_threads import pin_blas_threads  # noqa: E402  (bench/ is the script's folder)

pin_blas_threads(sys.argv)  # before numpy, scipy and torch are imported

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from bench_sweep import interleaved, pin_malloc  # noqa: E402  (same directory)

from pruning_core import Workbench, load_builtin, load_digits, ratio_grid  # noqa: E402
from pruning_core.data import synthetic_images  # noqa: E402
from pruning_core.importance.criteria import channel_scores  # noqa: E402
from pruning_core.models import ARCHITECTURES  # noqa: E402
from pruning_core.sensitivity import prepared_suffixes, sensitivity_table, suffix_fractions  # noqa: E402

MODELS = ("digits-resnet", "resnet18-cifar")
DEFAULT_EVAL_SAMPLES = {"resnet18-cifar": 256}
RATIOS = ratio_grid(0.1, 0.9, 5)
TARGET = 1.2


def workbench(name: str, samples: int, device: str) -> tuple[Workbench, str]:
    if name == "digits-resnet":
        return (Workbench(load_builtin(name), load_digits(), device=device, name=name),
                "committed weights; the 539-image digits evaluation split")
    torch.manual_seed(0)
    arch = ARCHITECTURES[name]
    data = synthetic_images(samples, arch.input_shape, arch.num_classes)
    return (Workbench(arch.build().eval(), data, device=device, name=name),
            f"random weights (seed 0); {samples} synthetic {arch.input_shape} images")


def bench_model(name: str, samples: int, repeats: int, device: str) -> dict:
    wb, data_note = workbench(name, samples, device)
    start = time.perf_counter()
    wb.groups
    wb.dense_metrics()
    wb.dense_flops
    scores = channel_scores(wb, "l1")
    setup = time.perf_counter() - start
    start = time.perf_counter()
    prepared_suffixes(wb)  # once per working copy: fx trace, cuts, a check on two samples
    prepare = time.perf_counter() - start
    sensitivity_table(wb, scores, RATIOS[:1])  # warm-up: first-call costs of both paths
    sensitivity_table(wb, scores, RATIOS[:1], engine="naive")

    print(f"  {repeats} rounds of naive / suffix, {len(wb.groups.groups)} groups x {len(RATIOS)} ratios", flush=True)
    times, results = interleaved({"naive": lambda: sensitivity_table(wb, scores, RATIOS, engine="naive"),
                                  "ours": lambda: sensitivity_table(wb, scores, RATIOS)}, repeats)
    naive, ours = results["naive"], results["ours"]
    assert ours.attrs["meta"]["engine"] == "suffix", ours.attrs["meta"]["fallback"]
    fractions = suffix_fractions(wb)
    evaluated = ours[ours["channels_removed"] > 0]
    share = sum(fractions[g] for g in evaluated["group"]) / len(evaluated)
    t = {k: statistics.median(v) for k, v in times.items()}
    ideal = t["naive"] * share
    diff = max(float((naive[c] - ours[c]).abs().max()) for c in ("accuracy", "loss", "agreement"))
    return {"model": name, "data": data_note, "samples": len(wb.eval_y), "groups": len(wb.groups.groups),
            "cells": len(evaluated), "naive_s": t["naive"], "ours_s": t["ours"], "ideal_s": ideal,
            "ours_over_ideal": t["ours"] / ideal, "naive_over_ours": t["naive"] / t["ours"],
            "suffix_flops_share": share, "prefix_s": ours.attrs["meta"]["prefix_seconds"],
            "max_abs_difference": diff, "setup_s": setup, "prepare_s": prepare, "rounds": times,
            "suffix_fraction_by_group": {g: round(f, 3) for g, f in fractions.items()},
            "result": "PASS" if t["ours"] <= TARGET * ideal and diff < 1e-4 else "FAIL"}


def print_table(results: list[dict]) -> None:
    head = (f"{'model':<16} {'cells':>5} {'naive s':>8} {'ours s':>8} {'ideal s':>8} {'ours/ideal':>10} "
            f"{'naive/ours':>10} {'FLOPs share':>11} {'max |diff|':>10}  target {TARGET}x  result")
    print(head)
    print("-" * len(head))
    for r in results:
        print(f"{r['model']:<16} {r['cells']:>5} {r['naive_s']:>8.2f} {r['ours_s']:>8.2f} {r['ideal_s']:>8.2f} "
              f"{r['ours_over_ideal']:>10.2f} {r['naive_over_ours']:>10.2f} {r['suffix_flops_share']:>11.3f} "
              f"{r['max_abs_difference']:>10.1e}  {'':14} {r['result']}")
    for r in results:
        print(f"  {r['model']}: {r['data']}; one-time fx trace + check {r['prepare_s']:.3f} s (not in ours); dense "
              f"prefix {r['prefix_s']:.3f} s of ours; suffix FLOPs share by group {r['suffix_fraction_by_group']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Sensitivity benchmark: suffix engine vs full passes vs FLOPs ideal.")
    ap.add_argument("--model", choices=[*MODELS, "all"], default="all")
    ap.add_argument("--eval-samples", type=int, default=None,
                    help="synthetic images for resnet18-cifar (default 256); digits uses its evaluation split")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds; the median is shown")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write the results as JSON")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    pinned = pin_malloc()
    print(f"torch {torch.__version__}, {args.threads} thread(s), {platform.machine()}, device {args.device}, "
          f"malloc {'pinned' if pinned else 'default'}, median of {args.repeats} rounds, ratios {RATIOS}")
    start = time.perf_counter()
    results = []
    for name in (MODELS if args.model == "all" else (args.model,)):
        print(f"{name}:", flush=True)
        results.append(bench_model(name, args.eval_samples or DEFAULT_EVAL_SAMPLES.get(name, 0), args.repeats,
                                   args.device))
    print()
    print_table(results)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"torch": torch.__version__, "threads": args.threads, "device": args.device,
                                         "repeats": args.repeats, "ratios": RATIOS, "results": results}, indent=1))
    return 0 if all(r["result"] == "PASS" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
