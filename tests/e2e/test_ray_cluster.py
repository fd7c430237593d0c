"""Run on a Ray cluster from the browser: the Sweep screen's "Run on" choice starts a local cluster, the sweep's
points arrive from two workers and draw the same curves; a second sweep reuses the workers. Skipped when Ray (an
optional extra) is absent."""

from __future__ import annotations

import importlib.util
import time

import pytest
from conftest import ARTIFACTS, wait_for_app_run

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                                reason="Ray is an optional extra (requirements-extras.txt)")


def test_a_sweep_runs_on_a_local_ray_cluster(page):
    page.get_by_text("99.07%").first.wait_for(timeout=60_000)
    page.get_by_test_id("stSidebarNav").get_by_text("Sweep", exact=True).click()
    wait_for_app_run(page)
    page.get_by_text("a Ray cluster", exact=True).click()
    wait_for_app_run(page)
    page.screenshot(path=str(ARTIFACTS / "sweep_on_ray_choice.png"))
    workers = page.get_by_test_id("stNumberInput").filter(has_text="Workers").locator("input")
    workers.fill("2")
    workers.press("Enter")
    wait_for_app_run(page)
    start = time.perf_counter()
    page.get_by_role("button", name="Run sweep").click()
    page.get_by_text("Sweep finished", exact=False).first.wait_for(timeout=180_000)
    first = time.perf_counter() - start
    wait_for_app_run(page)
    charts = page.get_by_test_id("stPlotlyChart")
    charts.first.wait_for(timeout=60_000)
    assert len(charts.first.locator(".legendtext").all_inner_texts()) == 2
    assert not page.get_by_test_id("stException").count() and not page.get_by_test_id("stAlert").filter(
        has_text="did not run").count()
    page.screenshot(path=str(ARTIFACTS / "sweep_on_ray.png"))
    start = time.perf_counter()
    page.get_by_role("button", name="Run sweep").click()  # the workers are kept: no new cluster, no reload
    page.get_by_text("Sweeping 2 method(s) x 10 ratio(s) on 2 Ray workers", exact=False).first.wait_for(
        timeout=60_000)
    wait_for_app_run(page, timeout=180_000)
    again = time.perf_counter() - start
    assert page.get_by_text("Sweep finished: 20 points", exact=False).count()
    print(f"\nsweep on a local Ray cluster: {first:.1f} s with the cluster's start, {again:.1f} s again")
    assert again < first
