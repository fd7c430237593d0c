"""Block sparsification (B x B blocks of each weight matrix, conv kernels read as (kh*kw*Cin) x Cout) after Yasuda et
al., "SequentialAttention++ for Block Sparsification", NeurIPS 2024 (arXiv 2402.17902); maths in
``algorithms.block_sparsity``, training in ``experiments.seqattn``.

Ratio, as everywhere, is the fraction removed: here the fraction of **blocks** removed in every pruned layer (the
paper gives every layer the same sparsity, §4). Layers with fewer than ``min_blocks`` blocks (default 100, the
paper's rule) are not pruned, so the realised sparsity of all prunable weights is lower; each plan reports it in
``details`` (``realised_sparsity``, ``skipped``). Plans are unstructured (weight-shaped masks made of whole blocks).

* ``block-magnitude``: one-shot, the blocks of smallest L2 (Frobenius) norm of the trained weights, per layer (not
  global: block norms of different layers are on different scales, and the paper's methods all prune every layer
  to the same sparsity, so a per-layer rule is the comparable baseline). No training. Defaults: block 4,
  min_blocks 100.
* ``seqattn`` (SA++) and ``acdc``: these **train**. ``plan(ratio)`` runs the whole procedure at that ratio
  (``experiments.seqattn.run_block_sparsification``: schedule, then fine-tune) on a copy of the model and returns the
  trained model as masks plus corrections (every tensor training changed: weights, biases, BatchNorm parameters and
  running statistics), cached per ratio in the instance. Ratio 0 prunes nothing and so trains nothing: the plan is
  the identity. Default budget 10 epochs of schedule + 3 of fine-tune (260 steps on the digits data), Adam lr 1e-3:
  a plan on the digits MLP in about 1 s, the CNN 2.5 s, the residual CNN 4 s on one CPU thread (two threads on a busy
  2-core machine can be ten times slower). Shorter runs leave the sparsify phases too few steps for the attention to
  separate the blocks: at 6 + 2 epochs SA++ fell below block magnitude on the digits MLP at 90% (77.9% vs 82.1%, 4
  seeds), at 10 + 3 it is ahead (86.5% vs 85.0%, 3 seeds). The check and the experiment use 20 + 5 epochs.
"""

from __future__ import annotations

import torch

from ..algorithms.block_sparsity import (
    MIN_BLOCKS,
    SCHEDULE_C,
    BlockError,
    block_keep_mask,
    block_layers,
    block_norms,
    expand_blocks,
    realised_sparsity,
)
from ..experiments.seqattn import run_block_sparsification
from ..plan import Plan, PlanError
from ..workbench import Workbench
from .base import Method, MethodSpec

PAPER = ("Yasuda, Axiotis, Fu, Bateni, Mirrokni: SequentialAttention++ for Block Sparsification: Differentiable "
         "Pruning Meets Combinatorial Optimization, NeurIPS 2024")
DEFAULT_BLOCK = 4
KEPT_FRACTION = ("block granularity: each pruned layer removes round(ratio x its blocks) whole B x B blocks "
                 "(edge blocks may be smaller), and layers with fewer than min_blocks blocks are not pruned, as in "
                 "the paper; the realised sparsity is in the plan's details")


def pruned_layers(wb: Workbench, block: int = DEFAULT_BLOCK, min_blocks: int = MIN_BLOCKS) -> tuple[dict, dict]:
    """``algorithms.block_sparsity.block_layers`` on ``wb``'s prunable weights: (name -> block grid of the layers
    that are pruned, name -> why a layer is not). Raises PlanError, saying why, when no layer can be pruned."""
    try:
        grids, skipped = block_layers({k: tuple(p.shape) for k, p in wb.prunable.items()}, block, min_blocks)
    except BlockError as e:
        raise PlanError(str(e)) from e
    if not grids:
        why = "; ".join(f"{k}: {v}" for k, v in skipped.items()) or "it has no weight matrices"
        raise PlanError(f"no layer of this model has {min_blocks} or more {block}x{block} blocks ({why}); "
                        "choose a smaller block or a smaller min_blocks")
    return grids, skipped


class BlockMagnitude(Method):
    """One-shot block magnitude: per pruned layer, remove the round(ratio x N) blocks of smallest Frobenius norm
    ||W_b||_2 of ``block_matrix(W)`` (ties in row-major block order). ``block`` (B, default 4), ``min_blocks``
    (default 100)."""

    granularity = "unstructured"

    def __init__(self, block: int = DEFAULT_BLOCK, min_blocks: int = MIN_BLOCKS, seed: int = 0):
        super().__init__(seed)
        self.block, self.min_blocks = block, min_blocks

    def config(self) -> dict:
        return {"block": self.block, "min_blocks": self.min_blocks, "seed": self.seed}

    def _prepare(self, wb: Workbench) -> None:
        grids, self._skipped = pruned_layers(wb, self.block, self.min_blocks)
        prunable = wb.prunable
        try:
            self._norms = {k: block_norms(prunable[k].detach().cpu(), self.block) for k in grids}
        except BlockError as e:
            raise PlanError(str(e)) from e
        self._shapes = {k: tuple(p.shape) for k, p in prunable.items()}

    def _plan(self, ratio: float) -> Plan:
        masks = {k: expand_blocks(block_keep_mask(n, ratio), self._shapes[k], self.block)
                 for k, n in self._norms.items()}
        return Plan(self.key, ratio, "unstructured", masks=masks,
                    details={"block": self.block, "block_sparsity": ratio, "skipped": dict(self._skipped),
                             "realised_sparsity": realised_sparsity(masks, self._shapes)})


class TrainedBlockSparsity(Method):
    """SA++ (``procedure="seqattn"``) or ACDC with block magnitude support (``"acdc"``), trained at each ratio by
    ``experiments.seqattn.run_block_sparsification`` (see there for the phases); the plan holds the trained model
    as masks + corrections. Settings: block 4, min_blocks 100, epochs 10, finetune_epochs 3, lr 1e-3, cycles 3,
    c 4; ``seed`` orders the batches."""

    granularity = "unstructured"

    def __init__(self, procedure: str = "seqattn", block: int = DEFAULT_BLOCK, min_blocks: int = MIN_BLOCKS,
                 epochs: int = 10, finetune_epochs: int = 3, lr: float = 1e-3, cycles: int = 3,
                 c: float = SCHEDULE_C, seed: int = 0):
        super().__init__(seed)
        if procedure not in ("seqattn", "acdc"):
            raise ValueError(f"procedure must be 'seqattn' or 'acdc', got {procedure!r}")
        self.procedure, self.block, self.min_blocks = procedure, block, min_blocks
        self.epochs, self.finetune_epochs, self.lr, self.cycles, self.c = epochs, finetune_epochs, lr, cycles, c
        self._plans: dict[float, Plan] = {}

    def config(self) -> dict:
        return {"procedure": self.procedure, "block": self.block, "min_blocks": self.min_blocks,
                "epochs": self.epochs, "finetune_epochs": self.finetune_epochs, "lr": self.lr, "cycles": self.cycles,
                "c": self.c, "seed": self.seed}

    def _prepare(self, wb: Workbench) -> None:
        _, self._skipped = pruned_layers(wb, self.block, self.min_blocks)
        self._plans = {}

    def _plan(self, ratio: float) -> Plan:
        if ratio == 0.0:  # nothing to prune, nothing to train: the dense model as it is
            return Plan(self.key, 0.0, "unstructured",
                        details={"block": self.block, "block_sparsity": 0.0, "skipped": dict(self._skipped),
                                 "realised_sparsity": 0.0, "trained": False})
        if ratio not in self._plans:
            self._plans[ratio] = self._train(ratio)
        cached = self._plans[ratio]
        return Plan(self.key, ratio, "unstructured", masks=dict(cached.masks), corrections=dict(cached.corrections),
                    details=dict(cached.details))

    def _train(self, ratio: float) -> Plan:
        wb = self._wb
        try:
            run = run_block_sparsification(wb, self.procedure, ratio, self.seed, block=self.block,
                                           min_blocks=self.min_blocks, epochs=self.epochs,
                                           finetune_epochs=self.finetune_epochs, lr=self.lr, cycles=self.cycles,
                                           c=self.c)
        except BlockError as e:
            raise PlanError(str(e)) from e
        wb.restore()
        dense = wb.model.state_dict()
        corrections = {k: v.to(dense[k].device) for k, v in run.state.items()
                       if k in dense and not torch.equal(v.to(dense[k].device), dense[k])}
        return Plan(self.key, ratio, "unstructured", masks=run.masks, corrections=corrections,
                    details={"block": self.block, "block_sparsity": ratio, "skipped": dict(run.skipped),
                             "realised_sparsity": run.realised_sparsity, "trained": True,
                             "steps": len(run.records), "train_seconds": round(run.seconds, 3)})


def _requires_blocks(wb: Workbench) -> str | None:
    try:
        pruned_layers(wb, DEFAULT_BLOCK, MIN_BLOCKS)
    except PlanError as e:
        return str(e)
    return None


def _requires_trainable_blocks(wb: Workbench) -> str | None:
    if isinstance(wb.model, torch.jit.ScriptModule):
        return ("a TorchScript module's forward is compiled: block attention and masks cannot be put into it for "
                "training (load the weights into a built-in architecture, or export with torch.export)")
    return _requires_blocks(wb)


# every setting in the spec, so a plan made with other settings is named as a variant ("seqattn[epochs=20]")
TRAINED_DEFAULTS = {"block": DEFAULT_BLOCK, "min_blocks": MIN_BLOCKS, "epochs": 10, "finetune_epochs": 3, "lr": 1e-3,
                    "cycles": 3, "c": SCHEDULE_C}
_NOTE = " Ratio = fraction of blocks removed in every pruned layer; layers with fewer than 100 blocks stay dense."
SPECS = [
    MethodSpec("block-magnitude", "Block magnitude, 4x4 blocks per layer (unstructured)", "unstructured",
               BlockMagnitude, {"block": DEFAULT_BLOCK, "min_blocks": MIN_BLOCKS},
               "One-shot: the 4x4 blocks of smallest L2 norm (conv kernels read as (kh*kw*Cin) x Cout), the same "
               "block fraction in every layer; no training." + _NOTE,
               paper=PAPER, requires=_requires_blocks, exempt={"kept-fraction": KEPT_FRACTION},
               short_label="Block magnitude (one-shot)"),
    MethodSpec("seqattn", "SequentialAttention++, 4x4 blocks (trains, Yasuda et al. 2024)", "unstructured",
               TrainedBlockSparsity, {"procedure": "seqattn", **TRAINED_DEFAULTS},
               "Trains with one softmax attention logit per block (A = N softmax(L) scales W): dense, then "
               "sparsify (exponential schedule, c = 4, lowest A first) / sparse / dense cycles, then a fine-tune of "
               "the folded weights; every plan trains (10 + 3 epochs)." + _NOTE,
               paper=PAPER, needs=("weights", "training"), requires=_requires_trainable_blocks,
               exempt={"kept-fraction": KEPT_FRACTION}, short_label="SA++"),
    MethodSpec("acdc", "ACDC, 4x4 blocks by magnitude (trains)", "unstructured", TrainedBlockSparsity,
               {"procedure": "acdc", **TRAINED_DEFAULTS},
               "Trains alternating dense and sparse phases, the sparse support the top blocks by L2 norm at each "
               "sparse phase's start, then a fine-tune; every plan trains (10 + 3 epochs). The baseline of "
               "SequentialAttention++." + _NOTE,
               paper=PAPER, needs=("weights", "training"), requires=_requires_trainable_blocks,
               exempt={"kept-fraction": KEPT_FRACTION}, short_label="ACDC"),
]

__all__ = ["DEFAULT_BLOCK", "SPECS", "BlockMagnitude", "TrainedBlockSparsity", "pruned_layers"]
