"""The sensitivity analysis's figures: a groups x ratios heatmap of a metric (cells appear as they are measured)
and metric-against-ratio curves for chosen groups. Both read the rows of ``pruning_core.sensitivity`` (columns
``group``, ``ratio`` and the metric) and nothing else."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from .style import PALETTE, styled

METRIC_TITLES = {"drop": "drop of the headline metric (points lost)",
                 "accuracy_drop": "accuracy drop (points of accuracy lost)", "accuracy": "accuracy",
                 "cosine": "cosine similarity to the dense embeddings",
                 "loss_increase": "loss increase", "loss": "cross-entropy loss",
                 "agreement": "top-1 agreement with the dense model"}
PERCENT_METRICS = {"drop", "accuracy_drop", "accuracy", "agreement", "cosine"}


def sensitivity_heatmap(rows: pd.DataFrame, groups: list[str], ratios: list[float], metric: str = "accuracy_drop",
                        title: str = "") -> go.Figure:
    """Rows = ``groups`` (in that order), columns = ``ratios``; a cell not measured yet is blank. Accuracy drops
    are drawn in percentage points on a white-to-red scale (0 = harmless); other metrics on their own range."""
    z = np.full((len(groups), len(ratios)), np.nan)
    gi = {g: i for i, g in enumerate(groups)}
    ri = {round(float(r), 6): j for j, r in enumerate(ratios)}
    for g, r, v in zip(rows.get("group", []), rows.get("ratio", []), rows.get(metric, []), strict=True):
        i, j = gi.get(g), ri.get(round(float(r), 6))
        if i is not None and j is not None:
            z[i, j] = float(v)
    scale = 100.0 if metric in PERCENT_METRICS else 1.0
    shown = z * scale
    unit = " pp" if metric in ("drop", "accuracy_drop") else "%" if metric in PERCENT_METRICS else ""
    text = np.where(np.isnan(shown), "", np.vectorize(lambda v: f"{v:.1f}")(np.nan_to_num(shown)))
    drop_like = metric in ("drop", "accuracy_drop", "loss_increase")
    finite = shown[np.isfinite(shown)]
    top = float(finite.max()) if finite.size else 1.0
    fig = go.Figure(go.Heatmap(
        z=shown, x=[f"{r:.2f}" for r in ratios], y=groups, text=text, texttemplate="%{text}",
        colorscale="Reds" if drop_like else "Viridis", zmin=0 if drop_like else None,
        zmax=max(top, 1e-9) if drop_like else None, hoverongaps=False,
        colorbar=dict(title=METRIC_TITLES.get(metric, metric).split(" (")[0]),
        hovertemplate="%{y} at ratio %{x}: %{z:.2f}" + unit + "<extra></extra>"))
    fig.update_yaxes(autorange="reversed", type="category", title=None)
    fig.update_xaxes(type="category", title="ratio of the group's channels removed (the group alone)")
    return styled(fig, title or f"Sensitivity: {METRIC_TITLES.get(metric, metric)}",
                  height=max(280, 90 + 30 * len(groups)))


def sensitivity_curves(rows: pd.DataFrame, groups: list[str], metric: str = "accuracy",
                       dense_value: float | None = None, title: str = "") -> go.Figure:
    """One line per group of ``metric`` against the ratio (ratio 0 = dense, drawn when ``dense_value`` is
    given), in the heatmap's group order."""
    fig = go.Figure()
    scale = 100.0 if metric in PERCENT_METRICS else 1.0
    for i, g in enumerate(groups):
        part = rows[rows["group"] == g].sort_values("ratio")
        x, y = part["ratio"].to_list(), (part[metric] * scale).to_list()
        if dense_value is not None and metric in ("accuracy", "loss", "agreement", "cosine"):
            x, y = [0.0, *x], [dense_value * scale, *y]
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=g, line=dict(color=PALETTE[i % len(PALETTE)]),
                                 hovertemplate=g + ": ratio %{x:.2f} -> %{y:.2f}<extra></extra>"))
    fig.update_xaxes(title="ratio of the group's channels removed (the group alone)", range=[-0.02, 1.0])
    fig.update_yaxes(title=METRIC_TITLES.get(metric, metric) + (" (%)" if metric in ("accuracy", "agreement",
                                                                                     "cosine") else ""))
    return styled(fig, title or f"{METRIC_TITLES.get(metric, metric).capitalize()} when one group is pruned",
                  height=400)


__all__ = ["METRIC_TITLES", "sensitivity_curves", "sensitivity_heatmap"]
