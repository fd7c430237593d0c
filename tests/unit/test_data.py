"""Datasets: the bundled digits, and .npz uploads with every kind of bad input refused clearly."""

import io

import numpy as np
import pytest

from pruning_core import DataError, load_digits, load_npz


def _npz(**arrays):
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


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
