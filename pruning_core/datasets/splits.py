"""What the offline and uploaded datasets add to ``data.DataSplits``: whether the labels are real, the class names,
and a sentence saying what the figures measured on the data mean.

``make_splits`` builds a ``DataSplits`` with those three fields. Until ``DataSplits`` itself has them (requested
of the lead in /tmp/notes/data-requests.md), it returns ``DescribedSplits``, a subclass that adds them, so callers
read ``splits.labelled``, ``splits.class_names`` and ``splits.note`` either way. Unlabelled splits hold -1 in
every label (``tasks.is_labelled`` reads that too).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ..data import DataError, DataSplits, Split
from ..limits import max_file_bytes, too_large

UNLABELLED = -1


@dataclasses.dataclass(frozen=True)
class DescribedSplits(DataSplits):
    """A ``DataSplits`` that says whether its labels are real (``labelled``), names its classes
    (``class_names``, index i is class i) and states what figures measured on it mean (``note``)."""

    labelled: bool = True
    class_names: tuple[str, ...] = ()
    note: str = ""

    def describe(self) -> dict:
        return {**super().describe(), "labelled": self.labelled, "class_names": list(self.class_names),
                "note": self.note}


_EXTRA = {"labelled", "class_names", "note"}


def make_splits(name: str, train: Split, calib: Split, evaluation: Split, num_classes: int, *, labelled: bool,
                class_names: tuple[str, ...] = (), note: str = "") -> DataSplits:
    """A ``DataSplits`` carrying ``labelled``, ``class_names`` and ``note``: ``DataSplits`` itself once it has
    those fields, ``DescribedSplits`` until then."""
    cls = DataSplits if _EXTRA <= {f.name for f in dataclasses.fields(DataSplits)} else DescribedSplits
    return cls(name, train, calib, evaluation, num_classes, labelled=labelled,  # type: ignore[call-arg]
               class_names=tuple(class_names), note=note)


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


__all__ = ["UNLABELLED", "DescribedSplits", "calibration_indices", "check_memory", "make_splits", "unlabelled"]
