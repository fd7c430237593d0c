"""What one decision touches (``footprint``): the tensors one channel of a group spans, and the cost of one
channel of every group."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from .style import LEGEND_BELOW, LIGHT_TEMPLATE, light_layout

# roles are not methods: their own colours, away from the method palette's first entries
ROLE_COLORS = {"producer output": "#1b9e77", "residual partner": "#d95f02", "norm": "#7570b3",
               "consumer input": "#66a61e", "depthwise (in = out)": "#e7298a"}
RESIDUAL_COLOR, INNER_COLOR = "#d95f02", "#1b9e77"


def footprint_figure(df: pd.DataFrame, group: str) -> go.Figure:
    """``group_footprint``'s rows as horizontal bars, one per tensor slice (in the group's order, top down):
    entries one channel removes, coloured by role, buffers (running statistics) hatched; hover: dim, entries per
    channel and the note (flatten, concatenation offset, whose norm)."""
    order = [f"{n} (dim {d})" for n, d in zip(df["name"], df["dim"], strict=True)]
    traces = []
    for role, rows in df.groupby("role", sort=False):
        labels = [f"{n} (dim {d})" for n, d in zip(rows["name"], rows["dim"], strict=True)]
        buffer = (rows["kind"] == "buffer").to_numpy()
        traces.append({
            "type": "bar", "orientation": "h", "y": labels, "x": rows["removed_per_channel"].to_numpy(dtype=float),
            "name": str(role), "marker": {"color": ROLE_COLORS.get(str(role), "#888"),
                                          "pattern": {"shape": np.where(buffer, "/", "").tolist()}},
            "customdata": np.stack([rows["module_type"].astype(str), rows["dim"].astype(str),
                                    rows["entries_per_channel"].astype(str), rows["kind"].astype(str),
                                    rows["note"].astype(str)], 1),
            "hovertemplate": ("%{y}<br>%{customdata[0]} %{customdata[3]}, dim %{customdata[1]}"
                              "<br>%{customdata[2]} entries per channel along it<br>%{x:,.0f} removed per channel"
                              "<br>%{customdata[4]}<extra>%{fullData.name}</extra>"),
        })
    params = int(df.loc[df["kind"] == "parameter", "removed_per_channel"].sum()) if len(df) else 0
    left = min(340, 20 + 7 * max((len(label) for label in order), default=4))
    layout = light_layout(
        f"What one channel of {group} spans: {params:,} parameters", max(300, 120 + 24 * len(order)),
        {"l": left, "r": 20, "t": 50, "b": 90}, {"title": {"text": "entries removed per channel"}},
        {"autorange": "reversed", "type": "category", "categoryorder": "array", "categoryarray": order},
        barmode="overlay")
    return go.Figure(data=traces, layout=layout)


def group_cost_bars(costs: pd.DataFrame, selected: str | None = None) -> go.Figure:
    """``group_costs``' rows as two panels of horizontal bars, one bar per group: parameters (left) and FLOPs
    (right) that removing one of its channels saves. Residual streams (several producers) are drawn in their own
    colour and hatched and say so in their label; the ``selected`` group is outlined and the others faded."""
    labels = [f"{g} ⟲" if r else str(g) for g, r in zip(costs["group"], costs["residual"], strict=True)]
    residual = costs["residual"].to_numpy(dtype=bool)
    chosen = (costs["group"] == selected).to_numpy() if selected is not None else np.zeros(len(costs), bool)
    faded = selected is not None and chosen.any()
    marker = {"color": np.where(residual, RESIDUAL_COLOR, INNER_COLOR).tolist(),
              "pattern": {"shape": np.where(residual, "x", "").tolist()},
              "opacity": np.where(chosen | (not faded), 1.0, 0.4).tolist(),
              "line": {"color": "#222", "width": np.where(chosen, 2.5, 0).tolist()}}
    custom = np.stack([costs["channels"].astype(str), costs["producers"].astype(str),
                       costs["consumers"].astype(str), costs["layers"].astype(str)], 1)
    hover = ("%{y}: %{customdata[0]} channels, %{customdata[1]} producers (%{customdata[3]}), "
             "%{customdata[2]} consumers<br>")
    traces = [
        {"type": "bar", "orientation": "h", "y": labels, "x": costs["params_per_channel"].to_numpy(dtype=float),
         "xaxis": "x", "yaxis": "y", "marker": marker, "customdata": custom, "showlegend": False,
         "hovertemplate": hover + "%{x:,.0f} parameters per channel<extra></extra>"},
        {"type": "bar", "orientation": "h", "y": labels, "x": costs["flops_per_channel"].to_numpy(dtype=float),
         "xaxis": "x2", "yaxis": "y2", "marker": marker, "customdata": custom, "showlegend": False,
         "hovertemplate": hover + "%{x:,.0f} FLOPs per channel<extra></extra>"},
    ]
    left = min(320, 30 + 7 * max((len(label) for label in labels), default=4))
    yaxis = {"autorange": "reversed", "type": "category", "automargin": False}
    title = "Cost of one channel per group (⟲ residual stream: several producers)"
    return go.Figure(data=traces, layout={
        "title": {"text": title, "x": 0.0, "xanchor": "left"}, "height": max(300, 140 + 28 * len(labels)),
        "template": LIGHT_TEMPLATE, "legend": LEGEND_BELOW, "hovermode": "closest",
        "margin": {"l": left, "r": 20, "t": 60, "b": 60, "autoexpand": False},
        "xaxis": {"domain": [0.0, 0.46], "title": {"text": "parameters per channel"}, "anchor": "y"},
        "xaxis2": {"domain": [0.54, 1.0], "title": {"text": "FLOPs per channel (batch 1)"}, "anchor": "y2"},
        "yaxis": {**yaxis, "anchor": "x"}, "yaxis2": {**yaxis, "anchor": "x2", "showticklabels": False}})


__all__ = ["ROLE_COLORS", "footprint_figure", "group_cost_bars"]
