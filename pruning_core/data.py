"""Datasets that work offline: scikit-learn's bundled 8x8 digits, and user .npz files.

A ``DataSplits`` holds a training split (demo training only), a calibration split (methods that look at
activations or gradients) and an evaluation split (every accuracy the app shows). Tensors live on the CPU;
the workbench moves what it needs to its device once.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass

import numpy as np
import torch

DIGITS_SEED = 0


class DataError(ValueError):
    """A dataset that cannot be used, with a message meant for the person who supplied it."""


@dataclass(frozen=True)
class Split:
    x: torch.Tensor  # (N, *sample_shape) float32
    y: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def head(self, n: int) -> "Split":
        return Split(self.x[:n], self.y[:n])


@dataclass(frozen=True)
class DataSplits:
    name: str
    train: Split
    calib: Split
    eval: Split
    num_classes: int

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.eval.x.shape[1:])

    def describe(self) -> dict:
        return {"name": self.name, "train": len(self.train), "calibration": len(self.calib),
                "evaluation": len(self.eval), "sample_shape": list(self.sample_shape),
                "classes": self.num_classes}


def _stratified_split(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        n_test = int(round(len(idx) * test_fraction))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    train, test = np.concatenate(train), np.concatenate(test)
    rng.shuffle(train)
    rng.shuffle(test)
    return train, test


def load_digits(seed: int = DIGITS_SEED, calib_size: int = 256) -> DataSplits:
    """scikit-learn's bundled 8x8 digits (1,797 images, 10 classes), scaled to [0, 1], shape (N, 1, 8, 8).

    70/30 stratified train/test split with ``seed``; the calibration split is the first ``calib_size``
    training images (calibration data is training data, never evaluation data).
    """
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    x = (bunch.data.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    y = bunch.target.astype(np.int64)
    tr, te = _stratified_split(y, 0.3, seed)
    train = Split(torch.from_numpy(x[tr]), torch.from_numpy(y[tr]))
    return DataSplits("digits (scikit-learn, bundled)", train, train.head(calib_size),
                      Split(torch.from_numpy(x[te]), torch.from_numpy(y[te])), 10)


def _check_arrays(x: np.ndarray, y: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    if x.dtype == object or y.dtype == object:
        raise DataError(f"{where}: arrays of Python objects are not accepted; save numeric arrays.")
    if not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
        raise DataError(f"{where}: X must be real numbers, got dtype {x.dtype}.")
    if x.ndim < 2:
        raise DataError(f"{where}: X must have a batch dimension and at least one feature dimension, "
                        f"got shape {x.shape}.")
    y = np.asarray(y).reshape(-1) if np.asarray(y).ndim > 1 and 1 in np.asarray(y).shape else np.asarray(y)
    if y.ndim != 1:
        raise DataError(f"{where}: y must be a 1-D array of class labels, got shape {y.shape}.")
    if len(x) != len(y):
        raise DataError(f"{where}: X has {len(x)} samples but y has {len(y)} labels.")
    if len(x) == 0:
        raise DataError(f"{where}: the dataset is empty.")
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).sum())
        raise DataError(f"{where}: X contains {bad} NaN or infinite values; clean them before uploading.")
    if np.issubdtype(y.dtype, np.floating):
        if not np.isfinite(y).all() or not np.all(y == np.round(y)):
            raise DataError(f"{where}: y must hold integer class labels.")
    elif not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{where}: y must hold integer class labels, got dtype {y.dtype}.")
    y = y.astype(np.int64)
    if y.min() < 0:
        raise DataError(f"{where}: class labels must be 0 or more, found {int(y.min())}.")
    return x.astype(np.float32), y


def load_npz(data: bytes, name: str = "uploaded.npz", seed: int = 0, calib_fraction: float = 0.2,
             max_calib: int = 512) -> DataSplits:
    """An .npz with arrays ``X`` (N, ...) and ``y`` (N,) of integer labels.

    Optional ``X_calib``/``y_calib`` give the calibration split explicitly; otherwise a seeded
    ``calib_fraction`` of the samples (at most ``max_calib``) is held out for calibration and the rest is the
    evaluation split. Loaded with ``allow_pickle=False``: an .npz holding pickled objects is refused.
    """
    if not data.startswith(b"PK"):
        raise DataError(f"{name}: not a readable .npz file (an .npz is the zip archive numpy.savez writes; "
                        "this file is something else).")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise DataError(f"{name}: the file holds pickled Python objects, which are never loaded. "
                            "Save plain numeric arrays with numpy.savez.") from e
        raise DataError(f"{name}: not a readable .npz file ({e}).") from e
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{name}: not a readable .npz file ({e}).") from e
    keys = {k.lower(): k for k in arrays}
    if "x" not in keys or "y" not in keys:
        raise DataError(f"{name}: expected arrays named 'X' and 'y', found {sorted(arrays) or 'none'}.")
    x, y = _check_arrays(arrays[keys["x"]], arrays[keys["y"]], name)
    if "x_calib" in keys and "y_calib" in keys:
        xc, yc = _check_arrays(arrays[keys["x_calib"]], arrays[keys["y_calib"]], f"{name} (calibration)")
        if xc.shape[1:] != x.shape[1:]:
            raise DataError(f"{name}: X_calib samples have shape {xc.shape[1:]} but X samples {x.shape[1:]}.")
        calib = Split(torch.from_numpy(xc), torch.from_numpy(yc))
        evaluation = Split(torch.from_numpy(x), torch.from_numpy(y))
    else:
        if len(x) < 2:
            raise DataError(f"{name}: at least 2 samples are needed (one to calibrate, one to evaluate).")
        perm = np.random.default_rng(seed).permutation(len(x))
        n_cal = max(1, min(max_calib, int(len(x) * calib_fraction)))
        calib = Split(torch.from_numpy(x[perm[:n_cal]]), torch.from_numpy(y[perm[:n_cal]]))
        evaluation = Split(torch.from_numpy(x[perm[n_cal:]]), torch.from_numpy(y[perm[n_cal:]]))
    num_classes = int(max(int(calib.y.max()), int(evaluation.y.max()))) + 1
    return DataSplits(name, calib, calib, evaluation, num_classes)


def synthetic_images(n: int, shape: tuple[int, ...], num_classes: int, seed: int = 0) -> DataSplits:
    """Gaussian images with random labels, for benchmarks on architectures without bundled data."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((n, *shape), generator=g)
    y = torch.randint(0, num_classes, (n,), generator=g)
    split = Split(x, y)
    return DataSplits(f"synthetic {tuple(shape)}", split, split.head(min(n, 64)), split, num_classes)
