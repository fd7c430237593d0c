"""Sparsity-informed Adaptive Pruning (SAP) as a registry method: the SAP rule applied round after round to the
trained weights, without retraining, read off as a removal order (a **variant**; Diao, Wang, Zhang, Yang, Ding,
Tarokh, "Pruning Deep Neural Networks from a Sparsity Perspective", ICLR 2023, arXiv 2302.05601; authors' code
``diaoenmao/Pruning-Deep-Neural-Networks-from-a-Sparsity-Perspective``).

The PQ Index and the rule are ``algorithms.pq_index`` and ``algorithms.sap_rule``; the paper's procedure, which
retrains after every round, is ``experiments.sap``; its claims are ``checks.sap``.
"""

from __future__ import annotations

import numpy as np
import torch

from ..algorithms.pq_index import SCOPES
from ..algorithms.sap_rule import SortedUnits, check_sap, unit_positions
from ..plan import Plan
from ..workbench import Workbench
from .base import MethodSpec, RankedUnstructured

PAPER = "Diao et al.: Pruning Deep Neural Networks from a Sparsity Perspective, ICLR 2023, arXiv 2302.05601"


class SAPSchedule(RankedUnstructured):
    """SAP allocation, no retraining (a **variant**, not the paper's procedure).

    ``prepare`` applies the SAP rule (``sap_step``; defaults scope ``layer``, p = 0.5, q = 1, eta_r = 0,
    gamma = 1, beta = 0.9) over and over to the trained weights, with no retraining in between, and records the
    order in which weights go: round by round, and within a round by |w| (ties by position). ``plan(ratio)``
    removes the first ``round(ratio * total)`` weights of that order, so plans are nested across ratios. The rule
    stops pruning once PQI is small enough that every unit's c_t is 0 (or after ``max_rounds``); the weights still
    left are then ordered by |w| over the whole model, so every ratio can be answered.

    The paper's SAP retrains (rewinding to the initialisation) after every round; ``experiments.sap.run_sap``
    does that."""

    scopes = SCOPES

    def __init__(self, scope: str = "layer", p: float = 0.5, q: float = 1.0, eta_r: float = 0.0,
                 gamma: float = 1.0, beta: float = 0.9, max_rounds: int = 100, seed: int = 0):
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
        check_sap(p, q, eta_r, gamma, beta)
        super().__init__("global", seed)  # the removal order is one model-wide ranking
        self.sap_scope, self.p, self.q = scope, float(p), float(q)
        self.eta_r, self.gamma, self.beta, self.max_rounds = float(eta_r), float(gamma), float(beta), int(max_rounds)

    def config(self) -> dict:
        return {"scope": self.sap_scope, "p": self.p, "q": self.q, "eta_r": self.eta_r, "gamma": self.gamma,
                "beta": self.beta, "max_rounds": self.max_rounds, "variant": "no retraining"}

    def scores(self, wb: Workbench) -> dict[str, torch.Tensor]:
        """Removal rank of every prunable weight (0 = removed first), as float64 scores.

        Without retraining the weights never change, so the survivors of every scope unit are always the unit's
        largest magnitudes: a suffix of its (stable) ascending order. Each unit is therefore sorted once, and
        every round reads its survivors' power sums from suffix sums in O(1) per unit; the rounds are exactly
        ``sap_step`` applied again and again (up to float round-off in the sums), at a fraction of the cost."""
        params = {k: v.detach() for k, v in wb.prunable.items()}
        shapes = {k: v.shape for k, v in params.items()}
        magnitude = torch.cat([v.to("cpu", torch.float64).abs().reshape(-1) for v in params.values()])
        magnitude = torch.nan_to_num(magnitude, nan=float("inf"))
        blocks = [SortedUnits(magnitude, positions, self.p, self.q)
                  for positions in unit_positions(shapes, self.sap_scope)]
        rank = torch.full((magnitude.numel(),), -1, dtype=torch.long)
        done, rounds = 0, []
        for _ in range(self.max_rounds):
            removed = [b.prune_round(self.p, self.q, self.eta_r, self.gamma, self.beta) for b in blocks]
            removed = torch.sort(torch.cat(removed)).values  # by position, so that ties below go by position
            if removed.numel() == 0:
                break
            order = removed[torch.sort(magnitude[removed], stable=True).indices]
            rank[order] = torch.arange(done, done + order.numel())
            done += order.numel()
            rounds.append(done)
        left = torch.sort(torch.cat([b.survivors() for b in blocks])).values
        order = left[torch.sort(magnitude[left], stable=True).indices]
        rank[order] = torch.arange(done, done + order.numel())
        self.round_ends = rounds  # cumulative removed count after each SAP round
        scores, start = {}, 0
        for k, s in shapes.items():
            n = int(np.prod(s))
            scores[k] = rank[start:start + n].reshape(s).to(torch.float64)
            start += n
        return scores

    def _plan(self, ratio: float) -> Plan:
        plan = super()._plan(ratio)
        removed = round(ratio * len(self._ascending))
        sap_round = next((i + 1 for i, end in enumerate(self.round_ends) if removed <= end), None)
        plan.details.update({"variant": self.label, "sap_rounds": len(self.round_ends),
                             "sap_round_of_ratio": sap_round,
                             "beyond_sap": sap_round is None and removed > 0})
        return plan


SPECS = [
    MethodSpec("sap-neuron", "SAP rule per neuron, no retraining (unstructured, variant)", "unstructured",
               SAPSchedule, {"scope": "neuron"}, "Diao et al. 2023's pruning rule applied round after round on the "
               "trained weights: each round every output row loses the fraction its PQ Index sets (p=0.5, q=1).",
               paper=PAPER,
               exempt={"kept-fraction": "the SAP rule decides how much each round removes; the ratio only stops "
                                         "the rounds, so the realised fraction lands at or past it"}),
    MethodSpec("sap-layer", "SAP rule per layer, no retraining (unstructured, variant)", "unstructured",
               SAPSchedule, {"scope": "layer"}, "The SAP rule per weight tensor, round after round, no retraining.",
               paper=PAPER,
               exempt={"kept-fraction": "the SAP rule decides how much each round removes"}),
    MethodSpec("sap-global", "SAP rule global, no retraining (unstructured, variant)", "unstructured",
               SAPSchedule, {"scope": "global"}, "The SAP rule over all weights at once, round after round, no "
               "retraining.", paper=PAPER,
               exempt={"kept-fraction": "the SAP rule decides how much each round removes"}),
]
