"""The Optimal Brain Surgeon projection and the I-OBS iteration (Wu, Modoranu, Safaryan, Kuznedelev, Alistarh,
"The Iterative Optimal Brain Surgeon: Faster Sparse Recovery by Leveraging Second-Order Information", NeurIPS
2024, arXiv 2408.17163), pure maths on torch tensors (float64 inside).

**One layer** (the paper's §4.2 sub-problem, solved as SparseGPT does: Frantar & Alistarh, "SparseGPT", ICML 2023,
Algorithm 1). W (rows x d, PyTorch's out x in) and calibration inputs X (d x n, one column per sample or per
conv position) give the layer Hessian H = X X^T; the problem is

    min_{W'} ||W X - W' X||_F^2   subject to a sparsity pattern on W'            (paper eq. for the DNN variant)

every row sharing H. ``dampen`` adds lambda I on the diagonal only, lambda = ``damp`` * mean(diag H) with
damp = 0.01 (SparseGPT's ``percdamp``). ``inverse_hessian_factor`` is the upper Cholesky factor U of H^-1
(H^-1 = U^T U); row j of U, divided by U_jj, is the OBS update for weight j once columns < j are fixed, so
``sparsegpt_prune`` sweeps the columns left to right, all rows at once: weight j of a row is kept or zeroed,
and the error (w_j - q_j) / U_jj is spread over the later columns by U[j, j:]. Masks are chosen adaptively per
block of ``blocksize`` = 128 columns from the OBS saliency w_j^2 / U_jj^2 of the current (already updated)
weights (SparseGPT's rule), for

* unstructured ``scope="layer"``: the block removes its share of round(ratio * rows * d) weights, the lowest
  saliencies over all its rows (SparseGPT's uniform per-layer sparsity; the shares telescope, so the layer
  removes exactly round(ratio * rows * d));
* unstructured ``scope="row"``: the same per row, every row removing exactly round(ratio * d);
* N:M (``n_of_m=(N, M)``, N kept in every M consecutive columns of a row, 2:4 by default): at every column that
  starts a group, the M - N lowest saliencies of the group's current weights are removed (SparseGPT's
  ``prunen / prunem``). d must be a multiple of M.

``refit`` is the exact re-fit on a given support: row r keeps S_r and solves H_SS w'_S = (H w)_S, the
least-squares optimum of ||w X - w' X|| over vectors supported on S_r (the multi-weight OBS correction of the
paper's Option 2, Lemma 2).

**Synthetic sparse recovery** (the paper's Algorithm 1 on a quadratic f with Hessian H): ``topk`` (T_k, the
Euclidean projection onto k-sparse vectors), ``kiht_step`` (k-IHT, theta <- T_k(theta - eta grad)),
``iobs_step_topk`` (Option 1, eq. 12: the full Newton point theta+ = theta - H^-1 g, then T_k; no step size, no
re-fit) and ``iobs_step_obs`` (Option 2: the exact OBS correction theta+ - H^-1 E_P^T (E_P H^-1 E_P^T)^-1 E_P theta+
on a support; the paper's exact argmin over supports is combinatorial, so the pruned set P is the d - k smallest
single-weight OBS errors (theta+_i)^2 / [H^-1]_ii, stated as our choice). All of them act on a batch of problems at
once: theta is (runs, d), H and H^-1 are (runs, d, d) or (d, d).
"""

from __future__ import annotations

import torch

DAMP = 0.01  # SparseGPT's percdamp: lambda = 0.01 * mean(diag H)
BLOCKSIZE = 128  # SparseGPT's column block
N_OF_M = (2, 4)


# ----- one layer: Hessian, dampening, factor ----------------------------------------------------------------------
def layer_hessian(x: torch.Tensor) -> torch.Tensor:
    """H = X X^T (float64) for inputs ``x`` of shape (d, n): one column per sample (or conv position)."""
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"calibration inputs must be a non-empty (d, n) matrix, got shape {tuple(x.shape)}")
    x = x.double()
    if not bool(torch.isfinite(x).all()):
        raise ValueError("the calibration inputs hold NaN or infinite values; the layer Hessian would too")
    return x @ x.T


def dampen(h: torch.Tensor, damp: float = DAMP) -> torch.Tensor:
    """H + lambda I with lambda = ``damp`` * mean(diag H) (SparseGPT), added to the diagonal only. A Hessian whose
    diagonal is all zero (a layer that never sees a nonzero input) gets lambda = 1, so every weight's saliency is
    its squared magnitude. Inputs that are always zero (dead ReLUs) need no special case: their diagonal entry is
    lambda, so their weights have the smallest saliency and go first."""
    if not damp > 0:
        raise ValueError(f"damp must be positive (H X X^T is singular whenever n < d or an input is dead), got {damp}")
    h = h.double()
    if h.ndim != 2 or h.shape[0] != h.shape[1] or h.shape[0] == 0:
        raise ValueError(f"the Hessian must be a non-empty square matrix, got shape {tuple(h.shape)}")
    if not bool(torch.isfinite(h).all()):
        raise ValueError("the Hessian holds NaN or infinite values")
    mean = float(torch.diagonal(h).mean())
    lam = damp * mean if mean > 0 else 1.0
    return h + lam * torch.eye(h.shape[0], dtype=h.dtype, device=h.device)


def inverse_hessian_factor(h: torch.Tensor) -> torch.Tensor:
    """The upper Cholesky factor U of H^-1 (H^-1 = U^T U), H positive definite (``dampen`` it first)."""
    lower, info = torch.linalg.cholesky_ex(h.double())
    if int(info) != 0:
        raise ValueError("the dampened layer Hessian is not positive definite (Cholesky failed at column "
                         f"{int(info)}); raise damp")
    hinv = torch.cholesky_inverse(lower)
    upper, info = torch.linalg.cholesky_ex(hinv, upper=True)
    if int(info) != 0:
        raise ValueError("the inverse layer Hessian is numerically singular; raise damp")
    return upper


# ----- one layer: the OBS / SparseGPT sweep -----------------------------------------------------------------------
def _check_weight(w: torch.Tensor, u: torch.Tensor) -> None:
    if w.ndim != 2 or w.numel() == 0:
        raise ValueError(f"the weight must be a non-empty (rows, d) matrix, got shape {tuple(w.shape)}")
    if u.shape != (w.shape[1], w.shape[1]):
        raise ValueError(f"the Hessian factor is {tuple(u.shape)}, the weight has {w.shape[1]} columns")
    if not bool(torch.isfinite(w).all()):
        raise ValueError("the weight holds NaN or infinite values")


def sparsegpt_prune(w: torch.Tensor, u: torch.Tensor, ratio: float = 0.5, scope: str = "layer",
                    n_of_m: tuple[int, int] | None = None, blocksize: int = BLOCKSIZE,
                    mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """SparseGPT's OBS sweep (Algorithm 1 of Frantar & Alistarh 2023), vectorised over the rows.

    ``w``: (rows, d); ``u``: (d, d), ``inverse_hessian_factor(dampen(H))``. ``ratio``: the fraction removed
    (unstructured); ``scope``: "layer" or "row" (see the module docstring); ``n_of_m=(N, M)``: N kept in every M
    consecutive columns instead (``ratio`` and ``scope`` ignored); ``mask`` (rows, d) bool, True = kept: a fixed
    support instead of the adaptive choice. Returns (pruned weight (rows, d) float64, mask (rows, d) bool).
    """
    _check_weight(w, u)
    if scope not in ("layer", "row"):
        raise ValueError(f"scope must be 'layer' or 'row', got {scope!r}")
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"ratio is the fraction removed, in [0, 1); got {ratio}")
    rows, d = w.shape
    if n_of_m is not None:
        n, m = n_of_m
        if not 0 < n <= m or d % m:
            raise ValueError(f"an N:M pattern needs 0 < N <= M and a width divisible by M; got {n}:{m} on {d} "
                             "columns")
        if blocksize % m:
            raise ValueError(f"blocksize {blocksize} must be a multiple of M = {m}")
    if mask is not None and mask.shape != w.shape:
        raise ValueError(f"the mask is {tuple(mask.shape)}, the weight {tuple(w.shape)}")
    w = w.double().clone()
    u = u.double()
    keep = torch.ones(rows, d, dtype=torch.bool, device=w.device) if mask is None else mask.clone().bool()
    for i1 in range(0, d, blocksize):
        i2 = min(i1 + blocksize, d)
        w1, u1 = w[:, i1:i2].clone(), u[i1:i2, i1:i2]
        diag = torch.diagonal(u1)
        q1, err1 = torch.zeros_like(w1), torch.zeros_like(w1)
        if mask is None and n_of_m is None:
            saliency = w1.pow(2) / diag.pow(2)
            keep[:, i1:i2] = _keep_lowest_removed(saliency, ratio, scope, i1, i2)
        for i in range(i2 - i1):
            if mask is None and n_of_m is not None and i % n_of_m[1] == 0:
                n, m = n_of_m
                saliency = w1[:, i:i + m].pow(2) / diag[i:i + m].pow(2)
                gone = torch.topk(saliency, m - n, dim=1, largest=False).indices
                keep[:, i1 + i:i1 + i + m].scatter_(1, gone, False)
            col = w1[:, i]
            q = torch.where(keep[:, i1 + i], col, torch.zeros_like(col))
            err = (col - q) / diag[i]
            w1[:, i:] -= err[:, None] * u1[i, i:][None, :]
            q1[:, i], err1[:, i] = q, err
        w[:, i1:i2] = q1
        w[:, i2:] -= err1 @ u[i1:i2, i2:]
    return w, keep


def _keep_lowest_removed(saliency: torch.Tensor, ratio: float, scope: str, i1: int, i2: int) -> torch.Tensor:
    """Keep-mask of the block of columns [i1, i2): its share of the removals goes to the lowest saliencies (ties in
    flat order). The shares round(ratio * rows * i2) - round(ratio * rows * i1) (per row: rows = 1) telescope, so
    the blocks together remove exactly round(ratio * rows * d)."""
    keep = torch.ones_like(saliency, dtype=torch.bool)
    rows = saliency.shape[0]
    if scope == "layer":
        k = round(ratio * rows * i2) - round(ratio * rows * i1)
        if k > 0:
            order = torch.sort(saliency.reshape(-1), stable=True).indices[:k]
            keep.view(-1)[order] = False
    else:
        k = round(ratio * i2) - round(ratio * i1)
        if k > 0:
            order = torch.sort(saliency, dim=1, stable=True).indices[:, :k]
            keep.scatter_(1, order, False)
    return keep


def reconstruction_error(w: torch.Tensor, w_new: torch.Tensor, h: torch.Tensor) -> float:
    """||W X - W' X||_F^2 = trace((W - W') H (W - W')^T), with the undampened H = X X^T."""
    delta = (w.double() - w_new.double())
    return float(((delta @ h.double()) * delta).sum())


def refit(w: torch.Tensor, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The least-squares optimal weights on a fixed support: row r keeps S_r = {j : mask[r, j]} and solves
    H_SS w'_S = (H w_r)_S (w'_j = 0 off S), the minimiser of (w_r - w') H (w_r - w')^T over vectors supported on
    S_r. With H = X X^T this is ``numpy.linalg.lstsq(X[S].T, X.T @ w_r)``; with a dampened H it is that ridge
    problem. All rows are solved in one batched call: the pruned coordinates of each row's system are replaced by
    identity rows (rows x d x d in memory). ``w``, ``mask``: (rows, d); ``h``: (d, d), positive definite on every
    support (``dampen`` it when X X^T is singular). Returns (rows, d) float64."""
    if w.ndim != 2 or w.numel() == 0 or mask.shape != w.shape or h.shape != (w.shape[1], w.shape[1]):
        raise ValueError(f"refit needs w (rows, d), a mask of its shape and H (d, d); got {tuple(w.shape)}, "
                         f"{tuple(mask.shape)}, {tuple(h.shape)}")
    w, h = w.double(), h.double()
    m = mask.bool().double()
    rhs = m * (w @ h)  # (H w_r)_S, zero off the support
    system = m[:, :, None] * h[None] * m[:, None, :] + torch.diag_embed(1.0 - m)
    out = spd_solve(system, rhs.unsqueeze(-1)).squeeze(-1)
    return out * m


def spd_solve(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """A^-1 B for symmetric positive definite A (batched), by Cholesky. Not ``torch.linalg.solve``: its batched LU
    in torch 2.13's CPU build fails inside MKL (DLASWP "parameter 6 was incorrect") with two or more threads."""
    lower, info = torch.linalg.cholesky_ex(a)
    if bool((info != 0).any()):
        raise ValueError("a system that should be positive definite is not (Cholesky failed); raise damp")
    return torch.cholesky_solve(b, lower)


# ----- synthetic sparse recovery: Algorithm 1 ------------------------------------------------------------------
def topk(theta: torch.Tensor, k: int) -> torch.Tensor:
    """T_k: keep the k largest |theta| of every row of ``theta`` (runs, d), zero the rest."""
    if not 0 < k <= theta.shape[-1]:
        raise ValueError(f"k must be in [1, {theta.shape[-1]}], got {k}")
    idx = torch.topk(theta.abs(), k, dim=-1).indices
    return torch.zeros_like(theta).scatter(-1, idx, theta.gather(-1, idx))


def kiht_step(theta: torch.Tensor, grad: torch.Tensor, k: int, eta: torch.Tensor | float) -> torch.Tensor:
    """k-IHT: T_k(theta - eta grad). ``eta``: a float or (runs, 1) (1 / lambda_max(H) per problem)."""
    return topk(theta - eta * grad, k)


def newton_point(theta: torch.Tensor, grad: torch.Tensor, hinv: torch.Tensor) -> torch.Tensor:
    """theta+ = theta - H^-1 g, batched: theta, grad (runs, d); hinv (runs, d, d) or (d, d), symmetric (so
    H^-1 g = g^T H^-1, computed as a row vector times a contiguous matrix: several times faster in torch than a
    batched matrix times a column)."""
    return theta - (grad.unsqueeze(-2) @ hinv).squeeze(-2)


def iobs_step_topk(theta: torch.Tensor, grad: torch.Tensor, hinv: torch.Tensor, k: int) -> torch.Tensor:
    """Topk-I-OBS (Algorithm 1, Option 1, eq. 12): T_k(theta - H^-1 g), the full Newton step, no re-fit."""
    return topk(newton_point(theta, grad, hinv), k)


def iobs_step_obs(theta: torch.Tensor, grad: torch.Tensor, hinv: torch.Tensor, k: int) -> torch.Tensor:
    """Algorithm 1, Option 2: theta+ = theta - H^-1 g; the pruned set P = the d - k smallest (theta+_i)^2 /
    [H^-1]_ii (single-weight OBS errors; the paper's exact choice minimising theta+^T H^P theta+ is combinatorial);
    then the multi-weight OBS correction theta = theta+ - H^-1 E_P^T (E_P H^-1 E_P^T)^-1 E_P theta+, which zeroes
    theta_P and is the H-norm projection of theta+ onto the support (Lemma 2)."""
    plus = newton_point(theta, grad, hinv)
    runs, d = plus.shape
    hinv = hinv.expand(runs, d, d) if hinv.ndim == 2 else hinv
    saliency = plus.pow(2) / torch.diagonal(hinv, dim1=-2, dim2=-1)
    pruned = torch.topk(saliency, d - k, dim=-1, largest=False).indices  # (runs, d - k)
    cols = hinv.gather(2, pruned[:, None, :].expand(runs, d, d - k))  # H^-1 E_P^T: (runs, d, d - k)
    block = cols.gather(1, pruned[:, :, None].expand(runs, d - k, d - k))  # E_P H^-1 E_P^T
    coef = spd_solve(block, plus.gather(1, pruned).unsqueeze(-1))
    out = plus - (cols @ coef).squeeze(-1)
    return out.scatter(1, pruned, 0.0)  # exactly zero where the algebra leaves round-off


__all__ = ["BLOCKSIZE", "DAMP", "N_OF_M", "dampen", "inverse_hessian_factor", "iobs_step_obs", "iobs_step_topk",
           "kiht_step", "layer_hessian", "newton_point", "reconstruction_error", "refit", "sparsegpt_prune",
           "spd_solve", "topk"]
