"""PQ Index benchmark: PQI of every layer in every scope (neuron, layer, global) of each demo model, against a
naive implementation that loops over output rows in Python, measured side by side in one run.

The Sparsity screen recomputes PQI for the dense model and the current plan on every change of p, q or the plan,
so all scopes of a model must take well under 100 ms. Both implementations get the same weights and the same
masks (global magnitude pruning at 50%, so the masked path is what is timed); the rounds are interleaved and the
median is reported. The two results are compared entry by entry.

Run from the repository root:  python bench/bench_pqi.py            (about 20 s; --repeats N, --threads N)
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time

import torch

from pruning_core import Workbench, load_builtin, load_digits, make_method  # noqa: E402
from pruning_core.algorithms.pq_index import pqi_all_scopes  # noqa: E402
from pruning_core.models import DEMO_MODELS  # noqa: E402

TARGET_MS = 100.0


def naive_pqi(w: torch.Tensor, p: float, q: float) -> float:
    """Def. 1 on one vector of unpruned entries, the direct way (float64)."""
    w = w.double().abs()
    d = w.numel()
    if d == 0 or not bool(w.any()):
        return 0.0
    value = 1 - (w.pow(p).sum() / d) ** (1 / p) / (w.pow(q).sum() / d) ** (1 / q)
    return max(0.0, float(value))


def naive_all_scopes(params: dict[str, torch.Tensor], masks: dict[str, torch.Tensor], p: float, q: float) -> dict:
    """Every scope with a Python loop over output rows: what a straightforward port of the formula does."""
    neuron, layer = {}, {}
    for name, w in params.items():
        rows = w.detach().reshape(w.shape[0], -1)
        m = masks[name].reshape(w.shape[0], -1)
        neuron[name] = [naive_pqi(rows[i][m[i]], p, q) for i in range(rows.shape[0])]
        layer[name] = naive_pqi(w.detach()[masks[name]], p, q)
    every = torch.cat([w.detach()[masks[k]] for k, w in params.items()])
    return {"neuron": neuron, "layer": layer, "global": naive_pqi(every, p, q)}


def max_difference(ours: dict, naive: dict) -> float:
    diff = abs(float(ours["global"]["global"]) - naive["global"])
    for name, values in naive["neuron"].items():
        diff = max(diff, float((ours["neuron"][name] - torch.tensor(values, dtype=torch.float64)).abs().max()))
        diff = max(diff, abs(float(ours["layer"][name]) - naive["layer"][name]))
    return diff


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50, help="timed runs per implementation (median)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
          f"{platform.processor() or platform.machine()}, median of {args.repeats} interleaved runs")
    data = load_digits()
    failed = False
    header = f"{'model':15} {'p,q':8} {'weights':>8} {'rows':>5} {'ours ms':>9} {'naive ms':>9} {'speed-up':>9} " \
             f"{'max diff':>9}  target"
    print(header)
    print("-" * len(header))
    for name in DEMO_MODELS:
        wb = Workbench(load_builtin(name), data, device="cpu", name=name)
        params = {k: v.detach() for k, v in wb.prunable.items()}
        masks = make_method("magnitude-global").prepare(wb).plan(0.5).masks
        rows = sum(w.shape[0] for w in params.values())
        weights = sum(w.numel() for w in params.values())
        for p, q in ((0.5, 1.0), (1.0, 2.0)):
            ours_fn = lambda: pqi_all_scopes(params, masks, p, q)  # noqa: E731
            naive_fn = lambda: naive_all_scopes(params, masks, p, q)  # noqa: E731
            ours_fn(), naive_fn()  # warm-up
            ours_t, naive_t = [], []
            for i in range(args.repeats):  # interleaved so machine noise falls on both
                pair = (ours_fn, naive_fn) if i % 2 == 0 else (naive_fn, ours_fn)
                for fn in pair:
                    start = time.perf_counter()
                    fn()
                    (ours_t if fn is ours_fn else naive_t).append((time.perf_counter() - start) * 1000)
            ours_ms, naive_ms = statistics.median(ours_t), statistics.median(naive_t)
            diff = max_difference(ours_fn(), naive_fn())
            ok = ours_ms < TARGET_MS and diff < 1e-9
            failed |= not ok
            print(f"{name:15} {p:g},{q:g}{'':4} {weights:8,} {rows:5} {ours_ms:9.2f} {naive_ms:9.2f} "
                  f"{naive_ms / ours_ms:8.1f}x {diff:9.1e}  < {TARGET_MS:.0f} ms: {'PASS' if ok else 'FAIL'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
