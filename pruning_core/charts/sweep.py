"""The Sweep screen's figures: metric curves against the ratio (one chart or several panels of one figure, which
the screen redraws on every move of its ratio slider) and the kept fraction per layer at one ratio."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from .style import (
    AXIS_TITLES,
    LEGEND_BELOW,
    LIGHT_TEMPLATE,
    PERCENT,
    SHORT_TITLES,
    light_layout,
    method_color,
    ratio_label,
)

# a ratio_reference line (the predicted limit; charts.limit draws it in this colour too): outside the method palette
REFERENCE_COLOR = "#b8860b"


def metric_curves(points: pd.DataFrame, x: str = "ratio", y: str = "accuracy",
                  selected_ratio: float | None = None, dense_value: float | None = None,
                  ratio_reference: tuple[float, str] | None = None) -> go.Figure:
    """One line per method of ``y`` against ``x`` (columns of ``SweepResult.points``).

    The points evaluated at ``selected_ratio`` are drawn larger and outlined, and the chart names that ratio:
    when ``x`` is the ratio, on a vertical marker drawn there; otherwise in its top corner. ``dense_value``
    adds a dashed reference line (e.g. dense accuracy). ``ratio_reference`` (x, label): a labelled vertical
    line at that ratio when ``x`` is the ratio (e.g. the predicted limit of ``charts.limit.limit_reference``).
    """
    panel = curve_panel(points, x, y, selected_ratio, dense_value, ratio_reference=ratio_reference)
    layout = light_layout(panel_title(x, y), 420, {"l": 75, "r": 20, "t": 50, "b": 105}, panel["xaxis"],
                          panel["yaxis"], shapes=panel["shapes"], annotations=panel["annotations"])
    return go.Figure(data=panel["traces"], layout=layout)


def panel_title(x: str, y: str) -> str:
    return f"{SHORT_TITLES.get(y, y)} vs {SHORT_TITLES.get(x, x)}"


def curve_panel(points: pd.DataFrame, x: str, y: str, selected_ratio: float | None = None,
                dense_value: float | None = None, axis: int = 1, showlegend: bool = True,
                ratio_reference: tuple[float, str] | None = None) -> dict:
    """The traces, shapes, annotations and axes of one ``metric_curves`` chart as plain dicts, drawn on the
    figure's axis pair number ``axis`` (1: ``x``/``y``, 2: ``x2``/``y2``, ...). ``ratio_reference`` (x, label):
    one more labelled vertical line, on panels whose x is the ratio."""
    xref, yref = ("x", "y") if axis == 1 else (f"x{axis}", f"y{axis}")
    traces = []
    for method, df in points.groupby("method", sort=False):
        df = df.sort_values(x)
        at = ((df["ratio"] - selected_ratio).abs() < 1e-9).to_numpy() if selected_ratio is not None \
            else np.zeros(len(df), bool)
        traces.append({
            "type": "scatter", "x": df[x].to_numpy(dtype=float), "y": df[y].to_numpy(dtype=float), "xaxis": xref,
            "yaxis": yref, "mode": "lines+markers", "name": str(df["label"].iloc[0]), "legendgroup": str(method),
            "showlegend": showlegend, "line": {"color": method_color(str(method)), "width": 2},
            "marker": {"size": np.where(at, 14, 7), "line": {"width": np.where(at, 2, 0), "color": "#222"}},
            "customdata": np.stack([df["ratio"], df["sparsity"], df["params_fraction"], df["flops_fraction"]], 1),
            "hovertemplate": (f"%{{y:.4g}} {y}<br>ratio %{{customdata[0]:.2f}} · sparsity %{{customdata[1]:.1%}}"
                              "<br>params kept %{customdata[2]:.1%} · FLOPs kept %{customdata[3]:.1%}"
                              "<extra>%{fullData.name}</extra>"),
        })
    shapes, annotations = [], []
    if dense_value is not None:
        text = f"dense {dense_value:.1%}" if y in PERCENT else f"dense {dense_value:.4g}"
        shapes.append({"type": "line", "xref": f"{xref} domain", "x0": 0, "x1": 1, "yref": yref, "y0": dense_value,
                       "y1": dense_value, "line": {"color": "#555", "dash": "dash", "width": 1}})
        annotations.append({"text": text, "showarrow": False, "xref": f"{xref} domain", "x": 1,
                            "xanchor": "right", "yref": yref, "y": dense_value, "yanchor": "top"})
    if selected_ratio is not None and x == "ratio":
        shapes.append({"type": "line", "xref": xref, "x0": selected_ratio, "x1": selected_ratio,
                       "yref": f"{yref} domain", "y0": 0, "y1": 1,
                       "line": {"color": "#222", "dash": "dot", "width": 1.5}})
        annotations.append({"text": ratio_label(selected_ratio), "showarrow": False, "xref": xref,
                            "x": selected_ratio, "xanchor": "center", "yref": f"{yref} domain", "y": 1,
                            "yanchor": "bottom"})
    elif selected_ratio is not None:
        annotations.append({"text": f"ringed: {ratio_label(selected_ratio)}", "showarrow": False,
                            "xref": f"{xref} domain", "x": 1, "xanchor": "right", "yref": f"{yref} domain",
                            "y": 1, "yanchor": "bottom"})
    if ratio_reference is not None and x == "ratio":
        at, text = float(ratio_reference[0]), str(ratio_reference[1])
        shapes.append({"type": "line", "xref": xref, "x0": at, "x1": at, "yref": f"{yref} domain", "y0": 0,
                       "y1": 1, "line": {"color": REFERENCE_COLOR, "dash": "dashdot", "width": 2}})
        annotations.append({"text": text, "showarrow": False, "xref": xref, "x": at, "xanchor": "right",
                            "yref": f"{yref} domain", "y": 0, "yanchor": "bottom", "textangle": -90,
                            "font": {"color": REFERENCE_COLOR, "size": 11}})

    def axis_spec(column: str) -> dict:
        spec = {"title": {"text": AXIS_TITLES.get(column, column)}}
        if column in PERCENT:
            spec["tickformat"] = ".2~%"
        if column in ("flops_fraction", "params_fraction") and column == x:
            spec["autorange"] = "reversed"  # left to right = more pruning, as on the ratio chart
        return spec

    return {"traces": traces, "shapes": shapes, "annotations": annotations, "xaxis": axis_spec(x),
            "yaxis": axis_spec(y)}


# panels of metric_panels, in pixels: the plot, the gap between rows (the upper plot's tick labels and axis
# title, then the lower one's title and ratio label) and the figure's top and bottom margins
PANEL_HEIGHT, PANEL_GAP, PANELS_TOP, PANELS_BOTTOM = 280, 130, 60, 105


def metric_panels(points: pd.DataFrame, panels: list[tuple[str, str]], selected_ratio: float | None = None,
                  references: dict[str, float] | None = None,
                  ratio_reference: tuple[float, str] | None = None) -> go.Figure:
    """Several ``metric_curves`` charts as panels of one figure, two a row: ``panels`` lists their (x, y)
    columns; ``references`` maps a y column to its dense value, drawn dashed on every panel of that y;
    ``ratio_reference`` (x, label) a labelled vertical line on every panel against the ratio.

    Each panel shows what its own ``metric_curves`` chart would, and the panels share one legend (a method
    hidden there disappears from all of them). One figure because the browser draws a changed chart anew:
    the Sweep screen redraws these on every move of its ratio slider, and one figure of four panels draws in
    about a third of the time of four figures.
    """
    references = references or {}
    rows = -(-len(panels) // 2)
    area = rows * PANEL_HEIGHT + (rows - 1) * PANEL_GAP  # the plotting area, in pixels
    traces, shapes, annotations, layout = [], [], [], {}
    for i, (x, y) in enumerate(panels):
        n, row, col = i + 1, i // 2, i % 2
        panel = curve_panel(points, x, y, selected_ratio, references.get(y), axis=n, showlegend=i == 0,
                            ratio_reference=ratio_reference)
        top = 1 - row * (PANEL_HEIGHT + PANEL_GAP) / area
        suffix = "" if n == 1 else str(n)
        layout[f"xaxis{suffix}"] = {**panel["xaxis"], "domain": [0.0, 0.44] if col == 0 else [0.56, 1.0],
                                    "anchor": f"y{suffix}", "automargin": False}
        layout[f"yaxis{suffix}"] = {**panel["yaxis"], "domain": [top - PANEL_HEIGHT / area, top],
                                    "anchor": f"x{suffix}", "automargin": False}
        traces += panel["traces"]
        shapes += panel["shapes"]
        annotations += panel["annotations"] + [{
            "text": f"<b>{panel_title(x, y)}</b>", "showarrow": False, "xref": "paper",
            "x": layout[f"xaxis{suffix}"]["domain"][0], "xanchor": "left", "yref": "paper",
            "y": top + 22 / area, "yanchor": "bottom", "font": {"size": 14}}]
    height = PANELS_TOP + area + PANELS_BOTTOM
    return go.Figure(data=traces, layout={
        "height": height, "template": LIGHT_TEMPLATE, "hovermode": "closest", "legend": LEGEND_BELOW,
        "margin": {"l": 75, "r": 20, "t": PANELS_TOP, "b": PANELS_BOTTOM, "autoexpand": False},
        "shapes": shapes, "annotations": annotations, **layout})


def kept_fraction_bars(layers: pd.DataFrame, labels: dict[str, str] | None = None) -> go.Figure:
    """Per-layer kept fraction of the weights (rows of ``SweepResult.layers`` at one ratio): one row per layer
    in model order, one bar per method. Structured rows also say how many channels the layer kept. The title
    names the ratio when the rows are all at one."""
    labels = labels or {}
    order = list(dict.fromkeys(layers["layer"]))
    traces = []
    for method, df in layers.groupby("method", sort=False):
        df = df.set_index("layer").reindex(order)
        text = [f"{v:.0%}" + (f" · {int(k)}/{int(c)} ch" if pd.notna(k) and pd.notna(c) else "")
                for v, k, c in zip(df["kept_fraction"], df["kept_channels"], df["channels"], strict=True)]
        traces.append({
            "type": "bar", "y": order, "x": df["kept_fraction"].to_numpy(dtype=float), "orientation": "h",
            "name": labels.get(method, method), "marker": {"color": method_color(str(method))}, "text": text,
            "textposition": "outside", "cliponaxis": False,
            "hovertemplate": "%{y}: %{text} of weights kept<extra>%{fullData.name}</extra>",
        })
    ratios = layers["ratio"].unique() if "ratio" in layers else []
    title = "Kept fraction per layer" + (f" at {ratio_label(float(ratios[0]))}" if len(ratios) == 1 else "")
    n_bars = len(order) * max(1, layers["method"].nunique())
    # fixed margins: the layer names need about 7 px a character at the default 12 px font
    left = min(320, 20 + 7 * max((len(str(name)) for name in order), default=4))
    # a tall chart: the legend goes on top, where it stays next to the bars it explains
    layout = light_layout(
        title, min(1400, max(320, 160 + 16 * n_bars)), {"l": left, "r": 20, "t": 90, "b": 50},
        {"title": {"text": "weights kept"}, "tickformat": ".0%", "range": [0, 1.18], "tickvals": np.linspace(0, 1, 6)},
        {"autorange": "reversed", "type": "category"}, barmode="group", bargap=0.25,
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "x": 0, "xanchor": "left"})
    return go.Figure(data=traces, layout=layout)


__all__ = ["curve_panel", "kept_fraction_bars", "metric_curves", "metric_panels", "panel_title"]
