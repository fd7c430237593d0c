"""A click during a paper check keeps what finished: the runner holds Streamlit's stop at the progress bar, tells
the check to stop at its next step, returns the partial report and the held stop (the page stores the report,
then raises the stop). AppTest cannot click while a script runs, so Streamlit's stop is raised by a stand-in bar."""

from __future__ import annotations

import pytest
from streamlit.runtime.scriptrunner_utils.exceptions import StopException

import explorer_ui.runners as runners
from pruning_core import Workbench, load_builtin, load_digits
from pruning_core.checks import CheckReport, CheckResult


class Bar:
    """A progress bar whose ``clicks_at``-th update meets a click (Streamlit raises its stop there)."""

    def __init__(self, clicks_at: int | None):
        self.clicks_at, self.updates, self.emptied = clicks_at, 0, False

    def progress(self, value, text=None):
        self.updates += 1
        if self.updates == self.clicks_at:
            raise StopException()

    def empty(self):
        self.emptied = True


@pytest.fixture
def bar(monkeypatch):
    made = []

    def use(clicks_at):
        monkeypatch.setattr(runners.st, "progress", lambda *a, **k: made.append(Bar(clicks_at)) or made[-1])
        return made
    return use


def steps_check(log):
    """A check of ten steps that reports progress after each and stops when asked, keeping its finished steps."""
    def run_check(key, wb, quick=False, progress=None, should_stop=None, long=False):
        report = CheckReport(key)
        for step in range(10):
            if should_stop():
                report.complete = False
                break
            report.results.append(CheckResult(key, f"step {step}", "done", True))
            log.append(step)
            progress((step + 1) / 10, f"step {step}")
        return report
    return run_check


def test_a_click_stops_the_check_at_its_next_step_and_keeps_what_finished(bar, monkeypatch):
    log = []
    monkeypatch.setattr(runners.checks, "run_check", steps_check(log))
    bars = bar(clicks_at=3)
    entry, stop = runners.run_check_live("id", wb=None, quick=True)
    assert isinstance(stop, StopException) and entry["stopped"]
    report = entry["report"]
    assert not report.complete and [r.claim for r in report.results] == ["step 0", "step 1", "step 2"]
    assert log == [0, 1, 2] and bars[0].updates == 3  # no bar update after the click: the script is stopping


def test_an_uninterrupted_check_clears_its_bar_and_holds_no_stop(bar, monkeypatch):
    monkeypatch.setattr(runners.checks, "run_check", steps_check([]))
    bars = bar(clicks_at=None)
    entry, stop = runners.run_check_live("id", wb=None, quick=True, long=True)
    assert stop is None and not entry["stopped"] and entry["report"].complete and len(entry["report"].results) == 10
    assert bars[0].emptied and entry["long"] and entry["error"] is None


def test_a_click_after_the_last_step_still_keeps_the_report(bar, monkeypatch):
    """The click lands on the bar's removal, after the check returned: the whole report is kept, then the stop."""
    monkeypatch.setattr(runners.checks, "run_check", steps_check([]))
    bars = bar(clicks_at=None)

    def empty_meets_a_click():
        raise StopException()
    monkeypatch.setattr(Bar, "empty", lambda self: empty_meets_a_click())
    entry, stop = runners.run_check_live("id", wb=None, quick=True)
    assert isinstance(stop, StopException) and entry["report"].complete and len(entry["report"].results) == 10
    assert bars


def test_a_real_check_stopped_at_its_first_step_returns_a_partial_report(bar):
    wb = Workbench(load_builtin("digits-mlp"), load_digits(), device="cpu", name="digits-mlp")
    bar(clicks_at=1)
    entry, stop = runners.run_check_live("id", wb, quick=True)
    assert stop is not None and entry["error"] is None
    assert entry["report"] is not None and not entry["report"].complete
