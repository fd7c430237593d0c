"""Sweep: methods x ratios, measured live with a progress bar; then a ratio slider scrubs the stored results
(no recomputation) and shows the metrics, the per-layer kept fractions and a marker on every chart. The
curves are panels of one figure: each move redraws every chart, and the browser draws one figure faster than
four."""

import streamlit as st

import explorer_ui as ui
from explorer_ui.cluster import RayUnavailable, run_on_control
from pruning_core import PlanError, ratio_grid
from pruning_core.charts import sweep as charts
from pruning_core.charts.limit import limit_reference
from pruning_core.charts.style import SHORT_TITLES
from pruning_core.tasks import BY_KIND

ui.require_session()
st.title("Sweep")
state = ui.state()
wb = state.workbench
methods = ui.available_methods(wb)
# per-layer FLOPs (what realised FLOPs are computed from) are invisible inside TorchScript / exported programs
flops_known = bool(wb.dense_flops[1])
if note := ui.structured_note(wb):
    st.info(note)

left, right = st.columns([3, 2])
chosen = left.multiselect("Methods", methods, format_func=ui.method_label, **ui.keep(
    "sweep_methods", [m for m in ("magnitude-global", "group-l1") if m in methods], options=methods))
structured = right.radio("Structured methods are evaluated on", ["sliced", "masked"], horizontal=True,
                         format_func={"sliced": "the physically smaller model", "masked": "the masked model"}.get,
                         **ui.keep("sweep_structured", "sliced"))
g1, g2, g3, g4 = st.columns([1, 1, 1, 3])
start = g1.number_input("From ratio", 0.0, 1.0, step=0.05, **ui.keep("sweep_start", 0.0))
stop = g2.number_input("To ratio", 0.0, 1.0, step=0.05, **ui.keep("sweep_stop", 0.9))
steps = g3.number_input("Steps", 1, 50, step=1, **ui.keep("sweep_steps", 10))
listed = g4.text_input("…or a list of ratios (overrides the grid)", placeholder="0, 0.3, 0.5, 0.7, 0.9",
                       **ui.keep("sweep_list", ""))
st.caption("Ratio is the fraction of weights (unstructured) or channels (structured) **removed**; for the "
           "sensitivity-allocated methods, the fraction of FLOPs (parameters) removed. To compare uniform and "
           "allocated per-layer ratios, sweep Group L1 with Sensitivity-allocated and read the FLOPs panel.")

cluster = run_on_control("sweep")
if st.button("Run sweep", type="primary"):
    try:
        ratios = ui.parse_ratios(listed) if listed.strip() else ratio_grid(start, stop, int(steps))
        if not chosen:
            raise PlanError("Choose at least one method.")
        ui.run_sweep_live(chosen, ratios, structured, cluster)
    except (PlanError, RayUnavailable) as e:
        ui.show_error(e, "The sweep did not run")

limit = ui.limit_controls()  # the predicted limit (Zhang et al.), drawn on the curves against the ratio


def _select_ratio() -> None:
    state.choose(ratio=st.session_state["sweep_ratio"])


@st.fragment
def results() -> None:
    record = state.sweep
    if not record or not record.points:
        st.info("No results yet for this model: choose methods and ratios, then run the sweep.")
        return
    result = record.result()
    points = result.points
    task = BY_KIND[result.meta.get("task", "classification")]
    primary = task.primary
    dense = result.meta.get("dense", {}).get(primary, result.meta.get("dense_accuracy"))
    name = task.metric(primary).label
    if not record.finished:
        st.warning(f"This sweep was interrupted: {len(points)} of {record.planned} points were measured; "
                   "they are shown below. Run it again to complete it.")
    ratios = sorted({float(r) for r in points["ratio"]})
    nearest = min(ratios, key=lambda r: abs(r - state.choice.ratio))
    ratio = st.select_slider("Scrub the results: pruning ratio", ratios, format_func=lambda r: f"{r:.2f}",
                             **ui.keep("sweep_ratio", nearest, options=ratios, on_change=_select_ratio))
    at = result.at(ratio).set_index("method")
    at = at[~at.index.duplicated(keep="last")]  # one row per method, even from a record made before merging
    best = at[primary].idxmax()
    cols = st.columns(4)
    cols[0].metric(f"Best {SHORT_TITLES.get(primary, primary).lower()} at ratio {ratio:.2f}" if primary == "accuracy"
                   else f"Best {SHORT_TITLES.get(primary, primary).lower()} at {ratio:.2f}",
                   f"{at.loc[best, primary]:.2%}", f"{(at.loc[best, primary] - dense) * 100:+.1f} pp vs dense",
                   help=f"{at.loc[best, 'label']}: {name}")
    cols[1].metric("Realised sparsity (best method)", f"{at.loc[best, 'sparsity']:.1%}")
    cols[2].metric("Parameters kept", f"{at.loc[best, 'params_fraction']:.1%}")
    cols[3].metric("FLOPs kept", f"{at.loc[best, 'flops_fraction']:.1%}" if flops_known else "n/a")
    st.caption(f"Best at this ratio: **{at.loc[best, 'label']}**.")
    shown_metrics = [m.key for m in task.metrics]
    columns = ["label", *shown_metrics, "sparsity", "params_fraction", "flops_fraction", "evaluation"]
    table = at[[c for c in columns if flops_known or c != "flops_fraction"]].rename(columns={
        "label": "method", "sparsity": "realised sparsity", "params_fraction": "params kept",
        "flops_fraction": "FLOPs kept"})
    # formats in the browser rather than a pandas Styler, which renders every cell on the server per move
    formats = {c: st.column_config.NumberColumn(format="percent") for c in
               [m.key for m in task.metrics if m.percent] + ["realised sparsity", "params kept", "FLOPs kept"]}
    st.dataframe(table, hide_index=True, width="stretch", column_config=formats | {
        m.key: st.column_config.NumberColumn(format="%.4f") for m in task.metrics if not m.percent})
    swept = list(at.index)
    plan_method = state.choice.method if state.choice.method in swept else best
    state.choose(method=plan_method)
    st.selectbox("Plan for the Layers and Export pages", swept, format_func=ui.method_label,
                 **ui.bind("choice_method", plan_method, lambda m: state.choose(method=m)))

    others = [m.key for m in task.metrics if m.key != primary]
    extra = st.radio("The last panel plots", others, horizontal=True,
                     format_func=lambda k: task.metric(k).label, **ui.keep("sweep_extra", others[0], options=others))
    if not flops_known:
        st.info("FLOPs per layer cannot be counted inside this model (TorchScript or exported program), "
                "so FLOPs kept is not measured; parameters kept is.")
    panels = [("ratio", primary), ("flops_fraction", primary), ("params_fraction", primary), ("ratio", extra)]
    panels = [p for p in panels if flops_known or p[0] != "flops_fraction"]
    reference = limit_reference(limit.ratio) if limit is not None else None
    st.plotly_chart(record.figure(("curves", ratio, extra, reference), lambda: charts.metric_panels(
        points, panels, ratio, {primary: dense}, ratio_reference=reference)), key="curves")
    labels = dict(zip(at.index, at["label"], strict=True))
    st.plotly_chart(record.figure(("kept_bars", ratio), lambda: charts.kept_fraction_bars(
        result.layers[(result.layers["ratio"] - ratio).abs() < 1e-9], labels)), key="kept_bars")


results()


@st.fragment
def recovery() -> None:
    """The task's headline (accuracy with labels, agreement without, cosine for embeddings) pruned and pruned +
    fine-tuned at chosen ratios (masks held fixed; the dense model and the sweep are untouched)."""
    from explorer_ui import insight
    from pruning_core.charts.recovery import recovery_curves
    from pruning_core.recovery import recipe_for, training_objective

    st.subheader("Recovery by fine-tuning")
    record = state.sweep
    swept = sorted({str(m) for m in record.result().points["method"]}) if record and record.points else []
    options = swept or methods
    left, mid, right = st.columns([3, 2, 1])
    tune_methods = left.multiselect("Methods to fine-tune", options, format_func=ui.method_label, **ui.keep(
        "recovery_methods", [m for m in ("group-l1",) if m in options] or options[:1], options=options))
    listed = mid.text_input("At ratios", **ui.keep("recovery_ratios", "0.3, 0.5, 0.7"))
    epochs = int(right.number_input("Epochs", 1, 50, step=1, **ui.keep("recovery_epochs", recipe_for(wb)["epochs"])))
    st.caption(f"Each pruned model is fine-tuned on the training split (loss: {training_objective(wb)}) with its "
               "pruned weights held at zero, then evaluated like the sweep. The dense model and the sweep's points "
               "are never changed.")
    tune_on = run_on_control("recovery")
    if st.button("Fine-tune", disabled=not tune_methods):
        try:
            insight.run_recovery_live(tune_methods, ui.parse_ratios(listed), epochs, structured, tune_on)
        except (PlanError, RayUnavailable) as e:
            ui.show_error(e, "Fine-tuning did not run")
    rec = state.recoveries.get(state.key)
    if rec is not None and rec.rows:
        task, frame = wb.task, rec.frame()
        headline = task.metric(task.primary)
        dense = wb.dense_metrics()
        dense_value = {"accuracy": dense.accuracy, "agreement": dense.agreement, **dense.scores}[task.primary]
        st.plotly_chart(recovery_curves(frame, dense_value, metric=task.primary, metric_label=headline.label,
                                        percent=headline.percent), key="recovery_curves")
        shown = [m.key for m in task.metrics if m.key in frame]
        table = frame[["label", "ratio", "stage", *shown, "params_fraction", "flops_fraction", "steps"]].rename(
            columns={"label": "method", "params_fraction": "params kept", "flops_fraction": "FLOPs kept",
                     "steps": "training steps"})
        percent = [m.key for m in task.metrics if m.percent and m.key in shown] + ["params kept", "FLOPs kept"]
        st.dataframe(table, hide_index=True, width="stretch", column_config={
            c: st.column_config.NumberColumn(format="percent") for c in percent} | {
            m.key: st.column_config.NumberColumn(format="%.4f") for m in task.metrics if not m.percent})


recovery()
