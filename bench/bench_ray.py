"""The Ray runner against the in-process sweep: per-task overhead, the whole sweep at equal total threads, and
identical results.

    .venv/bin/python bench/bench_ray.py [--workers 2] [--tiles 8] [--repeats 3] [--json OUT]

Model: digits-resnet (the demo weights); data: the digits' evaluation split tiled ``--tiles`` times, sent to the
workers as an .npz upload (``recipes.DataRecipe``), so one dense pass costs tens of milliseconds, a real point's
order of magnitude on this machine. Sweep: four methods (global magnitude, group L1, group Taylor, random
channels) x 10 ratios = 40 tasks.

Measured, each as the median of ``--repeats`` interleaved rounds:

* the round trip of an empty task through the runner's scheduler, one worker, one task at a time: the cost Ray
  adds to every task (target < 50 ms);
* the sweep in this process with ``--workers`` torch threads against ``--workers`` Ray workers of one thread
  each (equal total threads; target: Ray within 1.3x), and the Ray sweep's overhead per task: (wall time x
  workers - the workers' own busy time) / tasks;
* the same rows: every metric of every point, Ray against in-process (max |difference|; target 0).

Workers are started once and kept (their start, a model and data load each, is printed apart): a person running
sweeps on a cluster pays it once per model, not per sweep. Method preparation is outside the timed rounds on
both sides (the in-process methods are prepared once, the workers' in an untimed first sweep).
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pruning_core import load_digits, make_method  # noqa: E402
from pruning_core.ray_runner import RayRunner  # noqa: E402
from pruning_core.recipes import DataRecipe, ModelRecipe, WorkbenchRecipe  # noqa: E402
from pruning_core.sweep import ratio_grid, run_sweep  # noqa: E402

METHODS = ["magnitude-global", "group-l1", "group-taylor", "random-channels"]
TIMINGS = ["eval_seconds", "plan_seconds"]


def tiled_digits(tiles: int) -> bytes:
    d = load_digits()
    buf = io.BytesIO()
    np.savez(buf, X=np.tile(d.eval.x.numpy(), (tiles, 1, 1, 1)), y=np.tile(d.eval.y.numpy(), tiles),
             X_calib=d.calib.x.numpy(), y_calib=d.calib.y.numpy())
    return buf.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tiles", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--noops", type=int, default=200)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    recipe = WorkbenchRecipe(ModelRecipe.of("builtin", name="digits-resnet"),
                             DataRecipe.of("npz", tiled_digits(args.tiles), filename="digits-tiled.npz"))
    torch.set_num_threads(args.workers)
    wb = recipe.build(device="cpu")
    ratios = ratio_grid(0.0, 0.9, 10)
    print(f"torch {torch.__version__}, digits-resnet on {len(wb.eval_y)} samples, {len(METHODS)} methods x "
          f"{len(ratios)} ratios = {len(METHODS) * len(ratios)} tasks; in-process {args.workers} threads, Ray "
          f"{args.workers} workers x 1 thread")

    start = time.perf_counter()
    runner = RayRunner(recipe, workers=args.workers, threads=1,
                       init_options={"num_cpus": args.workers + 1, "object_store_memory": 200 * 2**20})
    infos = runner.infos()
    print(f"Ray local cluster and {args.workers} workers started in {time.perf_counter() - start:.1f} s "
          f"(each workbench built in {max(i['build_seconds'] for i in infos):.2f} s)")
    noop_runner = RayRunner(recipe, workers=1, threads=1, queue=0)
    noop_runner.infos()

    def noops() -> float:
        t = time.perf_counter()
        for _ in noop_runner._run([lambda a: a.noop.remote()] * args.noops, None):
            pass
        return (time.perf_counter() - t) / args.noops

    busy: list[float] = []

    def ray_sweep():
        t = time.perf_counter()
        result = run_sweep(wb, METHODS, ratios, runner=runner)
        busy.append(sum(runner.busy_seconds))
        return time.perf_counter() - t, result

    prepared = [make_method(m).prepare(wb) for m in METHODS]  # as the workers keep theirs: prepared once

    def local_sweep():
        t = time.perf_counter()
        result = run_sweep(wb, prepared, ratios)
        return time.perf_counter() - t, result

    ray_sweep()  # untimed: each worker prepares the methods it meets (the in-process ones are prepared above)
    busy.clear()
    def local_one_thread():
        torch.set_num_threads(1)
        try:
            return local_sweep()
        finally:
            torch.set_num_threads(args.workers)

    walls: dict[str, list[float]] = {"in-process": [], "in-process, 1 thread": [], "ray": []}
    noop: list[float] = []
    results = {}
    for _ in range(args.repeats):
        noop.append(noops())
        for name, fn in (("in-process", local_sweep), ("in-process, 1 thread", local_one_thread), ("ray", ray_sweep)):
            wall, results[name] = fn()
            walls[name].append(wall)
    runner.close()
    noop_runner.close()

    tasks = len(METHODS) * len(ratios)
    local, ray = statistics.median(walls["in-process"]), statistics.median(walls["ray"])
    overhead = statistics.median((w * args.workers - b) / tasks for w, b in zip(walls["ray"], busy, strict=True))
    a = results["ray"].points.drop(columns=TIMINGS + ["label", "granularity", "method", "evaluation"])
    b = results["in-process"].points.drop(columns=TIMINGS + ["label", "granularity", "method", "evaluation"])
    diff = float(np.nanmax(np.abs(a.to_numpy(float) - b.to_numpy(float))))
    rows = [
        ("empty task round trip (1 worker, one at a time)", f"{statistics.median(noop) * 1e3:.2f} ms", "< 50 ms",
         statistics.median(noop) < 0.05),
        (f"sweep wall: in-process {args.workers} threads", f"{local:.2f} s", "", None),
        ("sweep wall: in-process 1 thread", f"{statistics.median(walls['in-process, 1 thread']):.2f} s", "", None),
        (f"sweep wall: Ray {args.workers} workers x 1 thread", f"{ray:.2f} s", "", None),
        (f"Ray / in-process at equal total threads ({args.workers})", f"{ray / local:.2f}", "<= 1.30",
         ray / local <= 1.3),
        ("Ray / in-process 1 thread (scaling with workers)",
         f"{ray / statistics.median(walls['in-process, 1 thread']):.2f}", "", None),
        ("Ray overhead per task ((wall x workers - busy) / tasks)", f"{overhead * 1e3:.1f} ms", "< 50 ms",
         overhead < 0.05),
        ("max |difference| of any metric, Ray vs in-process", f"{diff:.3g}", "0", diff == 0),
    ]
    print("| measurement | value | target | pass |\n|---|---|---|---|")
    for name, value, target, ok in rows:
        print(f"| {name} | {value} | {target} | {'' if ok is None else 'pass' if ok else '**fail**'} |")
    if args.json:
        args.json.write_text(json.dumps({"walls": walls, "noop_seconds": noop, "busy": busy, "max_diff": diff,
                                         "tasks": tasks, "workers": args.workers}, indent=1))


if __name__ == "__main__":
    main()
