"""Zip-based model files checked entry by entry before any torch reader sees them, and a reader for
``torch.export`` archives (.pt2) that cannot reach full unpickling.

Three kinds of PyTorch file are zip archives: ``torch.save`` checkpoints, TorchScript (``torch.jit.save``) and
``torch.export.save`` programs. Their readers trust the archive: ``torch.export.load`` retries any pickle that
fails the weights-only check with ``torch.load(weights_only=False)``, falls back to an older layout read from
other entry names, and loads AOTInductor shared libraries; zip readers disagree on which of two same-named
entries they return. So an uploaded archive is accepted only when it has exactly the layout this torch version
writes (``open_archive`` and the ``check_*`` functions):

  * one top-level folder, no duplicate names, no ``..``, absolute or backslash names, no directory entries;
  * only the entry names the writer produces, each stored (not compressed) where the writer stores it, and sizes
    that add up to at most ``limits.max_file_bytes()``;
  * for .pt2: no pickled weights or constants, no custom or opaque objects, no compiled code (AOTInductor,
    ExecuTorch), sample inputs that load weights-only, graph call targets in torch's operator namespaces only,
    and shape expressions made of sympy constructors only.

``load_exported_program`` then reads the tensors itself (raw bytes, bounds-checked views) and hands the
deserialiser ready objects, so no branch that unpickles is reachable; ``refuse_full_unpickling`` additionally
makes any ``torch.load`` without ``weights_only=True`` raise in the loading thread while an untrusted file is
read. What remains is a program of tensor operations: it runs when the model is evaluated (see the README's
threat model).
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import threading
import warnings
import zipfile
from dataclasses import dataclass

import torch

from .limits import max_file_bytes, too_large

MAX_ENTRIES = 100_000
MAX_PICKLE_BYTES = 64 << 20  # a data.pkl / constants.pkl / sample-input pickle; real ones are kilobytes
_COMPONENT = re.compile(r"^[A-Za-z0-9_.\-]+$")


class ArchiveError(ValueError):
    """An archive refused before loading; the message is for the person who uploaded it."""


@dataclass
class Archive:
    """A zip file whose names passed the generic checks: ``entries`` maps names relative to ``root`` to infos."""

    zf: zipfile.ZipFile
    root: str
    entries: dict[str, zipfile.ZipInfo]

    def read(self, name: str, limit: int | None = None) -> bytes:
        info = self.entries[name]
        if limit is not None and info.file_size > limit:
            raise ArchiveError(f"its entry {name} declares {info.file_size:,} bytes, more than such an entry ever "
                               "holds")
        return self.zf.read(info)

    def kind(self) -> str:
        names = self.entries
        if "archive_format" in names:
            return "exported"
        if "constants.pkl" in names and any(n.startswith("code/") for n in names):
            return "torchscript"
        if "data.pkl" in names:
            return "torch.save"
        return "other"


def open_archive(data: bytes, filename: str) -> Archive:
    """The generic checks every zip-based model file passes (see the module docstring)."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as e:
        raise ArchiveError(f"{filename} is a damaged or incomplete archive ({e}); it may have been cut off during "
                           "the upload. Save or upload it again.") from e
    if len(infos) > MAX_ENTRIES:
        raise ArchiveError(f"{filename} holds {len(infos):,} entries; a model archive holds a few hundred.")
    names = [i.filename for i in infos]
    if names and all(n.endswith(".npy") for n in names):
        raise ArchiveError(f"{filename} is a NumPy .npz archive, which holds data rather than a model. Upload it "
                           "as the dataset instead.")
    if not any("/" in n for n in names):
        shown = ", ".join(n[:40] for n in names[:3]) + (", ..." if len(names) > 3 else "")
        raise ArchiveError(f"{filename} is a zip archive, but not a PyTorch model (it contains {shown or 'nothing'})."
                           " Upload a file written by torch.save, torch.jit.save or torch.export.save.")
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ArchiveError(f"{filename} holds two entries named {name!r}; archive readers disagree on which "
                               "one they read, so it was not opened.")
        seen.add(name)
        parts = name.split("/")
        if len(parts) < 2 or any(not _COMPONENT.match(p) or p in (".", "..") for p in parts):
            raise ArchiveError(f"{filename} holds an entry with an unexpected name ({name[:80]!r}): a PyTorch "
                               "archive has all its files in one top-level folder, with plain names.")
    roots = {n.split("/", 1)[0] for n in names}
    if len(roots) != 1:
        shown = ", ".join(sorted(roots)[:3])
        raise ArchiveError(f"{filename} has files in {len(roots)} top-level folders ({shown}); PyTorch writes "
                           "exactly one, so it was not opened.")
    for info in infos:
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise ArchiveError(f"{filename}: entry {info.filename} uses a compression PyTorch never writes.")
        if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
            raise ArchiveError(f"{filename}: entry {info.filename} declares a size that differs from what it "
                               "holds; the archive is damaged or forged.")
    total = sum(i.file_size for i in infos)
    if total > max_file_bytes():
        raise ArchiveError(too_large(f"{filename} (unpacked)", total))
    if total > 4 * len(data) + (64 << 20):  # torch archives are stored uncompressed; this is a zip bomb
        raise ArchiveError(f"{filename} expands to far more data than it holds; it is not a PyTorch archive.")
    (root,) = roots
    return Archive(zf, root, {n.split("/", 1)[1]: i for n, i in zip(names, infos, strict=True)})


def _check_names(archive: Archive, filename: str, what: str, allowed: list[str], stored: list[str],
                 required: list[str]) -> None:
    """Every entry matches one of the ``allowed`` patterns, those matching ``stored`` are uncompressed, and
    the ``required`` names are present."""
    allowed_re = re.compile("^(" + "|".join(allowed) + ")$")
    stored_re = re.compile("^(" + "|".join(stored) + ")$")
    for name, info in archive.entries.items():
        if not allowed_re.match(name):
            raise ArchiveError(f"{filename} is a {what} with an entry this PyTorch version never writes "
                               f"({archive.root}/{name[:80]}), so it was not opened. Save it again with "
                               f"PyTorch {torch.__version__}.")
        if stored_re.match(name) and info.compress_type != zipfile.ZIP_STORED:
            raise ArchiveError(f"{filename}: entry {name} is compressed, which PyTorch never does; the archive "
                               "was altered, so it was not opened.")
    missing = [n for n in required if n not in archive.entries]
    if missing:
        raise ArchiveError(f"{filename} is an incomplete {what}: {', '.join(missing)} is missing. Save it again.")


_META = [r"byteorder", r"version", r"\.data/version", r"\.data/serialization_id", r"\.format_version",
         r"\.storage_alignment"]


def check_torch_save(archive: Archive, filename: str) -> None:
    """A ``torch.save`` zip: data.pkl, its storages data/<n>, and the writer's small metadata files."""
    _check_names(archive, filename, "PyTorch checkpoint", [*_META, r"data\.pkl", r"data/\d+"],
                 [r"data\.pkl", r"data/\d+"], ["data.pkl"])
    if archive.entries["data.pkl"].file_size > MAX_PICKLE_BYTES:
        raise ArchiveError(f"{filename}: its data.pkl is {archive.entries['data.pkl'].file_size:,} bytes; a "
                           "checkpoint's index of tensors is a few kilobytes.")


# TorchScript code may only call tensor operations; these read, write or re-point memory and files.
_TORCHSCRIPT_DENIED = re.compile(r"\bfrom_file\b|\.set_\(|\b_?unsafe_?\w*storage|\bops\.(?!aten\b|prim\b|"
                                 r"quantized\b)\w+\.")


def check_torchscript(archive: Archive, filename: str) -> None:
    """A ``torch.jit.save`` archive: pickled module state read by the C++ unpickler (no Python objects), code/
    with TorchScript source, tensors data/<n> and constants/<n>. Code that calls file or storage operations, or
    operator namespaces other than aten/prim/quantized, is refused."""
    code = r"code/[A-Za-z0-9_./\-]+\.py(\.debug_pkl)?"
    _check_names(archive, filename, "TorchScript file",
                 [*_META, r"data\.pkl", r"constants\.pkl", r"data/\d+", r"constants/\d+", r"traced_inputs\.pkl",
                  r"traced_inputs/\d+", r"extra/[A-Za-z0-9_.\-]+", code],
                 [r"data\.pkl", r"constants\.pkl", r"data/\d+", r"constants/\d+"], ["data.pkl", "constants.pkl"])
    for name in archive.entries:
        if name.endswith((".pkl",)) and archive.entries[name].file_size > MAX_PICKLE_BYTES:
            raise ArchiveError(f"{filename}: its {name} is far larger than TorchScript ever writes.")
        if name.startswith("code/") and name.endswith(".py"):
            source = archive.read(name, MAX_PICKLE_BYTES).decode("utf-8", errors="replace")
            found = _TORCHSCRIPT_DENIED.search(source)
            if found:
                raise ArchiveError(f"{filename}: its TorchScript code calls {found.group(0)!r}, an operation on "
                                   "files, raw memory or custom operators, so it was not opened.")


_PT2_MODEL = "model"
_PT2_ALLOWED = [*_META, r"archive_format", r"archive_version", rf"models/{_PT2_MODEL}\.json",
                rf"data/sample_inputs/{_PT2_MODEL}\.pt", rf"data/weights/{_PT2_MODEL}_weights_config\.json",
                r"data/weights/weight_\d+", rf"data/constants/{_PT2_MODEL}_constants_config\.json",
                r"data/constants/tensor_\d+", r"extra/[A-Za-z0-9_.\-]+"]
_PT2_REQUIRED = ["archive_format", "archive_version", f"models/{_PT2_MODEL}.json",
                 f"data/weights/{_PT2_MODEL}_weights_config.json",
                 f"data/constants/{_PT2_MODEL}_constants_config.json"]


def check_pt2(archive: Archive, filename: str) -> None:
    """A ``torch.export.save`` archive in this torch version's layout (see the module docstring)."""
    from torch._C._export import pt2_archive_constants as c

    _check_names(archive, filename, "torch.export archive", _PT2_ALLOWED,
                 [n for n in _PT2_ALLOWED if not n.startswith("extra/")], _PT2_REQUIRED)
    if "byteorder" in archive.entries and archive.read("byteorder", 64).strip() != b"little":
        raise ArchiveError(f"{filename} was written on a big-endian machine; its raw tensors cannot be read here.")
    if archive.read("archive_format", 64).strip() != c.ARCHIVE_FORMAT_VALUE.encode():
        raise ArchiveError(f"{filename}: its archive_format entry does not say pt2.")
    version = archive.read("archive_version", 64).strip()
    if version != c.ARCHIVE_VERSION_VALUE.encode():
        raise ArchiveError(f"{filename} is a torch.export archive of version {version[:16]!r}; this PyTorch "
                           f"({torch.__version__}) reads version {c.ARCHIVE_VERSION_VALUE}. Export it again "
                           "with this version.")


# ----- the .pt2 reader ----------------------------------------------------------------------------------------
# Call targets the graph may name: torch operators (resolved by attribute lookup in torch.ops), Python's
# operator module (getitem) and math. Operators that touch files or re-point storage are refused.
_SAFE_TARGET = re.compile(r"^(torch\.ops\.(aten|prims|higher_order|quantized|quantized_decomposed)\.\w+"
                          r"(\.\w+)?|_operator\.\w+|math\.\w+)$")
_DENIED_TARGET = re.compile(r"from_file|\bset_\b|\.set_\.|storage|_unsafe_set|save|load")
_EXPR_WORDS = {"positive", "negative", "nonnegative", "integer", "real", "finite", "True", "False", "oo", "zoo",
               "nan"}


def load_exported_program(archive: Archive, filename: str):
    """The ``ExportedProgram`` of a .pt2 that passed ``check_pt2``, read without any pickle but the weights-only
    sample inputs: tensors from raw bytes, the graph from JSON, both handed to torch's deserialiser as objects."""
    from torch._export.serde.serialize import SerializedArtifact, deserialize

    graph_bytes = archive.read(f"models/{_PT2_MODEL}.json")
    unsafe = unsafe_graph_strings(json.loads(graph_bytes))
    if unsafe:
        raise ArchiveError(f"{filename}: its graph names {len(unsafe)} call target(s) or shape expression(s) "
                           f"outside torch's operators ({', '.join(s[:60] for s in unsafe[:3])}), so it was not "
                           "opened.")
    state_dict = _raw_tensors(archive, filename, "weights", "weight_")
    constants = _raw_tensors(archive, filename, "constants", "tensor_")
    sample_name = f"data/sample_inputs/{_PT2_MODEL}.pt"
    sample = None
    if sample_name in archive.entries:
        try:
            sample = torch.load(io.BytesIO(archive.read(sample_name, MAX_PICKLE_BYTES)), map_location="cpu",
                                weights_only=True)
        except Exception as e:
            raise ArchiveError(f"{filename}: its sample inputs are not plain tensors{pickled_name(e)}; they would "
                               "have to be unpickled as Python objects, which can run code, so it was not "
                               "opened.") from e
        if not (isinstance(sample, tuple) and len(sample) == 2):
            raise ArchiveError(f"{filename}: its sample inputs are a {type(sample).__name__}, not the "
                               "(args, kwargs) pair torch.export writes.")
    # objects, not bytes: the deserialiser passes dicts and tuples through instead of unpickling them
    artifact = SerializedArtifact(graph_bytes, state_dict, constants, sample)  # type: ignore[arg-type]
    with refuse_full_unpickling(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return deserialize(artifact)


def _raw_tensors(archive: Archive, filename: str, folder: str, prefix: str) -> dict[str, torch.Tensor]:
    """The tensors of data/<folder>/: each a bounds-checked strided view of one raw little-endian payload."""
    from torch._export.serde.schema import ScalarType
    from torch._export.serde.serialize import deserialize_scalar_type

    config = json.loads(archive.read(f"data/{folder}/{_PT2_MODEL}_{folder}_config.json", MAX_PICKLE_BYTES))
    entries = config.get("config") if isinstance(config, dict) else None
    if not isinstance(entries, dict):
        raise ArchiveError(f"{filename}: its {folder} index is not the table torch.export writes.")
    payloads: dict[str, torch.Tensor] = {}
    out: dict[str, torch.Tensor] = {}
    for fqn, meta in entries.items():
        where = f"{folder} entry {str(fqn)[:60]!r}"
        if not isinstance(meta, dict):
            raise ArchiveError(f"{filename}: {where} is malformed.")
        path = meta.get("path_name")
        if meta.get("use_pickle") is not False:
            raise ArchiveError(f"{filename}: {where} is a pickled Python object, which can run code when loaded, "
                               "so it was not opened. Export plain tensors.")
        if not isinstance(path, str) or not re.fullmatch(prefix + r"\d+", path) or \
                f"data/{folder}/{path}" not in archive.entries:
            raise ArchiveError(f"{filename}: {where} points at {str(path)[:60]!r}, which is not one of its tensor "
                               "files.")
        tm = meta.get("tensor_meta") or {}
        try:
            dtype = deserialize_scalar_type(ScalarType(tm["dtype"]))
            sizes = [_as_int(s) for s in tm["sizes"]]
            strides = [_as_int(s) for s in tm["strides"]]
            offset = _as_int(tm["storage_offset"])
        except (KeyError, TypeError, ValueError) as e:
            raise ArchiveError(f"{filename}: {where} has a malformed shape or type ({_first_line(e)}).") from e
        if len(sizes) != len(strides) or min([*sizes, *strides, offset], default=0) < 0:
            raise ArchiveError(f"{filename}: {where} has negative or mismatched sizes and strides.")
        if path not in payloads:
            raw = archive.read(f"data/{folder}/{path}")
            item = torch.empty((), dtype=dtype).element_size()
            if len(raw) % item:
                raise ArchiveError(f"{filename}: {where}: {len(raw)} bytes is not a whole number of {dtype}.")
            payloads[path] = torch.frombuffer(bytearray(raw), dtype=dtype) if raw else torch.empty(0, dtype=dtype)
        flat = payloads[path]
        if flat.dtype != dtype:
            raise ArchiveError(f"{filename}: {where} reads its tensor file with a second element type.")
        numel = 1
        for s in sizes:
            numel *= s
        span = offset + sum((s - 1) * st for s, st in zip(sizes, strides, strict=True)) + 1 if numel else 0
        if span > flat.numel() or numel > flat.numel():
            raise ArchiveError(f"{filename}: {where} declares a {'x'.join(map(str, sizes))} tensor but its file "
                               f"holds {flat.numel():,} values; the archive is damaged or forged.")
        tensor = flat.as_strided(sizes, strides, offset)
        if meta.get("is_param"):
            tensor = torch.nn.Parameter(tensor, requires_grad=bool(tm.get("requires_grad")))
        out[fqn] = tensor
    return out


def _as_int(value) -> int:
    if not isinstance(value, dict) or set(value) != {"as_int"} or type(value["as_int"]) is not int:
        raise ValueError("a symbolic or non-integer size")
    return value["as_int"]


def unsafe_graph_strings(obj) -> list[str]:
    """Call targets outside torch's operators, and shape expressions that are not plain sympy, in a graph's
    JSON. Iterative: a deeply nested document cannot exhaust the stack."""
    found, stack = [], [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for k, v in item.items():
                if k == "target" and isinstance(v, str):
                    if not _SAFE_TARGET.match(v) or _DENIED_TARGET.search(v):
                        found.append(v)
                elif k == "expr_str" and isinstance(v, str):
                    if not safe_sympy_expression(v):
                        found.append(v)
                else:
                    stack.append(v)
        elif isinstance(item, list):
            stack.extend(item)
    return found


def safe_sympy_expression(text: str) -> bool:
    """Only sympy constructors, symbol names, numbers and arithmetic (sympy parses these strings with eval)."""
    body = re.sub(r"'\w*'", "''", text)  # symbol names such as Symbol('s77', positive=True)
    if re.search(r"[^\w\s,()=+\-*/.<>%!']", body) or "__" in body or re.search(r"\.\s*[A-Za-z_]", body):
        return False
    return all(w in _EXPR_WORDS or (w[0].isupper() and "_" not in w) for w in re.findall(r"\b[A-Za-z_]\w*", body))


# ----- the guard ------------------------------------------------------------------------------------------------
_GUARD = threading.local()
_TORCH_LOAD = torch.load


def _guarded_load(*args, **kwargs):
    if getattr(_GUARD, "depth", 0):
        if kwargs.get("weights_only") is False:
            raise ArchiveError("the file asked to be unpickled as Python objects (torch.load with "
                               "weights_only=False), which can run code, so it was not opened.")
        kwargs["weights_only"] = True
    return _TORCH_LOAD(*args, **kwargs)


def _install_guard() -> None:
    if getattr(torch.load, "__wrapped_by_pruning_explorer__", False):
        return
    _guarded_load.__wrapped_by_pruning_explorer__ = True  # type: ignore[attr-defined]
    _guarded_load.__doc__ = _TORCH_LOAD.__doc__
    torch.load = _guarded_load
    torch.serialization.load = _guarded_load


@contextlib.contextmanager
def refuse_full_unpickling():
    """While active in this thread, ``torch.load`` only ever loads weights-only: a call asking for
    ``weights_only=False`` raises ``ArchiveError`` and a call that does not say is made weights-only. Other
    threads (another session loading a file its owner trusts) are unaffected."""
    _install_guard()
    _GUARD.depth = getattr(_GUARD, "depth", 0) + 1
    try:
        yield
    finally:
        _GUARD.depth -= 1


def pickled_name(error: BaseException) -> str:
    """' (os.system)' when a weights-only unpickling error names the Python object it refused, else ''."""
    found = re.search(r"GLOBAL ([\w.]+)", str(error))
    return f" ({found.group(1)})" if found else ""


def _first_line(e: BaseException) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:200]


__all__ = ["MAX_ENTRIES", "Archive", "ArchiveError", "check_pt2", "check_torch_save", "check_torchscript",
           "load_exported_program", "open_archive", "pickled_name", "refuse_full_unpickling", "safe_sympy_expression",
           "unsafe_graph_strings"]
