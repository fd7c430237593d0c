"""The i-SpaSP iteration on one two-layer unit: CoSaMP-style sparse recovery of the hidden channels (Wolfe &
Kyrillidis, "i-SpaSP: Structured Neural Pruning via Sparse Signal Recovery", arXiv 2112.04905, Alg. 1; code
``wolfecameron/i-SpaSP``, ``prune_resnet34_ispasp.py: prune_basic_block``). Pure tensor maths: a hidden
representation H and a function ``layer2`` in, a kept set out; no model, no workbench.

A two-layer unit maps a hidden representation H (the consumer layer's input: post-BN-ReLU channels, or a
flattened feature map) to Y = layer2(H). i-SpaSP keeps s of the C hidden channels, T = 20 iterations by default
(the code's ``--num-cs-iter``):

    a_j   = sum_{samples, positions} H[:, j]                       (dense activation, once)
    S_0   = {} ;  Y_{S} = layer2(H * mask(S)), and Y_{} = 0        (the code's convention for an empty set)
    for t = 1..T:
        g   = d/dH  1/2 || layer2(H) - Y_{S_{t-1}} ||_F^2  at the dense H      (Y_S detached)
        v_j = sum_{samples, positions} g[:, j]                     (signed, as the code; |v_j| optional)
        Omega = the 2s channels with the largest v (never one with v_j = 0, see "Ties")
        S_t   = the s channels of Omega ∪ S_{t-1} with the largest a_j    (no least-squares re-fit)

and records the residual ||Y - Y_{S_t}||_F^2 after every iteration. For the MLP form Y = H W2^T the proxy is
g = (Y - Y_S) W2 (tested against this closed form).

Ties (not specified by the paper; decided here and tested):

* Sorting is stable, so equal scores keep index order (lower channel index first), for Omega and for the
  threshold by a_j: a run is reproducible bit for bit.
* A channel with exactly zero proxy (v_j = 0, e.g. its consumer weights are all zero, or the residual is zero)
  is never proposed. That is CoSaMP's rule, Omega = supp(proxy_{2s}), which the code's plain ``argsort`` misses:
  there such channels sit between the positive and negative ones and, when fewer than 2s channels have a
  positive proxy, enter Omega and can then win the threshold on activation alone while contributing nothing.
* If Omega ∪ S has fewer than s channels (only at t = 1, when almost every proxy is zero), S is filled up with
  the largest-a_j channels, so exactly s channels are always kept.

Two facts that follow from the definitions and explain what the method does on real models:

* When 2s >= C (keep half or more), Omega holds every channel with a nonzero proxy and S_1 is simply the top-s
  by activation: i-SpaSP then coincides with activation-magnitude pruning (up to zero-proxy channels).
* Residual monotonicity is not guaranteed in general (a counter-example is in the tests). Because S_{t-1} is
  inside the candidate set, the a-values of S_t dominate those of S_{t-1} entry by entry, so the residual is
  non-increasing from iteration 1 on whenever (i) the channels' output contributions Z_j = L(H e_j) (L: the
  linear part of layer 2) are mutually orthogonal, for instance hidden units that never fire on the same sample,
  and (ii) their energies ||Z_j||^2 are a non-decreasing function of a_j: then R(S) = sum_{j not in S} ||Z_j||^2
  and every swap trades a channel for one with a larger a_j, hence a larger ||Z_j||^2. With a bias-free layer 2
  the start ||Y||^2 = R({}) is covered too. Trained networks violate (i) and (ii), and their residual can rise.

Speed, exact (no approximation): Y is computed once; the selection is deterministic in S, so every distinct S
is evaluated once (one forward of layer 2 for Y_S, giving the residual and the proxy together) and a fixed
point or cycle costs nothing more. For an affine layer 2 (conv/linear + eval BatchNorm, which is what
``units.layer_two`` is) the proxy needs no backward pass over the data: sum_n J^T r_n = J^T sum_n r_n, so v is
one vector-Jacobian product of a single sample-sized tensor. (The same identity shows that the signed proxy
depends on the data only through the summed residual.)
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch


class Selection(NamedTuple):
    """What ``ispasp_select`` found for one unit.

    * ``kept``: (s,) long, the kept channel indices, ascending.
    * ``residuals``: T + 1 floats; ``residuals[0] = ||Y||_F^2`` (S = {}, Y_S = 0 as in the code) and
      ``residuals[t] = ||Y - layer2(H * mask(S_t))||_F^2`` after iteration t.
    * ``settled``: the first iteration t with S_t = S_{t-1} (a fixed point: nothing changes afterwards), or
      None if the set was still moving (or cycling) at T.
    """

    kept: torch.Tensor
    residuals: list[float]
    settled: int | None


def ispasp_select(hidden: torch.Tensor, layer2: Callable[[torch.Tensor], torch.Tensor], s: int,
                  iterations: int = 20, signed: bool = True, *, positions: int | None = None,
                  affine: bool = False, chunk: int = 1024) -> Selection:
    """i-SpaSP on one two-layer unit (module docstring; Wolfe & Kyrillidis, Alg. 1 as in ``prune_basic_block``).

    ``hidden``: the dense hidden representation H, (N, C, *spatial) with channels on dim 1 (conv and plain
    linear inputs), or with ``positions=P`` a channel-major flatten (N, C*P) where channel j owns features
    j*P .. j*P+P-1. ``layer2``: H -> Y, applied per sample (chunks of ``chunk`` samples; it is not modified,
    and should be in eval mode). ``s``: channels to keep, 1 <= s <= C. ``signed``: rank Omega by v_j as the
    official code (True) or by |v_j| as textbook CoSaMP (False). ``affine=True`` declares layer 2 affine
    (conv/linear + eval BatchNorm), which lets the proxy skip the backward pass over the data (exact).
    """
    hc = channel_view(hidden, positions)
    n, c, _ = hc.shape
    if n == 0:
        raise ValueError("i-SpaSP needs at least one calibration sample")
    if not 1 <= int(s) <= c:
        raise ValueError(f"i-SpaSP keeps s channels with 1 <= s <= {c} (the hidden width); got s={s}")
    if int(iterations) < 1:
        raise ValueError(f"i-SpaSP needs at least one iteration; got {iterations}")
    s, iterations = int(s), int(iterations)
    with torch.no_grad():
        a = hc.sum((0, 2), dtype=torch.float64).cpu()
    if not bool(torch.isfinite(a).all()):
        raise ValueError("the hidden representation contains NaN or infinite values")
    run = UnitProblem(hidden, hc, layer2, positions, affine, chunk)

    empty = torch.zeros(c, dtype=torch.bool)
    support = empty
    residuals = [run.residual(empty)]
    settled = None
    for t in range(1, iterations + 1):
        new = next_support(run.proxy(support), a, support, s, signed)
        if settled is None and torch.equal(new, support):
            settled = t
        support = new
        residuals.append(run.residual(support, need_proxy=t < iterations))
    return Selection(support.nonzero().squeeze(1), residuals, settled)


def ispasp_proxy(hidden: torch.Tensor, layer2: Callable[[torch.Tensor], torch.Tensor], kept: torch.Tensor, *,
                 positions: int | None = None, affine: bool = False, chunk: int = 1024) -> torch.Tensor:
    """The per-channel proxy of one i-SpaSP iteration for the current set ``kept`` (indices or a (C,) bool mask):
    v_j = sum_{samples, positions} [d/dH 1/2 ||layer2(H) - Y_S||_F^2]_j at the dense H, with Y_S = 0 for an empty
    set. (C,) float64. Shapes and flags as in ``ispasp_select``."""
    problem, support = problem_and_support(hidden, layer2, kept, positions, affine, chunk)
    return problem.proxy(support)


def output_residual(hidden: torch.Tensor, layer2: Callable[[torch.Tensor], torch.Tensor], kept: torch.Tensor, *,
                    positions: int | None = None, chunk: int = 1024) -> float:
    """||layer2(H) - layer2(H * mask(kept))||_F^2 (||layer2(H)||^2 for an empty set, as in the code): the
    residual i-SpaSP records, for any kept set (e.g. a baseline's)."""
    problem, support = problem_and_support(hidden, layer2, kept, positions, False, chunk)
    return problem.residual(support, need_proxy=False)


def problem_and_support(hidden, layer2, kept, positions, affine, chunk):
    """The ``UnitProblem`` of H and layer 2, and ``kept`` (indices or a (C,) bool mask) as a (C,) bool support."""
    hc = channel_view(hidden, positions)
    kept = torch.as_tensor(kept)
    if kept.dtype == torch.bool:
        if kept.shape != (hc.shape[1],):
            raise ValueError(f"a kept mask must have shape ({hc.shape[1]},); got {tuple(kept.shape)}")
        support = kept.cpu().clone()
    else:
        support = torch.zeros(hc.shape[1], dtype=torch.bool)
        support[kept.long().cpu()] = True
    return UnitProblem(hidden, hc, layer2, positions, affine, chunk), support


def channel_view(hidden: torch.Tensor, positions: int | None) -> torch.Tensor:
    """H as (N, C, P): channel on dim 1, every (position) entry of a channel on dim 2."""
    if hidden.ndim < 2:
        raise ValueError(f"the hidden representation must be (samples, channels, ...); got shape "
                         f"{tuple(hidden.shape)}")
    if positions is None:
        return hidden.reshape(hidden.shape[0], hidden.shape[1], -1)
    if hidden.ndim != 2 or hidden.shape[1] % positions:
        raise ValueError(f"a flattened hidden representation must be (N, C*{positions}); got shape "
                         f"{tuple(hidden.shape)}")
    return hidden.reshape(hidden.shape[0], hidden.shape[1] // positions, positions)


def next_support(v: torch.Tensor, a: torch.Tensor, support: torch.Tensor, s: int, signed: bool) -> torch.Tensor:
    """One CoSaMP step without re-fit: Omega = top-2s nonzero proxies, then the top-s of Omega ∪ S by a."""
    score = v if signed else v.abs()
    order = torch.sort(score, descending=True, stable=True).indices
    omega = order[(v[order] != 0)][: 2 * s]
    candidates = support.clone()
    candidates[omega] = True
    idx = candidates.nonzero().squeeze(1)
    top = idx[torch.sort(a[idx], descending=True, stable=True).indices[:s]]
    new = torch.zeros_like(support)
    new[top] = True
    if len(top) < s:  # fewer than s candidates: fill with the largest activations outside them
        rest = (~new).nonzero().squeeze(1)
        new[rest[torch.sort(a[rest], descending=True, stable=True).indices[: s - len(top)]]] = True
    return new


class UnitProblem:
    """Y once; residual and proxy per distinct support, memoised (the iteration is deterministic in S)."""

    def __init__(self, hidden, hc, layer2, positions: int | None, affine: bool, chunk: int):
        self.hidden, self.hc, self.layer2, self.affine = hidden.detach(), hc.detach(), layer2, affine
        self.positions = positions
        self.chunk = max(1, int(chunk))
        self.c = hc.shape[1]
        with torch.no_grad():
            self.y = [layer2(self.hidden[i:i + self.chunk]) for i in range(0, len(self.hidden), self.chunk)]
        self._memo: dict[bytes, tuple[float, torch.Tensor | None]] = {}
        self._graphs = None

    def _masked(self, i: int, mask: torch.Tensor) -> torch.Tensor:
        h = self.hc[i:i + self.chunk]
        return (h * mask.view(1, -1, 1)).reshape((len(h),) + self.hidden.shape[1:])

    def _evaluate(self, support: torch.Tensor, need_proxy: bool) -> tuple[float, torch.Tensor | None]:
        key = support.numpy().tobytes()
        known = self._memo.get(key)
        if known is not None and (known[1] is not None or not need_proxy):
            return known
        mask = support.to(self.hc.device, self.hc.dtype)
        total = torch.zeros((), dtype=torch.float64)
        residual_chunks = []
        with torch.no_grad():
            for k, i in enumerate(range(0, len(self.hidden), self.chunk)):
                r = self.y[k] - self.layer2(self._masked(i, mask)) if bool(support.any()) else self.y[k]
                total += r.double().pow(2).sum().cpu()
                residual_chunks.append(r)
        self._memo[key] = (float(total), self._proxy_from(residual_chunks) if need_proxy else None)
        return self._memo[key]

    def _proxy_from(self, residual_chunks: list[torch.Tensor]) -> torch.Tensor:
        """v_j = sum over samples and positions of J^T r (the gradient of 1/2||layer2(H) - Y_S||^2 at H)."""
        with torch.enable_grad():
            if self.affine:  # sum_n J^T r_n = J^T sum_n r_n: one sample-sized vector-Jacobian product
                if self._graphs is None:
                    x0 = torch.zeros((1,) + self.hidden.shape[1:], dtype=self.hidden.dtype,
                                     device=self.hidden.device, requires_grad=True)
                    self._graphs = [(x0, self.layer2(x0))]
                x0, out0 = self._graphs[0]
                r_sum = torch.stack([r.sum(0) for r in residual_chunks]).sum(0, keepdim=True)
                (g,) = torch.autograd.grad(out0, x0, r_sum.to(out0.dtype), retain_graph=True)
                return channel_view(g, self.positions).sum((0, 2), dtype=torch.float64).cpu()
            if self._graphs is None:  # the dense forward graph, built once and reused every iteration
                self._graphs = []
                for i in range(0, len(self.hidden), self.chunk):
                    h = self.hidden[i:i + self.chunk].clone().requires_grad_(True)
                    self._graphs.append((h, self.layer2(h)))
            v = torch.zeros(self.c, dtype=torch.float64)
            for (h, out), r in zip(self._graphs, residual_chunks, strict=True):
                (g,) = torch.autograd.grad(out, h, r.to(out.dtype), retain_graph=True)
                v += channel_view(g, self.positions).sum((0, 2), dtype=torch.float64).cpu()
            return v

    def residual(self, support: torch.Tensor, need_proxy: bool = True) -> float:
        """||Y - Y_S||_F^2; with ``need_proxy`` the proxy of S is computed in the same pass (the loop asks for it
        next)."""
        return self._evaluate(support, need_proxy)[0]

    def proxy(self, support: torch.Tensor) -> torch.Tensor:
        return self._evaluate(support, True)[1]


__all__ = ["Selection", "UnitProblem", "channel_view", "ispasp_proxy", "ispasp_select", "next_support",
           "output_residual", "problem_and_support"]
