"""Sparsity page: PQI bars for the dense model and the plan, p/q validation, SAP runs kept across reruns and
resumed after a stop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pruning_core.algorithms.pq_index import pqi_table
from pruning_core.experiments.sap import standard_runs

PAGE = "pages/sparsity.py"
REGISTERED = PAGE in (Path(__file__).resolve().parents[2] / "app.py").read_text()
pytestmark = pytest.mark.skipif(not REGISTERED, reason="pages/sparsity.py is not in app.py's navigation yet")


def _open(app, method=None, ratio=None):
    app.session_state["explorer"].choose(method=method, ratio=ratio)  # the plan the Sweep screen would set
    at = app.switch_page(PAGE).run()
    assert not at.exception, at.exception
    return at


def test_pqi_bars_for_the_dense_model_and_the_plan(app, figures):
    at = _open(app, method="magnitude-global", ratio=0.5)
    assert not at.error
    wb = at.session_state["explorer"].workbench
    bars = figures(at)["pqi_bars"]["data"]
    assert [t["name"] for t in bars] == ["dense", "Magnitude, global (unstructured) at ratio 0.50"]
    assert bars[0]["x"] == list(wb.prunable)
    table, glob = pqi_table(wb)
    np.testing.assert_allclose(bars[0]["y"], table["pqi"], rtol=1e-9)
    assert not np.allclose(bars[1]["y"], bars[0]["y"])  # the plan's surviving weights have their own PQI
    assert at.metric[0].value == f"{glob:.4f}"
    curve = figures(at)["pqi_ratio"]["data"]
    assert [t["name"] for t in curve] == ["PQI, global", "PQI, mean per layer", "PQI, mean per neuron", "accuracy"]
    assert curve[0]["y"][0] == pytest.approx(glob)
    at.radio(key="_sparsity_scope").set_value("neuron").run()
    assert not at.exception and "error_y" in figures(at)["pqi_bars"]["data"][0]


def test_invalid_p_and_q_give_a_message_not_a_crash(app, figures):
    at = _open(app)
    at.number_input(key="_sparsity_p").set_value(1.5).run()
    assert not at.exception
    assert at.error and "0 < p < q" in at.error[0].value
    assert "pqi_bars" not in figures(at)
    at.number_input(key="_sparsity_p").set_value(1.0)
    at.number_input(key="_sparsity_q").set_value(2.0).run()
    assert not at.exception and not at.error and "pqi_bars" in figures(at)
    assert not any("SAP round 1" in m.label for m in at.metric)  # the shortcut holds for p=0.5, q=1 only


def test_sap_run_produces_rounds_that_survive_reruns(app, figures):
    at = _open(app)
    at.number_input(key="_sap_rounds").set_value(1)
    at.number_input(key="_sap_epochs").set_value(1)
    at = at.button[0].click().run()
    assert not at.exception and not at.error
    runs = at.session_state["sap"]["runs"]
    assert [r.method for r in runs] == ["SAP(0.5,1)", "SAP(1,2)", "one-shot 20%", "lottery 20%"]
    assert all(r.finished and [rec["round"] for rec in r.records] == [0, 1] for r in runs)
    panel = figures(at)["sap_panel"]["data"]
    remaining = {t["name"]: t["y"] for t in panel if t.get("xaxis") == "x3"}
    assert remaining["one-shot 20%"][1] == pytest.approx(0.8, abs=0.01)
    assert remaining["SAP(1,2)"][1] < remaining["SAP(0.5,1)"][1] < 1.0
    assert not at.warning
    at = at.run()  # any rerun (here: nothing pressed) keeps and redraws the results
    assert not at.exception and figures(at)["sap_panel"]["data"] == panel
    at = at.switch_page("pages/sweep.py").run().switch_page(PAGE).run()
    assert not at.exception and figures(at)["sap_panel"]["data"] == panel


def test_stopped_runs_are_shown_and_continue_resumes_them(app, figures):
    at = _open(app)
    wb = at.session_state["explorer"].workbench
    runs = standard_runs(wb, "finetune", "global", rounds=2, epochs=1)
    next(runs[0])  # as if a stop landed after the first run's round 0
    next(runs[0])
    at.session_state["sap"] = {"key": at.session_state["wb_key"], "runs": runs, "settings": {
        "mode": "finetune", "scope": "global", "rounds": 2, "epochs": 1, "eta_r": 0.0, "gamma": 1.0, "beta": 0.9}}
    at = at.run()
    assert not at.exception
    assert at.warning and "2 of 12 rounds" in at.warning[0].value
    assert len([t for t in figures(at)["sap_panel"]["data"] if t.get("xaxis") == "x3"]) == 1
    cont = next(b for b in at.button if b.label == "Continue")
    assert not cont.disabled
    at = cont.click().run()
    assert not at.exception and not at.warning
    assert [len(r.records) for r in at.session_state["sap"]["runs"]] == [3, 3, 3, 3]
    assert next(b for b in at.button if b.label == "Continue").disabled


def test_invalid_sap_settings_give_a_message_and_keep_earlier_results(app):
    at = _open(app)
    at.number_input(key="_sap_beta").set_value(0.0)
    at = at.button[0].click().run()
    assert not at.exception
    assert at.error and "beta" in at.error[0].value and "sap" not in at.session_state
    assert at.info and "No SAP runs yet" in at.info[-1].value
