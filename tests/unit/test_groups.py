"""Channel groups: masking a whole dependency group gives exactly the outputs of physically removing it."""

import pytest
import torch
import torch_pruning as tp

from pruning_core import GroupError, Workbench, build_groups, make_method
from pruning_core.data import synthetic_images
from pruning_core.metrics import count_flops, parameter_count
from pruning_core.models import ARCHITECTURES

RATIOS = (0.1, 0.3, 0.5, 0.7, 0.9)


@pytest.mark.parametrize("name", ["digits-mlp", "digits-cnn", "digits-resnet"])
@pytest.mark.parametrize("key", ["group-l1", "random-channels"])
def test_masked_group_equals_physically_removed(name, key, demo_workbenches):
    wb = demo_workbenches[name]
    method = make_method(key).prepare(wb)
    for ratio in RATIOS:
        plan = method.plan(ratio)
        small = wb.sliced_model(plan)
        with torch.no_grad():
            sliced_out = small(wb.eval_x)
            with wb.applied(plan) as masked:
                masked_out = masked(wb.eval_x)
        torch.testing.assert_close(sliced_out, masked_out, rtol=1e-5, atol=1e-5)
        assert torch.equal(sliced_out.argmax(1), masked_out.argmax(1))
        # the small model really is smaller, by exactly what masking zeroes
        pm_masked = wb.evaluate_plan(plan, structured="masked")
        pm_sliced = wb.evaluate_plan(plan, structured="sliced")
        assert parameter_count(small) == pm_masked.params == pm_sliced.params < wb.dense_params
        assert pm_masked.accuracy == pm_sliced.accuracy
        # FLOPs counted on the small model equal the density formula the sweep uses
        assert count_flops(small, wb.example_input)[0] == pm_sliced.flops


@pytest.mark.parametrize("name", ["digits-mlp", "digits-cnn", "digits-resnet"])
def test_kept_fraction_is_within_one_channel_of_the_ratio(name, demo_workbenches):
    wb = demo_workbenches[name]
    method = make_method("group-l2").prepare(wb)
    for ratio in (0.0, *RATIOS, 0.99):
        kept = wb.groups.kept_channels(method.plan(ratio).pruned_channels)
        for g in wb.groups.groups:
            assert 1 <= kept[g.name] <= g.size
            assert abs(kept[g.name] - (1 - ratio) * g.size) <= 1, (g.name, ratio, kept[g.name])


def test_residual_groups_couple_every_partner(demo_workbenches):
    groups = demo_workbenches["digits-resnet"].groups
    wide = next(g for g in groups.groups if "layer2.shortcut.0" in g.producers)
    # the 32-channel residual stream: both blocks' conv2, the widening shortcut, their BNs and every consumer
    assert set(wide.producers) == {"layer2.conv2", "layer2.shortcut.0", "layer3.conv2"}
    assert set(wide.consumers) == {"layer3.conv1", "fc"}
    bn = {m.module for m in wide.members if m.param == "running_var"}
    assert bn == {"layer2.bn2", "layer2.shortcut.1", "layer3.bn2"}
    assert groups.ignored == ["fc"]  # the classifier keeps its 10 outputs
    inner = [g for g in groups.groups if g.name.endswith("conv1") and g.name.startswith("layer")]
    assert len(inner) == 3 and all(len(g.producers) == 1 for g in inner)


def test_flatten_expands_one_channel_into_its_linear_inputs(demo_workbenches):
    wb = demo_workbenches["digits-cnn"]
    g = wb.groups.by_name["conv2"]
    fc = next(m for m in g.members if m.module == "fc1")
    assert fc.dim == 1 and len(fc.target_idx) == 32 * 16
    assert torch.equal(torch.bincount(fc.root_idx), torch.full((32,), 16))
    plan = make_method("group-l1").prepare(wb).plan(0.5)
    assert wb.sliced_model(plan).fc1.in_features == 16 * 16


@pytest.mark.parametrize("name", ["digits-cnn", "digits-resnet"])
def test_group_l1_matches_torch_pruning_group_importance(name, demo_workbenches):
    """Independent check: Torch-Pruning's own GroupMagnitudeImportance (sum over the group, no normalisation)
    ranks the channels of every group like ours."""
    from pruning_core.importance import group_channel_norms

    wb = demo_workbenches[name]
    ours = group_channel_norms(wb, p=1)
    model = wb.model
    for p in model.parameters():
        p.requires_grad_(True)
    try:
        dg = tp.DependencyGraph().build_dependency(model, example_inputs=wb.example_input)
        imp = tp.importance.GroupMagnitudeImportance(p=1, group_reduction="sum", normalizer=None, bias=False)
        names = {m: n for n, m in model.named_modules()}
        for group in dg.get_all_groups(ignored_layers=[model.fc if hasattr(model, "fc") else model.fc2]):
            root = names[group[0].dep.target.module]
            theirs = imp(group).double()
            torch.testing.assert_close(theirs, ours[root], rtol=1e-4, atol=1e-6)
    finally:
        for p in model.parameters():
            p.requires_grad_(False)


def test_resnet18_sized_model_masks_equal_slices():
    data = synthetic_images(8, (3, 32, 32), 10)
    wb = Workbench(ARCHITECTURES["resnet18-cifar"].build(), data, device="cpu")
    assert len(wb.groups.groups) == 4 + 8  # one residual stream per stage + the inner width of each block
    plan = make_method("group-l1").prepare(wb).plan(0.6)
    with torch.no_grad():
        small_out = wb.sliced_model(plan)(wb.eval_x)
        with wb.applied(plan) as m:
            masked_out = m(wb.eval_x)
    torch.testing.assert_close(small_out, masked_out, rtol=1e-4, atol=1e-4)


def test_torchscript_models_are_refused_for_channel_pruning(digits):
    from pruning_core import load_builtin

    scripted = torch.jit.script(load_builtin("digits-cnn"))
    with pytest.raises(GroupError, match="TorchScript"):
        build_groups(scripted, digits.eval.x[:1])


def test_slicing_shares_no_tensor_when_asked(demo_workbenches):
    wb = demo_workbenches["digits-resnet"]
    plan = make_method("group-l1").prepare(wb).plan(0.5)
    dense_ptrs = {p.data_ptr() for p in wb.model.parameters()}
    shared = {p.data_ptr() for p in wb.sliced_model(plan).parameters()} & dense_ptrs
    assert shared  # cheap evaluation copies share the tensors a plan leaves alone
    private = wb.sliced_model(plan, share_untouched=False)
    assert not ({p.data_ptr() for p in private.parameters()} & dense_ptrs)
