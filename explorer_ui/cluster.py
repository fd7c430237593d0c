"""Where long jobs run: in this process (the default) or on a Ray cluster.

The "Run on" control sits on the screens with jobs made of independent evaluations (the Sweep, the sensitivity
table). A Ray runner (``pruning_core.ray_runner.RayRunner``) is kept per process for the last (address, workers,
workbench recipe) asked for, so a second sweep on the same model reuses the workers and their prepared methods;
asking for another model or cluster closes the old workers first, unless they are running a job (then the new
job is refused with the reason, never left waiting for workers that are busy).
"""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import threading
from collections.abc import Iterator

import streamlit as st

from pruning_core.ray_runner import RayRunner, RayUnavailable, ray_available

from .state import state
from .widgets import keep

_LOCK = threading.Lock()
_CURRENT: dict = {"key": None, "runner": None, "busy": 0}

HERE, RAY = "here", "ray"


def run_on_control(where: str) -> tuple[str, str, int] | None:
    """The "Run on" control (``where`` keys its widgets per screen). Returns None for this process, else (address
    or "" for a local cluster, workers or 0 for the default); a choice that cannot run says why and returns None."""
    available = ray_available()
    choice = st.radio("Run on", [HERE, RAY], horizontal=True, key=f"run_on_{where}",
                      format_func={HERE: "this process", RAY: "a Ray cluster"}.get,
                      help="A Ray cluster spreads the evaluations over workers, each with its own copy of the "
                      "model and data (one GPU each where the cluster has GPUs). Points arrive as they finish.")
    if choice == HERE:
        return None
    if not available:
        st.warning("Ray is not installed here: `pip install -r requirements-extras.txt` (it is an optional "
                   "extra). Running in this process.")
        return None
    s = state()
    if s.recipe is None:
        st.warning(f"This model cannot be sent to workers: {s.recipe_note}. Running in this process.")
        return None
    a, w = st.columns([3, 1])
    address = a.text_input("Cluster address", placeholder="empty: start a local cluster on this machine",
                           help="'auto' joins the cluster this machine belongs to (after `ray start`); "
                           "HOST:6379 or ray://HOST:10001 a remote one. Every node needs this project installed.",
                           **keep(f"ray_address_{where}", ""))
    workers = w.number_input("Workers", 0, 256, step=1, help="0: one per GPU, else one per CPU",
                             **keep(f"ray_workers_{where}", 0))
    return address.strip(), int(workers)


# Ray starts a local cluster's processes (GCS, raylet) so that they die with the *thread* that started them
# (PR_SET_PDEATHSIG). A Streamlit script thread ends with its session, which would take the cluster down under the
# other sessions' feet (and Ray then ends this whole process): runners are started and closed on one thread that
# lives as long as the process.
_OWNER = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="ray-owner")


def _start(recipe, address: str, workers: int) -> RayRunner:
    runner = RayRunner(recipe, address=address or None, workers=workers or None)
    try:
        runner.infos()  # wait until every worker has built its workbench: a refused file fails here
    except RayUnavailable:
        runner.close()
        raise
    return runner


@contextlib.contextmanager
def runner_for(address: str, workers: int) -> Iterator[RayRunner]:
    """The process's Ray runner for this session's workbench recipe on ``address`` with ``workers`` (0: default),
    started (or reused) now and marked busy while the block runs. One runner per process: another model's or
    cluster's runner is closed first when idle; while it runs another session's job, this raises
    ``RayUnavailable`` (run here or try again). Also raises it when the cluster cannot be reached or its workers
    cannot build the workbench."""
    recipe = state().recipe
    key = (address, workers, recipe.digest)
    with _LOCK:
        if _CURRENT["key"] != key or _CURRENT["runner"] is None:
            if _CURRENT["busy"]:
                raise RayUnavailable("the Ray workers are running another job (another model or cluster, from "
                                     "another session); run in this process or try again when it has finished")
            old = _CURRENT["runner"]
            _CURRENT.update(key=None, runner=None)
            if old is not None:
                _OWNER.submit(old.close).result()
            with st.spinner("Starting the Ray workers (each loads the model and data once)…"):
                runner = _OWNER.submit(_start, recipe, address, workers).result()
            _CURRENT.update(key=key, runner=runner)
        _CURRENT["busy"] += 1
        runner = _CURRENT["runner"]
    try:
        yield runner
    finally:
        with _LOCK:
            _CURRENT["busy"] -= 1


def close_runner() -> None:
    """End the process's Ray workers (and the local cluster the app started, with its helper processes)."""
    with _LOCK:
        runner = _CURRENT["runner"]
        _CURRENT.update(key=None, runner=None, busy=0)
    if runner is not None:
        try:
            _OWNER.submit(runner.close).result()
        except RuntimeError:  # at interpreter exit the owner thread takes no more work: the process is ending
            runner.close()


atexit.register(close_runner)  # the app server stopping ends its workers and its local cluster


__all__ = ["RayUnavailable", "close_runner", "run_on_control", "runner_for"]
