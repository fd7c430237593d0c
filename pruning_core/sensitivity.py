"""Group-faithful sensitivity analysis: prune one channel dependency group alone, at each ratio of a grid, and
measure what the model loses.

Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017, Sec. 3.2 and Fig. 2(b): "prune each layer
independently and evaluate the resulting pruned network's accuracy". Here the unit is a DepGraph channel group
(Fang et al., CVPR 2023) rather than a layer, and each cell is exactly the prune a structured method would make
of that group: ``group_plan`` removes the ``round(ratio * size)`` lowest-scored channels (at most ``size - 1``;
ties broken by the lower index) from every producer, norm layer, consumer input and residual partner of the
group, through ``Workbench.apply`` like any structured plan; every other group stays dense.

One row per (group, ratio) cell, columns ``COLUMNS``:

  group, ratio (fraction removed), channels (the group's size), channels_removed, accuracy, loss (mean cross-
  entropy), agreement (top-1 agreement with the dense model on the same split), accuracy_drop (dense accuracy
  minus this accuracy), loss_increase (this loss minus the dense loss), drop (the task's headline metric, dense
  minus this: the accuracy drop with labels, the agreement drop without, the cosine drop for embeddings; NaN
  accuracy and loss where the data has no labels), seconds (this cell's apply + forward
  passes; the shared dense prefix of the suffix engine is in the meta's ``prefix_seconds``).

Two engines give the same numbers (to float rounding): ``naive``, one full evaluation pass per cell, and
``suffix`` (default, ``suffix.py``), which computes the dense activations up to the first layer a group touches
once and recomputes only the rest of the network per ratio. A cell removing no channel is the dense model and is
filled in without a pass. The table's ``attrs["meta"]`` says which engine ran and, after a fallback, why.
"""

from __future__ import annotations

import hashlib
import json
import time
import weakref
from typing import Callable, Iterable, Iterator

import pandas as pd
import torch
from torch import nn

from . import metrics
from .plan import Plan, PlanError, check_ratio
from .suffix import SuffixError, SuffixGraph
from .tasks import score
from .workbench import Workbench

COLUMNS = ["group", "ratio", "channels", "channels_removed", "accuracy", "loss", "agreement", "accuracy_drop",
           "loss_increase", "drop", "seconds"]
METRICS = ["accuracy", "loss", "agreement", "accuracy_drop", "loss_increase", "drop"]
ENGINES = ("suffix", "naive")
SPLITS = ("eval", "calib")
DEFAULT_MEMORY_BUDGET = 2 * 2**30  # bytes of cached activations the suffix engine may hold for the whole split
__all__ = ["COLUMNS", "DEFAULT_MEMORY_BUDGET", "ENGINES", "METRICS", "SPLITS", "cache_key", "from_json",
           "group_plan", "pivot", "prepared_suffixes", "removed_channels", "sensitivity_table", "suffix_fractions",
           "to_csv", "to_json", "cell_ratio", "checked_cells", "typed_table"]
_DTYPES = {"group": str, "ratio": float, "channels": int, "channels_removed": int, **{m: float for m in METRICS},
           "seconds": float}


def removed_channels(scores: torch.Tensor, ratio: float) -> torch.Tensor:
    """Indices (sorted) of the ``min(round(ratio * size), size - 1)`` lowest of ``scores`` (size,), ties broken
    by the lower index (a stable sort)."""
    size = len(scores)
    n = min(int(round(check_ratio(ratio) * size)), size - 1)
    return torch.sort(torch.argsort(scores.detach().cpu(), stable=True)[:n]).values


def group_plan(wb: Workbench, scores: dict[str, torch.Tensor], group: str, ratio: float) -> Plan:
    """The structured plan that prunes ``group`` alone at ``ratio``: its ``removed_channels`` under ``scores[group]``
    (shape (size,)), every other group dense. Evaluate it like any plan (``wb.evaluate_plan``)."""
    g = wb.groups.by_name.get(group)
    if g is None:
        raise PlanError(f"this model has no channel group {group!r}")
    if len(scores[group]) != g.size:
        raise PlanError(f"the scores of group {group!r} have {len(scores[group])} entries, the group {g.size}")
    return Plan("sensitivity", float(ratio), "structured", pruned_channels={group: removed_channels(scores[group],
                                                                                                     ratio)},
                details={"group": group})


def cache_key(model: str, criterion: str, split: str, ratios: Iterable[float], groups: Iterable[str] | None = None
              ) -> str:
    """A short stable key for one analysis (model name, criterion key, split, ratio grid, group subset); the engine
    is not part of it, both give the same table."""
    spec = {"v": 1, "model": model, "criterion": criterion, "split": split,
            "ratios": [round(float(r), 9) for r in sorted(ratios)], "groups": sorted(groups) if groups else None}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def typed_table(rows: list[dict] | pd.DataFrame) -> pd.DataFrame:
    """Rows (dicts or a frame) as a table of ``COLUMNS`` with their dtypes, empty or not."""
    df = pd.DataFrame(rows, columns=COLUMNS)
    return df.astype(_DTYPES) if len(df) else df.astype({k: ("object" if v is str else v) for k, v in _DTYPES.items()})


def pivot(table: pd.DataFrame, metric: str = "accuracy_drop") -> pd.DataFrame:
    """Groups x ratios of one metric (rows in the table's group order, columns ascending ratios); a missing cell
    is NaN."""
    if metric not in COLUMNS:
        raise KeyError(f"unknown metric {metric!r}; choose from {', '.join(COLUMNS[2:])}")
    groups = list(dict.fromkeys(table["group"]))
    out = table.pivot(index="group", columns="ratio", values=metric)
    return out.reindex(index=groups, columns=sorted(out.columns))


def to_json(table: pd.DataFrame) -> str:
    """The table and its meta as JSON (``from_json`` reads it back)."""
    return json.dumps({"meta": table.attrs.get("meta", {}), "columns": COLUMNS,
                       "rows": typed_table(table).to_dict(orient="records")}, indent=1)


def from_json(text: str) -> pd.DataFrame:
    """The table ``to_json`` wrote (plain JSON: nothing is executed or unpickled)."""
    data = json.loads(text)
    if not isinstance(data, dict) or data.get("columns") != COLUMNS or not isinstance(data.get("rows"), list):
        raise ValueError("not a sensitivity table (expected the JSON that sensitivity.to_json writes)")
    table = typed_table(data["rows"])
    table.attrs["meta"] = data.get("meta", {})
    return table


def to_csv(table: pd.DataFrame) -> str:
    """The rows as CSV (the meta stays in the JSON form)."""
    return typed_table(table).to_csv(index=False)


def cell_ratio(ratio: float) -> float:
    """A ratio as a table cell's key: rounded to 9 decimals, so 0.1 + 0.2 and 0.3 name one cell."""
    return round(float(ratio), 9)


def _metrics(outputs: torch.Tensor, y: torch.Tensor, dense: torch.Tensor, task) -> tuple[float, float, float, float]:
    """(accuracy, mean cross-entropy, agreement with the dense outputs, the task's headline metric) of one cell's
    outputs: ``tasks.score``, the formulas every evaluation uses (NaN accuracy and loss without labels)."""
    with torch.inference_mode():
        values = score(task, outputs, y, dense)
    return values["accuracy"], values["loss"], values["agreement"], values[task.primary]


def _group_tensors(wb: Workbench, group: str) -> list[torch.Tensor]:
    """Every parameter and buffer of the group's member layers: what a prune of the group may change."""
    layers = dict.fromkeys(m.module for m in wb.groups.by_name[group].members)
    return [t for name in layers for mod in [wb.model.get_submodule(name)] for t in (*mod.parameters(), *mod.buffers())]


def _sync(x: torch.Tensor) -> None:
    if x.is_cuda:
        torch.cuda.synchronize(x.device)


Work = dict[str, list[tuple[float, Plan]]]  # group -> the (ratio, plan) cells still to evaluate


def _naive_cells(wb: Workbench, x: torch.Tensor, work: Work) -> Iterator[tuple[str, float, torch.Tensor, float]]:
    """One full forward pass over ``x`` per cell: (group, ratio, logits, seconds)."""
    for group, cells in work.items():
        for ratio, plan in cells:
            _sync(x)
            start = time.perf_counter()
            with wb.applied(plan) as model:
                logits = metrics.predict(model, x, wb.batch_size)
            _sync(x)
            yield group, ratio, logits, time.perf_counter() - start


def _suffix_cells(wb: Workbench, graph: SuffixGraph, x: torch.Tensor, work: Work, cuts: dict[str, int],
                  keep: bool, stats: dict) -> Iterator[tuple[str, float, torch.Tensor, float]]:
    """The dense prefix walked once, cut by cut, and per cell only the suffix: (group, ratio, logits, seconds).

    ``keep``: hold the live values of every batch of ``x`` at the current cut (one walk over the whole model in
    all); otherwise (over the memory budget) each group recomputes its prefix batch by batch and evaluates all of
    its ratios on each batch before the next."""
    chunks = list(x.split(wb.batch_size))
    by_cut: dict[int, list[str]] = {}
    for group in work:
        by_cut.setdefault(cuts[group], []).append(group)
    envs = [graph.initial_env(c) for c in chunks] if keep else []
    pos = graph.start
    for k in sorted(by_cut):
        guard = graph.mutated_inputs(k)
        if guard:
            stats["guarded_cuts"] += 1
        _sync(x)
        start = time.perf_counter()
        with torch.inference_mode():
            wb.restore()
            if keep:
                envs, pos = [graph.advance(env, pos, k) for env in envs], k
        _sync(x)
        stats["prefix_seconds"] += time.perf_counter() - start
        for group in by_cut[k]:
            if keep:
                for ratio, plan in work[group]:
                    start = time.perf_counter()
                    wb.apply(plan)
                    with torch.inference_mode():
                        parts = [graph.run(k, env, guard) for env in envs]
                        logits = parts[0] if len(parts) == 1 else torch.cat(parts)
                    wb.restore()
                    _sync(x)
                    yield group, ratio, logits, time.perf_counter() - start
                continue
            outs: list[list[torch.Tensor]] = [[] for _ in work[group]]
            seconds = [0.0] * len(work[group])
            for chunk in chunks:
                start = time.perf_counter()
                with torch.inference_mode():
                    wb.restore()
                    env = graph.advance(graph.initial_env(chunk), graph.start, k)
                _sync(x)
                stats["prefix_seconds"] += time.perf_counter() - start
                for i, (_, plan) in enumerate(work[group]):
                    start = time.perf_counter()
                    wb.apply(plan)
                    with torch.inference_mode():
                        outs[i].append(graph.run(k, env, guard))
                    wb.restore()
                    _sync(x)
                    seconds[i] += time.perf_counter() - start
            for i, (ratio, _) in enumerate(work[group]):
                yield group, ratio, torch.cat(outs[i]), seconds[i]


def checked_cells(wb: Workbench, scores: dict, ratios: Iterable[float], groups: Iterable[str] | None, split: str,
                  engine: str) -> tuple[list[float], list[str]]:
    """The table's ratios (checked, merged, sorted) and groups (forward order, those with scores, within
    ``groups``); a ``ValueError`` (``PlanError`` for the ratios) for an unknown engine, split or group."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose from {', '.join(ENGINES)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    ratios = sorted({cell_ratio(check_ratio(r)) for r in ratios})
    if not ratios:
        raise PlanError("the sensitivity analysis needs at least one ratio")
    order = [g.name for g in wb.groups.groups]
    if groups is not None:
        groups = list(groups)
        unknown = [g for g in groups if g not in order]
        if unknown:
            raise ValueError(f"this model has no channel group {unknown[0]!r}; groups: {', '.join(order)}")
    return ratios, [g for g in order if g in scores and (groups is None or g in groups)]


def sensitivity_table(wb: Workbench, scores: dict[str, torch.Tensor], ratios: Iterable[float], *,
                      groups: Iterable[str] | None = None, split: str = "eval", done: pd.DataFrame | None = None,
                      on_row: Callable[[dict], None] | None = None, engine: str = "suffix",
                      criterion: str | None = None, memory_budget: int = DEFAULT_MEMORY_BUDGET) -> pd.DataFrame:
    """Prune each group alone at each ratio (``group_plan``) and evaluate it on ``split``; one row per cell
    (``COLUMNS``), ordered by group (forward order) then ratio.

    ``scores``: group -> (channels,) scores, low removed first (``importance.channel_scores(wb, key)``); groups
    without scores are skipped. ``ratios``: fractions removed (each ``check_ratio``-ed; repeats merged).
    ``groups``: a subset of group names (default all). ``split``: ``"eval"`` (default) or ``"calib"``; agreement
    is with the dense model's predictions on that split. ``done``: rows already measured (a table like the one
    returned): their cells are not evaluated again and their rows are returned as they are. ``on_row(row)``: called
    with each newly finished row; an exception it raises stops the analysis and propagates (every finished row
    has been delivered by then). ``engine``: ``"suffix"`` (default) or ``"naive"``; a model ``torch.fx`` cannot
    trace (or whose trace differs from it) falls back to ``naive``, the reason in ``attrs["meta"]["fallback"]``.
    ``memory_budget``: bytes of cached activations the suffix engine may hold for the whole split (default 2 GiB);
    above it each group recomputes its prefix. The working copy is restored (bit for bit) before returning."""
    ratios, names = checked_cells(wb, scores, ratios, groups, split, engine)
    sizes = wb.groups.sizes

    done_rows = {}
    if done is not None and len(done):
        missing = [c for c in COLUMNS if c not in done.columns]
        if missing:
            raise ValueError(f"the finished rows lack the column(s) {', '.join(missing)}; expected {COLUMNS}")
        for row in typed_table(done).to_dict(orient="records"):
            if row["group"] in names and cell_ratio(row["ratio"]) in ratios:
                done_rows[(row["group"], cell_ratio(row["ratio"]))] = row

    wb.restore()
    if split == "eval":
        x, y = wb.eval_x, wb.eval_y
        dense = wb.dense_metrics()
        dense_out = wb.dense_outputs
    else:
        x, y = wb.calib_x, wb.calib_y
        dense, dense_out = metrics.evaluate_task(wb.model, x, y, wb.task, None, wb.batch_size)
    headline = wb.task.primary
    dense_headline = {"accuracy": dense.accuracy, "loss": dense.loss, "agreement": dense.agreement,
                      **dense.scores}[headline]
    meta = {"model": wb.name, "criterion": criterion, "split": split, "samples": len(y), "ratios": ratios,
            "groups": names, "engine_requested": engine, "engine": engine, "fallback": None,
            "dense_accuracy": dense.accuracy, "dense_loss": dense.loss, "task": wb.task.kind,
            "headline": headline, "dense_headline": dense_headline, "cells": len(names) * len(ratios),
            "cells_reused": len(done_rows), "cells_evaluated": 0, "prefix_seconds": 0.0, "guarded_cuts": 0}

    rows = dict(done_rows)
    work: Work = {}
    started = time.perf_counter()
    cells = None

    def emit(group: str, ratio: float, n: int, acc: float, loss: float, agree: float, head: float,
             seconds: float) -> None:
        row = {"group": group, "ratio": ratio, "channels": sizes[group], "channels_removed": n, "accuracy": acc,
               "loss": loss, "agreement": agree, "accuracy_drop": dense.accuracy - acc,
               "loss_increase": loss - dense.loss, "drop": dense_headline - head, "seconds": seconds}
        rows[(group, ratio)] = row
        if on_row is not None:
            on_row(dict(row))

    try:
        for group in names:
            for r in ratios:
                if (group, r) in done_rows:
                    continue
                plan = group_plan(wb, scores, group, r)
                if len(plan.pruned_channels[group]) == 0:  # nothing removed: the dense model
                    emit(group, r, 0, dense.accuracy, dense.loss, 1.0, dense_headline, 0.0)
                else:
                    work.setdefault(group, []).append((r, plan))
        cells = _naive_cells(wb, x, work)  # a generator: nothing runs until the loop below
        if engine == "suffix" and work:
            prepared = prepared_suffixes(wb)
            if isinstance(prepared, SuffixError):
                meta["engine"], meta["fallback"] = "naive", str(prepared)
            else:
                graph, cuts, per_sample = prepared
                keep = len(x) <= wb.batch_size or max(per_sample[cuts[g]] for g in work) * len(x) <= memory_budget
                meta["cache"] = "whole split" if keep else "recomputed per group (over the memory budget)"
                cells = _suffix_cells(wb, graph, x, work, cuts, keep, meta)
        for group, ratio, logits, seconds in cells:
            acc, loss, agree, head = _metrics(logits, y, dense_out, wb.task)
            meta["cells_evaluated"] += 1
            emit(group, ratio, len(dict(work[group])[ratio].pruned_channels[group]), acc, loss, agree, head,
                 seconds)
    finally:
        if cells is not None:
            cells.close()
        wb.restore()
    meta["seconds"] = time.perf_counter() - started
    position = {g: i for i, g in enumerate(names)}
    table = typed_table(sorted(rows.values(), key=lambda r: (position[r["group"]], r["ratio"])))
    table.attrs["meta"] = meta
    return table


_PREPARED: "weakref.WeakKeyDictionary[nn.Module, tuple | SuffixError]" = weakref.WeakKeyDictionary()


def prepared_suffixes(wb: Workbench) -> tuple[SuffixGraph, dict[str, int], dict[int, float]] | SuffixError:
    """The working copy's ``SuffixGraph``, each group's cut and the live bytes per sample at each cut, checked once
    on two evaluation samples and kept while the working copy lives (its structure never changes; plans only
    change values). Returns the ``SuffixError`` instead when the model cannot be evaluated by suffixes."""
    if wb.model not in _PREPARED:
        try:
            graph = SuffixGraph(wb.model)
            cuts = {g.name: graph.cut(_group_tensors(wb, g.name)) for g in wb.groups.groups}
            wb.restore()
            per_sample = graph.check(wb.model, wb.eval_x[:2], list(cuts.values()))
            _PREPARED[wb.model] = (graph, cuts, per_sample)
        except SuffixError as e:
            _PREPARED[wb.model] = e
    return _PREPARED[wb.model]


def suffix_fractions(wb: Workbench, groups: Iterable[str] | None = None) -> dict[str, float]:
    """Per group: the FLOPs of its suffix (the layers from the first one it touches to the output) over the whole
    model's, both from ``wb.dense_flops`` per-layer counts; what the suffix engine recomputes per ratio. Raises
    ``SuffixError`` for a model ``torch.fx`` cannot trace."""
    prepared = prepared_suffixes(wb)
    if isinstance(prepared, SuffixError):
        raise prepared
    graph, cuts, _ = prepared
    per_module = wb.dense_flops[1]
    total = graph.flops_from(graph.start, per_module)
    out = {}
    for g in wb.groups.groups:
        if groups is None or g.name in groups:
            out[g.name] = graph.flops_from(cuts[g.name], per_module) / total if total else 1.0
    return out
