"""Paper checks: each research method reproduces its paper's qualitative claims on our models and says whether
our run agrees. One file per paper (``id``, ``ispasp``, ``sap``), each defining a ``CHECK``; ``CHECKS`` is assembled
from them and both ``python -m pruning_core check`` and the Methods screen iterate it.

A check's ``run`` is ``(wb, quick=False, progress=None, should_stop=None) -> CheckReport``:

* ``wb``: a ``Workbench`` (the current model and data); checks that need no model (a synthetic experiment)
  ignore it.
* ``quick``: a smaller version of the same experiment for tests and CI (fewer seeds, epochs or points), with
  the same claim and the same verdict rule.
* ``progress(fraction, text)``: optional callback for long loops; ``should_stop()``: optional, polled between
  steps, and a check that stops early returns what it has (``CheckReport.complete`` False).

Its ``figures(report, dense_accuracy=None)`` returns the plotly figures of a report as rows: a list of
{figure name: figure} dicts, one dict per row, drawn side by side.
"""

from __future__ import annotations

import time

from ..experiments import Progress, ShouldStop
from . import id, ispasp, sap
from .base import Check, CheckReport, CheckResult, format_table, verdict

_FILES = (sap, id, ispasp)
CHECKS: dict[str, Check] = {f.CHECK.key: f.CHECK for f in _FILES}


def run_check(key: str, wb, quick: bool = False, progress: Progress = None, should_stop: ShouldStop = None
              ) -> CheckReport:
    """Run one paper check on ``wb``; every result is labelled with the workbench's model name."""
    if key not in CHECKS:
        raise KeyError(f"unknown paper check {key!r}; available: {', '.join(CHECKS)}")
    start = time.perf_counter()
    report = CHECKS[key].run(wb, quick=quick, progress=progress, should_stop=should_stop)
    report.seconds = report.seconds or time.perf_counter() - start
    for r in report.results:
        r.model = r.model or getattr(wb, "name", "")
    return report


__all__ = ["CHECKS", "Check", "CheckReport", "CheckResult", "Progress", "ShouldStop", "format_table", "run_check",
           "verdict"]
