"""'Run on' a Ray cluster from the Sweep and Layers screens: a local cluster started from the app gives the points
and sensitivity cells the same numbers as this process; a model that cannot be sent, or Ray missing, is said
plainly and the job runs here."""

from __future__ import annotations

import pandas as pd
import pytest

import explorer_ui
from explorer_ui import cluster

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
METHODS = ["magnitude-global", "group-l1"]
TIMINGS = ["eval_seconds", "plan_seconds"]


@pytest.fixture
def ray_cluster(monkeypatch):
    pytest.importorskip("ray", reason="Ray is an optional extra (requirements-extras.txt)")
    from pruning_core import ray_runner

    real = ray_runner.RayRunner

    def small(recipe, address=None, workers=None, **kw):  # a local cluster sized for this 2-core machine
        return real(recipe, address=address, workers=workers, init_options={
            "num_cpus": 2, "object_store_memory": 200 * 2**20}, **kw)

    monkeypatch.setattr(cluster, "RayRunner", small)
    yield
    cluster.close_runner()


def _sweep(at, where):
    at.switch_page("pages/sweep.py").run()
    at.multiselect(key="_sweep_methods").set_value(METHODS)
    at.text_input(key="_sweep_list").set_value("0, 0.4, 0.8")
    at.radio(key="run_on_sweep").set_value(where).run()
    return at


def test_a_sweep_on_a_local_ray_cluster_equals_the_sweep_here(app, state, ray_cluster):
    at = _sweep(app, "ray")
    at.number_input(key="_ray_workers_sweep").set_value(2)
    at.button[0].click().run(timeout=180)
    assert not at.exception and not at.error, (at.exception, at.error)
    on_ray = state(at).sweep.result().points
    assert len(on_ray) == 6 and cluster._CURRENT["runner"].n_workers == 2
    at.radio(key="run_on_sweep").set_value("here").run()
    at.button[0].click().run(timeout=120)
    here = state(at).sweep.result().points
    pd.testing.assert_frame_equal(on_ray.drop(columns=TIMINGS), here.drop(columns=TIMINGS), check_exact=True)


def test_sensitivity_on_a_local_ray_cluster_equals_the_table_here(app, state, ray_cluster):
    at = app.switch_page("pages/layers.py").run()
    at.radio(key="run_on_sensitivity").set_value("ray").run()
    sensitivity = next(b for b in at.button if b.label == "Run sensitivity")
    sensitivity.click().run(timeout=180)
    assert not at.exception and not at.error, (at.exception, at.error)
    (record,) = state(at).sensitivities.values()
    on_ray = record.frame().sort_values(["group", "ratio"]).reset_index(drop=True)
    assert record.finished and len(on_ray) == record.planned
    from pruning_core.importance.criteria import channel_scores
    from pruning_core.sensitivity import sensitivity_table

    wb = state(at).workbench
    here = sensitivity_table(wb, channel_scores(wb, record.criterion), list(record.ratios), split=record.split)
    here = here.sort_values(["group", "ratio"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(on_ray[here.columns].drop(columns="seconds"), here.drop(columns="seconds"),
                                  check_exact=False, rtol=1e-12, check_dtype=False)


def test_without_ray_or_a_sendable_model_the_sweep_runs_here(app, state, monkeypatch):
    monkeypatch.setattr(cluster, "ray_available", lambda: False)
    at = _sweep(app, "ray")
    assert any("Ray is not installed" in w.value for w in at.warning)
    at.button[0].click().run()
    assert not at.exception and len(state(at).sweep.result().points) == 6
    monkeypatch.setattr(cluster, "ray_available", lambda: True)
    s = state(at)
    s.recipe, s.recipe_note = None, "a whole pickled model runs code when it is read"
    at.run()
    assert any("cannot be sent to workers: a whole pickled model" in w.value for w in at.warning)
    assert explorer_ui  # the package imports with the cluster control


def test_a_job_while_the_workers_run_another_sessions_job_is_refused_not_queued(app, state, monkeypatch):
    monkeypatch.setattr(cluster, "ray_available", lambda: True)
    monkeypatch.setattr(cluster, "_CURRENT", {"key": ("elsewhere", 0, "another model"), "runner": None, "busy": 1})
    at = _sweep(app, "ray")
    at.button[0].click().run()
    assert not at.exception
    assert any("running another job" in e.value for e in at.error)
    assert state(at).sweep is None  # nothing recorded for a job that did not start


def test_fine_tuning_on_a_local_ray_cluster_equals_fine_tuning_here(app, state, ray_cluster):
    """Training sums in an order that depends on the thread count: equal at equal threads (the workers run one
    each, so this process does too for the comparison)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _compare_fine_tuning(app, state)
    finally:
        torch.set_num_threads(threads)


def _compare_fine_tuning(app, state):
    at = app.switch_page("pages/sweep.py").run()
    at.multiselect(key="_recovery_methods").set_value(["group-l1"])
    at.text_input(key="_recovery_ratios").set_value("0.5, 0.7")
    at.number_input(key="_recovery_epochs").set_value(1)
    at.radio(key="run_on_recovery").set_value("ray").run()
    next(b for b in at.button if b.label == "Fine-tune").click().run(timeout=180)
    assert not at.exception and not at.error, (at.exception, at.error)
    on_ray = state(at).recoveries[state(at).key].frame()
    assert len(on_ray) == 4
    state(at).recoveries.clear()
    at.radio(key="run_on_recovery").set_value("here").run()
    next(b for b in at.button if b.label == "Fine-tune").click().run(timeout=180)
    here = state(at).recoveries[state(at).key].frame()
    pd.testing.assert_frame_equal(on_ray[here.columns], here, check_exact=True)
