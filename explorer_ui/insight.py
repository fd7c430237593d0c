"""Seeing inside a model from the screens: channel scores per criterion (kept per model), the sensitivity
analysis as a record that fills in while it runs and resumes where it stopped, and fine-tuning recoveries.

Every long job stores its record in the session's state before its first step and appends each finished cell
or point as it arrives, so a click (which stops the script at its next element call) keeps what finished; the
next run of the same settings measures only what is missing."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd
import streamlit as st

from pruning_core.importance.criteria import CRITERIA, channel_scores

from .plans import method_label
from .state import state

SENSITIVITY_COLUMNS = ["group", "ratio", "accuracy", "loss", "agreement", "accuracy_drop", "loss_increase", "drop"]
LIVE_DRAW_SECONDS = 0.4  # the live heatmap is redrawn at most this often while cells arrive


def criterion_label(key: str) -> str:
    return CRITERIA[key].label if key in CRITERIA else key


def scores(criterion: str) -> dict:
    """Group -> channel scores of ``criterion`` on this session's model, computed once per model."""
    s = state()
    cache_key = (s.key, criterion)
    if cache_key not in s.scores:
        with st.spinner(f"Scoring every channel with {criterion_label(criterion)}…"):
            s.scores[cache_key] = channel_scores(s.workbench, criterion)
    return s.scores[cache_key]


def cached_scores(criterion: str) -> dict | None:
    s = state()
    return s.scores.get((s.key, criterion))


ATTRIBUTIONS_KEPT = 16


def input_attribution(index: int) -> tuple:
    """One evaluation sample's Integrated Gradients map, prediction, probability and label, computed once per
    model and sample (a few hundred milliseconds: not on every rerun of the page)."""
    from pruning_core.importance.attribution import input_attribution as compute

    s = state()
    key = (s.key, int(index))
    if key not in s.attributions:
        if len(s.attributions) >= ATTRIBUTIONS_KEPT:
            s.attributions.pop(next(iter(s.attributions)))
        s.attributions[key] = compute(s.workbench, int(index))
    return s.attributions[key]


@dataclass
class SensitivityRecord:
    """One sensitivity table of a model: its settings and the cells measured so far (rows of
    ``pruning_core.sensitivity``)."""

    criterion: str
    split: str
    ratios: tuple[float, ...]
    groups: tuple[str, ...]
    dense: dict
    rows: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def planned(self) -> int:
        return len(self.groups) * len(self.ratios)

    @property
    def finished(self) -> bool:
        return len(self.rows) >= self.planned

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows) if self.rows else pd.DataFrame(columns=SENSITIVITY_COLUMNS)


def sensitivity_record(criterion: str, split: str, ratios: tuple[float, ...]) -> SensitivityRecord | None:
    s = state()
    return s.sensitivities.get((s.key, criterion, split, tuple(ratios)))


def run_sensitivity_live(criterion: str, split: str, ratios: tuple[float, ...],
                         draw: Callable[[SensitivityRecord], None],
                         cluster: tuple[str, int] | None = None) -> SensitivityRecord:
    """Measure the cells of (criterion, split, ratios) this model does not have yet, with a progress bar, calling
    ``draw(record)`` as cells arrive (at most every ``LIVE_DRAW_SECONDS``). The record is in the session's
    state before the first cell, so a click mid-run keeps every finished cell, and running again resumes.
    ``cluster``: (address, workers) runs one task per group on a Ray cluster (``cluster.run_on_control``)."""
    from .cluster import runner_for

    with runner_for(*cluster) if cluster is not None else contextlib.nullcontext() as runner:
        return _sensitivity_live(criterion, split, ratios, draw, runner)


def _sensitivity_live(criterion: str, split: str, ratios: tuple[float, ...],
                      draw: Callable[[SensitivityRecord], None], runner) -> SensitivityRecord:
    from pruning_core.sensitivity import sensitivity_table

    s = state()
    wb = s.workbench
    key = (s.key, criterion, split, tuple(ratios))
    group_scores = scores(criterion)
    record = s.sensitivities.get(key)
    if record is None:
        groups = tuple(g.name for g in wb.groups.groups if g.name in group_scores)
        record = SensitivityRecord(criterion, split, tuple(ratios), groups, {})
        s.sensitivities[key] = record
    bar = st.progress(len(record.rows) / max(record.planned, 1), text="Pruning one group at a time…")
    last_draw = [0.0]
    start = time.perf_counter()

    def on_row(row: dict) -> None:
        record.rows.append(dict(row))
        record.seconds += float(row.get("seconds", 0.0))
        done = len(record.rows)
        bar.progress(min(done / record.planned, 1.0), text=f"{done}/{record.planned}: {row['group']} at ratio "
                     f"{float(row['ratio']):.2f} -> {wb.task.primary} drop {float(row['drop']) * 100:+.1f} pp")
        if time.perf_counter() - last_draw[0] > LIVE_DRAW_SECONDS:
            draw(record)
            last_draw[0] = time.perf_counter()

    done = record.frame() if record.rows else None
    run = sensitivity_table if runner is None else runner.sensitivity
    run(wb, {g: group_scores[g] for g in record.groups}, list(ratios), split=split, done=done, on_row=on_row)
    bar.progress(1.0, text=f"{record.planned} cells measured ({time.perf_counter() - start:.1f} s this run).")
    return record


@dataclass
class RecoveryRecord:
    """Fine-tuning recoveries of one model: the settings of the last run and every (method, ratio, stage) row."""

    epochs: int
    rows: list[dict] = field(default_factory=list)
    planned: int = 0

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)


def run_recovery_live(methods: list[str], ratios: list[float], epochs: int, structured: str,
                      cluster: tuple[str, int] | None = None) -> RecoveryRecord:
    """Prune and fine-tune each method at each ratio with a progress bar; every finished point is kept in the
    session's state as it arrives (a click stops the run and keeps them). Rows already measured with the same
    epochs are not measured again. ``cluster``: (address, workers) runs one task per (method, ratio) on a Ray
    cluster (``cluster.run_on_control``); the bar then moves per finished point."""
    from .cluster import runner_for

    with runner_for(*cluster) if cluster is not None else contextlib.nullcontext() as runner:
        return _recovery_live(methods, ratios, epochs, structured, runner)


def _recovery_live(methods: list[str], ratios: list[float], epochs: int, structured: str, runner) -> RecoveryRecord:
    from pruning_core.recovery import finetune_steps, run_recovery

    s = state()
    wb = s.workbench
    record = s.recoveries.get(s.key)
    if record is None or record.epochs != epochs:
        record = RecoveryRecord(epochs)
        s.recoveries[s.key] = record
    have = {(r["method"], round(float(r["ratio"]), 6)) for r in record.rows
            if r["stage"] == "fine-tuned" and not r["stopped"]}
    record.rows = [r for r in record.rows if (r["method"], round(float(r["ratio"]), 6)) in have]
    todo = [(m, r) for m in methods for r in ratios if (m, round(float(r), 6)) not in have]
    record.planned = len(have) + len(todo)
    total = finetune_steps(wb, epochs)
    bar = st.progress(0.0, text="Fine-tuning…")
    if runner is not None:  # one task per (method, ratio) on the workers, in any order
        pairs = {}

        def on_point(row: dict) -> None:
            record.rows.append(dict(row))
            if row["stage"] == "fine-tuned":
                pairs[(row["method"], row["ratio"])] = True
                bar.progress(len(pairs) / max(len(todo), 1), text=f"{len(pairs)}/{len(todo)} fine-tuned on "
                             f"{runner.n_workers} Ray workers: {method_label(row['method'])} at ratio "
                             f"{float(row['ratio']):.2f}")

        grids: dict[tuple, list[str]] = {}  # methods that need the same ratios go in one job
        for method in dict.fromkeys(m for m, _ in todo):
            grids.setdefault(tuple(r for m, r in todo if m == method), []).append(method)
        for grid_ratios, grid_methods in grids.items():
            runner.recovery(wb, grid_methods, list(grid_ratios), epochs, structured=structured, on_point=on_point)
        bar.progress(1.0, text=f"{len(todo)} fine-tuned point(s) measured on {runner.n_workers} Ray workers.")
        return record
    last = [0.0]
    for i, (method, ratio) in enumerate(todo):
        def on_step(step: int, loss: float, i=i, method=method, ratio=ratio) -> None:
            if time.perf_counter() - last[0] > 0.25:
                bar.progress(min((i + (step + 1) / max(total, 1)) / len(todo), 1.0),
                             text=f"{method_label(method)} at ratio {ratio:.2f}: step {step + 1}/{total}, "
                                  f"loss {loss:.3f}")
                last[0] = time.perf_counter()

        run_recovery(wb, [s.method(method)], [ratio], epochs, structured=structured,
                     on_point=lambda row: record.rows.append(dict(row)), on_step=on_step)
    bar.progress(1.0, text=f"{len(todo)} fine-tuned point(s) measured.")
    return record


__all__ = ["RecoveryRecord", "SensitivityRecord", "cached_scores", "criterion_label", "input_attribution",
           "run_recovery_live",
           "run_sensitivity_live", "scores", "sensitivity_record"]
