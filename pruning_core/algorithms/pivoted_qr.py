"""Column-pivoted QR and the interpolative decomposition (Chee, Renz, Damle, De Sa, "Pruning Neural Networks
with Interpolative Decompositions", arXiv 2108.00065, 2021, eq. (ID)).

For Z ∈ R^{rows x C}, a column-pivoted QR

    Z Π = Q [[R11, R12], [0, R22]],    R11 ∈ R^{k x k}

gives the kept columns I = Π[:k] and the interpolation matrix T = [I_k, R11^{-1} R12] Π^T ∈ R^{k x C}, with

    Z ≈ Z[:, I] T,        ||Z - Z[:, I] T||_F = ||R22||_F        (the ID error).

Numerics. The QR runs in float64. Z is reduced by TSQR (``RowReducer``: block rows QR'd as they stream in,
``torch.linalg.qr(mode="r")``, merged into one C x C factor with the same column norms and R up to row signs), then
``scipy.linalg.qr(pivoting=True)`` (LAPACK geqp3) runs on that small factor; torch has no pivoted QR. When R11 has a
pivot below ``rank_tol * |R_11|`` (dead ReLUs make Z rank-deficient) the block R11^{-1} R12 is the minimum-norm
least-squares solution truncated at that relative tolerance (as the official code's ``pinv``), so T stays finite
and columns with no signal get zero coefficients. Default ``rank_tol=1e-6`` (float32 activations fix a channel
only to about 1e-7 relative).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.linalg
import torch

RANK_TOL = 1e-6


class RowReducer:
    """Streaming TSQR: the R factor of a tall matrix fed in blocks of rows, without ever holding the matrix.

    ``add(block)`` QRs [R; block] (float64) and keeps its R (at most C x C), so ``r`` always satisfies
    R^T R = Z^T Z for the rows seen so far: the same column norms and Gram matrix as Z, hence the same pivots and
    the same R (up to row signs) in exact arithmetic."""

    def __init__(self, columns: int):
        self.columns = columns
        self.rows = 0
        self._r: torch.Tensor | None = None

    def add(self, block: torch.Tensor) -> None:
        block = block.detach().to(torch.float64).reshape(-1, self.columns)
        if block.shape[0] == 0:
            return
        self.rows += block.shape[0]
        stacked = block if self._r is None else torch.cat([self._r, block])
        self._r = torch.linalg.qr(stacked, mode="r").R

    @property
    def r(self) -> torch.Tensor:
        """(C, C) float64: the reduced factor, zero-padded when fewer than C rows were seen."""
        out = torch.zeros(self.columns, self.columns, dtype=torch.float64)
        if self._r is not None:
            r = self._r.cpu()
            out[:r.shape[0]] = r
        return out


@dataclass
class InterpolativeDecomposition:
    """Z ≈ Z[:, selected] @ interpolation, from a column-pivoted QR of Z (rows x C)."""

    selected: torch.Tensor  # (k,) long: the kept columns Π[:k], in pivot order (the rows of T)
    interpolation: torch.Tensor  # (k, C) float64: T = [I_k, R11^+ R12] Π^T; T[:, selected] = I_k
    diag: torch.Tensor  # (C,) float64: |R_jj| in pivot order (non-increasing)
    error: float  # ||Z - Z[:, selected] T||_F = ||R22||_F
    relative_error: float  # error / ||Z||_F (0 for Z = 0)
    rank: int  # numerical rank: pivots with |R_jj| > rank_tol * |R_11|


@dataclass
class ColumnPivotedQR:
    """Z Π = Q R for one Z (rows x C), kept so that an ID for any k costs one small triangular solve.

    ``r``: (C, C) float64 upper-triangular; ``pivots``: (C,) int64, column j of R is channel ``pivots[j]``;
    ``errors[k]`` = ||R22||_F when k columns are kept (k = 0..C), from one reverse cumulative sum of R**2."""

    r: np.ndarray
    pivots: np.ndarray
    rows: int
    rank_tol: float = RANK_TOL
    errors: np.ndarray = field(init=False)
    norm: float = field(init=False)

    def __post_init__(self) -> None:
        sq = self.r ** 2
        tail = sq[::-1, ::-1].cumsum(0).cumsum(1)[::-1, ::-1]  # tail[i, j] = sum of sq[i:, j:]
        c = self.r.shape[1]
        self.errors = np.sqrt(np.append(np.diag(tail), 0.0)) if c else np.zeros(1)
        self.norm = float(self.errors[0])

    @classmethod
    def of_matrix(cls, z: torch.Tensor | np.ndarray, rank_tol: float = RANK_TOL) -> "ColumnPivotedQR":
        """From Z itself (rows x C): the TSQR reduction (one float64 QR, torch) then a pivoted QR of the C x C R."""
        z = torch.as_tensor(z)
        if z.ndim != 2:
            raise ValueError(f"Z must be a matrix (rows x channels), got shape {tuple(z.shape)}")
        reducer = RowReducer(z.shape[1])
        reducer.add(z)
        return cls.of_reduced(reducer.r, reducer.rows, rank_tol)

    @classmethod
    def of_reduced(cls, r: torch.Tensor, rows: int, rank_tol: float = RANK_TOL) -> "ColumnPivotedQR":
        """From any R with R^T R = Z^T Z (a TSQR factor, or Z itself)."""
        a = r.detach().cpu().to(torch.float64).numpy()
        if not np.all(np.isfinite(a)):
            raise ValueError("the activations contain NaN or inf; an interpolative decomposition needs finite values")
        rr, piv = scipy.linalg.qr(a, mode="r", pivoting=True, check_finite=False)
        c = a.shape[1]
        square = np.zeros((c, c))
        square[:min(rr.shape[0], c)] = rr[:c]
        return cls(square, piv.astype(np.int64), rows, rank_tol)

    @property
    def size(self) -> int:
        return self.r.shape[1]

    @property
    def diag(self) -> np.ndarray:
        return np.abs(np.diag(self.r))

    @property
    def diag_ratio(self) -> np.ndarray:
        """|R_jj / R_11| for j = 1..C (all zero for Z = 0)."""
        d = self.diag
        return d / d[0] if d[0] > 0 else np.zeros_like(d)

    @property
    def rank(self) -> int:
        d = self.diag
        return int(np.count_nonzero(d > self.rank_tol * d[0])) if d[0] > 0 else 0

    def relative_error(self, k: int) -> float:
        return float(self.errors[k] / self.norm) if self.norm > 0 else 0.0

    def interpolation(self, k: int) -> np.ndarray:
        """T (k x C) float64 with T[:, pivots[:k]] = I_k and T[:, pivots[k:]] = R11^{-1} R12."""
        c = self.size
        if not 1 <= k <= c:
            raise ValueError(f"k must be between 1 and {c} (the number of columns), got {k}")
        r11, r12 = self.r[:k, :k], self.r[:k, k:]
        d = np.abs(np.diag(r11))
        if k == c:
            coeff = np.zeros((k, 0))
        elif d[0] > 0 and d.min() > self.rank_tol * d[0]:
            coeff = scipy.linalg.solve_triangular(r11, r12, check_finite=False)
        else:  # rank-deficient R11 (dead or duplicated channels): minimum-norm solution at the same tolerance
            coeff = scipy.linalg.lstsq(r11, r12, cond=self.rank_tol, check_finite=False)[0]
        t = np.zeros((k, c))
        t[np.arange(k), self.pivots[:k]] = 1.0
        t[:, self.pivots[k:]] = coeff
        return t

    def decomposition(self, k: int) -> InterpolativeDecomposition:
        return InterpolativeDecomposition(torch.from_numpy(self.pivots[:k].copy()),
                                          torch.from_numpy(self.interpolation(k)), torch.from_numpy(self.diag),
                                          float(self.errors[k]), self.relative_error(k), self.rank)

    def singular_values(self) -> np.ndarray:
        """σ_1 >= ... >= σ_C of Z (those of R)."""
        return scipy.linalg.svdvals(self.r, check_finite=False)


def interpolative_decomposition(z: torch.Tensor | np.ndarray, k: int, rank_tol: float = RANK_TOL
                                ) -> InterpolativeDecomposition:
    """The rank-k column interpolative decomposition Z ≈ Z[:, I] T of Z (rows x C), Chee et al. 2021 eq. (ID):
    column-pivoted QR in float64 after a TSQR reduction; see ``ColumnPivotedQR``."""
    return ColumnPivotedQR.of_matrix(z, rank_tol).decomposition(k)


__all__ = ["RANK_TOL", "ColumnPivotedQR", "InterpolativeDecomposition", "RowReducer", "interpolative_decomposition"]
