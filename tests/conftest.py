"""Session settings for the test suite.

Threads. At session start torch's intra-op thread pool is set to ``RNNLAB_TEST_TORCH_THREADS``
(a positive int, default 1: the tests do small per-step work, for which one thread is the
fastest, and the suite's timings stay steady on a shared 2-core machine). Run the suite under
another count to check that no test depends on how torch splits its sums over threads::

    RNNLAB_TEST_TORCH_THREADS=2 python -m pytest -q

The BLAS and OpenMP pools outside torch (numpy's OpenBLAS, numba) follow the usual
``OMP_NUM_THREADS`` / ``OPENBLAS_NUM_THREADS`` / ``MKL_NUM_THREADS``, which
``../shared/tools/suite-matrix`` varies. Floats that two such settings compute differently are
compared with tolerances derived from the computation (``tests/reference.py``: ``gamma``,
``matmul_gap``, ``esn_state_gap``, ``carried_gaps``), never bit for bit. The header of a
non-quiet run (``python -m pytest``, no ``-q``) shows the thread settings in force.
"""

import os

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

THREADS_VAR = "RNNLAB_TEST_TORCH_THREADS"


def _torch_threads() -> int:
    raw = os.environ.get(THREADS_VAR, "1")
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1:
        raise pytest.UsageError(f"{THREADS_VAR} must be a positive integer, got {raw!r}")
    return n


def pytest_configure(config: pytest.Config) -> None:
    torch.set_num_threads(_torch_threads())


def pytest_report_header(config: pytest.Config) -> list[str]:
    blas = "threadpoolctl not installed"
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        pass
    else:
        blas = ", ".join(f"{p['internal_api']} {p['num_threads']}" for p in threadpool_info())
    env = ", ".join(f"{k}={os.environ[k]}" for k in
                    ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
                    if k in os.environ) or "no thread variables set"
    return [f"torch threads: {torch.get_num_threads()} ({THREADS_VAR}); "
            f"BLAS pools: {blas}; {env}"]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(1234)
