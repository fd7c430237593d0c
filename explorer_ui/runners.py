"""Long jobs run inside a page: progress as they go, and what finished kept when they are stopped.

A click anywhere stops a running script between two steps; each job therefore stores its record in the
session's state before its first step and appends every result as it arrives.
"""

from __future__ import annotations

import time

import streamlit as st

from pruning_core import sweep

from .plans import method_label
from .state import SweepRecord, SweepSettings, state


def run_sweep_live(methods: list[str], ratios: list[float], structured: str) -> SweepRecord:
    """Run a sweep with a progress bar, appending every point to the session's sweep record as soon as it is
    measured, so that leaving the page (or pressing anything) mid-sweep keeps the points already measured."""
    s = state()
    wb = s.workbench
    record = SweepRecord(SweepSettings(tuple(methods), tuple(ratios), structured), meta={
        "model": wb.name, "data": wb.data.name, "device": str(wb.device), "structured_evaluation": structured,
        "dense_accuracy": wb.dense_metrics().accuracy})
    s.sweeps[s.key] = record
    start = time.perf_counter()
    with st.status(f"Sweeping {len(methods)} method(s) x {len(ratios)} ratio(s)…", expanded=True) as status:
        bar = st.progress(0.0, text="Preparing…")

        def on_prepare(key: str) -> None:
            bar.progress(len(record.points) / record.planned, text=f"Preparing {method_label(key)}…")

        for point in sweep(wb, [s.method(m) for m in methods], ratios, structured, on_prepare=on_prepare):
            record.points.append(point)
            done = len(record.points)
            bar.progress(done / record.planned, text=f"{done}/{record.planned}: {point.row['label']} at "
                         f"ratio {point.row['ratio']:g} -> accuracy {point.row['accuracy']:.1%}")
        record.finished = True
        status.update(label=f"Sweep finished: {len(record.points)} points in "
                      f"{time.perf_counter() - start:.1f} s", state="complete", expanded=False)
    return record
