"""Loading the models people upload, safely.

``load_model_file(data, filename, architecture=None, trust_pickle=False)`` recognises the format from the bytes
themselves, whatever the file is called:

  * ``exported``: a ``torch.export.save`` archive (.pt2); a zip whose ``archive_format`` says ``pt2``.
  * ``torchscript``: a ``torch.jit.save`` archive; a zip with ``constants.pkl`` and a ``code/`` folder.
  * ``safetensors``: 8-byte little-endian header length, then a JSON header, then raw tensor bytes. Also our
    own compressed sparse files (``sparse_format.SPARSE_FORMAT``), expanded back to dense.
  * ``state_dict``: a ``torch.save``'d dict of tensors (or a dict wrapping one under ``state_dict``,
    ``model_state_dict`` or ``model``), read with ``weights_only=True``.
  * ``pickled-module``: a ``torch.save``'d whole ``nn.Module``. That is a pickled Python object, which can run
    any code when it is loaded, so it is refused unless the person says they trust the file.

Weights-only formats (state_dict, safetensors) need the architecture they belong to (a key of
``models.ARCHITECTURES``) and are loaded strictly; a checkpoint whose layers are narrower than the dense
architecture (a physically pruned model we exported) is rebuilt at its own widths by
``build_pruned_architecture``. Every problem reaches the caller as ``ModelLoadError`` with a message for the
person who uploaded the file; no other exception type escapes ``load_model_file``.
"""

from __future__ import annotations

import contextlib
import io
import pickle
import re
import struct
import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from .archives import (
    ArchiveError,
    check_pt2,
    check_torch_save,
    check_torchscript,
    load_exported_program,
    open_archive,
    refuse_full_unpickling,
)
from .limits import SizeLimitError, max_file_bytes, too_large
from .models import ARCHITECTURES
from .sparse_format import SPARSE_FORMAT, load_sparse_state_dict, safetensors_metadata
from .structure import fix_size_attributes

KINDS = ("builtin", "state_dict", "safetensors", "torchscript", "exported", "pickled-module")
# Wrapper keys under which training scripts commonly nest the weights, and prefixes that DataParallel
# ("module.") and torch.compile ("_orig_mod.") add to every key.
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")
_KEY_PREFIXES = ("module.", "_orig_mod.")
_SHRINKABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d,
               nn.LayerNorm)
_SHOWN = 3  # how many offending names a message lists


class ModelLoadError(ValueError):
    """A model file that cannot be used; the message says why and what to do, in the uploader's terms."""


@dataclass
class LoadedModel:
    model: nn.Module  # on the CPU, eval mode, gradients off
    name: str  # file name or architecture name
    kind: str  # one of KINDS
    architecture: str | None  # key of models.ARCHITECTURES, when known
    input_shape: tuple[int, ...] | None  # one sample without the batch dimension, when known
    notes: list[str] = field(default_factory=list)


# ----- public entry points -------------------------------------------------------------------------------------
def load_builtin_model(name: str) -> LoadedModel:
    """A built-in architecture with its committed demo weights (random initial weights if it has none)."""
    from . import load_builtin

    arch = _architecture(name)
    notes = [] if arch.has_weights else [f"{arch.title} ships without trained weights: it is randomly initialised."]
    return LoadedModel(_ready(load_builtin(name)), name, "builtin", name, arch.input_shape, notes)


def load_model_file(data: bytes, filename: str, architecture: str | None = None,
                    trust_pickle: bool = False) -> LoadedModel:
    """Load an uploaded model file (see the module docstring for the formats).

    ``architecture``: the built-in architecture a weights-only file belongs to (required for state_dict and
    safetensors files; for the other kinds it only supplies the input shape). ``trust_pickle``: the person
    has said they made the file, so a pickled whole module may be unpickled (which runs its code).
    """
    if architecture is not None:
        _architecture(architecture)
    if len(data) > max_file_bytes():
        raise ModelLoadError(too_large(filename, len(data)))
    guard = contextlib.nullcontext() if trust_pickle else refuse_full_unpickling()
    try:
        with guard:
            loaded = _load(bytes(data), filename, architecture, trust_pickle)
            check_tensors(loaded.model.state_dict(), filename)
    except ModelLoadError:
        raise
    except ArchiveError as e:
        raise ModelLoadError(str(e) if str(e).startswith(filename) else f"{filename}: {e}") from e
    except Exception as e:  # the libraries raise many types on bad bytes; the person needs one clear message
        raise ModelLoadError(f"{filename}: could not be loaded ({type(e).__name__}: {_first_line(e)}). "
                             "Check that it is a PyTorch model file and save it again.") from e
    return loaded


def build_pruned_architecture(architecture: str, state_dict: dict[str, torch.Tensor]) -> nn.Module:
    """The built-in ``architecture`` rebuilt at the widths of ``state_dict`` and loaded strictly.

    For physically pruned checkpoints (``export.export_plan``'s ``model_state_dict.safetensors``): every Conv,
    Linear, BatchNorm and LayerNorm whose tensors in ``state_dict`` are narrower than the dense architecture's
    gets tensors of the checkpoint's shapes and matching ``in_channels``/``out_channels``/``in_features``/
    ``out_features``/``num_features``/``groups``. A dense checkpoint loads unchanged. One forward pass on a
    zero input of the architecture's input shape checks that the narrowed layers fit together.
    """
    arch = _architecture(architecture)
    model = arch.build()
    for mod_name, mod in model.named_modules():
        narrowed = False
        for attr, tensor in [*mod._parameters.items(), *mod._buffers.items()]:
            key = f"{mod_name}.{attr}" if mod_name else attr
            if tensor is None or key not in state_dict or state_dict[key].shape == tensor.shape:
                continue
            shape = tuple(state_dict[key].shape)
            if 0 in shape and tensor.numel():
                raise ModelLoadError(f"{key} has shape {_shape(shape)} in the file: the layer has no channels left, "
                                     "so the model cannot compute anything. Prune less, or remove the layer.")
            if (not isinstance(mod, _SHRINKABLE) or len(shape) != tensor.ndim
                    or any(s > d for s, d in zip(shape, tensor.shape, strict=True))):
                raise ModelLoadError(
                    f"{key} has shape {_shape(shape)} in the file but {_shape(tensor.shape)} in {architecture}; "
                    "a pruned checkpoint can only have narrower convolution, linear and norm layers. "
                    "Pick the architecture the file was saved from.")
            new = torch.zeros(shape, dtype=tensor.dtype)
            if attr in mod._parameters:
                mod._parameters[attr] = nn.Parameter(new, requires_grad=tensor.requires_grad)
            else:
                mod._buffers[attr] = new
            narrowed = True
        if narrowed:
            fix_size_attributes(mod)
    _load_strict(model, state_dict, architecture)
    try:
        with torch.inference_mode():
            model.eval()(torch.zeros(1, *arch.input_shape))
    except Exception as e:
        raise ModelLoadError(f"The narrowed layers of this checkpoint do not fit together as {architecture} "
                             f"({_first_line(e)}). It was not pruned from this architecture.") from e
    return _ready(model)


def infer_architecture(model: nn.Module) -> str | None:
    """The built-in architecture whose dense parameters have exactly ``model``'s class, names and shapes."""
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for name, arch in ARCHITECTURES.items():
        with torch.device("meta"):  # builds the module tree without allocating its weights
            candidate = arch.build()
        if type(candidate) is type(model) and {k: tuple(v.shape) for k, v in candidate.state_dict().items()} == shapes:
            return name
    return None


class ExportedProgramModule(nn.Module):
    """A ``torch.export`` program as a regular module.

    ``train()``/``eval()`` only flip the flag: an exported graph is frozen in the mode it was exported in, and
    its own module refuses the call. When the program was exported for a fixed batch size, inputs (N, ...) are
    fed in chunks of that size (the last one zero-padded), so evaluation in large batches still works.
    """

    def __init__(self, program: nn.Module, fixed_batch: int | None = None):
        super().__init__()
        self.program = program
        self.fixed_batch = fixed_batch

    def train(self, mode: bool = True) -> "ExportedProgramModule":
        self.training = mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.fixed_batch
        if b is None or x.shape[0] == b:
            return self.program(x)
        outs = []
        for chunk in x.split(b):
            n = chunk.shape[0]
            if n < b:
                chunk = torch.cat([chunk, chunk.new_zeros((b - n, *chunk.shape[1:]))])
            outs.append(self.program(chunk)[:n])
        return torch.cat(outs)


# ----- format detection ----------------------------------------------------------------------------------------
def _load(data: bytes, filename: str, architecture: str | None, trust_pickle: bool) -> LoadedModel:
    if not data:
        raise ModelLoadError(f"{filename} is empty (0 bytes). Upload the file again; the transfer may have failed.")
    if data[:4] == b"PK\x03\x04" or data[:4] == b"PK\x05\x06":
        return _load_zip(data, filename, architecture, trust_pickle)
    if _looks_like_safetensors(data):
        (n,) = struct.unpack("<Q", data[:8])
        if 8 + n > len(data):
            raise ModelLoadError(f"{filename} looks like a safetensors file, but its header declares {n:,} bytes "
                                 f"and the whole file holds {len(data):,}: it was cut off or forged. Save it again.")
        return _load_safetensors(data, filename, architecture)
    if data[:1] == b"\x80":  # a pickle protocol marker: a raw pickle, or torch.save's legacy (pre-1.6) format
        if trust_pickle:
            return _load_trusted_pickle(data, filename, architecture)
        raise ModelLoadError(
            f"{filename} is a raw Python pickle or a checkpoint in PyTorch's legacy format (before 1.6, 2020). A "
            "pickle can run code when loaded, and the legacy reader allocates what the file declares before "
            "checking it, so it was not opened. Tick 'I trust this file' only if you made it, or re-save the "
            "weights with a current PyTorch (torch.save(model.state_dict(), path)).")
    hint = " ONNX files cannot be pruned here; upload the PyTorch model instead." \
        if filename.lower().endswith(".onnx") else ""
    raise ModelLoadError(f"{filename} is not a model file this app recognises: expected a state_dict (.pt/.pth), "
                         f"safetensors, TorchScript or torch.export (.pt2) file.{hint}")


def _load_zip(data: bytes, filename: str, architecture: str | None, trust_pickle: bool) -> LoadedModel:
    archive = open_archive(data, filename)
    kind = archive.kind()
    if kind == "exported":
        return _load_exported(data, archive, filename, architecture, trust_pickle)
    if kind == "torchscript":
        check_torchscript(archive, filename)
        return _load_torchscript(data, filename, architecture)
    if kind == "torch.save":
        check_torch_save(archive, filename)
        return _load_torch_save(data, filename, architecture, trust_pickle)
    names = list(archive.entries)
    shown = ", ".join(names[:_SHOWN]) + (", ..." if len(names) > _SHOWN else "")
    raise ModelLoadError(f"{filename} is a zip archive, but not a PyTorch model (it contains {shown or 'nothing'}). "
                         "Upload a file written by torch.save, torch.jit.save or torch.export.save.")


def _looks_like_safetensors(data: bytes) -> bool:
    if len(data) < 10:
        return False
    return data[8:9] == b"{"  # the 8-byte header length is checked by the caller, with a message


# ----- weights-only formats ------------------------------------------------------------------------------------
def _load_safetensors(data: bytes, filename: str, architecture: str | None) -> LoadedModel:
    from safetensors.torch import load as load_safetensors


    notes = []
    try:
        if safetensors_metadata(data).get("format") == SPARSE_FORMAT:
            state_dict = load_sparse_state_dict(data)
            notes.append("Compressed sparse file (bit-mask + kept values), expanded to dense tensors with zeros.")
        else:
            state_dict = load_safetensors(data)
    except SizeLimitError as e:
        raise ModelLoadError(f"{filename}: {e}") from e
    except Exception as e:
        raise ModelLoadError(f"{filename} looks like a safetensors file but is damaged ({_first_line(e)}). "
                             "Save it again.") from e
    return _from_state_dict(state_dict, filename, architecture, "safetensors", notes)


def _load_torch_save(data: bytes, filename: str, architecture: str | None, trust_pickle: bool) -> LoadedModel:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about pickle protocols; the person needs our message
            obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        if found is None and "Unsupported" not in str(e):
            raise ModelLoadError(f"{filename} is damaged: it could not be read as a PyTorch file "
                                 f"({_first_line(e)}). Save it again.") from e
        if not trust_pickle:
            what = f" ({found.group(1)})" if found else ""
            raise ModelLoadError(
                f"{filename} is a pickled Python object{what}, which can run code when loaded, so it was not "
                "opened. Tick 'I trust this file' only if you made it, or save model.state_dict() instead.") from e
        return _load_trusted_pickle(data, filename, architecture)
    except RuntimeError as e:
        raise ModelLoadError(f"{filename} is damaged or incomplete ({_first_line(e)}); it may have been cut off "
                             "during the upload. Save or upload it again.") from e
    return _from_state_dict(obj, filename, architecture, "state_dict", [])


def _from_state_dict(obj, filename: str, architecture: str | None, kind: str, notes: list[str]) -> LoadedModel:
    state_dict = _unwrap_state_dict(obj, filename)
    if architecture is None:
        raise ModelLoadError(f"{filename} holds only weights (a state_dict), not the model's structure. Choose the "
                             f"architecture they belong to: {', '.join(ARCHITECTURES)}.")
    check_tensors(state_dict, filename)  # storage and size before any value; finiteness again after the cast
    model = _architecture(architecture).build()
    dense = model.state_dict()
    for key, expected in dense.items():
        got = state_dict.get(key)
        if got is not None and expected.is_floating_point() and not got.is_floating_point():
            raise ModelLoadError(f"{filename}: tensor {key!r} holds {str(got.dtype).removeprefix('torch.')} values "
                                 "but the model expects floating point weights. The file was not saved from this "
                                 "model's state_dict().")
    low = sorted({str(v.dtype).removeprefix("torch.") for k, v in state_dict.items()
                  if v.is_floating_point() and k in dense and v.dtype != dense[k].dtype})
    if low:
        notes.append(f"Weights stored as {', '.join(low)} were converted to the model's precision.")
    empty = [k for k, v in state_dict.items() if k in dense and v.numel() == 0 and dense[k].numel()]
    if empty:
        raise ModelLoadError(f"{filename}: {empty[0]} has shape {_shape(state_dict[empty[0]].shape)}: the layer has "
                             "no channels left, so the model cannot compute anything. Prune less, or remove the "
                             "layer from the architecture.")
    narrower = [k for k, v in state_dict.items() if k in dense and v.shape != dense[k].shape]
    if set(state_dict) == set(dense) and narrower:
        try:
            model = build_pruned_architecture(architecture, state_dict)
        except ModelLoadError:
            raise ModelLoadError(_mismatch_message(dense, state_dict, filename, architecture)) from None
        notes.append(f"Pruned checkpoint: {len(narrower)} tensors are narrower than the dense {architecture}; "
                     "the model was rebuilt at the checkpoint's widths.")
    else:
        _load_strict(model, state_dict, architecture, filename)
    return LoadedModel(_ready(model), filename, kind, architecture, _architecture(architecture).input_shape, notes)


def _unwrap_state_dict(obj, filename: str) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        for key in _WRAPPER_KEYS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj:
        what = "an empty dict" if isinstance(obj, dict) else f"a {type(obj).__name__}"
        raise ModelLoadError(f"{filename} holds {what}, not a state_dict of weights. Save model.state_dict() with "
                             "torch.save.")
    not_tensors = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise ModelLoadError(f"{filename}: the weights dict also holds entries that are not tensors "
                             f"({', '.join(map(str, not_tensors[:_SHOWN]))}). Save model.state_dict() alone.")
    for prefix in _KEY_PREFIXES:
        if all(k.startswith(prefix) for k in obj):
            obj = {k[len(prefix):]: v for k, v in obj.items()}
    return obj


def _load_strict(model: nn.Module, state_dict: dict[str, torch.Tensor], architecture: str,
                 filename: str = "The checkpoint") -> None:
    expected = model.state_dict()
    if set(expected) != set(state_dict) or any(expected[k].shape != state_dict[k].shape for k in expected):
        raise ModelLoadError(_mismatch_message(expected, state_dict, filename, architecture))
    model.load_state_dict(state_dict, strict=True)


def _mismatch_message(expected: dict, got: dict, filename: str, architecture: str) -> str:
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    shapes = [f"{k}: file {_shape(got[k].shape)}, model {_shape(expected[k].shape)}"
              for k in expected if k in got and got[k].shape != expected[k].shape]
    parts = []
    for label, items in (("missing from the file", missing), ("in the file but not in the model", unexpected),
                         ("of a different shape", shapes)):
        if items:
            shown = "; ".join(items[:_SHOWN]) + ("; ..." if len(items) > _SHOWN else "")
            parts.append(f"{len(items)} tensors {label} ({shown})")
    return (f"{filename} does not match the {architecture} architecture: {', '.join(parts)}. "
            "Pick the architecture the file was saved from.")


# ----- whole-model formats -------------------------------------------------------------------------------------
def _load_torchscript(data: bytes, filename: str, architecture: str | None) -> LoadedModel:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit is deprecated but still reads TorchScript files
            model = torch.jit.load(io.BytesIO(data), map_location="cpu")
    except Exception as e:
        raise ModelLoadError(f"{filename} is a damaged TorchScript file ({_first_line(e)}). Save it again with "
                             "torch.jit.save.") from e
    notes = ["TorchScript: structured (channel) methods are unavailable; unstructured methods work."]
    return LoadedModel(_ready(model), filename, "torchscript", architecture, _input_shape(architecture), notes)


def _load_exported(data: bytes, archive, filename: str, architecture: str | None,
                   trust_pickle: bool) -> LoadedModel:
    check_pt2(archive, filename)
    try:
        if trust_pickle:  # the person made the file: torch's own reader, pickled constants and all
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                program = torch.export.load(io.BytesIO(data))
        else:
            program = load_exported_program(archive, filename)
    except ArchiveError:
        raise
    except Exception as e:
        raise ModelLoadError(f"{filename} is a damaged or incompatible torch.export archive ({_first_line(e)}). "
                             f"Export it again with this PyTorch version ({torch.__version__}).") from e
    user_inputs = set(program.graph_signature.user_inputs)
    shapes = [n.meta["val"].shape for n in program.graph.nodes
              if n.op == "placeholder" and n.name in user_inputs and isinstance(n.meta.get("val"), torch.Tensor)]
    if len(shapes) != 1:
        raise ModelLoadError(f"{filename}: the exported program takes {len(shapes)} tensor inputs; the app needs a "
                             "model that takes one batch of samples.")
    batch, *sample = shapes[0]
    fixed = int(batch) if isinstance(batch, int) else None
    notes = ["torch.export program: structured (channel) methods are unavailable; unstructured methods work."]
    if fixed is not None:
        notes.append(f"Exported for a fixed batch of {fixed}: inputs are fed {fixed} at a time. Export with a "
                     "dynamic batch dimension for faster evaluation.")
    static = all(isinstance(s, int) for s in sample)
    input_shape = tuple(int(s) for s in sample) if static else _input_shape(architecture)
    model = ExportedProgramModule(program.module(), fixed)
    return LoadedModel(_ready(model), filename, "exported", architecture, input_shape, notes)


def _load_trusted_pickle(data: bytes, filename: str, architecture: str | None) -> LoadedModel:
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
    except (ModuleNotFoundError, AttributeError) as e:
        raise ModelLoadError(f"{filename} is a pickled model whose Python class is not available here "
                             f"({_first_line(e)}). Save model.state_dict() instead and pick its architecture.") from e
    if isinstance(obj, dict) and isinstance(obj.get("model"), nn.Module):
        obj = obj["model"]
    if not isinstance(obj, nn.Module):
        raise ModelLoadError(f"{filename} unpickled to a {type(obj).__name__}, not a PyTorch model (nn.Module).")
    architecture = architecture or infer_architecture(obj)
    return LoadedModel(_ready(obj), filename, "pickled-module", architecture, _input_shape(architecture),
                       ["Unpickled because you said you trust this file."])


# ----- small helpers -------------------------------------------------------------------------------------------
def _architecture(name: str):
    if name not in ARCHITECTURES:
        raise ModelLoadError(f"Unknown architecture {name!r}; choose one of: {', '.join(ARCHITECTURES)}.")
    return ARCHITECTURES[name]


def _input_shape(architecture: str | None) -> tuple[int, ...] | None:
    return ARCHITECTURES[architecture].input_shape if architecture else None


def _ready(model: nn.Module) -> nn.Module:
    """CPU, eval mode, gradients off (a TorchScript module's deep copies keep requires_grad otherwise)."""
    model = model.to("cpu").eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def check_tensors(tensors: dict[str, torch.Tensor], filename: str) -> None:
    """Loaded tensors a model can use, checked before any value is touched: plain dense CPU tensors, none
    viewing more values than its storage holds (a stride-0 'expanded' tensor of 20000 x 20000 stored as one
    number would be materialised by the first operation on it), within the size limit; then finite values."""
    total = 0
    for name, t in tensors.items():
        if t.layout != torch.strided or t.is_quantized or t.is_nested or t.device.type != "cpu":
            raise ModelLoadError(f"{filename}: tensor {name!r} is a {str(t.layout).removeprefix('torch.')} "
                                 f"{'quantized ' if t.is_quantized else ''}tensor on {t.device}; the app loads plain "
                                 "dense tensors. Save dense weights (tensor.to_dense(), dequantize()).")
        size = t.element_size()
        stored = t.untyped_storage().nbytes()
        if t.numel():
            span = t.storage_offset() + sum((n - 1) * st for n, st in zip(t.shape, t.stride(), strict=True)) + 1
            if t.numel() * size > stored or span * size > stored:
                raise ModelLoadError(
                    f"{filename}: tensor {name!r} declares {_shape(t.shape)} = {t.numel():,} values but stores "
                    f"{stored // size:,}: it is an expanded or overlapping view, which would be materialised in "
                    "memory. Save contiguous tensors ({k: v.contiguous() for k, v in state_dict.items()}).")
        total += t.numel() * size
    if total > max_file_bytes():
        raise ModelLoadError(too_large(f"{filename} (its tensors)", total))
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise ModelLoadError(f"{filename}: tensor {name!r} contains {bad} NaN or infinite values out of "
                                 f"{t.numel()}; the checkpoint is damaged, its training diverged, or its values "
                                 "exceed the range of the model's precision.")


def _shape(shape) -> str:
    return "x".join(map(str, shape)) or "scalar"


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:200]


__all__ = ["KINDS", "ExportedProgramModule", "LoadedModel", "ModelLoadError", "build_pruned_architecture",
           "check_tensors", "infer_architecture", "load_builtin_model", "load_model_file"]
