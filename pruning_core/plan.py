"""A pruning plan: what a method decided for one ratio, as plain tensors.

Ratio means the fraction **removed**, always (``ratio=0.3`` keeps 70%). A plan never holds a model; the
workbench applies it to its working copy in place, and ``groups.slice_model`` turns a structured plan into
a physically smaller model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

GRANULARITIES = ("unstructured", "structured")


class PlanError(ValueError):
    """A plan that cannot be made or applied, with a message meant for the person who asked for it."""


def check_ratio(ratio: float) -> float:
    """Validate a pruning ratio (fraction removed). 0 is allowed (the dense model); 1 is not."""
    try:
        r = float(ratio)
    except (TypeError, ValueError) as e:
        raise PlanError(f"The pruning ratio must be a number between 0 and 1, got {ratio!r}.") from e
    if r != r:
        raise PlanError("The pruning ratio is NaN; choose a number between 0 and 1.")
    if r >= 1.0:
        raise PlanError(f"A pruning ratio of {r:g} would remove every weight. Ratio is the fraction removed; "
                        "choose a value below 1 (for example 0.9 keeps 10%).")
    if r < 0.0:
        raise PlanError(f"A pruning ratio of {r:g} is negative. Ratio is the fraction removed, from 0 to below 1.")
    return r


@dataclass
class Plan:
    """Masks and corrections for one method at one ratio.

    * ``masks``: parameter name -> bool tensor of the parameter's shape, True = kept (unstructured plans).
    * ``pruned_channels``: channel-group name -> 1-D long tensor of removed channel indices (structured plans;
      the group tells which tensors and dimensions each channel spans).
    * ``corrections``: parameter name -> replacement values written after masking (methods that re-fit the
      surviving weights; empty for the baselines).
    """

    method: str
    ratio: float
    granularity: str
    masks: dict[str, torch.Tensor] = field(default_factory=dict)
    pruned_channels: dict[str, torch.Tensor] = field(default_factory=dict)
    corrections: dict[str, torch.Tensor] = field(default_factory=dict)
    details: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.granularity not in GRANULARITIES:
            raise PlanError(f"unknown granularity {self.granularity!r}; expected one of {GRANULARITIES}")

    @property
    def is_structured(self) -> bool:
        return self.granularity == "structured"

    def to_json(self, group_sizes: dict[str, int] | None = None) -> dict:
        """A JSON-ready description. Structured plans list kept and removed channel indices per group;
        unstructured plans list per-tensor kept counts (the masks themselves travel in the weight files)."""
        out: dict = {"method": self.method, "ratio_removed": self.ratio, "granularity": self.granularity,
                     "details": self.details}
        if self.is_structured:
            groups = {}
            for name, pruned in self.pruned_channels.items():
                removed = sorted(int(i) for i in pruned)
                entry: dict = {"removed": removed}
                if group_sizes and name in group_sizes:
                    gone = set(removed)
                    entry["kept"] = [i for i in range(group_sizes[name]) if i not in gone]
                    entry["channels"] = group_sizes[name]
                groups[name] = entry
            out["channel_groups"] = groups
        else:
            out["tensors"] = {name: {"kept": int(m.sum()), "total": m.numel()} for name, m in self.masks.items()}
        if self.corrections:
            out["corrected_tensors"] = sorted(self.corrections)
        return out

    @classmethod
    def from_json(cls, data: dict) -> "Plan":
        """The plan ``to_json`` described, as far as the JSON carries it: method, ratio, granularity, details and a
        structured plan's removed channels (masks and corrections travel in the weight files, not the JSON)."""
        pruned = {name: torch.tensor(entry["removed"], dtype=torch.long)
                  for name, entry in data.get("channel_groups", {}).items()}
        return cls(data["method"], float(data["ratio_removed"]), data["granularity"], pruned_channels=pruned,
                   details=dict(data.get("details", {})))
