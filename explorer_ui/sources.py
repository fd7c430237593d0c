"""Where a model and a dataset come from, and the process-wide caches that load them.

Dense models and datasets are cached once per process with ``st.cache_resource``, keyed by an explicit
identity (a built-in name, or the sha1 of the uploaded bytes), shared read-only by every session and never
mutated: a session's workbench works on its own copy.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import streamlit as st

from pruning_core import DataSplits, load_digits, load_npz
from pruning_core.loading import LoadedModel, load_builtin_model, load_model_file
from pruning_core.models import ARCHITECTURES

DEMO_MODEL = "digits-resnet"
DIGITS_ID = "bundled:digits"
ARCHITECTURE_CHOICES = list(ARCHITECTURES)


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


def sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def architecture_title(name: str) -> str:
    arch = ARCHITECTURES[name]
    return arch.title if arch.has_weights else f"{arch.title} · random init, no trained weights"


@dataclass(frozen=True)
class ModelSource:
    """A built-in name, or uploaded bytes with the options they are read with."""

    builtin: str | None = None
    data: bytes | None = field(default=None, repr=False)
    filename: str = ""
    architecture: str | None = None
    trust_pickle: bool = False

    @property
    def identity(self) -> str:
        if self.builtin is not None:
            return f"builtin:{self.builtin}"
        return f"file:{sha1(self.data)}:{self.filename}:{self.architecture}:{self.trust_pickle}"

    def load(self) -> LoadedModel:
        if self.builtin is not None:
            return builtin_model(self.builtin)
        return uploaded_model(sha1(self.data), self.filename, self.architecture, self.trust_pickle, _data=self.data)


@dataclass(frozen=True)
class DataSource:
    """Uploaded .npz bytes, or None for the bundled digits."""

    data: bytes | None = field(default=None, repr=False)
    filename: str = ""

    @property
    def identity(self) -> str:
        return DIGITS_ID if self.data is None else f"npz:{sha1(self.data)}"

    @property
    def bundled(self) -> bool:
        return self.data is None

    def load(self) -> DataSplits:
        if self.data is None:
            return bundled_digits()
        return uploaded_data(sha1(self.data), self.filename, _data=self.data)
