"""Block sparsity as SequentialAttention++ defines it (Yasuda, Axiotis, Fu, Bateni, Mirrokni, "SequentialAttention++
for Block Sparsification: Differentiable Pruning Meets Combinatorial Optimization", NeurIPS 2024, arXiv 2402.17902),
on plain tensors: no model, no workbench.

* **Layout** (paper §4, ResNet-50): a weight is read as the matrix the paper prunes, fan-in x outputs. A conv kernel
  (Cout, Cin, kh, kw) becomes (kh*kw*Cin) x Cout (the TensorFlow HWIO kernel flattened), a linear weight (out, in)
  becomes its transpose (in x out, so that y = X W). ``block_matrix`` / ``weight_from_block_matrix`` are exact
  inverses (a permutation of the entries).
* **Blocks**: the matrix is cut into B x B blocks from the top-left corner. **Ragged edges**: when B does not divide
  a side, the last block row / column is narrower (it holds the remaining rows or columns); it is a block like the
  others (one norm, one logit, one mask bit), so block counts are ceil(rows/B) x ceil(cols/B). A weight whose
  matrix is smaller than B on either side has no full block and is refused (``BlockError``).
* **Block norms**: the Frobenius (L2) norm of each block (one-shot block magnitude, ACDC's support).
* **Block attention** (Algorithm 1): one logit per block, A = N_blocks * softmax(L) over all blocks of the layer,
  so the mean of A is 1 and, with equal logits, the scaled weights W (.) A equal W (the pitfall of §4.5: without
  the factor N the effective weights shrink N-fold).
* **Sparsification schedule** (§3.1): sparsity(u) = s (1 - e^{-c u}) / (1 - e^{-c}), u in [0, 1] across the
  phase, default c = 4 (Table 4: c in {2, 4, 8} changes little): aggressive early, gentle late.
* **Masks**: each pruned layer removes round(s * N_blocks) blocks with the lowest score (never all: at least one
  block stays), ties removed in row-major block order (a stable sort); ``within`` makes it monotone (blocks already
  removed stay removed, the paper's "gradually prune the least important").
* **Which layers**: the paper does not prune layers with fewer than 100 blocks, so the realised sparsity of the
  whole model is lower than the nominal one and is computed (``realised_sparsity``), never assumed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch

MIN_BLOCKS = 100  # paper §4: "layers with fewer than 100 blocks are not pruned"
SCHEDULE_C = 4.0  # paper §3.1 / Table 4


class BlockError(ValueError):
    """A weight, block size or sparsity that block pruning cannot work with, said in the user's terms."""


def _matrix_order(ndim: int) -> tuple[int, ...]:
    """The permutation of a weight's dimensions that puts the kernel dimensions first, then the input channels, then
    the outputs (conv (Cout, Cin, kh, kw) -> (kh, kw, Cin, Cout); linear (out, in) -> (in, out))."""
    return (*range(2, ndim), 1, 0)


def block_matrix(weight: torch.Tensor) -> torch.Tensor:
    """The paper's 2-D view of ``weight``: (fan_in, outputs) = (kh*kw*Cin, Cout) for a conv kernel, (in, out) for a
    linear weight. A copy in general (a permutation of the entries)."""
    if weight.ndim < 2:
        raise BlockError(f"block pruning needs a weight with 2 or more dimensions, got shape {tuple(weight.shape)}")
    return weight.permute(*_matrix_order(weight.ndim)).reshape(-1, weight.shape[0])


def weight_from_block_matrix(matrix: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """The inverse of ``block_matrix``: the (fan_in, outputs) matrix back in the weight's own ``shape``."""
    shape = tuple(int(s) for s in shape)
    order = _matrix_order(len(shape))
    permuted = matrix.reshape([shape[i] for i in order])
    inverse = [0] * len(order)
    for position, dim in enumerate(order):
        inverse[dim] = position
    return permuted.permute(*inverse)


def matrix_shape(shape: Sequence[int]) -> tuple[int, int]:
    """(rows, cols) of ``block_matrix`` for a weight of ``shape``."""
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2:
        raise BlockError(f"block pruning needs a weight with 2 or more dimensions, got shape {shape}")
    return math.prod(shape[1:]), shape[0]


def block_grid(shape: Sequence[int], block: int) -> tuple[int, int]:
    """(block rows, block columns) of a weight of ``shape`` cut into ``block`` x ``block`` blocks, ragged edges
    counted as blocks: (ceil(rows / B), ceil(cols / B)). Raises ``BlockError`` when no full block fits."""
    if isinstance(block, bool) or not isinstance(block, int) or block < 1:
        raise BlockError(f"the block size must be a positive integer, got {block!r}")
    rows, cols = matrix_shape(shape)
    if block > rows or block > cols:
        raise BlockError(f"a {block}x{block} block is larger than this layer: its weight {tuple(shape)} is a "
                         f"{rows} x {cols} matrix (fan-in x outputs); choose a block of at most {min(rows, cols)}")
    return -(-rows // block), -(-cols // block)


def _padded_blocks(matrix: torch.Tensor, block: int) -> torch.Tensor:
    """(R, B, C, B): ``matrix`` zero-padded to whole blocks (the padding adds nothing to a block's norm)."""
    rows, cols = matrix.shape
    r, c = -(-rows // block), -(-cols // block)
    padded = torch.nn.functional.pad(matrix, (0, c * block - cols, 0, r * block - rows))
    return padded.reshape(r, block, c, block)


def block_norms(weight: torch.Tensor, block: int) -> torch.Tensor:
    """(R, C) Frobenius norm of every block of ``block_matrix(weight)`` (ragged edge blocks over their own entries).
    Raises ``BlockError`` for NaN or infinite weights (their ranking means nothing)."""
    block_grid(weight.shape, block)
    if not bool(torch.isfinite(weight).all()):
        raise BlockError("the weight holds NaN or infinite values; block norms cannot rank its blocks")
    return torch.linalg.vector_norm(_padded_blocks(block_matrix(weight), block), dim=(1, 3))


def expand_blocks(values: torch.Tensor, shape: Sequence[int], block: int) -> torch.Tensor:
    """One value per block (R, C) spread over its entries, in the weight's own ``shape`` (``repeat_interleave``,
    cropped at the ragged edges). Bool values give a weight-shaped mask."""
    rows, cols = matrix_shape(shape)
    if tuple(values.shape) != block_grid(shape, block):
        raise BlockError(f"expected {block_grid(shape, block)} block values for a weight of shape {tuple(shape)} "
                         f"with {block}x{block} blocks, got {tuple(values.shape)}")
    full = values.repeat_interleave(block, 0).repeat_interleave(block, 1)[:rows, :cols]
    return weight_from_block_matrix(full, shape)


def block_attention(logits: torch.Tensor) -> torch.Tensor:
    """Algorithm 1's block attention: A = N * softmax(L), the softmax over all N blocks of the layer (any shape),
    so mean(A) = 1 and A = 1 wherever the logits are all equal. Differentiable."""
    n = logits.numel()
    return n * torch.softmax(logits.reshape(-1), dim=0).reshape(logits.shape)


def sparsification_schedule(u: float, target: float, c: float = SCHEDULE_C) -> float:
    """The sparsification phase's target block sparsity at phase fraction ``u`` in [0, 1] (paper §3.1):
    s (1 - e^{-c u}) / (1 - e^{-c}); 0 at u = 0, ``target`` at u = 1, default c = 4."""
    if not c > 0 or not math.isfinite(c):
        raise BlockError(f"the schedule's c must be a positive number (the paper uses 4), got {c!r}")
    check_block_sparsity(target)
    u = min(max(float(u), 0.0), 1.0)
    return target * (1.0 - math.exp(-c * u)) / (1.0 - math.exp(-c))


def check_block_sparsity(sparsity: float) -> float:
    """A block sparsity (fraction of blocks removed) in [0, 1); 1 would remove every block."""
    s = float(sparsity)
    if not 0.0 <= s < 1.0:
        raise BlockError(f"a block sparsity of {s:g} is not possible: it is the fraction of blocks removed, from 0 "
                         "to below 1 (0.9 keeps one block in ten)")
    return s


def blocks_removed(n_blocks: int, sparsity: float) -> int:
    """round(sparsity * n_blocks), at most n_blocks - 1 (a pruned layer keeps at least one block)."""
    return min(round(check_block_sparsity(sparsity) * n_blocks), n_blocks - 1)


def block_keep_mask(scores: torch.Tensor, sparsity: float, within: torch.Tensor | None = None) -> torch.Tensor:
    """Keep-mask (True = kept) of the blocks of one layer at ``sparsity``: the ``blocks_removed`` lowest ``scores``
    (any shape) go, ties in row-major order. ``within`` (a keep-mask of the same shape): blocks it removed stay
    removed and count towards the total (monotone pruning); when it already removes more, it is returned as is."""
    if not bool(torch.isfinite(scores).all()):
        raise BlockError("block scores hold NaN or infinite values; they cannot rank the blocks")
    k = blocks_removed(scores.numel(), sparsity)
    flat = scores.detach().reshape(-1).double().cpu()
    if within is not None:
        gone = ~within.reshape(-1).cpu()
        if int(gone.sum()) >= k:
            return within.clone()
        flat = torch.where(gone, torch.full_like(flat, -math.inf), flat)
    order = torch.sort(flat, stable=True).indices
    keep = torch.ones(flat.numel(), dtype=torch.bool)
    keep[order[:k]] = False
    return keep.reshape(scores.shape)


def block_layers(shapes: Mapping[str, Sequence[int]], block: int, min_blocks: int = MIN_BLOCKS
                 ) -> tuple[dict[str, tuple[int, int]], dict[str, str]]:
    """Which weights are block-pruned: ``(chosen, skipped)``, chosen = name -> (block rows, block columns) for
    every weight with at least ``min_blocks`` blocks, skipped = name -> why not (too few blocks, or smaller than one
    block). Paper §4: layers with fewer than 100 blocks are not pruned."""
    if isinstance(min_blocks, bool) or not isinstance(min_blocks, int) or min_blocks < 1:
        raise BlockError(f"min_blocks must be a positive integer, got {min_blocks!r}")
    chosen, skipped = {}, {}
    for name, shape in shapes.items():
        try:
            grid = block_grid(shape, block)
        except BlockError as e:
            if isinstance(block, bool) or not isinstance(block, int) or block < 1:
                raise
            skipped[name] = str(e).split(";")[0]
            continue
        n = grid[0] * grid[1]
        if n < min_blocks:
            skipped[name] = f"{n} blocks of {block}x{block}, fewer than {min_blocks}"
        else:
            chosen[name] = grid
    return chosen, skipped


def realised_sparsity(masks: Mapping[str, torch.Tensor], shapes: Mapping[str, Sequence[int]]) -> float:
    """Fraction of all the weights in ``shapes`` that ``masks`` (weight-shaped, True = kept) remove; weights
    without a mask count as kept (the skipped layers)."""
    total = sum(math.prod(s) for s in shapes.values())
    removed = sum(int(m.numel() - torch.count_nonzero(m)) for k, m in masks.items() if k in shapes)
    return removed / total if total else 0.0


@dataclass(frozen=True)
class Phase:
    """One phase of a block-sparsification schedule over optimiser steps [start, end)."""

    kind: str  # "dense", "sparsify" (SA++ only) or "sparse"
    start: int
    end: int


PHASE_KINDS = ("dense", "sparsify", "sparse")
PROCEDURES = ("seqattn", "acdc")


def training_phases(procedure: str, steps: int, cycles: int = 3, dense_fraction: float = 0.10,
                    extension_fraction: float = 0.05, final_sparse_fraction: float = 0.15) -> list[Phase]:
    """The phases of ACDC and SequentialAttention++ over ``steps`` optimiser steps (paper §4.2, ImageNet schedule,
    with ``cycles`` = 7 there; 3 by default here):

    * ACDC: ``dense_fraction`` dense, then ``cycles`` equal sparse -> dense cycles (the last dense phase extended by
      ``extension_fraction``), then ``final_sparse_fraction`` sparse;
    * SA++: every sparse -> dense cycle becomes sparsify -> sparse -> dense (equal thirds: the split is not in the
      text, ours), and the last cycle, its extension included, is one sparsify phase; then the final sparse phase.

    Phase boundaries are rounded to whole steps; every phase has at least one step."""
    if procedure not in PROCEDURES:
        raise BlockError(f"procedure must be one of {PROCEDURES}, got {procedure!r}")
    if cycles < 1:
        raise BlockError(f"need at least one cycle, got {cycles}")
    middle = 1.0 - dense_fraction - extension_fraction - final_sparse_fraction
    if min(dense_fraction, extension_fraction, final_sparse_fraction) < 0 or middle <= 0:
        raise BlockError("the dense, extension and final sparse fractions must be non-negative and leave room for "
                         "the cycles")
    cycle = middle / cycles
    kinds: list[tuple[str, float]] = [("dense", dense_fraction)]
    for i in range(cycles):
        last = i == cycles - 1
        if procedure == "acdc":
            kinds += [("sparse", cycle / 2), ("dense", cycle / 2 + (extension_fraction if last else 0.0))]
        elif last:
            kinds.append(("sparsify", cycle + extension_fraction))
        else:
            kinds += [("sparsify", cycle / 3), ("sparse", cycle / 3), ("dense", cycle / 3)]
    kinds.append(("sparse", final_sparse_fraction))
    kinds = [(k, f) for k, f in kinds if f > 0]
    if steps < len(kinds):
        raise BlockError(f"{steps} steps cannot hold the {len(kinds)} phases of {procedure}; train longer")
    phases, start, cumulative = [], 0, 0.0
    for i, (kind, fraction) in enumerate(kinds):
        cumulative += fraction
        end = steps if i == len(kinds) - 1 else round(cumulative * steps)
        end = min(max(end, start + 1), steps - (len(kinds) - 1 - i))
        phases.append(Phase(kind, start, end))
        start = end
    return phases


def scheduled_sparsity(phases: Sequence[Phase], step: int, target: float, c: float = SCHEDULE_C) -> float:
    """The block sparsity the schedule asks for after optimiser step ``step`` (0-based): 0 in dense phases, the
    target in sparse ones, and in a sparsify phase ``sparsification_schedule`` at u = (step - start + 1) / length,
    so the phase's last step reaches the target."""
    for p in phases:
        if p.start <= step < p.end:
            if p.kind == "dense":
                return 0.0
            if p.kind == "sparse":
                return check_block_sparsity(target)
            return sparsification_schedule((step - p.start + 1) / (p.end - p.start), target, c)
    raise BlockError(f"step {step} lies outside the schedule's {phases[-1].end if phases else 0} steps")


__all__ = ["MIN_BLOCKS", "PHASE_KINDS", "PROCEDURES", "SCHEDULE_C", "BlockError", "Phase", "block_attention",
           "block_grid", "block_keep_mask", "block_layers", "block_matrix", "block_norms", "blocks_removed",
           "check_block_sparsity", "expand_blocks", "matrix_shape", "realised_sparsity", "scheduled_sparsity",
           "sparsification_schedule", "training_phases", "weight_from_block_matrix"]
