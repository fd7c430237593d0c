"""How to build a workbench again somewhere else: the model and the data as the person gave them (a built-in name,
the bytes of an uploaded file with the options it was read with, a path inside the server's data root), read by
the same safe loaders as on the first load.

A ``WorkbenchRecipe`` is what a Ray worker receives (``ray_runner``): plain values and bytes, no Python objects
of the person's. ``build()`` runs one of a fixed set of loaders (``MODEL_LOADERS``, ``DATA_LOADERS``), chosen
by name, on those bytes, so a file that the upload rules would refuse is refused on the worker too, and nothing
from the file decides which code runs. A whole pickled model (read in the app only when the person ticks "trust
this pickle") is never sent: ``ModelRecipe`` refuses it, saying to save the state_dict instead.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from typing import Callable

from .data import DataError, DataSplits, load_digits, load_npz
from .loading import LoadedModel, ModelLoadError, load_model_file

__all__ = ["DATA_LOADERS", "MODEL_LOADERS", "DataRecipe", "ModelRecipe", "RecipeError", "WorkbenchRecipe"]


class RecipeError(ValueError):
    """A model or dataset that cannot be rebuilt elsewhere (a trusted pickle), said in one sentence."""


def _builtin(payload: bytes | None, name: str) -> LoadedModel:
    from .cli_inputs import load_model_by_name

    return load_model_by_name(name)


def _file(payload: bytes | None, filename: str, architecture: str | None = None) -> LoadedModel:
    return load_model_file(payload, filename, architecture=architecture, trust_pickle=False)


def _hf_zip(payload: bytes | None, filename: str) -> LoadedModel:
    from .text.hf_folder import load_hf_folder_zip

    return load_hf_folder_zip(payload, filename)


def _server_model(payload: bytes | None, path: str, architecture: str | None = None) -> LoadedModel:
    from .server_paths import load_server_model

    return load_server_model(path, architecture, trust_pickle=False)


MODEL_LOADERS: dict[str, Callable[..., LoadedModel]] = {
    "builtin": _builtin, "file": _file, "hf-zip": _hf_zip, "server": _server_model}


def _digits(payload: bytes | None) -> DataSplits:
    return load_digits()


def _npz(payload: bytes | None, filename: str) -> DataSplits:
    return load_npz(payload, filename)


def _photos(payload: bytes | None, **options) -> DataSplits:
    from .datasets import photo_eval_set

    return photo_eval_set(**options)


def _sentences(payload: bytes | None, **options) -> DataSplits:
    from .datasets import sentence_eval_set

    return sentence_eval_set(**options)


def _images_zip(payload: bytes | None, filename: str, **options) -> DataSplits:
    from .datasets import load_image_folder_zip

    return load_image_folder_zip(payload, filename, **options)


def _texts_csv(payload: bytes | None, filename: str) -> DataSplits:
    from .datasets import load_text_csv

    return load_text_csv(payload, name=filename)


def _server_data(payload: bytes | None, path: str, **options) -> DataSplits:
    from .server_paths import load_server_data

    return load_server_data(path, **options)


DATA_LOADERS: dict[str, Callable[..., DataSplits]] = {
    "digits": _digits, "npz": _npz, "photos": _photos, "sentences": _sentences, "images-zip": _images_zip,
    "texts-csv": _texts_csv, "server": _server_data}


def _frozen(options: dict) -> tuple:
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in options.items()))


@dataclass(frozen=True)
class ModelRecipe:
    """``loader``: a key of ``MODEL_LOADERS``; ``options``: its keyword arguments (sorted pairs of plain values);
    ``payload``: the uploaded file's bytes, or None."""

    loader: str
    options: tuple = ()
    payload: bytes | None = field(default=None, repr=False)

    def __post_init__(self):
        if self.loader not in MODEL_LOADERS:
            raise RecipeError(f"unknown model loader {self.loader!r}; known: {', '.join(MODEL_LOADERS)}")

    @classmethod
    def of(cls, loader: str, payload: bytes | None = None, trust_pickle: bool = False, **options) -> "ModelRecipe":
        if trust_pickle:
            raise RecipeError("a whole pickled model runs code when it is read, so it is not sent to other "
                              "machines: save its state_dict (safetensors) with its architecture and load that")
        return cls(loader, _frozen(options), payload)

    def load(self) -> LoadedModel:
        return MODEL_LOADERS[self.loader](self.payload, **dict(self.options))


@dataclass(frozen=True)
class DataRecipe:
    """``loader``: a key of ``DATA_LOADERS``; ``options``: its keyword arguments; ``payload``: the uploaded
    file's bytes, or None; ``n_eval`` / ``n_calib``: keep the first N evaluation / calibration samples."""

    loader: str
    options: tuple = ()
    payload: bytes | None = field(default=None, repr=False)
    n_eval: int | None = None
    n_calib: int | None = None

    def __post_init__(self):
        if self.loader not in DATA_LOADERS:
            raise RecipeError(f"unknown data loader {self.loader!r}; known: {', '.join(DATA_LOADERS)}")

    @classmethod
    def of(cls, loader: str, payload: bytes | None = None, n_eval: int | None = None, n_calib: int | None = None,
           **options) -> "DataRecipe":
        return cls(loader, _frozen(options), payload, n_eval, n_calib)

    def load(self) -> DataSplits:
        splits = DATA_LOADERS[self.loader](self.payload, **dict(self.options))
        if self.n_eval or self.n_calib:
            splits = dataclasses.replace(splits, eval=splits.eval.head(self.n_eval) if self.n_eval else splits.eval,
                                         calib=splits.calib.head(self.n_calib) if self.n_calib else splits.calib)
        return splits


@dataclass(frozen=True)
class WorkbenchRecipe:
    model: ModelRecipe
    data: DataRecipe
    name: str | None = None  # the workbench's name (default: the loaded model's)

    @property
    def digest(self) -> str:
        """A stable identity of what this recipe builds (loaders, options, sizes and the payloads' sha1)."""
        h = hashlib.sha1()
        for part in (self.model, self.data):
            fields = {k: v for k, v in dataclasses.asdict(part).items() if k != "payload"}
            h.update(repr(sorted(fields.items())).encode())
            h.update(hashlib.sha1(part.payload or b"").digest())
        h.update(repr(self.name).encode())
        return h.hexdigest()

    def build(self, device: str | None = None):
        """The model, then the data, then the workbench that checks they fit (``session.open_workbench``): the
        same order and checks as a first load. Raises ``ModelLoadError`` / ``DataError`` as those do."""
        from .session import open_workbench

        loaded = self.model.load()
        if self.name:
            loaded = dataclasses.replace(loaded, name=self.name)
        return open_workbench(loaded, self.data.load(), device=device, bundled_data=self.data.loader == "digits")


# what a refused recipe raises, for callers catching loading problems in one place
LOAD_ERRORS = (ModelLoadError, DataError, RecipeError)
