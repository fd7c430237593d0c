"""Loads each case of a hostile corpus in its own forked child, with memory, CPU and wall-clock limits.

    python tests/hostile/worker.py CASES.json RESULTS.json

The worker imports torch and pruning_core once and does no tensor work itself, so forking it is safe and cheap;
each child sets ``RLIMIT_AS`` (the worker's address space plus ``HOSTILE_MEMORY_MB``, default 3072) and
``RLIMIT_CPU``, loads its file the way the app does (``load_model_file`` / ``load_npz``) or, for a control, the
unsafe way, and reports one JSON line: the outcome, the exception type and message, and the peak resident memory
above what it started with (VmHWM - VmRSS at the fork). A child past ``HOSTILE_TIMEOUT_S`` (default 60) is
killed and reported as a timeout.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import resource
import signal
import sys
import time
from pathlib import Path

import torch
import torch._export.serde.serialize  # noqa: F401 - imported once here rather than in every child

from pruning_core.data import DataError, load_npz
from pruning_core.loading import ModelLoadError, load_model_file

OURS = (ModelLoadError, DataError)


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _run(case: dict) -> dict:
    os.environ.update(case.get("env") or {})
    data = Path(case["path"]).read_bytes()
    if case["kind"] == "model":
        load_model_file(data, case["filename"], case.get("architecture"), case.get("trust", False))
    elif case["kind"] == "data":
        load_npz(data, case["filename"])
    elif case["reader"] == "torch.load":
        torch.load(io.BytesIO(data), weights_only=False)
    elif case["reader"] == "torch.export.load":
        torch.export.load(io.BytesIO(data))
    elif case["reader"] == "pickle.loads":
        pickle.loads(data)
    return {"outcome": "loads"}


def _child(case: dict, out_fd: int) -> None:
    base_rss = _status_kb("VmRSS")
    extra = int(os.environ.get("HOSTILE_MEMORY_MB", "3072")) << 20
    resource.setrlimit(resource.RLIMIT_AS, (_status_kb("VmSize") * 1024 + extra,) * 2)
    cpu = int(os.environ.get("HOSTILE_TIMEOUT_S", "60"))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
    torch.set_num_threads(1)
    try:
        result = _run(case)
    except OURS as e:
        result = {"outcome": "error", "type": type(e).__name__, "message": str(e)[:4000]}
    except BaseException as e:  # noqa: BLE001 - everything else is what the test reports
        result = {"outcome": "other-exception", "type": type(e).__name__, "message": str(e)[:2000]}
    result["peak_mb"] = round((_status_kb("VmHWM") - base_rss) / 1024, 1)
    os.write(out_fd, (json.dumps(result) + "\n").encode())


def main(cases_path: str, results_path: str) -> None:
    cases = json.loads(Path(cases_path).read_text())
    timeout = float(os.environ.get("HOSTILE_TIMEOUT_S", "60"))
    results = {}
    for case in cases:
        read_fd, write_fd = os.pipe()
        start = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            try:
                _child(case, write_fd)
            finally:
                os._exit(0)
        os.close(write_fd)
        status = None
        while time.perf_counter() - start < timeout:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.02)
        else:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        with os.fdopen(read_fd, "rb") as f:
            line = f.read().decode().strip()
        try:
            result = json.loads(line) if line else None
        except ValueError:
            result = {"outcome": "crashed", "output": line[:500]}
        if result is None:
            result = {"outcome": "timeout"} if status is None else {"outcome": "crashed", "status": status}
        result["seconds"] = round(time.perf_counter() - start, 2)
        results[case["id"]] = result
    Path(results_path).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
