"""Baseline methods against independent computations (torch.nn.utils.prune, brute-force counts)."""

import copy
import re

import pytest
import torch
import torch.nn.utils.prune as prune

from pruning_core import REGISTRY, make_method
from pruning_core.methods import NEEDS


def _weights(model):
    return [(n, m) for n, m in model.named_modules()
            if getattr(m, "weight", None) is not None and m.weight.ndim >= 2]


@pytest.mark.parametrize("name", ["digits-mlp", "digits-cnn", "digits-resnet"])
@pytest.mark.parametrize("ratio", [0.0, 0.13, 0.5, 0.77, 0.95])
def test_global_magnitude_equals_torch_global_unstructured(name, ratio, demo_workbenches):
    wb = demo_workbenches[name]
    plan = make_method("magnitude-global").prepare(wb).plan(ratio)
    ref = copy.deepcopy(wb.model)
    modules = _weights(ref)
    prune.global_unstructured([(m, "weight") for _, m in modules], prune.L1Unstructured, amount=ratio)
    for n, m in modules:
        assert torch.equal(m.weight_mask.bool(), plan.masks[f"{n}.weight"]), (n, ratio)


@pytest.mark.parametrize("ratio", [0.25, 0.6])
def test_per_layer_magnitude_equals_torch_l1_unstructured(ratio, demo_workbenches):
    wb = demo_workbenches["digits-resnet"]
    plan = make_method("magnitude-layer").prepare(wb).plan(ratio)
    ref = copy.deepcopy(wb.model)
    for n, m in _weights(ref):
        prune.l1_unstructured(m, "weight", amount=ratio)
        assert torch.equal(m.weight_mask.bool(), plan.masks[f"{n}.weight"]), n


def test_l1_and_l2_unstructured_give_identical_masks(demo_workbenches):
    wb = demo_workbenches["digits-cnn"]
    l1 = make_method("magnitude-global", p=1).prepare(wb).plan(0.6)
    l2 = make_method("magnitude-global", p=2).prepare(wb).plan(0.6)
    assert all(torch.equal(l1.masks[k], l2.masks[k]) for k in l1.masks)


def test_group_l1_and_l2_rank_differently_but_remove_the_same_counts(demo_workbenches):
    wb = demo_workbenches["digits-cnn"]
    a = make_method("group-l1").prepare(wb).plan(0.5).pruned_channels
    b = make_method("group-l2").prepare(wb).plan(0.5).pruned_channels
    assert {k: len(v) for k, v in a.items()} == {k: len(v) for k, v in b.items()}
    assert any(set(a[k].tolist()) != set(b[k].tolist()) for k in a)


def test_group_magnitude_removes_the_weakest_channels_of_a_plain_layer(demo_workbenches):
    """Brute force on the MLP's first hidden layer: its group is fc1's rows and fc2's columns."""
    wb = demo_workbenches["digits-mlp"]
    m = wb.model
    score = m.fc1.weight.abs().sum(1) + m.fc2.weight.abs().sum(0)
    expected = set(torch.argsort(score)[: round(0.4 * 128)].tolist())
    got = set(make_method("group-l1").prepare(wb).plan(0.4).pruned_channels["fc1"].tolist())
    assert got == expected


def test_random_is_seeded_and_nested(demo_workbenches):
    wb = demo_workbenches["digits-cnn"]
    a = make_method("random", seed=3).prepare(wb)
    b = make_method("random", seed=3).prepare(wb)
    c = make_method("random", seed=4).prepare(wb)
    pa, pb, pc = a.plan(0.5), b.plan(0.5), c.plan(0.5)
    assert all(torch.equal(pa.masks[k], pb.masks[k]) for k in pa.masks)
    assert any(not torch.equal(pa.masks[k], pc.masks[k]) for k in pa.masks)
    more = a.plan(0.8)
    assert all(bool((more.masks[k] <= pa.masks[k]).all()) for k in pa.masks)  # 80% removes a superset


# methods whose spec says they cannot meet the kept fraction (N:M, whole blocks, skipped layers) are left out
@pytest.mark.parametrize("key", [k for k, s in REGISTRY.items()
                                 if s.granularity == "unstructured" and "kept-fraction" not in s.exempt])
def test_unstructured_methods_remove_exactly_the_ratio(key, demo_workbenches):
    wb = demo_workbenches["digits-resnet"]
    total = sum(p.numel() for p in wb.prunable.values())
    for ratio in (0.1, 0.45, 0.9):
        plan = make_method(key).prepare(wb).plan(ratio)
        removed = sum(int((~m).sum()) for m in plan.masks.values())
        assert abs(removed - ratio * total) <= len(plan.masks), (key, ratio)
        assert plan.method == key and plan.ratio == ratio


def test_every_method_declares_what_it_needs_and_cites_its_source():
    import sys

    for key, spec in REGISTRY.items():
        method = make_method(key)
        assert set(spec.needs) <= set(NEEDS) and method.spec is spec and method.key == key
        assert not spec.description.startswith(" ") and len(spec.description) > 20, key
        assert not spec.paper or re.search(r"\b(19|20)\d\d\b", spec.paper), key  # a citation has its year
        doc = sys.modules[type(method).__module__].__doc__
        assert doc and any(w in doc for w in ("et al.", "20")), key


def test_a_method_instance_works_wherever_a_key_does(demo_workbenches):
    from pruning_core import run_sweep
    from pruning_core.methods.id import InterpolativePruning
    from pruning_core.methods.magnitude import MagnitudeUnstructured

    wb = demo_workbenches["digits-mlp"]
    by_key = run_sweep(wb, ["magnitude-layer"], [0.0, 0.5]).points
    by_instance = run_sweep(wb, [MagnitudeUnstructured(scope="layer")], [0.0, 0.5]).points
    assert by_instance["method"].tolist() == ["magnitude-layer"] * 2
    assert by_instance["label"].tolist() == by_key["label"].tolist()
    assert by_instance["accuracy"].tolist() == by_key["accuracy"].tolist()
    assert make_method(MagnitudeUnstructured()).key == "magnitude-global"
    assert InterpolativePruning(mode="tolerance").key == "id-tolerance"
    assert make_method("id", mode="flops").key == "id-flops"
    assert make_method("magnitude-global", seed=3).key == "magnitude-global"  # only the seed: the same method
    odd = make_method("ispasp", iterations=5)
    assert odd.key == "ispasp[iterations=5]" and odd.plan.__self__ is odd
