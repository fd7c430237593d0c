"""Plotly figures for SequentialAttention++ block sparsification (Yasuda et al., NeurIPS 2024), drawn from the frames
of ``checks.seqattn.paper_check`` or ``experiments.seqattn`` runs (the digest's §8 plots):

* the block sparsity over training steps for ACDC (steps between dense and sparse) and SA++ (exponential ramps,
  c = 4), scheduled and realised;
* accuracy against block sparsity for SA++, ACDC and one-shot block magnitude (mean over seeds, min-max bars);
* the block attention A of one layer as a heatmap, the blocks the final mask keeps outlined.

No function here computes a metric; legends name methods by their registry specs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from .style import PRUNED_GREY, method_color, method_label, styled


def sparsity_schedule(schedule: pd.DataFrame) -> go.Figure:
    """Block sparsity against the optimiser step, one colour per procedure: the schedule as a line (``scheduled``)
    and, where a run made it, the realised block sparsity of its masks as dots (``block_sparsity``). The fine-tune
    steps after the schedule are shaded."""
    fig = go.Figure()
    for procedure, rows in schedule.groupby("procedure", sort=False):
        rows = rows.sort_values("step")
        name = method_label(procedure, short=True)
        fig.add_trace(go.Scatter(x=rows.step, y=rows.scheduled, mode="lines", name=f"{name}, schedule",
                                 line=dict(color=method_color(procedure), shape="hv"),
                                 customdata=rows.phase, hovertemplate="step %{x}<br>%{y:.1%} of blocks removed "
                                 "(%{customdata})<extra>%{fullData.name}</extra>"))
        realised = rows.dropna(subset=["block_sparsity"])
        if len(realised):
            fig.add_trace(go.Scatter(x=realised.step, y=realised.block_sparsity, mode="markers",
                                     name=f"{name}, realised", marker=dict(color=method_color(procedure), size=3),
                                     hovertemplate="step %{x}<br>%{y:.2%} of blocks removed<extra>"
                                     "%{fullData.name}</extra>"))
    finetune = schedule[schedule.phase == "finetune"]
    if len(finetune):
        fig.add_vrect(x0=finetune.step.min(), x1=finetune.step.max(), fillcolor=PRUNED_GREY, opacity=0.2,
                      line_width=0, annotation_text="fine-tune", annotation_position="top left")
    fig.update_xaxes(title="optimiser step")
    fig.update_yaxes(title="block sparsity (fraction of blocks removed)", tickformat=".0%")
    return styled(fig, "Sparsity schedule: ACDC steps, SA++ exponential sparsify phases (c = 4)")


def accuracy_by_sparsity(accuracy: pd.DataFrame, dense_accuracy: float | None = None) -> go.Figure:
    """Test accuracy after training against the nominal block sparsity, one line per procedure: the mean over
    seeds, bars from the lowest to the highest seed; hover gives the realised sparsity of all prunable weights."""
    fig = go.Figure()
    for procedure, rows in accuracy.groupby("procedure", sort=False):
        g = rows.groupby("sparsity").agg(mean=("accuracy", "mean"), low=("accuracy", "min"),
                                         high=("accuracy", "max"), seeds=("seed", "nunique"),
                                         realised=("realised_sparsity", "mean")).reset_index()
        fig.add_trace(go.Scatter(
            x=g.sparsity, y=g["mean"], mode="lines+markers", name=method_label(procedure, short=True),
            line=dict(color=method_color(procedure)),
            error_y=dict(type="data", symmetric=False, array=g.high - g["mean"], arrayminus=g["mean"] - g.low,
                         thickness=1),
            customdata=np.stack([g.seeds, g.realised], axis=1),
            hovertemplate="%{y:.1%} accuracy (mean of %{customdata[0]} seeds)<br>%{x:.0%} of blocks removed, "
                          "%{customdata[1]:.1%} of all weights<extra>%{fullData.name}</extra>"))
    if dense_accuracy is not None:
        fig.add_hline(y=dense_accuracy, line=dict(color="grey", dash="dash", width=1),
                      annotation_text="dense", annotation_position="bottom right")
    fig.update_xaxes(title="block sparsity of the pruned layers (nominal)", tickformat=".0%")
    fig.update_yaxes(title="accuracy after training", tickformat=".0%")
    return styled(fig, "Accuracy against block sparsity, same training budget")


def attention_heatmap(attention: pd.DataFrame) -> go.Figure:
    """One layer's block attention A = N softmax(L) for every block (block rows = fan-in, block columns = outputs) on a
    log colour scale, the blocks the final mask kept outlined (open white squares): SA++ keeps the blocks of highest A
    at the end of its last sparsify phase."""
    layer = str(attention.layer.iloc[0])
    shape = (int(attention.row.max()) + 1, int(attention.col.max()) + 1)
    a = np.zeros(shape)
    kept = np.zeros(shape, dtype=bool)
    a[attention.row, attention.col] = attention.attention
    kept[attention.row, attention.col] = attention.kept
    fig = go.Figure()
    fig.add_trace(go.Heatmap(z=np.log10(np.maximum(a, 1e-12)), colorscale="Viridis", customdata=a, name="A",
                             colorbar=dict(title="log10 A"), showscale=True,
                             hovertemplate="block (%{y}, %{x})<br>A = %{customdata:.3g}<extra></extra>"))
    rows, cols = np.nonzero(kept)
    fig.add_trace(go.Scatter(x=cols, y=rows, mode="markers", name="kept by the final mask",
                             marker=dict(symbol="square-open", size=9, color="white", line=dict(width=2)),
                             customdata=a[rows, cols],
                             hovertemplate="block (%{y}, %{x}) kept<br>A = %{customdata:.3g}<extra></extra>"))
    fig.update_xaxes(title="block column (outputs)", range=[-0.5, shape[1] - 0.5], showgrid=False)
    fig.update_yaxes(title="block row (fan-in)", range=[shape[0] - 0.5, -0.5], scaleanchor="x", showgrid=False)
    return styled(fig, f"Block attention A of {layer}; outlined: the {int(kept.sum())} of {kept.size} blocks the "
                       "final mask keeps", height=460)


__all__ = ["accuracy_by_sparsity", "attention_heatmap", "sparsity_schedule"]
