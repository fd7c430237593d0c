"""The ``sensitivity`` command: writes the table the library returns (CSV or JSON), prints the groups x ratios
accuracy drop, reports one progress line per group on stderr, and refuses bad arguments in one line, status 2,
before any work and without leaving a file behind."""

import pandas as pd
import pytest
from safetensors.torch import save as save_safetensors

from pruning_core import Workbench, load_builtin
from pruning_core.cli import main
from pruning_core.importance.criteria import channel_scores
from pruning_core.sensitivity import COLUMNS, from_json, sensitivity_table

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_csv_table_equals_the_library_and_progress_is_one_line_per_group(tmp_path, capsys, digits):
    out = tmp_path / "sub" / "table.csv"
    assert main(["sensitivity", "--model", "digits-resnet", "--criterion", "l1", "--ratios", "0.75,0.25,0.5",
                 "--device", "cpu", "--out", str(out)]) == 0
    table = pd.read_csv(out)
    wb = Workbench(load_builtin("digits-resnet"), digits, device="cpu")
    expected = sensitivity_table(wb, channel_scores(wb, "l1"), [0.25, 0.5, 0.75], engine="naive")
    assert list(table.columns) == COLUMNS and table["group"].tolist() == expected["group"].tolist()
    assert table["ratio"].tolist() == expected["ratio"].tolist()
    assert table["accuracy_drop"].tolist() == pytest.approx(expected["accuracy_drop"].tolist(), abs=1e-6)
    captured = capsys.readouterr()
    groups = [g.name for g in wb.groups.groups]
    progress = [line for line in captured.err.splitlines() if line.startswith("[")]
    assert [line.split()[1] for line in progress] == groups  # one line per group, in order
    assert "accuracy drop" in captured.out and all(g in captured.out for g in groups)
    printed = captured.out.splitlines()
    row = next(line for line in printed if line.startswith("layer2.shortcut.0"))
    drops = expected[expected["group"] == "layer2.shortcut.0"]["accuracy_drop"].tolist()
    assert row.split()[1:] == [f"{d:.4f}" for d in drops]


def test_json_grid_calibration_split_naive_engine_and_uploaded_weights(tmp_path, capsys):
    weights = tmp_path / "cnn.safetensors"
    weights.write_bytes(save_safetensors(load_builtin("digits-cnn").state_dict()))
    out = tmp_path / "table.json"
    assert main(["sensitivity", "--weights", str(weights), "--architecture", "digits-cnn", "--criterion", "bn-scale",
                 "--grid", "0.2", "0.6", "3", "--split", "calib", "--groups", "conv2,conv1", "--engine", "naive",
                 "--device", "cpu", "--out", str(out)]) == 0
    table = from_json(out.read_text())
    meta = table.attrs["meta"]
    assert table["group"].tolist() == ["conv1"] * 3 + ["conv2"] * 3 and table["ratio"].tolist() == [0.2, 0.4, 0.6] * 2
    assert meta["split"] == "calib" and meta["engine"] == "naive" and meta["criterion"] == "bn-scale"
    assert meta["kind"] == "safetensors" and meta["architecture"] == "digits-cnn" and meta["samples"] == 256
    assert len(capsys.readouterr().err.splitlines()) >= 2


@pytest.mark.parametrize("extra, message", [
    (["--criterion", "nope", "--ratios", "0.5"], "unknown criterion 'nope'"),
    (["--ratios", "0.5,1.2"], "ratio of 1.2"),
    (["--ratios", "x"], "must be a number"),
    (["--grid", "0", "0.5"], "--grid"),
    (["--ratios", "0.5", "--grid", "0", "0.5", "3"], "not allowed with"),
    (["--ratios", "0.5", "--engine", "fast"], "invalid choice"),
    (["--ratios", "0.5", "--split", "train"], "invalid choice"),
    (["--ratios", "0.5", "--groups", "conv1,nope"], "unknown group 'nope'"),
])
def test_bad_arguments_exit_2_with_one_line_and_no_file(extra, message, tmp_path, capsys):
    out = tmp_path / "new" / "table.csv"
    assert main(["sensitivity", "--model", "digits-cnn", "--device", "cpu", "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1]
    assert not out.exists() and not out.parent.exists()


def test_output_must_be_csv_or_json(tmp_path, capsys):
    assert main(["sensitivity", "--model", "digits-mlp", "--ratios", "0.5", "--out", str(tmp_path / "t.txt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and ".csv or .json" in err[0]
