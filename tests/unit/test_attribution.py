"""Channel criteria from activations, gradients and captum attributions, each against an independent computation
written here (manual autograd, test-owned hooks, brute-force Riemann sums, scipy)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr

from pruning_core.charts.attribution import input_attribution_figure, rank_correlation_heatmap
from pruning_core.importance.activation import hooks_restored
from pruning_core.importance.attribution import input_attribution, layer_attribution_scores, layer_attributions
from pruning_core.importance.compare import rank_correlation
from pruning_core.importance.criteria import CRITERIA, channel_scores
from pruning_core.methods.criteria import SPECS

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NEW = ("taylor", "conductance", "grad-x-act", "activation", "layer-ig", "activation-mean", "apoz")
HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks")


def _outputs_and_grads(wb, layers, x, loss):
    """Test-owned hooks: each layer's output a and d(loss)/da on the batch, one forward pass per layer with that
    layer's output replaced by a leaf tensor of the same value."""
    modules = dict(wb.model.named_modules())
    out = {}
    for n in layers:
        leaf = {}

        def hook(mod, inputs, o, leaf=leaf):
            leaf["a"] = o.detach().clone().requires_grad_(True)
            return leaf["a"]

        handle = modules[n].register_forward_hook(hook)
        try:
            logits = wb.model(x)
        finally:
            handle.remove()
        g, = torch.autograd.grad(loss(logits), leaf["a"])
        out[n] = (leaf["a"].detach(), g)
    return out


def _ce_sum(y):
    return lambda logits: F.cross_entropy(logits, y, reduction="sum")


def _true_logit(y):
    return lambda logits: logits.gather(1, y[:, None]).sum()


@pytest.fixture(scope="module")
def resnet_scores(demo_workbenches):
    wb = demo_workbenches["digits-resnet"]
    return {k: channel_scores(wb, k) for k in NEW}


def test_every_new_criterion_scores_every_group(demo_workbenches, resnet_scores):
    wb = demo_workbenches["digits-resnet"]
    for key in NEW:
        assert key in CRITERIA
        scores = resnet_scores[key]
        assert list(scores) == [g.name for g in wb.groups.groups], key
        for g in wb.groups.groups:
            s = scores[g.name]
            assert s.shape == (g.size,) and s.dtype == torch.float64 and s.device.type == "cpu", key
            assert torch.isfinite(s).all() and (s >= 0).all() and s.max() > 0, key


def test_scoring_leaves_the_model_untouched_and_hook_free(demo_workbenches, resnet_scores):
    wb = demo_workbenches["digits-resnet"]
    before = {k: v.clone() for k, v in wb.model.state_dict().items()}
    flags = {k: p.requires_grad for k, p in wb.model.named_parameters()}
    x_before = wb.calib_x.clone()
    for key in NEW:
        if key not in ("conductance", "layer-ig"):  # the fixture ran those two on this model already
            channel_scores(wb, key)
    input_attribution(wb, 3)
    for name, m in wb.model.named_modules():
        assert not m.training, name
        for d in HOOKS:
            assert not getattr(m, d), (name, d)
    after = wb.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert {k: p.requires_grad for k, p in wb.model.named_parameters()} == flags and not any(flags.values())
    assert torch.equal(wb.calib_x, x_before) and not wb.calib_x.requires_grad


@pytest.mark.parametrize("key", ["taylor", "grad-x-act", "conductance", "apoz"])
def test_hooks_are_removed_when_scoring_fails_midway(demo_workbenches, key):
    wb = demo_workbenches["digits-cnn"]
    labels = wb.calib_y
    wb.calib_y = labels.clone()
    wb.calib_y[-1] = 10_000  # no such class: the target lookup fails after the hooks are in place
    if key == "apoz":
        wb.calib_x, x = wb.calib_x[:, :, :3], wb.calib_x  # the wrong shape fails inside the forward pass
    try:
        with pytest.raises((IndexError, RuntimeError, ValueError, AssertionError)):
            channel_scores(wb, key)
    finally:
        wb.calib_y = labels
        if key == "apoz":
            wb.calib_x = x
    assert all(not getattr(m, d) for m in wb.model.modules() for d in HOOKS)
    assert not any(m.training for m in wb.model.modules())


def test_hooks_restored_removes_hooks_and_modes_however_the_block_ends(demo_workbenches):
    model = demo_workbenches["digits-mlp"].model
    with pytest.raises(RuntimeError), hooks_restored(model):
        model.fc1.register_forward_hook(lambda *a: None)
        model.fc2.register_forward_pre_hook(lambda *a: None)
        model.train()
        raise RuntimeError("midway")
    assert not model.fc1._forward_hooks and not model.fc2._forward_pre_hooks and not model.training


def test_taylor_is_molchanov_eq8_by_manual_autograd(demo_workbenches):
    wb = demo_workbenches["digits-cnn"]
    m, x, y = wb.model, wb.calib_x, wb.calib_y
    # the CNN's forward written out, with conv2's output as the leaf
    with torch.enable_grad():
        a = m.conv2(torch.relu(m.bn1(m.conv1(x)))).detach().requires_grad_(True)
        logits = m.fc2(torch.relu(m.fc1(torch.flatten(m.pool(torch.relu(m.bn2(a))), 1))))
        g, = torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), a)
    expected = (a * g).double().mean((2, 3)).abs().mean(0)
    torch.testing.assert_close(channel_scores(wb, "taylor")["conv2"], expected.detach(), rtol=1e-4, atol=1e-10)


def test_taylor_and_grad_x_act_of_a_residual_group_sum_its_producers(demo_workbenches, resnet_scores):
    wb = demo_workbenches["digits-resnet"]
    group = wb.groups.by_name["layer2.shortcut.0"]
    assert len(group.producers) == 3  # the shortcut conv and both blocks' last convs write into the sum
    x, y = wb.calib_x, wb.calib_y
    with torch.enable_grad():
        taylor = _outputs_and_grads(wb, group.producers, x, _ce_sum(y))
        gxa = _outputs_and_grads(wb, group.producers, x, _true_logit(y))
    expected_taylor = sum((a * g).double().mean((2, 3)).abs().mean(0) for a, g in taylor.values())
    expected_gxa = sum((a * g).double().sum((2, 3)).abs().mean(0) for a, g in gxa.values())
    torch.testing.assert_close(resnet_scores["taylor"][group.name], expected_taylor, rtol=1e-4, atol=1e-10)
    torch.testing.assert_close(resnet_scores["grad-x-act"][group.name], expected_gxa, rtol=1e-4, atol=1e-8)


def test_grad_x_act_of_a_linear_layer_by_manual_hooks(demo_workbenches):
    wb = demo_workbenches["digits-mlp"]
    with torch.enable_grad():
        (a, g), = _outputs_and_grads(wb, ["fc2"], wb.calib_x, _true_logit(wb.calib_y)).values()
    torch.testing.assert_close(channel_scores(wb, "grad-x-act")["fc2"], (a * g).double().abs().mean(0),
                               rtol=1e-4, atol=1e-8)


def test_conductance_is_the_brute_force_riemann_sum_and_complete(demo_workbenches):
    wb = demo_workbenches["digits-cnn"]
    x, y = wb.calib_x, wb.calib_y
    steps = CRITERIA["conductance"].options["n_steps"]
    alphas = torch.linspace(0, 1, steps + 1)
    z, grads = [], []
    with torch.enable_grad():
        for alpha in alphas:  # Dhamdhere et al. Eq. 2: sum_k dF/dy(x_k) * (y(x_{k+1}) - y(x_k))
            (a, g), = _outputs_and_grads(wb, ["conv1"], alpha * x, _true_logit(y)).values()
            z.append(a.double())
            grads.append(g.double())
    cond = sum(grads[k] * (z[k + 1] - z[k]) for k in range(steps))
    torch.testing.assert_close(channel_scores(wb, "conductance")["conv1"], cond.sum((2, 3)).abs().mean(0),
                               rtol=1e-3, atol=1e-6)
    # completeness: every path crosses conv1, so the neurons' conductances add up to F(x) - F(0)
    with torch.no_grad():
        gap = (wb.model(x) - wb.model(torch.zeros_like(x))).gather(1, y[:, None])[:, 0].double()
    err = (cond.sum((1, 2, 3)) - gap).abs()
    assert float(err.mean()) < 0.05 * float(gap.abs().mean())  # a 16-step left Riemann sum: about 2.5 %
    with hooks_restored(wb.model), torch.enable_grad():
        fine, = layer_attributions(wb, "conductance", ["conv1"], x[:16], y[:16], n_steps=256)
    torch.testing.assert_close(fine.detach().double().sum((1, 2, 3)), gap[:16], rtol=0.01, atol=0.02)


@pytest.mark.parametrize("model, layer", [("digits-mlp", "fc1"), ("digits-cnn", "conv1")])
def test_layer_integrated_gradients_are_complete(demo_workbenches, model, layer):
    wb = demo_workbenches[model]
    x, y = wb.calib_x[:32], wb.calib_y[:32]
    with hooks_restored(wb.model), torch.enable_grad():
        attr, = layer_attributions(wb, "layer-ig", [layer], x, y, n_steps=64)
    with torch.no_grad():
        gap = (wb.model(x) - wb.model(torch.zeros_like(x))).gather(1, y[:, None])[:, 0].double()
    torch.testing.assert_close(attr.double().reshape(len(x), -1).sum(1), gap, rtol=0.01, atol=0.02)
    scores = layer_attribution_scores(wb, "layer-ig", layers=[layer])[layer]
    assert scores.shape == (attr.shape[1],) and torch.isfinite(scores).all()


def test_a_residual_group_sums_its_producers_conductance(demo_workbenches, resnet_scores):
    wb = demo_workbenches["digits-resnet"]
    group = wb.groups.by_name["conv1"]
    assert group.producers == ["conv1", "layer1.conv2"]
    separately = sum(layer_attribution_scores(wb, "conductance", layers=[p])[p] for p in group.producers)
    torch.testing.assert_close(resnet_scores["conductance"]["conv1"], separately, rtol=1e-6, atol=1e-9)


def _consumer_inputs(wb, layers):
    modules = dict(wb.model.named_modules())
    seen = {}
    handles = [modules[n].register_forward_pre_hook(lambda mod, inp, n=n: seen.__setitem__(n, inp[0].clone()))
               for n in layers]
    try:
        with torch.no_grad():
            wb.model(wb.calib_x)
    finally:
        for h in handles:
            h.remove()
    return seen


def test_activation_mean_and_apoz_through_a_flatten(demo_workbenches):
    wb = demo_workbenches["digits-cnn"]
    fc1_in = _consumer_inputs(wb, ["fc1"])["fc1"].double().reshape(len(wb.calib_x), 32, 16)  # 32 channels x 4x4
    torch.testing.assert_close(channel_scores(wb, "activation-mean")["conv2"], fc1_in.abs().mean((0, 2)))
    zeros = (fc1_in == 0).sum((0, 2)).double()
    torch.testing.assert_close(channel_scores(wb, "apoz")["conv2"], 1 - zeros / fc1_in[:, 0].numel())


def test_apoz_of_a_residual_group_counts_zeros_in_every_consumer(demo_workbenches, resnet_scores):
    wb = demo_workbenches["digits-resnet"]
    group = wb.groups.by_name["conv1"]
    inputs = _consumer_inputs(wb, group.consumers)
    assert len(inputs) == 3
    expected = torch.zeros(group.size, dtype=torch.float64)
    for t in inputs.values():
        per_channel = t.transpose(0, 1).reshape(group.size, -1)
        expected += 1 - (per_channel == 0).double().mean(1)  # 1 - APoZ, Hu et al. Eq. 1
    torch.testing.assert_close(resnet_scores["apoz"]["conv1"], expected)
    assert float(resnet_scores["apoz"]["conv1"].min()) < 3  # post-ReLU inputs do hold zeros


def test_captum_activation_is_the_mean_absolute_producer_output(demo_workbenches):
    wb = demo_workbenches["digits-cnn"]
    seen = {}
    h = wb.model.conv2.register_forward_hook(lambda m, i, o: seen.__setitem__("a", o.clone()))
    try:
        with torch.no_grad():
            wb.model(wb.calib_x)
    finally:
        h.remove()
    torch.testing.assert_close(channel_scores(wb, "activation")["conv2"], seen["a"].double().abs().mean((0, 2, 3)))


def test_rank_correlation_matches_scipy_on_a_hand_built_case():
    g1a, g1b = torch.tensor([1., 2., 3., 4., 5.]), torch.tensor([2., 1., 4., 3., 5.])
    g2a, g2b = torch.tensor([3., 1., 2.]), torch.tensor([1., 2., 3.])
    scores = {"a": {"g1": g1a, "g2": g2a}, "b": {"g1": g1b, "g2": g2b}, "c": {"g1": -g1a},
              "flat": {"g1": torch.ones(5), "g2": torch.ones(3)}}
    overall, per_group = rank_correlation(scores)
    rho1, rho2 = spearmanr(g1a, g1b).statistic, spearmanr(g2a, g2b).statistic
    assert overall.loc["a", "b"] == pytest.approx((5 * rho1 + 3 * rho2) / 8)
    assert overall.loc["a", "c"] == pytest.approx(-1.0)  # only g1, where c is a's reverse
    assert overall.loc["c", "b"] == pytest.approx(spearmanr(-g1a, g1b).statistic)
    for k in ("a", "b", "c"):
        assert overall.loc[k, k] == pytest.approx(1.0)
    assert np.isnan(overall.loc["flat", "a"]) and np.isnan(per_group["g2"].loc["c", "a"])
    assert per_group["g2"].loc["a", "b"] == pytest.approx(rho2)
    fig = rank_correlation_heatmap(overall, "agreement")
    heat = fig.data[0]
    assert (heat.zmin, heat.zmax, heat.zmid) == (-1, 1, 0) and heat.text[0][1] == f"{overall.loc['a', 'b']:.2f}"


def test_rank_correlation_of_real_criteria(resnet_scores):
    overall, per_group = rank_correlation(resnet_scores)
    assert np.allclose(np.diag(overall.to_numpy()), 1.0)
    assert np.allclose(overall.to_numpy(), overall.to_numpy().T)
    assert -1 <= overall.to_numpy().min() and overall.to_numpy().max() <= 1 + 1e-12
    assert set(per_group) == set(resnet_scores["taylor"])


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.key)
def test_structured_methods_remove_the_lowest_scored_channels(demo_workbenches, spec):
    wb = demo_workbenches["digits-cnn"]
    method = spec.build().prepare(wb)
    assert method.key == spec.key and "calibration activations" in spec.needs
    assert ("gradients" in spec.needs) == (spec.defaults["criterion"] not in ("activation", "apoz"))
    scores = channel_scores(wb, spec.defaults["criterion"])
    plan = method.plan(0.5)
    for g in wb.groups.groups:
        lowest = np.argsort(scores[g.name].numpy(), kind="stable")[:round(0.5 * g.size)]
        assert set(plan.pruned_channels[g.name].tolist()) == set(lowest.tolist()), (spec.key, g.name)
    assert all(len(v) == 0 for v in method.plan(0.0).pruned_channels.values())


def test_input_attribution_is_complete_integrated_gradients(demo_workbenches):
    wb = demo_workbenches["digits-cnn"]
    attr, predicted, probability, label = input_attribution(wb, 7, n_steps=64)
    x = wb.eval_x[7:8]
    with torch.no_grad():
        logits = wb.model(x)[0]
        gap = float(logits[predicted] - wb.model(torch.zeros_like(x))[0, predicted])
    assert attr.shape == (1, 8, 8) and predicted == int(logits.argmax()) and label == int(wb.eval_y[7])
    assert probability == pytest.approx(float(torch.softmax(logits, 0)[predicted]))
    assert float(attr.sum()) == pytest.approx(gap, rel=0.01, abs=0.02)
    saliency, *_ = input_attribution(wb, 7, split="calib", method="saliency")
    assert saliency.shape == (1, 8, 8) and (saliency >= 0).all()
    with pytest.raises(ValueError, match="unknown input attribution"):
        input_attribution(wb, 0, method="lime")
    with pytest.raises(IndexError):
        input_attribution(wb, len(wb.eval_x))
    fig = input_attribution_figure(x[0].numpy(), attr.numpy(), predicted, probability, label)
    assert [t.type for t in fig.data] == ["heatmap", "heatmap"]
    assert fig.data[1].zmid == 0 and fig.data[1].zmin == -fig.data[1].zmax == -float(attr.abs().max())
    bars = input_attribution_figure(np.arange(4.0), np.array([0.5, -1.0, 0.0, 2.0]), 1, 0.9, 2)
    assert bars.data[0].type == "bar" and "wrong" in bars.layout.title.text


@pytest.mark.parametrize("method", ["layer-ig", "grad-x-act", "conductance"])
def test_a_layer_followed_by_an_in_place_relu(digits, method):
    """An ``nn.ReLU(inplace=True)`` right after the attributed layer (VGG's classifier, torchvision's ResNets)
    must neither break captum (layer IG's leaf tensor) nor overwrite the kept output with its ReLU; the flags are
    back on afterwards. Reference: the same network built with out-of-place ReLUs."""
    from pruning_core import Workbench

    torch.manual_seed(0)
    inplace = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(inplace=True),
                                  torch.nn.Linear(32, 10))
    plain = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    plain.load_state_dict(inplace.state_dict())
    got, expected = (layer_attribution_scores(Workbench(m, digits, device="cpu"), method, layers=["1"])["1"]
                     for m in (inplace, plain))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-9)
    assert inplace[2].inplace is True
