"""Long jobs run inside a page: progress as they go, and what finished kept when they are stopped.

A click anywhere stops a running script between two steps; each job therefore stores its record in the
session's state before its first step and appends every result as it arrives (the live sweep), or catches the
stop at its progress bar, asks the job to stop at its next step and stores what the job returns before the
page reruns (a paper check).
"""

from __future__ import annotations

import contextlib
import time

import streamlit as st
from streamlit.runtime.scriptrunner_utils.exceptions import ScriptControlException

from pruning_core import checks, metrics
from pruning_core.sweep import sweep, sweep_meta

from .cluster import runner_for
from .plans import method_label
from .state import SweepRecord, SweepSettings, state


def run_sweep_live(methods: list[str], ratios: list[float], structured: str,
                   cluster: tuple[str, int] | None = None) -> SweepRecord:
    """Run a sweep with a progress bar, appending every point to the session's sweep record as soon as it is
    measured, so that leaving the page (or pressing anything) mid-sweep keeps the points already measured.
    ``cluster``: None runs here; (address, workers) runs on a Ray cluster (``cluster.run_on_control``), points
    arriving as they finish; a click cancels what has not finished. Raises ``RayUnavailable`` when the cluster
    cannot be reached or its workers cannot build the workbench (nothing is recorded then)."""
    with runner_for(*cluster) if cluster is not None else contextlib.nullcontext() as runner:
        return _sweep_live(methods, ratios, structured, runner)


def _sweep_live(methods: list[str], ratios: list[float], structured: str, runner) -> SweepRecord:
    s = state()
    wb = s.workbench
    record = SweepRecord(SweepSettings(tuple(methods), tuple(ratios), structured),
                         meta=sweep_meta(wb, structured))
    s.sweeps[s.key] = record
    start = time.perf_counter()
    with st.status(f"Sweeping {len(methods)} method(s) x {len(ratios)} ratio(s)…", expanded=True) as status:
        bar = st.progress(0.0, text="Preparing…")

        last = ["Preparing…"]

        def on_prepare(key: str) -> None:
            last[0] = f"Preparing {method_label(key)}…"
            bar.progress(len(record.points) / record.planned, text=last[0])

        def within_pass(samples: int, total: int) -> None:
            # a large model's pass is many batches: the bar moves inside it, and a click lands between two batches
            # (the workbench restores its model on the way out) instead of after the whole point
            if samples < total:
                bar.progress((len(record.points) + samples / total) / record.planned,
                             text=f"{last[0]} ({samples}/{total} samples of the next point)")

        if runner is None:
            stream = sweep(wb, [s.method(m) for m in methods], ratios, structured, on_prepare=on_prepare)
        else:
            stream = runner.sweep(wb, methods, ratios, structured)
            status.update(label=f"Sweeping {len(methods)} method(s) x {len(ratios)} ratio(s) on "
                          f"{runner.n_workers} Ray workers…")
        with metrics.between_batches(within_pass), contextlib.closing(stream):  # a click cancels the rest
            for point in stream:
                record.points.append(point)
                done = len(record.points)
                primary = record.meta["primary"]
                last[0] = (f"{done}/{record.planned}: {point.row['label']} at ratio {point.row['ratio']:g} -> "
                           f"{primary} {point.row[primary]:.1%}")
                bar.progress(done / record.planned, text=last[0])
        record.finished = True
        where = f" on {runner.n_workers} Ray workers" if runner is not None else ""
        status.update(label=f"Sweep finished: {len(record.points)} points in "
                      f"{time.perf_counter() - start:.1f} s{where}", state="complete", expanded=False)
    return record


def run_check_live(key: str, wb, quick: bool, long: bool = False
                   ) -> tuple[dict, ScriptControlException | None]:
    """Run one paper check with a progress bar. Returns its entry: ``report`` (a ``CheckReport``, incomplete when
    stopped), ``error`` (what the check raised: a model without two-layer units, a failing library), ``stopped``
    and the ``quick``/``long`` settings; and the held-back stop, if the person clicked while it ran.

    A click makes Streamlit stop the script at its next element call, here the progress bar. That stop is held
    back: the check is told to stop (``should_stop``, polled between its steps) and returns what finished. The
    page keeps the entry and then raises the stop, so the rerun shows what was kept."""
    bar = st.progress(0.0, text=f"Running the {checks.CHECKS[key].title} check…")
    held: list[ScriptControlException] = []

    def progress(fraction: float, text: str) -> None:
        if held:
            return
        try:
            bar.progress(min(max(float(fraction), 0.0), 1.0), text=text)
        except ScriptControlException as stop:  # a click: finish the current step, keep what is done
            held.append(stop)

    entry = {"report": None, "quick": quick, "long": long, "error": None}
    try:
        entry["report"] = checks.run_check(key, wb, quick=quick, progress=progress, should_stop=lambda: bool(held),
                                           long=long)
    except Exception as e:  # keep the page working; the page shows the error
        entry["error"] = e
    if not held:
        try:
            bar.empty()
        except ScriptControlException as stop:
            held.append(stop)
    entry["stopped"] = bool(held)
    return entry, (held[0] if held else None)
