"""Recovery by fine-tuning (``pruning_core.recovery``): pruned entries stay exactly zero, the workbench's dense
model is untouched, accuracy comes back, the fine-tuned plan slices and exports like any other, and a run stops
when asked."""

from __future__ import annotations

import time

import pytest
import torch

from pruning_core import make_method
from pruning_core.charts.recovery import recovery_curves
from pruning_core.data import DataSplits, Split
from pruning_core.export import export_plan
from pruning_core.recovery import (
    RECOVERY_COLUMNS,
    finetune_plan,
    finetune_steps,
    run_recovery,
    training_split,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _state(wb) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in wb.model.state_dict().items()}


def _pruned_slices(wb, plan) -> list[tuple[str, int, torch.Tensor]]:
    """(tensor, dim, indices) of every masked slice the plan's pruned channels span, read member by member from
    the groups (a brute-force loop, independent of ``kept_mask_by_tensor``)."""
    out = []
    for name, removed in plan.pruned_channels.items():
        for m in wb.groups.by_name[name].members:
            if m.masked:
                hit = torch.isin(m.root_idx, removed)
                out.append((f"{m.module}.{m.param}", m.dim, m.target_idx[hit]))
    return out


def test_unstructured_finetune_keeps_masked_weights_exactly_zero_and_the_dense_model(demo_workbenches):
    wb = demo_workbenches["digits-cnn"]
    dense = _state(wb)
    plan = make_method("magnitude-global").prepare(wb).plan(0.7)
    other = make_method("group-l2").prepare(wb).plan(0.3)
    other_before = wb.evaluate_plan(other)
    tuned = finetune_plan(wb, plan, epochs=2)
    after = _state(wb)
    assert all(torch.equal(after[k], dense[k]) for k in dense)  # the working copy is the dense model, bit for bit
    assert wb.evaluate_plan(other).accuracy == other_before.accuracy
    assert tuned.details["finetune"]["steps"] == finetune_steps(wb, 2) == 2 * -(-len(wb.data.train) // 64)
    assert set(tuned.masks) == set(plan.masks) and all(torch.equal(tuned.masks[k], plan.masks[k]) for k in plan.masks)
    for name, keep in plan.masks.items():
        assert torch.count_nonzero(tuned.corrections[name][~keep]) == 0, name
        moved = (tuned.corrections[name][keep] != dense[name][keep]).float().mean()
        assert moved > 0.9, name  # the kept weights did train
    with wb.applied(tuned) as model:
        params = dict(model.named_parameters())
        for name, keep in plan.masks.items():
            assert torch.count_nonzero(params[name][~keep]) == 0, name
    assert wb.evaluate_plan(tuned).sparsity == pytest.approx(wb.evaluate_plan(plan).sparsity)


@pytest.mark.parametrize("name", ["digits-cnn", "digits-resnet"])
def test_structured_finetune_recovers_accuracy_and_slices_like_its_masked_model(name, demo_workbenches):
    wb = demo_workbenches[name]
    dense = _state(wb)
    plan = make_method("group-l1").prepare(wb).plan(0.5)
    start = time.perf_counter()
    tuned = finetune_plan(wb, plan)
    seconds = time.perf_counter() - start
    assert all(torch.equal(v, dense[k]) for k, v in _state(wb).items())
    with wb.applied(tuned) as model:  # every masked slice of a pruned channel, BatchNorm affine included, is zero
        tensors = dict(model.named_parameters())
        slices = _pruned_slices(wb, plan)
        assert any(t.startswith("bn") or ".bn" in t for t, _, _ in slices)
        for t, dim, idx in slices:
            assert torch.count_nonzero(tensors[t].index_select(dim, idx)) == 0, t
        masked_out = model(wb.eval_x).detach()
    sliced_out = wb.sliced_model(tuned)(wb.eval_x).detach()
    torch.testing.assert_close(sliced_out, masked_out, atol=1e-5, rtol=1e-5)
    assert torch.equal(sliced_out.argmax(1), masked_out.argmax(1))
    pruned, masked, sliced = (wb.evaluate_plan(plan), wb.evaluate_plan(tuned, structured="masked"),
                              wb.evaluate_plan(tuned, structured="sliced"))
    assert masked.accuracy == sliced.accuracy and sliced.params == pruned.params
    dense_acc = wb.dense_metrics().accuracy
    print(f"\n{name} group-l1 50%: dense {dense_acc:.4f}, pruned {pruned.accuracy:.4f}, "
          f"fine-tuned {sliced.accuracy:.4f} ({seconds:.1f} s)")
    assert sliced.accuracy > pruned.accuracy + 0.05
    assert sliced.accuracy > dense_acc - 0.03


def test_finetuned_structured_plan_exports(demo_workbenches):
    wb = demo_workbenches["digits-mlp"]
    tuned = finetune_plan(wb, make_method("group-l1").prepare(wb).plan(0.5), epochs=1)
    bundle = export_plan(wb, tuned, formats=("state_dict",), latency_repeats=1)
    assert bundle.report["after"]["accuracy"] == pytest.approx(wb.evaluate_plan(tuned).accuracy)
    assert bundle.report["after"]["params"] == wb.evaluate_plan(tuned).params < wb.dense_params


def test_finetune_starts_from_the_plan_as_applied_with_its_own_corrections(demo_workbenches):
    wb = demo_workbenches["digits-mlp"]
    plan = make_method("id").prepare(wb).plan(0.5)
    assert plan.corrections  # interpolative decompositions fold a correction into the next layer
    calls = []

    def one_step() -> bool:
        calls.append(1)
        return len(calls) > 1

    tuned = finetune_plan(wb, plan, lr=1e-9, should_stop=one_step)
    assert tuned.details["finetune"]["steps"] == 1 and tuned.details["finetune"]["stopped"]
    with wb.applied(plan) as model:
        applied = {k: v.detach().clone() for k, v in model.named_parameters()}
    for k, v in applied.items():
        torch.testing.assert_close(tuned.corrections[k], v, atol=1e-6, rtol=0)


def test_run_recovery_rows_and_stop(demo_workbenches):
    wb = demo_workbenches["digits-mlp"]
    seen = []
    df = run_recovery(wb, ["group-l1", "magnitude-global"], [0.5, 0.8], epochs=2, on_point=seen.append)
    assert list(df.columns) == RECOVERY_COLUMNS and len(df) == 8 == len(seen)
    assert list(df["stage"]) == ["pruned", "fine-tuned"] * 4
    pivot = df.pivot_table(index=["method", "ratio"], columns="stage", values="accuracy")
    at_80 = pivot.xs(0.8, level="ratio")
    assert (at_80["fine-tuned"] > at_80["pruned"] + 0.05).all(), pivot  # where pruning hurt, training helps
    for (method, ratio), rows in df.groupby(["method", "ratio"]):
        assert rows["params_fraction"].nunique() == 1 and rows["flops_fraction"].nunique() == 1
        plan = make_method(method).prepare(wb).plan(ratio)
        assert rows["accuracy"].iloc[0] == wb.evaluate_plan(plan).accuracy
    fig = recovery_curves(df, wb.dense_metrics().accuracy)
    assert len(fig.data) == 4 and {t.line.dash for t in fig.data} == {"dash", "solid"}

    steps = []

    def stop_after_five_steps() -> bool:
        return len(steps) >= 5

    stopped = run_recovery(wb, ["group-l1"], [0.5, 0.8], epochs=2, should_stop=stop_after_five_steps,
                           on_step=lambda i, loss: steps.append(loss))
    assert len(steps) == 5 and list(stopped["stage"]) == ["pruned", "fine-tuned"]
    assert stopped["stopped"].tolist() == [False, True] and stopped["steps"].tolist() == [0, 5]

    def broken(row):
        raise RuntimeError("the page went away")

    delivered = []
    with pytest.raises(RuntimeError):
        run_recovery(wb, ["group-l1"], [0.5], epochs=1, on_point=lambda row: (delivered.append(row), broken(row)))
    assert len(delivered) == 1 and delivered[0]["stage"] == "pruned"


def test_training_split_falls_back_to_calibration(digits):
    from pruning_core import Workbench, load_builtin

    empty = DataSplits("no-train", Split(digits.train.x[:0], digits.train.y[:0]), digits.calib, digits.eval, 10)
    wb = Workbench(load_builtin("digits-mlp"), empty, device="cpu")
    assert training_split(wb) is empty.calib
    tuned = finetune_plan(wb, make_method("magnitude-global").prepare(wb).plan(0.5), epochs=1)
    assert tuned.details["finetune"]["training_samples"] == len(digits.calib) == 256
    assert tuned.details["finetune"]["steps"] == 4
