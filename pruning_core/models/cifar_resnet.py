"""The CIFAR ResNets of He et al. 2016 ("Deep Residual Learning for Image Recognition", Sec. 4.2): a 3x3 conv
to 16 channels, three stages of n basic blocks at 16/32/64 channels on 32x32/16x16/8x8 maps, global average
pooling and a linear classifier; depth 6n+2 (ResNet-20: n=3, ResNet-56: n=9). Input (N, 3, 32, 32).

Shortcuts where the width doubles: the paper's CIFAR models use option A (identity with zero-padded extra
channels and stride-2 subsampling, no parameters; 0.27M / 0.85M parameters). Zero-padding the channel
dimension is an op our dependency-graph adapter cannot follow: Torch-Pruning treats the pad as elementwise and
couples the 16 input channels with 16 of the 32 output channels, so a sliced model no longer fits together. The
registered models therefore use option B (a 1x1 conv + BN projection at the two widening blocks, He et al. 2016
Sec. 3.3), which adds 2,752 parameters: ResNet-20 272,474 and ResNet-56 855,770 at 10 classes (option A:
269,722 and 853,018). ``shortcut="A"`` builds the paper's exact models for comparison (not prunable here).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CifarBasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: str = "B"):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.pad = 0  # option A: channels added on each side of the subsampled identity
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            if shortcut == "A":
                self.pad = (planes - in_planes) // 2
            elif shortcut == "B":
                self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                                              nn.BatchNorm2d(planes))
            else:
                raise ValueError(f"unknown shortcut option {shortcut!r}: use 'A' or 'B'")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.pad:
            identity = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))
        else:
            identity = self.shortcut(x)
        return torch.relu(out + identity)


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs; ``shortcut`` "B" (projection, prunable) or "A" (the paper's zero-pad)."""

    def __init__(self, n: int, num_classes: int = 10, shortcut: str = "B"):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        in_planes, stages = 16, []
        for i, planes in enumerate((16, 32, 64)):
            blocks = []
            for j in range(n):
                blocks.append(CifarBasicBlock(in_planes, planes, 2 if (i > 0 and j == 0) else 1, shortcut))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet20(num_classes: int = 10, shortcut: str = "B") -> CifarResNet:
    """ResNet-20 (n=3): 272,474 parameters with option B, 269,722 with option A, at 10 classes."""
    return CifarResNet(3, num_classes, shortcut)


def resnet56(num_classes: int = 10, shortcut: str = "B") -> CifarResNet:
    """ResNet-56 (n=9): 855,770 parameters with option B, 853,018 with option A, at 10 classes."""
    return CifarResNet(9, num_classes, shortcut)
