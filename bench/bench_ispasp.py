"""i-SpaSP benchmark: T = 20 iterations over every two-layer unit of digits-resnet at one ratio, both schedules, on
the CPU, against a naive implementation measured side by side in the same run.

  * ours: ``ISpaSP(schedule=...).prepare(wb).plan(ratio)`` on a fresh method object (the dense activation
    capture included): Y computed once, each distinct kept set evaluated once (fixed points and cycles cost
    nothing more), and the proxy as one sample-sized vector-Jacobian product (layer 2 is affine);
  * naive: the loop as ``prune_basic_block`` in wolfecameron/i-SpaSP writes it, plus the residual history: every
    iteration, for each mini-batch of 128, a dense forward of layer 2 with grad, a masked forward, a backward, and
    one more masked forward for the residual; Python sets; the same H (same schedule, same capture).

Both must select the same channels (printed). Rounds are interleaved (the order alternates) and the median round is
reported. Target: ours under 5 s per schedule.

Run from the repository root:  python bench/bench_ispasp.py [--ratio 0.6] [--repeats 5] [--threads 1] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from pruning_core import Workbench, load_builtin, load_digits  # noqa: E402
from pruning_core.methods.ispasp import ISpaSP  # noqa: E402
from pruning_core.plan import Plan  # noqa: E402
from pruning_core.structure import capture_inputs, hidden_representation, kept_count, layer_two  # noqa: E402

TARGET_SECONDS = 5.0


def naive_select(hidden: torch.Tensor, layer2, s: int, iterations: int, bs: int = 128) -> tuple[list[int], list[float]]:
    """The official loop, unoptimised: recomputes the dense forward with grad every iteration and chunk."""
    agg = hidden.sum(dim=tuple(d for d in range(hidden.ndim) if d != 1))
    kept: set[int] = set()
    residuals = []
    for _ in range(iterations):
        importance = None
        idx = torch.tensor(sorted(kept), dtype=torch.long)
        for i in range(0, hidden.shape[0], bs):
            h = hidden[i:i + bs].clone().requires_grad_(True)
            out = layer2(h)
            if kept:
                with torch.no_grad():
                    mask = torch.zeros(hidden.shape[1])
                    mask[idx] = 1
                    pruned = layer2(h * mask.view(1, -1, *([1] * (h.ndim - 2))))
                (0.5 * (out - pruned).pow(2).sum()).backward()
            else:
                (0.5 * out.pow(2).sum()).backward()
            g = h.grad.sum(dim=tuple(d for d in range(h.ndim) if d != 1))
            importance = g if importance is None else importance + g
        omega = set(torch.argsort(importance, descending=True)[: 2 * s].tolist())
        candidates = torch.tensor(sorted(omega | kept), dtype=torch.long)
        kept = set(candidates[torch.argsort(agg[candidates], descending=True)[:s]].tolist())
        mask = torch.zeros(hidden.shape[1])
        mask[torch.tensor(sorted(kept))] = 1
        with torch.no_grad():
            total = 0.0
            for i in range(0, hidden.shape[0], bs):
                h = hidden[i:i + bs]
                total += float((layer2(h) - layer2(h * mask.view(1, -1, *([1] * (h.ndim - 2))))).double().pow(2).sum())
        residuals.append(total)
    return sorted(kept), residuals


def naive_plan(wb: Workbench, ratio: float, schedule: str, iterations: int) -> dict[str, list[int]]:
    wb.restore()
    units = wb.units
    dense = capture_inputs(wb.model, [u.consumer for u in units], wb.calib_x, wb.batch_size)
    pruned: dict[str, torch.Tensor] = {}
    kept_by_unit = {}
    for u in units:
        if schedule == "sequential" and pruned:
            with wb.applied(Plan("naive", ratio, "structured", pruned_channels=dict(pruned))):
                inputs = capture_inputs(wb.model, [u.consumer], wb.calib_x, wb.batch_size)
        else:
            inputs = dense
        hidden, _ = hidden_representation(u, inputs[u.consumer])
        kept, _ = naive_select(hidden, layer_two(wb.model, u), kept_count(u.size, ratio), iterations)
        keep = torch.zeros(u.size, dtype=torch.bool)
        keep[kept] = True
        pruned[u.group] = (~keep).nonzero().squeeze(1)
        kept_by_unit[u.group] = kept
    return kept_by_unit


def ours_plan(wb: Workbench, ratio: float, schedule: str, iterations: int) -> dict[str, list[int]]:
    # the selection alone: the paper's per-unit fine-tunes are left out, so both sides see the same network
    plan = ISpaSP(iterations=iterations, schedule=schedule, block_epochs=0, final_epochs=0).prepare(wb).plan(ratio)
    out = {}
    for u in wb.units:
        keep = torch.ones(u.size, dtype=torch.bool)
        keep[plan.pruned_channels[u.group]] = False
        out[u.group] = keep.nonzero().squeeze(1).tolist()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratio", type=float, default=0.6, help="fraction of every unit's channels removed")
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    wb = Workbench(load_builtin("digits-resnet"), load_digits(), device="cpu", name="digits-resnet")
    wb.units  # the dependency trace is one-time work of the workbench, not of the method
    print(f"i-SpaSP on digits-resnet: {len(wb.units)} units ({', '.join(f'{u.title} [{u.size}]' for u in wb.units)}), "
          f"{len(wb.calib_x)} calibration images, T={args.iterations}, ratio {args.ratio:g} removed; "
          f"torch {torch.__version__}, {args.threads} thread(s), {platform.processor() or platform.machine()}")

    variants = {f"{who} {schedule}": (fn, schedule) for schedule in ("sequential", "dense")
                for who, fn in (("ours", ours_plan), ("naive", naive_plan))}
    times: dict[str, list[float]] = {k: [] for k in variants}
    kept: dict[str, dict] = {}
    for name, (fn, schedule) in variants.items():  # warm-up, and the selections to compare
        kept[name] = fn(wb, args.ratio, schedule, args.iterations)
    for r in range(args.repeats):
        order = list(variants) if r % 2 == 0 else list(reversed(variants))
        for name in order:
            fn, schedule = variants[name]
            start = time.perf_counter()
            fn(wb, args.ratio, schedule, args.iterations)
            times[name].append(time.perf_counter() - start)

    med = {k: statistics.median(v) for k, v in times.items()}
    failed = False
    print(f"\n{'variant':18} {'median s':>10} {'min s':>9}")
    for k in variants:
        print(f"{k:18} {med[k]:10.4f} {min(times[k]):9.4f}")
    print()
    for schedule in ("sequential", "dense"):
        ours, naive = med[f"ours {schedule}"], med[f"naive {schedule}"]
        same = kept[f"ours {schedule}"] == kept[f"naive {schedule}"]
        ok = ours < TARGET_SECONDS
        failed |= not ok or not same
        print(f"{schedule:10}: ours {ours:.4f} s ({'PASS' if ok else 'FAIL'} < {TARGET_SECONDS:g} s); "
              f"naive {naive:.4f} s; naive / ours = {naive / ours:.1f}x; same channels selected: "
              f"{'yes' if same else 'NO'}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"ratio": args.ratio, "iterations": args.iterations, "threads": args.threads,
                                         "seconds": times, "median": med, "torch": torch.__version__}, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
