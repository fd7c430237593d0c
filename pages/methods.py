"""Methods: each seed method's natural plot on the current model, the paper's claim in one line, and whether
our run agrees. The same checks print as a table with ``python -m pruning_core check``."""

import streamlit as st

import explorer_ui as ui
from pruning_core import checks

ui.require_session()
st.title("Methods")
ss = st.session_state
wb = ui.workbench()
store = ss.setdefault("checks", {})  # (workbench identity, check key) -> CheckReport
st.caption("Every check runs on the model and data loaded now, without fine-tuning unless it says so. "
           "A **no** is a finding about this model, not an error: the papers' claims were made on other "
           "models and data. Ratio is always the fraction **removed**.")

ABOUT = {
    "sap": "PQ Index (PQI) measures how sparse, i.e. how compressible, a weight vector is; SAP prunes each round "
           "the fraction its rule derives from the PQI, then retrains. The PQI plots and the SAP loop itself are "
           "on the **Sparsity** screen; this tab runs the paper's comparison, which **retrains** the model "
           "round after round for four runs in three scopes (quick: 12 rounds x 15 epochs each). That takes "
           "about 20 s for the digits MLP and minutes for convolutional models on a CPU; pressing anything on "
           "the page while it runs cancels it.",
    "id": "A column-pivoted QR of each hidden layer's calibration activations picks the channels to keep; the "
          "interpolation matrix is folded into the next layer so it sees nearly the activations it was trained "
          "on. No gradients, no labels, no fine-tuning.",
    "ispasp": "Each two-layer unit's hidden channels are chosen by a CoSaMP-style loop: the gradient of the output "
              "residual proposes candidates, the dense activation picks among them. The paper's theory says the "
              "error decays faster the sparser the hidden representation; the synthetic experiment tests that.",
}
AUTO = {"id", "ispasp"}  # a few seconds at most on the demo models: run on first view


def verdict_icon(agrees) -> str:
    # coloured words, not emoji: a browser without an emoji font draws those as empty boxes
    return {True: ":green[**yes**]", False: ":red[**no**]"}.get(agrees, ":gray[undecided]")


def verdict_table(results: list[checks.CheckResult]) -> str:
    """Claims as a markdown table (it wraps long text, unlike a dataframe cell)."""
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    rows = ["| agrees | claim (paper) | our run |", "|---|---|---|"]
    rows += [f"| {verdict_icon(r.agrees)} | {cell(r.claim)} | {cell(r.figure)} |" for r in results]
    return "\n".join(rows)


def run(key: str, quick: bool) -> None:
    """Run one check with a progress bar; the outcome (report or error) is remembered per model, so a check
    that cannot run on this model is not retried on every rerun."""
    bar = st.progress(0.0, text=f"Running the {checks.CHECKS[key][0]} check…")

    def progress(fraction: float, text: str) -> None:
        bar.progress(min(max(float(fraction), 0.0), 1.0), text=text)

    entry = {"report": None, "quick": quick, "error": None}
    try:
        entry["report"] = checks.run_check(key, wb, quick=quick, progress=progress)
    except Exception as e:  # a model without two-layer units, a failing library: say so, keep the page working
        entry["error"] = e
    finally:
        bar.empty()
    store[(ss["wb_key"], key)] = entry


def draw(key: str, report: checks.CheckReport) -> None:
    frames = report.frames
    if key == "id":
        from pruning_core import charts_id

        left, right = st.columns(2)
        if "accuracy" in frames:
            left.plotly_chart(charts_id.id_accuracy_curves(frames["accuracy"],
                                                           dense_accuracy=wb.dense_metrics().accuracy),
                              key="id_accuracy")
        if "rank_decay" in frames:
            right.plotly_chart(charts_id.rank_decay_curves(frames["rank_decay"]), key="id_rank_decay")
    elif key == "ispasp":
        from pruning_core import charts_ispasp

        if "synthetic" in frames:
            st.plotly_chart(charts_ispasp.synthetic_residual(frames["synthetic"]), key="ispasp_synthetic")
        left, right = st.columns(2)
        if "residual" in frames:
            left.plotly_chart(charts_ispasp.residual_by_iteration(frames["residual"]), key="ispasp_residual")
        if "accuracy" in frames:
            right.plotly_chart(charts_ispasp.accuracy_by_ratio(frames["accuracy"],
                                                             dense_accuracy=wb.dense_metrics().accuracy),
                               key="ispasp_accuracy")
    elif key == "sap":
        from pruning_core import charts_sparsity

        if "curves" in frames:
            st.plotly_chart(charts_sparsity.sap_panel(frames["curves"]), key="sap_panel")


tabs = st.tabs([checks.CHECKS[k][0] for k in checks.CHECKS])
for tab, key in zip(tabs, checks.CHECKS):
    with tab:
        st.markdown(ABOUT[key])
        entry = store.get((ss["wb_key"], key))
        c1, c2 = st.columns([1, 3])
        quick = c2.toggle("Quick version (fewer points; what the tests run)", **ui.keep(f"check_quick_{key}", True))
        if entry is None and key in AUTO:
            run(key, quick)
            entry = store[(ss["wb_key"], key)]
        if c1.button("Run the check" if entry is None else "Run it again", key=f"run_check_{key}",
                     type="primary" if entry is None else "secondary"):
            run(key, quick)
            entry = store[(ss["wb_key"], key)]
        if entry is None:
            st.info("Not run yet on this model.")
            continue
        if entry["error"] is not None:
            ui.show_error(entry["error"], "The check could not run on this model")
            continue
        report = entry["report"]
        st.markdown(verdict_table(report.results))
        st.caption(f"{'Quick' if entry['quick'] else 'Full'} check, {report.seconds:.1f} s on {wb.device}. "
                   + " ".join(report.notes) + (" The run was stopped before the end." if not report.complete
                                                else ""))
        draw(key, report)
