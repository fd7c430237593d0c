"""Sweep page: a sweep runs and draws one curve per method; the ratio slider scrubs stored results without a
single new evaluation; an interrupted sweep keeps what it measured; invalid ratios are explained."""

from __future__ import annotations

import pytest
import streamlit as st
import torch
from safetensors.torch import load_file

import explorer_ui
from pruning_core.models import ARCHITECTURES

METHODS = ["magnitude-global", "random", "group-l1"]
RATIOS = [0.0, 0.3, 0.6, 0.9]


def _sweep_page(at, methods=METHODS, ratios="0, 0.3, 0.6, 0.9"):
    at.switch_page("pages/sweep.py").run()
    at.multiselect(key="_sweep_methods").set_value(methods)
    at.text_input(key="_sweep_list").set_value(ratios)
    return at.button[0].click().run()


def _metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.main.metric}


def test_sweep_draws_one_curve_per_method(app, figures):
    at = _sweep_page(app)
    assert not at.exception and not at.error
    charts = figures(at)
    for key, x in (("acc_ratio", "ratio"), ("acc_flops", "flops_fraction"), ("acc_params", "params_fraction")):
        traces = charts[key]["data"]
        assert [t["name"] for t in traces] == [explorer_ui.method_label(m) for m in METHODS], key
        assert all(len(t["x"]) == len(RATIOS) and len(t["y"]) == len(RATIOS) for t in traces), key
    assert charts["acc_ratio"]["data"][0]["x"] == pytest.approx(RATIOS)
    # realised sparsity of structured plans exceeds the nominal ratio (channels remove rows and columns)
    points = explorer_ui.sweep_result(at.session_state["sweeps"][at.session_state["wb_key"]]).points
    group = points[(points["method"] == "group-l1") & (points["ratio"] == 0.6)]
    assert float(group["sparsity"].iloc[0]) > 0.6
    bars = charts["kept_bars"]["data"]
    assert len(bars) == len(METHODS) and len(bars[0]["y"]) == len(at.session_state["wb"].prunable)


def test_scrubbing_reads_stored_results_only(app, figures):
    at = _sweep_page(app)
    wb = at.session_state["wb"]
    passes = wb.eval_passes
    assert passes > len(METHODS) * len(RATIOS)  # the dense pass plus one per point: the counter is live
    at.select_slider(key="_sweep_ratio").set_value(0.3).run()
    at_03 = _metrics(at)
    marker_03 = figures(at)["acc_ratio"]["layout"]["shapes"][-1]["x0"]
    at.select_slider(key="_sweep_ratio").set_value(0.9).run()
    at_09 = _metrics(at)
    assert at_03 != at_09
    assert figures(at)["acc_ratio"]["layout"]["shapes"][-1]["x0"] == 0.9 and marker_03 == 0.3
    assert at.session_state["wb"].eval_passes == passes, "moving the slider must not evaluate anything"
    assert at.session_state["choice_ratio"] == 0.9
    # the slider keeps its value across a page switch
    at.switch_page("pages/layers.py").run()
    at.switch_page("pages/sweep.py").run()
    assert at.select_slider(key="_sweep_ratio").value == 0.9


def test_interrupted_sweep_keeps_measured_points(app, monkeypatch):
    real_sweep = explorer_ui.sweep

    def interrupted(*args, **kwargs):
        for i, point in enumerate(real_sweep(*args, **kwargs)):
            if i == 5:
                st.stop()  # what a click elsewhere does to a running script: it stops between two points
            yield point

    monkeypatch.setattr(explorer_ui, "sweep", interrupted)
    at = _sweep_page(app)
    record = at.session_state["sweeps"][at.session_state["wb_key"]]
    assert len(record["points"]) == 5 and not record["finished"]
    at.run()
    assert at.warning and "5 of 12" in at.warning[0].value
    assert len(at.get("plotly_chart")) == 5


@pytest.mark.parametrize("ratios, message", [("0.5, 1.0", "remove every weight"), ("0.5, -0.2", "negative"),
                                             ("0.5, abc", "must be a number")])
def test_invalid_ratios_are_explained(app, ratios, message):
    at = _sweep_page(app, ratios=ratios)
    assert at.error and message in at.error[0].value
    assert not at.exception
    assert at.session_state["sweeps"].get(at.session_state["wb_key"]) is None


def test_grid_ending_at_one_is_explained(app):
    at = app.switch_page("pages/sweep.py").run()
    at.number_input(key="_sweep_stop").set_value(1.0)
    at = at.button[0].click().run()
    assert at.error and "remove every weight" in at.error[0].value


def test_the_cached_dense_model_is_never_mutated(app):
    at = _sweep_page(app, methods=["magnitude-global", "group-l1"], ratios="0.5, 0.9")
    at.switch_page("pages/layers.py").run()  # draws a mask at the chosen ratio
    cached = explorer_ui.builtin_model("digits-resnet").model
    assert cached is not at.session_state["wb"].model
    on_disk = load_file(str(ARCHITECTURES["digits-resnet"].weights_path))
    state = cached.state_dict()
    assert all(torch.equal(state[k], v) for k, v in on_disk.items())


def _grid_sweep(app, start, stop, steps):
    at = app.switch_page("pages/sweep.py").run()
    at.multiselect(key="_sweep_methods").set_value(["magnitude-global", "group-l1"])
    at.number_input(key="_sweep_start").set_value(start)
    at.number_input(key="_sweep_stop").set_value(stop)
    at.number_input(key="_sweep_steps").set_value(steps)
    return at.button[0].click().run()


def test_a_grid_of_one_repeated_ratio_gives_one_point_per_method(app):
    at = _grid_sweep(app, 0.5, 0.5, 3)
    assert not at.exception and not at.error
    record = at.session_state["sweeps"][at.session_state["wb_key"]]
    assert record["settings"]["ratios"] == [0.5] and record["planned"] == 2 and record["finished"]
    points = explorer_ui.sweep_result(record).points
    assert sorted(points["method"]) == ["group-l1", "magnitude-global"] and set(points["ratio"]) == {0.5}
    assert "Best accuracy at ratio 0.50" in _metrics(at)
    at.switch_page("pages/layers.py").run()
    at.switch_page("pages/sweep.py").run()
    assert not at.exception and "Best accuracy at ratio 0.50" in _metrics(at)


def test_a_stored_record_with_repeated_points_still_renders(app):
    at = _sweep_page(app, methods=["magnitude-global", "group-l1"], ratios="0.5")
    record = at.session_state["sweeps"][at.session_state["wb_key"]]
    record["points"] = record["points"] * 3  # what a sweep over 0.5, 0.5, 0.5 stored before ratios were merged
    record["planned"] = len(record["points"])
    record.pop("result", None)
    at.switch_page("pages/layers.py").run()
    at.switch_page("pages/sweep.py").run()
    assert not at.exception
    assert "Best accuracy at ratio 0.50" in _metrics(at)
    assert len(explorer_ui.sweep_result(record).points) == 2


def test_too_many_ratios_are_refused(app):
    at = _sweep_page(app, ratios=", ".join(["0.5"] * 1000))
    assert not at.exception
    assert at.error and "1,000 ratios were asked for; one sweep evaluates at most 200" in at.error[0].value
    assert at.session_state["sweeps"].get(at.session_state["wb_key"]) is None
