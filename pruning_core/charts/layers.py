"""The Layers screen's figures: channel importance per group, one layer's weights with the plan's mask over them,
and the histogram of importance scores split into kept and pruned."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from .style import PRUNED_GREY, styled

PICK_POINTS_PER_ROW = 48


def channel_importance_heatmap(table: pd.DataFrame, title: str, pickable: bool = False) -> go.Figure:
    """Rows = layers or channel groups (the table's index), columns = channel index, values in [0, 1]
    (normalised per row); NaN cells (rows narrower than the widest) are left blank.

    ``pickable``: a click on a row selects it. Streamlit returns no selection for heatmap traces, so an
    invisible marker trace (second trace, named "pick") is laid over each row at up to ``PICK_POINTS_PER_ROW``
    positions; its selected point's ``y`` is the row."""
    z = table.to_numpy(dtype=float)
    fig = go.Figure(go.Heatmap(
        z=z, x=list(range(z.shape[1])), y=[str(i) for i in table.index], colorscale="Viridis", zmin=0, zmax=1,
        colorbar=dict(title="relative<br>importance"), hoverongaps=False,
        hovertemplate="%{y}<br>channel %{x}: %{z:.3f}<extra></extra>",
    ))
    if pickable and z.size:
        rows = [str(i) for i in table.index]
        widths = np.isfinite(z).sum(axis=1)
        xs, ys = [], []
        for name, width in zip(rows, widths, strict=True):
            for x in np.unique(np.linspace(0, max(int(width) - 1, 0), min(int(width), PICK_POINTS_PER_ROW)).round()):
                xs.append(float(x))
                ys.append(name)
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers", name="pick", showlegend=False, hoverinfo="none",
                                 marker=dict(size=22, opacity=0.01, color="white"),
                                 selected=dict(marker=dict(opacity=0.01)),
                                 unselected=dict(marker=dict(opacity=0.01))))
        fig.update_layout(clickmode="event+select", dragmode=False)
    fig.update_yaxes(autorange="reversed", title=None, type="category")
    fig.update_xaxes(title="channel index")
    return styled(fig, title, height=max(260, 60 + 28 * len(table)))


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
    return styled(fig, title, height=min(720, max(320, 120 + 9 * magnitude.shape[0])))


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
    styled(fig, title, height=360)
    fig.update_layout(barmode="stack", bargap=0, legend=dict(orientation="v", x=1, xanchor="right", y=1,
                                                             yanchor="top", bgcolor="rgba(255,255,255,0.8)"))
    return fig


__all__ = ["channel_importance_heatmap", "importance_histogram", "weight_mask_heatmap"]
