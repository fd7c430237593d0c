"""How close a pruned sentence encoder's embeddings stay to the dense encoder's, on one set of sentences.

A sentence encoder has no labels to be accurate on; what a user of its embeddings notices is whether the vectors
moved (``embedding_cosine``) and whether search over them still finds the same neighbours (``neighbour_agreement``,
the workbench's embedding-task metric, re-exported from ``tasks``; ``topk_overlap``). All take (N, D) float tensors
of the same sentences, row n of both being sentence n; rows need not be normalised (cosine normalises them).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from ..tasks import neighbour_agreement


def _unit(e: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(e.double(), p=2, dim=1)


def _check(pruned: torch.Tensor, dense: torch.Tensor) -> None:
    if pruned.ndim != 2 or pruned.shape != dense.shape:
        raise ValueError(f"embeddings must be (N, D) of the same shape, got {tuple(pruned.shape)} and "
                         f"{tuple(dense.shape)}")


def embedding_cosine(pruned: torch.Tensor, dense: torch.Tensor) -> float:
    """Mean over sentences n of cos(pruned_n, dense_n) = <p_n, d_n> / (||p_n|| ||d_n||); 1 means unchanged."""
    _check(pruned, dense)
    return float((_unit(pruned) * _unit(dense)).sum(1).mean())


def _similarities(e: torch.Tensor) -> torch.Tensor:
    """(N, N) cosine similarities with the diagonal at -inf (a sentence is never its own neighbour)."""
    u = _unit(e)
    s = u @ u.T
    s.fill_diagonal_(float("-inf"))
    return s


def topk_overlap(pruned: torch.Tensor, dense: torch.Tensor, k: int = 5) -> float:
    """Mean over sentences of |top-k_pruned(n) ∩ top-k_dense(n)| / k, top-k(n) being the k other sentences most
    cosine-similar to sentence n (the retrieval result lists' overlap, order ignored). Needs 1 <= k < N."""
    _check(pruned, dense)
    if not 1 <= k < len(dense):
        raise ValueError(f"k must be between 1 and N - 1 = {len(dense) - 1}, got {k}")
    n = len(dense)
    top_p = _similarities(pruned).topk(k, dim=1).indices
    top_d = _similarities(dense).topk(k, dim=1).indices
    hit_p = torch.zeros(n, n, dtype=torch.bool).scatter_(1, top_p, True)
    hit_d = torch.zeros(n, n, dtype=torch.bool).scatter_(1, top_d, True)
    return float((hit_p & hit_d).sum(1).double().mean() / k)


@dataclass(frozen=True)
class EmbeddingAgreement:
    """The three numbers for one pruned encoder against the dense one, as one sweep row."""

    cosine: float
    neighbour_agreement: float
    topk_overlap: float
    k: int

    def to_dict(self) -> dict:
        return asdict(self)


def embedding_agreement(pruned: torch.Tensor, dense: torch.Tensor, k: int = 5) -> EmbeddingAgreement:
    """``embedding_cosine``, ``neighbour_agreement`` and ``topk_overlap`` (k) of ``pruned`` against ``dense``."""
    return EmbeddingAgreement(embedding_cosine(pruned, dense), neighbour_agreement(pruned, dense),
                              topk_overlap(pruned, dense, k), k)


__all__ = ["EmbeddingAgreement", "embedding_agreement", "embedding_cosine", "neighbour_agreement", "topk_overlap"]
