"""Every broken or hostile model and data file in the corpus (tests/hostile/corpus.py) gets the project's own
error with a message that says what is wrong, runs no code (no marker file appears, while the same payloads
opened the unsafe way do create theirs), and stays within bounded memory and time. Each file is loaded in its
own forked process with an address-space limit (tests/hostile/worker.py)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from corpus import build_corpus, write_cases

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    markers, controls = folder / "markers", folder / "controls"
    markers.mkdir()
    controls.mkdir()
    cases = build_corpus(folder / "files", markers, controls)
    write_cases(cases, folder / "cases.json")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, str(HERE / "worker.py"), str(folder / "cases.json"),
                    str(folder / "results.json")], check=True, env=env, timeout=1200)
    results = json.loads((folder / "results.json").read_text())
    (ROOT / "tests" / "hostile" / "last_results.json").write_text(json.dumps(results, indent=1))
    return {c.id: c for c in cases}, results, markers, controls


def test_the_corpus_is_large_and_every_case_ran(corpus):
    cases, results, _, _ = corpus
    assert len(cases) >= 90
    assert set(results) == set(cases)


def test_no_payload_ran_but_every_control_did(corpus):
    cases, results, markers, controls = corpus
    assert sorted(p.name for p in markers.iterdir()) == []
    live = sorted(p.name for p in controls.iterdir())
    expected = sorted(cid for cid, c in cases.items() if c.kind == "control")
    assert live == expected, "a control payload did not run: the corpus' payloads are not live"


def test_every_hostile_file_gets_our_error_with_a_clear_message(corpus):
    cases, results, _, _ = corpus
    problems = []
    for cid, case in cases.items():
        if case.kind == "control":
            continue
        r = results[cid]
        if case.expect == "loads":
            if r["outcome"] != "loads":
                problems.append(f"{cid}: should load, got {r.get('type')}: {r.get('message', '')[:200]}")
        elif r["outcome"] != "error":
            problems.append(f"{cid}: {r['outcome']} {r.get('type', '')}: {r.get('message', '')[:300]}")
        elif not re.search(case.match, r["message"]):
            problems.append(f"{cid}: message does not say /{case.match}/: {r['message'][:300]}")
        elif "Traceback" in r["message"]:
            problems.append(f"{cid}: a traceback in the message")
    assert not problems, "\n".join(problems)


def test_memory_and_time_stay_bounded(corpus):
    cases, results, _, _ = corpus
    over = [f"{cid}: peak {results[cid].get('peak_mb')} MB > {c.max_peak_mb} MB, {results[cid]['seconds']} s"
            for cid, c in cases.items() if c.kind != "control"
            and (results[cid].get("peak_mb", 1e9) > c.max_peak_mb or results[cid]["seconds"] > 30)]
    assert not over, "\n".join(over)
