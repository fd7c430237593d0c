"""Peak memory of loading an uploaded .npz and evaluating the dense model on it.

The question: how many copies of the data does the server hold at its peak, from the uploaded bytes to the
first accuracy? A float64 ``X`` of shape (N, 1, 8, 8) (zeros plus a little noise, so the .npz compresses well)
is written the way ``numpy.savez_compressed`` writes it; then a fresh process imports everything, loads the
``digits-cnn`` demo model (``--model``), reads the file's bytes, and measures its peak resident memory (VmHWM,
reset through ``/proc/self/clear_refs`` where the kernel allows) at three points:

  * before ``load_npz`` (the baseline: interpreter, torch, the model and the compressed bytes),
  * after ``load_npz(data)``,
  * after ``Workbench(model, splits, device="cpu").dense_metrics()``.

The ratio is (peak after dense_metrics - baseline) / (the float32 size of X): 1.0 would be the float32 data
alone, which the workbench must hold. Target: <= 3.0.

Run from the repository root:
    python bench/bench_data_memory.py                 # 512 MB of float64: ~3 minutes on 2 cores, mostly the
                                                      # forward passes of digits-cnn over a million samples
    python bench/bench_data_memory.py --mb 64 --model digits-mlp      # a quick check (~10 s)
    python bench/bench_data_memory.py --json out.json --keep /tmp/x512.npz   # keep the .npz for the next run
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_RATIO = 3.0
MIB = 1 << 20


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def make_npz(path: str, mb: int, seed: int = 0) -> None:
    """A float64 X of ``mb`` MiB, shape (N, 1, 8, 8): zeros, every 64th sample Gaussian noise; y: 10 classes.

    Written as ``numpy.savez_compressed`` writes it (deflate, zip64), a few thousand samples at a time, so the
    writer never holds the whole array."""
    import zipfile

    import numpy as np
    import numpy.lib.format as npy_format

    n = (mb * MIB) // (64 * 8)
    rng = np.random.default_rng(seed)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        with zf.open("X.npy", "w", force_zip64=True) as f:
            npy_format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": (n, 1, 8, 8)})
            for start in range(0, n, 8192):
                chunk = np.zeros((min(8192, n - start), 1, 8, 8))
                chunk[::64] = rng.normal(0.0, 0.1, size=chunk[::64].shape)
                f.write(chunk.tobytes())
        with zf.open("y.npy", "w", force_zip64=True) as f:
            npy_format.write_array(f, rng.integers(0, 10, n))


def measure(path: str, model_name: str = "digits-cnn") -> dict:
    """In this (fresh) process: the three peaks, in bytes."""
    import gc

    import torch

    from pruning_core import Workbench, load_builtin, load_npz
    from pruning_core.runtime import tune_malloc

    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    tune_malloc()  # as the app and the command line do (PRUNING_EXPLORER_SYSTEM_MALLOC=1: glibc's defaults)
    model = load_builtin(model_name)
    data = Path(path).read_bytes()
    gc.collect()
    reset = _reset_peak()
    before = _status_kib("VmHWM") * 1024
    splits = load_npz(data, Path(path).name)
    after_load = _status_kib("VmHWM") * 1024
    wb = Workbench(model, splits, device="cpu")
    ev = wb.dense_metrics()
    after_dense = _status_kib("VmHWM") * 1024
    gc.collect()
    held = _status_kib("VmRSS") * 1024
    samples = len(splits.calib) + len(splits.eval)
    x32 = samples * 64 * 4
    return {"file_bytes": len(data), "samples": samples, "x_float64_bytes": 2 * x32, "x_float32_bytes": x32,
            "peak_reset": reset, "peak_before_load": before, "peak_after_load": after_load,
            "peak_after_dense_metrics": after_dense, "rss_held_after": held,
            "model": model_name, "ratio": (after_dense - before) / x32,
            "load_ratio": (after_load - before) / x32, "accuracy": ev.accuracy, "loss": ev.loss}


def run(mb: int, keep: str | None = None, model_name: str = "digits-cnn") -> dict:
    """Write the .npz (in a child process, so nothing it allocates shows in the measuring one), then measure in
    another fresh child."""
    with tempfile.TemporaryDirectory() as tmp:
        path = keep or os.path.join(tmp, f"x{mb}mb.npz")
        if not os.path.exists(path):
            subprocess.run([sys.executable, __file__, "--make", path, "--mb", str(mb)], check=True)
        out = subprocess.run([sys.executable, __file__, "--measure", path, "--model", model_name], check=True,
                             capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def report(r: dict) -> str:
    def mib(b: float) -> str:
        return f"{b / MIB:8.0f} MiB"

    rows = [("model", f"{r['model']:>12}"),
            ("compressed .npz", mib(r["file_bytes"])),
            ("X float64 (as stored)", mib(r["x_float64_bytes"])),
            ("X float32 (in memory)", mib(r["x_float32_bytes"])),
            ("samples", f"{r['samples']:>12,}"),
            ("peak before load (baseline)", mib(r["peak_before_load"])),
            ("peak after load_npz", mib(r["peak_after_load"]) + f"   (+{r['load_ratio']:.2f} x float32)"),
            ("peak after dense_metrics", mib(r["peak_after_dense_metrics"]) + f"   (+{r['ratio']:.2f} x float32)"),
            ("RSS held afterwards", mib(r["rss_held_after"])),
            ("peak reset by clear_refs", str(r["peak_reset"])),
            ("ratio (peak - baseline) / float32", f"{r['ratio']:12.2f}   target <= {TARGET_RATIO}  "
                                                  f"{'PASS' if r['ratio'] <= TARGET_RATIO else 'FAIL'}")]
    return "\n".join(f"{k:<36}{v}" for k, v in rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mb", type=int, default=512, help="size of the float64 X in MiB (default 512)")
    p.add_argument("--json", help="also write the figures to this file")
    p.add_argument("--model", default="digits-cnn", help="demo model to evaluate (default digits-cnn)")
    p.add_argument("--keep", help="reuse (or create) the .npz at this path instead of a temporary one")
    p.add_argument("--make", help=argparse.SUPPRESS)
    p.add_argument("--measure", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.make:
        make_npz(args.make, args.mb)
        return 0
    if args.measure:
        print(json.dumps(measure(args.measure, args.model)))
        return 0
    r = run(args.mb, args.keep, args.model)
    print(report(r))
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2))
    return 0 if r["ratio"] <= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
