"""The SAP paper's iterative loop: prune, rewind (or fine-tune), retrain, measure; and its 20%-per-round
one-shot and lottery-ticket baselines (Diao et al., "Pruning Deep Neural Networks from a Sparsity Perspective",
ICLR 2023, arXiv 2302.05601; authors' ``src/train_classifier.py``).

``run_sap`` / ``SAPRun`` run one loop as a resumable iterator of per-round records; ``standard_runs`` builds the
four runs of the paper's figures. The rule itself is ``algorithms.sap_rule``; the claims about these runs are
``checks.sap``.

The weights rewinding goes back to: ``init`` when given; for the bundled demo models their exact initialisation
(``models.train_demo.demo_initialisation``); otherwise a seeded ``reinitialise``, or for a TorchScript copy of a
built-in architecture a seeded initialisation of that architecture.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Iterable, Iterator, Mapping

import pandas as pd
import torch
from torch import nn

from .. import metrics
from ..algorithms.pq_index import REFERENCE_PQ, SCOPES, TensorDict, pqi_all_scopes, scope_summary
from ..algorithms.sap_rule import check_sap, magnitude_step, sap_step
from ..models import ARCHITECTURES
from ..models.train_demo import demo_initialisation
from ..workbench import Workbench
from .training import DEMO_BATCH, DEMO_EPOCHS, DEMO_LR, DEMO_WEIGHT_DECAY, reinitialise, train_masked, trainable_copy

MODES = {"rewind": "paper", "finetune": "variant"}
BASELINES = (None, "one-shot", "lottery")  # None: SAP itself; the others: the code's os-0.2 and lt-0.2
# The four runs of the paper's SAP figures: (name, baseline, p, q)
PAPER_RUNS = (("SAP(0.5,1)", None, 0.5, 1.0), ("SAP(1,2)", None, 1.0, 2.0),
              ("one-shot 20%", "one-shot", 0.5, 1.0), ("lottery 20%", "lottery", 0.5, 1.0))


def training_split(wb: Workbench) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) to retrain on: the workbench's training split, or its calibration split when it has no training data."""
    split = wb.data.train if len(wb.data.train) > 0 else wb.data.calib
    return split.x, split.y


def initial_state(wb: Workbench, model: nn.Module, init, seed: int) -> tuple[dict[str, torch.Tensor], str]:
    """The weights rewinding goes back to: ``init`` if given; the demo initialisation for the bundled demo
    models; otherwise a seeded ``reinitialise`` (the model's real initialisation is unknown)."""
    reference = {k: v.shape for k, v in model.state_dict().items()}

    def fits(state: Mapping[str, torch.Tensor]) -> bool:
        return set(state) == set(reference) and all(state[k].shape == reference[k] for k in reference)

    if init is not None:
        state = init.state_dict() if isinstance(init, nn.Module) else dict(init)
        if not fits(state):
            raise ValueError("init does not fit the model: its tensor names or shapes differ")
        return {k: v.detach().clone() for k, v in state.items()}, "given"
    arch = ARCHITECTURES.get(wb.name)
    if arch is not None and arch.weights:
        state = demo_initialisation(wb.name, 0).state_dict()
        if fits(state):
            return state, f"demo initialisation of {wb.name} (seed 0)"
    try:
        fresh = reinitialise(trainable_copy(model), seed)
        return {k: v.detach().clone() for k, v in fresh.state_dict().items()}, f"reinitialised (seed {seed})"
    except ValueError:
        pass
    for name in ARCHITECTURES:  # e.g. a TorchScript export of a built-in architecture: same names and shapes
        with torch.device("meta"):
            candidate = ARCHITECTURES[name].build()
        if fits(candidate.state_dict()):
            state = demo_initialisation(name, seed).state_dict()
            return state, f"a seeded initialisation of the {name} architecture (seed {seed})"
    raise ValueError("rewinding needs the model's initial weights and this model cannot be reinitialised; "
                     "pass init= (a state_dict) or use mode='finetune'")


def method_name(baseline: str | None, p: float, q: float, fraction: float = 0.2) -> str:
    """Short run names as in the paper's figures: ``SAP(0.5,1)``, ``one-shot 20%``, ``lottery 20%``."""
    if baseline is None:
        return f"SAP({p:g},{q:g})"
    return f"{baseline} {fraction:.0%}"


class SAPRun:
    """One run of the paper's iterative loop (or a baseline), resumable: iterate it to get one record per round.

    Created by ``run_sap`` (see there for the arguments). Holds everything needed to continue: the working copy
    of the model, the initial, first-trained and latest-trained states, the current masks and the records. A
    round's results are committed only once it has finished, so an interruption (``should_stop``, an exception,
    a Streamlit rerun) loses at most the round in progress; iterating again resumes there. ``records`` holds
    every finished round; ``layer_rows`` the per-layer PQI of every round."""

    def __init__(self, wb: Workbench, mode: str = "rewind", scope: str = "layer", p: float = 0.5, q: float = 1.0,
                 eta_r: float = 0.0, gamma: float = 1.0, beta: float = 0.9, rounds: int = 10,
                 epochs: int | None = None, lr: float | None = None, baseline: str | None = None,
                 baseline_fraction: float = 0.2, seed: int = 0, init=None,
                 should_stop: Callable[[], bool] | None = None, batch_size: int = DEMO_BATCH,
                 weight_decay: float = DEMO_WEIGHT_DECAY, optimizer: str = "adam",
                 clip_grad_norm: float | None = None):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {tuple(MODES)}, got {mode!r}")
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
        if baseline not in BASELINES:
            raise ValueError(f"baseline must be None, 'one-shot' or 'lottery', got {baseline!r}")
        if baseline is None:
            check_sap(p, q, eta_r, gamma, beta)
        elif not 0 < baseline_fraction < 1:
            raise ValueError(f"baseline_fraction must be in (0, 1), got {baseline_fraction:g}")
        if rounds < 0:
            raise ValueError(f"rounds must be 0 or more, got {rounds}")
        epochs = (DEMO_EPOCHS if mode == "rewind" else 3) if epochs is None else int(epochs)
        lr = (DEMO_LR if mode == "rewind" else DEMO_LR / 3) if lr is None else float(lr)
        self.wb = wb
        self.should_stop = should_stop
        self.method = method_name(baseline, p, q, baseline_fraction)
        self.config = {"method": self.method, "mode": mode, "label": MODES[mode], "scope": scope, "p": float(p),
                       "q": float(q), "eta_r": float(eta_r), "gamma": float(gamma), "beta": float(beta),
                       "rounds": int(rounds), "epochs": epochs, "lr": lr, "baseline": baseline,
                       "baseline_fraction": float(baseline_fraction), "seed": int(seed), "batch_size": batch_size,
                       "weight_decay": weight_decay, "optimizer": optimizer,
                       "clip_grad_norm": clip_grad_norm}
        wb.restore()
        self.model = trainable_copy(wb.model)
        self.names = list(wb.prunable)
        if mode == "rewind":
            self.init_state, self.config["init"] = initial_state(wb, self.model, init, seed)
        else:
            self.init_state, self.config["init"] = None, "not used (fine-tuning from the pruned weights)"
        dense = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.first_state = dense  # round 0: the trained model the workbench holds (not retrained)
        self.latest_state = dense
        self.masks = {k: torch.ones(wb.prunable[k].shape, dtype=torch.bool) for k in self.names}
        self.total = sum(m.numel() for m in self.masks.values())
        self.records: list[dict] = []
        self.layer_rows: list[dict] = []
        self.x, self.y = training_split(wb)

    # -- iteration ----------------------------------------------------------------------------------------------
    @property
    def rounds(self) -> int:
        return self.config["rounds"]

    @property
    def finished(self) -> bool:
        return len(self.records) > self.rounds

    def extend(self, more_rounds: int) -> "SAPRun":
        """Allow ``more_rounds`` further rounds (iterate again to run them)."""
        self.config["rounds"] += int(more_rounds)
        return self

    def __iter__(self) -> Iterator[dict]:
        return self

    def __next__(self) -> dict:
        if self.finished or self._stop_requested():
            raise StopIteration
        record = self.step()
        if record is None:
            raise StopIteration
        return record

    def _stop_requested(self) -> bool:
        return self.should_stop is not None and bool(self.should_stop())

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.records)

    # -- one round ----------------------------------------------------------------------------------------------
    def _params(self) -> dict[str, torch.Tensor]:
        named = dict(self.model.named_parameters())
        return {k: named[k] for k in self.names}

    def _evaluate(self) -> float:
        ev, _ = metrics.evaluate(self.model, self.wb.eval_x, self.wb.eval_y, None, self.wb.batch_size)
        return ev.accuracy

    def _measure_pqi(self, masks: TensorDict, t: int) -> tuple[dict, list[dict]]:
        """PQI of the model's current weights under ``masks``: the record's PQI columns and per-layer rows."""
        cfg = self.config
        params = self._params()
        scopes = pqi_all_scopes(params, masks, cfg["p"], cfg["q"])
        reference = scopes if (cfg["p"], cfg["q"]) == REFERENCE_PQ else pqi_all_scopes(params, masks, *REFERENCE_PQ)
        rows = [{"run": self.method, "scope": cfg["scope"], "round": t, "layer": name,
                 "pqi": float(scopes["layer"][name]), "pqi_ref": float(reference["layer"][name]),
                 "kept_fraction": float(masks[name].float().mean())} for name in self.names]
        return {"pqi": scope_summary(scopes, cfg["scope"]), "pqi_ref": scope_summary(reference, cfg["scope"]),
                "pqi_global": scope_summary(scopes, "global"), "pqi_layer": scope_summary(scopes, "layer"),
                "pqi_neuron": scope_summary(scopes, "neuron")}, rows

    def _commit(self, record: dict, layer_rows: list[dict]) -> dict:
        self.records.append(record)
        self.layer_rows.extend(layer_rows)
        return record

    def _record(self, t: int, masks: TensorDict, accuracy: float, pruned_accuracy: float, removed: int,
                planned: int, before: int, rule_gap: float, seconds: float) -> dict:
        cfg = self.config
        kept = sum(int(m.sum()) for m in masks.values())
        return {"run": self.method, "scope": cfg["scope"], "mode": cfg["mode"], "label": cfg["label"], "round": t,
                "remaining": kept / self.total, "kept": kept, "accuracy": accuracy,
                "pruned_accuracy": pruned_accuracy, "pruned_fraction": removed / before if before else 0.0,
                "removed": removed, "planned": planned, "rule_gap": rule_gap, "seconds": seconds}

    def step(self) -> dict | None:
        """Run the next round and return its record (None when stopped mid-round: nothing is committed)."""
        if self.finished:
            return None
        t = len(self.records)
        start = time.perf_counter()
        cfg = self.config
        if t == 0:
            self.model.load_state_dict(self.latest_state)
            pqi, layer_rows = self._measure_pqi(self.masks, 0)
            accuracy = self._evaluate()
            return self._commit({**self._record(0, self.masks, accuracy, accuracy, 0, 0, self.total, float("nan"),
                                                time.perf_counter() - start), **pqi}, layer_rows)

        # 1. rank: one-shot ranks the first trained state, SAP and lottery the latest retrained one
        ranking = self.first_state if cfg["baseline"] == "one-shot" else self.latest_state
        self.model.load_state_dict(ranking)
        params = self._params()
        before = sum(int(m.sum()) for m in self.masks.values())
        if cfg["baseline"] is None:
            masks, info = sap_step(params, self.masks, cfg["scope"], cfg["p"], cfg["q"], cfg["eta_r"],
                                   cfg["gamma"], cfg["beta"], return_details=True)
            planned = int(sum(int(c.sum()) for c in info["c"].values()))
            rule_gap = max(float((c.double() - info["d"][u] * info["pqi"][u].clamp(max=cfg["beta"])).abs().max())
                           if c.numel() else 0.0 for u, c in info["c"].items())
        else:
            masks, info = magnitude_step(params, self.masks, cfg["scope"], cfg["baseline_fraction"],
                                         return_details=True)
            planned = int(sum(int(c.sum()) for c in info["c"].values()))
            rule_gap = float("nan")
        removed = before - sum(int(m.sum()) for m in masks.values())

        # 2. the pruned model: the ranked weights under the new mask, before any retraining
        self._apply_masks(masks)
        pruned_accuracy = self._evaluate()

        # 3. retrain: rewind to the initialisation (paper) or fine-tune from the pruned weights (variant)
        if cfg["mode"] == "rewind":
            self.model.load_state_dict(self.init_state)
            self._apply_masks(masks)
        stopped = False

        def poll() -> bool:
            nonlocal stopped
            stopped = stopped or self._stop_requested()
            return stopped

        train_masked(self.model, masks, self.x, self.y, cfg["epochs"], cfg["lr"], cfg["batch_size"],
                     cfg["seed"] + t, cfg["weight_decay"], cfg["optimizer"], self.wb.device, poll,
                     cfg["clip_grad_norm"])
        if stopped:
            return None
        accuracy = self._evaluate()
        # PQI is measured on the retrained model, as the paper's code does (SparsityIndex on the best checkpoint)
        pqi, layer_rows = self._measure_pqi(masks, t)
        record = {**self._record(t, masks, accuracy, pruned_accuracy, removed, planned, before, rule_gap,
                                 time.perf_counter() - start), **pqi}
        self.latest_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.masks = masks
        return self._commit(record, layer_rows)

    def _apply_masks(self, masks: TensorDict) -> None:
        params = self._params()
        with torch.no_grad():
            for k, m in masks.items():
                params[k].mul_(m.to(params[k].device, params[k].dtype))


def run_sap(wb: Workbench, mode: str = "rewind", scope: str = "layer", p: float = 0.5, q: float = 1.0,
            eta_r: float = 0.0, gamma: float = 1.0, beta: float = 0.9, rounds: int = 10,
            epochs: int | None = None, lr: float | None = None, baseline: str | None = None,
            baseline_fraction: float = 0.2, seed: int = 0, init=None,
            should_stop: Callable[[], bool] | None = None, **training) -> SAPRun:
    """The paper's iterative SAP loop (``train_classifier.py``), or one of its baselines, as a resumable iterator
    of per-round records. Defaults: mode ``rewind``, scope ``layer``, p = 0.5, q = 1, eta_r = 0, gamma = 1,
    beta = 0.9, 10 rounds.

    Round 0 is the dense trained model the workbench holds (not retrained). Round t >= 1:

    1. rank the weights: SAP and ``"lottery"`` (the code's ``lt-0.2``) use the latest retrained model,
       ``"one-shot"`` (``os-0.2``) always the first trained one;
    2. prune within ``scope``: SAP removes c_t per unit (``sap_step``); the baselines ``baseline_fraction``
       (20%) of every unit's surviving weights (``magnitude_step``);
    3. retrain ``epochs`` epochs with the mask held (``train_masked``): ``mode="rewind"`` (**paper**) first rewinds
       the surviving weights to the initialisation (lottery-ticket style; ``init`` if given, the demo
       initialisation for the bundled demo models, else a seeded ``reinitialise``); ``mode="finetune"``
       (**variant**) continues from the pruned weights. Default recipe: the demo models' (Adam, lr 3e-3, weight
       decay 1e-4, cosine, batch 64), 40 epochs when rewinding and 3 at lr 1e-3 when fine-tuning; pass
       ``optimizer="sgd"``, ``lr=0.1``, ``weight_decay=5e-4``, ``clip_grad_norm=1.0`` for the paper's CIFAR
       recipe (``checks.sap.RECIPE`` is the one the paper check uses, with ``weight_decay_for``).
    4. measure: test accuracy of the retrained model and of the model right after pruning (step 2's weights under
       the new mask), and PQI on the retrained model (the paper's code computes PQI on the retrained
       checkpoint, which is what the next round's rule uses).

    The paper's code keeps the checkpoint with the best *test* accuracy of each round; selecting on the test split
    inflates accuracy, so we keep the last epoch (with a cosine schedule it is the usual choice).

    Each record: ``run``, ``scope``, ``mode``, ``label`` (paper / variant), ``round``, ``remaining`` (fraction of
    the prunable weights), ``kept``, ``accuracy``, ``pruned_accuracy``, ``pruned_fraction`` (of the weights that
    survived the previous round), ``removed``, ``planned`` (the rule's count), ``rule_gap`` (SAP: the largest
    |c_t - d_t min(I_t, beta)| over units, below 1 exactly when SAP prunes a PQI-sized fraction), ``seconds``,
    and ``pqi`` (with the run's p and q, in the run's scope: the global value, or the mean over the units that
    keep weights), ``pqi_ref`` (the same with p = 0.5, q = 1, comparable across runs), ``pqi_global``,
    ``pqi_layer``, ``pqi_neuron`` (the run's p and q).

    Works on a copy: ``wb.model`` is never changed (a plan applied to it is restored first). Training data:
    ``wb.data.train`` if it has samples, else ``wb.data.calib``. ``should_stop()`` is polled between rounds and
    batches; iterating the returned ``SAPRun`` again resumes."""
    return SAPRun(wb, mode, scope, p, q, eta_r, gamma, beta, rounds, epochs, lr, baseline, baseline_fraction, seed,
                  init, should_stop, **training)


def weight_decay_for(accumulated: float, lr: float, epochs: int, samples: int, batch_size: int) -> float:
    """The weight decay whose decay accumulated over one retraining, sum over the steps of lr_t x wd, equals
    ``accumulated`` under ``train_masked``'s schedule (cosine over ``epochs``, stepped per epoch, ceil(samples /
    batch_size) steps per epoch). The SAP paper's CIFAR runs accumulate about 1 per round (200 epochs x 200
    steps at lr 0.1, cosine, wd 5e-4); their PQI, and so SAP's step, depends on it (methods.md section 11)."""
    if not (accumulated >= 0 and lr > 0 and epochs >= 1 and samples >= 1 and batch_size >= 1):
        raise ValueError("need accumulated >= 0, lr > 0, epochs >= 1, samples >= 1 and batch_size >= 1")
    steps = -(-samples // batch_size)
    lr_sum = steps * sum(lr * 0.5 * (1 + math.cos(math.pi * e / epochs)) for e in range(epochs))
    return accumulated / lr_sum


def standard_runs(wb: Workbench, mode: str = "rewind", scope: str = "layer", rounds: int = 10,
                  epochs: int | None = None, eta_r: float = 0.0, gamma: float = 1.0, beta: float = 0.9,
                  seed: int = 0, should_stop: Callable[[], bool] | None = None) -> list[SAPRun]:
    """The four runs of the paper's SAP figures in one scope, not started: SAP(0.5,1), SAP(1,2) (both with
    ``eta_r``, ``gamma``, ``beta``; defaults 0, 1, 0.9) and the 20%-per-round one-shot and lottery baselines.
    Iterate each to run it (``run_sap`` for the meaning of every argument)."""
    return [run_sap(wb, mode, scope, p, q, eta_r, gamma, beta, rounds, epochs, baseline=baseline, seed=seed,
                    should_stop=should_stop) for _, baseline, p, q in PAPER_RUNS]


def runs_frame(runs: Iterable[SAPRun]) -> pd.DataFrame:
    """The records of several runs in long format (one row per run and round)."""
    frames = [r.frame() for r in runs if r.records]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


__all__ = ["BASELINES", "MODES", "PAPER_RUNS", "SAPRun", "initial_state", "method_name", "run_sap", "runs_frame",
           "standard_runs", "training_split",
           "weight_decay_for"]
