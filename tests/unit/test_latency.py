"""Latency: warm-up runs are not timed, the summary matches the timed passes, interleaved rounds alternate their
order so noise falls on both models, the speed-up is the ratio a stopwatch would give, threads and eval mode
are set for the measurement and put back."""

import time

import numpy as np
import pytest
import torch
from torch import nn

from pruning_core import load_builtin, metrics
from pruning_core.latency import (
    Latency,
    batch_of,
    compare,
    flops_fraction,
    measure_interleaved,
    measure_latency,
    speedup,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class FakeClock:
    """Stands in for ``time.perf_counter``: time moves only when a scripted model runs."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Scripted(nn.Module):
    """A model whose k-th call takes ``durations_ms[k]`` on the fake clock and is logged by name."""

    def __init__(self, name: str, durations_ms, clock: FakeClock, log: list):
        super().__init__()
        self.name, self.durations, self.clock, self.log = name, list(durations_ms), clock, log
        self.calls = 0

    def forward(self, x):
        self.clock.now += self.durations[self.calls] / 1e3
        self.calls += 1
        self.log.append(self.name)
        return x


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(time, "perf_counter", fake)
    return fake


def test_warmup_is_excluded_and_the_summary_matches_the_timed_passes(clock):
    # three slow first calls (primitive creation), then the steady state
    durations = [500.0, 400.0, 300.0] + [10.0, 12.0, 11.0, 30.0, 9.0, 10.5, 13.0, 10.0]
    model = Scripted("a", durations, clock, [])
    lat = measure_latency(model, torch.zeros(4, 3), batch=1, warmup=3, repeats=8)
    timed = durations[3:]
    assert lat.times_ms == pytest.approx(timed)
    assert lat.repeats == 8 and lat.warmup == 3 and model.calls == 11
    assert lat.median_ms == pytest.approx(sorted(timed)[3] / 2 + sorted(timed)[4] / 2)
    assert lat.min_ms == pytest.approx(9.0) and lat.max_ms == pytest.approx(30.0)
    assert lat.min_ms <= lat.p10_ms <= lat.p25_ms <= lat.median_ms <= lat.p75_ms <= lat.p90_ms <= lat.max_ms
    # linear-interpolation percentiles by hand: position q * (n - 1) in the sorted times
    s = sorted(timed)
    for q, got in ((0.10, lat.p10_ms), (0.25, lat.p25_ms), (0.75, lat.p75_ms), (0.90, lat.p90_ms)):
        pos = q * (len(s) - 1)
        lo = int(pos)
        assert got == pytest.approx(s[lo] + (s[min(lo + 1, len(s) - 1)] - s[lo]) * (pos - lo))
    assert lat.iqr_ms == pytest.approx(lat.p75_ms - lat.p25_ms)
    assert lat.batch == 1 and lat.device == "cpu" and lat.timer == "perf_counter" and lat.threads == 1
    assert "times_ms" not in lat.to_dict() and list(lat.to_dict(times=True)["times_ms"]) == list(lat.times_ms)


def test_min_seconds_adds_rounds_until_enough_time_is_timed(clock):
    model = Scripted("a", [1.0] * 1000, clock, [])
    lat = measure_latency(model, torch.zeros(1, 3), warmup=0, repeats=5, min_seconds=0.0495)  # 50 passes of 1 ms
    assert lat.repeats == 50
    capped = Scripted("b", [1.0] * 1000, clock, [])
    assert measure_latency(capped, torch.zeros(1, 3), warmup=0, repeats=2, min_seconds=10.0).repeats == 100


def test_interleaved_rounds_alternate_and_noise_falls_on_both(clock):
    log: list[str] = []
    # the machine slows down and speeds up from round to round (noise), and b always takes half of a's time
    noise = [1.0, 3.0, 1.5, 8.0, 1.0, 2.0]
    a = Scripted("a", [20.0, 20.0] + [10.0 * n for n in noise], clock, log)
    b = Scripted("b", [20.0, 20.0] + [5.0 * n for n in noise], clock, log)
    lat = measure_interleaved({"a": a, "b": b}, torch.zeros(2, 3), warmup=2, repeats=6)
    assert log == ["a", "b", "b", "a"] + ["a", "b", "b", "a"] * 3
    s = compare(lat["a"], lat["b"], flops_kept=0.25)
    assert s.speedup == pytest.approx(2.0)
    assert s.speedup_p10 == pytest.approx(2.0) and s.speedup_p90 == pytest.approx(2.0)  # every round says 2x
    assert s.ideal_speedup == pytest.approx(4.0) and s.efficiency == pytest.approx(0.5)
    assert not s.slower_than_dense
    assert compare(lat["b"], lat["a"]).slower_than_dense  # swapped: "pruned" takes twice as long
    d = s.to_dict()
    assert d["speedup"] == pytest.approx(2.0) and d["dense"]["median_ms"] == pytest.approx(lat["a"].median_ms)


def test_speedup_of_models_that_really_differ_in_cost():
    """A wall-clock check with real work: a model that runs its layer four times against one that runs it once."""
    layer = nn.Linear(512, 512)
    once = nn.Sequential(layer)
    four = nn.Sequential(layer, layer, layer, layer)
    s = speedup(four, once, torch.randn(64, 512), batch=64, warmup=2, repeats=15)
    assert s.flops_kept == pytest.approx(0.25)  # counted by FlopCounterMode, one sample
    # one-sided and loose: other processes on a shared machine stretch single rounds by 10x; the fastest round
    # of each is the least disturbed
    assert s.speedup > 1.5 and s.dense.min_ms > 2 * s.pruned.min_ms and s.ideal_speedup == pytest.approx(4.0)
    assert s.dense.batch == s.pruned.batch == 64 and s.dense.repeats == s.pruned.repeats == 15


def test_flops_fraction_matches_the_layer_arithmetic():
    dense, pruned = nn.Linear(100, 40), nn.Linear(100, 10)
    assert flops_fraction(dense, pruned, torch.zeros(1, 100)) == pytest.approx(10 / 40)
    scripted = torch.jit.trace(nn.Linear(4, 2), torch.zeros(1, 4))
    assert flops_fraction(scripted, pruned, torch.zeros(1, 100)) is None


def test_batch_of_takes_or_cycles_rows():
    x = torch.arange(5.0).reshape(5, 1)
    assert batch_of(x, None) is x
    assert batch_of(x, 3).flatten().tolist() == [0, 1, 2]
    assert batch_of(x, 12).flatten().tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1]
    with pytest.raises(ValueError, match="batch must be at least 1"):
        batch_of(x, 0)


def test_measurement_runs_in_eval_and_inference_mode_and_restores_threads_and_flags():
    seen = []

    class Probe(nn.Module):
        def __init__(self):
            super().__init__()
            self.bn = nn.BatchNorm1d(3)

        def forward(self, x):
            seen.append((self.training, self.bn.training, torch.is_inference_mode_enabled(),
                         torch.get_num_threads()))
            return self.bn(x)

    probe = Probe().train()
    threads = torch.get_num_threads()
    lat = measure_latency(probe, torch.randn(4, 3), warmup=1, repeats=2, threads=2)
    assert seen == [(False, False, True, 2)] * 3 and lat.threads == 2
    assert probe.training and probe.bn.training  # put back
    assert torch.get_num_threads() == threads
    assert float(probe.bn.running_mean.abs().sum()) == 0.0  # eval mode: the statistics were not updated


def test_metrics_measure_latency_is_the_median_in_milliseconds(clock):
    model = Scripted("a", [7.0, 3.0, 4.0, 5.0, 100.0], clock, [])
    assert metrics.measure_latency(model, torch.zeros(1, 3), repeats=3, warmup=2) == pytest.approx(5.0)


def test_invalid_arguments_are_refused():
    m = nn.Linear(3, 3)
    with pytest.raises(ValueError, match="repeats must be at least 1"):
        measure_latency(m, torch.zeros(1, 3), repeats=0)
    with pytest.raises(ValueError, match="threads must be at least 1"):
        measure_latency(m, torch.zeros(1, 3), threads=0)
    lat = Latency.from_times([1.0, 2.0], 1, 0, 1, "cpu", "perf_counter")
    other = Latency.from_times([1.0], 1, 0, 1, "cpu", "perf_counter")
    with pytest.raises(ValueError, match="same rounds"):
        compare(lat, other)


def test_a_real_model_at_batch_one_and_a_batch():
    model = load_builtin("digits-cnn")
    x = torch.randn(8, 1, 8, 8)
    one, many = (measure_latency(model, x, batch=b, warmup=2, repeats=10) for b in (1, 32))
    assert one.batch == 1 and many.batch == 32
    assert 0 < one.min_ms <= one.median_ms <= one.max_ms
    assert many.median_ms > one.median_ms  # 32 samples take longer than one
    assert np.isfinite(many.per_sample_ms) and many.per_sample_ms < one.median_ms


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_latency_uses_events():
    model = nn.Sequential(nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 1024)).cuda()
    lat = measure_latency(model, torch.randn(64, 1024, device="cuda"), warmup=3, repeats=10)
    assert lat.timer == "cuda-events" and lat.device.startswith("cuda") and lat.median_ms > 0
