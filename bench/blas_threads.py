"""Pin the BLAS thread pools before numpy, scipy or torch is imported (import this first in a benchmark).

OpenBLAS and MKL start their own thread pools at import, outside ``torch.set_num_threads``; on a busy 2-core
machine their spinning threads make millisecond LAPACK calls take tens of milliseconds. The count is the
benchmark's own ``--threads`` argument (default 1), read from the command line before argparse runs."""

from __future__ import annotations

import os


def threads_from_argv(argv: list[str]) -> str:
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--threads="):
            return a.split("=", 1)[1]
    return "1"


def pin_blas_threads(argv: list[str]) -> None:
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = threads_from_argv(argv)
