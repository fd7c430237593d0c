"""Plotly figures for interpolative-decomposition pruning (Chee et al. 2021), drawn from the frames of
``checks.id.paper_check`` (``accuracy``, ``rank_decay``) or ``methods.id.InterpolativePruning.rank_profile()``:

* accuracy without fine-tuning against kept channels, for ID with the correction T, the same selection without T
  and group-L1 magnitude on the same units (the digest's §8 plot (a));
* the decay of |R_kk / R_11| (and optionally σ_k / σ_1) per unit on a log axis (the code's ``accVsErr.ipynb``).

No function here computes a metric; legends name methods by their registry specs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from .style import method_color, method_label, styled

X_TITLES = {"kept_fraction": "unit channels kept (fraction)", "kept_channels": "unit channels kept",
            "flops_fraction": "FLOPs kept (fraction of dense)"}
LOG_FLOOR = 1e-16  # a zero pivot (a dead channel) is drawn here on the log axis; hover shows the true value


def id_accuracy_curves(accuracy: pd.DataFrame, x: str = "kept_fraction", dense_accuracy: float | None = None
                       ) -> go.Figure:
    """One line per method of accuracy (no fine-tuning) against ``x`` (``kept_fraction``, ``kept_channels`` or
    ``flops_fraction``), from the long ``accuracy`` frame (method, ratio, kept_channels, kept_fraction, accuracy,
    flops_fraction)."""
    if x not in X_TITLES:
        raise ValueError(f"x must be one of {', '.join(X_TITLES)}, got {x!r}")
    fig = go.Figure()
    for method, rows in accuracy.groupby("method", sort=False):
        rows = rows.sort_values(x)
        fig.add_trace(go.Scatter(
            x=rows[x], y=rows["accuracy"], mode="lines+markers", name=method_label(method, short=True),
            line=dict(color=method_color(method), dash="dot" if method == "id-nocorrection" else "solid"),
            customdata=np.stack([rows["kept_channels"], rows["ratio"]], axis=1),
            hovertemplate="%{y:.1%} accuracy<br>%{customdata[0]} channels kept "
                          "(ratio %{customdata[1]:.0%} removed)<extra>%{fullData.name}</extra>"))
    if dense_accuracy is not None:
        fig.add_hline(y=dense_accuracy, line=dict(color="grey", dash="dash", width=1),
                      annotation_text="dense", annotation_position="bottom right")
    fig.update_xaxes(title=X_TITLES[x], tickformat=".0%" if x != "kept_channels" else None)
    fig.update_yaxes(title="accuracy without fine-tuning", tickformat=".0%")
    return styled(fig, "Accuracy against kept channels (no fine-tuning)")


def rank_decay_curves(rank_decay: pd.DataFrame, value: str = "diag_ratio") -> go.Figure:
    """Per unit, ``value`` against k on a log y axis: ``diag_ratio`` = |R_kk / R_11| (pivoted-QR diagonal) or
    ``sigma_ratio`` = σ_k / σ_1. k runs over each unit's channels, so units of different widths share the axis."""
    titles = {"diag_ratio": "|R_kk / R_11|", "sigma_ratio": "σ_k / σ_1"}
    if value not in titles or value not in rank_decay:
        raise ValueError(f"value must be one of {', '.join(c for c in titles if c in rank_decay)}, got {value!r}")
    fig = go.Figure()
    for unit, rows in rank_decay.groupby("unit", sort=False):
        shown = np.maximum(rows[value].to_numpy(dtype=float), LOG_FLOOR)
        fig.add_trace(go.Scatter(x=rows["k"], y=shown, mode="lines+markers", name=unit, marker=dict(size=4),
                                 customdata=rows[value], hovertemplate=f"k = %{{x}}<br>{titles[value]} = "
                                 "%{customdata:.3g}<extra>%{fullData.name}</extra>"))
    fig.update_xaxes(title="k (channels kept, in pivot order)")
    fig.update_yaxes(title=titles[value], type="log", exponentformat="power")
    return styled(fig, f"Decay of {titles[value]} per unit")
