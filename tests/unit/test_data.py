"""Datasets: the bundled digits, and .npz uploads with every kind of bad input refused clearly.

An uploaded .npz is hostile: headers that declare huge shapes, zip entries that lie about their sizes, bombs that
compress a few hundred MB into a few KB, pickles, odd dtypes and names. Every one must end in a DataError (a
ValueError with a message for the person), never another exception and never a large allocation.
"""

import importlib.util
import io
import json
import os
import struct
import subprocess
import sys
import time
import tracemalloc
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import numpy.lib.format as npy_format
import pytest
import torch

from pruning_core import DataError, load_digits, load_npz
from pruning_core.limits import FILE_MB_VARIABLE

ROOT = Path(__file__).resolve().parents[2]


def _npz(**arrays):
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _npy(arr=None, *, shape=None, descr="<f8", fortran_order=False, payload=None, version=(1, 0)):
    """The bytes of one .npy member: ``arr`` as numpy writes it, or a header declaring ``shape``/``descr``
    followed by ``payload`` (a header that may lie about its data)."""
    buf = io.BytesIO()
    if arr is not None:
        npy_format.write_array(buf, arr, version=version)
        return buf.getvalue()
    header = {"descr": descr, "fortran_order": fortran_order, "shape": shape}
    (npy_format.write_array_header_1_0 if version == (1, 0) else npy_format.write_array_header_2_0)(buf, header)
    return buf.getvalue() + (payload or b"")


def _zip(members, *, declared=None, crc=None):
    """A stored (uncompressed) zip of (name, bytes) members, built by hand so it can say what zipfile never
    writes: duplicate names, wrong CRCs, and uncompressed sizes (``declared``: name -> size) that lie."""
    body, central = bytearray(), bytearray()
    declared, crc = declared or {}, crc or {}
    for name, payload in members:
        raw = name.encode()
        check = crc.get(name, zlib.crc32(payload))
        size = declared.get(name, len(payload))
        offset = len(body)
        body += struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 0, 0, 0, check, len(payload), size, len(raw), 0)
        body += raw + payload
        central += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 0, 0, 0, check, len(payload), size,
                               len(raw), 0, 0, 0, 0, 0, offset) + raw
    n, cd_offset = len(members), len(body)
    body += central
    if n >= 0xFFFF:  # zip64 end records
        z64 = len(body)
        body += struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, n, n, len(central), cd_offset)
        body += struct.pack("<4sLQL", b"PK\x06\x07", 0, z64, 1)
        body += struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    else:
        body += struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, n, n, len(central), cd_offset, 0)
    return bytes(body)


def _deflated_zeros_npz(shape, dtype="<f8", label_dtype=np.int64):
    """An .npz whose X is zeros of ``shape``, deflated while written (the writer never holds the array)."""
    buf = io.BytesIO()
    n = shape[0]
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        with zf.open("X.npy", "w", force_zip64=True) as f:
            npy_format.write_array_header_1_0(f, {"descr": dtype, "fortran_order": False, "shape": shape})
            row = np.zeros(shape[1:], dtype).tobytes()
            block = row * 4096
            for start in range(0, n, 4096):
                f.write(block if n - start >= 4096 else row * (n - start))
        zf.writestr("y.npy", _npy(np.zeros(n, label_dtype)))
    return buf.getvalue()


GOOD_Y = _npy(np.arange(4) % 2)


def test_digits_splits_are_disjoint_and_reproducible():
    a, b = load_digits(), load_digits()
    assert a.sample_shape == (1, 8, 8) and a.num_classes == 10
    assert len(a.train) + len(a.eval) == 1797
    assert (a.eval.x == b.eval.x).all()
    assert 0.0 <= float(a.eval.x.min()) and float(a.eval.x.max()) <= 1.0


def test_a_good_npz_is_split_into_calibration_and_evaluation():
    x = np.random.rand(100, 1, 8, 8).astype(np.float32)
    y = np.arange(100) % 10
    d = load_npz(_npz(X=x, y=y))
    assert len(d.calib) + len(d.eval) == 100 and len(d.calib) == 20
    d2 = load_npz(_npz(X=x, y=y, X_calib=x[:10], y_calib=y[:10]))
    assert len(d2.calib) == 10 and len(d2.eval) == 100


@pytest.mark.parametrize("chunk_bytes", [None, 1000, 40])
def test_the_seeded_split_is_a_permutation_of_the_file_in_float32(chunk_bytes, monkeypatch):
    """The split is ``x[perm[:n_cal]]`` / ``x[perm[n_cal:]]`` of the seeded permutation, whatever the stored dtype,
    order or compression, and every split is C-contiguous float32 with int64 labels. X is read in chunks: small
    chunks take the many-chunk and the sample-larger-than-a-chunk paths."""
    if chunk_bytes:
        monkeypatch.setattr("pruning_core.data._CHUNK_BYTES", chunk_bytes)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 2, 3, 3))
    y = rng.integers(0, 5, 300)
    perm = np.random.default_rng(7).permutation(300)
    n_cal = 60
    for stored in (x, np.asfortranarray(x), x.astype(">f8"), x.astype(np.float16)):
        for save in (np.savez, np.savez_compressed):
            buf = io.BytesIO()
            save(buf, X=stored, y=y.astype(np.uint8))
            d = load_npz(buf.getvalue(), seed=7)
            expected = stored.astype(np.float32)[perm]
            assert d.calib.x.dtype == torch.float32 and d.eval.y.dtype == torch.int64
            assert d.calib.x.is_contiguous() and d.eval.x.is_contiguous()
            assert np.array_equal(d.calib.x.numpy(), expected[:n_cal])
            assert np.array_equal(d.eval.x.numpy(), expected[n_cal:])
            assert np.array_equal(d.eval.y.numpy(), y[perm[n_cal:]]) and d.num_classes == int(y.max()) + 1


@pytest.mark.parametrize("chunk_bytes", [None, 40, 8])
def test_fortran_order_arrays_load_like_c_order_ones(chunk_bytes, monkeypatch):
    if chunk_bytes:
        monkeypatch.setattr("pruning_core.data._CHUNK_BYTES", chunk_bytes)
    x = np.random.default_rng(0).normal(size=(40, 6)).astype(np.float32)
    y = np.arange(40) % 3
    c = load_npz(_npz(X=x, y=y, X_calib=x[:8], y_calib=y[:8]))
    f = load_npz(_npz(X=np.asfortranarray(x), y=y, X_calib=np.asfortranarray(x[:8]), y_calib=y[:8]))
    assert torch.equal(c.eval.x, f.eval.x) and torch.equal(c.calib.x, f.calib.x)
    assert f.eval.x.is_contiguous()


@pytest.mark.parametrize("data, message", [
    (b"not a zip at all", "not a readable .npz"),
    (b"", "not a readable .npz"),
    (_npz(X=np.zeros((4, 2)), labels=np.zeros(4)), "expected arrays named 'X' and 'y'"),
    (_npz(X=np.full((4, 2), np.nan), y=np.zeros(4, int)), "NaN"),
    (_npz(X=np.zeros((4, 2)), y=np.zeros(3, int)), "4 samples but y has 3"),
    (_npz(X=np.zeros((4, 2)), y=np.array([0.5, 1, 2, 3])), "integer class labels"),
    (_npz(X=np.zeros((4, 2)), y=np.array([-1, 1, 2, 3])), "0 or more"),
    (_npz(X=np.zeros((0, 2)), y=np.zeros(0, int)), "empty"),
    (_npz(X=np.array([{"a": 1}] * 4, dtype=object), y=np.zeros(4, int)), "pickled"),
])
def test_bad_npz_files_get_a_clear_message(data, message):
    with pytest.raises(DataError, match=message):
        load_npz(data, "bad.npz")


# ----- 1. headers are checked before anything is allocated ----------------------------------------------------

def test_a_header_declaring_a_huge_shape_is_refused_without_allocating():
    """Before: numpy allocated from the header and a raw MemoryError escaped load_npz."""
    huge = _npy(shape=(10**7, 10**7), payload=b"\0" * 64)
    for data in (_zip([("X.npy", huge), ("y.npy", GOOD_Y)]),  # stored
                 _npz_deflated({"X.npy": huge, "y.npy": GOOD_Y})):
        with pytest.raises(DataError, match="header describes .* larger than"):
            load_npz(data, "huge.npz")


def _npz_deflated(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, payload in members.items():
            zf.writestr(name, payload)
    return buf.getvalue()


def test_a_zip_entry_that_declares_the_huge_size_too_is_refused_by_the_limit():
    """The header and the zip entry agree on 3.2 GB, but the bytes are not there: refused by the size limit
    before any decompression (before: numpy allocated the 3.2 GB, then failed reading)."""
    header = _npy(shape=(20_000, 20_000), payload=b"\0" * 64)
    data = _zip([("X.npy", header), ("y.npy", GOOD_Y)],
                declared={"X.npy": len(header) - 64 + 20_000 * 20_000 * 8})
    with pytest.raises(DataError, match="above this server's limit .*PRUNING_EXPLORER_MAX_FILE_MB"):
        load_npz(data, "lying.npz")


@pytest.mark.parametrize("members, declared, crc, message", [
    ([("X.npy", _npy(np.zeros((4, 2)))), ("y.npy", GOOD_Y)], {"X.npy": 10**6}, None, "inconsistent"),
    ([("X.npy", _npy(np.zeros((4, 2)))), ("y.npy", GOOD_Y)], None, {"X.npy": 1234}, "damaged"),
    ([("X.npy", _npy(np.zeros((4, 2)))), ("y.npy", GOOD_Y), ("README.txt", b"hi")], None, None,
     "'README.txt', which is not a .npy"),
    ([("X.npy", b"\x93NUMPY\x01\x00\x08\x00{'a': 1}"), ("y.npy", GOOD_Y)], None, None, "malformed .npy header"),
    ([("X.npy", b"\x93NUMPY\x01\x00" + struct.pack("<H", 40) + b"{'descr': '<f8', 'fortran_order': False, "),
      ("y.npy", GOOD_Y)], None, None, "malformed .npy header"),
    ([("X.npy", _npy(shape=(-4, 2), payload=b"")), ("y.npy", GOOD_Y)], None, None, "negative shape"),
    ([("X.npy", b"\x93NUMPY\x02\x00" + struct.pack("<I", 0xFFFFFFF0)), ("y.npy", GOOD_Y)], None, None,
     "header is longer"),
    ([("X.npy", b"\x93NUMPY\x07\x00rest"), ("y.npy", GOOD_Y)], None, None, "version 7.0"),
    ([("X.npy", b"not an npy at all"), ("y.npy", GOOD_Y)], None, None, "malformed .npy header"),
    ([("X.npy", _npy(shape=(4,), descr=[("a", "<f8"), ("b", "|O")], payload=b"")), ("y.npy", GOOD_Y)], None,
     None, "pickled"),
])
def test_malformed_members_and_lying_zip_entries_are_refused(members, declared, crc, message):
    with pytest.raises(DataError, match=message):
        load_npz(_zip(members, declared=declared, crc=crc), "bad.npz")


def test_only_stored_and_deflated_members_are_read():
    """bzip2 and lzma decompress a whole read at once, unbounded: refused (numpy writes neither)."""
    for method in (zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", compression=method) as zf:
            zf.writestr("X.npy", _npy(np.zeros((4, 2))))
            zf.writestr("y.npy", GOOD_Y)
        with pytest.raises(DataError, match=f"zip method {method}"):
            load_npz(buf.getvalue(), "bz.npz")


def test_damaged_and_truncated_files_raise_only_data_errors():
    """Every truncation and a spread of single-byte corruptions of a good file: DataError or a clean load."""
    good = _npz(X=np.random.default_rng(0).normal(size=(20, 3)), y=np.arange(20) % 4,
                X_calib=np.ones((5, 3)), y_calib=np.zeros(5, int))
    compressed = io.BytesIO()
    np.savez_compressed(compressed, X=np.random.default_rng(0).normal(size=(20, 3)), y=np.arange(20) % 4)
    cases = [good[:k] for k in range(0, len(good), 7)]
    for base in (good, compressed.getvalue()):
        rng = np.random.default_rng(1)
        for pos in rng.integers(0, len(base), 150):
            b = bytearray(base)
            b[pos] ^= 1 << int(rng.integers(0, 8))
            cases.append(bytes(b))
    for data in cases:
        try:
            load_npz(data, "broken.npz")
        except DataError:
            pass


# ----- 2. bombs are refused before they expand; an allowed large dataset is not copied -------------------------

def test_a_compressed_bomb_over_the_limit_is_refused_before_it_expands(monkeypatch):
    """32 MiB of zeros deflate to ~32 KB; with a 16 MiB limit it is refused from its header, and load_npz
    allocates almost nothing (before: it loaded)."""
    monkeypatch.setenv(FILE_MB_VARIABLE, "16")
    data = _deflated_zeros_npz((65_536, 64))
    assert len(data) < 200_000
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="above this server's limit of 16 MiB"):
            load_npz(data, "bomb.npz")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 << 20, f"load_npz allocated {peak / 2**20:.1f} MiB before refusing"
    monkeypatch.setenv(FILE_MB_VARIABLE, "64")
    assert len(load_npz(data, "bomb.npz").eval) > 60_000  # the same file loads under a larger limit


def test_the_limit_counts_the_float32_copy_not_only_the_stored_bytes(monkeypatch):
    """A uint8 X of 6 MiB becomes 24 MiB of float32: with a 16 MiB limit it is refused before it is read."""
    monkeypatch.setenv(FILE_MB_VARIABLE, "16")
    data = _deflated_zeros_npz((65_536, 96), dtype="|u1", label_dtype=np.uint8)
    with pytest.raises(DataError, match="as float32 samples and int64 labels, would take 27 MiB"):
        load_npz(data, "bytes.npz")


def test_loading_and_evaluating_a_large_dataset_keeps_memory_near_one_float32_copy(tmp_path):
    """128 MiB of float64 (64 MiB as float32), load_npz + Workbench + dense_metrics in a fresh process: the peak
    over the baseline stays below 2.5 copies of the float32 data + 40 MiB (before: 4.1 copies, from the float64
    array, its float32 cast and the split's fancy-indexed copies held together)."""
    spec = importlib.util.spec_from_file_location("bench_data_memory", ROOT / "bench" / "bench_data_memory.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    path = tmp_path / "x128.npz"
    bench.make_npz(str(path), 128)
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_data_memory.py"), "--measure", str(path),
                          "--model", "digits-mlp"], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    x32 = r["x_float32_bytes"]
    assert x32 == 64 << 20
    over = r["peak_after_dense_metrics"] - r["peak_before_load"]
    assert over <= 2.5 * x32 + (40 << 20), bench.report(r)


# ----- 3. values beyond float32's range ---------------------------------------------------------------------

def test_float64_values_beyond_float32_range_are_refused():
    """1e39 is finite in float64 but inf in float32 (before: accepted, the dense loss was NaN)."""
    x = np.zeros((6, 4))
    x[2, 1] = 1e39
    x[4, 0] = -3e200
    with pytest.raises(DataError, match="2 values beyond float32's range"):
        load_npz(_npz(X=x, y=np.arange(6) % 2), "big.npz")
    x[0, 0] = np.nan
    with pytest.raises(DataError, match="2 values beyond float32's range .* and 1 NaN or infinite"):
        load_npz(_npz(X=x, y=np.arange(6) % 2), "big.npz")
    ok = np.full((6, 4), 3.0e38)  # within float32's range
    assert torch.isfinite(load_npz(_npz(X=ok, y=np.arange(6) % 2)).eval.x).all()


# ----- 4. other hostile inputs ------------------------------------------------------------------------------

X4 = np.zeros((4, 2))
Y4 = np.arange(4) % 2


@pytest.mark.parametrize("data, message", [
    (_npz(X=X4, y=np.array([0, 1, 2, 10**9])), "class label 1,000,000,000 is too large"),
    (_npz(X=X4, y=np.array([0, 1, 2, 1e300])), "class label .* is too large"),
    (_npz(X=X4, y=np.array([0, 1, 2, 2**64 - 1], dtype=np.uint64)), "too large"),
    (_npz(X=X4, y=np.array([0, 1, np.inf, 3])), "integer class labels"),
    (_npz(X=X4, y=np.array([True, False, True, False])), "integer class labels, got dtype bool"),
    (_npz(X=X4, y=np.array(["a", "b", "c", "d"])), "integer class labels"),
    (_npz(X=X4, y=np.zeros((2, 2), int)), "1-D array"),
    (_npz(X=X4, y=np.array(3)), "1-D array"),
    (_npz(X=X4 > 0, y=Y4), "real numbers .* booleans"),
    (_npz(X=X4 + 1j, y=Y4), "real numbers .* complex"),
    (_npz(X=np.array([["a", "b"]] * 4), y=Y4), "real numbers .* strings"),
    (_npz(X=np.zeros(4, dtype=[("a", "<f4"), ("b", "<f4")]).reshape(4, 1), y=Y4), "real numbers .* structured"),
    (_npz(X=np.zeros((4,), "datetime64[s]").reshape(4, 1), y=Y4), "real numbers .* dates"),
    (_npz(X=np.zeros(4), y=Y4), "batch dimension"),
    (_npz(X=np.zeros((4, 0)), y=Y4), "hold no values"),
    (_npz(X=np.zeros((4, 3, 0, 2)), y=Y4), "hold no values"),
    (_npz(X=X4, y=Y4, X_calib=np.zeros((2, 3)), y_calib=Y4[:2]), r"X_calib samples have shape \(3,\)"),
    (_npz(X=X4, y=Y4, X_calib=np.zeros((2, 2))), "X_calib without y_calib"),
    (_npz(X=X4, y=Y4, X_calib=np.zeros((2, 2)), y_calib=Y4), r"\(calibration\): X has 2 samples but y has 4"),
    (_npz(X=X4, y=Y4, X_calib=np.zeros((2, 2)), y_calib=np.array([0, 10**7])), "too large"),
    (_npz(X=np.zeros((1, 2)), y=np.zeros(1, int)), "at least 2 samples"),
    (_zip([("../X.npy", _npy(X4)), ("y.npy", GOOD_Y)]), "paths"),
    (_zip([("/abs/X.npy", _npy(X4)), ("y.npy", GOOD_Y)]), "paths"),
    (_zip([("dir\\X.npy", _npy(X4)), ("y.npy", GOOD_Y)]), "paths"),
    (_zip([("X.npy", _npy(X4)), ("X.npy", _npy(X4 + 1)), ("y.npy", GOOD_Y)]), "two arrays named 'X'"),
    (_zip([("X.npy", _npy(X4)), ("x.npy", _npy(X4 + 1)), ("y.npy", GOOD_Y)]), "'X' and 'x'"),
    (_zip([("X.npy", _npy(X4)), ("y.npy", GOOD_Y), ("sub/", b"")]), "not a .npy array"),
    (_npz(X=X4, y=Y4)[:-30], "not a readable .npz"),
    (_npz(X=X4, y=Y4)[: len(_npz(X=X4, y=Y4)) // 2], "not a readable .npz"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_hostile_npz_files_are_refused_clearly(data, message):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate zip names
        with pytest.raises(DataError, match=message):
            load_npz(data, "hostile.npz")


def test_labels_are_bounded_by_the_dataset_not_a_fixed_number_of_classes():
    """Up to max(100,000, samples) classes are allowed: label 99,999 on four samples loads."""
    d = load_npz(_npz(X=X4, y=np.array([0, 1, 2, 99_999])))
    assert d.num_classes == 100_000
    with pytest.raises(DataError, match="at most 100,000 classes"):
        load_npz(_npz(X=X4, y=np.array([0, 1, 2, 100_000])))


def test_an_npz_with_100000_tiny_members_is_refused_quickly():
    data = _zip([(f"a{i}.npy", b"") for i in range(100_000)])
    start = time.perf_counter()
    with pytest.raises(DataError, match="more than 256 members"):
        load_npz(data, "many.npz")
    assert time.perf_counter() - start < 0.5
