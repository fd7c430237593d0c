"""What a paper check is and returns: a ``Check`` (its name, what the screen says about it, how to run it and how
to draw it); one ``CheckResult`` per claim (the paper's words, our figure, whether they agree) and a
``CheckReport`` holding them with the frames the figures are drawn from; ``format_table`` prints the results for
``python -m pruning_core check``, claims apart from self-tests and descriptions, with their counts
(``summary``)."""

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
    and ``figures`` (``(report, dense_accuracy=None)`` -> rows of {figure name: plotly figure}).

    ``long``: what the check's longer, fuller reproduction does and how long it takes, or "" when it has none.
    A check with one accepts ``long=True`` in ``run`` (``checks.run_check`` passes it only to those); a check
    without one keeps the four-argument ``run``."""

    key: str
    title: str
    about: str
    run: Callable[..., CheckReport]
    figures: Callable[..., list[dict]]
    auto: bool = False
    long: str = ""


def verdict(agrees: bool | None) -> str:
    return "yes" if agrees else ("no" if agrees is False else "undecided")


SECTIONS = {"claim": ("Paper claims", "claim (paper)", "agrees"),
            "self-test": ("Self-tests (identities that hold whenever our code is right; not evidence for a paper)",
                          "identity", "holds"),
            "description": ("Descriptions (numbers that decide nothing)", "what", "")}


def summary(results: list[CheckResult]) -> str:
    """One line of counts: claims agree / disagree / undecided, self-tests pass or fail (never mixed)."""
    claims = [r for r in results if r.kind == "claim"]
    tests = [r for r in results if r.kind == "self-test"]
    yes = sum(r.agrees is True for r in claims)
    no = sum(r.agrees is False for r in claims)
    line = f"claims: {yes} agree, {no} disagree, {len(claims) - yes - no} undecided"
    failed = sum(r.agrees is False for r in tests)
    open_ = sum(r.agrees is None for r in tests)
    if tests:
        line += "; self-tests: " + (f"{failed} of {len(tests)} fail" if failed else
                                   f"all {len(tests) - open_} pass" if not open_ else
                                   f"{len(tests) - open_} pass, {open_} not run")
    descriptions = sum(r.kind == "description" for r in results)
    return line + (f"; {descriptions} descriptions" if descriptions else "")


def format_table(results: list[CheckResult]) -> str:
    """Plain-text tables for ``python -m pruning_core check``: the paper claims with their verdicts, then the
    self-tests, then the descriptions, each a section of its own, and the counts (``summary``) at the end."""
    out = []
    for kind in KINDS:
        part = [r for r in results if r.kind == kind]
        if part:
            out += [SECTIONS[kind][0] + ":", _table(part, kind), ""]
    return "\n".join(out + [summary(results)])


def _table(results: list[CheckResult], kind: str) -> str:
    with_model = any(r.model for r in results)
    _, claim_head, verdict_head = SECTIONS[kind]
    with_verdict = kind != "description"
    rows = [(("model",) if with_model else ()) + ("method", claim_head, "our figure")
            + ((verdict_head,) if with_verdict else ())]
    for r in results:
        rows.append(((r.model,) if with_model else ()) + (r.method, r.claim, r.figure)
                    + ((verdict(r.agrees),) if with_verdict else ()))
    caps = ((14,) if with_model else ()) + (10, 60, 56) + ((9,) if with_verdict else ())
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
        cells = [wrap(c, w) for c, w in zip(row, widths, strict=True)]
        for i in range(max(len(c) for c in cells)):
            line = ((c[i] if i < len(c) else "").ljust(w) for c, w in zip(cells, widths, strict=True))
            out.append("| " + " | ".join(line) + " |")
        if n == 0 or n == len(rows) - 1:
            out.append(sep)
    return "\n".join(out)
