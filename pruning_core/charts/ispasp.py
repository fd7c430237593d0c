"""Plotly figures for i-SpaSP (Wolfe & Kyrillidis, arXiv 2112.04905), built from the frames of
``checks.ispasp.paper_check`` / ``experiments.two_layer.synthetic_experiment`` / ``methods.ispasp.ISpaSP`` plan
details. No metric is computed here beyond averaging the random baseline over its seeds, so a figure shows the
numbers the check's table reports.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import sample_colorscale
from plotly.subplots import make_subplots

from .style import method_color, method_label, styled


def _positive(values: pd.Series) -> np.ndarray:
    """Residuals for a log axis: exact zeros (a unit whose removed channels are all dead) become gaps."""
    v = values.to_numpy(dtype=float)
    return np.where(v > 0, v, np.nan)


def residual_by_iteration(residual: pd.DataFrame, ratio: float | None = None) -> go.Figure:
    """||Y - Y_S||_F^2 against the iteration, one line per unit, log y. ``residual``: columns unit, ratio,
    iteration, residual (``paper_check``'s ``residual`` frame; see ``residual_frame`` for a plan). ``ratio``:
    which ratio to draw (default: the largest in the frame). Iteration 0 is ||Y||^2 (Y_S = 0, as the code)."""
    if residual.empty:
        return styled(go.Figure(), "i-SpaSP residual by iteration (no data)")
    ratio = float(residual.ratio.max()) if ratio is None else ratio
    df = residual[(residual.ratio - ratio).abs() < 1e-9]
    fig = go.Figure()
    for unit, part in df.groupby("unit", sort=False):
        part = part.sort_values("iteration")
        fig.add_trace(go.Scatter(
            x=part.iteration, y=_positive(part.residual), mode="lines+markers", name=str(unit),
            hovertemplate="iteration %{x}<br>||Y - Y_S||² %{y:.4g}<extra>%{fullData.name}</extra>"))
    fig.update_yaxes(type="log", title_text="residual ||Y − Y_S||²_F (log)")
    fig.update_xaxes(title_text="iteration (0: S empty, Y_S = 0)", dtick=2)
    return styled(fig, f"i-SpaSP residual by iteration, ratio {ratio:g} removed ({1 - ratio:.0%} kept)")


def residual_frame(plan) -> pd.DataFrame:
    """The residual histories in an ``ISpaSP`` plan's details as a frame (unit, group, ratio, iteration, residual)."""
    units = plan.details.get("units", {})
    return pd.DataFrame([{"unit": units.get(g, g), "group": g, "ratio": plan.ratio, "iteration": i, "residual": r}
                         for g, hist in plan.details["residuals"].items() for i, r in enumerate(hist)])


def accuracy_by_ratio(accuracy: pd.DataFrame, dense_accuracy: float | None = None) -> go.Figure:
    """Accuracy without fine-tuning against the ratio removed, one line per method; methods with several seeds
    (random) are drawn as their mean with a ±1 standard deviation bar. ``accuracy``: columns method, seed, ratio,
    kept_fraction, accuracy (``paper_check``'s ``accuracy`` frame)."""
    fig = go.Figure()
    for method, part in accuracy.groupby("method", sort=False):
        agg = part.groupby("ratio").agg(acc=("accuracy", "mean"), std=("accuracy", "std"),
                                        kept=("kept_fraction", "first"), n=("accuracy", "size")).reset_index()
        several = bool((agg.n > 1).any())
        label = method_label(str(method), short=True)
        label += f" (mean of {int(agg.n.max())} seeds)" if several else ""
        fig.add_trace(go.Scatter(
            x=agg.ratio, y=agg.acc, mode="lines+markers", name=label,
            line=dict(color=method_color(str(method)), width=2),
            error_y=dict(type="data", array=agg["std"].fillna(0).to_numpy(), visible=several),
            customdata=agg.kept.to_numpy()[:, None],
            hovertemplate="ratio %{x:.2f} (unit channels kept %{customdata[0]:.1%})<br>accuracy %{y:.1%}"
                          "<extra>%{fullData.name}</extra>"))
    if dense_accuracy is not None:
        fig.add_hline(y=dense_accuracy, line=dict(color="#555", dash="dash", width=1),
                      annotation_text=f"dense {dense_accuracy:.1%}", annotation_position="top right")
    fig.update_xaxes(title_text="pruning ratio of every unit (fraction of hidden channels removed)")
    fig.update_yaxes(title_text="accuracy, no fine-tuning", tickformat=".0%")
    return styled(fig, "Accuracy against ratio at identical kept channel counts")


def synthetic_residual(synthetic: pd.DataFrame) -> go.Figure:
    """The README's synthetic figure: residual ||V||_F^2 (log) against the pruned width, one panel per hidden width
    and one line per (width, p); smaller p (sparser hidden representations) should fall faster."""
    widths = sorted(synthetic.width.unique())
    ps = sorted(synthetic.sparsity.unique())
    colors = dict(zip(ps, sample_colorscale("Plasma", [0.05 + 0.8 * i / max(len(ps) - 1, 1) for i in range(len(ps))]),
                      strict=True))
    fig = make_subplots(rows=1, cols=max(len(widths), 1), subplot_titles=[f"d_hid = {w}" for w in widths],
                        shared_yaxes=False, horizontal_spacing=0.08)
    for col, w in enumerate(widths, start=1):
        for p in ps:
            part = synthetic[(synthetic.width == w) & (synthetic.sparsity == p)].sort_values("pruned_width")
            fig.add_trace(go.Scatter(
                x=part.pruned_width, y=_positive(part.residual), mode="lines", name=f"p = {p:g}", legendgroup=f"{p}",
                showlegend=col == 1, line=dict(color=colors[p], width=3),
                hovertemplate=f"d_hid {w}, p {p:g}<br>pruned width %{{x}}<br>||V||² %{{y:.3g}}<extra></extra>"),
                row=1, col=col)
        fig.update_yaxes(type="log", exponentformat="power", row=1, col=col,
                         title_text="||V||²_F, pruned vs dense output" if col == 1 else None)
        fig.update_xaxes(title_text="pruned layer size s", row=1, col=col)
    return styled(fig, "Synthetic two-layer networks: residual against pruned width (p: compressibility, smaller = "
                        "sparser)", height=400)
