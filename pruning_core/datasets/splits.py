"""Helpers the offline and uploaded datasets share: unlabelled splits (-1 in every label, which
``tasks.is_labelled`` reads too), the memory check before allocating, and the seeded calibration split.
"""

from __future__ import annotations

import numpy as np
import torch

from ..data import DataError, Split
from ..limits import max_file_bytes, too_large

UNLABELLED = -1


def unlabelled(x: torch.Tensor) -> Split:
    """A split of samples ``x`` (N, ...) without labels: y is (N,) int64 filled with -1."""
    return Split(x, torch.full((len(x),), UNLABELLED, dtype=torch.int64))


def check_memory(what: str, nbytes: int) -> None:
    """``DataError`` before allocating when ``nbytes`` exceed ``limits.max_file_bytes()``."""
    if nbytes > max_file_bytes():
        raise DataError(too_large(what, nbytes))


def calibration_indices(y: np.ndarray, calib_fraction: float, max_calib: int, seed: int
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a seeded (calibration, evaluation) split of N samples with labels ``y`` (N,): the calibration
    split takes ``round(calib_fraction * n_c)`` samples of each class c (at least one when the class has two or
    more, and one sample overall when no class has two), then is cut to ``max_calib``; unlabelled samples (-1)
    are one class. Both parts are shuffled."""
    rng = np.random.default_rng(seed)
    calib, rest = [], []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        k = int(round(len(idx) * calib_fraction))
        k = min(max(k, 1 if len(idx) > 1 else 0), len(idx) - 1)
        calib.append(idx[:k])
        rest.append(idx[k:])
    calib_idx, eval_idx = np.concatenate(calib), np.concatenate(rest)
    rng.shuffle(calib_idx)
    rng.shuffle(eval_idx)
    if len(calib_idx) == 0 and len(eval_idx) > 1:  # every class has one sample
        calib_idx, eval_idx = eval_idx[:1], eval_idx[1:]
    if len(calib_idx) > max_calib:
        eval_idx = np.concatenate([eval_idx, calib_idx[max_calib:]])
        calib_idx = calib_idx[:max_calib]
    return calib_idx, eval_idx


__all__ = ["UNLABELLED", "calibration_indices", "check_memory", "unlabelled"]
