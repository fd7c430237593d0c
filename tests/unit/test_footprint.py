"""What one decision touches (``pruning_core.footprint``): every tensor slice a channel spans, checked against the
physically smaller model that removing one channel builds, and the per-group costs against its parameter and
FLOP counts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pruning_core import Workbench, metrics
from pruning_core.charts.footprint import footprint_figure, group_cost_bars
from pruning_core.data import DataSplits, Split
from pruning_core.footprint import COST_COLUMNS, FOOTPRINT_COLUMNS, group_costs, group_footprint, one_channel_plan

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DEMO = ("digits-mlp", "digits-cnn", "digits-resnet")


def _numels(model: nn.Module) -> dict[str, int]:
    return {k: v.numel() for k, v in [*model.named_parameters(), *model.named_buffers()]}


def _check_against_sliced(wb: Workbench) -> None:
    """For every group and two of its channels: what the footprint and the costs say one channel removes equals
    what the sliced model lost, tensor by tensor, in all, and in FLOPs."""
    dense_params = metrics.parameter_count(wb.model)
    dense_flops = metrics.count_flops(wb.model, wb.example_input)[0]
    dense_numel = _numels(wb.model)
    costs = group_costs(wb).set_index("group")
    assert list(costs.reset_index().columns) == COST_COLUMNS
    for g in wb.groups.groups:
        fp = group_footprint(wb, g.name)
        assert list(fp.columns) == FOOTPRINT_COLUMNS and len(fp) == len(g.members)
        for channel in (0, g.size - 1):
            small = wb.sliced_model(one_channel_plan(g.name, channel))
            lost = {k: n - _numels(small)[k] for k, n in dense_numel.items() if n != _numels(small)[k]}
            assert dict(zip(fp["name"], fp["removed_per_channel"], strict=True)) == lost, (g.name, channel)
            params = dense_params - metrics.parameter_count(small)
            flops = dense_flops - metrics.count_flops(small, wb.example_input)[0]
            assert costs.loc[g.name, "params_per_channel"] == params, (wb.name, g.name)
            assert costs.loc[g.name, "flops_per_channel"] == flops, (wb.name, g.name)
        assert fp.loc[fp["kind"] == "parameter", "removed_per_channel"].sum() == costs.loc[g.name,
                                                                                           "params_per_channel"]
        assert costs.loc[g.name, "residual"] == (len(g.producers) > 1)


@pytest.mark.parametrize("name", DEMO)
def test_footprint_and_costs_match_the_sliced_model(name, demo_workbenches):
    _check_against_sliced(demo_workbenches[name])


def test_residual_stream_channel_costs_more_than_an_inner_channel_of_the_same_width(demo_workbenches):
    wb = demo_workbenches["digits-resnet"]
    costs = group_costs(wb)
    residual, inner = costs[costs["residual"]], costs[~costs["residual"]]
    assert set(residual["group"]) == {"conv1", "layer2.shortcut.0"}
    compared = 0
    for _, r in residual.iterrows():
        same = inner[inner["channels"] == r["channels"]]
        assert len(same)
        assert (r["params_per_channel"] > same["params_per_channel"]).all(), (r["group"], same)
        assert (r["flops_per_channel"] > same["flops_per_channel"]).all(), (r["group"], same)
        compared += len(same)
    assert compared == 3
    fp = group_footprint(wb, "conv1").set_index("name")
    assert fp.loc["conv1.weight", "role"] == "producer output" and fp.loc["bn1.weight", "role"] == "norm"
    for partner in ("layer1.conv2.weight", "layer1.bn2.weight", "layer1.bn2.running_var"):
        assert fp.loc[partner, "role"] == "residual partner", partner
    assert fp.loc["layer2.conv1.weight", "role"] == "consumer input" and fp.loc["layer2.conv1.weight", "dim"] == 1
    assert fp.loc["bn1.running_mean", "kind"] == "buffer"


def test_flatten_shows_the_inputs_per_channel(demo_workbenches):
    wb = demo_workbenches["digits-cnn"]
    fp = group_footprint(wb, "conv2").set_index("name")
    row = fp.loc["fc1.weight"]
    # conv2's 32 channels are max-pooled to 4x4 and flattened into fc1's 512 inputs: 16 per channel, 64 rows each
    assert row["role"] == "consumer input" and row["entries_per_channel"] == 16 and row["removed_per_channel"] == 1024
    assert "16 inputs per channel" in row["note"]
    fig = footprint_figure(group_footprint(wb, "conv2"), "conv2")
    assert {t.name for t in fig.data} == {"producer output", "norm", "consumer input"}
    assert "1,170 parameters" in fig.layout.title.text  # 16*3*3 conv2 rows + 2 bn2 + 64*16 fc1 columns


class Concatenated(nn.Module):
    """Two convolutions concatenated into one consumer: b's channel k is the consumer's input k + 4."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(1, 6, 3, padding=1)
        self.c, self.fc = nn.Conv2d(10, 5, 1), nn.Linear(5, 3)

    def forward(self, x):
        return self.fc(self.c(torch.relu(torch.cat([self.a(x), self.b(x)], 1))).mean((2, 3)))


def test_concatenation_offsets():
    g = torch.Generator().manual_seed(0)
    split = Split(torch.randn(16, 1, 8, 8, generator=g), torch.arange(16) % 3)
    wb = Workbench(Concatenated(), DataSplits("random", split, split, split, 3), device="cpu", name="concat")
    b = group_footprint(wb, "b").set_index("name")
    assert b.loc["c.weight", "note"] == "concatenated: channel k is input k+4"
    assert group_footprint(wb, "a").set_index("name").loc["c.weight", "note"] == ""
    _check_against_sliced(wb)


def test_group_cost_bars_mark_residual_groups_and_the_selection(demo_workbenches):
    costs = group_costs(demo_workbenches["digits-resnet"])
    fig = group_cost_bars(costs, selected="layer1.conv1")
    params, flops = fig.data
    assert list(params.x) == list(costs["params_per_channel"]) and list(flops.x) == list(costs["flops_per_channel"])
    assert [label.endswith("⟲") for label in params.y] == costs["residual"].tolist()
    assert [w > 0 for w in params.marker.line.width] == (costs["group"] == "layer1.conv1").tolist()
    assert sorted(params.marker.opacity) == [0.4] * 4 + [1.0]
