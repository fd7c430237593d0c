"""Sweeps: methods x ratios, streamed one evaluated point at a time.

Each method does its ratio-independent work once (``prepare``), then every ratio costs one plan (index
selection), one in-place apply or one slice, and exactly one evaluation pass. Results are plain rows:
``SweepResult.points`` (one row per method and ratio) and ``SweepResult.layers`` (one row per method, ratio and
prunable layer: the kept fraction of its weights, and of its channels for structured methods), both pandas
frames that round-trip through JSON and CSV.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Iterator

import pandas as pd

from .limits import max_ratios, too_many_ratios
from .methods import REGISTRY, Method, make_method
from .plan import PlanError, check_ratio
from .workbench import Workbench

POINT_COLUMNS = ["method", "label", "granularity", "ratio", "accuracy", "loss", "agreement", "params",
                 "params_fraction", "flops", "flops_fraction", "sparsity", "eval_seconds", "plan_seconds",
                 "evaluation"]
LAYER_COLUMNS = ["method", "ratio", "layer", "kept_fraction", "kept_channels", "channels"]


def ratio_grid(start: float = 0.0, stop: float = 0.9, steps: int = 10) -> list[float]:
    """``steps`` evenly spaced ratios from ``start`` to ``stop`` inclusive, rounded to 4 decimals, sorted, and
    with duplicates merged (``ratio_grid(0.5, 0.5, 3) == [0.5]``), so a list may be shorter than ``steps``.

    Raises ``PlanError`` (a ``ValueError``) for an invalid ratio, fewer than one step, or more steps than one sweep
    may evaluate (``limits.max_ratios()``); the step count is checked before any list is built."""
    if steps < 1:
        raise PlanError(f"A ratio grid needs at least one step, got {steps}.")
    if steps > max_ratios():
        raise PlanError(too_many_ratios(steps))
    steps = int(steps)
    start, stop = check_ratio(start), check_ratio(stop)
    if steps == 1:
        return [check_ratio(round(start, 4))]
    # rounding may move a ratio just below 1 onto 1: each value is checked after rounding
    return sorted({check_ratio(round(start + (stop - start) * i / (steps - 1), 4)) for i in range(steps)})


def point_columns(rows: list[dict]) -> list[str]:
    """``POINT_COLUMNS`` and then the task's own metric columns the rows carry (``tasks.Task.extra``: top-5
    overlap and KL for unlabelled classification, cosine similarity for embeddings), in first-seen order."""
    extra = []
    for row in rows:
        extra.extend(k for k in row if k not in POINT_COLUMNS and k not in extra)
    return POINT_COLUMNS + extra


def sweep_meta(wb: Workbench, structured: str) -> dict:
    """What travels with a sweep's results: the model, data, device, the task and its headline metric, and the
    dense model's figures on the evaluation split."""
    dense = wb.dense_metrics()
    return {"model": wb.name, "data": wb.data.name, "device": str(wb.device), "structured_evaluation": structured,
            "task": wb.task.kind, "primary": wb.task.primary, "dense_accuracy": dense.accuracy,
            "dense": {"accuracy": dense.accuracy, "loss": dense.loss, "agreement": dense.agreement, **dense.scores},
            "dense_params": wb.dense_params, "dense_flops": wb.dense_flops[0]}


@dataclass
class SweepPoint:
    row: dict
    layers: list[dict]


@dataclass
class SweepResult:
    points: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=POINT_COLUMNS))
    layers: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=LAYER_COLUMNS))
    meta: dict = field(default_factory=dict)

    @classmethod
    def from_points(cls, points: Iterable[SweepPoint], meta: dict | None = None) -> "SweepResult":
        # one row per (method, ratio): a point measured again replaces the earlier one (kept in the first one's
        # place), so a repeated ratio can never give a method two rows at one ratio
        unique: dict[tuple, SweepPoint] = {}
        for p in points:
            unique[(p.row["method"], round(float(p.row["ratio"]), 9))] = p
        points = list(unique.values())
        rows = pd.DataFrame([p.row for p in points], columns=point_columns([p.row for p in points]))
        layers = pd.DataFrame([r for p in points for r in p.layers], columns=LAYER_COLUMNS)
        return cls(rows, layers, meta or {})

    def at(self, ratio: float) -> pd.DataFrame:
        """The points evaluated at ``ratio`` (one per method)."""
        return self.points[(self.points["ratio"] - ratio).abs() < 1e-9]

    def to_json(self) -> str:
        return json.dumps({"meta": self.meta, "points": self.points.to_dict(orient="records"),
                           "layers": self.layers.to_dict(orient="records")}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> "SweepResult":
        d = json.loads(text)
        return cls(pd.DataFrame(d["points"], columns=point_columns(d["points"])),
                   pd.DataFrame(d["layers"], columns=LAYER_COLUMNS), d.get("meta", {}))

    def to_csv(self) -> tuple[str, str]:
        """(points CSV, layers CSV)."""
        return self.points.to_csv(index=False), self.layers.to_csv(index=False)


def _layer_rows(wb: Workbench, method: str, plan, kept: dict[str, float]) -> list[dict]:
    rows = []
    channels = {}
    if plan.is_structured:
        kept_ch = wb.groups.kept_channels(plan.pruned_channels)
        for g in wb.groups.groups:
            for producer in g.producers:
                channels[producer] = (kept_ch[g.name], g.size)
    for name, frac in kept.items():
        layer = name[:-len(".weight")] if name.endswith(".weight") else name
        kc, c = channels.get(layer, (None, None))
        rows.append({"method": method, "ratio": plan.ratio, "layer": layer, "kept_fraction": frac,
                     "kept_channels": kc, "channels": c})
    return rows


@dataclass(frozen=True)
class SweepTask:
    """One independent evaluation of a sweep: ``method`` (its position in the sweep's method list) at ``ratio``."""

    index: int
    method: int
    ratio: float


def sweep_tasks(n_methods: int, ratios: list[float]) -> list[SweepTask]:
    """The sweep's tasks in its canonical order (method by method, each ratio in the given order): the order the
    in-process runner evaluates them in and every runner's results are put back into."""
    return [SweepTask(i * len(ratios) + j, i, r) for i in range(n_methods) for j, r in enumerate(ratios)]


def evaluate_point(wb: Workbench, method: Method, ratio: float, structured: str,
                   prepare_seconds: float = 0.0) -> SweepPoint:
    """One sweep point: ``method`` (prepared on ``wb``) planned at ``ratio`` and evaluated once (``structured``
    as for ``sweep``). ``prepare_seconds`` is added to the row's ``plan_seconds`` (the point that paid for the
    preparation carries it)."""
    t0 = time.perf_counter()
    plan = method.plan(ratio)
    plan_seconds = time.perf_counter() - t0 + prepare_seconds
    kept = wb.kept_fraction_by_tensor(plan)
    pm = wb.evaluate_plan(plan, structured=structured, kept=kept)
    fields = asdict(pm)
    row = {"method": method.key, "label": method.label, "granularity": method.granularity, "ratio": ratio,
           **{k: v for k, v in fields.items() if k != "scores"}, **fields["scores"], "plan_seconds": plan_seconds}
    return SweepPoint(row, _layer_rows(wb, method.key, plan, kept))


def sweep(wb: Workbench, methods: Iterable[str | Method], ratios: Iterable[float], structured: str = "sliced",
          on_prepare: Callable[[str], None] | None = None) -> Iterator[SweepPoint]:
    """Evaluate every method at every ratio in this process, yielding each point as soon as it is measured (the
    tasks of ``sweep_tasks`` in order; each method prepared once, before its first point).

    ``methods``: registry keys or prepared/unprepared ``Method`` instances. ``structured``: evaluate structured
    plans on the physically smaller model (``"sliced"``, default) or on the masked dense-size model
    (``"masked"``); both give the same accuracy, sliced is cheaper. Unstructured plans are always masked in place.
    ``ray_runner.RayRunner.sweep`` runs the same tasks on a Ray cluster.
    """
    if structured not in ("sliced", "masked"):
        raise ValueError("structured must be 'sliced' or 'masked'")
    ratios = [check_ratio(r) for r in ratios]
    methods = list(methods)
    wb.dense_metrics()  # the reference predictions for agreement: one pass, once per workbench
    prepared: dict[int, tuple[Method, float]] = {}
    for task in sweep_tasks(len(methods), ratios):
        if task.method not in prepared:
            method = make_method(methods[task.method])
            if on_prepare:
                on_prepare(method.key)
            t0 = time.perf_counter()
            if method._wb is not wb:
                method.prepare(wb)
            prepared[task.method] = (method, time.perf_counter() - t0)
        method, seconds = prepared[task.method]
        prepared[task.method] = (method, 0.0)  # the first point carries the preparation
        yield evaluate_point(wb, method, task.ratio, structured, seconds)


def run_sweep(wb: Workbench, methods: Iterable[str | Method], ratios: Iterable[float], structured: str = "sliced",
              progress: Callable[[int, int, SweepPoint], None] | None = None, runner=None) -> SweepResult:
    """``sweep`` collected into a ``SweepResult``; ``progress(done, total, point)`` after each point, in the
    order points finish. ``runner``: None runs in this process; a ``ray_runner.RayRunner`` spreads the points
    over its workers. The result's rows are in the canonical order (``sweep_tasks``) whichever ran them."""
    methods, ratios = list(methods), list(ratios)
    total = len(methods) * len(ratios)
    points = []
    stream = sweep(wb, methods, ratios, structured) if runner is None else runner.sweep(wb, methods, ratios,
                                                                                        structured)
    for point in stream:
        points.append(point)
        if progress:
            progress(len(points), total, point)
    order = {(m if isinstance(m, str) else m.key, float(r)): i
             for i, (m, r) in enumerate((m, r) for m in methods for r in [check_ratio(x) for x in ratios])}
    points.sort(key=lambda p: order.get((p.row["method"], float(p.row["ratio"])), len(order)))
    meta = {**sweep_meta(wb, structured), "methods": [m if isinstance(m, str) else m.key for m in methods],
            "ratios": ratios}
    return SweepResult.from_points(points, meta)


__all__ = ["REGISTRY", "SweepPoint", "SweepResult", "SweepTask", "evaluate_point", "point_columns", "ratio_grid",
           "run_sweep", "sweep", "sweep_meta", "sweep_tasks"]
