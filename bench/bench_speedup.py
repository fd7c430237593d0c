"""Measured speed-up: how much faster a channel-pruned ImageNet model really runs, next to what its FLOPs promise.

For ResNet-50, MobileNetV2 and EfficientNet-Lite0 (3x224x224 inputs, random weights: latency does not depend on
the weights' values), group-l1 removes 30, 50 and 70% of the channels of every prunable group and
``Workbench.sliced_model`` builds the physically smaller model, the one the Export screen writes. The dense model
and the three small ones are timed side by side (``pruning_core.latency.measure_interleaved``: warm-up runs, then
rounds in which every model runs once, the order reversed every other round, so machine noise falls on all four)
at batch 1 and at a batch (default 32), on the CPU, with a fixed torch thread count. Each row prints the FLOPs
kept, the ideal speed-up 1 / FLOPs kept, the dense and pruned medians, the realised speed-up (dense median /
pruned median, and the p10-p90 of the per-round ratios) and the realised fraction of the ideal.

Target: ResNet-50 with 50% of the channels removed realises at least 0.7 of its FLOPs reduction on the CPU
(speed-up >= 0.7 / FLOPs kept), at batch 1 and at the batch; PASS/FAIL. The other rows are shown.

Architectures are looked up in ``pruning_core.models.ARCHITECTURES`` by name when the benchmark runs; a model
whose architecture is not registered is skipped with a message. ``--model resnet18`` (ResNet-18, ImageNet stem)
is a quicker stand-in.

Run from the repository root:  python bench/bench_speedup.py            (see bench/README.md)
"""

from __future__ import annotations

import os
import sys

from blas_threads import pin_blas_threads  # noqa: E402  (bench/ is the script's folder)

DEFAULT_THREADS = os.cpu_count() or 1
pin_blas_threads([*sys.argv, "--threads", str(DEFAULT_THREADS)])  # before torch; the command line's count first

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from bench_sweep import pin_malloc  # noqa: E402

from pruning_core import Workbench, make_method, metrics  # noqa: E402
from pruning_core.data import synthetic_images  # noqa: E402
from pruning_core.latency import compare, measure_interleaved  # noqa: E402
from pruning_core.models import ARCHITECTURES  # noqa: E402

# model -> architecture names to look for, first registered wins (224x224 inputs only)
MODELS = {"resnet50": ("resnet50-imagenet", "resnet50"),
          "mobilenetv2": ("mobilenetv2-imagenet", "mobilenet-v2-imagenet", "mobilenet-v2", "mobilenetv2"),
          "efficientnet-lite0": ("efficientnet-lite0", "efficientnet-lite0-imagenet"),
          "resnet18": ("resnet18-imagenet", "resnet18")}
DEFAULT_MODELS = ("resnet50", "mobilenetv2", "efficientnet-lite0")
METHOD = "group-l1"
RATIOS = (0.3, 0.5, 0.7)
TARGET = ("resnet50", 0.5, 0.7)  # model, ratio removed, least realised / ideal
SAMPLES = 4  # the workbench's evaluation split: it is evaluated once, and is not what is timed


def architecture_for(model: str) -> str | None:
    return next((n for n in MODELS[model] if n in ARCHITECTURES and ARCHITECTURES[n].input_shape[1:] == (224, 224)),
                None)


def small_models(arch: str, device: str) -> tuple[Workbench, dict[float, torch.nn.Module], dict[float, dict]]:
    """The dense workbench and, per ratio, the physically smaller model with its kept fractions and the largest
    output difference from the masked model (the slicing must be exact, or the timing means nothing)."""
    a = ARCHITECTURES[arch]
    torch.manual_seed(0)
    wb = Workbench(a.build().eval(), synthetic_images(SAMPLES, a.input_shape, a.num_classes), device=device,
                   name=arch)
    method = make_method(METHOD).prepare(wb)
    dense_flops, dense_params = wb.dense_flops[0], wb.dense_params
    models, info = {}, {}
    for r in RATIOS:
        plan = method.plan(r)
        small = wb.sliced_model(plan, share_untouched=False).eval()
        with wb.applied(plan) as masked:
            reference = metrics.predict(masked, wb.eval_x)
        diff = float((metrics.predict(small, wb.eval_x) - reference).abs().max())
        flops = metrics.count_flops(small, wb.example_input)[0]
        models[r] = small
        info[r] = {"flops_kept": flops / dense_flops, "params_kept": metrics.parameter_count(small) / dense_params,
                   "max_abs_difference_vs_masked": diff}
    return wb, models, info


def bench_model(model: str, arch: str, batches: tuple[int, ...], warmup: int, repeats: int,
                min_seconds: float, device: str) -> dict:
    start = time.perf_counter()
    wb, small, info = small_models(arch, device)
    setup = time.perf_counter() - start
    rows = []
    for b in batches:
        print(f"  batch {b}: {warmup} warm-up runs, {repeats}+ interleaved rounds of dense + {len(RATIOS)} pruned",
              flush=True)
        lat = measure_interleaved({"dense": wb.model, **{f"r{r}": m for r, m in small.items()}}, wb.eval_x,
                                  batch=b, warmup=warmup, repeats=repeats, min_seconds=min_seconds)
        for r in RATIOS:
            s = compare(lat["dense"], lat[f"r{r}"], info[r]["flops_kept"])
            targeted = (model, r) == TARGET[:2] and device == "cpu"  # the target is the CPU's
            rows.append({"ratio_removed": r, "batch": b, **info[r], "ideal_speedup": s.ideal_speedup,
                         "dense_ms": s.dense.median_ms, "pruned_ms": s.pruned.median_ms, "speedup": s.speedup,
                         "speedup_p10": s.speedup_p10, "speedup_p90": s.speedup_p90, "efficiency": s.efficiency,
                         "dense_iqr_ms": s.dense.iqr_ms, "pruned_iqr_ms": s.pruned.iqr_ms, "rounds": s.dense.repeats,
                         "target": f">= {TARGET[2]}" if targeted else "(shown)",
                         "result": ("PASS" if s.efficiency >= TARGET[2] else "FAIL") if targeted else "-"})
    return {"model": model, "architecture": arch, "title": ARCHITECTURES[arch].title,
            "dense_flops": wb.dense_flops[0], "dense_params": wb.dense_params, "setup_seconds": round(setup, 1),
            "threads": torch.get_num_threads(), "device": device, "timer": lat["dense"].timer, "rows": rows}


def print_table(result: dict) -> None:
    print(f"\n== {result['model']}: {result['title']} ({result['architecture']}) on {result['device']}, dense "
          f"{result['dense_flops'] / 1e9:.2f} GFLOPs, {result['dense_params'] / 1e6:.2f} M parameters ==")
    head = (f"{'removed':>7} {'batch':>5} {'FLOPs kept':>10} {'ideal':>6} {'dense ms':>9} {'pruned ms':>9} "
            f"{'speed-up':>8} {'p10-p90':>11} {'real/ideal':>10}  {'target':<7} result")
    print(head)
    print("-" * len(head))
    for r in result["rows"]:
        print(f"{r['ratio_removed']:>7.0%} {r['batch']:>5d} {r['flops_kept']:>10.1%} {r['ideal_speedup']:>5.2f}x "
              f"{r['dense_ms']:>9.2f} {r['pruned_ms']:>9.2f} {r['speedup']:>7.2f}x "
              f"{r['speedup_p10']:>5.2f}-{r['speedup_p90']:<5.2f} {r['efficiency']:>10.2f}  {r['target']:<7} "
              f"{r['result']}")
    worst = max(r["max_abs_difference_vs_masked"] for r in result["rows"])
    print(f"  small models = masked models: max |output difference| {worst:.2g}; set-up (trace, plans, slicing) "
          f"{result['setup_seconds']} s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Measured speed-up of channel-pruned ImageNet models against FLOPs.")
    ap.add_argument("--model", action="append", choices=[*MODELS, "all"],
                    help="repeat for several (default: resnet50, mobilenetv2, efficientnet-lite0; 'all' adds the "
                         "resnet18 stand-in)")
    ap.add_argument("--batch", type=int, default=32, help="the second batch size besides 1 (default 32)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed runs of every model first (default 3)")
    ap.add_argument("--repeats", type=int, default=10, help="interleaved rounds at least (default 10)")
    ap.add_argument("--min-seconds", type=float, default=1.0,
                    help="more rounds until every model has been timed this long (default 1 s; at most 50x --repeats)")
    ap.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                    help=f"torch threads, fixed for the run (default: all cores, os.cpu_count() = {DEFAULT_THREADS}; "
                         "a deployment uses them all. On a machine shared with other work, --threads 1 is steadier)")
    ap.add_argument("--device", default="cpu",
                    help="cpu (default; the target is the CPU's) or cuda: timed with CUDA events after a synchronize")
    ap.add_argument("--system-malloc", action="store_true", help="leave glibc's malloc settings alone")
    ap.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write the results as JSON")
    args = ap.parse_args(argv)

    chosen = args.model or list(DEFAULT_MODELS)
    chosen = list(MODELS) if "all" in chosen else list(dict.fromkeys(chosen))
    torch.set_num_threads(args.threads)
    pinned = False if args.system_malloc else pin_malloc()
    batches = (1, args.batch) if args.batch != 1 else (1,)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        ap.error("--device cuda: torch sees no CUDA GPU")
    print(f"torch {torch.__version__}, {args.device}, {torch.get_num_threads()} thread(s) of {os.cpu_count()} cores, "
          f"{platform.machine()}, malloc {'pinned' if pinned else 'default'}; {METHOD} at "
          f"{', '.join(f'{r:.0%}' for r in RATIOS)} of channels removed; batches {batches}; {args.warmup} warm-up "
          f"runs, median of >= {args.repeats} interleaved rounds (>= {args.min_seconds:g} s per model)")
    start = time.perf_counter()
    results, skipped = [], []
    for model in chosen:
        arch = architecture_for(model)
        if arch is None:
            skipped.append(model)
            print(f"{model}: skipped, no 224x224 architecture registered under {', '.join(MODELS[model])}",
                  flush=True)
            continue
        print(f"{model} ({arch}):", flush=True)
        results.append(bench_model(model, arch, batches, args.warmup, args.repeats, args.min_seconds, args.device))
    for r in results:
        print_table(r)
    if skipped:
        print(f"\nskipped (architecture not registered): {', '.join(skipped)}")
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"torch": torch.__version__, "threads": args.threads, "cores": os.cpu_count(),
                                         "malloc_pinned": pinned, "warmup": args.warmup, "repeats": args.repeats,
                                         "min_seconds": args.min_seconds, "device": args.device, "method": METHOD,
                                         "ratios": RATIOS, "results": results, "skipped": skipped}, indent=1))
    return 0 if all(row["result"] != "FAIL" for res in results for row in res["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
