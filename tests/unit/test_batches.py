"""Evaluation batches: sized by the model's widest layer output, and a hook between them (a progress bar that
moves inside one pass, and a place where a stop lands) that leaves the workbench as it was when it raises."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pruning_core import Workbench, load_builtin, load_digits, make_method, metrics
from pruning_core.data import synthetic_images
from pruning_core.workbench import ACTIVATION_BUDGET, MAX_BATCH, auto_batch_size

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_batch_size_follows_the_widest_layer_output():
    # a conv writing 16 x 64 x 64 float32 per sample: 262,144 bytes, so 1024 samples fit 256 MB exactly
    wide = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(16, 10))
    assert Workbench(wide, synthetic_images(8, (3, 64, 64), 10), device="cpu").batch_size == 1024
    wider = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(64, 10))  # 1 MiB per sample -> 256
    assert Workbench(wider, synthetic_images(8, (3, 64, 64), 10), device="cpu").batch_size == 256
    assert auto_batch_size(None) == MAX_BATCH and auto_batch_size(ACTIVATION_BUDGET * 4) == 8
    assert auto_batch_size(ACTIVATION_BUDGET // 100) == 64  # the power of two at or below 100
    assert Workbench(wider, synthetic_images(8, (3, 64, 64), 10), device="cpu", batch_size=5).batch_size == 5


def test_predict_reports_every_batch_and_the_outputs_do_not_change():
    model = load_builtin("digits-cnn").eval()
    x = load_digits().eval.x
    calls = []
    with metrics.between_batches(lambda done, total: calls.append((done, total))):
        out = metrics.predict(model, x, batch_size=128)
    assert calls == [(min(128 * (i + 1), len(x)), len(x)) for i in range(-(-len(x) // 128))]
    assert torch.equal(out, metrics.predict(model, x, batch_size=128))  # and no hook outside the block
    assert len(calls) == 5


def test_a_stop_between_batches_leaves_the_workbench_dense():
    wb = Workbench(load_builtin("digits-resnet"), load_digits(), device="cpu", batch_size=64)
    before = {k: v.clone() for k, v in wb.model.state_dict().items()}
    dense = wb.dense_metrics()
    plan = make_method("magnitude-global").prepare(wb).plan(0.5)

    class Stop(Exception):
        pass

    def stop(done: int, total: int) -> None:
        if done >= 128:
            raise Stop

    with pytest.raises(Stop), metrics.between_batches(stop):
        wb.evaluate_plan(plan, "masked")
    assert all(torch.equal(before[k], v) for k, v in wb.model.state_dict().items())
    assert wb.evaluate_plan(make_method("magnitude-global").prepare(wb).plan(0.0)).accuracy == dense.accuracy
