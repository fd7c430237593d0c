"""ResNet-18/34 (He et al., 2016, "Deep Residual Learning for Image Recognition"), written here because
torchvision is not available. Two stems: ``cifar`` (3x3 conv, no max-pool, for 32x32 inputs) and
``imagenet`` (7x7/2 conv + 3x3/2 max-pool, for 224x224 inputs). Input (N, C, H, W); output (N, classes).
"""

from __future__ import annotations

import torch
from torch import nn

from .digits import BasicBlock


class ResNet(nn.Module):
    def __init__(self, blocks: tuple[int, ...] = (2, 2, 2, 2), num_classes: int = 10, in_channels: int = 3,
                 stem: str = "cifar", widths: tuple[int, ...] = (64, 128, 256, 512)):
        super().__init__()
        if stem == "cifar":
            self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
            self.maxpool = nn.Identity()
        elif stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, widths[0], 7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        else:
            raise ValueError(f"unknown stem {stem!r}: use 'cifar' or 'imagenet'")
        self.bn1 = nn.BatchNorm2d(widths[0])
        in_planes = widths[0]
        stages = []
        for i, (n, planes) in enumerate(zip(blocks, widths, strict=True)):
            layers = []
            for j in range(n):
                layers.append(BasicBlock(in_planes, planes, stride=2 if (i > 0 and j == 0) else 1))
                in_planes = planes
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.flatten(self.avgpool(x)))


def resnet18(num_classes: int = 10, stem: str = "cifar", in_channels: int = 3) -> ResNet:
    return ResNet((2, 2, 2, 2), num_classes=num_classes, stem=stem, in_channels=in_channels)


def resnet34(num_classes: int = 10, stem: str = "cifar", in_channels: int = 3) -> ResNet:
    return ResNet((3, 4, 6, 3), num_classes=num_classes, stem=stem, in_channels=in_channels)
