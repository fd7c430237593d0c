"""Layers page, seeing inside: criteria switch the heatmap, the rank-correlation matrix, one sample's input
attribution, what one channel group touches, and the sensitivity table that fills in, stops and resumes."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_criteria_switch_the_heatmap_and_compare(app, figures, state):
    at = app.switch_page("pages/layers.py").run()
    assert not at.exception and not at.error
    l1 = np.array(figures(at)["importance_map"]["data"][0]["z"], dtype=float)
    at.selectbox(key="_layers_criterion").set_value("taylor").run()
    assert not at.exception and not at.error
    taylor = np.array(figures(at)["importance_map"]["data"][0]["z"], dtype=float)
    assert l1.shape == taylor.shape and not np.allclose(np.nan_to_num(l1), np.nan_to_num(taylor))
    at.multiselect(key="_layers_compare").set_value(["l1", "l2", "taylor"])
    at = next(b for b in at.button if b.label == "Compare the rankings").click().run()
    assert not at.exception and not at.error
    corr = figures(at)["rank_corr"]["data"][0]
    z = np.array(corr["z"], dtype=float)
    assert z.shape == (3, 3) and np.allclose(np.diag(z), 1.0)
    assert "input_attr" in figures(at)


def test_one_group_footprint_and_costs(app, figures, state):
    at = app.switch_page("pages/layers.py").run()
    wb = state(at).workbench
    residual = next(g.name for g in wb.groups.groups if len(g.producers) > 1)
    at.selectbox(key="_layers_group").set_value(residual).run()
    assert not at.exception and not at.error
    assert "footprint" in figures(at) and "group_costs" in figures(at)


def test_sensitivity_fills_in_and_is_kept(app, figures, state):
    pytest.importorskip("pruning_core.sensitivity")
    at = app.switch_page("pages/layers.py").run()
    at.text_input(key="_sens_ratios").set_value("0.25, 0.5").run()
    at = next(b for b in at.button if b.label == "Run sensitivity").click().run()
    assert not at.exception and not at.error
    s = state(at)
    (record,) = s.sensitivities.values()
    assert record.finished and len(record.rows) == len(s.workbench.groups.groups) * 2
    heat = [f for k, f in figures(at).items() if k.startswith("sens_map")]
    assert heat and np.isfinite(np.array(heat[-1]["data"][0]["z"], dtype=float)).all()
    assert "sens_curves" in figures(at)


def test_sweep_screen_fine_tunes_and_draws_both_curves(app, figures, state):
    at = app.switch_page("pages/sweep.py").run()
    at.text_input(key="_recovery_ratios").set_value("0.5")
    at.number_input(key="_recovery_epochs").set_value(2).run()
    at = next(b for b in at.button if b.label == "Fine-tune").click().run()
    assert not at.exception and not at.error
    rows = state(at).recoveries[state(at).key].frame()
    assert list(rows["stage"]) == ["pruned", "fine-tuned"] and rows["method"].tolist() == ["group-l1"] * 2
    tuned, pruned = rows.set_index("stage").loc["fine-tuned"], rows.set_index("stage").loc["pruned"]
    assert tuned["accuracy"] > pruned["accuracy"]
    assert "recovery_curves" in figures(at)


def test_a_stopped_sensitivity_table_resumes_with_only_the_missing_cells(app, state, monkeypatch):
    """A run stopped after the first group's cells (as a click stops it: the rows already delivered are in the
    record) shows a warning and a Resume button, and resuming evaluates only the missing cells."""
    pytest.importorskip("pruning_core.sensitivity")
    from explorer_ui import insight
    from pruning_core import sensitivity

    at = app.switch_page("pages/layers.py").run()
    at.text_input(key="_sens_ratios").set_value("0.25, 0.5").run()
    s = state(at)
    wb = s.workbench
    scores = insight.channel_scores(wb, "l1")
    full = sensitivity.sensitivity_table(wb, scores, [0.25, 0.5])
    groups = tuple(g.name for g in wb.groups.groups)
    first = full[full["group"] == groups[0]].to_dict(orient="records")
    s.sensitivities[(s.key, "l1", "eval", (0.25, 0.5))] = insight.SensitivityRecord(
        "l1", "eval", (0.25, 0.5), groups, {}, rows=first)
    at.run()
    assert at.warning and "Stopped after 2 of" in at.warning[0].value
    evaluated = []
    real = sensitivity.sensitivity_table

    def counting(*args, **kwargs):
        table = real(*args, **kwargs)
        evaluated.append((table.attrs["meta"]["cells_reused"], table.attrs["meta"]["cells_evaluated"]))
        return table

    monkeypatch.setattr(sensitivity, "sensitivity_table", counting)
    at = next(b for b in at.button if b.label == "Resume").click().run()
    assert not at.exception and not at.error and not at.warning
    record = s.sensitivities[(s.key, "l1", "eval", (0.25, 0.5))]
    assert record.finished and len(record.rows) == 2 * len(groups)
    got = {(r["group"], r["ratio"]): r["accuracy"] for r in record.rows}
    assert got == {(r["group"], r["ratio"]): r["accuracy"] for r in full.to_dict(orient="records")}
    assert evaluated == [(2, 2 * len(groups) - 2)]  # the two finished cells reused, the rest evaluated once
