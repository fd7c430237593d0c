"""Built-in architectures, by name. Each entry says how to build the model and what input it takes.

The ``digits-*`` entries have committed demo weights in ``assets/`` (see ``assets/MODEL_CARD.md``); the
others are architectures a user can load their own state_dict or safetensors into.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from torch import nn

from .digits import DigitsCNN, DigitsMLP, DigitsResNet
from .resnet import ResNet, resnet18, resnet34

ASSETS = Path(__file__).resolve().parents[2] / "assets"


@dataclass(frozen=True)
class Architecture:
    name: str
    title: str
    build: Callable[[], nn.Module]
    input_shape: tuple[int, ...]  # one sample, without the batch dimension
    num_classes: int
    weights: str | None = None  # file name under assets/, if the project ships trained weights

    @property
    def weights_path(self) -> Path | None:
        return ASSETS / self.weights if self.weights else None


ARCHITECTURES: dict[str, Architecture] = {a.name: a for a in [
    Architecture("digits-mlp", "MLP (digits, 64-128-64-10)", DigitsMLP, (1, 8, 8), 10, "digits-mlp.safetensors"),
    Architecture("digits-cnn", "CNN with BatchNorm (digits)", DigitsCNN, (1, 8, 8), 10, "digits-cnn.safetensors"),
    Architecture("digits-resnet", "Residual CNN (digits)", DigitsResNet, (1, 8, 8), 10,
                 "digits-resnet.safetensors"),
    Architecture("resnet18-cifar", "ResNet-18, CIFAR stem (3x32x32, 10 classes)",
                 lambda: resnet18(10, "cifar"), (3, 32, 32), 10),
    Architecture("resnet18-imagenet", "ResNet-18, ImageNet stem (3x224x224, 1000 classes)",
                 lambda: resnet18(1000, "imagenet"), (3, 224, 224), 1000),
    Architecture("resnet34-cifar", "ResNet-34, CIFAR stem (3x32x32, 10 classes)",
                 lambda: resnet34(10, "cifar"), (3, 32, 32), 10),
]}

DEMO_MODELS = [name for name, a in ARCHITECTURES.items() if a.weights]

__all__ = ["ARCHITECTURES", "DEMO_MODELS", "Architecture", "DigitsCNN", "DigitsMLP", "DigitsResNet", "ResNet",
           "resnet18", "resnet34"]
