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


def _panels(figure) -> dict[str, list[dict]]:
    """The traces of each panel of the curves figure, by its x column's axis title."""
    layout = figure["layout"]
    by_axis = {}
    for trace in figure["data"]:
        axis = "xaxis" + trace.get("xaxis", "x")[1:]
        by_axis.setdefault(layout[axis]["title"]["text"], []).append(trace)
    return by_axis


def test_sweep_draws_one_curve_per_method(app, figures, state):
    at = _sweep_page(app)
    assert not at.exception and not at.error
    charts = figures(at)
    assert set(charts) == {"curves", "kept_bars"}
    panels = _panels(charts["curves"])
    labels = [explorer_ui.method_label(m) for m in METHODS]
    for x in ("pruning ratio (fraction removed, nominal)", "FLOPs kept (fraction of dense)",
              "parameters kept (fraction of dense)"):
        traces = panels[x]
        assert [t["name"] for t in traces][:len(METHODS)] == labels, x
        assert all(len(t["x"]) == len(RATIOS) and len(t["y"]) == len(RATIOS) for t in traces), x
    ratio_panels = panels["pruning ratio (fraction removed, nominal)"]
    assert len(ratio_panels) == 2 * len(METHODS)  # accuracy and agreement against the ratio
    assert ratio_panels[0]["x"] == pytest.approx(RATIOS)
    # one legend entry per method, shared by the four panels
    assert [t["name"] for t in charts["curves"]["data"] if t.get("showlegend", True)] == labels
    # realised sparsity of structured plans exceeds the nominal ratio (channels remove rows and columns)
    points = state(at).sweep.result().points
    group = points[(points["method"] == "group-l1") & (points["ratio"] == 0.6)]
    assert float(group["sparsity"].iloc[0]) > 0.6
    bars = charts["kept_bars"]["data"]
    assert len(bars) == len(METHODS) and len(bars[0]["y"]) == len(state(at).workbench.prunable)


def _ratio_marks(figure) -> list[str]:
    """Every place a chart names the selected ratio: panel markers and the bars' title."""
    texts = [a["text"] for a in figure["layout"].get("annotations", [])] + [figure["layout"]["title"]["text"]
                                                                          if "title" in figure["layout"] else ""]
    return [t for t in texts if "r = " in t]


def test_scrubbing_reads_stored_results_only(app, figures, state):
    at = _sweep_page(app)
    wb = state(at).workbench
    passes = wb.eval_passes
    assert passes > len(METHODS) * len(RATIOS)  # the dense pass plus one per point: the counter is live
    at.select_slider(key="_sweep_ratio").set_value(0.3).run()
    at_03 = _metrics(at)
    markers_03 = [s["x0"] for s in figures(at)["curves"]["layout"]["shapes"] if s["yref"].endswith("domain")]
    at.select_slider(key="_sweep_ratio").set_value(0.9).run()
    at_09 = _metrics(at)
    assert at_03 != at_09
    charts = figures(at)
    # the vertical marker on both panels against the ratio, and every panel and chart names the ratio
    assert [s["x0"] for s in charts["curves"]["layout"]["shapes"] if s["yref"].endswith("domain")] == [0.9, 0.9]
    assert markers_03 == [0.3, 0.3]
    assert len(_ratio_marks(charts["curves"])) == 4 and all("r = 0.90" in t for t in _ratio_marks(charts["curves"]))
    assert _ratio_marks(charts["kept_bars"]) == ["Kept fraction per layer at r = 0.90"]
    # on every curve, one point is ringed: the one measured at the selected ratio
    for trace in charts["curves"]["data"]:
        ringed = [row[0] for row, size in zip(trace["customdata"], trace["marker"]["size"], strict=True) if size == 14]
        assert ringed == [pytest.approx(0.9)], trace["name"]
    assert state(at).workbench.eval_passes == passes, "moving the slider must not evaluate anything"
    assert state(at).choice.ratio == 0.9
    # the slider keeps its value across a page switch
    at.switch_page("pages/layers.py").run()
    at.switch_page("pages/sweep.py").run()
    assert at.select_slider(key="_sweep_ratio").value == 0.9


def test_interrupted_sweep_keeps_measured_points(app, monkeypatch, state):
    real_sweep = explorer_ui.runners.sweep

    def interrupted(*args, **kwargs):
        for i, point in enumerate(real_sweep(*args, **kwargs)):
            if i == 5:
                st.stop()  # what a click elsewhere does to a running script: it stops between two points
            yield point

    monkeypatch.setattr(explorer_ui.runners, "sweep", interrupted)
    at = _sweep_page(app)
    record = state(at).sweep
    assert len(record.points) == 5 and not record.finished
    at.run()
    assert at.warning and "5 of 12" in at.warning[0].value
    assert {el.key for el in at.get("plotly_chart")} == {"curves", "kept_bars"}


@pytest.mark.parametrize("ratios, message", [("0.5, 1.0", "remove every weight"), ("0.5, -0.2", "negative"),
                                             ("0.5, abc", "must be a number")])
def test_invalid_ratios_are_explained(app, ratios, message, state):
    at = _sweep_page(app, ratios=ratios)
    assert at.error and message in at.error[0].value
    assert not at.exception
    assert state(at).sweep is None


def test_grid_ending_at_one_is_explained(app):
    at = app.switch_page("pages/sweep.py").run()
    at.number_input(key="_sweep_stop").set_value(1.0)
    at = at.button[0].click().run()
    assert at.error and "remove every weight" in at.error[0].value


def test_the_cached_dense_model_is_never_mutated(app, state):
    at = _sweep_page(app, methods=["magnitude-global", "group-l1"], ratios="0.5, 0.9")
    at.switch_page("pages/layers.py").run()  # draws a mask at the chosen ratio
    cached = explorer_ui.builtin_model("digits-resnet").model
    assert cached is not state(at).workbench.model
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


def test_a_grid_of_one_repeated_ratio_gives_one_point_per_method(app, state):
    at = _grid_sweep(app, 0.5, 0.5, 3)
    assert not at.exception and not at.error
    record = state(at).sweep
    assert record.settings.ratios == (0.5,) and record.planned == 2 and record.finished
    points = record.result().points
    assert sorted(points["method"]) == ["group-l1", "magnitude-global"] and set(points["ratio"]) == {0.5}
    assert "Best accuracy at ratio 0.50" in _metrics(at)
    at.switch_page("pages/layers.py").run()
    at.switch_page("pages/sweep.py").run()
    assert not at.exception and "Best accuracy at ratio 0.50" in _metrics(at)


def test_a_stored_record_with_repeated_points_still_renders(app, state):
    at = _sweep_page(app, methods=["magnitude-global", "group-l1"], ratios="0.5")
    record = state(at).sweep
    record.points = record.points * 3  # what a sweep over 0.5, 0.5, 0.5 stored before ratios were merged
    at.switch_page("pages/layers.py").run()
    at.switch_page("pages/sweep.py").run()
    assert not at.exception
    assert "Best accuracy at ratio 0.50" in _metrics(at)
    assert len(record.result().points) == 2


def test_too_many_ratios_are_refused(app, state):
    at = _sweep_page(app, ratios=", ".join(["0.5"] * 1000))
    assert not at.exception
    assert at.error and "1,000 ratios were asked for; one sweep evaluates at most 200" in at.error[0].value
    assert state(at).sweep is None
