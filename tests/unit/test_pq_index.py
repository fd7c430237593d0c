"""The PQ Index (Diao et al., ICLR 2023, Def. 1) against its axioms and independent implementations, its scopes
on the demo models, and PQI under a plan and along one-shot magnitude pruning."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pruning_core import make_method
from pruning_core.algorithms.pq_index import pq_index, pqi_all_scopes, pqi_by_scope, pqi_table
from pruning_core.experiments.pqi_curve import plan_masks, pqi_magnitude_curve

PQ = [(0.5, 1.0), (1.0, 2.0), (0.2, 1.0), (1.0, 1.4), (0.7, 3.0)]


def numpy_pqi(w, p, q):
    """Independent reference: the norm-ratio form of Def. 1 with numpy norms, on the given entries."""
    w = np.abs(np.asarray(w, dtype=np.float64).reshape(-1))
    d = w.size
    if d == 0 or not w.any():
        return 0.0
    lp = np.sum(w ** p) ** (1 / p)
    lq = np.sum(w ** q) ** (1 / q)
    return max(0.0, 1.0 - d ** (1 / q - 1 / p) * lp / lq)


def torch_norm_pqi(w, p, q):
    """The formula as the paper writes it, with torch.linalg.vector_norm (valid for p >= 1 only)."""
    w = w.double().reshape(-1)
    d = w.numel()
    return float(1 - d ** (1 / q - 1 / p) * torch.linalg.vector_norm(w, p) / torch.linalg.vector_norm(w, q))


@pytest.fixture(scope="module")
def rng():
    return np.random.default_rng(0)


# ----- the index itself ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("p,q", PQ)
def test_constant_magnitudes_give_zero(p, q):
    assert pq_index(torch.full((50,), 0.3), p, q) == pytest.approx(0.0, abs=1e-12)
    signs = torch.tensor([1.0, -1.0] * 25) * 2.5  # only magnitudes count
    assert pq_index(signs, p, q) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("p,q", PQ)
def test_scale_invariance_including_extreme_scales(p, q, rng):
    w = torch.from_numpy(rng.standard_normal(300))
    ref = pq_index(w, p, q)
    assert ref > 0.05
    for c in (1e-200, 1e-30, 3.0, -7.0, 1e30, 1e200):
        assert pq_index(w * c, p, q) == pytest.approx(ref, abs=1e-12), c


@pytest.mark.parametrize("p,q", PQ)
def test_moving_mass_to_the_largest_entry_increases_the_index(p, q, rng):
    """Robin Hood in reverse (Hurley & Rickard D1): taking from a small entry and giving to the largest makes
    the vector sparser, so PQI must grow; Robin Hood itself (rich to poor) must lower it."""
    w = np.abs(rng.standard_normal(40)) + 0.1
    big, small = int(np.argmax(w)), int(np.argmin(w))
    before = pq_index(torch.from_numpy(w), p, q)
    richer = w.copy()
    richer[big] += 0.05
    richer[small] -= 0.05
    assert pq_index(torch.from_numpy(richer), p, q) > before
    fairer = w.copy()
    fairer[big] -= 0.05
    fairer[small] += 0.05
    assert pq_index(torch.from_numpy(fairer), p, q) < before
    # concentrating everything step by step increases it monotonically
    values = [pq_index(torch.tensor([1.0] * (40 - k) + [0.0] * k), p, q) for k in range(0, 40, 5)]
    assert all(b > a for a, b in zip(values, values[1:], strict=False))


@pytest.mark.parametrize("p,q", PQ)
@pytest.mark.parametrize("d", [1, 2, 17, 1000])
def test_range_bound_is_attained_by_a_one_hot_vector(p, q, d, rng):
    bound = 1 - d ** (1 / q - 1 / p)
    one_hot = torch.zeros(d)
    one_hot[d // 2] = 4.0
    assert pq_index(one_hot, p, q) == pytest.approx(bound, abs=1e-12)
    for _ in range(5):
        w = torch.from_numpy(rng.standard_normal(d) * rng.exponential(1.0, d))
        assert -1e-15 <= pq_index(w, p, q) <= bound + 1e-12


@pytest.mark.parametrize("p,q", PQ)
def test_equals_the_norm_ratio_formula_and_an_independent_numpy_implementation(p, q, rng):
    for _ in range(5):
        w = torch.from_numpy(rng.standard_normal(int(rng.integers(2, 500))) ** 3)
        ours = pq_index(w, p, q)
        assert ours == pytest.approx(numpy_pqi(w.numpy(), p, q), abs=1e-12)
        if p >= 1:  # vector_norm's p < 1 is not a norm but is still sum(|w|^p)^(1/p)
            assert ours == pytest.approx(torch_norm_pqi(w, p, q), abs=1e-10)


def test_known_values_by_hand():
    # w = (1, 0, 0, 0), p=0.5, q=1: 1 - 4^{1-2} * 1/1 = 0.75
    assert pq_index(torch.tensor([1.0, 0, 0, 0])) == pytest.approx(0.75)
    # w = (1, 4): mean sqrt = 1.5 -> squared 2.25; mean = 2.5; 1 - 2.25/2.5 = 0.1
    assert pq_index(torch.tensor([1.0, 4.0])) == pytest.approx(0.1)


def test_stable_for_large_d_and_tiny_magnitudes(rng):
    w = torch.from_numpy(rng.standard_normal(2_000_000))
    value = pq_index(w)
    # |N(0,1)|: E|w|^0.5 = 2^{1/4} Gamma(3/4)/sqrt(pi), E|w| = sqrt(2/pi)
    expected = 1 - (2 ** 0.25 * math.gamma(0.75) / math.sqrt(math.pi)) ** 2 / math.sqrt(2 / math.pi)
    assert value == pytest.approx(expected, abs=2e-3)
    tiny = torch.from_numpy(rng.standard_normal(1000) * 1e-300)
    assert pq_index(tiny, 1.0, 2.0) == pytest.approx(numpy_pqi(tiny.numpy() * 1e300, 1.0, 2.0), abs=1e-12)


def test_mask_counts_only_unpruned_entries(rng):
    w = torch.from_numpy(rng.standard_normal(100))
    mask = torch.from_numpy(rng.random(100) < 0.4)
    assert pq_index(w, mask=mask) == pytest.approx(numpy_pqi(w[mask].numpy(), 0.5, 1.0), abs=1e-12)
    poisoned = w.clone()
    poisoned[~mask] = float("nan")  # pruned entries never reach the sums (the code marks them NaN)
    assert pq_index(poisoned, mask=mask) == pytest.approx(pq_index(w, mask=mask), abs=1e-15)
    # d is the number of unpruned entries: masking zeros out is not the same as keeping them
    z = torch.tensor([1.0, 2.0, 0.0, 0.0])
    assert pq_index(z, mask=torch.tensor([True, True, False, False])) == pytest.approx(numpy_pqi([1, 2], .5, 1))
    assert pq_index(z) == pytest.approx(numpy_pqi([1, 2, 0, 0], .5, 1))
    with pytest.raises(ValueError, match="mask"):
        pq_index(w, mask=mask[:10])


def test_edge_cases_give_zero():
    w = torch.randn(10)
    assert pq_index(w, mask=torch.zeros(10, dtype=torch.bool)) == 0.0
    assert pq_index(torch.zeros(10)) == 0.0
    assert pq_index(torch.zeros(0)) == 0.0
    assert pq_index(torch.tensor([1.0, float("nan"), 2.0])) == 0.0
    assert pq_index(torch.tensor([1.0, float("inf"), 2.0])) == 0.0
    assert pq_index(torch.tensor([3.0])) == 0.0  # d = 1: the bound 1 - 1 is 0


@pytest.mark.parametrize("p,q", [(1.0, 1.0), (2.0, 1.0), (0.0, 1.0), (-0.5, 1.0), (0.5, float("inf")),
                                 (float("nan"), 1.0)])
def test_invalid_exponents_are_rejected(p, q):
    with pytest.raises(ValueError, match="0 < p < q"):
        pq_index(torch.randn(5), p, q)
    with pytest.raises(ValueError, match="0 < p < q"):
        pqi_by_scope({"w": torch.randn(3, 3)}, p=p, q=q)


# ----- scopes --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["digits-mlp", "digits-cnn", "digits-resnet"])
@pytest.mark.parametrize("p,q", [(0.5, 1.0), (1.0, 2.0)])
def test_scopes_agree_with_brute_force(name, p, q, demo_workbenches):
    wb = demo_workbenches[name]
    g = torch.Generator().manual_seed(1)
    masks = {k: torch.rand(v.shape, generator=g) < 0.6 for k, v in wb.prunable.items()}
    first = next(iter(masks))
    masks[first][0] = False  # one fully pruned row: its PQI is 0
    neuron = pqi_by_scope(wb, masks, p, q, "neuron")
    layer = pqi_by_scope(wb, masks, p, q, "layer")
    glob = pqi_by_scope(wb, masks, p, q, "global")
    assert set(neuron) == set(layer) == set(wb.prunable) and set(glob) == {"global"}
    for k, w in wb.prunable.items():
        rows = w.reshape(w.shape[0], -1)
        mrows = masks[k].reshape(w.shape[0], -1)
        brute = [numpy_pqi(rows[i][mrows[i]].numpy(), p, q) for i in range(len(rows))]
        assert neuron[k].shape == (w.shape[0],)
        np.testing.assert_allclose(neuron[k].numpy(), brute, atol=1e-12)
        assert float(layer[k]) == pytest.approx(numpy_pqi(w[masks[k]].numpy(), p, q), abs=1e-12)
    assert float(neuron[first][0]) == 0.0
    every = np.concatenate([w[masks[k]].numpy() for k, w in wb.prunable.items()])
    assert float(glob["global"]) == pytest.approx(numpy_pqi(every, p, q), abs=1e-12)


def test_scopes_ignore_biases_and_norm_parameters(demo_workbenches):
    wb = demo_workbenches["digits-cnn"]
    from_model = pqi_all_scopes(wb.model)
    assert set(from_model["layer"]) == set(wb.prunable)
    assert float(from_model["global"]["global"]) == pytest.approx(float(pqi_all_scopes(wb)["global"]["global"]))
    with pytest.raises(ValueError, match="scope"):
        pqi_by_scope(wb, scope="block")


def test_pqi_table_rows_and_bounds(demo_workbenches):
    wb = demo_workbenches["digits-mlp"]
    table, glob = pqi_table(wb)
    assert list(table["layer"]) == list(wb.prunable)
    assert (table["pqi"] <= table["bound"]).all() and (table["pqi"] > 0).all()
    assert (table["pqi_neuron_min"] <= table["pqi_neuron_mean"]).all()
    assert glob == pytest.approx(float(pqi_by_scope(wb, scope="global")["global"]))


def test_plan_masks_for_structured_and_unstructured_plans_leave_the_model_dense(demo_workbenches):
    wb = demo_workbenches["digits-cnn"]
    dense = {k: v.clone() for k, v in wb.model.state_dict().items()}
    plan = make_method("group-l1").prepare(wb).plan(0.5)
    masks = plan_masks(wb, plan)
    with wb.applied(plan):
        for k, v in wb.prunable.items():
            assert torch.equal(masks[k], v != 0), k
    assert all(torch.equal(v, dense[k]) for k, v in wb.model.state_dict().items())
    un = make_method("magnitude-global").prepare(wb).plan(0.3)
    assert all(torch.equal(plan_masks(wb, un)[k], un.masks[k]) for k in un.masks)


def test_one_shot_magnitude_curve_lowers_pqi(demo_workbenches):
    wb = demo_workbenches["digits-mlp"]
    curve = pqi_magnitude_curve(wb, [0.0, 0.5, 0.9])
    assert list(curve["remaining"]) == pytest.approx([1.0, 0.5, 0.1], abs=1e-4)
    assert curve["pqi_global"].iloc[0] == pytest.approx(float(pqi_by_scope(wb, scope="global")["global"]))
    assert curve["pqi_global"].is_monotonic_decreasing  # removing the smallest leaves a flatter distribution
    assert curve["accuracy"].iloc[0] == pytest.approx(wb.dense_metrics().accuracy)
