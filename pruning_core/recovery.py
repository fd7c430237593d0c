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
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from typing import Callable, Iterable

import pandas as pd
import torch

from . import metrics
from .experiments.training import DEMO_BATCH, DEMO_LR, DEMO_WEIGHT_DECAY, OPTIMIZERS, train_masked, trainable_copy
from .methods import Method, make_method
from .plan import Plan, PlanError, check_ratio
from .workbench import Workbench

DEFAULT_EPOCHS = 10
RECIPE = {"lr": DEMO_LR, "weight_decay": DEMO_WEIGHT_DECAY, "batch_size": DEMO_BATCH, "optimizer": "adam"}
STAGES = ("pruned", "fine-tuned")
RECOVERY_COLUMNS = ["method", "label", "ratio", "stage", "accuracy", "loss", "agreement", "params_fraction",
                    "flops_fraction", "epochs", "steps", "stopped"]


def training_split(wb: Workbench):
    """The split fine-tuning trains on: ``wb.data.train``, or the calibration split when there is no training
    split (an uploaded .npz with only evaluation and calibration data). Never the evaluation split.

    Data without labels (``wb.task.kind == "unlabelled"``) is labelled with the dense model's own top-1 classes,
    so fine-tuning distils the dense model (hard labels, Hinton et al. 2015's limit of zero temperature) rather
    than fitting labels nobody gave. Embedding models have no class to train towards: refused with a reason."""
    split = wb.data.train if len(wb.data.train) > 0 else wb.data.calib
    if wb.task.kind == "embedding":
        raise PlanError("fine-tuning trains with a classification loss, and this model returns embeddings; "
                        "recovery for embedding models is not available yet")
    if wb.task.kind == "unlabelled":
        wb.restore()
        targets = metrics.predict(wb.model, split.x.to(wb.device), wb.batch_size).argmax(1).to(split.y.device)
        split = type(split)(split.x, targets)
    return split


def finetune_steps(wb: Workbench, epochs: int = DEFAULT_EPOCHS, batch_size: int = RECIPE["batch_size"]) -> int:
    """Optimiser steps one ``finetune_plan`` run takes: ``epochs * ceil(N / batch_size)`` for N training samples
    (for a progress bar fed by ``on_step``)."""
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


def finetune_plan(wb: Workbench, plan: Plan, epochs: int = DEFAULT_EPOCHS, lr: float = RECIPE["lr"],
                  optimizer: str = RECIPE["optimizer"], batch_size: int = RECIPE["batch_size"],
                  weight_decay: float = RECIPE["weight_decay"], seed: int = 0,
                  should_stop: Callable[[], bool] | None = None,
                  on_step: Callable[[int, float], None] | None = None) -> Plan:
    """``plan`` fine-tuned: a new ``Plan`` with the same method, ratio, masks and pruned channels whose
    ``corrections`` hold every floating-point tensor (parameters and BatchNorm statistics) of the trained copy.

    * Starts from the plan as applied (masks, pruned channels zeroed, the plan's own corrections such as an
      interpolative decomposition's folded weights), on a trainable copy: the workbench's working copy and its
      dense tensors are never trained (``wb.model`` is the dense model bit for bit afterwards).
    * Trains with ``experiments.training.train_masked`` (cross-entropy on ``training_split(wb)``, cosine
      schedule, ``optimizer`` "adam" or "sgd") with ``plan_masks`` held fixed: every masked entry is exactly zero
      throughout and after, so the structured plan's sliced model still equals its masked one.
    * Defaults: ``RECIPE`` and ``DEFAULT_EPOCHS`` (module docstring).
    * ``should_stop()``: polled before every step; training stops there and the plan holds the weights as they
      are (``details["finetune"]["stopped"]`` is True). ``on_step(step, loss)`` after every optimiser step.
    * ``details["finetune"]``: epochs, steps (done), stopped, lr, optimizer, batch_size, weight_decay, seed,
      training_samples, seconds. With no step done the corrections are the plan's own.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    if int(epochs) < 0 or int(batch_size) < 1 or not lr > 0:
        raise ValueError(f"need epochs >= 0, batch_size >= 1 and lr > 0, got {epochs}, {batch_size} and {lr}")
    split = training_split(wb)
    if len(split) == 0:
        raise PlanError("Fine-tuning needs training data: the data set has neither a training nor a calibration "
                        "split.")
    start = time.perf_counter()
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

    train_masked(model, masks, split.x, split.y, int(epochs), lr, int(batch_size), seed, weight_decay, optimizer,
                 wb.device, should_stop=stop if should_stop is not None else None, after_step=step)
    if steps:
        corrections = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}
    else:
        corrections = dict(plan.corrections)
    del model
    details = {**plan.details, "finetune": {
        "epochs": int(epochs), "steps": steps, "stopped": stopped, "lr": float(lr), "optimizer": optimizer,
        "batch_size": int(batch_size), "weight_decay": float(weight_decay), "seed": int(seed),
        "training_samples": len(split), "seconds": time.perf_counter() - start}}
    return Plan(plan.method, plan.ratio, plan.granularity, masks=dict(plan.masks),
                pruned_channels=dict(plan.pruned_channels), corrections=corrections, details=details)


def run_recovery(wb: Workbench, methods: Iterable[str | Method], ratios: Iterable[float],
                 epochs: int = DEFAULT_EPOCHS, structured: str = "sliced",
                 on_point: Callable[[dict], None] | None = None, should_stop: Callable[[], bool] | None = None,
                 on_step: Callable[[int, float], None] | None = None, **recipe) -> pd.DataFrame:
    """For each method and ratio, the pruned point and the pruned-then-fine-tuned point (``finetune_plan`` with
    ``epochs`` and ``recipe``: lr, optimizer, batch_size, weight_decay, seed), evaluated as a sweep evaluates
    (``Workbench.evaluate_plan``; ``structured``: "sliced" or "masked").

    Returns one row per point with ``RECOVERY_COLUMNS``: stage "pruned" (epochs and steps 0) or "fine-tuned";
    params_fraction and flops_fraction are the pruned plan's (fine-tuning changes values, never what is kept).
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
                return pd.DataFrame(rows, columns=RECOVERY_COLUMNS)
            plan = method.plan(r)
            kept = wb.kept_fraction_by_tensor(plan)
            pruned = asdict(wb.evaluate_plan(plan, structured=structured, kept=kept))
            base = {"method": method.key, "label": method.label, "ratio": r,
                    "params_fraction": pruned["params_fraction"], "flops_fraction": pruned["flops_fraction"]}
            deliver({**base, "stage": "pruned", **_scores(pruned), "epochs": 0, "steps": 0, "stopped": False})
            tuned = finetune_plan(wb, plan, epochs, should_stop=should_stop, on_step=on_step, **recipe)
            info = tuned.details["finetune"]
            if info["steps"] == 0 and info["stopped"]:
                return pd.DataFrame(rows, columns=RECOVERY_COLUMNS)
            after = asdict(wb.evaluate_plan(tuned, structured=structured, kept=kept))
            deliver({**base, "stage": "fine-tuned", **_scores(after), "epochs": info["epochs"],
                     "steps": info["steps"], "stopped": info["stopped"]})
            if info["stopped"]:
                return pd.DataFrame(rows, columns=RECOVERY_COLUMNS)
    return pd.DataFrame(rows, columns=RECOVERY_COLUMNS)


def _scores(pm: dict) -> dict:
    return {"accuracy": pm["accuracy"], "loss": pm["loss"], "agreement": pm["agreement"]}


__all__ = ["DEFAULT_EPOCHS", "RECIPE", "RECOVERY_COLUMNS", "STAGES", "finetune_plan", "finetune_steps",
           "plan_masks", "run_recovery", "training_split"]
