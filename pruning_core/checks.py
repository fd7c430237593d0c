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


@dataclass
class CheckReport:
    method: str
    results: list[CheckResult] = field(default_factory=list)
    frames: dict[str, pd.DataFrame] = field(default_factory=dict)  # plot data, by name
    seconds: float = 0.0
    complete: bool = True
    notes: list[str] = field(default_factory=list)


def format_table(results: list[CheckResult]) -> str:
    """A plain-text table of claim, our figure and the verdict, one row per check."""
    rows = [("method", "claim", "our figure", "agrees")]
    for r in results:
        verdict = "yes" if r.agrees else ("no" if r.agrees is False else "undecided")
        rows.append((r.method, r.claim, r.figure, verdict))
    widths = [min(max(len(row[i]) for row in rows), cap) for i, cap in enumerate((10, 70, 60, 9))]

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
