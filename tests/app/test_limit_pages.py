"""The predicted limit (Zhang et al.) on the Sweep and Sparsity screens: estimated once per model and settings
when asked for, drawn as a vertical line at the removed fraction, moved by epsilon without a new estimate, and
bad input explained."""

from __future__ import annotations

import pytest
import torch

import explorer_ui
from pruning_core import Workbench, load_builtin

LABEL = "predicted limit (Zhang et al.)"
SPARSITY = "pages/sparsity.py"


def _small_settings(at):
    """Few products, so the tests stay fast: 2 Hutchinson probes, 6 Lanczos steps."""
    at.number_input(key="_limit_probes").set_value(2)
    at.number_input(key="_limit_steps").set_value(6)
    return at


def _sweep_with_limit(app):
    at = app.switch_page("pages/sweep.py").run()
    at.multiselect(key="_sweep_methods").set_value(["magnitude-global"])
    at.text_input(key="_sweep_list").set_value("0, 0.5, 0.9")
    at = at.button[0].click().run()
    _small_settings(at).toggle(key="_limit_show").set_value(True).run()
    assert not at.exception and not at.error
    return at


def _limit_lines(figure) -> list[float]:
    return [s["x0"] for s in figure["layout"].get("shapes", []) if s.get("line", {}).get("dash") == "dashdot"]


def _labels(figure) -> list[str]:
    return [a["text"] for a in figure["layout"].get("annotations", []) if LABEL in a.get("text", "")]


def test_sweep_draws_the_predicted_limit_once_estimated(app, figures, state):
    at = app.switch_page("pages/sweep.py").run()
    at.multiselect(key="_sweep_methods").set_value(["magnitude-global"])
    at.text_input(key="_sweep_list").set_value("0, 0.5, 0.9")
    at = at.button[0].click().run()
    assert _limit_lines(figures(at)["curves"]) == []  # nothing drawn before it is asked for
    assert state(at).limits == {}
    _small_settings(at).toggle(key="_limit_show").set_value(True).run()
    assert not at.exception and not at.error
    (key, curvature), = state(at).limits.items()
    assert key == (state(at).key, 2, 6) and curvature.products == 2 + 6
    curves = figures(at)["curves"]
    lines = _limit_lines(curves)
    assert len(lines) == 2 and 0 < lines[0] < 1 and lines[0] == lines[1]  # the two panels against the ratio
    labels = _labels(curves)
    assert len(labels) == 2 and f"{lines[0]:.2f} removed" in labels[0]
    summary = [m.value for m in at.markdown if m.value.startswith("**Predicted limit")]
    assert summary and f"{lines[0]:.2f} removed" in summary[0]
    # scrubbing keeps the line and estimates nothing again
    at.select_slider(key="_sweep_ratio").set_value(0.9).run()
    assert _limit_lines(figures(at)["curves"]) == lines and state(at).limits[key] is curvature
    # a larger epsilon moves the line right, with no new Hessian-vector product
    at.number_input(key="_limit_epsilon").set_value(curvature.loss_spread * 4).run()
    assert not at.exception and not at.error
    moved = _limit_lines(figures(at)["curves"])
    assert moved[0] > lines[0] and len(state(at).limits) == 1 and curvature.products == 8
    # turned off: the line goes
    at.toggle(key="_limit_show").set_value(False).run()
    assert _limit_lines(figures(at)["curves"]) == []


def test_sparsity_draws_the_same_estimate_without_estimating_again(app, figures, state):
    at = _sweep_with_limit(app)
    (curvature,) = state(at).limits.values()
    ratio = _limit_lines(figures(at)["curves"])[0]
    at.switch_page(SPARSITY).run()
    assert not at.exception and not at.error
    assert len(state(at).limits) == 1 and curvature.products == 8
    chart = figures(at)["pqi_ratio"]
    assert _limit_lines(chart) == [pytest.approx(ratio)] * 2  # both panels: PQI and accuracy against the ratio
    assert any(LABEL in t for t in _labels(chart))


def test_bad_epsilon_and_an_unsupported_model_are_explained(app, digits, state):
    at = _sweep_with_limit(app)
    at.number_input(key="_limit_epsilon").set_value(0.0).run()
    assert not at.exception
    assert at.error and "epsilon" in at.error[0].value and "positive" in at.error[0].value
    scripted = torch.jit.script(load_builtin("digits-cnn"))
    explorer_ui.install_workbench(Workbench(scripted, digits, device="cpu", name="scripted"), "test:scripted",
                                  state(at).model, state(at).data, session=at.session_state)
    at.number_input(key="_limit_epsilon").set_value(None)
    at.switch_page(SPARSITY).run()
    assert not at.exception
    assert any("TorchScript" in e.value for e in at.error)
