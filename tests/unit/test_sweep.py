"""Sweeps stream plain rows that serialise, and evaluate no more than they must."""

import io

import pandas as pd
import pytest

from pruning_core import SweepResult, ratio_grid, run_sweep, sweep


def test_sweep_streams_one_point_per_method_and_ratio(demo_workbenches):
    wb = demo_workbenches["digits-resnet"]
    ratios = ratio_grid(0.0, 0.9, 4)
    seen = []
    for point in sweep(wb, ["magnitude-global", "group-l1"], ratios):
        seen.append((point.row["method"], point.row["ratio"]))
        assert point.layers and all(layer["ratio"] == point.row["ratio"] for layer in point.layers)
    assert seen == [(m, r) for m in ("magnitude-global", "group-l1") for r in ratios]


def test_sweep_costs_one_evaluation_per_point(digits):
    from pruning_core import Workbench, load_builtin

    wb = Workbench(load_builtin("digits-cnn"), digits, device="cpu")
    run_sweep(wb, ["magnitude-global", "random", "group-l2"], ratio_grid(0, 0.9, 10))
    assert wb.eval_passes == 1 + 3 * 10  # the dense reference once, then one pass per point


def test_results_round_trip_through_json_and_csv(demo_workbenches):
    res = run_sweep(demo_workbenches["digits-cnn"], ["magnitude-layer", "random-channels"], [0.0, 0.5])
    back = SweepResult.from_json(res.to_json())
    pd.testing.assert_frame_equal(back.points, res.points)
    pd.testing.assert_frame_equal(back.layers, res.layers, check_dtype=False)
    points_csv, layers_csv = res.to_csv()
    assert len(pd.read_csv(io.StringIO(points_csv))) == 4
    assert set(pd.read_csv(io.StringIO(layers_csv))["layer"]) == {"conv1", "conv2", "fc1", "fc2"}
    assert back.meta["dense_accuracy"] > 0.95


def test_realised_sparsity_is_reported_not_the_nominal_ratio(demo_workbenches):
    res = run_sweep(demo_workbenches["digits-resnet"], ["group-l1", "magnitude-global"], [0.5])
    structured = res.points.set_index("method").loc["group-l1"]
    unstructured = res.points.set_index("method").loc["magnitude-global"]
    assert structured["sparsity"] > 0.6  # removing half the channels removes ~3/4 of a conv's weights
    assert abs(unstructured["sparsity"] - 0.5) < 1e-3
    layers = res.layers[(res.layers["method"] == "group-l1")]
    inner = layers.set_index("layer").loc["layer1.conv1"]
    assert inner["kept_channels"] == 8 and inner["channels"] == 16


def test_masked_and_sliced_sweeps_agree(demo_workbenches):
    wb = demo_workbenches["digits-resnet"]
    ratios = ratio_grid(0, 0.9, 10)
    sliced = run_sweep(wb, ["group-l1"], ratios, structured="sliced").points
    masked = run_sweep(wb, ["group-l1"], ratios, structured="masked").points
    assert list(sliced["accuracy"]) == list(masked["accuracy"])
    assert list(sliced["params"]) == list(masked["params"])
    assert set(sliced["evaluation"]) == {"sliced"} and set(masked["evaluation"]) == {"masked"}


def test_ratio_grid_validates():
    assert ratio_grid(0, 0.9, 10)[-1] == 0.9 and len(ratio_grid(0, 0.9, 10)) == 10
    from pruning_core import PlanError

    with pytest.raises(PlanError):
        ratio_grid(0, 1.0, 5)


def test_ratio_grid_merges_repeated_ratios_and_sorts():
    assert ratio_grid(0.5, 0.5, 3) == [0.5]  # three steps on one value: one ratio, not three
    assert ratio_grid(0.9, 0.0, 4) == [0.0, 0.3, 0.6, 0.9]
    assert ratio_grid(0.0, 0.0003, 7) == [0.0, 0.0001, 0.0002, 0.0003]  # 4-decimal rounding merges neighbours


def test_ratio_grid_checks_each_ratio_after_rounding():
    from pruning_core import PlanError

    with pytest.raises(PlanError, match="remove every weight"):
        ratio_grid(0.99996, 0.99996, 1)  # rounds to 1


def test_ratio_grid_refuses_too_many_steps_before_building_a_list(monkeypatch):
    import time

    from pruning_core import PlanError

    t0 = time.perf_counter()
    with pytest.raises(PlanError, match="1,000,000,000 ratios were asked for; one sweep evaluates at most 200"):
        ratio_grid(0.0, 0.9, 10**9)
    assert time.perf_counter() - t0 < 0.5
    assert len(ratio_grid(0.0, 0.9, 200)) == 200
    monkeypatch.setenv("PRUNING_EXPLORER_MAX_RATIOS", "5")
    assert len(ratio_grid(0.0, 0.8, 5)) == 5
    with pytest.raises(PlanError, match="PRUNING_EXPLORER_MAX_RATIOS"):
        ratio_grid(0.0, 0.8, 6)
    with pytest.raises(PlanError, match="at least one step"):
        ratio_grid(0.0, 0.8, 0)


def test_from_points_keeps_one_row_per_method_and_ratio():
    from pruning_core.sweep import POINT_COLUMNS, SweepPoint

    def point(method, ratio, accuracy):
        row = dict.fromkeys(POINT_COLUMNS, 0.0) | {"method": method, "label": method, "ratio": ratio,
                                                   "accuracy": accuracy}
        layer = {"method": method, "ratio": ratio, "layer": "fc", "kept_fraction": accuracy, "kept_channels": None,
                 "channels": None}
        return SweepPoint(row, [layer])

    res = SweepResult.from_points([point("a", 0.5, 0.1), point("b", 0.5, 0.3), point("a", 0.5, 0.2),
                                   point("a", 0.0, 0.9)])
    assert list(zip(res.points["method"], res.points["ratio"], res.points["accuracy"], strict=True)) == [
        ("a", 0.5, 0.2), ("b", 0.5, 0.3), ("a", 0.0, 0.9)]  # the last measurement wins
    assert res.layers["kept_fraction"].tolist() == [0.2, 0.3, 0.9]
    assert res.at(0.5).set_index("method").loc["a", "accuracy"] == 0.2  # a scalar, not a Series
