"""The SAP rule (Diao et al., ICLR 2023, Algorithm 1) against hand computations and the authors' code's
conventions, and SAPSchedule, the rule as a registry method without retraining."""

from __future__ import annotations

import math

import pytest
import torch

from pruning_core import make_method
from pruning_core.algorithms.pq_index import pqi_by_scope
from pruning_core.algorithms.sap_rule import magnitude_step, sap_prune_count, sap_step
from pruning_core.methods.sap import SAPSchedule

# ----- the SAP rule -------------------------------------------------------------------------------------------

def test_sap_prune_count_by_hand():
    # r = ceil(100 * 0.7) = 70, c = floor(100 * min(1 - 0.7, 0.9)) = 30
    assert sap_prune_count(100, 0.3) == (70, 30)
    # p=1, q=2: exponent qp/(q-p) = 2 -> r = ceil(100 * 0.49) = 49, c = 51
    assert sap_prune_count(100, 0.3, 1.0, 2.0) == (49, 51)
    # eta_r = 0.1: (1.1)^{-2} * 70 = 57.85 -> r = 58, c = 42; gamma = 1.2: floor(100 * 1.2 * 0.42) = 50
    assert sap_prune_count(100, 0.3, eta_r=0.1) == (58, 42)
    assert sap_prune_count(100, 0.3, eta_r=0.1, gamma=1.2) == (58, 50)
    # the beta cap: at most 90% of the unit in one round
    assert sap_prune_count(100, 0.97)[1] == 90
    assert sap_prune_count(100, 0.97, beta=0.5)[1] == 50
    assert sap_prune_count(0, 0.0) == (0, 0)
    with pytest.raises(ValueError):
        sap_prune_count(10, 0.3, beta=0.0)
    with pytest.raises(ValueError):
        sap_prune_count(10, 0.3, 1.0, 0.5)


def test_shortcut_prunes_a_pqi_sized_fraction():
    """p=0.5, q=1, eta_r=0, gamma=1 => c_t = floor(d_t * PQI_t) (below the beta cap): never off by more than the
    floor, which is what the paper check's claim (a) measures on real runs."""
    g = torch.Generator().manual_seed(0)
    d = torch.randint(1, 100_000, (200_000,), generator=g).double()
    pqi = torch.rand(200_000, generator=g, dtype=torch.float64)
    r, c = sap_prune_count(d, pqi)
    assert c.dtype == torch.int64 and r.dtype == torch.int64
    gap = c.double() - d * pqi.clamp(max=0.9)
    assert float(gap.max()) <= 1e-9 and float(gap.min()) > -1 - 1e-9
    _, c12 = sap_prune_count(d, pqi, 1.0, 2.0)  # the other setting prunes d(1 - (1 - I)^2): more
    assert bool((c12 >= c).all()) and float((c12.double() - d * (1 - (1 - pqi) ** 2).clamp(max=0.9)).abs().max()) <= 1


def _assert_removed_smallest(old, new, w):
    gone = old & ~new
    if gone.any() and new.any():
        assert w.abs()[gone].max() <= w.abs()[new].min()


@pytest.mark.parametrize("scope", ["neuron", "layer", "global"])
def test_sap_step_removes_exactly_c_per_unit_even_with_ties(scope):
    g = torch.Generator().manual_seed(3)
    params = {"a.weight": torch.randint(-3, 4, (12, 20), generator=g).double(),  # heavy ties
              "b.weight": torch.randint(-2, 3, (6, 4, 3, 3), generator=g).double()}
    masks = {k: torch.rand(v.shape, generator=g) < 0.8 for k, v in params.items()}
    new, info = sap_step(params, masks, scope, return_details=True)
    pqi = pqi_by_scope(params, masks, scope=scope)
    for unit in pqi:
        torch.testing.assert_close(info["pqi"][unit], pqi[unit])
        _, c = sap_prune_count(info["d"][unit], pqi[unit])
        assert torch.equal(torch.as_tensor(info["c"][unit]), torch.as_tensor(c))
    if scope == "neuron":
        for k, w in params.items():
            before = masks[k].reshape(w.shape[0], -1).sum(1)
            after = new[k].reshape(w.shape[0], -1).sum(1)
            assert torch.equal(before - after, info["c"][k])
            for i in range(w.shape[0]):
                _assert_removed_smallest(masks[k][i], new[k][i], w[i])
    elif scope == "layer":
        for k, w in params.items():
            assert int(masks[k].sum() - new[k].sum()) == int(info["c"][k]) > 0
            _assert_removed_smallest(masks[k], new[k], w)
    else:
        removed = sum(int(masks[k].sum() - new[k].sum()) for k in params)
        assert removed == int(info["c"]["global"]) > 0
        flat_w = torch.cat([w.reshape(-1) for w in params.values()])
        _assert_removed_smallest(torch.cat([m.reshape(-1) for m in masks.values()]),
                                 torch.cat([m.reshape(-1) for m in new.values()]), flat_w)
    assert all(not (new[k] & ~masks[k]).any() for k in params)  # nothing revived


def test_sap_step_counts_on_a_trained_model_match_the_pqi_fraction(demo_workbenches):
    wb = demo_workbenches["digits-cnn"]
    new = sap_step(wb, None, "global")
    glob = float(pqi_by_scope(wb, scope="global")["global"])
    total = sum(v.numel() for v in wb.prunable.values())
    removed = total - sum(int(m.sum()) for m in new.values())
    assert removed == math.floor(total * glob) or removed == math.floor(total * glob) - 1


def test_magnitude_step_matches_the_codes_quantile_rule():
    """The baselines remove |w| < quantile(|w|, 0.2) of the surviving weights (distinct magnitudes)."""
    g = torch.Generator().manual_seed(5)
    w = torch.randn(40, 37, generator=g, dtype=torch.float64)
    mask = torch.rand(40, 37, generator=g) < 0.7
    new = magnitude_step({"w.weight": w}, {"w.weight": mask}, "neuron", 0.2)["w.weight"]
    for i in range(40):
        alive = w[i][mask[i]].abs()
        expected = int((alive < torch.quantile(alive, 0.2)).sum())
        assert int(mask[i].sum() - new[i].sum()) == expected
    new = magnitude_step({"w.weight": w}, {"w.weight": mask}, "layer", 0.2)["w.weight"]
    alive = w[mask].abs()
    assert int(mask.sum() - new.sum()) == int((alive < torch.quantile(alive, 0.2)).sum())


# ----- SAPSchedule: the allocation as a method ---------------------------------------------------------------

@pytest.mark.parametrize("scope", ["neuron", "layer", "global"])
def test_sap_schedule_plans_are_nested_and_exact(scope, demo_workbenches):
    wb = demo_workbenches["digits-cnn"]
    method = SAPSchedule(scope).prepare(wb)
    total = sum(v.numel() for v in wb.prunable.values())
    previous = None
    for ratio in (0.0, 0.1, 0.3, 0.5, 0.77, 0.95):
        plan = method.plan(ratio)
        kept = sum(int(m.sum()) for m in plan.masks.values())
        assert total - kept == round(ratio * total)
        if previous is not None:  # a weight pruned at a smaller ratio stays pruned
            assert all(not (plan.masks[k] & ~previous[k]).any() for k in plan.masks)
        previous = plan.masks
    # round t of the schedule removes exactly what sap_step applied t times removes
    masks = None
    for end in method.round_ends[:6]:
        masks = sap_step(wb, masks, scope)
        assert all(torch.equal(method._scores[k] >= end, masks[k]) for k in masks)
    assert plan.details["variant"] == method.label and "no retraining" in method.label
    assert plan.details["config"]["scope"] == scope


def test_sap_schedule_terminates_and_differs_from_plain_magnitude(demo_workbenches):
    wb = demo_workbenches["digits-mlp"]
    method = SAPSchedule("layer", max_rounds=5).prepare(wb)
    assert 1 <= len(method.round_ends) <= 5
    magnitude = make_method("magnitude-global").prepare(wb).plan(0.5)
    sap = method.plan(0.5)
    assert any(not torch.equal(sap.masks[k], magnitude.masks[k]) for k in sap.masks)
    with pytest.raises(ValueError, match="scope"):
        SAPSchedule("channel")
