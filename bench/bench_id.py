"""Interpolative-decomposition pruning benchmark: is ID interactive on the demo models, and what do the TSQR
reduction and the once-per-model preparation buy?

For each demo model, on one CPU thread, in interleaved rounds (median reported):

  * ours: ``InterpolativePruning().prepare(wb)`` (calibration forward pass with streaming TSQR hooks, a pivoted QR
    of each unit's C x C factor, the FLOPs model) and ``plan(0.5)`` (a triangular solve and a fold per unit);
    the FLOPs mode (the authors' IDiter steps, run inside ``plan``) as well. Target: prepare + plan under 1 s.
  * naive, the official code's way (``id_utils.getID``): capture every unit's whole Z, ``scipy.linalg.qr(Z,
    pivoting=True)`` directly on it (no TSQR), T = [I, pinv(R11) R12], then the same fold. Compared for one ratio,
    and for a ten-ratio sweep where the naive way redoes everything per ratio and ours prepares once.

Both ways must select the same channels (checked and printed). Before the clocks start, the workbench does its
one-time work (dependency trace, units, FLOP count).

Run from the repository root:  python bench/bench_id.py [--models digits-resnet,...] [--repeats 7] [--threads 1]
"""

from __future__ import annotations

import sys

from blas_threads import pin_blas_threads  # noqa: E402  (bench/ is the script's folder)

pin_blas_threads(sys.argv)  # before numpy, scipy and torch are imported

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import scipy.linalg  # noqa: E402
import torch  # noqa: E402
from bench_sweep import pin_malloc  # noqa: E402  (same directory)

from pruning_core import Plan, Workbench, load_builtin, load_digits  # noqa: E402
from pruning_core.methods.id import InterpolativePruning  # noqa: E402
from pruning_core.structure import capture_inputs, channel_matrix, fold_into_consumer  # noqa: E402

MODELS = ("digits-mlp", "digits-cnn", "digits-resnet")
RATIO = 0.5
SWEEP = tuple(round(0.1 * i, 1) for i in range(10))
TARGET_SECONDS = 1.0


def naive_plan(wb: Workbench, ratio: float) -> Plan:
    """Everything from scratch for one ratio, as the official code does it: whole Z, pivoted QR on Z, pinv."""
    units = wb.units
    inputs = capture_inputs(wb.model, [u.consumer for u in units], wb.calib_x, wb.batch_size)
    pruned, corrections = {}, {}
    for u in units:
        z = channel_matrix(u, inputs[u.consumer]).double().numpy()
        k = max(1, u.size - round(ratio * u.size))
        if k == u.size:
            continue
        r, piv = scipy.linalg.qr(z, mode="r", pivoting=True)
        t = np.concatenate([np.eye(k), np.linalg.pinv(r[:k, :k]) @ r[:k, k:]], axis=1)[:, np.argsort(piv)]
        pruned[u.group] = torch.sort(torch.from_numpy(piv[k:].copy())).values
        weight = wb.model.get_submodule(u.consumer).weight
        corrections[f"{u.consumer}.weight"] = fold_into_consumer(weight, u, torch.from_numpy(piv[:k].copy()),
                                                                 torch.from_numpy(t))
    return Plan("id-naive", ratio, "structured", pruned_channels=pruned, corrections=corrections)


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def bench_model(name: str, repeats: int) -> dict:
    wb = Workbench(load_builtin(name), load_digits(), device="cpu", name=name)
    wb.units, wb.dense_flops  # one-time workbench work, shared by every method
    InterpolativePruning().prepare(wb).plan(RATIO)  # warm-up: library initialisation, first-call allocations
    naive_plan(wb, RATIO)
    t = {k: [] for k in ("prepare", "plan", "flops_prepare", "flops_plan", "naive", "sweep", "naive_sweep")}
    for i in range(repeats):
        variants = ["ours", "naive"] if i % 2 == 0 else ["naive", "ours"]
        for v in variants:
            if v == "ours":
                dt, method = timed(lambda: InterpolativePruning().prepare(wb))
                t["prepare"].append(dt)
                dt, ours = timed(lambda: method.plan(RATIO))
                t["plan"].append(dt)
                dt, greedy = timed(lambda: InterpolativePruning(mode="flops").prepare(wb))
                t["flops_prepare"].append(dt)
                t["flops_plan"].append(timed(lambda: greedy.plan(RATIO))[0])
                t["sweep"].append(timed(lambda: [m.plan(r) for m in [InterpolativePruning().prepare(wb)]
                                                 for r in SWEEP])[0])
            else:
                dt, naive = timed(lambda: naive_plan(wb, RATIO))
                t["naive"].append(dt)
                t["naive_sweep"].append(timed(lambda: [naive_plan(wb, r) for r in SWEEP])[0])
    same = all(torch.equal(ours.pruned_channels[g], naive.pruned_channels[g]) for g in ours.pruned_channels)
    with torch.no_grad():
        with wb.applied(ours) as m:
            ours_out = m(wb.eval_x)
        with wb.applied(naive) as m:
            worst = float((m(wb.eval_x) - ours_out).abs().max())
    med = {k: statistics.median(v) for k, v in t.items()}
    return {"model": name, **med, "same_selection": same, "max_correction_diff": worst,
            "units": ", ".join(f"{u.group} {channel_rows(wb, u)}x{u.size}" for u in wb.units)}


def channel_rows(wb: Workbench, unit) -> int:
    x = capture_inputs(wb.model, [unit.consumer], wb.calib_x[:1])[unit.consumer]
    return len(wb.calib_x) * channel_matrix(unit, x).shape[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pinned = pin_malloc()
    print(f"torch {torch.__version__}, {args.threads} thread(s) (torch and BLAS), malloc pinned: {pinned}, "
          f"median of {args.repeats} interleaved rounds; ratio {RATIO} (fraction removed)")
    ok = True
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        r = bench_model(name, args.repeats)
        total = r["prepare"] + r["plan"]
        passed = total < TARGET_SECONDS
        ok &= passed and r["same_selection"]
        ms = lambda s: f"{s * 1e3:8.1f} ms"  # noqa: E731
        print(f"\n{name}  (Z per unit: {r['units']})")
        print(f"  ours  prepare {ms(r['prepare'])}   plan {ms(r['plan'])}   total {ms(total)}   "
              f"< {TARGET_SECONDS:g} s: {'PASS' if passed else 'FAIL'}")
        print(f"  ours  flops mode (the authors' IDiter steps run inside plan): prepare {ms(r['flops_prepare'])}   "
              f"plan {ms(r['flops_plan'])}")
        print(f"  naive one ratio {ms(r['naive'])}   ours/naive {total / r['naive']:.2f}")
        print(f"  ten-ratio sweep: ours {ms(r['sweep'])}   naive {ms(r['naive_sweep'])}   "
              f"ours/naive {r['sweep'] / r['naive_sweep']:.2f}")
        print(f"  same channels selected: {'yes' if r['same_selection'] else 'NO'}; "
              f"max |difference| of the two pruned models' logits: {r['max_correction_diff']:.1e}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
