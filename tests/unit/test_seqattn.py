"""SequentialAttention++ block sparsification (Yasuda et al., NeurIPS 2024): the block layout and norms against brute
force, the attention scaling identity, the exponential schedule, block masks, the training procedure (SA++ not worse
than block magnitude on the demo MLP, a broken SA++ caught), stopping, and clear messages for bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pruning_core.algorithms.block_sparsity import (
    BlockError,
    block_attention,
    block_grid,
    block_keep_mask,
    block_layers,
    block_matrix,
    block_norms,
    blocks_removed,
    expand_blocks,
    realised_sparsity,
    scheduled_sparsity,
    sparsification_schedule,
    training_phases,
    weight_from_block_matrix,
)
from pruning_core.checks.seqattn import paired_verdict
from pruning_core.experiments import seqattn as experiment
from pruning_core.experiments.seqattn import BlockScaling, run_block_sparsification
from pruning_core.experiments.training import train_masked
from pruning_core.methods.block import BlockMagnitude, TrainedBlockSparsity
from pruning_core.plan import PlanError

FAST = {"epochs": 10, "finetune_epochs": 3}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # small problems: one torch thread


# ----- layout and norms -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(7, 5), (6, 3, 3, 2), (4, 3, 5)])
def test_block_matrix_round_trips_and_has_the_papers_layout(shape):
    w = torch.randn(shape, dtype=torch.float64)
    m = block_matrix(w)
    assert m.shape == (math.prod(shape[1:]), shape[0])
    assert torch.equal(weight_from_block_matrix(m, shape), w)
    if len(shape) == 4:  # conv (Cout, Cin, kh, kw) -> row (i * kw + j) * Cin + c, column o (TensorFlow HWIO)
        cout, cin, kh, kw = shape
        for o, c, i, j in [(0, 0, 0, 0), (5, 2, 2, 1), (3, 1, 1, 0)]:
            assert m[(i * kw + j) * cin + c, o] == w[o, c, i, j]
    if len(shape) == 2:  # linear (out, in) -> (in, out): y = x W
        assert torch.equal(m, w.T)


def test_block_norms_and_expansion_match_a_loop_with_ragged_edges():
    w = torch.randn(13, 10, dtype=torch.float64)  # matrix 10 x 13: ragged rows (10 = 4+4+2) and cols (13 = 4+4+4+1)
    norms = block_norms(w, 4)
    m = w.T
    assert norms.shape == block_grid(w.shape, 4) == (3, 4)
    values = torch.randn(3, 4, dtype=torch.float64)
    expanded = block_matrix(expand_blocks(values, w.shape, 4))
    for r in range(3):
        for c in range(4):
            piece = m[r * 4:(r + 1) * 4, c * 4:(c + 1) * 4]
            assert torch.isclose(norms[r, c], torch.sqrt((piece ** 2).sum()))
            assert torch.all(expanded[r * 4:(r + 1) * 4, c * 4:(c + 1) * 4] == values[r, c])
    conv = torch.randn(8, 3, 3, 3)  # matrix 27 x 8
    brute = torch.tensor([[float(torch.linalg.norm(block_matrix(conv)[r * 4:(r + 1) * 4, c * 4:(c + 1) * 4]))
                           for c in range(2)] for r in range(7)])
    torch.testing.assert_close(block_norms(conv, 4), brute)


# ----- attention, schedule, masks -----------------------------------------------------------------------------------

def test_attention_scaled_weights_equal_the_plain_weights_at_initialisation():
    logits = torch.zeros(5, 7)
    assert torch.allclose(block_attention(logits), torch.ones(5, 7), rtol=0, atol=1e-6)
    random = torch.randn(5, 7, dtype=torch.float64)
    reference = 35 * np.exp(random.numpy()) / np.exp(random.numpy()).sum()
    np.testing.assert_allclose(block_attention(random).numpy(), reference, rtol=1e-12)
    w = torch.randn(16, 8, 3, 3)
    scaling = BlockScaling(tuple(w.shape), 4, attention=True)
    torch.testing.assert_close(scaling(w), w, rtol=1e-6, atol=0)
    with torch.no_grad():
        scaling.logits.normal_()
    assert not torch.allclose(scaling(w), w)  # the identity is the initialisation's, not a no-op


def test_schedule_follows_the_formula_and_hits_the_target():
    c, s = 4.0, 0.9
    for u in (0.0, 0.1, 0.25, 0.5, 1.0):
        assert sparsification_schedule(u, s, c) == pytest.approx(s * (1 - math.exp(-c * u)) / (1 - math.exp(-c)))
    assert sparsification_schedule(1.0, s) == pytest.approx(s) and sparsification_schedule(0.0, s) == 0.0
    assert sparsification_schedule(0.25, s) > 0.6 * s  # aggressive early
    for procedure in ("seqattn", "acdc"):
        phases = training_phases(procedure, 300, cycles=3)
        assert phases[0].start == 0 and phases[-1].end == 300
        assert all(a.end == b.start for a, b in zip(phases[:-1], phases[1:], strict=True))
        kinds = [p.kind for p in phases]
        assert kinds[0] == "dense" and kinds[-1] == "sparse"
        assert ("sparsify" in kinds) == (procedure == "seqattn")
        for p in phases:
            if p.kind == "sparsify":
                assert scheduled_sparsity(phases, p.end - 1, s) == pytest.approx(s)
                values = [scheduled_sparsity(phases, t, s) for t in range(p.start, p.end)]
                assert all(a < b for a, b in zip(values[:-1], values[1:], strict=True))
    sa = training_phases("seqattn", 300, cycles=3)
    assert [p.kind for p in sa[-2:]] == ["sparsify", "sparse"]  # the last cycle is one long sparsify phase


def test_block_masks_have_the_requested_block_sparsity_lowest_first():
    scores = torch.rand(16, 32, generator=torch.Generator().manual_seed(0))
    for s in (0.1, 0.5, 0.9, 0.999):
        keep = block_keep_mask(scores, s)
        k = min(round(s * 512), 511)
        assert int((~keep).sum()) == k == blocks_removed(512, s)
        lowest = torch.argsort(scores.reshape(-1))[:k]
        assert set(torch.nonzero(~keep.reshape(-1)).reshape(-1).tolist()) == set(lowest.tolist())
    first = block_keep_mask(scores, 0.3)
    second = block_keep_mask(-scores, 0.6, within=first)  # monotone: what went stays gone
    assert not torch.any(second & ~first) and int((~second).sum()) == blocks_removed(512, 0.6)


def test_block_magnitude_plan_removes_whole_blocks_per_layer(demo_workbenches):
    wb = demo_workbenches["digits-cnn"]
    plan = BlockMagnitude().prepare(wb).plan(0.8)
    assert set(plan.masks) == {"conv2.weight", "fc1.weight"}  # conv1 (12 blocks), fc2 (48) stay dense
    for name, mask in plan.masks.items():
        w = dict(wb.model.named_parameters())[name]
        blocks = block_norms(mask.float(), 4) ** 2  # kept entries per block: 0 or the block's full size
        full = block_norms(torch.ones_like(w), 4) ** 2
        assert torch.all((blocks == 0) | torch.isclose(blocks, full))
        assert int((blocks == 0).sum()) == blocks_removed(blocks.numel(), 0.8)
        kept_norms = block_norms(w.detach(), 4)[blocks > 0]
        assert kept_norms.min() >= block_norms(w.detach(), 4)[blocks == 0].max()
    assert plan.details["realised_sparsity"] == pytest.approx(
        realised_sparsity(plan.masks, {k: p.shape for k, p in wb.prunable.items()}))
    assert 0.7 < plan.details["realised_sparsity"] < 0.8


# ----- training -----------------------------------------------------------------------------------------------------

def test_train_masked_calls_after_step_once_per_step(digits):
    from pruning_core import load_builtin

    seen = []
    train_masked(load_builtin("digits-mlp"), None, digits.train.x[:200], digits.train.y[:200], epochs=2,
                 batch_size=64, after_step=lambda step, loss: seen.append((step, loss)))
    assert [s for s, _ in seen] == list(range(8)) and all(math.isfinite(loss) for _, loss in seen)


def test_seqattn_is_not_worse_than_block_magnitude_on_the_mlp_and_a_broken_one_is_caught(demo_workbenches,
                                                                                        monkeypatch):
    wb = demo_workbenches["digits-mlp"]
    sa = [run_block_sparsification(wb, "seqattn", 0.9, seed, **FAST) for seed in range(3)]
    bm = [run_block_sparsification(wb, "block-magnitude", 0.9, seed, **FAST) for seed in range(3)]
    assert all(r.complete and r.realised_sparsity == pytest.approx(sa[0].realised_sparsity) for r in sa + bm)
    assert len(sa[0].records) == len(bm[0].records)  # the same budget in optimiser steps
    agrees, gap, se, _ = paired_verdict([r.accuracy for r in sa], [r.accuracy for r in bm])
    assert agrees, (gap, se)
    keep = experiment.block_keep_mask  # a broken SA++: drops the blocks of *highest* attention
    monkeypatch.setattr(experiment, "block_keep_mask", lambda scores, s, within=None: keep(-scores, s, within))
    broken = [run_block_sparsification(wb, "seqattn", 0.9, seed, **FAST).accuracy for seed in range(2)]
    assert paired_verdict(broken, [r.accuracy for r in bm[:2]])[0] is False


def test_paired_verdict_rule():
    assert paired_verdict([0.90, 0.91, 0.92], [0.80, 0.81, 0.80])[0] is True
    assert paired_verdict([0.80, 0.81, 0.80], [0.90, 0.91, 0.92])[0] is False
    assert paired_verdict([0.90, 0.95, 0.85], [0.92, 0.90, 0.93])[0] is False  # noisy but 2.7 points behind
    assert paired_verdict([0.900], [0.800])[0] is None


def test_a_stopped_run_keeps_its_finished_records(demo_workbenches):
    wb = demo_workbenches["digits-mlp"]
    calls = {"n": 0}

    def stop() -> bool:
        calls["n"] += 1
        return calls["n"] > 30

    run = run_block_sparsification(wb, "seqattn", 0.9, 0, should_stop=stop, **FAST)
    assert not run.complete and run.state is None
    assert [r["step"] for r in run.records] == list(range(30))
    assert {"block_sparsity", "loss", "accuracy", "phase"} <= set(run.frame().columns)
    assert run.frame().accuracy.notna().sum() >= 1  # one epoch (20 steps) finished: evaluated


def test_trained_methods_ratio_zero_is_the_identity_and_plans_carry_the_trained_model(demo_workbenches):
    wb = demo_workbenches["digits-mlp"]
    method = TrainedBlockSparsity("acdc", epochs=2, finetune_epochs=1).prepare(wb)
    zero = method.plan(0.0)
    assert not zero.masks and not zero.corrections and zero.details["trained"] is False
    plan = method.plan(0.5)
    assert method.plan(0.5).corrections.keys() == plan.corrections.keys()  # cached
    assert set(plan.masks) == {"fc1.weight", "fc2.weight"} and "fc3.weight" in plan.corrections
    with wb.applied(plan) as model:
        for name, mask in plan.masks.items():
            assert torch.count_nonzero(dict(model.named_parameters())[name][~mask]) == 0
        assert wb.evaluate_plan(plan).accuracy > 0.5


# ----- bad input ----------------------------------------------------------------------------------------------------

def test_bad_inputs_give_clear_messages(demo_workbenches):
    with pytest.raises(BlockError, match="larger than this layer"):
        block_norms(torch.randn(10, 64), 16)  # a 64 x 10 matrix: no 16 x 16 block fits
    with pytest.raises(BlockError, match="positive integer"):
        block_grid((8, 8), 0)
    with pytest.raises(BlockError, match="NaN"):
        block_norms(torch.full((8, 8), float("nan")), 4)
    with pytest.raises(BlockError, match="not possible"):
        block_keep_mask(torch.rand(4, 4), 1.0)
    _, skipped = block_layers({"w": (10, 64)}, 16)
    assert "larger than this layer" in skipped["w"]
    wb = demo_workbenches["digits-mlp"]
    with pytest.raises(PlanError, match="no layer of this model has 100 or more 64x64 blocks"):
        BlockMagnitude(block=64).prepare(wb)
    with pytest.raises(PlanError, match="would remove every weight"):
        TrainedBlockSparsity().prepare(wb).plan(1.0)
    with pytest.raises(BlockError, match="not possible"):
        run_block_sparsification(wb, "seqattn", 1.0)
    with pytest.raises(BlockError, match="unknown settings"):
        run_block_sparsification(wb, "seqattn", 0.5, epoch=3)


@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf")  # copying a ScriptModule
def test_trained_methods_say_why_a_torchscript_model_cannot_train(digits):
    from pruning_core import REGISTRY, Workbench, load_builtin

    wb = Workbench(torch.jit.script(load_builtin("digits-mlp").eval()), digits, device="cpu", name="scripted")
    assert REGISTRY["block-magnitude"].unavailable(wb) is None
    for key in ("seqattn", "acdc"):
        assert "TorchScript" in REGISTRY[key].unavailable(wb)
    with pytest.raises(BlockError, match="TorchScript"):
        run_block_sparsification(wb, "acdc", 0.5, epochs=1, finetune_epochs=0)



def test_the_check_judges_the_claims_and_draws_its_figures_quick(demo_workbenches):
    from pruning_core.checks.seqattn import figures, paper_check

    wb = demo_workbenches["digits-mlp"]
    report = paper_check(wb, quick=True)
    kinds = {}
    for r in report.results:
        kinds.setdefault(r.kind, []).append(r.agrees)
    assert kinds["claim"] == [True, True] and kinds["self-test"] == [True, True] and kinds["description"] == [None]
    assert set(report.frames["accuracy"].procedure) == {"seqattn", "acdc", "block-magnitude"}
    assert report.frames["attention"].kept.mean() == pytest.approx(1 - blocks_removed(512, 0.9) / 512)
    rows = figures(report, dense_accuracy=wb.dense_metrics().accuracy)
    assert [set(r) for r in rows] == [{"schedule", "accuracy"}, {"attention"}]


def test_a_model_without_enough_blocks_is_skipped_with_the_reason(digits):
    from torch import nn

    from pruning_core import REGISTRY, Workbench
    from pruning_core.checks.seqattn import paper_check

    wb = Workbench(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), digits, device="cpu", name="tiny")
    for key in ("block-magnitude", "seqattn", "acdc"):
        assert "fewer than 100" in REGISTRY[key].unavailable(wb)
    report = paper_check(wb, quick=True)
    assert [(r.kind, r.agrees) for r in report.results] == [("description", None)]
    assert "skipped" in report.results[0].figure and "48 blocks of 4x4" in report.results[0].figure
