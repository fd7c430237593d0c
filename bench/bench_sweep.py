"""Sweep benchmarks: what the engine adds to a sweep, measured side by side with its floor in one run.

Evaluation dominates a sweep, so the engine should add almost nothing to it and evaluate no more than it must.
For each model, every comparison below is timed in interleaved rounds (the order alternates each round so
machine noise falls on all variants alike) and the median round is reported:

  * unstructured sweep (magnitude-global, ratios 0..0.9, method preparation included) against its floor: as
    many plain dense evaluation passes as the sweep made (forward + argmax over the evaluation split, on a copy
    of the model, nothing else); the sweep's pass count (``Workbench.eval_passes``); and the naive way: per
    ratio a deepcopy + ``torch.nn.utils.prune.global_unstructured``, then the same plain evaluation;
  * structured sweep (group-l1, same ratios, ``structured="sliced"``) against its floor: plain evaluation of the
    same physically smaller models, built before the clock starts; against the masked (dense-cost) structured
    sweep; the accuracies of the two structured sweeps compared point by point;
  * per-ratio slicing (``method.plan(r)`` + ``Workbench.sliced_model``; the dependency trace and the channel
    scores are one-time work) against Torch-Pruning's per-ratio deepcopy + ``MagnitudePruner`` + ``step()``.

Run from the repository root:  python bench/bench_sweep.py --model all      (see bench/README.md)
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import json
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.nn.utils import prune

from pruning_core import Workbench, load_builtin, load_digits, make_method, ratio_grid, sweep  # noqa: E402
from pruning_core.data import DataSplits, Split, synthetic_images  # noqa: E402
from pruning_core.datasets import photo_eval_set  # noqa: E402
from pruning_core.models import ARCHITECTURES  # noqa: E402

MODELS = ("digits-resnet", "resnet18-cifar", "efficientnet-lite0-imagenet")
# digits: the 539-image evaluation split tiled 16x, so a dense pass takes ~0.1 s on one thread and timer noise
# is small; ResNet-18: 256 synthetic 32x32 images, ~1.5 s per dense pass on one thread. EfficientNet-Lite0: the
# pretrained ImageNet model (an optional extra) on the 256 bundled photo crops at 224x224, unlabelled, so the
# sweep reports agreement with the dense model; several seconds per dense pass, the longest run here.
DEFAULT_EVAL_SAMPLES = {"digits-resnet": 539 * 16, "resnet18-cifar": 256, "efficientnet-lite0-imagenet": 256}
UNSTRUCTURED_METHOD, STRUCTURED_METHOD = "magnitude-global", "group-l1"
RATIOS = ratio_grid(0.0, 0.9, 10)


def pin_malloc() -> bool:
    """Keep glibc's malloc from handing memory back to the OS between allocations (no mmap per large tensor, no
    heap trimming). Otherwise whether an activation page-faults depends on the allocator's history, which made
    identical evaluation passes differ by up to 3x on a small VM; pinned, every variant pays the same.
    Returns False where there is no glibc (then nothing changes)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_max = -1, -4
    return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))


def plain_evaluation(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    """The floor's evaluation pass: forward in the workbench's batches and top-1 accuracy against ``y`` (the
    labels, or the dense model's predictions on unlabelled data), nothing more."""
    with torch.inference_mode():
        pred = torch.cat([model(chunk).argmax(1) for chunk in x.split(batch_size)])
        return float((pred == y).float().mean())


def prunable_modules(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """The (module, "weight") pairs the workbench prunes: weights with two or more dimensions."""
    return [(m, "weight") for m in model.modules()
            if isinstance(getattr(m, "weight", None), nn.Parameter) and m.weight.ndim >= 2]


def load(name: str, eval_samples: int) -> tuple[nn.Module, DataSplits, str]:
    if name == "digits-resnet":
        model, data = load_builtin(name), load_digits()
        n = len(data.eval)
        reps = -(-eval_samples // n)
        x, y = data.eval.x.repeat(reps, 1, 1, 1)[:eval_samples], data.eval.y.repeat(reps)[:eval_samples]
        tiled = DataSplits(data.name, data.train, data.calib, Split(x, y), data.num_classes)
        return model, tiled, f"committed weights; the {n}-image digits evaluation split tiled to {eval_samples}"
    if name == "efficientnet-lite0-imagenet":
        arch = ARCHITECTURES[name]
        if not arch.has_weights:
            raise SystemExit(f"{name}: its weights are an optional extra (requirements-extras.txt), not installed")
        mean, std = arch.normalization
        data = photo_eval_set(n=eval_samples, size=arch.input_shape[-1], mean=mean, std=std)
        return (arch.load().eval(), data,
                f"pretrained ImageNet weights; {eval_samples} bundled photo crops (unlabelled: agreement with dense)")
    torch.manual_seed(0)
    shape = ARCHITECTURES[name].input_shape
    return (ARCHITECTURES[name].build().eval(), synthetic_images(eval_samples, shape, 10),
            f"random weights (seed 0); {eval_samples} synthetic {shape} images")


def interleaved(variants: dict[str, Callable[[], object]], repeats: int
                ) -> tuple[dict[str, list[float]], dict[str, object]]:
    """Seconds of each variant in each of ``repeats`` rounds, the order alternating between rounds, and each
    variant's last result."""
    times: dict[str, list[float]] = {k: [] for k in variants}
    results: dict[str, object] = {}
    names = list(variants)
    for i in range(repeats):
        for k in (names if i % 2 == 0 else names[::-1]):
            start = time.perf_counter()
            results[k] = variants[k]()
            times[k].append(time.perf_counter() - start)
    return times, results


def torch_pruning_per_ratio(model: nn.Module, example: torch.Tensor, ratios: list[float]) -> list[int]:
    """Torch-Pruning's way, once per ratio: deepcopy, build the pruner (which traces the graph), step.
    Returns the pruned models' parameter counts."""
    import torch_pruning as tp

    params = []
    for r in ratios:
        m = copy.deepcopy(model)
        classifier = [mod for mod in m.modules() if isinstance(mod, nn.Linear)][-1]
        pruner = tp.pruner.MagnitudePruner(m, example, importance=tp.importance.GroupMagnitudeImportance(p=1),
                                           pruning_ratio=r, ignored_layers=[classifier])
        pruner.step()
        params.append(sum(p.numel() for p in m.parameters()))
    return params


def bench_model(name: str, eval_samples: int, repeats: int, floor_only: bool = False) -> dict:
    model, data, data_note = load(name, eval_samples)
    wb = Workbench(model, data, device="cpu", name=name)
    dense = copy.deepcopy(wb.model)  # the floor's model: the same weights, outside the workbench
    x, y, bs = wb.eval_x, wb.eval_y, wb.batch_size
    n = len(RATIOS)
    # once per workbench, off every clock: the dependency trace, the dense reference predictions and FLOPs
    start = time.perf_counter()
    wb.groups
    trace_seconds = time.perf_counter() - start
    wb.dense_metrics()
    wb.dense_flops
    if not wb.task.labelled:  # the floor scores top-1 agreement with the dense model, as the sweep does
        with torch.inference_mode():
            y = torch.cat([dense(chunk).argmax(1) for chunk in x.split(bs)])
    plain_evaluation(dense, x, y, bs)  # warm-up

    # ---- unstructured: sweep vs floor vs naive ------------------------------------------------------------
    passes: dict[str, list[int]] = {"unstructured": [], "sliced": []}

    def counted(kind: str, run: Callable[[], list]) -> list:
        before = wb.eval_passes
        points = run()
        passes[kind].append(wb.eval_passes - before)
        return points

    def ours_unstructured():
        return counted("unstructured", lambda: list(sweep(wb, [make_method(UNSTRUCTURED_METHOD)], RATIOS)))

    def floor_unstructured():
        return [plain_evaluation(dense, x, y, bs) for _ in RATIOS]

    def naive_unstructured():
        accuracies = []
        for r in RATIOS:
            m = copy.deepcopy(dense)
            prune.global_unstructured(prunable_modules(m), prune.L1Unstructured, amount=r)
            accuracies.append(plain_evaluation(m, x, y, bs))
        return accuracies

    u_variants = {"sweep": ours_unstructured, "floor": floor_unstructured, "naive": naive_unstructured}
    if floor_only:
        del u_variants["naive"]
    print(f"  unstructured: {repeats} rounds of {' / '.join(u_variants)}", flush=True)
    u_times, u_res = interleaved(u_variants, repeats)

    # ---- structured: sliced sweep vs floor vs masked sweep -------------------------------------------------
    method = make_method(STRUCTURED_METHOD).prepare(wb)
    small_models = [wb.sliced_model(method.plan(r), share_untouched=False) for r in RATIOS]
    for m in small_models:  # warm-up: the first pass at new shapes creates oneDNN primitives
        plain_evaluation(m, x, y, bs)

    def sliced():
        return counted("sliced", lambda: list(sweep(wb, [make_method(STRUCTURED_METHOD)], RATIOS)))

    def masked():
        return list(sweep(wb, [make_method(STRUCTURED_METHOD)], RATIOS, structured="masked"))

    def floor_structured():
        return [plain_evaluation(m, x, y, bs) for m in small_models]

    s_variants = {"sliced": sliced, "floor": floor_structured, "masked": masked}
    if floor_only:
        del s_variants["masked"]
    print(f"  structured: {repeats} rounds of {' / '.join(s_variants)}", flush=True)
    s_times, s_res = interleaved(s_variants, repeats)

    # ---- per-ratio slicing vs Torch-Pruning --------------------------------------------------------------
    def ours_slicing():
        return [sum(p.numel() for p in wb.sliced_model(method.plan(r)).parameters()) for r in RATIOS]

    example = x[:1].clone()
    tp_model = copy.deepcopy(dense)
    for p in tp_model.parameters():
        p.requires_grad_(True)  # Torch-Pruning traces autograd's graph

    def tp_slicing():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch_pruning_per_ratio(tp_model, example, RATIOS)

    c_variants = {"ours": ours_slicing, "torch-pruning": tp_slicing}
    if floor_only:
        del c_variants["torch-pruning"]
    print(f"  slicing: {repeats} rounds of {' / '.join(c_variants)}", flush=True)
    c_times, c_res = interleaved(c_variants, repeats)

    u = {k: statistics.median(v) for k, v in u_times.items()}
    s = {k: statistics.median(v) for k, v in s_times.items()}
    c = {k: statistics.median(v) for k, v in c_times.items()}
    headline = wb.task.primary  # accuracy with labels; agreement with the dense model without
    sliced_acc = [p.row[headline] for p in s_res["sliced"]]
    ours_acc = [p.row[headline] for p in u_res["sweep"]]
    is_resnet18 = name == "resnet18-cifar"
    rows = [
        _row("unstructured sweep s  vs floor: as many plain dense passes", u["sweep"], u["floor"],
             "<= 1.10", u["sweep"] <= 1.10 * u["floor"]),
        _row("unstructured sweep: evaluation passes  vs ratios", max(passes["unstructured"]), n,
             "== ratios", set(passes["unstructured"]) == {n}, fmt="d"),
        _row("structured sliced sweep s  vs floor: pre-built small models", s["sliced"], s["floor"],
             "<= 1.20", s["sliced"] <= 1.20 * s["floor"]),
        _row("structured sliced sweep: evaluation passes  vs ratios", max(passes["sliced"]), n,
             "== ratios", set(passes["sliced"]) == {n}, fmt="d"),
    ]
    if not floor_only:  # the comparisons with the naive ways, the masked sweep and Torch-Pruning
        masked_acc = [p.row[headline] for p in s_res["masked"]]
        rows[2:2] = [_row("unstructured sweep s  vs naive: deepcopy+global_unstructured", u["sweep"], u["naive"],
                          "(shown)", None)]
        rows += [
            _row("structured sliced sweep s  vs masked sweep (dense cost)", s["sliced"], s["masked"],
                 "<= 0.50", s["sliced"] <= 0.50 * s["masked"]),
            _row("  its floor alone s  vs masked sweep (best any slicer can do)", s["floor"], s["masked"],
                 "(shown)", None),
            _row("plan + slice, 10 ratios s  vs Torch-Pruning deepcopy+pruner+step", c["ours"], c["torch-pruning"],
                 "<= 0.10" if is_resnet18 else "(shown)",
                 c["ours"] <= 0.10 * c["torch-pruning"] if is_resnet18 else None),
            _row(f"sliced vs masked sweep {headline}: max |difference|",
                 max(abs(a - b) for a, b in zip(sliced_acc, masked_acc, strict=True)), 0.0, "== 0",
                 sliced_acc == masked_acc, fmt="g"),
            _row(f"unstructured sweep vs naive {headline}: max |difference|",
                 max(abs(a - b) for a, b in zip(ours_acc, u_res["naive"], strict=True)), 0.0, "(shown)", None,
                 fmt="g"),
        ]
    notes = {
        "data": data_note,
        "dense pass, s": round(u["floor"] / n, 4),
        "one-time dependency trace, s": round(trace_seconds, 3),
        "engine time per ratio, ms (unstructured, structured sliced)": (
            round(1e3 * (u["sweep"] - u["floor"]) / n, 2), round(1e3 * (s["sliced"] - s["floor"]) / n, 2)),
        "plan + slice per ratio, ms (ours, Torch-Pruning)": (round(1e3 * c["ours"] / n, 2),
                                                             round(1e3 * c.get("torch-pruning", float("nan")) / n, 1)),
        "small-model parameters per ratio (ours, Torch-Pruning)": list(zip(c_res["ours"],
                                                                             c_res.get("torch-pruning", c_res["ours"]),
                                                                             strict=True)),
        f"structured {headline} per ratio (sliced = masked)": [round(a, 4) for a in sliced_acc],
    }
    times = {"unstructured": u_times, "structured": s_times, "slicing": c_times}
    return {"model": name, "eval_samples": eval_samples, "ratios": RATIOS, "rows": rows, "notes": notes,
            "seconds_per_round": times}


def _row(what: str, ours: float, ref: float, target: str, ok: bool | None, fmt: str = ".3f") -> dict:
    ratio = ours / ref if ref else None
    return {"measurement": what, "ours": ours, "reference": ref, "ratio": ratio, "target": target,
            "result": "-" if ok is None else ("PASS" if ok else "FAIL"), "fmt": fmt}


def print_table(result: dict) -> None:
    print(f"\n== {result['model']} ==")
    head = f"{'measurement':<66} {'ours':>8} {'reference':>9} {'ratio':>6}  {'target':<9} result"
    print(head)
    print("-" * len(head))
    for r in result["rows"]:
        ratio = "-" if r["ratio"] is None or r["fmt"] == "g" else f"{r['ratio']:.2f}"
        print(f"{r['measurement']:<66} {format(r['ours'], r['fmt']):>8} {format(r['reference'], r['fmt']):>9} "
              f"{ratio:>6}  {r['target']:<9} {r['result']}")
    for k, v in result["notes"].items():
        print(f"  {k}: {v}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Sweep benchmarks: engine time against its evaluation floor.")
    ap.add_argument("--model", choices=[*MODELS, "all"], default="all")
    ap.add_argument("--eval-samples", type=int, default=None,
                    help="evaluation samples, for every model run (default: digits-resnet 8624 = the digits "
                         "evaluation split tiled 16x; resnet18-cifar 256 synthetic images)")
    ap.add_argument("--floor-only", action="store_true",
                    help="only the sweeps against their evaluation floor (no naive, masked or Torch-Pruning runs): "
                         "for large models, where those add many dense passes")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds per comparison; the median is shown")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch.set_num_threads, fixed for the run (default 1: on a shared 2-core machine a second "
                         "thread waiting for a busy core turned 0.05 s passes into seconds)")
    ap.add_argument("--system-malloc", action="store_true", help="leave glibc's malloc settings alone")
    ap.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write the results as JSON")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    pinned = False if args.system_malloc else pin_malloc()
    print(f"torch {torch.__version__}, {args.threads} thread(s), {platform.machine()}, "
          f"malloc {'pinned' if pinned else 'default'}, median of {args.repeats} interleaved rounds, "
          f"ratios {RATIOS[0]}..{RATIOS[-1]} ({len(RATIOS)})")
    start = time.perf_counter()
    results = []
    for name in (MODELS if args.model == "all" else (args.model,)):
        print(f"{name}:", flush=True)
        results.append(bench_model(name, args.eval_samples or DEFAULT_EVAL_SAMPLES[name], args.repeats,
                                   args.floor_only))
    for r in results:
        print_table(r)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"torch": torch.__version__, "threads": args.threads,
                                         "malloc_pinned": pinned, "repeats": args.repeats, "results": results},
                                        indent=1))
    return 0 if all(r["result"] != "FAIL" for res in results for r in res["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
