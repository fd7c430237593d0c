"""The app in a real browser: open the demo, run a sweep, scrub the slider, look at the layers, download an
export. Screenshots land in tests/e2e/artifacts/ (look at them); the slider-to-chart latency is printed."""

from __future__ import annotations

import io
import json
import time
import zipfile

from conftest import ARTIFACTS, wait_for_app_run


def _goto(page, title: str) -> None:
    page.get_by_test_id("stSidebarNav").get_by_text(title, exact=True).click()
    wait_for_app_run(page)


def _best_metric_label(page) -> str:
    return page.get_by_test_id("stMetricLabel").filter(has_text="Best accuracy at ratio").first.inner_text()


def test_demo_opens_with_the_residual_cnn_and_its_accuracy(page):
    page.get_by_text("99.07%").first.wait_for(timeout=60_000)  # the card's dense test accuracy
    body = page.locator("body").inner_text()
    assert "digits-resnet" in body and "accuracy" in body.lower()
    assert not page.get_by_test_id("stException").count()
    page.screenshot(path=str(ARTIFACTS / "model_data.png"))
    assert page.off_host == []


def test_sweep_slider_scrubs_results_without_recomputing(page):
    _goto(page, "Sweep")
    page.get_by_role("button", name="Run sweep").click()
    wait_for_app_run(page)
    charts = page.get_by_test_id("stPlotlyChart")
    charts.first.wait_for(timeout=60_000)
    assert charts.count() == 2  # the four curve panels in one figure, the per-layer bars
    # one legend entry per method, shared by the four panels
    legend = charts.first.locator(".legendtext").all_inner_texts()
    assert len(legend) == 2
    before_label = _best_metric_label(page)
    before_chart = charts.first.inner_html()
    slider = page.get_by_role("slider").first
    slider.focus()
    latencies = []
    for key in ("ArrowLeft", "ArrowLeft", "ArrowRight"):
        label = _best_metric_label(page)
        start = time.perf_counter()
        page.keyboard.press(key)
        page.wait_for_function(
            """(old) => [...document.querySelectorAll("[data-testid='stMetricLabel']")]
                 .some(e => e.innerText.includes('Best accuracy at ratio') && !e.innerText.includes(old))""",
            arg=label.split("ratio")[-1].strip(), timeout=30_000)
        latencies.append(time.perf_counter() - start)
        wait_for_app_run(page)
    assert _best_metric_label(page) != before_label
    assert charts.first.inner_html() != before_chart  # the ratio marker moved
    shown = _best_metric_label(page).split("ratio")[-1].strip()
    for chart in charts.all():  # every chart names the ratio the metrics are at
        assert f"r = {shown}" in chart.inner_text()
    assert not page.get_by_test_id("stException").count()
    page.screenshot(path=str(ARTIFACTS / "sweep.png"))
    (ARTIFACTS / "slider_latency.json").write_text(json.dumps({"seconds": latencies}))
    print(f"\nslider -> updated metrics latency (s): {[round(s, 3) for s in latencies]}")
    assert max(latencies) < 10


def test_layers_page_shows_the_importance_heatmap(page):
    _goto(page, "Layers")
    chart = page.get_by_test_id("stPlotlyChart").first
    chart.wait_for(timeout=60_000)
    assert chart.locator(".heatmaplayer, .hm, image").count() >= 1
    assert not page.get_by_test_id("stException").count()
    page.screenshot(path=str(ARTIFACTS / "layers.png"))


def test_layers_page_compares_criteria_and_shows_what_a_channel_touches(page):
    _goto(page, "Layers")
    panel = page.get_by_role("tabpanel").filter(has_text="Where the criteria agree")
    panel.get_by_test_id("stPlotlyChart").first.wait_for(timeout=60_000)
    panel.get_by_role("button", name="Compare the rankings").click()
    panel.get_by_text("Spearman rank correlation").first.wait_for(timeout=120_000)
    wait_for_app_run(page)
    # importance heatmap, rank correlation, the sample beside its attribution map
    assert panel.get_by_test_id("stPlotlyChart").count() == 3
    assert "Predicted" in panel.inner_text()
    assert not page.get_by_test_id("stException").count()
    page.screenshot(path=str(ARTIFACTS / "layers_importance.png"), full_page=True)
    # a click on the heatmap's fourth row (layer2.shortcut.0, the 32-channel residual stream) picks that group
    drag = panel.get_by_test_id("stPlotlyChart").first.locator(".nsewdrag").first
    drag.scroll_into_view_if_needed()
    box = drag.bounding_box()
    page.mouse.click(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 3.5 / 5)
    wait_for_app_run(page)
    page.wait_for_timeout(1_000)
    wait_for_app_run(page)
    page.get_by_role("tab", name="What one channel touches").click()
    panel = page.get_by_role("tabpanel").filter(has_text="Parameters per channel")
    panel.get_by_test_id("stPlotlyChart").first.wait_for(timeout=60_000)
    assert panel.get_by_test_id("stPlotlyChart").count() == 2 and "residual partner" in panel.inner_text()
    assert "896" in panel.inner_text()  # parameters per channel of layer2.shortcut.0's group (conv1's: 621)
    page.screenshot(path=str(ARTIFACTS / "layers_touches.png"), full_page=True)
    assert page.off_host == []


def test_layers_sensitivity_fills_in_and_sweep_fine_tunes(page):
    _goto(page, "Layers")
    page.get_by_role("tab", name="Sensitivity").click()
    panel = page.get_by_role("tabpanel").filter(has_text="Run sensitivity")
    panel.get_by_role("button", name="Run sensitivity").click()
    panel.get_by_text("Curves for groups").first.wait_for(timeout=120_000)
    wait_for_app_run(page)
    assert panel.get_by_test_id("stPlotlyChart").count() == 2  # the groups x ratios heatmap and the curves
    assert panel.get_by_test_id("stDownloadButton").count() == 2
    assert not page.get_by_test_id("stException").count()
    page.screenshot(path=str(ARTIFACTS / "layers_sensitivity.png"), full_page=True)
    _goto(page, "Sweep")
    page.get_by_role("button", name="Fine-tune").click()
    page.get_by_text("fine-tuned").first.wait_for(timeout=180_000)
    wait_for_app_run(page)
    assert not page.get_by_test_id("stException").count()
    page.screenshot(path=str(ARTIFACTS / "sweep_recovery.png"), full_page=True)
    assert page.off_host == []


def test_export_downloads_a_verified_bundle(page):
    _goto(page, "Export")
    page.get_by_role("button", name="Build export").click()
    wait_for_app_run(page)
    page.get_by_text("Verified").first.wait_for(timeout=120_000)
    with page.expect_download(timeout=60_000) as info:
        page.get_by_test_id("stDownloadButton").locator("button").click()
    data = open(info.value.path(), "rb").read()
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert {"model_state_dict.safetensors", "plan.json", "report.json"} <= set(names)
    assert any(n.endswith(".pt2") for n in names)
    assert not page.get_by_test_id("stException").count()
    page.screenshot(path=str(ARTIFACTS / "export.png"))
    assert page.off_host == []


def test_methods_page_shows_claims_verdicts_and_plots(page):
    _goto(page, "Methods")
    page.get_by_role("tab", name="Interpolative decompositions (Chee et al., 2021)").click()
    panel = page.get_by_role("tabpanel").filter(has_text="pivoted QR")
    panel.get_by_test_id("stPlotlyChart").first.wait_for(timeout=120_000)
    wait_for_app_run(page)
    assert panel.get_by_test_id("stPlotlyChart").count() == 2
    tables = panel.locator("table")  # claims, then self-tests, then descriptions, each its own table
    assert tables.count() == 3 and "agrees" in tables.nth(0).inner_text() and "holds" in tables.nth(1).inner_text()
    assert not page.get_by_test_id("stException").count()
    page.screenshot(path=str(ARTIFACTS / "methods_id.png"), full_page=True)
    page.get_by_role("tab", name="i-SpaSP (Wolfe & Kyrillidis, 2022)").click()
    panel = page.get_by_role("tabpanel").filter(has_text="CoSaMP")
    panel.get_by_test_id("stPlotlyChart").first.wait_for(timeout=60_000)
    # the synthetic figure; the residual by iteration; accuracy after the fine-tuning and without it
    assert panel.get_by_test_id("stPlotlyChart").count() == 4
    page.screenshot(path=str(ARTIFACTS / "methods_ispasp.png"), full_page=True)
    assert page.off_host == []


def test_methods_page_runs_the_new_checks_and_a_click_keeps_what_finished(page):
    """SA++, the fundamental limit and I-OBS run from their tabs (quick) and draw their figures; a run stopped by
    a click keeps its finished part, says so, and is not started again by Streamlit's replay of the press."""
    _goto(page, "Methods")
    for title, text, figures in (("SequentialAttention++ block sparsification (Yasuda et al., 2024)", "4x4 block", 1),
                                 ("Fundamental limit of pruning (Zhang et al., 2024)", "one-shot global magnitude", 2),
                                 ("I-OBS (Wu et al., 2024)", "sparse pattern", 2)):
        page.get_by_role("tab", name=title).click()
        panel = page.get_by_role("tabpanel").filter(has_text=text)
        panel.get_by_role("button", name="Run the check").click()
        panel.get_by_test_id("stPlotlyChart").first.wait_for(timeout=180_000)
        wait_for_app_run(page)
        assert panel.get_by_test_id("stPlotlyChart").count() >= figures, title
        assert "Self-tests" in panel.inner_text() and "claims:" in panel.inner_text(), title
        assert not page.get_by_test_id("stException").count(), title
        page.screenshot(path=str(ARTIFACTS / f"methods_{title.split()[0].lower()}.png"), full_page=True)
    # the full i-SpaSP check fine-tunes for tens of seconds: click while it runs, keep what finished
    page.get_by_role("tab", name="i-SpaSP (Wolfe & Kyrillidis, 2022)").click()
    panel = page.get_by_role("tabpanel").filter(has_text="CoSaMP")
    panel.get_by_test_id("stPlotlyChart").first.wait_for(timeout=120_000)
    wait_for_app_run(page)
    panel.get_by_text("Quick version").click()  # off: the full check
    wait_for_app_run(page)
    panel.get_by_role("button", name="Run it again").click()
    page.get_by_test_id("stProgress").first.wait_for(timeout=60_000)
    page.wait_for_timeout(3_000)
    panel.get_by_text("Quick version").click()  # any click stops the running script
    page.get_by_text("stopped before the end").first.wait_for(timeout=120_000)
    wait_for_app_run(page)
    assert "Full check" in panel.inner_text()  # the stopped full run is shown, not a new quick one
    assert not page.get_by_test_id("stException").count()
    page.screenshot(path=str(ARTIFACTS / "methods_stopped.png"), full_page=True)
    assert page.off_host == []


def test_sparsity_page_shows_pqi_and_runs_a_short_sap_loop(page):
    _goto(page, "Sparsity")
    page.get_by_test_id("stPlotlyChart").first.wait_for(timeout=120_000)
    wait_for_app_run(page)
    assert page.get_by_test_id("stMetricLabel").filter(has_text="Global PQI").count() >= 1
    for label, value in (("Rounds", "1"), ("Epochs per round", "1")):
        box = page.get_by_label(label)
        box.fill(value)
        box.press("Enter")
        wait_for_app_run(page)
    page.get_by_role("button", name="Run SAP").click()
    page.get_by_text("accuracy right after pruning").first.wait_for(timeout=240_000)
    wait_for_app_run(page)
    assert page.get_by_test_id("stPlotlyChart").count() >= 3  # PQI bars, PQI vs ratio, the SAP panel
    assert not page.get_by_test_id("stException").count()
    page.screenshot(path=str(ARTIFACTS / "sparsity.png"), full_page=True)
    assert page.off_host == []
