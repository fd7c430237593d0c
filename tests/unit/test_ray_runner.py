"""Sweeps and sensitivity tables on a local Ray cluster (two workers, one thread each): the same rows and numbers
as in this process, results streamed in completion order, methods prepared once per worker, a worker killed
mid-sweep losing nothing, a stop keeping what finished; and the recipes workers build their workbench from,
read by the upload loaders (a refused file is refused there too)."""

from __future__ import annotations

import io
import os
import signal

import numpy as np
import pandas as pd
import pytest
import torch

from pruning_core import Workbench, load_builtin
from pruning_core.cli import main
from pruning_core.data import DataError
from pruning_core.importance.criteria import channel_scores
from pruning_core.loading import ModelLoadError
from pruning_core.methods import REGISTRY, make_method
from pruning_core.recipes import DataRecipe, ModelRecipe, RecipeError, WorkbenchRecipe
from pruning_core.sensitivity import sensitivity_table
from pruning_core.sweep import run_sweep

pytestmark = pytest.mark.usefixtures("one_torch_thread")
MODEL = "digits-cnn"
METHODS = ["magnitude-global", "group-l1", "group-taylor"]
RATIOS = [0.0, 0.3, 0.6, 0.8]
TIMINGS = ["eval_seconds", "plan_seconds"]
RECIPE = WorkbenchRecipe(ModelRecipe.of("builtin", name=MODEL), DataRecipe.of("digits"))


# ----- recipes: plain values and bytes, read by the upload loaders ---------------------------------------------------
def test_a_recipe_builds_the_workbench_a_first_load_builds(digits):
    wb = RECIPE.build(device="cpu")
    direct = Workbench(load_builtin(MODEL), digits, device="cpu")
    assert wb.name == MODEL and _figures(wb) == _figures(direct)


def _figures(wb):
    m = wb.dense_metrics()
    return m.accuracy, m.loss, m.agreement, m.scores


def test_an_uploaded_npz_and_state_dict_travel_as_bytes(digits, tmp_path):
    from safetensors.torch import save

    model = load_builtin(MODEL)
    weights = save({k: v.contiguous() for k, v in model.state_dict().items()})
    buf = io.BytesIO()
    np.savez(buf, X=digits.eval.x.numpy()[:64], y=digits.eval.y.numpy()[:64])
    recipe = WorkbenchRecipe(ModelRecipe.of("file", weights, filename="m.safetensors", architecture=MODEL),
                             DataRecipe.of("npz", buf.getvalue(), n_eval=32, filename="d.npz"))
    wb = recipe.build(device="cpu")
    assert len(wb.eval_y) == 32
    same = recipe.build(device="cpu")
    assert _figures(same) == _figures(wb) and recipe.digest == WorkbenchRecipe(
        recipe.model, recipe.data).digest
    assert recipe.digest != RECIPE.digest


def test_a_refused_file_is_refused_by_the_worker_too():
    pickled = io.BytesIO()
    torch.save(torch.nn.Linear(2, 2), pickled)  # a whole pickled module: the upload rules refuse it
    with pytest.raises(ModelLoadError):
        ModelRecipe.of("file", pickled.getvalue(), filename="m.pt").load()
    with pytest.raises(DataError):
        DataRecipe.of("npz", b"PK\x03\x04 not a zip", filename="d.npz").load()
    with pytest.raises(RecipeError, match="state_dict"):
        ModelRecipe.of("file", pickled.getvalue(), trust_pickle=True, filename="m.pt")
    with pytest.raises(RecipeError, match="unknown"):
        ModelRecipe("os.system")


def test_every_method_rebuilds_from_its_key_and_settings():
    """What a worker receives for a method is its key and ``config()``; the rebuilt method has the same settings."""
    from pruning_core.ray_runner import method_settings

    for key in REGISTRY:
        m = make_method(key)
        again = make_method(*method_settings(m)[:1], **method_settings(m)[1])
        assert (again.key, again.config()) == (key, m.config())
    tuned = make_method("random", seed=3)
    assert make_method(tuned.key, **method_settings(tuned)[1]).config() == tuned.config()


# ----- the Ray runner ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def runner():
    pytest.importorskip("ray", reason="Ray is an optional extra (requirements-extras.txt)")
    from pruning_core.ray_runner import RayRunner

    # four logical CPUs on this 2-core machine: the runner's two workers, and two more for the command line's
    r = RayRunner(RECIPE, workers=2, threads=1, init_options={"num_cpus": 4, "object_store_memory": 200 * 2**20})
    yield r
    r.close()


@pytest.fixture(scope="module")
def local(digits):
    torch.set_num_threads(1)
    return Workbench(load_builtin(MODEL), digits, device="cpu", name=MODEL)


@pytest.fixture(scope="module")
def in_process(local):
    return run_sweep(local, METHODS, RATIOS)


def _same_points(a, b):
    pd.testing.assert_frame_equal(a.points.drop(columns=TIMINGS), b.points.drop(columns=TIMINGS), check_exact=True)
    pd.testing.assert_frame_equal(a.layers, b.layers, check_exact=True)


def test_a_sweep_on_ray_equals_the_sweep_in_process(runner, local, in_process):
    seen = []
    result = run_sweep(local, METHODS, RATIOS, runner=runner,
                       progress=lambda done, total, p: seen.append((done, total, p.row["method"], p.row["ratio"])))
    _same_points(result, in_process)
    assert result.meta == in_process.meta
    assert [s[:2] for s in seen] == [(i, 12) for i in range(1, 13)]
    assert sorted(s[2:] for s in seen) == sorted((m, r) for m in METHODS for r in RATIOS)
    infos = runner.infos()
    assert len({i["pid"] for i in infos}) == 2 and all(i["threads"] == 1 for i in infos)


def test_each_worker_prepares_a_method_once(runner, local):
    assert len(list(runner.sweep(local, ["group-l1", "group-l2"], RATIOS * 2))) == 16
    prepared = runner._ray.get([a.prepared.remote() for a in runner.actors])
    assert all(keys.count("group-l1") <= 1 and keys.count("group-l2") <= 1 for keys in prepared)
    assert sum(keys.count("group-l2") for keys in prepared) >= 1


def test_sensitivity_on_ray_equals_the_table_in_process(runner, local):
    scores = channel_scores(local, "l1")
    ratios = [0.25, 0.5, 0.75]
    rows = []
    ours = runner.sensitivity(local, scores, ratios, on_row=rows.append, criterion="l1")
    theirs = sensitivity_table(local, scores, ratios, criterion="l1")
    pd.testing.assert_frame_equal(ours.drop(columns="seconds"), theirs.drop(columns="seconds"), check_exact=True)
    assert len(rows) == len(theirs) and {(r["group"], r["ratio"]) for r in rows} == set(
        zip(theirs["group"], theirs["ratio"], strict=True))
    timing = {"seconds", "prefix_seconds", "runner", "workers"}
    assert {k: v for k, v in ours.attrs["meta"].items() if k not in timing} == {
        k: v for k, v in theirs.attrs["meta"].items() if k not in timing}
    # finished rows given back are not measured again
    again = runner.sensitivity(local, scores, ratios, done=theirs.iloc[:6], criterion="l1")
    assert again.attrs["meta"]["cells_reused"] == 6
    pd.testing.assert_frame_equal(again.drop(columns="seconds"), theirs.drop(columns="seconds"), check_exact=True)


def test_a_worker_killed_mid_sweep_loses_no_point(runner, local, in_process):
    points = []
    victim = runner.infos()[0]["pid"]
    for point in runner.sweep(local, METHODS, RATIOS):
        points.append(point)
        if len(points) == 2:
            os.kill(victim, signal.SIGKILL)  # Ray restarts the actor and runs its tasks again
    assert len(points) == 12
    from pruning_core.sweep import SweepResult

    result = SweepResult.from_points(sorted(points, key=lambda p: (METHODS.index(p.row["method"]),
                                                                   RATIOS.index(p.row["ratio"]))))
    _same_points(result, in_process)
    assert victim not in {i["pid"] for i in runner.infos()}


def test_a_stopped_sweep_keeps_what_finished_and_the_runner_goes_on(runner, local, in_process):
    points = []
    for point in runner.sweep(local, METHODS, RATIOS, should_stop=lambda: len(points) >= 3):
        points.append(point)
    assert 3 <= len(points) < 12
    expected = in_process.points.set_index(["method", "ratio"])
    for p in points:
        assert p.row["accuracy"] == expected.loc[(p.row["method"], p.row["ratio"]), "accuracy"]
    _same_points(run_sweep(local, METHODS, RATIOS, runner=runner), in_process)
    stream = runner.sweep(local, METHODS, RATIOS)  # closed early, as a click in the app closes it
    next(stream)
    stream.close()
    _same_points(run_sweep(local, METHODS, RATIOS, runner=runner), in_process)


def test_the_command_line_on_a_local_cluster(runner, local, tmp_path, capsys):
    """``--ray`` joins the cluster this process already runs (the fixture's) and writes the in-process files."""
    out_ray, out_local = tmp_path / "ray", tmp_path / "local"
    args = ["sweep", "--model", MODEL, "--methods", "group-l1", "--ratios", "0.3,0.6", "--device", "cpu"]
    assert main([*args, "--out", str(out_local)]) == 0
    assert main([*args, "--out", str(out_ray), "--ray", "--ray-workers", "2"]) == 0
    assert "ray: 2 workers" in capsys.readouterr().err
    a, b = (pd.read_csv(d / "points.csv").drop(columns=TIMINGS) for d in (out_ray, out_local))
    pd.testing.assert_frame_equal(a, b)
    table = tmp_path / "t.csv"
    assert main(["sensitivity", "--model", MODEL, "--ratios", "0.5", "--device", "cpu", "--out", str(table),
                 "--ray", "--ray-workers", "2"]) == 0
    assert len(pd.read_csv(table)) == len(local.groups.groups)


def test_a_file_the_upload_rules_refuse_is_refused_on_the_worker(runner):
    """The worker reads the payload with the upload loaders: a pickled module is refused there, and the runner says
    so in one line instead of hanging or unpickling it."""
    from pruning_core.ray_runner import RayRunner, RayUnavailable

    pickled = io.BytesIO()
    torch.save(torch.nn.Linear(64, 10), pickled)
    bad = RayRunner(WorkbenchRecipe(ModelRecipe.of("file", pickled.getvalue(), filename="m.pt"),
                                    DataRecipe.of("digits")), workers=1)
    try:
        with pytest.raises(RayUnavailable, match="could not build the workbench: .*pickle") as e:
            bad.infos()
        assert "\n" not in str(e.value)
    finally:
        bad.close()


def test_fine_tuning_recovery_on_ray_equals_the_run_in_process(runner, local):
    from pruning_core.recovery import run_recovery

    rows = []
    ours = runner.recovery(local, ["group-l1", "magnitude-global"], [0.5, 0.8], epochs=1, on_point=rows.append)
    theirs = run_recovery(local, ["group-l1", "magnitude-global"], [0.5, 0.8], epochs=1)
    pd.testing.assert_frame_equal(ours, theirs, check_exact=True)
    assert len(rows) == 8 and {r["stage"] for r in rows} == {"pruned", "fine-tuned"}
    tuned = theirs[theirs["stage"] == "fine-tuned"]
    assert (tuned["steps"] > 0).all() and (tuned["accuracy"].to_numpy() > theirs[theirs["stage"] == "pruned"][
        "accuracy"].to_numpy()).any()
