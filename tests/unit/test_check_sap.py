"""The SAP paper check in quick mode on digits-mlp: what our run reproduces of Diao et al. (ICLR 2023).

Verdicts asserted here are the ones the quick run produces on the demo MLP (deterministic on the CPU):

* (a) the shortcut (p=0.5, q=1, eta_r=0, gamma=1 prunes a PQI-sized fraction) holds in every round: yes;
* (b), (c) are not decided: after rewinding and retraining, the retrained model's PQI falls from 0.29 (dense)
  to about 0.15 after one round and 0.02-0.04 after twelve, so SAP(0.5,1) prunes only a few percent per round
  and stops near 40% of the weights remaining, far from the "few weights remain" regime (<= 10%) the claims are
  about; the 20% baselines reach 7%.
"""

from __future__ import annotations

import pytest

from pruning_core import Workbench, load_builtin
from pruning_core.checks import format_table
from pruning_core.checks.sap import FEW_REMAINING, accuracy_at_remaining, paper_check


@pytest.fixture(scope="module")
def quick_report(digits):
    wb = Workbench(load_builtin("digits-mlp"), digits, device="cpu", name="digits-mlp")
    calls = []
    report = paper_check(wb, quick=True, progress=lambda f, text: calls.append((f, text)))
    report.progress_calls = calls
    return report


def test_quick_check_verdicts(quick_report):
    print("\n" + format_table(quick_report.results))
    assert quick_report.complete and len(quick_report.results) == 3
    a, b, c = quick_report.results
    assert a.agrees is True and "removed = c_t in every round: yes" in a.figure
    assert b.agrees is None and c.agrees is None  # the claims' regime (few weights left) is not reached
    assert b.figure.startswith("not tested") and "neuron: at" in b.figure and "layer: at" in b.figure
    assert "global: at" in c.figure


def test_shortcut_identity_on_every_sap_round(quick_report):
    curves = quick_report.frames["curves"]
    sap = curves[(curves["run"] == "SAP(0.5,1)") & (curves["round"] > 0)]
    assert len(sap) == 3 * 12
    assert (sap["rule_gap"] <= 1 + 1e-9).all() and (sap["removed"] == sap["planned"]).all()
    glob = curves[(curves["run"] == "SAP(0.5,1)") & (curves["scope"] == "global")].sort_values("round")
    # global scope: the fraction pruned in round t is the PQI of round t-1's retrained model, to one weight
    kept_before = glob["kept"].to_numpy()[:-1]
    pqi_before = glob["pqi_global"].to_numpy()[:-1]
    fraction = glob["pruned_fraction"].to_numpy()[1:]
    assert abs(fraction - pqi_before).max() <= 1 / kept_before.min() + 1e-12
    # SAP(1,2) is not the shortcut: it prunes more than the PQI in its first round
    s12 = curves[(curves["run"] == "SAP(1,2)") & (curves["round"] == 1)].iloc[0]
    assert s12["pruned_fraction"] > 1.5 * curves[(curves["run"] == "SAP(1,2)") & (curves["round"] == 0)].iloc[0]["pqi"]


def test_frames_hold_the_curves_a_page_plots(quick_report):
    curves = quick_report.frames["curves"]
    assert {"run", "scope", "round", "remaining", "pqi", "accuracy", "pruned_accuracy"} <= set(curves)
    runs = curves.groupby(["scope", "run"]).size()
    assert runs.loc["global"].to_dict() == {"SAP(0.5,1)": 13, "SAP(1,2)": 13, "one-shot 20%": 13, "lottery 20%": 13}
    assert set(runs.loc["neuron"].index) == {"SAP(0.5,1)", "one-shot 20%", "lottery 20%"}
    for (scope, run), g in curves.groupby(["scope", "run"]):
        assert g["remaining"].is_monotonic_decreasing and g["remaining"].iloc[0] == 1.0
    baseline = curves[(curves["run"] == "lottery 20%") & (curves["scope"] == "layer")]
    assert baseline["remaining"].min() == pytest.approx(0.8 ** 12, rel=0.05)
    layers = quick_report.frames["layers"]
    assert set(layers["layer"]) == {"fc1.weight", "fc2.weight", "fc3.weight"}
    matched = quick_report.frames["matched"]
    for scope, g in matched.groupby("scope"):
        sap = g.set_index("run").loc["SAP(0.5,1)"]
        assert sap["remaining"] == pytest.approx(sap["min_remaining"]) and sap["remaining"] > FEW_REMAINING
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
        return len(polls) > 60  # a couple of rounds into the first run

    report = paper_check(wb, quick=True, should_stop=stop)
    assert not report.complete
    assert [r.agrees for r in report.results][1:] == [None, None]
    assert 1 <= len(report.frames["curves"]) < 13


def test_pqi_yardstick_and_the_panel_of_every_scope(quick_report):
    from pruning_core.charts import sparsity as charts_sparsity

    curves = quick_report.frames["curves"]
    sap = curves[curves["run"] == "SAP(0.5,1)"]
    assert (sap["pqi_ref"] == sap["pqi"]).all()  # its own (p, q) is the yardstick
    first = curves[curves["round"] == 0].set_index(["scope", "run"])
    # round 0 is the same dense model for every run: same yardstick PQI, but SAP(1,2) reads PQI(1, 2)
    assert first.loc[("global", "SAP(1,2)"), "pqi_ref"] == pytest.approx(first.loc[("global", "SAP(0.5,1)"), "pqi"])
    assert first.loc[("global", "SAP(1,2)"), "pqi"] != pytest.approx(first.loc[("global", "SAP(0.5,1)"), "pqi"])
    fig = charts_sparsity.sap_panel(curves)
    names = {t.name for t in fig.data}
    assert "SAP(1,2) (global)" in names and "lottery 20% (neuron)" in names and len(fig.data) == 3 * 10
    one = charts_sparsity.sap_panel(curves, scope="global")
    assert {t.name for t in one.data if t.showlegend is not False} == {"SAP(0.5,1)", "SAP(1,2)", "one-shot 20%",
                                                                       "lottery 20%"}
