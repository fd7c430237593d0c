"""An offline, unlabelled evaluation set for ImageNet classifiers: seeded crops of the colour photographs that
scikit-image and scikit-learn ship inside their packages (nothing is downloaded).

There are no labels, so figures measured on it say how closely a pruned model agrees with the dense one on natural
photographs (top-1 agreement, top-5 overlap, KL divergence), never how accurate either is on ImageNet. The crops of
one photo are correlated, so 256 crops of 10 photos carry far less information than 256 independent photos.
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ..data import DataError, DataSplits
from .images import IMAGENET_MEAN, IMAGENET_STD, crop_view, eval_view, normalised, random_resized_box
from .splits import check_memory, unlabelled


@dataclass(frozen=True)
class Photo:
    """One photograph shipped inside an installed package: ``package``'s file ``filename``."""

    key: str
    package: str
    filename: str
    subject: str
    kind: str  # "everyday" (an ImageNet-like scene) or "scientific" (telescope, fundus camera, microscope)


# Every colour photograph of skimage.data that is in the installed package (others are fetched on first use), and
# scikit-learn's two sample images. Left out: skimage's cat() (the same file as chelsea), motorcycle_right (the
# second view of the same stereo pair), colorwheel and logo (drawn graphics), lfw_subset and all grey-level images.
PHOTOS = (
    Photo("astronaut", "skimage.data", "astronaut.png", "astronaut Eileen Collins, NASA portrait", "everyday"),
    Photo("chelsea", "skimage.data", "chelsea.png", "Chelsea the cat", "everyday"),
    Photo("coffee", "skimage.data", "coffee.png", "a cup of coffee on a saucer", "everyday"),
    Photo("rocket", "skimage.data", "rocket.jpg", "a rocket on its launch pad", "everyday"),
    Photo("motorcycle", "skimage.data", "motorcycle_left.png", "a motorcycle in a studio (stereo pair, left)",
          "everyday"),
    Photo("china", "sklearn.datasets.images", "china.jpg", "a Chinese temple among trees", "everyday"),
    Photo("flower", "sklearn.datasets.images", "flower.jpg", "a flower, close up", "everyday"),
    Photo("hubble", "skimage.data", "hubble_deep_field.jpg", "the Hubble deep field: galaxies", "scientific"),
    Photo("retina", "skimage.data", "retina.jpg", "a human retina, fundus photograph", "scientific"),
    Photo("ihc", "skimage.data", "ihc.png", "immunohistochemistry-stained tissue, microscope", "scientific"),
)
BY_KEY = {p.key: p for p in PHOTOS}


def load_photo(photo: Photo | str) -> Image.Image:
    """The photo as an RGB Pillow image, read from its package's folder."""
    photo = BY_KEY[photo] if isinstance(photo, str) else photo
    path = importlib.resources.files(photo.package) / photo.filename
    try:
        with importlib.resources.as_file(path) as p, Image.open(p) as img:
            return img.convert("RGB")
    except (FileNotFoundError, ModuleNotFoundError, OSError) as e:
        raise DataError(f"The photo {photo.filename} of {photo.package} is not installed ({e}); install "
                        "scikit-image and scikit-learn (requirements-extras.txt).") from e


def _views(images: list[Image.Image], n: int, rng: np.random.Generator, size: int, resize_to: int,
           mean: tuple[float, ...], std: tuple[float, ...], centre_first: bool, scale: tuple[float, float],
           interpolation: str) -> torch.Tensor:
    """(n, 3, size, size) views, photo i % len(images) for view i: the first view of each photo is its ImageNet
    evaluation view when ``centre_first``, every other view a random resized crop, flipped with probability 1/2."""
    x = torch.empty((n, 3, size, size), dtype=torch.float32)
    for i in range(n):
        img = images[i % len(images)]
        if centre_first and i < len(images):
            view = eval_view(img, size, resize_to, interpolation)
        else:
            box = random_resized_box(*img.size, rng, scale)
            view = crop_view(img, box, size, bool(rng.random() < 0.5), interpolation)
        normalised(view, mean, std, out=x[i])
    return x


def photo_eval_set(n: int = 256, size: int = 224, seed: int = 0, n_calib: int = 64, n_train: int = 128,
                   mean: tuple[float, float, float] = IMAGENET_MEAN, std: tuple[float, float, float] = IMAGENET_STD,
                   photos: tuple[str, ...] | None = None, resize_to: int | None = None,
                   scale: tuple[float, float] = (0.25, 1.0), interpolation: str = "bilinear"):
    """Unlabelled ``DataSplits`` of (N, 3, size, size) float32 crops of the photos in ``PHOTOS`` (all ten, or the
    keys in ``photos``), normalised with ``mean`` and ``std`` (default ImageNet's). Labels are -1.

    * evaluation (``n``): each photo's ImageNet evaluation view (shorter side resized to ``resize_to``, default
      ``size * 256 / 224``, centred ``size`` crop), then seeded random resized crops (area fraction in ``scale``,
      aspect ratio in [3/4, 4/3]) with horizontal flips, photos taken in turn;
    * calibration (``n_calib``): further random crops of the same photos, from their own seeded stream;
    * train (``n_train``): more random crops, for fine-tuning by distillation from the dense model (there are no
      labels to train on); they show the same photos as the evaluation crops, so a model fine-tuned on them is
      not evaluated on unseen images.

    Deterministic for a given ``seed``. Takes ``4 * 3 * size**2`` bytes per crop (602 KB at 224; 154 MB for
    256 crops); refused with ``DataError`` above ``limits.max_file_bytes()``.
    """
    keys = tuple(photos) if photos is not None else tuple(BY_KEY)
    unknown = [k for k in keys if k not in BY_KEY]
    if unknown or not keys:
        raise DataError(f"Unknown photos {unknown or '(none chosen)'}; the photos are {', '.join(BY_KEY)}.")
    if n < 1 or n_calib < 1 or n_train < 0 or size < 1:
        raise DataError(f"photo_eval_set needs n >= 1, n_calib >= 1, n_train >= 0 and size >= 1 "
                        f"(got n={n}, n_calib={n_calib}, n_train={n_train}, size={size}).")
    resize_to = resize_to if resize_to is not None else int(round(size * 256 / 224))
    total = n + n_calib + n_train
    check_memory(f"{total} photo crops of {size} x {size}", 4 * 3 * size * size * total)
    images = [load_photo(BY_KEY[k]) for k in keys]
    common = dict(size=size, resize_to=resize_to, mean=tuple(mean), std=tuple(std), scale=scale,
                  interpolation=interpolation)
    ev = _views(images, n, np.random.default_rng([seed, 0]), centre_first=True, **common)
    cal = _views(images, n_calib, np.random.default_rng([seed, 1]), centre_first=False, **common)
    tr = _views(images, n_train, np.random.default_rng([seed, 2]), centre_first=False, **common)
    subjects = ", ".join(keys)
    note = (f"{n} evaluation crops of {len(keys)} photos shipped with scikit-image and scikit-learn ({subjects}), "
            f"unlabelled: figures measure agreement with the dense model, not accuracy on ImageNet. Crops of one "
            f"photo are correlated" + (f"; the {n_train} training crops show the same photos." if n_train else "."))
    return DataSplits(f"{n} crops of {len(keys)} photos (unlabelled)", unlabelled(tr), unlabelled(cal),
                       unlabelled(ev), 0, labelled=False, note=note)


__all__ = ["BY_KEY", "PHOTOS", "Photo", "load_photo", "photo_eval_set"]
