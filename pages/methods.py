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
stopped_runs = ss.setdefault("checks_stopped", {})  # check key -> True after a click stopped its run
st.caption("Every check runs on the model and data loaded now, without fine-tuning unless it says so. "
           "A **no** is a finding about this model, not an error: the papers' claims were made on other "
           "models and data. Ratio is always the fraction **removed**.")

def verdict_icon(agrees) -> str:
    # coloured words, not emoji: a browser without an emoji font draws those as empty boxes
    return {True: ":green[**yes**]", False: ":red[**no**]"}.get(agrees, ":gray[undecided]")


HEADS = {"claim": ("| agrees | claim (paper) | our run |", "|---|---|---|"),
         "self-test": ("| holds | identity (our code) | our run |", "|---|---|---|"),
         "description": ("| what | our run |", "|---|---|")}
TITLES = {"self-test": "**Self-tests**: identities that hold whenever our code is right; they are not evidence "
                       "for or against the paper.",
          "description": "**Descriptions**: numbers worth reading that decide nothing."}


def verdict_table(results: list[checks.CheckResult], kind: str = "claim") -> str:
    """One kind of result as a markdown table (it wraps long text, unlike a dataframe cell)."""
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    def what(r) -> str:  # a model-free result (the synthetic experiment) says so
        return cell(r.claim) + (" (synthetic, no model)" if r.model == "synthetic" else "")

    rows = list(HEADS[kind])
    if kind == "description":
        rows += [f"| {what(r)} | {cell(r.figure)} |" for r in results]
    else:
        rows += [f"| {verdict_icon(r.agrees)} | {what(r)} | {cell(r.figure)} |" for r in results]
    return "\n".join(rows)


def run(key: str, quick: bool, long: bool = False) -> None:
    """Run one check with a progress bar; the outcome (report, partial report or error) is remembered per
    model, so a check that cannot run on this model is not retried on every rerun, and a click during a run
    keeps what finished."""
    # After a click stopped the run, every session-state access raises Streamlit's stop again: the slot and the
    # markers are plain dicts taken from the state before the run
    slot = (ss["wb_key"], key)
    running = store[slot] = {"running": True}  # until the run returns; a rerun that starts before then waits
    try:
        entry, stop = ui.run_check_live(key, wb, quick, long)
    finally:
        if store.get(slot) is running:  # nothing came back (the thread was torn down): never wait for it
            store[slot] = {"report": None, "quick": quick, "long": long, "error": RuntimeError("interrupted")}
    store[slot] = entry
    if stop is not None:
        # a rerun the click asks for may replay the press that started the run: marked, that replay shows what
        # was kept instead of starting the check again
        stopped_runs[key] = True
        raise stop  # Streamlit goes on with the click, and the page shows what was kept


@st.fragment(run_every=1.0)
def wait_for_stopped_run(slot: tuple) -> None:
    """A click stops a running check, and Streamlit may start the page again before the stopped run has
    finished its current step and handed back what it has: poll until it has, then draw the page again."""
    if not store.get(slot, {}).get("running"):
        st.rerun()
    st.info("Stopping the check after its current step; what finished will show here.")


def draw(check: checks.Check, report: checks.CheckReport) -> None:
    """The check's figures, row by row, side by side within a row."""
    for row in check.figures(report, dense_accuracy=wb.dense_metrics().accuracy):
        if not row:
            continue
        places = st.columns(len(row)) if len(row) > 1 else [st]
        for place, (name, figure) in zip(places, row.items(), strict=True):
            place.plotly_chart(figure, key=f"{check.key}_{name}")


if reason := checks.unavailable(wb):  # the claims are about accuracy against labels: say so once, not six times
    st.info(reason)
    st.stop()

tabs = st.tabs([check.title for check in checks.CHECKS.values()])
for tab, (key, check) in zip(tabs, checks.CHECKS.items(), strict=True):
    with tab:
        st.markdown(check.about)
        entry = store.get((ss["wb_key"], key))
        if entry is not None and entry.get("running"):
            wait_for_stopped_run((ss["wb_key"], key))
            continue
        c1, c2 = st.columns([1, 3])
        quick = c2.toggle("Quick version (fewer points; what the tests run)", **ui.keep(f"check_quick_{key}", True))
        long = bool(check.long) and c2.toggle(f"Long version: {check.long}", **ui.keep(f"check_long_{key}", False))
        quick = quick and not long
        if entry is None and check.auto:
            run(key, quick)
            entry = store[(ss["wb_key"], key)]
        replayed = stopped_runs.pop(key, False)  # this run follows a click that stopped the check
        if c1.button("Run the check" if entry is None else "Run it again", key=f"run_check_{key}",
                     type="primary" if entry is None else "secondary") and not replayed:
            run(key, quick, long)
            entry = store[(ss["wb_key"], key)]
        if entry is None:
            st.info("Not run yet on this model.")
            continue
        if entry["error"] is not None:
            ui.show_error(entry["error"], "The check could not run on this model")
            continue
        report = entry["report"]
        claims = [r for r in report.results if r.kind == "claim"]
        st.markdown(verdict_table(claims) if claims else "No paper claim was judged.")
        st.caption(checks.summary(report.results))
        for kind in ("self-test", "description"):
            part = [r for r in report.results if r.kind == kind]
            if part:
                st.markdown(TITLES[kind])
                st.markdown(verdict_table(part, kind))
        version = "Long" if entry.get("long") else "Quick" if entry["quick"] else "Full"
        stopped = "" if report.complete else " The run was stopped before the end; what finished is shown."
        st.caption(f"{version} check, {report.seconds:.1f} s on {wb.device}. " + " ".join(report.notes) + stopped)
        draw(check, report)
