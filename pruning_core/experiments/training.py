"""Training under a fixed sparsity mask, and the initial weights that iterative pruning rewinds to.

``train_masked`` is the inner loop of every "prune, then retrain" method: lottery-ticket rewinding (Frankle &
Carbin, ICLR 2019), SAP (Diao et al., ICLR 2023, Sec. 3 and the authors' ``train_classifier.py``) and plain
fine-tuning after pruning. A masked-out weight stays **exactly** zero for the whole run: its gradient is zeroed
before every optimiser step (the authors' ``Mask.freeze_grad``) and the mask is multiplied back in after every
step, so neither weight decay nor momentum (or Adam's moment estimates) can revive it.

``reinitialise`` gives a seeded fresh initialisation for a model whose initial weights
are unknown; ``trainable_copy`` copies any model, TorchScript included, so that it can be trained.
"""

from __future__ import annotations

import copy
import io
from contextlib import contextmanager
from typing import Callable

import torch
from torch import nn

# The demo models' recipe (models/train_demo.py trains them with ``train_masked`` and these defaults): Adam 3e-3,
# L2 weight decay 1e-4, a cosine schedule over the epochs, batch 64.
DEMO_LR = 3e-3
DEMO_WEIGHT_DECAY = 1e-4
DEMO_BATCH = 64
DEMO_EPOCHS = 40
OPTIMIZERS = ("adam", "sgd")


@contextmanager
def seeded(seed: int, device: torch.device):
    """Seed torch's global generators for the block (dropout, reset_parameters) without disturbing the caller's
    random state afterwards."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def train_masked(model: nn.Module, masks: dict[str, torch.Tensor] | None, x: torch.Tensor, y: torch.Tensor,
                 epochs: int, lr: float = DEMO_LR, batch_size: int = DEMO_BATCH, seed: int = 0,
                 weight_decay: float = DEMO_WEIGHT_DECAY, optimizer: str = "adam",
                 device: str | torch.device | None = None,
                 should_stop: Callable[[], bool] | None = None, clip_grad_norm: float | None = None,
                 after_step: Callable[[int, float], None] | None = None) -> nn.Module:
    """Train ``model`` in place with cross-entropy for ``epochs`` epochs while keeping masked weights at zero.

    * ``masks``: parameter name -> bool tensor of the parameter's shape, True = kept (``Plan.masks``). Parameters
      without a mask train freely (biases, norm layers). ``None`` or ``{}``: dense training.
    * ``x`` (N, ...) and ``y`` (N,) int64: the training split; moved to ``device`` (default: the model's).
    * Optimiser: ``"adam"`` (default; ``torch.optim.Adam`` with L2 ``weight_decay``, the demo models' recipe:
      lr 3e-3, weight decay 1e-4, batch 64) or ``"sgd"`` (momentum 0.9, Nesterov, the SAP paper's recipe, which
      uses lr 0.1 and weight decay 5e-4 there). Cosine annealing over ``epochs``, stepped once per epoch.
    * Every step: backward, gradients of masked entries zeroed, the gradient's global L2 norm clipped to
      ``clip_grad_norm`` when given (the SAP authors' ``train_classifier.py`` clips at 1; default None: no
      clipping), optimiser step, mask multiplied back in.
    * Batch order comes from a ``torch.Generator`` seeded with ``seed`` (one ``randperm`` per epoch); the global
      generators are also seeded for the run (dropout) and restored afterwards. On the CPU the result is
      deterministic for a seed (bit for bit with the same thread count; another count reorders float reductions,
      about 1e-7 after 40 epochs). ``models/train_demo.py`` trains the demo models with it.
    * BatchNorm layers are in train mode while training; the model is returned in eval mode.
    * ``should_stop()``: polled before every batch; when it returns True, training stops there and the model is
      returned as it is (the caller, who owns the callback, knows it stopped).
    * ``after_step(step, loss)``: optional, called after every optimiser step (masks already multiplied back in)
      with the step's index from 0 and its mini-batch loss, in train mode; a caller may change what the model
      computes between steps there (SequentialAttention++ moves its block masks along its schedule) or record
      curves. A callback that evaluates the model must put it back in train mode.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    if clip_grad_norm is not None and not clip_grad_norm > 0:
        raise ValueError(f"clip_grad_norm must be positive or None, got {clip_grad_norm!r}")
    if epochs < 0 or batch_size < 1:
        raise ValueError(f"need epochs >= 0 and batch_size >= 1, got {epochs} and {batch_size}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(device)
    params = dict(model.named_parameters())
    unknown = sorted(set(masks or {}) - set(params))
    if unknown:
        raise ValueError(f"masks name tensors the model does not have: {', '.join(unknown[:3])}")
    keep = {}
    for name, mask in (masks or {}).items():
        if mask.shape != params[name].shape:
            raise ValueError(f"the mask for {name!r} has shape {tuple(mask.shape)}, the tensor "
                             f"{tuple(params[name].shape)}")
        keep[name] = mask.to(device=device, dtype=params[name].dtype)
    for p in params.values():
        p.requires_grad_(True)
    with torch.no_grad():
        for name, m in keep.items():
            params[name].mul_(m)
    if optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(epochs, 1))
    x, y = x.to(device), y.to(device)
    g = torch.Generator().manual_seed(seed)
    masked = [(params[name], m) for name, m in keep.items()]
    stopped = False
    step = 0
    with seeded(seed, device):
        for _ in range(epochs):
            model.train()
            for idx in torch.randperm(len(y), generator=g).split(batch_size):
                if should_stop is not None and should_stop():
                    stopped = True
                    break
                idx = idx.to(device)
                opt.zero_grad()
                loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
                loss.backward()
                for p, m in masked:
                    if p.grad is not None:
                        p.grad.mul_(m)
                if clip_grad_norm is not None:
                    nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
                opt.step()
                with torch.no_grad():
                    for p, m in masked:
                        p.mul_(m)
                if after_step is not None:
                    after_step(step, loss.detach().item())
                step += 1
            if stopped:
                break
            sched.step()
    for p in params.values():
        p.requires_grad_(False)
    return model.eval()


def trainable_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose parameters can be trained (eval mode, same device).

    ``copy.deepcopy`` of a TorchScript module gives parameters that are not leaf tensors, which no optimiser
    accepts; those are copied by a ``torch.jit.save`` / ``load`` round trip instead. Raises ValueError for a model
    whose copy still cannot be trained."""
    if isinstance(model, torch.jit.ScriptModule):
        buffer = io.BytesIO()
        torch.jit.save(model, buffer)
        buffer.seek(0)
        device = next(model.parameters()).device
        copied = torch.jit.load(buffer, map_location=device)
    else:
        copied = copy.deepcopy(model)
    if not all(p.is_leaf for p in copied.parameters()):
        raise ValueError(f"a {type(model).__name__} cannot be retrained here: its parameters are not leaf tensors")
    return copied.eval()


def reinitialise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Fresh initial weights for ``model`` in place: ``reset_parameters()`` on every module that has one, in
    ``model.modules()`` order, with torch's global generator seeded with ``seed`` for the duration (the caller's
    random state is restored). For models whose real initialisation is unknown (an uploaded checkpoint), so that
    lottery-ticket rewinding has an initialisation to go back to. Returns ``model`` (eval mode).

    Raises ValueError when some parameter belongs to no module with ``reset_parameters`` (a TorchScript module
    exposes none), rather than silently leaving trained weights in place."""
    device = next(model.parameters()).device
    reset_ids = set()
    with seeded(seed, device), torch.no_grad():
        for module in model.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
                reset_ids.update(id(p) for p in module.parameters(recurse=False))
    missed = [name for name, p in model.named_parameters() if id(p) not in reset_ids]
    if missed:
        raise ValueError(f"cannot reinitialise {type(model).__name__}: no reset_parameters() for "
                         f"{', '.join(missed[:3])}{' …' if len(missed) > 3 else ''}")
    return model.eval()


__all__ = ["DEMO_BATCH", "DEMO_EPOCHS", "DEMO_LR", "DEMO_WEIGHT_DECAY", "OPTIMIZERS", "reinitialise", "seeded",
           "train_masked", "trainable_copy"]
