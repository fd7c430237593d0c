"""Paper checks: each seed method reproduces its paper's qualitative claim on our models and says whether our
run agrees. The Methods screen draws the same results; ``python -m pruning_core check`` prints them as a table.

A check is a function ``(wb, quick=False, progress=None, should_stop=None) -> CheckReport``:

* ``wb``: a ``Workbench`` (the current model and data); checks that need no model (a synthetic experiment)
  ignore it.
* ``quick``: a smaller version of the same experiment for tests and CI (fewer seeds, epochs or points), with
  the same claim and the same verdict rule.
* ``progress(fraction, text)``: optional callback for long loops; ``should_stop()``: optional, polled between
  steps, and a check that stops early returns what it has (``CheckReport.complete`` False).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import importlib
import time

import pandas as pd

Progress = Callable[[float, str], None] | None
ShouldStop = Callable[[], bool] | None


@dataclass
class CheckResult:
    method: str  # registry key or family, e.g. "sap", "id", "ispasp"
    claim: str  # one line: what the paper says
    figure: str  # one line: what our run measured
    agrees: bool | None  # None: not decided (the run was stopped or could not be made)
    source: str = ""  # where the claim is from (paper section / figure)
    model: str = ""  # the model the run was made on (set by run_checks)


@dataclass
class CheckReport:
    method: str
    results: list[CheckResult] = field(default_factory=list)
    frames: dict[str, pd.DataFrame] = field(default_factory=dict)  # plot data, by name
    seconds: float = 0.0
    complete: bool = True
    notes: list[str] = field(default_factory=list)


# check key -> (title, "module:function"); imported on first use so the CLI starts fast
CHECKS: dict[str, tuple[str, str]] = {
    "sap": ("PQ Index and SAP (Diao et al., ICLR 2023)", "pruning_core.methods.pqi:paper_check"),
    "id": ("Interpolative decompositions (Chee et al., 2021)", "pruning_core.methods.interpolative:paper_check"),
    "ispasp": ("i-SpaSP (Wolfe & Kyrillidis, 2022)", "pruning_core.methods.ispasp:paper_check"),
}


def check_function(key: str) -> Callable:
    if key not in CHECKS:
        raise KeyError(f"unknown paper check {key!r}; available: {', '.join(CHECKS)}")
    module, _, name = CHECKS[key][1].partition(":")
    return getattr(importlib.import_module(module), name)


def run_check(key: str, wb, quick: bool = False, progress: Progress = None, should_stop: ShouldStop = None
              ) -> CheckReport:
    """Run one paper check on ``wb``; every result is labelled with the workbench's model name."""
    start = time.perf_counter()
    report = check_function(key)(wb, quick=quick, progress=progress, should_stop=should_stop)
    report.seconds = report.seconds or time.perf_counter() - start
    for r in report.results:
        r.model = r.model or getattr(wb, "name", "")
    return report


def verdict(agrees: bool | None) -> str:
    return "yes" if agrees else ("no" if agrees is False else "undecided")


def format_table(results: list[CheckResult]) -> str:
    """A plain-text table of claim, our figure and the verdict, one row per check."""
    with_model = any(r.model for r in results)
    rows = [(("model",) if with_model else ()) + ("method", "claim", "our figure", "agrees")]
    for r in results:
        rows.append(((r.model,) if with_model else ()) + (r.method, r.claim, r.figure, verdict(r.agrees)))
    caps = ((14,) if with_model else ()) + (10, 60, 56, 9)
    widths = [min(max(len(row[i]) for row in rows), cap) for i, cap in enumerate(caps)]

    def wrap(text: str, width: int) -> list[str]:
        words, lines, line = text.split(), [], ""
        for w in words:
            if line and len(line) + 1 + len(w) > width:
                lines.append(line)
                line = w
            else:
                line = f"{line} {w}" if line else w
        return lines + [line] if line else lines or [""]

    out = []
    sep = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    out.append(sep)
    for n, row in enumerate(rows):
        cells = [wrap(c, w) for c, w in zip(row, widths)]
        for i in range(max(len(c) for c in cells)):
            out.append("| " + " | ".join((c[i] if i < len(c) else "").ljust(w) for c, w in zip(cells, widths)) + " |")
        if n == 0 or n == len(rows) - 1:
            out.append(sep)
    return "\n".join(out)
