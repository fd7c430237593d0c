"""What a paper check is and returns: a ``Check`` (its name, what the screen says about it, how to run it and how
to draw it); one ``CheckResult`` per claim (the paper's words, our figure, whether they agree) and a
``CheckReport`` holding them with the frames the figures are drawn from; ``format_table`` prints the results for
``python -m pruning_core check``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import pandas as pd


KINDS = ("claim", "self-test", "description")


@dataclass
class CheckResult:
    """One row of a check. ``kind``: ``claim`` (what the paper claims, judged as the paper judges it; a wrong
    implementation or a false claim makes it say no), ``self-test`` (an identity that holds whenever our code is
    right, whatever the paper says: shown and counted apart from the claims) or ``description`` (a figure
    worth reading that decides nothing, e.g. numbers without the paper's fine-tuning; ``agrees`` is None)."""

    method: str  # registry key or family, e.g. "sap", "id", "ispasp"
    claim: str  # one line: what the paper says (a self-test: the identity)
    figure: str  # one line: what our run measured
    agrees: bool | None  # None: not decided (the run was stopped or could not be made) or a description
    source: str = ""  # where the claim is from (paper section / figure)
    model: str = ""  # the model the run was made on (set by run_checks)
    kind: str = "claim"  # one of KINDS

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"check result kind must be one of {', '.join(KINDS)}, got {self.kind!r}")


@dataclass
class CheckReport:
    method: str
    results: list[CheckResult] = field(default_factory=list)
    frames: dict[str, pd.DataFrame] = field(default_factory=dict)  # plot data, by name
    seconds: float = 0.0
    complete: bool = True
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Check:
    """One paper's check: ``key`` (its one name), ``title`` and ``about`` (what the screen says about it),
    ``auto`` (cheap enough to run on first view), ``run`` (``(wb, quick, progress, should_stop) -> CheckReport``)
    and ``figures`` (``(report, dense_accuracy=None)`` -> rows of {figure name: plotly figure})."""

    key: str
    title: str
    about: str
    run: Callable[..., CheckReport]
    figures: Callable[..., list[dict]]
    auto: bool = False


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
