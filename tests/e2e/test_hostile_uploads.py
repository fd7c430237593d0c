"""Hostile uploads in a real browser: every uploaded file is treated as hostile, and a refused file never
replaces or hides what was loaded before. The files are made by the test (nothing hostile is committed):

  * a pickle whose unpickling would create a marker file, uploaded with "I trust this file" unticked;
  * a safetensors file whose 8-byte header length claims far more than the file holds;
  * an .npz whose X.npy header declares a (10**7, 10**7) array, followed by a few bytes;
  * a text file named model.pt;
  * a file over the upload limit (a sparse file: no disk or memory is spent on it), dropped after another
    file was chosen, and a file of the wrong type on the .npz uploader.

After each, Load must show a plain error (no traceback, nothing "unexpected"), the marker must never exist,
and the sidebar must still show the same model and dense accuracy. Finally a small sweep must still run.
Screenshots land in tests/e2e/artifacts/ (look at them)."""

from __future__ import annotations

import io
import json
import struct
import zipfile
from pathlib import Path

import numpy as np
import torch
from conftest import ARTIFACTS, wait_for_app_run

LIMIT_MB = 200  # server.maxUploadSize in .streamlit/config.toml


class _Payload:
    """Unpickling this calls open(marker, "w"): it creates the marker file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))



def _choose_data(page, label: str) -> None:
    """Pick a dataset kind in the Model & data page's Dataset selectbox."""
    page.get_by_test_id("stSelectbox").filter(has_text="Dataset").click()
    page.get_by_role("option", name=label, exact=True).click()
    wait_for_app_run(page)

def _pickle_payload(path: Path, marker: Path) -> Path:
    torch.save(_Payload(marker), path)
    return path


def _safetensors_header_bomb(path: Path) -> Path:
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}).encode()
    path.write_bytes(struct.pack("<Q", 10**12) + header + bytes(16))  # claims a 1 TB header; holds ~80 bytes
    return path


def _npz_shape_bomb(path: Path) -> Path:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                                  "shape": (10**7, 10**7)})  # 400 TB of float32
    labels = io.BytesIO()
    np.save(labels, np.arange(10) % 10)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("X.npy", header.getvalue() + bytes(16))
        z.writestr("y.npy", labels.getvalue())
    return path


def _text_named_pt(path: Path) -> Path:
    path.write_text("This is a plain text file pretending to be a PyTorch checkpoint.\n" * 20)
    return path


def _sparse(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def _state_dict(path: Path) -> Path:
    from pruning_core.models import ARCHITECTURES

    path.write_bytes(ARCHITECTURES["digits-mlp"].weights_path.read_bytes())
    return path


# ----- page helpers ------------------------------------------------------------------------------------------


def _sidebar(page) -> tuple[str, str]:
    """(the model line, the dense accuracy) as the sidebar shows them."""
    side = page.get_by_test_id("stSidebar")
    card = side.get_by_test_id("stMarkdown").filter(has_text="Device").first.inner_text()
    model = next(line for line in card.splitlines() if line.startswith("Model"))
    return model, side.get_by_test_id("stMetricValue").first.inner_text()


def _uploader(page, label: str):
    return page.get_by_test_id("stFileUploader").filter(has_text=label)


def _upload(page, label: str, path: Path) -> None:
    """Choose ``path`` in the uploader whose label contains ``label`` and wait until the server holds it."""
    _uploader(page, label).get_by_test_id("stFileUploaderDropzoneInput").set_input_files(str(path))
    page.get_by_text(f"Load will use {path.name}").wait_for(timeout=60_000)
    wait_for_app_run(page)


def _load(page) -> None:
    page.get_by_role("button", name="Load model and data").click()
    wait_for_app_run(page)


def _errors(page) -> list[str]:
    return page.get_by_test_id("stAlertContentError").all_inner_texts()


def _assert_clean_refusal(page, before: tuple[str, str], *expected: str) -> str:
    errors = _errors(page)
    assert errors, "no error message was shown"
    text = errors[-1]
    for word in expected:
        assert word in text, f"{word!r} not in the message: {text}"
    assert "unexpected" not in text.lower() and "Traceback" not in text, text
    assert not page.get_by_test_id("stException").count()
    assert _sidebar(page) == before
    return text


# ----- tests -------------------------------------------------------------------------------------------------


def test_hostile_files_are_refused_and_the_loaded_model_stays(page, tmp_path):
    page.get_by_test_id("stSidebar").get_by_test_id("stMetricValue").first.wait_for(timeout=60_000)
    before = _sidebar(page)
    assert "digits-resnet" in before[0] and before[1].endswith("%")
    marker = tmp_path / "unpickled-code-ran"

    page.get_by_text("Upload a file", exact=True).click()
    wait_for_app_run(page)
    for path, expected in (
            (_pickle_payload(tmp_path / "payload.pt", marker), ("payload.pt", "trust")),
            (_safetensors_header_bomb(tmp_path / "header-bomb.safetensors"), ("header-bomb.safetensors",)),
            (_text_named_pt(tmp_path / "model.pt"), ("model.pt",))):
        _upload(page, "Model file", path)
        _load(page)
        _assert_clean_refusal(page, before, "Nothing was changed", *expected)
        assert not marker.exists(), "unpickling the uploaded file ran its code"
        page.screenshot(path=str(ARTIFACTS / f"hostile_{path.name}.png"))

    page.get_by_text("Built-in", exact=True).click()
    wait_for_app_run(page)
    _choose_data(page, "Upload .npz")
    bomb = _npz_shape_bomb(tmp_path / "shape-bomb.npz")
    _upload(page, ".npz with arrays", bomb)
    _load(page)
    page.screenshot(path=str(ARTIFACTS / "hostile_shape-bomb.npz.png"))
    _assert_clean_refusal(page, before, "Nothing was changed", "shape-bomb.npz")
    assert not marker.exists()

    # the app still works on what was loaded before: a small sweep
    _choose_data(page, "Bundled digits")
    page.get_by_test_id("stSidebarNav").get_by_text("Sweep", exact=True).click()
    wait_for_app_run(page)
    ratios = page.get_by_label("…or a list of ratios (overrides the grid)")
    ratios.fill("0.3, 0.6")
    ratios.press("Enter")
    wait_for_app_run(page)
    page.get_by_role("button", name="Run sweep").click()
    wait_for_app_run(page)
    page.get_by_test_id("stPlotlyChart").first.wait_for(timeout=120_000)
    assert page.get_by_test_id("stMetricLabel").filter(has_text="Best accuracy at ratio").count() == 1
    assert not page.get_by_test_id("stException").count()
    assert _sidebar(page) == before
    page.screenshot(path=str(ARTIFACTS / "hostile_then_sweep.png"))
    assert page.off_host == []


def test_a_file_over_the_limit_is_named_and_never_swapped_for_the_earlier_one(page, tmp_path):
    """Streamlit's uploader refuses an over-limit file in the browser and keeps the file it held before; the
    page must name the refused file, clear the uploader, and Load must not load the earlier file instead."""
    page.get_by_text("Upload a file", exact=True).click()
    wait_for_app_run(page)
    page.get_by_test_id("stSelectbox").filter(has_text="Architecture the weights belong to").click()
    page.get_by_role("option", name="MLP").first.click()
    wait_for_app_run(page)
    _upload(page, "Model file", _state_dict(tmp_path / "mlp.safetensors"))
    _load(page)
    page.get_by_text("Loaded mlp.safetensors").wait_for(timeout=60_000)
    loaded = _sidebar(page)
    assert "mlp.safetensors" in loaded[0]

    _upload(page, "Model file", _state_dict(tmp_path / "chosen-not-loaded.safetensors"))
    huge = _sparse(tmp_path / "huge.safetensors", (LIMIT_MB + 1) * 1024 * 1024)
    _uploader(page, "Model file").get_by_test_id("stFileUploaderDropzoneInput").set_input_files(str(huge))
    refused = page.get_by_test_id("stAlertContentError").filter(has_text="huge.safetensors")
    refused.wait_for(timeout=30_000)
    wait_for_app_run(page)
    text = refused.inner_text()
    assert f"{LIMIT_MB} MB" in text and "--server.maxUploadSize" in text and "config.toml" in text, text
    assert not page.get_by_text("Load will use").count()  # the earlier file is no longer selected
    assert "chosen-not-loaded.safetensors" not in _uploader(page, "Model file").inner_text()
    page.screenshot(path=str(ARTIFACTS / "over_limit_refused.png"))
    _load(page)
    _assert_clean_refusal(page, loaded, "huge.safetensors", "refused", f"{LIMIT_MB} MB")
    page.screenshot(path=str(ARTIFACTS / "over_limit_load.png"))

    # the .npz uploader: a file of the wrong type, dragged and dropped onto it, is refused the same way
    _choose_data(page, "Upload .npz")
    files = page.evaluate_handle(
        "() => { const t = new DataTransfer(); t.items.add(new File(['0,1,2'], 'digits.csv')); return t; }")
    zone = _uploader(page, ".npz with arrays").get_by_test_id("stFileUploaderDropzone")
    for event in ("dragenter", "dragover", "drop"):
        zone.dispatch_event(event, {"dataTransfer": files})
    page.get_by_test_id("stAlertContentError").filter(has_text="digits.csv").wait_for(timeout=30_000)
    wait_for_app_run(page)
    assert ".npz" in page.get_by_test_id("stAlertContentError").filter(has_text="digits.csv").inner_text()
    assert _sidebar(page) == loaded
    assert page.off_host == []
