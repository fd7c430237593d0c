"""Datasets that work offline: scikit-learn's bundled 8x8 digits, and user .npz files.

A ``DataSplits`` holds a training split (demo training only), a calibration split (methods that look at
activations or gradients) and an evaluation split (every accuracy the app shows). Tensors live on the CPU;
the workbench moves what it needs to its device once.
"""

from __future__ import annotations

import io
import math
import struct
import zipfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import numpy.lib.format as npy_format
import torch

from .limits import human_bytes, max_file_bytes, too_large

DIGITS_SEED = 0


class DataError(ValueError):
    """A dataset that cannot be used, with a message meant for the person who supplied it."""


@dataclass(frozen=True)
class Split:
    x: torch.Tensor  # (N, *sample_shape) float32; int64 (N, 2, L) token ids and attention masks for text models
    y: torch.Tensor  # (N,) int64 class indices; -1 in every entry when the data has no labels

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
    num_classes: int  # 0 when unlabelled
    labelled: bool = True  # False: every label is -1 and figures can only compare with the dense model
    class_names: tuple[str, ...] = ()  # name of class i, when the data names its classes
    note: str = ""  # what figures measured on this data mean, for the person reading them

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.eval.x.shape[1:])

    def describe(self) -> dict:
        return {"name": self.name, "train": len(self.train), "calibration": len(self.calib),
                "evaluation": len(self.eval), "sample_shape": list(self.sample_shape),
                "classes": self.num_classes, "labelled": self.labelled, "class_names": list(self.class_names),
                "note": self.note}


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


# ----- user .npz files -----------------------------------------------------------------------------------------
# An uploaded .npz is hostile until proven otherwise. It is opened with zipfile, never with np.load: every member's
# name, compression and .npy header (shape, dtype, order) is read and checked first, the declared sizes against each
# other and against the server's limit, and only then are the arrays decompressed, X in chunks straight into the one
# float32 buffer the workbench uses (no float64 copy, no second copy for the calibration/evaluation split).

MAX_MEMBERS = 256  # arrays in one .npz; X, y, X_calib and y_calib are all this app reads
MIN_CLASS_BOUND = 100_000  # labels may go up to max(this, the number of samples) - 1
_HEADER_BYTES = 65_536  # the most a .npy header may take (numpy refuses headers over 10,000 characters)
_CHUNK_BYTES = 1 << 20  # bytes of X decompressed and converted at a time
# what numpy.savez and savez_compressed write; bzip2 and lzma members would decompress each read without a bound
_NPZ_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}
_X_KINDS = "fiu"  # real floats, signed and unsigned integers
_FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class _Member:
    """One .npy array of an .npz, as its header declares it (nothing decompressed beyond the header)."""

    info: zipfile.ZipInfo
    key: str  # the array's name: the member name without ".npy"
    shape: tuple[int, ...]
    fortran_order: bool
    dtype: np.dtype
    data_offset: int  # bytes of magic + header before the array data
    nbytes: int


class _BoundedReader:
    """A read-only view of a member stream that refuses to read past ``limit`` bytes: a header whose length field
    says 4 GB makes numpy's header reader ask for 4 GB in one read; this stops it before anything is allocated."""

    def __init__(self, stream, limit: int):
        self.stream, self.limit, self.position = stream, limit, 0

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0 or self.position + size > self.limit:
            raise DataError("its .npy header is longer than any numpy writes")
        data = self.stream.read(size)
        self.position += len(data)
        return data


_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError, RuntimeError,
               NotImplementedError, struct.error, ValueError, OverflowError, UnicodeError)


@contextmanager
def _zip_errors(name: str, what: str = ""):
    """Damaged zips, CRC errors, short members: one DataError that says which file (and member) it was."""
    try:
        yield
    except DataError:
        raise
    except MemoryError as e:
        raise DataError(f"{name}: this server does not have the memory to read {what or 'the file'}.") from e
    except _ZIP_ERRORS as e:
        where = f" (member {what})" if what else ""
        raise DataError(f"{name}: not a readable .npz file{where}: the zip archive is damaged or truncated "
                        f"({type(e).__name__}: {str(e)[:200]}).") from e


def _member_key(info: zipfile.ZipInfo, name: str) -> str:
    filename = info.filename
    if info.is_dir() or not filename.endswith(".npy"):
        raise DataError(f"{name}: holds {filename[:100]!r}, which is not a .npy array. An .npz holds only the .npy "
                        "arrays that numpy.savez writes; save the data with numpy.savez or numpy.savez_compressed.")
    key = filename[:-4]
    if (not key or key in (".", "..") or any(c in key for c in "/\\:\x00")
            or any(ord(c) < 32 for c in key)):
        raise DataError(f"{name}: holds a member named {filename[:100]!r}; array names with paths or control "
                        "characters are refused. Save the arrays with numpy.savez(file, X=..., y=...).")
    if info.flag_bits & 0x1:
        raise DataError(f"{name}: the array {key!r} is encrypted; save it with numpy.savez, unencrypted.")
    if info.compress_type not in _NPZ_METHODS:
        raise DataError(f"{name}: the array {key!r} is compressed with zip method {info.compress_type}; only the "
                        "stored and deflate methods of numpy.savez and numpy.savez_compressed are read.")
    return key


def _read_header(zf: zipfile.ZipFile, info: zipfile.ZipInfo, key: str, name: str) -> _Member:
    """The member's .npy header, read from the start of its stream only, checked against its declared size."""
    with _zip_errors(name, repr(key)), zf.open(info) as stream:
        reader = _BoundedReader(stream, _HEADER_BYTES)
        try:
            version = npy_format.read_magic(reader)
            if version == (1, 0):
                shape, fortran_order, dtype = npy_format.read_array_header_1_0(reader)
            elif version in ((2, 0), (3, 0)):
                # 3.0 differs from 2.0 only in decoding the header as UTF-8 instead of latin-1, which matters only
                # for non-ASCII field names of structured dtypes: refused for X and y, never read otherwise
                shape, fortran_order, dtype = npy_format.read_array_header_2_0(reader)
            else:
                raise DataError(f".npy format version {version[0]}.{version[1]} is not one numpy writes")
        except DataError as e:
            raise DataError(f"{name}: the array {key!r} is not a valid .npy array: {e}.") from e
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError):
            raise  # the zip, not the header: _zip_errors says so
        except Exception as e:  # ValueError, SyntaxError, tokenize errors, RecursionError from a hostile header
            raise DataError(f"{name}: the array {key!r} has a malformed .npy header "
                            f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}).") from e
    if dtype.hasobject:
        raise DataError(f"{name}: the file holds pickled Python objects, which are never loaded. "
                        "Save plain numeric arrays with numpy.savez.")
    if any(d < 0 for d in shape):
        raise DataError(f"{name}: the array {key!r} has a malformed .npy header (negative shape {shape}).")
    nbytes = math.prod(shape) * dtype.itemsize
    declared = info.file_size - reader.position
    if nbytes != declared:
        lie = "larger" if nbytes > declared else "smaller"
        raise DataError(f"{name}: the array {key!r} is inconsistent: its header describes {human_bytes(nbytes)} "
                        f"of data (shape {shape}, dtype {dtype}), {lie} than the {human_bytes(max(declared, 0))} "
                        "its zip entry declares. The file is damaged or was not written by numpy.")
    return _Member(info, key, tuple(int(d) for d in shape), bool(fortran_order), dtype, reader.position, nbytes)


def _open_npz(data: bytes, name: str) -> tuple[zipfile.ZipFile, dict[str, _Member]]:
    """The zip and its arrays by lower-case name, every header checked; nothing beyond the headers decompressed."""
    if not data.startswith(b"PK"):
        raise DataError(f"{name}: not a readable .npz file (an .npz is the zip archive numpy.savez writes; "
                        "this file is something else).")
    # Parsing a central directory costs time per entry (about 1 s per 100,000): count the entries' signatures, an
    # upper bound on their number, before zipfile parses them.
    if data.count(b"PK\x01\x02") > MAX_MEMBERS:
        raise DataError(f"{name}: holds more than {MAX_MEMBERS} members; a dataset .npz holds the arrays X and y "
                        "(and optionally X_calib and y_calib).")
    with _zip_errors(name):
        zf = zipfile.ZipFile(io.BytesIO(data))
        infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        zf.close()
        raise DataError(f"{name}: holds {len(infos):,} members; a dataset .npz holds the arrays X and y "
                        "(and optionally X_calib and y_calib).")
    try:
        members: dict[str, _Member] = {}
        for info in infos:
            key = _member_key(info, name)
            if key.lower() in members:
                other = members[key.lower()].key
                raise DataError(f"{name}: holds two arrays named {other!r}"
                                f"{'' if other == key else f' and {key!r}'}; array names must be unique (X and x "
                                "count as the same name).")
            members[key.lower()] = _read_header(zf, info, key, name)
        total = sum(m.nbytes for m in members.values())
        if total > max_file_bytes():
            raise DataError(too_large(f"{name}: the arrays of this .npz", total))
    except BaseException:
        zf.close()
        raise
    return zf, members


def _check_samples(x: _Member, y: _Member, where: str) -> int:
    """Shape and dtype checks of an (X, y) pair from their headers. Returns the number of samples."""
    if x.dtype.kind not in _X_KINDS or x.dtype.fields is not None or x.dtype.subdtype is not None:
        kind = {"b": "booleans", "c": "complex numbers", "S": "byte strings", "U": "strings",
                "V": "structured records", "M": "dates", "m": "time spans"}.get(x.dtype.kind, "not numbers")
        raise DataError(f"{where}: X must hold real numbers (floats or integers); its dtype {x.dtype} holds {kind}.")
    if len(x.shape) < 2:
        raise DataError(f"{where}: X must have a batch dimension and at least one feature dimension, "
                        f"got shape {x.shape}.")
    n = x.shape[0]
    if len(y.shape) == 0 or sum(d != 1 for d in y.shape) > 1:
        raise DataError(f"{where}: y must be a 1-D array of class labels, got shape {y.shape}.")
    labels = math.prod(y.shape)
    if n != labels:
        raise DataError(f"{where}: X has {n} samples but y has {labels} labels.")
    if n == 0:
        raise DataError(f"{where}: the dataset is empty.")
    if math.prod(x.shape[1:]) == 0:
        raise DataError(f"{where}: X has shape {x.shape}: its samples hold no values (a dimension of size 0).")
    if y.dtype.kind not in "iuf" or y.dtype.fields is not None or y.dtype.subdtype is not None:
        raise DataError(f"{where}: y must hold integer class labels, got dtype {y.dtype}.")
    return n


def _memory_needed(x: _Member, labels: int, random_split: bool) -> int:
    """Bytes the loaded split takes, which the stored sizes understate: X becomes float32 (a uint8 X takes four
    times its stored size), labels int64 (plus their stored copy while converted), and the seeded split holds a
    permutation, its inverse and the permuted labels while X is read."""
    return 4 * math.prod(x.shape) + 16 * labels + (32 * labels if random_split else 0)


def _read_labels(zf: zipfile.ZipFile, m: _Member, name: str, where: str, bound: int) -> np.ndarray:
    with _zip_errors(name, repr(m.key)), zf.open(m.info) as stream:
        y = npy_format.read_array(stream, allow_pickle=False)
        if stream.read(1):
            raise DataError(f"{name}: the array {m.key!r} has bytes after its data.")
    y = y.reshape(-1)
    if y.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            if not np.isfinite(y).all() or not np.all(y == np.round(y)):
                raise DataError(f"{where}: y must hold integer class labels.")
    low, high = y.min(), y.max()
    if low < 0:
        raise DataError(f"{where}: class labels must be 0 or more, found {int(low)}.")
    if high >= bound:
        raise DataError(f"{where}: class label {int(high):,} is too large. Labels are class indices 0, 1, 2, ...; "
                        f"a dataset of this size may have at most {bound:,} classes.")
    return y.astype(np.int64)


def _read_exact(stream, size: int, m: _Member, name: str) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise DataError(f"{name}: the array {m.key!r} is truncated (its data ends early).")
    return data


def _read_samples(zf: zipfile.ZipFile, m: _Member, name: str, where: str,
                  inverse: np.ndarray | None = None) -> np.ndarray:
    """X as one C-contiguous float32 array, decompressed and converted in chunks of about 1 MB.

    ``inverse``: sample i of the file goes to row ``inverse[i]`` of the result (the seeded split permutes the
    samples while they are read, so no second copy is made). Every chunk is checked for NaN and infinity *after*
    the conversion, so float64 values beyond float32's range are caught too. Only a Fortran-ordered X takes a
    second float32 buffer (its samples are interleaved in the file)."""
    n, sample = m.shape[0], m.shape[1:]
    per_sample = math.prod(sample)
    with _zip_errors(name, f"the {m.key!r} array of {human_bytes(m.nbytes)}"):
        out = np.empty((n, *sample), dtype=np.float32)
        staged = np.empty(m.shape[::-1], dtype=np.float32) if m.fortran_order else None
    bad = overflow = 0

    def convert(src: np.ndarray, dst: np.ndarray | None) -> np.ndarray:
        nonlocal bad, overflow
        with np.errstate(over="ignore", invalid="ignore"):
            if dst is None:
                dst = src.astype(np.float32)
            else:
                np.copyto(dst, src, casting="unsafe")
        finite = int(np.count_nonzero(np.isfinite(dst)))
        if finite != dst.size:
            bad += dst.size - finite
            overflow += int(np.count_nonzero(np.isfinite(src))) - finite
        return dst

    itemsize = m.dtype.itemsize
    with _zip_errors(name, repr(m.key)), zf.open(m.info) as stream:
        _read_exact(stream, m.data_offset, m, name)
        if staged is not None or per_sample * itemsize > _CHUNK_BYTES:
            # element chunks, in file order: into the staging buffer (Fortran order), or sample by sample into
            # the rows of the result (samples larger than a chunk)
            targets = ([staged.reshape(-1)] if staged is not None else
                       (out[i if inverse is None else inverse[i]].reshape(-1) for i in range(n)))
            step = max(1, _CHUNK_BYTES // itemsize)
            for flat in targets:
                for a in range(0, flat.size, step):
                    b = min(flat.size, a + step)
                    convert(np.frombuffer(_read_exact(stream, (b - a) * itemsize, m, name), m.dtype), flat[a:b])
        else:
            rows = max(1, _CHUNK_BYTES // (per_sample * itemsize))
            for a in range(0, n, rows):
                b = min(n, a + rows)
                src = np.frombuffer(_read_exact(stream, (b - a) * per_sample * itemsize, m, name), m.dtype)
                src = src.reshape((b - a, *sample))
                if inverse is None:
                    convert(src, out[a:b])
                else:
                    out[inverse[a:b]] = convert(src, None)
        if stream.read(1):  # the declared size was checked against the header; this also completes the CRC check
            raise DataError(f"{name}: the array {m.key!r} has bytes after its data.")
    if staged is not None:
        transposed = staged.T  # the samples, in Fortran order
        rows = max(1, _CHUNK_BYTES // (4 * per_sample))
        for a in range(0, n, rows):
            b = min(n, a + rows)
            if inverse is None:
                out[a:b] = transposed[a:b]
            else:
                out[inverse[a:b]] = transposed[a:b]
        del staged, transposed
    if bad:
        if overflow:
            also = f", and {bad - overflow:,} NaN or infinite values" if bad > overflow else ""
            raise DataError(f"{where}: X holds {overflow:,} values beyond float32's range (about "
                            f"±{_FLOAT32_MAX:.3g}), which become infinite when the data is converted to float32 "
                            f"for the model{also}; rescale the data before uploading.")
        raise DataError(f"{where}: X contains {bad} NaN or infinite values; clean them before uploading.")
    return out


def _check_memory(name: str, needed: int) -> None:
    if needed > max_file_bytes():
        raise DataError(too_large(f"{name}: this dataset, as float32 samples and int64 labels,", needed))


def _load_npz(data: bytes, name: str, seed: int, calib_fraction: float, max_calib: int) -> DataSplits:
    zf, members = _open_npz(data, name)
    with zf:
        return _read_splits(zf, members, name, seed, calib_fraction, max_calib)


def _read_splits(zf: zipfile.ZipFile, members: dict[str, _Member], name: str, seed: int, calib_fraction: float,
                 max_calib: int) -> DataSplits:
    if "x" not in members or "y" not in members:
        raise DataError(f"{name}: expected arrays named 'X' and 'y', found "
                        f"{sorted(m.key for m in members.values()) or 'none'}.")
    x_m, y_m = members["x"], members["y"]
    n = _check_samples(x_m, y_m, name)
    explicit = "x_calib" in members or "y_calib" in members
    if explicit:
        if "x_calib" not in members or "y_calib" not in members:
            raise DataError(f"{name}: has {'X_calib' if 'x_calib' in members else 'y_calib'} without "
                            f"{'y_calib' if 'x_calib' in members else 'X_calib'}; give both or neither.")
        xc_m, yc_m = members["x_calib"], members["y_calib"]
        where_c = f"{name} (calibration)"
        n_calib = _check_samples(xc_m, yc_m, where_c)
        if xc_m.shape[1:] != x_m.shape[1:]:
            raise DataError(f"{name}: X_calib samples have shape {xc_m.shape[1:]} but X samples {x_m.shape[1:]}.")
        _check_memory(name, _memory_needed(x_m, n, False) + _memory_needed(xc_m, n_calib, False))
        bound = max(MIN_CLASS_BOUND, n + n_calib)
        y = _read_labels(zf, y_m, name, name, bound)
        yc = _read_labels(zf, yc_m, name, where_c, bound)
        xc = _read_samples(zf, xc_m, name, where_c)
        x = _read_samples(zf, x_m, name, name)
        calib = Split(torch.from_numpy(xc), torch.from_numpy(yc))
        evaluation = Split(torch.from_numpy(x), torch.from_numpy(y))
    else:
        if n < 2:
            raise DataError(f"{name}: at least 2 samples are needed (one to calibrate, one to evaluate).")
        _check_memory(name, _memory_needed(x_m, n, True))
        y = _read_labels(zf, y_m, name, name, max(MIN_CLASS_BOUND, n))
        perm = np.random.default_rng(seed).permutation(n)
        n_cal = max(1, min(max_calib, int(n * calib_fraction)))
        inverse = np.empty_like(perm)
        inverse[perm] = np.arange(n)
        x = torch.from_numpy(_read_samples(zf, x_m, name, name, inverse))  # row k is sample perm[k]
        y = torch.from_numpy(y[perm])
        calib = Split(x[:n_cal], y[:n_cal])  # views of the one buffer, which the workbench uses as it is
        evaluation = Split(x[n_cal:], y[n_cal:])
    num_classes = int(max(int(calib.y.max()), int(evaluation.y.max()))) + 1
    return DataSplits(name, calib, calib, evaluation, num_classes)


def load_npz(data: bytes, name: str = "uploaded.npz", seed: int = 0, calib_fraction: float = 0.2,
             max_calib: int = 512) -> DataSplits:
    """An .npz with arrays ``X`` (N, ...) of real numbers and ``y`` (N,) of integer labels.

    Optional ``X_calib``/``y_calib`` give the calibration split explicitly; otherwise a seeded
    ``calib_fraction`` of the samples (at most ``max_calib``) is held out for calibration and the rest is the
    evaluation split. X becomes float32 (values beyond float32's range are refused), y int64.

    The file is treated as hostile: its zip structure and every .npy header are checked before any array is
    decompressed (names, zip methods, declared sizes, pickled objects, the total against
    ``PRUNING_EXPLORER_MAX_FILE_MB``), and X is converted in chunks into the single float32 buffer the splits
    share. Every problem raises ``DataError`` with a message for the person who supplied the file.
    """
    try:
        return _load_npz(data, name, seed, calib_fraction, max_calib)
    except DataError:
        raise
    except MemoryError as e:
        raise DataError(f"{name}: this server does not have the memory to load this dataset.") from e
    except Exception as e:  # a last net: nothing but DataError leaves this function
        raise DataError(f"{name}: not a readable .npz file ({type(e).__name__}: {str(e)[:200]}).") from e


def synthetic_images(n: int, shape: tuple[int, ...], num_classes: int, seed: int = 0) -> DataSplits:
    """Gaussian images with random labels, for benchmarks on architectures without bundled data."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((n, *shape), generator=g)
    y = torch.randint(0, num_classes, (n,), generator=g)
    split = Split(x, y)
    return DataSplits(f"synthetic {tuple(shape)}", split, split.head(min(n, 64)), split, num_classes)
