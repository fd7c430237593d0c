"""Activation criterion: how strongly each hidden channel of a two-layer unit fires on the calibration batch,
a_j = the sum of channel j's entries of the consumer's input over samples and positions (the statistic i-SpaSP's
threshold step ranks by, Wolfe & Kyrillidis 2022; post-activation, so nonnegative after a ReLU)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..structure.units import Unit, channel_sums, dense_unit_inputs
from .base import Importance

if TYPE_CHECKING:
    from ..workbench import Workbench


def unit_activation_sums(wb: "Workbench", units: list[Unit] | None = None) -> dict[str, torch.Tensor]:
    """Unit group -> (hidden channels,) float64 a_j on the dense model (``units``: default every unit)."""
    units = wb.units if units is None else units
    inputs = dense_unit_inputs(wb, units)
    return {u.group: channel_sums(u, inputs[u.consumer]).double().cpu() for u in units}


class ActivationSum(Importance):
    target = "units"

    def __call__(self, wb: "Workbench") -> dict[str, torch.Tensor]:
        return unit_activation_sums(wb)
