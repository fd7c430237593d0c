"""glibc's allocator settings made at start-up by the app, the command line and Ray workers (``runtime.tune_malloc``):
made once on Linux, left alone with PRUNING_EXPLORER_SYSTEM_MALLOC=1. Each case runs in a fresh interpreter, as
the settings belong to the process."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CHECK = ("from pruning_core.runtime import tune_malloc; first = tune_malloc(); print(first, tune_malloc() == first)")


def _run(env: dict) -> str:
    return subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, check=True,
                          env={**os.environ, **env}).stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the settings are glibc's")
def test_tuned_once_on_linux_and_left_alone_on_request():
    assert _run({"PRUNING_EXPLORER_SYSTEM_MALLOC": ""}) == "True True"
    assert _run({"PRUNING_EXPLORER_SYSTEM_MALLOC": "1"}) == "False True"


def test_the_command_line_tunes_before_any_work(monkeypatch):
    from pruning_core import cli

    called = []
    monkeypatch.setattr(cli, "tune_malloc", lambda: called.append(True))
    assert cli.main(["models"]) == 0 and called == [True]
