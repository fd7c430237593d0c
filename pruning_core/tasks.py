"""What a model is asked to do, and what "still works after pruning" means for it.

Three tasks, chosen from the model and the data (``infer_task``) or named by the caller:

* ``classification``: class scores (N, C) and labelled data. Accuracy and cross-entropy against the labels, and
  top-1 agreement with the dense model.
* ``unlabelled``: class scores (N, C) and data without labels (every label -1): what a person with a pretrained
  model and no labelled validation set can measure, all against the dense model's outputs on the same inputs:
  top-1 agreement, top-5 overlap (the mean fraction of the dense top-5 classes that are in the pruned top-5)
  and KL(dense || pruned) of the softmax distributions, in nats, averaged over samples.
* ``embedding``: sentence (or image) embeddings (N, D): the cosine similarity of each pruned embedding to its
  dense one, averaged; nearest-neighbour agreement on the evaluation set used as a retrieval set (for each
  item, is its nearest other item by cosine the same under the pruned and the dense embeddings?).

Every evaluation reports the three legacy columns ``accuracy``, ``loss`` and ``agreement`` (NaN where a task has
no such figure; ``agreement`` is the task's own agreement with the dense model: top-1 for class scores, the
nearest neighbour for embeddings) plus the task's own metrics; ``Task.primary`` is the one figure curves and
"best method" read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

TASKS = ("classification", "unlabelled", "embedding")


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    percent: bool = True
    higher_is_better: bool = True


ACCURACY = Metric("accuracy", "accuracy")
LOSS = Metric("loss", "cross-entropy loss", percent=False, higher_is_better=False)
AGREEMENT = Metric("agreement", "top-1 agreement with the dense model")
TOP5 = Metric("top5_overlap", "top-5 overlap with the dense model")
KL = Metric("kl", "KL divergence from the dense outputs (nats)", percent=False, higher_is_better=False)
COSINE = Metric("cosine", "cosine similarity to the dense embeddings")
NEIGHBOURS = Metric("agreement", "nearest-neighbour agreement with the dense embeddings")


@dataclass(frozen=True)
class Task:
    kind: str
    metrics: tuple[Metric, ...]
    primary: str
    description: str

    @property
    def extra(self) -> tuple[str, ...]:
        """The task's metric columns beyond accuracy, loss and agreement."""
        return tuple(m.key for m in self.metrics if m.key not in ("accuracy", "loss", "agreement"))

    def metric(self, key: str) -> Metric:
        return next(m for m in self.metrics if m.key == key)

    @property
    def labelled(self) -> bool:
        return self.kind == "classification"


CLASSIFICATION = Task("classification", (ACCURACY, LOSS, AGREEMENT), "accuracy",
                      "classification with labels: accuracy and loss against the labels")
UNLABELLED = Task("unlabelled", (AGREEMENT, TOP5, KL), "agreement",
                  "classification without labels: agreement with the dense model's outputs")
EMBEDDING = Task("embedding", (COSINE, NEIGHBOURS), "cosine",
                 "embeddings: similarity to the dense model's embeddings and nearest-neighbour agreement")
BY_KIND = {t.kind: t for t in (CLASSIFICATION, UNLABELLED, EMBEDDING)}
TITLES = {m.key: m.label for t in BY_KIND.values() for m in t.metrics} | {
    "agreement": "agreement with the dense model (top-1, or nearest neighbour for embeddings)"}


def is_labelled(y: torch.Tensor) -> bool:
    """Labels are present when every label is a class index (>= 0); unlabelled splits hold -1."""
    return y.numel() > 0 and bool((y >= 0).all())


def infer_task(model: nn.Module, y: torch.Tensor, requested: str | None = None) -> Task:
    """``requested`` (a kind) if given; else the model's own ``explorer_task`` attribute (an embedding model
    declares itself); else classification when the data has labels, unlabelled classification when not."""
    kind = requested or getattr(model, "explorer_task", None)
    if kind is None:
        kind = "classification" if is_labelled(y) else "unlabelled"
    if kind not in BY_KIND:
        raise ValueError(f"unknown task {kind!r}; tasks: {', '.join(TASKS)}")
    return BY_KIND[kind]


def score(task: Task, outputs: torch.Tensor, y: torch.Tensor, dense: torch.Tensor | None) -> dict[str, float]:
    """Every metric of ``task`` for ``outputs`` (N, C or D) against labels ``y`` and the dense outputs ``dense``
    (None: the dense model itself, whose agreement is 1 and divergence 0), plus accuracy, loss and agreement (NaN
    where the task has none). Computed in float32 on the outputs' device."""
    out = outputs.float()
    nan = float("nan")
    if task.kind == "embedding":
        if dense is None:
            return {"accuracy": nan, "loss": nan, "agreement": 1.0, "cosine": 1.0}
        d = dense.float()
        cos = nn.functional.cosine_similarity(out, d, dim=1).mean().item()
        return {"accuracy": nan, "loss": nan, "agreement": neighbour_agreement(out, d), "cosine": cos}
    pred = out.argmax(1)
    result = {"accuracy": nan, "loss": nan}
    if task.kind == "classification":
        result["accuracy"] = (pred == y).float().mean().item()
        result["loss"] = nn.functional.cross_entropy(out, y).item()
    if dense is None:
        result["agreement"] = 1.0
        if task.kind == "unlabelled":
            result.update(top5_overlap=1.0, kl=0.0)
        return result
    d = dense.float()
    result["agreement"] = (pred == d.argmax(1)).float().mean().item()
    if task.kind == "unlabelled":
        result["top5_overlap"] = top_k_overlap(out, d, 5)
        result["kl"] = kl_divergence(d, out)
    return result


def top_k_overlap(outputs: torch.Tensor, dense: torch.Tensor, k: int = 5) -> float:
    """Mean over samples of |top-k(dense) ∩ top-k(outputs)| / k (k capped at the number of classes)."""
    k = min(k, outputs.shape[1])
    a = outputs.topk(k, dim=1).indices
    b = dense.topk(k, dim=1).indices
    hits = (a.unsqueeze(2) == b.unsqueeze(1)).any(2).float().sum(1)
    return (hits / k).mean().item()


def kl_divergence(dense: torch.Tensor, outputs: torch.Tensor) -> float:
    """Mean over samples of KL(softmax(dense) || softmax(outputs)) in nats."""
    log_p = torch.log_softmax(dense.float(), dim=1)
    log_q = torch.log_softmax(outputs.float(), dim=1)
    value = (log_p.exp() * (log_p - log_q)).sum(1).mean().item()
    return max(value, 0.0) if math.isfinite(value) else value


def neighbour_agreement(outputs: torch.Tensor, dense: torch.Tensor, chunk: int = 1024) -> float:
    """For each row, its nearest other row by cosine similarity (itself excluded), under ``outputs`` and under
    ``dense``: the fraction of rows where the two agree. Computed in chunks (N x chunk similarities at a time)."""
    n = len(outputs)
    if n < 2:
        return 1.0
    a = nn.functional.normalize(outputs.float(), dim=1)
    b = nn.functional.normalize(dense.float(), dim=1)
    same = 0
    for i in range(0, n, chunk):
        rows = torch.arange(i, min(i + chunk, n), device=a.device)
        sa, sb = a[rows] @ a.T, b[rows] @ b.T
        sa[torch.arange(len(rows)), rows] = -float("inf")
        sb[torch.arange(len(rows)), rows] = -float("inf")
        same += int((sa.argmax(1) == sb.argmax(1)).sum())
    return same / n


__all__ = ["BY_KIND", "CLASSIFICATION", "EMBEDDING", "TASKS", "TITLES", "UNLABELLED", "Metric", "Task",
           "infer_task", "is_labelled", "kl_divergence", "neighbour_agreement", "score", "top_k_overlap"]
