"""Plotly figures for the Iterative Optimal Brain Surgeon (Wu et al., NeurIPS 2024), drawn from the frames of
``checks.iobs.paper_check`` (``synthetic``, ``rounds``, ``accuracy``):

* distance to the planted weights and loss against the step, log y, for Topk-I-OBS, the OBS correction and k-IHT
  (the paper's §4.1 figure), the noisy variant (ours) dashed;
* held-out accuracy per I-OBS round, the best round starred (the paper's "star = best validation"), calibration
  accuracy dotted;
* accuracy without fine-tuning against sparsity for OBS and magnitude.

No function here computes a metric.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ..experiments.iobs import SYNTHETIC_LABELS
from .style import PALETTE, method_color, method_label, styled

LOG_FLOOR = 1e-30  # an exact zero (a recovered problem's loss) is drawn here on the log axis
TITLES = {"distance": "||theta_t - theta*|| (mean over runs, log)", "loss": "||y - X theta_t||^2 (mean over runs, log)"}


def synthetic_curves(frame: pd.DataFrame, value: str = "distance") -> go.Figure:
    """``value`` ("distance" or "loss") against the step, one line per method (mean over runs, the 10-90% band
    shaded), log y; rows with noise > 0 (our variant) dashed."""
    if value not in TITLES:
        raise ValueError(f"value must be 'distance' or 'loss', got {value!r}")
    fig = go.Figure()
    colors = {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(SYNTHETIC_LABELS)}
    for (noise, method), df in frame.groupby(["noise", "method"], sort=False):
        df = df.sort_values("step")
        label = SYNTHETIC_LABELS.get(method, method) + (f", noisy sigma={noise:g} (ours)" if noise > 0 else "")
        color = colors.get(method, PALETTE[0])
        group = f"{method}-{noise}"
        fig.add_trace(go.Scatter(x=np.concatenate([df.step, df.step[::-1]]),
                                 y=np.maximum(np.concatenate([df[f"{value}_q90"], df[f"{value}_q10"][::-1]]),
                                              LOG_FLOOR),
                                 fill="toself", fillcolor=color, opacity=0.12, line=dict(width=0),
                                 hoverinfo="skip", showlegend=False, legendgroup=group))
        fig.add_trace(go.Scatter(x=df.step, y=np.maximum(df[value].to_numpy(), LOG_FLOOR), mode="lines", name=label,
                                 legendgroup=group, line=dict(color=color, dash="dash" if noise > 0 else "solid"),
                                 customdata=df[value], hovertemplate="step %{x}<br>%{customdata:.3g}"
                                 "<extra>%{fullData.name}</extra>"))
    fig.update_yaxes(type="log", title_text=TITLES[value])
    fig.update_xaxes(title_text="step t")
    return styled(fig, f"Sparse regression: {value} against the step (band: 10-90% of runs)")


def rounds_accuracy(rounds: pd.DataFrame) -> go.Figure:
    """Held-out accuracy per round, one line per pattern, the best round starred; calibration accuracy dotted."""
    fig = go.Figure()
    for i, ((pattern, ratio), df) in enumerate(rounds.groupby(["pattern", "ratio"], sort=False)):
        df = df.sort_values("round")
        color = PALETTE[i % len(PALETTE)]
        name = f"{pattern}" if ":" in str(pattern) else f"unstructured {ratio:.0%}"
        fig.add_trace(go.Scatter(x=df["round"], y=df.held_out_accuracy, mode="lines+markers", name=f"{name}, held-out",
                                 line=dict(color=color), hovertemplate="round %{x}: %{y:.1%}<extra>%{fullData.name}"
                                 "</extra>"))
        fig.add_trace(go.Scatter(x=df["round"], y=df.calibration_accuracy, mode="lines", name=f"{name}, calibration "
                                 "batch", line=dict(color=color, dash="dot"),
                                 hovertemplate="round %{x}: %{y:.1%}<extra>%{fullData.name}</extra>"))
        best = df[df.best]
        fig.add_trace(go.Scatter(x=best["round"], y=best.held_out_accuracy, mode="markers", showlegend=False,
                                 marker=dict(symbol="star", size=16, color=color, line=dict(color="black", width=1)),
                                 hovertemplate="best round %{x}: %{y:.1%}<extra></extra>"))
    fig.update_yaxes(title_text="accuracy", tickformat=".0%")
    fig.update_xaxes(title_text="I-OBS round (1 = one-shot SparseGPT)", dtick=1)
    return styled(fig, "I-OBS rounds: accuracy per round (star: best held-out)")


def accuracy_by_sparsity(accuracy: pd.DataFrame, dense_accuracy: float | None = None) -> go.Figure:
    """Accuracy without fine-tuning against the realised sparsity, one line per method (registry colours and
    labels); the dense accuracy as a dotted line."""
    fig = go.Figure()
    for method, df in accuracy.groupby("method", sort=False):
        df = df.sort_values("sparsity")
        fig.add_trace(go.Scatter(x=df.sparsity, y=df.accuracy, mode="lines+markers",
                                 name=method_label(str(method), short=True),
                                 line=dict(color=method_color(str(method)),
                                           dash="solid" if str(method).startswith("obs") else "dot"),
                                 hovertemplate="%{x:.0%} removed: %{y:.1%}<extra>%{fullData.name}</extra>"))
    if dense_accuracy is not None:
        fig.add_hline(y=dense_accuracy, line=dict(color="grey", dash="dot"), annotation_text="dense")
    fig.update_yaxes(title_text="accuracy, no fine-tuning", tickformat=".0%")
    fig.update_xaxes(title_text="sparsity of the prunable weights (fraction removed)", tickformat=".0%")
    return styled(fig, "OBS projection against magnitude, without fine-tuning")


__all__ = ["accuracy_by_sparsity", "rounds_accuracy", "synthetic_curves"]
