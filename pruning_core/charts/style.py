"""The one house style of every figure: the palette, a method's colour and label (both from the method registry),
axis titles, the plotly layout helpers (``styled`` for figures built with plotly's API, ``light_layout`` and
``LIGHT_TEMPLATE`` for the plain-dict figures the live Sweep screen redraws) and how a ratio is named.

The rest of the package holds one module per screen (``sweep``, ``layers``, ``sparsity``) and one per paper whose
figures the Methods screen draws (``id``, ``ispasp``). Every builder takes plain data (frames, arrays) and returns a
``plotly.graph_objects.Figure``; none computes a metric, so a chart shows the numbers the tables show.
"""

from __future__ import annotations

import zlib

import plotly.graph_objects as go
from plotly.colors import qualitative

from ..methods import REGISTRY

PALETTE = qualitative.D3
PRUNED_GREY = "#b8b8b8"

AXIS_TITLES = {
    "ratio": "pruning ratio (fraction removed, nominal)",
    "sparsity": "realised sparsity of the prunable weights",
    "flops_fraction": "FLOPs kept (fraction of dense)",
    "params_fraction": "parameters kept (fraction of dense)",
    "accuracy": "accuracy",
    "loss": "cross-entropy loss",
    "agreement": "top-1 agreement with the dense model",
    "top5_overlap": "top-5 overlap with the dense model",
    "kl": "KL divergence from the dense outputs (nats)",
    "cosine": "cosine similarity to the dense embeddings",
}
SHORT_TITLES = {"ratio": "ratio", "sparsity": "sparsity", "flops_fraction": "FLOPs kept",
                "params_fraction": "parameters kept", "accuracy": "Accuracy", "loss": "Loss",
                "agreement": "Agreement with dense", "top5_overlap": "Top-5 overlap", "kl": "KL divergence",
                "cosine": "Cosine similarity"}
PERCENT = {"ratio", "sparsity", "flops_fraction", "params_fraction", "accuracy", "agreement", "top5_overlap",
           "cosine"}


def method_color(method: str) -> str:
    """A method's colour everywhere (its position in the registry), so "Group L1" is the same colour on the
    accuracy curves, the kept-fraction bars and a paper check's figure."""
    keys = list(REGISTRY)
    # methods outside the registry get a stable colour from their name (str hash() is salted per process)
    i = keys.index(method) if method in keys else len(keys) + zlib.crc32(method.encode())
    return PALETTE[i % len(PALETTE)]


def method_label(method: str, short: bool = False) -> str:
    """What a legend calls a method: its spec's label, or its ``short_label`` (legends inside one paper's figure,
    where the paper is already named) when ``short``; a key outside the registry is shown as it is."""
    spec = REGISTRY.get(method)
    if spec is None:
        return str(method)
    return (spec.short_label or spec.label) if short else spec.label


def styled(fig: go.Figure, title: str, height: int = 380) -> go.Figure:
    fig.update_layout(title=dict(text=title, x=0.0, xanchor="left"), height=height, template="plotly_white",
                      margin=dict(l=10, r=10, t=50, b=10),
                      legend=dict(orientation="h", yanchor="top", y=-0.22, x=0, xanchor="left"),
                      hovermode="closest")
    return fig


# The Sweep screen redraws its five charts on every move of the ratio slider (the browser draws a changed
# chart anew), so these are made cheap at both ends. Built in one pass from plain dicts, with a light
# template (the few plotly_white settings a 2-D line or bar chart uses): the full plotly_white template was most
# of the time plotly took to build each figure and most of the bytes it sent. Fixed margins: plotly grows a
# margin to fit its labels by drawing the chart, measuring and drawing it again, which was half of each chart's
# time in the browser.
LIGHT_TEMPLATE = {
    "layout": {
        "font": {"color": "#2a3f5f"}, "paper_bgcolor": "white", "plot_bgcolor": "white", "hovermode": "closest",
        "hoverlabel": {"align": "left"},
        **{axis: {"gridcolor": "#EBF0F8", "linecolor": "#EBF0F8", "ticks": "", "title": {"standoff": 15},
                  "zerolinecolor": "#EBF0F8", "zerolinewidth": 2}
           for axis in ("xaxis", "yaxis")},
    },
    "data": {"bar": [{"marker": {"line": {"color": "white", "width": 0.5}}}]},
}
LEGEND_BELOW = {"orientation": "h", "yref": "container", "yanchor": "bottom", "y": 0.0, "x": 0, "xanchor": "left"}


def ratio_label(ratio: float) -> str:
    """How a chart names the selected pruning ratio (as the Sweep screen's slider shows it)."""
    return f"r = {ratio:.2f}"


def light_layout(title: str, height: int, margin: dict, xaxis: dict, yaxis: dict, **layout) -> dict:
    """A layout as a plain dict: title on the left, the light template, ``margin`` (l, r, t, b in pixels)
    fixed rather than grown to fit the labels, the legend at the bottom unless ``layout`` says otherwise."""
    return {"title": {"text": title, "x": 0.0, "xanchor": "left"}, "height": height, "template": LIGHT_TEMPLATE,
            "margin": {**margin, "autoexpand": False}, "xaxis": {**xaxis, "automargin": False},
            "yaxis": {**yaxis, "automargin": False}, "legend": LEGEND_BELOW, "hovermode": "closest", **layout}




__all__ = ["AXIS_TITLES", "LEGEND_BELOW", "LIGHT_TEMPLATE", "PALETTE", "PERCENT", "PRUNED_GREY", "SHORT_TITLES",
           "light_layout", "method_color", "method_label", "ratio_label", "styled"]
