"""How closely pruned EfficientNet-Lite0 (pretrained, ImageNet) follows the dense model on the bundled photos.

    .venv/bin/python scripts/real_network_table.py [--ratios 0.05 0.1 0.3 0.5] [--methods group-l1 id group-grad-x-act]

The pretrained ``efficientnet-lite0-imagenet`` (an optional extra) on the 256 evaluation crops of the photos that
scikit-image and scikit-learn ship, pre-processed with the model's own normalisation. The crops carry no labels, so
every figure is against the dense model: top-1 agreement, top-5 overlap and KL divergence (``pruning_core.tasks``).
Each method removes the given fraction of channels of every channel group (ID, the interpolative decomposition,
also reconstructs the consumers from the kept channels on the calibration crops); structured plans are evaluated
on the physically sliced model; no fine-tuning. Prints a Markdown table; one torch thread unless ``--threads``.
"""

from __future__ import annotations

import argparse
import time

import torch

from pruning_core import Workbench, make_method
from pruning_core.datasets import photo_eval_set
from pruning_core.models import ARCHITECTURES

MODEL = "efficientnet-lite0-imagenet"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.05, 0.1, 0.3, 0.5])
    parser.add_argument("--methods", nargs="+", default=["group-l1", "id", "group-grad-x-act"])
    parser.add_argument("--eval", type=int, default=256, help="evaluation crops (default 256)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    arch = ARCHITECTURES[MODEL]
    if not arch.has_weights:
        raise SystemExit(f"{MODEL}: its weights are an optional extra (requirements-extras.txt), not installed")
    mean, std = arch.normalization
    wb = Workbench(arch.load(), photo_eval_set(n=args.eval, mean=mean, std=std), device="cpu", name=MODEL)
    wb.dense_metrics()
    print(f"{MODEL}, {len(wb.eval_x)} photo crops, task {wb.task.kind}; {wb.dense_flops[0] / 1e9:.3f} GFLOPs dense")
    print("| method | channels removed | top-1 agreement | top-5 overlap | KL to dense | parameters kept | FLOPs kept "
          "| seconds (prepare + plan + evaluate) |\n|---|---|---|---|---|---|---|---|")
    for key in args.methods:
        start = time.perf_counter()
        method = make_method(key).prepare(wb)
        prepared = time.perf_counter() - start
        for r in args.ratios:
            start = time.perf_counter()
            m = wb.evaluate_plan(method.plan(r), "sliced")
            seconds = prepared + time.perf_counter() - start
            prepared = 0.0
            print(f"| {key} | {r:.0%} | {m.agreement:.3f} | {m.scores['top5_overlap']:.3f} | {m.scores['kl']:.3f} "
                  f"| {m.params_fraction:.1%} | {m.flops_fraction:.1%} | {seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
