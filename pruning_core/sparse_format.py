"""Pruning Explorer's compressed sparse weight file: a safetensors file in which every masked tensor is stored as
a bit-mask and its kept values. Written by the export (``model_sparse.safetensors``), read back by the loader; an
uploaded one is untrusted, so every size in its header is checked before anything is allocated.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np
import torch

from .limits import SizeLimitError, max_file_bytes, too_large

SPARSE_FORMAT = "pruning-explorer/sparse-v1"
MASK_SUFFIX, VALUES_SUFFIX = "::kept_mask", "::kept_values"


class SparseFormatError(ValueError):
    """A tensor or mask that does not fit the format (a writer's error)."""


def save_sparse_state_dict(state_dict: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> bytes:
    """A safetensors file in which each tensor named in ``masks`` (bool, True = kept, same shape) is stored as
    ``<name>::kept_mask`` (uint8, numpy.packbits of the flattened mask, ceil(numel / 8) bytes) and
    ``<name>::kept_values`` (1-D, the kept entries in row-major order); all other tensors unchanged. The
    original shapes travel in the header metadata."""
    from safetensors.torch import save

    tensors, shapes = {}, {}
    for name, t in state_dict.items():
        t = t.detach().cpu()
        if name not in masks:
            tensors[name] = t.contiguous()
            continue
        keep = masks[name].to("cpu", torch.bool)
        if keep.shape != t.shape:
            raise SparseFormatError(f"the mask of {name!r} has shape {tuple(keep.shape)}, the tensor {tuple(t.shape)}")
        tensors[name + MASK_SUFFIX] = torch.from_numpy(np.packbits(keep.reshape(-1).numpy()))
        tensors[name + VALUES_SUFFIX] = t[keep].contiguous()
        shapes[name] = list(t.shape)
    return save(tensors, metadata={"format": SPARSE_FORMAT, "shapes": json.dumps(shapes)})


def load_sparse_state_dict(path_or_bytes: str | Path | bytes) -> dict[str, torch.Tensor]:
    """The dense state_dict (zeros where pruned) that ``save_sparse_state_dict`` compressed, exactly.

    The file is treated as untrusted: the shapes in its header are checked against the bytes present (a mask
    of ceil(numel / 8) bytes, as many kept values as the mask has set bits) and the dense size against
    ``limits.max_file_bytes()`` before any dense tensor is allocated. Raises ValueError saying what is wrong.
    """
    from safetensors.torch import load

    data = bytes(path_or_bytes) if isinstance(path_or_bytes, (bytes, bytearray)) else Path(path_or_bytes).read_bytes()
    meta = safetensors_metadata(data)
    if meta.get("format") != SPARSE_FORMAT:
        raise ValueError("not a Pruning Explorer sparse file (its safetensors header has no sparse format tag)")
    try:
        shapes = json.loads(meta.get("shapes", ""))
    except ValueError:
        shapes = None
    if not isinstance(shapes, dict) or not all(
            isinstance(v, list) and all(type(d) is int and d >= 0 for d in v) for v in shapes.values()):
        raise ValueError("its header's table of tensor shapes is malformed")
    tensors = load(data)  # safetensors checks every stored tensor against the bytes present
    out = {k: v for k, v in tensors.items() if not k.endswith((MASK_SUFFIX, VALUES_SUFFIX))}
    plan, total = [], sum(v.numel() * v.element_size() for v in out.values())
    for name, shape in shapes.items():
        mask, values = tensors.get(name + MASK_SUFFIX), tensors.get(name + VALUES_SUFFIX)
        if mask is None or values is None or name in out:
            raise ValueError(f"tensor {name!r} is listed in the header without exactly one mask and one set of "
                             "kept values")
        numel = math.prod(shape)
        if mask.dtype != torch.uint8 or mask.ndim != 1 or mask.numel() != (numel + 7) // 8 or values.ndim != 1:
            raise ValueError(f"tensor {name!r} declares shape {'x'.join(map(str, shape))} ({numel:,} values) but "
                             f"its mask holds {mask.numel():,} bytes; the file is damaged or forged")
        total += numel * values.element_size()
        if total > max_file_bytes():
            raise SizeLimitError(too_large("the weights, once expanded to dense tensors,", total))
        plan.append((name, shape, numel, mask, values))
    expanded = set(shapes)
    if any(k.endswith((MASK_SUFFIX, VALUES_SUFFIX)) and k.rsplit("::", 1)[0] not in expanded for k in tensors):
        raise ValueError("the file holds a mask or kept values for a tensor its header does not list")
    for name, shape, numel, mask, values in plan:
        keep = torch.from_numpy(np.unpackbits(mask.numpy(), count=numel).astype(bool))
        if int(keep.sum()) != values.numel():
            raise ValueError(f"tensor {name!r}: its mask keeps {int(keep.sum()):,} values but the file stores "
                             f"{values.numel():,}")
        dense = torch.zeros(numel, dtype=values.dtype)
        dense[keep] = values
        out[name] = dense.reshape(shape)
    return out


def safetensors_metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file's JSON header (empty when it has none)."""
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n]) if 8 + n <= len(data) else None
    if not isinstance(header, dict):
        raise ValueError("its header is not a JSON table of tensors")
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict):
        raise ValueError("its header's metadata is not a table of strings")
    return meta


__all__ = ["MASK_SUFFIX", "SPARSE_FORMAT", "VALUES_SUFFIX", "SparseFormatError", "load_sparse_state_dict",
           "safetensors_metadata", "save_sparse_state_dict"]
