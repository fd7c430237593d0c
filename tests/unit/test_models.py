"""The committed demo weights still do what their model card says."""

import json

import pytest
import torch

from pruning_core import Workbench, load_builtin
from pruning_core.models import ARCHITECTURES, ASSETS, DEMO_MODELS

CARDS = json.loads((ASSETS / "model_cards.json").read_text())


@pytest.mark.parametrize("name", DEMO_MODELS)
def test_committed_weights_reach_the_card_accuracy(name, digits):
    wb = Workbench(load_builtin(name), digits, device="cpu")
    acc = wb.dense_metrics().accuracy
    assert acc >= CARDS[name]["test_accuracy"] - 0.005, (name, acc, CARDS[name]["test_accuracy"])
    assert acc > 0.95


@pytest.mark.parametrize("name", DEMO_MODELS)
def test_card_records_how_the_weights_were_made(name):
    card = CARDS[name]
    assert card["command"].startswith("python -m pruning_core.models.train_demo")
    assert isinstance(card["seed"], int)
    assert card["parameters"] == sum(p.numel() for p in ARCHITECTURES[name].build().parameters())
    assert name in (ASSETS / "MODEL_CARD.md").read_text()


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_every_architecture_builds_and_runs(name):
    arch = ARCHITECTURES[name]
    if arch.input_shape[-1] > 64:
        pytest.skip("ImageNet-sized input: run at a reduced resolution in test_architectures.py")
    model = arch.build().eval()
    with torch.no_grad():
        out = model(torch.randn(2, *arch.input_shape))
    assert out.shape == (2, arch.num_classes)
