"""Pruning methods by name. Adding a method: one file in this package, its test, one line in ``REGISTRY``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .base import Method, RankedChannels, RankedUnstructured
from .interpolative import InterpolativePruning, UnitGroupMagnitude
from .ispasp import ActivationMagnitude, ISpaSP, RandomUnits
from .magnitude import GroupMagnitude, MagnitudeUnstructured
from .pqi import SAPSchedule
from .random import RandomChannels, RandomUnstructured


@dataclass(frozen=True)
class MethodSpec:
    key: str
    label: str
    granularity: str
    factory: Callable[..., Method]
    defaults: dict = field(default_factory=dict)
    description: str = ""
    requires: str = ""  # "units": the model needs two-layer units (hidden neurons / inner block channels)


REGISTRY: dict[str, MethodSpec] = {s.key: s for s in [
    MethodSpec("magnitude-global", "Magnitude, global (unstructured)", "unstructured", MagnitudeUnstructured,
               {"scope": "global"}, "Smallest |w| over all weight tensors at once."),
    MethodSpec("magnitude-layer", "Magnitude, per layer (unstructured)", "unstructured", MagnitudeUnstructured,
               {"scope": "layer"}, "Smallest |w| in each weight tensor, the same fraction everywhere."),
    MethodSpec("random", "Random (unstructured)", "unstructured", RandomUnstructured, {"scope": "global"},
               "Uniformly random weights; the baseline."),
    MethodSpec("sap-neuron", "SAP rule per neuron, no retraining (unstructured, variant)", "unstructured",
               SAPSchedule, {"scope": "neuron"}, "Diao et al. 2023's pruning rule applied round after round on the "
               "trained weights: each round every output row loses the fraction its PQ Index sets (p=0.5, q=1)."),
    MethodSpec("sap-layer", "SAP rule per layer, no retraining (unstructured, variant)", "unstructured",
               SAPSchedule, {"scope": "layer"}, "The SAP rule per weight tensor, round after round, no retraining."),
    MethodSpec("sap-global", "SAP rule global, no retraining (unstructured, variant)", "unstructured",
               SAPSchedule, {"scope": "global"}, "The SAP rule over all weights at once, round after round, no "
               "retraining."),
    MethodSpec("group-l1", "Group L1 (structured channels)", "structured", GroupMagnitude, {"p": 1},
               "Channels with the smallest summed L1 norm over their whole dependency group."),
    MethodSpec("group-l2", "Group L2 (structured channels)", "structured", GroupMagnitude, {"p": 2},
               "Channels with the smallest summed L2 norm over their whole dependency group."),
    MethodSpec("random-channels", "Random channels (structured)", "structured", RandomChannels, {},
               "Uniformly random channels of every group; the structured baseline."),
    MethodSpec("id", "Interpolative decomposition (structured, Chee et al. 2021)", "structured",
               InterpolativePruning, {"mode": "fraction", "correction": True},
               "Keeps the hidden channels a pivoted QR of their calibration activations selects and folds the "
               "interpolation matrix into the next layer; every unit removes the same fraction.", "units"),
    MethodSpec("id-nocorrection", "ID channels without the correction (structured)", "structured",
               InterpolativePruning, {"mode": "fraction", "correction": False},
               "The same channel selection as ID, without folding the interpolation matrix.", "units"),
    MethodSpec("id-tolerance", "ID, shared error tolerance (structured)", "structured", InterpolativePruning,
               {"mode": "tolerance"}, "Interpolative decomposition; every unit keeps the smallest k with "
               "|R_k+1,k+1 / R_11| <= one tolerance shared by all units, the tolerance that removes ratio x the "
               "units' channels (so layers with faster-decaying activations lose more).", "units"),
    MethodSpec("id-flops", "ID, greedy FLOPs allocation (structured)", "structured", InterpolativePruning,
               {"mode": "flops"}, "Interpolative decomposition; cuts the unit whose ID error grows least per FLOP "
               "saved until ratio x dense FLOPs are removed (ratio = FLOPs removed).", "units"),
    MethodSpec("unit-group-l1", "Group L1 on hidden units (structured)", "structured", UnitGroupMagnitude, {},
               "Magnitude (group L1) restricted to the hidden channels ID and i-SpaSP prune; their baseline.",
               "units"),
    MethodSpec("ispasp", "i-SpaSP (structured, Wolfe & Kyrillidis 2022)", "structured", ISpaSP,
               {"iterations": 20, "signed": True, "schedule": "sequential"},
               "Sparse-signal-recovery pruning of each two-layer unit's hidden channels: the output residual's "
               "gradient proposes candidates, the dense activation keeps s of them; units in forward order.", "units"),
    MethodSpec("ispasp-abs", "i-SpaSP with |proxy| (structured)", "structured", ISpaSP,
               {"iterations": 20, "signed": False, "schedule": "sequential"},
               "i-SpaSP ranking candidates by |proxy| (textbook CoSaMP) instead of the official signed proxy.",
               "units"),
    MethodSpec("activation-magnitude", "Activation magnitude (hidden units)", "structured", ActivationMagnitude, {},
               "Each two-layer unit keeps the channels with the largest mean calibration activation.", "units"),
    MethodSpec("random-units", "Random (hidden units)", "structured", RandomUnits, {},
               "Uniformly random channels of each two-layer unit, at i-SpaSP's kept counts; the baseline.",
               "units"),
]}


def make_method(key: str, **overrides) -> Method:
    """A configured method instance from its registry key (``overrides`` replace the defaults)."""
    if key not in REGISTRY:
        raise KeyError(f"unknown method {key!r}; available: {', '.join(REGISTRY)}")
    spec = REGISTRY[key]
    method = spec.factory(**{**spec.defaults, **overrides})
    method.key, method.title = spec.key, spec.label
    return method


__all__ = ["REGISTRY", "Method", "MethodSpec", "RankedChannels", "RankedUnstructured", "make_method"]
