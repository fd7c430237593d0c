"""A Hugging Face model folder (a BERT-style sentence encoder), uploaded as a zip or named as a folder on the
server, read as hostile input and loaded by ``encoder.load_sentence_encoder``.

Only what a weights-only encoder needs is read: ``config.json``, ``model.safetensors`` (or shards
``model-00001-of-0000N.safetensors`` with ``model.safetensors.index.json``), the tokenizer files
(``tokenizer.json``, ``vocab.txt``, ``tokenizer_config.json``, ``special_tokens_map.json``) and
sentence-transformers' pipeline files (``modules.json``, ``1_Pooling/config.json``, ``sentence_bert_config.json``,
``config_sentence_transformers.json``). Documentation (``README.md``, ``.gitattributes``, ``data_config.json``)
is skipped. Everything else is refused, before any byte is extracted: pickled weights (``pytorch_model.bin``,
.pt, .ckpt), code (.py, ``auto_map`` in a config), other weight formats, unknown files. Only model types whose
heads and FFN neurons ``text.groups`` can prune are accepted (``SUPPORTED_MODEL_TYPES``: BERT encoders, whose
layers are ``encoder.layer.i.attention.self.{query,key,value}``, ``intermediate.dense`` and ``output.dense``).

The checks, in order:

1. members, before any byte is extracted (``hf_files``): count, names, links, zip methods, declared sizes and
   compression ratios;
2. staging (``hf_files.stage``): each member copied into a private temporary folder (mode 0700), read to at
   most its declared size;
3. contents, on the staged copy: every JSON file parses to the expected type; ``config.json`` names a supported
   ``model_type``, no ``auto_map`` or ``quantization_config``, and sizes whose parameters fit the file limit;
   the tokenizer config asks for no custom code or class (file paths in it are dropped from the copy); every
   safetensors header (at most ``MAX_HEADER_BYTES``) declares tensors of known types whose offsets lie inside
   the file;
4. loading, offline, by ``load_sentence_encoder`` (weights from safetensors only, every weight the model has
   present in the files, values finite); the temporary folder is removed afterwards.

Every refusal raises ``HFFolderError`` (a ``loading.ModelLoadError``) with one sentence naming the file at fault.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from ..limits import human_bytes, max_file_bytes, too_large
from ..loading import LoadedModel, ModelLoadError
from .hf_files import (
    INDEX,
    MAX_MEMBERS,
    SHARD,
    SMALL_JSON,
    WEIGHTS,
    HFFolderError,
    Member,
    folder_members,
    plain_component,
    stage,
    zip_members,
)

MAX_HEADER_BYTES = 16 << 20  # a safetensors header lists names, types and offsets: kilobytes per thousand tensors
SUPPORTED_MODEL_TYPES = ("bert",)
SAFETENSORS_DTYPES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2,
                      "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "F64": 8, "I64": 8, "U64": 8}
_SIZE_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
              "max_position_embeddings", "type_vocab_size")
_MAX_CONFIG_INT = 10_000_000
_PIPELINE_MODULES = ("sentence_transformers.models.Transformer", "sentence_transformers.models.Pooling",
                     "sentence_transformers.models.Normalize")


def _json(folder: Path, rel: str, where: str, kind: type = dict):
    path = folder / rel
    try:
        value = json.loads(path.read_bytes())
    except (ValueError, RecursionError) as e:
        raise HFFolderError(f"{where}: {rel} is not valid JSON ({type(e).__name__}: {str(e)[:120]}).") from None
    if not isinstance(value, kind):
        raise HFFolderError(f"{where}: {rel} holds a JSON {type(value).__name__}, not a {kind.__name__}.")
    return value


def config_parameters(config: dict, where: str) -> int:
    """The parameter count a BERT config declares (embeddings, L layers, pooler), its sizes checked to be
    positive whole numbers: (V + P + T) H + 2H + L (4H^2 + 2HF + F + 9H) + H^2 + H."""
    sizes = {}
    for key in _SIZE_KEYS:
        v = config.get(key)
        if type(v) is not int or not 0 < v <= _MAX_CONFIG_INT:
            raise HFFolderError(f"{where}: config.json's {key} is {str(v)[:40]}; a whole number from 1 to "
                                f"{_MAX_CONFIG_INT:,} is expected.")
        sizes[key] = v
    h, f, n_layers = sizes["hidden_size"], sizes["intermediate_size"], sizes["num_hidden_layers"]
    if h % sizes["num_attention_heads"]:
        raise HFFolderError(f"{where}: config.json's hidden_size ({h}) is not a multiple of num_attention_heads "
                            f"({sizes['num_attention_heads']}).")
    embeddings = (sizes["vocab_size"] + sizes["max_position_embeddings"] + sizes["type_vocab_size"]) * h + 2 * h
    return embeddings + n_layers * (4 * h * h + 2 * h * f + f + 9 * h) + h * h + h


def check_config(folder: Path, where: str) -> dict:
    """config.json: a supported model type, no custom code or quantisation, parameters within the file limit."""
    config = _json(folder, "config.json", where)
    for key in ("auto_map", "quantization_config"):
        if key in config:
            raise HFFolderError(f"{where}: config.json asks for {key}; "
                                + ("code from model folders is never run (trust_remote_code is refused)."
                                   if key == "auto_map" else "quantised models are not read, save dense weights."))
    model_type = config.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise HFFolderError(f"{where}: config.json's model_type is {str(model_type)[:40]!r}; only BERT-style "
                            "encoders (model_type 'bert') are read, because their attention heads and FFN neurons "
                            "are what the structured methods know how to prune.")
    params = config_parameters(config, where)
    if 4 * params > max_file_bytes():
        raise HFFolderError(too_large(f"{where}: the {params:,} parameters its config.json describes", 4 * params))
    return config


def check_tokenizer_config(folder: Path, where: str) -> None:
    """tokenizer_config.json asks for no custom code or tokenizer class; file names in it (``vocab_file``,
    ``special_tokens_map_file``: transformers would read them from wherever they point, and sentence-transformers
    often saved its own cache paths there) are removed from the staged copy, so the folder's own files are read."""
    if not (folder / "tokenizer_config.json").is_file():
        return
    cfg = _json(folder, "tokenizer_config.json", where)
    if "auto_map" in cfg:
        raise HFFolderError(f"{where}: tokenizer_config.json sets 'auto_map'; code from model folders is never run "
                            "(trust_remote_code is refused).")
    cls = cfg.get("tokenizer_class")
    if cls is not None and cls not in ("BertTokenizer", "BertTokenizerFast"):
        raise HFFolderError(f"{where}: tokenizer_config.json asks for tokenizer class {str(cls)[:60]!r}; BERT "
                            "encoders use BertTokenizer.")
    kept = {k: v for k, v in cfg.items() if not k.endswith(("_file", "_files"))}
    if kept != cfg:
        (folder / "tokenizer_config.json").write_text(json.dumps(kept), encoding="utf-8")


def safetensors_bytes(path: Path, where: str) -> int:
    """The bytes of tensors a safetensors file declares, its header checked before anything is allocated: at most
    ``MAX_HEADER_BYTES`` and inside the file, a JSON table of known dtypes and whole-number shapes whose
    ``data_offsets`` each hold exactly shape x itemsize bytes inside the data after the header."""
    name = path.name
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise HFFolderError(f"{where}: {name} is too short to be a safetensors file.")
        n = int.from_bytes(head, "little")
        if n > MAX_HEADER_BYTES or 8 + n > size:
            raise HFFolderError(f"{where}: {name} declares a header of {human_bytes(n)}, "
                                + (f"more than a safetensors header ever needs ({human_bytes(MAX_HEADER_BYTES)})"
                                   if n > MAX_HEADER_BYTES else f"more than the file's {human_bytes(size)}")
                                + "; it is damaged or forged.")
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise HFFolderError(f"{where}: {name}'s header is not valid JSON ({type(e).__name__}).") from None
    if not isinstance(header, dict):
        raise HFFolderError(f"{where}: {name}'s header is not a table of tensors.")
    body, total = size - 8 - n, 0
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        shown = f"{where}: {name}: tensor {str(key)[:80]!r}"
        if not isinstance(entry, dict) or entry.get("dtype") not in SAFETENSORS_DTYPES:
            raise HFFolderError(f"{shown} has no known dtype.")
        shape, offsets = entry.get("shape"), entry.get("data_offsets")
        if (not isinstance(shape, list) or any(type(s) is not int or s < 0 for s in shape)
                or not isinstance(offsets, list) or len(offsets) != 2
                or any(type(o) is not int or o < 0 for o in offsets)):
            raise HFFolderError(f"{shown} has a malformed shape or offsets.")
        count = 1
        for s in shape:
            count *= s
        nbytes = count * SAFETENSORS_DTYPES[entry["dtype"]]
        start, end = offsets
        if end - start != nbytes or end > body:
            raise HFFolderError(f"{shown} declares {'x'.join(map(str, shape)) or 'a scalar'} ({human_bytes(nbytes)})"
                                f" at bytes {start:,}-{end:,}, but the file holds {human_bytes(body)} of tensor "
                                "data; it is damaged or forged.")
        total += nbytes
    return total


def check_weights(folder: Path, where: str) -> None:
    """model.safetensors, or the index and every shard it names, with checked headers within the file limit."""
    if (folder / WEIGHTS).is_file():
        files = [folder / WEIGHTS]
    elif (folder / INDEX).is_file():
        index = _json(folder, INDEX, where)
        weight_map = index.get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise HFFolderError(f"{where}: {INDEX} has no weight_map.")
        shards = set(weight_map.values())
        bad = [s for s in shards if not isinstance(s, str) or not SHARD.fullmatch(s) or not (folder / s).is_file()]
        if bad:
            raise HFFolderError(f"{where}: {INDEX} names {str(bad[0])[:80]!r}, which is not a shard file of the "
                                "folder (model-0000k-of-0000N.safetensors).")
        files = [folder / s for s in sorted(shards)]
    else:
        raise HFFolderError(f"{where}: holds no {WEIGHTS} (nor a sharded {INDEX}); only safetensors weights are "
                            "read, and nothing is downloaded in their place.")
    total = sum(safetensors_bytes(p, where) for p in files)
    if total > max_file_bytes():
        raise HFFolderError(too_large(f"{where}: its weights", total))


def check_pipeline(folder: Path, where: str) -> None:
    """modules.json: only the Transformer, Pooling and Normalize modules, each in a folder of the model."""
    if not (folder / "modules.json").is_file():
        return
    for module in _json(folder, "modules.json", where, list):
        kind = module.get("type") if isinstance(module, dict) else None
        path = module.get("path", "") if isinstance(module, dict) else None
        if kind not in _PIPELINE_MODULES:
            raise HFFolderError(f"{where}: modules.json asks for {str(kind)[:80]!r}; only the Transformer, "
                                "Pooling (mean) and Normalize modules of sentence-transformers are implemented.")
        if not isinstance(path, str) or (path and (not plain_component(path) or "/" in path or "\\" in path)):
            raise HFFolderError(f"{where}: modules.json names the folder {str(path)[:80]!r}; plain folder names "
                                "inside the model folder are expected.")


def load_staged(folder: Path, where: str) -> LoadedModel:
    """The encoder of a staged, checked folder (module docstring, steps 3 and 4), as a ``LoadedModel``."""
    from ..archives import refuse_full_unpickling
    from ..loading import check_tensors
    from .encoder import EncoderLoadError, load_sentence_encoder

    for rel in SMALL_JSON:
        if (folder / rel).is_file():
            _json(folder, rel, where, list if rel == "modules.json" else dict)
    config = check_config(folder, where)
    check_tokenizer_config(folder, where)
    check_pipeline(folder, where)
    check_weights(folder, where)
    if not (folder / "tokenizer.json").is_file():
        raise HFFolderError(f"{where}: holds no tokenizer.json; the tokenizer is read from the folder only.")
    try:
        with refuse_full_unpickling():
            encoder = load_sentence_encoder(folder)
    except EncoderLoadError as e:
        raise HFFolderError(f"{where}: {str(e).replace(str(folder), 'the folder')}") from None
    except Exception as e:  # transformers and tokenizers raise many types on files they cannot read
        first = (str(e).splitlines() or [""])[0].replace(str(folder), "the folder")[:200]
        raise HFFolderError(f"{where}: could not be loaded ({type(e).__name__}: {first}).") from None
    encoder.folder = None  # the staged copy is removed once loaded
    try:
        check_tensors(encoder.state_dict(), where)
    except ModelLoadError as e:
        raise HFFolderError(str(e)) from None
    c, params = config, sum(p.numel() for p in encoder.parameters())
    about = (f"A Hugging Face BERT encoder ({c['num_hidden_layers']} layers, {c['num_attention_heads']} heads, hidden "
             f"{c['hidden_size']}, FFN {c['intermediate_size']}; {params:,} parameters), read offline from "
             "safetensors: structured methods remove whole attention heads and FFN neurons. Embeddings are "
             f"{'mean-pooled and L2-normalised' if encoder.normalize else 'mean-pooled'}.")
    return LoadedModel(encoder, where, "safetensors", None, None,
                       [n for n in (about, tokenizer_note(encoder, config, where)) if n])


def tokenizer_note(encoder, config: dict, where: str) -> str:
    """'' when the folder's tokenizer has the bundled MiniLM's vocabulary (which tokenises the bundled sentences
    and uploaded texts), else a warning that figures on those texts are not meaningful; refused when the bundled
    token ids would not even index the model's embedding table."""
    from ..data import DataError
    from ..datasets.text import load_tokenizer

    try:
        bundled = load_tokenizer().get_vocab()
    except DataError:
        return ""
    if encoder.tokenizer.get_vocab() == bundled:
        return ""
    if config["vocab_size"] < len(bundled):
        raise HFFolderError(f"{where}: its vocabulary has {config['vocab_size']:,} tokens, fewer than the "
                            f"{len(bundled):,} of the bundled tokenizer that prepares the texts; the model could not "
                            "read them.")
    return ("Its tokenizer differs from the bundled MiniLM's, which tokenises the bundled sentences and uploaded "
            "texts: their token ids do not mean the same words to this model, so only agreement with the dense "
            "model on those inputs is meaningful, not what the embeddings say about the texts.")


def _loaded(members_of: Callable[[], list[Member]], where: str) -> LoadedModel:
    with tempfile.TemporaryDirectory(prefix="hf-folder-") as tmp:
        folder = Path(tmp) / "model"
        folder.mkdir(mode=0o700)
        stage(members_of(), folder, where)
        return load_staged(folder, where)


def load_hf_folder_zip(data: bytes, name: str = "model.zip") -> LoadedModel:
    """The sentence encoder in a zipped Hugging Face model folder (module docstring). Nothing but
    ``HFFolderError`` (a ``ModelLoadError``) leaves this function."""
    if bytes(data[:2]) != b"PK":
        raise HFFolderError(f"{name}: not a zip archive; zip the model folder and upload the .zip file.")
    if len(data) > max_file_bytes():
        raise HFFolderError(too_large(name, len(data)))
    if data.count(b"PK\x01\x02") > MAX_MEMBERS:  # before zipfile parses every central-directory entry
        raise HFFolderError(f"{name}: holds more than {MAX_MEMBERS:,} members; a model folder holds a few dozen.")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return _loaded(lambda: zip_members(zf, name), name)
    except HFFolderError:
        raise
    except MemoryError:
        raise HFFolderError(f"{name}: this server does not have the memory to load this model.") from None
    except Exception as e:  # zipfile and zlib raise many types on damaged archives
        raise HFFolderError(f"{name}: not a readable model folder; the zip is damaged, truncated or not a model "
                            f"({type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}).") from None


def load_hf_folder(path: str | os.PathLike, within: str | os.PathLike | None = None) -> LoadedModel:
    """The sentence encoder in a Hugging Face model folder on the server (module docstring); ``within``: the
    folder and every link in it must resolve inside it (the data root). Nothing but ``HFFolderError`` leaves."""
    where = str(path)[-160:]
    try:
        return _loaded(lambda: folder_members(path, within), where)
    except HFFolderError:
        raise
    except MemoryError:
        raise HFFolderError(f"{where}: this server does not have the memory to load this model.") from None
    except Exception as e:  # a last net: nothing but HFFolderError leaves this function
        raise HFFolderError(f"{where}: cannot be read as a model folder ({type(e).__name__}: "
                            f"{(str(e).splitlines() or [''])[0][:200]}).") from None


__all__ = ["MAX_HEADER_BYTES", "SAFETENSORS_DTYPES", "SUPPORTED_MODEL_TYPES", "HFFolderError", "check_config",
           "check_pipeline", "check_tokenizer_config", "check_weights", "config_parameters", "load_hf_folder",
           "load_hf_folder_zip", "load_staged", "safetensors_bytes", "tokenizer_note"]
