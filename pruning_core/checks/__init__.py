"""Paper checks: each research method reproduces its paper's qualitative claims on our models and says whether
our run agrees. One file per paper (``sap``, ``id``, ``ispasp``, ``seqattn``, ``limit``, ``iobs``), each defining
a ``CHECK``; ``CHECKS`` is assembled from them and both ``python -m pruning_core check`` and the Methods screen
iterate it.

A check's ``run`` is ``(wb, quick=False, progress=None, should_stop=None) -> CheckReport``:

* ``wb``: a ``Workbench`` (the current model and data); checks that need no model (a synthetic experiment)
  ignore it.
* ``quick``: a smaller version of the same experiment for tests and CI (fewer seeds, epochs or points), with
  the same claim and the same verdict rule.
* ``long`` (only for a check whose ``Check.long`` is not empty, and only when True): the longer, fuller
  reproduction (e.g. SAP's 30 rounds); ``Check.long`` states what it runs and how long it takes.
* ``progress(fraction, text)``: optional callback for long loops; ``should_stop()``: optional, polled between
  steps, and a check that stops early returns what it has (``CheckReport.complete`` False).

Every result has a ``kind``: ``claim`` (the paper's claim, judged as the paper judges it), ``self-test`` (an
identity of our code) or ``description`` (numbers that decide nothing); the table, the screen and every count
keep them apart (``format_table``, ``summary``).

Its ``figures(report, dense_accuracy=None)`` returns the plotly figures of a report as rows: a list of
{figure name: figure} dicts, one dict per row, drawn side by side.
"""

from __future__ import annotations

import time

from ..experiments import Progress, ShouldStop
from . import id, iobs, ispasp, limit, sap, seqattn
from .base import Check, CheckReport, CheckResult, format_table, summary, verdict


class NeedsLabels(ValueError):
    """A paper check asked for on data without labels (or on an embedding model)."""

_FILES = (sap, id, ispasp, seqattn, limit, iobs)
CHECKS: dict[str, Check] = {f.CHECK.key: f.CHECK for f in _FILES}


def unavailable(wb) -> str | None:
    """Why the paper checks cannot run on ``wb`` (data without labels, an embedding model), or None."""
    task = getattr(wb, "task", None)
    if task is None or task.labelled:
        return None
    return (f"The paper checks judge the papers' claims by accuracy and loss against labels, and this is "
            f"{task.description.split(':')[0]}. Load labelled data to run them; the Sweep compares methods by "
            f"{task.metric(task.primary).label} without labels.")


def run_check(key: str, wb, quick: bool = False, progress: Progress = None, should_stop: ShouldStop = None,
              long: bool = False) -> CheckReport:
    """Run one paper check on ``wb``; every result is labelled with the workbench's model name. ``long``: the
    check's longer, fuller reproduction (``Check.long`` says what it does and its time); passed only to checks
    that have one, the others run as usual."""
    if key not in CHECKS:
        raise KeyError(f"unknown paper check {key!r}; available: {', '.join(CHECKS)}")
    reason = unavailable(wb)
    if reason:
        raise NeedsLabels(reason)
    start = time.perf_counter()
    extra = {"long": True} if long and CHECKS[key].long else {}
    report = CHECKS[key].run(wb, quick=quick, progress=progress, should_stop=should_stop, **extra)
    report.seconds = report.seconds or time.perf_counter() - start
    for r in report.results:
        r.model = r.model or getattr(wb, "name", "")
    return report


__all__ = ["CHECKS", "Check", "CheckReport", "CheckResult", "NeedsLabels", "Progress", "ShouldStop", "format_table",
           "run_check", "summary", "unavailable", "verdict"]
