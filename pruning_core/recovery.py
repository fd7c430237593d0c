"""Recovery by fine-tuning: how much of the accuracy a pruning plan loses comes back when the surviving weights are
trained a little, with the pruned ones held at zero ("prune, then fine-tune", Han et al., "Learning both Weights
and Connections for Efficient Neural Networks", NeurIPS 2015, Sec. 3.1; Li et al., "Pruning Filters for
Efficient ConvNets", ICLR 2017, Sec. 3.3 for channels).

``finetune_plan`` trains a copy of the model as the plan leaves it and returns a new ``Plan``: the same masks and
pruned channels, and every fine-tuned tensor as a correction, so the result evaluates, slices and exports like any
other plan. ``run_recovery`` measures, for each method and ratio, the pruned point and the fine-tuned one.

The default recipe (``RECIPE``) is the demo models' own training recipe (``experiments.training``: Adam lr 3e-3,
L2 weight decay 1e-4, batch 64, cosine schedule over the epochs) for ``DEFAULT_EPOCHS`` = 10 epochs, a quarter of
their 40 (200 steps on the digits' 1,258 training images, about 2 s on one CPU thread for digits-resnet). Measured
on the demo models (group L1 and global magnitude at 50-90%, ``tests/unit/test_recovery.py`` and the notes in
the README), it recovered the most of the four recipes tried (Adam 1e-3 x 5 and x 10 epochs, SGD 0.01 x 5, Adam
3e-3 x 10): e.g. digits-cnn group L1 at 70% of the channels 23% -> 98% (Adam 1e-3 x 5: 95%), at 90% 14% -> 89%
(Adam 1e-3 x 5: 40%); a smaller step stays too close to the pruned weights when much was removed.
``methods.units``' sequential schedule keeps the i-SpaSP authors' ImageNet recipe (SGD 0.01) instead, to reproduce
that paper.

What fine-tuning trains towards follows the task (``tasks``): the labels; without labels, the dense model's top-1
classes (distillation with hard labels); for an embedding model, the dense model's embeddings (``distil_embeddings``:
loss 1 - cosine). Embedding models get their own recipe, ``EMBEDDING_RECIPE`` (Adam lr 3e-4, batch 32, no weight
decay) for ``EMBEDDING_EPOCHS`` = 2 epochs: a pretrained transformer needs a fine-tuning step, not the digits'
from-scratch one. Measured on all-MiniLM-L6-v2 with half of every layer's FFN neurons removed (``text.encoder_plan``,
the bundled sentences: 325 training, 512 other ones to evaluate), 2 epochs (22 steps): cosine to the dense
embeddings 0.654 -> 0.837 (lr 1e-4), 0.861 (3e-4), 0.812 (1e-3).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from typing import Callable, Iterable

import pandas as pd
import torch
from torch import nn

from . import metrics
from .data import Split
from .experiments.training import (
    DEMO_BATCH,
    DEMO_LR,
    DEMO_WEIGHT_DECAY,
    OPTIMIZERS,
    seeded,
    train_masked,
    trainable_copy,
)
from .methods import Method, make_method
from .plan import Plan, PlanError, check_ratio
from .workbench import Workbench

DEFAULT_EPOCHS = 10
RECIPE = {"lr": DEMO_LR, "weight_decay": DEMO_WEIGHT_DECAY, "batch_size": DEMO_BATCH, "optimizer": "adam"}
EMBEDDING_EPOCHS = 2
EMBEDDING_RECIPE = {"lr": 3e-4, "weight_decay": 0.0, "batch_size": 32, "optimizer": "adam"}
STAGES = ("pruned", "fine-tuned")
RECOVERY_COLUMNS = ["method", "label", "ratio", "stage", "accuracy", "loss", "agreement", "params_fraction",
                    "flops_fraction", "epochs", "steps", "stopped"]


def recipe_for(wb: Workbench) -> dict:
    """The default recipe for ``wb``'s task: ``EMBEDDING_RECIPE`` for embedding models, else ``RECIPE``, with
    ``epochs`` (``EMBEDDING_EPOCHS`` or ``DEFAULT_EPOCHS``)."""
    if wb.task.kind == "embedding":
        return {**EMBEDDING_RECIPE, "epochs": EMBEDDING_EPOCHS}
    return {**RECIPE, "epochs": DEFAULT_EPOCHS}


OBJECTIVES = {"classification": "cross-entropy to the labels",
              "unlabelled": "cross-entropy to the dense model's top-1 classes",
              "embedding": "1 - cosine to the dense embeddings"}


def training_objective(wb: Workbench) -> str:
    """What fine-tuning minimises for ``wb``'s task, in words (``OBJECTIVES``; ``training_split`` has the
    targets)."""
    return OBJECTIVES[wb.task.kind]


def recovery_columns(wb: Workbench) -> list[str]:
    """``RECOVERY_COLUMNS`` and then the task's own metrics (``tasks.Task.extra``: top-5 overlap and KL without
    labels, cosine similarity for embeddings)."""
    return RECOVERY_COLUMNS + list(wb.task.extra)


def token_batch(x: torch.Tensor) -> torch.Tensor:
    """A batch of (B, 2, L) int64 [token ids; attention mask] (``text.SentenceEncoder``'s input) cut to its longest
    sentence, as ``text.encode`` does: positions past every mask change nothing but the time. Other inputs are
    returned as they are."""
    if x.dtype == torch.int64 and x.ndim == 3 and x.shape[1] == 2 and x.shape[2] > 0:
        return x[:, :, :max(int(x[:, 1].sum(1).max()), 1)]
    return x


def dense_embeddings(wb: Workbench, x: torch.Tensor) -> torch.Tensor:
    """The dense model's embeddings (N, D) of ``x``, float32 on ``x``'s device: one pass in batches of
    ``wb.batch_size`` under ``torch.inference_mode`` (each token batch cut by ``token_batch``), concatenated
    outside it into an ordinary tensor, which a loss may save for the backward pass (an inference tensor could
    not be)."""
    wb.restore()
    parts = []
    with torch.inference_mode():
        for chunk in x.split(wb.batch_size):
            parts.append(wb.model(token_batch(chunk.to(wb.device))).float().to(x.device))
    return torch.cat(parts) if parts else torch.empty((0, 0))


def training_split(wb: Workbench) -> Split:
    """The split fine-tuning trains on: ``wb.data.train``, or the calibration split when there is no training
    split (an uploaded .npz with only evaluation and calibration data). Never the evaluation split. Its ``y``
    holds the training targets, by task:

    * classification: the labels;
    * unlabelled classification: the dense model's own top-1 classes, so that fine-tuning distils the dense
      model (hard labels, Hinton et al. 2015's limit of zero temperature) rather than fitting labels nobody gave;
    * embeddings: the dense model's embeddings (N, D) float32 (``dense_embeddings``), the targets of
      ``distil_embeddings``."""
    split = wb.data.train if len(wb.data.train) > 0 else wb.data.calib
    if wb.task.kind == "embedding":
        return Split(split.x, dense_embeddings(wb, split.x))
    if wb.task.kind == "unlabelled":
        wb.restore()
        targets = metrics.predict(wb.model, split.x.to(wb.device), wb.batch_size).argmax(1).to(split.y.device)
        split = type(split)(split.x, targets)
    return split


def cosine_distillation_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """mean_n (1 - cos(outputs_n, targets_n)) for (N, D) embeddings: 0 when every pruned embedding points where
    the dense one does, 2 when opposite. The cosine embedding loss DistilBERT adds to align the student's hidden
    states with the teacher's (Sanh et al., "DistilBERT, a distilled version of BERT", 2019, Sec. 2, L_cos)."""
    return (1.0 - nn.functional.cosine_similarity(outputs, targets, dim=1)).mean()


def distil_embeddings(model: nn.Module, masks: dict[str, torch.Tensor], x: torch.Tensor, targets: torch.Tensor,
                      epochs: int, lr: float = EMBEDDING_RECIPE["lr"],
                      batch_size: int = EMBEDDING_RECIPE["batch_size"], seed: int = 0,
                      weight_decay: float = EMBEDDING_RECIPE["weight_decay"], optimizer: str = "adam",
                      device: str | torch.device | None = None, should_stop: Callable[[], bool] | None = None,
                      after_step: Callable[[int, float], None] | None = None) -> nn.Module:
    """Train ``model`` in place so that its embeddings of ``x`` (N, ...) reproduce ``targets`` (N, D), the dense
    model's: loss ``cosine_distillation_loss`` (1 - cosine, averaged over the batch).

    Why cosine rather than the MSE between embeddings of Reimers & Gurevych ("Making Monolingual Sentence
    Embeddings Multilingual using Knowledge Distillation", EMNLP 2020, Eq. 1): the figure the embedding task
    reports and retrieval uses is the cosine, and this loss is that figure (1 - the "cosine to dense" metric on
    the training split); it ignores an embedding's norm, which retrieval by cosine ignores too. For L2-normalised
    outputs (all-MiniLM-L6-v2's) the two agree: ||a - b||^2 = 2 (1 - cos(a, b)).

    Everything else is ``experiments.training.train_masked``'s: masked entries (``masks``: name -> bool, True =
    kept) exactly zero throughout (gradients zeroed before, masks multiplied back after every step), Adam with L2
    ``weight_decay`` or SGD (momentum 0.9, Nesterov), cosine annealing over the epochs, batch order from a
    ``torch.Generator`` seeded with ``seed``, dropout seeded and in train mode, ``should_stop`` polled before
    every batch, ``after_step(step, loss)`` after every step. Token batches are cut by ``token_batch``. Returns
    the model in eval mode with gradients off."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    if epochs < 0 or batch_size < 1 or len(x) != len(targets):
        raise ValueError(f"need epochs >= 0, batch_size >= 1 and one target per sample, got {epochs}, "
                         f"{batch_size} and {len(targets)} targets for {len(x)} samples")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    params = dict(model.to(device).named_parameters())
    bad = sorted(k for k, m in masks.items() if k not in params or m.shape != params[k].shape)
    if bad:
        raise ValueError(f"masks that name no tensor of the model or do not fit its shape: {', '.join(bad[:3])}")
    keep = [(params[name], m.to(device=device, dtype=params[name].dtype)) for name, m in masks.items()]
    for p in params.values():
        p.requires_grad_(True)
    with torch.no_grad():
        for p, m in keep:
            p.mul_(m)
    if optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(epochs, 1))
    x, targets = x.to(device), targets.to(device)
    g = torch.Generator().manual_seed(seed)
    step = 0
    with seeded(seed, device):
        for _ in range(epochs):
            model.train()
            for idx in torch.randperm(len(x), generator=g).split(batch_size):
                if should_stop is not None and should_stop():
                    return _frozen(model, params)
                idx = idx.to(device)
                opt.zero_grad()
                loss = cosine_distillation_loss(model(token_batch(x[idx])).float(), targets[idx])
                loss.backward()
                for p, m in keep:
                    if p.grad is not None:
                        p.grad.mul_(m)
                opt.step()
                with torch.no_grad():
                    for p, m in keep:
                        p.mul_(m)
                if after_step is not None:
                    after_step(step, loss.detach().item())
                step += 1
            sched.step()
    return _frozen(model, params)


def _frozen(model: nn.Module, params: dict[str, nn.Parameter]) -> nn.Module:
    for p in params.values():
        p.requires_grad_(False)
    return model.eval()


def finetune_steps(wb: Workbench, epochs: int | None = None, batch_size: int | None = None) -> int:
    """Optimiser steps one ``finetune_plan`` run takes: ``epochs * ceil(N / batch_size)`` for N training samples
    (for a progress bar fed by ``on_step``); None: the task's recipe (``recipe_for``)."""
    recipe = recipe_for(wb)
    epochs = recipe["epochs"] if epochs is None else epochs
    batch_size = recipe["batch_size"] if batch_size is None else batch_size
    samples = len(wb.data.train) if len(wb.data.train) > 0 else len(wb.data.calib)
    return int(epochs) * math.ceil(samples / int(batch_size))


def plan_masks(wb: Workbench, plan: Plan, shapes: dict[str, torch.Size]) -> dict[str, torch.Tensor]:
    """Bool keep-masks (CPU, True = kept) of every parameter named in ``shapes`` that ``plan`` zeroes: its own
    masks, and for a structured plan every masked slice of its pruned channels (``kept_mask_by_tensor``: producer
    rows and biases, norm scales and shifts, consumer columns), the two combined with AND."""
    masks = {k: m.detach().to("cpu", torch.bool) for k, m in plan.masks.items() if k in shapes}
    if plan.is_structured and plan.pruned_channels:
        for name, keep in wb.groups.kept_mask_by_tensor(plan.pruned_channels, shapes).items():
            masks[name] = masks[name] & keep if name in masks else keep
    return masks


def finetune_plan(wb: Workbench, plan: Plan, epochs: int | None = None, lr: float | None = None,
                  optimizer: str | None = None, batch_size: int | None = None, weight_decay: float | None = None,
                  seed: int = 0, should_stop: Callable[[], bool] | None = None,
                  on_step: Callable[[int, float], None] | None = None) -> Plan:
    """``plan`` fine-tuned: a new ``Plan`` with the same method, ratio, masks and pruned channels whose
    ``corrections`` hold every floating-point tensor (parameters and BatchNorm statistics) of the trained copy.

    * Starts from the plan as applied (masks, pruned channels zeroed, the plan's own corrections such as an
      interpolative decomposition's folded weights), on a trainable copy: the workbench's working copy and its
      dense tensors are never trained (``wb.model`` is the dense model bit for bit afterwards).
    * Trains on ``training_split(wb)`` towards the task's targets with ``plan_masks`` held fixed, every masked
      entry exactly zero throughout and after (so the structured plan's sliced model still equals its masked
      one): classifiers with ``experiments.training.train_masked`` (cross-entropy against the labels, or the
      dense top-1 classes without labels), embedding models with ``distil_embeddings`` (1 - cosine to the dense
      embeddings). Cosine schedule; ``optimizer`` "adam" or "sgd".
    * Defaults (None): the task's recipe, ``recipe_for(wb)`` (``RECIPE`` and ``DEFAULT_EPOCHS``, or
      ``EMBEDDING_RECIPE`` and ``EMBEDDING_EPOCHS``; module docstring).
    * ``should_stop()``: polled before every step; training stops there and the plan holds the weights as they
      are (``details["finetune"]["stopped"]`` is True). ``on_step(step, loss)`` after every optimiser step.
    * ``details["finetune"]``: epochs, steps (done), stopped, lr, optimizer, batch_size, weight_decay, seed,
      training_samples, objective, seconds. With no step done the corrections are the plan's own.
    """
    given = {"epochs": epochs, "lr": lr, "optimizer": optimizer, "batch_size": batch_size,
             "weight_decay": weight_decay}
    r = {**recipe_for(wb), **{k: v for k, v in given.items() if v is not None}}
    epochs, lr, optimizer, batch_size, weight_decay = (r[k] for k in given)
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    if int(epochs) < 0 or int(batch_size) < 1 or not lr > 0:
        raise ValueError(f"need epochs >= 0, batch_size >= 1 and lr > 0, got {epochs}, {batch_size} and {lr}")
    start = time.perf_counter()
    split = training_split(wb)
    if len(split) == 0:
        raise PlanError("Fine-tuning needs training data: the data set has neither a training nor a calibration "
                        "split.")
    with wb.applied(plan) as applied:
        model = trainable_copy(applied)
    shapes = {k: p.shape for k, p in model.named_parameters()}
    masks = plan_masks(wb, plan, shapes)
    stopped, steps = False, 0

    def stop() -> bool:
        nonlocal stopped
        stopped = bool(should_stop())
        return stopped

    def step(i: int, loss: float) -> None:
        nonlocal steps
        steps = i + 1
        if on_step is not None:
            on_step(i, loss)

    train = distil_embeddings if wb.task.kind == "embedding" else train_masked
    train(model, masks, split.x, split.y, int(epochs), lr, int(batch_size), seed, weight_decay, optimizer,
          wb.device, should_stop=stop if should_stop is not None else None, after_step=step)
    if steps:
        corrections = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}
    else:
        corrections = dict(plan.corrections)
    del model
    details = {**plan.details, "finetune": {
        "epochs": int(epochs), "steps": steps, "stopped": stopped, "lr": float(lr), "optimizer": optimizer,
        "batch_size": int(batch_size), "weight_decay": float(weight_decay), "seed": int(seed),
        "training_samples": len(split), "objective": training_objective(wb), "seconds": time.perf_counter() - start}}
    return Plan(plan.method, plan.ratio, plan.granularity, masks=dict(plan.masks),
                pruned_channels=dict(plan.pruned_channels), corrections=corrections, details=details)


def run_recovery(wb: Workbench, methods: Iterable[str | Method], ratios: Iterable[float],
                 epochs: int | None = None, structured: str = "sliced",
                 on_point: Callable[[dict], None] | None = None, should_stop: Callable[[], bool] | None = None,
                 on_step: Callable[[int, float], None] | None = None, **recipe) -> pd.DataFrame:
    """For each method and ratio, the pruned point and the pruned-then-fine-tuned point (``finetune_plan`` with
    ``epochs`` and ``recipe``: lr, optimizer, batch_size, weight_decay, seed; None and left out: the task's
    recipe), evaluated as a sweep evaluates (``Workbench.evaluate_plan``; ``structured``: "sliced" or "masked").

    Returns one row per point with ``recovery_columns(wb)`` (``RECOVERY_COLUMNS`` and the task's own metrics,
    e.g. ``cosine`` for embeddings): stage "pruned" (epochs and steps 0) or "fine-tuned"; params_fraction and
    flops_fraction are the pruned plan's (fine-tuning changes values, never what is kept).
    ``on_point(row)`` is called with every row as soon as it is measured; an exception it raises ends the run
    (the rows it already received are the caller's). ``should_stop()`` is polled before every plan and every
    training step. A stopped run returns the rows finished so far; a fine-tune stopped after at least one step is
    kept as a finished point, flagged ``stopped`` with the steps it did (its plan is a valid one, just trained
    less), and one stopped before its first step is dropped (it would repeat the pruned point).
    ``on_step(step, loss)``: every training step of every fine-tune (steps count from 0 in each;
    ``finetune_steps`` gives the total per fine-tune).
    """
    if structured not in ("sliced", "masked"):
        raise ValueError("structured must be 'sliced' or 'masked'")
    ratios = [check_ratio(r) for r in ratios]
    wb.dense_metrics()
    rows: list[dict] = []
    columns = recovery_columns(wb)

    def stopping() -> bool:
        return should_stop is not None and bool(should_stop())

    def deliver(row: dict) -> None:
        rows.append(row)
        if on_point is not None:
            on_point(row)

    for m in methods:
        if stopping():
            break
        method = make_method(m)
        if method._wb is not wb:
            method.prepare(wb)
        for r in ratios:
            if stopping():
                return pd.DataFrame(rows, columns=columns)
            plan = method.plan(r)
            kept = wb.kept_fraction_by_tensor(plan)
            pruned = asdict(wb.evaluate_plan(plan, structured=structured, kept=kept))
            base = {"method": method.key, "label": method.label, "ratio": r,
                    "params_fraction": pruned["params_fraction"], "flops_fraction": pruned["flops_fraction"]}
            deliver({**base, "stage": "pruned", **_scores(pruned), "epochs": 0, "steps": 0, "stopped": False})
            tuned = finetune_plan(wb, plan, epochs, should_stop=should_stop, on_step=on_step, **recipe)
            info = tuned.details["finetune"]
            if info["steps"] == 0 and info["stopped"]:
                return pd.DataFrame(rows, columns=columns)
            after = asdict(wb.evaluate_plan(tuned, structured=structured, kept=kept))
            deliver({**base, "stage": "fine-tuned", **_scores(after), "epochs": info["epochs"],
                     "steps": info["steps"], "stopped": info["stopped"]})
            if info["stopped"]:
                return pd.DataFrame(rows, columns=columns)
    return pd.DataFrame(rows, columns=columns)


def _scores(pm: dict) -> dict:
    return {"accuracy": pm["accuracy"], "loss": pm["loss"], "agreement": pm["agreement"], **pm["scores"]}


__all__ = ["DEFAULT_EPOCHS", "EMBEDDING_EPOCHS", "EMBEDDING_RECIPE", "OBJECTIVES", "RECIPE", "RECOVERY_COLUMNS",
           "STAGES", "cosine_distillation_loss", "dense_embeddings", "distil_embeddings", "finetune_plan",
           "finetune_steps", "plan_masks", "recipe_for", "recovery_columns", "run_recovery", "token_batch",
           "training_objective", "training_split"]
