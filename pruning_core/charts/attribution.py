"""Figures for the channel criteria and input attributions: how much the criteria agree (a rank-correlation
heatmap) and what one prediction looked at (the input beside its attribution map)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .style import PALETTE, styled

DIVERGING = "RdBu_r"  # negative blue, zero white, positive red


def rank_correlation_heatmap(df: pd.DataFrame, title: str) -> go.Figure:
    """A criteria x criteria matrix of Spearman's rho (``importance.compare.rank_correlation``) as an annotated
    heatmap on a fixed -1..1 diverging scale (white = unrelated); NaN cells (no group both criteria rank) blank."""
    z = df.to_numpy(dtype=float)
    text = [["" if np.isnan(v) else f"{v:.2f}" for v in row] for row in z]
    fig = go.Figure(go.Heatmap(
        z=z, x=[str(c) for c in df.columns], y=[str(i) for i in df.index], zmin=-1, zmax=1, zmid=0,
        colorscale=DIVERGING, text=text, texttemplate="%{text}", hoverongaps=False,
        colorbar=dict(title="Spearman ρ"), hovertemplate="%{y} vs %{x}: ρ = %{z:.3f}<extra></extra>",
    ))
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(type="category", tickangle=-30)
    return styled(fig, title, height=max(320, 120 + 36 * len(df)))


def _image(sample: np.ndarray) -> np.ndarray:
    """(C, H, W) or (H, W) -> (H, W) for a grey picture: the mean over channels."""
    return sample if sample.ndim == 2 else sample.mean(0)


def input_attribution_figure(sample, attribution, predicted: int, probability: float, label: int) -> go.Figure:
    """The input and its attribution (``importance.attribution.input_attribution``). Image-like samples ((C, H, W)
    or (H, W)): the picture (grey, channel mean) and the attribution map (summed over channels) side by side, on a
    diverging scale centred at 0 and symmetric about it. 1-D samples: one bar per feature."""
    sample = np.asarray(sample, dtype=np.float32)
    attr = np.asarray(attribution, dtype=np.float32)
    verdict = "correct" if predicted == label else "wrong"
    title = f"Predicted {predicted} ({probability:.0%}), label {label}: {verdict}"
    if sample.ndim == 1:
        fig = go.Figure(go.Bar(
            x=list(range(len(attr))), y=attr, customdata=sample, marker_color=np.where(attr >= 0, PALETTE[3],
                                                                                         PALETTE[0]),
            hovertemplate="feature %{x}: attribution %{y:.4f}, input %{customdata:.3f}<extra></extra>",
        ))
        fig.update_xaxes(title="input feature")
        fig.update_yaxes(title="attribution")
        return styled(fig, title)
    if sample.ndim not in (2, 3):
        raise ValueError(f"an attribution map needs a 1-D, (H, W) or (C, H, W) sample, got shape {sample.shape}")
    amap = attr if attr.ndim == 2 else attr.sum(0)
    bound = float(np.abs(amap).max()) or 1.0
    fig = make_subplots(rows=1, cols=2, subplot_titles=("input", "attribution"), horizontal_spacing=0.12)
    fig.add_trace(go.Heatmap(z=_image(sample), colorscale="Greys", showscale=False,
                             hovertemplate="row %{y}, col %{x}: %{z:.3f}<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Heatmap(z=amap, colorscale=DIVERGING, zmin=-bound, zmax=bound, zmid=0,
                             colorbar=dict(title="attribution"),
                             hovertemplate="row %{y}, col %{x}: %{z:.4f}<extra></extra>"), row=1, col=2)
    for col in (1, 2):
        fig.update_yaxes(autorange="reversed", scaleanchor=f"x{col if col > 1 else ''}", constrain="domain",
                         showgrid=False, row=1, col=col)
        fig.update_xaxes(constrain="domain", showgrid=False, row=1, col=col)
    return styled(fig, title, height=360)
