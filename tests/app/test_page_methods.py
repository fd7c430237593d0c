"""Methods page: each seed method's plot, the paper's claim and our verdict, on the current model."""

from __future__ import annotations

import torch


def _tables(at) -> list[str]:
    return [m.value for m in at.markdown if m.value.startswith("| agrees | claim (paper) | our run |")]


def test_fast_checks_run_on_first_view_with_their_plots(app, figures):
    at = app.switch_page("pages/methods.py").run()
    assert not at.exception and not at.error
    figs = figures(at)
    assert {"id_accuracy", "id_rank_decay", "ispasp_synthetic", "ispasp_residual", "ispasp_accuracy",
            "ispasp_accuracy_untuned"} <= set(figs)
    # ID's accuracy plot: one line each for ID, the same channels without T, and magnitude
    assert len(figs["id_accuracy"]["data"]) >= 3
    assert figs["id_rank_decay"]["layout"]["yaxis"]["type"] == "log"
    tables = _tables(at)
    assert len(tables) == 2  # ID and i-SpaSP; SAP waits for its button (it retrains)
    for table in tables:
        rows = table.splitlines()[2:]
        verdicts = {r.split("|")[1].strip() for r in rows}
        assert len(rows) == 2 and verdicts <= {":green[**yes**]", ":red[**no**]", ":gray[undecided]"}
    assert "Sparser hidden representations" in tables[1] and "(synthetic, no model)" in tables[1]
    # self-tests and descriptions have tables of their own, never among the claims; the counts keep them apart
    identities = [m.value for m in at.markdown if m.value.startswith("| holds | identity (our code) |")]
    described = [m.value for m in at.markdown if m.value.startswith("| what | our run |")]
    assert len(identities) == 2 and len(described) == 2
    assert "exact when k equals the rank" in identities[0] and "activation magnitude" in identities[1]
    assert "fine-tuning" in described[1] and "IDiter" in described[0]
    counts = [c.value for c in at.caption if c.value.startswith("claims: ")]
    assert len(counts) == 2 and all("self-tests: all 1 pass" in c for c in counts)
    # the results stay on a rerun without recomputation
    reports = {k: v["report"] for k, v in at.session_state["checks"].items()}
    at.run()
    assert {k: v["report"] for k, v in at.session_state["checks"].items()} == reports


def test_a_model_without_units_gets_a_message_not_a_crash(app, digits, state):
    import explorer_ui
    from pruning_core import Workbench, load_builtin

    scripted = torch.jit.script(load_builtin("digits-cnn"))
    explorer_ui.install_workbench(Workbench(scripted, digits, device="cpu", name="scripted"), "test:scripted",
                                  state(app).model, state(app).data, session=app.session_state)
    at = app.switch_page("pages/methods.py").run()
    assert not at.exception
    messages = " ".join(e.value for e in at.error)
    assert "could not run on this model" in messages and "TorchScript" in messages
    assert at.session_state["checks"][("test:scripted", "id")]["error"] is not None
    # i-SpaSP's synthetic experiment needs no model: it still reports, the model part says why it is missing
    assert at.session_state["checks"][("test:scripted", "ispasp")]["report"].results
    shown = [e.value for e in at.error]
    at.run()  # the failure is remembered, not retried: the page renders the same message
    assert not at.exception and [e.value for e in at.error] == shown
