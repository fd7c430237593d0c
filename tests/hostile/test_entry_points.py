"""The issue's .pt2 exploit reaches the loaders through every entry point: the engine, the command line's
``--weights`` (sweep, check and sensitivity) and the trusted path. None runs its payload unless the person trusts
the file."""

from __future__ import annotations

import pytest
from corpus import exploit_pt2

from pruning_core.cli import main
from pruning_core.loading import ModelLoadError, load_model_file


@pytest.fixture(scope="module")
def exploit(tmp_path_factory):
    folder = tmp_path_factory.mktemp("exploit")
    marker = folder / "payload-ran"
    path = folder / "model.pt2"
    path.write_bytes(exploit_pt2(marker))
    return path, marker


def test_engine_refuses_it_and_nothing_runs(exploit):
    path, marker = exploit
    with pytest.raises(ModelLoadError, match="model.pt2"):
        load_model_file(path.read_bytes(), "model.pt2")
    assert not marker.exists()


@pytest.mark.parametrize("command", [
    ["sweep", "--methods", "magnitude-global", "--ratios", "0.5", "--out", "{out}"],
    ["check", "--checks", "id", "--quick"],
    ["sensitivity", "--criterion", "l1", "--ratios", "0.5", "--out", "{out}.csv"],
])
def test_command_line_refuses_it_in_one_line(exploit, tmp_path, capsys, command):
    path, marker = exploit
    argv = [a.replace("{out}", str(tmp_path / "out")) for a in command] + ["--weights", str(path), "--device", "cpu"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: model.pt2") and "Traceback" not in err
    assert not marker.exists()
