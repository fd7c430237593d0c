"""Files and folders named by a path on the server, confined to one data root.

A person may type the path of a large file or folder that already lies on the server instead of uploading it.
That is off unless whoever starts the app names a folder in ``PRUNING_EXPLORER_DATA_ROOT``; then a typed path
(relative to that folder, or absolute) is resolved with every symbolic link followed (``os.path.realpath``) and
accepted only when the result lies inside the root, so neither ``..`` nor a link that points out of the root
reaches anything else. Files are read with the same size limit as uploads (``limits.max_file_bytes``), checked
on the opened file before its bytes are read.

``load_server_model`` (a model file, or a Hugging Face folder through ``text.hf_folder``) and
``load_server_data`` (a folder of class folders of images, an .npz, a .csv of texts) read what a path names with
the same loaders, checks and errors as uploads of the same kind.

What a link inside the root may still do: point at another file inside the root (a Hugging Face cache's
snapshot folders are links into its blobs), which is allowed. The root itself should be a folder the people
using the app may read entirely.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from .limits import human_bytes, max_file_bytes, too_large

DATA_ROOT_VARIABLE = "PRUNING_EXPLORER_DATA_ROOT"
MAX_PATH_CHARS = 4096
KINDS = ("file", "folder", "any")


class ServerPathError(ValueError):
    """A typed server path that is off, outside the data root, missing or too large; the message says which."""


def data_root() -> Path | None:
    """The resolved data root (``PRUNING_EXPLORER_DATA_ROOT``), or None when server paths are off (unset, empty,
    or not an existing folder)."""
    text = os.environ.get(DATA_ROOT_VARIABLE, "").strip()
    if not text:
        return None
    root = Path(os.path.realpath(text))
    return root if root.is_dir() else None


def how_to_enable() -> str:
    """One sentence: how to turn server paths on (and why they are off when the variable names no folder)."""
    named = os.environ.get(DATA_ROOT_VARIABLE, "").strip()
    why = f" ({DATA_ROOT_VARIABLE} names {named[:160]!r}, which is not a folder)" if named else ""
    return (f"Reading files by their path on the server is off{why}. To turn it on, start the app with the "
            f"environment variable {DATA_ROOT_VARIABLE} set to the folder people may read from (for example "
            f"`{DATA_ROOT_VARIABLE}=/srv/models bash scripts/run_app.sh`); paths are then typed relative to it.")


def resolve_server_path(typed: str, kind: str = "any") -> Path:
    """The real path (links followed) of ``typed``: relative to the data root, or absolute; refused unless it
    lies inside the root and is a regular file (``kind`` "file"), a folder ("folder") or either ("any")."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    root = data_root()
    if root is None:
        raise ServerPathError(how_to_enable())
    text = str(typed).strip()
    if not text:
        raise ServerPathError(f"Type a path inside the data root {str(root)!r}.")
    if len(text) > MAX_PATH_CHARS or any(ord(c) < 32 for c in text):
        raise ServerPathError("The path is too long or holds control characters.")
    shown = text[:160]
    real = Path(os.path.realpath(root / text))  # an absolute ``text`` replaces the root here
    if not real.is_relative_to(root):
        raise ServerPathError(f"{shown!r} is outside the data root {str(root)!r} (after following links); only "
                              "files and folders inside it can be read on this server.")
    try:
        info = os.stat(real)
    except OSError:
        raise ServerPathError(f"{shown!r} does not exist inside the data root {str(root)!r}.") from None
    if stat.S_ISDIR(info.st_mode):
        if kind == "file":
            raise ServerPathError(f"{shown!r} is a folder; a file is expected here.")
    elif stat.S_ISREG(info.st_mode):
        if kind == "folder":
            raise ServerPathError(f"{shown!r} is a file; a folder is expected here.")
        if info.st_size > max_file_bytes():
            raise ServerPathError(too_large(shown, info.st_size))
    else:
        raise ServerPathError(f"{shown!r} is not a regular file or folder (a pipe, socket or device).")
    return real


def read_server_file(typed: str, limit: int | None = None) -> tuple[bytes, str]:
    """(bytes, file name) of the regular file ``typed`` names inside the data root (``resolve_server_path``),
    at most ``limit`` bytes (default: the server's file limit), the size checked on the opened file (not
    following a link swapped in since) and the read stopped one byte past it."""
    limit = max_file_bytes() if limit is None else min(limit, max_file_bytes())
    real = resolve_server_path(typed, "file")
    try:
        fd = os.open(real, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise ServerPathError(f"{real.name!r} cannot be opened ({e.strerror}).") from None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ServerPathError(f"{real.name!r} changed while it was opened (no longer a regular file).")
        if info.st_size > limit:
            raise ServerPathError(too_large(real.name, info.st_size) if limit == max_file_bytes() else
                                  f"{real.name!r} is {human_bytes(info.st_size)}; at most {human_bytes(limit)} "
                                  "is read for this kind of file.")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ServerPathError(f"{real.name!r} grew past {human_bytes(limit)} while it was read.")
    return data, real.name


def server_path_stamp(real: Path, max_entries: int = 50_000) -> str:
    """An identity for caching what was read from ``real``: its path, size and modification time, and for a
    folder those of the files in it (two levels deep, at most ``max_entries``), so that replacing a file changes
    it. A sha1 of these, not of the contents (which may be gigabytes)."""
    info = os.stat(real)
    parts = [f"{real}:{info.st_size}:{info.st_mtime_ns}"]
    if stat.S_ISDIR(info.st_mode):
        for top in sorted(os.scandir(real), key=lambda e: e.name)[:max_entries]:
            inner = [top]
            if top.is_dir(follow_symlinks=False):
                with os.scandir(top.path) as it:
                    inner += sorted(it, key=lambda e: e.name)[:max_entries]
            for entry in inner:
                try:
                    st = entry.stat()
                except OSError:
                    continue
                parts.append(f"{entry.path}:{st.st_size}:{st.st_mtime_ns}")
            if len(parts) > max_entries:
                break
    return hashlib.sha1("\n".join(parts).encode("utf-8", "surrogateescape")).hexdigest()


def load_server_model(typed: str, architecture: str | None = None, trust_pickle: bool = False):
    """The ``LoadedModel`` a typed server path names: a Hugging Face model folder (``text.hf_folder``, links
    confined to the data root) or a model file (``loading.load_model_file``, read within the size limit).
    Every refusal is a ``loading.ModelLoadError``."""
    from .loading import ModelLoadError, load_model_file

    try:
        real = resolve_server_path(typed, "any")
        if real.is_dir():
            from .text.hf_folder import load_hf_folder

            return load_hf_folder(real, within=data_root())
        data, name = read_server_file(str(real))
    except ServerPathError as e:
        raise ModelLoadError(str(e)) from None
    return load_model_file(data, name, architecture=architecture, trust_pickle=trust_pickle)


SERVER_DATA_KINDS = {".npz": "npz", ".csv": "texts"}  # and a folder: "images"


def server_data_kind(typed: str) -> str:
    """What a typed server path holds: "images" (a folder of class folders), "npz" or "texts" (a .csv)."""
    from .data import DataError

    try:
        real = resolve_server_path(typed, "any")
    except ServerPathError as e:
        raise DataError(str(e)) from None
    if real.is_dir():
        return "images"
    kind = SERVER_DATA_KINDS.get(real.suffix.lower())
    if kind is None:
        raise DataError(f"{real.name!r} is neither a folder of images nor an .npz or .csv file.")
    return kind


def load_server_data(typed: str, **image_options):
    """The ``DataSplits`` a typed server path names: a folder of class folders of images
    (``datasets.load_image_folder``, confined to the data root; ``image_options`` as for ``image_splits``), an
    .npz (``data.load_npz``) or a CSV of texts (``datasets.load_text_csv``), each within the size limits of an
    upload of the same kind. Every refusal is a ``data.DataError``."""
    from .data import DataError, load_npz
    from .datasets import load_image_folder, load_text_csv
    from .datasets.text_csv import MAX_CSV_BYTES

    kind = server_data_kind(typed)
    try:
        if kind == "images":
            return load_image_folder(resolve_server_path(typed, "folder"), within=data_root(), **image_options)
        data, name = read_server_file(typed, MAX_CSV_BYTES if kind == "texts" else None)
    except ServerPathError as e:
        raise DataError(str(e)) from None
    return load_npz(data, name) if kind == "npz" else load_text_csv(data, name=name)


__all__ = ["DATA_ROOT_VARIABLE", "KINDS", "MAX_PATH_CHARS", "SERVER_DATA_KINDS", "ServerPathError", "data_root",
           "how_to_enable", "load_server_data", "load_server_model", "read_server_file", "resolve_server_path",
           "server_data_kind", "server_path_stamp"]
