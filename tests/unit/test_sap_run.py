"""The SAP paper's retraining loop (``experiments.sap``): rounds, stopping and resuming bit for bit, the
baselines, the fine-tuning variant and what rewinding goes back to."""

from __future__ import annotations

import copy
import math

import pandas as pd
import pytest
import torch

from pruning_core import Workbench, load_builtin
from pruning_core.experiments.sap import run_sap
from pruning_core.experiments.training import reinitialise, trainable_copy
from pruning_core.models.train_demo import demo_initialisation

# ----- the paper's loop ---------------------------------------------------------------------------------------

def _strip(records):
    return pd.DataFrame(records).drop(columns="seconds")


def test_run_sap_rounds_stop_and_resume_exactly(digits):
    wb = Workbench(load_builtin("digits-mlp"), digits, device="cpu", name="digits-mlp")
    dense = copy.deepcopy(wb.model.state_dict())
    reference_run = run_sap(wb, scope="layer", rounds=3, epochs=2)
    reference = list(reference_run)
    assert [r["round"] for r in reference] == [0, 1, 2, 3]
    assert reference[0]["remaining"] == 1.0 and reference[0]["accuracy"] == pytest.approx(
        wb.dense_metrics().accuracy)
    remaining = [r["remaining"] for r in reference]
    assert all(b < a for a, b in zip(remaining, remaining[1:], strict=False))
    for r in reference[1:]:
        assert r["removed"] == r["planned"] > 0 and r["rule_gap"] <= 1 + 1e-9
        assert r["pruned_fraction"] == pytest.approx(r["removed"] / (r["kept"] + r["removed"]))
    # round 1 prunes floor(d_l * PQI_l) in every layer (the shortcut), PQI taken on the round-0 model
    layer_pqi = {row["layer"]: row["pqi"] for row in reference_run.layer_rows if row["round"] == 0}
    floors = sum(math.floor(wb.prunable[k].numel() * v) for k, v in layer_pqi.items())
    assert floors - len(layer_pqi) <= reference[1]["removed"] <= floors

    polls = {"n": 0, "limit": 25}

    def stop() -> bool:  # stop in the middle of round 2's training
        polls["n"] += 1
        return polls["n"] > polls["limit"]

    run = run_sap(wb, scope="layer", rounds=3, epochs=2, should_stop=stop)
    got = list(run)
    assert 1 <= len(got) < 4 and not run.finished
    polls["limit"] = 10 ** 9
    got += list(run)  # iterating again resumes with the round that was interrupted
    assert run.finished
    pd.testing.assert_frame_equal(_strip(got), _strip(reference))  # bit for bit, NaN for NaN
    assert all(torch.equal(v, dense[k]) for k, v in wb.model.state_dict().items())  # the workbench is untouched
    assert len(run.layer_rows) == 4 * len(wb.prunable)


def test_run_sap_baselines_and_finetune_variant(digits):
    wb = Workbench(load_builtin("digits-mlp"), digits, device="cpu", name="digits-mlp")
    one_shot = list(run_sap(wb, scope="global", rounds=2, epochs=1, baseline="one-shot"))
    assert [r["run"] for r in one_shot] == ["one-shot 20%"] * 3
    assert one_shot[1]["pruned_fraction"] == pytest.approx(0.2, abs=1e-3)
    # one-shot ranks the first trained state: round 2's mask is global magnitude at 36% removed, nearly
    kept = one_shot[2]["remaining"]
    assert kept == pytest.approx(0.64, abs=1e-3)
    lottery = run_sap(wb, scope="global", rounds=2, epochs=1, baseline="lottery")
    list(lottery)
    assert lottery.config["init"].startswith("demo initialisation of digits-mlp")
    tuned = run_sap(wb, mode="finetune", scope="neuron", rounds=1, epochs=1)
    records = list(tuned)
    assert records[1]["label"] == "variant" and tuned.config["lr"] == pytest.approx(1e-3)
    with pytest.raises(ValueError):
        run_sap(wb, mode="retrain")
    with pytest.raises(ValueError, match="0 < p < q"):
        run_sap(wb, p=2.0, q=1.0)


def test_torchscript_models_are_retrained_and_rewound_to_a_seeded_initialisation(digits):
    scripted = torch.jit.script(load_builtin("digits-mlp"))
    with pytest.raises(ValueError, match="reset_parameters"):  # TorchScript exposes no reset_parameters
        reinitialise(trainable_copy(scripted))
    assert all(p.is_leaf for p in trainable_copy(scripted).parameters())
    wb = Workbench(scripted, digits, device="cpu", name="uploaded.pt")
    run = run_sap(wb, scope="global", rounds=1, epochs=1)
    records = list(run)
    assert run.finished and records[1]["remaining"] < 1.0
    assert run.config["init"].startswith("a seeded initialisation of the digits-mlp architecture")
    expected = demo_initialisation("digits-mlp").state_dict()
    assert all(torch.equal(run.init_state[k], expected[k]) for k in expected)


def test_gradient_clipping_bounds_every_step(digits):
    """``clip_grad_norm`` (the SAP authors clip at 1): with a tiny bound SGD's steps are tiny, whatever the
    gradient; without it the same run moves the weights far."""
    from pruning_core.experiments.training import train_masked

    wb = Workbench(load_builtin("digits-mlp"), digits, device="cpu", name="digits-mlp")
    x, y = wb.data.train.x[:256], wb.data.train.y[:256]
    start = {k: v.clone() for k, v in wb.model.state_dict().items()}

    def moved(**kw) -> float:
        model = trainable_copy(wb.model)
        reinitialise(model, 0)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        train_masked(model, None, x, y, 2, lr=0.5, batch_size=64, optimizer="sgd", weight_decay=0.0, **kw)
        return max(float((v - before[k]).abs().max()) for k, v in model.state_dict().items())

    # 8 steps, each of norm <= lr x 1e-6 with Nesterov momentum 0.9 (at most 1.9 x the clipped gradient per step)
    assert moved(clip_grad_norm=1e-6) <= 8 * 0.5 * 1e-6 * 1.9 * 10
    assert moved() > 1e-2
    with pytest.raises(ValueError, match="clip_grad_norm"):
        moved(clip_grad_norm=0.0)
    assert all(torch.equal(v, start[k]) for k, v in wb.model.state_dict().items())
    run = run_sap(wb, scope="global", rounds=0, clip_grad_norm=1.0, optimizer="sgd")
    assert run.config["clip_grad_norm"] == 1.0
