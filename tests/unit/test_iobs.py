"""I-OBS (Wu et al., NeurIPS 2024) and its OBS / SparseGPT projection: the layer solver against a slow per-row,
per-column reference of the OBS sweep and against numpy's least squares, the N:M pattern, Algorithm 1 on the
synthetic problem, the projection against magnitude on the demo models, and clear errors for bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from pruning_core import Workbench
from pruning_core.algorithms.obs import (
    dampen,
    inverse_hessian_factor,
    iobs_step_obs,
    iobs_step_topk,
    kiht_step,
    layer_hessian,
    newton_point,
    refit,
    sparsegpt_prune,
    topk,
)
from pruning_core.checks.iobs import accuracy_verdicts, synthetic_verdict
from pruning_core.experiments.iobs import iobs_rounds, synthetic_recovery
from pruning_core.methods.magnitude import SPECS as MAGNITUDE
from pruning_core.methods.obs import SPECS, OBSPruning, layer_inputs_matrix, project
from pruning_core.plan import PlanError

SPEC = {s.key: s for s in SPECS + MAGNITUDE}


def make_method(key):
    return SPEC[key].build()


def small_layer(rows=6, d=12, n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(d, n, generator=g, dtype=torch.float64)
    x[3] *= 0.05  # uneven input scales, so the OBS choice differs from magnitude
    w = torch.randn(rows, d, generator=g, dtype=torch.float64)
    return w, x


def reference_sweep(w, h, ratio=0.5, scope="layer", n_of_m=None, blocksize=4):
    """SparseGPT's OBS sweep written the slow way: numpy, one row at a time, one column at a time, each row with its
    own explicit inverse Hessian downdated as columns are fixed (OBC's update), no Cholesky factor. Masks are chosen
    per block from the current weights and the sequential diagonal [H^-1 after fixing columns < j]_jj."""
    w = w.numpy().copy()
    rows, d = w.shape
    hinv0 = np.linalg.inv(h.numpy())
    seq_diag, hi = np.zeros(d), hinv0.copy()
    for j in range(d):
        seq_diag[j] = hi[j, j]
        hi = hi - np.outer(hi[:, j], hi[j, :]) / hi[j, j]
    hinvs = [hinv0.copy() for _ in range(rows)]
    keep = np.ones((rows, d), dtype=bool)
    for i1 in range(0, d, blocksize):
        i2 = min(i1 + blocksize, d)
        if n_of_m is None:
            sal = w[:, i1:i2] ** 2 / seq_diag[i1:i2]
            if scope == "layer":
                k = round(ratio * rows * i2) - round(ratio * rows * i1)
                flat = np.argsort(sal.reshape(-1), kind="stable")[:k]
                block = np.ones(sal.size, dtype=bool)
                block[flat] = False
                keep[:, i1:i2] = block.reshape(sal.shape)
            else:
                k = round(ratio * i2) - round(ratio * i1)
                for r in range(rows):
                    keep[r, i1 + np.argsort(sal[r], kind="stable")[:k]] = False
        for r in range(rows):
            for j in range(i1, i2):
                if n_of_m is not None and j % n_of_m[1] == 0:
                    n, m = n_of_m
                    sal = w[r, j:j + m] ** 2 / seq_diag[j:j + m]
                    keep[r, j + np.argsort(sal, kind="stable")[:m - n]] = False
                hi = hinvs[r]
                if not keep[r, j]:
                    w[r] -= (w[r, j] / hi[j, j]) * hi[:, j]
                    w[r, j] = 0.0
                hinvs[r] = hi - np.outer(hi[:, j], hi[j, :]) / hi[j, j]
    return w, keep


@pytest.mark.parametrize("scope, n_of_m, ratio", [("layer", None, 0.5), ("row", None, 0.7), ("layer", None, 0.9),
                                                   ("layer", (2, 4), 0.5), ("layer", (1, 4), 0.75)])
def test_the_sweep_equals_a_slow_per_row_per_column_reference(scope, n_of_m, ratio):
    w, x = small_layer()
    h = dampen(layer_hessian(x))
    ours, keep = sparsegpt_prune(w, inverse_hessian_factor(h), ratio, scope, n_of_m, blocksize=4)
    ref, ref_keep = reference_sweep(w, h, ratio, scope, n_of_m, blocksize=4)
    assert np.array_equal(keep.numpy(), ref_keep)
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-9, atol=1e-10)
    assert bool((ours[~keep] == 0).all())
    if n_of_m is None:
        removed = int((~keep).sum()) if scope == "layer" else (~keep).sum(1)
        expected = round(ratio * w.numel()) if scope == "layer" else round(ratio * w.shape[1])
        assert np.all(np.asarray(removed) == expected)


def test_the_sweep_beats_plain_masking_and_the_block_size_only_changes_the_mask_choice():
    w, x = small_layer(rows=8, d=16, n=64, seed=1)
    h = layer_hessian(x)
    u = inverse_hessian_factor(dampen(h))
    pruned, keep = sparsegpt_prune(w, u, 0.6, blocksize=16)
    err = lambda v: float(((w - v) @ h * (w - v)).sum())  # noqa: E731
    assert err(pruned) < err(w * keep)
    fixed, same = sparsegpt_prune(w, u, mask=keep, blocksize=4)
    assert torch.equal(same, keep)
    torch.testing.assert_close(fixed, pruned, rtol=1e-9, atol=1e-10)


def test_the_refit_equals_brute_force_least_squares_on_the_kept_support():
    w, x = small_layer(rows=5, d=10, n=30)
    g = torch.Generator().manual_seed(3)
    mask = torch.rand(5, 10, generator=g) < 0.5
    mask[0] = False  # an empty support gives zeros
    mask[1] = True  # a full support gives the weights back
    ours = refit(w, layer_hessian(x), mask).numpy()
    xn, wn = x.numpy(), w.numpy()
    for r in range(5):
        s = mask[r].numpy()
        expect = np.zeros(10)
        if s.any():
            expect[s] = np.linalg.lstsq(xn[s].T, xn.T @ wn[r], rcond=None)[0]
        np.testing.assert_allclose(ours[r], expect, rtol=1e-9, atol=1e-10)
    # dampened: the ridge problem ||X^T (w - w')||^2 + lambda ||w - w'||^2, as augmented least squares
    h = dampen(layer_hessian(x), 0.1)
    lam = float(h[0, 0] - layer_hessian(x)[0, 0])
    ridge = refit(w, h, mask).numpy()
    s = mask[2].numpy()
    a = np.vstack([xn[s].T, np.sqrt(lam) * np.eye(int(s.sum()))])
    b = np.concatenate([xn.T @ wn[2], np.sqrt(lam) * wn[2, s]])
    np.testing.assert_allclose(ridge[2, s], np.linalg.lstsq(a, b, rcond=None)[0], rtol=1e-9, atol=1e-10)


def test_the_conv_unfolding_reproduces_the_convolution():
    conv = nn.Conv2d(3, 5, 3, stride=2, padding=1, bias=False).double()
    x = torch.randn(4, 3, 7, 7, dtype=torch.float64)
    cols = layer_inputs_matrix(conv, x)  # (27, 4 * positions)
    out = conv(x)  # (4, 5, 4, 4)
    expect = out.permute(1, 0, 2, 3).reshape(5, -1)
    torch.testing.assert_close(conv.weight.reshape(5, -1) @ cols, expect)


def test_option_two_is_the_h_norm_projection_and_option_one_is_topk_of_the_newton_point():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(3, 20, 12, generator=g, dtype=torch.float64)
    h = a.transpose(1, 2) @ a
    hinv = torch.linalg.inv(h[0]).expand(1, 12, 12).clone()
    theta, grad = torch.randn(1, 12, generator=g, dtype=torch.float64), torch.randn(1, 12, generator=g,
                                                                                  dtype=torch.float64)
    plus = newton_point(theta, grad, hinv)
    torch.testing.assert_close(plus, theta - grad @ torch.linalg.inv(h[0]).T)
    assert torch.equal(iobs_step_topk(theta, grad, hinv, 5), topk(plus, 5))
    out = iobs_step_obs(theta, grad, hinv, 5)
    support = out != 0
    assert int(support.sum()) == 5
    torch.testing.assert_close(out, refit(plus, h[0], support), rtol=1e-9, atol=1e-10)
    assert torch.equal(kiht_step(theta, grad, 4, 0.1), topk(theta - 0.1 * grad, 4))


def test_topk_iobs_reaches_a_lower_distance_than_kiht_in_the_same_steps():
    frame = synthetic_recovery(runs=3, steps=60)
    curves = {m: df.set_index("step").distance for m, df in frame.groupby("method")}
    steps = range(1, 61)
    assert all(curves["topk-iobs"][t] < curves["kiht"][t] for t in steps)
    assert curves["topk-iobs"][1] < 1e-10 * curves["topk-iobs"][0]  # noiseless: the Newton point is theta*
    assert curves["kiht"][60] < curves["kiht"][1]  # k-IHT does make progress
    assert synthetic_verdict(frame, 60).agrees is True
    swapped = frame.replace({"method": {"topk-iobs": "kiht", "kiht": "topk-iobs"}})
    assert synthetic_verdict(swapped, 60).agrees is False  # the check can say no


def test_the_model_claim_says_yes_no_or_undecided_at_chance():
    def frame(obs, mag):
        return pd.DataFrame([{"method": m, "ratio": r, "accuracy": a} for r in (0.9, 0.95)
                             for m, a in (("obs-global", obs), ("magnitude-global", mag))])

    assert [r.agrees for r in accuracy_verdicts(frame(0.8, 0.6), 0.1)] == [True, True]
    assert [r.agrees for r in accuracy_verdicts(frame(0.6, 0.8), 0.1)] == [False, False]
    assert [r.agrees for r in accuracy_verdicts(frame(0.11, 0.1), 0.1)] == [None, None]


def test_nm_plans_keep_exactly_n_of_every_m(demo_workbenches):
    wb = demo_workbenches["digits-cnn"]
    method = make_method("obs-nm").prepare(wb)
    for ratio, n in ((0.5, 2), (0.75, 1)):
        plan = method.plan(ratio)
        for name, mask in plan.masks.items():
            flat = mask.reshape(mask.shape[0], -1)
            if flat.shape[1] % 4:
                assert bool(flat.all()) and name in plan.details["dense_tensors"]
                continue
            assert bool((flat.reshape(flat.shape[0], -1, 4).sum(-1) == n).all()), name
            assert bool((plan.corrections[name][~mask] == 0).all())
        assert plan.details["pattern"] == f"{n}:4"


@pytest.mark.parametrize("model", ["digits-mlp", "digits-cnn"])
def test_obs_beats_magnitude_at_90_and_95_percent_without_fine_tuning(demo_workbenches, model):
    wb = demo_workbenches[model]
    obs, mag = make_method("obs-global").prepare(wb), make_method("magnitude-global").prepare(wb)
    for ratio in (0.9, 0.95):
        plan_obs, plan_mag = obs.plan(ratio), mag.plan(ratio)
        for name, mask in plan_mag.masks.items():  # the same per-layer sparsity
            assert int(plan_obs.masks[name].sum()) == int(mask.sum()), name
        assert wb.evaluate_plan(plan_obs).accuracy > wb.evaluate_plan(plan_mag).accuracy + 0.01, ratio
    if model == "digits-mlp":  # uniform per-layer sparsity, dense inputs: the registered one-shot obs
        uniform, layer = make_method("obs").prepare(wb), make_method("magnitude-layer").prepare(wb)
        for ratio in (0.9, 0.95):
            assert wb.evaluate_plan(uniform.plan(ratio)).accuracy > wb.evaluate_plan(layer.plan(ratio)).accuracy


def test_a_layer_that_global_allocation_empties_is_zeroed_not_an_error(demo_workbenches):
    method = make_method("obs").prepare(demo_workbenches["digits-mlp"])
    ratios = {name: 0.5 for name in method.problems} | {"fc2.weight": 1.0}
    masks, corrections, details = project(method.problems, ratios)
    assert not bool(masks["fc2.weight"].any()) and bool((corrections["fc2.weight"] == 0).all())
    assert abs(float(masks["fc1.weight"].float().mean()) - 0.5) < 1e-6 and details["relative_error"]["fc2.weight"] == 1


def test_the_rounds_start_from_one_shot_sparsegpt_and_mark_the_best(demo_workbenches):
    wb = demo_workbenches["digits-mlp"]
    frame = iobs_rounds(wb, 0.8, rounds=3, steps=3)
    assert list(frame["round"]) == [1, 2, 3] and int(frame.best.sum()) == 1
    assert frame.loc[frame.best, "held_out_accuracy"].item() == frame.held_out_accuracy.max()
    assert np.allclose(frame.sparsity, 0.8, atol=1e-3)
    one_shot = OBSPruning(inputs="pruned").prepare(wb)
    first = wb.evaluate_plan(one_shot.plan(0.8)).accuracy
    assert frame.held_out_accuracy.iloc[0] != pytest.approx(wb.dense_metrics().accuracy)
    assert abs(frame.held_out_accuracy.iloc[0] - first) < 0.15  # another calibration batch, the same procedure


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")
def test_bad_inputs_give_clear_errors(demo_workbenches, digits):
    wb = demo_workbenches["digits-mlp"]
    method = make_method("obs").prepare(wb)
    with pytest.raises(PlanError, match="remove every weight"):
        method.plan(1.0)
    with pytest.raises(ValueError, match="pattern"):
        OBSPruning(pattern="blocks")
    with pytest.raises(ValueError, match="damp"):
        dampen(torch.eye(3), 0.0)
    with pytest.raises(ValueError, match="NaN"):
        layer_hessian(torch.tensor([[1.0, float("nan")]]))
    with pytest.raises(ValueError, match="width divisible"):
        sparsegpt_prune(torch.ones(2, 6), torch.eye(6), n_of_m=(2, 4))
    with pytest.raises(ValueError, match="columns"):
        sparsegpt_prune(torch.ones(2, 6), torch.eye(5))
    with pytest.raises(ValueError, match="k must be"):
        topk(torch.ones(1, 4), 0)
    broken = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with torch.no_grad():
        broken[1].weight[0, 0] = float("nan")
    with pytest.raises(PlanError, match="NaN"):
        make_method("obs").prepare(Workbench(broken, digits, device="cpu"))

    class WithEmbedding(nn.Module):
        def __init__(self):
            super().__init__()
            self.table = nn.Embedding(17, 4)
            self.fc = nn.Linear(256, 10)

        def forward(self, x):
            return self.fc(self.table((x * 16).long().clamp(0, 16)).flatten(1))

    reason = SPEC["obs"].unavailable(Workbench(WithEmbedding(), digits, device="cpu"))
    assert reason is not None and "Embedding" in reason
    empty = nn.Sequential(nn.Flatten(), nn.Linear(64, 0), nn.Linear(0, 10))
    assert "empty layer" in SPEC["obs"].unavailable(Workbench(empty, digits, device="cpu"))
    with pytest.raises(PlanError, match="empty layer"):
        make_method("obs").prepare(Workbench(empty, digits, device="cpu"))
