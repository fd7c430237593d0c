"""Sweeps, sensitivity tables and fine-tuning recoveries on a Ray cluster (Moritz et al., "Ray: A Distributed
Framework for Emerging AI Applications", OSDI 2018): the same independent tasks as in this process, spread over
actors.

A job is a list of independent tasks: a sweep's (method, ratio) points (``sweep.sweep_tasks``), a recovery's
(method, ratio) prune-and-fine-tune pairs, a sensitivity table's channel groups (each group with all its ratios, so
the suffix engine computes the group's dense prefix once). ``RayRunner`` starts ``workers`` actors (``EvalWorker``);
each builds its workbench once from a ``recipes.WorkbenchRecipe`` (the model file and data as the person gave them,
through Ray's object store, read by the same safe loaders as an upload), takes one GPU when the cluster has GPUs,
and keeps every method it has prepared for the tasks that follow. Tasks go to whichever worker is free (at most
``queue`` waiting per worker), and each result is handed back the moment it arrives, in completion order, to the
same callbacks the in-process code calls (the sweep's points, ``on_point`` of a recovery, ``on_row`` of the
sensitivity table). The assembled result is put in the in-process order, so it is the in-process result: same rows,
same numbers (``tests/unit/test_ray_runner.py``).

Faults: the actors are created with ``max_restarts`` and ``max_task_retries``: a worker process that dies is
restarted by Ray (rebuilding its workbench) and the tasks it held are run again; results already delivered stay
delivered. Stopping (the generator closed, ``should_stop`` true, or a click in the app) cancels the tasks not yet
finished and keeps what finished.

Where the cluster is: ``address=None`` starts a local cluster (``ray.init()``), with this machine's CPUs;
``"auto"`` joins the cluster this machine is part of (``ray start`` ran here); ``"ray://host:10001"`` (Ray
Client) or ``"host:6379"`` joins a remote one. Every node needs this project installed (the set-up's ``pip
install -e .`` and the same requirements), as Ray runs the workers' code from the nodes' own Python.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Callable, Iterable, Iterator

import pandas as pd
import torch

from .plan import check_ratio
from .recipes import WorkbenchRecipe
from .sweep import SweepPoint, evaluate_point, sweep_tasks

__all__ = ["RayRunner", "RayUnavailable", "method_settings", "ray_available"]

DEFAULT_RETRIES = 3


class RayUnavailable(RuntimeError):
    """Ray is not installed, or the cluster cannot be reached; the message says which and what to do."""


def ray_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("ray") is not None


def _ray():
    try:
        import ray
    except ImportError as e:
        raise RayUnavailable("Ray is an optional extra: pip install -r requirements-extras.txt (ray "
                             "is pinned there)") from e
    return ray


def method_settings(method) -> tuple[str, dict]:
    """A method as plain values a worker rebuilds it from (``make_method(key, **settings)``): its registry key and
    its settings (``config()``, less the descriptive entries its constructor does not take)."""
    import inspect

    from .methods import make_method

    m = make_method(method)
    accepted = inspect.signature(type(m).__init__).parameters
    return m.key, {k: v for k, v in m.config().items() if k in accepted}


class EvalWorker:
    """One Ray actor: a workbench built once from the recipe, the methods it has prepared, and one task at a time.
    Defined as a plain class and wrapped by ``ray.remote`` when a runner starts, so importing this module does not
    need Ray."""

    def __init__(self, recipe: WorkbenchRecipe, threads: int, device: str | None):
        from .runtime import tune_malloc

        torch.set_num_threads(max(1, int(threads)))
        tune_malloc()
        start = time.perf_counter()
        self.wb = recipe.build(device=device)
        self.build_seconds = time.perf_counter() - start
        self.methods: dict[tuple, object] = {}
        self.scores: dict[str, dict] = {}

    def info(self) -> dict:
        return {"pid": os.getpid(), "device": str(self.wb.device), "threads": torch.get_num_threads(),
                "build_seconds": self.build_seconds, "batch_size": self.wb.batch_size}

    def sweep_point(self, key: str, config: dict, ratio: float, structured: str) -> tuple[SweepPoint, float]:
        """The point of ``key`` (built with ``config``) at ``ratio``; and this worker's seconds for it."""
        from .methods import make_method

        start = time.perf_counter()
        ident = (key, repr(sorted(config.items())))
        seconds = 0.0
        if ident not in self.methods:
            self.methods[ident] = make_method(key, **config).prepare(self.wb)
            seconds = time.perf_counter() - start
        point = evaluate_point(self.wb, self.methods[ident], ratio, structured, seconds)
        return point, time.perf_counter() - start

    def sensitivity_group(self, scores: dict, ratios: list[float], group: str, split: str, engine: str,
                          criterion: str | None, memory_budget: int, done: list[dict] | None
                          ) -> tuple[list[dict], dict, float]:
        """The rows of one group pruned alone at each ratio (``sensitivity.sensitivity_table``), the table's
        meta and this worker's seconds."""
        from .sensitivity import sensitivity_table

        start = time.perf_counter()
        table = sensitivity_table(self.wb, scores, ratios, groups=[group], split=split, engine=engine,
                                  criterion=criterion, memory_budget=memory_budget,
                                  done=pd.DataFrame(done) if done else None)
        return table.to_dict(orient="records"), table.attrs["meta"], time.perf_counter() - start

    def recovery_point(self, key: str, config: dict, ratio: float, epochs: int | None, structured: str,
                       recipe: dict) -> tuple[list[dict], float]:
        """The pruned and the fine-tuned rows of ``key`` at ``ratio`` (``recovery.run_recovery``) and this
        worker's seconds."""
        from .recovery import run_recovery

        start = time.perf_counter()
        ident = (key, repr(sorted(config.items())))
        if ident not in self.methods:
            from .methods import make_method

            self.methods[ident] = make_method(key, **config).prepare(self.wb)
        frame = run_recovery(self.wb, [self.methods[ident]], [ratio], epochs, structured=structured, **recipe)
        return frame.to_dict(orient="records"), time.perf_counter() - start

    def prepared(self) -> list[str]:
        """The keys of the methods this worker has prepared, one entry per preparation."""
        return [key for key, _ in self.methods]

    def noop(self) -> int:
        """A task that does nothing: the runner's round-trip cost (the benchmark's per-task overhead floor)."""
        return os.getpid()


class RayRunner:
    """Runs sweeps and sensitivity tables on ``workers`` Ray actors built from ``recipe``.

    ``address``: None starts a local Ray cluster (or uses the one this process already started), ``"auto"`` or
    an address joins an existing cluster. ``workers``: default, the cluster's GPUs when it has any (one per
    worker), else its CPUs divided by ``threads``. ``threads``: torch threads per worker. ``queue``: tasks
    waiting per worker beyond the one it runs (more hides the round trip, fewer lose less on a stop).
    ``retries``: Ray's ``max_restarts`` and ``max_task_retries`` per actor. ``init_options``: extra arguments
    for ``ray.init`` (a local cluster's ``num_cpus``, ``object_store_memory``...).

    Use as a context manager or call ``close()``: that ends the actors (and a local cluster this runner
    started)."""

    def __init__(self, recipe: WorkbenchRecipe, address: str | None = None, workers: int | None = None,
                 threads: int = 1, queue: int = 1, retries: int = DEFAULT_RETRIES, init_options: dict | None = None):
        ray = _ray()
        self.recipe, self.threads, self.queue = recipe, max(1, int(threads)), max(0, int(queue))
        self.started_cluster = False
        if not ray.is_initialized():
            options = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False,
                       **(init_options or {})}
            try:
                ray.init(address=address or None, **options)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise RayUnavailable(f"cannot reach a Ray cluster at {address or 'a new local cluster'}: "
                                     f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
            self.started_cluster = True
        resources = ray.cluster_resources()
        self.gpus = int(resources.get("GPU", 0))
        cpus = max(1, int(resources.get("CPU", 1)))
        self.n_workers = int(workers) if workers else (self.gpus or max(1, cpus // self.threads))
        if self.n_workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        remote = ray.remote(EvalWorker).options(
            num_cpus=min(self.threads, cpus), num_gpus=1 if self.gpus else 0, max_restarts=retries,
            max_task_retries=retries)
        # once in the object store, read by every worker; held here, so a restarted worker can read it again
        self._recipe_ref = ray.put(recipe)
        device = "cuda" if self.gpus else "cpu"
        self.actors = [remote.remote(self._recipe_ref, self.threads, device) for _ in range(self.n_workers)]
        self._ray = ray
        self.busy_seconds: list[float] = []  # the last job's tasks: each one's seconds on its worker

    # ----- lifecycle ------------------------------------------------------------------------------------------
    def __enter__(self) -> "RayRunner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for actor in getattr(self, "actors", []):
            try:
                self._ray.kill(actor, no_restart=True)
            except Exception:  # an actor already gone
                pass
        self.actors = []
        if self.started_cluster and self._ray.is_initialized():
            self._ray.shutdown()
            self.started_cluster = False

    def infos(self) -> list[dict]:
        """Each worker's pid, device, threads and workbench build time (waits for the workers to be built).
        A worker that could not build its workbench (a file refused there, a path missing on its node, a package
        missing) raises ``RayUnavailable`` with the worker's own message."""
        try:
            return self._ray.get([a.info.remote() for a in self.actors])
        except self._ray.exceptions.RayError as e:
            raise RayUnavailable(f"a Ray worker could not build the workbench: {_last_line(e)}") from e

    # ----- the scheduler --------------------------------------------------------------------------------------
    def _run(self, calls: list[Callable], should_stop: Callable[[], bool] | None
             ) -> Iterator[tuple[int, object]]:
        """Submit ``calls[i](actor)`` to free actors (one running plus ``queue`` waiting each) and yield ``(i,
        result)`` as each finishes. Closing the generator or ``should_stop()`` cancels what has not finished."""
        ray = self._ray
        todo = list(range(len(calls)))[::-1]
        running: dict = {}  # ref -> (task index, actor index)
        load = [0] * len(self.actors)
        try:
            while todo or running:
                for a in range(len(self.actors)):
                    while todo and load[a] < 1 + self.queue:
                        i = todo.pop()
                        running[calls[i](self.actors[a])] = (i, a)
                        load[a] += 1
                if should_stop is not None and should_stop():
                    return
                ready, _ = ray.wait(list(running), num_returns=1, timeout=0.25)
                for ref in ready:
                    i, a = running.pop(ref)
                    load[a] -= 1
                    yield i, ray.get(ref)
        finally:
            for ref in running:
                ray.cancel(ref)

    # ----- jobs -----------------------------------------------------------------------------------------------
    def sweep(self, wb, methods: Iterable, ratios: Iterable[float], structured: str = "sliced",
              on_prepare: Callable[[str], None] | None = None,
              should_stop: Callable[[], bool] | None = None) -> Iterator[SweepPoint]:
        """The points of ``sweep.sweep(wb, methods, ratios, structured)``, computed on the workers and yielded in
        the order they finish (``run_sweep`` puts them back in order). ``wb``: the driver's workbench for the
        same recipe (its dense reference is what the workers compute too). ``on_prepare`` is called once per
        method as its first task is sent."""
        if structured not in ("sliced", "masked"):
            raise ValueError("structured must be 'sliced' or 'masked'")
        ratios = [check_ratio(r) for r in ratios]
        settings = [method_settings(m) for m in methods]
        tasks = sweep_tasks(len(settings), ratios)
        announced: set[int] = set()

        def call(task):
            key, config = settings[task.method]

            def submit(actor):
                if on_prepare is not None and task.method not in announced:
                    announced.add(task.method)
                    on_prepare(key)
                return actor.sweep_point.remote(key, config, task.ratio, structured)
            return submit

        self.busy_seconds = []
        with contextlib.closing(self._run([call(t) for t in tasks], should_stop)) as results:
            for _, (point, seconds) in results:
                self.busy_seconds.append(seconds)
                yield point

    def recovery(self, wb, methods: Iterable, ratios: Iterable[float], epochs: int | None = None,
                 structured: str = "sliced", on_point: Callable[[dict], None] | None = None,
                 should_stop: Callable[[], bool] | None = None, **recipe) -> pd.DataFrame:
        """``recovery.run_recovery`` with one task per (method, ratio) (prune, evaluate, fine-tune, evaluate),
        run on the workers; ``on_point(row)`` with each row as its task finishes. Same rows and numbers as in
        this process at the same thread count, in its order. Training steps are not reported one by one."""
        from .recovery import recovery_columns

        if structured not in ("sliced", "masked"):
            raise ValueError("structured must be 'sliced' or 'masked'")
        ratios = [check_ratio(r) for r in ratios]
        settings = [method_settings(m) for m in methods]
        tasks = sweep_tasks(len(settings), ratios)

        def call(task):
            return lambda actor: actor.recovery_point.remote(*settings[task.method], task.ratio, epochs, structured,
                                                             recipe)

        done: dict[int, list[dict]] = {}
        self.busy_seconds = []
        with contextlib.closing(self._run([call(t) for t in tasks], should_stop)) as results:
            for i, (rows, seconds) in results:
                self.busy_seconds.append(seconds)
                done[i] = rows
                for row in rows:
                    if on_point is not None:
                        on_point(dict(row))
        ordered = [row for i in sorted(done) for row in done[i]]
        return pd.DataFrame(ordered, columns=recovery_columns(wb))

    def sensitivity(self, wb, scores: dict[str, torch.Tensor], ratios: Iterable[float], *,
                    groups: Iterable[str] | None = None, split: str = "eval", done: pd.DataFrame | None = None,
                    on_row: Callable[[dict], None] | None = None, engine: str = "suffix",
                    criterion: str | None = None, memory_budget: int | None = None,
                    should_stop: Callable[[], bool] | None = None) -> pd.DataFrame:
        """``sensitivity.sensitivity_table`` with one task per channel group, run on the workers; ``on_row`` with
        each row as its group finishes. Same arguments, same table (rows, order and numbers; the meta adds
        ``runner`` and ``workers``). A stop returns the rows finished so far."""
        from . import sensitivity as sens

        budget = sens.DEFAULT_MEMORY_BUDGET if memory_budget is None else memory_budget
        ratios, names = sens.checked_cells(wb, scores, ratios, groups, split, engine)
        done_rows: dict[str, list[dict]] = {}
        if done is not None and len(done):
            for row in sens.typed_table(done).to_dict(orient="records"):
                if row["group"] in names and sens.cell_ratio(row["ratio"]) in ratios:
                    done_rows.setdefault(row["group"], []).append(row)
        started = time.perf_counter()
        scores_ref = self._ray.put({g: scores[g] for g in names})

        def call(group):
            return lambda actor: actor.sensitivity_group.remote(scores_ref, ratios, group, split, engine, criterion,
                                                                budget, done_rows.get(group))

        rows: list[dict] = [r for g in names for r in done_rows.get(g, [])]
        metas: list[dict] = []
        self.busy_seconds = []
        reused = {(r["group"], r["ratio"]) for group_done in done_rows.values() for r in group_done}
        with contextlib.closing(self._run([call(g) for g in names], should_stop)) as results:
            for _, (group_rows, meta, seconds) in results:  # an exception in on_row cancels the rest
                self.busy_seconds.append(seconds)
                metas.append(meta)
                for row in group_rows:
                    if (row["group"], row["ratio"]) not in reused:
                        rows.append(row)
                        if on_row is not None:
                            on_row(dict(row))
        position = {g: i for i, g in enumerate(names)}
        table = sens.typed_table(sorted(rows, key=lambda r: (position[r["group"]], r["ratio"])))
        table.attrs["meta"] = _merged_meta(wb, metas, names, ratios, engine, split, criterion, len(done_rows),
                                           sum(len(v) for v in done_rows.values()), time.perf_counter() - started,
                                           self.n_workers)
        return table


def _last_line(error: BaseException) -> str:
    """The message at the bottom of a Ray error's remote traceback (the worker's own exception)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1][:400] if lines else type(error).__name__


def _merged_meta(wb, metas: list[dict], names: list[str], ratios: list[float], engine: str, split: str,
                 criterion: str | None, groups_reused: int, cells_reused: int, seconds: float, workers: int) -> dict:
    """The meta one in-process table would carry, from the per-group tables' metas: the dense figures and the
    task from any of them, the counters summed, the engine that ran (naive if any group fell back, with why)."""
    first = metas[0] if metas else {}
    fallbacks = [m["fallback"] for m in metas if m.get("fallback")]
    meta = {**{k: first.get(k) for k in ("samples", "dense_accuracy", "dense_loss", "task", "headline",
                                          "dense_headline", "cache")},
            "model": wb.name, "criterion": criterion, "split": split, "ratios": ratios, "groups": names,
            "engine_requested": engine, "engine": "naive" if fallbacks else engine,
            "fallback": fallbacks[0] if fallbacks else None, "cells": len(names) * len(ratios),
            "cells_reused": cells_reused,
            "cells_evaluated": sum(m.get("cells_evaluated", 0) for m in metas),
            "prefix_seconds": sum(m.get("prefix_seconds", 0.0) for m in metas),
            "guarded_cuts": sum(m.get("guarded_cuts", 0) for m in metas), "seconds": seconds,
            "runner": "ray", "workers": workers}
    if meta["cache"] is None:
        meta.pop("cache")
    return meta
