"""Which files of a Hugging Face model folder are read, checked as hostile input, and copied into a private
folder: the first two steps of ``hf_folder`` (see its docstring for the whole sequence).

1. members: count (``MAX_MEMBERS``), names (no absolute paths, ``..``, backslashes, control characters; a zip's
   files at its top or inside one top-level folder), links (a zip's symbolic links are refused; a server
   folder's links must resolve inside ``within``), zip methods, encryption, declared sizes (each JSON file at
   most ``MAX_JSON_BYTES``, each tokenizer file ``MAX_TOKENIZER_BYTES``, all at most ``limits.max_file_bytes``)
   and compression ratios (``MAX_RATIO``: a zip bomb); every file is one the loader reads (``SMALL_JSON``,
   ``TOKENIZER_FILES``, ``WEIGHTS`` or its shards), documentation it skips (``SKIPPED``), or a refusal that says
   why (pickles, code, other weight formats, anything else);
2. staging: each member copied into a private folder, read to at most its declared size.
"""

from __future__ import annotations

import io
import os
import re
import stat
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..limits import human_bytes, max_file_bytes, too_large
from ..loading import ModelLoadError

MAX_MEMBERS = 1_000
MAX_JSON_BYTES = 4 << 20
MAX_TOKENIZER_BYTES = 64 << 20
MAX_RATIO = 200  # above 1 MiB; weights barely compress, and even heavily pruned ones stay far below this
SMALL_JSON = ("config.json", "tokenizer_config.json", "special_tokens_map.json", "modules.json",
              "1_Pooling/config.json", "sentence_bert_config.json", "config_sentence_transformers.json",
              "model.safetensors.index.json")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")
WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"
SHARD = re.compile(r"model-\d{5}-of-\d{5}\.safetensors")
SKIPPED = ("README.md", ".gitattributes", "data_config.json")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".joblib")
CODE_SUFFIXES = (".py", ".pyc", ".so", ".dylib", ".dll", ".sh", ".ipynb")
OTHER_WEIGHTS = (".h5", ".msgpack", ".onnx", ".ot", ".tflite", ".gguf", ".npz", ".npy", ".xml")


class HFFolderError(ModelLoadError):
    """A Hugging Face model folder refused before or while loading; the message names the file at fault."""


@dataclass(frozen=True)
class Member:
    """One file of the folder: its name relative to the folder (``1_Pooling/config.json``), declared size in
    bytes and a function that opens it for binary reading."""

    name: str
    size: int
    open: Callable[[], io.BufferedIOBase]


def plain_component(part: str) -> bool:
    """Whether ``part`` is a plain file or folder name: not empty, ``.`` or ``..``, no colon (a drive letter),
    no control characters."""
    return part not in ("", ".", "..") and ":" not in part and not any(ord(c) < 32 or ord(c) == 127 for c in part)


def _role(rel: str, where: str) -> str | None:
    """"read" for a file this loader uses, None for documentation it skips; refuses everything else."""
    base = rel.rsplit("/", 1)[-1]
    lower = base.lower()
    if rel in SMALL_JSON or rel in TOKENIZER_FILES or rel == WEIGHTS or SHARD.fullmatch(rel):
        return "read"
    if rel in SKIPPED:
        return None
    if lower.endswith(PICKLE_SUFFIXES):
        raise HFFolderError(f"{where}: {rel[:120]!r} holds pickled weights, which can run code when loaded; only "
                            "model.safetensors is read, so remove it from the folder (or convert it to "
                            "safetensors).")
    if lower.endswith(CODE_SUFFIXES):
        raise HFFolderError(f"{where}: {rel[:120]!r} is code; code from model folders is never run, so remove it "
                            "(models that need their own code are not supported).")
    if lower.endswith(OTHER_WEIGHTS):
        raise HFFolderError(f"{where}: {rel[:120]!r} holds weights in a format this loader does not read; only "
                            "model.safetensors is read, so remove it from the folder.")
    raise HFFolderError(f"{where}: {rel[:120]!r} is not one of the files a sentence-encoder folder holds "
                        f"({', '.join(('config.json', WEIGHTS, *TOKENIZER_FILES, *SMALL_JSON[1:]))}); remove it.")


def _check_size(rel: str, size: int, where: str) -> None:
    limit = MAX_JSON_BYTES if rel in SMALL_JSON else MAX_TOKENIZER_BYTES if rel in TOKENIZER_FILES else None
    if limit is not None and size > limit:
        raise HFFolderError(f"{where}: {rel!r} declares {human_bytes(size)}; such a file may be at most "
                            f"{human_bytes(limit)}.")


def zip_members(zf: zipfile.ZipFile, where: str) -> list[Member]:
    """The files of an opened zip that the loader reads, every member checked (module docstring, step 1)."""
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        raise HFFolderError(f"{where}: holds {len(infos):,} members; a model folder holds a few dozen.")
    names = [i.filename for i in infos]
    for info in infos:
        name = info.filename
        if (name.startswith("/") or "\\" in name or len(name) > 512
                or not all(plain_component(p) for p in name.rstrip("/").split("/"))):
            raise HFFolderError(f"{where}: holds a member named {name[:120]!r}; absolute paths, '..', backslashes, "
                                "drive letters and control characters are refused.")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise HFFolderError(f"{where}: {name[:120]!r} is a symbolic link; links are refused.")
    if len(set(names)) != len(names):
        raise HFFolderError(f"{where}: holds two members with the same name; zip readers disagree on which they "
                            "read, so it was not opened.")
    files = [i for i in infos if not i.is_dir() and not i.filename.startswith("__MACOSX/")]
    tops = {i.filename.split("/", 1)[0] for i in files}
    strip = ""
    if "config.json" not in {i.filename for i in files} and len(tops) == 1 and all("/" in i.filename for i in files):
        strip = tops.pop() + "/"  # the folder itself was zipped: its files are inside one top-level folder
    members = []
    for info in files:
        rel = info.filename[len(strip):]
        if _role(rel, where) is None:
            continue
        if info.flag_bits & 0x1:
            raise HFFolderError(f"{where}: {rel[:120]!r} is encrypted; zip the folder without a password.")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise HFFolderError(f"{where}: {rel[:120]!r} uses zip compression method {info.compress_type}; only "
                                "the standard methods (stored, deflate) are read.")
        if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
            raise HFFolderError(f"{where}: {rel[:120]!r} declares a size that differs from what it holds; the zip "
                                "is damaged or forged.")
        _check_size(rel, info.file_size, where)
        if info.file_size > (1 << 20) and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise HFFolderError(f"{where}: {rel[:120]!r} expands {info.file_size / max(info.compress_size, 1):,.0f} "
                                f"times ({human_bytes(info.compress_size)} to {human_bytes(info.file_size)}); model "
                                "files never compress that much, so this is a zip bomb and nothing was extracted.")
        members.append(Member(rel, info.file_size, lambda i=info: zf.open(i)))
    return _checked_total(members, where)


def _checked_total(members: list[Member], where: str) -> list[Member]:
    total = sum(m.size for m in members)
    if total > max_file_bytes():
        raise HFFolderError(too_large(f"{where}: its files", total))
    return members


def _open_regular(path: str, limit: int) -> io.BufferedIOBase:
    """``path`` opened for reading, refused unless it is (still) a regular file of at most ``limit`` bytes."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
        os.close(fd)
        raise HFFolderError(f"{Path(path).name!r} changed while it was read (no longer a regular file within "
                            "its size).")
    return os.fdopen(fd, "rb")


def folder_members(folder: str | os.PathLike, within: str | os.PathLike | None = None) -> list[Member]:
    """The files of a server-side model folder that the loader reads (module docstring, step 1). With
    ``within``, the folder and the target of every link in it must lie inside ``within`` once resolved."""
    where = str(folder)[-160:]
    base = Path(os.path.realpath(within)) if within is not None else None
    real = Path(os.path.realpath(folder))
    if base is not None and not real.is_relative_to(base):
        raise HFFolderError(f"{where}: only folders inside {str(base)!r} can be read on this server.")
    if not real.is_dir():
        raise HFFolderError(f"{where}: is not a folder; give the path of a Hugging Face model folder.")
    members: list[Member] = []
    seen = 0
    for dirpath, dirnames, filenames in os.walk(real, followlinks=False):
        rel_dir = os.path.relpath(dirpath, real)
        seen += len(dirnames) + len(filenames)
        if seen > MAX_MEMBERS:
            raise HFFolderError(f"{where}: holds more than {MAX_MEMBERS:,} entries; a model folder holds a few "
                                "dozen.")
        for d in dirnames:
            if os.path.islink(os.path.join(dirpath, d)):
                raise HFFolderError(f"{where}: {d[:120]!r} is a link to a folder; links to folders are refused.")
        for f in sorted(filenames):
            rel = f if rel_dir == "." else f"{rel_dir}/{f}"
            if _role(rel, where) is None:
                continue
            path = os.path.join(dirpath, f)
            target = Path(os.path.realpath(path))
            if base is not None and not target.is_relative_to(base):
                raise HFFolderError(f"{where}: {rel[:120]!r} is a link to a file outside {str(base)!r}; links out "
                                    "of the data root are refused.")
            info = os.stat(target)
            if not stat.S_ISREG(info.st_mode):
                raise HFFolderError(f"{where}: {rel[:120]!r} is not a regular file (a pipe, socket or device).")
            _check_size(rel, info.st_size, where)
            members.append(Member(rel, info.st_size, lambda p=str(target), n=info.st_size: _open_regular(p, n)))
    return _checked_total(members, where)


def stage(members: list[Member], folder: Path, where: str) -> None:
    """Copy ``members`` into ``folder`` (private, empty), each read to at most its declared size."""
    for m in members:
        out = folder / m.name
        out.parent.mkdir(mode=0o700, exist_ok=True)
        left = m.size
        with m.open() as src, open(out, "xb") as dst:
            while True:
                piece = src.read(min(1 << 20, left + 1))
                if not piece:
                    break
                left -= len(piece)
                if left < 0:
                    raise HFFolderError(f"{where}: {m.name!r} holds more than the {m.size:,} bytes it declares.")
                dst.write(piece)


__all__ = ["CODE_SUFFIXES", "INDEX", "MAX_JSON_BYTES", "MAX_MEMBERS", "MAX_RATIO", "MAX_TOKENIZER_BYTES",
           "OTHER_WEIGHTS", "PICKLE_SUFFIXES", "SHARD", "SKIPPED", "SMALL_JSON", "TOKENIZER_FILES", "WEIGHTS",
           "HFFolderError", "Member", "folder_members", "plain_component", "stage", "zip_members"]
