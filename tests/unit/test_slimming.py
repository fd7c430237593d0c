"""Network slimming (Liu et al. 2017): the BatchNorm-scale criterion against Torch-Pruning's own
BNScaleImportance, and the plan against a brute-force global percentile of |gamma|."""

import pytest
import torch
import torch_pruning as tp

from pruning_core import make_method
from pruning_core.importance import group_bn_scale


@pytest.mark.parametrize("name", ["digits-cnn", "digits-resnet"])
def test_bn_scale_matches_torch_pruning(name, demo_workbenches):
    wb = demo_workbenches[name]
    ours = group_bn_scale(wb)
    model = wb.model
    for p in model.parameters():
        p.requires_grad_(True)
    try:
        dg = tp.DependencyGraph().build_dependency(model, example_inputs=wb.example_input)
        imp = tp.importance.BNScaleImportance(group_reduction="sum", normalizer=None)
        names = {m: n for n, m in model.named_modules()}
        compared = 0
        for group in dg.get_all_groups(ignored_layers=[model.fc if hasattr(model, "fc") else model.fc2]):
            root = names[group[0].dep.target.module]
            theirs = imp(group)
            if theirs is None:  # no BatchNorm in the group
                assert root not in ours
                continue
            torch.testing.assert_close(theirs.double(), ours[root], rtol=1e-5, atol=1e-7)
            compared += 1
        assert compared == len(ours) > 0
    finally:
        for p in model.parameters():
            p.requires_grad_(False)


@pytest.mark.parametrize("name", ["digits-cnn", "digits-resnet"])
@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.7, 0.99])
def test_plan_removes_the_globally_lowest_gammas(name, ratio, demo_workbenches):
    wb = demo_workbenches[name]
    scores = group_bn_scale(wb)
    plan = make_method("network-slimming").prepare(wb).plan(ratio)
    # brute force: every (score, group, channel) sorted; each group's best channel is never removable
    entries = sorted((float(s[c]), gi, c) for gi, (g, s) in enumerate(scores.items()) for c in range(len(s)))
    best = {gi: max(range(len(s)), key=lambda c: (float(s[c]), c)) for gi, s in enumerate(scores.values())}
    removable = [(gi, c) for _, gi, c in entries if best[gi] != c]
    k = min(round(ratio * sum(len(s) for s in scores.values())), len(removable))
    expected = {}
    for gi, c in removable[:k]:
        expected.setdefault(list(scores)[gi], []).append(c)
    got = {g: sorted(v.tolist()) for g, v in plan.pruned_channels.items() if len(v)}
    assert got == {g: sorted(v) for g, v in expected.items()}
    assert plan.details["bn_channels_removed"] == k
    for g in wb.groups.groups:  # groups without BatchNorm keep every channel; no group is emptied
        removed = len(plan.pruned_channels.get(g.name, []))
        assert removed < g.size and (g.name in scores or removed == 0)


def test_unavailable_without_batchnorm_and_listed_with_it(demo_workbenches):
    from pruning_core import REGISTRY

    spec = REGISTRY["network-slimming"]
    assert "BatchNorm" in spec.unavailable(demo_workbenches["digits-mlp"])
    assert spec.unavailable(demo_workbenches["digits-cnn"]) is None
    assert "Liu et al." in spec.paper and "2017" in spec.paper
