"""Process-wide settings, made once at start-up by the app and the command line.

* ``configure_threads``: how many threads torch and the BLAS libraries use. The app serves every browser
  session from one process, so without a bound each session's forward passes would each ask for all cores;
  a benchmark or a shared machine wants a fixed count.
* ``tune_malloc``: glibc's allocator keeps the memory of freed activations for the next batch instead of
  handing every large tensor back to the OS and page-faulting it in again: a 224x224 EfficientNet-Lite0 pass over
  256 photo crops took 16.5 s with glibc's defaults and 3.9 s tuned (2 threads, this project's 2-core VM), for 16%
  more peak memory.
* ``freeze_long_lived_objects``: keeps what the imports built out of the garbage collector's full passes.
  Streamlit runs a full collection after every script run (``runner.postScriptGC``), and with torch, pandas,
  plotly, scipy and what a sweep imports loaded that pass walked about 450,000 objects: 0.1-0.3 s added to
  every move of a slider.
"""

from __future__ import annotations

import gc
import os
import sys
import threading

import torch

THREADS_ENV = "PRUNING_EXPLORER_THREADS"
SYSTEM_MALLOC_ENV = "PRUNING_EXPLORER_SYSTEM_MALLOC"  # "1": leave glibc's malloc settings alone
TRIM_THRESHOLD = 2**30  # free memory at the heap's top beyond this goes back to the OS
# read by OpenMP, OpenBLAS and MKL when their thread pools start: libraries loaded later and child processes
BLAS_THREAD_ENVS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

_lock = threading.Lock()
_threads: int | None = None
_frozen_modules = 0  # len(sys.modules) at the last freeze
_malloc_tuned = False


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS reports one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS and Windows have no affinity call
        return max(1, os.cpu_count() or 1)


def configure_threads(n: int | None = None) -> int:
    """Set the thread counts once per process and return the count used.

    ``n``: the count; else the environment variable ``PRUNING_EXPLORER_THREADS``; else ``available_cores()``.
    Sets torch's intra-op threads (``torch.set_num_threads``) and its inter-op threads (once torch has run
    parallel work the inter-op pool is fixed, and then it is left as it is), and ``OMP_NUM_THREADS``,
    ``OPENBLAS_NUM_THREADS`` and ``MKL_NUM_THREADS`` where they are not already set (an explicit environment
    wins). Idempotent: calling it again with no count, or the same one, changes nothing; another explicit
    count re-sets torch's intra-op threads. Raises ValueError for a count below 1 or a malformed variable.
    """
    global _threads
    with _lock:
        if n is None and _threads is not None:
            return _threads
        if n is None:
            raw = os.environ.get(THREADS_ENV, "").strip()
            try:
                n = int(raw) if raw else available_cores()
            except ValueError:
                raise ValueError(f"{THREADS_ENV} must be a whole number of threads, not {raw!r}") from None
        if n < 1:
            raise ValueError(f"the thread count must be at least 1, not {n}")
        if n == _threads:
            return n
        for name in BLAS_THREAD_ENVS:
            os.environ.setdefault(name, str(n))
        torch.set_num_threads(n)
        if _threads is None:
            try:
                torch.set_num_interop_threads(n)
            except RuntimeError:  # inter-op work has already started: its pool keeps its size
                pass
        _threads = n
        return n


def tune_malloc() -> bool:
    """Serve every allocation from glibc's heap (``M_MMAP_MAX`` = 0: no private mmap per large tensor) and keep up to
    ``TRIM_THRESHOLD`` of freed memory at its top (``M_TRIM_THRESHOLD``), so that the activations of one batch are
    the memory of the next rather than pages unmapped and faulted in again. Returns whether the settings were made:
    False where there is no glibc (macOS, Windows, musl) or with ``PRUNING_EXPLORER_SYSTEM_MALLOC=1``. The
    benchmarks under bench/ make the same settings (``--system-malloc`` leaves them), so their floors are what
    the app and the command line get."""
    if os.environ.get(SYSTEM_MALLOC_ENV, "").strip() == "1" or not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    global _malloc_tuned
    with _lock:
        if not _malloc_tuned:
            m_trim_threshold, m_mmap_max = -1, -4
            _malloc_tuned = bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, TRIM_THRESHOLD))
        return _malloc_tuned


def freeze_long_lived_objects() -> bool:
    """Move every object alive now into the garbage collector's permanent generation (``gc.freeze``), after
    one full collection, when modules have been imported since the last time (always on the first call);
    returns whether this call froze.

    Modules and their tables live as long as the process, and they are nearly all of its objects: torch,
    pandas and plotly at start-up, then what the first sweep imports lazily (sklearn and scipy with the
    digits, torch._dynamo and sympy through the FLOP counter, Torch-Pruning). Frozen objects are still freed
    when their reference count drops, but a frozen reference cycle is never collected: what sessions hold at
    the moment of a freeze (a workbench, a sweep) stays if it ends in a cycle. Freezing only when the set of
    modules grew bounds that to a few moments per process.
    """
    global _frozen_modules
    with _lock:
        if len(sys.modules) == _frozen_modules:
            return False
        gc.collect()
        gc.freeze()
        _frozen_modules = len(sys.modules)
        return True
