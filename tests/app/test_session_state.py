"""The session's typed state (explorer_ui.ExplorerState): one object the screens share, the plan choice carried
between them, sweeps kept per model + data pair, charts built once per sweep and ratio."""

from __future__ import annotations

import pytest

import explorer_ui


def _sweep(at, ratios="0, 0.3, 0.6"):
    at.switch_page("pages/sweep.py").run()
    at.multiselect(key="_sweep_methods").set_value(["magnitude-global", "group-l1"])
    at.text_input(key="_sweep_list").set_value(ratios)
    return at.button[0].click().run()


def _load_builtin(at, name: str):
    at.switch_page("pages/model_data.py").run()
    at.radio(key="_md_model_source").set_value("Built-in")
    at.selectbox(key="_md_builtin").set_value(name)
    return at.button[0].click().run()


def test_a_new_session_gets_the_demo_in_one_typed_state(app, state):
    s = state(app)
    assert isinstance(s, explorer_ui.ExplorerState)
    assert (s.model.name, s.model.kind, s.model.architecture) == ("digits-resnet", "builtin", "digits-resnet")
    assert s.data.name.startswith("digits") and s.data.sample_shape == (1, 8, 8) and s.data.classes == 10
    assert s.key == f"{s.model.identity}|{s.data.identity}"
    assert app.session_state["wb_key"] == s.key  # what the Methods and Sparsity screens read
    assert s.sweep is None and s.export is None and s.prepared == {}


def test_the_plan_choice_travels_between_screens(app, state):
    at = _sweep(app)
    at.select_slider(key="_sweep_ratio").set_value(0.3).run()
    at.selectbox(key="_choice_method").set_value("group-l1").run()
    assert (state(at).choice.method, state(at).choice.ratio) == ("group-l1", 0.3)
    at.switch_page("pages/layers.py").run()
    assert at.selectbox(key="_choice_method").value == "group-l1"
    assert at.slider(key="_choice_ratio").value == pytest.approx(0.3)
    at.slider(key="_choice_ratio").set_value(0.25).run()  # changing it on Layers changes it everywhere
    assert state(at).choice.ratio == pytest.approx(0.25)
    at.switch_page("pages/export.py").run()
    assert at.slider(key="_choice_ratio").value == pytest.approx(0.25)
    assert at.selectbox(key="_choice_method").value == "group-l1"


def test_each_model_and_data_pair_keeps_its_own_sweep(app, state):
    at = _sweep(app)
    demo = state(at).sweep
    assert demo.finished and len(demo.points) == 6 and state(at).prepared
    at = _load_builtin(at, "digits-mlp")
    assert not at.exception and state(at).model.name == "digits-mlp"
    assert state(at).sweep is None and state(at).prepared == {}  # methods are prepared per workbench
    assert at.session_state["wb_key"] == state(at).key
    at = _load_builtin(at, "digits-resnet")
    assert state(at).sweep is demo  # back on the demo, its sweep is shown again
    at.switch_page("pages/sweep.py").run()
    assert not at.exception and any(m.label.startswith("Best accuracy at ratio") for m in at.main.metric)


def test_a_failed_load_leaves_the_state_as_it_was(app, state):
    before = state(app)
    key, workbench = before.key, before.workbench
    at = app.selectbox(key="_md_data_source").set_value("Upload .npz").run()
    at.file_uploader(key="md_data_file").upload("broken.npz", b"not a zip", "application/octet-stream")
    at = at.button[0].click().run()
    assert at.error and state(at) is before
    assert (state(at).key, state(at).workbench) == (key, workbench)


def test_sweep_charts_are_built_once_per_ratio(app, state):
    at = _sweep(app)
    record = state(at).sweep
    at.select_slider(key="_sweep_ratio").set_value(0.3).run()
    at.select_slider(key="_sweep_ratio").set_value(0.6).run()

    def build_again():
        raise AssertionError("a chart shown before was built again")

    shown = record.figure(("kept_bars", 0.3), build_again)
    at.select_slider(key="_sweep_ratio").set_value(0.3).run()
    assert not at.exception and record.figure(("kept_bars", 0.3), build_again) is shown
    record.points.append(record.points[-1])  # a new point: what was drawn from the old ones is rebuilt
    assert record.figure(("kept_bars", 0.3), lambda: "rebuilt") == "rebuilt"
