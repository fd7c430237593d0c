"""The SAP paper check (Diao et al., ICLR 2023): its verdict rules on constructed comparisons (each claim can say
no), the PQI-rule self-test, the authors' retraining recipe and the budget, and one quick run on the demo MLP.

The quick run (12 rounds, the authors' recipe: SGD, Nesterov, clipping at 1, accumulated weight decay 1 per
round) reaches the "few weights remain" regime (<= 10%) in the layer and global scopes on the demo MLP, so claim
(c) is decided there; in the neuron scope SAP's per-neuron PQI falls to about 0.05 and it stops near 25%
remaining, so claim (b) needs the neuron comparison point below 10% to be decided.
"""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from pruning_core import Workbench, load_builtin
from pruning_core.checks import format_table, run_check
from pruning_core.checks.sap import (
    ACCUMULATED_DECAY,
    FEW_REMAINING,
    LEARNING_RATES,
    RECIPE,
    accuracy_at_remaining,
    judge,
    paper_check,
    rule_result,
    rule_self_test,
)
from pruning_core.experiments.sap import weight_decay_for

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # small problems: one torch thread


@pytest.fixture(scope="module")
def quick_report(digits):
    wb = Workbench(load_builtin("digits-mlp"), digits, device="cpu", name="digits-mlp")
    calls = []
    report = paper_check(wb, quick=True, progress=lambda f, text: calls.append((f, text)))
    report.progress_calls = calls
    return report


def _matched(sap: dict[str, float], rho: float = 0.05, one_shot: float = 0.90, lottery: float = 0.91) -> pd.DataFrame:
    """A matched comparison frame: SAP's accuracy per scope against fixed baselines at ``rho`` remaining."""
    rows = []
    for scope, acc in sap.items():
        for run, a in (("SAP(0.5,1)", acc), ("one-shot 20%", one_shot), ("lottery 20%", lottery)):
            rows.append({"scope": scope, "run": run, "remaining": rho, "accuracy": a, "min_remaining": rho,
                         "final_pqi": 0.1})
    return pd.DataFrame(rows)


def test_the_comparison_claims_can_say_yes_and_no():
    b, c = judge(_matched({"neuron": 0.95, "layer": 0.95, "global": 0.80}))
    assert (b.agrees, c.agrees) == (True, True) and b.kind == c.kind == "claim"
    b, c = judge(_matched({"neuron": 0.95, "layer": 0.85, "global": 0.95}))  # layer-wise SAP loses; global wins
    assert (b.agrees, c.agrees) == (False, False)
    b, c = judge(_matched({"neuron": 0.95, "layer": 0.95, "global": 0.80}, rho=0.3))  # not "few weights"
    assert (b.agrees, c.agrees) == (None, None) and b.figure.startswith("undecided")
    two = pd.concat([_matched({"neuron": 0.95, "layer": 0.95, "global": 0.95}, rho=0.05),
                     _matched({"neuron": 0.10, "layer": 0.10, "global": 0.40}, rho=0.02)])
    b, c = judge(two)  # averaged over the points: SAP 52.5% against 90% and 91% in every scope
    assert (b.agrees, c.agrees) == (False, True) and "at 5%, 2% remaining" in c.figure
    b, _ = judge(_matched({"neuron": 0.95, "layer": 0.85, "global": 0.80}).assign(
        remaining=lambda f: f.remaining.where(f.scope != "neuron", 0.3)))
    assert b.agrees is False  # one scope decided against the claim is enough to say no
    assert [r.agrees for r in judge(pd.DataFrame(), ran=False)] == [None, None]
    b, c = judge(_matched({"neuron": 0.915, "layer": 0.95, "global": 0.905}))  # within one point: level
    assert (b.agrees, c.agrees) == (None, None)


def test_the_rule_self_test_catches_a_wrong_count(demo_workbenches):
    rule = rule_self_test(demo_workbenches["digits-cnn"])
    assert len(rule) == 3 * 5 and (rule.removed == rule.planned).all() and (rule.rule_gap <= 1 + 1e-9).all()
    good = rule_result(rule, [])
    assert good.kind == "self-test" and good.agrees is True
    assert rule_result(rule.assign(rule_gap=rule.rule_gap + 3), []).agrees is False
    assert rule_result(rule.assign(removed=rule.removed - 1), []).agrees is False


def test_small_models_train_on_one_thread_and_the_count_is_restored(demo_workbenches):
    from pruning_core.checks.sap import threads_for

    torch.set_num_threads(2)
    try:
        with threads_for(demo_workbenches["digits-mlp"]):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with threads_for(demo_workbenches["digits-cnn"]):  # a conv model keeps both threads
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)


def test_weight_decay_accumulates_one_per_round_under_the_training_schedule():
    """Independent of ``weight_decay_for``: step torch's cosine schedule per epoch and sum lr x wd over the
    steps of one round."""
    samples = 1258
    lr = LEARNING_RATES[0]
    wd = weight_decay_for(ACCUMULATED_DECAY, lr, RECIPE["epochs"], samples, RECIPE["batch_size"])
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, RECIPE["epochs"])
    steps = -(-samples // RECIPE["batch_size"])
    total = 0.0
    for _ in range(RECIPE["epochs"]):
        total += steps * opt.param_groups[0]["lr"] * wd
        opt.step()
        sched.step()
    assert total == pytest.approx(1.0, rel=1e-9)
    with pytest.raises(ValueError):
        weight_decay_for(1.0, 0.0, 10, 100, 10)


def test_over_budget_the_comparison_is_not_run_and_says_so(demo_workbenches):
    report = run_check("sap", demo_workbenches["digits-cnn"], quick=True)
    assert report.complete and [r.kind for r in report.results] == ["self-test", "claim", "claim"]
    assert report.results[0].agrees is True
    assert [r.agrees for r in report.results[1:]] == [None, None]
    assert "long option" in report.results[1].figure and any("not run" in n for n in report.notes)
    assert report.frames["curves"].empty and report.seconds < 20


def test_quick_check_on_the_mlp(quick_report):
    print("\n" + format_table(quick_report.results))
    assert quick_report.complete and [r.kind for r in quick_report.results] == ["self-test", "claim", "claim"]
    rule, b, c = quick_report.results
    assert rule.agrees is True and "removed = c_t in every round: yes" in rule.figure
    matched = quick_report.frames["matched"]
    glob = matched[matched.scope == "global"]
    assert glob.remaining.max() <= FEW_REMAINING and set(glob.remaining) <= {0.10, 0.05, 0.02}  # reached
    assert isinstance(c.agrees, bool) and "global: mean accuracy at 10%" in c.figure
    assert "neuron: mean accuracy at" in b.figure and "layer: mean accuracy at" in b.figure
    assert any("weight decay" in n and "accumulated" in n and "at lr 0.8" in n for n in quick_report.notes)


def test_curves_and_frames(quick_report):
    curves = quick_report.frames["curves"]
    assert {"run", "scope", "round", "remaining", "pqi", "accuracy", "pruned_accuracy"} <= set(curves)
    runs = curves.groupby(["scope", "run"]).size()
    assert runs.loc["global"].to_dict() == {"SAP(0.5,1)": 13, "one-shot 20%": 13, "lottery 20%": 13}
    for _, g in curves.groupby(["scope", "run"]):
        assert g["remaining"].is_monotonic_decreasing and g["remaining"].iloc[0] == 1.0
    baseline = curves[(curves["run"] == "lottery 20%") & (curves["scope"] == "layer")]
    assert baseline["remaining"].min() == pytest.approx(0.8 ** 12, rel=0.05)
    sap = curves[(curves["run"] == "SAP(0.5,1)") & (curves["round"] > 0)]
    assert (sap["rule_gap"] <= 1 + 1e-9).all() and (sap["removed"] == sap["planned"]).all()
    matched = quick_report.frames["matched"]
    for scope, g in matched.groupby("scope"):
        for run, row in g.set_index("run").iterrows():
            curve = curves[(curves["scope"] == scope) & (curves["run"] == run)]
            assert row["accuracy"] == pytest.approx(accuracy_at_remaining(curve, row["remaining"]), nan_ok=True)
    fractions = [f for f, _ in quick_report.progress_calls]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)


def test_a_stopped_check_is_incomplete_and_undecided(digits):
    wb = Workbench(load_builtin("digits-mlp"), digits, device="cpu", name="digits-mlp")
    polls = []

    def stop() -> bool:
        polls.append(1)
        return len(polls) > 30  # a few rounds into the first run

    report = paper_check(wb, quick=True, should_stop=stop)
    assert not report.complete
    assert report.results[0].agrees is True  # the self-test's prune-only rounds need no training
    assert [r.agrees for r in report.results][1:] == [None, None]
    assert 1 <= len(report.frames["curves"]) < 13
