"""ImageNet-style pre-processing of Pillow images into normalised float32 tensors.

The evaluation transform of the torchvision ImageNet reference scripts (``Resize(256)``, ``CenterCrop(224)``,
``ToTensor()``, ``Normalize(mean, std)``) and the geometry of its training crop (``RandomResizedCrop``, He et al.'s
"scale and aspect-ratio augmentation", after Szegedy et al., "Going deeper with convolutions", CVPR 2015, sec. 6),
written against Pillow and NumPy so they need neither torchvision nor a network. Randomness comes from a NumPy
``Generator`` the caller seeds.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESAMPLING = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


def resized_shorter_side(width: int, height: int, size: int) -> tuple[int, int]:
    """(width, height) after scaling the shorter side to ``size``, the longer by the same factor truncated to an
    integer (torchvision ``Resize(size)``: ``int(size * long / short)``)."""
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


def center_box(width: int, height: int, size: int) -> tuple[int, int, int, int]:
    """The (left, top, right, bottom) box of a centred ``size`` x ``size`` crop (torchvision ``CenterCrop``:
    ``top = int(round((height - size) / 2))``, likewise ``left``)."""
    left, top = int(round((width - size) / 2.0)), int(round((height - size) / 2.0))
    return left, top, left + size, top + size


def random_resized_box(width: int, height: int, rng: np.random.Generator, scale: tuple[float, float] = (0.25, 1.0),
                       ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """A (left, top, right, bottom) box covering a random fraction of the image area drawn uniformly from
    ``scale`` with an aspect ratio drawn log-uniformly from ``ratio`` (torchvision ``RandomResizedCrop.get_params``:
    ten tries, then the whole image cut to the nearest allowed ratio). Default scale (0.25, 1), not the training
    default (0.08, 1): the crops are meant to stay recognisable views of the photo."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w, h = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
            return left, top, left + w, top + h
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        w, h = int(round(height * ratio[1])), height
    else:
        w, h = width, height
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


def normalised(img: Image.Image, mean: tuple[float, ...], std: tuple[float, ...], out: torch.Tensor | None = None
               ) -> torch.Tensor:
    """(C, H, W) float32 ``(pixel / 255 - mean[c]) / std[c]`` of an RGB or L image (torchvision ``ToTensor`` then
    ``Normalize``), written into ``out`` when given."""
    arr = np.asarray(img, dtype=np.float32)
    arr = arr[:, :, None] if arr.ndim == 2 else arr
    if arr.shape[2] != len(mean) or len(mean) != len(std):
        raise ValueError(f"an image of {arr.shape[2]} channels with mean {mean} and std {std}")
    m = np.asarray(mean, dtype=np.float32) * 255.0
    s = np.asarray(std, dtype=np.float32) * 255.0
    chw = torch.from_numpy(((arr - m) / s).transpose(2, 0, 1))
    if out is None:
        return chw.contiguous()
    out.copy_(chw)
    return out


def eval_view(img: Image.Image, size: int = 224, resize_to: int = 256, interpolation: str = "bilinear"
              ) -> Image.Image:
    """The ImageNet evaluation view: shorter side resized to ``resize_to``, then the centred ``size`` x ``size``
    crop (torchvision ``Resize(resize_to)`` + ``CenterCrop(size)``, antialiased as Pillow always is)."""
    w, h = resized_shorter_side(*img.size, resize_to)
    if min(w, h) < size:
        raise ValueError(f"resize_to ({resize_to}) must be at least the crop size ({size})")
    resized = img.resize((w, h), RESAMPLING[interpolation]) if (w, h) != img.size else img
    return resized.crop(center_box(w, h, size))


def crop_view(img: Image.Image, box: tuple[int, int, int, int], size: int, flip: bool,
              interpolation: str = "bilinear") -> Image.Image:
    """The ``box`` of ``img`` resized to ``size`` x ``size`` (one antialiased resampling of the original
    pixels), mirrored left-right when ``flip``."""
    view = img.resize((size, size), RESAMPLING[interpolation], box=box)
    return view.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if flip else view


__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "RESAMPLING", "center_box", "crop_view", "eval_view", "normalised",
           "random_resized_box", "resized_shorter_side"]
