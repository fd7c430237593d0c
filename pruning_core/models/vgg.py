"""VGG-16 with BatchNorm (Simonyan & Zisserman 2015, configuration D; BN after every conv as in torchvision's
``vgg16_bn``), with torchvision's module names so its state_dict loads strictly: ``features.N`` (conv, BN,
ReLU triples and max-pools), ``avgpool`` (adaptive 7x7, so any input of at least 32x32 works), ``classifier.0/3/6``
(Linear 25088-4096-4096-classes with ReLU and dropout between). 138,365,992 parameters at 1000 classes.
Input (N, 3, H, W); output (N, num_classes).
"""

from __future__ import annotations

import torch
from torch import nn

VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class VGG(nn.Module):
    def __init__(self, config: tuple = VGG16, num_classes: int = 1000, hidden: int = 4096, dropout: float = 0.5):
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 3
        for v in config:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(in_channels, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                in_channels = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(in_channels * 7 * 7, hidden), nn.ReLU(True), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.ReLU(True), nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def vgg16_bn(num_classes: int = 1000, hidden: int = 4096) -> VGG:
    """VGG-16-BN; ``hidden`` narrows the two 4096-wide classifier layers (for quick tests of the same shape)."""
    return VGG(VGG16, num_classes, hidden)
