"""Export: every file in the bundle, loaded back the way a user would, reproduces the masked model; structured
exports are physically smaller; the sparse file expands back exactly; sizes in the report are the real ones."""

import copy
import importlib.util
import io
import json
import statistics
import time
import zipfile

import pytest
import torch
from safetensors.torch import load as load_safetensors

from pruning_core import Workbench, load_builtin, make_method, metrics
from pruning_core.export import ExportError, export_plan, load_exported
from pruning_core.sparse_format import load_sparse_state_dict

CASES = {"resnet-structured": ("digits-resnet", "group-l1", 0.5),
         "cnn-structured": ("digits-cnn", "group-l2", 0.6),
         "cnn-unstructured": ("digits-cnn", "magnitude-global", 0.8)}


@pytest.fixture(scope="module")
def bundles(demo_workbenches):
    """case -> (workbench, plan, bundle), exported once with the default formats."""
    out = {}
    for case, (arch, method, ratio) in CASES.items():
        wb = demo_workbenches[arch]
        plan = make_method(method).prepare(wb).plan(ratio)
        out[case] = (wb, plan, export_plan(wb, plan, latency_repeats=3))
    return out


def _masked_outputs(wb, plan):
    with wb.applied(plan) as model:
        return metrics.predict(model, wb.eval_x)


def _members(bundle) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(bundle.zip_bytes)) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


@pytest.mark.parametrize("case", CASES)
def test_every_exported_file_reproduces_the_masked_model(case, bundles):
    wb, plan, bundle = bundles[case]
    expected = _masked_outputs(wb, plan)
    loaded = load_exported(bundle.zip_bytes)
    wanted = {"state_dict", "torch.export", "torchscript"} | ({"sparse"} if not plan.is_structured else set())
    assert set(loaded) == wanted
    for fmt, model in loaded.items():
        out = metrics.predict(model, wb.eval_x)
        assert torch.equal(out.argmax(1), expected.argmax(1)), fmt
        torch.testing.assert_close(out, expected, atol=1e-4, rtol=0, msg=fmt)
    assert bundle.report["verification"]["max_abs_difference"] <= 1e-4
    assert all(o["status"] == "ok" for o in bundle.report["formats"].values())


@pytest.mark.parametrize("case", ["resnet-structured", "cnn-structured"])
def test_structured_export_is_physically_smaller(case, bundles):
    wb, plan, bundle = bundles[case]
    weights = load_safetensors(_members(bundle)["model_state_dict.safetensors"])
    dense = wb.model.state_dict()
    assert weights.keys() == dense.keys()
    assert sum(t.numel() for t in weights.values()) < 0.6 * sum(t.numel() for t in dense.values())
    before, after = bundle.report["before"], bundle.report["after"]
    assert after["params"] < before["params"] and after["flops"] < before["flops"]
    assert after["accuracy"] == pytest.approx(wb.evaluate_plan(plan).accuracy)
    plan_json = json.loads(_members(bundle)["plan.json"])
    assert plan_json["architecture"] == CASES[case][0]
    assert plan_json["input_shape"] == [1, 8, 8]
    group = next(iter(plan_json["channel_groups"].values()))
    assert len(group["kept"]) + len(group["removed"]) == group["channels"]


def test_sparse_file_expands_exactly_and_is_smaller(bundles, tmp_path):
    wb, plan, bundle = bundles["cnn-unstructured"]
    files = _members(bundle)
    with wb.applied(plan) as model:
        masked = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    path = tmp_path / "model_sparse.safetensors"
    path.write_bytes(files["model_sparse.safetensors"])
    for source in (files["model_sparse.safetensors"], path):
        expanded = load_sparse_state_dict(source)
        assert expanded.keys() == masked.keys()
        assert all(torch.equal(expanded[k], masked[k]) for k in masked)
    # 80% removed: 1 bit + 20% of 32 bits per masked weight, about a quarter of the dense file
    assert len(files["model_sparse.safetensors"]) < 0.35 * len(files["model_state_dict.safetensors"])
    assert bundle.report["after"]["params_nonzero"] < 0.3 * bundle.report["before"]["params"]
    assert any("sparse" in n for n in bundle.report["notes"])


@pytest.mark.parametrize("case", CASES)
def test_reported_sizes_are_the_real_file_sizes(case, bundles):
    _, _, bundle = bundles[case]
    with zipfile.ZipFile(io.BytesIO(bundle.zip_bytes)) as zf:
        assert bundle.files == {i.filename: i.file_size for i in zf.infolist()}
    report = json.loads(_members(bundle)["report.json"])
    for o in report["formats"].values():
        assert o["bytes"] == bundle.files[o["file"]]
    assert "| accuracy |" in _members(bundle)["report.md"].decode()


def test_a_failing_format_is_reported_and_the_rest_is_kept(digits, monkeypatch):
    import pruning_core.export as export

    def broken(model, example):
        raise RuntimeError("tracer exploded")

    monkeypatch.setattr(export, "_save_torchscript", broken)
    wb = Workbench(load_builtin("digits-mlp"), digits, device="cpu")  # default name: architecture is inferred
    bundle = export_plan(wb, make_method("group-l1").prepare(wb).plan(0.5), formats=("state_dict", "torchscript"),
                         latency_repeats=1)
    assert bundle.report["formats"]["torchscript"] == {"file": "model.torchscript.pt", "status": "failed",
                                                       "error": "RuntimeError: tracer exploded"}
    assert "model.torchscript.pt" not in bundle.files
    assert {"model_state_dict.safetensors", "plan.json", "report.json", "report.md"} <= set(bundle.files)
    assert json.loads(_members(bundle)["plan.json"])["architecture"] == "digits-mlp"
    assert "failed: RuntimeError: tracer exploded" in _members(bundle)["report.md"].decode()


def test_sliced_model_that_disagrees_with_the_masked_one_is_not_exported(demo_workbenches, monkeypatch):
    wb = demo_workbenches["digits-mlp"]
    plan = make_method("group-l1").prepare(wb).plan(0.5)
    real = wb.sliced_model

    def off_by_a_little(plan, share_untouched=True):
        small = real(plan, share_untouched)
        with torch.no_grad():
            small.fc3.bias += 0.01
        return small

    monkeypatch.setattr(wb, "sliced_model", off_by_a_little)
    with pytest.raises(ExportError, match=r"does not reproduce the pruned model: outputs differ by up to 0\.01"):
        export_plan(wb, plan, formats=("state_dict",), latency_repeats=1)


def test_onnx_export_reproduces_the_model(demo_workbenches):
    wb = demo_workbenches["digits-mlp"]
    plan = make_method("group-l2").prepare(wb).plan(0.3)
    bundle = export_plan(wb, plan, formats=("state_dict", "onnx"), latency_repeats=1)
    assert bundle.report["formats"]["onnx"]["status"] == "ok"
    out = load_exported(bundle.zip_bytes)["onnx"](wb.eval_x)
    torch.testing.assert_close(out, _masked_outputs(wb, plan), atol=1e-4, rtol=0)


def test_unknown_format_is_refused(demo_workbenches):
    wb = demo_workbenches["digits-mlp"]
    with pytest.raises(ExportError, match="Unknown export format 'tflite'"):
        export_plan(wb, make_method("group-l1").prepare(wb).plan(0.5), formats=("tflite",))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_export_from_a_gpu_workbench_loads_on_the_cpu(digits):
    wb = Workbench(load_builtin("digits-resnet"), digits, device="cuda")
    plan = make_method("group-l1").prepare(wb).plan(0.5)
    bundle = export_plan(wb, plan, latency_repeats=2)
    expected = _masked_outputs(wb, plan).cpu()
    for fmt, model in load_exported(bundle.zip_bytes).items():
        torch.testing.assert_close(metrics.predict(model, digits.eval.x), expected, atol=1e-4, rtol=0, msg=fmt)


def test_a_plan_with_a_folded_correction_exports_the_corrected_small_model(demo_workbenches):
    """Interpolative decompositions fold a correction into the next layer: the exported small model carries it
    (it matches the masked-plus-corrected working copy, and differs from plain slicing of the dense weights)."""
    wb = demo_workbenches["digits-cnn"]
    plan = make_method("id").prepare(wb).plan(0.5)
    assert plan.corrections
    bundle = export_plan(wb, plan, ["state_dict"], latency_repeats=1)
    assert bundle.report["verification"]["max_abs_difference"] <= 1e-4
    weights = load_safetensors(_members(bundle)["model_state_dict.safetensors"])
    small = dict(wb.sliced_model(plan).named_parameters())
    for name in plan.corrections:
        torch.testing.assert_close(weights[name], small[name])
    uncorrected = wb.groups.slice_model(wb.model, plan.pruned_channels)
    assert not torch.equal(weights["conv2.weight"], uncorrected.conv2.weight)
    assert bundle.report["after"]["accuracy"] == pytest.approx(wb.evaluate_plan(plan).accuracy)


# ----- speed: dense against exported, side by side ----------------------------------------------------------
def test_report_puts_the_realised_speedup_next_to_the_flops_reduction(bundles):
    wb, plan, bundle = bundles["resnet-structured"]
    report = bundle.report
    speed, before, after = report["speed"], report["before"], report["after"]
    small_flops = metrics.count_flops(wb.sliced_model(plan), wb.example_input)[0]
    kept = small_flops / wb.dense_flops[0]
    assert kept < 0.5
    assert speed["flops_kept"] == pytest.approx(kept) and speed["ideal_speedup"] == pytest.approx(1 / kept)
    assert list(speed["batches"]) == ["1", "64"]
    assert speed["device"] == "cpu" and speed["threads"] == torch.get_num_threads() and speed["repeats"] == 3
    md = _members(bundle)["report.md"].decode()
    for b, s in speed["batches"].items():
        assert s["dense"]["batch"] == s["pruned"]["batch"] == int(b)
        rounds = [d / p for d, p in zip(s["dense"]["times_ms"], s["pruned"]["times_ms"], strict=True)]
        assert s["speedup"] == pytest.approx(statistics.median(rounds))
        assert s["efficiency"] == pytest.approx(s["speedup"] * kept)
        assert before[f"latency_ms_batch{b}"] == s["dense"]["median_ms"]
        assert after[f"latency_ms_batch{b}"] == s["pruned"]["median_ms"]
    row = next(line for line in md.splitlines() if line.startswith("| realised speed-up"))
    assert [c.split("x")[0].strip() for c in row.split("|")[2:4]] == [
        f"{speed['batches'][b]['speedup']:.2f}" for b in ("1", "64")]
    assert f"| FLOPs kept -> ideal speed-up (1 / FLOPs kept) | {kept:.1%} -> {1 / kept:.2f}x |" in md
    assert "| realised / ideal |" in md


def test_unstructured_export_keeps_every_flop_and_never_warns(bundles):
    _, _, bundle = bundles["cnn-unstructured"]
    speed = bundle.report["speed"]
    assert speed["flops_kept"] == 1.0 and speed["ideal_speedup"] == 1.0 and speed["warning"] is None


def test_an_exported_model_slower_than_the_dense_one_is_flagged(demo_workbenches, monkeypatch):
    wb = demo_workbenches["digits-mlp"]
    plan = make_method("group-l1").prepare(wb).plan(0.5)
    real = wb.sliced_model

    def slow(plan, share_untouched=True):  # the same small model, with 20 ms added to every forward pass
        small = real(plan, share_untouched)
        small.register_forward_hook(lambda *_: time.sleep(0.02))
        return small

    monkeypatch.setattr(wb, "sliced_model", slow)
    bundle = export_plan(wb, plan, formats=("state_dict",), latency_repeats=3, latency_warmup=1)
    speed = bundle.report["speed"]
    assert all(s["slower_than_dense"] and s["pruned"]["min_ms"] >= 20.0 for s in speed["batches"].values())
    assert speed["warning"].startswith("The exported model is slower than the dense one at batch 1 (")
    assert "and batch 64 (" in speed["warning"] and f"keeps only {speed['flops_kept']:.0%}" in speed["warning"]
    assert f"**Warning:** {speed['warning']}" in _members(bundle)["report.md"].decode()


# ----- ONNX run in onnxruntime against torch -----------------------------------------------------------------
needs_onnxruntime = pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None,
                                       reason="onnxruntime is an optional extra (requirements-extras.txt)")


@needs_onnxruntime
def test_onnx_file_is_checked_in_onnxruntime_against_torch(demo_workbenches):
    import onnxruntime as ort

    wb = demo_workbenches["digits-cnn"]
    plan = make_method("group-l1").prepare(wb).plan(0.5)
    bundle = export_plan(wb, plan, formats=("state_dict", "onnx"), latency_repeats=1)
    check = bundle.report["formats"]["onnx"]["check"]
    session = ort.InferenceSession(_members(bundle)["model.onnx"], providers=["CPUExecutionProvider"])
    out = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: wb.eval_x.numpy()})[0])
    expected = _masked_outputs(wb, plan)
    assert check["runtime"] == f"onnxruntime {ort.__version__} (CPUExecutionProvider)"
    assert check["samples"] == len(wb.eval_x) and "note" not in check
    assert check["top1_agreement"] == float((out.argmax(1) == expected.argmax(1)).float().mean()) == 1.0
    assert check["max_abs_difference"] == pytest.approx(float((out - expected).abs().max()), abs=2e-6)
    assert check["max_abs_difference"] <= 1e-4
    assert f"model.onnx run in onnxruntime {ort.__version__}" in _members(bundle)["report.md"].decode()


@needs_onnxruntime
def test_an_onnx_file_that_disagrees_with_torch_is_left_out(demo_workbenches, monkeypatch):
    import pruning_core.export as export

    real = export._save_onnx

    def off_by_a_little(model, example):
        shifted = copy.deepcopy(model)
        with torch.no_grad():
            shifted.fc3.bias += 0.01
        return real(shifted, example)

    monkeypatch.setattr(export, "_save_onnx", off_by_a_little)
    wb = demo_workbenches["digits-mlp"]
    bundle = export_plan(wb, make_method("group-l1").prepare(wb).plan(0.5), formats=("state_dict", "onnx"),
                         latency_repeats=1)
    onnx = bundle.report["formats"]["onnx"]
    assert onnx["status"] == "failed" and "model.onnx" not in bundle.files
    assert onnx["error"].startswith("ExportError: onnxruntime") and "differ from the exported model's by up to 0.01" \
        in onnx["error"]


def test_without_onnxruntime_the_reference_evaluator_checks_the_file(demo_workbenches, monkeypatch):
    import pruning_core.export as export

    monkeypatch.setattr(export, "onnxruntime_available", lambda: False)
    wb = demo_workbenches["digits-mlp"]
    plan = make_method("group-l2").prepare(wb).plan(0.3)
    bundle = export_plan(wb, plan, formats=("state_dict", "onnx"), latency_repeats=1)
    check = bundle.report["formats"]["onnx"]["check"]
    assert check["runtime"].endswith("reference evaluator") and "not installed" in check["note"]
    assert check["max_abs_difference"] <= 1e-4 and check["top1_agreement"] == 1.0
