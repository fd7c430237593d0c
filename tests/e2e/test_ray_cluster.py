"""Run on a Ray cluster from the browser: the Sweep screen's "Run on" choice starts a local cluster, the sweep's
points arrive from two workers and draw the same curves; a second sweep reuses the workers, and so does a new
browser session after the first one closed (the cluster belongs to the server, not to the session that started
it). Skipped when Ray (an optional extra) is absent."""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path

import pytest
from conftest import ARTIFACTS, wait_for_app_run

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                                reason="Ray is an optional extra (requirements-extras.txt)")


def _running(name: str) -> bool:
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if name in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                return True
        except OSError:
            pass
    return False


def _ray_sweep_page(page):
    page.get_by_text("99.07%").first.wait_for(timeout=60_000)
    page.get_by_test_id("stSidebarNav").get_by_text("Sweep", exact=True).click()
    wait_for_app_run(page)
    page.get_by_text("a Ray cluster", exact=True).first.click()  # the sweep's (the recovery has its own below)
    wait_for_app_run(page)
    workers = page.get_by_test_id("stNumberInput").filter(has_text="Workers").first.locator("input")
    workers.fill("2")
    workers.press("Enter")
    wait_for_app_run(page)


def test_a_sweep_runs_on_a_local_ray_cluster(page, browser, app_url):
    _ray_sweep_page(page)
    page.screenshot(path=str(ARTIFACTS / "sweep_on_ray_choice.png"))
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
    # (the running label lasts about a second here: too short to wait for; the finished one says where it ran)
    wait_for_app_run(page, timeout=180_000)
    again = time.perf_counter() - start
    finished = page.get_by_text("Sweep finished: 20 points", exact=False).first.inner_text()
    assert "on 2 Ray workers" in finished, finished
    assert again < first
    page.context.close()  # the session that started the cluster ends; its script thread goes
    time.sleep(5)
    # the cluster's head processes are alive (a killed GCS would end the whole server a minute later)
    assert _running("gcs_server") and _running("raylet"), "the local Ray cluster's head died with a script thread"
    other = browser.new_context(viewport={"width": 1400, "height": 1500}).new_page()
    try:
        other.goto(app_url)
        wait_for_app_run(other)
        _ray_sweep_page(other)
        start = time.perf_counter()
        other.get_by_role("button", name="Run sweep").click()
        other.get_by_text("Sweep finished: 20 points", exact=False).first.wait_for(timeout=120_000)
        later = time.perf_counter() - start
        assert not other.get_by_test_id("stException").count()
    finally:
        other.context.close()
    print(f"\nsweep on a local Ray cluster: {first:.1f} s with the cluster's start, {again:.1f} s again, "
          f"{later:.1f} s from a new session")
