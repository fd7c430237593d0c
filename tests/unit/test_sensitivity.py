"""Sensitivity analysis: each cell is the real prune of one whole channel group (checked against the workbench's
own masked and sliced evaluation of the same plan), the suffix engine gives the naive engine's numbers on every
demo model and on models with in-place ops, resume and stop keep what was measured, and the working copy comes
back bit for bit."""

import json

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pruning_core import Workbench, load_builtin
from pruning_core.importance.criteria import channel_scores
from pruning_core.sensitivity import (
    COLUMNS,
    cache_key,
    from_json,
    group_plan,
    pivot,
    removed_channels,
    sensitivity_table,
    suffix_fractions,
    to_csv,
    to_json,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DEMO = ("digits-mlp", "digits-cnn", "digits-resnet")
COMPARED = ["accuracy", "loss", "agreement", "accuracy_drop", "loss_increase"]


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_bit_equal(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)


def assert_same_numbers(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert a[["group", "ratio", "channels", "channels_removed"]].equals(b[["group", "ratio", "channels",
                                                                            "channels_removed"]])
    for c in COMPARED:
        assert a[c].tolist() == pytest.approx(b[c].tolist(), abs=1e-5), c


class InPlaceNet(nn.Module):
    """A residual MLP whose tail writes into a value computed before the second group's first layer: ``h`` is the
    input the suffix of group fc1 starts from, and ``kind`` rewrites it in place after fc1 has read it."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        self.flatten = nn.Flatten()
        self.fc0, self.fc1, self.fc2, self.fc3 = (nn.Linear(64, 32), nn.Linear(32, 32), nn.Linear(32, 32),
                                                  nn.Linear(32, 10))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        h = self.fc0(self.flatten(x))
        b = self.act(self.fc1(h))  # in place on a fresh value: harmless
        out = self.fc2(b)
        out += h
        if self.kind == "module":
            h2 = self.act(h)
        elif self.kind == "method":
            h2 = h.relu_()
        elif self.kind == "view":
            h2 = h.view(-1, 2, 16).relu_().flatten(1)  # written through a view of h
        else:
            h2 = F.relu(h, inplace=True)
        return self.fc3(out * h2)


class Branchy(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(64, 32), nn.Linear(32, 10)

    def forward(self, x):
        h = torch.relu(self.fc1(x.flatten(1)))
        if h.sum() > 0:
            h = h * 2
        return self.fc2(h)


class AliasedUpdate(nn.Module):
    """``h += 1`` seen through another name: eager adds, fx traces an out-of-place add, so the trace differs."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(64, 32), nn.Linear(32, 10)

    def forward(self, x):
        h = self.fc1(x.flatten(1))
        g = h
        h += 1.0
        return self.fc2(torch.relu(g))


def seeded(model: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    for p in model.parameters():
        nn.init.normal_(p, std=0.3)
    return model


def brute_force_table(wb: Workbench, scores, ratios) -> pd.DataFrame:
    """Every cell by the workbench's own masked evaluation of the group plan (one full pass each)."""
    dense = wb.dense_metrics()
    rows = []
    for g in wb.groups.groups:
        for r in ratios:
            plan = group_plan(wb, scores, g.name, r)
            pm = wb.evaluate_plan(plan, structured="masked")
            rows.append({"group": g.name, "ratio": r, "channels": g.size,
                         "channels_removed": len(plan.pruned_channels[g.name]), "accuracy": pm.accuracy,
                         "loss": pm.loss, "agreement": pm.agreement, "accuracy_drop": dense.accuracy - pm.accuracy,
                         "loss_increase": pm.loss - dense.loss, "seconds": 0.0})
    return pd.DataFrame(rows, columns=COLUMNS)


def test_removed_channels_are_the_lowest_scores_with_ties_by_index():
    scores = torch.tensor([3.0, 1.0, 2.0, 1.0, 5.0, 0.5, 2.0, 4.0], dtype=torch.float64)
    ranked = sorted(range(8), key=lambda i: (float(scores[i]), i))
    for r, n in [(0.0, 0), (0.25, 2), (0.3, 2), (0.5, 4), (0.99, 7)]:  # round(r * 8), at most 7
        assert removed_channels(scores, r).tolist() == sorted(ranked[:n])


def test_residual_group_cell_is_the_real_group_prune(demo_workbenches):
    wb = demo_workbenches["digits-resnet"]
    scores = channel_scores(wb, "l1")
    group = "layer2.shortcut.0"
    g = wb.groups.by_name[group]
    assert len(g.producers) >= 3 and "fc" in g.consumers  # coupled through two residual additions
    table = sensitivity_table(wb, scores, [0.25, 0.5, 0.75], groups=[group])
    dense = wb.dense_metrics()
    assert table["group"].tolist() == [group] * 3
    for row in table.itertuples():
        plan = group_plan(wb, scores, group, row.ratio)
        assert len(plan.pruned_channels[group]) == round(row.ratio * g.size) == row.channels_removed
        for mode in ("masked", "sliced"):
            pm = wb.evaluate_plan(plan, structured=mode)
            assert row.accuracy_drop == pytest.approx(dense.accuracy - pm.accuracy, abs=1e-6), mode
            assert row.loss_increase == pytest.approx(pm.loss - dense.loss, abs=1e-5), mode
            assert row.agreement == pytest.approx(pm.agreement, abs=1e-6), mode
    assert table["accuracy_drop"].iloc[-1] > 0.1  # removing 3/4 of the residual stream costs accuracy


@pytest.mark.parametrize("name", DEMO)
def test_suffix_engine_equals_naive_and_brute_force(name, demo_workbenches):
    wb = demo_workbenches[name]
    scores = channel_scores(wb, "l2")
    ratios = [0.1, 0.5, 0.9]
    before = snapshot(wb.model)
    fast = sensitivity_table(wb, scores, ratios)
    assert_bit_equal(wb.model, before)
    naive = sensitivity_table(wb, scores, ratios, engine="naive")
    assert_bit_equal(wb.model, before)
    assert fast.attrs["meta"]["engine"] == "suffix" and fast.attrs["meta"]["fallback"] is None
    assert naive.attrs["meta"]["engine"] == "naive"
    assert len(fast) == len(wb.groups.groups) * 3 and list(fast.columns) == COLUMNS
    assert_same_numbers(fast, naive)
    assert_same_numbers(fast, brute_force_table(wb, scores, ratios))


def test_calibration_split_agrees_with_its_own_dense_predictions(demo_workbenches):
    wb = demo_workbenches["digits-cnn"]
    scores = channel_scores(wb, "l1")
    fast = sensitivity_table(wb, scores, [0.0, 0.5], split="calib")
    naive = sensitivity_table(wb, scores, [0.0, 0.5], split="calib", engine="naive")
    assert_same_numbers(fast, naive)
    assert fast.attrs["meta"]["samples"] == len(wb.calib_y)
    dense = fast[fast["ratio"] == 0.0]
    assert (dense["agreement"] == 1.0).all() and (dense["accuracy_drop"] == 0.0).all()
    with wb.applied(group_plan(wb, scores, "conv2", 0.5)) as model, torch.inference_mode():
        pred = model(wb.calib_x).argmax(1)
    with torch.inference_mode():
        dense_pred = wb.model(wb.calib_x).argmax(1)
    row = fast[(fast["group"] == "conv2") & (fast["ratio"] == 0.5)].iloc[0]
    assert row["accuracy"] == pytest.approx(float((pred == wb.calib_y).float().mean()), abs=1e-6)
    assert row["agreement"] == pytest.approx(float((pred == dense_pred).float().mean()), abs=1e-6)


@pytest.mark.parametrize("kind", ["module", "method", "functional", "view"])
def test_in_place_ops_do_not_corrupt_cached_activations(kind, digits):
    wb = Workbench(seeded(InPlaceNet(kind)), digits, device="cpu")
    scores = channel_scores(wb, "l1")
    # the view reshapes fc0's 32 channels into 2 x 16: one channel fewer cannot be viewed so, and the group check
    # (structure.groups.probe_groups) leaves fc0 out; the write through the view still hits fc1's cached input
    assert {g.name for g in wb.groups.groups} == ({"fc1"} if kind == "view" else {"fc0", "fc1"})
    before = snapshot(wb.model)
    ratios = [0.25, 0.5, 0.75]
    fast = sensitivity_table(wb, scores, ratios)
    assert fast.attrs["meta"]["engine"] == "suffix" and fast.attrs["meta"]["guarded_cuts"] == 1
    assert_bit_equal(wb.model, before)
    assert_same_numbers(fast, brute_force_table(wb, scores, ratios))
    assert fast["loss"].nunique() == len(fast)  # every cell differs: a stale cache would show


def test_resume_evaluates_only_the_missing_cells(demo_workbenches):
    wb = demo_workbenches["digits-resnet"]
    scores = channel_scores(wb, "l1")
    ratios = [0.25, 0.5, 0.75]
    full = sensitivity_table(wb, scores, ratios)
    done = full.iloc[::2].copy()
    done["seconds"] = -1.0  # a marker: rows taken from `done` come back as they were
    delivered = []
    resumed = sensitivity_table(wb, scores, ratios, done=done, on_row=delivered.append)
    assert len(delivered) == len(full) - len(done) == resumed.attrs["meta"]["cells_evaluated"]
    assert {(r["group"], r["ratio"]) for r in delivered}.isdisjoint(zip(done["group"], done["ratio"], strict=True))
    assert (resumed["seconds"] == -1.0).sum() == len(done)
    assert_same_numbers(resumed, full)


@pytest.mark.parametrize("engine", ["suffix", "naive"])
def test_a_stop_from_on_row_keeps_delivered_rows_and_restores_the_model(engine, demo_workbenches):
    wb = demo_workbenches["digits-cnn"]
    scores = channel_scores(wb, "l1")
    ratios = [0.25, 0.5, 0.75]
    before = snapshot(wb.model)
    delivered = []

    class Stop(Exception):
        pass

    def on_row(row):
        delivered.append(row)
        if len(delivered) == 4:
            raise Stop

    with pytest.raises(Stop):
        sensitivity_table(wb, scores, ratios, on_row=on_row, engine=engine)
    assert_bit_equal(wb.model, before)
    assert len(delivered) == 4 and all(set(r) == set(COLUMNS) for r in delivered)
    rest = []
    resumed = sensitivity_table(wb, scores, ratios, done=pd.DataFrame(delivered), on_row=rest.append, engine=engine)
    assert len(rest) == len(resumed) - 4
    assert_same_numbers(resumed, sensitivity_table(wb, scores, ratios, engine="naive"))


@pytest.mark.parametrize("budget", [0, 2**30])
def test_several_batches_kept_or_recomputed(budget, digits):
    wb = Workbench(load_builtin("digits-resnet"), digits, device="cpu", batch_size=128)  # 539 -> 5 batches
    scores = channel_scores(wb, "random")
    fast = sensitivity_table(wb, scores, [0.3, 0.6], memory_budget=budget)
    assert fast.attrs["meta"]["cache"].startswith("recomputed" if budget == 0 else "whole split")
    assert_same_numbers(fast, sensitivity_table(wb, scores, [0.3, 0.6], engine="naive"))


@pytest.mark.parametrize("model, reason", [(Branchy, "cannot trace"), (AliasedUpdate, "does not reproduce")])
def test_untraceable_models_fall_back_to_full_passes(model, reason, digits):
    wb = Workbench(seeded(model()), digits, device="cpu")
    scores = channel_scores(wb, "l1")
    before = snapshot(wb.model)
    table = sensitivity_table(wb, scores, [0.25, 0.75])
    meta = table.attrs["meta"]
    assert meta["engine_requested"] == "suffix" and meta["engine"] == "naive" and reason in meta["fallback"]
    assert_bit_equal(wb.model, before)
    assert_same_numbers(table, brute_force_table(wb, scores, [0.25, 0.75]))


def test_groups_subset_missing_scores_and_errors(demo_workbenches):
    wb = demo_workbenches["digits-cnn"]
    scores = channel_scores(wb, "l1")
    table = sensitivity_table(wb, {k: v for k, v in scores.items() if k != "fc1"}, [0.5])
    assert table["group"].tolist() == ["conv1", "conv2"]
    assert sensitivity_table(wb, scores, [0.5], groups=["fc1"])["group"].tolist() == ["fc1"]
    with pytest.raises(ValueError, match="no channel group 'nope'"):
        sensitivity_table(wb, scores, [0.5], groups=["nope"])
    with pytest.raises(ValueError, match="engine"):
        sensitivity_table(wb, scores, [0.5], engine="fast")
    with pytest.raises(ValueError, match="ratio"):
        sensitivity_table(wb, scores, [1.0])
    with pytest.raises(ValueError, match="lack the column"):
        sensitivity_table(wb, scores, [0.5], done=pd.DataFrame([{"group": "conv1", "ratio": 0.5}]))


def test_tables_round_trip_through_json_and_csv_and_pivot(demo_workbenches, tmp_path):
    wb = demo_workbenches["digits-mlp"]
    table = sensitivity_table(wb, channel_scores(wb, "l1"), [0.5, 0.25], criterion="l1")
    back = from_json(to_json(table))
    pd.testing.assert_frame_equal(back, table)
    assert back.attrs["meta"] == json.loads(json.dumps(table.attrs["meta"])) and back.attrs["meta"]["criterion"] == "l1"
    (tmp_path / "t.csv").write_text(to_csv(table))
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "t.csv"), table, check_dtype=False)
    grid = pivot(table, "loss")
    assert grid.index.tolist() == ["fc1", "fc2"] and grid.columns.tolist() == [0.25, 0.5]
    assert grid.loc["fc2", 0.5] == table[(table["group"] == "fc2") & (table["ratio"] == 0.5)]["loss"].item()
    with pytest.raises(ValueError):
        from_json(json.dumps({"rows": []}))


def test_cache_key_names_the_analysis_not_the_order():
    key = cache_key("digits-cnn", "l1", "eval", [0.5, 0.25])
    assert key == cache_key("digits-cnn", "l1", "eval", [0.25, 0.5])
    assert len({key, cache_key("digits-cnn", "l2", "eval", [0.25, 0.5]), cache_key("digits-cnn", "l1", "calib",
                [0.25, 0.5]), cache_key("digits-mlp", "l1", "eval", [0.25, 0.5]),
                cache_key("digits-cnn", "l1", "eval", [0.25, 0.5], ["conv1"])}) == 5


def test_suffix_fractions_follow_the_layer_order(demo_workbenches):
    wb = demo_workbenches["digits-cnn"]
    frac = suffix_fractions(wb)
    _, per_layer = wb.dense_flops
    total = sum(per_layer.values())
    # conv1 starts the model; conv2's suffix is everything from conv2; fc1's from fc1 (computed from the counts)
    assert frac["conv1"] == 1.0
    assert frac["conv2"] == pytest.approx((total - per_layer["conv1"]) / total)
    assert frac["fc1"] == pytest.approx((per_layer["fc1"] + per_layer["fc2"]) / total)
