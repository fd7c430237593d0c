"""Latency: how long a forward pass takes, measured so that two models can be compared fairly.

A latency is a distribution, not one number. ``measure_latency`` runs ``warmup`` untimed passes (the first
passes at a new shape build oneDNN / cuDNN primitives and fill caches), then at least ``repeats`` timed passes
(and more until ``min_seconds`` of timed work), each under ``torch.inference_mode`` with the model in eval mode,
and returns a ``Latency``: the median, the spread (p10 / p25 / p75 / p90, min, max), the batch, the number of
torch threads in force and the device. On CUDA each pass is timed with a pair of ``torch.cuda.Event``s after a
``torch.cuda.synchronize`` (kernel time on the GPU, not the CPU's launch time); on the CPU with
``time.perf_counter``.

Comparisons are made side by side: ``measure_interleaved`` times several models in rounds, each model once
per round and the order reversed every other round (A B, B A, A B, ...), so machine noise (another process, a
frequency change, a page fault storm) falls on all of them alike rather than on whichever ran second.
``speedup(dense, pruned, example)`` measures the two that way and puts the realised speed-up (the median of the
per-round ratios dense time / pruned time, and their p10-p90) next to the ideal one from FLOPs: a model that
keeps a fraction ``f`` of the multiply-adds can at best run ``1 / f`` times faster, and the realised fraction of
that ideal is what structured pruning actually buys on this machine. It can be below 1: oneDNN works in blocks
of 8 or 16 channels, so 58 channels cost what 64 do, and small layers are bound by memory traffic and per-layer
overhead rather than by multiply-adds.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from .metrics import count_flops

#: a pruned model whose median latency is more than this fraction slower than the dense one is reported as
#: slower: below it, the difference is within what two identical models show on a busy machine
SLOWER_TOLERANCE = 0.05
#: ``min_seconds`` never makes a measurement run more than this many times ``repeats`` passes
MAX_REPEAT_FACTOR = 50


@dataclass(frozen=True)
class Latency:
    """Milliseconds of one forward pass at batch ``batch``: median and spread over ``repeats`` timed passes
    (``warmup`` untimed passes before them), with ``threads`` torch threads on ``device``, timed by ``timer``
    ("cuda-events" or "perf_counter"). ``times_ms``: every timed pass, in order."""

    median_ms: float
    p10_ms: float
    p25_ms: float
    p75_ms: float
    p90_ms: float
    min_ms: float
    max_ms: float
    batch: int
    repeats: int
    warmup: int
    threads: int
    device: str
    timer: str
    times_ms: tuple[float, ...]

    @classmethod
    def from_times(cls, times_ms: list[float], batch: int, warmup: int, threads: int, device: str,
                   timer: str) -> Latency:
        """Summary of timed passes; percentiles are numpy's linear interpolation between order statistics."""
        t = np.asarray(times_ms, dtype=float)
        p10, p25, p75, p90 = (float(v) for v in np.percentile(t, [10, 25, 75, 90]))
        return cls(float(statistics.median(times_ms)), p10, p25, p75, p90, float(t.min()), float(t.max()), batch,
                   len(times_ms), warmup, threads, device, timer, tuple(float(v) for v in times_ms))

    @property
    def iqr_ms(self) -> float:
        return self.p75_ms - self.p25_ms

    @property
    def per_sample_ms(self) -> float:
        return self.median_ms / self.batch

    def to_dict(self, times: bool = False) -> dict:
        """Plain JSON-able dict; the individual ``times_ms`` only when ``times``."""
        out = asdict(self)
        out["iqr_ms"] = self.iqr_ms
        if not times:
            del out["times_ms"]
        return out


@dataclass(frozen=True)
class Speedup:
    """Dense against pruned, measured side by side (``measure_interleaved``).

    ``speedup``: the median over rounds of dense time / pruned time of the same round (the two ran next to each
    other, under the same machine conditions; close to dense median / pruned median, and always inside its own
    spread). ``speedup_p10`` / ``speedup_p90``: the spread of those per-round ratios. ``flops_kept``: pruned
    FLOPs / dense FLOPs, when known; ``ideal_speedup`` = 1 / ``flops_kept``; ``efficiency`` = ``speedup`` /
    ``ideal_speedup`` (1.0: the time fell as much as the multiply-adds did)."""

    dense: Latency
    pruned: Latency
    speedup: float
    speedup_p10: float
    speedup_p90: float
    flops_kept: float | None

    @property
    def ideal_speedup(self) -> float | None:
        return 1.0 / self.flops_kept if self.flops_kept else None

    @property
    def efficiency(self) -> float | None:
        ideal = self.ideal_speedup
        return self.speedup / ideal if ideal else None

    @property
    def slower_than_dense(self) -> bool:
        """The pruned model's median is more than ``SLOWER_TOLERANCE`` above the dense one's."""
        return self.speedup < 1.0 / (1.0 + SLOWER_TOLERANCE)

    def to_dict(self, times: bool = False) -> dict:
        """Plain JSON-able dict; the latencies' individual ``times_ms`` only when ``times``."""
        return {"dense": self.dense.to_dict(times), "pruned": self.pruned.to_dict(times), "speedup": self.speedup,
                "speedup_p10": self.speedup_p10, "speedup_p90": self.speedup_p90, "flops_kept": self.flops_kept,
                "ideal_speedup": self.ideal_speedup, "efficiency": self.efficiency,
                "slower_than_dense": self.slower_than_dense}


def batch_of(example: torch.Tensor, batch: int | None) -> torch.Tensor:
    """``example`` (N, ...) as a batch of ``batch`` samples: its first ``batch`` rows, cycled when it has fewer
    (latency does not depend on the values). ``None``: ``example`` as it is."""
    if batch is None:
        return example
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    if len(example) >= batch:
        return example[:batch]
    reps = -(-batch // len(example))
    return example.repeat(reps, *([1] * (example.ndim - 1)))[:batch].contiguous()


def measure_latency(model: Callable[[torch.Tensor], object], example: torch.Tensor, batch: int | None = None,
                    warmup: int = 3, repeats: int = 20, min_seconds: float = 0.0, threads: int | None = None
                    ) -> Latency:
    """Latency of ``model`` on ``batch_of(example, batch)`` on ``example``'s device (see the module docstring).

    ``threads``: torch threads for the measurement (restored afterwards); ``None`` keeps the current count, which
    is reported either way. ``min_seconds``: keep timing past ``repeats`` until the timed passes add up to this
    (at most ``MAX_REPEAT_FACTOR * repeats`` passes)."""
    return measure_interleaved({"model": model}, example, batch, warmup, repeats, min_seconds, threads)["model"]


def measure_interleaved(models: Mapping[str, Callable[[torch.Tensor], object]], example: torch.Tensor,
                        batch: int | None = None, warmup: int = 3, repeats: int = 20, min_seconds: float = 0.0,
                        threads: int | None = None) -> dict[str, Latency]:
    """Latency of each model, measured in interleaved rounds: every round runs each model once, in the given
    order on even rounds and reversed on odd ones, so noise falls on all alike. Warm-up runs each model
    ``warmup`` times first (same alternation). Rounds continue past ``repeats`` until every model's timed passes
    add up to ``min_seconds``. Returns name -> ``Latency``; ``times_ms[i]`` of two models come from round i."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be at least 1 and warmup at least 0, got {repeats} and {warmup}")
    if not models:
        return {}
    x = batch_of(example, batch)
    names = list(models)
    times: dict[str, list[float]] = {k: [] for k in names}
    time_one = _cuda_timer(x.device) if x.is_cuda else _cpu_timer
    with _threads(threads), _eval_mode(models.values()), torch.inference_mode():
        n_threads = torch.get_num_threads()
        for i in range(warmup):
            for k in (names if i % 2 == 0 else names[::-1]):
                time_one(models[k], x)
        i = 0
        while i < repeats or (min(sum(t) for t in times.values()) < 1e3 * min_seconds
                              and i < MAX_REPEAT_FACTOR * repeats):
            for k in (names if i % 2 == 0 else names[::-1]):
                times[k].append(time_one(models[k], x))
            i += 1
    timer = "cuda-events" if x.is_cuda else "perf_counter"
    return {k: Latency.from_times(t, int(x.shape[0]), warmup, n_threads, str(x.device), timer)
            for k, t in times.items()}


def compare(dense: Latency, pruned: Latency, flops_kept: float | None = None) -> Speedup:
    """``Speedup`` from two latencies measured in the same interleaved rounds (``measure_interleaved``)."""
    if dense.repeats != pruned.repeats:
        raise ValueError("dense and pruned were not measured in the same rounds")
    ratios = np.asarray(dense.times_ms) / np.asarray(pruned.times_ms)
    p10, p90 = (float(v) for v in np.percentile(ratios, [10, 90]))
    return Speedup(dense, pruned, float(np.median(ratios)), p10, p90, flops_kept)


def speedup(dense: Callable[[torch.Tensor], object], pruned: Callable[[torch.Tensor], object],
            example: torch.Tensor, batch: int | None = None, flops_kept: float | None = None, warmup: int = 3,
            repeats: int = 20, min_seconds: float = 0.0, threads: int | None = None) -> Speedup:
    """Realised speed-up of ``pruned`` over ``dense`` on ``batch_of(example, batch)``, the two measured in
    interleaved rounds (``measure_interleaved``). ``flops_kept``: pruned / dense FLOPs; when ``None`` and both
    are modules, counted by ``metrics.count_flops`` on one sample (batch 1), which gives the ideal speed-up."""
    if flops_kept is None and isinstance(dense, nn.Module) and isinstance(pruned, nn.Module):
        flops_kept = flops_fraction(dense, pruned, example[:1])
    lat = measure_interleaved({"dense": dense, "pruned": pruned}, example, batch, warmup, repeats, min_seconds,
                              threads)
    return compare(lat["dense"], lat["pruned"], flops_kept)


def flops_fraction(dense: nn.Module, pruned: nn.Module, example: torch.Tensor) -> float | None:
    """Pruned FLOPs / dense FLOPs on ``example`` (``metrics.count_flops``); ``None`` when either cannot be
    counted (TorchScript) or the dense model does none."""
    try:
        d, p = count_flops(dense, example)[0], count_flops(pruned, example)[0]
    except Exception:  # FlopCounterMode cannot see inside TorchScript
        return None
    return p / d if d else None


# ----- timers and context ----------------------------------------------------------------------------------------
def _cpu_timer(model: Callable, x: torch.Tensor) -> float:
    start = time.perf_counter()
    model(x)
    return (time.perf_counter() - start) * 1e3


def _cuda_timer(device: torch.device) -> Callable[[Callable, torch.Tensor], float]:
    """Kernel time between two CUDA events on ``device``'s current stream; synchronised before (so the previous
    pass's kernels are not counted) and after (so the end event has completed)."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def time_one(model: Callable, x: torch.Tensor) -> float:
        torch.cuda.synchronize(device)
        start.record()
        model(x)
        end.record()
        torch.cuda.synchronize(device)
        return float(start.elapsed_time(end))

    return time_one


@contextmanager
def _threads(threads: int | None):
    before = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def _eval_mode(models):
    """Modules in eval mode for the measurement, each module's own training flag put back afterwards."""
    flags = [(m, m.training) for model in models if isinstance(model, nn.Module) for m in model.modules()]
    for model in models:
        if isinstance(model, nn.Module):
            model.eval()
    try:
        yield
    finally:
        for m, training in flags:
            m.training = training


__all__ = ["MAX_REPEAT_FACTOR", "SLOWER_TOLERANCE", "Latency", "Speedup", "batch_of", "compare", "flops_fraction",
           "measure_interleaved", "measure_latency", "speedup"]
