"""The command line: sweeps write JSON/CSV the app can read back, exports write a verified bundle, and bad input
exits with status 2 and one clear line on stderr (no traceback)."""

import errno
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import save as save_safetensors

from pruning_core import load_builtin
from pruning_core.cli import main
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


def test_check_prints_claims_self_tests_and_descriptions_apart_and_writes_json(tmp_path, capsys):
    out = tmp_path / "checks.json"
    assert main(["check", "--checks", "id", "--models", "digits-mlp", "--quick", "--device", "cpu",
                 "--json", str(out)]) == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert printed.index("Paper claims:") < printed.index("Self-tests") < printed.index("Descriptions")
    assert "| agrees" in printed and "| holds" in printed and "digits-mlp" in printed
    assert "checking id on digits-mlp (quick)" in captured.err and "s]" in captured.err  # progress, timed
    import json

    saved = json.loads(out.read_text())
    assert saved["quick"] is True and saved["long"] is False and saved["timings"][0]["check"] == "id"
    kinds = [r["kind"] for r in saved["results"]]
    assert kinds == ["claim", "claim", "self-test", "description"]
    assert all(r["model"] == "digits-mlp" for r in saved["results"])
    # the printed claim verdicts are the saved ones, and the counts count claims and self-tests apart
    claims = [r for r in saved["results"] if r["kind"] == "claim"]
    verdicts = ["yes" if r["agrees"] else "no" if r["agrees"] is False else "undecided" for r in claims]
    section = printed[printed.index("Paper claims:"):printed.index("Self-tests")]
    rows = [line for line in section.splitlines() if line.startswith("| digits-mlp")]
    assert [row.rstrip(" |").rsplit("|", 1)[1].strip() for row in rows] == verdicts
    yes = verdicts.count("yes")
    assert f"claims: {yes} agree, {verdicts.count('no')} disagree" in printed and "self-tests: all 1 pass" in printed


def test_check_long_reaches_only_checks_that_have_a_long_version(capsys):
    from pruning_core.checks import CHECKS

    assert CHECKS["sap"].long and "min" in CHECKS["sap"].long and not CHECKS["id"].long
    # id's run takes no ``long``: run_check must not pass it
    assert main(["check", "--checks", "id", "--models", "digits-mlp", "--long", "--device", "cpu"]) == 0
    assert "checking id on digits-mlp (long)" in capsys.readouterr().err
    assert main(["check", "--quick", "--long"]) == 2
    assert "exclude each other" in capsys.readouterr().err


def test_check_rejects_unknown_checks_and_models(capsys):
    assert main(["check", "--checks", "nope"]) == 2
    assert "unknown check 'nope'" in capsys.readouterr().err
    assert main(["check", "--models", "nope"]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1 and err.startswith("error: "), err
    return err


def test_export_takes_exactly_one_method(tmp_path, capsys):
    assert main(["export", "--method", "group-l1,magnitude-global", "--ratio", "0.5",
                 "--out", str(tmp_path / "b.zip")]) == 2
    assert "--method takes exactly one method, got 2 (group-l1, magnitude-global)" in _one_error_line(capsys)


@pytest.mark.parametrize("extra, message", [
    (["--atol", "nan"], "--atol nan is not a valid tolerance: it must be a finite number >= 0"),
    (["--atol", "-1"], "--atol -1 is not a valid tolerance"),
    (["--atol", "inf"], "--atol inf is not a valid tolerance"),
    (["--latency-repeats", "0"], "--latency-repeats must be at least 1, got 0"),
    (["--latency-repeats", "-3"], "--latency-repeats must be at least 1, got -3"),
])
def test_export_refuses_bad_tolerance_and_repeats(extra, message, tmp_path, capsys):
    assert main(["export", "--method", "group-l1", "--ratio", "0.5", *extra, "--out", str(tmp_path / "b.zip")]) == 2
    assert message in _one_error_line(capsys)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("argv, message", [
    (["sweep", "--methods", "random", "--grid", "0", "0.9", "1000000000", "--out", "{tmp}/x"],
     "bad --grid 0 0.9 1000000000: 1,000,000,000 ratios were asked for; one sweep evaluates at most 200"),
    (["sweep", "--methods", "random", "--ratios", ",".join(["0.5"] * 201), "--out", "{tmp}/x"],
     "201 ratios were asked for"),
    (["sweep", "--methods", "random", "--ratios", "0.5", "--out", "{tmp}/file/x"], "cannot write --out {tmp}/file/x"),
    (["sweep", "--methods", "random", "--ratios", "0.5", "--out", "{tmp}/file"],
     "cannot write --out {tmp}/file: it is a file, not a folder"),
    (["export", "--method", "random", "--ratio", "0.5", "--out", "{tmp}/file/b.zip"],
     "cannot write --out {tmp}/file/b.zip"),
    (["export", "--method", "random", "--ratio", "0.5", "--out", "{tmp}"],
     "cannot write --out {tmp}: it is a folder, not a file"),
    (["check", "--checks", "id", "--models", "digits-mlp", "--json", "{tmp}/file/c.json"],
     "cannot write --json {tmp}/file/c.json"),
])
def test_refused_before_any_work(argv, message, tmp_path, capsys, monkeypatch):
    import pruning_core.cli as cli

    def no_work(args):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(cli, "_workbench", no_work)
    (tmp_path / "file").write_text("a regular file")
    t0 = time.perf_counter()
    assert main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 2
    assert time.perf_counter() - t0 < 2
    assert message.replace("{tmp}", str(tmp_path)) in _one_error_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # no folder left behind


def test_ratio_lists_are_sorted_and_merged():
    from pruning_core.cli import build_parser, ratios_from_args

    args = build_parser().parse_args(["sweep", "--methods", "random", "--ratios", "0.5,0.5, 0,0.50,0.3",
                                      "--out", "x"])
    assert ratios_from_args(args) == [0.0, 0.3, 0.5]


def test_a_failed_final_write_is_one_line(tmp_path, capsys, monkeypatch):
    def full_disk(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    assert main(["sweep", "--model", "digits-mlp", "--methods", "random", "--ratios", "0.5", "--device", "cpu",
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    written = tmp_path / "run" / "sweep.json"
    assert err.splitlines()[-1] == f"error: cannot write --out {written}: No space left on device"


@pytest.mark.parametrize("flag", ["--weights", "--data"])
def test_input_files_above_the_limit_are_refused_unread(flag, tmp_path, capsys, monkeypatch):
    import pruning_core.cli as cli

    def unread(*args, **kwargs):
        raise AssertionError("the file was read")

    monkeypatch.setattr(cli, "load_model_file", unread)
    monkeypatch.setattr(cli, "load_npz", unread)
    monkeypatch.setattr(Path, "open", unread)
    monkeypatch.setattr(Path, "read_bytes", unread)
    monkeypatch.setenv("PRUNING_EXPLORER_MAX_FILE_MB", "1")
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.truncate(2 << 20)  # sparse: 2 MiB on disk, nothing written
    argv = ["sweep", "--methods", "random", "--ratios", "0.5", "--device", "cpu", "--out", str(tmp_path / "x"),
            flag, str(big)]
    if flag == "--data":
        argv += ["--model", "digits-mlp"]
    assert main(argv) == 2
    err = _one_error_line(capsys)
    assert "big.bin (2,097,152 bytes on disk) would take 2 MiB in memory, above this server's limit of 1 MiB" in err
    assert "PRUNING_EXPLORER_MAX_FILE_MB" in err


@pytest.mark.parametrize("flag", ["--weights", "--data"])
def test_input_paths_that_are_folders_or_missing(flag, tmp_path, capsys):
    base = ["sweep", "--methods", "random", "--ratios", "0.5", "--device", "cpu", "--out", str(tmp_path / "x")]
    if flag == "--data":
        base += ["--model", "digits-mlp"]
    assert main([*base, flag, str(tmp_path)]) == 2
    assert f"cannot read {tmp_path}: it is a folder, not a file" in _one_error_line(capsys)
    assert main([*base, flag, str(tmp_path / "missing.npz")]) == 2
    assert f"cannot read {tmp_path / 'missing.npz'}: No such file or directory" in _one_error_line(capsys)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root may write to read-only folders")
def test_read_only_output_folder(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        assert main(["sweep", "--methods", "random", "--ratios", "0.5", "--out", str(locked / "run")]) == 2
        assert f"cannot write --out {locked / 'run'}: Permission denied" in _one_error_line(capsys)
        assert main(["sweep", "--methods", "random", "--ratios", "0.5", "--out", str(locked)]) == 2
        assert f"cannot write --out {locked}: Permission denied" in _one_error_line(capsys)
    finally:
        locked.chmod(0o700)


def test_an_output_folder_that_refuses_files(tmp_path, capsys, monkeypatch):
    """What a read-only folder does for a user who is not root (root may write anywhere, so it is simulated)."""
    import pruning_core.cli_files as cli_files

    def refused(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(cli_files.tempfile, "TemporaryFile", refused)
    assert main(["sweep", "--methods", "random", "--ratios", "0.5", "--out", str(tmp_path / "a" / "run")]) == 2
    assert f"cannot write --out {tmp_path / 'a' / 'run'}: Permission denied" in _one_error_line(capsys)
    assert not any(tmp_path.iterdir())  # the folders it created are removed again
    assert main(["export", "--method", "random", "--ratio", "0.5", "--out", str(tmp_path / "b.zip")]) == 2
    assert f"cannot write --out {tmp_path / 'b.zip'}: Permission denied" in _one_error_line(capsys)
