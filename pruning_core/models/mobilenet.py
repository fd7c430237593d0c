"""MobileNetV2 (Sandler et al. 2018, "MobileNetV2: Inverted Residuals and Linear Bottlenecks", Table 2) with
torchvision's module names so its state_dict loads strictly: ``features.0`` (3x3/2 conv-BN-ReLU6 to 32),
``features.1..17`` inverted residual blocks (``features.N.conv.M``: 1x1 expand conv-BN-ReLU6 (absent when the
expansion is 1), 3x3 depthwise conv-BN-ReLU6, 1x1 linear projection conv, BN; identity shortcut when stride 1
and width unchanged), ``features.18`` (1x1 conv-BN-ReLU6 to 1280), ``classifier.1`` (Linear 1280 -> classes
after dropout 0.2). Width multiplier 1.0: 3,504,872 parameters at 1000 classes. Input (N, 3, H, W), any size.
"""

from __future__ import annotations

import torch
from torch import nn

# (expansion t, output channels c, repeats n, first stride s), Table 2 of the paper
SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def conv_bn_relu6(in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """torchvision's ``Conv2dNormActivation``: conv (no bias, same padding) -> BN -> ReLU6, as indices 0/1/2."""
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(out_ch), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = in_ch * expand_ratio
        self.use_res_connect = stride == 1 and in_ch == out_ch
        layers: list[nn.Module] = [conv_bn_relu6(in_ch, hidden, 1)] if expand_ratio != 1 else []
        layers += [conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden),
                   nn.Conv2d(hidden, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int = 1000, dropout: float = 0.2):
        super().__init__()
        in_ch = 32
        features: list[nn.Module] = [conv_bn_relu6(3, in_ch, 3, 2)]
        for t, c, n, s in SETTINGS:
            for i in range(n):
                features.append(InvertedResidual(in_ch, c, s if i == 0 else 1, t))
                in_ch = c
        features.append(conv_bn_relu6(in_ch, 1280, 1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(1280, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


def mobilenet_v2(num_classes: int = 1000) -> MobileNetV2:
    """MobileNetV2, width 1.0: 3,504,872 parameters at 1000 classes."""
    return MobileNetV2(num_classes)
