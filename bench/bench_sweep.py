"""Sweep benchmarks: what the engine adds to a sweep, measured side by side with its floor in one run.

Evaluation dominates a sweep, so the engine should add almost nothing to it and evaluate no more than it must.
For each model this script times, interleaved and repeated (median of ``--repeats``):

  * unstructured sweep (magnitude-global, 10 ratios 0..0.9) against the floor: the same number of plain dense
    evaluation passes (forward + argmax over the evaluation split, nothing else) on a copy of the model;
    the sweep's pass count (``Workbench.eval_passes``); the naive way for comparison (deepcopy +
    ``torch.nn.utils.prune.global_unstructured`` per ratio, then the same plain evaluation);
  * structured sweep (group-l1, same ratios, sliced) against the floor: plain evaluation of the same physically
    smaller models, built before the clock starts; against the masked (dense-cost) structured sweep; the
    accuracies of the two structured sweeps compared point by point;
  * per-ratio slicing (``method.plan(r)`` + ``Workbench.sliced_model``) against Torch-Pruning's per-ratio
    deepcopy + ``MagnitudePruner`` + ``step()``.

Run from the repository root:  python bench/bench_sweep.py --model all   (see bench/README.md)
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

import torch
from torch import nn
from torch.nn.utils import prune

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from pruning_core import Workbench, load_builtin, load_digits, make_method, ratio_grid, sweep  # noqa: E402
from pruning_core.data import DataSplits, Split, synthetic_images  # noqa: E402
from pruning_core.models import ARCHITECTURES  # noqa: E402

MODELS = ("digits-resnet", "resnet18-cifar")
# digits: the 539-image evaluation split tiled 16x, so one dense pass takes ~50 ms on 2 cores and timer noise
# stays small; ResNet-18: one dense pass over 128 synthetic 32x32 images takes ~1 s on 2 cores, which keeps
# `--model all` within about 5 minutes there.
DEFAULT_EVAL_SAMPLES = {"digits-resnet": 539 * 16, "resnet18-cifar": 128}
UNSTRUCTURED_METHOD, STRUCTURED_METHOD = "magnitude-global", "group-l1"


def pin_malloc() -> bool:
    """Keep glibc's malloc from handing memory back to the OS between allocations (no mmap per large tensor, no
    heap trimming). Otherwise whether an activation page-faults depends on the allocator's history, which made
    identical evaluation passes differ by up to 3x on a small VM; pinned, every variant pays the same.
    Returns False where there is no glibc (then nothing changes)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1))


def plain_evaluation(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    """The floor's evaluation pass: forward in batches and top-1 accuracy, nothing more."""
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
        reps = -(-eval_samples // len(data.eval))
        x, y = data.eval.x.repeat(reps, 1, 1, 1)[:eval_samples], data.eval.y.repeat(reps)[:eval_samples]
        data = DataSplits(data.name, data.train, data.calib, Split(x, y), data.num_classes)
        return model, data, f"committed weights; digits eval split ({len(load_digits().eval)}) tiled to {eval_samples}"
    torch.manual_seed(0)
    model = ARCHITECTURES[name].build().eval()
    return model, synthetic_images(eval_samples, ARCHITECTURES[name].input_shape, 10), \
        f"random weights (seed 0); {eval_samples} synthetic {ARCHITECTURES[name].input_shape} images"


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def interleaved(variants: dict, repeats: int) -> tuple[dict[str, float], dict[str, object]]:
    """Median seconds of each variant over ``repeats`` rounds; the order alternates each round so drift and
    machine noise fall on every variant alike. Also returns each variant's last result."""
    times: dict[str, list[float]] = {k: [] for k in variants}
    results: dict[str, object] = {}
    names = list(variants)
    for i in range(repeats):
        for k in (names if i % 2 == 0 else names[::-1]):
            t, results[k] = timed(variants[k])
            times[k].append(t)
    return {k: statistics.median(v) for k, v in times.items()}, results


def torch_pruning_per_ratio(model: nn.Module, example: torch.Tensor, ratios: list[float]) -> list[int]:
    """Torch-Pruning's way, once per ratio: deepcopy, build the pruner (re-traces the graph), step.
    Returns the pruned models' parameter counts."""
    import torch_pruning as tp

    params = []
    for r in ratios:
        m = copy.deepcopy(model)
        pruner = tp.pruner.MagnitudePruner(m, example, importance=tp.importance.GroupMagnitudeImportance(p=1),
                                           pruning_ratio=r, ignored_layers=[m.fc])
        pruner.step()
        params.append(sum(p.numel() for p in m.parameters()))
    return params


def bench_model(name: str, eval_samples: int, repeats: int) -> dict:
    model, data, data_note = load(name, eval_samples)
    wb = Workbench(model, data, device="cpu", name=name)
    ratios = ratio_grid(0.0, 0.9, 10)
    dense = copy.deepcopy(wb.model)  # the floor's model: same weights, outside the workbench
    x, y, bs = wb.eval_x, wb.eval_y, wb.batch_size
    # one-time work per workbench, kept off every clock below: dependency trace, dense reference predictions
    trace_seconds, _ = timed(lambda: wb.groups)
    wb.dense_metrics()
    for _ in range(2):  # warm-up (allocator, oneDNN primitives)
        plain_evaluation(dense, x, y, bs)

    # ---- unstructured ---------------------------------------------------------------------------------------
    counted: list[int] = []

    def ours_unstructured():
        before = wb.eval_passes
        points = list(sweep(wb, [make_method(UNSTRUCTURED_METHOD)], ratios))  # prepare (one sort) included
        counted.append(wb.eval_passes - before)
        return [p.row["accuracy"] for p in points]

    def floor_unstructured():
        return [plain_evaluation(dense, x, y, bs) for _ in ratios]

    def naive_unstructured():
        accs = []
        for r in ratios:
            m = copy.deepcopy(dense)
            prune.global_unstructured(prunable_modules(m), prune.L1Unstructured, amount=r)
            accs.append(plain_evaluation(m, x, y, bs))
        return accs

    print(f"  unstructured: {repeats} rounds of ours / floor / naive ...", flush=True)
    u_t, u_res = interleaved({"ours": ours_unstructured, "floor": floor_unstructured,
                              "naive": naive_unstructured}, repeats)

    # ---- structured -----------------------------------------------------------------------------------------
    method = make_method(STRUCTURED_METHOD).prepare(wb)
    small_models = [wb.sliced_model(method.plan(r), share_untouched=False) for r in ratios]
    for m in small_models:  # warm-up: the first pass at a new shape pays for oneDNN primitive creation
        plain_evaluation(m, x, y, bs)
    s_counted: list[int] = []

    def structured(mode: str):
        def run():
            before = wb.eval_passes
            points = list(sweep(wb, [make_method(STRUCTURED_METHOD)], ratios, structured=mode))
            if mode == "sliced":
                s_counted.append(wb.eval_passes - before)
            return points
        return run

    def floor_structured():
        return [plain_evaluation(m, x, y, bs) for m in small_models]

    print(f"  structured: {repeats} rounds of sliced / floor / masked ...", flush=True)
    s_t, s_res = interleaved({"sliced": structured("sliced"), "floor": floor_structured,
                              "masked": structured("masked")}, repeats)
    sliced_acc = [p.row["accuracy"] for p in s_res["sliced"]]
    masked_acc = [p.row["accuracy"] for p in s_res["masked"]]

    # ---- per-ratio slicing against Torch-Pruning ------------------------------------------------------------
    def ours_slicing():
        return [sum(p.numel() for p in wb.sliced_model(method.plan(r)).parameters()) for r in ratios]

    example = x[:1].clone()
    tp_model = copy.deepcopy(dense)
    for p in tp_model.parameters():
        p.requires_grad_(True)  # Torch-Pruning traces autograd's graph

    def tp_slicing():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch_pruning_per_ratio(tp_model, example, ratios)

    print(f"  slicing: {repeats} rounds of ours / Torch-Pruning ...", flush=True)
    c_t, c_res = interleaved({"ours": ours_slicing, "tp": tp_slicing}, repeats)

    n = len(ratios)
    rows = [
        _row("unstructured sweep, s (floor: same no. of dense passes)", u_t["ours"], u_t["floor"], "<= 1.10",
             u_t["ours"] <= 1.10 * u_t["floor"]),
        _row("unstructured sweep: evaluation passes (eval_passes)", max(counted), n, "== n ratios",
             all(c == n for c in counted), fmt="d"),
        _row("unstructured sweep, s (naive: deepcopy + global_unstructured)", u_t["ours"], u_t["naive"],
             "(shown)", None),
        _row("structured sliced sweep, s (floor: eval pre-built small models)", s_t["sliced"], s_t["floor"],
             "<= 1.20", s_t["sliced"] <= 1.20 * s_t["floor"]),
        _row("structured sliced sweep: evaluation passes (eval_passes)", max(s_counted), n, "== n ratios",
             all(c == n for c in s_counted), fmt="d"),
        _row("structured sweep, s: sliced vs masked (dense cost)", s_t["sliced"], s_t["masked"],
             "<= 0.50 (2x)", s_t["sliced"] <= 0.5 * s_t["masked"]),
        _row("per-ratio slicing x10, s (Torch-Pruning deepcopy+pruner+step)", c_t["ours"], c_t["tp"],
             "<= 0.10 (10x)", c_t["ours"] <= 0.1 * c_t["tp"]),
        _row("sliced vs masked accuracies: max |difference|", max(abs(a - b) for a, b in zip(sliced_acc, masked_acc)),
             0.0, "== 0", sliced_acc == masked_acc, fmt="g"),
        _row("naive vs ours unstructured accuracies: max |difference|",
             max(abs(a - b) for a, b in zip(u_res["ours"], u_res["naive"])), 0.0, "(shown)", None, fmt="g"),
    ]
    notes = {
        "data": data_note,
        "ratios": ratios,
        "one-time dependency trace, s": round(trace_seconds, 3),
        "dense pass, s": round(u_t["floor"] / n, 4),
        "unstructured engine overhead per ratio, ms": round(1e3 * (u_t["ours"] - u_t["floor"]) / n, 2),
        "structured engine overhead per ratio, ms": round(1e3 * (s_t["sliced"] - s_t["floor"]) / n, 2),
        "per-ratio slicing, ms (ours / Torch-Pruning)": (round(1e3 * c_t["ours"] / n, 2),
                                                         round(1e3 * c_t["tp"] / n, 1)),
        "sliced params at each ratio, ours / Torch-Pruning": list(zip(c_res["ours"], c_res["tp"])),
        "structured accuracies (sliced)": sliced_acc,
    }
    return {"model": name, "rows": rows, "notes": notes}


def _row(what: str, ours: float, ref: float, target: str, ok: bool | None, fmt: str = ".3f") -> dict:
    ratio = ours / ref if ref else (0.0 if ours == 0 else float("inf"))
    return {"measurement": what, "ours": ours, "reference": ref, "ratio": ratio, "target": target,
            "result": "-" if ok is None else ("PASS" if ok else "FAIL"), "fmt": fmt}


def print_table(result: dict) -> None:
    print(f"\n== {result['model']} ==")
    head = f"{'measurement':<66} {'ours':>9} {'reference':>10} {'ratio':>6}  {'target':<14} result"
    print(head)
    print("-" * len(head))
    for r in result["rows"]:
        f = r["fmt"]
        ratio = f"{r['ratio']:.2f}" if r["fmt"] != "g" else "-"
        print(f"{r['measurement']:<66} {format(r['ours'], f):>9} {format(r['reference'], f):>10} {ratio:>6}  "
              f"{r['target']:<14} {r['result']}")
    for k, v in result["notes"].items():
        print(f"  {k}: {v}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=[*MODELS, "all"], default="all")
    ap.add_argument("--eval-samples", type=int, default=None,
                    help="evaluation samples (default: digits-resnet 8624 = eval split tiled 16x; "
                         "resnet18-cifar 128 synthetic images)")
    ap.add_argument("--repeats", type=int, default=3, help="rounds per measurement; the median is reported")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch.set_num_threads, fixed for the whole run (default 1: on a shared 2-core machine a "
                         "second thread waiting for a busy core turned 50 ms passes into seconds)")
    ap.add_argument("--system-malloc", action="store_true", help="leave glibc's malloc settings alone")
    ap.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write the results as JSON")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    pinned = False if args.system_malloc else pin_malloc()
    models = MODELS if args.model == "all" else (args.model,)
    print(f"torch {torch.__version__}, {args.threads} thread(s), {platform.machine()}, "
          f"malloc {'pinned' if pinned else 'default'}, median of {args.repeats} interleaved rounds")
    results = []
    for name in models:
        print(f"{name}:", flush=True)
        results.append(bench_model(name, args.eval_samples or DEFAULT_EVAL_SAMPLES[name], args.repeats))
    for r in results:
        print_table(r)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"torch": torch.__version__, "threads": args.threads,
                                         "repeats": args.repeats, "results": results}, indent=1, default=str))
    return 0 if all(r["result"] != "FAIL" for res in results for r in res["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
