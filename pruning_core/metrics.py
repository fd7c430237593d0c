"""Metrics: accuracy, loss, agreement with the dense model, parameters, FLOPs, sparsity, latency.

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` for one sample (batch 1): it counts matrix
multiplications and convolutions (2 FLOPs per multiply-add) and nothing else (no BatchNorm, activations or
additions), which is the usual convention of pruning papers.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterator

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass(frozen=True)
class EvalMetrics:
    accuracy: float
    loss: float
    agreement: float  # fraction of evaluation samples where the top-1 class equals the dense model's
    seconds: float
    samples: int
    scores: dict = field(default_factory=dict)  # the task's own metrics beyond these (tasks.Task.extra)

    def to_dict(self) -> dict:
        return asdict(self)


_BETWEEN_BATCHES: contextvars.ContextVar[Callable[[int, int], None] | None] = contextvars.ContextVar(
    "between_batches", default=None)


@contextlib.contextmanager
def between_batches(callback: Callable[[int, int], None]) -> Iterator[None]:
    """Within the block (in this thread), ``predict`` calls ``callback(samples_done, samples_total)`` after each
    batch: a progress bar that moves inside one evaluation pass, and a place where a caller can stop a long pass
    by raising (the workbench restores its model on the way out, as after any error)."""
    token = _BETWEEN_BATCHES.set(callback)
    try:
        yield
    finally:
        _BETWEEN_BATCHES.reset(token)


def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Logits (N, classes) on x's device, in inference mode, in batches.

    Each batch's logits are copied into one tensor allocated after the first batch and then freed, rather than
    kept in a list for ``torch.cat``: that halves the peak, and the thousands of small tensors a list keeps alive
    between each batch's freed activations can fragment the CPU heap (measured: 0.9 GB of resident memory kept
    after one pass over a million 8x8 samples, once glibc had raised its mmap threshold)."""
    with torch.inference_mode():
        out, start = None, 0
        for chunk in x.split(batch_size):
            logits = model(chunk)
            if out is None:
                out = logits.new_empty((len(x), *logits.shape[1:]))
            out[start:start + len(chunk)] = logits
            start += len(chunk)
            del logits
            if (callback := _BETWEEN_BATCHES.get()) is not None:
                callback(start, len(x))
        return out


def evaluate_task(model: nn.Module, x: torch.Tensor, y: torch.Tensor, task, dense: torch.Tensor | None = None,
                  batch_size: int = 1024) -> tuple[EvalMetrics, torch.Tensor]:
    """One evaluation pass scored for ``task`` (``tasks.Task``) against labels ``y`` and the dense model's outputs
    ``dense`` (None: this is the dense model). Returns the metrics and the outputs (N, ...)."""
    from .tasks import score

    if x.is_cuda:
        torch.cuda.synchronize(x.device)
    start = time.perf_counter()
    outputs = predict(model, x, batch_size)
    with torch.inference_mode():
        values = score(task, outputs, y, dense)
    seconds = time.perf_counter() - start
    extra = {k: values[k] for k in task.extra}
    return EvalMetrics(values["accuracy"], values["loss"], values["agreement"], seconds, int(y.shape[0]),
                       extra), outputs


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, dense_pred: torch.Tensor | None = None,
             batch_size: int = 1024) -> tuple[EvalMetrics, torch.Tensor]:
    """One evaluation pass of a classifier on labelled data. Returns the metrics and the predicted classes (N,)."""
    if x.is_cuda:
        torch.cuda.synchronize(x.device)
    start = time.perf_counter()
    logits = predict(model, x, batch_size)
    with torch.inference_mode():
        pred = logits.argmax(1)
        acc = (pred == y).float().mean().item()
        loss = nn.functional.cross_entropy(logits.float(), y).item()
        agree = (pred == dense_pred).float().mean().item() if dense_pred is not None else 1.0
    seconds = time.perf_counter() - start
    return EvalMetrics(acc, loss, agree, seconds, int(y.shape[0])), pred


def count_flops(model: nn.Module, example_input: torch.Tensor) -> tuple[int, dict[str, int]]:
    """Total FLOPs for ``example_input`` and the FLOPs of each leaf layer that does any (by module name)."""
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(example_input)
    per_module: dict[str, int] = {}
    for name, ops in counter.get_flop_counts().items():
        if name == "Global" or "." not in name:
            continue
        # names are "<ModelClass>.<qualified name>"; keep the qualified name used by named_modules()
        per_module[name.split(".", 1)[1] if "." in name else ""] = int(sum(ops.values()))
    # keep only the innermost names: "layer1.0.conv1" rather than its parents "layer1.0" and "layer1"
    leaves = {n: f for n, f in per_module.items()
              if not any(o != n and o.startswith(n + ".") for o in per_module)}
    return int(counter.get_total_flops()), leaves


def flops_with_density(per_module: dict[str, int], density: dict[str, float]) -> int:
    """FLOPs when each layer's multiply-adds scale with the fraction of its weight entries kept.

    Exact for channel pruning (a conv's FLOPs are proportional to out x in channels, and so is its kept weight
    fraction); for unstructured masks it is the count a sparse kernel that skips zeros would perform.
    """
    return int(round(sum(f * density.get(name, 1.0) for name, f in per_module.items())))


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def measure_latency(model: nn.Module, example_input: torch.Tensor, repeats: int = 20, warmup: int = 3) -> float:
    """Median wall-clock milliseconds of one forward pass on ``example_input``: ``latency.measure_latency``'s
    median (warm-up excluded, inference mode, eval mode; CUDA events on a GPU). Kept for callers that want one
    number; ``pruning_core.latency`` has the spread, the thread count and side-by-side comparisons."""
    from .latency import measure_latency as measure

    return measure(model, example_input, warmup=warmup, repeats=repeats).median_ms
