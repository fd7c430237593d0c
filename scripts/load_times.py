"""How long the Model & data screen takes to load each real network and its bundled data, step by step.

    .venv/bin/python scripts/load_times.py [--threads N]

The steps the screen runs for "Load model and data", in a fresh process (so nothing is cached in memory): the
model (weights read and loaded strictly), the data (photo crops cut and normalised, or sentences tokenised; the
photos' decoded images are cached on disk by ``datasets.photos`` after the first run, which is timed apart), and
the workbench (dependency groups traced and checked, the evaluation batch sized, the dense reference pass). The
optional extras must be installed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

STEPS = r"""
import time, torch
from pruning_core.runtime import tune_malloc
torch.set_num_threads({threads})
tune_malloc()  # as the app does
t = time.perf_counter()
{load}
model_s = time.perf_counter() - t
t = time.perf_counter()
{data}
data_s = time.perf_counter() - t
t = time.perf_counter()
from pruning_core.session import open_workbench
wb = open_workbench(loaded, splits)
wb_s = time.perf_counter() - t
print(f"{{model_s:.2f}} {{data_s:.2f}} {{wb_s:.2f}} {{len(wb.eval_x)}} {{wb.batch_size}}")
"""

MODELS = {
    "EfficientNet-Lite0 on 256 photo crops": (
        "from pruning_core.cli_inputs import load_model_by_name\n"
        "loaded = load_model_by_name('efficientnet-lite0-imagenet')",
        "from pruning_core.cli_inputs import bundled_dataset\nsplits = bundled_dataset('photos', loaded)"),
    "all-MiniLM-L6-v2 on 512 sentences": (
        "from pruning_core.cli_inputs import load_model_by_name\nloaded = load_model_by_name('minilm')",
        "from pruning_core.cli_inputs import bundled_dataset\nsplits = bundled_dataset('sentences', loaded)"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    print(f"{args.threads} torch thread(s); each model in a fresh process, run twice (the second with the files "
          "in the OS's cache)\n")
    print("| model and data | run | model (s) | data (s) | workbench incl. dense pass (s) | total (s) | samples | "
          "batch |\n|---|---|---|---|---|---|---|---|")
    for name, (load, data) in MODELS.items():
        for run in ("first", "second"):
            start = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", STEPS.format(threads=args.threads, load=load, data=data)],
                                 capture_output=True, text=True, check=True).stdout.split()
            total = time.perf_counter() - start
            m, d, w, n, b = out[-5:]
            print(f"| {name} | {run} | {m} | {d} | {w} | {total:.1f} (incl. imports) | {n} | {b} |")


if __name__ == "__main__":
    main()
