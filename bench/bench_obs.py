"""OBS / SparseGPT projection benchmark: is the layer solver interactive, and what does sweeping all rows at once
buy over a loop over rows?

On one CPU thread, a 512 x 64 layer (out = 512, in = 64) with calibration inputs X (64 x 2048, uneven scales),
in interleaved rounds (median reported):

  * ours: ``sparsegpt_prune`` at 50% per row (the dampened H = X X^T / n and its inverse Cholesky factor are
    prepared once and timed apart), all rows at once, SparseGPT's column sweep; also the per-layer mask, 2:4, and
    the exact re-fit on the chosen support (``refit``, 512 batched 64 x 64 solves). Target: under 100 ms.
  * naive: the straightforward loop, row after row: for each row its own explicit H^-1, column after column,
    the OBS update of the row when the weight is pruned and the OBC downdate of H^-1 after every column.

Both must choose the same masks and give the same weights (checked and printed).

Run from the repository root:  python bench/bench_obs.py [--repeats 7] [--threads 1] [--rows 512] [--cols 64]
"""

from __future__ import annotations

import sys

from blas_threads import pin_blas_threads  # noqa: E402  (bench/ is the script's folder)

pin_blas_threads(sys.argv)  # before numpy, scipy and torch are imported

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402
from bench_sweep import pin_malloc  # noqa: E402  (same directory)

from pruning_core.algorithms.obs import (  # noqa: E402
    dampen,
    inverse_hessian_factor,
    layer_hessian,
    refit,
    sparsegpt_prune,
)

RATIO = 0.5
TARGET_SECONDS = 0.1


def naive_rows(w: torch.Tensor, h: torch.Tensor, ratio: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Row after row, column after column, with an explicit inverse Hessian per row (OBC's downdate), choosing
    each row's mask once from w_j^2 / [H^-1 after fixing columns < j]_jj (one block: SparseGPT's rule, per row)."""
    rows, d = w.shape
    hinv0 = torch.linalg.inv(h)
    seq_diag, hi = torch.empty(d, dtype=h.dtype), hinv0.clone()
    for j in range(d):
        seq_diag[j] = hi[j, j]
        hi = hi - torch.outer(hi[:, j], hi[j, :]) / hi[j, j]
    out, keep = w.clone(), torch.ones(rows, d, dtype=torch.bool)
    k = round(ratio * d)
    for r in range(rows):
        row = out[r]
        keep[r, torch.sort(row.pow(2) / seq_diag, stable=True).indices[:k]] = False
        hi = hinv0.clone()
        for j in range(d):
            if not keep[r, j]:
                row -= (row[j] / hi[j, j]) * hi[:, j]
                row[j] = 0.0
            hi = hi - torch.outer(hi[:, j], hi[j, :]) / hi[j, j]
    return out, keep


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--cols", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pinned = pin_malloc()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.cols, 2048, generator=g, dtype=torch.float64) * torch.linspace(0.1, 2.0, args.cols)[:, None]
    w = torch.randn(args.rows, args.cols, generator=g, dtype=torch.float64)
    print(f"torch {torch.__version__}, {args.threads} thread(s), malloc pinned: {pinned}, median of {args.repeats} "
          f"interleaved rounds; layer {args.rows} x {args.cols} (out x in), ratio {RATIO} (fraction removed)")
    h = layer_hessian(x) / x.shape[1]
    hd = dampen(h)
    u = inverse_hessian_factor(hd)
    sparsegpt_prune(w, u, RATIO, "row", blocksize=args.cols)  # warm-up
    naive_rows(w[:4], hd, RATIO)
    t = {k: [] for k in ("prepare", "row", "layer", "nm", "refit", "naive")}
    for i in range(args.repeats):
        for v in (["ours", "naive"] if i % 2 == 0 else ["naive", "ours"]):
            if v == "ours":
                t["prepare"].append(timed(lambda: inverse_hessian_factor(dampen(layer_hessian(x) / x.shape[1])))[0])
                dt, (ours, keep) = timed(lambda: sparsegpt_prune(w, u, RATIO, "row", blocksize=args.cols))
                t["row"].append(dt)
                t["layer"].append(timed(lambda: sparsegpt_prune(w, u, RATIO, "layer"))[0])
                if args.cols % 4 == 0:
                    t["nm"].append(timed(lambda: sparsegpt_prune(w, u, n_of_m=(2, 4)))[0])
                t["refit"].append(timed(lambda: refit(w, hd, keep))[0])
            else:
                dt, (naive, naive_keep) = timed(lambda: naive_rows(w, hd, RATIO))
                t["naive"].append(dt)
    med = {k: statistics.median(v) if v else float("nan") for k, v in t.items()}
    same_mask = torch.equal(keep, naive_keep)
    diff = float((ours - naive).abs().max())
    ms = lambda s: f"{s * 1e3:8.2f} ms"  # noqa: E731
    passed = med["row"] < TARGET_SECONDS
    print(f"  prepare (H, dampening, Cholesky factor of H^-1)   {ms(med['prepare'])}")
    print(f"  ours, 50% per row     {ms(med['row'])}   < {TARGET_SECONDS * 1e3:g} ms: {'PASS' if passed else 'FAIL'}")
    print(f"  ours, 50% per layer   {ms(med['layer'])}")
    print(f"  ours, 2:4             {ms(med['nm'])}")
    print(f"  exact re-fit          {ms(med['refit'])}")
    print(f"  naive per-row loop    {ms(med['naive'])}   naive / ours {med['naive'] / med['row']:.0f}x")
    print(f"  same masks: {'yes' if same_mask else 'NO'}; max |weight difference| {diff:.1e}")
    return 0 if passed and same_mask and diff < 1e-8 else 1


if __name__ == "__main__":
    sys.exit(main())
