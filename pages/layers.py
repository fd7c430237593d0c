"""Layers: which channels matter. A heatmap of per-channel importance for every layer (or channel group),
then one layer's weight matrix with the current plan's mask over it, and its importance histogram."""

import streamlit as st

import explorer_ui as ui
from pruning_core import PlanError, inspection
from pruning_core.charts import layers as charts

ui.require_session()
st.title("Layers")
wb = ui.workbench()
criterion = st.radio("Importance criterion", ["L1", "L2"], horizontal=True, **ui.keep("layers_criterion", "L1"),
                     help="Magnitude: the L1 or L2 norm of everything a channel owns (DepGraph group norm).")
p = 1 if criterion == "L1" else 2

table, rows = inspection.channel_importance_table(wb, p)
if rows == "channel group":
    title = (f"Channel importance per dependency group (group {criterion} norm, each row scaled to its "
             "strongest channel)")
else:
    st.info(f"{ui.structured_note(wb)} Showing the {criterion} norm of every output row of each prunable "
            "weight instead.")
    title = f"Output-row importance per layer ({criterion} norm, each row scaled to its strongest row)"
st.plotly_chart(charts.channel_importance_heatmap(table, title), key="importance_map")
st.caption(f"{len(table)} {rows}s. Dark cells are channels a magnitude criterion removes first; blank cells: "
           "the row has fewer channels.")

st.subheader("One layer under a plan")
weights = inspection.prunable_layers(wb)
layer = st.selectbox("Layer (prunable weight)", weights, **ui.keep("layers_layer", weights[0], options=weights))
method, ratio = ui.plan_picker()
plan = None
try:
    plan = ui.plan_for(method, ratio)
except PlanError as e:
    ui.show_error(e, "No mask drawn")

per_weight = plan is not None and not plan.is_structured and wb.prunable[layer].ndim > 2
magnitude, kept = inspection.weight_matrix_with_mask(wb, layer, plan, reduce_kernel=not per_weight)
importance, unit = inspection.layer_importance(wb, layer, plan, p)
shape = "x".join(map(str, wb.prunable[layer].shape))
left, right = st.columns([3, 2])
view = ("one cell per weight, columns = input channel x kernel position" if per_weight else
        "|w| summed over each kernel" if wb.prunable[layer].ndim > 2 else "|w|")
left.plotly_chart(charts.weight_mask_heatmap(
    magnitude, kept, f"{layer} · {shape} · grey = pruned",
    col_title="input channel x kernel position" if per_weight else "input channel"), key="weight_map")
right.plotly_chart(charts.importance_histogram(
    importance, f"{unit.capitalize()} importance in {layer}", unit), key="importance_hist")
kept_share = importance["kept"].mean()
st.caption(f"Weight map: {view}. {ui.method_label(method)} at ratio {ratio:.2f} keeps {kept_share:.1%} of the "
           f"{len(importance):,} {unit}s of {layer} (the ratio is a model-wide target; layers differ).")
