"""Sparsity: the PQ Index (Diao et al., ICLR 2023) of every layer for the dense model and the current plan, PQI
against the ratio of one-shot magnitude pruning, and SAP's iterative loop beside its 20%-per-round baselines.
Every finished SAP round is kept in session state at once, so a stop or any rerun loses nothing."""

import streamlit as st

import explorer_ui as ui
from pruning_core import PlanError
from pruning_core.algorithms.pq_index import SCOPES, check_pq, pqi_table
from pruning_core.charts import sparsity as charts
from pruning_core.charts.limit import add_predicted_limit
from pruning_core.experiments.pqi_curve import plan_masks, pqi_magnitude_curve
from pruning_core.experiments.sap import MODES, runs_frame, standard_runs

ui.require_session()
st.title("Sparsity")
ss = st.session_state
wb = ui.workbench()
dense_accuracy = wb.dense_metrics().accuracy

left, mid, right = st.columns([1, 1, 2])
p = left.number_input("p", step=0.1, format="%g", help="PQ Index exponent p; needs 0 < p < q",
                      **ui.keep("sparsity_p", 0.5))
q = mid.number_input("q", step=0.1, format="%g", help="PQ Index exponent q (the paper: p=0.5, q=1 and p=1, q=2)",
                     **ui.keep("sparsity_q", 1.0))
scope = right.radio("Scope", list(SCOPES), horizontal=True, **ui.keep("sparsity_scope", "layer"),
                    help="neuron: one PQI per output row; layer: per weight tensor; global: all weights together")
st.caption("PQI = 1 − d^(1/q−1/p)·‖w‖p/‖w‖q over the unpruned weights of a unit: 0 when all magnitudes are "
           "equal, larger when fewer weights carry the mass. Biases and norm layers are not included.")

try:
    p, q = check_pq(p, q)
except ValueError as e:
    st.error(f"PQI not computed: {e}", icon="⚠️")
else:
    method, ratio = ui.choice()
    tables, globals_ = {}, {}
    tables["dense"], globals_["dense"] = pqi_table(wb, None, p, q)
    try:
        plan = ui.plan_for(method, ratio)
        name = f"{ui.method_label(method)} at ratio {ratio:.2f}"
        tables[name], globals_[name] = pqi_table(wb, plan_masks(wb, plan), p, q)
    except PlanError as e:
        ui.show_error(e, "No plan to compare")
    cols = st.columns(len(globals_) + 1)
    for col, (series, value) in zip(cols, globals_.items(), strict=False):  # one more column: the SAP note
        col.metric(f"Global PQI, {series}", f"{value:.4f}")
    if (p, q) == (0.5, 1.0):
        cols[-1].metric("SAP round 1 would prune", f"{globals_['dense']:.1%}", help=(
            "With p=0.5, q=1, eta_r=0, gamma=1 the SAP rule prunes a fraction PQI of the surviving weights "
            "(global scope, capped at beta=0.9)."))
    st.plotly_chart(charts.pqi_layer_bars(tables, globals_, p, q, scope), key="pqi_bars")
    st.caption(f"The plan is the Sweep screen's choice ({ui.method_label(method)}, ratio = fraction removed "
               f"{ratio:.2f}); its PQI counts only the weights it keeps.")
    curves = ss.setdefault("sparsity_curves", {})
    curve_key = (ss["wb_key"], p, q)
    if curve_key not in curves:
        with st.spinner("Pruning by global magnitude at 12 ratios…"):
            curves[curve_key] = pqi_magnitude_curve(wb, [i / 20 for i in range(0, 20, 2)] + [0.95, 0.98], p, q)
    limit = ui.limit_controls()  # the predicted limit (Zhang et al.), drawn on the chart against the ratio
    figure = charts.pqi_ratio_curves(curves[curve_key], dense_accuracy)
    st.plotly_chart(add_predicted_limit(figure, limit.ratio) if limit else figure, key="pqi_ratio")

st.subheader("SAP: sparsity-informed adaptive pruning")
st.caption("Each round prunes within the scope, then retrains. Runs SAP(0.5,1), SAP(1,2) and the paper's "
           "baselines, which prune 20% of the surviving weights per round (one-shot ranks the first trained "
           "model, lottery the latest). With p=0.5, q=1, eta_r=0, gamma=1, SAP prunes a fraction PQI per round.")
c = st.columns(4)
mode = c[0].radio("Retraining", list(MODES), **ui.keep("sap_mode", "rewind"),
                  format_func={"rewind": "rewind to init (paper)", "finetune": "fine-tune (variant)"}.get)
sap_scope = c[1].radio("SAP scope", list(SCOPES), **ui.keep("sap_scope", "layer"))
rounds = c[2].number_input("Rounds", 1, 40, step=1, **ui.keep("sap_rounds", 6))
epochs = c[3].number_input("Epochs per round", 1, 200, step=1, **ui.keep("sap_epochs", 10))
c = st.columns(3)
eta_r = c[0].number_input("eta_r", step=0.01, format="%g", **ui.keep("sap_eta_r", 0.0))
gamma = c[1].number_input("gamma", step=0.1, format="%g", **ui.keep("sap_gamma", 1.0))
beta = c[2].number_input("beta (largest fraction per round)", step=0.05, format="%g", **ui.keep("sap_beta", 0.9))

record = ss.get("sap") if ss.get("sap", {}).get("key") == ss["wb_key"] else None
unfinished = record is not None and not all(run.finished for run in record["runs"])
b = st.columns([1, 1, 1, 3])
start = b[0].button("Run SAP", type="primary")
resume = b[1].button("Continue", disabled=not unfinished, help="Resume the stopped runs where they stopped")
b[2].button("Stop", help="Stops after the round in progress; the finished rounds are kept")

go = resume
if start:
    try:
        runs = standard_runs(wb, mode, sap_scope, int(rounds), int(epochs), eta_r, gamma, beta)
        record = ss["sap"] = {"key": ss["wb_key"], "runs": runs, "settings": {
            "mode": mode, "scope": sap_scope, "rounds": int(rounds), "epochs": int(epochs), "eta_r": eta_r,
            "gamma": gamma, "beta": beta}}
        go = True
    except ValueError as e:
        st.error(f"SAP did not run: {e}", icon="⚠️")
if go and record is not None:
    runs = record["runs"]
    total = sum(run.rounds + 1 for run in runs)
    bar = st.progress(sum(len(run.records) for run in runs) / total, text="Starting…")
    for run in runs:
        for rec in run:  # each finished round is already in session state (run.records)
            done = sum(len(r.records) for r in runs)
            bar.progress(done / total, text=f"{run.method}: round {rec['round']} of {run.rounds}, "
                         f"{rec['remaining']:.1%} remaining, accuracy {rec['accuracy']:.1%}")
    st.rerun()  # redraw the buttons for the finished state

if record is not None and any(run.records for run in record["runs"]):
    frame = runs_frame(record["runs"])
    s = record["settings"]
    if not all(run.finished for run in record["runs"]):
        done = sum(len(run.records) for run in record["runs"])
        st.warning(f"Stopped: {done} of {sum(r.rounds + 1 for r in record['runs'])} rounds finished (shown). "
                   "Continue resumes where the runs stopped.")
    st.plotly_chart(charts.sap_panel(frame, dense_accuracy), key="sap_panel")
    st.caption(f"{MODES[s['mode']].capitalize()}: {s['mode']}, scope {s['scope']}, {s['epochs']} epochs per "
               f"round, eta_r={s['eta_r']:g}, gamma={s['gamma']:g}, beta={s['beta']:g}; initial weights: "
               f"{record['runs'][0].config['init']}. PQI is measured on each retrained model, as in the paper.")
    table = frame[["run", "round", "remaining", "pqi_ref", "pqi", "accuracy", "pruned_accuracy", "pruned_fraction",
                   "seconds"]].rename(columns={"pqi_ref": "PQI (0.5, 1)", "pqi": "PQI (run's p, q)",
                                               "pruned_accuracy": "accuracy right after pruning"})
    st.dataframe(table.style.format({"remaining": "{:.2%}", "accuracy": "{:.2%}", "PQI (0.5, 1)": "{:.4f}",
                                     "PQI (run's p, q)": "{:.4f}", "accuracy right after pruning": "{:.2%}",
                                     "pruned_fraction": "{:.2%}", "seconds": "{:.2f}"}),
                 hide_index=True, width="stretch")
else:
    st.info("No SAP runs yet for this model: choose the settings and press Run SAP.")
