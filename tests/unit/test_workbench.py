"""The workbench's contract: one working copy, in-place plans, exact restore, one pass per evaluation."""

import pytest
import torch

from pruning_core import DataError, Plan, PlanError, Workbench, load_builtin, make_method
from pruning_core.data import DataSplits, Split


def _state(model):
    return {k: v.detach().clone() for k, v in {**dict(model.named_parameters()), **dict(model.named_buffers())}.items()}


@pytest.mark.parametrize("name", ["digits-cnn", "digits-resnet"])
def test_restore_is_bit_exact_after_many_plans(name, demo_workbenches):
    wb = demo_workbenches[name]
    before = _state(wb.model)
    for key, ratio in [("magnitude-global", 0.5), ("group-l1", 0.7), ("random", 0.9), ("magnitude-layer", 0.2)]:
        wb.apply(make_method(key).prepare(wb).plan(ratio))
        assert any(not torch.equal(before[k], v) for k, v in _state(wb.model).items())
    wb.restore()
    after = _state(wb.model)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_apply_changes_the_working_copy_in_place(demo_workbenches):
    wb = demo_workbenches["digits-cnn"]
    model_id = id(wb.model)
    storage = {k: p.data_ptr() for k, p in wb.model.named_parameters()}
    with wb.applied(make_method("magnitude-global").prepare(wb).plan(0.5)) as m:
        assert m is wb.model and id(m) == model_id
        assert {k: p.data_ptr() for k, p in m.named_parameters()} == storage
        assert float((m.conv2.weight == 0).float().mean()) > 0.2


def test_the_model_given_to_the_workbench_is_never_mutated(digits):
    model = load_builtin("digits-resnet")
    before = _state(model)
    wb = Workbench(model, digits, device="cpu")
    wb.apply(make_method("group-l2").prepare(wb).plan(0.5))
    assert all(torch.equal(before[k], v) for k, v in _state(model).items())


@pytest.mark.parametrize("key", ["magnitude-global", "group-l1"])
def test_ratio_zero_leaves_outputs_unchanged(key, demo_workbenches):
    wb = demo_workbenches["digits-resnet"]
    with torch.no_grad():
        dense = wb.model(wb.eval_x)
    plan = make_method(key).prepare(wb).plan(0.0)
    with wb.applied(plan) as m, torch.no_grad():
        assert torch.equal(m(wb.eval_x), dense)
    pm = wb.evaluate_plan(plan)
    assert pm.agreement == 1.0 and pm.params_fraction == 1.0 and pm.sparsity == 0.0


def test_each_plan_evaluation_is_exactly_one_pass(demo_workbenches):
    wb = demo_workbenches["digits-mlp"]
    wb.dense_metrics()
    n = wb.eval_passes
    method = make_method("magnitude-layer").prepare(wb)
    for r in (0.1, 0.5, 0.9):
        wb.evaluate_plan(method.plan(r))
    assert wb.eval_passes == n + 3


@pytest.mark.parametrize("ratio", [1.0, 1.5, -0.1, float("nan"), "half"])
def test_invalid_ratios_get_a_clear_message(ratio, demo_workbenches):
    method = make_method("magnitude-global").prepare(demo_workbenches["digits-mlp"])
    with pytest.raises(PlanError, match="ratio"):
        method.plan(ratio)


def test_a_plan_for_another_model_is_refused(demo_workbenches):
    plan = make_method("magnitude-global").prepare(demo_workbenches["digits-cnn"]).plan(0.5)
    with pytest.raises(PlanError, match="does not have|shape"):
        demo_workbenches["digits-mlp"].apply(plan)
    foreign = Plan("x", 0.5, "unstructured", masks={"fc1.weight": torch.ones(3, 3, dtype=torch.bool)})
    with pytest.raises(PlanError, match="shape"):
        demo_workbenches["digits-mlp"].apply(foreign)
    demo_workbenches["digits-mlp"].restore()


def test_data_that_does_not_fit_the_model_is_refused_clearly():
    x = torch.randn(20, 3, 32, 32)
    y = torch.randint(0, 10, (20,))
    data = DataSplits("wrong", Split(x, y), Split(x, y), Split(x, y), 10)
    with pytest.raises(DataError, match="does not fit"):
        Workbench(load_builtin("digits-cnn"), data, device="cpu")
    y_many = torch.arange(20)
    data = DataSplits("too many classes", Split(torch.rand(20, 1, 8, 8), y_many),
                      Split(torch.rand(20, 1, 8, 8), y_many), Split(torch.rand(20, 1, 8, 8), y_many), 20)
    with pytest.raises(DataError, match="classes"):
        Workbench(load_builtin("digits-cnn"), data, device="cpu")


def test_layer_table_counts_every_parameter(demo_workbenches):
    wb = demo_workbenches["digits-resnet"]
    table = wb.layer_table()
    assert table["parameters"].sum() == wb.dense_params
    assert table["FLOPs"].sum() == wb.dense_flops[0]


def test_torchscript_models_get_unstructured_metrics_with_flops(digits):
    wb = Workbench(torch.jit.script(load_builtin("digits-cnn")), digits, device="cpu")
    assert not wb.supports_structured
    pm = wb.evaluate_plan(make_method("magnitude-global").prepare(wb).plan(0.5))
    assert pm.flops_fraction == pytest.approx(0.5, abs=1e-3) and pm.accuracy > 0.9
