"""Spectrum of a symmetric operator known only through its matrix-vector product: Lanczos with full
reorthogonalisation, stochastic Lanczos quadrature (SLQ) from the Ritz pairs, and Hutchinson's trace estimator.
Pure maths on vectors: ``matvec`` is any callable taking and returning a 1-D float64 tensor of length ``dim``
(the fundamental-limit estimate in ``pruning_core.limit`` passes a Hessian-vector product).

* **Lanczos** (Lanczos 1950; Golub & Van Loan, *Matrix Computations*, Alg. 10.1.1, with full
  reorthogonalisation as in Sec. 10.3.1): from a unit start vector q_1, m steps build an orthonormal basis
  Q = [q_1 .. q_m] of the Krylov space and the tridiagonal T = Q^T A Q (diagonal alpha, off-diagonal beta).
  Every new vector is orthogonalised against all previous ones, twice ("twice is enough", classical Gram-Schmidt),
  so the Ritz values do not repeat (no ghost eigenvalues). A beta that falls below ``1e-10 * ||T||`` means the
  Krylov space is invariant and the run stops early: T's eigenvalues are then exact eigenvalues of A.
* **SLQ** (Golub & Meurant 2010; Ubaru, Chen & Saad, SIAM J. Matrix Anal. Appl. 38(4), 2017, eq. 2.4; PyHessian's
  ``density``, Yao et al. 2020): for a random start vector v, with T = U diag(theta) U^T,
  v^T f(A) v / ||v||^2 ~= sum_j tau_j f(theta_j) with tau_j = U[0, j]^2 (sum 1). Averaged over ``probes``
  start vectors this is the spectral density: (1/dim) tr f(A) ~= sum over probes and j of tau_j f(theta_j) /
  probes. The quadrature is exact for polynomials of degree below 2m (Gauss quadrature), so its moments
  sum tau theta^k match v^T A^k v / ||v||^2 for k < 2m.
* **Hutchinson** (Hutchinson 1990; Avron & Toledo, J. ACM 58(2), 2011): tr(A) ~= mean_i z_i^T A z_i over
  Rademacher vectors z_i (entries +-1), unbiased with variance 2 sum_{i != j} A_ij^2 per probe.

Defaults: float64 vectors (a ``start`` vector of another dtype or device keeps the basis there: float32 halves the
memory of a large operator), Rademacher start vectors (PyHessian's choice), one seeded ``torch.Generator`` per
call so a run is reproducible from its seed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

Matvec = Callable[[torch.Tensor], torch.Tensor]
BREAKDOWN = 1e-10  # relative size of beta below which the Krylov space counts as invariant
ZERO_TOLERANCE = 1e-6  # Ritz values this small relative to the largest count as zero in ``negative_mass``


def rademacher(dim: int, generator: torch.Generator, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """A vector of ``dim`` independent +-1 entries (float64 unless ``dtype`` says otherwise), on the CPU."""
    return torch.randint(0, 2, (dim,), generator=generator, dtype=torch.int8).to(dtype).mul_(2).sub_(1)


@dataclass(frozen=True)
class LanczosResult:
    """One Lanczos run: ``alpha`` (m,) and ``beta`` (m-1,) define T; ``ritz_values`` (m,) its eigenvalues in
    ascending order, ``ritz_weights`` (m,) the squared first components of its eigenvectors (sum 1)."""

    alpha: np.ndarray
    beta: np.ndarray
    ritz_values: np.ndarray
    ritz_weights: np.ndarray

    @property
    def steps(self) -> int:
        return len(self.alpha)

    def tridiagonal(self) -> np.ndarray:
        """T as a dense (m, m) array."""
        return np.diag(self.alpha) + np.diag(self.beta, 1) + np.diag(self.beta, -1)

    def truncated(self, steps: int) -> LanczosResult:
        """The run as if it had stopped after ``steps`` steps: T's leading block (the same start vector gives the
        same first steps), so one long run also answers every shorter one."""
        return ritz_pairs(self.alpha[:steps], self.beta[:max(0, min(steps, len(self.alpha)) - 1)])


def ritz_pairs(alpha: np.ndarray, beta: np.ndarray) -> LanczosResult:
    """The Lanczos result of the tridiagonal (alpha, beta): its eigenvalues and squared first components."""
    t = np.diag(alpha) + np.diag(beta, 1) + np.diag(beta, -1)
    values, vectors = np.linalg.eigh(t)
    return LanczosResult(np.asarray(alpha), np.asarray(beta), values, vectors[0] ** 2)


def lanczos(matvec: Matvec, dim: int, steps: int, start: torch.Tensor | None = None, seed: int = 0
            ) -> LanczosResult:
    """``steps`` Lanczos steps with full reorthogonalisation on the symmetric operator ``matvec`` of size
    ``dim`` (the module docstring gives the algorithm). ``start``: the start vector (normalised here); by
    default a Rademacher vector from ``seed``. Stops early, with fewer steps, when the Krylov space is invariant
    (then the Ritz values are exact eigenvalues). Memory: ``steps`` vectors of ``dim`` float64."""
    if dim < 1:
        raise ValueError("Lanczos needs an operator of size at least 1")
    if steps < 1:
        raise ValueError(f"Lanczos needs at least one step, got {steps}")
    steps = min(int(steps), int(dim))
    if start is None:
        start = rademacher(dim, torch.Generator().manual_seed(int(seed)))
    q = start.flatten()
    if not q.is_floating_point():
        q = q.to(torch.float64)
    if q.numel() != dim:
        raise ValueError(f"the start vector has {q.numel()} entries, the operator {dim}")
    norm = torch.linalg.vector_norm(q)
    if not torch.isfinite(norm) or norm == 0:
        raise ValueError("the Lanczos start vector must be finite and nonzero")
    basis = torch.empty((steps, dim), dtype=q.dtype, device=q.device)
    basis[0] = q / norm
    alpha, beta = [], []
    scale = 0.0
    for j in range(steps):
        w = matvec(basis[j]).to(basis.dtype).flatten()
        if not torch.isfinite(w).all():
            raise ValueError("the matrix-vector product returned NaN or infinite values")
        a = float(basis[j] @ w)
        alpha.append(a)
        for _ in range(2):  # full reorthogonalisation against every basis vector, twice
            w = w - basis[:j + 1].T @ (basis[:j + 1] @ w)
        b = float(torch.linalg.vector_norm(w))
        scale = max(scale, abs(a) + b + (beta[-1] if beta else 0.0))
        if j == steps - 1 or b <= BREAKDOWN * max(scale, 1e-300):
            break
        beta.append(b)
        basis[j + 1] = w / b
    return ritz_pairs(np.array(alpha), np.array(beta[:len(alpha) - 1]))


@dataclass(frozen=True)
class SpectralDensity:
    """SLQ's quadrature of the spectral density: ``nodes`` (Ritz values of every probe, concatenated) and
    ``weights`` (their tau_j divided by the number of probes; sum 1), ``probe`` (which start vector each node
    came from) and ``dim``. sum weights * f(nodes) estimates (1/dim) tr f(A). ``runs``: the Lanczos runs it
    came from (empty for a quadrature given directly)."""

    nodes: np.ndarray
    weights: np.ndarray
    probe: np.ndarray
    dim: int
    runs: tuple[LanczosResult, ...] = ()

    @classmethod
    def of(cls, runs: list[LanczosResult], dim: int) -> SpectralDensity:
        """The quadrature of Lanczos runs from independent start vectors, each weighing 1 / len(runs)."""
        return cls(np.concatenate([r.ritz_values for r in runs]),
                   np.concatenate([r.ritz_weights / len(runs) for r in runs]),
                   np.concatenate([np.full(r.steps, i) for i, r in enumerate(runs)]), int(dim), tuple(runs))

    def truncated(self, steps: int) -> SpectralDensity:
        """The quadrature the same start vectors give after only ``steps`` Lanczos steps (no new product)."""
        if not self.runs:
            raise ValueError("this quadrature keeps no Lanczos runs to truncate")
        return SpectralDensity.of([r.truncated(steps) for r in self.runs], self.dim)

    def moment(self, k: int) -> float:
        """sum tau theta^k: estimates (1/dim) tr(A^k) (exact in expectation over the probes for k < 2m)."""
        return float(np.sum(self.weights * self.nodes ** k))

    @property
    def trace(self) -> float:
        """The SLQ trace estimate dim * sum tau theta."""
        return self.dim * self.moment(1)

    @property
    def negative_mass(self) -> float:
        """The share of the spectral mass on negative Ritz values (a non-convex point has some); values within
        ``ZERO_TOLERANCE`` of the largest |value| count as zero (a cluster of zero eigenvalues comes out as +-1e-17)."""
        scale = float(np.abs(self.nodes).max()) if self.nodes.size else 0.0
        return float(self.weights[self.nodes < -ZERO_TOLERANCE * scale].sum())

    def smoothed(self, grid: np.ndarray, sigma: float) -> np.ndarray:
        """The density on ``grid`` with every node spread into a Gaussian of width ``sigma`` (PyHessian's
        ``density_generate``, which uses sigma^2 = 1e-5 on a grid of 10,000 points): integrates to ~1."""
        if sigma <= 0:
            raise ValueError("the smoothing width sigma must be positive")
        z = (np.asarray(grid, dtype=float)[:, None] - self.nodes[None, :]) / sigma
        return (np.exp(-0.5 * z * z) / (sigma * np.sqrt(2 * np.pi))) @ self.weights


def slq(matvec: Matvec, dim: int, steps: int, probes: int = 1, seed: int = 0,
        dtype: torch.dtype = torch.float64) -> SpectralDensity:
    """Stochastic Lanczos quadrature: ``probes`` Lanczos runs of ``steps`` steps from Rademacher start vectors
    (seeds ``seed``, ``seed + 1``, ...) and their Ritz pairs as one quadrature rule (module docstring).
    ``probes=1`` is PyHessian's and the fundamental-limit code's ``lanczos_num``; ``dtype`` is the Lanczos
    basis's (float64 by default)."""
    if probes < 1:
        raise ValueError(f"SLQ needs at least one probe, got {probes}")
    runs = [lanczos(matvec, dim, steps, start=rademacher(dim, torch.Generator().manual_seed(int(seed) + i), dtype))
            for i in range(int(probes))]
    return SpectralDensity.of(runs, dim)


@dataclass(frozen=True)
class TraceEstimate:
    """Hutchinson's estimate: ``trace`` (the mean of z^T A z), ``stderr`` (its standard error over the
    probes; 0 with one probe) and ``samples`` (each z^T A z)."""

    trace: float
    stderr: float
    samples: np.ndarray


def hutchinson_trace(matvec: Matvec, dim: int, probes: int = 10, seed: int = 0) -> TraceEstimate:
    """tr(A) ~= mean of z^T A z over ``probes`` Rademacher vectors z drawn from one generator seeded ``seed``
    (Hutchinson 1990). Defaults: 10 probes (the digest's interactive setting)."""
    if dim < 1:
        raise ValueError("the trace needs an operator of size at least 1")
    if probes < 1:
        raise ValueError(f"Hutchinson's estimator needs at least one probe, got {probes}")
    g = torch.Generator().manual_seed(int(seed))
    samples = []
    for _ in range(int(probes)):
        z = rademacher(dim, g)
        hz = matvec(z).to(torch.float64).flatten()
        if not torch.isfinite(hz).all():
            raise ValueError("the matrix-vector product returned NaN or infinite values")
        samples.append(float(z @ hz))
    s = np.array(samples)
    stderr = float(s.std(ddof=1) / np.sqrt(len(s))) if len(s) > 1 else 0.0
    return TraceEstimate(float(s.mean()), stderr, s)


__all__ = ["LanczosResult", "Matvec", "SpectralDensity", "TraceEstimate", "hutchinson_trace", "lanczos",
           "rademacher", "ritz_pairs", "slq"]
