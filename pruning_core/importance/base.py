"""The interface every importance criterion implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from ..workbench import Workbench

TARGETS = ("weights", "channels", "units", "rows")


class Importance(ABC):
    """A criterion: ``criterion(wb)`` -> name -> score tensor, low scores removed first. ``target`` (one of
    ``TARGETS``) says what a score is per (see the package docstring)."""

    target: str

    @abstractmethod
    def __call__(self, wb: "Workbench") -> dict[str, torch.Tensor]: ...
