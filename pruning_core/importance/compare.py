"""How much criteria agree: Spearman rank correlation of their channel scores inside each dependency group.

A structured method removes the lowest-scored channels of each group, so two criteria prune alike exactly when
they rank each group's channels alike. ``rank_correlation`` compares them group by group (scipy's
``spearmanr``: the Pearson correlation of the ranks, ties given their average rank) and averages over groups.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr


def _spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman's rho of two (channels,) score vectors; NaN when either is constant (no ranking to compare)."""
    a, b = a.detach().double().cpu().numpy(), b.detach().double().cpu().numpy()
    if len(a) < 2 or np.all(a == a[0]) or np.all(b == b[0]):
        return float("nan")
    return float(spearmanr(a, b).statistic)


def rank_correlation(scores: dict[str, dict[str, torch.Tensor]]
                     ) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """``scores``: criterion key -> group -> (channels,) scores (as ``criteria.channel_scores`` returns).

    Returns (overall, per_group). ``per_group[g]``: criteria x criteria DataFrame of Spearman's rho of the two
    criteria's scores of group g's channels (NaN where a criterion leaves g out or scores it constant).
    ``overall``: for each pair, the mean over the groups both score (and neither scores constant) of rho,
    weighted by the group's channel count; NaN when no such group exists. The diagonal is 1 for every criterion
    that ranks at least one group."""
    keys = list(scores)
    groups = list(dict.fromkeys(g for by_group in scores.values() for g in by_group))
    per_group: dict[str, pd.DataFrame] = {}
    weighted = np.zeros((len(keys), len(keys)))
    weights = np.zeros((len(keys), len(keys)))
    for g in groups:
        rho = np.full((len(keys), len(keys)), np.nan)
        for i, a in enumerate(keys):
            for j in range(i, len(keys)):
                b = keys[j]
                if g not in scores[a] or g not in scores[b]:
                    continue
                if len(scores[a][g]) != len(scores[b][g]):
                    raise ValueError(f"criteria {a!r} and {b!r} score group {g!r} with different channel counts")
                rho[i, j] = rho[j, i] = _spearman(scores[a][g], scores[b][g])
        per_group[g] = pd.DataFrame(rho, index=keys, columns=keys)
        n = len(next(s[g] for s in scores.values() if g in s))
        valid = ~np.isnan(rho)
        weighted[valid] += n * rho[valid]
        weights[valid] += n
    with np.errstate(invalid="ignore", divide="ignore"):
        overall = np.where(weights > 0, weighted / np.where(weights > 0, weights, 1), np.nan)
    return pd.DataFrame(overall, index=keys, columns=keys), per_group
