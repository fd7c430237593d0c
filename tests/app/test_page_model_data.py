"""Model & data page: the demo loads by default, and every bad input shows a clear error while the model and
data that were loaded before stay."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save
from streamlit.testing.v1 import AppTest

from pruning_core.models import ARCHITECTURES, DigitsMLP

APP = str(Path(__file__).resolve().parents[2] / "app.py")
STATE_KEY = "explorer"  # explorer_ui.state.STATE_KEY


def _metric(at, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def _model_name(at) -> str:
    return at.session_state[STATE_KEY].model.name


def _data_name(at) -> str:
    return at.session_state[STATE_KEY].data.name


def _upload_model(at, name: str, data: bytes, architecture: str | None = None, trust: bool = False):
    at.radio(key="_md_model_source").set_value("Upload a file").run()
    at.file_uploader(key="md_model_file").upload(name, data, "application/octet-stream")
    at.selectbox(key="_md_arch").set_value(architecture or "")
    at.checkbox(key="_md_trust").set_value(trust)
    return at.button[0].click().run()


def _upload_data(at, name: str, data: bytes):
    at.selectbox(key="_md_data_source").set_value("Upload .npz").run()
    at.file_uploader(key="md_data_file").upload(name, data, "application/octet-stream")
    return at.button[0].click().run()


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def test_demo_loads_by_default_with_its_summary(app):
    assert _model_name(app) == "digits-resnet"
    assert float(_metric(app, "Dense accuracy").rstrip("%")) > 95  # the model card says 99.07%
    assert app.sidebar.metric[0].value == _metric(app, "Dense accuracy")
    assert _metric(app, "Parameters") == "38.3 k"
    layers, groups = app.dataframe[0].value, app.dataframe[1].value
    assert {"conv1", "layer2.shortcut.0", "fc"} <= set(layers["layer"])
    assert list(groups["group"]) == [g.name for g in app.session_state[STATE_KEY].workbench.groups.groups]
    assert not app.error


def test_state_dict_upload_replaces_the_model(app):
    mlp = ARCHITECTURES["digits-mlp"]
    weights = load_file(str(mlp.weights_path))
    at = _upload_model(app, "mlp.safetensors", save(weights), architecture="digits-mlp")
    assert not at.error and not at.exception
    assert _model_name(at) == "mlp.safetensors"
    assert float(_metric(at, "Dense accuracy").rstrip("%")) > 90


def test_corrupt_model_bytes_keep_the_previous_model(app):
    before = _metric(app, "Dense accuracy")
    at = _upload_model(app, "model.pt", b"\x80\x04 this is not a checkpoint")
    assert at.error and "Nothing was changed" in at.error[0].value
    assert _model_name(at) == "digits-resnet" and _metric(at, "Dense accuracy") == before
    assert not at.exception


def test_pickled_module_needs_trust(app):
    buf = io.BytesIO()
    torch.save(DigitsMLP(), buf)
    at = _upload_model(app, "whole.pt", buf.getvalue(), trust=False)
    assert at.error and "trust" in at.error[0].value.lower()
    assert _model_name(at) == "digits-resnet"
    at = _upload_model(at, "whole.pt", buf.getvalue(), trust=True)
    assert not at.error and _model_name(at) == "whole.pt"


def test_npz_with_nan_is_refused(app):
    x = np.random.default_rng(0).random((40, 1, 8, 8), dtype=np.float32)
    x[3, 0, 2, 2] = np.nan
    at = _upload_data(app, "nan.npz", _npz(X=x, y=np.arange(40) % 10))
    assert at.error and "NaN" in at.error[0].value
    assert _data_name(at).startswith("digits")


def test_npz_of_the_wrong_shape_is_refused(app):
    x = np.zeros((40, 3, 32, 32), dtype=np.float32)
    at = _upload_data(app, "cifar-like.npz", _npz(X=x, y=np.arange(40) % 10))
    assert at.error and "3x32x32" in at.error[0].value
    assert _model_name(at) == "digits-resnet" and _data_name(at).startswith("digits")


def test_builtin_without_fitting_data_suggests_an_npz(app):
    app.selectbox(key="_md_builtin").set_value("resnet18-cifar")
    at = app.button[0].click().run()
    assert at.error and ".npz" in at.error[0].value and "3x32x32" in at.error[0].value
    assert _model_name(at) == "digits-resnet"
    assert not at.exception


def test_first_visit_straight_to_a_page_goes_through_the_router():
    """Until some session runs app.py, Streamlit treats pages/ as a legacy page folder and would run
    pages/sweep.py alone (no workbench yet); the page sends the visit through the router instead."""
    at = AppTest.from_file(APP, default_timeout=60)
    at.switch_page("pages/sweep.py").run()
    assert not at.exception
    assert at.title[0].value == "Model & data" and _model_name(at) == "digits-resnet"
    at.switch_page("pages/sweep.py").run()
    assert not at.exception and at.title[0].value == "Sweep"


# ----- files the browser refuses (over the upload limit, wrong type) ----------------------------------------
# Streamlit's uploader refuses such a file in the browser and keeps the file it held before, without telling
# the server. The page's watcher reports the refused file (a browser-only step, covered by
# tests/e2e/test_hostile_uploads.py); here the report is fed to explorer_ui.note_refused as the watcher does.


def _refuse(at, field: str, name: str, size: int, reason: str = "size"):
    import explorer_ui as ui

    ui.note_refused(at.session_state, ui.MODEL_DATA_UPLOADERS,
                    {"field": field, "name": name, "size": size, "reason": reason})
    return at.run()


def test_the_uploader_says_which_file_load_will_use(app):
    at = _upload_model(app, "whole.pt", b"\x80\x04 not a checkpoint")
    assert any("Load will use **whole\\.pt** (" in c.value for c in at.caption)


def test_a_refused_file_is_named_and_the_file_chosen_before_is_not_loaded(app):
    before = _metric(app, "Dense accuracy")
    mlp = save(load_file(str(ARCHITECTURES["digits-mlp"].weights_path)))
    app.radio(key="_md_model_source").set_value("Upload a file").run()
    app.file_uploader(key="md_model_file").upload("chosen-before.safetensors", mlp, "application/octet-stream")
    app.selectbox(key="_md_arch").set_value("digits-mlp").run()
    at = _refuse(app, "model", "huge.pt", 300 * 2**20)
    # the uploader was replaced by an empty one, and the page names the refused file, the limit and the fix
    assert at.file_uploader(key="md_model_file_1").value is None
    assert not any("Load will use" in c.value for c in at.caption)
    refused = at.error[0].value
    assert "**huge\\.pt** (300.0 MB) was refused" in refused
    assert "200 MB" in refused and "--server.maxUploadSize" in refused and "config.toml" in refused
    at = at.button[0].click().run()
    assert "Nothing was changed: **huge\\.pt**" in at.error[-1].value and "refused" in at.error[-1].value
    assert _model_name(at) == "digits-resnet" and _metric(at, "Dense accuracy") == before
    assert not at.exception
    # a new file clears the note and is what Load uses
    at.file_uploader(key="md_model_file_1").upload("mlp.safetensors", mlp, "application/octet-stream").run()
    assert not at.error and any("Load will use **mlp\\.safetensors**" in c.value for c in at.caption)
    at = at.button[0].click().run()
    assert not at.error and _model_name(at) == "mlp.safetensors"


def test_a_refused_npz_is_named_and_the_bundled_digits_stay(app):
    at = _upload_data(app, "ok.npz", _npz(X=np.zeros((40, 1, 8, 8), np.float32), y=np.arange(40) % 10))
    data_before = _data_name(at)
    at = _refuse(at, "data", "digits.csv", 12, reason="type")
    assert "digits\\.csv" in at.error[0].value and ".npz files are accepted" in at.error[0].value
    at = at.button[0].click().run()
    assert "digits\\.csv" in at.error[-1].value
    assert _data_name(at) == data_before and not at.exception


def test_a_forged_refusal_report_is_checked():
    import explorer_ui as ui

    state: dict = {}
    assert ui.note_refused(state, ui.MODEL_DATA_UPLOADERS, {"field": "wb", "name": "x"}) is None
    assert ui.note_refused(state, ui.MODEL_DATA_UPLOADERS, "not a dict") is None and state == {}
    refused = ui.note_refused(state, ui.MODEL_DATA_UPLOADERS,
                              {"field": "model", "name": "![x](http://example.com/a.png)" * 20, "size": True,
                               "reason": "<script>"})
    assert refused.size == 0 and refused.reason == "size" and len(refused.name) <= 200
    assert state["md_model_file__generation"] == 1
    shown = ui.plain(refused.name)
    assert "![" not in shown and "](" not in shown and len(shown) < 400
