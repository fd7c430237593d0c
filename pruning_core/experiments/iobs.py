"""The Iterative Optimal Brain Surgeon's experiments (Wu, Modoranu, Safaryan, Kuznedelev, Alistarh, NeurIPS 2024,
arXiv 2408.17163), as methods.md §10 (the camera-ready text) describes them.

``synthetic_recovery``: Algorithm 1 on sparse linear regression (§4.1). d = 128, k* = 16 (random support, N(0, 1)
values), n = 256, X with i.i.d. N(0, 1/n) entries (rows of variance 1/n), y = X theta* (+ noise in our noisy
variant), f(theta) = ||y - X theta||^2 (a sum: g = 2 X^T (X theta - y), H = 2 X^T X, so the Newton step is exact),
k = 64, theta_0 = 0, 750 steps, 20 runs. Compared: Topk-I-OBS (Option 1: T_k of the full Newton point), Option 2
(the exact OBS correction on the support of the d - k smallest OBS errors) and k-IHT with eta = 1 / lambda_max(H).
Noiseless and overdetermined, the Newton point is theta* itself, so both I-OBS options recover theta* in one step;
the noisy variant (``noise`` > 0, labelled "ours") is not the paper's setting. About 12 s per variant with the
defaults on one thread of the shared 2-core machine under load (1 s for 5 runs of 200 steps).

``iobs_rounds``: the DNN variant (§4.2, App. A.1): round 1 is one-shot SparseGPT (layer-wise, sequential,
``methods.obs.sequential_projection``) on a calibration batch; every later round takes a few gradient steps on a
fresh calibration batch from the training split (``experiments.training.train_masked``, the one training loop,
full-batch SGD on the batch; dense by default, so the weights may leave the support, as I-OBS's descent step
theta - eta g does, then the OBS solve projects them back onto a new support) and re-projects with SparseGPT on
that batch. Held-out accuracy per round; the best round is chosen on it (the paper's "star = best validation").
About 0.2-0.6 s per round on the demo models (one thread).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..algorithms.obs import iobs_step_obs, iobs_step_topk, kiht_step
from ..methods.obs import sequential_projection
from ..workbench import Workbench
from . import Progress, ShouldStop
from .training import train_masked, trainable_copy

SYNTHETIC = {"d": 128, "k_star": 16, "n": 256, "k": 64, "steps": 750, "runs": 20}
NOISE = 0.05  # our noisy variant: y = X theta* + 0.05 eps (signal entries have standard deviation 0.25)
SYNTHETIC_METHODS = ("topk-iobs", "obs-iobs", "kiht")
SYNTHETIC_LABELS = {"topk-iobs": "Topk-I-OBS (Option 1)", "obs-iobs": "I-OBS, OBS correction (Option 2)",
                    "kiht": "k-IHT (eta = 1/lambda_max)"}


def synthetic_problem(d: int, k_star: int, n: int, runs: int, noise: float, seed: int
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(theta* (runs, d), X (runs, n, d), y (runs, n)), float64, from a seeded generator."""
    g = torch.Generator().manual_seed(seed)
    theta = torch.zeros(runs, d, dtype=torch.float64)
    for r in range(runs):
        support = torch.randperm(d, generator=g)[:k_star]
        theta[r, support] = torch.randn(k_star, generator=g, dtype=torch.float64)
    x = torch.randn(runs, n, d, generator=g, dtype=torch.float64) / np.sqrt(n)
    y = (x @ theta.unsqueeze(-1)).squeeze(-1) + noise * torch.randn(runs, n, generator=g, dtype=torch.float64)
    return theta, x, y


def synthetic_recovery(d: int = 128, k_star: int = 16, n: int = 256, k: int = 64, steps: int = 750, runs: int = 20,
                       noise: float = 0.0, seed: int = 0, should_stop: ShouldStop = None) -> pd.DataFrame:
    """Algorithm 1 against k-IHT on ``runs`` seeded problems. One row per (method, step): ``distance``
    ||theta_t - theta*|| and ``loss`` ||y - X theta_t||^2 (mean over runs, with the 10% and 90% quantiles as
    ``*_q10`` / ``*_q90``), ``noise``. Step 0 is theta_0 = 0."""
    if not 0 < k_star <= k <= d or n < 1 or steps < 1 or runs < 1:
        raise ValueError(f"need 0 < k* <= k <= d, n, steps, runs >= 1; got k*={k_star}, k={k}, d={d}, n={n}")
    theta_star, x, y = synthetic_problem(d, k_star, n, runs, noise, seed)

    methods = len(SYNTHETIC_METHODS)
    # all three methods advance together, stacked as (methods * runs) problems, so each step is one batched
    # gradient and one batched loss for all of them; products as row vector @ contiguous matrix (the fast form)
    xt = x.transpose(1, 2).contiguous()
    gram, xty = xt @ x, (xt @ y.unsqueeze(-1)).squeeze(-1)
    # H = 2 X^T X, the Hessian of the sum-of-squares loss; inverted by Cholesky (batched LU fails in torch 2.13's MKL)
    hinv = torch.cholesky_inverse(torch.linalg.cholesky(2.0 * gram))
    eta = 1.0 / torch.linalg.eigvalsh(2.0 * gram)[:, -1:]
    xt_all, gram_all = xt.repeat(methods, 1, 1), gram.repeat(methods, 1, 1)
    xty_all, y_all, star_all = xty.repeat(methods, 1), y.repeat(methods, 1), theta_star.repeat(methods, 1)
    theta = torch.zeros(methods * runs, d, dtype=torch.float64)
    dist = torch.empty(steps + 1, methods * runs, dtype=torch.float64)
    loss = torch.empty(steps + 1, methods * runs, dtype=torch.float64)
    done = steps + 1
    for t in range(steps + 1):
        if t:
            grad = 2.0 * ((theta.unsqueeze(1) @ gram_all).squeeze(1) - xty_all)  # gram is symmetric
            parts, grads = theta.split(runs), grad.split(runs)
            theta = torch.cat([iobs_step_topk(parts[0], grads[0], hinv, k), iobs_step_obs(parts[1], grads[1], hinv, k),
                               kiht_step(parts[2], grads[2], k, eta)])
        dist[t] = (theta - star_all).norm(dim=1)
        loss[t] = (y_all - (theta.unsqueeze(1) @ xt_all).squeeze(1)).pow(2).sum(1)
        if should_stop is not None and t % 50 == 0 and should_stop():
            done = t + 1
            break
    frames = []
    for i, method in enumerate(SYNTHETIC_METHODS):
        frame = {"method": method, "noise": noise, "step": np.arange(done)}
        for name, values in (("distance", dist[:done, i * runs:(i + 1) * runs]),
                             ("loss", loss[:done, i * runs:(i + 1) * runs])):
            frame[name] = values.mean(1).numpy()
            frame[f"{name}_q10"] = torch.quantile(values, 0.1, dim=1).numpy()
            frame[f"{name}_q90"] = torch.quantile(values, 0.9, dim=1).numpy()
        frames.append(pd.DataFrame(frame))
    return pd.concat(frames, ignore_index=True)


def iobs_rounds(wb: Workbench, ratio: float = 0.5, pattern: str = "unstructured", rounds: int = 5,
                calib_size: int = 256, steps: int = 5, lr: float = 0.01, keep_mask: bool = False, seed: int = 0,
                progress: Progress = None, should_stop: ShouldStop = None) -> pd.DataFrame:
    """I-OBS(t) for t = 1..``rounds`` on ``wb``'s model (a copy; the workbench is untouched).

    Round 1: SparseGPT (sequential, uniform ``ratio`` per layer, or N:4 with ``pattern="n:m"``; 2:4 at ratio
    0.5) on the first calibration batch. Round t > 1: ``steps`` full-batch SGD steps (``train_masked``, lr ``lr``
    (the paper's DeiT "learning rate 0.01"), Nesterov momentum 0.9, no weight decay; BatchNorm statistics follow
    the batch, as in any fine-tuning) on a fresh batch of ``calib_size`` samples of the training split, then
    SparseGPT on that batch. ``keep_mask=True`` keeps the previous support during the steps (then the projection
    keeps that support: the rounds become plain masked fine-tuning). Batches are disjoint while the split lasts.

    One row per round: ``round``, ``held_out_accuracy`` (the evaluation split), ``calibration_accuracy`` and
    ``calibration_loss`` (the round's batch, after the projection), ``seen_accuracy`` (every batch seen so far),
    ``relative_error`` (mean over layers of ||W X - W' X||^2 / ||W X||^2), ``sparsity``, ``pattern``, ``ratio``
    and ``best`` (the round with the highest held-out accuracy, the first of ties)."""
    if rounds < 1 or calib_size < 1 or steps < 0:
        raise ValueError(f"need rounds >= 1, calib_size >= 1 and steps >= 0; got {rounds}, {calib_size}, {steps}")
    train = wb.data.train
    if len(train) == 0:
        raise ValueError("I-OBS rounds draw calibration batches from the training split, which is empty")
    wb.restore()
    model = trainable_copy(wb.model)
    names = [n for n, p in model.named_parameters() if p.ndim >= 2]
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    rows, masks, seen = [], None, []
    for t in range(1, rounds + 1):
        if should_stop is not None and should_stop():
            break
        start = ((t - 1) * calib_size) % len(train)
        idx = order[start:start + calib_size] if start + calib_size <= len(train) else order[:calib_size]
        x, y = train.x[idx].to(wb.device), train.y[idx].to(wb.device)
        seen.append((x, y))
        if t > 1 and steps > 0:
            train_masked(model, masks if keep_mask else None, x, y, epochs=steps, lr=lr, batch_size=len(y),
                         seed=seed + t, weight_decay=0.0, optimizer="sgd")
        masks, _, details = sequential_projection(model, names, x, ratio, pattern, batch_size=wb.batch_size)
        model.eval()
        with torch.no_grad():
            held = float((model(wb.eval_x).argmax(1) == wb.eval_y).float().mean())
            logits = model(x)
            calib = float((logits.argmax(1) == y).float().mean())
            calib_loss = float(torch.nn.functional.cross_entropy(logits, y))
            seen_acc = float(np.mean([float((model(sx).argmax(1) == sy).float().mean()) for sx, sy in seen]))
        errors = details["relative_error"]
        kept = sum(int(m.count_nonzero()) for m in masks.values())
        rows.append({"pattern": details["pattern"] if pattern == "n:m" else "unstructured", "ratio": ratio,
                     "round": t, "held_out_accuracy": held, "calibration_accuracy": calib,
                     "calibration_loss": calib_loss, "seen_accuracy": seen_acc,
                     "relative_error": float(np.mean(list(errors.values()))) if errors else 0.0,
                     "sparsity": 1.0 - kept / sum(m.numel() for m in masks.values())})
        if progress is not None:
            progress(t / rounds, f"I-OBS round {t}: held-out accuracy {held:.1%}")
    frame = pd.DataFrame(rows)
    if len(frame):
        frame["best"] = False
        frame.loc[frame.held_out_accuracy.idxmax(), "best"] = True
    return frame


__all__ = ["NOISE", "SYNTHETIC", "SYNTHETIC_LABELS", "SYNTHETIC_METHODS", "iobs_rounds", "synthetic_problem",
           "synthetic_recovery"]
