"""The Sparsity screen's figures: the PQ Index and SAP (Diao et al., ICLR 2023), also drawn by the SAP paper check.

Every function takes plain frames (``algorithms.pq_index.pqi_table``, ``experiments.sap.SAPRun`` records,
``experiments.pqi_curve.pqi_magnitude_curve``) and computes nothing itself. A run keeps one colour on every panel.
"""

from __future__ import annotations

import zlib

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .style import PALETTE, styled

RUN_COLORS = {"SAP(0.5,1)": PALETTE[0], "SAP(1,2)": PALETTE[1], "one-shot 20%": PALETTE[2],
              "lottery 20%": PALETTE[3]}
SERIES_COLORS = (PALETTE[7], PALETTE[0], PALETTE[4], PALETTE[5])


def run_color(run: str) -> str:
    """A stable colour per run name (the paper's four runs fixed, others from a hash of the name)."""
    return RUN_COLORS.get(run, PALETTE[(4 + zlib.crc32(run.encode())) % len(PALETTE)])


def pqi_layer_bars(tables: dict[str, pd.DataFrame], global_pqi: dict[str, float], p: float, q: float,
                   scope: str = "layer") -> go.Figure:
    """PQI of every weight tensor, one bar group per series (e.g. the dense model and a plan).

    ``tables``: series name -> ``pqi_table`` frame; ``global_pqi``: series name -> global PQI, drawn as a dashed
    line across the chart. ``scope="neuron"`` draws the mean over each layer's rows with whiskers from the
    smallest to the largest row value; otherwise the layer's own PQI."""
    fig = go.Figure()
    neuron = scope == "neuron"
    for i, (series, table) in enumerate(tables.items()):
        color = SERIES_COLORS[i % len(SERIES_COLORS)]
        y = table["pqi_neuron_mean"] if neuron else table["pqi"]
        error = (dict(type="data", symmetric=False, array=table["pqi_neuron_max"] - y,
                      arrayminus=y - table["pqi_neuron_min"], thickness=1) if neuron else None)
        fig.add_bar(x=table["layer"], y=y, name=series, marker_color=color, error_y=error,
                    customdata=table[["kept", "weights", "bound"]].to_numpy(),
                    hovertemplate="%{x}<br>PQI %{y:.4f}<br>kept %{customdata[0]:,} of %{customdata[1]:,}"
                                  "<br>largest possible %{customdata[2]:.3f}<extra>" + series + "</extra>")
        if series in global_pqi:
            fig.add_hline(y=global_pqi[series], line_dash="dash", line_color=color,
                          annotation_text=f"global {series}: {global_pqi[series]:.3f}",
                          annotation_position="top left" if i % 2 == 0 else "bottom right")
    what = "mean over each layer's neurons (whiskers: min to max)" if neuron else "per layer"
    fig.update_layout(barmode="group", yaxis_title=f"PQI (p={p:g}, q={q:g})", xaxis_title="weight tensor")
    return styled(fig, f"PQ Index {what}; dashed: global PQI")


SCOPE_DASH = {"neuron": "dot", "layer": "dash", "global": "solid"}


def sap_panel(frame: pd.DataFrame, dense_accuracy: float | None = None, pqi: str = "pqi_ref",
              scope: str | None = None) -> go.Figure:
    """The paper's SAP panel against the pruning iteration: PQI, test accuracy and remaining weights, one trace
    per run (``frame``: ``SAPRun`` records or the paper check's ``curves``; columns ``run``, ``scope``, ``round``,
    ``pqi_ref``, ``accuracy``, ``pruned_accuracy``, ``remaining``).

    PQI is drawn with p = 0.5, q = 1 for every run (``pqi_ref``), so the runs share a yardstick; ``pqi="pqi"``
    draws each run's own (p, q). ``scope`` keeps one scope. With one scope the accuracy right after pruning
    (before retraining) is dotted beside each run's retrained accuracy; with several scopes (the paper check)
    each run gets one colour and each scope one line style, and only retrained accuracy is drawn."""
    if scope is not None:
        frame = frame[frame["scope"] == scope]
    if pqi not in frame:
        pqi = "pqi"
    several = "scope" in frame and frame["scope"].nunique() > 1
    title = "PQ Index, p=0.5, q=1" if pqi == "pqi_ref" else "PQ Index, each run's p, q"
    fig = make_subplots(rows=1, cols=3, subplot_titles=(f"{title} (retrained model)", "Test accuracy",
                                                        "Remaining weights"), horizontal_spacing=0.07)
    keys = ["run", "scope"] if several else ["run"]
    for key, g in frame.groupby(keys, sort=False):
        run, run_scope = key[0], (key[1] if several else None)  # a list of keys gives tuples
        name = f"{run} ({run_scope})" if several else str(run)
        g = g.sort_values("round")
        color = run_color(str(run))
        line = dict(color=color, dash=SCOPE_DASH.get(run_scope, "solid"))
        common = dict(mode="lines+markers", line=line, legendgroup=name)
        fig.add_scatter(x=g["round"], y=g[pqi], name=name, row=1, col=1, **common,
                        hovertemplate="round %{x}<br>PQI %{y:.4f}<extra>" + name + "</extra>")
        fig.add_scatter(x=g["round"], y=g["accuracy"], name=name, showlegend=False, row=1, col=2, **common,
                        hovertemplate="round %{x}<br>retrained %{y:.2%}<extra>" + name + "</extra>")
        if not several:
            fig.add_scatter(x=g["round"], y=g["pruned_accuracy"], name=f"{name}, right after pruning",
                            showlegend=False, row=1, col=2, mode="lines", line=dict(color=color, dash="dot"),
                            legendgroup=name, hovertemplate="round %{x}<br>pruned, not retrained %{y:.2%}<extra>"
                                                            + name + "</extra>")
        fig.add_scatter(x=g["round"], y=g["remaining"], name=name, showlegend=False, row=1, col=3, **common,
                        hovertemplate="round %{x}<br>%{y:.2%} of the weights remain<extra>" + name + "</extra>")
    if dense_accuracy is not None:
        fig.add_hline(y=dense_accuracy, line_dash="dash", line_color="#888", row=1, col=2)
    fig.update_xaxes(title_text="SAP iteration (round)",
                     dtick=1 if not frame.empty and frame["round"].max() <= 12 else None)
    fig.update_yaxes(tickformat=".0%", row=1, col=2)
    fig.update_yaxes(tickformat=".0%", row=1, col=3, rangemode="tozero")
    what = ("line style = scope (dotted neuron, dashed layer, solid global)" if several
            else "dotted: accuracy right after pruning")
    return styled(fig, f"SAP: PQI, accuracy and remaining weights per round ({what})", height=420)


def pqi_ratio_curves(frame: pd.DataFrame, dense_accuracy: float | None = None) -> go.Figure:
    """PQI of the surviving weights (global, mean per layer, mean per neuron) beside test accuracy, against the
    ratio of one-shot global magnitude pruning (``frame``: ``pqi_magnitude_curve``)."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("PQ Index of the surviving weights", "Test accuracy"),
                        horizontal_spacing=0.08)
    for column, name, color in (("pqi_global", "global", PALETTE[0]), ("pqi_layer", "mean per layer", PALETTE[1]),
                                ("pqi_neuron", "mean per neuron", PALETTE[2])):
        fig.add_scatter(x=frame["ratio"], y=frame[column], name=f"PQI, {name}", mode="lines+markers",
                        line_color=color, row=1, col=1,
                        hovertemplate="ratio %{x:.2f}<br>PQI %{y:.4f}<extra>" + name + "</extra>")
    fig.add_scatter(x=frame["ratio"], y=frame["accuracy"], name="accuracy", mode="lines+markers",
                    line_color=PALETTE[3], row=1, col=2,
                    hovertemplate="ratio %{x:.2f}<br>accuracy %{y:.2%}<extra></extra>")
    if dense_accuracy is not None:
        fig.add_hline(y=dense_accuracy, line_dash="dash", line_color="#888", row=1, col=2)
    fig.update_xaxes(title_text="pruning ratio (fraction removed), global magnitude, no retraining")
    fig.update_yaxes(tickformat=".0%", row=1, col=2)
    return styled(fig, "One-shot global magnitude pruning: PQI beside accuracy", height=380)


__all__ = ["SCOPE_DASH", "pqi_layer_bars", "pqi_ratio_curves", "run_color", "sap_panel"]
