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


# ----- torchvision's layout ----------------------------------------------------------------------------------
class TorchvisionBasicBlock(nn.Module):
    """torchvision's ``BasicBlock``: conv3x3-BN-ReLU-conv3x3-BN plus the input (or ``downsample`` of it: a 1x1
    conv + BN when stride or width changes), then ReLU. Same names as torchvision, so its weights load."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class Bottleneck(nn.Module):
    """torchvision's ``Bottleneck`` (ResNet v1.5: the stride sits on the 3x3 conv, not the first 1x1):
    1x1 reduce -> 3x3 -> 1x1 expand (x4), each followed by BN, ReLU after the first two and after the sum."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class TorchvisionResNet(nn.Module):
    """ResNet with torchvision's module names (``conv1 bn1 relu maxpool layer1..layer4 avgpool fc``,
    ``layerN.M.downsample.0/1``), so ``torchvision.models.resnet18/50(...).state_dict()`` loads strictly.
    ImageNet stem (7x7/2 conv, 3x3/2 max-pool); resolution-agnostic (adaptive average pool before ``fc``).
    Input (N, 3, H, W); output (N, num_classes)."""

    def __init__(self, block: type[TorchvisionBasicBlock] | type[Bottleneck], layers: tuple[int, int, int, int],
                 num_classes: int = 1000, in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_planes = 64
        stages = []
        for i, (n, planes) in enumerate(zip(layers, (64, 128, 256, 512), strict=True)):
            stride = 1 if i == 0 else 2
            downsample = None
            if stride != 1 or in_planes != planes * block.expansion:
                downsample = nn.Sequential(nn.Conv2d(in_planes, planes * block.expansion, 1, stride=stride,
                                                     bias=False), nn.BatchNorm2d(planes * block.expansion))
            blocks = [block(in_planes, planes, stride, downsample)]
            in_planes = planes * block.expansion
            blocks += [block(in_planes, planes) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def torchvision_resnet18(num_classes: int = 1000) -> TorchvisionResNet:
    """ResNet-18 (He et al. 2016, Table 1), torchvision layout: 11,689,512 parameters at 1000 classes."""
    return TorchvisionResNet(TorchvisionBasicBlock, (2, 2, 2, 2), num_classes)


def torchvision_resnet50(num_classes: int = 1000) -> TorchvisionResNet:
    """ResNet-50 (He et al. 2016, Table 1; v1.5 strides), torchvision layout: 25,557,032 parameters."""
    return TorchvisionResNet(Bottleneck, (3, 4, 6, 3), num_classes)
