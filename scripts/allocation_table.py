"""Uniform against sensitivity-allocated channel pruning at equal FLOPs removed, on the demo models.

    .venv/bin/python scripts/allocation_table.py [--targets 0.3 0.5 0.7] [--models digits-resnet ...]

Uniform: ``group-l1`` at the smallest channel ratio that removes at least the target's FLOPs (bisection);
allocated: ``allocated-flops`` (its sensitivity table measured on the calibration split). Both are evaluated on
the evaluation split, on the physically sliced model; one torch thread.
"""

from __future__ import annotations

import argparse

import torch

from pruning_core import Workbench, load_builtin, load_digits, make_method


def uniform_at(wb: Workbench, method, target: float):
    lo, hi = 0.0, 0.99
    for _ in range(30):
        mid = (lo + hi) / 2
        if 1 - wb.plan_cost(method.plan(mid))[1] / wb.dense_flops[0] >= target:
            hi = mid
        else:
            lo = mid
    return hi, wb.evaluate_plan(method.plan(hi), "sliced")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    parser.add_argument("--models", nargs="+", default=["digits-mlp", "digits-cnn", "digits-resnet"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_digits()
    print("| model | FLOPs removed (target) | uniform group L1: accuracy (FLOPs removed) | allocated: accuracy "
          "(FLOPs removed) |\n|---|---|---|---|")
    for name in args.models:
        wb = Workbench(load_builtin(name), data, device="cpu", name=name)
        uniform = make_method("group-l1").prepare(wb)
        allocated = make_method("allocated-flops").prepare(wb)
        for target in args.targets:
            _, u = uniform_at(wb, uniform, target)
            a = wb.evaluate_plan(allocated.plan(target), "sliced")
            print(f"| {name} | {target:.0%} | {u.accuracy:.1%} ({1 - u.flops_fraction:.1%}) | {a.accuracy:.1%} "
                  f"({1 - a.flops_fraction:.1%}) |")


if __name__ == "__main__":
    main()
