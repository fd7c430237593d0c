"""SequentialAttention++ block sparsification and its two baselines, trained on the workbench's model (Yasuda,
Axiotis, Fu, Bateni, Mirrokni, NeurIPS 2024, arXiv 2402.17902; there is no official pruning code, so everything here
is from the paper text, Algorithm 1 and §3.1, §4; digest ../shared/reference/methods.md §4).

``run_block_sparsification(wb, procedure, sparsity)`` trains a copy of ``wb.model`` and returns a ``BlockRun``:

* ``"seqattn"`` (SA++): every block-pruned weight W is replaced in the forward pass by W (.) A (.) M, A = N softmax(L)
  one trainable logit per B x B block (zeros at the start, so A = 1 and the model computes what it did), M the block
  mask. Phases (``algorithms.block_sparsity.training_phases``): dense (M = 1), then cycles of sparsify (M loses the
  blocks of lowest A, monotonically, along s (1 - e^{-c u}) / (1 - e^{-c}), c = 4, over the phase) -> sparse (M frozen)
  -> dense, the last cycle one long sparsify phase, then a final sparse phase. Then A (.) M is folded into W and the
  plain pruned weights are fine-tuned with the mask held (``train_masked``).
* ``"acdc"``: the same schedule without A and without sparsify phases: at the start of every sparse phase the support
  is the top blocks by block L2 norm of W (ACDC with block magnitude support), then the same fine-tune.
* ``"block-magnitude"``: one-shot top blocks by L2 norm of the trained W, then fine-tuned with the mask held for the
  **same number of optimiser steps** as the others' schedule plus fine-tune (the same budget, for fairness).

Choices of ours where the text is silent (labelled so): training starts from the trained weights the workbench holds
(the paper prunes during training from scratch); whenever a block leaves or re-enters the support its weights are
set to zero (AC/DC's restart from zero); the logits train with the weights (same optimiser, Adam L2 decay on both, the
group-LASSO reading of §2); the sparsify phase is monotone within the phase and starts from all blocks; A decides
alone (not |W| A). Every pruned layer gets the same block sparsity (§4), layers with fewer than ``min_blocks`` blocks
are not pruned, so the realised sparsity of the model is computed and reported.

Defaults (a run on the digits MLP in 1-2 s on one CPU thread, 500 optimiser steps): block 4, min_blocks 100, 20
epochs of schedule (3 cycles) + 5 of fine-tune, Adam lr 1e-3, weight decay 1e-4, batch 64, cosine within each call.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Iterable

import pandas as pd
import torch
from torch import nn
from torch.nn.utils import parametrize

from .. import metrics
from ..algorithms.block_sparsity import (
    MIN_BLOCKS,
    SCHEDULE_C,
    BlockError,
    Phase,
    block_attention,
    block_grid,
    block_keep_mask,
    block_layers,
    block_norms,
    check_block_sparsity,
    expand_blocks,
    realised_sparsity,
    scheduled_sparsity,
    training_phases,
)
from ..workbench import Workbench
from . import Progress, ShouldStop
from .sap import training_split
from .training import DEMO_BATCH, DEMO_WEIGHT_DECAY, train_masked, trainable_copy

BLOCK_PROCEDURES = ("seqattn", "acdc", "block-magnitude")
DEFAULTS = {"block": 4, "min_blocks": MIN_BLOCKS, "epochs": 20, "finetune_epochs": 5, "lr": 1e-3, "cycles": 3,
            "c": SCHEDULE_C, "batch_size": DEMO_BATCH, "weight_decay": DEMO_WEIGHT_DECAY}


class BlockScaling(nn.Module):
    """A ``torch.nn.utils.parametrize`` parametrization W -> W (.) expand(A (.) M): per-block attention A = N softmax
    (``logits``) (only when ``attention``; else A = 1) times the block mask M (``mask``, a bool buffer), both of
    shape (block rows, block cols) of ``block_matrix(W)``."""

    def __init__(self, shape: tuple[int, ...], block: int, attention: bool):
        super().__init__()
        self.shape, self.block = tuple(shape), block
        grid = block_grid(shape, block)
        self.logits = nn.Parameter(torch.zeros(grid)) if attention else None
        self.register_buffer("mask", torch.ones(grid, dtype=torch.bool))

    def attention(self) -> torch.Tensor:
        """A (block rows, block cols): N softmax(logits), or ones without attention."""
        if self.logits is None:
            return torch.ones(self.mask.shape, device=self.mask.device)
        return block_attention(self.logits)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        scale = self.attention() * self.mask.to(weight.dtype)
        return weight * expand_blocks(scale.to(weight.dtype), self.shape, self.block)


def attach_block_scaling(model: nn.Module, grids: dict[str, tuple[int, int]], block: int, attention: bool
                         ) -> dict[str, BlockScaling]:
    """Register a ``BlockScaling`` on every weight named in ``grids`` (``"fc1.weight"``); returns them by name."""
    out = {}
    for name in grids:
        module_name, _, attr = name.rpartition(".")
        module = model.get_submodule(module_name)
        scaling = BlockScaling(tuple(getattr(module, attr).shape), block, attention).to(getattr(module, attr).device)
        parametrize.register_parametrization(module, attr, scaling)
        out[name] = scaling
    return out


def fold_block_scaling(model: nn.Module, names: Iterable[str]) -> None:
    """Fold each parametrization into its weight (W <- W (.) A (.) M) and remove it: the plain pruned model."""
    for name in names:
        module_name, _, attr = name.rpartition(".")
        parametrize.remove_parametrizations(model.get_submodule(module_name), attr, leave_parametrized=True)


@dataclass
class BlockRun:
    """One block-sparsification run. ``records``: one per optimiser step (``step``, ``phase``, ``scheduled``: the
    schedule's block sparsity, ``block_sparsity``: realised over the pruned layers' blocks, ``loss``: mini-batch loss,
    ``accuracy``: on the evaluation split every ``eval_every`` steps and at the end, NaN between). ``masks``:
    weight-shaped keep-masks of the pruned layers; ``block_masks`` and ``attention`` (SA++ only): per block;
    ``state``: the trained model's state_dict (None until the run finishes); ``complete``: False when stopped."""

    procedure: str
    sparsity: float
    config: dict
    phases: list[Phase]
    skipped: dict[str, str]
    records: list[dict] = field(default_factory=list)
    masks: dict[str, torch.Tensor] = field(default_factory=dict)
    block_masks: dict[str, torch.Tensor] = field(default_factory=dict)
    attention: dict[str, torch.Tensor] = field(default_factory=dict)
    state: dict[str, torch.Tensor] | None = None
    accuracy: float = math.nan
    realised_sparsity: float = math.nan
    complete: bool = False
    seconds: float = 0.0

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.records, columns=["procedure", "seed", "step", "phase", "scheduled",
                                                   "block_sparsity", "loss", "accuracy"])


def run_block_sparsification(wb: Workbench, procedure: str = "seqattn", sparsity: float = 0.9, seed: int = 0,
                             progress: Progress = None, should_stop: ShouldStop = None, eval_every: int | None = None,
                             **settings) -> BlockRun:
    """Train a copy of ``wb.model`` to ``sparsity`` (fraction of blocks removed in every pruned layer) with
    ``procedure`` (``"seqattn"``, ``"acdc"`` or ``"block-magnitude"``, see the module docstring). ``settings``
    override ``DEFAULTS`` (block, min_blocks, epochs, finetune_epochs, lr, cycles, c, batch_size, weight_decay).
    ``seed`` orders the batches. ``wb.model`` is never changed. Training data: ``wb.data.train`` (else calib).

    ``progress(fraction, text)`` is called about 20 times; ``should_stop()`` is polled before every step, and a run
    that stops returns its finished records (``complete`` False, no fine-tune, no ``state``).
    Time: steps = (epochs + finetune_epochs) x ceil(samples / batch); 1-2 s on the digits MLP with the defaults
    (500 steps) on one CPU thread, 3-5 s on the digits CNN, 8-9 s on the residual CNN."""
    if procedure not in BLOCK_PROCEDURES:
        raise BlockError(f"procedure must be one of {BLOCK_PROCEDURES}, got {procedure!r}")
    unknown = sorted(set(settings) - set(DEFAULTS))
    if unknown:
        raise BlockError(f"unknown settings {unknown}; known: {', '.join(DEFAULTS)}")
    cfg = {**DEFAULTS, **settings, "procedure": procedure, "sparsity": check_block_sparsity(sparsity),
           "seed": int(seed)}
    if cfg["epochs"] < 1 or cfg["finetune_epochs"] < 0:
        raise BlockError(f"need epochs >= 1 and finetune_epochs >= 0, got {cfg['epochs']} and "
                         f"{cfg['finetune_epochs']}")
    start_time = time.perf_counter()
    say = progress or (lambda f, text: None)
    wb.restore()
    shapes = {k: tuple(p.shape) for k, p in wb.prunable.items()}
    grids, skipped = block_layers(shapes, cfg["block"], cfg["min_blocks"])
    if not grids:
        raise BlockError(f"no layer of this model has {cfg['min_blocks']} or more {cfg['block']}x{cfg['block']} "
                         f"blocks ({'; '.join(f'{k}: {v}' for k, v in skipped.items())}); choose a smaller block "
                         "or a smaller min_blocks")
    x, y = training_split(wb)
    per_epoch = math.ceil(len(y) / cfg["batch_size"])
    steps = cfg["epochs"] * per_epoch
    total_steps = steps + cfg["finetune_epochs"] * per_epoch
    eval_every = eval_every or per_epoch
    phases = ([Phase("sparse", 0, total_steps)] if procedure == "block-magnitude"
              else training_phases(procedure, steps, cfg["cycles"]))
    run = BlockRun(procedure, cfg["sparsity"], cfg, phases, skipped)
    model = trainable_copy(wb.model)
    params = dict(model.named_parameters())
    stop_flag = {"stopped": False}

    def poll() -> bool:
        stop_flag["stopped"] = stop_flag["stopped"] or bool(should_stop is not None and should_stop())
        return stop_flag["stopped"]

    def evaluate() -> float:
        was_training = model.training
        model.eval()
        ev, _ = metrics.evaluate(model, wb.eval_x, wb.eval_y, None, wb.batch_size)
        model.train(was_training)
        return ev.accuracy

    def record(step: int, phase: str, scheduled: float, block_masks: dict[str, torch.Tensor], loss: float,
               last: bool) -> None:
        n = sum(m.numel() for m in block_masks.values())
        removed = sum(int(m.numel() - m.sum()) for m in block_masks.values())
        accuracy = evaluate() if (step + 1) % eval_every == 0 or last else math.nan
        run.records.append({"procedure": procedure, "seed": cfg["seed"], "step": step, "phase": phase,
                            "scheduled": scheduled, "block_sparsity": removed / n, "loss": loss,
                            "accuracy": accuracy})
        if (step + 1) % max(1, total_steps // 20) == 0:
            say((step + 1) / total_steps, f"{procedure}: step {step + 1} of {total_steps} ({phase})")

    if procedure == "block-magnitude":
        block_masks = {k: block_keep_mask(block_norms(params[k].detach(), cfg["block"]), cfg["sparsity"])
                       for k in grids}
        masks = {k: expand_blocks(m, shapes[k], cfg["block"]) for k, m in block_masks.items()}
        train_masked(model, masks, x, y, cfg["epochs"] + cfg["finetune_epochs"], cfg["lr"], cfg["batch_size"],
                     cfg["seed"], cfg["weight_decay"], device=wb.device, should_stop=poll,
                     after_step=lambda s, loss: record(s, "sparse", cfg["sparsity"], block_masks, loss,
                                                       s == total_steps - 1))
    else:
        try:
            scalings = attach_block_scaling(model, grids, cfg["block"], attention=procedure == "seqattn")
        except (RuntimeError, AttributeError, TypeError) as e:
            raise BlockError(f"{procedure} cannot train this model: its weights cannot be re-parametrized with block "
                             f"attention and masks ({type(e).__name__}: {str(e).splitlines()[0][:200]}); for a "
                             "TorchScript module, load its weights into a built-in architecture instead") from e
        _run_schedule(model, scalings, phases, cfg, x, y, wb.device, poll, record)
        block_masks = {k: s.mask.detach().clone().cpu() for k, s in scalings.items()}
        if procedure == "seqattn":
            run.attention = {k: s.attention().detach().clone().cpu() for k, s in scalings.items()}
        fold_block_scaling(model, grids)
        masks = {k: expand_blocks(m, shapes[k], cfg["block"]) for k, m in block_masks.items()}
        if not stop_flag["stopped"] and cfg["finetune_epochs"] > 0:
            train_masked(model, masks, x, y, cfg["finetune_epochs"], cfg["lr"], cfg["batch_size"], cfg["seed"] + 1,
                         cfg["weight_decay"], device=wb.device, should_stop=poll,
                         after_step=lambda s, loss: record(steps + s, "finetune", cfg["sparsity"], block_masks,
                                                           loss, steps + s == total_steps - 1))
    model.eval()
    run.block_masks, run.masks = block_masks, masks
    run.realised_sparsity = realised_sparsity(masks, shapes)
    run.complete = not stop_flag["stopped"] and len(run.records) == total_steps
    if run.complete:
        run.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        run.accuracy = run.records[-1]["accuracy"]
    run.seconds = time.perf_counter() - start_time
    say(1.0, f"{procedure}: {'done' if run.complete else 'stopped'}")
    return run


def _run_schedule(model: nn.Module, scalings: dict[str, BlockScaling], phases: list[Phase], cfg: dict,
                  x: torch.Tensor, y: torch.Tensor, device: torch.device, poll, record) -> None:
    """The dense / sparsify / sparse schedule of SA++ or ACDC in one ``train_masked`` call: the block masks for
    step s + 1 are set after step s (``after_step``)."""
    steps = phases[-1].end
    attention = cfg["procedure"] == "seqattn"

    def phase_of(step: int) -> Phase:
        return next(p for p in phases if p.start <= step < p.end)

    def set_mask(name: str, new: torch.Tensor) -> None:
        scaling = scalings[name]
        old = scaling.mask
        gone = ~(old & new.to(old.device))
        if bool(gone.any()):  # a block leaving or re-entering the support restarts from zero (AC/DC)
            with torch.no_grad():
                original = _original(model, name)
                original.mul_(expand_blocks(~gone, scaling.shape, scaling.block).to(original.dtype))
        scaling.mask.copy_(new)

    def masks_for(step: int) -> None:
        phase = phase_of(step)
        target = scheduled_sparsity(phases, step, cfg["sparsity"], cfg["c"])
        for name, scaling in scalings.items():
            if phase.kind == "dense":
                new = torch.ones_like(scaling.mask)
            elif phase.kind == "sparsify":  # monotone within the phase, from all blocks, lowest A first
                within = None if step == phase.start else scaling.mask.cpu()
                new = block_keep_mask(scaling.attention().detach(), target, within)
            elif step == phase.start and not (attention and _follows_sparsify(phases, phase)):
                scores = scaling.attention().detach() if attention else block_norms(_original(model, name).detach(),
                                                                                   scaling.block)
                new = block_keep_mask(scores, target)
            else:  # within a sparse phase, or SA++'s sparse phase after sparsify: the mask stays frozen
                continue
            set_mask(name, new)

    def after_step(step: int, loss: float) -> None:
        block_masks = {k: s.mask for k, s in scalings.items()}
        record(step, phase_of(step).kind, scheduled_sparsity(phases, step, cfg["sparsity"], cfg["c"]), block_masks,
               loss, False)
        if step + 1 < steps:
            masks_for(step + 1)

    masks_for(0)
    train_masked(model, None, x, y, cfg["epochs"], cfg["lr"], cfg["batch_size"], cfg["seed"], cfg["weight_decay"],
                 device=device, should_stop=poll, after_step=after_step)


def _follows_sparsify(phases: list[Phase], phase: Phase) -> bool:
    i = phases.index(phase)
    return i > 0 and phases[i - 1].kind == "sparsify"


def _original(model: nn.Module, name: str) -> torch.Tensor:
    """The plain weight W behind a parametrized ``name``."""
    module_name, _, attr = name.rpartition(".")
    return getattr(model.get_submodule(module_name).parametrizations, attr).original


def compare_block_methods(wb: Workbench, sparsities: Iterable[float] = (0.7, 0.8, 0.9),
                          procedures: Iterable[str] = BLOCK_PROCEDURES, seeds: Iterable[int] = (0,),
                          progress: Progress = None, should_stop: ShouldStop = None, **settings
                          ) -> tuple[pd.DataFrame, list[BlockRun]]:
    """Accuracy against block sparsity for each procedure, seed and sparsity (the same settings and budget for
    all): a frame (procedure, sparsity, seed, accuracy, realised_sparsity, seconds) of the finished runs, and the
    runs. Stops between and within runs when ``should_stop()`` says so, keeping what finished."""
    jobs = [(s, p, seed) for s in sparsities for p in procedures for seed in seeds]
    rows, runs = [], []
    say = progress or (lambda f, text: None)
    for i, (s, p, seed) in enumerate(jobs):
        if should_stop is not None and should_stop():
            break
        run = run_block_sparsification(
            wb, p, s, seed, should_stop=should_stop, **settings,
            progress=lambda f, text, i=i: say((i + f) / len(jobs), text))
        if not run.complete:
            break
        runs.append(run)
        rows.append({"procedure": p, "sparsity": s, "seed": seed, "accuracy": run.accuracy,
                     "realised_sparsity": run.realised_sparsity, "seconds": run.seconds})
    return pd.DataFrame(rows, columns=["procedure", "sparsity", "seed", "accuracy", "realised_sparsity",
                                       "seconds"]), runs


__all__ = ["BLOCK_PROCEDURES", "DEFAULTS", "BlockRun", "BlockScaling", "attach_block_scaling", "compare_block_methods",
           "fold_block_scaling", "run_block_sparsification"]
