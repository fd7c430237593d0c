"""Recovery by fine-tuning (``recovery.run_recovery``): the task's headline (accuracy, agreement with the dense
model, cosine to the dense embeddings) each method keeps right after pruning and after fine-tuning, against the
ratio or a cost axis."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from .style import AXIS_TITLES, PERCENT, light_layout, method_color, method_label

STAGE_DASH = {"pruned": "dash", "fine-tuned": "solid"}


def recovery_curves(df: pd.DataFrame, dense_accuracy: float | None = None, x: str = "ratio",
                    metric: str = "accuracy", metric_label: str | None = None, percent: bool = True) -> go.Figure:
    """``metric`` (a column of ``run_recovery``'s rows, by default accuracy; the task's headline on unlabelled data
    or embeddings) against ``x`` (ratio, params_fraction, flops_fraction) for each method in its colour: dashed
    right after pruning, solid after fine-tuning (a stopped fine-tune's point is drawn hollow and says so on hover).
    ``dense_accuracy``, the dense model's value of ``metric``, adds a grey reference line. ``metric_label`` names
    the axis (default: the column's name); ``percent`` formats values as percentages."""
    label_y = metric_label or metric
    fmt = ".2%" if percent else ".4f"
    traces = []
    for (method, stage), rows in df.groupby(["method", "stage"], sort=False):
        rows = rows.sort_values(x)
        stopped = rows["stopped"].to_numpy(dtype=bool)
        label = str(rows["label"].iloc[0]) if "label" in rows else method_label(str(method))
        traces.append({
            "type": "scatter", "mode": "lines+markers", "name": f"{label}: {stage}", "legendgroup": str(method),
            "x": rows[x].to_numpy(dtype=float), "y": rows[metric].to_numpy(dtype=float),
            "line": {"color": method_color(str(method)), "dash": STAGE_DASH.get(str(stage), "solid"), "width": 2},
            "marker": {"size": 8, "symbol": np.where(stopped, "circle-open", "circle")},
            "customdata": np.stack([rows["ratio"].to_numpy(dtype=float), rows["steps"].to_numpy(dtype=float),
                                    np.where(stopped, " (stopped early)", "")], 1),
            "hovertemplate": (f"{label_y} %{{y:{fmt}}} {stage}<br>ratio %{{customdata[0]:.2f}}"
                              "<br>%{customdata[1]:.0f} fine-tuning steps%{customdata[2]}"
                              "<extra>%{fullData.name}</extra>"),
        })
    shapes, annotations = [], []
    if dense_accuracy is not None:
        shapes.append({"type": "line", "xref": "x domain", "x0": 0, "x1": 1, "yref": "y", "y0": dense_accuracy,
                       "y1": dense_accuracy, "line": {"color": "#555", "dash": "dot", "width": 1}})
        annotations.append({"text": f"dense {dense_accuracy:{fmt}}", "showarrow": False, "xref": "x domain", "x": 1,
                            "xanchor": "right", "yref": "y", "y": dense_accuracy, "yanchor": "top"})
    xaxis = {"title": {"text": AXIS_TITLES.get(x, x)}}
    if x in PERCENT:
        xaxis["tickformat"] = ".0%"
    if x in ("params_fraction", "flops_fraction"):
        xaxis["autorange"] = "reversed"  # left to right = more pruning, as on the ratio axis
    yaxis = {"title": {"text": label_y}, **({"tickformat": ".0%"} if percent else {})}
    layout = light_layout(f"{label_y[:1].upper()}{label_y[1:]} before and after fine-tuning", 440,
                          {"l": 75, "r": 20, "t": 50, "b": 120}, xaxis, yaxis, shapes=shapes, annotations=annotations)
    return go.Figure(data=traces, layout=layout)


__all__ = ["STAGE_DASH", "recovery_curves"]
