"""The command line: sweeps write JSON/CSV the app can read back, exports write a verified bundle, and bad input
exits with status 2 and one clear line on stderr (no traceback)."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import save as save_safetensors

from pruning_core import load_builtin
from pruning_core.__main__ import main
from pruning_core.sweep import SweepResult

ROOT = Path(__file__).resolve().parents[2]


def test_models_and_methods_are_listed(capsys):
    assert main(["models"]) == 0
    assert "digits-resnet" in capsys.readouterr().out
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert "group-l1" in out and "magnitude-global" in out


def test_sweep_writes_files_that_round_trip(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["sweep", "--model", "digits-mlp", "--methods", "magnitude-global,group-l1", "--ratios", "0,0.5",
                 "--device", "cpu", "--out", str(out)]) == 0
    result = SweepResult.from_json((out / "sweep.json").read_text())
    assert len(result.points) == 4 and set(result.points["method"]) == {"magnitude-global", "group-l1"}
    assert result.meta["model"] == "digits-mlp" and result.meta["ratios"] == [0.0, 0.5]
    points = pd.read_csv(out / "points.csv")
    assert points["accuracy"].tolist() == pytest.approx(result.points["accuracy"].tolist())
    assert len(pd.read_csv(out / "layers.csv")) == len(result.layers) > 0
    dense = result.points[result.points["ratio"] == 0]["accuracy"]
    assert (dense > 0.9).all()
    captured = capsys.readouterr()
    assert "group-l1" in captured.out and "accuracy" in captured.out  # the table
    assert "[4/4]" in captured.err  # progress goes to stderr


def test_sweep_grid_and_uploaded_weights(tmp_path):
    weights = tmp_path / "cnn.safetensors"
    weights.write_bytes(save_safetensors(load_builtin("digits-cnn").state_dict()))
    out = tmp_path / "run"
    assert main(["sweep", "--weights", str(weights), "--architecture", "digits-cnn", "--methods", "group-l2",
                 "--grid", "0", "0.5", "3", "--structured", "masked", "--device", "cpu", "--out", str(out)]) == 0
    result = SweepResult.from_json((out / "sweep.json").read_text())
    assert result.points["ratio"].tolist() == [0.0, 0.25, 0.5]
    assert set(result.points["evaluation"]) == {"masked"}
    assert result.meta["architecture"] == "digits-cnn" and result.meta["kind"] == "safetensors"


def test_export_writes_a_verified_bundle(tmp_path, capsys):
    bundle = tmp_path / "out" / "bundle.zip"
    assert main(["export", "--model", "digits-cnn", "--method", "group-l1", "--ratio", "0.5",
                 "--formats", "state_dict,torchscript", "--latency-repeats", "2", "--device", "cpu",
                 "--out", str(bundle)]) == 0
    with zipfile.ZipFile(bundle) as zf:
        names = set(zf.namelist())
    assert {"model_state_dict.safetensors", "model.torchscript.pt", "plan.json", "report.json"} <= names
    out = capsys.readouterr().out
    assert "group-l1 at ratio 0.5" in out and "verified by reloading" in out


@pytest.mark.parametrize("argv, message", [
    (["sweep", "--methods", "magnitude-global", "--ratios", "0,1.0"], "would remove every weight"),
    (["sweep", "--methods", "pruning-by-vibes", "--ratios", "0.5"], "unknown method 'pruning-by-vibes'; available:"),
    (["export", "--method", "group-l1", "--ratio", "half"], "the ratio must be a number, got 'half'"),
    (["export", "--method", "group-l1", "--ratio", "0.5", "--formats", "tflite"], "unknown export format 'tflite'"),
    (["sweep", "--methods", "random"], "one of the arguments --ratios --grid is required"),
])
def test_bad_arguments_exit_2_with_one_line(argv, message, tmp_path, capsys):
    assert main([*argv, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("error: ")


def test_bad_model_file_exits_2(tmp_path, capsys):
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"\x00" * 100)
    assert main(["sweep", "--weights", str(bad), "--methods", "random", "--ratios", "0.5", "--out",
                 str(tmp_path / "x")]) == 2
    assert "model.pt is not a model file this app recognises" in capsys.readouterr().err


def test_module_entry_point_reports_bad_ratio_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pruning_core", "sweep", "--model", "digits-mlp", "--methods",
                           "magnitude-global", "--ratios", "0.2,1.0", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: A pruning ratio of 1 would remove every weight. Ratio is the fraction removed; choose a value "
        "below 1 (for example 0.9 keeps 10%)."]
    assert not any(tmp_path.iterdir())


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown when CUDA is missing")
def test_cuda_requested_without_a_gpu(tmp_path, capsys):
    assert main(["sweep", "--methods", "random", "--ratios", "0.5", "--device", "cuda", "--out", str(tmp_path)]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_check_prints_the_paper_check_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "checks.json"
    assert main(["check", "--checks", "id", "--models", "digits-mlp", "--quick", "--device", "cpu",
                 "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| model" in printed and "| agrees" in printed and "digits-mlp" in printed
    import json

    saved = json.loads(out.read_text())
    assert saved["quick"] is True and saved["timings"][0]["check"] == "id"
    assert len(saved["results"]) == 3 and all(r["model"] == "digits-mlp" for r in saved["results"])
    # the printed verdicts are the saved ones
    verdicts = ["yes" if r["agrees"] else "no" if r["agrees"] is False else "undecided" for r in saved["results"]]
    rows = [line for line in printed.splitlines() if line.startswith("| digits-mlp")]
    assert [row.rstrip(" |").rsplit("|", 1)[1].strip() for row in rows] == verdicts


def test_check_rejects_unknown_checks_and_models(capsys):
    assert main(["check", "--checks", "nope"]) == 2
    assert "unknown check 'nope'" in capsys.readouterr().err
    assert main(["check", "--models", "nope"]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err
