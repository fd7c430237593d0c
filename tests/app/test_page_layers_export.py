"""Layers page (importance heatmap, weight matrix with the plan's mask) and Export page (a verified bundle)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

HAS_EXPORT = importlib.util.find_spec("pruning_core.export") is not None


def test_importance_heatmap_has_one_row_per_channel_group(app, figures, state):
    at = app.switch_page("pages/layers.py").run()
    assert not at.exception and not at.error
    groups = state(at).workbench.groups.groups
    heat = figures(at)["importance_map"]["data"][0]
    assert heat["y"] == [g.name for g in groups]
    z = np.array(heat["z"], dtype=float)
    assert z.shape == (len(groups), max(g.size for g in groups))
    assert np.nanmax(z, axis=1) == pytest.approx(np.ones(len(groups)))  # each row scaled to its strongest channel
    assert np.isnan(z[0, groups[0].size:]).all()  # narrower groups are padded, not stretched
    at.selectbox(key="_layers_criterion").set_value("l2").run()
    assert not at.exception and figures(at)["importance_map"]["data"][0]["y"] == heat["y"]


def test_weight_map_greys_out_what_the_plan_removes(app, figures):
    at = app.switch_page("pages/layers.py").run()
    at.selectbox(key="_layers_layer").set_value("layer2.conv1.weight")
    at.selectbox(key="_choice_method").set_value("group-l1")
    at.slider(key="_choice_ratio").set_value(0.5).run()
    assert not at.exception
    grey, kept = figures(at)["weight_map"]["data"]
    removed_rows = np.isfinite(np.array(grey["z"], dtype=float)).all(axis=1)
    assert removed_rows.sum() == 16  # half of layer2.conv1's 32 output channels, whole rows
    hist = figures(at)["importance_hist"]["data"]
    assert [t["name"] for t in hist] == ["kept channels (16)", "pruned channels (16)"]
    assert sum(hist[1]["y"]) == 16
    at.slider(key="_choice_ratio").set_value(0.0).run()
    assert not np.isfinite(np.array(figures(at)["weight_map"]["data"][0]["z"], dtype=float)).any()


def test_export_page_defaults_to_the_sweep_choice(app, state):
    state(app).choose(method="magnitude-global", ratio=0.3)
    at = app.switch_page("pages/export.py").run()
    assert at.selectbox(key="_choice_method").value == "magnitude-global"
    assert at.slider(key="_choice_ratio").value == pytest.approx(0.3)


@pytest.mark.skipif(not HAS_EXPORT, reason="pruning_core.export is not importable yet")
def test_export_builds_a_verified_bundle(app, state):
    at = app.switch_page("pages/export.py").run()
    at.selectbox(key="_choice_method").set_value("group-l1")
    at.slider(key="_choice_ratio").set_value(0.25)
    at.multiselect(key="_export_formats").set_value([])
    at = at.button[0].click().run()
    assert not at.exception and not at.error
    assert at.success and "Verified" in at.success[0].value
    assert at.download_button[0].label.startswith("Download pruned-digits-resnet-group-l1-r0.25.zip")
    record = state(at).export
    assert record.workbench_key == state(at).key
    bundle = record.bundle
    assert bundle.report["after"]["params"] < bundle.report["before"]["params"]
    assert {"model_state_dict.safetensors", "plan.json", "report.json"} <= set(bundle.files)
    speed = bundle.report["speed"]
    metrics = {m.label: m.value for m in at.metric}
    for b in ("1", "64"):
        assert metrics[f"Speed-up, batch {b}"] == f"{speed['batches'][b]['speedup']:.2f}x"
        assert metrics[f"Latency, batch {b}"] == f"{speed['batches'][b]['pruned']['median_ms']:.3g} ms"
    assert metrics["FLOPs kept"] == f"{speed['flops_kept']:.1%}"
    assert [w.value for w in at.warning] == ([speed["warning"]] if speed["warning"] else [])


@pytest.mark.skipif(not HAS_EXPORT, reason="pruning_core.export is not importable yet")
def test_export_at_ratio_zero_says_it_is_the_dense_model(app):
    at = app.switch_page("pages/export.py").run()
    at.slider(key="_choice_ratio").set_value(0.0).run()
    assert at.info and "dense model" in at.info[0].value


def test_torchscript_model_falls_back_to_unstructured_views(app, figures, state):
    import io

    import torch

    from pruning_core import load_builtin

    buf = io.BytesIO()
    torch.jit.save(torch.jit.trace(load_builtin("digits-cnn"), torch.zeros(2, 1, 8, 8)), buf)
    app.radio(key="_md_model_source").set_value("Upload a file").run()
    app.file_uploader(key="md_model_file").upload("cnn.torchscript.pt", buf.getvalue(), "application/octet-stream")
    at = app.button[0].click().run()
    assert not at.exception and state(at).model.kind == "torchscript"
    assert any("Structured methods are unavailable" in w.value for w in at.warning)

    at.switch_page("pages/sweep.py").run()
    from pruning_core import REGISTRY

    # exactly the unstructured methods that can run here: no channel groups (and no two-layer units) in a
    # TorchScript module, and no method that must reach inside its forward (block attention)
    wb = state(at).workbench
    offered = [s.label for s in REGISTRY.values() if s.granularity == "unstructured" and s.unavailable(wb) is None]
    assert at.multiselect(key="_sweep_methods").options == offered
    assert {s.granularity for s in REGISTRY.values() if s.label in offered} == {"unstructured"}
    assert "Magnitude, global (unstructured)" in at.multiselect(key="_sweep_methods").options
    at.text_input(key="_sweep_list").set_value("0, 0.5")
    at = at.button[0].click().run()
    assert not at.exception and not at.error
    assert next(m.value for m in at.main.metric if m.label == "FLOPs kept") == "n/a"

    at.switch_page("pages/layers.py").run()
    assert not at.exception
    assert figures(at)["importance_map"]["data"][0]["y"] == ["conv1", "conv2", "fc1", "fc2"]
