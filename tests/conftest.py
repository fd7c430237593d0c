"""Shared fixtures. The set-up installs the project (``pip install -e .``), so tests import pruning_core and
explorer_ui like any package."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

DEMO = ("digits-mlp", "digits-cnn", "digits-resnet")


@pytest.fixture(scope="session")
def digits():
    from pruning_core import load_digits

    return load_digits()


@pytest.fixture(scope="session")
def demo_workbenches(digits):
    """One CPU workbench per demo model, shared by read-only tests (tests restore what they apply)."""
    from pruning_core import Workbench, load_builtin

    return {name: Workbench(load_builtin(name), digits, device="cpu", name=name) for name in DEMO}


@pytest.fixture(scope="module")
def one_torch_thread():
    """For modules of small training and solver problems (``pytestmark = pytest.mark.usefixtures(...)``): on a
    shared 2-core machine a second torch thread mostly waits for the first."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
