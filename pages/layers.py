"""Layers: which channels matter and why. Importance per channel by any criterion (magnitude, BatchNorm scale,
Taylor, activation statistics, captum attributions), where the criteria agree, one sample's input attribution;
everything one channel decision touches; the group-faithful sensitivity table; one layer's weights under a plan."""

import streamlit as st

import explorer_ui as ui
from explorer_ui import insight
from explorer_ui.cluster import RayUnavailable, run_on_control
from pruning_core import PlanError, inspection
from pruning_core.charts import footprint as footprint_charts
from pruning_core.charts import layers as charts
from pruning_core.charts import sensitivity as sens_charts
from pruning_core.charts.attribution import input_attribution_figure, rank_correlation_heatmap
from pruning_core.footprint import group_costs, group_footprint
from pruning_core.importance.compare import rank_correlation
from pruning_core.importance.criteria import CRITERIA

ui.require_session()
st.title("Layers")
wb = ui.workbench()
note = ui.structured_note(wb)
criteria = list(CRITERIA)
importance_tab, touch_tab, sensitivity_tab, layer_tab = st.tabs(
    ["Importance", "What one channel touches", "Sensitivity", "One layer under a plan"])

with importance_tab:
    if note:
        st.info(f"{note} Showing the L1 norm of every output row of each prunable weight instead.")
        table, _ = inspection.channel_importance_table(wb, 1)
        st.plotly_chart(charts.channel_importance_heatmap(
            table, "Output-row importance per layer (L1 norm, each row scaled to its strongest row)"),
            key="importance_map")
    else:
        criterion = st.selectbox("Importance criterion", criteria, format_func=insight.criterion_label,
                                 **ui.keep("layers_criterion", "l1", options=criteria),
                                 help="Low scores are removed first. " + " ".join(
                                     f"{s.label}: {s.description}" for s in CRITERIA.values()))
        spec = CRITERIA[criterion]
        try:
            scores = insight.scores(criterion)
        except Exception as e:  # a criterion that cannot run on this model says why; the page keeps working
            ui.show_error(e, f"{spec.label} could not score this model")
            scores = {}
        groups = [g.name for g in wb.groups.groups]
        if scores:
            table = inspection.score_table(scores, groups)
            event = st.plotly_chart(charts.channel_importance_heatmap(
                table, f"Channel importance per dependency group ({spec.label}, each row scaled to its strongest "
                "channel)", pickable=True), key="importance_map", on_select="rerun", selection_mode="points")
            picked = [p.get("y") for p in (event.selection.points if event else []) if p.get("y") in groups]
            if picked:
                st.session_state["layers_group"] = picked[0]
            st.caption(f"{len(table)} channel groups. {spec.description} {spec.paper and 'Paper: ' + spec.paper}. "
                       "Dark cells are removed first; blank cells: the group has fewer channels. Click a row to see "
                       "everything its channels touch (next tab).")
            missing = [g for g in groups if g not in scores]
            if missing:
                st.caption(f"{spec.label} says nothing about {', '.join(missing)}.")

        st.subheader("Where the criteria agree")
        chosen = st.multiselect("Criteria to compare", criteria, format_func=insight.criterion_label,
                                **ui.keep("layers_compare", [c for c in ("l1", "bn-scale", "taylor", "random")
                                                             if c in criteria], options=criteria))
        if st.button("Compare the rankings", disabled=len(chosen) < 2):
            for c in chosen:
                insight.scores(c)
        have = {c: insight.cached_scores(c) for c in chosen}
        have = {c: v for c, v in have.items() if v is not None}
        if len(have) >= 2:
            overall, per_group = rank_correlation(have)
            labels = {c: insight.criterion_label(c) for c in have}
            scope = st.selectbox("Rank correlation over", ["all groups", *per_group],
                                 **ui.keep("layers_corr_scope", "all groups", options=["all groups", *per_group]))
            matrix = overall if scope == "all groups" else per_group[scope]
            st.plotly_chart(rank_correlation_heatmap(matrix.rename(index=labels, columns=labels),
                                                     f"Spearman rank correlation of channel scores ({scope})"),
                            key="rank_corr")
            st.caption("1: the criteria order a group's channels identically; 0: unrelated orders. Over all groups "
                       "the within-group correlations are averaged, weighted by channels.")
        else:
            st.caption("Choose two or more criteria and press the button (gradient and captum criteria take a few "
                       "seconds each on the calibration split).")

        st.subheader("One sample, attributed to its input")
        n_eval = len(wb.eval_x)
        index = int(st.number_input("Evaluation sample", 0, n_eval - 1, step=1, **ui.keep("layers_sample", 0)))
        try:
            attribution, predicted, probability, label = insight.input_attribution(index)
            st.plotly_chart(input_attribution_figure(wb.eval_x[index].cpu(), attribution, predicted, probability,
                                                     label), key="input_attr")
            st.caption("Integrated Gradients (captum) of the predicted class from a zero input: red pixels raise "
                       "the predicted class's score, blue ones lower it; the attributions sum to the score's change "
                       "from the zero input.")
        except Exception as e:
            ui.show_error(e, "No attribution map")

with touch_tab:
    if note:
        st.info(note)
    else:
        groups = [g.name for g in wb.groups.groups]
        group = st.selectbox("Channel group (or click a row of the importance heatmap)", groups,
                             **ui.keep("layers_group", groups[0], options=groups))
        g = wb.groups.by_name[group]
        rows = group_footprint(wb, group)
        costs = group_costs(wb)
        cost = costs.set_index("group").loc[group]
        c1, c2, c3, c4 = st.columns(4)
        c1.metric("Channels", f"{g.size}")
        c2.metric("Tensors it spans", f"{len(rows)}")
        c3.metric("Parameters per channel", ui.fmt_count(int(cost["params_per_channel"])))
        c4.metric("FLOPs per channel", ui.fmt_count(int(cost["flops_per_channel"])))
        st.plotly_chart(footprint_charts.footprint_figure(rows, group), key="footprint")
        st.dataframe(rows, hide_index=True, width="stretch")
        st.plotly_chart(footprint_charts.group_cost_bars(costs, group), key="group_costs")
        st.caption("What removing one channel of each group removes (measured on the model with that one channel "
                   "sliced off). A residual stream's channel is the output of several layers and the input of "
                   "several more, so it costs far more than a channel inside one block.")

with sensitivity_tab:
    if note:
        st.info(note)
    else:
        left, mid, right = st.columns([2, 1, 2])
        s_criterion = left.selectbox("Channels removed first by", criteria, format_func=insight.criterion_label,
                                     **ui.keep("sens_criterion", "l1", options=criteria))
        split = mid.radio("Measured on", ["eval", "calib"], format_func={
            "eval": "evaluation split", "calib": "calibration split"}.get, **ui.keep("sens_split", "eval"))
        listed = right.text_input("Ratios of each group's channels", **ui.keep(
            "sens_ratios", "0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9"))
        headline = wb.task.primary
        shown_metrics = ["drop", "loss_increase", "agreement"] if wb.task.labelled else ["drop", "agreement"]
        metric = st.radio("Heatmap shows", shown_metrics, horizontal=True, format_func=lambda m: (
            f"{wb.task.metric(headline).label} lost (points)" if m == "drop" else sens_charts.METRIC_TITLES[m]),
            **ui.keep("sens_metric", "drop", options=shown_metrics))
        try:
            ratios = tuple(r for r in ui.parse_ratios(listed) if r > 0)
        except PlanError as e:
            ui.show_error(e, "Ratios not understood")
            ratios = ()
        record = insight.sensitivity_record(s_criterion, split, ratios) if ratios else None
        slot = st.empty()
        groups = [g.name for g in wb.groups.groups]

        drawn = [0]

        def draw(rec) -> None:  # redrawn into one slot while cells arrive: each drawing its own element key
            drawn[0] += 1
            slot.plotly_chart(sens_charts.sensitivity_heatmap(rec.frame(), list(rec.groups), list(rec.ratios),
                                                              metric), key=f"sens_map_{drawn[0]}")

        label = "Resume" if record is not None and 0 < len(record.rows) < record.planned else "Run sensitivity"
        cluster = run_on_control("sensitivity")
        if st.button(label, type="primary", disabled=not ratios or (record is not None and record.finished)):
            try:
                record = insight.run_sensitivity_live(s_criterion, split, ratios, draw, cluster)
            except (PlanError, RayUnavailable) as e:
                ui.show_error(e, "The sensitivity analysis did not run")
        if record is not None and record.rows:
            draw(record)
            frame = record.frame()
            if not record.finished:
                st.warning(f"Stopped after {len(record.rows)} of {record.planned} cells; they are kept. Press Resume "
                           "to measure the rest.")
            shown = st.multiselect("Curves for groups", list(record.groups),
                                   **ui.keep("sens_groups", list(record.groups)[:4], options=list(record.groups)))
            curve = headline if headline in frame.columns else "agreement"  # the table has no cosine column
            dense = float(frame[curve].iloc[0] + frame["drop"].iloc[0]) if curve == headline else 1.0
            st.plotly_chart(sens_charts.sensitivity_curves(frame, shown, curve, dense), key="sens_curves")
            d1, d2 = st.columns(2)
            d1.download_button("Download CSV", frame.to_csv(index=False), "sensitivity.csv", "text/csv")
            d2.download_button("Download JSON", frame.to_json(orient="records"), "sensitivity.json",
                               "application/json")
            st.caption("Each cell prunes one dependency group alone, exactly as a real prune would (producers, "
                       "BatchNorms, every consumer's inputs and residual partners together), the rest dense. A table "
                       "is kept per model, criterion, split and ratios; a stopped run resumes where it stopped.")
        elif ratios:
            st.info("Not measured yet for these settings: press Run sensitivity. The heatmap fills in as it runs.")

with layer_tab:
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
    importance, unit = inspection.layer_importance(wb, layer, plan, 1)
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
