"""Two-layer units: discovery on the demo models, the channel matrix layouts, the fold helper, and slicing of
structured plans that carry corrections."""

from __future__ import annotations

import torch
from torch import nn

from pruning_core import Plan
from pruning_core.structure import capture_inputs, channel_matrix, fold_into_consumer, hidden_mask, layer_two

EXPECTED = {
    "digits-mlp": [("fc1", "fc2", "linear"), ("fc2", "fc3", "linear")],
    "digits-cnn": [("conv1", "conv2", "conv"), ("conv2", "fc1", "flatten"), ("fc1", "fc2", "linear")],
    # residual-stream channels couple several producers: only the blocks' inner channels are units
    "digits-resnet": [("layer1.conv1", "layer1.conv2", "conv"), ("layer2.conv1", "layer2.conv2", "conv"),
                      ("layer3.conv1", "layer3.conv2", "conv")],
}


def test_units_of_the_demo_models(demo_workbenches):
    for name, wb in demo_workbenches.items():
        got = [(u.producer, u.consumer, u.layout) for u in wb.units]
        assert got == EXPECTED[name], name
    cnn = {u.producer: u for u in demo_workbenches["digits-cnn"].units}
    assert cnn["conv1"].norms == ("bn1",) and cnn["conv1"].after == "bn2"
    assert cnn["conv2"].positions == 16 and cnn["conv2"].after is None


def test_channel_matrix_columns_are_channels(demo_workbenches):
    wb = demo_workbenches["digits-cnn"]
    units = {u.producer: u for u in wb.units}
    inputs = capture_inputs(wb.model, ["conv2", "fc1"], wb.calib_x[:5])
    conv_in = inputs["conv2"]  # (5, 16, 8, 8)
    z = channel_matrix(units["conv1"], conv_in)
    assert z.shape == (5 * 64, 16)
    torch.testing.assert_close(z[:, 3].sort().values, conv_in[:, 3].reshape(-1).sort().values)
    flat = inputs["fc1"]  # (5, 512): channel c owns features 16c .. 16c+15
    z = channel_matrix(units["conv2"], flat)
    assert z.shape == (5 * 16, 32)
    torch.testing.assert_close(z[:, 7].sort().values, flat[:, 7 * 16:8 * 16].reshape(-1).sort().values)


def test_hidden_mask_matches_channel_layout(demo_workbenches):
    wb = demo_workbenches["digits-cnn"]
    unit = {u.producer: u for u in wb.units}["conv2"]
    flat = capture_inputs(wb.model, ["fc1"], wb.calib_x[:4])["fc1"]
    keep = torch.zeros(32, dtype=torch.bool)
    keep[[1, 5]] = True
    masked = channel_matrix(unit, flat * hidden_mask(unit, keep, flat))
    assert torch.all(masked[:, ~keep] == 0)
    torch.testing.assert_close(masked[:, keep], channel_matrix(unit, flat)[:, keep])


def test_fold_is_exact_for_an_exact_interpolation(demo_workbenches):
    """If the dropped channels are exact combinations of the kept ones, Z W^T == Z_I (W T^T)^T, for the
    conv->conv and the conv->flatten->linear layouts."""
    wb = demo_workbenches["digits-cnn"]
    torch.manual_seed(0)
    for unit in wb.units[:2]:
        consumer = wb.model.get_submodule(unit.consumer)
        kept = torch.tensor([0, 2, 5])
        t = torch.zeros(3, unit.size, dtype=torch.float64)
        t[:, kept] = torch.eye(3, dtype=torch.float64)
        t[:, [1, 3, 4]] = torch.randn(3, 3, dtype=torch.float64)
        # hidden activations that obey Z = Z[:, kept] @ T exactly
        base = torch.randn(6, 3, *(([8, 8]) if unit.layout == "conv" else [unit.positions]), dtype=torch.float64)
        full = torch.einsum("nj...,ji->ni...", base, t)
        full[:, [c for c in range(unit.size) if c not in (0, 1, 2, 3, 4, 5)]] = 0
        t[:, 6:] = 0
        x = full if unit.layout == "conv" else full.reshape(6, -1)
        w = consumer.weight.detach().double()
        corrected = fold_into_consumer(w, unit, kept, t)
        keep = torch.zeros(unit.size, dtype=torch.bool)
        keep[kept] = True
        x_kept = x * hidden_mask(unit, keep, x)
        if unit.layout == "conv":
            ref = torch.nn.functional.conv2d(x, w, padding=1)
            got = torch.nn.functional.conv2d(x_kept, corrected, padding=1)
        else:
            ref, got = x @ w.T, x_kept @ corrected.T
        torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)
        removed = torch.tensor([c for c in range(unit.size) if c not in kept.tolist()])
        if unit.layout == "conv":
            assert torch.all(corrected[:, removed] == 0)


def test_layer_two_includes_the_following_batchnorm(demo_workbenches):
    wb = demo_workbenches["digits-resnet"]
    unit = wb.units[0]
    h = capture_inputs(wb.model, [unit.consumer], wb.calib_x[:3])[unit.consumer]
    block = wb.model.layer1
    with torch.no_grad():
        torch.testing.assert_close(layer_two(wb.model, unit)(h), block.bn2(block.conv2(h)))


def test_sliced_model_applies_corrections(demo_workbenches):
    """A structured plan with a correction on the consumer: the physically smaller model equals the masked
    model with the correction written, and the working copy is restored afterwards."""
    wb = demo_workbenches["digits-cnn"]
    unit = wb.units[0]  # conv1 -> conv2
    removed = torch.tensor([1, 4, 9])
    torch.manual_seed(1)
    corrected = wb.model.conv2.weight.detach().clone() * (1 + 0.1 * torch.randn_like(wb.model.conv2.weight))
    corrected[:, removed] = 0
    plan = Plan("test", 3 / 16, "structured", pruned_channels={unit.group: removed},
                corrections={"conv2.weight": corrected})
    dense_before = wb.model.conv2.weight.detach().clone()
    small = wb.sliced_model(plan)
    assert small.conv2.weight.shape == (32, 13, 3, 3) and small.bn1.running_mean.shape == (13,)
    with torch.no_grad():
        with wb.applied(plan) as masked:
            ref = masked(wb.eval_x)
        got = small(wb.eval_x)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)
    assert torch.equal(wb.model.conv2.weight, dense_before)
    assert small.conv2.weight.data_ptr() != wb.model.conv2.weight.data_ptr()


def test_correction_on_an_untouched_tensor_is_not_shared(demo_workbenches):
    wb = demo_workbenches["digits-cnn"]
    unit = wb.units[0]
    new_bias = torch.full_like(wb.model.fc2.bias, 0.5)
    plan = Plan("test", 0.1, "structured", pruned_channels={unit.group: torch.tensor([2])},
                corrections={"fc2.bias": new_bias})
    small = wb.sliced_model(plan)
    assert torch.equal(small.fc2.bias, new_bias)
    assert not torch.equal(wb.model.fc2.bias, new_bias)  # the working copy was restored, the copy kept


def test_a_model_with_a_layernorm_between_has_no_unit():
    from pruning_core.structure import build_groups, find_units

    model = nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(),
                          nn.Linear(16, 4)).eval()
    x = torch.randn(2, 8)
    units = find_units(model, build_groups(model, x), x)
    assert [(u.producer, u.consumer) for u in units] == [("3", "5")]
