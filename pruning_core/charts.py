"""Plotly figure builders, shared by the app, the command-line report and the tests.

Every function takes plain data (pandas frames from ``SweepResult``, numpy arrays from ``inspection``) and
returns a ``plotly.graph_objects.Figure``; none of them computes a metric, so a chart always shows the numbers
the tables show. Methods keep one colour everywhere (their position in the registry), so "Group L1" is the same
colour on the accuracy curves, the kept-fraction bars and the Layers page.
"""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative

from .methods import REGISTRY

_PALETTE = qualitative.D3
PRUNED_GREY = "#b8b8b8"

AXIS_TITLES = {
    "ratio": "pruning ratio (fraction removed, nominal)",
    "sparsity": "realised sparsity of the prunable weights",
    "flops_fraction": "FLOPs kept (fraction of dense)",
    "params_fraction": "parameters kept (fraction of dense)",
    "accuracy": "accuracy",
    "loss": "cross-entropy loss",
    "agreement": "top-1 agreement with the dense model",
}
SHORT_TITLES = {"ratio": "ratio", "sparsity": "sparsity", "flops_fraction": "FLOPs kept",
                "params_fraction": "parameters kept", "accuracy": "Accuracy", "loss": "Loss",
                "agreement": "Agreement with dense"}
_PERCENT = {"ratio", "sparsity", "flops_fraction", "params_fraction", "accuracy", "agreement"}


def method_color(method: str) -> str:
    keys = list(REGISTRY)
    # methods outside the registry get a stable colour from their name (str hash() is salted per process)
    i = keys.index(method) if method in keys else len(keys) + zlib.crc32(method.encode())
    return _PALETTE[i % len(_PALETTE)]


def _layout(fig: go.Figure, title: str, height: int = 380) -> go.Figure:
    fig.update_layout(title=dict(text=title, x=0.0, xanchor="left"), height=height, template="plotly_white",
                      margin=dict(l=10, r=10, t=50, b=10),
                      legend=dict(orientation="h", yanchor="top", y=-0.22, x=0, xanchor="left"),
                      hovermode="closest")
    return fig


def metric_curves(points: pd.DataFrame, x: str = "ratio", y: str = "accuracy",
                  selected_ratio: float | None = None, dense_value: float | None = None) -> go.Figure:
    """One line per method of ``y`` against ``x`` (columns of ``SweepResult.points``).

    The points evaluated at ``selected_ratio`` are drawn larger and outlined; when ``x`` is the ratio a
    vertical marker is drawn there too. ``dense_value`` adds a dashed reference line (e.g. dense accuracy).
    """
    fig = go.Figure()
    for method, df in points.groupby("method", sort=False):
        df = df.sort_values(x)
        at = (df["ratio"] - selected_ratio).abs() < 1e-9 if selected_ratio is not None else np.zeros(len(df), bool)
        sizes = np.where(at, 14, 7).tolist()
        fig.add_trace(go.Scatter(
            x=df[x].to_numpy(dtype=float), y=df[y].to_numpy(dtype=float), mode="lines+markers",
            name=str(df["label"].iloc[0]), legendgroup=str(method),
            line=dict(color=method_color(str(method)), width=2),
            marker=dict(size=sizes, line=dict(width=np.where(at, 2, 0).tolist(), color="#222")),
            customdata=np.stack([df["ratio"], df["sparsity"], df["params_fraction"], df["flops_fraction"]], 1),
            hovertemplate=(f"%{{y:.4g}} {y}<br>ratio %{{customdata[0]:.2f}} · sparsity %{{customdata[1]:.1%}}"
                           "<br>params kept %{customdata[2]:.1%} · FLOPs kept %{customdata[3]:.1%}"
                           "<extra>%{fullData.name}</extra>"),
        ))
    if dense_value is not None:
        text = f"dense {dense_value:.1%}" if y in _PERCENT else f"dense {dense_value:.4g}"
        fig.add_hline(y=dense_value, line=dict(color="#555", dash="dash", width=1), annotation_text=text,
                      annotation_position="bottom right")
    if selected_ratio is not None and x == "ratio":
        fig.add_vline(x=selected_ratio, line=dict(color="#222", dash="dot", width=1.5),
                      annotation_text=f"r = {selected_ratio:g}", annotation_position="top")
    fig.update_xaxes(title=AXIS_TITLES.get(x, x), tickformat=".2~%" if x in _PERCENT else None)
    fig.update_yaxes(title=AXIS_TITLES.get(y, y), tickformat=".2~%" if y in _PERCENT else None)
    if x in ("flops_fraction", "params_fraction"):
        fig.update_xaxes(autorange="reversed")  # left to right = more pruning, as on the ratio chart
    return _layout(fig, f"{SHORT_TITLES.get(y, y)} vs {SHORT_TITLES.get(x, x)}", height=400)


def kept_fraction_bars(layers: pd.DataFrame, labels: dict[str, str] | None = None) -> go.Figure:
    """Per-layer kept fraction of the weights (rows of ``SweepResult.layers`` at one ratio): one row per layer
    in model order, one bar per method. Structured rows also say how many channels the layer kept."""
    labels = labels or {}
    fig = go.Figure()
    order = list(dict.fromkeys(layers["layer"]))
    for method, df in layers.groupby("method", sort=False):
        df = df.set_index("layer").reindex(order)
        text = [f"{v:.0%}" + (f" · {int(k)}/{int(c)} ch" if pd.notna(k) and pd.notna(c) else "")
                for v, k, c in zip(df["kept_fraction"], df["kept_channels"], df["channels"])]
        fig.add_trace(go.Bar(
            y=order, x=df["kept_fraction"].to_numpy(dtype=float), orientation="h",
            name=labels.get(method, method), marker_color=method_color(str(method)), text=text,
            textposition="outside", cliponaxis=False,
            hovertemplate="%{y}: %{text} of weights kept<extra>%{fullData.name}</extra>",
        ))
    fig.update_xaxes(title="weights kept", tickformat=".0%", range=[0, 1.18], tickvals=np.linspace(0, 1, 6))
    fig.update_yaxes(autorange="reversed", type="category")
    n_bars = len(order) * max(1, layers["method"].nunique())
    _layout(fig, "Kept fraction per layer", height=min(1400, max(320, 160 + 16 * n_bars)))
    # a tall chart: the legend goes on top, where it stays next to the bars it explains
    fig.update_layout(barmode="group", bargap=0.25, margin=dict(t=90),
                      legend=dict(orientation="h", yanchor="bottom", y=1.0, x=0, xanchor="left"))
    return fig


def channel_importance_heatmap(table: pd.DataFrame, title: str) -> go.Figure:
    """Rows = layers or channel groups (the table's index), columns = channel index, values in [0, 1]
    (normalised per row); NaN cells (rows narrower than the widest) are left blank."""
    z = table.to_numpy(dtype=float)
    fig = go.Figure(go.Heatmap(
        z=z, x=list(range(z.shape[1])), y=[str(i) for i in table.index], colorscale="Viridis", zmin=0, zmax=1,
        colorbar=dict(title="relative<br>importance"), hoverongaps=False,
        hovertemplate="%{y}<br>channel %{x}: %{z:.3f}<extra></extra>",
    ))
    fig.update_yaxes(autorange="reversed", title=None, type="category")
    fig.update_xaxes(title="channel index")
    return _layout(fig, title, height=max(260, 60 + 28 * len(table)))


def weight_mask_heatmap(magnitude: np.ndarray, kept: np.ndarray, title: str,
                        row_title: str = "output channel", col_title: str = "input channel") -> go.Figure:
    """A weight matrix (out, in) of magnitudes with a plan's mask laid over it: entries the plan removes
    entirely are grey, kept entries keep their colour. ``kept``: fraction of each entry's weights kept
    (1 for a linear weight that stays, between 0 and 1 for a conv kernel that is partly pruned)."""
    # float32 halves what travels to the browser; a drawn matrix needs no more precision
    magnitude = np.asarray(magnitude, dtype=np.float32)
    kept = np.asarray(kept, dtype=np.float32)
    removed = kept <= 0
    fig = go.Figure()
    fig.add_trace(go.Heatmap(
        z=np.where(removed, 1.0, np.nan).astype(np.float32), colorscale=[[0, PRUNED_GREY], [1, PRUNED_GREY]],
        showscale=False, hoverongaps=False, name="pruned",
        hovertemplate="row %{y}, col %{x}: pruned<extra></extra>",
    ))
    fig.add_trace(go.Heatmap(
        z=np.where(removed, np.nan, magnitude), customdata=kept, colorscale="Viridis", zmin=0,
        zmax=float(np.nanmax(magnitude)) or 1.0, colorbar=dict(title="|w|"), hoverongaps=False, name="kept",
        hovertemplate="row %{y}, col %{x}: |w| %{z:.4f}, kept %{customdata:.0%}<extra></extra>",
    ))
    fig.update_yaxes(autorange="reversed", title=row_title, dtick=1 if magnitude.shape[0] <= 16 else None)
    fig.update_xaxes(title=col_title, dtick=1 if magnitude.shape[1] <= 16 else None)
    fig.update_layout(plot_bgcolor="white")
    return _layout(fig, title, height=min(720, max(320, 120 + 9 * magnitude.shape[0])))


def importance_histogram(values: pd.DataFrame, title: str, unit: str, bins: int = 40) -> go.Figure:
    """Histogram of importance scores (column ``importance``) split by the plan (bool column ``kept``),
    stacked. Binned here rather than in the browser: a large layer has millions of weights."""
    v = values["importance"].to_numpy(dtype=float)
    kept = values["kept"].to_numpy(dtype=bool)
    edges = np.histogram_bin_edges(v, bins=min(bins, max(5, len(v) // 2)))
    centers, widths = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    fig = go.Figure()
    for mask, name, color in ((kept, f"kept {unit}s", "#2a9d8f"), (~kept, f"pruned {unit}s", PRUNED_GREY)):
        counts, _ = np.histogram(v[mask], bins=edges)
        fig.add_trace(go.Bar(x=centers, y=counts, width=widths, name=f"{name} ({int(mask.sum()):,})",
                             marker_color=color, marker_line_width=0,
                             hovertemplate="%{x:.4g}: %{y} " + unit + "s<extra>%{fullData.name}</extra>"))
    fig.update_xaxes(title=f"{unit} importance")
    fig.update_yaxes(title="count")
    _layout(fig, title, height=360)
    fig.update_layout(barmode="stack", bargap=0, legend=dict(orientation="v", x=1, xanchor="right", y=1,
                                                             yanchor="top", bgcolor="rgba(255,255,255,0.8)"))
    return fig
