"""The fundamental limit's figures (Zhang et al., NeurIPS 2024): the crossing rho = gw(R(rho)) (the authors'
``predict.jpg``), accuracy of global magnitude pruning against the removed fraction with the predicted limit,
the trace bound and the observed collapse (their ``acc_loss.jpg``), the Hessian's eigenvalue density, and the
predicted limit as a vertical line on other screens' charts. Every builder takes the frames of
``limit.LimitEstimate.frames()`` (``summary``, ``curve``, ``sensitivity``, ``spectrum``, ``density``), as a paper
check's report keeps them, and computes nothing. Ratio is the fraction REMOVED throughout."""

from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .style import PALETTE, styled
from .sweep import REFERENCE_COLOR

LIMIT_LABEL = "predicted limit (Zhang et al.)"
REMOVED_AXIS = "removed fraction ρ (of the prunable weights)"
COLORS = {"actual": PALETTE[0], "theory": REFERENCE_COLOR, "trace": PALETTE[1], "collapse": PALETTE[3],
          "accuracy": PALETTE[0], "density": PALETTE[4], "ritz": PALETTE[5]}


Frames = dict[str, pd.DataFrame]


def limit_reference(ratio: float) -> tuple[float, str]:
    """(x, label) of the predicted limit ``ratio`` as a vertical line on a chart against the removed fraction
    (the Sweep screen's curves take it as ``ratio_reference``)."""
    return float(ratio), f"{LIMIT_LABEL}: {ratio:.2f} removed"


def _summary(frames: Frames) -> dict:
    return frames["summary"].iloc[0].to_dict()


def crossing_chart(frames: Frames) -> go.Figure:
    """The theory curve gw(R) and the actual curve (R(rho), rho) of global magnitude pruning against R, their
    crossing (the predicted limit) marked, with the trace bound's curve and crossing."""
    curve, s = frames["curve"], _summary(frames)
    fig = go.Figure()
    fig.add_scatter(x=curve["R"], y=curve["ratio"], name="actual: removed fraction ρ at R(ρ)", mode="lines",
                    line=dict(color=COLORS["actual"], width=2),
                    hovertemplate="R %{x:.4g}<br>ρ %{y:.3f}<extra>actual</extra>")
    fig.add_scatter(x=curve["R"], y=curve["gw"], name="theory: gw(R), SLQ", mode="lines",
                    line=dict(color=COLORS["theory"], width=2),
                    hovertemplate="R %{x:.4g}<br>gw %{y:.3f}<extra>theory</extra>")
    if curve["trace_gw"].notna().any():
        fig.add_scatter(x=curve["R"], y=curve["trace_gw"], name="trace bound: 1 / (1 + R² Tr(H) / (2εD))",
                        mode="lines", line=dict(color=COLORS["trace"], dash="dash"),
                        hovertemplate="R %{x:.4g}<br>%{y:.3f}<extra>trace bound</extra>")
    points = [(s["R_at_limit"], s["predicted_limit"], f"ρ* = {s['predicted_limit']:.3f}", COLORS["theory"])]
    if not math.isnan(s["trace_bound"]):
        points.append((s["R_at_trace_bound"], s["trace_bound"], f"ρ_tr = {s['trace_bound']:.3f}", COLORS["trace"]))
    for r, rho, text, color in points:
        fig.add_scatter(x=[r], y=[rho], mode="markers+text", text=[text], textposition="top left",
                        marker=dict(size=11, color=color, line=dict(width=1.5, color="#222")), showlegend=False,
                        hovertemplate="R %{x:.4g}<br>ρ %{y:.3f}<extra>crossing</extra>")
    fig.update_xaxes(title_text="R = norm of the weights removed by global magnitude pruning")
    fig.update_yaxes(title_text=REMOVED_AXIS, range=[0, 1.02])
    return styled(fig, f"Crossing ρ = gw(R(ρ)): predicted limit {s['predicted_limit']:.2f} removed "
                       f"(ε = {s['epsilon']:.3g})", height=420)


def accuracy_limits_chart(accuracy: pd.DataFrame, frames: Frames, collapse: float | None,
                          dense_accuracy: float | None = None) -> go.Figure:
    """Accuracy of one-shot global magnitude pruning (``limit.magnitude_accuracy``) against the removed
    fraction, with vertical lines at the predicted limit, the trace bound and the observed collapse (the first
    ratio losing more than one point), and the predicted limit's range for epsilon x 0.5 to x 2 shaded."""
    fig = go.Figure()
    fig.add_scatter(x=accuracy["ratio"], y=accuracy["accuracy"], name="global magnitude, no fine-tuning",
                    mode="lines+markers", marker=dict(size=4), line=dict(color=COLORS["accuracy"]),
                    hovertemplate="removed %{x:.2f}<br>accuracy %{y:.2%}<extra></extra>")
    sens, s = frames["sensitivity"], _summary(frames)
    low, high = float(sens["ratio"].min()), float(sens["ratio"].max())
    fig.add_vrect(x0=low, x1=high, fillcolor=COLORS["theory"], opacity=0.12, line_width=0,
                  annotation_text=f"ε × {sens['factor'].min():g} to × {sens['factor'].max():g}",
                  annotation_position="bottom left")
    lines = [(s["predicted_limit"], "solid", COLORS["theory"], f"predicted {s['predicted_limit']:.2f}")]
    if not math.isnan(s["trace_bound"]):
        lines.append((s["trace_bound"], "dash", COLORS["trace"], f"trace bound {s['trace_bound']:.2f}"))
    if collapse is not None:
        lines.append((collapse, "dot", COLORS["collapse"], f"observed collapse {collapse:.2f}"))
    for i, (x, dash, color, text) in enumerate(lines):
        fig.add_vline(x=x, line_dash=dash, line_color=color, line_width=2, annotation_text=text,
                      annotation_position="top left" if i % 2 else "top right")
    if dense_accuracy is not None:
        fig.add_hline(y=dense_accuracy, line_dash="dash", line_color="#888", annotation_text="dense",
                      annotation_position="bottom right")
    fig.update_xaxes(title_text=REMOVED_AXIS, range=[0, 1])
    fig.update_yaxes(title_text="accuracy", tickformat=".0%")
    return styled(fig, "Accuracy against the removed fraction: predicted, trace bound, observed", height=420)


def eigen_density_chart(frames: Frames) -> go.Figure:
    """The Hessian's eigenvalue density from SLQ (Gaussian-smoothed Ritz values, log scale, as the authors'
    ``density_plot.py``) beside the Ritz values and their quadrature weights."""
    density, spectrum, s = frames["density"], frames["spectrum"], _summary(frames)
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_scatter(x=density["eigenvalue"], y=density["density"].clip(lower=1e-12), name="smoothed density",
                    mode="lines", line=dict(color=COLORS["density"]), secondary_y=False,
                    hovertemplate="λ %{x:.4g}<br>density %{y:.3g}<extra></extra>")
    fig.add_scatter(x=spectrum["eigenvalue"], y=spectrum["weight"].clip(lower=1e-16), name="Ritz values (weight τ)",
                    mode="markers", marker=dict(color=COLORS["ritz"], size=7, symbol="diamond"), secondary_y=True,
                    hovertemplate="θ %{x:.4g}<br>τ %{y:.3g}<extra>Ritz value</extra>")
    fig.update_xaxes(title_text="eigenvalue of the Hessian on the prunable weights")
    fig.update_yaxes(title_text="density (log)", type="log", exponentformat="power", secondary_y=False)
    fig.update_yaxes(title_text="quadrature weight τ (log)", type="log", exponentformat="power", secondary_y=True,
                     showgrid=False)
    return styled(fig, f"Eigenvalue density (SLQ, {int(s['lanczos_steps'])} Lanczos steps); "
                       f"negative mass {s['negative_mass']:.1%}", height=420)


def add_predicted_limit(fig: go.Figure, ratio: float) -> go.Figure:
    """A copy of ``fig`` with the predicted limit ``ratio`` as a vertical line on every panel (for charts whose
    x axes are all the removed fraction, as the Sparsity screen's PQI-against-ratio chart)."""
    out = go.Figure(fig)
    x, text = limit_reference(ratio)
    for i, axis in enumerate(out.select_xaxes()):
        xref = "x" + axis.plotly_name[len("xaxis"):]
        yref = axis.anchor if axis.anchor and axis.anchor != "free" else "y" + xref[1:]
        out.add_shape(type="line", xref=xref, x0=x, x1=x, yref=f"{yref} domain", y0=0, y1=1,
                      line=dict(color=COLORS["theory"], dash="dashdot", width=2))
        out.add_annotation(text=text if i == 0 else LIMIT_LABEL, xref=xref, x=x, xanchor="right", yref=f"{yref} domain",
                           y=1, yanchor="top", showarrow=False, font=dict(size=11, color=COLORS["theory"]))
    return out


__all__ = ["LIMIT_LABEL", "accuracy_limits_chart", "add_predicted_limit", "crossing_chart", "eigen_density_chart",
           "limit_reference"]
