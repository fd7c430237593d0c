"""Pruning methods by name. Each method file defines its classes and a ``SPECS`` list (see ``MethodSpec``); the
registry is assembled from the files listed in ``_FILES``, in that order. Adding a method: its file (class + spec),
its test, and its file's name in ``_FILES`` if the file is new. The conformance suite
(tests/unit/test_conformance.py) then tests it on every demo model it supports, by being registered."""

from __future__ import annotations

import importlib

from .base import NEEDS, PROPERTIES, Method, MethodSpec, RankedChannels, RankedUnstructured, spec_for

_FILES = ("magnitude", "random", "sap", "id", "ispasp", "units", "slimming", "block", "obs", "criteria",
          "allocated")

REGISTRY: dict[str, MethodSpec] = {}
for _name in _FILES:
    for _spec in importlib.import_module(f".{_name}", __name__).SPECS:
        if _spec.key in REGISTRY:
            raise ValueError(f"two methods are named {_spec.key!r}")
        REGISTRY[_spec.key] = _spec


def make_method(key: str | Method, **overrides) -> Method:
    """A configured method from its registry key (``overrides`` replace the defaults). A ``Method`` instance is
    returned as it is, so that everything taking a key takes an instance too."""
    if isinstance(key, Method):
        if overrides:
            raise ValueError("settings cannot be overridden on a method instance; build a new one")
        return key
    if key not in REGISTRY:
        raise KeyError(f"unknown method {key!r}; available: {', '.join(REGISTRY)}")
    return REGISTRY[key].build(**overrides)


def method_spec(method: str | Method) -> MethodSpec:
    """The spec of a registry key or of an instance."""
    return method.spec if isinstance(method, Method) else REGISTRY[method]


__all__ = ["NEEDS", "PROPERTIES", "REGISTRY", "Method", "MethodSpec", "RankedChannels", "RankedUnstructured",
           "make_method", "method_spec", "spec_for"]
