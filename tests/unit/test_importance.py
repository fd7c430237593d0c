"""Importance criteria: each against an independent computation on the demo models."""

from __future__ import annotations

import pytest
import torch

from pruning_core.importance import (
    ActivationSum,
    BNScale,
    GroupNorm,
    Importance,
    RandomScores,
    RowNorm,
    WeightMagnitude,
    group_bn_scale,
    output_row_norms,
    unit_activation_sums,
)
from pruning_core.structure import capture_inputs


def test_bn_scale_is_the_batchnorm_gamma_of_each_channel(demo_workbenches):
    cnn = demo_workbenches["digits-cnn"]
    scores = group_bn_scale(cnn)
    assert set(scores) == {"conv1", "conv2"}  # fc1's group has no BatchNorm
    torch.testing.assert_close(scores["conv1"], cnn.model.bn1.weight.detach().double().abs(), rtol=0, atol=0)
    torch.testing.assert_close(scores["conv2"], cnn.model.bn2.weight.detach().double().abs(), rtol=0, atol=0)
    # a residual group couples one BatchNorm per block: their |gamma| add up
    resnet = demo_workbenches["digits-resnet"]
    m = resnet.model
    torch.testing.assert_close(group_bn_scale(resnet)["conv1"],
                               (m.bn1.weight.abs() + m.layer1.bn2.weight.abs()).detach().double())
    assert group_bn_scale(demo_workbenches["digits-mlp"]) == {}
    assert BNScale()(cnn).keys() == scores.keys() and BNScale.target == "channels"


def test_activation_sums_are_the_consumer_inputs_summed(demo_workbenches):
    wb = demo_workbenches["digits-mlp"]
    sums = unit_activation_sums(wb)
    fc2_input = capture_inputs(wb.model, ["fc2"], wb.calib_x)["fc2"]
    torch.testing.assert_close(sums["fc1"], fc2_input.double().sum(0), rtol=1e-5, atol=1e-4)  # float32 sums
    assert ActivationSum()(wb).keys() == sums.keys()


def test_criteria_share_one_interface(demo_workbenches):
    wb = demo_workbenches["digits-cnn"]
    criteria = [WeightMagnitude(1), GroupNorm(2), RowNorm(1), ActivationSum(), BNScale(),
                RandomScores("weights", seed=3), RandomScores("channels", seed=3)]
    for criterion in criteria:
        assert isinstance(criterion, Importance)
        scores = criterion(wb)
        assert scores and all(torch.isfinite(v).all() for v in scores.values()), type(criterion).__name__
    assert {k: v.shape for k, v in WeightMagnitude()(wb).items()} == {k: v.shape for k, v in wb.prunable.items()}
    rows = RowNorm(2)(wb)
    assert all(torch.equal(rows[k], torch.from_numpy(v)) for k, v in output_row_norms(wb, 2).items())
    assert all(torch.equal(a, b) for a, b in zip(RandomScores("channels", 3)(wb).values(),
                                                   RandomScores("channels", 3)(wb).values(), strict=True))
    with pytest.raises(ValueError, match="per weight or per channel"):
        RandomScores("units")
