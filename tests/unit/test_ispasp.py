"""i-SpaSP (Wolfe & Kyrillidis, arXiv 2112.04905): the iteration against independent computations and constructed
problems, the method on the demo models, the synthetic experiment and the paper check."""

import json
import time

import numpy as np
import pytest
import torch
from torch import nn

from pruning_core import PlanError, Workbench
from pruning_core.algorithms.cosamp import ispasp_proxy, ispasp_select, output_residual
from pruning_core.charts.ispasp import accuracy_by_ratio, residual_by_iteration, residual_frame, synthetic_residual
from pruning_core.checks.ispasp import paper_check
from pruning_core.experiments.two_layer import decay_summary, synthetic_experiment
from pruning_core.methods.ispasp import ISpaSP
from pruning_core.methods.units import ActivationMagnitude, RandomUnits
from pruning_core.structure import capture_inputs, kept_count, layer_two
from pruning_core.structure.units import hidden_representation

DEMO = ("digits-mlp", "digits-cnn", "digits-resnet")


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # small problems: one torch thread


def _linear(weight, bias=None):
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None).double()
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    return layer.requires_grad_(False)


def _one_hot_sparse_net(seed, width=24, per_unit=6, out=3):
    """Hidden units that never fire on the same sample (sample n activates unit n mod width with a value fixed per
    unit) and unit-norm output columns: contributions are orthogonal and ||Z_j||^2 = a_j^2 / per_unit, a
    non-decreasing function of a_j: the condition under which the residual is non-increasing."""
    g = torch.Generator().manual_seed(seed)
    level = torch.rand(width, generator=g, dtype=torch.float64) + 0.1
    hidden = torch.zeros(width * per_unit, width, dtype=torch.float64)
    rows = torch.arange(width * per_unit)
    hidden[rows, rows % width] = level[rows % width]
    w2 = torch.randn(out, width, generator=g, dtype=torch.float64)
    return hidden, _linear(w2 / w2.norm(dim=0, keepdim=True))


# ----- (i) monotonicity: the condition, and a counter-example outside it --------------------------------------
def test_residual_is_non_increasing_for_disjointly_firing_units():
    moved = 0
    for seed in range(12):
        hidden, layer2 = _one_hot_sparse_net(seed)
        for s in (2, 4, 7):
            sel = ispasp_select(hidden, layer2, s, iterations=20)
            r = np.array(sel.residuals)
            assert np.all(np.diff(r) <= 1e-12 * r[0]), (seed, s, r)
            moved += sel.settled is None or sel.settled > 2  # the set changed after the first iteration
    assert moved >= 5  # the iterations do swap channels here, so the test exercises more than one step


def test_residual_can_rise_when_activation_and_contribution_disagree():
    """One sample, orthogonal output columns of norms 10, 1, 0.1, 4: unit 0 carries the output but unit 1 has the
    larger activation; once unit 0 is kept, the proxy proposes unit 1, which then wins the threshold on a."""
    hidden = torch.tensor([[1.0, 2.0, 3.0, 0.5]], dtype=torch.float64)
    layer2 = _linear(torch.diag(torch.tensor([10.0, 1.0, 0.1, 4.0], dtype=torch.float64)))
    sel = ispasp_select(hidden, layer2, 1, iterations=4)
    assert sel.residuals[1] == pytest.approx(4 + 0.09 + 4)  # S_1 = {0}
    assert sel.residuals[2] == pytest.approx(100 + 0.09 + 4)  # S_2 = {1}: the residual rises
    assert sel.kept.tolist() == [1] and sel.settled == 3


# ----- (ii) planted support --------------------------------------------------------------------------------------
@pytest.mark.parametrize("signed", [True, False])
def test_planted_neurons_are_recovered(signed):
    """Only 6 of 32 neurons reach the output (the others' output weights are zero), and the others have 3x larger
    activations, so ranking by activation alone misses every planted neuron."""
    g = torch.Generator().manual_seed(0)
    width, k = 32, 6
    planted = torch.randperm(width, generator=g)[:k]
    w1 = torch.randn(width, 16, generator=g, dtype=torch.float64)
    w1[~torch.isin(torch.arange(width), planted)] *= 3.0
    hidden = torch.relu(torch.randn(400, 16, generator=g, dtype=torch.float64) @ w1.T)
    w2 = torch.zeros(5, width, dtype=torch.float64)
    w2[:, planted] = torch.randn(5, k, generator=g, dtype=torch.float64)
    layer2 = _linear(w2, torch.randn(5, generator=g, dtype=torch.float64))

    by_activation = set(torch.argsort(hidden.sum(0), descending=True)[:k].tolist())
    assert not by_activation & set(planted.tolist())

    sel = ispasp_select(hidden, layer2, k, signed=signed)
    assert set(sel.kept.tolist()) == set(planted.tolist())
    assert sel.residuals[-1] == pytest.approx(0.0, abs=1e-18)
    smaller = ispasp_select(hidden, layer2, 3, signed=signed)  # fewer than planted: a subset of them
    assert set(smaller.kept.tolist()) <= set(planted.tolist())


# ----- (iii) the proxy -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("affine", [True, False])
def test_proxy_equals_the_mlp_closed_form(affine):
    g = torch.Generator().manual_seed(1)
    hidden = torch.relu(torch.randn(300, 20, generator=g, dtype=torch.float64))
    w2, b = torch.randn(7, 20, generator=g, dtype=torch.float64), torch.randn(7, generator=g, dtype=torch.float64)
    layer2 = _linear(w2, b)
    y = hidden @ w2.T + b
    for kept in (torch.tensor([], dtype=torch.long), torch.tensor([0, 3, 4, 11, 19])):
        mask = torch.zeros(20, dtype=torch.float64)
        mask[kept] = 1
        y_s = (hidden * mask) @ w2.T + b if len(kept) else torch.zeros_like(y)  # Y_S = 0 for S empty
        closed = ((y - y_s) @ w2).sum(0)  # g = (Y - Y_S) W2, summed over samples
        v = ispasp_proxy(hidden, layer2, kept, affine=affine, chunk=64)
        assert torch.allclose(v, closed, rtol=1e-10, atol=1e-9)


def test_proxy_through_conv_and_batchnorm_matches_direct_autograd(demo_workbenches):
    """The CNN's conv1 -> conv2 + BN2 unit: both proxy paths against backward() of 1/2||layer2(H) - Y_S||^2."""
    wb = demo_workbenches["digits-cnn"]
    unit = wb.units[0]
    hidden = capture_inputs(wb.model, [unit.consumer], wb.calib_x)[unit.consumer]
    layer2 = layer_two(wb.model, unit)
    kept = torch.tensor([1, 2, 5, 8, 13])
    mask = torch.zeros(unit.size)
    mask[kept] = 1
    with torch.no_grad():
        y_s = layer2(hidden * mask.view(1, -1, 1, 1))
    h = hidden.clone().requires_grad_(True)
    (0.5 * (layer2(h) - y_s).pow(2).sum()).backward()
    direct = h.grad.sum((0, 2, 3)).double()
    for affine in (True, False):
        v = ispasp_proxy(hidden, layer2, kept, affine=affine, chunk=100)
        assert torch.allclose(v, direct, rtol=1e-4, atol=1e-3 * direct.abs().max()), affine


def test_affine_shortcut_and_plain_autograd_select_the_same(demo_workbenches):
    wb = demo_workbenches["digits-resnet"]
    unit = wb.units[1]
    hidden = capture_inputs(wb.model, [unit.consumer], wb.calib_x)[unit.consumer]
    layer2 = layer_two(wb.model, unit)
    for s in (4, 9):
        fast = ispasp_select(hidden, layer2, s, affine=True)
        plain = ispasp_select(hidden, layer2, s, affine=False, chunk=100)
        assert torch.equal(fast.kept, plain.kept)
        assert np.allclose(fast.residuals, plain.residuals, rtol=1e-6)


# ----- ties, the fill rule and bad input ------------------------------------------------------------------------
def test_zero_proxy_everywhere_keeps_the_largest_activations():
    hidden = torch.tensor([[1.0, 5.0, 0.0, 3.0, 3.0]], dtype=torch.float64).repeat(4, 1)
    layer2 = _linear(torch.zeros(2, 5, dtype=torch.float64))  # every proxy is exactly zero
    sel = ispasp_select(hidden, layer2, 3)
    assert sel.kept.tolist() == [1, 3, 4]  # a = 5, 3, 3 (ties in index order); exactly s kept
    assert sel.settled == 2


def test_bad_input_gives_clear_errors():
    hidden, layer2 = _one_hot_sparse_net(0)
    with pytest.raises(ValueError, match="1 <= s <= 24"):
        ispasp_select(hidden, layer2, 0)
    with pytest.raises(ValueError, match="1 <= s <= 24"):
        ispasp_select(hidden, layer2, 25)
    with pytest.raises(ValueError, match="at least one iteration"):
        ispasp_select(hidden, layer2, 3, iterations=0)
    with pytest.raises(ValueError, match="NaN"):
        ispasp_select(hidden * float("nan"), layer2, 3)
    with pytest.raises(ValueError, match="schedule"):
        ISpaSP(schedule="greedy")


class _SharedHidden(nn.Module):
    """fc1's channels feed two heads: a channel group with two consumers, so no two-layer unit."""

    def __init__(self):
        super().__init__()
        self.flatten, self.fc1 = nn.Flatten(), nn.Linear(64, 32)
        self.head_a, self.head_b = nn.Linear(32, 10), nn.Linear(32, 10)

    def forward(self, x):
        h = torch.relu(self.fc1(self.flatten(x)))
        return self.head_a(h) + self.head_b(h)


def test_a_model_without_two_layer_units_is_refused(digits):
    wb = Workbench(_SharedHidden(), digits, device="cpu")
    assert wb.supports_structured and not wb.units
    for method in (ISpaSP(), ActivationMagnitude(), RandomUnits()):
        with pytest.raises(PlanError, match="this model has none"):
            method.prepare(wb)
    report = paper_check(wb, quick=True)
    assert report.results[0].agrees is True  # the synthetic check needs no model
    assert report.results[-1].agrees is None and "no two-layer units" in report.results[-1].figure
    untraceable = Workbench(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), digits, device="cpu")
    with pytest.raises(PlanError, match="could not be traced"):
        ISpaSP().prepare(untraceable)


# ----- (v) signed vs absolute proxy ---------------------------------------------------------------------------
def test_signed_and_absolute_proxy_rank_differently():
    """One output, weights (1, 1, -3, 0.1), activations (1, 1, 2, 50): the output is positive, so the signed proxy
    (the official code) ranks unit 2, which pulls it down, last and |v| (textbook CoSaMP) ranks it first. The
    selections differ; here the signed one is exact (units 1, 2 and 3 cancel) and |v| keeps the big contributor."""
    hidden = torch.tensor([[1.0, 1.0, 2.0, 50.0]], dtype=torch.float64).repeat(3, 1)
    layer2 = _linear(torch.tensor([[1.0, 1.0, -3.0, 0.1]], dtype=torch.float64))
    v = ispasp_proxy(hidden, layer2, torch.tensor([], dtype=torch.long))
    assert torch.allclose(v, 3 * 1.0 * torch.tensor([1.0, 1.0, -3.0, 0.1], dtype=torch.float64))  # sum_n Y_n w_j
    assert torch.argsort(v, descending=True, stable=True).tolist() == [0, 1, 3, 2]
    assert torch.argsort(v.abs(), descending=True, stable=True).tolist() == [2, 0, 1, 3]
    signed, absolute = ispasp_select(hidden, layer2, 1, signed=True), ispasp_select(hidden, layer2, 1, signed=False)
    assert signed.kept.tolist() == [0] and absolute.kept.tolist() == [2]
    assert signed.residuals[-1] == pytest.approx(0.0) and absolute.residuals[-1] == pytest.approx(3 * 7.0**2)


# ----- (iv) the method on the demo models ----------------------------------------------------------------------
@pytest.mark.parametrize("name", DEMO)
@pytest.mark.parametrize("schedule", ["sequential", "dense"])
def test_plans_on_demo_models(name, schedule, demo_workbenches):
    wb = demo_workbenches[name]
    before = {k: v.clone() for k, v in wb.model.state_dict().items()}
    method = ISpaSP(schedule=schedule).prepare(wb)
    for ratio in (0.3, 0.75):
        plan = method.plan(ratio)
        assert set(plan.pruned_channels) == {u.group for u in wb.units}  # only units
        for u in wb.units:
            removed = plan.pruned_channels[u.group]
            assert len(torch.unique(removed)) == len(removed) == u.size - kept_count(u.size, ratio)
            assert len(plan.details["residuals"][u.group]) == method.iterations + 1
        json.dumps(plan.to_json(wb.groups.sizes))
        wb.groups.removed_indices(plan.pruned_channels)  # valid indices, never a whole group

        small = wb.sliced_model(plan)
        with torch.inference_mode():
            sliced = small(wb.eval_x)
            with wb.applied(plan) as masked_model:
                masked = masked_model(wb.eval_x)
        assert torch.allclose(sliced, masked, atol=1e-4, rtol=1e-4)
        modules, dense = dict(small.named_modules()), dict(wb.model.named_modules())
        if schedule == "dense":  # the dense weights of S, running statistics copied by index
            assert not plan.corrections
            for u in wb.units:
                keep = torch.ones(u.size, dtype=torch.bool)
                keep[plan.pruned_channels[u.group]] = False
                for bn in u.norms:
                    assert torch.equal(modules[bn].running_mean, dense[bn].running_mean[keep])
                    assert torch.equal(modules[bn].running_var, dense[bn].running_var[keep])
        else:  # fine-tuned: every weight and BatchNorm statistic travels as a correction, pruned rows stay zero
            assert plan.corrections and all(v.isfinite().all() for v in plan.corrections.values())
            with wb.applied(plan) as model:
                params = dict(model.named_parameters())
                for u in wb.units:
                    assert params[f"{u.producer}.weight"][plan.pruned_channels[u.group]].abs().max() == 0
    after = wb.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_baselines_keep_the_same_counts_and_random_is_seeded(demo_workbenches):
    wb = demo_workbenches["digits-cnn"]
    isp = ISpaSP(schedule="dense").prepare(wb).plan(0.6)
    act = ActivationMagnitude().prepare(wb).plan(0.6)
    r1, r2, r3 = (RandomUnits(seed=s).prepare(wb) for s in (1, 1, 2))
    counts = {g: len(v) for g, v in isp.pruned_channels.items()}
    for plan in (act, r1.plan(0.6)):
        assert {g: len(v) for g, v in plan.pruned_channels.items()} == counts
    assert all(torch.equal(r1.plan(0.6).pruned_channels[g], r2.plan(0.6).pruned_channels[g]) for g in counts)
    assert any(not torch.equal(r1.plan(0.6).pruned_channels[g], r3.plan(0.6).pruned_channels[g])
               for g in isp.pruned_channels)
    more = r1.plan(0.8).pruned_channels  # nested: a larger ratio removes a superset
    assert all(set(r1.plan(0.6).pruned_channels[g].tolist()) <= set(more[g].tolist()) for g in more)
    unit = wb.units[2]
    inputs = capture_inputs(wb.model, [unit.consumer], wb.calib_x)[unit.consumer]
    kept = torch.ones(unit.size, dtype=torch.bool)
    kept[act.pruned_channels[unit.group]] = False
    assert set(torch.argsort(inputs.sum(0), descending=True)[: int(kept.sum())].tolist()) == set(
        kept.nonzero().squeeze(1).tolist())


def test_selection_beats_random_on_the_unit_objective(demo_workbenches):
    """What i-SpaSP optimises, the unit output residual, is below the median of 20 random sets of the same size."""
    wb = demo_workbenches["digits-mlp"]
    unit = wb.units[0]
    hidden = capture_inputs(wb.model, [unit.consumer], wb.calib_x)[unit.consumer]
    layer2 = layer_two(wb.model, unit)
    g = torch.Generator().manual_seed(0)
    for s in (32, 64):
        sel = ispasp_select(hidden, layer2, s, affine=True)
        ours = sel.residuals[-1]
        assert ours == pytest.approx(output_residual(hidden, layer2, sel.kept))
        random = sorted(output_residual(hidden, layer2, torch.randperm(unit.size, generator=g)[:s]) for _ in range(20))
        assert ours < random[10]


def test_resnet_run_is_fast(demo_workbenches):
    wb = demo_workbenches["digits-resnet"]
    start = time.perf_counter()
    plan = ISpaSP(iterations=20, schedule="dense").prepare(wb).plan(0.7)
    assert time.perf_counter() - start < 5.0
    assert len(plan.details["residuals"]) == 3


# ----- (vi) the synthetic experiment and the paper check ---------------------------------------------------------
def test_synthetic_residual_decays_faster_for_sparser_hidden_representations():
    frame = synthetic_experiment(quick=True)
    summary = decay_summary(frame)
    for _, df in summary.groupby("width"):
        df = df.sort_values("sparsity")
        assert np.all(np.diff(df.mean_log10_drop.to_numpy()) > 0)
        assert np.all(np.diff(df.exponent.to_numpy()) > 0)
        # the fitted polynomial degree follows the power-law tail sum, 1 - 2/p
        assert np.allclose(df.exponent, df.predicted_exponent, atol=0.6)
    start = frame[frame.pruned_width == 0]
    assert np.allclose(start.relative, 1.0) and (frame.residual >= 0).all()


def test_sequential_schedule_chooses_each_unit_on_the_pruned_network(demo_workbenches):
    """Without fine-tuning epochs the sequential schedule is the code's order: unit 1 as on the dense network,
    unit 2 on the network whose unit 1 is pruned (an independent capture and selection)."""
    from pruning_core.plan import Plan

    wb = demo_workbenches["digits-cnn"]
    ratio = 0.75
    plan = ISpaSP(schedule="sequential", block_epochs=0, final_epochs=0).prepare(wb).plan(ratio)
    dense = ISpaSP(schedule="dense").prepare(wb).plan(ratio)
    first, second = wb.units[0], wb.units[1]
    assert torch.equal(plan.pruned_channels[first.group], dense.pruned_channels[first.group])
    partial = Plan("x", ratio, "structured", pruned_channels={first.group: plan.pruned_channels[first.group]})
    with wb.applied(partial) as model:
        hidden, positions = hidden_representation(second, capture_inputs(model, [second.consumer],
                                                                          wb.calib_x)[second.consumer])
        sel = ispasp_select(hidden, layer_two(model, second), kept_count(second.size, ratio), positions=positions,
                            affine=True)
    keep = torch.zeros(second.size, dtype=torch.bool)
    keep[sel.kept] = True
    assert torch.equal(plan.pruned_channels[second.group], (~keep).nonzero().squeeze(1))


def test_the_identical_pipeline_fine_tunes_every_method_and_ratio_zero_changes_nothing(demo_workbenches):
    wb = demo_workbenches["digits-cnn"]
    pipeline = {"schedule": "sequential", "block_epochs": 1, "final_epochs": 1}
    untuned = RandomUnits(seed=0).prepare(wb).plan(0.8)
    tuned = RandomUnits(seed=0, **pipeline).prepare(wb)
    plan = tuned.plan(0.8)
    # the same random channels (a ranked method's choice does not depend on the network), now fine-tuned
    assert all(torch.equal(plan.pruned_channels[g], untuned.pruned_channels[g]) for g in untuned.pruned_channels)
    assert wb.evaluate_plan(plan).accuracy > wb.evaluate_plan(untuned).accuracy + 0.05
    assert not tuned.plan(0.0).corrections and not tuned.plan(0.0).pruned_channels
    act = ActivationMagnitude(**pipeline).prepare(wb)
    assert act.config()["schedule"] == "sequential" and act.plan(0.8).corrections


def test_the_model_claim_can_fail():
    """The accuracy verdict says no when i-SpaSP is no better than random (a wrong implementation would be
    random), and yes when it is clearly ahead."""
    import pandas as pd

    from pruning_core.checks.ispasp import accuracy_verdict

    def frame(isp: list[float]) -> pd.DataFrame:
        rows = [{"method": "random-units", "seed": s, "ratio": r, "accuracy": a + 0.01 * s}
                for s in range(3) for r, a in zip((0.6, 0.9), (0.9, 0.6), strict=True)]
        rows += [{"method": m, "seed": 0, "ratio": r, "accuracy": a} for m in ("ispasp", "activation-magnitude")
                 for r, a in zip((0.6, 0.9), isp, strict=True)]
        return pd.DataFrame(rows)

    assert accuracy_verdict(frame([0.91, 0.61])).agrees is False  # level with random's mean
    assert accuracy_verdict(frame([0.92, 0.61])).agrees is False  # half a point ahead: within the margin
    assert accuracy_verdict(frame([0.95, 0.75])).agrees is True


def test_the_synthetic_claim_fails_for_random_selection():
    """Random selection also decays faster for smaller p (the units' magnitudes follow the power law), so the
    claim compares with random: a selection that is random (its residual the baseline's) fails."""
    from pruning_core.checks.base import CheckReport
    from pruning_core.checks.ispasp import synthetic, synthetic_verdict

    frame = synthetic(quick=True)
    assert synthetic_verdict(frame, CheckReport("ispasp")).agrees is True
    fake = frame.assign(residual=frame.random_residual, relative=frame.random_relative)
    assert synthetic_verdict(fake, CheckReport("ispasp")).agrees is False


def test_the_activation_identity_self_test_fails_for_another_selection(demo_workbenches):
    from pruning_core.checks.ispasp import identity_result

    wb = demo_workbenches["digits-mlp"]
    isp, act = ISpaSP(schedule="dense").prepare(wb), ActivationMagnitude().prepare(wb)
    good = identity_result(isp, act)
    assert good.kind == "self-test" and good.agrees is True
    wrong = RandomUnits(seed=0).prepare(wb)
    wrong.units = isp.units
    assert identity_result(wrong, act).agrees is False


def test_paper_check_on_the_cnn_and_its_figures(demo_workbenches):
    from pruning_core.checks.ispasp import figures

    wb = demo_workbenches["digits-cnn"]
    report = paper_check(wb, quick=True)
    assert report.complete and set(report.frames) >= {"synthetic", "residual", "accuracy", "accuracy_untuned"}
    assert [r.kind for r in report.results] == ["claim", "claim", "self-test", "description", "description"]
    assert report.results[0].agrees is True and report.results[0].model == "synthetic"
    assert isinstance(report.results[1].agrees, bool) and report.results[2].agrees is True
    assert all(r.agrees is None for r in report.results[3:])
    acc = report.frames["accuracy"]
    assert set(acc.method) == {"ispasp", "random-units", "activation-magnitude"}
    assert acc[acc.method == "random-units"].seed.nunique() == 3 and set(acc.ratio) == {0.7, 0.9}
    assert acc.groupby(["ratio", "method"]).kept_fraction.nunique().eq(1).all()
    assert len(synthetic_residual(report.frames["synthetic"]).data) == 8  # 2 widths x 4 values of p
    fig = residual_by_iteration(report.frames["residual"], ratio=0.9)
    assert len(fig.data) == len(wb.units) and fig.layout.yaxis.type == "log"
    assert len(accuracy_by_ratio(acc, wb.dense_metrics().accuracy).data) == 3
    rows = figures(report, wb.dense_metrics().accuracy)
    assert set(rows[0]) == {"synthetic"} and set(rows[1]) == {"residual", "accuracy", "accuracy_untuned"}
    assert len(rows[0]["synthetic"].data) == 16  # i-SpaSP and random, 2 widths x 4 values of p
    plan = ISpaSP(schedule="dense").prepare(wb).plan(0.8)
    assert len(residual_frame(plan)) == len(wb.units) * 21


def test_paper_check_stops_when_asked(demo_workbenches):
    report = paper_check(demo_workbenches["digits-mlp"], quick=True, should_stop=lambda: True)
    assert not report.complete and [r.model for r in report.results] == ["synthetic"]  # nothing on the model
