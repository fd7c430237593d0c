"""Size limits for everything that comes from outside: uploaded or named model files, datasets, ratio lists.

Every loader checks the sizes a file *declares* (zip entry sizes, tensor shapes in a header, .npy headers)
against these limits and against the bytes actually present before it allocates anything, so a file of a few
hundred bytes cannot make the server allocate gigabytes.

The limits are read from the environment each time they are needed, so a server can be started with larger
ones without code changes:

  * ``PRUNING_EXPLORER_MAX_FILE_MB``: the most a model file or a dataset may expand to in memory (default 1024,
    that is 1 GiB). The bytes of a model file once unzipped, or the arrays of an .npz once decompressed.
  * ``PRUNING_EXPLORER_MAX_RATIOS``: the most ratios one sweep may have (default 200).
"""

from __future__ import annotations

import os

FILE_MB_VARIABLE = "PRUNING_EXPLORER_MAX_FILE_MB"
RATIOS_VARIABLE = "PRUNING_EXPLORER_MAX_RATIOS"
DEFAULT_FILE_MB = 1024
DEFAULT_RATIOS = 200


class SizeLimitError(ValueError):
    """Something declared larger than the limits allow; its message is ``too_large``'s sentence."""


def _positive_int(variable: str, default: int) -> int:
    text = os.environ.get(variable, "").strip()
    if not text:
        return default
    try:
        value = int(float(text))
    except ValueError:
        return default
    return value if value > 0 else default


def max_file_bytes() -> int:
    """The most bytes a model file or dataset may expand to (``PRUNING_EXPLORER_MAX_FILE_MB``, default 1 GiB)."""
    return _positive_int(FILE_MB_VARIABLE, DEFAULT_FILE_MB) << 20


def max_ratios() -> int:
    """The most ratios one sweep may evaluate (``PRUNING_EXPLORER_MAX_RATIOS``, default 200)."""
    return _positive_int(RATIOS_VARIABLE, DEFAULT_RATIOS)


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'; for messages."""
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{int(n)} bytes"


def too_large(what: str, size: float) -> str:
    """The sentence every size refusal uses: what, how big, the limit, and how to raise it."""
    limit = max_file_bytes()
    return (f"{what} would take {human_bytes(size)} in memory, above this server's limit of {human_bytes(limit)}. "
            f"Nothing was allocated. To allow larger files, start the app or command with the environment "
            f"variable {FILE_MB_VARIABLE} set to the limit in MiB (for example {FILE_MB_VARIABLE}="
            f"{max(2 * (limit >> 20), 2048)}).")


def too_many_ratios(count: int) -> str:
    return (f"{count:,} ratios were asked for; one sweep evaluates at most {max_ratios()} (set "
            f"{RATIOS_VARIABLE} to allow more).")


__all__ = ["DEFAULT_FILE_MB", "DEFAULT_RATIOS", "FILE_MB_VARIABLE", "RATIOS_VARIABLE", "SizeLimitError", "human_bytes",
           "max_file_bytes", "max_ratios", "too_large", "too_many_ratios"]
